#!/usr/bin/env bash
# CAdES B-T: signDoc with conformance_level Ades-B-T against a test TSA run here (openssl ts
# -reply behind tests/tsa/tsa-server.py). The B-T signature verifies with OpenSSL, GnuTLS and
# NSS; its token verifies with `openssl ts -verify` against the TSA's CA over this signature
# value; the ledger records the token's time and hash. A TSA that is stopped, hangs, signs
# with an untrusted certificate, answers a wrong imprint or nonce, an HTTP error or garbage is
# refused with its reason, recorded, and B-B goes on.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
setup_env
init_token
provision_cred cit-ec ec-p256 citizen-1 seal
provision_cred cit-rsa rsa-2048 citizen-2 seal
command -v cmsutil >/dev/null 2>&1 || die "cmsutil (libnss3-tools) is required"
setup_tsa

printf 'Vehicle licence renewal\nplate: AB 1234\n' >"$WORK/form.txt"
digest=$(openssl dgst -sha256 -binary "$WORK/form.txt" | base64 -w0)

# sign_doc CRED SIGNALGO LEVEL -> HTTP status; the CMS in $WORK/CRED.p7s when 200
sign_doc() {
	local st
	st=$(csc signatures/signDoc "{\"credentialID\":\"$1\",\"documentDigests\":[{\"hashes\":[\"$digest\",\"$digest\"],\"hashAlgorithmOID\":\"2.16.840.1.101.3.4.2.1\"}],\"signature_format\":\"C\",\"conformance_level\":\"$3\",\"signed_envelope_property\":\"Detached\",\"signAlgo\":\"$2\"}")
	[ "$st" = 200 ] && jq_get '.SignatureObject[0]' | base64 -d >"$WORK/$1.p7s"
	echo "$st"
}
last_record() { # FIELD: of the ledger's last signDoc record
	admin audit export | jq -c 'select(.op == "signatures/signDoc")' | tail -n 1 | jq -r "$1"
}

# Without a tsa: section, B-T is not offered and refused; nothing falls back to B-B.
start_daemon
csc info '{}' >/dev/null
[ "$(jq_get '.conformance_levels | join(",")')" = "Ades-B-B" ] && pass "info without a TSA: Ades-B-B only" || fail "info: $(cat "$WORK/resp.json")"
expect_status "B-T without a TSA" 503 "$(sign_doc cit-ec 1.2.840.10045.4.3.2 Ades-B-T)"
expect_reason tsa_unavailable
[ "$(last_record .reason)" = tsa_unavailable ] && pass "recorded as tsa_unavailable" || fail "ledger: $(last_record .)"
stop_daemon

start_tsa
tsa_config 2s
start_daemon
csc info '{}' >/dev/null
[ "$(jq_get '.conformance_levels | join(",")')" = "Ades-B-B,Ades-B-T" ] && pass "info with a TSA: Ades-B-B, Ades-B-T" || fail "info: $(cat "$WORK/resp.json")"

# NSS: a database trusting the test CA.
mkdir -p "$WORK/nssdb"
certutil -N -d "$WORK/nssdb" --empty-password >/dev/null
certutil -A -d "$WORK/nssdb" -n ca -t "C,C,C" -i "$WORK/ca.pem"

tsa_mode ok
for spec in "cit-ec 1.2.840.10045.4.3.2" "cit-rsa 1.2.840.113549.1.1.11" "cit-rsa 1.2.840.113549.1.1.10"; do
	set -- $spec
	expect_status "B-T signDoc $1 $2" 200 "$(sign_doc "$1" "$2" Ades-B-T)"
	[ "$(jq_get '.SignatureObject | length')" = 2 ] && pass "two B-T signatures for two hashes" || fail "SignatureObject: $(cat "$WORK/resp.json")"
	openssl cms -verify -binary -inform DER -in "$WORK/$1.p7s" -content "$WORK/form.txt" -CAfile "$WORK/ca.pem" -purpose any -out /dev/null 2>"$WORK/verify.err" &&
		pass "openssl cms -verify: B-T $1 $2" || fail "openssl cms -verify: $(cat "$WORK/verify.err")"
	certtool --p7-verify --inder --infile "$WORK/$1.p7s" --load-data "$WORK/form.txt" --load-ca-certificate "$WORK/ca.pem" >"$WORK/gnutls.out" 2>&1 &&
		pass "GnuTLS certtool --p7-verify: B-T $1 $2" || fail "GnuTLS: $(tail -3 "$WORK/gnutls.out")"
	cmsutil -D -i "$WORK/$1.p7s" -c "$WORK/form.txt" -d "$WORK/nssdb" -u 4 -n -h 2 >"$WORK/nss.out" 2>&1 &&
		grep -q "signer0.status=GoodSignature" "$WORK/nss.out" &&
		pass "NSS cmsutil -D: B-T $1 $2" || fail "NSS: $(cat "$WORK/nss.out")"
	printf 'tampered' >"$WORK/tampered.txt"
	cmsutil -D -i "$WORK/$1.p7s" -c "$WORK/tampered.txt" -d "$WORK/nssdb" -u 4 -n -h 2 >"$WORK/nss.out" 2>&1 || true
	grep -q "signer0.status=GoodSignature" "$WORK/nss.out" && fail "NSS accepted a tampered document" || pass "NSS refuses a tampered document"
	mkdir -p "$WORK/parts-$1"
	[ "$(python3 "$IAMSIGN_SRC/tests/tsa/cms-parts.py" "$WORK/$1.p7s" "$WORK/parts-$1")" = 1 ] &&
		pass "one signature-time-stamp token in the unsigned attributes" || fail "no token in the CMS"
	openssl ts -verify -token_in -in "$WORK/parts-$1/token-0.der" -data "$WORK/parts-$1/sigvalue.bin" -CAfile "$TSA/tsa-ca.pem" >"$WORK/ts.out" 2>&1 &&
		pass "openssl ts -verify: the token is over this signature value, from the trusted TSA" || fail "openssl ts -verify: $(cat "$WORK/ts.out")"
	printf 'x' >>"$WORK/parts-$1/sigvalue.bin"
	if openssl ts -verify -token_in -in "$WORK/parts-$1/token-0.der" -data "$WORK/parts-$1/sigvalue.bin" -CAfile "$TSA/tsa-ca.pem" >/dev/null 2>&1; then
		fail "openssl ts -verify accepted another signature value"
	else
		pass "openssl ts -verify refuses another signature value"
	fi
