#!/usr/bin/env python3
"""Checks the RTCP a bridged call sent each leg: ext_rtcp_check.py CAPTURE SR_PORT RR_PORT

Reads CAPTURE (tshark) for RTCP to UDP SR_PORT (the RTCP port of the leg Siphon sent RTP
to) and RR_PORT (the leg that sent RTP but got none). Passes when SR_PORT got at least one
sender report (PT 200) and RR_PORT at least one receiver report (PT 201) carrying a report
block, each with SDES (PT 202), and both got a BYE (PT 203) last. Prints what it found.
Used by extensions.sh; needs tshark.
"""
import subprocess
import sys


def packets(capture, port):
    out = subprocess.run(
        ["tshark", "-r", capture, "-d", f"udp.port=={port},rtcp", "-Y",
         f"udp.dstport=={port} && rtcp", "-T", "fields", "-e", "rtcp.pt", "-e", "rtcp.rc"],
        capture_output=True, text=True, check=False).stdout
    got = []
    for line in out.splitlines():
        pts, _, rcs = line.partition("\t")
        got.append(([int(p) for p in pts.split(",") if p],
                    [int(c) for c in rcs.split(",") if c]))
    return got


def main(capture, sr_port, rr_port):
    problems = []
    summary = []
    for port, kind in ((sr_port, 200), (rr_port, 201)):
        got = packets(capture, port)
        summary.append(f"port {port}: {[p for p, _ in got]}")
        reports = [(p, rc) for p, rc in got if p and p[0] == kind and 202 in p]
        if not reports:
            problems.append(f"no {'SR' if kind == 200 else 'RR'} with SDES to {port}")
        if kind == 201 and not any(rc and rc[0] >= 1 for _, rc in reports):
            problems.append(f"no report block in the RRs to {port}")
        if not got or 203 not in got[-1][0]:
            problems.append(f"no BYE last to {port}")
    print("; ".join(summary) + (f"; problems {problems}" if problems else ""))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
