#!/usr/bin/env bash
# Hostile input (issue 5): every case gets a 4xx or a closed connection, the daemon does not die,
# and a good request is served while the bad one is in progress and afterwards. Raw HTTP goes
# through python3 sockets (bounded in bytes and time); everything stays on the Unix socket.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
setup_env
command -v python3 >/dev/null 2>&1 || die "python3 is required"
init_token
provision_cred seal-ec ec-p256 dept-1 seal

# A seal credential and a purpose without SAD: a good request needs nothing but the socket.
write_policy <<EOF
callers:
  dept:
    uid: $(id -u)
    purposes: [sealing]
    classes: [seal]
purposes:
  sealing:
    sign_algorithms: [ecdsa-with-SHA256]
    hash_algorithms: [sha256]
    max_hashes: 64
    require_sad: false
EOF
# Short deadlines so that the slow cases finish in seconds; the size caps are the defaults
# except hashes, lowered to show that the configuration can lower the built-in 64.
READ_TIMEOUT=3
IDLE_TIMEOUT=5
cat >>"$WORK/iamsignd.yaml" <<EOF
limits:
  hashes: 8
  read_timeout: ${READ_TIMEOUT}s
  idle_timeout: ${IDLE_TIMEOUT}s
EOF
start_daemon
pid=$DAEMON_PID
SOCK="$WORK/iamsign.sock"

digest=$(printf 'form' | openssl dgst -sha256 -binary | base64 -w0)
OIDS='"hashAlgorithmOID":"2.16.840.1.101.3.4.2.1","signAlgo":"1.2.840.10045.4.3.2"'
good="{\"credentialID\":\"seal-ec\",\"hashes\":[\"$digest\"],$OIDS}"

# good_request MSG: 200 with a signature within 3 s, and the daemon alive.
good_request() {
	local status
	kill -0 "$pid" 2>/dev/null || die "daemon died ($1)"
	rm -f "$WORK/good.json"
	status=$(curl -s --max-time 3 -o "$WORK/good.json" -w '%{http_code}' --unix-socket "$SOCK" \
		-H 'Content-Type: application/json' --data-binary "$good" \
		http://localhost/csc/v2/signatures/signHash || true)
	if [ "$status" = 200 ] && jq -e '.signatures | length == 1' "$WORK/good.json" >/dev/null 2>&1; then
		pass "good request $1"
	else
		fail "good request $1: HTTP $status $(head -c 300 "$WORK/good.json" 2>/dev/null)"
	fi
}

# The raw client: sends a payload described by a small spec, reads the answer for at most
# WAIT seconds, and prints one line: "status NNN", "closed" (EOF, reset or broken pipe before
# any answer) or "timeout" (still open, nothing answered).
cat >"$WORK/raw.py" <<'PY'
import socket, sys, time

# SPEC: file:PATH, hex:HEX, or text with \r, \n and \xNN escapes.
def payload(spec):
    if spec.startswith("file:"):
        with open(spec[5:], "rb") as f:
            return f.read()
    if spec.startswith("hex:"):
        return bytes.fromhex(spec[4:])
    return spec.encode("latin-1").decode("unicode_escape").encode("latin-1")

def main():
    path, spec, wait = sys.argv[1], sys.argv[2], float(sys.argv[3])
    close_write = len(sys.argv) > 4 and sys.argv[4] == "close"
    data = payload(spec)
    deadline = time.monotonic() + wait
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(wait)
    s.connect(path)
    answer, result = b"", None
    try:
        # In pieces: a peer that stops reading shows up as a send error, not a hang.
        for off in range(0, len(data), 65536):
            if time.monotonic() > deadline:
                break
            s.sendall(data[off:off + 65536])
        if close_write:
            s.shutdown(socket.SHUT_WR)
    except OSError:
        result = "closed"
    try:
        while time.monotonic() < deadline and len(answer) < 1 << 20:
            s.settimeout(max(0.05, deadline - time.monotonic()))
            chunk = s.recv(65536)
            if not chunk:
                break
            answer += chunk
            if b"\r\n\r\n" in answer and answer.startswith(b"HTTP/1.1 "):
                head, _, rest = answer.partition(b"\r\n\r\n")
                clen = [l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")]
                if clen and len(rest) >= int(clen[0].split(b":")[1]):
                    break
        else:
            if not answer and result is None and time.monotonic() >= deadline:
                result = "timeout"
    except socket.timeout:
        if not answer and result is None:
            result = "timeout"
    except OSError:
        pass
    if answer.startswith(b"HTTP/1."):
        print("status", answer.split(b" ", 2)[1].decode(), answer.partition(b"\r\n\r\n")[2][:200].decode("latin-1"))
    else:
        print(result or "closed")

main()
PY

# raw NAME WANT SPEC [WAIT] [close]: send SPEC raw in the background, prove a good request is
# served meanwhile, then check the bad one's outcome: WANT is a status ("400"), "4xx",
# "closed", or a list of those separated by "|".
raw() {
	local name="$1" want="$2" spec="$3" wait="${4:-5}" how="${5:-}" got alt ok=""
	python3 "$WORK/raw.py" "$SOCK" "$spec" "$wait" "$how" >"$WORK/raw.out" 2>&1 &
	local rpid=$!
	good_request "while: $name"
	wait_exit "$rpid" $((${wait%.*} + 5)) || { kill "$rpid" 2>/dev/null; fail "$name: client hung"; }
	got=$(head -n1 "$WORK/raw.out")
	IFS='|' read -r -a alts <<<"$want"
	for alt in "${alts[@]}"; do
		case "$alt:$got" in
		4xx:"status 4"*) ok=1 ;;
		closed:closed) ok=1 ;;
		[0-9]*:"status $alt"*) ok=1 ;;
		esac
	done
	if [ -n "$ok" ]; then pass "$name: $got"; else fail "$name: got '$got', wanted $want"; fi
	good_request "after: $name"
}

