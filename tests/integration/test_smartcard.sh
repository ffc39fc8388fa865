#!/usr/bin/env bash
# The smartcard path (issue 6) on an emulated card: OpenSC's PKCS#11 module over pcsc-lite, the
# card a libcacard CAC (keys in an NSS database) in vsmartcard's virtual reader (vpcd), joined
# by tests/vpcd-bridge. Killing the bridge pulls the card; starting it again puts it back.
#
# Checks: a card key adopted with `iamsign-admin enrol --key`; signHash (PKCS#1 v1.5, PSS) and
# signDoc verified with OpenSSL; card pulled: 503 token_unavailable within 1 s and /healthz
# down; card back: 200 within 2 s without a restart; five cycles with no growth in the daemon's
# open file descriptors or resident memory.
#
# Needs root (pcscd is started here, in the foreground, and owns /run/pcscd), pcscd, the vpcd
# driver, OpenSC, certutil and a built vpcd-bridge; skips (77) naming what is missing.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

BRIDGE="$IAMSIGN_BUILD/tests/vpcd-bridge"
CARD_PIN="77553311"
CYCLES=${SMARTCARD_CYCLES:-5}
# Allowed RSS growth over the cycles, in KiB (allocator noise; a leak per cycle shows above it).
RSS_TOLERANCE_KB=512

skip() {
	echo "smartcard test skipped: $*" >&2
	exit 77
}

