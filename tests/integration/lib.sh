# Shared harness for the integration tests: source it, then call setup_env.
#
# Environment (set by meson): IAMSIGN_BUILD (build root), IAMSIGN_SRC (source root).
#
#   setup_env                   throwaway workdir $WORK with SoftHSM config, PIN files, test CA,
#                               iamsignd.yaml and policy.yaml; cleaned up on exit
#   init_token                  iamsign-admin init-token with the configured label
#   provision_cred ID ALG OWNER [CLASS]
#                               keygen, csr, certificate from the test CA, import-cert, enrol;
#                               the key is wrapped by the KEK init-token made, or a token
#                               object when KEYGEN_STORE=token
#   start_daemon / stop_daemon  iamsignd in the background (log: $WORK/daemon.log)
#   listener_pid                the pid of the running daemon's listener process
#   csc METHOD JSON             POST /csc/v2/METHOD; prints the HTTP status, body in $WORK/resp.json
#   expect_status MSG WANT GOT  pass if the HTTP status GOT is WANT (else fail, showing the body)
#   expect_reason REASON        pass if the last response's "reason" is REASON
#   jq_get FILTER               jq -r FILTER on the last response (nothing if it is not JSON)
#   metric NAME                 the value of metric NAME in the running daemon's /metrics
#   wait_exit PID SECS          wait up to SECS for PID to exit (and reap it); 1 if it did not
#   admin ARGS...               iamsign-admin -c $WORK/iamsignd.yaml ARGS...
#   pass MSG / fail MSG         record a result (fail does not exit; the test fails at the end)
#   check MSG CMD...            pass if CMD succeeds, else fail
#   check_fails MSG CMD...      pass if CMD fails, else fail
#   check_exit CODE MSG CMD...  pass if CMD exits with CODE
#   die MSG                     fail and stop now
#   setup_tsa                   a test TSA in $TSA (its CA $TSA/tsa-ca.pem, a TSA certificate with
#                               extendedKeyUsage timeStamping, critical; a second one under a CA
#                               nobody trusts in $TSA/other) and a tsa: section in iamsignd.yaml
#   start_tsa / stop_tsa        tests/tsa/tsa-server.py on a free 127.0.0.1 port ($TSA_PORT)
#   tsa_mode MODE               how it answers from now on (see tests/tsa/tsa-server.py)
#   use_mock                    the daemon's module is to be tests/mock-pkcs11.so ($MOCK), in
#                               front of SoftHSM, scripted by $CTL; then:
#   ctl LINES...                the mock's control file (see the top of tests/mock-pkcs11.c)
#   mstat NAME                  a value from the mock's stats file (0 when absent)
#
# Meson's skip status (77) is used only when SoftHSM's softhsm2-util is missing.
#
# Safe under `set -euo pipefail`: helpers report failures through fail() rather than by
# returning non-zero, except die, wait_exit and the check commands' own exit statuses.

set -u

: "${IAMSIGN_BUILD:?IAMSIGN_BUILD must name the build directory}"
: "${IAMSIGN_SRC:?IAMSIGN_SRC must name the source directory}"

ADMIN="$IAMSIGN_BUILD/tools/iamsign-admin"
IAMSIGND="$IAMSIGN_BUILD/signer/iamsignd"
# shellcheck disable=SC2034 # used by the tests that source this file
CLIENT="$IAMSIGN_BUILD/tools/iamsign"
SOFTHSM_MODULE="${SOFTHSM_MODULE:-/usr/lib/softhsm/libsofthsm2.so}"
TOKEN_LABEL="iamsign-test"
USER_PIN="314159"
SO_PIN="27182818"

WORK=""
DAEMON_PID=""
TSA_PID=""
TSA=""
TSA_PORT=""
PASSED=0
FAILED=0

pass() {
	PASSED=$((PASSED + 1))
	printf 'PASS: %s\n' "$*"
}

fail() {
	FAILED=$((FAILED + 1))
	printf 'FAIL: %s\n' "$*" >&2
}

die() {
	fail "$*"
	exit 1
}

