#!/usr/bin/env python3
"""Checks Siphon's Prometheus metrics the way an operator reads them.

  metrics_check.py calls --metrics URL --calls N --packets P -- COMMAND...
      Scrapes /metrics, runs COMMAND (a SIPp run placing N forked calls that each send at
      least P RTP packets), scrapes every 0.5 s while it runs and until the active gauges
      are back to zero, then checks that the calls, the RTP and fork counters moved by what
      N calls carry, that the fork latency histogram filled, and that every active gauge
      returned to zero. Exits with COMMAND's failure or 1 on a failed check.

  metrics_check.py names --metrics URL FILE...
      Every siphon_* metric that FILE (a Grafana dashboard, Prometheus alert rules) queries
      must be one that Siphon exports.

Standard library only: the exposition format is parsed here (the text format is simple and
the point is to read it as Prometheus would, not through Siphon's own code).
"""
import argparse
import re
import subprocess
import sys
import time
import urllib.request

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def scrape(url):
    """{(name, frozenset(labels)): value}, and the Content-Type."""
    # Answered at once; the timeout only stops a hang (generous for a loaded machine).
    with urllib.request.urlopen(url, timeout=30) as r:
        ctype = r.headers.get("Content-Type", "")
        text = r.read().decode()
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        if not m:
            raise ValueError(f"not exposition format: {line!r}")
        labels = frozenset(LABEL.findall(m.group(2) or ""))
        samples[(m.group(1), labels)] = float(m.group(3))
    return samples, ctype


def total(samples, name, **want):
    """Sum of NAME over the series whose labels include WANT."""
    want = set(want.items())
    return sum(v for (n, labels), v in samples.items() if n == name and want <= labels)


def bucket_delta(before, after, name, le):
    """How much the histogram bucket NAME with upper bound LE (seconds, compared as a
    number: "1" and "1.0" are the same bound) moved; 0 if there is no such bucket."""
    def at(samples):
        return sum(v for (n, labels), v in samples.items() if n == name
                   and any(k == "le" and x != "+Inf" and float(x) == le for k, x in labels))
    return at(after) - at(before)


# Gauges that count what a live call holds; all must be back to 0 after the calls.
ACTIVE = ["siphon_calls_active", "siphon_media_tasks_active", "siphon_forks_active",
          "siphon_fork_connections_active", "siphon_rtp_ports_in_use"]


def watch(url, proc):
    """Scrapes every 0.5 s while PROC runs: the peak of each active gauge, and how many
    scrapes were taken."""
    peak = {g: 0.0 for g in ACTIVE}
    scrapes = 0
    while proc.poll() is None:
        time.sleep(0.5)
        now, _ = scrape(url)
        scrapes += 1
        for g in ACTIVE:
            peak[g] = max(peak[g], total(now, g))
    return peak, scrapes


