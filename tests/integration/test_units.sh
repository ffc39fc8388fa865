#!/usr/bin/env bash
# The systemd files in dist/, checked offline (no running systemd needed):
# - systemd-analyze verify finds nothing to say about the service and socket units, with
#   ExecStart pointed at the built iamsignd (verify checks that it is executable);
# - systemd-analyze security --offline rates the service's exposure at most EXPOSURE_MAX;
# - the sandbox directives the design relies on are there, and its system call filter allows
#   the calls the daemon's start needs (setuid, chroot, prctl, ...);
# - systemd-sysusers and systemd-tmpfiles, run into a throwaway root, create the users, groups
#   and directories with the owners and modes docs/operations.md names;
# - meson installs the four files where systemd looks for them.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

# Measured 1.4 with systemd 252 (Debian 12); a little margin for the scoring of other versions.
# systemd-analyze takes the threshold in tenths.
EXPOSURE_MAX=1.8

DIST="$IAMSIGN_SRC/dist"
SERVICE="$DIST/iamsignd.service"
SOCKET="$DIST/iamsignd.socket"
TMPFILES="$DIST/iamsign.tmpfiles"
SYSUSERS="$DIST/iamsign.sysusers"

for t in systemd-analyze systemd-tmpfiles systemd-sysusers; do
	if ! command -v "$t" >/dev/null 2>&1; then
		echo "$t not found: systemd is not installed; skipping" >&2
		exit 77
	fi
done
umask 077
WORK="$(mktemp -d "${TMPDIR:-/tmp}/iamsign-test.XXXXXX")" || die "mktemp failed"
trap cleanup EXIT
trap 'exit 130' INT TERM

for f in "$SERVICE" "$SOCKET" "$TMPFILES" "$SYSUSERS"; do
	[ -f "$f" ] || die "$f missing"
done
[ -x "$IAMSIGND" ] || die "$IAMSIGND not built"

# A copy of the units whose ExecStart names the built binary.
mkdir "$WORK/units"
sed "s|^ExecStart=/usr/sbin/iamsignd |ExecStart=$IAMSIGND |" "$SERVICE" >"$WORK/units/iamsignd.service"
cp "$SOCKET" "$WORK/units/iamsignd.socket"
grep -q "^ExecStart=$IAMSIGND -c " "$WORK/units/iamsignd.service" ||
	die "no 'ExecStart=/usr/sbin/iamsignd -c ...' line in $SERVICE"

# verify UNIT...: systemd-analyze verify; output in $WORK/verify.out, exit status returned.
# Warnings (an unknown key, say) do not change verify's exit status: they are in the output.
verify() {
	(cd "$WORK/units" && systemd-analyze verify --man=no --generators=no "$@") \
		>"$WORK/verify.out" 2>&1
}

# --- systemd-analyze verify ----------------------------------------------------------------
rc=0
verify ./iamsignd.socket ./iamsignd.service || rc=$?
if [ "$rc" -eq 0 ] && [ ! -s "$WORK/verify.out" ]; then
	pass "systemd-analyze verify: no error, no warning"
else
	fail "systemd-analyze verify (exit $rc):"
	sed 's/^/    /' "$WORK/verify.out" >&2
fi
# The same check must notice a misspelt directive, or the pass above means nothing.
sed 's/^ProtectSystem=/ProtectSytem=/' "$WORK/units/iamsignd.service" >"$WORK/units/misspelt.service"
verify ./iamsignd.socket ./misspelt.service || true
grep -q "ProtectSytem" "$WORK/verify.out" && pass "verify reports a misspelt directive" ||
	fail "verify did not report a misspelt directive: $(cat "$WORK/verify.out")"
rm -f "$WORK/units/misspelt.service"

# --- systemd-analyze security --------------------------------------------------------------
rc=0
threshold=$(awk -v m="$EXPOSURE_MAX" 'BEGIN { printf "%d", m * 10 + 0.5 }')
systemd-analyze security --offline=true --threshold="$threshold" --no-pager \
	"$WORK/units/iamsignd.service" >"$WORK/security.out" 2>&1 || rc=$?
