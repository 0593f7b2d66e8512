#!/usr/bin/env bash
# Siphon's load and latency benchmark (docs/benchmarks.md). One command:
#
#   scripts/bench.sh                         # full ramp: 100 250 500 1000 2000 4000, 30 s each
#   LEVELS="50 100" HOLD=10 scripts/bench.sh # a quick run (a couple of minutes)
#
# For every mode and level it starts a fresh Siphon pinned to SIPHON_CPU, the fork sink and
# the generator pinned to LOAD_CPU, places LEVEL calls at RATE calls/s, keeps them all up for
# HOLD seconds, hangs up, and appends one JSON line to $OUT/results.jsonl. At the end it prints
# the table (also in $OUT/table.md).
#
# Environment (defaults in brackets):
#   LEVELS        concurrent calls per level                  [100 250 500 1000 2000 4000]
#   HOLD          seconds with every call of a level up       [30]
#   RATE          calls per second while ramping up           [200]
#   MODES         any of: echo (600), fork (700 + sink), floor (`siphon-load floor` in
#                 Siphon's place: the least a program can do for a forked call, same
#                 generator, sink, core and ports), sipp (SIPp uac_pcap against 700),
#                 registrar (one SIPp REGISTER-with-digest scenario against Siphon and
#                 against Kamailio, CPU per scenario and the ratio), soak (scripts/soak.sh:
#                 RSS, fds, tasks, tables over rounds of calls), bridge (two generator
#                 legs per call through the `user` route 1002: the generator registers as
#                 1002 and answers, RTP both ways, loss and one-way latency per direction),
#                 rtpengine (the same legs through rtpengine, userspace forwarding, driven
#                 over its ng protocol by deploy/bench/rtpengine-b2bua.py)  [echo fork sipp]
#   AUTH          1: the called routes require digest auth (407, account 1001)   [0]
#   FORK_ENCODING l16 or pcmu (8 kHz; the latency marker survives both)          [l16]
#   SINK_ECHO     1: the sink sends every frame back (audio both ways)           [1]
#   SIPP_RATE     SIPp calls per second (each call lasts ~9 s)                   [20]
#   SIPP_CALLS    SIPp calls in total                                            [600]
#   SIPHON_CPU    core for Siphon [0];  LOAD_CPU  core for generator, sink, SIPp [1]
#   RT            1: run everything SCHED_RR (needs root; keeps other work on the
#                 machine from adding its scheduling delays to the figures)      [1]
#   SIP_PORT      Siphon's SIP port [5090];  SINK_PORT  [9190]
#   RTP_PORTS     Siphon's (and the floor's) RTP range MIN-MAX          [10000-19998]
#   LABEL_SUFFIX  appended to every mode's label (e.g. -main for a second binary's run,
#                 so both runs' results.jsonl combine in one report)     []
#   REG_RATE      registrar: scenarios per second [500];  REG_CALLS  scenarios [10000]
#   KAMAILIO      the kamailio binary for the registrar comparison  [kamailio]
#   RTPENGINE     the rtpengine binary [rtpengine];  RTPENGINE_NG  its ng port  [22223]
#   RTPENGINE_THREADS  its worker threads (--num-threads; the package's default is one
#                 per core, but it is pinned to one core like Siphon)             [1]
#   PERF_STAT     1: `perf stat` on the measured process for 8 s of each level's steady
#                 window ($OUT/perf-MODE-LEVEL.txt, per call per second in $OUT/perf.txt):
#                 PERF_EVENTS, counts that hold up on a busy machine where CPU % does not
#                 (instructions and cycles need hardware counters; VMs often have none)  [0]
#   PERF_EVENTS   [instructions,cycles,task-clock,context-switches,raw_syscalls:sys_enter]
#                 (registrar mode: PERF_STAT=1 counts task-clock, context switches and
#                 syscalls over each server's whole SIPp run, per scenario in the table;
#                 PERF_RECORD=1 records each server's run in $OUT/registrar-NAME/perf.data,
#                 call graphs as PERF_CALLGRAPH says [-g]; e.g. "--call-graph dwarf,16384")
#   PERF_RECORD   1: `perf record -e cpu-clock -g` on the measured process for 8 s of each
#                 level's steady window instead ($OUT/perf-MODE-LEVEL.data; read it with
#                 `perf report -i FILE --no-children`)                             [0]
#   OUT           results folder                       [target/bench/DATE]
#   NO_BUILD      1: skip the `cargo build` at the start (measure the binaries as built,
#                 e.g. copies of two versions while the tree is being edited)    [0]
#   SIPHON_BIN    the siphon binary to measure (e.g. another worktree's build, to compare
#                 two versions in one run)                [target/release/siphon]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

