#!/usr/bin/env bash
# signDoc: detached CAdES B-B CMS verified by `openssl cms -verify` (and GnuTLS) against the test
# CA, failing for a tampered document; its signed attributes; the iamsign client's sign/verify.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
setup_env
init_token
provision_cred cit-ec ec-p256 citizen-1 seal
provision_cred cit-rsa rsa-2048 citizen-2 seal
start_daemon

printf 'Vehicle licence renewal\nplate: AB 1234\nowner: citizen-1\n' > "$WORK/form.txt"
cp "$WORK/form.txt" "$WORK/tampered.txt"
printf 'plate: ZZ 9999\n' >> "$WORK/tampered.txt"
digest=$(openssl dgst -sha256 -binary "$WORK/form.txt" | base64 -w0)

# sign_doc CRED SIGNALGO -> $WORK/CRED.p7s
sign_doc() {
	expect_status "signDoc $1 $2" 200 "$(csc signatures/signDoc "{\"credentialID\":\"$1\",\"documentDigests\":[{\"hashes\":[\"$digest\"],\"hashAlgorithmOID\":\"2.16.840.1.101.3.4.2.1\"}],\"signature_format\":\"C\",\"conformance_level\":\"Ades-B-B\",\"signed_envelope_property\":\"Detached\",\"signAlgo\":\"$2\"}")"
	jq_get '.SignatureObject[0]' | base64 -d > "$WORK/$1.p7s"
}

cms_verify() { # FILE P7S
	openssl cms -verify -binary -inform DER -in "$2" -content "$1" -CAfile "$WORK/ca.pem" -purpose any -out /dev/null 2>"$WORK/verify.err"
}

for spec in "cit-ec 1.2.840.10045.4.3.2" "cit-rsa 1.2.840.113549.1.1.11" "cit-rsa 1.2.840.113549.1.1.10"; do
	set -- $spec
	sign_doc "$1" "$2"
	cms_verify "$WORK/form.txt" "$WORK/$1.p7s" && pass "openssl cms -verify: $1 $2" || fail "openssl cms -verify failed for $1 $2: $(cat "$WORK/verify.err")"
	if cms_verify "$WORK/tampered.txt" "$WORK/$1.p7s"; then
		fail "tampered document verified with $1 $2"
	else
		grep -q "digest failure\|content verify error\|verification failure" "$WORK/verify.err" && pass "tampered document refused: $1 $2" || fail "tampered: unexpected error $(cat "$WORK/verify.err")"
	fi
	certtool --p7-verify --inder --infile "$WORK/$1.p7s" --load-data "$WORK/form.txt" --load-ca-certificate "$WORK/ca.pem" >"$WORK/gnutls.out" 2>&1 &&
		pass "GnuTLS certtool --p7-verify: $1 $2" || fail "GnuTLS rejected $1 $2: $(tail -3 "$WORK/gnutls.out")"
done

# A CMS signed by a CA the verifier does not trust fails.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$WORK/other-ca.key" -out "$WORK/other-ca.pem" -subj /CN=Other -days 2 2>/dev/null
if openssl cms -verify -binary -inform DER -in "$WORK/cit-ec.p7s" -content "$WORK/form.txt" -CAfile "$WORK/other-ca.pem" -out /dev/null 2>/dev/null; then
	fail "verified against an unrelated CA"
else
	pass "unrelated CA refused"
fi

# Signed attributes: content-type, message-digest (the given hash), signing-time,
# signing-certificate-v2 without issuerSerial; the signing certificate is carried.
openssl cms -cmsout -print -inform DER -in "$WORK/cit-ec.p7s" > "$WORK/cms.txt"
for attr in contentType messageDigest signingTime id-smime-aa-signingCertificateV2; do
	grep -q "object: $attr" "$WORK/cms.txt" && pass "signed attribute $attr" || fail "missing signed attribute $attr"
done
grep -q "eContent: <ABSENT>" "$WORK/cms.txt" && pass "detached (no eContent)" || fail "CMS is not detached"
openssl cms -verify -binary -inform DER -in "$WORK/cit-ec.p7s" -content "$WORK/form.txt" -CAfile "$WORK/ca.pem" -purpose any -signer "$WORK/signer.pem" -out /dev/null 2>/dev/null
grep -q "citizen-1" <(openssl x509 -in "$WORK/signer.pem" -noout -subject) && pass "signing certificate carried" || fail "signer certificate not in the CMS"
# ESSCertIDv2 = SEQUENCE { certHash } only: the attribute's SEQUENCE holds no issuer name.
essblock=$(awk '/object: id-smime-aa-signingCertificateV2/{f=1;next} f&&/object:|signatureAlgorithm/{f=0} f' "$WORK/cms.txt")
if printf '%s' "$essblock" | grep -qi "iamsign test CA\|PRINTABLESTRING\|UTF8STRING\|INTEGER"; then
	fail "signing-certificate-v2 carries issuerSerial"
else
	pass "signing-certificate-v2 without issuerSerial"
fi
# The client: iamsign sign writes FILE.p7s through signDoc; iamsign verify checks it.
cp "$WORK/form.txt" "$WORK/client-form.txt"
"$IAMSIGN_BUILD/tools/iamsign" --socket "$WORK/iamsign.sock" --credential cit-ec sign "$WORK/client-form.txt" >"$WORK/client.out" 2>&1 || fail "iamsign sign failed: $(cat "$WORK/client.out")"
[ -s "$WORK/client-form.txt.p7s" ] && pass "iamsign sign wrote client-form.txt.p7s" || fail "no .p7s written"
cms_verify "$WORK/client-form.txt" "$WORK/client-form.txt.p7s" && pass "openssl verifies the client's .p7s" || fail "client .p7s: $(cat "$WORK/verify.err")"
"$IAMSIGN_BUILD/tools/iamsign" verify "$WORK/client-form.txt" "$WORK/client-form.txt.p7s" --ca "$WORK/ca.pem" >"$WORK/client.out" 2>&1 && pass "iamsign verify accepts it" || fail "iamsign verify: $(cat "$WORK/client.out")"
if "$IAMSIGN_BUILD/tools/iamsign" verify "$WORK/tampered.txt" "$WORK/client-form.txt.p7s" --ca "$WORK/ca.pem" >/dev/null 2>&1; then
	fail "iamsign verify accepted a tampered document"
else
	pass "iamsign verify refuses a tampered document"
fi

# A stored chain is carried in the CMS (here the CA certificate itself stands in for it).
check "import-cert with --chain" admin import-cert --credential cit-ec --cert "$WORK/cit-ec.pem" --chain "$WORK/ca.pem"
sign_doc cit-ec 1.2.840.10045.4.3.2
grep -q "iamsign test CA" <(openssl cms -cmsout -inform DER -in "$WORK/cit-ec.p7s" -print) &&
	[ "$(openssl cms -cmsout -inform DER -in "$WORK/cit-ec.p7s" -print | grep -c "cert_info:")" = 2 ] &&
	pass "the chain is carried in the CMS (2 certificates)" || fail "the CMS does not carry the stored chain"
cms_verify "$WORK/form.txt" "$WORK/cit-ec.p7s" && pass "openssl cms -verify with the chain carried" || fail "verify with chain: $(cat "$WORK/verify.err")"

stop_daemon
