#!/usr/bin/env bash
# Wrapped keys (issue 16): the KEK made by init-token, read back with pkcs11-tool (AES, wrap and
# unwrap only, sensitive, never extractable, private, token); keys generated and wrapped by
# keygen sign through signHash and signDoc, verified by openssl; the registry holds no plaintext
# key; a blob swapped between credentials, a flipped byte, a blob under another KEK and a
# missing KEK are each refused 500 key_unusable and recorded in the ledger while the other
# credentials keep signing; keys.cache: 2 with 8 credentials under load; kek rotate stopped by
# a damaged blob, then resumed; the batch commands' bad input refused with FILE:line and
# nothing written.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
setup_env
init_token

P11TOOL=(pkcs11-tool --module "$SOFTHSM_MODULE" --token-label "$TOKEN_LABEL")
DB="$WORK/state/iamsign.db"
sq() { sqlite3 "$DB" "$@"; }

# ---- the KEK, independently ----
"${P11TOOL[@]}" --login --pin "$USER_PIN" --list-objects --type secrkey >"$WORK/kek.txt" 2>&1 || true
grep -q 'label: *iamsign-kek' "$WORK/kek.txt" && pass "init-token made the KEK" || fail "no KEK: $(cat "$WORK/kek.txt")"
grep -q 'AES length 32' "$WORK/kek.txt" && pass "KEK is AES-256" || fail "KEK type: $(cat "$WORK/kek.txt")"
grep -Eq 'Usage: *wrap, unwrap$' "$WORK/kek.txt" && pass "KEK usage is wrap and unwrap only" || fail "KEK usage: $(cat "$WORK/kek.txt")"
grep -q 'Access: *sensitive, always sensitive, never extractable' "$WORK/kek.txt" && pass "KEK sensitive, never extractable" || fail "KEK access: $(cat "$WORK/kek.txt")"
check_fails "kek create refused when a KEK exists" admin kek create

# ---- an unwrapped key, read back through PKCS#11 ----
if "$IAMSIGN_BUILD/tests/wrapped-attrs" "$SOFTHSM_MODULE" "pkcs11:token=$TOKEN_LABEL" "$WORK/user.pin" \
	"pkcs11:object=iamsign-kek;type=secret-key" >"$WORK/attrs.txt" 2>&1; then
	pass "unwrapped key: private session object, sensitive, not extractable, sign only ($(grep -c '^ok' "$WORK/attrs.txt") checks)"
else
	fail "unwrapped key attributes: $(cat "$WORK/attrs.txt")"
fi

# ---- keys: wrapped by default ----
for i in 1 2 3 4 5 6 7 8; do
	provision_cred "w$i" ec-p256 "citizen-$i" seal
	openssl x509 -in "$WORK/w$i.pem" -pubkey -noout >"$WORK/w$i.pub"
done
provision_cred wr rsa-2048 citizen-r seal
openssl x509 -in "$WORK/wr.pem" -pubkey -noout >"$WORK/wr.pub"
[ "$(sq "SELECT count(*) FROM wrapped_keys")" = 9 ] && pass "nine blobs in the registry" || fail "blobs: $(sq 'SELECT count(*) FROM wrapped_keys')"
"${P11TOOL[@]}" --login --pin "$USER_PIN" --list-objects --type privkey >"$WORK/priv.txt" 2>&1 || true
grep -Eq 'label: *w1$' "$WORK/priv.txt" && fail "a wrapped key left a private key object on the token" || pass "no token object for wrapped keys"
sq "SELECT hex(blob) FROM wrapped_keys WHERE id = 'w1'" | xxd -r -p >"$WORK/w1.blob"
[ "$(stat -c %s "$WORK/w1.blob")" -ge 40 ] && pass "w1 blob read ($(stat -c %s "$WORK/w1.blob") bytes)" || fail "w1 blob"
check_fails "the blob does not parse as a private key (DER)" openssl pkey -inform DER -in "$WORK/w1.blob" -noout
check_fails "the blob is not PKCS#8 either" openssl pkcs8 -inform DER -nocrypt -in "$WORK/w1.blob" -out /dev/null
check_fails "the blob is not ASN.1 at all" openssl asn1parse -inform DER -in "$WORK/w1.blob"
admin list >"$WORK/list.txt"
grep -Eq '^w1 +citizen-1 +seal +active +ec-p256/wrapped ' "$WORK/list.txt" && pass "list shows w1 wrapped" || fail "list: $(cat "$WORK/list.txt")"

