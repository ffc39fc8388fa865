#!/usr/bin/env bash
# Signature activation data (the citizen's approval), minted by tests/mint-sad (jose/OpenSSL,
# never iamsign's own code): a valid SAD signs and the signature verifies; every attack is
# refused with its reason (replay, missing, alg none, HS256 with the public key, ES384 header,
# bad signature, untrusted key, unapproved hash or hash algorithm, another credential's or
# citizen's SAD, expired, another purpose); a device-key SAD; num=3 allows exactly three
# signatures; consumption survives a daemon restart.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
setup_env
init_token

ec_keypair issuer    # the pinned activation issuer
ec_keypair rogue     # a key nobody trusts
ec_keypair device    # cit-dev's registered device key
add_sad_issuers "$WORK/issuer.pub"

write_policy <<EOF
callers:
  renewal:
    uid: $(id -u)
    purposes: [vehicle-licence-renewal, tax-filing]
    classes: [citizen, seal]
purposes:
  vehicle-licence-renewal:
    sign_algorithms: [ecdsa-with-SHA256, ecdsa-with-SHA384]
    hash_algorithms: [sha256, sha384]
    max_hashes: 4
    require_sad: true
  tax-filing:
    sign_algorithms: [ecdsa-with-SHA256]
    hash_algorithms: [sha256]
    max_hashes: 4
    require_sad: true
EOF

ca_setup test "$WORK/ca.pem" "$WORK/ca.key"
provision_cred cit-a ec-p256 citizen-1
provision_cred cit-b ec-p256 citizen-2
provision_cred_ca test cit-dev ec-p256 citizen-3 citizen -- --device-key "$WORK/device.pub"
for c in cit-a cit-b cit-dev; do
	openssl x509 -in "$WORK/$c.pem" -pubkey -noout >"$WORK/$c.certpub" || die "public key of $c"
done
start_daemon

P=vehicle-licence-renewal
printf 'Vehicle licence renewal\nplate: AB 1234\n' >"$WORK/form1.txt"
printf 'Vehicle licence renewal\nplate: CD 5678\n' >"$WORK/form2.txt"
printf 'Tax return 2026\n' >"$WORK/form3.txt"
d1=$(file_digest "$WORK/form1.txt")
d2=$(file_digest "$WORK/form2.txt")
d3=$(file_digest "$WORK/form3.txt")

# expect_signed MSG CRED FILE STATUS: STATUS must be 200 and the returned signature must verify
# for FILE with the public key of CRED's certificate (and not for another document).
expect_signed() {
	local msg="$1" cred="$2" file="$3" st="$4" sig
	expect_status "$msg" 200 "$st"
	[ "$st" = 200 ] || return 0
	sig=$(jq_get '.signatures[0]')
	if verify_sig "$WORK/$cred.certpub" "$file" "$sig"; then
		pass "$msg: signature verified by openssl dgst -verify"
	else
		fail "$msg: openssl dgst -verify rejected the signature (body: $(head -c 300 "$WORK/resp.json"))"
	fi
	if verify_sig "$WORK/$cred.certpub" "$WORK/other-doc.txt" "$sig"; then
		fail "$msg: the signature also verifies for another document"
	fi
}
printf 'unrelated\n' >"$WORK/other-doc.txt"

# expect_refused MSG STATUS REASON GOT
expect_refused() {
	expect_status "$1" "$2" "$4"
	expect_reason "$3"
}

# --- valid, then replayed ---
sad=$(mint_sad "$WORK/issuer.key" "$(sad_claims cit-a citizen-1 $P "$d1")")
expect_signed "valid SAD" cit-a "$WORK/form1.txt" "$(sign_hash cit-a $P "$d1" "$sad")"
expect_refused "the same SAD again (num 1)" 403 sad_replayed "$(sign_hash cit-a $P "$d1" "$sad")"

# --- missing ---
expect_refused "citizen credential without SAD" 403 sad_required "$(sign_hash cit-a $P "$d1")"

# --- forged or untrusted tokens ---
claims=$(sad_claims cit-a citizen-1 $P "$d1")
expect_refused "alg none" 403 sad_invalid \
	"$(sign_hash cit-a $P "$d1" "$(mint_sad "$WORK/issuer.key" "$claims" none)")"
expect_refused "HS256 keyed with the issuer's public key" 403 sad_invalid \
	"$(sign_hash cit-a $P "$d1" "$(mint_sad "$WORK/issuer.key" "$claims" hs256-pub)")"
expect_refused "ES384 header on an ES256 signature" 403 sad_invalid \
	"$(sign_hash cit-a $P "$d1" "$(mint_sad "$WORK/issuer.key" "$claims" es384-header)")"