# check MSG CMD...: pass if CMD succeeds. Its output is kept in $WORK/check.out (until the
# next check), and shown when it fails.
check() {
	local what="$1" rc=0
	shift
	"$@" >"$WORK/check.tmp" 2>&1 || rc=$?
	mv -f "$WORK/check.tmp" "$WORK/check.out"
	if [ "$rc" -eq 0 ]; then
		pass "$what"
	else
		fail "$what (exit $rc: $*)"
		sed 's/^/    /' "$WORK/check.out" >&2
	fi
}

# check_fails MSG CMD...: pass if CMD exits non-zero; its output is kept in $WORK/check.out.
check_fails() {
	local what="$1" rc=0
	shift
	"$@" >"$WORK/check.tmp" 2>&1 || rc=$?
	mv -f "$WORK/check.tmp" "$WORK/check.out"
	if [ "$rc" -ne 0 ]; then
		pass "$what"
	else
		fail "$what (unexpectedly succeeded: $*)"
		sed 's/^/    /' "$WORK/check.out" >&2
	fi
}

# check_exit CODE MSG CMD...: pass if CMD exits with status CODE.
check_exit() {
	local want="$1" what="$2" rc=0
	shift 2
	"$@" >"$WORK/check.tmp" 2>&1 || rc=$?
	mv -f "$WORK/check.tmp" "$WORK/check.out"
	if [ "$rc" -eq "$want" ]; then
		pass "$what"
	else
		fail "$what (exit $rc, expected $want: $*)"
		sed 's/^/    /' "$WORK/check.out" >&2
	fi
}

admin() {
	"$ADMIN" -c "$WORK/iamsignd.yaml" "$@"
}

cleanup() {
	local rc=$?
	set +e
	if [ -n "$DAEMON_PID" ] && kill -0 "$DAEMON_PID" 2>/dev/null; then
		kill -TERM "$DAEMON_PID" 2>/dev/null
		wait_exit "$DAEMON_PID" 10 || kill -KILL "$DAEMON_PID" 2>/dev/null
		wait "$DAEMON_PID" 2>/dev/null
	fi
	DAEMON_PID=""
	if [ -n "$TSA_PID" ]; then
		kill -TERM "$TSA_PID" 2>/dev/null
		wait "$TSA_PID" 2>/dev/null
	fi
	if [ -n "$WORK" ] && [ -d "$WORK" ]; then
		if [ "$FAILED" -gt 0 ] && [ -s "$WORK/daemon.log" ]; then
			echo "--- daemon.log (last 50 lines) ---" >&2
			tail -n 50 "$WORK/daemon.log" >&2
		fi
		rm -rf "$WORK"
	fi
	if [ "$rc" -ne 77 ]; then
		echo "$PASSED passed, $FAILED failed"
		if [ "$FAILED" -gt 0 ] && [ "$rc" -eq 0 ]; then
			rc=1
		fi
	fi
	exit "$rc"
}

setup_env() {
	if ! command -v softhsm2-util >/dev/null 2>&1; then
		echo "softhsm2-util not found: SoftHSM is not installed; skipping" >&2
		exit 77
	fi
	umask 077
	WORK="$(mktemp -d "${TMPDIR:-/tmp}/iamsign-test.XXXXXX")" || die "mktemp failed"
	trap cleanup EXIT
	trap 'exit 130' INT TERM

	[ -f "$SOFTHSM_MODULE" ] || die "SoftHSM module $SOFTHSM_MODULE not found"
	[ -x "$ADMIN" ] || die "$ADMIN not built"
	for t in openssl curl jq; do
		command -v "$t" >/dev/null 2>&1 || die "$t is required"
	done

	mkdir -p "$WORK/tokens" || die "mkdir tokens"
	cat >"$WORK/softhsm2.conf" <<-EOF
		directories.tokendir = $WORK/tokens
		objectstore.backend = file
		log.level = ERROR
		slots.removable = false
	EOF
	export SOFTHSM2_CONF="$WORK/softhsm2.conf"

	printf '%s\n' "$USER_PIN" >"$WORK/user.pin"
	printf '%s\n' "$SO_PIN" >"$WORK/so.pin"
	chmod 0600 "$WORK/user.pin" "$WORK/so.pin"

	# Test CA: an EC P-256 root.
	openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
		-keyout "$WORK/ca.key" -out "$WORK/ca.pem" -days 30 -sha256 \
		-subj "/CN=iamsign test CA/O=iamsign tests" \
		-addext "basicConstraints=critical,CA:TRUE" \
		-addext "keyUsage=critical,keyCertSign,cRLSign" \
		>"$WORK/ca.log" 2>&1 || {
		cat "$WORK/ca.log" >&2
		die "cannot create the test CA"
	}
	cat >"$WORK/leaf.ext" <<-EOF
		basicConstraints = critical,CA:FALSE
		keyUsage = critical,digitalSignature,nonRepudiation
		subjectKeyIdentifier = hash
		authorityKeyIdentifier = keyid
	EOF

	cat >"$WORK/iamsignd.yaml" <<-EOF
		token:
		  module: $SOFTHSM_MODULE
		  uri: "pkcs11:token=$TOKEN_LABEL"
		  pin_file: $WORK/user.pin
		listen:
		  socket: $WORK/iamsign.sock
		  mode: "0600"
		state_dir: $WORK/state
		policy: $WORK/policy.yaml
		trust_anchors: $WORK/ca.pem
	EOF

	cat >"$WORK/policy.yaml" <<-EOF
		callers:
		  renewal:
		    uid: $(id -u)
		    purposes: [vehicle-licence-renewal]
		    classes: [citizen, seal]
		purposes:
		  vehicle-licence-renewal:
		    sign_algorithms: [ecdsa-with-SHA256, ecdsa-with-SHA384, sha256WithRSAEncryption, RSASSA-PSS]
		    hash_algorithms: [sha256, sha384]
		    max_hashes: 4
		    require_sad: false
	EOF
	chmod 0600 "$WORK/iamsignd.yaml" "$WORK/policy.yaml"
}