# Damage before the daemon has unwrapped anything (unwrapped keys are cached by credential
# and public key, so a cached key would not read its row again).
sq "SELECT hex(blob), hex(pub), hex(binding) FROM wrapped_keys WHERE id IN ('w6','w7') ORDER BY id" >"$WORK/pair.txt"
b6=$(sed -n 1p "$WORK/pair.txt" | cut -d'|' -f1); b7=$(sed -n 2p "$WORK/pair.txt" | cut -d'|' -f1)
# w6 gets w7's blob only; w7 gets w6's blob, public key and binding (a whole key moved).
sq "UPDATE wrapped_keys SET blob = x'$b7' WHERE id = 'w6'"
p6=$(sed -n 1p "$WORK/pair.txt" | cut -d'|' -f2); g6=$(sed -n 1p "$WORK/pair.txt" | cut -d'|' -f3)
sq "UPDATE wrapped_keys SET blob = x'$b6', pub = x'$p6', binding = x'$g6' WHERE id = 'w7'"
# w5: one byte of the blob flipped.
b5=$(sq "SELECT hex(blob) FROM wrapped_keys WHERE id = 'w5'")
flip=$(printf '%s' "$b5" | cut -c1-20)$(printf '%02X' $(( 0x$(printf '%s' "$b5" | cut -c21-22) ^ 0x01 )))$(printf '%s' "$b5" | cut -c23-)
sq "UPDATE wrapped_keys SET blob = x'$flip' WHERE id = 'w5'"
# w4: its KEK is not on the token.
sq "UPDATE wrapped_keys SET kek = randomblob(16) WHERE id = 'w4'"

start_daemon
printf 'Vehicle licence renewal\nplate: AB 1234\n' >"$WORK/form.txt"
D=$(file_digest "$WORK/form.txt")
for c in w1 w2 wr; do
	if [ "$c" = wr ]; then
		body="{\"credentialID\":\"wr\",\"hashes\":[\"$D\"],\"hashAlgorithmOID\":\"$OID_SHA256\",\"signAlgo\":\"1.2.840.113549.1.1.11\"}"
		expect_status "signHash $c" 200 "$(csc signatures/signHash "$body")"
	else
		expect_status "signHash $c" 200 "$(sign_hash "$c" "" "$D")"
	fi
	verify_sig "$WORK/$c.pub" "$WORK/form.txt" "$(jq_get '.signatures[0]')" && pass "openssl dgst -verify: $c" || fail "$c signature does not verify"
done
expect_status "signDoc w3" 200 "$(csc signatures/signDoc "{\"credentialID\":\"w3\",\"documentDigests\":[{\"hashes\":[\"$D\"],\"hashAlgorithmOID\":\"$OID_SHA256\"}],\"signature_format\":\"C\",\"conformance_level\":\"Ades-B-B\",\"signed_envelope_property\":\"Detached\",\"signAlgo\":\"1.2.840.10045.4.3.2\"}")"
jq_get '.SignatureObject[0]' | base64 -d >"$WORK/w3.p7s"
openssl cms -verify -binary -inform DER -in "$WORK/w3.p7s" -content "$WORK/form.txt" -CAfile "$WORK/ca.pem" -purpose any -out /dev/null 2>"$WORK/cms.err" &&
	pass "openssl cms -verify: w3 (wrapped key)" || fail "cms -verify w3: $(cat "$WORK/cms.err")"
expect_status "credentials/info of a wrapped key" 200 "$(csc credentials/info '{"credentialID":"w2","certificates":"single","certInfo":true}')"
jq_get '.cert.subjectDN' | grep -q 'CN=citizen-2' && pass "info reports the registry's certificate" || fail "info: $(cat "$WORK/resp.json")"

