#!/usr/bin/env bash
# Privilege separation (docs/security.md): the listener that parses requests holds no PIN, no
# PKCS#11 module and no ledger, runs as listener.user in an empty root without new privileges;
# the core drops to `user`; neither can dump core; no secret in argv or the environment; the
# daemon fails closed when the listener dies; socket activation and sd_notify work.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
setup_env
init_token
provision_cred seal-ec ec-p256 org-1 seal
[ "$(id -u)" -eq 0 ] || { echo "not root: the privilege drop cannot be tested; skipping"; exit 77; }

printf 'privsep form\n' >"$WORK/form.txt"
digest=$(openssl dgst -sha256 -binary "$WORK/form.txt" | base64 -w0)
good="{\"credentialID\":\"seal-ec\",\"hashes\":[\"$digest\"],\"hashAlgorithmOID\":\"2.16.840.1.101.3.4.2.1\",\"signAlgo\":\"1.2.840.10045.4.3.2\"}"
openssl x509 -in "$WORK/seal-ec.pem" -pubkey -noout >"$WORK/seal-ec.pub"

# sign_ok MSG: a signature made through both processes, verified by openssl.
sign_ok() {
	local st
	st=$(csc signatures/signHash "$good")
	if [ "$st" != 200 ]; then
		fail "$1: HTTP $st: $(head -c 300 "$WORK/resp.json")"
		return
	fi
	jq -r '.signatures[0]' "$WORK/resp.json" | base64 -d >"$WORK/sig"
	openssl dgst -sha256 -verify "$WORK/seal-ec.pub" -signature "$WORK/sig" "$WORK/form.txt" >/dev/null 2>&1 &&
		pass "$1" || fail "$1: the signature does not verify"
}

# status_field PID FIELD: a field of /proc/PID/status.
status_field() { awk -v f="$2:" '$1 == f {print $2; exit}' "/proc/$1/status"; }

# no_secret PID WHAT: neither the PIN nor the PIN file's content in argv or the environment.
no_secret() {
	if tr '\0' '\n' <"/proc/$1/cmdline" | grep -q "$USER_PIN" ||
		tr '\0' '\n' <"/proc/$1/environ" | grep -q "$USER_PIN"; then
		fail "$2: the PIN is in argv or the environment"
	else
		pass "$2: no PIN in argv or the environment"
	fi
}

start_daemon
core=$DAEMON_PID
lst=$(listener_pid)
[ -n "$lst" ] && [ -d "/proc/$lst" ] && pass "two processes: core $core, listener $lst" || die "no listener process"
[ "$(awk '{print $4}' "/proc/$lst/stat")" = "$core" ] && pass "the listener is the core's child" || fail "listener's parent is not the core"
sign_ok "a signature through listener and core verifies"

# The listener: nobody, no capabilities, no new privileges, an empty root that is gone.
[ "$(status_field "$lst" Uid)" = "$(id -u nobody)" ] && pass "listener runs as nobody" || fail "listener uid $(status_field "$lst" Uid)"
[ "$(status_field "$lst" Gid)" = "$(id -g nobody)" ] && pass "listener's group is nobody's" || fail "listener gid $(status_field "$lst" Gid)"
[ "$(awk '/^Groups:/ {print NF - 1}' "/proc/$lst/status")" -le 1 ] && pass "listener has no supplementary groups beyond its own" || fail "listener groups: $(grep Groups "/proc/$lst/status")"
[ "$(status_field "$lst" CapEff)" = 0000000000000000 ] && [ "$(status_field "$lst" CapPrm)" = 0000000000000000 ] &&
	pass "listener has no capabilities" || fail "listener capabilities: $(grep Cap "/proc/$lst/status")"
[ "$(status_field "$lst" NoNewPrivs)" = 1 ] && pass "listener: no_new_privs" || fail "listener may gain privileges"
root=$(readlink "/proc/$lst/root")
case "$root" in
*"(deleted)") pass "listener's root is a deleted directory: $root" ;;
*) fail "listener's root: $root" ;;
esac
[ -z "$(ls -A "/proc/$lst/root/" 2>/dev/null)" ] && pass "listener's root is empty" || fail "listener's root holds: $(ls -A "/proc/$lst/root/")"
ls -d "$WORK"/.iamsign-listener.* >/dev/null 2>&1 && fail "the listener's root directory is left in $WORK" || pass "no directory left next to the socket"
# Non-dumpable: /proc files of a process running as nobody belong to root only then.
[ "$(stat -c %U "/proc/$lst/status")" = root ] && pass "listener is not dumpable" || fail "listener is dumpable"
grep -q "^Max core file size *0 *0 " "/proc/$lst/limits" && pass "listener: RLIMIT_CORE 0" || fail "listener core limit: $(grep 'core file' "/proc/$lst/limits")"
grep -q "^Max core file size *0 *0 " "/proc/$core/limits" && pass "core: RLIMIT_CORE 0" || fail "core core limit: $(grep 'core file' "/proc/$core/limits")"

