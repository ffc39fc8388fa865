#!/bin/bash
# Provisioning with iamsign-admin on a throwaway SoftHSM token: init-token, keygen (attributes
# checked independently with pkcs11-tool), csr, import-cert (a foreign certificate refused),
# enrol, list.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

setup_env

P11TOOL=(pkcs11-tool --module "$SOFTHSM_MODULE" --token-label "$TOKEN_LABEL")

# The pkcs11-tool block describing the object labelled $2 in listing $1.
object_block() {
	awk -v want="$2" '
		function flush() { if (m) printf "%s", buf; buf = ""; m = 0 }
		/Object;/ { flush() }
		{ buf = buf $0 "\n" }
		/^  label:/ { l = $0; sub(/^  label: +/, "", l); if (l == want) m = 1 }
		END { flush() }
	' "$1"
}

# key_attrs_ok ID: the private key is sensitive, was never extractable, and may only sign.
key_attrs_ok() {
	local block
	block="$(object_block "$WORK/privkeys.txt" "$1")"
	[ -n "$block" ] || {
		echo "no private key labelled $1"
		return 1
	}
	echo "$block"
	echo "$block" | grep -Eq '^  Usage: +sign$' || {
		echo "usage is not exactly 'sign'"
		return 1
	}
	local access
	access="$(echo "$block" | sed -n 's/^  Access: *//p')"
	echo "$access" | grep -q '\bsensitive' || return 1
	echo "$access" | grep -q 'always sensitive' || return 1
	echo "$access" | grep -q 'never extractable' || return 1
	# "extractable" may appear only as part of "never extractable".
	[ "$(echo "$access" | sed 's/never extractable//' | grep -c 'extractable')" -eq 0 ] || return 1
}

output_has() { # output_has FILE TEXT
	grep -qF -- "$2" "$1" || {
		echo "expected \"$2\" in:"
		cat "$1"
		return 1
	}
}

# ---- usage errors exit 2 ----
check_exit 2 "unknown command is a usage error (exit 2)" admin no-such-command
check_exit 2 "keygen without --credential is a usage error (exit 2)" admin keygen --alg ec-p256
check_exit 2 "invalid credential ID is a usage error (exit 2)" \
	admin keygen --credential "bad id" --alg ec-p256
check_exit 2 "an option given twice is a usage error (exit 2)" \
	admin keygen --credential a --alg ec-p256 --alg ec-p384
check "--help works" "$ADMIN" --help

# ---- init-token ----
check "init-token" admin init-token --label "$TOKEN_LABEL" --so-pin-file "$WORK/so.pin"
check "token visible with its label" bash -c "softhsm2-util --show-slots | grep -q 'Label: *$TOKEN_LABEL'"
check "user PIN set from token.pin_file" "${P11TOOL[@]}" --login --pin "$USER_PIN" --list-objects

# ---- keygen ----
check "keygen ec-p256" admin keygen --store token --credential cred-ec --alg ec-p256
check "keygen rsa-2048" admin keygen --store token --credential cred-rsa --alg rsa-2048
check_fails "second keygen with the same ID refused" admin keygen --store token --credential cred-ec --alg ec-p384
check "refusal names the existing label" output_has "$WORK/check.out" "already exists"
check "keygen --count 3" admin keygen --store token --credential batch --alg ec-p384 --count 3
check_fails "keygen --count clashing with batch-1 refused" \
	admin keygen --store token --credential batch --alg ec-p256 --count 2
check_fails "keygen --count 0 refused" admin keygen --store token --credential other --alg ec-p256 --count 0

"${P11TOOL[@]}" --login --pin "$USER_PIN" --list-objects --type privkey >"$WORK/privkeys.txt" 2>&1 ||
	fail "pkcs11-tool --list-objects failed"
for id in cred-ec cred-rsa batch-1 batch-2 batch-3; do
	check "$id: sensitive, never extractable, sign only (pkcs11-tool)" key_attrs_ok "$id"
done
check "batch made exactly 3 keys" test "$(grep -c 'label: *batch-' "$WORK/privkeys.txt")" -eq 3
check "no private key for the refused keygen (ID other)" \
	bash -c "! grep -q 'label: *other' '$WORK/privkeys.txt'"
check "cred-ec private key is EC" bash -c \
	"grep -B1 -E '^  label: +cred-ec$' '$WORK/privkeys.txt' | grep -q 'Private Key Object; EC'"