init_token() {
	admin init-token --label "$TOKEN_LABEL" --so-pin-file "$WORK/so.pin" >"$WORK/init.log" 2>&1 || {
		cat "$WORK/init.log" >&2
		die "init-token failed"
	}
}

# provision_cred ID ALG OWNER [CLASS]: a credential ready to sign, with a certificate from the
# test CA in $WORK/ID.pem.
provision_cred() {
	local id="$1" alg="$2" owner="$3" class="${4:-citizen}"
	local log="$WORK/provision-$id.log"
	{
		admin keygen ${KEYGEN_STORE:+--store "$KEYGEN_STORE"} --credential "$id" --alg "$alg" &&
			admin csr --credential "$id" --subject "/CN=$owner/O=iamsign tests" \
				--out "$WORK/$id.csr" &&
			openssl x509 -req -in "$WORK/$id.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" \
				-CAserial "$WORK/ca.srl" -CAcreateserial -days 30 -sha256 \
				-extfile "$WORK/leaf.ext" -out "$WORK/$id.pem" &&
			admin import-cert --credential "$id" --cert "$WORK/$id.pem" &&
			admin enrol --credential "$id" --user "$owner" --class "$class"
	} >"$log" 2>&1 || {
		cat "$log" >&2
		die "provisioning $id ($alg) failed"
	}
}

start_daemon() {
	local rc=0
	"$IAMSIGND" -c "$WORK/iamsignd.yaml" >"$WORK/daemon.log" 2>&1 &
	DAEMON_PID=$!
	for _ in $(seq 1 100); do
		if curl -sf --unix-socket "$WORK/iamsign.sock" http://x/healthz >/dev/null 2>&1; then
			return 0
		fi
		if ! kill -0 "$DAEMON_PID" 2>/dev/null; then
			wait "$DAEMON_PID" || rc=$?
			DAEMON_PID=""
			echo "iamsignd exited with status $rc:" >&2
			cat "$WORK/daemon.log" >&2
			die "iamsignd did not start"
		fi
		sleep 0.1
	done
	cat "$WORK/daemon.log" >&2
	die "iamsignd did not answer /healthz within 10 s"
}