# What each holds: the module and the ledger in the core only.
grep -q libsofthsm2 "/proc/$core/maps" && pass "the core has the PKCS#11 module loaded" || fail "no module in the core"
grep -q libsofthsm2 "/proc/$lst/maps" && fail "the listener has the PKCS#11 module mapped" || pass "the listener never loaded the PKCS#11 module"
ls -l "/proc/$core/fd" | grep -q "state/iamsign.db" && pass "the core holds the ledger" || fail "the core has no ledger open"
if ls -l "/proc/$lst/fd" | grep -Eq "iamsign.db|user.pin|tokens/"; then
	fail "the listener holds a ledger, PIN or token file: $(ls -l "/proc/$lst/fd" | grep -E 'iamsign.db|user.pin|tokens/')"
else
	pass "the listener holds no ledger, PIN or token file"
fi
no_secret "$core" core
no_secret "$lst" listener

# The threads carry the names operations.md lists. threads_named PID NAME: how many.
threads_named() { cat /proc/"$1"/task/*/comm 2>/dev/null | grep -cx "$2" || true; }
thread_names() { cat /proc/"$1"/task/*/comm 2>/dev/null | sort | uniq -c | tr -s ' \n' ' '; }
[ "$(threads_named "$core" ledger-writer)" = 1 ] && [ "$(threads_named "$core" core-status)" = 1 ] &&
	[ "$(threads_named "$core" core-channel)" = 16 ] && [ "$(threads_named "$core" token-monitor)" = 1 ] &&
	[ "$(threads_named "$lst" http-reaper)" = 1 ] && pass "the core's and the listener's threads are named" ||
	fail "thread names: core$(thread_names "$core"), listener$(thread_names "$lst")"

# The listener dies: the core stops at once (fail closed), nothing is left serving.
kill -KILL "$lst"
if wait_exit "$core" 10; then
	[ "$WAIT_STATUS" -ne 0 ] && pass "core exits non-zero when the listener dies (status $WAIT_STATUS)" ||
		fail "core exited 0 after losing its listener"
else
	fail "core still running 10 s after its listener died"
	kill -KILL "$core" 2>/dev/null || true
fi
DAEMON_PID=""
grep -q "the listener exited (signal 9)" "$WORK/daemon.log" && pass "the listener's death is logged" || fail "not logged: $(tail -3 "$WORK/daemon.log")"

# The core dies: the listener goes with it.
start_daemon
core=$DAEMON_PID
lst=$(listener_pid)
kill -KILL "$core"
wait "$core" 2>/dev/null || true
DAEMON_PID=""
gone=0
for _ in $(seq 1 50); do
	[ -d "/proc/$lst" ] && [ "$(awk '{print $3}' "/proc/$lst/stat" 2>/dev/null)" != Z ] || { gone=1; break; }
	sleep 0.1
done
[ "$gone" = 1 ] && pass "the listener dies with the core" || fail "listener $lst outlived the core"

# The core as an unprivileged user: the PIN file (root's, 0600) is read first, then the drop,
# then token and ledger are opened as that user. Root runs without CAP_DAC_OVERRIDE, as under
# the systemd unit, so nothing of the user's can be opened before the drop.
chmod 0711 "$WORK"
chown -R daemon: "$WORK/state" "$WORK/tokens"
chmod 0700 "$WORK/state"
chmod 0644 "$WORK/policy.yaml" "$WORK/ca.pem" "$WORK/softhsm2.conf"
sed -i '1i user: daemon' "$WORK/iamsignd.yaml"
nodac="setpriv --bounding-set -dac_override,-dac_read_search,-fowner --inh-caps -dac_override,-dac_read_search,-fowner"
$nodac "$IAMSIGND" -c "$WORK/iamsignd.yaml" >"$WORK/daemon.log" 2>&1 &
DAEMON_PID=$!
for _ in $(seq 1 100); do
	curl -sf --unix-socket "$WORK/iamsign.sock" http://x/healthz >/dev/null 2>&1 && break
	kill -0 "$DAEMON_PID" 2>/dev/null || break
	sleep 0.1
done
core=$DAEMON_PID
if kill -0 "$core" 2>/dev/null; then
	pass "the core starts as root without CAP_DAC_OVERRIDE, the state being the user's"
else
	wait "$core" 2>/dev/null || true
	DAEMON_PID=""
	die "daemon did not start without CAP_DAC_OVERRIDE: $(cat "$WORK/daemon.log")"