for c in w6 w7 w5 w4; do
	expect_status "damaged $c refused" 500 "$(sign_hash "$c" "" "$D")"
	expect_reason key_unusable
	expect_status "w1 still signs after $c" 200 "$(sign_hash w1 "" "$D")"
done
admin audit export --format jsonl >"$WORK/export.jsonl"
n=$(jq -s '[.[] | select(.reason == "key_unusable" and .decision == "deny")] | length' "$WORK/export.jsonl")
[ "$n" = 4 ] && pass "four key_unusable refusals in the ledger" || fail "key_unusable records: $n"
grep -q 'wrapped key of credential w7 refused: the key.s binding to credential w7 does not verify' "$WORK/daemon.log" && pass "a moved key: its binding names another credential" || fail "w7 log: $(grep w7 "$WORK/daemon.log")"
grep -q 'wrapped key of credential w6 refused: the unwrapped key is not the credential' "$WORK/daemon.log" && pass "a moved blob: not the credential's public key" || fail "w6 log: $(grep w6 "$WORK/daemon.log")"
grep -q 'wrapped key of credential w4 refused: the KEK that wrapped this key is not on the token' "$WORK/daemon.log" && pass "a missing KEK" || fail "w4 log"
stop_daemon

# Put the damaged rows back (from the originals kept in pair.txt and b5).
sq "UPDATE wrapped_keys SET blob = x'$b6' WHERE id = 'w6'"
p7=$(sed -n 2p "$WORK/pair.txt" | cut -d'|' -f2); g7=$(sed -n 2p "$WORK/pair.txt" | cut -d'|' -f3)
sq "UPDATE wrapped_keys SET blob = x'$b7', pub = x'$p7', binding = x'$g7' WHERE id = 'w7'"
sq "UPDATE wrapped_keys SET blob = x'$b5' WHERE id = 'w5'"
kek=$(sq "SELECT hex(kek) FROM wrapped_keys WHERE id = 'w1'")
sq "UPDATE wrapped_keys SET kek = x'$kek' WHERE id = 'w4'"

# ---- kek rotate: stopped by a damaged blob, resumed ----
sq "UPDATE wrapped_keys SET blob = x'$flip' WHERE id = 'w5'"
check_fails "kek rotate stops on a damaged blob" admin kek rotate
grep -q 'w5: not rewrapped' "$WORK/check.out" && pass "rotate names the blob it could not rewrap" || fail "rotate output: $(cat "$WORK/check.out")"
[ "$(sq "SELECT count(*) FROM wrapped_keys WHERE kek = x'$kek'")" = 1 ] && pass "every other blob rewrapped, the old KEK kept for w5" || fail "old-KEK blobs: $(sq "SELECT id FROM wrapped_keys WHERE kek = x'$kek'")"
sq "UPDATE wrapped_keys SET blob = x'$b5' WHERE id = 'w5'"
check "kek rotate resumed" admin kek rotate
grep -q 'resuming with new KEK' "$WORK/check.out" && grep -q '1 blobs rewrapped; 1 old KEK(s) destroyed' "$WORK/check.out" && pass "resume rewrapped the one left and retired the old KEK" || fail "resume: $(cat "$WORK/check.out")"
"${P11TOOL[@]}" --login --pin "$USER_PIN" --list-objects --type secrkey 2>/dev/null | grep -c 'label: *iamsign-kek' >"$WORK/nkek" || true
[ "$(cat "$WORK/nkek")" = 1 ] && pass "one KEK left on the token" || fail "KEKs: $(cat "$WORK/nkek")"
# A blob of the old KEK, now gone, labelled as under the new one: another KEK's blob.
newkek=$(sq "SELECT hex(kek) FROM wrapped_keys WHERE id = 'w1'")
[ "$newkek" != "$kek" ] && pass "blobs under the new KEK" || fail "KEK unchanged"
sq "UPDATE wrapped_keys SET blob = x'$b6' WHERE id = 'w8'"