check "cred-rsa private key is RSA" bash -c \
	"grep -B1 -E '^  label: +cred-rsa$' '$WORK/privkeys.txt' | grep -q 'Private Key Object; RSA'"
"${P11TOOL[@]}" --list-objects --type pubkey >"$WORK/pubkeys.txt" 2>&1 ||
	fail "pkcs11-tool --list-objects --type pubkey failed"
pub_ok() { # pub_ok ID KIND: the public key is on the token, of KIND, usage verify only
	local block
	block="$(object_block "$WORK/pubkeys.txt" "$1")"
	echo "$block"
	echo "$block" | head -1 | grep -qF "$2" && echo "$block" | grep -Eq '^  Usage: +verify$'
}
check "cred-ec public key: P-256, verify only" pub_ok cred-ec "EC  EC_POINT 256 bits"
check "cred-rsa public key: RSA 2048, verify only" pub_ok cred-rsa "RSA 2048 bits"
check "batch-2 public key: P-384" pub_ok batch-2 "EC  EC_POINT 384 bits"

# ---- csr ----
for id in cred-ec cred-rsa; do
	check "csr $id" admin csr --credential "$id" --subject "/CN=$id owner/O=iamsign tests/C=HK" \
		--out "$WORK/$id.csr"
	check "csr $id verifies with openssl req -verify" \
		openssl req -in "$WORK/$id.csr" -noout -verify
	check "csr $id has the subject" bash -c \
		"openssl req -in '$WORK/$id.csr' -noout -subject -nameopt compat | grep -qF 'CN=$id owner/O=iamsign tests/C=HK'"
done
check "csr of cred-ec holds the token's public key" bash -c \
	"openssl req -in '$WORK/cred-ec.csr' -noout -pubkey | openssl pkey -pubin -noout -text | grep -q 'P-256'"
check_fails "csr with an escaped subject refused" admin csr --credential cred-ec \
	--subject '/CN=a\/b' --out "$WORK/bad.csr"
check_fails "csr with an unknown attribute refused" admin csr --credential cred-ec \
	--subject '/XYZ=a' --out "$WORK/bad.csr"
check_fails "csr for a missing key refused" admin csr --credential no-such-key \
	--subject '/CN=x' --out "$WORK/bad.csr"

# ---- certificates from the test CA ----
for id in cred-ec cred-rsa; do
	check "CA signs the $id request" openssl x509 -req -in "$WORK/$id.csr" -CA "$WORK/ca.pem" \
		-CAkey "$WORK/ca.key" -CAserial "$WORK/ca.srl" -CAcreateserial -days 30 -sha256 \
		-extfile "$WORK/leaf.ext" -out "$WORK/$id.pem"
done

# A certificate for a different key (a software key), same subject as cred-ec.
if ! { openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
	-keyout "$WORK/other.key" -subj "/CN=cred-ec owner/O=iamsign tests/C=HK" \
	-out "$WORK/other.csr" &&
	openssl x509 -req -in "$WORK/other.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" \
		-CAserial "$WORK/ca.srl" -days 30 -extfile "$WORK/leaf.ext" -out "$WORK/other.pem"; } \
	>/dev/null 2>&1; then
	fail "cannot make the foreign certificate"
fi

check_fails "import-cert of a certificate for a different key refused" \
	admin import-cert --credential cred-ec --cert "$WORK/other.pem"
check "refusal says the certificate does not match" \
	output_has "$WORK/check.out" "certificate does not match the token key"
check_fails "import-cert of another credential's certificate refused" \
	admin import-cert --credential cred-ec --cert "$WORK/cred-rsa.pem"

check "import-cert cred-ec (with chain)" \
	admin import-cert --credential cred-ec --cert "$WORK/cred-ec.pem" --chain "$WORK/ca.pem"
check "import-cert cred-rsa" admin import-cert --credential cred-rsa --cert "$WORK/cred-rsa.pem"
check "import-cert again replaces the certificate" \
	admin import-cert --credential cred-rsa --cert "$WORK/cred-rsa.pem"