# post NAME WANT REASON BODYFILE: a well-framed POST of BODYFILE to signHash.
post() {
	local name="$1" want="$2" reason="$3" file="$4"
	{
		printf 'POST /csc/v2/signatures/signHash HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n' \
			"$(stat -c %s "$file")"
		cat "$file"
	} >"$WORK/req.bin"
	raw "$name" "$want" "file:$WORK/req.bin"
	if [ -n "$reason" ]; then
		grep -q "\"reason\":\"$reason\"" "$WORK/raw.out" && pass "$name: reason $reason" ||
			fail "$name: reason not $reason: $(head -c 300 "$WORK/raw.out")"
	fi
}

body() { printf '%s' "$1" >"$WORK/body.json"; }

# Descriptors of both processes: the listener holds the connections, the core its channels.
fds() {
	local l
	l=$(listener_pid)
	find "/proc/$pid/fd" ${l:+"/proc/$l/fd"} -mindepth 1 -maxdepth 1 2>/dev/null | wc -l
}

good_request "before anything hostile"
base_fds=$(fds)

# --- JSON ------------------------------------------------------------------------------------
body 'this is not JSON'
post "non-JSON" 400 malformed_json "$WORK/body.json"
body '[1,2,3]'
post "JSON array, not an object" 400 invalid_request "$WORK/body.json"
body '"just a string"'
post "JSON string, not an object" 400 "" "$WORK/body.json"
body "{\"credentialID\":5,\"hashes\":[\"$digest\"],$OIDS}"
post "credentialID a number" 400 invalid_request "$WORK/body.json"
body "{\"credentialID\":\"seal-ec\",\"hashes\":\"$digest\",$OIDS}"
post "hashes a string" 400 invalid_request "$WORK/body.json"
body "{\"credentialID\":\"seal-ec\",\"hashes\":[5],$OIDS}"
post "hash a number" 400 invalid_digest "$WORK/body.json"
body "{\"credentialID\":\"seal-ec\",\"hashes\":[\"$digest\"],\"hashAlgorithmOID\":{},\"signAlgo\":[]}"
post "OIDs an object and an array" 400 invalid_request "$WORK/body.json"
body "{\"credentialID\":\"seal-ec\",\"credentialID\":\"seal-ec\",\"hashes\":[\"$digest\"],$OIDS}"
post "duplicate key" 400 malformed_json "$WORK/body.json"
body "{\"credentialID\":\"seal\\u0000ec\",\"hashes\":[\"$digest\"],$OIDS}"
post "\\u0000 in a string" 400 malformed_json "$WORK/body.json"
printf '{"credentialID":"seal\000ec","hashes":["%s"],%s}' "$digest" "$OIDS" >"$WORK/body.json"
post "raw NUL byte in a string" 400 malformed_json "$WORK/body.json"
printf '{"credentialID":"seal\377\376ec","hashes":["%s"],%s}' "$digest" "$OIDS" >"$WORK/body.json"
post "invalid UTF-8 in a string" 400 malformed_json "$WORK/body.json"
printf '{"credentialID":"seal\300\257ec","hashes":["%s"],%s}' "$digest" "$OIDS" >"$WORK/body.json"
post "overlong UTF-8 in a string" 400 malformed_json "$WORK/body.json"
body "{\"credentialID\":\"seal\\ud800ec\",\"hashes\":[\"$digest\"],$OIDS}"
post "lone surrogate escape" 400 malformed_json "$WORK/body.json"

