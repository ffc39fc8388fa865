#!/usr/bin/env bash
# Token session limits: the daemon on tests/mock-pkcs11.so, whose control file caps the sessions
# open at once (see the top of tests/mock-pkcs11.c). Some tokens allow few (a network HSM's
# connector, a smartcard), and SoftHSM none, so only the mock shows this.
#
# Load: 16 concurrent clients over 16 core channels, each request for one of 6 credentials (so
# key lookups as well as signatures go to the token). Every answer must be 200 with a signature
# that openssl verifies; never a 500.
# - The token states a limit of 4: the daemon never asks for a fifth session (the mock refuses
#   none) and says so in its log.
# - The token enforces 4 but states no limit: the daemon finds the limit when refused, keeps to
#   it from then on (a second load is refused nothing more), and no request fails for it.
# - token.sessions: 3 with no limit on the token: never more than 3 open.
# - Only the login's session can be had (after an outage, another application holds the
#   rest): signing answers 503 token_busy (not 500), and signs again once a session is free.
# - A module whose C_CloseAllSessions closes nothing (OpenSC 0.23 closes every other session):
#   the recovery closes each of its sessions itself; open sessions do not grow over outages.
# - A token that allows 1 session: the daemon refuses to start, saying why.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

NCRED=6
CLIENTS=16
PER_CLIENT=12

setup_env
use_mock
init_token
for i in $(seq 1 $NCRED); do
	provision_cred "seal-$i" ec-p256 records-office seal
	openssl x509 -in "$WORK/seal-$i.pem" -pubkey -noout >"$WORK/seal-$i.pub"
done

# write_config [EXTRA-TOKEN-LINE]: the daemon on the mock, 16 channels to the core.
write_config() {
	cat >"$WORK/iamsignd.yaml" <<EOF
token:
  module: $MOCK
  module_dirs: [$(dirname "$MOCK")]
  uri: "pkcs11:token=$TOKEN_LABEL"
  pin_file: $WORK/user.pin
${1:+  $1}
listen:
  socket: $WORK/iamsign.sock
  mode: "0600"
  threads: 16
state_dir: $WORK/state
policy: $WORK/policy.yaml
trust_anchors: $WORK/ca.pem
EOF
	chmod 0600 "$WORK/iamsignd.yaml"
}
write_config
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

printf 'Records office seal\nfile: 2026/0077\n' >"$WORK/form.txt"
DIGEST=$(openssl dgst -sha256 -binary "$WORK/form.txt" | base64 -w0)

# sign_one CRED OUT: one signHash for CRED, the answer in OUT; prints the HTTP status.
sign_one() {
	curl -s -o "$2" -w '%{http_code}' --max-time 10 --unix-socket "$WORK/iamsign.sock" \
		-H 'Content-Type: application/json' \
		--data-binary "{\"credentialID\":\"$1\",\"hashes\":[\"$DIGEST\"],\"hashAlgorithmOID\":\"2.16.840.1.101.3.4.2.1\",\"signAlgo\":\"1.2.840.10045.4.3.2\",\"purpose\":\"dept-seal\"}" \
		http://localhost/csc/v2/signatures/signHash || true
}

# client J: PER_CLIENT requests round the credentials; one line per answer in $WORK/load.J:
# "200 ok", "200 bad-signature" or "<status> <reason>".
client() {
	local j=$1 k cred code out="$WORK/resp.$1.json"
	: >"$WORK/load.$j"
	for k in $(seq 1 $PER_CLIENT); do
		cred="seal-$(((j + k) % NCRED + 1))"
		code=$(sign_one "$cred" "$out")
		if [ "$code" = 200 ]; then
			jq -r '.signatures[0]' "$out" | base64 -d >"$out.sig" 2>/dev/null
			if openssl dgst -sha256 -verify "$WORK/$cred.pub" -signature "$out.sig" \
				"$WORK/form.txt" >/dev/null 2>&1; then
				echo "200 ok" >>"$WORK/load.$j"
			else
				echo "200 bad-signature" >>"$WORK/load.$j"
			fi
		else
			echo "$code $(jq -r '.reason // "-"' "$out" 2>/dev/null || echo -)" >>"$WORK/load.$j"
		fi
	done
}

# load WHAT: CLIENTS clients at once; passes when every answer is a verified signature.
load() {
	local j pids=() n_ok others
	for j in $(seq 1 $CLIENTS); do
		client "$j" &
		pids+=($!)
	done
	wait "${pids[@]}"
	n_ok=$(cat "$WORK"/load.* | grep -c '^200 ok$' || true)
	others=$(cat "$WORK"/load.* | grep -v '^200 ok$' | sort | uniq -c | tr '\n' ';' || true)
	if [ "$n_ok" = $((CLIENTS * PER_CLIENT)) ]; then
		pass "$1: $n_ok of $((CLIENTS * PER_CLIENT)) answers are signatures that verify"
	else
		fail "$1: $n_ok of $((CLIENTS * PER_CLIENT)) verified signatures; the others: $others"
	fi
	rm -f "$WORK"/load.*
}

# expect_limit WHAT N SOURCE: no more than N sessions were open at once (at least 2: the
# login's and a worker's), and the daemon logged the limit N from SOURCE at start.
expect_limit() {
	local peak
	peak=$(mstat sessions.peak)
	[ "$peak" -ge 2 ] && [ "$peak" -le "$2" ] && pass "$1: at most $peak sessions open at once" ||
		fail "$1: peak $peak sessions, limit $2"
	grep -qF "at most $2 sessions at once ($3)" "$WORK/daemon.log" &&
		pass "$1: the limit is logged at start" || fail "$1: no log line for the limit"
}

