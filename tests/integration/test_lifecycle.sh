#!/usr/bin/env bash
# Credential lifecycle with the daemon running: suspend, resume, revoke (final) and destroy by
# iamsign-admin each take effect on the very next request, without restart or reload; destroy
# removes the key objects from the token.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
# Token objects: what this test is about (their lookups and objects on the token).
KEYGEN_STORE=token
setup_env
init_token
provision_cred seal-1 ec-p256 acme seal
provision_cred seal-2 ec-p256 acme seal
start_daemon

digest=$(printf 'Vehicle licence renewal\n' | openssl dgst -sha256 -binary | base64 -w0)
req() { # req ID: a signHash request body for credential ID
	printf '{"credentialID":"%s","hashes":["%s"],"hashAlgorithmOID":"2.16.840.1.101.3.4.2.1","signAlgo":"1.2.840.10045.4.3.2"}' \
		"$1" "$digest"
}
P11TOOL=(pkcs11-tool --module "$SOFTHSM_MODULE" --token-label "$TOKEN_LABEL" --login --pin "$USER_PIN")

# objects_labelled ID: how many token objects (keys and certificates) carry label ID.
objects_labelled() {
	"${P11TOOL[@]}" --list-objects 2>/dev/null | grep -cE "^  label: +$1\$" || true
}

expect_status "active credential signs" 200 "$(csc signatures/signHash "$(req seal-1)")"

check "suspend" admin suspend --credential seal-1
expect_status "suspended credential refused" 403 "$(csc signatures/signHash "$(req seal-1)")"
expect_reason credential_suspended
expect_status "another credential unaffected" 200 "$(csc signatures/signHash "$(req seal-2)")"

check "resume" admin resume --credential seal-1
expect_status "resumed credential signs" 200 "$(csc signatures/signHash "$(req seal-1)")"

check "revoke" admin revoke --credential seal-1
expect_status "revoked credential refused" 403 "$(csc signatures/signHash "$(req seal-1)")"
expect_reason credential_revoked
check_fails "resume after revoke refused" admin resume --credential seal-1
check "refusal says revocation is final" grep -q "revocation is final" "$WORK/check.out"
check_fails "suspend after revoke refused" admin suspend --credential seal-1
expect_status "still refused after the refused resume" 403 "$(csc signatures/signHash "$(req seal-1)")"
expect_reason credential_revoked

check "seal-1 key, public key and certificate on the token before destroy" \
	test "$(objects_labelled seal-1)" -eq 3
check "destroy" admin destroy --credential seal-1
check "destroy reports three objects" grep -q "3 token objects destroyed" "$WORK/check.out"
check "seal-1 objects gone from the token (pkcs11-tool)" test "$(objects_labelled seal-1)" -eq 0
check "seal-2 objects still there" test "$(objects_labelled seal-2)" -eq 3
check "audit key still there" test "$(objects_labelled iamsign-audit)" -eq 2
expect_status "destroyed credential is unknown" 400 "$(csc signatures/signHash "$(req seal-1)")"
expect_reason unknown_credential
check "destroyed credential gone from the registry" bash -c "! '$ADMIN' -c '$WORK/iamsignd.yaml' list | grep -q '^seal-1 '"
check_fails "destroy again refused" admin destroy --credential seal-1

# A credential destroyed while active: refused from the next request on, too.
check "destroy an active credential" admin destroy --credential seal-2
expect_status "destroyed active credential is unknown" 400 "$(csc signatures/signHash "$(req seal-2)")"
expect_reason unknown_credential
check_exit 2 "the audit key cannot be destroyed as a credential" admin destroy --credential iamsign-audit

stop_daemon
admin audit export >"$WORK/export.jsonl" || fail "audit export"
for op in admin.suspend admin.resume admin.revoke admin.destroy; do
	check "$op in the ledger" jq -s -e --arg op "$op" 'any(.[]; .op == $op)' "$WORK/export.jsonl"
done
