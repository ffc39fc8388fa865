#!/usr/bin/env python3
"""A test RFC 3161 time-stamping service: an HTTP wrapper around `openssl ts -reply`.

usage: tsa-server.py PORTFILE DIR

Listens on 127.0.0.1 on a free port (written to PORTFILE), answers POSTs of
application/timestamp-query with `openssl ts -reply -config DIR/tsa.cnf`. The mode is read
from DIR/mode for each request:
  ok          a proper reply
  hang        say nothing for 30 s
  slow        a proper reply after 1.2 s
  http500     an HTTP 500
  untrusted   a reply signed by DIR/other's TSA (a CA the daemon does not trust)
  imprint     a reply to the query with one byte of its message imprint changed
  nonce       a reply to the query with one byte of its nonce changed
  garbage     200 application/timestamp-reply with bytes that are no reply
Each request's mode is appended to DIR/log.
"""
import http.server
import os
import subprocess
import sys
import tempfile
import time


def der_children(buf, off, end):
    """(tag, header start, content start, content end) of each TLV in buf[off:end]."""
    out = []
    while off < end:
        tag = buf[off]
        n = buf[off + 1]
        hdr = 2
        if n & 0x80:
            k = n & 0x7F
            n = int.from_bytes(buf[off + 2:off + 2 + k], "big")
            hdr = 2 + k
        out.append((tag, off, off + hdr, off + hdr + n))
        off += hdr + n
    return out


def tamper(query, what):
    buf = bytearray(query)
    top = der_children(buf, 0, len(buf))[0]
    kids = der_children(buf, top[2], top[3])
    if what == "imprint":
        imprint = der_children(buf, kids[1][2], kids[1][3])
        buf[imprint[1][3] - 1] ^= 0x01
    else:
        nonce = [k for k in kids[2:] if k[0] == 0x02][0]
        buf[nonce[3] - 1] ^= 0x01
    return bytes(buf)


class Handler(http.server.BaseHTTPRequestHandler):
    directory = "."

    def log_message(self, fmt, *args):
        pass

    def do_POST(self):
        d = self.directory
        try:
            with open(os.path.join(d, "mode")) as f:
                mode = f.read().strip() or "ok"
        except OSError:
            mode = "ok"
        with open(os.path.join(d, "log"), "a") as f:
            f.write(mode + "\n")
        n = int(self.headers.get("Content-Length", "0"))
        query = self.rfile.read(n)
        if mode == "hang":
            time.sleep(30)
            return
        if mode == "slow":
            time.sleep(1.2)
        if mode == "http500":
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if mode == "garbage":
            body = b"\x30\x03\x02\x01\x00"
        else:
            if mode in ("imprint", "nonce"):
                query = tamper(query, mode)
            conf = os.path.join(d, "other" if mode == "untrusted" else ".", "tsa.cnf")
            with tempfile.NamedTemporaryFile(dir=d) as q:
                q.write(query)
                q.flush()
                r = subprocess.run(["openssl", "ts", "-reply", "-config", conf,
                                    "-queryfile", q.name, "-out", "-"],
                                   capture_output=True)
            if r.returncode != 0:
                self.send_response(500)
                self.send_header("Content-Length", "0")
                self.end_headers()
                sys.stderr.write(r.stderr.decode(errors="replace"))
                return
            body = r.stdout
        self.send_response(200)
        self.send_header("Content-Type", "application/timestamp-reply")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main():
    portfile, Handler.directory = sys.argv[1], sys.argv[2]
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    with open(portfile + ".tmp", "w") as f:
        f.write(str(srv.server_address[1]))
    os.rename(portfile + ".tmp", portfile)
    srv.serve_forever()


if __name__ == "__main__":
    main()
