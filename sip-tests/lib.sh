# shellcheck shell=bash
# What every interop script shares: run.sh sources it, and so does each script that also
# runs on its own (carrier.sh, extensions.sh, durability.sh, b2bua-alone.sh,
# cluster-alone.sh). Defines `rt`, wait_until, udp_bound, answers_options, capture_start and
# capture_stop; needs `$here` (the sip-tests folder).

# The media checks measure 20 ms real-time audio end to end, and Siphon allows it only so
# much lateness (its jitter buffer's delay, 40 ms or so; its pacer's 60 ms before it skips
# slots). As root, every Siphon and the SIPp instances placing the checked calls run with
# real-time scheduling (SCHED_RR 20, as scripts/bench.sh runs what it measures), so that
# other work on a busy machine cannot stall them past that: the checks then judge Siphon,
# not how the machine shares its two cores. The load generators and the rest stay
# ordinary processes. (Without root the media checks cannot run anyway.)
rt=()
if [ "$(id -u)" = 0 ] && command -v chrt >/dev/null 2>&1; then rt=(chrt -r 20); fi

# wait_until SECONDS COMMAND...: runs COMMAND every 0.2 s until it succeeds (returns 0) or
# SECONDS have passed (returns 1). What the checks wait for happens within moments; the
# deadline only stops a hang, so it is generous enough for a loaded machine. No check
# sleeps for a fixed time hoping that something has happened by then.
wait_until() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        [ "$SECONDS" -ge "$deadline" ] && return 1
        sleep 0.2
    done
}

# udp_bound PORT: a socket is bound to UDP PORT (a SIPp we started is listening: what
# reaches it from then on waits in its socket until SIPp reads it).
udp_bound() {
    awk -v port="$(printf ':%04X' "$1")" 'FNR > 1 && substr($2, length($2) - 4) == port { found = 1 }
        END { exit !found }' /proc/net/udp /proc/net/udp6
}

# answers_options SIPP_PORT TARGET [PID]: the Siphon at TARGET answers OPTIONS, or the
# process PID (that Siphon) has exited (waiting longer would not help).
# SIPp binds its media port even for this scenario, 6000 by default: without `-mp` it can
# take port 6000 while the Siphon it is waiting for (refer.sh's listens there) is still
# starting, and that Siphon then fails with "Address already in use". SIPP_PORT + 40000
# is outside every RTP range the tests give Siphon.
answers_options() {
    if [ -n "${3:-}" ] && ! kill -0 "$3" 2>/dev/null; then return 0; fi
    sipp -sf "$here/scenarios/options.xml" -m 1 -p "$1" -mp $(($1 + 40000)) -timeout 1s \
        -timeout_error "$2" >/dev/null 2>&1
}

# Media checks capture on loopback (tshark; the caller's trap stops it). capture_start FILE
# SIPP_MEDIA_PORT [FILTER] returns once tshark captures Siphon's RTP range
# ($rtp_capture_range, by default the default config's 20000-29999, RTCP +1) and SIPp's
# media port, or what FILTER (a capture filter) names. tshark prints "Capturing on" even
# when it then lacks the rights; the file only appears once dumpcap really captures.
capture_start() {
    tshark -i lo -f "${3:-udp portrange ${rtp_capture_range:-20000-29999} or udp port $2}" \
        -w "$1" >"$1.log" 2>&1 &
    tshark_pid=$!
    local deadline=$((SECONDS + 60))
    while [ "$SECONDS" -lt "$deadline" ]; do
        kill -0 "$tshark_pid" 2>/dev/null || break
        if [ -s "$1" ]; then return 0; fi
        sleep 0.1
    done
    echo "tshark cannot capture on lo as uid $(id -u): run as root, or give dumpcap" \
        "cap_net_raw,cap_net_admin and SIPp cap_net_raw. tshark said:"
    head -n 4 "$1.log" | sed 's/^/    /'
    capture_stop; return 1
}
# SIGINT lets tshark finish the file; waiting means the analysis sees every packet.
capture_stop() {
    if [ -n "${tshark_pid:-}" ]; then kill -INT "$tshark_pid" 2>/dev/null; wait "$tshark_pid" 2>/dev/null; fi
    tshark_pid=""
}