LEVELS="${LEVELS:-100 250 500 1000 2000 4000}"
HOLD="${HOLD:-30}"
RATE="${RATE:-200}"
MODES="${MODES:-echo fork sipp}"
AUTH="${AUTH:-0}"
FORK_ENCODING="${FORK_ENCODING:-l16}"
SINK_ECHO="${SINK_ECHO:-1}"
SIPP_RATE="${SIPP_RATE:-20}"
SIPP_CALLS="${SIPP_CALLS:-600}"
SIPHON_CPU="${SIPHON_CPU:-0}"
LOAD_CPU="${LOAD_CPU:-1}"
RT="${RT:-1}"
SIP_PORT="${SIP_PORT:-5090}"
SINK_PORT="${SINK_PORT:-9190}"
RTP_PORTS="${RTP_PORTS:-10000-19998}"
rtp_min="${RTP_PORTS%-*}"
rtp_max="${RTP_PORTS#*-}"
LABEL_SUFFIX="${LABEL_SUFFIX:-}"
REG_RATE="${REG_RATE:-500}"
REG_CALLS="${REG_CALLS:-10000}"
KAMAILIO="${KAMAILIO:-kamailio}"
RTPENGINE="${RTPENGINE:-rtpengine}"
RTPENGINE_NG="${RTPENGINE_NG:-22223}"
RTPENGINE_THREADS="${RTPENGINE_THREADS:-1}"
PERF_STAT="${PERF_STAT:-0}"
PERF_RECORD="${PERF_RECORD:-0}"
PERF_EVENTS="${PERF_EVENTS:-instructions,cycles,task-clock,context-switches,raw_syscalls:sys_enter}"
OUT="${OUT:-$root/target/bench/$(date +%Y%m%d-%H%M%S)}"
case "$OUT" in /*) ;; *) OUT="$PWD/$OUT" ;; esac
mkdir -p "$OUT"
results="$OUT/results.jsonl"

# Each call needs two descriptors in Siphon (RTP and RTCP) and the sink one per fork.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
echo "open files: $(ulimit -n)"

# NO_BUILD=1 keeps the binaries as they are: a long comparison run while the tree changes.
[ "${NO_BUILD:-0}" = 1 ] || cargo build --release -p siphon -p siphon-load
siphon="${SIPHON_BIN:-$root/target/release/siphon}"
load="$root/target/release/siphon-load"

prio=()
if [ "$RT" = 1 ] && [ "$(id -u)" = 0 ] && command -v chrt >/dev/null; then
    prio=(chrt -r 20)
fi
on_siphon_core=(taskset -c "$SIPHON_CPU")
on_load_core=(taskset -c "$LOAD_CPU")

# The configuration: the test numbers, an RTP range of its own (RTP_PORTS, by default
# 10000-19998: 5000 legs, outside the ephemeral ports and away from other Siphons and test
# suites on this machine), and a fork on 700 to the sink.
write_config() {
    local file="$1" forks="$2" auth="none"
    [ "$AUTH" = 1 ] && auth="digest"
    cat >"$file" <<EOF
[sip]
listen = "127.0.0.1:$SIP_PORT"
[http]
listen = "127.0.0.1:$((SIP_PORT + 1000))"
[rtp]
port_min = $rtp_min
port_max = $rtp_max
inactivity_timeout_s = 60
EOF
    # Siphon's overload limits (where it has them) must not be what a level measures.
    if "$siphon" default-config | grep -q '^\[limits\]'; then
        cat >>"$file" <<EOF
[limits]
max_calls = 100000
calls_per_second = 100000
max_transactions = 1000000
messages_per_source_per_second = 0
EOF
        if "$siphon" default-config | grep -q '^registers_per_second'; then
            echo "registers_per_second = 1000000" >>"$file"
        fi
    fi
    cat >>"$file" <<EOF
[[accounts]]
username = "1001"
password = "secret1001"
kind = "phone"
[[accounts]]
username = "1002"
password = "secret1002"
kind = "phone"
# The bridge mode's callee: a public route (the generator tells a call's two legs apart by
# the caller's From, which an authenticated caller cannot choose); REGISTER needs digest.
[[dialplan]]
number = "1002"
action = "user"
auth = "none"
[[dialplan]]
number = "600"
action = "echo"
auth = "$auth"
# 700 stays the last route: the [[dialplan.forks]] appended below belong to it.
[[dialplan]]
number = "700"
action = "fork"
auth = "$auth"
EOF
    if [ "$forks" = 1 ]; then
        cat >>"$file" <<EOF
[[dialplan.forks]]
url = "ws://127.0.0.1:$SINK_PORT/native"
mode = "native"
encoding = "$FORK_ENCODING"
sample_rate = 8000
tracks = "inbound"
EOF
    fi
}

cfg="$OUT/siphon.toml"
write_config "$cfg" 1
fork_wired=1
if ! "$siphon" check-config "$cfg" >"$OUT/check-config.log" 2>&1; then
    fork_wired=0
    write_config "$cfg" 0
    "$siphon" check-config "$cfg"
    echo "NOTE: this Siphon does not accept [[dialplan.forks]] yet: 700 answers as echo, no fork is measured"
fi

siphon_pid=""
sink_pid=""
b2bua_pid=""
stop_all() {
    if [ -n "$sink_pid" ]; then kill "$sink_pid" 2>/dev/null || true; wait "$sink_pid" 2>/dev/null || true; sink_pid=""; fi
    if [ -n "$b2bua_pid" ]; then kill "$b2bua_pid" 2>/dev/null || true; wait "$b2bua_pid" 2>/dev/null || true; b2bua_pid=""; fi
    if [ -n "$siphon_pid" ]; then kill -TERM "$siphon_pid" 2>/dev/null || true; wait "$siphon_pid" 2>/dev/null || true; siphon_pid=""; fi
}
trap stop_all EXIT

start_siphon() {
    if [ "${2:-}" = rtpengine ]; then
        # rtpengine in Siphon's place: same core, priority and RTP range, userspace only
        # (no kernel table), nothing of the package's config file; the SIP side is the
        # benchmark's small ng-driving B2BUA on the generator's core.
        "${prio[@]}" "${on_siphon_core[@]}" "$RTPENGINE" --config-file=none --table=-1 \
            --interface=127.0.0.1 --listen-ng="127.0.0.1:$RTPENGINE_NG" --foreground \
            --log-stderr --log-level=4 --num-threads="$RTPENGINE_THREADS" \
            --port-min="$rtp_min" --port-max="$rtp_max" --timeout=60 --delete-delay=0 \
            >"$OUT/rtpengine-$1.log" 2>&1 &
        siphon_pid=$!
        "${prio[@]}" "${on_load_core[@]}" python3 "$root/deploy/bench/rtpengine-b2bua.py" \
            --listen "127.0.0.1:$SIP_PORT" --ng "127.0.0.1:$RTPENGINE_NG" \
            >"$OUT/b2bua-$1.log" 2>&1 &
        b2bua_pid=$!
        "$load" ping --server "127.0.0.1:$SIP_PORT" --seconds 10
        return
    fi
    if [ "${2:-}" = floor ]; then
        # The floor in Siphon's place: same core, SIP port, RTP range and sink.
        "${prio[@]}" "${on_siphon_core[@]}" "$load" floor --listen "127.0.0.1:$SIP_PORT" \
            --sink "ws://127.0.0.1:$SINK_PORT/native" --encoding "$FORK_ENCODING" \
            --rtp-ports "$RTP_PORTS" >"$OUT/floor-$1.log" 2>&1 &
    else
        "${prio[@]}" "${on_siphon_core[@]}" "$siphon" --config "$cfg" --log warn >"$OUT/siphon-$1.log" 2>&1 &
    fi
    siphon_pid=$!
    "$load" ping --server "127.0.0.1:$SIP_PORT" --seconds 10
}

start_sink() {
    local echo_flag=()
    [ "$SINK_ECHO" = 1 ] && echo_flag=(--echo)
    "${prio[@]}" "${on_load_core[@]}" "$load" sink --listen "127.0.0.1:$SINK_PORT" "${echo_flag[@]}" \
        >"$OUT/sink-$1.log" 2>&1 &
    sink_pid=$!
    for _ in $(seq 50); do
        (exec 3<>"/dev/tcp/127.0.0.1/$SINK_PORT") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "sink did not start"; return 1
}

auth_args=()
[ "$AUTH" = 1 ] && auth_args=(--auth 1001:secret1001)

run_level() {
    local mode="$1" level="$2" number="$3" program="${4:-siphon}"
    local hold
    hold=$(awk -v h="$HOLD" -v n="$level" -v r="$RATE" 'BEGIN { printf "%.1f", h + n / r + 1 }')
    echo "== $mode: $level calls to $number, $RATE/s, each held ${hold}s"
    start_siphon "$mode-$level" "$program"
    local watch=(--watch "siphon=$siphon_pid") sink_args=() call_args=("${auth_args[@]}")
    if [ "$number" = 1002 ]; then
        # Bridged: the generator is the callee too (a public route: no caller auth).
        call_args=(--answer-as 1002:secret1002)
    fi
    if [ "$mode" = "fork$LABEL_SUFFIX" ] || [ "$program" = floor ]; then
        start_sink "$level"
        watch+=(--watch "sink=$sink_pid")
        sink_args=(--sink "ws://127.0.0.1:$SINK_PORT/control?reset")
    fi
    local perf_pid=""
    if [ "$PERF_STAT" = 1 ] && command -v perf >/dev/null; then
        local wait_s
        wait_s=$(awk -v n="$level" -v r="$RATE" 'BEGIN { printf "%.1f", n / r + 3 }')
        ( sleep "$wait_s"; perf stat -e "$PERF_EVENTS" -p "$siphon_pid" -- sleep 8 \
            2>"$OUT/perf-$mode-$level.txt" >/dev/null ) &
        perf_pid=$!
    elif [ "$PERF_RECORD" = 1 ] && command -v perf >/dev/null; then
        local wait_s
        wait_s=$(awk -v n="$level" -v r="$RATE" 'BEGIN { printf "%.1f", n / r + 3 }')
        ( sleep "$wait_s"; perf record -q -e cpu-clock -F 1999 -g -p "$siphon_pid" \
            -o "$OUT/perf-$mode-$level.data" -- sleep 8 >/dev/null 2>&1 ) &
        perf_pid=$!
    fi
    "${prio[@]}" "${on_load_core[@]}" "$load" run --server "127.0.0.1:$SIP_PORT" \
        --number "$number" --calls "$level" --rate "$RATE" --hold "$hold" --label "$mode" \
        --siphon-ports "$rtp_min-$((rtp_max + 1))" \
        "${call_args[@]}" "${watch[@]}" "${sink_args[@]}" --out "$results" \
        >"$OUT/run-$mode-$level.json" 2>"$OUT/run-$mode-$level.log" \
        || { echo "generator failed:"; tail -5 "$OUT/run-$mode-$level.log"; }
    grep "^| $mode" "$OUT/run-$mode-$level.log" || true
    if [ -n "$perf_pid" ] && [ "$PERF_RECORD" = 1 ]; then
        wait "$perf_pid" 2>/dev/null || true
    elif [ -n "$perf_pid" ]; then
        wait "$perf_pid" 2>/dev/null || true
        awk -v n="$level" -v m="$mode $level" '$1 ~ /^[0-9.,]+$/ && $2 != "seconds" {
                gsub(",", "", $1); printf "%s: %s %.2f per call per s (8 s)\n", m, ($2 == "msec" ? "task-clock-ms" : $2), $1 / 8 / n }' \
            "$OUT/perf-$mode-$level.txt" | tee -a "$OUT/perf.txt"
    fi
    stop_all
    sleep 1
}

run_sipp() {
    if ! command -v sipp >/dev/null; then
        echo "SIPp (Debian: sip-tester) is not installed; skipping the SIPp run"; return 0
    fi
    local dir="$OUT/sipp"
    mkdir -p "$dir"
    ln -sfn /usr/share/sip-tester "$dir/pcap"
    echo "== sipp: uac_pcap to 700, $SIPP_RATE calls/s, $SIPP_CALLS calls (~9 s each)"
    start_siphon sipp
    # 700 forks to the sink, as in the fork levels.
    [ "$fork_wired" = 1 ] && start_sink sipp
    # CPU and RSS over the plateau: from when the first calls end (ramp done) for 8 s.
    ( sleep 11; "$load" watch --pid "$siphon_pid" --seconds 8 >"$dir/siphon-cpu.json" ) &
    local watcher=$!
    local sipp_auth=()
    [ "$AUTH" = 1 ] && sipp_auth=(-au 1001 -ap secret1001)
    ( cd "$dir" && "${prio[@]}" "${on_load_core[@]}" sipp -sn uac_pcap -s 700 "127.0.0.1:$SIP_PORT" \
        -p $((SIP_PORT + 2)) -mp 40000 -r "$SIPP_RATE" -m "$SIPP_CALLS" -l $((SIPP_RATE * 12)) \
        "${sipp_auth[@]}" -trace_stat -trace_screen -trace_err -nostdin -timeout 600s >"$dir/stdout" 2>&1 ) \
        && rc=0 || rc=$?
    wait "$watcher" 2>/dev/null || true
    stop_all
    local screen
    screen=$(ls "$dir"/*_screen.log 2>/dev/null | head -1)
    {
        echo "SIPp uac_pcap → 700: rate $SIPP_RATE/s, $SIPP_CALLS calls, ~$((SIPP_RATE * 9)) concurrent, exit $rc"
        if [ -n "$screen" ]; then
            grep -E "^ *(Total Calls created|Successful call|Failed call) " "$screen" \
                | tail -n 3 | sed 's/  */ /g' || true
        fi
        local csv
        csv=$(ls "$dir"/*.csv 2>/dev/null | head -1)
        if [ -n "$csv" ]; then
            awk -F';' 'NR == 1 { for (i = 1; i <= NF; i++) h[i] = $i }
                END { for (i = 1; i <= NF; i++)
                        if (h[i] ~ /^(SuccessfulCall|FailedCall|Retransmissions|ResponseTime1|CallLength)\(C\)$/)
                            printf "%s=%s ", h[i], $i
                      print "" }' "$csv"
        fi
        echo "Siphon during the plateau (8 s): $(cat "$dir/siphon-cpu.json" 2>/dev/null || true)"
    } | tee "$OUT/sipp.txt"
}

# CPU ticks (user + system, all threads) of a process and its children.
tree_ticks() {
    local total=0 p t
    for p in "$1" $(pgrep -P "$1" 2>/dev/null || true); do
        t=$(awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null || echo 0)
        total=$((total + t))
    done
    echo "$total"
}

# One SIPp run of the REGISTER/401/REGISTER/200 + unregister scenario against the server
# already listening on SIP_PORT (pid $2); prints "NAME scenarios ok cpu_s". -mp: SIPp binds
# media ports even for this scenario, by default 6000 and up, which sip-tests use for SIP.
register_run() {
    local name="$1" pid="$2" dir="$OUT/registrar-$1"
    mkdir -p "$dir"
    local before after perf_pid=""
    before=$(tree_ticks "$pid")
    if [ "$PERF_STAT" = 1 ] && command -v perf >/dev/null; then
        # task-clock (ns resolution) holds up where 10 ms ticks on a busy machine do not.
        local pids="$pid"
        for p in $(pgrep -P "$pid" 2>/dev/null || true); do pids="$pids,$p"; done
        perf stat -x, -e task-clock,context-switches,raw_syscalls:sys_enter -p "$pids" \
            -o "$dir/perf-stat.csv" 2>/dev/null &
        perf_pid=$!
        sleep 0.5
    elif [ "$PERF_RECORD" = 1 ] && command -v perf >/dev/null; then
        perf record -q -e cpu-clock -F 1999 ${PERF_CALLGRAPH:--g} -p "$pid" -o "$dir/perf.data" 2>/dev/null &
        perf_pid=$!
        sleep 0.5
    fi
    ( cd "$dir" && "${prio[@]}" "${on_load_core[@]}" sipp -sf "$root/deploy/bench/register-unregister.xml" \
        -s 1001 -au 1001 -ap secret1001 "127.0.0.1:$SIP_PORT" -p $((SIP_PORT + 2)) -mp 40000 \
        -r "$REG_RATE" -m "$REG_CALLS" -l $((REG_RATE * 4)) -trace_screen -trace_err -nostdin \
        -timeout 600s >"$dir/stdout" 2>&1 ) && rc=0 || rc=$?
    after=$(tree_ticks "$pid")
    if [ -n "$perf_pid" ]; then
        kill -INT "$perf_pid" 2>/dev/null || true
        wait "$perf_pid" 2>/dev/null || true
    fi
    local ok
    ok=$(grep -E "^ *Successful call " "$dir"/*_screen.log 2>/dev/null | tail -1 | awk '{ print $(NF) }')
    ok="${ok:-0}"
    awk -v n="$name" -v ok="$ok" -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" -v rc="$rc" \
        'BEGIN { printf "%s %d %.2f %s\n", n, ok, t / hz, rc }'
    if [ -f "$dir/perf-stat.csv" ] && [ "$ok" -gt 0 ]; then
        # One line per server in $OUT/registrar-perf.txt: per scenario, task-clock µs,
        # context switches and syscalls.
        awk -F, -v n="$name" -v ok="$ok" '
            $3 == "task-clock" { tc = $1 } $3 == "context-switches" { cs = $1 }
            $3 == "raw_syscalls:sys_enter" { sc = $1 }
            END { printf "%s task-clock %.1f us/scenario, %.2f context switches/scenario, %.2f syscalls/scenario\n", n, tc * 1000 / ok, cs / ok, sc / ok }' \
            "$dir/perf-stat.csv" >>"$OUT/registrar-perf.txt"
    fi
}

run_registrar() {
    if ! command -v sipp >/dev/null; then echo "registrar: SIPp is not installed"; return 0; fi
    echo "== registrar: SIPp REGISTER+digest, then unregister; $REG_CALLS scenarios at $REG_RATE/s"
    start_siphon "registrar$LABEL_SUFFIX"
    local s k
    s=$(register_run "siphon$LABEL_SUFFIX" "$siphon_pid")
    stop_all
    sleep 1
    k=""
    if command -v "$KAMAILIO" >/dev/null; then
        "${prio[@]}" "${on_siphon_core[@]}" "$KAMAILIO" -f "$root/deploy/bench/kamailio-registrar.cfg" \
            -DD -E -n 2 -m 64 -M 8 -l "udp:127.0.0.1:$SIP_PORT" -P "$OUT/kamailio.pid" \
            >"$OUT/kamailio.log" 2>&1 &
        local kpid=$!
        "$load" ping --server "127.0.0.1:$SIP_PORT" --seconds 10 >/dev/null 2>&1 || sleep 2
        k=$(register_run kamailio "$kpid")
        kill -TERM "$kpid" 2>/dev/null || true
        wait "$kpid" 2>/dev/null || true
    fi
    {
        echo "Registrar: $REG_CALLS SIPp scenarios (REGISTER, 401, REGISTER+digest, 200; the same with Expires: 0) at $REG_RATE/s, server on core $SIPHON_CPU"
        echo "| server | scenarios ok | CPU s | CPU µs / scenario |"
        echo "|---|---:|---:|---:|"
        for row in "$s" "$k"; do
            [ -n "$row" ] || continue
            echo "$row" | awk '{ printf "| %s | %d | %.2f | %s |\n", $1, $2, $3, ($2 > 0 ? sprintf("%.0f", $3 * 1e6 / $2) : "–") }'
        done
        if [ -n "$k" ]; then
            echo "$s $k" | awk '{ if ($2 > 0 && $6 > 0 && $7 > 0) printf "Siphon / Kamailio CPU per scenario = %.2f×\n", ($3 / $2) / ($7 / $6) }'
        fi
        if [ -f "$OUT/registrar-perf.txt" ]; then
            grep -E "^(siphon$LABEL_SUFFIX|kamailio) " "$OUT/registrar-perf.txt" | tail -2
        fi
    } | tee -a "$OUT/registrar.txt"
}

for mode in $MODES; do
    case "$mode" in
        echo) for l in $LEVELS; do run_level "echo$LABEL_SUFFIX" "$l" 600; done ;;
        fork)
            # Until Siphon accepts [[dialplan.forks]], 700 answers as echo: say so in the label.
            label=fork; [ "$fork_wired" = 1 ] || label=700-unforked
            for l in $LEVELS; do run_level "$label$LABEL_SUFFIX" "$l" 700; done ;;
        floor) for l in $LEVELS; do run_level "floor$LABEL_SUFFIX" "$l" 700 floor; done ;;
        bridge) for l in $LEVELS; do run_level "bridge$LABEL_SUFFIX" "$l" 1002; done ;;
        rtpengine)
            if ! command -v "$RTPENGINE" >/dev/null; then
                echo "rtpengine (Debian: rtpengine-daemon) is not installed; skipping"; continue
            fi
            python3 "$root/deploy/bench/rtpengine-b2bua.py" --self-test
            for l in $LEVELS; do run_level "rtpengine$LABEL_SUFFIX" "$l" 1002 rtpengine; done ;;
        registrar) run_registrar ;;
        sipp) run_sipp ;;
        # Memory over many calls of seven kinds (scripts/soak.sh: its own Siphon and ports;
        # ROUNDS, SCALE, WARMUP, BOUND_KB pass through).
        soak) OUT="$OUT/soak" "$root/scripts/soak.sh" "$siphon" | tee "$OUT/soak.txt" ;;
        *) echo "unknown mode $mode"; exit 2 ;;
    esac
done

echo
if [ -s "$results" ]; then
    "$load" report "$results" --svg "$OUT" | tee "$OUT/table.md"
fi
[ -f "$OUT/registrar.txt" ] && cat "$OUT/registrar.txt" >>"$OUT/table.md"
[ -f "$OUT/sipp.txt" ] && cat "$OUT/sipp.txt" >>"$OUT/table.md"
echo "results: $OUT"