expect_refused "bad signature" 403 sad_invalid \
	"$(sign_hash cit-a $P "$d1" "$(mint_sad "$WORK/issuer.key" "$claims" bad-sig)")"
expect_refused "signed by an untrusted key" 403 sad_invalid \
	"$(sign_hash cit-a $P "$d1" "$(mint_sad "$WORK/rogue.key" "$claims")")"
expect_refused "signed by another credential's device key" 403 sad_invalid \
	"$(sign_hash cit-a $P "$d1" "$(mint_sad "$WORK/device.key" "$claims")")"
expect_refused "malformed SAD" 403 sad_invalid "$(sign_hash cit-a $P "$d1" "not-a.jws")"
# None of these consumed anything: the same claims, properly signed, still sign.
expect_signed "proper SAD with the claims of the refused ones" cit-a "$WORK/form1.txt" \
	"$(sign_hash cit-a $P "$d1" "$(mint_sad "$WORK/issuer.key" "$claims")")"

# --- hashes ---
sad=$(mint_sad "$WORK/issuer.key" "$(sad_claims cit-a citizen-1 $P "$d1")")
expect_refused "hash not approved" 403 hash_not_authorised "$(sign_hash cit-a $P "$d2" "$sad")"
expect_refused "an approved hash plus one not approved" 403 hash_not_authorised \
	"$(sign_hash cit-a $P "$d1 $d2" "$sad")"
d1_384=$(file_digest "$WORK/form1.txt" sha384)
sad=$(mint_sad "$WORK/issuer.key" "$(sad_claims cit-a citizen-1 $P "$d1_384" ".halg = \"$OID_SHA384\"")")
expect_refused "SAD for SHA-384, request SHA-256" 403 hash_not_authorised \
	"$(sign_hash cit-a $P "$d1" "$sad")"
sad=$(mint_sad "$WORK/issuer.key" "$(sad_claims cit-a citizen-1 $P "$d1")")
expect_refused "SAD for SHA-256, request SHA-384" 403 hash_not_authorised \
	"$(sign_hash cit-a $P "$d1_384" "$sad" "$OID_SHA384")"
# An approved "hash" that is the requested digest with bytes appended, or one byte short: the
# SAD does not approve the requested digest (either reason is right), and nothing is signed.
d1_long=$( (openssl dgst -sha256 -binary "$WORK/form1.txt"; head -c 16 /dev/zero) | base64 -w0)
d1_short=$(openssl dgst -sha256 -binary "$WORK/form1.txt" | head -c 31 | base64 -w0)
for variant in long short; do
	if [ $variant = long ]; then h=$d1_long; else h=$d1_short; fi
	sad=$(mint_sad "$WORK/issuer.key" "$(sad_claims cit-a citizen-1 $P "$h")")
	st=$(sign_hash cit-a $P "$d1" "$sad")
	reason=$(jq_get '.reason // empty')
	if [ "$st" = 403 ] && { [ "$reason" = sad_invalid ] || [ "$reason" = hash_not_authorised ]; }; then
		pass "SAD hash of the wrong length ($variant) refused: $reason"
	else
		fail "SAD hash of the wrong length ($variant): HTTP $st, expected 403 sad_invalid or hash_not_authorised; body: $(head -c 300 "$WORK/resp.json")"
	fi
done
sad=$(mint_sad "$WORK/issuer.key" "$(sad_claims cit-a citizen-1 $P "$d1 $d2" '.num = 2')")
st=$(sign_hash cit-a $P "$d1 $d2" "$sad")
expect_status "two approved hashes in one request" 200 "$st"
if [ "$st" = 200 ]; then
	verify_sig "$WORK/cit-a.certpub" "$WORK/form1.txt" "$(jq_get '.signatures[0]')" &&
		verify_sig "$WORK/cit-a.certpub" "$WORK/form2.txt" "$(jq_get '.signatures[1]')" &&
		pass "both signatures verified in order" || fail "two-hash signatures do not verify: $(cat "$WORK/resp.json")"
fi