level=$(sed -n 's/.*Overall exposure level for iamsignd\.service: \([0-9.]*\).*/\1/p' "$WORK/security.out")
if [ -z "$level" ]; then
	fail "systemd-analyze security printed no exposure level (exit $rc)"
	sed 's/^/    /' "$WORK/security.out" >&2
elif [ "$rc" -eq 0 ] && awk -v l="$level" -v m="$EXPOSURE_MAX" 'BEGIN { exit !(l <= m) }'; then
	pass "exposure level $level (at most $EXPOSURE_MAX)"
else
	fail "exposure level $level, above $EXPOSURE_MAX (exit $rc); the items that cost:"
	grep '✗' "$WORK/security.out" | sed 's/^/    /' >&2 || true
fi

# --- directives ----------------------------------------------------------------------------
# directive FILE KEY=VALUE: FILE has that exact line.
directive() {
	if grep -qxF -- "$2" "$1"; then
		pass "$(basename "$1"): $2"
	else
		fail "$(basename "$1"): no line '$2' (found: $(grep "^${2%%=*}=" "$1" | tr '\n' ' '))"
	fi
}
for d in Type=notify NotifyAccess=main \
	'ExecStart=/usr/sbin/iamsignd -c /etc/iamsign/iamsignd.yaml' \
	'ExecReload=+/bin/sh -c "kill -HUP $MAINPID"' Restart=on-failure KillMode=mixed \
	Sockets=iamsignd.socket Requires=iamsignd.socket \
	ProtectSystem=strict ReadWritePaths=/var/lib/iamsign RuntimeDirectory=iamsign \
	RuntimeDirectoryPreserve=yes PrivateNetwork=yes NoNewPrivileges=yes \
	MemoryDenyWriteExecute=yes PrivateTmp=yes ProtectHome=yes ProtectKernelTunables=yes \
	ProtectKernelModules=yes ProtectKernelLogs=yes ProtectControlGroups=yes ProtectClock=yes \
	ProtectHostname=yes RestrictAddressFamilies=AF_UNIX RestrictNamespaces=yes \
	RestrictRealtime=yes RestrictSUIDSGID=yes LockPersonality=yes \
	SystemCallArchitectures=native \
	'CapabilityBoundingSet=CAP_SETUID CAP_SETGID CAP_SYS_CHROOT' LimitCORE=0 UMask=0077 \
	DevicePolicy=closed; do
	directive "$SERVICE" "$d"
done
for d in ListenStream=/run/iamsign/iamsign.sock SocketMode=0660 SocketGroup=iamsign-callers; do
	directive "$SOCKET" "$d"
done
# --- the TSA drop-in -----------------------------------------------------------------------
# dist/iamsignd-tsa.conf (CAdES B-T): the network, to the TSA's addresses only. Checked as the
# service with the drop-in's lines appended to its [Service] section, which is how systemd
# merges them: verify clean, and an exposure still low (measured 2.2 with systemd 252).
TSA_DROPIN="$DIST/iamsignd-tsa.conf"
for d in PrivateNetwork=no 'RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6' IPAddressDeny=any \
	IPAddressAllow=192.0.2.10; do
	directive "$TSA_DROPIN" "$d"
done
[ "$(grep -c "^[A-Za-z]" "$TSA_DROPIN")" = 4 ] && pass "iamsignd-tsa.conf: these four lines, nothing more" ||
	fail "iamsignd-tsa.conf has other lines: $(grep '^[A-Za-z]' "$TSA_DROPIN" | tr '\n' ' ')"
{
	sed '/^\[Install\]/,$d' "$WORK/units/iamsignd.service"
	grep -v '^\[Service\]' "$TSA_DROPIN"
	sed -n '/^\[Install\]/,$p' "$WORK/units/iamsignd.service"
} >"$WORK/units/iamsignd-tsa.service"
rc=0
verify ./iamsignd.socket ./iamsignd-tsa.service || rc=$?
[ "$rc" -eq 0 ] && ! grep -v "iamsignd.socket" "$WORK/verify.out" | grep -q . &&
	pass "systemd-analyze verify with the TSA drop-in" || fail "verify with the TSA drop-in: $(cat "$WORK/verify.out")"