# ---- keys.cache: 2, eight credentials, concurrent load ----
printf 'keys:\n  cache: 2\n' >>"$WORK/iamsignd.yaml"
start_daemon
expect_status "a blob of another KEK refused" 500 "$(sign_hash w8 "" "$D")"
expect_reason key_unusable
bad=0
for round in 1 2 3; do
	pids=()
	for i in 1 2 3 4 5 6 7; do
		curl -s -o "$WORK/r$round-$i.json" -w '%{http_code}' --unix-socket "$WORK/iamsign.sock" \
			-H 'Content-Type: application/json' \
			--data-binary "{\"credentialID\":\"w$i\",\"hashes\":[\"$D\"],\"hashAlgorithmOID\":\"$OID_SHA256\",\"signAlgo\":\"1.2.840.10045.4.3.2\"}" \
			http://localhost/csc/v2/signatures/signHash >"$WORK/s$round-$i" 2>/dev/null &
		pids+=($!)
	done
	wait "${pids[@]}" || true
done
for round in 1 2 3; do
	for i in 1 2 3 4 5 6 7; do
		sig=$(jq -r '.signatures[0]' "$WORK/r$round-$i.json" 2>/dev/null || true)
		if [ "$(cat "$WORK/s$round-$i")" != 200 ] || ! verify_sig "$WORK/w$i.pub" "$WORK/form.txt" "$sig"; then
			bad=$((bad + 1))
		fi
	done
done
[ "$bad" = 0 ] && pass "21 concurrent signatures over 7 credentials with keys.cache 2, all verified" || fail "$bad of 21 failed or did not verify"
# Every key has been proven and evicted since: unwrapped again, the same bytes are not proven
# again, but any other bytes are. w2 gets w1's blob, and w1 and w3 fill the cache.
b1=$(sq "SELECT hex(blob) FROM wrapped_keys WHERE id = 'w1'")
b2=$(sq "SELECT hex(blob) FROM wrapped_keys WHERE id = 'w2'")
sq "UPDATE wrapped_keys SET blob = x'$b1' WHERE id = 'w2'"
for c in w1 w3; do expect_status "$c signs" 200 "$(sign_hash "$c" "" "$D")"; done
expect_status "a proven credential given another's blob: refused" 500 "$(sign_hash w2 "" "$D")"
expect_reason key_unusable
sq "UPDATE wrapped_keys SET blob = x'$b2' WHERE id = 'w2'"
expect_status "its own blob back: w2 signs" 200 "$(sign_hash w2 "" "$D")"
verify_sig "$WORK/w2.pub" "$WORK/form.txt" "$(jq_get '.signatures[0]')" && pass "w2 verifies" || fail "w2 signature"
again=$(metric iamsign_wrapped_keys_proven_again_total)
[ "${again:-0}" -ge 1 ] && pass "keys unwrapped again without proving them again ($again)" || fail "proven again: ${again:-none}"
stop_daemon
ev=$(sed -n 's/.*wrapped keys: .* \([0-9]*\) evictions.*/\1/p' "$WORK/daemon.log" | tail -n1)
[ "${ev:-0}" -ge 5 ] && pass "LRU evicted ($ev evictions)" || fail "evictions: ${ev:-none}: $(grep 'wrapped keys' "$WORK/daemon.log")"
grep -q 'held of 2,' "$WORK/daemon.log" && pass "cache held at most 2" || fail "held: $(grep 'wrapped keys' "$WORK/daemon.log")"

