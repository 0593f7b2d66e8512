#!/usr/bin/env python3
"""After a blind REFER (sip-tests/refer.sh), the phone that stayed hears the transfer
target: refer_rtp_check.py CAPTURE TARGET_MPORT STAYER_MPORT

Both SIPp phones play A-law (PT 8, the same speech) from their media ports. Every 20 ms
payload the target sent (udp.srcport TARGET_MPORT) is looked for, in order, among the
payloads Siphon sent to the phone that stayed (udp.dstport STAYER_MPORT) after the
target's first packet: at least 95% of the target's frames must arrive, byte for byte (both
legs negotiated PCMA, so Siphon relays them unchanged), in order. Exits 1 otherwise.
"""
import subprocess
import sys


def packets(capture, port, direction):
    cmd = ["tshark", "-r", capture, "-d", f"udp.port=={port},rtp", "-Y",
           f"rtp && udp.{direction}port == {port} && rtp.p_type == 8",
           "-T", "fields", "-e", "frame.time_epoch", "-e", "rtp.payload"]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"FAIL: tshark cannot read {capture}: {run.stderr.strip()}")
    out = []
    for line in run.stdout.splitlines():
        parts = line.split("\t")
        if len(parts) == 2 and parts[1]:
            out.append((float(parts[0]), bytes.fromhex(parts[1].replace(":", ""))))
    return out


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    capture, target, stayer = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    sent = packets(capture, target, "src")
    if not sent:
        sys.exit(f"FAIL: the target (media port {target}) sent no PCMA RTP")
    start = sent[0][0]
    heard = [p for t, p in packets(capture, stayer, "dst") if t >= start]
    # In order: each frame of the target's is looked for after the last one found.
    found, at = 0, 0
    for _, payload in sent:
        try:
            at = heard.index(payload, at) + 1
            found += 1
        except ValueError:
            continue
    share = found / len(sent)
    print(f"the target sent {len(sent)} frames; the phone that stayed received "
          f"{len(heard)} packets after the target's first, {found} of the target's frames "
          f"in order ({share:.1%})")
    if share < 0.95:
        sys.exit("FAIL: the phone that stayed does not hear the transfer target")


if __name__ == "__main__":
    main()