rc=0
systemd-analyze security --offline=true --threshold=26 --no-pager "$WORK/units/iamsignd-tsa.service" \
	>"$WORK/security.out" 2>&1 || rc=$?
level=$(sed -n 's/.*Overall exposure level for iamsignd-tsa\.service: \([0-9.]*\).*/\1/p' "$WORK/security.out")
[ "$rc" -eq 0 ] && [ -n "$level" ] && pass "exposure with the TSA drop-in $level (at most 2.6)" ||
	fail "exposure with the TSA drop-in: '$level' (exit $rc)"
grep -q "IPAddressDeny=.*allow list" "$WORK/security.out" && pass "the drop-in keeps an IP address allow list" ||
	fail "no IP allow list with the drop-in: $(grep IPAddress "$WORK/security.out")"
rm -f "$WORK/units/iamsignd-tsa.service"

! grep -q '^User=' "$SERVICE" && pass "no User= (the core starts as root and drops itself)" ||
	fail "User= set: the core could not read the PIN file, chroot the listener or change users"

# TimeoutStopSec: above the core's own stop (the listener's 10 s drain, SIGKILL 5 s later),
# so the final checkpoint gets written before systemd kills anything.
stop=$(sed -n 's/^TimeoutStopSec=\([0-9]*\)s\{0,1\}$/\1/p' "$SERVICE")
[ -n "$stop" ] && [ "$stop" -gt 15 ] && [ "$stop" -le 30 ] && pass "TimeoutStopSec=${stop}s" ||
	fail "TimeoutStopSec: '$(grep '^TimeoutStopSec=' "$SERVICE")', expected 16 to 30 seconds"

# The system call filter allows what the start needs. syscalls GROUP-OR-CALL...: the calls,
# one per line, with systemd's @groups expanded as this systemd defines them.
syscalls() {
	local item sub
	for item in "$@"; do
		case $item in
		@*)
			systemd-analyze syscall-filter --no-pager "$item" 2>/dev/null |
				sed -n 's/^ \{4\}\([@a-z0-9_-]\{1,\}\)$/\1/p' |
				while read -r sub; do syscalls "$sub" </dev/null; done
			;;
		*) printf '%s\n' "$item" ;;
		esac
	done
}
filter=$(sed -n 's/^SystemCallFilter=\([^~].*\)$/\1/p' "$SERVICE" | tr '\n' ' ')
filter=${filter% }
# shellcheck disable=SC2086 # a space-separated list of groups and calls
syscalls $filter | sort -u >"$WORK/allowed.txt"
[ "$(wc -l <"$WORK/allowed.txt")" -gt 100 ] || die "SystemCallFilter '$filter' expands to too little"
missing=""
for call in setuid setgid setgroups setresuid setresgid chroot chdir mkdir rmdir prctl \
	setrlimit prlimit64 mlock munlock socketpair sendmsg recvmsg accept4 getsockopt fork \
	clone wait4 kill; do
	grep -qx "$call" "$WORK/allowed.txt" || missing="$missing $call"
done
[ -z "$missing" ] && pass "SystemCallFilter ($filter) allows the start's calls" ||
	fail "SystemCallFilter ($filter) lacks:$missing"

# --- sysusers ------------------------------------------------------------------------------
ROOT="$WORK/root"
mkdir -p "$ROOT/etc"
check "systemd-sysusers --root" systemd-sysusers --root="$ROOT" "$SYSUSERS"
# pw_field NAME FIELD: field FIELD (1-based) of NAME's line in the throwaway root's passwd.
pw_field() { awk -F: -v n="$1" -v f="$2" '$1 == n { print $f }' "$ROOT/etc/passwd"; }
gr_field() { awk -F: -v n="$1" -v f="$2" '$1 == n { print $f }' "$ROOT/etc/group"; }
uid=$(pw_field iamsign 3)
gid=$(gr_field iamsign 3)
callers_gid=$(gr_field iamsign-callers 3)
[ -n "$uid" ] && [ "$uid" -gt 0 ] && [ "$uid" -lt 1000 ] && pass "system user iamsign (uid $uid)" ||
	fail "no system user iamsign: $(cat "$ROOT/etc/passwd")"