# ---- batch commands ----
check "keygen --count 4 (wrapped)" admin keygen --credential bulk --alg ec-p256 --count 4
# on_tty CMD...: CMD with stderr on a terminal (script(1)), its output in $WORK/tty.out.
on_tty() {
	script -qefc "$(printf '%q ' "$@")" /dev/null >"$WORK/tty.out" 2>&1
}
# bar N: the output shows a progress bar that reached N/N.
bar() {
	tr '\r' '\n' <"$WORK/tty.out" | grep -Eq "^\[#{40}\] 100% $1/$1" && pass "progress bar to $1/$1" ||
		fail "no progress bar: $(cat -v "$WORK/tty.out")"
}
check "keygen --count 6 resumes: 2 made, 4 skipped" on_tty "$ADMIN" -c "$WORK/iamsignd.yaml" keygen --credential bulk --alg ec-p256 --count 6
bar 6
grep -q '2 ec-p256 keys generated and wrapped, 4 already had one' "$WORK/tty.out" && pass "resumed keygen summary" || fail "summary: $(cat "$WORK/tty.out")"
mkdir -p "$WORK/csr" "$WORK/certs"
check "csr --count 6" on_tty "$ADMIN" -c "$WORK/iamsignd.yaml" csr --credential bulk --count 6 --subject "/CN=%s/O=iamsign tests" --out "$WORK/csr"
bar 6
[ "$(ls "$WORK/csr" | grep -c '\.csr$')" = 6 ] && pass "six CSRs" || fail "CSRs: $(ls "$WORK/csr")"
openssl req -in "$WORK/csr/bulk-3.csr" -verify -noout -subject 2>&1 | grep -q 'CN = bulk-3' && pass "bulk-3 CSR verifies, subject has its ID" || fail "bulk-3 csr"
for i in 1 2 3 4 5 6; do
	openssl x509 -req -in "$WORK/csr/bulk-$i.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" -CAserial "$WORK/ca.srl" \
		-days 30 -sha256 -extfile "$WORK/leaf.ext" -out "$WORK/certs/bulk-$i.pem" 2>/dev/null
done
cp "$WORK/certs/bulk-2.pem" "$WORK/bulk-2.good"
cp "$WORK/w1.pem" "$WORK/certs/bulk-2.pem"
check_fails "import-cert --dir with a certificate of another key refused" admin import-cert --dir "$WORK/certs"
grep -q "certs/bulk-2.pem: the certificate's public key is not the credential's" "$WORK/check.out" && pass "the refusal names the file" || fail "refusal: $(cat "$WORK/check.out")"
[ "$(sq "SELECT count(*) FROM certs WHERE id LIKE 'bulk-%'")" = 0 ] && pass "nothing half-imported" || fail "certs stored: $(sq "SELECT id FROM certs WHERE id LIKE 'bulk-%'")"
cp "$WORK/bulk-2.good" "$WORK/certs/bulk-2.pem"
check "import-cert --dir" on_tty "$ADMIN" -c "$WORK/iamsignd.yaml" import-cert --dir "$WORK/certs"
bar 6
grep -q '6 certificates checked and stored' "$WORK/tty.out" && pass "import-cert summary" || fail "summary: $(cat "$WORK/tty.out")"
[ "$(sq "SELECT count(*) FROM certs WHERE id LIKE 'bulk-%'")" = 6 ] && pass "six certificates stored" || fail "certs"
printf '# bulk enrolment\nbulk-1 cit-b1 seal\nbulk-2 cit-b2 seal  # second\n\nbulk-3 cit-b3 seal extra field here\n' >"$WORK/enrol.txt"
check_fails "enrol --from with a malformed line refused" admin enrol --from "$WORK/enrol.txt"
grep -q "enrol.txt:5: expected" "$WORK/check.out" && pass "refusal names FILE:line" || fail "refusal: $(cat "$WORK/check.out")"
[ "$(sq "SELECT count(*) FROM credentials WHERE id LIKE 'bulk-%'")" = 0 ] && pass "nothing from the file enrolled" || fail "enrolled anyway"
printf 'bulk-1 cit-b1 seal\nbulk-2 cit-b2 seal\nbulk-1 cit-b9 seal\n' >"$WORK/enrol.txt"
check_fails "enrol --from with a duplicate ID refused" admin enrol --from "$WORK/enrol.txt"
grep -q "enrol.txt:3: bulk-1 is already on line 1" "$WORK/check.out" && pass "duplicate named" || fail "dup: $(cat "$WORK/check.out")"
for i in 1 2 3 4 5 6; do printf 'bulk-%s cit-b%s seal\n' "$i" "$i"; done >"$WORK/enrol.txt"
check "enrol --from" on_tty "$ADMIN" -c "$WORK/iamsignd.yaml" enrol --from "$WORK/enrol.txt"
bar 6
check "enrol --from again: all already enrolled" admin enrol --from "$WORK/enrol.txt"
grep -q '0 credentials enrolled, 6 already were' "$WORK/check.out" && pass "second run is a no-op" || fail "rerun: $(cat "$WORK/check.out")"
admin audit export --format jsonl >"$WORK/export.jsonl"
[ "$(jq -s '[.[] | select(.op == "admin.enrol" and .decision == "allow" and (.detail | startswith("from=")))] | length' "$WORK/export.jsonl")" = 2 ] &&
	pass "one audit record per batch" || fail "enrol batch records"
