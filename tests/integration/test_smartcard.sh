#!/usr/bin/env bash
# The smartcard path (issue 6) on an emulated card: OpenSC's PKCS#11 module over pcsc-lite, the
# card a libcacard CAC (keys in an NSS database) in vsmartcard's virtual reader (vpcd), joined
# by tests/vpcd-bridge. Killing the bridge pulls the card; starting it again puts it back.
#
# Checks: a card key adopted with `iamsign-admin enrol --key`; signHash (PKCS#1 v1.5, PSS) and
# signDoc verified with OpenSSL; card pulled: 503 token_unavailable within 1 s and /healthz
# down; card put back after 0, 0.1, 0.5 and 2 s, pulled and pushed twice in quick succession,
# and pulled while a signature is in it: each time a 200 that OpenSSL verifies within 2 s of
# the card being back, without a restart, and no flapping after it; no growth in the daemon's
# open file descriptors or resident memory over all of it.
#
# Needs root (pcscd is started here, in the foreground, and owns /run/pcscd), pcscd, the vpcd
# driver, OpenSC, certutil and a built vpcd-bridge; skips (77) naming what is missing.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

BRIDGE="$IAMSIGN_BUILD/tests/vpcd-bridge"
CARD_PIN="77553311"
# Extra pulls with no pause, after the scenarios (the leak checks look across all of them).
CYCLES=${SMARTCARD_CYCLES:-3}
# Allowed RSS growth over the cycles, in KiB (allocator noise; a leak per cycle shows above it).
RSS_TOLERANCE_KB=512

skip() {
	echo "smartcard test skipped: $*" >&2
	exit 77
}