OPENSC=""
for m in /usr/lib/*/pkcs11/opensc-pkcs11.so /usr/lib/pkcs11/opensc-pkcs11.so; do
	[ -e "$m" ] && OPENSC="$m" && break
done
[ -n "$OPENSC" ] || skip "OpenSC's opensc-pkcs11.so is not installed (package opensc)"
command -v pcscd >/dev/null 2>&1 || skip "pcscd is not installed (package pcscd)"
command -v certutil >/dev/null 2>&1 || skip "certutil is not installed (package libnss3-tools)"
command -v pkcs11-tool >/dev/null 2>&1 || skip "pkcs11-tool is not installed (package opensc)"
grep -qs libifdvpcd /etc/reader.conf.d/* || skip "the vpcd reader driver is not configured (package vsmartcard-vpcd)"
[ -x "$BRIDGE" ] || skip "$BRIDGE not built (libcacard-dev missing at configure time?)"
[ "$(id -u)" -eq 0 ] || skip "pcscd must run as root to own /run/pcscd"
if pgrep -x pcscd >/dev/null 2>&1; then
	skip "a pcscd is already running (pid $(pgrep -x pcscd | tr '\n' ' ')); this test starts its own"
fi

setup_env

PCSCD_PID=""
BRIDGE_PID=""

stop_pid() {
	local pid="$1"
	[ -n "$pid" ] || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 1 50); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

smartcard_cleanup() {
	local rc=$?
	set +e
	# The daemon first (lib.sh would stop it later): it holds pcscd connections.
	if [ -n "$DAEMON_PID" ] && kill -0 "$DAEMON_PID" 2>/dev/null; then
		kill -TERM "$DAEMON_PID" 2>/dev/null
		wait_exit "$DAEMON_PID" 10 || kill -KILL "$DAEMON_PID" 2>/dev/null
	fi
	stop_pid "$BRIDGE_PID"
	stop_pid "$PCSCD_PID"
	if [ "$FAILED" -gt 0 ]; then
		for f in pcscd.log bridge.log; do
			[ -s "$WORK/$f" ] && { echo "--- $f (last 20 lines) ---" >&2; tail -n 20 "$WORK/$f" >&2; }
		done
	fi
	(exit "$rc")
	cleanup
}
trap smartcard_cleanup EXIT

now_ms() {
	date +%s%3N
}

# --- the card: an NSS database with exactly three RSA-2048 keys cert1..cert3 ---------------
# Keys are made in NSS (certutil -R), certified by the test CA so that the daemon's certificate
# checks pass, and imported under the nicknames libcacard looks for.
DB="$WORK/nssdb"
mkdir -p "$DB"
printf '%s\n' "$CARD_PIN" >"$WORK/nss.pw"
head -c 64 /dev/urandom >"$WORK/noise"
certutil -N -d "sql:$DB" -f "$WORK/nss.pw" >"$WORK/certutil.log" 2>&1 || die "certutil -N failed"
for i in 1 2 3; do
	{
		certutil -R -d "sql:$DB" -f "$WORK/nss.pw" -z "$WORK/noise" -k rsa -g 2048 \
			-s "CN=card-key-$i,O=iamsign tests" -o "$WORK/card$i.csr" &&
			openssl x509 -req -inform DER -in "$WORK/card$i.csr" -CA "$WORK/ca.pem" \
				-CAkey "$WORK/ca.key" -CAserial "$WORK/ca.srl" -CAcreateserial -days 30 \
				-sha256 -extfile "$WORK/leaf.ext" -out "$WORK/card$i.pem" &&
			certutil -A -d "sql:$DB" -f "$WORK/nss.pw" -n "cert$i" -t ",," -a -i "$WORK/card$i.pem"
	} >>"$WORK/certutil.log" 2>&1 || {
		cat "$WORK/certutil.log" >&2
		die "cannot make card key $i"
	}
done
[ "$(certutil -L -d "sql:$DB" | grep -c '^cert[123] ')" = 3 ] && pass "NSS database holds cert1..cert3" ||
	fail "NSS database: $(certutil -L -d "sql:$DB")"

# --- pcscd (foreground, no auto-exit) and the card ------------------------------------------
pcscd -f >"$WORK/pcscd.log" 2>&1 &
PCSCD_PID=$!
for _ in $(seq 1 50); do
	[ -S /run/pcscd/pcscd.comm ] && break
	kill -0 "$PCSCD_PID" 2>/dev/null || { cat "$WORK/pcscd.log" >&2; skip "pcscd did not start here"; }
	sleep 0.1
done
[ -S /run/pcscd/pcscd.comm ] || skip "pcscd made no socket in 5 s"

insert_card() {
	"$BRIDGE" --db "$DB" >>"$WORK/bridge.log" 2>&1 &
	BRIDGE_PID=$!
}

remove_card() {
	stop_pid "$BRIDGE_PID"
	BRIDGE_PID=""
}

insert_card
seen=""
for _ in $(seq 1 100); do
	if pkcs11-tool --module "$OPENSC" -L 2>/dev/null | grep -q "Common Access Card"; then
		seen=1
		break
	fi
	kill -0 "$BRIDGE_PID" 2>/dev/null || { cat "$WORK/bridge.log" >&2; die "vpcd-bridge exited"; }
	sleep 0.1
done
[ -n "$seen" ] || { cat "$WORK/pcscd.log" >&2; die "OpenSC does not see the emulated CAC card"; }
pass "OpenSC sees the emulated CAC card"

# --- daemon configuration: OpenSC, the CAC token, the NSS password as PIN --------------------
printf '%s\n' "$CARD_PIN" >"$WORK/card.pin"
chmod 0600 "$WORK/card.pin"
cat >"$WORK/iamsignd.yaml" <<EOF
token:
  module: $OPENSC
  uri: "pkcs11:manufacturer=Common%20Access%20Card"
  pin_file: $WORK/card.pin
listen:
  socket: $WORK/iamsign.sock
  mode: "0600"
state_dir: $WORK/state
policy: $WORK/policy.yaml
trust_anchors: $WORK/ca.pem
ledger:
  audit_key: "pkcs11:id=%00%03;type=private"
EOF
chmod 0600 "$WORK/iamsignd.yaml"
write_policy <<EOF
callers:
  records-office:
    uid: $(id -u)
    purposes: [dept-seal]
    classes: [seal]
purposes:
  dept-seal:
    sign_algorithms: [sha256WithRSAEncryption, RSASSA-PSS]
    hash_algorithms: [sha256]
    max_hashes: 1
    require_sad: false
EOF

# --- adopt the card's key 0001 --------------------------------------------------------------
check "enrol adopts the card key pkcs11:id=%00%01" \
	admin enrol --key "pkcs11:id=%00%01" --credential card-1 --user records-office --class seal
start_daemon

printf 'Records office seal\nfile: 2026/0042\n' >"$WORK/form.txt"
DIGEST=$(openssl dgst -sha256 -binary "$WORK/form.txt" | base64 -w0)
OID_RSA_SHA256=1.2.840.113549.1.1.11
OID_PSS=1.2.840.113549.1.1.10

expect_status "credentials/info card-1" 200 \
	"$(csc credentials/info '{"credentialID":"card-1","certificates":"single","certInfo":true}')"
jq_get '.cert.certificates[0]' | base64 -d >"$WORK/card-1.der"
openssl x509 -inform DER -in "$WORK/card-1.der" -pubkey -noout >"$WORK/card-1.pub" 2>/dev/null
cmp -s <(openssl x509 -in "$WORK/card1.pem" -outform DER) "$WORK/card-1.der" &&
	pass "card-1's certificate is the one on the card as cert1" || fail "card-1's certificate differs"

# sign_hash ALGO [EXTRA_JSON]: signHash of form.txt's SHA-256; prints the HTTP status.
sign_hash() {
	curl -s -o "$WORK/resp.json" -w '%{http_code}' --max-time 5 --unix-socket "$WORK/iamsign.sock" \
		-H 'Content-Type: application/json' --data-binary \
		"{\"credentialID\":\"card-1\",\"hashes\":[\"$DIGEST\"],\"hashAlgorithmOID\":\"2.16.840.1.101.3.4.2.1\",\"signAlgo\":\"$1\",\"purpose\":\"dept-seal\"${2:-}}" \
		http://localhost/csc/v2/signatures/signHash || true
}

verify_last() {
	jq_get '.signatures[0]' | base64 -d >"$WORK/sig.bin"
	openssl dgst -sha256 -verify "$WORK/card-1.pub" -signature "$WORK/sig.bin" "$@" \
		"$WORK/form.txt" >/dev/null 2>&1
}

expect_status "signHash sha256WithRSAEncryption with the card" 200 "$(sign_hash $OID_RSA_SHA256)"
verify_last && pass "openssl verifies the card's PKCS#1 v1.5 signature" ||
	fail "card PKCS#1 v1.5 signature does not verify"
expect_status "signHash RSASSA-PSS with the card" 200 "$(sign_hash $OID_PSS)"
verify_last -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:32 &&
	pass "openssl verifies the card's PSS signature" || fail "card PSS signature does not verify"

expect_status "signDoc with the card" 200 "$(csc signatures/signDoc "{\"credentialID\":\"card-1\",\"purpose\":\"dept-seal\",\"documentDigests\":[{\"hashes\":[\"$DIGEST\"],\"hashAlgorithmOID\":\"2.16.840.1.101.3.4.2.1\"}],\"signature_format\":\"C\",\"conformance_level\":\"Ades-B-B\",\"signed_envelope_property\":\"Detached\",\"signAlgo\":\"$OID_RSA_SHA256\"}")"
jq_get '.SignatureObject[0]' | base64 -d >"$WORK/form.p7s"
if openssl cms -verify -binary -inform DER -in "$WORK/form.p7s" -content "$WORK/form.txt" \
	-CAfile "$WORK/ca.pem" -purpose any -out /dev/null 2>"$WORK/cms.err"; then
	pass "openssl cms -verify: the card's CAdES signature"
else
	fail "card CMS does not verify: $(cat "$WORK/cms.err")"
fi

healthz() {
	curl -s -o "$WORK/health.json" -w '%{http_code}' --max-time 2 --unix-socket "$WORK/iamsign.sock" \
		http://localhost/healthz || true
}
expect_status "/healthz with the card in" 200 "$(healthz)"

fd_count() {
	ls "/proc/$DAEMON_PID/fd" | wc -l
}
rss_kb() {
	awk '/^VmRSS:/ {print $2}' "/proc/$DAEMON_PID/status"
}

# --- pull and push, five times ---------------------------------------------------------------
worst_down=0
worst_up=0
slowest_req=0
base_fd=""
base_rss=""
for cycle in $(seq 1 "$CYCLES"); do
	remove_card
	t0=$(now_ms)
	got=""
	while [ $(($(now_ms) - t0)) -lt 3000 ]; do
		r0=$(now_ms)
		code=$(sign_hash $OID_RSA_SHA256)
		took=$(($(now_ms) - r0))
		[ "$took" -gt "$slowest_req" ] && slowest_req=$took
		if [ "$code" = 503 ] && [ "$(jq_get .reason)" = token_unavailable ]; then
			got=$(($(now_ms) - t0))
			break
		fi
		sleep 0.02
	done
	if [ -n "$got" ] && [ "$got" -le 1000 ]; then
		pass "cycle $cycle: card pulled, 503 token_unavailable after $got ms"
	else
		fail "cycle $cycle: no 503 token_unavailable within 1 s of pulling the card (${got:-none} ms; last HTTP $code: $(head -c 300 "$WORK/resp.json" 2>/dev/null))"
	fi
	[ -n "$got" ] && [ "$got" -gt "$worst_down" ] && worst_down=$got
	hc=$(healthz)
	if [ "$hc" = 503 ] && [ "$(jq -r .token "$WORK/health.json" 2>/dev/null)" = down ]; then
		pass "cycle $cycle: /healthz says the token is down"
	else
		fail "cycle $cycle: /healthz HTTP $hc $(cat "$WORK/health.json" 2>/dev/null)"
	fi
	sleep 0.5

	insert_card
	t0=$(now_ms)
	got=""
	while [ $(($(now_ms) - t0)) -lt 5000 ]; do
		code=$(sign_hash $OID_RSA_SHA256)
		if [ "$code" = 200 ]; then
			got=$(($(now_ms) - t0))
			break
		fi
		sleep 0.05
	done
	if [ -n "$got" ] && [ "$got" -le 2000 ]; then
		pass "cycle $cycle: card back, 200 after $got ms"
	else
		fail "cycle $cycle: no 200 within 2 s of putting the card back (${got:-none} ms; last HTTP $code: $(head -c 300 "$WORK/resp.json" 2>/dev/null))"
	fi
	[ -n "$got" ] && [ "$got" -gt "$worst_up" ] && worst_up=$got
	verify_last && pass "cycle $cycle: signature after re-login verifies" ||
		fail "cycle $cycle: signature after re-login does not verify"
	# A few more, so that sessions, key handles and buffers of this round are all in use.
	for _ in 1 2 3; do sign_hash $OID_PSS >/dev/null; done
	fds=$(fd_count)
	rss=$(rss_kb)
	echo "cycle $cycle: daemon fds $fds, VmRSS $rss KiB"
	if [ -z "$base_fd" ]; then
		# The first cycle warms up (PC/SC context, OpenSC reader state): the baseline.
		base_fd=$fds
		base_rss=$rss
	fi
done
kill -0 "$DAEMON_PID" 2>/dev/null && pass "daemon ran through $CYCLES pulls without a restart" ||
	fail "daemon died during the cycles"
[ "$fds" -le "$base_fd" ] && pass "open fds after $CYCLES cycles: $fds (baseline $base_fd)" ||
	fail "open fds grew: $base_fd -> $fds"
if [ "${IAMSIGN_SANITIZE:-}" = 1 ]; then
	# Under ASan the allocator's quarantine and shadow memory decide the RSS; LeakSanitizer
	# checks for leaks at the daemon's exit instead, which is what this check stands in for.
	echo "VmRSS after $CYCLES cycles: $rss KiB (baseline $base_rss KiB): not judged under ASan; LeakSanitizer checks leaks"
else
	[ "$rss" -le $((base_rss + RSS_TOLERANCE_KB)) ] &&
		pass "VmRSS after $CYCLES cycles: $rss KiB (baseline $base_rss KiB, tolerance $RSS_TOLERANCE_KB)" ||
		fail "VmRSS grew: $base_rss -> $rss KiB"
fi
[ "$slowest_req" -le 1000 ] && pass "slowest request while the card was out: $slowest_req ms" ||
	fail "a request took $slowest_req ms while the card was out"
echo "figures: worst removal-to-503 $worst_down ms, worst insertion-to-200 $worst_up ms, slowest request while out $slowest_req ms"
grep -E "iamsign token:" "$WORK/daemon.log" | tail -n 4 || true

# --- a wrong PIN is tried once, never again -------------------------------------------------
stop_daemon
printf '%s\n' "00000000" >"$WORK/card.pin"
rc=0
timeout 20 "$IAMSIGND" -c "$WORK/iamsignd.yaml" >"$WORK/badpin.log" 2>&1 || rc=$?
if [ "$rc" -ne 0 ] && grep -q "C_Login failed" "$WORK/badpin.log"; then
	pass "daemon refuses to start with a wrong card PIN (exit $rc)"
else
	fail "wrong card PIN: exit $rc: $(head -c 400 "$WORK/badpin.log")"
fi
