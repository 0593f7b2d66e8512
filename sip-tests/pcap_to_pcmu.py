#!/usr/bin/env python3
"""Turn a PCMA RTP pcap into PCMU: pcap_to_pcmu.py IN.pcap OUT.pcap

For the transcoding check of b2bua.sh: SIPp plays a pcap as it is, so a caller that offers
only PCMU needs PCMU packets. Each PCMA payload byte is decoded (ITU-T G.711 A-law) and
re-encoded as mu-law, and the payload type 8 becomes 0. Works on the output of
pcap_20ms.py (classic pcap, Ethernet/IPv4/UDP, no UDP checksum); stdlib only.
"""
import struct
import sys


def alaw_to_linear(a):
    a ^= 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    if seg == 0:
        t += 8
    elif seg == 1:
        t += 0x108
    else:
        t = (t + 0x108) << (seg - 1)
    return t if a & 0x80 else -t


def linear_to_ulaw(pcm):
    sign = 0x80 if pcm < 0 else 0
    pcm = min(abs(pcm), 32635) + 0x84
    exponent = 7
    while exponent > 0 and not pcm & (0x4000 >> (7 - exponent)):
        exponent -= 1
    mantissa = (pcm >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


TABLE = bytes(linear_to_ulaw(alaw_to_linear(a)) for a in range(256))


def main(src, dst):
    data = bytearray(open(src, "rb").read())
    if data[:4] != b"\xd4\xc3\xb2\xa1":
        sys.exit(f"{src}: not a little-endian classic pcap (make it with pcap_20ms.py)")
    off = 24
    while off + 16 <= len(data):
        incl = struct.unpack("<I", data[off + 8 : off + 12])[0]
        frame = off + 16
        ihl = (data[frame + 14] & 0x0F) * 4
        rtp = frame + 14 + ihl + 8
        if data[rtp + 1] & 0x7F == 8:
            data[rtp + 1] = data[rtp + 1] & 0x80  # PT 0, marker kept
            for i in range(rtp + 12, frame + incl):
                data[i] = TABLE[data[i]]
        off = frame + incl
    open(dst, "wb").write(bytes(data))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