"${P11TOOL[@]}" --list-objects --type cert >"$WORK/certs.txt" 2>&1 || fail "pkcs11-tool (certs)"
check "one certificate per credential on the token" bash -c \
	"[ \$(grep -cE '^  label: +cred-ec$' '$WORK/certs.txt') -eq 1 ] && [ \$(grep -cE '^  label: +cred-rsa$' '$WORK/certs.txt') -eq 1 ]"
check "stored certificate shares the key's CKA_ID" bash -c \
	"[ \"\$(awk '/^  label: +cred-ec\$/{f=1} f&&/ID:/{print \$2; exit}' '$WORK/certs.txt')\" = \"\$(awk '/^  label: +cred-ec\$/{f=1} f&&/ID:/{print \$2; exit}' '$WORK/privkeys.txt')\" ]"
"${P11TOOL[@]}" --read-object --type cert --label cred-ec -o "$WORK/stored.der" >/dev/null 2>&1
check "stored certificate is the imported one" cmp "$WORK/stored.der" \
	<(openssl x509 -in "$WORK/cred-ec.pem" -outform DER)

# ---- enrol ----
if ! { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$WORK/device.key" &&
	openssl pkey -in "$WORK/device.key" -pubout -out "$WORK/device.pub"; } 2>/dev/null; then
	fail "cannot make the device key"
fi
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 2>/dev/null |
	openssl pkey -pubout -out "$WORK/device-rsa.pub" || fail "RSA device key"

check_fails "enrol with an RSA device key refused" admin enrol --credential cred-ec \
	--user citizen-001 --class citizen --device-key "$WORK/device-rsa.pub"
check_fails "enrol with an unknown class refused" admin enrol --credential cred-ec \
	--user citizen-001 --class visitor
check_fails "enrol without a key on the token refused" admin enrol --credential no-such-key \
	--user citizen-001 --class citizen
check "enrol cred-ec (citizen, device key)" admin enrol --credential cred-ec --user citizen-001 \
	--class citizen --device-key "$WORK/device.pub"
check "enrol cred-rsa (seal)" admin enrol --credential cred-rsa --user td-seal --class seal
check_fails "duplicate enrol refused" admin enrol --credential cred-ec --user citizen-002 \
	--class citizen
check "refusal says already enrolled" output_has "$WORK/check.out" "already enrolled"
check "enrol by key URI" admin enrol --credential adopted --user citizen-003 --class citizen \
	--key "pkcs11:object=batch-1;type=private"

check "state directory is 0700" test "$(stat -c %a "$WORK/state")" = 700
check "registry database is 0600" test "$(stat -c %a "$WORK/state/iamsign.db")" = 600

# ---- list ----
check "list" admin list
admin list >"$WORK/list.txt" 2>"$WORK/list.err"
cat "$WORK/list.txt"
check "list header" bash -c "head -1 '$WORK/list.txt' | grep -qE '^CREDENTIAL +OWNER +CLASS +STATUS +ALGORITHM +SUBJECT +NOT-AFTER$'"
not_after() {
	date -u -d "$(openssl x509 -in "$1" -noout -enddate | cut -d= -f2)" +%Y-%m-%dT%H:%M:%SZ
}
row_ok() { # row_ok ID OWNER CLASS ALG SUBJECT NOTAFTER
	local row
	row="$(grep -E "^$1 " "$WORK/list.txt")"
	[ -n "$row" ] || {
		echo "no row for $1"
		return 1
	}
	echo "$row" | grep -qE "^$1 +$2 +$3 +active +$4 +" &&
		echo "$row" | grep -qF "$5" && echo "$row" | grep -qE " $6\$"
}
check "list shows cred-ec" row_ok cred-ec citizen-001 citizen ec-p256 \
	"/CN=cred-ec owner/O=iamsign tests/C=HK" "$(not_after "$WORK/cred-ec.pem")"
check "list shows cred-rsa" row_ok cred-rsa td-seal seal rsa-2048 \
	"/CN=cred-rsa owner/O=iamsign tests/C=HK" "$(not_after "$WORK/cred-rsa.pem")"
check "list shows a credential without certificate with -" bash -c \
	"grep -qE '^adopted +citizen-003 +citizen +active +ec-p384 +- +-\$' '$WORK/list.txt'"
check "list is in ID order" bash -c \
	"[ \"\$(tail -n +2 '$WORK/list.txt' | awk '{print \$1}' | tr '\n' ' ')\" = 'adopted cred-ec cred-rsa ' ]"
