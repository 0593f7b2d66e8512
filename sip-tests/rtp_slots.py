#!/usr/bin/env python3
"""Does every 20 ms slot of a call carry an RTP packet?

    rtp_slots.py CAPTURE MEDIA_PORT SECONDS PT

Reads the packets Siphon sent to MEDIA_PORT (the caller's, SIPp's -mp) from a tshark
capture and checks what an RTP-timeout peer (a carrier's SBC ending calls that send no RTP
for 30-60 s) and a NAT's RTP binding need: packets from the answer to the hang-up, a packet
in at least 95 % of the 20 ms slots (before issue 20 a silent service got the caller none),
no gap longer than 500 ms, continuous sequence numbers, timestamps +160 each, payload type
PT. Timestamps may jump by whole slots on a packet with the marker bit: that is Siphon's
pacer skipping slots after a stall of the process (over 60 ms; see media/src/pacer.rs),
which a loaded machine causes now and then and a receiver conceals. SECONDS is how long the
caller stayed on the line (SIPp's -d): the stream must span at least SECONDS - 1 of it.
Prints the figures and the packets per second; exits 1 on any failure.
"""
import statistics
import subprocess
import sys


def load(capture, mport):
    cmd = ["tshark", "-r", capture, "-d", f"udp.port=={mport},rtp", "-Y",
           f"rtp && udp.dstport == {mport}", "-T", "fields", "-E", "separator=,",
           "-e", "frame.time_epoch", "-e", "rtp.seq", "-e", "rtp.timestamp", "-e", "rtp.p_type",
           "-e", "rtp.marker"]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"FAIL: tshark cannot read {capture}: {run.stderr.strip()}")
    rows = []
    for line in run.stdout.splitlines():
        t, seq, ts, pt, marker = line.split(",")
        rows.append((float(t), int(seq), int(ts), int(pt), marker in ("1", "True")))
    return rows


def main(capture, mport, seconds, want_pt):
    rows = load(capture, mport)
    if len(rows) < 2:
        print(f"FAIL: {len(rows)} RTP packet(s) reached port {mport}")
        return 1
    span = rows[-1][0] - rows[0][0]
    gaps = [(b[0] - a[0]) * 1000 for a, b in zip(rows, rows[1:])]
    seq_gaps = sum(1 for a, b in zip(rows, rows[1:]) if (b[1] - a[1]) % 2**16 != 1)
    steps = [((b[2] - a[2]) % 2**32, b[4]) for a, b in zip(rows, rows[1:])]
    skips = sum(1 for step, marker in steps if step != 160 and marker and step % 160 == 0
                and step < 2**31)
    ts_bad = sum(1 for step, _ in steps if step != 160) - skips
    pts = sorted({r[3] for r in rows})
    per_second = {}
    for r in rows:
        per_second[int(r[0] - rows[0][0])] = per_second.get(int(r[0] - rows[0][0]), 0) + 1
    expected = span / 0.020 + 1
    print(f"{len(rows)} packets over {span:.3f} s (a packet per slot would be {expected:.0f}); "
          f"spacing median {statistics.median(gaps):.2f} ms, max {max(gaps):.2f} ms; "
          f"{seq_gaps} sequence gaps, {ts_bad} timestamp steps other than 160 "
          f"(and {skips} pacer skips after a stall); PT {pts}")
    print("  packets per second: " + " ".join(str(per_second.get(s, 0))
                                              for s in range(int(span) + 1)))
    failures = []
    if span < seconds - 1:
        failures.append(f"the stream lasted {span:.1f} s of a {seconds} s call")
    if len(rows) < 0.95 * expected:
        failures.append(f"{len(rows)} packets, expected about {expected:.0f}")
    if max(gaps) > 500:
        failures.append(f"a {max(gaps):.0f} ms gap without RTP")
    if seq_gaps or ts_bad:
        failures.append("sequence numbers or timestamps not continuous")
    if pts != [want_pt]:
        failures.append(f"payload types {pts}, expected [{want_pt}]")
    for f in failures:
        print(f"FAIL: {f}")
    if not failures:
        print("OK")
    return 1 if failures else 0


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])))
