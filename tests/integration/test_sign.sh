#!/usr/bin/env bash
# signHash through the daemon with EC (P-256, P-384) and RSA (PKCS#1 v1.5, PSS) keys, every
# signature checked by `openssl dgst -verify`; info, credentials/list and credentials/info.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
setup_env
init_token
provision_cred cit-ec ec-p256 citizen-1 seal
provision_cred cit-ec384 ec-p384 citizen-2 seal
provision_cred cit-rsa rsa-2048 citizen-3 seal
start_daemon

printf 'Vehicle licence renewal\nplate: AB 1234\n' > "$WORK/form.txt"
printf 'Another form\n' > "$WORK/other.txt"

# The credential's public key, from credentials/info (independent of the token).
pubkey() {
	expect_status "credentials/info $1" 200 "$(csc credentials/info "{\"credentialID\":\"$1\",\"certificates\":\"single\",\"certInfo\":true}")"
	jq_get '.cert.certificates[0]' | base64 -d > "$WORK/$1.crt.der"
	openssl x509 -inform DER -in "$WORK/$1.crt.der" -pubkey -noout > "$WORK/$1.pub.pem"
}

# sign_and_verify CRED SIGNALGO HASHNAME [SIGALGOPARAMS_JSON] [openssl -sigopt args...]
sign_and_verify() {
	local cred=$1 algo=$2 h=$3 extra=${4:-}
	shift 4 || shift $#
	local digest oid
	digest=$(openssl dgst -"$h" -binary "$WORK/form.txt" | base64 -w0)
	case $h in sha256) oid=2.16.840.1.101.3.4.2.1 ;; sha384) oid=2.16.840.1.101.3.4.2.2 ;; esac
	expect_status "signHash $cred $algo $h" 200 "$(csc signatures/signHash "{\"credentialID\":\"$cred\",\"hashes\":[\"$digest\"],\"hashAlgorithmOID\":\"$oid\",\"signAlgo\":\"$algo\"$extra}")"
	jq_get '.signatures[0]' | base64 -d > "$WORK/sig.bin"
	if openssl dgst -"$h" -verify "$WORK/$cred.pub.pem" -signature "$WORK/sig.bin" "$@" "$WORK/form.txt" >/dev/null; then
		pass "openssl dgst -verify: $cred $algo"
	else
		fail "openssl dgst -verify rejected the $cred $algo signature"
	fi
	# The same signature must not verify for another document.
	if openssl dgst -"$h" -verify "$WORK/$cred.pub.pem" -signature "$WORK/sig.bin" "$@" "$WORK/other.txt" >/dev/null 2>&1; then
		fail "$cred $algo signature verified for a different document"
	else
		pass "$cred $algo signature fails for a different document"
	fi
}

pubkey cit-ec
pubkey cit-ec384
pubkey cit-rsa
[ "$(jq_get '.key.algo[0]')" = 1.2.840.113549.1.1.1 ] && pass "RSA key algo reported" || fail "RSA key algo: $(cat "$WORK/resp.json")"
[ "$(jq_get '.key.len')" = 2048 ] && pass "RSA key length reported" || fail "RSA key length"
jq_get '.cert.subjectDN' | grep -q 'CN=citizen-3' && pass "certificate subject reported" || fail "subjectDN: $(cat "$WORK/resp.json")"

sign_and_verify cit-ec 1.2.840.10045.4.3.2 sha256 ""
sign_and_verify cit-ec 1.2.840.10045.2.1 sha256 ""
sign_and_verify cit-ec384 1.2.840.10045.4.3.3 sha384 ""
sign_and_verify cit-rsa 1.2.840.113549.1.1.11 sha256 ""
sign_and_verify cit-rsa 1.2.840.113549.1.1.1 sha256 ""
sign_and_verify cit-rsa 1.2.840.113549.1.1.10 sha256 "" -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:32
# PSS with explicit RSASSA-PSS-params (SHA-256, MGF1-SHA-256, salt 20), made by OpenSSL.
pss_params=$(openssl asn1parse -genconf <(printf 'asn1=SEQUENCE:pss\n[pss]\nh=EXP:0,SEQUENCE:sha256\nm=EXP:1,SEQUENCE:mgf\ns=EXP:2,INTEGER:20\n[sha256]\na=OID:sha256\np=NULL\n[mgf]\na=OID:mgf1\nh=SEQUENCE:sha256\n') -noout -out /dev/stdout | base64 -w0)
sign_and_verify cit-rsa 1.2.840.113549.1.1.10 sha256 ",\"signAlgoParams\":\"$pss_params\"" -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:20

# Several hashes in one request, answered in order.
d1=$(openssl dgst -sha256 -binary "$WORK/form.txt" | base64 -w0)
d2=$(openssl dgst -sha256 -binary "$WORK/other.txt" | base64 -w0)
expect_status "signHash two hashes" 200 "$(csc signatures/signHash "{\"credentialID\":\"cit-ec\",\"hashes\":[\"$d1\",\"$d2\"],\"hashAlgorithmOID\":\"2.16.840.1.101.3.4.2.1\",\"signAlgo\":\"1.2.840.10045.4.3.2\"}")"
jq_get '.signatures[0]' | base64 -d > "$WORK/s1"
jq_get '.signatures[1]' | base64 -d > "$WORK/s2"
openssl dgst -sha256 -verify "$WORK/cit-ec.pub.pem" -signature "$WORK/s1" "$WORK/form.txt" >/dev/null &&
	openssl dgst -sha256 -verify "$WORK/cit-ec.pub.pem" -signature "$WORK/s2" "$WORK/other.txt" >/dev/null &&
	pass "two hashes signed in order" || fail "two-hash signatures do not verify in order"

# An EC credential asked for an RSA signature.
expect_status "RSA algorithm on an EC key" 400 "$(csc signatures/signHash "{\"credentialID\":\"cit-ec\",\"hashes\":[\"$d1\"],\"hashAlgorithmOID\":\"2.16.840.1.101.3.4.2.1\",\"signAlgo\":\"1.2.840.113549.1.1.11\"}")"
expect_reason algorithm_key_mismatch

expect_status "info" 200 "$(csc info '{}')"
jq_get '.methods[]' | grep -qx signatures/signDoc && pass "info lists signDoc" || fail "info methods: $(cat "$WORK/resp.json")"
expect_status "credentials/list" 200 "$(csc credentials/list '{}')"
[ "$(jq_get '.credentialIDs | length')" = 3 ] && pass "three credentials listed" || fail "credentials/list: $(cat "$WORK/resp.json")"
expect_status "credentials/list page" 200 "$(csc credentials/list '{"maxResults":2}')"
[ "$(jq_get '.nextPageToken')" = cit-ec384 ] && pass "paging token" || fail "paging: $(cat "$WORK/resp.json")"
expect_status "credentials/list page 2" 200 "$(csc credentials/list '{"maxResults":2,"pageToken":"cit-ec384"}')"
[ "$(jq_get '.credentialIDs[0]')" = cit-rsa ] && pass "second page" || fail "page 2: $(cat "$WORK/resp.json")"
expect_status "credentials/list by user" 200 "$(csc credentials/list '{"userID":"citizen-2"}')"
[ "$(jq_get '.credentialIDs | join(",")')" = cit-ec384 ] && pass "list by userID" || fail "by user: $(cat "$WORK/resp.json")"

stop_daemon
