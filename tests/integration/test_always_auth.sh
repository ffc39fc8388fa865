#!/usr/bin/env bash
# A key with CKA_ALWAYS_AUTHENTICATE (as on many smartcards) needs a context-specific login
# after every C_SignInit; SoftHSM enforces it, so a signature here shows the daemon (and
# iamsign-admin csr) give it. The key is made outside iamsign and adopted with enrol --key.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
setup_env
init_token
command -v pkcs11-tool >/dev/null || die "pkcs11-tool (opensc) is required"

pkcs11-tool --module "$SOFTHSM_MODULE" --token-label "$TOKEN_LABEL" --login --pin "$USER_PIN" \
	--keypairgen --key-type EC:prime256v1 --id 0a0b --label always-1 --always-auth >"$WORK/gen.log" 2>&1 ||
	die "pkcs11-tool keygen: $(cat "$WORK/gen.log")"
pkcs11-tool --module "$SOFTHSM_MODULE" --token-label "$TOKEN_LABEL" --login --pin "$USER_PIN" \
	--list-objects --type privkey 2>/dev/null | grep -A6 "label: *always-1" | grep -q "always authenticate" &&
	pass "the key has CKA_ALWAYS_AUTHENTICATE" || fail "the key lacks CKA_ALWAYS_AUTHENTICATE"

check "csr signed inside the token with an always-authenticate key" \
	admin csr --credential always-1 --subject "/CN=always-1/O=iamsign tests" --out "$WORK/always.csr"
check "the CSR's signature verifies" openssl req -in "$WORK/always.csr" -verify -noout
check "the CA signs it" openssl x509 -req -in "$WORK/always.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" \
	-CAserial "$WORK/ca.srl" -CAcreateserial -days 30 -sha256 -extfile "$WORK/leaf.ext" -out "$WORK/always.pem"
check "import-cert" admin import-cert --credential always-1 --cert "$WORK/always.pem"
check "enrol adopts the key by URI" admin enrol --credential always-1 --user citizen-9 --class seal --key "pkcs11:id=%0a%0b;type=private"
start_daemon

printf 'form for an always-authenticate key\n' > "$WORK/form.txt"
digest=$(openssl dgst -sha256 -binary "$WORK/form.txt" | base64 -w0)
openssl x509 -in "$WORK/always.pem" -pubkey -noout > "$WORK/always.pub"
for i in 1 2 3; do
	expect_status "signHash $i with an always-authenticate key" 200 "$(csc signatures/signHash "{\"credentialID\":\"always-1\",\"hashes\":[\"$digest\"],\"hashAlgorithmOID\":\"2.16.840.1.101.3.4.2.1\",\"signAlgo\":\"1.2.840.10045.4.3.2\"}")"
	jq -r '.signatures[0]' "$WORK/resp.json" | base64 -d > "$WORK/sig"
	openssl dgst -sha256 -verify "$WORK/always.pub" -signature "$WORK/sig" "$WORK/form.txt" >/dev/null &&
		pass "signature $i verifies" || fail "signature $i does not verify"
done
stop_daemon
