#!/usr/bin/env python3
"""Rewrite a one-stream G.711 RTP pcap as 20 ms packets: pcap_20ms.py IN.pcap OUT.pcap [--reverse]

Why: SIPp's g711a.pcap carries 30 ms packets (240 samples), but the echo test asserts a
20 ms stream (160 samples a packet, 20 ms apart) coming back. Feeding 20 ms packets keeps
"Siphon returns as many packets as SIPp sent" meaningful both for today's raw reflector
and for the paced media engine. Same audio bytes, re-cut; stdlib only so the test needs
nothing beyond python3.

--reverse plays the speech backwards (every sample, so no 20 ms frame of it is one of the
original's), after half a second of silence: a second party whose audio a check must tell
apart from the first's.
"""
import struct
import sys

FRAME = 160  # 20 ms of 8 kHz G.711


def read_pcap(path):
    """Yield (timestamp, frame) of a classic little- or big-endian pcap."""
    with open(path, "rb") as f:
        data = f.read()
    magic = data[:4]
    order = {b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">"}.get(magic)
    if order is None:
        sys.exit(f"{path}: not a classic microsecond pcap")
    linktype = struct.unpack(order + "I", data[20:24])[0]
    if linktype != 1:
        sys.exit(f"{path}: link type {linktype}, expected Ethernet")
    off = 24
    while off + 16 <= len(data):
        sec, usec, incl, _ = struct.unpack(order + "IIII", data[off : off + 16])
        yield sec + usec / 1e6, data[off + 16 : off + 16 + incl]
        off += 16 + incl


def main(src, dst, reverse=False):
    packets = list(read_pcap(src))
    if not packets:
        sys.exit(f"{src}: no packets")
    # Keep the first packet's Ethernet/IPv4/UDP addressing; SIPp replaces addresses and
    # ports when it plays the file anyway.
    first = packets[0][1]
    ihl = (first[14] & 0x0F) * 4
    l2l3 = first[: 14 + ihl]
    udp_ports = first[14 + ihl : 14 + ihl + 4]
    rtp = first[14 + ihl + 8 :]
    pt_byte = rtp[1] & 0x7F
    seq0, ts0, ssrc = struct.unpack("!HII", rtp[2:12])

    audio = bytearray()
    for _, frame in packets:
        ihl = (frame[14] & 0x0F) * 4
        r = frame[14 + ihl + 8 :]
        if len(r) < 12 or r[0] >> 6 != 2 or r[1] & 0x7F != pt_byte:
            continue
        cc = r[0] & 0x0F
        audio += r[12 + 4 * cc :]
    if reverse:
        # After half a second of A-law silence, as the original starts quiet: a check anchors on
        # the first loud frame, which must not be the first packet of a stream.
        audio = bytearray(b"\xd5" * 4000) + audio[::-1]

    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    t0_us = round(packets[0][0] * 1e6)
    for i in range(len(audio) // FRAME):
        marker = 0x80 if i == 0 else 0
        header = struct.pack("!BBHII", 0x80, marker | pt_byte, (seq0 + i) & 0xFFFF,
                             (ts0 + i * FRAME) & 0xFFFFFFFF, ssrc)
        payload = header + bytes(audio[i * FRAME : (i + 1) * FRAME])
        udp = udp_ports + struct.pack("!HH", 8 + len(payload), 0) + payload  # no checksum
        ip = bytearray(l2l3)
        struct.pack_into("!H", ip, 16, len(ip) - 14 + len(udp))  # IPv4 total length
        struct.pack_into("!H", ip, 24, 0)
        csum = sum(struct.unpack("!%dH" % ((len(ip) - 14) // 2), ip[14:]))
        while csum >> 16:
            csum = (csum & 0xFFFF) + (csum >> 16)
        struct.pack_into("!H", ip, 24, ~csum & 0xFFFF)
        frame = bytes(ip) + udp
        t_us = t0_us + i * 20000
        out.append(struct.pack("<IIII", t_us // 1000000, t_us % 1000000, len(frame), len(frame)))
        out.append(frame)
    with open(dst, "wb") as f:
        f.write(b"".join(out))


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--reverse"]
    if len(args) != 2:
        sys.exit(__doc__)
    main(args[0], args[1], reverse="--reverse" in sys.argv[1:])
