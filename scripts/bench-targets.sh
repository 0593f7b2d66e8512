#!/usr/bin/env bash
# Every performance target of issue 19 measured in one sitting, on one machine, and one
# table of ratios with "met" or "not met" (docs/benchmarks.md, "All targets in one sitting").
#
#   BASE_BIN=/path/to/older/siphon scripts/bench-targets.sh
#
# Ratios only mean something when both sides ran in the same sitting: CPU figures move by
# ±20 % between hours on a shared VM. So this runs, back to back, with one build of the tree:
#   1. registrar: ROUNDS rounds of the SIPp REGISTER-with-digest scenario against Siphon,
#      then against Kamailio (scripts/bench.sh MODES=registrar);
#   2. echo, fork and floor at 200 and 400 calls, `perf stat` on the measured process;
#   3. capacity: forked calls at rising levels until one fails the headline's criteria (100 %
#      completion, 0 loss both ways, fork and pacing p99 < 20 ms), for this tree and for
#      BASE_BIN (the build the issue measured its baseline on, e.g. main at 86c422e built in a
#      second worktree);
#   4. bridge and rtpengine at 200 and 400 calls;
#   5. setup: 200 echo calls at 200 calls/s with digest.
# Then scripts/bench_targets.py reads the files and writes $OUT/targets.md.
#
# Environment (defaults in brackets): BASE_BIN (required for target 5; without it target 5
# is reported as not measured), OUT [target/bench/targets-DATE], HOLD [15], ROUNDS [5],
# CAP_NEW ["500 600 700 800"] and CAP_BASE ["200 300 400 500"]: capacity levels, each list
# stops at its first failing level. Anything scripts/bench.sh reads (RT, SIPHON_CPU, …)
# passes through.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

export HOLD="${HOLD:-15}"
ROUNDS="${ROUNDS:-5}"
CAP_NEW="${CAP_NEW:-500 600 700 800}"
CAP_BASE="${CAP_BASE:-200 300 400 500}"
OUT="${OUT:-$root/target/bench/targets-$(date +%Y%m%d-%H%M%S)}"
case "$OUT" in /*) ;; *) OUT="$PWD/$OUT" ;; esac
export OUT
mkdir -p "$OUT"
bench="$root/scripts/bench.sh"
load="$root/target/release/siphon-load"

cargo build --release -p siphon -p siphon-load
export NO_BUILD=1
new_bin="$root/target/release/siphon"
{
    echo "started $(date -u +%FT%TZ) on $(uname -srm), $(nproc) cores"
    grep -m1 "model name" /proc/cpuinfo || true
    echo "this tree: $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (with uncommitted changes)')"
    if [ -n "${BASE_BIN:-}" ]; then echo "base: $BASE_BIN"; fi
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$OUT/sitting.txt"

# A level passed when the report (siphon-load's own judgement, `LevelResult::passes`) finds a
# headline for the level's line alone.
level_passed() {
    local line="$1" one="$OUT/.one.jsonl"
    printf '%s\n' "$line" >"$one"
    ! "$load" report "$one" | grep -q "no level passed"
}

# Forked calls at rising levels until one fails; the last line of results.jsonl is the
# level just run.
ramp() {
    local bin="$1" suffix="$2" levels="$3" name="$4" l
    for l in $levels; do
        SIPHON_BIN="$bin" LABEL_SUFFIX="$suffix" MODES=fork LEVELS="$l" "$bench" >>"$OUT/bench.log" 2>&1
        if ! level_passed "$(tail -n 1 "$OUT/results.jsonl")"; then
            echo "capacity, $name: $l failed; ramp stops" | tee -a "$OUT/sitting.txt"
            break
        fi
        echo "capacity, $name: $l passed" | tee -a "$OUT/sitting.txt"
    done
}

echo "== 1. registrar, $ROUNDS rounds"
for i in $(seq "$ROUNDS"); do
    MODES=registrar REG_RATE="${REG_RATE:-500}" REG_CALLS="${REG_CALLS:-5000}" \
        LABEL_SUFFIX="-r$i" "$bench" >>"$OUT/bench.log" 2>&1
done
echo "== 2. echo, fork, floor at 200 and 400 (perf stat)"
PERF_STAT=1 PERF_EVENTS=task-clock,context-switches,raw_syscalls:sys_enter \
    MODES="echo fork floor" LEVELS="200 400" "$bench" >>"$OUT/bench.log" 2>&1
echo "== 3. capacity: this tree ($CAP_NEW), base ($CAP_BASE)"
ramp "$new_bin" "-cap" "$CAP_NEW" "this tree"
if [ -n "${BASE_BIN:-}" ]; then
    ramp "$BASE_BIN" "-base" "$CAP_BASE" base
fi
echo "== 4. bridge and rtpengine at 200 and 400"
MODES="bridge rtpengine" LEVELS="200 400" "$bench" >>"$OUT/bench.log" 2>&1
echo "== 5. setup: 200 calls at 200/s with digest"
AUTH=1 RATE=200 MODES=echo LEVELS=200 LABEL_SUFFIX=-setup "$bench" >>"$OUT/bench.log" 2>&1

echo "finished $(date -u +%FT%TZ); load average $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/sitting.txt"
"$load" report "$OUT/results.jsonl" --svg "$OUT" >"$OUT/table.md"
python3 "$root/scripts/bench_targets.py" "$OUT" | tee "$OUT/targets.md"
echo "results: $OUT"
