#!/usr/bin/env python3
"""Checks what Siphon sent a phone's media ports: ext_rtcp_mux_check.py CAPTURE PORT MUX [MIN]

Reads CAPTURE (tshark) for UDP to PORT (the caller's RTP port) and PORT + 1, and tells RTP
from RTCP by the second byte as RFC 5761 §4 does (192-223: RTCP). Passes when PORT got at
least MIN (default 150) PCMA (PT 8) packets with the sequence unbroken and no RTCP among them decoded as
audio, and Siphon's RTCP (an SR or RR, ending with BYE) went to PORT when MUX is 1, or to
PORT + 1 (and none to PORT) when MUX is 0. Prints what it found. Used by extensions.sh.
"""
import subprocess
import sys


def datagrams(capture, port):
    out = subprocess.run(
        ["tshark", "-r", capture, "-Y", f"udp.dstport=={port}", "-T", "fields",
         "-e", "udp.payload"],
        capture_output=True, text=True, check=True).stdout
    return [bytes.fromhex(line.replace(":", "").strip()) for line in out.splitlines() if line.strip()]


def rtcp_types(datagram):
    """The packet types of an RTCP compound datagram."""
    types, offset = [], 0
    while offset + 4 <= len(datagram):
        types.append(datagram[offset + 1])
        offset += 4 * (int.from_bytes(datagram[offset + 2:offset + 4], "big") + 1)
    return types


def main(capture, port, mux, min_audio):
    rtp_port = datagrams(capture, port)
    rtcp_port = datagrams(capture, port + 1)
    audio = [d for d in rtp_port if len(d) >= 12 and not 192 <= d[1] <= 223]
    rtcp_on_rtp = [rtcp_types(d) for d in rtp_port if len(d) >= 2 and 192 <= d[1] <= 223]
    rtcp_on_next = [rtcp_types(d) for d in rtcp_port]
    problems = []
    pcma = [d for d in audio if d[1] & 0x7F == 8]
    seqs = [int.from_bytes(d[2:4], "big") for d in audio]
    for a, b in zip(seqs, seqs[1:]):
        if b != (a + 1) & 0xFFFF:
            problems.append(f"sequence {a} -> {b}")
    if len(pcma) < min_audio:
        problems.append(f"only {len(pcma)} PCMA packets")
    got, other = (rtcp_on_rtp, rtcp_on_next) if mux else (rtcp_on_next, rtcp_on_rtp)
    where = port if mux else port + 1
    if not any(t and t[0] in (200, 201) for t in got):
        problems.append(f"no SR/RR to {where}")
    if not got or 203 not in got[-1]:
        problems.append(f"no BYE last to {where}")
    if other:
        problems.append(f"RTCP to {port + 1 if mux else port} too: {other}")
    print(f"port {port}: {len(pcma)} PCMA packets, RTCP {rtcp_on_rtp}; port {port + 1}: "
          f"RTCP {rtcp_on_next}; {len(problems)} problems {problems[:5]}")
    return 1 if problems else 0


if __name__ == "__main__":
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1",
                  int(sys.argv[4]) if len(sys.argv) == 5 else 150))