# make_tsa_cert DIR CN: a TSA CA DIR/tsa-ca.pem and its TSA certificate DIR/tsa.pem (EKU
# timeStamping, critical, as RFC 3161 2.3 requires), with the `openssl ts -reply` config
# DIR/tsa.cnf.
make_tsa_cert() {
	local d="$1" cn="$2"
	mkdir -p "$d"
	openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
		-keyout "$d/tsa-ca.key" -out "$d/tsa-ca.pem" -days 30 -subj "/CN=$cn CA" \
		-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" \
		>"$d/ca.log" 2>&1 || die "cannot create the TSA CA: $(cat "$d/ca.log")"
	printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=critical,timeStamping\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n' >"$d/tsa.ext"
	openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$d/tsa.key" \
		-out "$d/tsa.csr" -subj "/CN=$cn" >>"$d/ca.log" 2>&1 &&
		openssl x509 -req -in "$d/tsa.csr" -CA "$d/tsa-ca.pem" -CAkey "$d/tsa-ca.key" \
			-CAcreateserial -days 20 -sha256 -extfile "$d/tsa.ext" -out "$d/tsa.pem" \
			>>"$d/ca.log" 2>&1 || die "cannot create the TSA certificate: $(cat "$d/ca.log")"
	echo 01 >"$d/serial"
	cat >"$d/tsa.cnf" <<-EOF
		[ tsa ]
		default_tsa = tsa_config
		[ tsa_config ]
		dir = $d
		serial = \$dir/serial
		crypto_device = builtin
		signer_cert = \$dir/tsa.pem
		certs = \$dir/tsa-ca.pem
		signer_key = \$dir/tsa.key
		signer_digest = sha256
		default_policy = 1.2.3.4.1
		other_policies = 1.2.3.4.5
		digests = sha256, sha384, sha512
		accuracy = secs:1
		ordering = yes
		tsa_name = yes
		ess_cert_id_chain = no
		ess_cert_id_alg = sha256
	EOF
}

setup_tsa() {
	TSA="$WORK/tsa"
	make_tsa_cert "$TSA" "iamsign test TSA"
	make_tsa_cert "$TSA/other" "untrusted TSA"
	command -v python3 >/dev/null 2>&1 || die "python3 is required for the test TSA"
}

# The tsa: section, once the TSA listens (its port is known).
tsa_config() {
	cat >>"$WORK/iamsignd.yaml" <<-EOF
		tsa:
		  url: http://127.0.0.1:$TSA_PORT/tsa
		  trust_anchors: $TSA/tsa-ca.pem
		  timeout: ${1:-2s}
	EOF
}

start_tsa() {
	rm -f "$TSA/port"
	python3 "$IAMSIGN_SRC/tests/tsa/tsa-server.py" "$TSA/port" "$TSA" 2>"$TSA/server.log" &
	TSA_PID=$!
	for _ in $(seq 1 50); do
		[ -s "$TSA/port" ] && break
		sleep 0.1
	done
	[ -s "$TSA/port" ] || die "the test TSA did not start: $(cat "$TSA/server.log")"
	TSA_PORT=$(cat "$TSA/port")
}

stop_tsa() {
	[ -n "$TSA_PID" ] || return 0
	kill -TERM "$TSA_PID" 2>/dev/null || true
	wait "$TSA_PID" 2>/dev/null || true
	TSA_PID=""
}

tsa_mode() {
	printf '%s\n' "$1" >"$TSA/mode"
}

# listener_pid: the listener the running daemon forked, as its start line names it.
listener_pid() {
	sed -n 's/.*(listener pid \([0-9]*\)).*/\1/p' "$WORK/daemon.log" | tail -n 1
}

# wait_exit PID SECS: 0 once PID has exited, 1 if it still runs after SECS. A child is reaped
# and its exit status left in WAIT_STATUS (127 when PID is not our child).
WAIT_STATUS=0
wait_exit() {
	local pid="$1" n=$(($2 * 10)) state
	while [ "$n" -gt 0 ]; do
		state=""
		if [ -r "/proc/$pid/stat" ]; then
			# The state follows the parenthesised command name.
			state="$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -c1)"
		fi
		if [ -z "$state" ] || [ "$state" = Z ] || [ "$state" = X ]; then
			WAIT_STATUS=0
			wait "$pid" 2>/dev/null || WAIT_STATUS=$?
			if [ "$pid" = "$DAEMON_PID" ]; then
				DAEMON_PID=""
			fi
			return 0
		fi
		sleep 0.1
		n=$((n - 1))
	done
	return 1
}

