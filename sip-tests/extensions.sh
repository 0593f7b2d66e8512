#!/usr/bin/env bash
# shellcheck shell=bash
# SIP extensions carriers and PBXs require (issue 15), against real SIPp peers. Runs alone
# (`bash sip-tests/extensions.sh [path/to/siphon]`, exits non-zero on failure) or sourced by
# run.sh near its end (it then adds to run.sh's `failures`). Either way it starts a Siphon
# of its own (sip-tests/extensions.toml, or $EXT_CONFIG: SIP 5650, HTTP 8600, analytics 8601, RTP
# 32000-32998) and SIPp only on SIP ports 5600-5649 and media ports 16600-16699, so it never
# meets another check's ports. SIPp takes four ports from its -mp (audio and video, RTP and
# RTCP), so each SIPp here has its own ten: 16600, 16610, ... 16680 (the RTCP checks at the
# end reuse 16620 and 16630); the listeners of ext_rtp_sink.py take 16690-16699. Every
# name here starts with ext_ so that sourcing it changes nothing of run.sh's.

ext_here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ext_alone=0
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    ext_alone=1
    set -uo pipefail
    siphon="${1:-$(cd "$ext_here/.." && pwd)/target/release/siphon}"
    work="$(mktemp -d)"
    failures=0
    here="$ext_here"
    # shellcheck source=sip-tests/lib.sh
    source "$ext_here/lib.sh"
fi
ext_sc="$ext_here/scenarios"
ext_target=127.0.0.1:5650
ext_work="$work/extensions"
mkdir -p "$ext_work"

ext_fail() { echo "FAIL $1"; failures=$((failures + 1)); }

# ext_log: the extensions Siphon's log so far, without tracing's colours.
ext_log() { sed 's/\x1b\[[0-9;]*m//g' "$ext_work/siphon.log"; }

