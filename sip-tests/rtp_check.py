#!/usr/bin/env python3
"""Check the echo (600) RTP in a loopback capture:
    rtp_check.py CAPTURE SIPP_MEDIA_PORT [PT] [--gaps-at-markers] [--silence-fill]

SIPp plays audio from its media port (-mp); whatever arrives at that port is Siphon's
reply. Siphon must send back a 20 ms stream of the offered payload type PT (default 8,
PCMA): as much audio as SIPp sent (within 1%), one SSRC, no sequence gaps, timestamps
+160 a packet, median spacing 20 +/- 2 ms. Prints the figures, exits 1 on any failure.

--gaps-at-markers is for forked numbers, where what the caller hears is what a service
sends back over a WebSocket: a slot with no service audio is silence, which RTP sends as
nothing, and the next packet starts a new talk spurt (marker bit, timestamp jumped by the
silent slots, sequence number continuous; RFC 3551 §4.1). Such jumps are counted and
allowed; a jump without the marker, or any sequence gap, still fails.

--silence-fill is for forked numbers too: since issue 20 a slot with no service audio
carries the codec's silence (a packet in every slot, for carriers' RTP timeouts and NAT
bindings), before the service's audio comes back and after it ends. The amount of audio
is then judged on the packets that are not pure silence, against SIPp's packets that are
not (G.711 silence survives the round trip through the service unchanged).
"""
import statistics
import subprocess
import sys

FRAME = 160  # samples in 20 ms at 8 kHz
FIELDS = ["frame.time_epoch", "udp.srcport", "udp.dstport", "rtp.ssrc", "rtp.seq",
          "rtp.timestamp", "rtp.p_type", "rtp.marker", "rtp.payload"]
# A 20 ms frame of digital silence: mu-law 0xFF, A-law 0xD5 (each decodes to 0).
SILENCE = {0: bytes([0xFF]) * FRAME, 8: bytes([0xD5]) * FRAME}


def load(capture, mport):
    # Decode by port rather than heuristically: both directions touch the SIPp port, and
    # nothing else captured (e.g. RTCP on port+1) is mistaken for RTP.
    cmd = ["tshark", "-r", capture, "-d", f"udp.port=={mport},rtp", "-Y", "rtp",
           "-T", "fields", "-E", "separator=,"]
    for f in FIELDS:
        cmd += ["-e", f]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"FAIL: tshark cannot read {capture}: {run.stderr.strip()}")
    out = run.stdout
    rows = []
    for line in out.splitlines():
        t, sport, dport, ssrc, seq, ts, pt, marker, payload = (line.split(",") + [""])[:9]
        rows.append(dict(t=float(t), sport=int(sport), dport=int(dport), ssrc=ssrc,
                         seq=int(seq), ts=int(ts), pt=int(pt),
                         marker=marker in ("1", "True"),
                         payload=bytes.fromhex(payload.replace(":", ""))))
    return rows


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


def main(capture, mport, want_pt, gaps_at_markers=False, silence_fill=False):
    rows = load(capture, mport)
    sent = [r for r in rows if r["sport"] == mport]
    back = [r for r in rows if r["dport"] == mport]
    failures = []

    if not sent:
        print(f"FAIL: SIPp sent no RTP from port {mport} (pcap play needs root or CAP_NET_RAW)")
        return 1
    # Compare audio, not packets, so a 30 ms input is measured in 20 ms frames too.
    steps = [(b["ts"] - a["ts"]) % 2**32 for a, b in zip(sent, sent[1:])]
    per_packet = statistics.median(steps) if steps else FRAME
    sent_frames = len(sent) * per_packet / FRAME
    print(f"SIPp sent {len(sent)} packets ({per_packet:g} samples each = "
          f"{sent_frames:g} frames of 20 ms) over {sent[-1]['t'] - sent[0]['t']:.3f} s")
    if not back:
        print(f"FAIL: nothing came back to port {mport}")
        return 1

    # Capture order on loopback is Siphon's send order, so judge the stream as captured.
    ssrcs = sorted({r["ssrc"] for r in back})
    pts = sorted({r["pt"] for r in back})
    gaps = dups = reordered = bad_ts = spurts = 0
    for a, b in zip(back, back[1:]):
        d = (b["seq"] - a["seq"]) % 2**16
        if d == 0:
            dups += 1
        elif d >= 2**15:
            reordered += 1
        else:
            gaps += d - 1
            step = (b["ts"] - a["ts"]) % 2**32
            if step != FRAME * d:
                if gaps_at_markers and b["marker"] and step % FRAME == 0 and step < 2**31:
                    spurts += 1
                else:
                    bad_ts += 1
    spacing = [(b["t"] - a["t"]) * 1000 for a, b in zip(back, back[1:])]
    median = statistics.median(spacing) if spacing else float("nan")
    p99 = pct(spacing, 99) if spacing else float("nan")
    print(f"Siphon sent {len(back)} packets over {back[-1]['t'] - back[0]['t']:.3f} s: "
          f"SSRC {' '.join(ssrcs)}, PT {' '.join(map(str, pts))}, "
          f"{sum(r['marker'] for r in back)} marker(s)")
    print(f"  sequence: {gaps} missing, {dups} duplicate, {reordered} out of order; "
          f"timestamp steps other than 160/packet: {bad_ts}"
          + (f"; new talk spurts after silent slots: {spurts}" if gaps_at_markers else ""))
    print(f"  spacing: median {median:.2f} ms, p99 {p99:.2f} ms, "
          f"min {min(spacing, default=0):.2f} ms, max {max(spacing, default=0):.2f} ms")

    if silence_fill:
        silent = SILENCE.get(want_pt)
        audible_back = sum(1 for r in back if r["payload"] != silent)
        audible_sent = sent_frames - sum(1 for r in sent if r["payload"] == silent)
        print(f"  audible (not pure silence): {audible_back} packets back for "
              f"{audible_sent:g} frames sent; {len(back) - audible_back} silence fill")
        if abs(audible_back - audible_sent) > 0.01 * audible_sent:
            failures.append(f"{audible_back} audible packets back for {audible_sent:g} "
                            "audible frames sent (>1% off)")
    elif abs(len(back) - sent_frames) > 0.01 * sent_frames:
        failures.append(f"{len(back)} packets back for {sent_frames:g} frames sent (>1% off)")
    if len(ssrcs) != 1:
        failures.append(f"{len(ssrcs)} SSRCs, expected one")
    if gaps or dups or reordered:
        failures.append("sequence numbers not continuous")
    if bad_ts:
        failures.append(f"{bad_ts} timestamp steps not 160 per packet")
    if not abs(median - 20) <= 2:
        failures.append(f"median spacing {median:.2f} ms, expected 20 +/- 2")
    if pts != [want_pt]:
        failures.append(f"payload types {pts}, expected [{want_pt}]")
    for f in failures:
        print(f"FAIL: {f}")
    if not failures:
        print("OK")
    return 1 if failures else 0


if __name__ == "__main__":
    flags = [a for a in sys.argv[1:] if a.startswith("--")]
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if len(args) not in (2, 3) or set(flags) - {"--gaps-at-markers", "--silence-fill"}:
        sys.exit(__doc__)
    sys.exit(main(args[0], int(args[1]), int(args[2]) if len(args) == 3 else 8,
                  "--gaps-at-markers" in flags, "--silence-fill" in flags))