# stop_daemon: SIGTERM, then wait (up to 15 s) for a clean exit; anything else is a failure.
stop_daemon() {
	local pid="$DAEMON_PID"
	[ -n "$pid" ] || return 0
	kill -TERM "$pid" 2>/dev/null || true
	if ! wait_exit "$pid" 15; then
		fail "iamsignd still running 15 s after SIGTERM; killed"
		kill -KILL "$pid" 2>/dev/null || true
		wait_exit "$pid" 5 || true
	elif [ "$WAIT_STATUS" -ne 0 ]; then
		fail "iamsignd exited with status $WAIT_STATUS after SIGTERM"
	fi
	DAEMON_PID=""
	return 0
}

# csc METHOD JSON: POST JSON to /csc/v2/METHOD; prints the HTTP status ("000" if no answer).
csc() {
	local method="$1" body="$2"
	rm -f "$WORK/resp.json"
	curl -s -o "$WORK/resp.json" -w '%{http_code}' --unix-socket "$WORK/iamsign.sock" \
		-H 'Content-Type: application/json' --data-binary "$body" \
		"http://localhost/csc/v2/$method" || true
}

# jq_get FILTER: jq -r FILTER applied to the last response; prints nothing if it is not JSON.
jq_get() {
	jq -r "$1" "$WORK/resp.json" 2>/dev/null || true
}

# metric NAME: its value in /metrics (nothing if the daemon does not answer).
metric() {
	curl -s --max-time 5 --unix-socket "$WORK/iamsign.sock" http://localhost/metrics |
		sed -n "s/^$1 //p"
}

# expect_status MSG WANT GOT
expect_status() {
	if [ "$3" = "$2" ]; then
		pass "$1 (HTTP $3)"
	else
		fail "$1: HTTP $3, expected $2; body: $(head -c 500 "$WORK/resp.json" 2>/dev/null)"
	fi
}

# expect_reason REASON: the "reason" of the last (error) response.
expect_reason() {
	local got
	got="$(jq_get '.reason // empty')"
	if [ "$got" = "$1" ]; then
		pass "reason $1"
	else
		fail "reason \"$got\", expected $1; body: $(head -c 500 "$WORK/resp.json" 2>/dev/null)"
	fi
}

# ---------------------------------------------------------------------------------------------
# Helpers for the SAD, policy-rule and quota tests (added with issue 3).
#
#   ec_keypair NAME             EC P-256 key $WORK/NAME.key, public key $WORK/NAME.pub
#   add_sad_issuers PEM...      append `sad_issuers: [PEM, ...]` to $WORK/iamsignd.yaml
#   write_policy                policy from stdin to $WORK/policy.yaml (mode 0600, renamed into
#                               place so a reloading daemon never reads half a file)
#   file_digest FILE [ALG]      base64 digest (sha256 by default) of FILE
#   sad_claims CRED SUB PURPOSE "H1 H2.." [JQ]
#                               SAD claims JSON: iss, sub, cred, hashes, halg (SHA-256), num 1,
#                               purpose, iat now, exp now+300, a fresh jti; JQ (a jq filter)
#                               changes them, e.g. '.num = 3' or '.exp = .iat - 100'
#   mint_sad KEY CLAIMS [MODE]  tests/mint-sad KEY CLAIMS MODE (dies if it fails)
#   sign_hash CRED PURPOSE "H1 H2.." [SAD] [HALG_OID]
#                               signatures/signHash with ECDSA; empty PURPOSE or SAD: left out;
#                               prints the HTTP status like csc
#   verify_sig PUB FILE SIGB64 [ALG]
#                               0 if the base64 DER signature SIGB64 verifies for FILE
#                               (openssl dgst -verify)
#   ca_setup NAME [CERT KEY]    an `openssl ca` setup in $WORK/ca-NAME (config ca.cnf); with CERT
#                               and KEY it uses that CA (e.g. the test CA), else it creates a new
#                               self-signed EC CA there (ca.pem, ca.key)
#   provision_cred_ca CA ID ALG OWNER CLASS [openssl ca args...] [-- enrol args...]
#                               like provision_cred, but the certificate is made by `openssl ca`
#                               of ca_setup CA with the given arguments (-startdate, -enddate,
#                               -extensions leaf_nonr, ...); enrol gets the args after --
#   revoke_cert CA CERT         openssl ca -revoke
#   gen_crl CA OUT [args...]    openssl ca -gencrl (PEM) into OUT
#   restart_daemon              stop_daemon; start_daemon
#   wait_log REGEX SECS         0 once daemon.log matches the extended REGEX, 1 after SECS
# ---------------------------------------------------------------------------------------------

