#!/usr/bin/env bash
# Policy rules beyond the SAD, each refusal with its reason: certificate revoked by a CRL, stale
# CRL, certificate expired or within min_cert_validity, without nonRepudiation, from an untrusted
# CA; a seal credential used by a citizen-only caller; suspend then resume without restart;
# daily quota; rate limit; SIGHUP with a broken policy keeps the old one (log names file:line),
# with a good one takes effect.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
setup_env
init_token

ec_keypair issuer
add_sad_issuers "$WORK/issuer.pub"
ca_setup test "$WORK/ca.pem" "$WORK/ca.key"
ca_setup other # a CA that is not among the trust anchors

utc() { date -u -d "$1" +%Y%m%d%H%M%SZ; }

provision_cred cit-ok ec-p256 citizen-1
provision_cred_ca test cit-revoked ec-p256 citizen-2 citizen
provision_cred_ca test cit-expired ec-p256 citizen-3 citizen -startdate "$(utc '-30 days')" -enddate "$(utc '-1 day')"
provision_cred_ca test cit-expiring ec-p256 citizen-4 citizen -startdate "$(utc '-1 hour')" -enddate "$(utc '+12 hours')"
provision_cred_ca test cit-nonr ec-p256 citizen-5 citizen -extensions leaf_nonr
provision_cred_ca other cit-untrusted ec-p256 citizen-6 citizen
provision_cred cit-quota ec-p256 citizen-7
provision_cred cit-quota2 ec-p256 citizen-8
provision_cred seal-1 ec-p256 dept-1 seal

revoke_cert test "$WORK/cit-revoked.pem"
gen_crl test "$WORK/good.crl"
gen_crl test "$WORK/stale.crl" -crl_lastupdate "$(utc '-2 days')" -crl_nextupdate "$(utc '-1 day')"
# The test CA itself, the revocation and the untrusted CA as the test expects them.
openssl verify -CAfile "$WORK/ca.pem" "$WORK/cit-ok.pem" >/dev/null 2>&1 || die "cit-ok does not verify"
openssl verify -CAfile "$WORK/ca.pem" "$WORK/cit-untrusted.pem" >/dev/null 2>&1 &&
	die "cit-untrusted verifies against the test CA"
openssl verify -crl_check -CRLfile "$WORK/good.crl" -CAfile "$WORK/ca.pem" "$WORK/cit-revoked.pem" \
	>/dev/null 2>&1 && die "cit-revoked is not revoked by good.crl"
openssl x509 -in "$WORK/cit-nonr.pem" -noout -ext keyUsage | grep -q 'Non Repudiation' &&
	die "cit-nonr has nonRepudiation"

P=vehicle-licence-renewal
S=dept-seal
# policy CLASSES CALLER_EXTRA CREDENTIALS: the policy file; CALLER_EXTRA (e.g. "rate: 2/s") and
# CREDENTIALS (lines under credentials:, each "key: value", separated by ";") may be empty.
policy() {
	local classes="$1" extra="$2" creds="$3" line
	{
		cat <<-EOF
			callers:
			  renewal:
			    uid: $(id -u)
			    purposes: [$P, $S]
			    classes: [$classes]
		EOF
		[ -z "$extra" ] || printf '    %s\n' "$extra"
		cat <<-EOF
			purposes:
			  $P:
			    sign_algorithms: [ecdsa-with-SHA256]
			    hash_algorithms: [sha256]
			    max_hashes: 1
			    require_sad: true
			  $S:
			    sign_algorithms: [ecdsa-with-SHA256]
			    hash_algorithms: [sha256]
			    max_hashes: 1
			    require_sad: false
		EOF
		if [ -n "$creds" ]; then
			echo "credentials:"
			IFS=';' read -ra lines <<<"$creds"
			for line in "${lines[@]}"; do
				printf '  %s\n' "$line"
			done
		fi
	} | write_policy
}
STRICT="min_cert_validity: 1d;require_non_repudiation: true;crl: [$WORK/good.crl]"
RELAXED="crl: [$WORK/good.crl]"

