#!/usr/bin/env bash
# 8 concurrent clients race on one citizen credential with daily_quota: 20, all with one valid
# SAD of large num: exactly 20 signatures come out (each verifies), never more; every other
# answer is 429 quota_exceeded.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
setup_env
init_token

ec_keypair issuer
add_sad_issuers "$WORK/issuer.pub"
P=vehicle-licence-renewal
QUOTA=20
CLIENTS=8
PER_CLIENT=12
write_policy <<EOF
callers:
  renewal:
    uid: $(id -u)
    purposes: [$P]
    classes: [citizen]
purposes:
  $P:
    sign_algorithms: [ecdsa-with-SHA256]
    hash_algorithms: [sha256]
    max_hashes: 1
    require_sad: true
credentials:
  daily_quota: $QUOTA
EOF
provision_cred cit-race ec-p256 citizen-1
openssl x509 -in "$WORK/cit-race.pem" -pubkey -noout >"$WORK/cit-race.certpub"
start_daemon

printf 'Vehicle licence renewal\nplate: AB 1234\n' >"$WORK/form.txt"
d=$(file_digest "$WORK/form.txt")
sad=$(mint_sad "$WORK/issuer.key" "$(sad_claims cit-race citizen-1 $P "$d" '.num = 500')")
jq -cn --arg d "$d" --arg sad "$sad" --arg oid "$OID_SHA256" \
	'{credentialID: "cit-race", hashes: [$d], hashAlgorithmOID: $oid,
	  signAlgo: "1.2.840.10045.4.3.2", purpose: "vehicle-licence-renewal", SAD: $sad}' \
	>"$WORK/body.json"

mkdir "$WORK/out"
# client N: wait for the start signal, then PER_CLIENT requests back to back; each answer's
# status in out/N.status (one a line), body in out/N.J.json.
client() {
	local n=$1 j st
	while [ ! -e "$WORK/go" ]; do sleep 0.01; done
	for j in $(seq 1 "$PER_CLIENT"); do
		st=$(curl -s -o "$WORK/out/$n.$j.json" -w '%{http_code}' --unix-socket "$WORK/iamsign.sock" \
			-H 'Content-Type: application/json' --data-binary @"$WORK/body.json" \
			http://localhost/csc/v2/signatures/signHash) || true
		printf '%s %s\n' "${st:-000}" "$j" >>"$WORK/out/$n.status"
	done
}
pids=()
for n in $(seq 1 "$CLIENTS"); do
	client "$n" &
	pids+=($!)
done
touch "$WORK/go"
for p in "${pids[@]}"; do
	wait "$p" || true
done

ok=0 quota=0 other=0 verified=0
for n in $(seq 1 "$CLIENTS"); do
	while read -r st j; do
		f="$WORK/out/$n.$j.json"
		if [ "$st" = 200 ]; then
			ok=$((ok + 1))
			verify_sig "$WORK/cit-race.certpub" "$WORK/form.txt" "$(jq -r '.signatures[0]' "$f" 2>/dev/null)" &&
				verified=$((verified + 1))
		elif [ "$st" = 429 ] && [ "$(jq -r '.reason // empty' "$f" 2>/dev/null)" = quota_exceeded ]; then
			quota=$((quota + 1))
		else
			other=$((other + 1))
			echo "client $n request $j: HTTP $st $(head -c 300 "$f" 2>/dev/null)" >&2
		fi
	done <"$WORK/out/$n.status"
done
total=$((CLIENTS * PER_CLIENT))
echo "$CLIENTS clients x $PER_CLIENT requests, daily_quota $QUOTA: $ok x 200 ($verified verified), $quota x 429 quota_exceeded, $other other"

[ $((ok + quota + other)) -eq "$total" ] && pass "all $total requests answered" ||
	fail "$((ok + quota + other)) answers recorded for $total requests"
[ "$ok" -le "$QUOTA" ] && pass "never more than $QUOTA signatures ($ok)" ||
	fail "quota overrun: $ok signatures with daily_quota $QUOTA"
[ "$ok" -eq "$QUOTA" ] && pass "exactly $QUOTA signatures" || fail "$ok signatures, expected exactly $QUOTA"
[ "$verified" -eq "$ok" ] && pass "every returned signature verifies ($verified)" ||
	fail "only $verified of $ok signatures verify"
[ "$quota" -eq $((total - QUOTA)) ] && pass "every other answer is 429 quota_exceeded ($quota)" ||
	fail "$quota answers 429 quota_exceeded, expected $((total - QUOTA)); $other other"

# The quota stays spent: one more request, and one after a restart.
expect_status "request after the race" 429 "$(csc signatures/signHash "$(cat "$WORK/body.json")")"
expect_reason quota_exceeded
restart_daemon
expect_status "request after a restart" 429 "$(csc signatures/signHash "$(cat "$WORK/body.json")")"
expect_reason quota_exceeded

stop_daemon
