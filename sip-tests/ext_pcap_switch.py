#!/usr/bin/env python3
"""A PCMA RTP pcap whose second half is PCMU: ext_pcap_switch.py IN.pcap OUT.pcap

For extensions.sh's multi-codec check (RFC 3264: an answerer may send any codec of its
answer, switching per packet): SIPp plays the result as a peer that answered "8 0" and
switches from PCMA to PCMU mid-call, same SSRC, sequence numbers and timestamps running on.
Input: pcap_20ms.py's output. Prints the number of packets. Stdlib only.
"""
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pcap_to_pcmu import TABLE  # noqa: E402  (A-law byte -> mu-law byte)


def frames(data):
    off = 24
    while off + 16 <= len(data):
        incl = struct.unpack("<I", data[off + 8 : off + 12])[0]
        frame = off + 16
        yield frame, incl
        off = frame + incl


def main(src, dst):
    data = bytearray(open(src, "rb").read())
    if data[:4] != b"\xd4\xc3\xb2\xa1":
        sys.exit(f"{src}: not a little-endian classic pcap (make it with pcap_20ms.py)")
    all_frames = list(frames(data))
    for frame, incl in all_frames[len(all_frames) // 2 :]:
        ihl = (data[frame + 14] & 0x0F) * 4
        rtp = frame + 14 + ihl + 8
        if data[rtp + 1] & 0x7F == 8:
            data[rtp + 1] = data[rtp + 1] & 0x80  # PT 0, marker kept
            for i in range(rtp + 12, frame + incl):
                data[i] = TABLE[data[i]]
    open(dst, "wb").write(bytes(data))
    print(len(all_frames))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