for op in keygen:count= csr:count= import-cert:dir=; do
	n=$(jq -s --arg op "admin.${op%%:*}" --arg d "${op#*:}" '[.[] | select(.op == $op and (.detail | contains($d)))] | length' "$WORK/export.jsonl")
	[ "$n" -ge 1 ] && [ "$n" -le 3 ] && pass "${op%%:*}: one audit record per run ($n)" || fail "${op%%:*} records: $n"
done

# ---- every credential signs after rotation; destroy erases the blob ----
start_daemon
for i in 1 2 3 4 5 6 7; do
	st=$(sign_hash "w$i" "" "$D")
	[ "$st" = 200 ] && verify_sig "$WORK/w$i.pub" "$WORK/form.txt" "$(jq_get '.signatures[0]')" || bad=$((bad + 1))
done
openssl x509 -in "$WORK/certs/bulk-6.pem" -pubkey -noout >"$WORK/bulk-6.pub"
expect_status "bulk-6 signs" 200 "$(sign_hash bulk-6 "" "$D")"
verify_sig "$WORK/bulk-6.pub" "$WORK/form.txt" "$(jq_get '.signatures[0]')" && pass "bulk-6 verified" || fail "bulk-6"
[ "$bad" = 0 ] && pass "w1..w7 sign after kek rotate" || fail "$bad failed after rotation"
check "destroy a wrapped credential" admin destroy --credential w2
[ "$(sq "SELECT count(*) FROM wrapped_keys WHERE id = 'w2'")" = 0 ] && pass "w2's blob erased" || fail "blob still there"
expect_status "destroyed w2 refused" 400 "$(sign_hash w2 "" "$D")"
expect_reason unknown_credential
stop_daemon

# ---- session loss (the mock module): the unwrapped objects die with the sessions ----
use_mock
sed -i -e "s|^  module: .*|  module: $MOCK\n  module_dirs: [$(dirname "$MOCK")]|" "$WORK/iamsignd.yaml"
ctl "# no faults"
start_daemon
expect_status "w1 signs through the mock" 200 "$(sign_hash w1 "" "$D")"
expect_status "w3 signs through the mock" 200 "$(sign_hash w3 "" "$D")"
ctl "C_Sign=CKR_DEVICE_REMOVED*1"
expect_status "session lost mid-signature" 503 "$(sign_hash w1 "" "$D")"
expect_reason token_unavailable
ctl "# no faults"
ok=0
for _ in $(seq 1 100); do
	st=$(sign_hash w1 "" "$D")
	if [ "$st" = 200 ]; then
		ok=1
		break
	fi
	sleep 0.1
done
[ "$ok" = 1 ] && pass "w1 signs again after recovery" || fail "w1 not recovered: $(cat "$WORK/resp.json")"
verify_sig "$WORK/w1.pub" "$WORK/form.txt" "$(jq_get '.signatures[0]')" && pass "w1's signature after recovery verifies (unwrapped again)" || fail "w1 after recovery"
expect_status "w3, cached before the outage, signs" 200 "$(sign_hash w3 "" "$D")"
verify_sig "$WORK/w3.pub" "$WORK/form.txt" "$(jq_get '.signatures[0]')" && pass "w3's signature after recovery verifies" || fail "w3 after recovery: no dangling handle"
stop_daemon