MINT_SAD="$IAMSIGN_SRC/tests/mint-sad"
OID_SHA256=2.16.840.1.101.3.4.2.1
OID_SHA384=2.16.840.1.101.3.4.2.2

ec_keypair() {
	openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$WORK/$1.key" \
		>/dev/null 2>&1 && openssl pkey -in "$WORK/$1.key" -pubout -out "$WORK/$1.pub" \
		>/dev/null 2>&1 || die "cannot make the EC key pair $1"
}

add_sad_issuers() {
	local list
	list=$(printf '%s, ' "$@")
	printf 'sad_issuers: [%s]\n' "${list%, }" >>"$WORK/iamsignd.yaml" || die "cannot write iamsignd.yaml"
}

write_policy() {
	cat >"$WORK/policy.yaml.new" && chmod 0600 "$WORK/policy.yaml.new" &&
		mv -f "$WORK/policy.yaml.new" "$WORK/policy.yaml" || die "cannot write policy.yaml"
}

file_digest() {
	openssl dgst -"${2:-sha256}" -binary "$1" | base64 -w0
}

sad_claims() {
	local cred="$1" sub="$2" purpose="$3" hashes="$4" filter="${5:-.}" now jti
	now=$(date +%s)
	jti=$(openssl rand -hex 16)
	# shellcheck disable=SC2086 # the hashes are a space-separated list
	jq -cn --arg cred "$cred" --arg sub "$sub" --arg purpose "$purpose" --arg jti "$jti" \
		--argjson now "$now" --arg halg "$OID_SHA256" \
		'{iss: "iamsign-test-issuer", sub: $sub, cred: $cred, hashes: $ARGS.positional,
		  halg: $halg, num: 1, purpose: $purpose, iat: $now, exp: ($now + 300), jti: $jti}
		 | '"$filter" --args $hashes || die "sad_claims: jq failed"
}

mint_sad() {
	"$MINT_SAD" "$@" || die "mint-sad $* failed"
}

sign_hash() {
	local cred="$1" purpose="$2" hashes="$3" sad="${4:-}" halg="${5:-$OID_SHA256}" algo body
	case $halg in
	"$OID_SHA384") algo=1.2.840.10045.4.3.3 ;;
	*) algo=1.2.840.10045.4.3.2 ;;
	esac
	# shellcheck disable=SC2086 # the hashes are a space-separated list
	body=$(jq -cn --arg cred "$cred" --arg purpose "$purpose" --arg sad "$sad" --arg halg "$halg" \
		--arg algo "$algo" \
		'{credentialID: $cred, hashes: $ARGS.positional, hashAlgorithmOID: $halg, signAlgo: $algo}
		 + (if $purpose == "" then {} else {purpose: $purpose} end)
		 + (if $sad == "" then {} else {SAD: $sad} end)' --args $hashes) ||
		die "sign_hash: jq failed"
	csc signatures/signHash "$body"
}

verify_sig() {
	local pub="$1" file="$2" sig="$3" alg="${4:-sha256}"
	[ -n "$sig" ] && [ "$sig" != null ] || return 1
	printf '%s' "$sig" | base64 -d >"$WORK/verify.sig" 2>/dev/null || return 1
	openssl dgst -"$alg" -verify "$pub" -signature "$WORK/verify.sig" "$file" >/dev/null 2>&1
}

