#!/usr/bin/env bash
# The ledger's durability: the daemon killed with SIGKILL under concurrent load loses no record
# of a signature a client received, the chain verifies, consumed SADs stay consumed and quota
# counters are exact. An unwritable ledger (locked, disk full) refuses signing with 503
# ledger_unavailable and returns no signature.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
setup_env
init_token

# A citizen credential: every signature needs a SAD, and a daily quota counts them.
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$WORK/issuer.key" 2>/dev/null
openssl pkey -in "$WORK/issuer.key" -pubout -out "$WORK/issuer.pub"
printf 'sad_issuers: [%s]\n' "$WORK/issuer.pub" >> "$WORK/iamsignd.yaml"
cat > "$WORK/policy.yaml" <<EOF
callers:
  renewal:
    uid: $(id -u)
    purposes: [vehicle-licence-renewal]
    classes: [citizen]
purposes:
  vehicle-licence-renewal:
    sign_algorithms: [ecdsa-with-SHA256]
    hash_algorithms: [sha256]
    max_hashes: 1
    require_sad: true
credentials:
  daily_quota: 100000
EOF
chmod 0600 "$WORK/policy.yaml"
# A request waits at most 3 s for its record: shorter than SQLite's 5 s busy timeout, so the
# locked ledger below shows which of the two answers first.
printf 'ledger:\n  write_timeout: 3s\n' >> "$WORK/iamsignd.yaml"
provision_cred cit-1 ec-p256 citizen-1 citizen

digest=$(printf 'renewal form' | openssl dgst -sha256 -binary | base64 -w0)
# mint JTI NUM: a SAD for cit-1 approving $digest up to NUM times
mint() {
	local now
	now=$(date +%s)
	"$IAMSIGN_SRC/tests/mint-sad" "$WORK/issuer.key" "{\"iss\":\"iam-smart-test\",\"sub\":\"citizen-1\",\"cred\":\"cit-1\",\"hashes\":[\"$digest\"],\"halg\":\"2.16.840.1.101.3.4.2.1\",\"num\":$2,\"purpose\":\"vehicle-licence-renewal\",\"iat\":$now,\"exp\":$((now + 590)),\"jti\":\"$1\"}"
}
request() { # SAD
	printf '{"credentialID":"cit-1","hashes":["%s"],"hashAlgorithmOID":"2.16.840.1.101.3.4.2.1","signAlgo":"1.2.840.10045.4.3.2","SAD":"%s"}' "$digest" "$1"
}

start_daemon

# A SAD with num 3, used up before the crash: it must stay used up after it.
small=$(mint small-sad 3)
for i in 1 2 3; do
	expect_status "small SAD use $i" 200 "$(csc signatures/signHash "$(request "$small")")"
done