# --- sizes and counts ------------------------------------------------------------------------
hashes_json() { python3 -c 'import sys; print(",".join(["\"" + sys.argv[2] + "\""] * int(sys.argv[1])))' "$1" "$digest"; }
body "{\"credentialID\":\"seal-ec\",\"hashes\":[$(hashes_json 5000)],$OIDS}"
post "5000 hashes (235 kB)" 413 body_too_large "$WORK/body.json"
body "{\"credentialID\":\"seal-ec\",\"hashes\":[$(hashes_json 1000)],$OIDS}"
post "1000 hashes within the body cap" 400 too_many_hashes "$WORK/body.json"
body "{\"credentialID\":\"seal-ec\",\"hashes\":[$(hashes_json 9)],$OIDS}"
post "9 hashes over limits.hashes 8" 400 too_many_hashes "$WORK/body.json"
grep -q 'limits.hashes' "$WORK/raw.out" && pass "limits.hashes named" || fail "limits.hashes not named: $(cat "$WORK/raw.out")"
python3 -c 'import sys; sys.stdout.write("{\"credentialID\":\"" + "a" * 1000000 + "\"}")' >"$WORK/body.json"
post "1 MB string" 413 body_too_large "$WORK/body.json"
python3 -c 'import sys; sys.stdout.write("[" * 100000 + "]" * 100000)' >"$WORK/body.json"
post "100 000 nested arrays" 413 body_too_large "$WORK/body.json"
python3 -c 'import sys; sys.stdout.write("{\"a\":" + "[" * 30000 + "]" * 30000 + "}")' >"$WORK/body.json"
post "30 000 nested arrays within the body cap" 400 json_too_deep "$WORK/body.json"
python3 -c 'import sys; sys.stdout.write("{\"a\":" + "[" * 32 + "]" * 32 + "}")' >"$WORK/body.json"
post "33 levels of nesting" 400 json_too_deep "$WORK/body.json"
python3 -c 'import sys; sys.stdout.write("{\"a\":\"" + "[" * 100 + "\"}")' >"$WORK/body.json"
post "brackets inside a string are not nesting" 400 invalid_request "$WORK/body.json"