fi
[ "$(status_field "$core" Uid)" = "$(id -u daemon)" ] && pass "core runs as user daemon" || fail "core uid $(status_field "$core" Uid)"
[ "$(awk '/^Groups:/ {print NF - 1}' "/proc/$core/status")" -le 1 ] && pass "core has no supplementary groups beyond its own" || fail "core groups: $(grep Groups "/proc/$core/status")"
[ "$(stat -c %U "/proc/$core/status")" = root ] && pass "core is not dumpable after the drop" || fail "core is dumpable"
[ "$(status_field "$core" CapEff)" = 0000000000000000 ] && pass "core has no capabilities" || fail "core capabilities: $(status_field "$core" CapEff)"
no_secret "$core" "unprivileged core"
sign_ok "a signature from the unprivileged core verifies"
kill -HUP "$core"
wait_log "SIGHUP: policy.*reloaded" 5 && pass "SIGHUP reload as the unprivileged user" || fail "reload: $(tail -2 "$WORK/daemon.log")"
sign_ok "a signature after the reload verifies"
stop_daemon
grep -q "iamsignd: stopped" "$WORK/daemon.log" && pass "clean stop as the unprivileged user, listener drained" || fail "no clean stop: $(tail -3 "$WORK/daemon.log")"
# iamsign-admin as root with `user` set does the same: the PIN read, then that user.
check "iamsign-admin (root, user: daemon) suspends" $nodac "$ADMIN" -c "$WORK/iamsignd.yaml" suspend --credential seal-ec
check "iamsign-admin (root, user: daemon) resumes" $nodac "$ADMIN" -c "$WORK/iamsignd.yaml" resume --credential seal-ec
check "the ledger verifies after the unprivileged records" $nodac "$ADMIN" -c "$WORK/iamsignd.yaml" audit verify
others=$(find "$WORK/state" "$WORK/tokens" ! -user daemon)
[ -z "$others" ] && pass "every state and token file belongs to the user" || fail "not the user's: $others"
sed -i '/^user: daemon$/d' "$WORK/iamsignd.yaml"
chown -R root: "$WORK/state" "$WORK/tokens"
rm -f "$WORK/iamsign.sock"

# A user that does not exist: refused at start, nothing served.
sed -i '1i user: no-such-user-here' "$WORK/iamsignd.yaml"
check_fails "an unknown user is refused at start" "$IAMSIGND" -c "$WORK/iamsignd.yaml"
grep -q "no such user: no-such-user-here" "$WORK/check.out" && pass "the unknown user is named" || fail "message: $(cat "$WORK/check.out")"
[ -S "$WORK/iamsign.sock" ] && fail "socket left after a refused start" || pass "no socket left after a refused start"
sed -i '/^user: no-such-user-here$/d' "$WORK/iamsignd.yaml"

# Socket activation and sd_notify, as systemd does them (systemd-socket-activate passes the
# listening socket as fd 3; NOTIFY_SOCKET receives READY=1).
if command -v systemd-socket-activate >/dev/null 2>&1; then
	python3 - "$WORK/notify.sock" >"$WORK/notify.out" 2>&1 <<'PY' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
s.settimeout(30)
while True:
    msg = s.recv(4096).decode()
    print(msg.replace("\n", " "), flush=True)
    if "READY=1" in msg:
        break
PY
	npid=$!
	for _ in $(seq 1 50); do [ -S "$WORK/notify.sock" ] && break; sleep 0.1; done
	NOTIFY_SOCKET="$WORK/notify.sock" systemd-socket-activate -E SOFTHSM2_CONF -E NOTIFY_SOCKET \
		-l "$WORK/iamsign.sock" \
		"$IAMSIGND" -c "$WORK/iamsignd.yaml" >"$WORK/daemon.log" 2>&1 &
	DAEMON_PID=$!
	for _ in $(seq 1 50); do [ -S "$WORK/iamsign.sock" ] && break; sleep 0.1; done
	sign_ok "socket-activated daemon signs (first connection starts it)"
	wait "$npid" 2>/dev/null || true
	grep -q "READY=1" "$WORK/notify.out" && pass "READY=1 sent to NOTIFY_SOCKET" || fail "no READY=1: $(cat "$WORK/notify.out")"
	lst=$(listener_pid)
	[ -n "$lst" ] && no_secret "$lst" "socket-activated listener"
	kill -TERM "$DAEMON_PID"
	wait_exit "$DAEMON_PID" 15 && [ "$WAIT_STATUS" -eq 0 ] && pass "socket-activated daemon stops cleanly" ||
		fail "socket-activated daemon: stop status $WAIT_STATUS"
	DAEMON_PID=""
	grep -q "iamsignd: stopped" "$WORK/daemon.log" && pass "socket-activated daemon: clean stop logged" || fail "no clean stop: $(tail -3 "$WORK/daemon.log")"

	# A socket at another path than listen.socket: refused.
	rm -f "$WORK/iamsign.sock"
	systemd-socket-activate -E SOFTHSM2_CONF -l "$WORK/other.sock" \
		"$IAMSIGND" -c "$WORK/iamsignd.yaml" >"$WORK/daemon.log" 2>&1 &
	DAEMON_PID=$!
	for _ in $(seq 1 50); do [ -S "$WORK/other.sock" ] && break; sleep 0.1; done
	curl -s --max-time 5 --unix-socket "$WORK/other.sock" http://x/healthz >/dev/null 2>&1 || true
	wait_exit "$DAEMON_PID" 10 || kill -KILL "$DAEMON_PID" 2>/dev/null || true
	DAEMON_PID=""
	grep -q "expected one listening stream socket at $WORK/iamsign.sock" "$WORK/daemon.log" &&
		pass "a socket at another path than listen.socket is refused" || fail "other socket: $(cat "$WORK/daemon.log")"
else
	fail "systemd-socket-activate is missing (package systemd)"
fi
