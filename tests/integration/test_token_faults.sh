#!/usr/bin/env bash
# Token faults (issue 5): the daemon on tests/mock-pkcs11.so, a PKCS#11 module that forwards to
# SoftHSM and fails, hangs or refuses calls as $WORK/mock.ctl says (see the top of
# tests/mock-pkcs11.c).
#
# For C_Sign and C_OpenSession failing with each "token gone" CK_RV: the request is answered
# 503 token_unavailable within 2 s (never 500, never a hang), /healthz shows the token down,
# and once the fault is cleared the daemon recovers by itself and signs again without a
# restart. C_Sign hanging 5 s: 503 within 2 s, then recovery. The same for a key lookup
# (C_FindObjectsInit) hanging 3 s. C_Login refused (PIN incorrect,
# PIN locked) while recovering: no further login attempt at all, a loud log line, /healthz
# pin_refused, and 503 for every request. /metrics shows the token state and counters.
#
# Measured times are printed at the end ("answer" = the faulted request's answer time,
# "recovery" = fault cleared -> first 200).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
# Token objects: what this test is about (their lookups and objects on the token).
KEYGEN_STORE=token

DEADLINE=2.0     # seconds a faulted request may take to be answered
RECOVER_MAX=10   # seconds to recover once the fault is gone

setup_env
use_mock
init_token
provision_cred seal-ec ec-p256 records-office seal
provision_cred seal-ec2 ec-p256 records-office seal

# From here on the daemon (and nothing else) goes through the mock.
cat >"$WORK/iamsignd.yaml" <<EOF
token:
  module: $MOCK
  module_dirs: [$(dirname "$MOCK")]
  uri: "pkcs11:token=$TOKEN_LABEL"
  pin_file: $WORK/user.pin
listen:
  socket: $WORK/iamsign.sock
  mode: "0600"
state_dir: $WORK/state
policy: $WORK/policy.yaml
trust_anchors: $WORK/ca.pem
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
    sign_algorithms: [ecdsa-with-SHA256]
    hash_algorithms: [sha256]
    max_hashes: 1
    require_sad: false
EOF

printf 'Records office seal\nfile: 2026/0042\n' >"$WORK/form.txt"
DIGEST=$(openssl dgst -sha256 -binary "$WORK/form.txt" | base64 -w0)
BODY="{\"credentialID\":\"seal-ec\",\"hashes\":[\"$DIGEST\"],\"hashAlgorithmOID\":\"2.16.840.1.101.3.4.2.1\",\"signAlgo\":\"1.2.840.10045.4.3.2\",\"purpose\":\"dept-seal\"}"

