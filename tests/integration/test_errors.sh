#!/usr/bin/env bash
# Bad requests get 4xx with a reason and the daemon goes on serving; policy refusals are 403;
# socket handling (stale replaced, live refused); SIGTERM drains and exits cleanly.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
setup_env
init_token
provision_cred cit-ec ec-p256 citizen-1 seal
start_daemon

digest=$(printf 'form' | openssl dgst -sha256 -binary | base64 -w0)
good="{\"credentialID\":\"cit-ec\",\"hashes\":[\"$digest\"],\"hashAlgorithmOID\":\"2.16.840.1.101.3.4.2.1\",\"signAlgo\":\"1.2.840.10045.4.3.2\"}"
pid=$DAEMON_PID

still_serving() {
	kill -0 "$pid" 2>/dev/null || fail "daemon died after: $1"
	expect_status "good request after $1" 200 "$(csc signatures/signHash "$good")"
}

# bad_request NAME STATUS REASON BODY [METHOD]
bad_request() {
	expect_status "$1" "$2" "$(csc "${5:-signatures/signHash}" "$4")"
	expect_reason "$3"
	still_serving "$1"
}

bad_request "malformed JSON" 400 malformed_json '{"credentialID": "cit-ec", "hashes": ['
bad_request "not an object" 400 invalid_request '["cit-ec"]'
bad_request "empty body" 400 malformed_json ''
bad_request "duplicate key" 400 malformed_json "{\"credentialID\":\"cit-ec\",\"credentialID\":\"x\",\"hashes\":[\"$digest\"],\"hashAlgorithmOID\":\"2.16.840.1.101.3.4.2.1\",\"signAlgo\":\"1.2.840.10045.4.3.2\"}"
short=$(printf 'form' | openssl dgst -sha1 -binary | base64 -w0)
bad_request "digest of the wrong length" 400 invalid_digest "{\"credentialID\":\"cit-ec\",\"hashes\":[\"$short\"],\"hashAlgorithmOID\":\"2.16.840.1.101.3.4.2.1\",\"signAlgo\":\"1.2.840.10045.4.3.2\"}"
bad_request "unknown credential" 400 unknown_credential "{\"credentialID\":\"nobody-here\",\"hashes\":[\"$digest\"],\"hashAlgorithmOID\":\"2.16.840.1.101.3.4.2.1\",\"signAlgo\":\"1.2.840.10045.4.3.2\"}"
bad_request "unknown credential (info)" 400 unknown_credential '{"credentialID":"nobody-here"}' credentials/info
bad_request "unknown field" 400 invalid_request "{\"credentialID\":\"cit-ec\",\"hash\":[\"$digest\"],\"hashAlgorithmOID\":\"2.16.840.1.101.3.4.2.1\",\"signAlgo\":\"1.2.840.10045.4.3.2\"}"
bad_request "unknown signAlgo" 400 algorithm_not_supported "{\"credentialID\":\"cit-ec\",\"hashes\":[\"$digest\"],\"hashAlgorithmOID\":\"2.16.840.1.101.3.4.2.1\",\"signAlgo\":\"1.2.3.4.5\"}"
bad_request "purpose not allowed" 403 purpose_not_allowed "{\"credentialID\":\"cit-ec\",\"purpose\":\"tax-filing\",\"hashes\":[\"$digest\"],\"hashAlgorithmOID\":\"2.16.840.1.101.3.4.2.1\",\"signAlgo\":\"1.2.840.10045.4.3.2\"}"
d384=$(printf form | openssl dgst -sha384 -binary | base64 -w0)
bad_request "algorithm not allowed by policy" 403 algorithm_not_allowed "{\"credentialID\":\"cit-ec\",\"hashes\":[\"$d384\"],\"hashAlgorithmOID\":\"2.16.840.1.101.3.4.2.2\",\"signAlgo\":\"1.2.840.113549.1.1.12\"}"
bad_request "hash algorithm not allowed by policy" 403 hash_algorithm_not_allowed "{\"credentialID\":\"cit-ec\",\"hashes\":[\"$(printf form | openssl dgst -sha512 -binary | base64 -w0)\"],\"hashAlgorithmOID\":\"2.16.840.1.101.3.4.2.3\",\"signAlgo\":\"1.2.840.10045.4.3.4\"}"
five=$(printf "\"%s\"," "$digest" "$digest" "$digest" "$digest" "$digest"); five=${five%,}
bad_request "more hashes than max_hashes" 400 too_many_hashes "{\"credentialID\":\"cit-ec\",\"hashes\":[$five],\"hashAlgorithmOID\":\"2.16.840.1.101.3.4.2.1\",\"signAlgo\":\"1.2.840.10045.4.3.2\"}"
bad_request "unknown method" 404 unknown_method '{}' signatures/signEverything