done
# The ledger: the token's time and SHA-256, one per signature; the chain verifies.
want=$(openssl dgst -sha256 -r "$WORK/parts-cit-rsa/token-0.der" | cut -d' ' -f1)
[ "$(last_record '.timestamps[0].token_sha256')" = "$want" ] && pass "the ledger holds the token's SHA-256" || fail "ledger: $(last_record .timestamps)"
[ "$(last_record '.timestamps | length')" = 2 ] && pass "a time-stamp per signature in the record" || fail "ledger: $(last_record .timestamps)"
tst=$(openssl ts -reply -token_in -in "$WORK/parts-cit-rsa/token-0.der" -token_out -text 2>/dev/null | sed -n 's/^Time stamp: //p')
ledger_s=$(date -u -d "$(last_record '.timestamps[0].time')" +%s)
token_s=$(date -u -d "$tst" +%s)
[ "$ledger_s" = "$token_s" ] && pass "the ledger holds the token's time ($tst)" || fail "ledger time $ledger_s, token $token_s"
check "audit verify with B-T records" admin audit verify

# Faults: each refused with its reason, recorded; B-B still served after each.
fault() { # MODE STATUS REASON TEXT
	tsa_mode "$1"
	expect_status "TSA $1" "$2" "$(sign_doc cit-ec 1.2.840.10045.4.3.2 Ades-B-T)"
	expect_reason "$3"
	grep -q "$4" "$WORK/resp.json" && pass "TSA $1: says $4" || fail "TSA $1: $(cat "$WORK/resp.json")"
	[ "$(last_record .reason)" = "$3" ] && [ "$(last_record .decision)" = deny ] && pass "TSA $1: recorded as $3" || fail "TSA $1: ledger $(last_record .)"
	expect_status "B-B after TSA $1" 200 "$(sign_doc cit-ec 1.2.840.10045.4.3.2 Ades-B-B)"
	[ "$(python3 "$IAMSIGN_SRC/tests/tsa/cms-parts.py" "$WORK/cit-ec.p7s" "$WORK")" = 0 ] && pass "B-B has no token" || fail "B-B carries a token"
}
fault untrusted 502 tsa_bad_token "does not verify against tsa.trust_anchors"
fault imprint 502 tsa_bad_token "message imprint"
fault nonce 502 tsa_bad_token "nonce"
fault http500 503 tsa_unavailable "HTTP 500"
fault garbage 503 tsa_unavailable "not a time-stamp response"
start=$(date +%s)
fault hang 503 tsa_unavailable "timeout"
[ $(($(date +%s) - start)) -lt 12 ] && pass "a hanging TSA costs about tsa.timeout" || fail "a hanging TSA took $(($(date +%s) - start)) s"
# A TSA that answers each query in time but slowly: the request's time-stamps together get
# tsa.timeout (2 s), so the second of its two waits only what is left (0.8 s), not 2 s more.
start_ms=$(date +%s%3N)
fault slow 503 tsa_unavailable "time-stamp 2 of 2: the TSA: timeout"
slow_ms=$(($(date +%s%3N) - start_ms))
[ "$(grep -c '^slow$' "$TSA/log")" = 2 ] && pass "slow TSA: both queries were posted" || fail "slow TSA: $(grep -c '^slow$' "$TSA/log") queries"
[ "$slow_ms" -lt 4500 ] && pass "slow TSA: the request's time-stamps stop at tsa.timeout ($slow_ms ms with a B-B after)" || fail "slow TSA took $slow_ms ms"
grep -q "time-stamp token refused" "$WORK/daemon.log" && pass "bad tokens are logged" || fail "no log line for a bad token"
stop_tsa
fault stopped 503 tsa_unavailable "unreachable"
check "audit verify after the faults" admin audit verify
stop_daemon