# sign: one signHash; sets CODE and SECS (time to the answer). curl gives up after 10 s.
CODE=""
SECS=""
sign() {
	local out
	rm -f "$WORK/resp.json"
	out=$(curl -s -o "$WORK/resp.json" -w '%{http_code} %{time_total}' --max-time 10 \
		--unix-socket "$WORK/iamsign.sock" -H 'Content-Type: application/json' \
		--data-binary "$BODY" http://localhost/csc/v2/signatures/signHash || true)
	CODE=${out%% *}
	SECS=${out##* }
}

# healthz: sets CODE and leaves the body in $WORK/resp.json.
healthz() {
	CODE=$(curl -s -o "$WORK/resp.json" -w '%{http_code}' --max-time 5 \
		--unix-socket "$WORK/iamsign.sock" http://localhost/healthz || true)
}

lt() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a < b) }'; }

# verify_last: the last answer's signature verifies with $PUB (the signing credential's key).
PUB="$WORK/seal-ec.pub"
verify_last() {
	jq_get '.signatures[0]' | base64 -d >"$WORK/sig.bin" 2>/dev/null
	openssl dgst -sha256 -verify "$PUB" -signature "$WORK/sig.bin" \
		"$WORK/form.txt" >/dev/null 2>&1
}

# expect_unavailable WHAT: the last sign() was a 503 token_unavailable within the deadline.
expect_unavailable() {
	if [ "$CODE" = 503 ] && [ "$(jq_get '.reason // empty')" = token_unavailable ]; then
		pass "$1: 503 token_unavailable"
	else
		fail "$1: HTTP $CODE, expected 503 token_unavailable; body: $(head -c 300 "$WORK/resp.json" 2>/dev/null)"
	fi
	if lt "$SECS" "$DEADLINE"; then
		pass "$1: answered in ${SECS}s"
	else
		fail "$1: answered in ${SECS}s, over the ${DEADLINE}s deadline"
	fi
}

# expect_down WHAT [REASON]: /healthz says the token is down (with REASON when given).
expect_down() {
	healthz
	if [ "$CODE" = 503 ] && [ "$(jq_get .token)" = down ] &&
		{ [ -z "${2:-}" ] || [ "$(jq_get '.reason // empty')" = "$2" ]; }; then
		pass "$1: /healthz shows the token down${2:+ ($2)}"
	else
		fail "$1: /healthz HTTP $CODE $(cat "$WORK/resp.json" 2>/dev/null)"
	fi
}

# recover WHAT: poll signHash until 200 (RECOVER_MAX s); sets RECOVERY (seconds since called).
RECOVERY=""
recover() {
	local t0 t1 bad=""
	t0=$(date +%s.%N)
	while :; do
		sign
		t1=$(date +%s.%N)
		[ "$CODE" = 200 ] && break
		if [ "$CODE" != 503 ]; then
			bad="HTTP $CODE $(head -c 300 "$WORK/resp.json" 2>/dev/null)"
			break
		fi
		lt "$(echo "$t1 - $t0" | bc)" "$RECOVER_MAX" || break
		sleep 0.05
	done
	RECOVERY=$(printf '%.3f' "$(echo "$t1 - $t0" | bc)")
	if [ "$CODE" = 200 ] && verify_last; then
		pass "$1: signing again after ${RECOVERY}s, signature verifies"
	else
		fail "$1: not recovered after ${RECOVERY}s ${bad:-HTTP $CODE}"
	fi
	healthz
	[ "$CODE" = 200 ] && [ "$(jq_get .token)" = up ] && pass "$1: /healthz up again" ||
		fail "$1: /healthz after recovery: HTTP $CODE $(cat "$WORK/resp.json" 2>/dev/null)"
}

RESULTS=()

ctl ""
start_daemon
pid=$DAEMON_PID
expect_status "credentials/info seal-ec" 200 \
	"$(csc credentials/info '{"credentialID":"seal-ec","certificates":"single","certInfo":true}')"
jq_get '.cert.certificates[0]' | base64 -d | openssl x509 -inform DER -pubkey -noout >"$WORK/seal-ec.pub"
sign
[ "$CODE" = 200 ] && verify_last && pass "signHash through the mock verifies" ||
	die "signHash through the mock: HTTP $CODE $(cat "$WORK/resp.json")"

# --- C_Sign and C_OpenSession failing ---------------------------------------------------------
for rv in CKR_DEVICE_REMOVED CKR_SESSION_HANDLE_INVALID CKR_TOKEN_NOT_PRESENT \
	CKR_USER_NOT_LOGGED_IN CKR_DEVICE_ERROR; do
	# C_Sign fails on every call until cleared.
	what="C_Sign=$rv"
	ctl "C_Sign=$rv"
	sign
	expect_unavailable "$what"
	answer=$SECS
	expect_down "$what"
	sign
	expect_unavailable "$what (again)"
	ctl ""
	recover "$what"
	RESULTS+=("$(printf '%-40s answer %6.3fs  recovery %6.3fs' "$what" "$answer" "$RECOVERY")")

	# One C_Sign fails, which makes the daemon recover; C_OpenSession then fails on every
	# call, so recovery keeps failing (with backoff, re-initialising the module) until cleared.
	what="C_OpenSession=$rv"
	init0=$(mstat C_Initialize.calls)
	ctl "C_Sign=$rv*1" "C_OpenSession=$rv"
	sign
	expect_unavailable "$what"
	answer=$SECS
	expect_down "$what"
	sleep 1.5
	sign
	expect_unavailable "$what (1.5 s later)"
	expect_down "$what (1.5 s later)"
	n=$(mstat C_OpenSession.faults)
	[ "$n" -ge 2 ] && pass "$what: recovery retried ($n C_OpenSession faults so far)" ||
		fail "$what: only $n C_OpenSession attempts"
	[ "$(mstat C_Initialize.calls)" -gt "$init0" ] && pass "$what: module re-initialised while recovering" ||
		fail "$what: module never re-initialised"
	ctl ""
	recover "$what"
	RESULTS+=("$(printf '%-40s answer %6.3fs  recovery %6.3fs' "$what" "$answer" "$RECOVERY")")
done
kill -0 "$pid" 2>/dev/null && pass "daemon alive after the C_Sign/C_OpenSession faults" ||
	die "daemon died"

# --- C_Sign hanging 5 s -----------------------------------------------------------------------
what="C_Sign=hang:5"
ctl "C_Sign=hang:5*1"
t0=$(date +%s.%N)
sign
expect_unavailable "$what"
answer=$SECS
expect_down "$what"
sign
expect_unavailable "$what (next request, module still busy)"
lt "$SECS" 0.5 && pass "$what: next request refused at once (${SECS}s)" ||
	fail "$what: next request took ${SECS}s"
recover "$what"
total=$(printf '%.3f' "$(echo "$(date +%s.%N) - $t0" | bc)")
RESULTS+=("$(printf '%-40s answer %6.3fs  recovery %6.3fs (from the hang start; the module returned after 5 s)' "$what" "$answer" "$total")")
grep -q "took longer than" "$WORK/daemon.log" && pass "$what: the stuck call is logged" ||
	fail "$what: nothing in the log about the stuck call"

# --- a key lookup hanging 3 s -----------------------------------------------------------------
# The first request for a credential looks its key up on the token. That runs on a worker with
# the signing deadline too: a module stuck in C_FindObjectsInit costs a worker, not the request
# (nor the core's channel that carries it).
what="C_FindObjectsInit=hang:3"
openssl x509 -in "$WORK/seal-ec2.pem" -pubkey -noout >"$WORK/seal-ec2.pub"
BODY1=$BODY
BODY=${BODY1/\"seal-ec\"/\"seal-ec2\"}
PUB="$WORK/seal-ec2.pub"
ctl "C_FindObjectsInit=hang:3*1"
t0=$(date +%s.%N)
sign
expect_unavailable "$what (a credential not looked up before)"
answer=$SECS
expect_down "$what"
[ "$(mstat C_FindObjectsInit.faults)" = 1 ] && pass "$what: the lookup reached the module" ||
	fail "$what: $(mstat C_FindObjectsInit.faults) C_FindObjectsInit faults, expected 1"
recover "$what"
total=$(printf '%.3f' "$(echo "$(date +%s.%N) - $t0" | bc)")
RESULTS+=("$(printf '%-40s answer %6.3fs  recovery %6.3fs (from the hang start; the module returned after 3 s)' "$what" "$answer" "$total")")
grep -q "a key lookup took longer than" "$WORK/daemon.log" && pass "$what: the stuck lookup is logged" ||
	fail "$what: nothing in the log about the stuck lookup"
BODY=$BODY1
PUB="$WORK/seal-ec.pub"
ctl ""

# --- /metrics -----------------------------------------------------------------------------------
[ "$(metric iamsign_token_state)" = 0 ] && pass "metrics: token state 0 (up)" ||
	fail "metrics: iamsign_token_state $(metric iamsign_token_state)"
for m in iamsign_token_outages_total iamsign_token_recoveries_total \
	iamsign_token_refused_while_down_total; do
	v=$(metric $m)
	[ -n "$v" ] && [ "$v" -gt 0 ] && pass "metrics: $m $v" || fail "metrics: $m '${v}'"
done
v=$(metric iamsign_token_last_outage_seconds)
[ -n "$v" ] && lt 0 "$v" && pass "metrics: last outage ${v}s" ||
	fail "metrics: iamsign_token_last_outage_seconds '$v'"

# --- C_Login refused while recovering -----------------------------------------------------------
for rv in CKR_PIN_INCORRECT CKR_PIN_LOCKED; do
	what="C_Login=$rv"
	if [ -z "$DAEMON_PID" ]; then
		ctl ""
		start_daemon
	fi
	sign
	[ "$CODE" = 200 ] || fail "$what: not signing before the fault (HTTP $CODE)"
	ctl "C_Sign=CKR_DEVICE_REMOVED*1" "C_Login=$rv"
	logins0=$(mstat C_Login.calls)
	sign
	expect_unavailable "$what"
	answer=$SECS
	wait_log "login REFUSED by the token" 5 && pass "$what: reported loudly in the log" ||
		fail "$what: no loud log line"
	expect_down "$what" pin_refused
	logins1=$(mstat C_Login.calls)
	[ "$logins1" -eq $((logins0 + 1)) ] && pass "$what: exactly one login attempt" ||
		fail "$what: $((logins1 - logins0)) login attempts"
	# Requests keep coming for 4 s; the token is never asked for a login again.
	for _ in $(seq 1 8); do
		sign
		[ "$CODE" = 503 ] && [ "$(jq_get '.reason // empty')" = token_unavailable ] ||
			fail "$what: request while the PIN is refused: HTTP $CODE"
		sleep 0.5
	done
	[ "$(mstat C_Login.calls)" -eq "$logins1" ] &&
		pass "$what: no login attempt in 4 s of requests ($(mstat C_Login.calls) in all)" ||
		fail "$what: C_Login calls grew from $logins1 to $(mstat C_Login.calls)"
	[ "$(metric iamsign_token_state)" = 2 ] && pass "$what: metrics state 2 (PIN refused)" ||
		fail "$what: metrics state $(metric iamsign_token_state)"
	expect_down "$what (4 s later)" pin_refused
	RESULTS+=("$(printf '%-40s answer %6.3fs  recovery: none (restart with a fixed PIN)' "$what" "$answer")")
	ctl ""
	stop_daemon
done

# --- a request waiting on the core holds up no other connection --------------------------------
# One channel to the core: while a signHash hangs in the module, a request on another
# connection that the listener answers alone (an unknown path: 404) is answered at once.
what="one channel, C_Sign=hang:3"
sed -i 's/^  mode: "0600"$/  mode: "0600"\n  threads: 1/' "$WORK/iamsignd.yaml"
grep -q '^  threads: 1$' "$WORK/iamsignd.yaml" || die "$what: could not set listen.threads"
ctl ""
start_daemon
sign
[ "$CODE" = 200 ] || fail "$what: not signing before the fault (HTTP $CODE)"
ctl "C_Sign=hang:3*1"
sign &
hung=$!
sleep 0.5
kill -0 "$hung" 2>/dev/null || fail "$what: the hanging signHash was answered within 0.5 s"
out=$(curl -s -o /dev/null -w '%{http_code} %{time_total}' --max-time 10 \
	--unix-socket "$WORK/iamsign.sock" http://localhost/no-such-path || true)
if [ "${out%% *}" = 404 ] && lt "${out##* }" 0.5; then
	pass "$what: a request on another connection answered in ${out##* }s"
else
	fail "$what: a request on another connection: HTTP ${out%% *} after ${out##* }s"
fi
wait "$hung" || true
ctl ""
stop_daemon

echo "--- measured -----------------------------------------------------------------"
printf '%s\n' "${RESULTS[@]}"