# Four clients sign as fast as they can, each keeping every signature it receives.
for c in 1 2 3 4; do
	sad=$(mint "load-$c" 1000)
	request "$sad" > "$WORK/req.$c"
	(
		while :; do
			code=$(curl -s -o "$WORK/out.$c" -w '%{http_code}' --unix-socket "$WORK/iamsign.sock" \
				-H 'Content-Type: application/json' --data-binary @"$WORK/req.$c" \
				http://localhost/csc/v2/signatures/signHash) || break
			[ "$code" = 200 ] || break
			jq -r '.signatures[0]' "$WORK/out.$c" >> "$WORK/received.$c"
		done
	) &
done
sleep 3
kill -KILL "$DAEMON_PID"
wait "$DAEMON_PID" 2>/dev/null || true
DAEMON_PID=""
wait
cat "$WORK"/received.* > "$WORK/received"
received=$(wc -l < "$WORK/received")
[ "$received" -gt 20 ] && pass "$received signatures received before SIGKILL" || fail "only $received signatures before SIGKILL"

start_daemon
head_at_start=$(sqlite3 "$WORK/state/iamsign.db" "SELECT COALESCE(MAX(seq), 0) FROM audit")
admin audit export --format jsonl > "$WORK/export.jsonl"
jq -r 'select(.decision == "allow") | .signature_sha256[]' "$WORK/export.jsonl" | sort > "$WORK/recorded"
missing=0
while read -r sig; do
	h=$(printf '%s' "$sig" | base64 -d | openssl dgst -sha256 -r | cut -d' ' -f1)
	grep -qx "$h" "$WORK/recorded" || missing=$((missing + 1))
done < "$WORK/received"
[ "$missing" = 0 ] && pass "every received signature has its record ($received)" || fail "$missing of $received received signatures have no record"

check "audit verify after SIGKILL" admin audit verify

expect_status "used-up SAD after the crash" 403 "$(csc signatures/signHash "$(request "$small")")"
expect_reason sad_replayed

# Quota counter and SAD consumption equal the allowed records, exactly.
allowed=$(jq -s '[.[] | select(.decision == "allow" and .credential == "cit-1" and (.op | startswith("signatures/")))] | length' "$WORK/export.jsonl")
counted=$(sqlite3 "$WORK/state/iamsign.db" "SELECT COALESCE(SUM(count), 0) FROM quota WHERE cred = 'cit-1'")
[ "$allowed" = "$counted" ] && pass "quota counter $counted equals the allowed records" || fail "quota counter $counted, allowed records $allowed"
for c in 1 2 3 4; do
	rec=$(jq -s "[.[] | select(.decision == \"allow\" and .jti == \"load-$c\")] | length" "$WORK/export.jsonl")
	used=$(sqlite3 "$WORK/state/iamsign.db" "SELECT COALESCE(MAX(used), 0) FROM sad_jti WHERE jti = 'load-$c'")
	got=$(wc -l < "$WORK/received.$c" 2>/dev/null || echo 0)
	if [ "$rec" = "$used" ] && [ "$used" -ge "$got" ]; then
		pass "SAD load-$c: $used consumed = $rec records >= $got received"
	else
		fail "SAD load-$c: $used consumed, $rec records, $got received"
	fi
done

# A locked ledger: another process holds the write lock (until lock.release appears, 60 s at
# most), signing answers 503 with no signature.
fresh=$(mint locked 100)
head_before_lock=$(sqlite3 "$WORK/state/iamsign.db" "SELECT COALESCE(MAX(seq), 0) FROM audit")
python3 - "$WORK/state/iamsign.db" "$WORK/lock.ready" "$WORK/lock.release" <<'PY' &
import sqlite3, sys, time, os
db = sqlite3.connect(sys.argv[1], timeout=1, isolation_level=None)
db.execute("BEGIN EXCLUSIVE")
open(sys.argv[2], "w").close()
for _ in range(600):
    if os.path.exists(sys.argv[3]):
        break
    time.sleep(0.1)
db.execute("ROLLBACK")
PY
locker=$!
for _ in $(seq 50); do [ -e "$WORK/lock.ready" ] && break; sleep 0.1; done
# More signing requests than the daemon has channels to its core, all waiting on the lock:
# /healthz and /metrics still answer at once, on the channel kept for them.
request "$fresh" > "$WORK/req.locked"
waiting=()
t_lock=$(date +%s%N)
for i in $(seq 1 20); do
	curl -s -o "$WORK/locked.$i.json" -w '%{http_code}\n' --max-time 60 --unix-socket "$WORK/iamsign.sock" \
		-H 'Content-Type: application/json' --data-binary @"$WORK/req.locked" \
		http://localhost/csc/v2/signatures/signHash > "$WORK/locked.$i.code" &
	waiting+=("$!")
done
sleep 1
for path in healthz metrics; do
	t0=$(date +%s%N)
	code=$(curl -s -o "$WORK/$path.out" -w '%{http_code}' --max-time 10 \
		--unix-socket "$WORK/iamsign.sock" "http://localhost/$path")
	ms=$(( ($(date +%s%N) - t0) / 1000000 ))
	[ "$ms" -lt 1000 ] && grep -q 'token.*up\|^iamsign_ledger_busy_seconds ' "$WORK/$path.out" &&
		pass "/$path answers in ${ms} ms (HTTP $code) while every channel waits on the ledger" ||
		fail "/$path: HTTP $code after ${ms} ms while every channel waits on the ledger"
done
# At ledger.write_timeout (3 s), not the lock's busy timeout (5 s), every one of them is
# answered 503 ledger_unavailable, without a signature.
wait "${waiting[@]}" || true
ms=$(( ($(date +%s%N) - t_lock) / 1000000 ))
codes=$(sort "$WORK"/locked.*.code | uniq -c | tr -s ' \n' ' ')
[ "$ms" -ge 2900 ] && [ "$ms" -lt 4800 ] && [ "$codes" = " 20 503 " ] &&
	pass "20 requests on the locked ledger: 503 after ${ms} ms" ||
	fail "20 requests on the locked ledger: after ${ms} ms, codes:$codes"
# Past the write timeout on one batch, the ledger is stalled until that batch ends (here at the
# busy timeout, 5 s): /healthz says so, /metrics shows for how long, and signing is refused at
# once, before the token is asked.
code=$(curl -s -o "$WORK/resp.json" -w '%{http_code}' --max-time 10 \
	--unix-socket "$WORK/iamsign.sock" http://localhost/healthz)
[ "$code" = 503 ] && [ "$(jq_get .ledger)" = stalled ] && [ "$(jq_get .token)" = up ] &&
	pass "/healthz: 503, ledger stalled, token up" || fail "/healthz during the stall: $code $(cat "$WORK/resp.json")"
busy=$(metric iamsign_ledger_busy_seconds)
awk -v b="$busy" 'BEGIN { exit !(b >= 3 && b < 5) }' &&
	pass "metrics: the ledger busy for ${busy}s" || fail "metrics: iamsign_ledger_busy_seconds '$busy'"
t0=$(date +%s%N)
expect_status "signing while the ledger is stalled" 503 "$(csc signatures/signHash "$(request "$fresh")")"
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
expect_reason ledger_unavailable
! jq -e '.signatures' "$WORK/resp.json" >/dev/null 2>&1 && [ "$ms" -lt 1000 ] &&
	jq_get .error_description | grep -q "stuck on a write; nothing was signed" &&
	pass "refused in ${ms} ms while stalled, before the token signs" || fail "while stalled: ${ms} ms, $(cat "$WORK/resp.json")"
n=0
for i in $(seq 1 20); do
	jq -e '.error == "temporarily_unavailable" and .reason == "ledger_unavailable"' \
		"$WORK/locked.$i.json" >/dev/null && ! jq -e '.signatures' "$WORK/locked.$i.json" >/dev/null 2>&1 &&
		n=$((n + 1))
done
[ "$n" = 20 ] && pass "no signature returned while locked, each refusal ledger_unavailable" ||
	fail "only $n of 20 refusals are ledger_unavailable without a signature: $(cat "$WORK/locked.1.json")"
touch "$WORK/lock.release"
wait "$locker"
# The writer gets the lock at its next retry, commits and goes on.
t0=$(date +%s%N)
for _ in $(seq 50); do
	code=$(curl -s -o "$WORK/resp.json" -w '%{http_code}' --max-time 10 \
		--unix-socket "$WORK/iamsign.sock" http://localhost/healthz)
	[ "$code" = 200 ] && break
	sleep 0.1
done
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
[ "$code" = 200 ] && [ "$(metric iamsign_ledger_busy_seconds)" = 0.000 ] && [ "$ms" -lt 2000 ] &&
	pass "/healthz ok again ${ms} ms after the lock is gone" || fail "/healthz after the stall: $code $(cat "$WORK/resp.json")"
expect_status "signing once the lock is gone" 200 "$(csc signatures/signHash "$(request "$fresh")")"
# That request's batch brought along one ledger.unrecorded record, for the 21 answers of the
# episode (20 locked, 1 while stalled): each is either that record's count or its own record,
# one the writer held through the lock and committed late, before it.
gap=$(sqlite3 -separator ' ' "$WORK/state/iamsign.db" \
	"SELECT seq, CAST(detail AS INTEGER) FROM audit WHERE op = 'ledger.unrecorded' AND seq > $head_before_lock
	 AND caller = 'iamsignd' AND decision = 'deny' AND reason = 'ledger_unavailable'
	 AND detail LIKE '% answer(s) 503 ledger_unavailable without a record of their own, from %'")
gseq=${gap%% *}
gnum=${gap##* }
[ "$(printf '%s\n' "$gap" | grep -c .)" = 1 ] && [ "$gnum" -ge 1 ] &&
	[ $((gnum + gseq - head_before_lock - 1)) = 21 ] &&
	pass "ledger.unrecorded at seq $gseq notes $gnum answers; $((gseq - head_before_lock - 1)) committed late" ||
	fail "ledger.unrecorded after the lock: '$gap' (head before the lock $head_before_lock)"
# /metrics: the records this daemon committed are exactly the chain's growth since it started;
# the refusal while locked counts as failed.
failed=$(metric iamsign_ledger_failed_total)
commits=$(metric iamsign_ledger_commits_total)
records=$(metric iamsign_ledger_records_total)
csecs=$(metric iamsign_ledger_commit_seconds_total)
grown=$(( $(sqlite3 "$WORK/state/iamsign.db" "SELECT MAX(seq) FROM audit") - head_at_start ))
[ -n "$records" ] && [ "$records" = "$grown" ] &&
	pass "metrics: $records records committed, as the chain grew" ||
	fail "metrics: iamsign_ledger_records_total '$records', the chain grew by $grown"
[ -n "$commits" ] && [ "$commits" -ge 1 ] && [ "$commits" -le "$records" ] &&
	awk -v s="$csecs" 'BEGIN { exit !(s > 0) }' &&
	pass "metrics: $commits commits, ${csecs}s committing" ||
	fail "metrics: commits '$commits', records '$records', seconds '$csecs'"
[ -n "$failed" ] && [ "$failed" -ge 1 ] && pass "metrics: $failed record(s) failed while locked" ||
	fail "metrics: iamsign_ledger_failed_total '$failed'"
# The answers given without a record are counted as the chain notes them.
unrec=$(metric iamsign_ledger_unrecorded_total)
[ -n "$unrec" ] && [ "$unrec" = "$gnum" ] &&
	pass "metrics: $unrec answers without a record, as ledger.unrecorded notes" ||
	fail "metrics: iamsign_ledger_unrecorded_total '$unrec', ledger.unrecorded notes '$gnum'"
stop_daemon

# A full disk: the state directory on a small tmpfs, filled up (root only). The WAL grows with
# each commit, so within a bounded number of requests a write meets ENOSPC.
if [ "$(id -u)" = 0 ] && mkdir -p "$WORK/fullstate" && mount -t tmpfs -o size=16m,mode=0700 tmpfs "$WORK/fullstate" 2>/dev/null; then
	trap 'rc=$?; umount "$WORK/fullstate" 2>/dev/null || true; (exit $rc); cleanup' EXIT
	cp -a "$WORK/state/." "$WORK/fullstate/"
	sed -i "s|^state_dir: .*|state_dir: $WORK/fullstate|" "$WORK/iamsignd.yaml"
	start_daemon
	full=$(mint disk-full 1000)
	expect_status "signing before the disk fills" 200 "$(csc signatures/signHash "$(request "$full")")"
	dd if=/dev/zero of="$WORK/fullstate/filler" bs=64k >/dev/null 2>&1 || true
	got=""
	for i in $(seq 1 300); do
		code=$(csc signatures/signHash "$(request "$full")")
		if [ "$code" != 200 ]; then got=$code; break; fi
	done
	expect_status "signing on a full disk (after $i requests)" 503 "$got"
	expect_reason ledger_unavailable
	jq -e '.signatures' "$WORK/resp.json" >/dev/null 2>&1 && fail "a signature was returned without its record" || pass "no signature returned on a full disk"
	kill -0 "$DAEMON_PID" 2>/dev/null && pass "daemon still running on a full disk" || fail "daemon died on a full disk"
	rm -f "$WORK/fullstate/filler"
	head_full=$(sqlite3 "$WORK/fullstate/iamsign.db" "SELECT MAX(seq) FROM audit")
	expect_status "signing once there is room again" 200 "$(csc signatures/signHash "$(request "$full")")"
	gap=$(sqlite3 -separator ' ' "$WORK/fullstate/iamsign.db" \
		"SELECT seq, CAST(detail AS INTEGER) FROM audit WHERE op = 'ledger.unrecorded' AND seq > $head_full")
	[ "$gap" = "$((head_full + 1)) 1" ] &&
		pass "ledger.unrecorded notes the answer refused on the full disk" ||
		fail "ledger.unrecorded after the full disk: '$gap' (head $head_full)"
	stop_daemon
	check "audit verify after the full-disk episode" admin audit verify
	umount "$WORK/fullstate"
else
	echo "SKIP: full-disk case needs root and tmpfs mounts (locked case ran above)"
fi