# 20 MB announced: refused before the body is read. 20 MB chunked (no length announced): the
# connection is closed once the body passes the cap, long before 20 MB.
printf 'POST /csc/v2/signatures/signHash HTTP/1.1\r\nHost: x\r\nContent-Length: 20971520\r\n\r\n' >"$WORK/req.bin"
head -c 20971520 /dev/zero >>"$WORK/req.bin"
raw "20 MB body (Content-Length)" 413 "file:$WORK/req.bin" 10
python3 - "$WORK/req.bin" <<'PY'
import sys
with open(sys.argv[1], "wb") as f:
    f.write(b"POST /csc/v2/signatures/signHash HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n" % 65536 + b"a" * 65536 + b"\r\n"
    for _ in range(320):
        f.write(chunk)
    f.write(b"0\r\n\r\n")
PY
raw "20 MB body (chunked)" closed "file:$WORK/req.bin" 10

# --- headers and framing -----------------------------------------------------------------------
python3 -c 'import sys; sys.stdout.write("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + "a" * 200000 + "\r\n\r\n")' >"$WORK/req.bin"
raw "200 kB header" 431 "file:$WORK/req.bin"
python3 -c 'import sys; sys.stdout.write("GET /healthz HTTP/1.1\r\nHost: x\r\n" + "".join("X-H%d: %s\r\n" % (i, "b" * 100) for i in range(200)) + "\r\n")' >"$WORK/req.bin"
raw "200 headers, 22 kB" 431 "file:$WORK/req.bin"
# Between limits.header_size (16 KiB) and MHD's pool (header_size + 16 KiB): the daemon's own
# count refuses it, with a reason.
python3 -c 'import sys; sys.stdout.write("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + "a" * 17000 + "\r\n\r\n")' >"$WORK/req.bin"
raw "17 kB header (limits.header_size 16 KiB)" 431 "file:$WORK/req.bin"
grep -q header_too_large "$WORK/raw.out" && pass "header_too_large reason" || fail "17 kB header: $(cat "$WORK/raw.out")"

cl() { printf 'POST /csc/v2/info HTTP/1.1\\r\\nHost: x\\r\\n%s\\r\\n{}' "$1"; }
raw "negative Content-Length" 400 "$(cl 'Content-Length: -1\r\n')"
raw "non-numeric Content-Length" 400 "$(cl 'Content-Length: abc\r\n')"
raw "Content-Length with a sign" 400 "$(cl 'Content-Length: +2\r\n')"
raw "Content-Length past 2^64" "400|413" "$(cl 'Content-Length: 99999999999999999999999\r\n')"
raw "two different Content-Lengths" 400 "$(cl 'Content-Length: 2\r\nContent-Length: 3\r\n')"
raw "Content-Length and chunked together" 400 "$(cl 'Content-Length: 2\r\nTransfer-Encoding: chunked\r\n')"
raw "Content-Length larger than the body, then close" "closed|4xx" "$(cl 'Content-Length: 100\r\n')" 5 close
raw "Content-Length larger than the body, held open" closed "$(cl 'Content-Length: 100\r\n')" $((READ_TIMEOUT + 3))

ch() { printf 'POST /csc/v2/signatures/signHash HTTP/1.1\\r\\nHost: x\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\n%s' "$1"; }
raw "chunk size not hex" 400 "$(ch 'zz\r\n{}\r\n0\r\n\r\n')"
raw "negative chunk size" 400 "$(ch '-2\r\n{}\r\n0\r\n\r\n')"
raw "chunk size past 2^64" "413|400" "$(ch 'FFFFFFFFFFFFFFFFFFFFFF\r\n{}\r\n0\r\n\r\n')"
raw "chunk longer than its size" "4xx|closed" "$(ch '1\r\n{}\r\n0\r\n\r\n')"
raw "chunked body never terminated" closed "$(ch '2\r\n{}\r\n')" $((READ_TIMEOUT + 3))
raw "unknown transfer coding" "4xx|closed" "$(printf 'POST /csc/v2/info HTTP/1.1\\r\\nHost: x\\r\\nTransfer-Encoding: gzip\\r\\n\\r\\n{}')"

# --- not HTTP at all -------------------------------------------------------------------------
head -c 100000 /dev/urandom >"$WORK/req.bin"
raw "100 kB of random bytes" "4xx|closed" "file:$WORK/req.bin"
raw "a TLS ClientHello" "4xx|closed" "hex:160301020001000001fc0303$(openssl rand -hex 64)" $((IDLE_TIMEOUT + 3))
raw "NULs in the request line" "4xx|closed" 'hex:000102206865 6c6c6f20676172626167650d0a0d0a' $((READ_TIMEOUT + 3))
raw "unknown HTTP version" "505|4xx" 'GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n'
raw "empty lines only" closed "$(printf '%0.s\\r\\n' $(seq 1 500))" $((IDLE_TIMEOUT + 3))
raw "a lone request line, then nothing" closed 'GET /healthz HTTP/1.1\r\n' $((READ_TIMEOUT + 3))
grep -q "request did not arrive in time" "$WORK/daemon.log" && pass "deadline closures logged" ||
	fail "deadline closures not logged"

# --- slowloris: 300 connections trickling a request -------------------------------------------
# slowloris N SECS: open N connections (each sends a request line, then one header byte per
# 0.5 s) and watch them for at most SECS. Prints "ready" once all are open, then at the end:
# opened, refused (closed or 503 within 1 s of opening), held (open after 1 s), the longest a
# held one stayed open, and how many were still open when it gave up.
cat >"$WORK/slowloris.py" <<'PY'
import socket, struct, sys, time
path, n, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
t0 = time.monotonic()
conns = []
failed = 0
for i in range(n):
    s = socket.socket(socket.AF_UNIX)
    # Blocking, with a send timeout: on a Unix socket connect() then waits (at most 2 s) for
    # room in the listen backlog, where a non-blocking one would fail at once.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", 2, 0))
    try:
        s.connect(path)
        s.setblocking(False)
        s.send(b"POST /csc/v2/signatures/signHash HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    except OSError as e:
        failed += 1
        print("connection %d: %s" % (i, e), flush=True)
    conns.append({"s": s, "opened": time.monotonic(), "closed": None})
print("ready", flush=True)
def closed(c):
    c["closed"] = time.monotonic()
    c["s"].close()
while time.monotonic() - t0 < secs and any(c["closed"] is None for c in conns):
    for c in conns:
        if c["closed"] is not None:
            continue
        try:
            data = c["s"].recv(4096)
            if not data or data.startswith(b"HTTP/1.1 503"):
                closed(c)
                continue
        except BlockingIOError:
            pass
        except OSError:
            closed(c)
            continue
        try:
            c["s"].send(b"a")
        except BlockingIOError:
            pass
        except OSError:
            closed(c)
    time.sleep(0.5)
refused = sum(1 for c in conns if c["closed"] is not None and c["closed"] - c["opened"] < 1.0)
held = [c for c in conns if c["closed"] is None or c["closed"] - c["opened"] >= 1.0]
longest = max([(c["closed"] or time.monotonic()) - c["opened"] for c in held] or [0])
still = sum(1 for c in conns if c["closed"] is None)
for c in conns:
    if c["closed"] is None:
        c["s"].close()
print("opened %d refused %d held %d longest %.1f still_open %d connect_or_send_failed %d" % (n, refused, len(held), longest, still, failed))
PY

# slow_phase NAME PYTHON...: run the slowloris with the interpreter command PYTHON..., prove a good request meanwhile, check fds.
# Sets SLOW (the summary line).
slow_phase() {
	local name="$1" secs=$((READ_TIMEOUT + 8)) t0 t1 ms during
	shift
	"$@" - "$SOCK" 300 "$secs" <"$WORK/slowloris.py" >"$WORK/slow.out" 2>&1 &
	local spid=$!
	for _ in $(seq 1 100); do
		grep -q ready "$WORK/slow.out" 2>/dev/null && break
		sleep 0.1
	done
	grep -q ready "$WORK/slow.out" || fail "$name: the 300 connections did not open within 10 s"
	t0=$(date +%s%N)
	good_request "while $name holds its connections"
	t1=$(date +%s%N)
	ms=$(((t1 - t0) / 1000000))
	[ "$ms" -lt 2000 ] && pass "$name: good request answered in $ms ms" || fail "$name: good request took $ms ms"
	during=$(fds)
	wait_exit "$spid" $((secs + 10)) || { kill "$spid" 2>/dev/null; fail "$name: client hung"; }
	SLOW=$(grep '^opened' "$WORK/slow.out" || true)
	[ -n "$SLOW" ] || fail "$name: no summary: $(cat "$WORK/slow.out")"
	echo "$name: $SLOW; daemon fds before $base_fds, during $during"
	grep -E "refused|closed .* connection|connection limit|Closing inbound" "$WORK/daemon.log" | tail -n 5 || true
	# Every held connection was closed by the daemon's read deadline, not by the client.
	set -- $SLOW
	[ "${10:-1}" = 0 ] && pass "$name: every connection closed by the daemon" || fail "$name: $SLOW"
	awk -v l="${8:-99}" -v max=$((READ_TIMEOUT + 2)) 'BEGIN { exit !(l <= max) }' &&
		pass "$name: held connections closed within read_timeout (${8}s)" ||
		fail "$name: a connection was held ${8:-?}s (read_timeout ${READ_TIMEOUT}s)"
	local now=0
	for _ in $(seq 1 50); do
		now=$(fds)
		[ "$now" -le "$base_fds" ] && break
		sleep 0.1
	done
	[ "$now" -le "$base_fds" ] && pass "$name: daemon fds back to $now (before: $base_fds, during: $during)" ||
		fail "$name: daemon holds $now fds (before: $base_fds)"
	good_request "after $name"
}

# From another uid (root can switch): that uid gets limits.connections_per_uid (32) slots and the
# rest are closed at once, while this uid is served.
# (A python3 outside root's home: a pyenv shim under /root is out of that uid's reach.)
PY_OTHER=/usr/bin/python3
if [ "$(id -u)" = 0 ] && [ -x "$PY_OTHER" ] &&
	setpriv --reuid=65534 --regid=65534 --clear-groups "$PY_OTHER" -c '' 2>/dev/null; then
	chmod 0711 "$WORK"
	chmod 0666 "$SOCK"
	slow_phase "slowloris from uid 65534" setpriv --reuid=65534 --regid=65534 --clear-groups "$PY_OTHER"
	set -- $SLOW
	[ "${4:-0}" -ge 268 ] && [ "${6:-999}" -le 32 ] &&
		pass "per-uid cap: ${6} held, ${4} refused at once" ||
		fail "per-uid cap: $SLOW (wanted at most 32 held)"
	grep -q "over limits.connections_per_uid (32; last uid=65534)" "$WORK/daemon.log" &&
		pass "per-uid refusals logged" || fail "per-uid refusals not logged"
	chmod 0600 "$SOCK"
	chmod 0700 "$WORK"
else
	echo "not root: the per-uid cap is checked from this uid only"
fi

# 300 held from one uid with a per-uid cap that allows them: the daemon keeps serving, and the
# read deadline frees every slot.
stop_daemon
sed -i '/^limits:/a\  connections_per_uid: 400' "$WORK/iamsignd.yaml"
start_daemon
pid=$DAEMON_PID
good_request "after restart"
base_fds=$(fds)
slow_phase "slowloris, 300 held" python3
set -- $SLOW
[ "${6:-0}" -ge 290 ] && pass "300 connections held at once: ${6}" || fail "held: $SLOW"

# The same uid past its cap: the excess closed at once (the good request comes after).
stop_daemon
sed -i 's/^  connections_per_uid: 400$/  connections_per_uid: 32/' "$WORK/iamsignd.yaml"
start_daemon
pid=$DAEMON_PID
python3 - "$SOCK" 300 $((READ_TIMEOUT + 8)) <"$WORK/slowloris.py" >"$WORK/slow.out" 2>&1 || true
SLOW=$(grep '^opened' "$WORK/slow.out" || true)
set -- $SLOW
[ "${4:-0}" -ge 268 ] && [ "${6:-999}" -le 32 ] && [ "${10:-1}" = 0 ] &&
	pass "per-uid cap from this uid: ${6} held, ${4} refused" || fail "per-uid cap: $SLOW"
good_request "after the per-uid cap"

# The total cap: 40 connections in all, whoever opens them.
stop_daemon
sed -i 's/^  connections_per_uid: 32$/  connections_per_uid: 40\n  connections: 40/' "$WORK/iamsignd.yaml"
start_daemon
pid=$DAEMON_PID
python3 - "$SOCK" 300 $((READ_TIMEOUT + 8)) <"$WORK/slowloris.py" >"$WORK/slow.out" 2>&1 || true
SLOW=$(grep '^opened' "$WORK/slow.out" || true)
set -- $SLOW
[ "${4:-0}" -ge 260 ] && [ "${6:-999}" -le 40 ] && [ "${10:-1}" = 0 ] &&
	pass "total cap: ${6} held, ${4} refused" || fail "total cap: $SLOW"
wait_log "over limits.connections \(40\)" 3 && pass "total-cap refusals logged" ||
	fail "total-cap refusals not logged"
good_request "after the total cap"

kill -0 "$pid" 2>/dev/null && pass "daemon alive at the end" || fail "daemon died"
stop_daemon
