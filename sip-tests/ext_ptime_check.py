#!/usr/bin/env python3
"""Checks the RTP Siphon sent to a peer that asked for a=ptime: ext_ptime_check.py CAPTURE PORT PTIME

Reads CAPTURE (tshark) for RTP to UDP PORT and passes when: at least 150 packets came, every
audio packet but the last of a talk spurt carries exactly PTIME ms of G.711 (8 * PTIME
bytes), timestamps advance by exactly that within a talk spurt, and sequence numbers run on
one by one (nothing lost or repeated). Prints what it found. Needs tshark.
"""
import subprocess
import sys


def main(capture, port, ptime):
    out = subprocess.run(
        ["tshark", "-r", capture, "-d", f"udp.port=={port},rtp", "-Y", f"udp.dstport=={port} && rtp",
         "-T", "fields", "-e", "rtp.seq", "-e", "rtp.timestamp", "-e", "rtp.marker",
         "-e", "rtp.p_type", "-e", "udp.length"],
        capture_output=True, text=True, check=True).stdout
    packets = []
    for line in out.splitlines():
        seq, ts, marker, pt, udp_len = line.split("\t")
        packets.append((int(seq), int(ts), marker in ("1", "True"), int(pt), int(udp_len) - 8 - 12))
    want = 8 * ptime
    audio = [p for p in packets if p[3] in (0, 8)]
    sizes = {}
    for p in audio:
        sizes[p[4]] = sizes.get(p[4], 0) + 1
    problems = []
    for a, b in zip(packets, packets[1:]):
        if b[0] != (a[0] + 1) & 0xFFFF:
            problems.append(f"sequence {a[0]} -> {b[0]}")
    for a, b in zip(audio, audio[1:]):
        if not b[2] and b[1] - a[1] != a[4]:
            problems.append(f"timestamp {a[1]} -> {b[1]} after {a[4]} samples")
        if not b[2] and a[4] != want:
            problems.append(f"a {a[4]}-byte packet inside a talk spurt (seq {a[0]})")
    print(f"{len(packets)} RTP packets to port {port}; audio payload sizes {sizes}; "
          f"{len(problems)} problems {problems[:5]}")
    ok = len(audio) >= 150 and not problems and sizes.get(want, 0) >= 0.9 * len(audio)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
