#!/usr/bin/env python3
"""cms-parts.py SIG.p7s OUTDIR: the first SignerInfo's signature value (OUTDIR/sigvalue.bin)
and each signature-time-stamp token in its unsigned attributes (OUTDIR/token-N.der), read
from the DER by hand, so that the test looks at the bytes without going through the code it
checks. Prints the number of tokens."""
import os
import sys

TST_OID = bytes.fromhex("060b2a864886f70d010910020e")  # 1.2.840.113549.1.9.16.2.14


def tlv(buf, off):
    tag, n, hdr = buf[off], buf[off + 1], 2
    if n & 0x80:
        k = n & 0x7F
        n, hdr = int.from_bytes(buf[off + 2:off + 2 + k], "big"), 2 + k
    return tag, off, off + hdr, off + hdr + n


def kids(buf, t):
    out, off = [], t[2]
    while off < t[3]:
        c = tlv(buf, off)
        out.append(c)
        off = c[3]
    return out


def main():
    buf = open(sys.argv[1], "rb").read()
    ci = tlv(buf, 0)
    sd = kids(buf, kids(buf, ci)[1])[0]  # ContentInfo { OID, [0] { SignedData } }
    sis = [k for k in kids(buf, sd) if k[0] == 0x31][-1]
    si = kids(buf, sis)[0]
    parts = kids(buf, si)
    sig = [p for p in parts if p[0] == 0x04][0]
    open(os.path.join(sys.argv[2], "sigvalue.bin"), "wb").write(buf[sig[2]:sig[3]])
    n = 0
    for p in parts:
        if p[0] != 0xA1:
            continue
        for attr in kids(buf, p):
            a = kids(buf, attr)
            if buf[a[0][1]:a[0][3]] != TST_OID:
                continue
            for tok in kids(buf, a[1]):
                open(os.path.join(sys.argv[2], "token-%d.der" % n), "wb").write(buf[tok[1]:tok[3]])
                n += 1
    print(n)


if __name__ == "__main__":
    main()
