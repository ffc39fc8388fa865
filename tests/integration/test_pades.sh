#!/usr/bin/env bash
# PAdES: iamsign sign-pdf on a form made here (tests/tsa/make-form.py, through qpdf) gives a
# PDF that poppler's pdfsig reports valid and wholly signed, B-B and B-T; its CMS has no
# signing-time; iamsign verify-pdf accepts it; a byte changed inside the signed range fails
# both; a second signature by another incremental update leaves both valid.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
setup_env
for t in pdfsig qpdf certutil python3; do
	command -v "$t" >/dev/null 2>&1 || die "$t is required (tools/bootstrap installs it)"
done
init_token
provision_cred cit-ec ec-p256 citizen-1 seal
provision_cred cit-rsa rsa-2048 citizen-2 seal
setup_tsa
start_tsa
tsa_config 5s
start_daemon
tsa_mode ok

python3 "$IAMSIGN_SRC/tests/tsa/make-form.py" "$WORK/raw.pdf"
qpdf --object-streams=disable --compress-streams=n "$WORK/raw.pdf" "$WORK/form.pdf" || die "qpdf cannot write the form"
mkdir -p "$WORK/nssdb"
certutil -N -d "sql:$WORK/nssdb" --empty-password >/dev/null
certutil -A -d "sql:$WORK/nssdb" -n ca -t "CT,C,C" -i "$WORK/ca.pem"

client() { "$CLIENT" --socket "$WORK/iamsign.sock" "$@"; }
verify_pdf() { "$CLIENT" verify-pdf "$1" --ca "$WORK/ca.pem" --tsa-ca "$TSA/tsa-ca.pem"; }
# pdfsig_ok PDF N: pdfsig reports N signatures, each valid with a trusted certificate, and the
# last one covering the whole document.
pdfsig_ok() {
	pdfsig -nssdir "sql:$WORK/nssdb" "$1" >"$WORK/pdfsig.out" 2>&1 || true
	[ "$(grep -c 'Signature Validation: Signature is Valid' "$WORK/pdfsig.out")" = "$2" ] &&
		[ "$(grep -c 'Certificate Validation: Certificate is Trusted' "$WORK/pdfsig.out")" = "$2" ] &&
		[ "$(grep -c '^Signature #' "$WORK/pdfsig.out")" = "$2" ] &&
		[ "$(grep -E 'Total document signed|Not total document signed' "$WORK/pdfsig.out" | tail -n 1 | sed 's/^ *- //')" = "Total document signed" ]
}

for spec in "cit-ec B-B" "cit-ec B-T" "cit-rsa B-T"; do
	set -- $spec
	out="$WORK/signed-$1-$2.pdf"
	check "sign-pdf $1 $2" client --credential "$1" --level "$2" sign-pdf "$WORK/form.pdf" --out "$out" --reason "Vehicle licence renewal" --name "citizen"
	pdfsig_ok "$out" 1 && pass "pdfsig: $1 $2 valid, trusted, whole document" || fail "pdfsig $1 $2: $(cat "$WORK/pdfsig.out")"
	grep -q "ETSI.CAdES.detached" "$WORK/pdfsig.out" && pass "pdfsig: SubFilter ETSI.CAdES.detached" || fail "pdfsig: $(cat "$WORK/pdfsig.out")"
	check "verify-pdf $1 $2" verify_pdf "$out"
	if [ "$2" = B-T ]; then
		grep -q "time-stamp: .*verified" "$WORK/check.out" && pass "verify-pdf checks the time-stamp" || fail "verify-pdf: $(cat "$WORK/check.out")"
	else
		grep -q "time-stamp: none" "$WORK/check.out" && pass "verify-pdf: B-B has no time-stamp" || fail "verify-pdf: $(cat "$WORK/check.out")"
	fi
	# The form's bytes come first, unchanged: an incremental update.
	cmp -n "$(stat -c %s "$WORK/form.pdf")" "$WORK/form.pdf" "$out" && pass "incremental update: the form is a prefix" || fail "the form was rewritten"