[ -n "$gid" ] && [ "$(pw_field iamsign 4)" = "$gid" ] && pass "iamsign's primary group is iamsign" ||
	fail "group iamsign ($gid) is not iamsign's primary group ($(pw_field iamsign 4))"
[ "$(pw_field iamsign 6)" = /var/lib/iamsign ] && pass "iamsign's home is the state directory" ||
	fail "iamsign's home: $(pw_field iamsign 6)"
case $(pw_field iamsign 7) in
*/nologin | */false) pass "iamsign has no login shell" ;;
*) fail "iamsign's shell: $(pw_field iamsign 7)" ;;
esac
[ -n "$callers_gid" ] && [ "$callers_gid" -lt 1000 ] && pass "system group iamsign-callers" ||
	fail "no system group iamsign-callers: $(cat "$ROOT/etc/group")"
[ -n "$(pw_field iamsign-listener 3)" ] && pass "system user iamsign-listener" ||
	fail "no system user iamsign-listener"
cp "$ROOT/etc/passwd" "$WORK/passwd.1"
cp "$ROOT/etc/group" "$WORK/group.1"
check "systemd-sysusers again" systemd-sysusers --root="$ROOT" "$SYSUSERS"
cmp -s "$ROOT/etc/passwd" "$WORK/passwd.1" && cmp -s "$ROOT/etc/group" "$WORK/group.1" &&
	pass "sysusers is idempotent" || fail "a second sysusers run changed passwd or group"

# --- tmpfiles ------------------------------------------------------------------------------
# Debian 12's systemd-tmpfiles (252) has no --dry-run: create into the throwaway root, where
# the user names resolve through its own passwd and group.
check "systemd-tmpfiles --create --root" systemd-tmpfiles --create --root="$ROOT" "$TMPFILES"
# expect_dir PATH MODE UID GID
expect_dir() {
	local got
	got=$(stat -c '%a %u %g' "$ROOT$1" 2>/dev/null || echo missing)
	[ "$got" = "$2 $3 $4" ] && pass "$1: mode $2, owner $3:$4" ||
		fail "$1: '$got', expected '$2 $3 $4'"
}
expect_dir /var/lib/iamsign 700 "$uid" "$gid"
expect_dir /etc/iamsign 750 0 "$gid"
# A drifted mode or owner is put back.
chmod 0755 "$ROOT/var/lib/iamsign"
chown 0:0 "$ROOT/var/lib/iamsign"
check "systemd-tmpfiles again" systemd-tmpfiles --create --root="$ROOT" "$TMPFILES"
expect_dir /var/lib/iamsign 700 "$uid" "$gid"

# --- installation --------------------------------------------------------------------------
# meson introspect --installed: source file -> installed path.
if meson introspect --installed "$IAMSIGN_BUILD" >"$WORK/installed.json" 2>"$WORK/installed.err"; then
	prefix=$(meson introspect --buildoptions "$IAMSIGN_BUILD" |
		jq -r '.[] | select(.name == "prefix") | .value')
	for pair in iamsignd.service:lib/systemd/system/iamsignd.service \
		iamsignd.socket:lib/systemd/system/iamsignd.socket \
		iamsign.tmpfiles:lib/tmpfiles.d/iamsign.conf \
		iamsign.sysusers:lib/sysusers.d/iamsign.conf; do
		src="$DIST/${pair%%:*}"
		want="$prefix/${pair#*:}"
		got=$(jq -r --arg s "$(realpath "$src")" \
			'to_entries[] | select((.key | sub("/+"; "/"; "g")) == $s) | .value' \
			"$WORK/installed.json")
		[ "$got" = "$want" ] && pass "installs ${pair%%:*} as $want" ||
			fail "${pair%%:*} installed as '$got', expected $want (is $IAMSIGN_BUILD set up from this meson.build?)"
	done
else
	fail "meson introspect --installed $IAMSIGN_BUILD: $(cat "$WORK/installed.err")"
fi
