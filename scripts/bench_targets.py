#!/usr/bin/env python3
"""The target table of one scripts/bench-targets.sh sitting (issue 19).

Reads what scripts/bench.sh left in OUT: results.jsonl (one line per level, written by
`siphon-load run`), table.md (`siphon-load report`: its headline lines say which level of
each label passed, by `LevelResult::passes`, so the criteria live in one place),
registrar.txt (one table per round) and perf.txt (`perf stat` per call per second).
Prints a Markdown table: each target, what was measured, the ratio, met or not.
"""

import json
import re
import statistics
import sys
from pathlib import Path


def levels(out):
    rows = {}
    for line in (out / "results.jsonl").read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            rows[(r["label"], r["level"])] = r
    return rows


def headlines(out):
    """label -> highest passing level (None: no level passed)."""
    best = {}
    text = (out / "table.md").read_text()
    for m in re.finditer(r"^\*\*([^:*]+): (\d+) concurrent calls\*\*", text, re.M):
        best[m.group(1)] = int(m.group(2))
    for m in re.finditer(r"^\*\*([^:*]+): no level passed\.\*\*", text, re.M):
        best[m.group(1)] = None
    return best


def perf(out):
    """(mode, level, event) -> value per call per second."""
    figures = {}
    path = out / "perf.txt"
    if path.exists():
        for line in path.read_text().splitlines():
            m = re.match(r"(\S+) (\d+): (\S+) ([0-9.]+) per call per s", line)
            if m:
                figures[(m.group(1), int(m.group(2)), m.group(3))] = float(m.group(4))
    return figures


def registrar(out):
    """[(siphon µs, kamailio µs, ratio)] per round."""
    rounds = []
    path = out / "registrar.txt"
    if not path.exists():
        return rounds
    siphon = None
    for line in path.read_text().splitlines():
        m = re.match(r"\| (\S+) \| (\d+) \| ([0-9.]+) \| (\d+) \|", line)
        if not m:
            continue
        name, us = m.group(1), int(m.group(4))
        if name.startswith("siphon"):
            siphon = us
        elif name == "kamailio" and siphon is not None:
            rounds.append((siphon, us, siphon / us))
            siphon = None
    return rounds


def cpu(rows, label, level):
    r = rows.get((label, level))
    return r and r["procs"].get("siphon", {}).get("cpu_percent")


def kb_per_call(rows, label, level):
    r = rows.get((label, level))
    if not r:
        return None
    p = r["procs"].get("siphon", {})
    if p.get("rss_kb") is None or p.get("rss_base_kb") is None:
        return None
    return (p["rss_kb"] - p["rss_base_kb"]) / level


def fmt(x, spec=".2f", unit=""):
    return "–" if x is None else f"{x:{spec}}{unit}"


def ratio(a, b):
    return None if a is None or not b else a / b


def main():
    out = Path(sys.argv[1])
    rows, best, pf, reg = levels(out), headlines(out), perf(out), registrar(out)
    table = []

    # 1. Registrar.
    if reg:
        med = statistics.median(r[2] for r in reg)
        per = ", ".join(f"{s}/{k} µs = {q:.2f}×" for s, k, q in reg)
        table.append(("1", "registrar CPU per REGISTER-with-digest scenario ≤ Kamailio's",
                      f"{len(reg)} rounds, Siphon/Kamailio: {per}", f"median **{med:.2f}×**",
                      "yes" if med <= 1.0 else "no"))

    # 2 and 3. Fork ÷ echo and Siphon ÷ floor, by `task-clock` (holds up on a busy machine)
    # and by CPU % over the steady window.
    for n, name, num, den, bound in (
        ("2", "fork ≤ 1.5× echo", "fork", "echo", 1.5),
        ("3", "Siphon ÷ floor per forked call ≤ 2×", "fork", "floor", 2.0),
    ):
        parts, met = [], True
        for level in (200, 400):
            tc = ratio(pf.get((num, level, "task-clock-ms")), pf.get((den, level, "task-clock-ms")))
            pc = ratio(cpu(rows, num, level), cpu(rows, den, level))
            key = tc if tc is not None else pc
            met = met and key is not None and key <= bound
            parts.append(
                f"{level}: task-clock {fmt(pf.get((num, level, 'task-clock-ms')))} / "
                f"{fmt(pf.get((den, level, 'task-clock-ms')))} ms per call per s = **{fmt(tc)}×**, "
                f"CPU % {fmt(cpu(rows, num, level), '.1f')} / {fmt(cpu(rows, den, level), '.1f')} = {fmt(pc)}×")
        table.append((n, name, "; ".join(parts), "", "yes" if met else "no"))

    # 4. Memory.
    kb = kb_per_call(rows, "fork", 400)
    table.append(("4", "≤ 64 KiB RSS per forked call at 400",
                  f"{fmt(kb, '.1f')} KiB per forked call (echo {fmt(kb_per_call(rows, 'echo', 400), '.1f')})",
                  fmt(ratio(kb, 64.0)) + "× the bound", "yes" if kb is not None and kb <= 64.0 else "no"))

    # 5. Capacity: this tree's highest passing level (step 2's fork levels and the ramp)
    # against the base's, same sitting.
    new = max([x for x in (best.get("fork"), best.get("fork-cap")) if x], default=None)
    base = best.get("fork-base")
    if "fork-base" in best:
        cap = ratio(new, base)
        table.append(("5", "capacity ≥ 2.5× the issue's main, same sitting",
                      f"this tree {fmt(new, 'd')}, base {fmt(base, 'd') if base else 'no level passed'} forked calls",
                      f"**{fmt(cap)}×**", "yes" if cap is not None and cap >= 2.5 else "no"))
    else:
        table.append(("5", "capacity ≥ 2.5× the issue's main, same sitting",
                      f"this tree {fmt(new, 'd')}; no BASE_BIN given", "–", "not measured"))

    # 6. Bridged calls beside rtpengine.
    parts, met = [], True
    for level in (200, 400):
        q = ratio(cpu(rows, "bridge", level), cpu(rows, "rtpengine", level))
        met = met and q is not None and q <= 1.0
        parts.append(f"{level}: {fmt(cpu(rows, 'bridge', level), '.1f')} % / "
                     f"{fmt(cpu(rows, 'rtpengine', level), '.1f')} % = **{fmt(q)}×**")
    table.append(("6", "bridged call ≤ 1.0× rtpengine", "; ".join(parts), "", "yes" if met else "no"))

    # 7. Setup.
    r = rows.get(("echo-setup", 200))
    p99 = r and r["setup_us"].get("p99")
    p50 = r and r["setup_us"].get("p50")
    done = r and f"{r['calls']['completed']}/{r['calls']['attempted']} completed"
    table.append(("7", "INVITE → 200 p99 < 5 ms at 200 calls/s with digest",
                  f"p50 {fmt(p50 and p50 / 1000, '.1f')} ms, p99 **{fmt(p99 and p99 / 1000, '.1f')} ms**, {done}",
                  "", "yes" if p99 is not None and p99 < 5000 else "no"))

    print("| # | target | measured | ratio | met |")
    print("|---|---|---|---|---|")
    for row in table:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