def check_calls(args):
    failures = []
    before, ctype = scrape(args.metrics)
    if not ctype.startswith("text/plain") or "version=0.0.4" not in ctype:
        failures.append(f"Content-Type is {ctype!r}, not text/plain; version=0.0.4")
    # COMMAND's own output (SIPp's screens) goes to a file beside it, not into the report.
    with open("command.out", "w") as out:
        proc = subprocess.Popen(args.command, stdout=out, stderr=subprocess.STDOUT)
        peak, samples_during = watch(args.metrics, proc)
    rc = proc.returncode
    # Calls end with the BYE; the media task and the fork's stop follow within moments. The
    # deadline only bounds the wait (generous for a loaded machine).
    deadline = time.time() + 60
    while True:
        after, _ = scrape(args.metrics)
        if all(total(after, g) == 0 for g in ACTIVE) or time.time() > deadline:
            break
        time.sleep(0.2)

    def delta(name, **labels):
        return total(after, name, **labels) - total(before, name, **labels)

    n, p = args.calls, args.calls * args.packets
    print(f"    {samples_during} scrapes during the run; peak active: "
          + ", ".join(f"{g}={peak[g]:g}" for g in ACTIVE))
    figures = {
        "calls started": (delta("siphon_calls_started_total"), n),
        "calls answered": (delta("siphon_calls_answered_total"), n),
        "calls ended": (delta("siphon_calls_ended_total"), n),
        "forks started": (delta("siphon_forks_started_total"), n),
        "fork connects": (delta("siphon_fork_connects_total"), n),
        "RTP packets in": (delta("siphon_rtp_packets_total", direction="in"), p),
        "RTP packets out": (delta("siphon_rtp_packets_total", direction="out"), p),
        "RTP bytes in": (delta("siphon_rtp_bytes_total", direction="in"), p * 160),
        "fork frames sent": (delta("siphon_fork_frames_sent_total"), p),
        "fork bytes sent": (delta("siphon_fork_bytes_sent_total"), p * 320),
        # The service echoes every frame; the last few may still be in flight at the BYE.
        "fork frames received": (delta("siphon_fork_frames_received_total"), p * 9 // 10),
        "fork frames played": (delta("siphon_fork_frames_played_total"), p * 9 // 10),
        "fork latency observations": (delta("siphon_fork_latency_seconds_count"), p),
    }
    for what, (got, least) in figures.items():
        print(f"    {what}: +{got:g} (at least {least})")
        if got < least:
            failures.append(f"{what} moved by {got:g}, expected at least {least}")
    for what, want in (("calls started", n), ("calls ended", n)):
        if figures[what][0] != want:
            failures.append(f"{what} moved by {figures[what][0]:g}, expected exactly {want}")
    # The histogram's buckets must hold the observations: the +Inf bucket equals the count,
    # and a finite bucket holds most of them (latency is not all "above every bound"). The
    # bucket is the largest finite one (1 s): what the latency is depends on how busy the
    # machine is (the 50 ms figure is printed), the buckets filling does not.
    inf = delta("siphon_fork_latency_seconds_bucket", le="+Inf")
    if inf != figures["fork latency observations"][0]:
        failures.append(f"fork latency +Inf bucket moved by {inf:g}, count by "
                        f"{figures['fork latency observations'][0]:g}")
    le_50ms = bucket_delta(before, after, "siphon_fork_latency_seconds_bucket", 0.05)
    le_1s = bucket_delta(before, after, "siphon_fork_latency_seconds_bucket", 1.0)
    print(f"    fork latency: {le_50ms:g} of {inf:g} observations within 50 ms, "
          f"{le_1s:g} within 1 s")
    if inf and le_1s < inf * 0.9:
        failures.append(f"only {le_1s:g} of {inf:g} fork latency observations within 1 s")
    for g in ("siphon_calls_active", "siphon_fork_connections_active"):
        if peak[g] < n / 2:
            failures.append(f"{g} peaked at {peak[g]:g} during {n} overlapping calls")
    for g in ACTIVE:
        v = total(after, g)
        if v != 0:
            failures.append(f"{g} is {v:g} after the calls, not 0")
    if rc != 0:
        failures.append(f"the SIPp run failed (exit {rc})")
    for f in failures:
        print(f"    FAIL: {f}")
    return 1 if failures else 0


def check_names(args):
    samples, _ = scrape(args.metrics)
    exported = {n for (n, _) in samples}
    failures = 0
    for path in args.files:
        with open(path) as f:
            queried = set(re.findall(r'\bsiphon_[a-z0-9_]+', f.read()))
        missing = sorted(queried - exported)
        print(f"    {path}: {len(queried)} Siphon metrics queried, {len(missing)} not exported")
        for m in missing:
            print(f"    FAIL: {path} queries {m}, which Siphon does not export")
        failures += len(missing)
        if not queried:
            print(f"    FAIL: {path} queries no Siphon metric at all")
            failures += 1
    return 1 if failures else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("calls")
    c.add_argument("--metrics", required=True)
    c.add_argument("--calls", type=int, required=True)
    c.add_argument("--packets", type=int, required=True)
    c.add_argument("command", nargs=argparse.REMAINDER)
    n = sub.add_parser("names")
    n.add_argument("--metrics", required=True)
    n.add_argument("files", nargs="+")
    args = ap.parse_args()
    if args.cmd == "calls":
        if args.command[:1] == ["--"]:
            args.command = args.command[1:]
        return check_calls(args)
    return check_names(args)


if __name__ == "__main__":
    sys.exit(main())