# --- bound to credential, citizen, time and purpose ---
sad=$(mint_sad "$WORK/issuer.key" "$(sad_claims cit-b citizen-1 $P "$d1")")
expect_refused "another credential's SAD" 403 sad_wrong_credential "$(sign_hash cit-a $P "$d1" "$sad")"
sad=$(mint_sad "$WORK/issuer.key" "$(sad_claims cit-b citizen-2 $P "$d1")")
st=$(sign_hash cit-a $P "$d1" "$sad")
expect_status "cit-b's whole SAD on cit-a" 403 "$st"
case $(jq_get '.reason // empty') in
sad_wrong_credential | sad_wrong_subject) pass "cit-b's SAD on cit-a: $(jq_get .reason)" ;;
*) fail "cit-b's SAD on cit-a: reason $(jq_get .reason)" ;;
esac
sad=$(mint_sad "$WORK/issuer.key" "$(sad_claims cit-a citizen-2 $P "$d1")")
expect_refused "another citizen's SAD" 403 sad_wrong_subject "$(sign_hash cit-a $P "$d1" "$sad")"
sad=$(mint_sad "$WORK/issuer.key" "$(sad_claims cit-a citizen-1 $P "$d1" '.iat = .iat - 400 | .exp = .iat + 300')")
expect_refused "expired SAD (exp 100 s ago)" 403 sad_expired "$(sign_hash cit-a $P "$d1" "$sad")"
sad=$(mint_sad "$WORK/issuer.key" "$(sad_claims cit-a citizen-1 $P "$d1" '.iat = .iat - 330 | .exp = .iat + 300')")
expect_signed "SAD expired 30 s ago (within the 60 s skew)" cit-a "$WORK/form1.txt" "$(sign_hash cit-a $P "$d1" "$sad")"
sad=$(mint_sad "$WORK/issuer.key" "$(sad_claims cit-a citizen-1 $P "$d1" '.exp = .iat + 900')")
expect_refused "SAD lifetime 900 s (> 600 s)" 403 sad_invalid "$(sign_hash cit-a $P "$d1" "$sad")"
sad=$(mint_sad "$WORK/issuer.key" "$(sad_claims cit-a citizen-1 $P "$d1" '.iat = .iat + 300 | .exp = .iat + 300')")
expect_refused "SAD issued 300 s in the future" 403 sad_invalid "$(sign_hash cit-a $P "$d1" "$sad")"
sad=$(mint_sad "$WORK/issuer.key" "$(sad_claims cit-a citizen-1 tax-filing "$d1")")
expect_refused "SAD for another purpose" 403 sad_wrong_purpose "$(sign_hash cit-a $P "$d1" "$sad")"
# ... which does sign for its own purpose.
expect_signed "the tax-filing SAD for tax-filing" cit-a "$WORK/form1.txt" \
	"$(sign_hash cit-a tax-filing "$d1" "$sad")"

# --- device key ---
sad=$(mint_sad "$WORK/device.key" "$(sad_claims cit-dev citizen-3 $P "$d3")")
expect_signed "SAD signed by the credential's device key" cit-dev "$WORK/form3.txt" \
	"$(sign_hash cit-dev $P "$d3" "$sad")"
expect_refused "device-key SAD again" 403 sad_replayed "$(sign_hash cit-dev $P "$d3" "$sad")"

# --- num = 3 ---
sad3=$(mint_sad "$WORK/issuer.key" "$(sad_claims cit-b citizen-2 $P "$d2" '.num = 3')")
for i in 1 2 3; do
	expect_signed "num=3 SAD, signature $i" cit-b "$WORK/form2.txt" "$(sign_hash cit-b $P "$d2" "$sad3")"
done
expect_refused "num=3 SAD, signature 4" 403 sad_replayed "$(sign_hash cit-b $P "$d2" "$sad3")"

# --- consumption survives a restart ---
sad1=$(mint_sad "$WORK/issuer.key" "$(sad_claims cit-a citizen-1 $P "$d1")")
sad2=$(mint_sad "$WORK/issuer.key" "$(sad_claims cit-a citizen-1 $P "$d2" '.num = 2')")
expect_signed "num=1 SAD before the restart" cit-a "$WORK/form1.txt" "$(sign_hash cit-a $P "$d1" "$sad1")"
expect_signed "num=2 SAD, 1st signature before the restart" cit-a "$WORK/form2.txt" \
	"$(sign_hash cit-a $P "$d2" "$sad2")"
restart_daemon
expect_refused "num=1 SAD replayed after a restart" 403 sad_replayed "$(sign_hash cit-a $P "$d1" "$sad1")"
expect_refused "num=3 SAD (used up) after a restart" 403 sad_replayed "$(sign_hash cit-b $P "$d2" "$sad3")"
expect_signed "num=2 SAD, 2nd signature after the restart" cit-a "$WORK/form2.txt" \
	"$(sign_hash cit-a $P "$d2" "$sad2")"
expect_refused "num=2 SAD, 3rd use after the restart" 403 sad_replayed "$(sign_hash cit-a $P "$d2" "$sad2")"

stop_daemon