# Oversized body: refused before it is read.
head -c 100000 /dev/zero | tr '\0' 'a' > "$WORK/big.json"
status=$(curl -s -o "$WORK/resp.json" -w '%{http_code}' --unix-socket "$WORK/iamsign.sock" -H 'Content-Type: application/json' -H 'Expect: 100-continue' --data-binary @"$WORK/big.json" http://localhost/csc/v2/signatures/signHash || true)
expect_status "100 kB body" 413 "$status"
still_serving "100 kB body"
status=$(curl -s -o "$WORK/resp.json" -w '%{http_code}' --unix-socket "$WORK/iamsign.sock" http://localhost/csc/v2/signatures/signHash)
expect_status "GET on a CSC method" 405 "$status"
status=$(curl -s -o "$WORK/resp.json" -w '%{http_code}' --unix-socket "$WORK/iamsign.sock" http://localhost/healthz)
expect_status "healthz" 200 "$status"
status=$(curl -s -o "$WORK/resp.json" -w '%{http_code}' --unix-socket "$WORK/iamsign.sock" http://localhost/metrics)
expect_status "metrics" 200 "$status"
grep -q '^iamsign_client_errors_total [1-9]' "$WORK/resp.json" && pass "metrics count the refusals" || fail "metrics: $(cat "$WORK/resp.json")"
grep -q "uid=$(id -u) .*-> 403 .*purpose_not_allowed" "$WORK/daemon.log" && pass "refusal logged with its reason" || fail "refusal not in the log"

# A live daemon's socket is not taken over.
if "$IAMSIGN_BUILD/signer/iamsignd" -c "$WORK/iamsignd.yaml" >"$WORK/second.log" 2>&1; then
	fail "a second daemon started on a live socket"
else
	grep -q "another daemon" "$WORK/second.log" && pass "second daemon refused: live socket" || fail "second daemon: $(cat "$WORK/second.log")"
fi
still_serving "second daemon attempt"

# SIGTERM: a request in flight is answered, then a clean exit that removes the socket. The
# request is made slow on purpose: headers and half the body go first, SIGTERM, then the rest.
python3 - "$WORK/iamsign.sock" "$good" "$pid" > "$WORK/inflight.out" 2>&1 <<'PY' || fail "in-flight request during SIGTERM: $(cat "$WORK/inflight.out")"
import os, signal, socket, sys, time
path, body, pid = sys.argv[1], sys.argv[2].encode(), int(sys.argv[3])
s = socket.socket(socket.AF_UNIX)
s.connect(path)
s.sendall(b"POST /csc/v2/signatures/signHash HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
          b"Content-Length: %d\r\n\r\n" % len(body) + body[:20])
time.sleep(0.3)
os.kill(pid, signal.SIGTERM)
time.sleep(0.3)
s.sendall(body[20:])
answer = b""
while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
    chunk = s.recv(65536)
    if not chunk:
        break
    answer += chunk
status = answer.split(b" ", 2)[1] if answer else b"none"
print("status", status.decode(), answer[-120:])
sys.exit(0 if status == b"200" and b'"signatures"' in answer else 1)
PY
grep -q "status 200" "$WORK/inflight.out" && pass "request in flight at SIGTERM answered 200"
wait_exit "$pid" 15 || fail "daemon still running 15 s after SIGTERM"
if curl -s --unix-socket "$WORK/iamsign.sock" http://localhost/healthz >/dev/null 2>&1; then
	fail "new connection accepted after SIGTERM"
else
	pass "no new connections after SIGTERM"
fi
grep -q "iamsignd: stopped" "$WORK/daemon.log" && pass "clean exit after SIGTERM" || fail "no clean exit: $(tail -3 "$WORK/daemon.log")"
[ -e "$WORK/iamsign.sock" ] && fail "socket left behind" || pass "socket removed"

# A stale socket from a killed daemon is replaced.
start_daemon
kill -KILL "$DAEMON_PID"; wait "$DAEMON_PID" 2>/dev/null || true; DAEMON_PID=""
[ -S "$WORK/iamsign.sock" ] && pass "stale socket present after SIGKILL" || fail "no stale socket to test with"
start_daemon
expect_status "good request after restart over a stale socket" 200 "$(csc signatures/signHash "$good")"
stop_daemon

# A caller the policy does not know: 403 unknown_caller.
sed -i "s/uid: $(id -u)\$/uid: 4242/" "$WORK/policy.yaml"
grep -q "uid: 4242" "$WORK/policy.yaml" || fail "could not rewrite the policy's caller uid"
start_daemon
expect_status "caller outside the policy" 403 "$(csc signatures/signHash "$good")"
expect_reason unknown_caller
expect_status "caller outside the policy: list" 403 "$(csc credentials/list '{}')"
stop_daemon

# --check names file:line for a bad configuration.
printf 'token:\n  module: /usr/lib/softhsm/libsofthsm2.so\n  uri: "pkcs11:token=x"\n  pin_file: /dev/null\n  colour: blue\n' > "$WORK/bad.yaml"
if "$IAMSIGN_BUILD/signer/iamsignd" -c "$WORK/bad.yaml" --check >"$WORK/check.out" 2>&1; then
	fail "--check accepted a bad configuration"
else
	grep -q "bad.yaml:5" "$WORK/check.out" && grep -q colour "$WORK/check.out" && pass "--check names file:line and key" || fail "--check output: $(cat "$WORK/check.out")"
fi
"$IAMSIGN_BUILD/signer/iamsignd" -c "$WORK/iamsignd.yaml" --check >/dev/null && pass "--check accepts the good configuration" || fail "--check refused the good configuration"

# iamsign-admin policy check and iamsignd --check load the same rule set: the same verdicts and
# the same error text for a broken policy.
admin policy check "$WORK/policy.yaml" >"$WORK/pc.out" 2>&1 && pass "policy check accepts the good policy" || fail "policy check: $(cat "$WORK/pc.out")"
cp "$WORK/policy.yaml" "$WORK/good-policy.yaml"
printf '  colour: blue\n' >> "$WORK/policy.yaml"
"$IAMSIGN_BUILD/signer/iamsignd" -c "$WORK/iamsignd.yaml" --check >"$WORK/check.out" 2>&1 && fail "--check accepted a broken policy"
admin policy check "$WORK/policy.yaml" >"$WORK/pc.out" 2>&1 && fail "policy check accepted a broken policy"
d=$(sed -n 's/^iamsignd: //p' "$WORK/check.out"); a=$(sed -n 's/^iamsign-admin: //p' "$WORK/pc.out")
if [ -n "$d" ] && [ "$d" = "$a" ] && printf '%s' "$d" | grep -q "policy.yaml:[0-9]*: .*colour"; then
	pass "policy check and --check report the same error: $d"
else
	fail "different verdicts: --check '$d', policy check '$a'"
fi
cp "$WORK/good-policy.yaml" "$WORK/policy.yaml"
# Without trust_anchors the daemon would refuse to start: --check says so first.
grep -v '^trust_anchors:' "$WORK/iamsignd.yaml" > "$WORK/no-anchors.yaml"
if "$IAMSIGN_BUILD/signer/iamsignd" -c "$WORK/no-anchors.yaml" --check >"$WORK/check.out" 2>&1; then
	fail "--check accepted a configuration without trust_anchors"
else
	grep -q "trust_anchors: required" "$WORK/check.out" && pass "--check requires trust_anchors" || fail "--check: $(cat "$WORK/check.out")"
fi