printf 'Vehicle licence renewal\nplate: AB 1234\n' >"$WORK/form.txt"
printf 'unrelated\n' >"$WORK/other.txt"
d=$(file_digest "$WORK/form.txt")

# cit_sign CRED OWNER: signHash of form.txt for the renewal purpose with a fresh valid SAD.
cit_sign() {
	sign_hash "$1" $P "$d" "$(mint_sad "$WORK/issuer.key" "$(sad_claims "$1" "$2" $P "$d")")"
}
seal_sign() {
	sign_hash seal-1 $S "$d"
}
# expect_ok MSG CRED STATUS: 200 and the signature verifies with CRED's certificate key.
expect_ok() {
	expect_status "$1" 200 "$3"
	[ "$3" = 200 ] || return 0
	openssl x509 -in "$WORK/$2.pem" -pubkey -noout >"$WORK/$2.certpub"
	if verify_sig "$WORK/$2.certpub" "$WORK/form.txt" "$(jq_get '.signatures[0]')" &&
		! verify_sig "$WORK/$2.certpub" "$WORK/other.txt" "$(jq_get '.signatures[0]')"; then
		pass "$1: signature verified"
	else
		fail "$1: signature does not verify: $(head -c 300 "$WORK/resp.json")"
	fi
}
expect_refused() {
	expect_status "$1" "$2" "$4"
	expect_reason "$3"
}

# --- certificates (strict policy) ---
policy "citizen, seal" "" "$STRICT"
start_daemon
expect_ok "good certificate signs" cit-ok "$(cit_sign cit-ok citizen-1)"
expect_refused "certificate revoked by the CRL" 403 cert_revoked "$(cit_sign cit-revoked citizen-2)"
expect_refused "certificate expired" 403 cert_expired "$(cit_sign cit-expired citizen-3)"
expect_refused "certificate expires within min_cert_validity (12 h < 1d)" 403 cert_expiring \
	"$(cit_sign cit-expiring citizen-4)"
expect_refused "certificate without nonRepudiation" 403 cert_no_non_repudiation \
	"$(cit_sign cit-nonr citizen-5)"
expect_refused "certificate from an untrusted CA" 403 cert_untrusted "$(cit_sign cit-untrusted citizen-6)"
expect_ok "seal without SAD for a seal purpose" seal-1 "$(seal_sign)"

# --- suspend, resume: the very next request, no restart ---
check "iamsign-admin suspend" admin suspend --credential cit-ok
expect_refused "suspended credential" 403 credential_suspended "$(cit_sign cit-ok citizen-1)"
check "iamsign-admin resume" admin resume --credential cit-ok
expect_ok "resumed credential signs again" cit-ok "$(cit_sign cit-ok citizen-1)"

# --- SIGHUP with a broken policy: the old one keeps serving ---
# The broken file relaxes the certificate rules and has a misspelt key: nothing of it may apply.
policy "citizen, seal" "" "$RELAXED;require_non_repudation: false"
bad_line=$(grep -n 'require_non_repudation' "$WORK/policy.yaml" | cut -d: -f1)
kill -HUP "$DAEMON_PID"
if wait_log "policy\\.yaml:$bad_line\\b" 10; then
	pass "broken policy: the log names policy.yaml:$bad_line"
else
	fail "broken policy: no 'policy.yaml:$bad_line' in the daemon log"
	sleep 1
fi
kill -0 "$DAEMON_PID" 2>/dev/null && pass "daemon alive after SIGHUP with a broken policy" ||
	fail "daemon died on SIGHUP with a broken policy"
expect_ok "old policy still serves after the broken reload" cit-ok "$(cit_sign cit-ok citizen-1)"
expect_refused "old rules still apply (nonRepudiation still required)" 403 cert_no_non_repudiation \
	"$(cit_sign cit-nonr citizen-5)"