# --- the token states a limit of 4 ---------------------------------------------------------------
what="token states 4 sessions"
ctl "sessions=4:reported"
start_daemon
load "$what"
[ "$(mstat sessions.refused)" = 0 ] && pass "$what: no session asked beyond the limit" ||
	fail "$what: the token refused $(mstat sessions.refused) session(s)"
expect_limit "$what" 4 "the token's limit"
stop_daemon

# --- the token enforces 4 but states no limit ---------------------------------------------------
what="token enforces 4 sessions, states none"
ctl "sessions=4"
start_daemon
load "$what"
refused=$(mstat sessions.refused)
[ "$refused" -ge 1 ] && pass "$what: the limit was met ($refused session(s) refused)" ||
	fail "$what: the load never met the limit (peak $(mstat sessions.peak)): the test proves nothing"
grep -q "the token refused a new session (CKR_SESSION_COUNT)" "$WORK/daemon.log" &&
	pass "$what: logged" || fail "$what: nothing in the log about the refused session"
load "$what (second load)"
[ "$(mstat sessions.refused)" = "$refused" ] &&
	pass "$what: no session refused in the second load" ||
	fail "$what: $(($(mstat sessions.refused) - refused)) more refused in the second load"
stop_daemon

# --- token.sessions: 3 ------------------------------------------------------------------------
what="token.sessions 3"
write_config "sessions: 3"
ctl ""
start_daemon
load "$what"
expect_limit "$what" 3 token.sessions
stop_daemon
write_config

# --- no session beyond the login's -------------------------------------------------------------
# After an outage another application holds every session but the one the login takes back:
# the worker cannot open its own.
what="only the login's session"
ctl ""
start_daemon
code=$(sign_one seal-1 "$WORK/resp.json")
[ "$code" = 200 ] || fail "$what: not signing before (HTTP $code)"
ctl "C_Sign=CKR_DEVICE_REMOVED*1" "sessions=1"
code=$(sign_one seal-1 "$WORK/resp.json")
[ "$code" = 503 ] || fail "$what: the outage: HTTP $code"
for _ in $(seq 1 100); do
	code=$(sign_one seal-1 "$WORK/resp.json")
	reason=$(jq -r '.reason // empty' "$WORK/resp.json" 2>/dev/null || true)
	[ "$reason" = token_unavailable ] || break
	sleep 0.1
done
reason=$(jq -r '.reason // empty' "$WORK/resp.json" 2>/dev/null || true)
[ "$code" = 503 ] && [ "$reason" = token_busy ] && pass "$what: 503 token_busy" ||
	fail "$what: HTTP $code ${reason:-$(head -c 200 "$WORK/resp.json")}"
code=$(curl -s -o "$WORK/resp.json" -w '%{http_code}' --unix-socket "$WORK/iamsign.sock" \
	http://localhost/healthz || true)
[ "$code" = 200 ] && pass "$what: /healthz 200 (the token is up, only busy)" ||
	fail "$what: /healthz HTTP $code $(cat "$WORK/resp.json")"
ctl ""
code=$(sign_one seal-1 "$WORK/resp.json")
[ "$code" = 200 ] && pass "$what: signs once a session is free" || fail "$what: then HTTP $code"
stop_daemon

# --- a module whose C_CloseAllSessions closes nothing ---------------------------------------------
# OpenSC 0.23's closes only every other session of a slot. A session left open keeps
# the module's login, so the recovery's C_Login reaches no card, and every outage leaks sessions.
# The recovery must close each of its sessions itself: after three outages the token holds no
# more open sessions than before them.
what="C_CloseAllSessions closes nothing"
ctl "C_CloseAllSessions=CKR_OK"
start_daemon
code=$(sign_one seal-1 "$WORK/resp.json")
[ "$code" = 200 ] || fail "$what: not signing before (HTTP $code)"
open0=$(mstat sessions.open)
for n in 1 2 3; do
	ctl "C_CloseAllSessions=CKR_OK" "C_Sign=CKR_DEVICE_REMOVED*1"
	code=$(sign_one seal-1 "$WORK/resp.json")
	[ "$code" = 503 ] || fail "$what: outage $n: HTTP $code, expected 503"
	for _ in $(seq 1 50); do
		code=$(sign_one seal-1 "$WORK/resp.json")
		[ "$code" = 200 ] && break
		sleep 0.1
	done
	[ "$code" = 200 ] && pass "$what: signing again after outage $n" ||
		fail "$what: outage $n: not recovered (HTTP $code)"
done
open1=$(mstat sessions.open)
[ "$(mstat C_CloseAllSessions.faults)" -ge 3 ] || fail "$what: the recoveries never called C_CloseAllSessions"
[ "$open1" -le "$open0" ] && pass "$what: $open1 sessions open after 3 outages ($open0 before)" ||
	fail "$what: sessions leak: $open0 open before 3 outages, $open1 after"
ctl ""
stop_daemon

# --- a token that allows 1 session --------------------------------------------------------------
what="token allows 1 session"
ctl "sessions=1:reported"
rc=0
timeout 20 "$IAMSIGND" -c "$WORK/iamsignd.yaml" >"$WORK/daemon.log" 2>&1 || rc=$?
[ "$rc" != 0 ] && [ "$rc" != 124 ] && pass "$what: the daemon does not start (exit $rc)" ||
	fail "$what: exit status $rc"
grep -q "allows 1 session at once; iamsign needs 2" "$WORK/daemon.log" &&
	pass "$what: says why" || fail "$what: log: $(head -c 300 "$WORK/daemon.log")"