# ext_run NAME SIPP_ARGS...: SIPp against the extensions Siphon; it must exit 0 (returns 1
# otherwise, for a caller that ran it in the background and so cannot see `failures` move).
ext_run() {
    local name="$1"; shift
    local dir="$ext_work/$name"; mkdir -p "$dir"
    ( cd "$dir" && timeout 120 "${rt[@]}" sipp "$@" -timeout 60s -timeout_error -trace_err \
        -nostdin "$ext_target" >"$dir/stdout" 2>&1 )
    local rc=$?
    if [ "$rc" = 0 ]; then
        echo "PASS $name"
    else
        ext_fail "$name (sipp exit $rc, expected 0)"
        tail -n 20 "$dir"/*errors.log 2>/dev/null
        tail -n 5 "$dir/stdout"
        return 1
    fi
}

# ext_pair NAME CALLEE_SCENARIO CALLER_SCENARIO NUMBER: the carrier's SIPp (UAS on 5601,
# media 16600) in the background, then the caller's (5602, media 16610) to NUMBER (a 9...
# number: through trunk ext-carrier); both must exit 0. Extra SIPp arguments come from the
# arrays ext_callee_args and ext_caller_args (reset after each pair); the callee's working
# directory holds pcma_20ms.pcap and, as play.pcap, $ext_play (default: the same speech).
ext_callee_args=(); ext_caller_args=(); ext_play=""
ext_pair() {
    local name="$1" callee_sf="$2" caller_sf="$3" number="$4"
    local dir="$ext_work/$name-callee"
    mkdir -p "$dir"
    cp "$ext_work/pcma_20ms.pcap" "$dir/" # the speech a callee scenario may play
    cp "${ext_play:-$ext_work/pcma_20ms.pcap}" "$dir/play.pcap"
    ( cd "$dir" && timeout 120 "${rt[@]}" sipp -sf "$ext_sc/$callee_sf" -m 1 -p 5601 \
        -i 127.0.0.1 -mp 16600 "${ext_callee_args[@]}" -timeout 60s -timeout_error -trace_err \
        -nostdin "$ext_target" >"$dir/stdout" 2>&1 ) &
    local callee_pid=$!
    wait_until 30 udp_bound 5601
    ext_run "$name" -sf "$ext_sc/$caller_sf" -s "$number" -m 1 -p 5602 -i 127.0.0.1 -mp 16610 \
        "${ext_caller_args[@]}"
    ext_callee_args=(); ext_caller_args=(); ext_play=""
    wait "$callee_pid"
    local rc=$?
    if [ "$rc" = 0 ]; then
        echo "PASS $name-callee"
    else
        ext_fail "$name-callee (sipp exit $rc, expected 0)"
        tail -n 20 "$dir"/*errors.log 2>/dev/null
        tail -n 5 "$dir/stdout"
    fi
}


ext_failures_before=$failures
python3 "$ext_here/pcap_20ms.py" /usr/share/sip-tester/g711a.pcap "$ext_work/pcma_20ms.pcap"
"${rt[@]}" "$siphon" --config "${EXT_CONFIG:-$ext_here/extensions.toml}" --log info >"$ext_work/siphon.log" 2>&1 &
ext_siphon_pid=$!
if ! wait_until 60 answers_options 5649 "$ext_target" "$ext_siphon_pid" || ! kill -0 "$ext_siphon_pid" 2>/dev/null; then
    ext_fail "ext-siphon-start (no answer to OPTIONS on $ext_target)"
    tail -n 20 "$ext_work/siphon.log"
fi

# --- RFC 3261 §8.2.2.3: Require / Unsupported / Supported / Allow.
ext_run ext-require-420 -sf "$ext_sc/ext_require_420.xml" -s 600 -m 1 -p 5603 -i 127.0.0.1 -mp 16620

# --- DTMF by SIP INFO (application/dtmf-relay, application/dtmf). To a forked number: each
# key reaches the analytics service through the fork as a dtmf event, once (the service
# logs "analytics: DTMF ... digit=K" for each event it receives, in Siphon's log since it
# runs in process); the hostile INFO is refused 400 (in the scenario) and reaches no one.
ext_dtmf_events() { ext_log | tail -n +"$((ext_mark + 1))" | grep "analytics: DTMF" | grep -oE 'digit="?[0-9*#A-D]' | tr -d '"' | sed 's/digit=//'; }
# ext_keys_are KEYS: the fork's service received exactly KEYS (sorted) since ext_mark.
ext_keys_are() { [ "$(ext_dtmf_events | sort | tr -d '\n')" = "$1" ]; }
ext_mark=$(ext_log | wc -l)
ext_run ext-info-dtmf-700 -sf "$ext_sc/ext_info_dtmf.xml" -s 700 -m 1 -p 5604 -i 127.0.0.1 -mp 16630
if wait_until 30 ext_keys_are '#5'; then
    echo "PASS ext-info-dtmf-fork (keys 5 and # reached the fork's service, once each)"
else
    ext_fail "ext-info-dtmf-fork (the fork's service received: $(ext_dtmf_events | tr '\n' ' '))"
fi
# Across a bridged call (trunk ext-carrier): each phone's INFO key reaches the other phone
# as an INFO with the same body (checked by both scenarios), and the call's fork gets both.
ext_mark=$(ext_log | wc -l)
ext_pair ext-info-dtmf-bridged ext_info_callee.xml ext_info_caller.xml 9123
if wait_until 30 ext_keys_are 79; then
    echo "PASS ext-info-dtmf-bridged-fork (keys 7 and 9 reached the bridged call's fork, once each)"
else
    ext_fail "ext-info-dtmf-bridged-fork (the fork's service received: $(ext_dtmf_events | tr '\n' ' '))"
fi

# --- A bridged re-INVITE without SDP: Siphon offers in the 200, the caller answers in the
# ACK with PCMU at port 16690, and the callee's PCMA speech must from then on reach 16690
# as PCMU (100 packets: 2 of the ~6 s left after the re-INVITE; needs root for SIPp's
# pcap play, as run.sh's media checks).
python3 "$ext_here/ext_rtp_sink.py" 16690 0 100 60 >"$ext_work/reinvite-sink.out" 2>&1 &
ext_sink_pid=$!
wait_until 10 udp_bound 16690
ext_pair ext-reinvite-nosdp b2b_callee_answer.xml ext_reinvite_nosdp.xml 9125
if wait "$ext_sink_pid"; then
    echo "PASS ext-reinvite-answer-in-ack ($(cat "$ext_work/reinvite-sink.out"))"
else
    ext_fail "ext-reinvite-answer-in-ack (the answer's address and codec were not used: $(cat "$ext_work/reinvite-sink.out"))"
fi

# --- RFC 3264 multi-codec answer: the carrier answers "8 0" (PCMA and PCMU) and switches
# from PCMA to PCMU halfway through its 7 s of speech (same SSRC, sequence running on). The
# caller offered PCMA only: it must get every packet, PCMA throughout (the PCMU half
# transcoded), with no break in the sequence.
ext_switch_packets=$(python3 "$ext_here/ext_pcap_switch.py" "$ext_work/pcma_20ms.pcap" "$ext_work/switch.pcap")
python3 "$ext_here/ext_rtp_sink.py" 16692 8 "$ext_switch_packets" 60 >"$ext_work/switch-sink.out" 2>&1 &
ext_sink_pid=$!
wait_until 10 udp_bound 16692
ext_play="$ext_work/switch.pcap"
ext_callee_args=(-key fmts "8 0" -key sdp_extra "a=sendrecv")
ext_caller_args=(-key sink_port 16692 -key ptime_line "a=sendrecv")
# The same call checks RTCP on bridged legs (RFC 3550): Siphon relays the carrier's speech
# to the caller, so the caller's RTCP port (16693) must get sender reports; the carrier sent
# RTP and got none, so its RTCP port (16601) must get receiver reports with a report block
# on its stream; both get BYE when the call ends (ext_rtcp_check.py).
ext_rtcp_capture=0
capture_start "$ext_work/rtcp.pcapng" "" "udp dst port 16601 or udp dst port 16693" && ext_rtcp_capture=1
ext_pair ext-codec-switch ext_callee_play.xml ext_caller_sink.xml 9126
if wait "$ext_sink_pid"; then
    echo "PASS ext-codec-switch-continuous ($(cat "$ext_work/switch-sink.out"))"
else
    ext_fail "ext-codec-switch-continuous (expected $ext_switch_packets PCMA packets in sequence: $(cat "$ext_work/switch-sink.out"))"
fi
sleep 1 # the BYE leaves as the bridge ends, just after the caller's BYE
capture_stop
if [ "$ext_rtcp_capture" = 1 ] && python3 "$ext_here/ext_rtcp_check.py" "$ext_work/rtcp.pcapng" 16693 16601 >"$ext_work/rtcp.check" 2>&1; then
    echo "PASS ext-rtcp-bridged ($(cat "$ext_work/rtcp.check"))"
else
    ext_fail "ext-rtcp-bridged ($(cat "$ext_work/rtcp.check" 2>/dev/null || echo "tshark cannot capture on lo: run as root"))"
fi

# --- 100rel / PRACK (RFC 3262) on both legs, through trunk ext-carrier: a carrier that
# requires 100rel and session timers (ext_100rel_callee.xml) sends a reliable 183 with SDP;
# Siphon's INVITE must have listed 100rel in Supported and Siphon must PRACK it (RAck 1 1
# INVITE). The caller requires 100rel: its 183 from Siphon must be reliable (RSeq), its
# PRACK answered 200. The carrier plays its 7 s of PCMA speech as early media before it
# answers; the caller's media port (ext_rtp_sink.py on 16694) must get it, in sequence.
python3 "$ext_here/ext_rtp_sink.py" 16694 8 300 60 >"$ext_work/100rel-sink.out" 2>&1 &
ext_sink_pid=$!
wait_until 10 udp_bound 16694
ext_caller_args=(-key sink_port 16694)
ext_pair ext-100rel ext_100rel_callee.xml ext_100rel_caller.xml 9127
if wait "$ext_sink_pid"; then
    echo "PASS ext-100rel-early-media ($(cat "$ext_work/100rel-sink.out"))"
else
    ext_fail "ext-100rel-early-media (expected 300 PCMA packets of early media in sequence: $(cat "$ext_work/100rel-sink.out"))"
fi

# The caller's side of 100rel when the PRACK is late: the carrier sends 183 with SDP and
# 200 at once; the caller (requiring 100rel) holds its PRACK 3 s. Siphon must hold the 200
# until the PRACK (the scenario fails on a 200 before it) and send the reliable 183 again
# meanwhile at T1 doubling: 0, 0.5, 1.5 s (3.5 s may fall after the PRACK), counted on a
# capture of what reaches the caller.
ext_prack_capture=0
capture_start "$ext_work/prack.pcapng" "" "udp dst port 5602" && ext_prack_capture=1
ext_pair ext-100rel-late-prack ext_183_200_callee.xml ext_100rel_late_prack.xml 9132
capture_stop
ext_183s=$(tshark -r "$ext_work/prack.pcapng" -d udp.port==5602,sip -Y "sip.Status-Code == 183" 2>/dev/null | wc -l)
if [ "$ext_prack_capture" = 1 ] && [ "$ext_183s" -ge 3 ] && [ "$ext_183s" -le 5 ]; then
    echo "PASS ext-100rel-retransmitted (the reliable 183 reached the caller $ext_183s times before its PRACK)"
else
    ext_fail "ext-100rel-retransmitted (the reliable 183 reached the caller $ext_183s times, expected 3-5)"
fi

# --- Session timers on the callee leg (RFC 4028): the carrier makes Siphon the refresher
# of its leg (refresher=uac, 10 s); Siphon's UPDATE refreshes keep the call up 20 s (two
# intervals) until the carrier answers one 481: Siphon then sends BYE on both legs
# (Reason "Session expired"; the caller, which has no timer, waits for it).
ext_pair ext-timer-callee-leg ext_timer_callee_refreshed.xml ext_caller_waits_bye.xml 9128

# Siphon as the refresher of a bridged caller that does not allow UPDATE: re-INVITE
# refreshes at half the 10 s interval, three answered by the caller, which then hangs up.
ext_pair ext-timer-reinvite-refresh b2b_callee_answer.xml ext_timer_reinvite_refresh.xml 9133

# --- UPDATE relayed across the B2BUA (RFC 3311): the caller holds and resumes the call
# with UPDATEs; each reaches the carrier (which allows UPDATE) as an UPDATE offering the
# same intent (sendonly, then sendrecv), the carrier's answers come back to its leg, and
# the caller gets Siphon's answers (recvonly, then not held).
ext_pair ext-update-relayed ext_update_hold_callee.xml ext_update_hold_caller.xml 9129

# --- Glare (RFC 3261 §14.1): the caller's hold re-INVITE is re-offered to the carrier,
# which sends its own re-INVITE before answering Siphon's: Siphon must answer it 491; the
# carrier answers Siphon's 491 and Siphon must re-INVITE again 2.1-4 s later (it owns the
# callee leg's Call-ID), still offering sendonly: both legs end on hold, in step.
ext_mark=$(ext_log | wc -l)
ext_pair ext-glare ext_glare_callee.xml ext_glare_caller.xml 9130
ext_glare_ms=$(ext_log | tail -n +"$((ext_mark + 1))" | grep "glare (491)" | grep -oE 'retry_ms=[0-9]+' | head -n 1 | cut -d= -f2)
if [ -n "$ext_glare_ms" ] && [ "$ext_glare_ms" -ge 2100 ] && [ "$ext_glare_ms" -le 4000 ]; then
    echo "PASS ext-glare-retry-interval (${ext_glare_ms} ms, within 2.1-4 s)"
else
    ext_fail "ext-glare-retry-interval (Siphon's retry after 491: '${ext_glare_ms}' ms, expected 2100-4000)"
fi

# --- a=ptime on a bridged call: the caller asks for 30 ms packets (a=ptime:30), the
# carrier sends 20 ms PCMA: the caller's media port (ext_rtp_sink.py on 16696) must get
# only 240-byte (30 ms) packets, in sequence.
python3 "$ext_here/ext_rtp_sink.py" 16696 8 200 60 >"$ext_work/ptime-bridged-sink.out" 2>&1 &
ext_sink_pid=$!
wait_until 10 udp_bound 16696
ext_callee_args=(-key fmts "8" -key sdp_extra "a=sendrecv")
ext_caller_args=(-key sink_port 16696 -key ptime_line "a=ptime:30")
ext_pair ext-ptime30-bridged ext_callee_play.xml ext_caller_sink.xml 9131
if wait "$ext_sink_pid" && grep -qE "PT 8 payload sizes \{240: [0-9]+\}," "$ext_work/ptime-bridged-sink.out"; then
    echo "PASS ext-ptime30-bridged-recut ($(cat "$ext_work/ptime-bridged-sink.out"))"
else
    ext_fail "ext-ptime30-bridged-recut (expected 200 PCMA packets of 240 bytes in sequence: $(cat "$ext_work/ptime-bridged-sink.out"))"
fi

# --- Session timers (RFC 4028; this Siphon accepts 10 s intervals): 422 below the minimum,
# a call kept up 25 s (past two intervals) by four re-INVITE refreshes, one kept up as long
# by UPDATEs, and a call whose caller never refreshes ended by Siphon's BYE. All three run
# at once, on their own ports.
ext_run ext-timer-refreshed -sf "$ext_sc/ext_timer_refresh.xml" -s 600 -m 1 -p 5605 \
    -i 127.0.0.1 -mp 16640 &
ext_refresh_pid=$!
# Siphon as the refresher (the caller asks refresher=uas): four UPDATE refreshes from
# Siphon answered, the fifth refused 408: Siphon's BYE.
ext_run ext-timer-siphon-refreshes -sf "$ext_sc/ext_timer_siphon_refreshes.xml" -s 600 -m 1 \
    -p 5609 -i 127.0.0.1 -mp 16680 &
ext_siphon_refresh_pid=$!
# UPDATE (RFC 3311) as the refresh: three without SDP, one with an offer (hold).
ext_run ext-timer-update-refreshed -sf "$ext_sc/ext_timer_update.xml" -s 600 -m 1 -p 5608 \
    -i 127.0.0.1 -mp 16660 &
ext_update_pid=$!
ext_mark=$(ext_log | wc -l)
ext_run ext-timer-expired-bye -sf "$ext_sc/ext_timer_expire.xml" -s 600 -m 1 -p 5606 \
    -i 127.0.0.1 -mp 16650
wait "$ext_refresh_pid" || failures=$((failures + 1))
wait "$ext_update_pid" || failures=$((failures + 1))
wait "$ext_siphon_refresh_pid" || failures=$((failures + 1))
if ext_log | tail -n +"$((ext_mark + 1))" | grep -q "session expired without a refresh"; then
    echo "PASS ext-timer-expired-logged"
else
    ext_fail "ext-timer-expired-logged (no \"session expired\" in Siphon's log)"
fi

# --- a=ptime: a peer that asks for 30 ms packets and sends 30 ms packets (SIPp's own
# g711a.pcap) calls the echo number: Siphon takes its stream and echoes it in 30 ms packets
# (240 bytes, timestamps +240, sequence unbroken; ext_ptime_check.py).
if capture_start "$ext_work/ptime30.pcapng" "" "udp dst port 16670"; then
    ext_run ext-ptime30-call -sf "$ext_sc/ext_ptime30.xml" -s 600 -m 1 -p 5607 -i 127.0.0.1 -mp 16670
    capture_stop
    if python3 "$ext_here/ext_ptime_check.py" "$ext_work/ptime30.pcapng" 16670 30 >"$ext_work/ptime30.check" 2>&1; then
        echo "PASS ext-ptime30-sent ($(cat "$ext_work/ptime30.check"))"
    else
        ext_fail "ext-ptime30-sent ($(cat "$ext_work/ptime30.check"))"
    fi
else
    capture_stop
    ext_fail "ext-ptime30 (tshark cannot capture on lo: run as root)"
fi

# --- a=rtcp (RFC 3605) and a=rtcp-mux (RFC 5761) on a served leg: a caller offering
# a=rtcp-mux to the echo number gets both in the answer (checked in the scenario), and its
# RTP port 16620 gets the echo of its 7 s of speech unbroken and Siphon's SR/RR and BYE
# multiplexed with it, nothing on 16621; the two sender reports the caller multiplexes on
# its RTP port (ext_rtcp_inject.py) are counted as RTCP received, not taken for audio; a
# caller without it gets no a=rtcp-mux, still an a=rtcp, and the RTCP on its port + 1 as
# before (ext_rtcp_mux_check.py). The SIPp ports are those of checks long finished
# (ext-require-420, ext-info-dtmf-700).

# ext_rtcp_in: the RTCP packets Siphon has received, from its /metrics.
ext_rtcp_in() {
    curl -fsS http://127.0.0.1:8600/metrics 2>/dev/null |
        awk '/^siphon_rtcp_packets_total\{direction="in"\}/ {n = $2} END {print n + 0}'
}
for ext_mux in 1 0; do
    ext_name=$([ "$ext_mux" = 1 ] && echo ext-rtcp-mux || echo ext-rtcp-no-mux)
    ext_mp=$([ "$ext_mux" = 1 ] && echo 16620 || echo 16630)
    ext_sf=$([ "$ext_mux" = 1 ] && echo ext_rtcp_mux.xml || echo ext_rtcp_nomux.xml)
    mkdir -p "$ext_work/$ext_name"
    cp "$ext_work/pcma_20ms.pcap" "$ext_here/ext_rtcp_inject.py" "$ext_work/$ext_name/"
    ext_rtcp_in_before=$(ext_rtcp_in)
    if capture_start "$ext_work/$ext_name.pcapng" "" "udp dst port $ext_mp or udp dst port $((ext_mp + 1))"; then
        ext_run "$ext_name" -sf "$ext_sc/$ext_sf" -s 600 -m 1 -p $((5610 + ext_mux)) -i 127.0.0.1 \
            -mp "$ext_mp" -key phone_port "$ext_mp"
        sleep 1 # the RTCP BYE leaves as the call ends, just after the BYE's 200
        capture_stop
        if python3 "$ext_here/ext_rtcp_mux_check.py" "$ext_work/$ext_name.pcapng" "$ext_mp" "$ext_mux" >"$ext_work/$ext_name.check" 2>&1; then
            echo "PASS $ext_name-media ($(cat "$ext_work/$ext_name.check"))"
        else
            ext_fail "$ext_name-media ($(cat "$ext_work/$ext_name.check"))"
        fi
        if [ "$ext_mux" = 1 ]; then
            ext_rtcp_in_after=$(ext_rtcp_in)
            if [ $((ext_rtcp_in_after - ext_rtcp_in_before)) -ge 2 ]; then
                echo "PASS ext-rtcp-mux-received (RTCP in $ext_rtcp_in_before -> $ext_rtcp_in_after)"
            else
                ext_fail "ext-rtcp-mux-received (RTCP in $ext_rtcp_in_before -> $ext_rtcp_in_after; $(cat "$ext_work/$ext_name/inject.log" 2>/dev/null))"
            fi
        fi
    else
        capture_stop
        ext_fail "$ext_name (tshark cannot capture on lo: run as root)"
    fi
done

# --- rtcp-mux on both legs of a bridged call: the caller offers it (Siphon's answer accepts
# it) and the carrier's answer to Siphon's offer has it. The carrier's 7 s of PCMA speech
# reaches the caller's sink (16698) unbroken, with Siphon's SR and BYE multiplexed among it;
# the carrier, which sent RTP and got none, gets RRs and BYE on its RTP port 16600; nothing
# goes to either port + 1.
python3 "$ext_here/ext_rtp_sink.py" 16698 8 300 60 >"$ext_work/mux-bridged-sink.out" 2>&1 &
ext_sink_pid=$!
wait_until 10 udp_bound 16698
ext_callee_args=(-key fmts "8" -key sdp_extra "a=rtcp-mux")
ext_caller_args=(-key sink_port 16698 -key ptime_line "a=rtcp-mux")
ext_mux_capture=0
capture_start "$ext_work/mux-bridged.pcapng" "" "udp dst portrange 16600-16601 or udp dst portrange 16698-16699" && ext_mux_capture=1
ext_pair ext-rtcp-mux-bridged ext_callee_play.xml ext_caller_sink.xml 9134
if wait "$ext_sink_pid"; then
    echo "PASS ext-rtcp-mux-bridged-audio ($(cat "$ext_work/mux-bridged-sink.out"))"
else
    ext_fail "ext-rtcp-mux-bridged-audio ($(cat "$ext_work/mux-bridged-sink.out"))"
fi
sleep 1 # the BYE leaves as the bridge ends, just after the caller's BYE
capture_stop
for ext_port_min in 16698:300 16600:0; do
    if [ "$ext_mux_capture" = 1 ] && python3 "$ext_here/ext_rtcp_mux_check.py" "$ext_work/mux-bridged.pcapng" \
        "${ext_port_min%:*}" 1 "${ext_port_min#*:}" >"$ext_work/mux-bridged.check" 2>&1; then
        echo "PASS ext-rtcp-mux-bridged-${ext_port_min%:*} ($(cat "$ext_work/mux-bridged.check"))"
    else
        ext_fail "ext-rtcp-mux-bridged-${ext_port_min%:*} ($(cat "$ext_work/mux-bridged.check" 2>/dev/null || echo "tshark cannot capture on lo: run as root"))"
    fi
done

kill -TERM "$ext_siphon_pid" 2>/dev/null; wait "$ext_siphon_pid" 2>/dev/null
if [ "$failures" != "$ext_failures_before" ]; then
    echo "--- extensions Siphon log (tail) ---"; ext_log | tail -n 30 | sed 's/^/    /'
fi
if [ "$ext_alone" = 1 ]; then
    [ -n "${KEEP_WORK:-}" ] && echo "work dir kept: $work" || rm -rf "$work"
    if [ "$failures" -ne 0 ]; then echo "$failures extension check(s) failed"; exit 1; fi
    echo "all extension checks passed"
fi