ca_setup() {
	local name="$1" dir="$WORK/ca-$1" cert="${2:-}" key="${3:-}"
	mkdir -p "$dir/certs" || die "mkdir $dir"
	if [ -z "$cert" ]; then
		cert="$dir/ca.pem"
		key="$dir/ca.key"
		openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
			-keyout "$key" -out "$cert" -days 30 -sha256 \
			-subj "/CN=iamsign $name CA/O=iamsign tests" \
			-addext "basicConstraints=critical,CA:TRUE" \
			-addext "keyUsage=critical,keyCertSign,cRLSign" >"$dir/req.log" 2>&1 || {
			cat "$dir/req.log" >&2
			die "cannot create CA $name"
		}
	fi
	: >"$dir/index.txt"
	printf 'unique_subject = no\n' >"$dir/index.txt.attr"
	openssl rand -hex 16 | tr a-f A-F | sed 's/^./1/' >"$dir/serial"
	printf '1000\n' >"$dir/crlnumber"
	cat >"$dir/ca.cnf" <<-EOF
		[ ca ]
		default_ca = test_ca
		[ test_ca ]
		dir = $dir
		database = $dir/index.txt
		new_certs_dir = $dir/certs
		certificate = $cert
		private_key = $key
		serial = $dir/serial
		crlnumber = $dir/crlnumber
		default_md = sha256
		default_days = 30
		default_crl_days = 7
		policy = policy_any
		x509_extensions = leaf
		copy_extensions = none
		unique_subject = no
		[ policy_any ]
		commonName = supplied
		organizationName = optional
		[ leaf ]
		basicConstraints = critical,CA:FALSE
		keyUsage = critical,digitalSignature,nonRepudiation
		subjectKeyIdentifier = hash
		authorityKeyIdentifier = keyid
		[ leaf_nonr ]
		basicConstraints = critical,CA:FALSE
		keyUsage = critical,digitalSignature
		subjectKeyIdentifier = hash
		authorityKeyIdentifier = keyid
		[ crl_ext ]
		authorityKeyIdentifier = keyid
	EOF
}

provision_cred_ca() {
	local ca="$1" id="$2" alg="$3" owner="$4" class="$5"
	shift 5
	local ca_args=() enrol_args=()
	while [ $# -gt 0 ] && [ "$1" != -- ]; do
		ca_args+=("$1")
		shift
	done
	[ $# -gt 0 ] && shift
	enrol_args=("$@")
	local log="$WORK/provision-$id.log"
	{
		admin keygen ${KEYGEN_STORE:+--store "$KEYGEN_STORE"} --credential "$id" --alg "$alg" &&
			admin csr --credential "$id" --subject "/CN=$owner/O=iamsign tests" \
				--out "$WORK/$id.csr" &&
			openssl ca -batch -notext -config "$WORK/ca-$ca/ca.cnf" -in "$WORK/$id.csr" \
				-out "$WORK/$id.pem" "${ca_args[@]}" &&
			admin import-cert --credential "$id" --cert "$WORK/$id.pem" &&
			admin enrol --credential "$id" --user "$owner" --class "$class" "${enrol_args[@]}"
	} >"$log" 2>&1 || {
		cat "$log" >&2
		die "provisioning $id ($alg, CA $ca) failed"
	}
}

revoke_cert() {
	openssl ca -batch -config "$WORK/ca-$1/ca.cnf" -revoke "$2" >"$WORK/revoke.log" 2>&1 || {
		cat "$WORK/revoke.log" >&2
		die "cannot revoke $2"
	}
}

gen_crl() {
	local ca="$1" out="$2"
	shift 2
	openssl ca -batch -config "$WORK/ca-$ca/ca.cnf" -gencrl -crlexts crl_ext -out "$out" "$@" \
		>"$WORK/crl.log" 2>&1 || {
		cat "$WORK/crl.log" >&2
		die "cannot make the CRL $out"
	}
}

restart_daemon() {
	stop_daemon
	start_daemon
}

wait_log() {
	local re="$1" n=$(($2 * 10))
	while [ "$n" -gt 0 ]; do
		grep -Eq -- "$re" "$WORK/daemon.log" 2>/dev/null && return 0
		sleep 0.1
		n=$((n - 1))
	done
	return 1
}

use_mock() {
	MOCK="$IAMSIGN_BUILD/tests/mock-pkcs11.so"
	[ -f "$MOCK" ] || die "$MOCK not built"
	CTL="$WORK/mock.ctl"
	STATS="$WORK/mock.ctl.stats"
	export IAMSIGN_MOCK_CONTROL="$CTL"
	export IAMSIGN_MOCK_STATS="$STATS"
	export IAMSIGN_MOCK_MODULE="$SOFTHSM_MODULE"
}

# The control file is replaced by rename (the mock re-reads it when it changes).
ctl() {
	printf '%s\n' "$@" >"$CTL.new" && mv -f "$CTL.new" "$CTL" || die "cannot write $CTL"
}

mstat() {
	local v
	v=$(sed -n "s/^$1=//p" "$STATS" 2>/dev/null || true)
	echo "${v:-0}"
}