OPENSC=""
for m in /usr/lib/*/pkcs11/opensc-pkcs11.so /usr/lib/pkcs11/opensc-pkcs11.so; do
	[ -e "$m" ] && OPENSC="$m" && break
done
[ -n "$OPENSC" ] || skip "OpenSC's opensc-pkcs11.so is not installed (package opensc)"
command -v pcscd >/dev/null 2>&1 || skip "pcscd is not installed (package pcscd)"
command -v certutil >/dev/null 2>&1 || skip "certutil is not installed (package libnss3-tools)"
command -v pkcs11-tool >/dev/null 2>&1 || skip "pkcs11-tool is not installed (package opensc)"
grep -qs libifdvpcd /etc/reader.conf.d/* || skip "the vpcd reader driver is not configured (package vsmartcard-vpcd)"
[ -x "$BRIDGE" ] || skip "$BRIDGE not built (libcacard-dev missing at configure time?)"
[ "$(id -u)" -eq 0 ] || skip "pcscd must run as root to own /run/pcscd"
if pgrep -x pcscd >/dev/null 2>&1; then
	skip "a pcscd is already running (pid $(pgrep -x pcscd | tr '\n' ' ')); this test starts its own"
fi

setup_env

PCSCD_PID=""
BRIDGE_PID=""
POLL_PID=""

stop_pid() {
	local pid="$1"
	[ -n "$pid" ] || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 1 50); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

smartcard_cleanup() {
	local rc=$?
	set +e
	if [ -n "$POLL_PID" ]; then
		touch "$WORK/poll.stop"
		wait "$POLL_PID" 2>/dev/null
	fi
	# The daemon first (lib.sh would stop it later): it holds pcscd connections.
	if [ -n "$DAEMON_PID" ] && kill -0 "$DAEMON_PID" 2>/dev/null; then
		kill -TERM "$DAEMON_PID" 2>/dev/null
		wait_exit "$DAEMON_PID" 10 || kill -KILL "$DAEMON_PID" 2>/dev/null
	fi
	stop_pid "$BRIDGE_PID"
	stop_pid "$PCSCD_PID"
	if [ "$FAILED" -gt 0 ]; then
		for f in pcscd.log bridge.log; do
			[ -s "$WORK/$f" ] && { echo "--- $f (last 20 lines) ---" >&2; tail -n 20 "$WORK/$f" >&2; }
		done
	fi
	(exit "$rc")
	cleanup
}
trap smartcard_cleanup EXIT

now_ms() {
	date +%s%3N
}

# --- the card: an NSS database with exactly three RSA-2048 keys cert1..cert3 ---------------
# Keys are made in NSS (certutil -R), certified by the test CA so that the daemon's certificate
# checks pass, and imported under the nicknames libcacard looks for.
DB="$WORK/nssdb"
mkdir -p "$DB"
printf '%s\n' "$CARD_PIN" >"$WORK/nss.pw"
head -c 64 /dev/urandom >"$WORK/noise"
certutil -N -d "sql:$DB" -f "$WORK/nss.pw" >"$WORK/certutil.log" 2>&1 || die "certutil -N failed"
for i in 1 2 3; do
	{
		certutil -R -d "sql:$DB" -f "$WORK/nss.pw" -z "$WORK/noise" -k rsa -g 2048 \
			-s "CN=card-key-$i,O=iamsign tests" -o "$WORK/card$i.csr" &&
			openssl x509 -req -inform DER -in "$WORK/card$i.csr" -CA "$WORK/ca.pem" \
				-CAkey "$WORK/ca.key" -CAserial "$WORK/ca.srl" -CAcreateserial -days 30 \
				-sha256 -extfile "$WORK/leaf.ext" -out "$WORK/card$i.pem" &&
			certutil -A -d "sql:$DB" -f "$WORK/nss.pw" -n "cert$i" -t ",," -a -i "$WORK/card$i.pem"
	} >>"$WORK/certutil.log" 2>&1 || {
		cat "$WORK/certutil.log" >&2
		die "cannot make card key $i"
	}
done
[ "$(certutil -L -d "sql:$DB" | grep -c '^cert[123] ')" = 3 ] && pass "NSS database holds cert1..cert3" ||
	fail "NSS database: $(certutil -L -d "sql:$DB")"

# --- pcscd (foreground, no auto-exit) and the card ------------------------------------------
pcscd -f >"$WORK/pcscd.log" 2>&1 &
PCSCD_PID=$!
for _ in $(seq 1 50); do
	[ -S /run/pcscd/pcscd.comm ] && break
	kill -0 "$PCSCD_PID" 2>/dev/null || { cat "$WORK/pcscd.log" >&2; skip "pcscd did not start here"; }
	sleep 0.1
done
[ -S /run/pcscd/pcscd.comm ] || skip "pcscd made no socket in 5 s"

insert_card() {
	"$BRIDGE" --db "$DB" >>"$WORK/bridge.log" 2>&1 &
	BRIDGE_PID=$!
}

remove_card() {
	stop_pid "$BRIDGE_PID"
	BRIDGE_PID=""
}

insert_card
seen=""
for _ in $(seq 1 100); do
	if pkcs11-tool --module "$OPENSC" -L 2>/dev/null | grep -q "Common Access Card"; then
		seen=1
		break
	fi
	kill -0 "$BRIDGE_PID" 2>/dev/null || { cat "$WORK/bridge.log" >&2; die "vpcd-bridge exited"; }
	sleep 0.1
done
[ -n "$seen" ] || { cat "$WORK/pcscd.log" >&2; die "OpenSC does not see the emulated CAC card"; }
pass "OpenSC sees the emulated CAC card"

# --- daemon configuration: OpenSC, the CAC token, the NSS password as PIN --------------------
printf '%s\n' "$CARD_PIN" >"$WORK/card.pin"
chmod 0600 "$WORK/card.pin"
cat >"$WORK/iamsignd.yaml" <<EOF
token:
  module: $OPENSC
  uri: "pkcs11:manufacturer=Common%20Access%20Card"
  pin_file: $WORK/card.pin
listen:
  socket: $WORK/iamsign.sock
  mode: "0600"
state_dir: $WORK/state
policy: $WORK/policy.yaml
trust_anchors: $WORK/ca.pem
ledger:
  audit_key: "pkcs11:id=%00%03;type=private"
  checkpoint_every: 4
EOF
chmod 0600 "$WORK/iamsignd.yaml"
write_policy <<EOF
callers:
  records-office:
    uid: $(id -u)
    purposes: [dept-seal]
    classes: [seal]
purposes:
  dept-seal:
    sign_algorithms: [sha256WithRSAEncryption, RSASSA-PSS]
    hash_algorithms: [sha256]
    max_hashes: 1
    require_sad: false
EOF

# --- adopt the card's key 0001 --------------------------------------------------------------
check "enrol adopts the card key pkcs11:id=%00%01" \
	admin enrol --key "pkcs11:id=%00%01" --credential card-1 --user records-office --class seal
start_daemon

printf 'Records office seal\nfile: 2026/0042\n' >"$WORK/form.txt"
DIGEST=$(openssl dgst -sha256 -binary "$WORK/form.txt" | base64 -w0)
OID_RSA_SHA256=1.2.840.113549.1.1.11
OID_PSS=1.2.840.113549.1.1.10

expect_status "credentials/info card-1" 200 \
	"$(csc credentials/info '{"credentialID":"card-1","certificates":"single","certInfo":true}')"
jq_get '.cert.certificates[0]' | base64 -d >"$WORK/card-1.der"
openssl x509 -inform DER -in "$WORK/card-1.der" -pubkey -noout >"$WORK/card-1.pub" 2>/dev/null
cmp -s <(openssl x509 -in "$WORK/card1.pem" -outform DER) "$WORK/card-1.der" &&
	pass "card-1's certificate is the one on the card as cert1" || fail "card-1's certificate differs"

# sign_hash ALGO [EXTRA_JSON]: signHash of form.txt's SHA-256; prints the HTTP status.
sign_hash() {
	curl -s -o "$WORK/resp.json" -w '%{http_code}' --max-time 5 --unix-socket "$WORK/iamsign.sock" \
		-H 'Content-Type: application/json' --data-binary \
		"{\"credentialID\":\"card-1\",\"hashes\":[\"$DIGEST\"],\"hashAlgorithmOID\":\"2.16.840.1.101.3.4.2.1\",\"signAlgo\":\"$1\",\"purpose\":\"dept-seal\"${2:-}}" \
		http://localhost/csc/v2/signatures/signHash || true
}

verify_last() {
	jq_get '.signatures[0]' | base64 -d >"$WORK/sig.bin"
	openssl dgst -sha256 -verify "$WORK/card-1.pub" -signature "$WORK/sig.bin" "$@" \
		"$WORK/form.txt" >/dev/null 2>&1
}

expect_status "signHash sha256WithRSAEncryption with the card" 200 "$(sign_hash $OID_RSA_SHA256)"
verify_last && pass "openssl verifies the card's PKCS#1 v1.5 signature" ||
	fail "card PKCS#1 v1.5 signature does not verify"
expect_status "signHash RSASSA-PSS with the card" 200 "$(sign_hash $OID_PSS)"
verify_last -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:32 &&
	pass "openssl verifies the card's PSS signature" || fail "card PSS signature does not verify"

expect_status "signDoc with the card" 200 "$(csc signatures/signDoc "{\"credentialID\":\"card-1\",\"purpose\":\"dept-seal\",\"documentDigests\":[{\"hashes\":[\"$DIGEST\"],\"hashAlgorithmOID\":\"2.16.840.1.101.3.4.2.1\"}],\"signature_format\":\"C\",\"conformance_level\":\"Ades-B-B\",\"signed_envelope_property\":\"Detached\",\"signAlgo\":\"$OID_RSA_SHA256\"}")"
jq_get '.SignatureObject[0]' | base64 -d >"$WORK/form.p7s"
if openssl cms -verify -binary -inform DER -in "$WORK/form.p7s" -content "$WORK/form.txt" \
	-CAfile "$WORK/ca.pem" -purpose any -out /dev/null 2>"$WORK/cms.err"; then
	pass "openssl cms -verify: the card's CAdES signature"
else
	fail "card CMS does not verify: $(cat "$WORK/cms.err")"
fi

healthz() {
	curl -s -o "$WORK/health.json" -w '%{http_code}' --max-time 2 --unix-socket "$WORK/iamsign.sock" \
		http://localhost/healthz || true
}
expect_status "/healthz with the card in" 200 "$(healthz)"

fd_count() {
	ls "/proc/$DAEMON_PID/fd" | wc -l
}
rss_kb() {
	awk '/^VmRSS:/ {print $2}' "/proc/$DAEMON_PID/status"
}

# --- pull and push ---------------------------------------------------------------------------
# A poller signs in the background, one request after another (about every 50 ms), and notes
# each answer in $WORK/poll.log: "SENT ANSWERED STATUS REASON CHECK" (times in ms; CHECK is ok
# when openssl verifies the signature, bad when it does not, - for no signature). Each scenario
# is then judged from that log alone:
# - 503 token_unavailable answered within 1 s of the (first) pull;
# - a verified 200, for a request sent after the (last) push, answered within 2 s of it;
# - from that 200 on, nothing but verified 200s until the scenario ends (no flapping);
# - no request takes over 1 s while the card is out, no status but 200 and 503, no bad
#   signature.
poller() {
	local out="$WORK/poll.json" r0 code t reason check
	while [ ! -e "$WORK/poll.stop" ]; do
		r0=$(now_ms)
		code=$(curl -s -o "$out" -w '%{http_code}' --max-time 5 --unix-socket "$WORK/iamsign.sock" \
			-H 'Content-Type: application/json' --data-binary \
			"{\"credentialID\":\"card-1\",\"hashes\":[\"$DIGEST\"],\"hashAlgorithmOID\":\"2.16.840.1.101.3.4.2.1\",\"signAlgo\":\"$OID_RSA_SHA256\",\"purpose\":\"dept-seal\"}" \
			http://localhost/csc/v2/signatures/signHash || true)
		t=$(now_ms)
		reason=-
		check=-
		if [ "$code" = 200 ]; then
			check=bad
			jq -r '.signatures[0]' "$out" 2>/dev/null | base64 -d >"$out.sig" 2>/dev/null || true
			openssl dgst -sha256 -verify "$WORK/card-1.pub" -signature "$out.sig" \
				"$WORK/form.txt" >/dev/null 2>&1 && check=ok
		else
			reason=$(jq -r '.reason // "-"' "$out" 2>/dev/null || echo -)
		fi
		echo "$r0 $t ${code:-000} ${reason:--} $check" >>"$WORK/poll.log"
		sleep 0.02
	done
}

poll_start() {
	rm -f "$WORK/poll.stop" "$WORK/poll.log"
	: >"$WORK/poll.log"
	poller &
	POLL_PID=$!
}

poll_stop() {
	touch "$WORK/poll.stop"
	wait "$POLL_PID" 2>/dev/null || true
	POLL_PID=""
}

# wait_up T: until the poll log has a verified 200 sent at or after T (5 s at most).
wait_up() {
	local t_end=$(($(now_ms) + 5000))
	while [ "$(now_ms)" -lt "$t_end" ]; do
		awk -v t="$1" '$1 >= t && $3 == 200 && $5 == "ok" { f = 1 } END { exit !f }' \
			"$WORK/poll.log" && return 0
		sleep 0.05
	done
	return 1
}

# judge NAME T_PULL T_PUSH: the checks above, on the poll log up to now.
FIGURES=()
judge() {
	local name=$1 t_pull=$2 t_push=$3 down up flaps slow odd
	down=$(awk -v t="$t_pull" '$2 >= t && $3 == 503 && $4 == "token_unavailable" {
		d = $2 - t; if (m == "" || d < m) m = d } END { print m }' "$WORK/poll.log")
	up=$(awk -v t="$t_push" '$1 >= t && $3 == 200 && $5 == "ok" {
		d = $2 - t; if (m == "" || d < m) m = d } END { print m }' "$WORK/poll.log")
	if [ -n "$down" ] && [ "$down" -le 1000 ]; then
		pass "$name: card pulled, 503 token_unavailable after $down ms"
	else
		fail "$name: no 503 token_unavailable within 1 s of the pull (${down:-none} ms)"
	fi
	if [ -n "$up" ] && [ "$up" -le 2000 ]; then
		pass "$name: card back, a verified 200 after $up ms"
	else
		fail "$name: no verified 200 within 2 s of the card being back (${up:-none} ms)"
	fi
	flaps=$(awk -v t="$t_push" -v u="${up:-999999999}" '$1 >= t + u && !($3 == 200 && $5 == "ok")' \
		"$WORK/poll.log" | wc -l)
	[ "$flaps" = 0 ] && pass "$name: only verified signatures from then on" ||
		fail "$name: $flaps answer(s) after it were not verified signatures"
	slow=$(awk -v a="$t_pull" -v b="$t_push" '$1 >= a && $1 < b { d = $2 - $1; if (d > m) m = d }
		END { print m + 0 }' "$WORK/poll.log")
	[ "$slow" -le 1000 ] && pass "$name: slowest request while the card was out: $slow ms" ||
		fail "$name: a request took $slow ms while the card was out"
	odd=$(awk '($3 != 200 && $3 != 503) || $5 == "bad"' "$WORK/poll.log")
	[ -z "$odd" ] && pass "$name: nothing but 200 and 503, every signature verifies" ||
		fail "$name: unexpected answers: $(echo "$odd" | head -n 3 | tr '\n' ';')"
	FIGURES+=("$(printf '%-28s 503 after %5s ms   verified 200 after %5s ms' "$name" "${down:--}" "${up:--}")")
}

# scenario NAME GAP [GAP2]: pull the card, GAP s later put it back; with GAP2, pull it again
# 0.2 s after that and put it back GAP2 s later. The poller runs throughout.
scenario() {
	local name=$1 t_pull t_push hc
	poll_start
	sleep 0.3
	remove_card
	t_pull=$(now_ms)
	if [ "$2" = 2 ]; then
		# Long enough out to ask /healthz meanwhile.
		sleep 1
		hc=$(healthz)
		[ "$hc" = 503 ] && [ "$(jq -r .token "$WORK/health.json" 2>/dev/null)" = down ] &&
			pass "$name: /healthz says the token is down" ||
			fail "$name: /healthz HTTP $hc $(cat "$WORK/health.json" 2>/dev/null)"
		sleep 1
	else
		sleep "$2"
	fi
	insert_card
	t_push=$(now_ms)
	if [ -n "${3:-}" ]; then
		sleep 0.2
		remove_card
		sleep "$3"
		insert_card
		t_push=$(now_ms)
	fi
	wait_up "$t_push" || true
	sleep 0.5 # a stretch of only verified signatures, judged too
	poll_stop
	judge "$name" "$t_pull" "$t_push"
}

# A signature in the card when it leaves: the card sits on the next signature (SIGUSR1 to the
# bridge), and is pulled while it does.
scenario_in_flight() {
	local name="pulled mid-signature" t_pull t_push held=""
	poll_start
	sleep 0.3
	kill -USR1 "$BRIDGE_PID"
	for _ in $(seq 1 100); do
		grep -q "holding a signature APDU" "$WORK/bridge.log" && held=1 && break
		sleep 0.02
	done
	[ -n "$held" ] && pass "$name: a signature is in the card" ||
		fail "$name: the card never held a signature"
	remove_card
	t_pull=$(now_ms)
	sleep 0.5
	insert_card
	t_push=$(now_ms)
	wait_up "$t_push" || true
	sleep 0.5
	poll_stop
	judge "$name" "$t_pull" "$t_push"
}

fd_rss() {
	# A few more, so that sessions, key handles and buffers of this round are all in use.
	for _ in 1 2 3; do sign_hash $OID_PSS >/dev/null; done
	fds=$(fd_count)
	rss=$(rss_kb)
	echo "$1: daemon fds $fds, VmRSS $rss KiB"
}

scenario "gap 0 s" 0
# The first pull warms up (PC/SC context, OpenSC reader state): the baseline.
fd_rss "after the first pull"
base_fd=$fds
base_rss=$rss
scenario "gap 0.1 s" 0.1
scenario "gap 0.5 s" 0.5
scenario "gap 2 s" 2
scenario "twice in quick succession" 0.1 0.1
scenario_in_flight
for i in $(seq 1 "$CYCLES"); do
	scenario "gap 0 s, again ($i)" 0
done
fd_rss "after every pull"
kill -0 "$DAEMON_PID" 2>/dev/null && pass "daemon ran through every pull without a restart" ||
	fail "daemon died during the pulls"
[ "$fds" -le "$base_fd" ] && pass "open fds after the pulls: $fds (baseline $base_fd)" ||
	fail "open fds grew: $base_fd -> $fds"
if [ "${IAMSIGN_SANITIZE:-}" = 1 ]; then
	# Under ASan the allocator's quarantine and shadow memory decide the RSS; LeakSanitizer
	# checks for leaks at the daemon's exit instead, which is what this check stands in for.
	echo "VmRSS after the pulls: $rss KiB (baseline $base_rss KiB): not judged under ASan; LeakSanitizer checks leaks"
else
	[ "$rss" -le $((base_rss + RSS_TOLERANCE_KB)) ] &&
		pass "VmRSS after the pulls: $rss KiB (baseline $base_rss KiB, tolerance $RSS_TOLERANCE_KB)" ||
		fail "VmRSS grew: $base_rss -> $rss KiB"
fi
# --- the audit key on the card: a checkpoint that fails while the card is out ----------------
# ledger.checkpoint_every is 4 here: with the card out, the refusals (recorded too) call for a
# checkpoint that the card cannot sign. Once the card is back the ledger tries again by itself,
# with no request to prompt it (the next count-based one would need 4 more records, the next
# time-based one a minute).
LEDGER_DB="$WORK/state/iamsign.db"
fails0=$(grep -c "the audit key could not sign the checkpoint" "$WORK/daemon.log" || true)
remove_card
failed_at=""
for _ in $(seq 1 40); do
	sign_hash $OID_RSA_SHA256 >/dev/null
	failed_at=$(grep "the audit key could not sign the checkpoint at seq" "$WORK/daemon.log" |
		tail -n +$((fails0 + 1)) | tail -n 1 | sed 's/.* at seq //')
	[ -n "$failed_at" ] && break
	sleep 0.05
done
[ -n "$failed_at" ] && pass "a checkpoint fails while the card is out (seq $failed_at)" ||
	fail "no checkpoint was tried while the card was out"
sleep 1.5
insert_card
t_push=$(now_ms)
made=""
while [ -n "$failed_at" ] && [ $(($(now_ms) - t_push)) -lt 10000 ]; do
	have=$(sqlite3 "$LEDGER_DB" 'SELECT max(seq) FROM checkpoints' 2>/dev/null || true)
	if [ -n "$have" ] && [ "$have" -ge "$failed_at" ]; then
		made=$(($(now_ms) - t_push))
		break
	fi
	sleep 0.1
done
if [ -n "$made" ] && [ "$made" -le 5000 ]; then
	pass "the checkpoint is made $made ms after the card is back, without a request"
else
	fail "no checkpoint covering seq $failed_at within 5 s of the card being back (${made:-none} ms)"
fi
FIGURES+=("$(printf '%-28s checkpoint made %s ms after the card is back' "audit key" "${made:--}")")
check "iamsign-admin audit verify after the pulls" admin audit verify
sed 's/^/    /' "$WORK/check.out"

echo "--- measured (the poller's resolution is about 50 ms) ---"
printf '%s\n' "${FIGURES[@]}"
grep -E "iamsign token:" "$WORK/daemon.log" | tail -n 4 || true

# --- a wrong PIN is tried once, never again -------------------------------------------------
stop_daemon
grep -q "final checkpoint failed" "$WORK/daemon.log" && fail "the final checkpoint failed at stop" ||
	pass "the final checkpoint is signed at stop"
check "iamsign-admin audit verify after the stop" admin audit verify
grep -q "not yet covered" "$WORK/check.out" && fail "records left uncovered: $(cat "$WORK/check.out")" ||
	pass "every record is covered by a signed checkpoint"
printf '%s\n' "00000000" >"$WORK/card.pin"
rc=0
timeout 20 "$IAMSIGND" -c "$WORK/iamsignd.yaml" >"$WORK/badpin.log" 2>&1 || rc=$?
if [ "$rc" -ne 0 ] && grep -q "C_Login failed" "$WORK/badpin.log"; then
	pass "daemon refuses to start with a wrong card PIN (exit $rc)"
else
	fail "wrong card PIN: exit $rc: $(head -c 400 "$WORK/badpin.log")"
fi