# --- SIGHUP with a good changed policy: it takes effect ---
policy "citizen, seal" "" "$RELAXED"
kill -HUP "$DAEMON_PID"
st=000
for _ in $(seq 1 20); do
	st=$(cit_sign cit-nonr citizen-5)
	[ "$st" = 200 ] && break
	sleep 0.25
done
expect_ok "new policy after SIGHUP: no nonRepudiation needed" cit-nonr "$st"
expect_ok "new policy after SIGHUP: no min_cert_validity" cit-expiring "$(cit_sign cit-expiring citizen-4)"
expect_refused "new policy still checks the CRL" 403 cert_revoked "$(cit_sign cit-revoked citizen-2)"

# --- class and daily quota ---
policy "citizen" "" "$STRICT;daily_quota: 3"
restart_daemon
expect_refused "seal credential, citizen-only caller" 403 class_not_allowed "$(seal_sign)"
for i in 1 2 3; do
	expect_ok "daily_quota 3: signature $i" cit-quota "$(cit_sign cit-quota citizen-7)"
done
expect_refused "daily_quota 3: 4th signature" 429 quota_exceeded "$(cit_sign cit-quota citizen-7)"
restart_daemon
expect_refused "daily_quota 3: still refused after a restart" 429 quota_exceeded \
	"$(cit_sign cit-quota citizen-7)"
expect_ok "the quota is per credential (another citizen signs)" cit-quota2 "$(cit_sign cit-quota2 citizen-8)"

# --- rate limit ---
policy "citizen, seal" "rate: 2/s" "$STRICT"
restart_daemon
# The burst: 10 requests at once (independent of how fast this machine runs curl).
seal_body=$(jq -cn --arg d "$d" --arg oid "$OID_SHA256" --arg p "$S" \
	'{credentialID: "seal-1", hashes: [$d], hashAlgorithmOID: $oid, signAlgo: "1.2.840.10045.4.3.2", purpose: $p}')
burst=()
for i in $(seq 1 10); do
	curl -s -o "$WORK/burst.$i.json" -w '%{http_code}' --unix-socket "$WORK/iamsign.sock" \
		-H 'Content-Type: application/json' --data-binary "$seal_body" \
		http://localhost/csc/v2/signatures/signHash >"$WORK/burst.$i.status" 2>/dev/null &
	burst+=($!)
done
for p in "${burst[@]}"; do
	wait "$p" || true
done
ok=0 limited=0 other=0
for i in $(seq 1 10); do
	st=$(cat "$WORK/burst.$i.status")
	if [ "$st" = 200 ]; then
		ok=$((ok + 1))
	elif [ "$st" = 429 ] && [ "$(jq -r '.reason // empty' "$WORK/burst.$i.json" 2>/dev/null)" = rate_limited ]; then
		limited=$((limited + 1))
	else
		other=$((other + 1))
		echo "burst request $i: HTTP $st $(head -c 300 "$WORK/burst.$i.json" 2>/dev/null)" >&2
	fi
done
echo "rate 2/s, burst of 10: $ok signed, $limited rate_limited, $other other"
[ "$limited" -ge 1 ] && pass "burst of 10 at rate 2/s: $limited answered 429 rate_limited" ||
	fail "burst of 10 at rate 2/s: no 429 rate_limited ($ok signed, $other other)"
[ "$ok" -ge 1 ] && [ "$ok" -le 4 ] && pass "burst of 10 at rate 2/s: $ok signed" ||
	fail "burst of 10 at rate 2/s: $ok signed (expected 1..4)"
[ "$other" -eq 0 ] && pass "burst: every refusal is rate_limited" || fail "burst: $other other answers"
sleep 1.5
expect_ok "1.5 s after the burst, signing works again" seal-1 "$(seal_sign)"

# --- stale CRL (fails closed) ---
policy "citizen, seal" "" "min_cert_validity: 1d;require_non_repudiation: true;crl: [$WORK/stale.crl]"
restart_daemon
expect_refused "CRL past its nextUpdate" 403 crl_stale "$(cit_sign cit-ok citizen-1)"

stop_daemon