done
# The CMS: PAdES has no signing-time; a changed byte inside the signed range fails both.
out="$WORK/signed-cit-ec-B-T.pdf"
grep -q "Signing Time" "$WORK/pdfsig.out" || true
python3 - "$out" "$WORK/cms.der" <<-'PY'
	import re, sys
	d = open(sys.argv[1], "rb").read()
	m = re.search(rb"/Contents\s*<([0-9A-Fa-f]+)>", d)
	open(sys.argv[2], "wb").write(bytes.fromhex(m.group(1).decode()).rstrip(b"\0"))
PY
openssl cms -cmsout -print -inform DER -in "$WORK/cms.der" >"$WORK/cms.txt" 2>/dev/null || true
! grep -q "object: signingTime" "$WORK/cms.txt" && grep -q "object: messageDigest" "$WORK/cms.txt" &&
	pass "PAdES CMS: no signing-time attribute" || fail "PAdES CMS attributes: $(grep object: "$WORK/cms.txt")"
grep -q "id-smime-aa-timeStampToken" "$WORK/cms.txt" && pass "B-T PDF: the CMS carries the time-stamp" || fail "no time-stamp in the PDF's CMS"
cp "$out" "$WORK/tampered.pdf"
python3 - "$WORK/tampered.pdf" <<-'PY'
	import sys
	p = sys.argv[1]
	d = bytearray(open(p, "rb").read())
	i = d.index(b"Vehicle licence renewal - plate AB 1234")
	d[i + 36] = ord("9")  # plate AB 1239
	open(p, "wb").write(d)
PY
if pdfsig_ok "$WORK/tampered.pdf" 1; then fail "pdfsig accepted a changed byte"; else
	grep -qi "digest mismatch\|Signature is Invalid\|not valid" "$WORK/pdfsig.out" && pass "pdfsig refuses a changed byte" || fail "pdfsig: $(cat "$WORK/pdfsig.out")"
fi
check_fails "verify-pdf refuses a changed byte" verify_pdf "$WORK/tampered.pdf"
grep -q "Verification failure" "$WORK/check.out" && pass "verify-pdf says why" || fail "verify-pdf: $(cat "$WORK/check.out")"
# Bytes appended after the last signature are not covered.
cp "$out" "$WORK/appended.pdf"
printf '%% appended\n' >>"$WORK/appended.pdf"
check_fails "verify-pdf refuses bytes after the last signature" verify_pdf "$WORK/appended.pdf"

# A second signature on the signed PDF, by another incremental update: both verify.
check "sign-pdf a second time" client --credential cit-rsa --level B-T sign-pdf "$out" --out "$WORK/twice.pdf" --name "seal"
pdfsig_ok "$WORK/twice.pdf" 2 && pass "pdfsig: two signatures, both valid, the last covering the whole document" || fail "pdfsig twice: $(cat "$WORK/pdfsig.out")"
grep -q "Not total document signed" "$WORK/pdfsig.out" && pass "pdfsig: the first covers its revision" || fail "pdfsig: $(cat "$WORK/pdfsig.out")"
check "verify-pdf: both signatures" verify_pdf "$WORK/twice.pdf"
grep -q "Verification successful: 2 signatures" "$WORK/check.out" && pass "verify-pdf counts two" || fail "verify-pdf: $(cat "$WORK/check.out")"
grep -q "Signature1" "$WORK/check.out" && grep -q "Signature2" "$WORK/check.out" && pass "two fields, Signature1 and Signature2" || fail "fields: $(cat "$WORK/check.out")"
cmp -n "$(stat -c %s "$out")" "$out" "$WORK/twice.pdf" && pass "the first signed PDF is a prefix of the second" || fail "the signed PDF was rewritten"

# B-T with the TSA down: no PDF, no B-B instead.
tsa_mode http500
check_fails "sign-pdf B-T with a failing TSA" client --credential cit-ec --level B-T sign-pdf "$WORK/form.pdf" --out "$WORK/none.pdf"
grep -q "tsa_unavailable" "$WORK/check.out" && pass "sign-pdf reports tsa_unavailable" || fail "sign-pdf: $(cat "$WORK/check.out")"
[ ! -e "$WORK/none.pdf" ] && pass "no PDF left behind" || fail "a PDF was written"
check_exit 2 "sign-pdf without a file" client sign-pdf
check "audit verify" admin audit verify
stop_daemon
