#!/usr/bin/env bash
# shellcheck shell=bash
# Call transfer (issue 17 part 2) against real SIPp peers. Runs alone
# (`bash sip-tests/transfer.sh [path/to/siphon]`, exits non-zero on failure) or sourced by
# run.sh (it then adds to run.sh's `failures`). It starts a Siphon of its own
# (sip-tests/transfer.toml: SIP 5950, HTTP 8900, analytics 8901, RTP 37000-37998) and SIPp
# only on SIP ports 5900-5949 and media ports 16900-16999. Every name here starts with
# xfer_ so that sourcing it changes nothing of run.sh's.
#
# What it checks: REFER that must be refused (RFC 3515/3891 status codes; a well-formed one
# to a number nothing reaches gets 404 in a call Siphon serves; REFER that is carried out is refer.sh's), the admin API's transfer route's refusals
# (400, 404), and the bot-to-human handoff: a caller of the voicebot number (fork, tracks =
# both) transferred through the API to a SIPp agent registered as 1003, the fork's WAV
# holding the caller (channel 0) and then the agent (channel 1), and the agent receiving the
# caller's RTP; then a voicebot (the reference service, its own process on 9250) handing
# the call to 1003 itself with the native `transfer` command, and a second transfer of that
# call (1003 to another agent). Needs root for the tshark capture, like run.sh's media
# checks, and target/release/siphon-analytics next to the Siphon binary (XFER_ANALYTICS).

xfer_here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
xfer_alone=0
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    xfer_alone=1
    set -uo pipefail
    siphon="${1:-$(cd "$xfer_here/.." && pwd)/target/release/siphon}"
    work="$(mktemp -d)"
    failures=0
    here="$xfer_here"
    # shellcheck source=sip-tests/lib.sh
    source "$xfer_here/lib.sh"
fi
xfer_sc="$xfer_here/scenarios"
xfer_target=127.0.0.1:5950
xfer_api=http://127.0.0.1:8900
xfer_work="$work/transfer"
mkdir -p "$xfer_work"

xfer_fail() { echo "FAIL $1"; failures=$((failures + 1)); }

# xfer_run NAME SIPP_ARGS...: SIPp against the transfer Siphon; it must exit 0.
xfer_run() {
    local name="$1"; shift
    local dir="$xfer_work/$name"; mkdir -p "$dir"
    ( cd "$dir" && timeout 120 "${rt[@]}" sipp "$@" -timeout 60s -timeout_error -trace_err \
        -nostdin "$xfer_target" >"$dir/stdout" 2>&1 )
    local rc=$?
    if [ "$rc" = 0 ]; then
        echo "PASS $name"
    else
        xfer_fail "$name (sipp exit $rc, expected 0)"
        tail -n 20 "$dir"/*errors.log 2>/dev/null
        tail -n 5 "$dir/stdout"
    fi
}

# xfer_status NAME EXPECTED METHOD URL [BODY]: the admin API answers EXPECTED.
xfer_status() {
    local name="$1" expected="$2" method="$3" url="$4" body="${5:-}"
    local got
    got=$(curl -s -o "$xfer_work/$name.json" -w '%{http_code}' -X "$method" \
        -H 'Content-Type: application/json' --data "$body" "$xfer_api$url")
    if [ "$got" = "$expected" ]; then
        echo "PASS $name"
    else
        xfer_fail "$name (HTTP $got, expected $expected: $(head -c 300 "$xfer_work/$name.json"))"
    fi
}

xfer_failures_before=$failures
mkdir -p "$xfer_work/wav"
{ cat "$xfer_here/transfer.toml"; printf '\n[analytics]\nlisten = "127.0.0.1:8901"\nout_dir = "%s"\n' \
    "$xfer_work/wav"; } >"$xfer_work/siphon.toml"
python3 "$xfer_here/pcap_20ms.py" /usr/share/sip-tester/g711a.pcap "$xfer_work/pcma_20ms.pcap"
"${rt[@]}" "$siphon" --config "${XFER_CONFIG:-$xfer_work/siphon.toml}" --log info \
    >"$xfer_work/siphon.log" 2>&1 &
xfer_siphon_pid=$!
if ! wait_until 60 answers_options 5949 "$xfer_target" "$xfer_siphon_pid" \
    || ! kill -0 "$xfer_siphon_pid" 2>/dev/null; then
    xfer_fail "xfer-siphon-start (no answer to OPTIONS on $xfer_target)"
    tail -n 20 "$xfer_work/siphon.log"
fi

# --- hostile and not-yet-supported REFER in the dialog of an echo call: 400, 400, 400,
# 404, 404 (a blind REFER to a number nothing reaches), and the call still ends with a BYE answered 200.
xfer_run xfer-refer-refused -sf "$xfer_sc/xfer_refer_refused.xml" -s 600 -m 1 -p 5901 \
    -i 127.0.0.1 -mp 16900

# --- the admin API's transfer route: an unknown call is 404, a bad target 400.
xfer_status xfer-api-unknown-call 404 POST /api/calls/no-such-call/transfer '{"to":"user:1002"}'
xfer_status xfer-api-bad-target 400 POST /api/calls/no-such-call/transfer '{"to":"tel:+1555"}'
xfer_status xfer-api-bad-body 400 POST /api/calls/no-such-call/transfer 'nonsense'

# --- Bot-to-human handoff: the agent registers as 1003; a caller (5902, media 16902) calls
# the voicebot number 700 (fork, tracks = both) and speaks for 7 s; a second into the call
# the API transfers it to user:1003 (202). The agent (5903, media 16903) answers, speaks
# for 7 s and hangs up, which ends the call (the caller gets BYE).
xfer_phone() { # xfer_phone NAME SIPP_ARGS...: SIPp in its own directory with the pcap
    local name="$1"; shift
    mkdir -p "$xfer_work/$name"
    cp "${xfer_pcap:-$xfer_work/pcma_20ms.pcap}" "$xfer_work/$name/pcma_20ms.pcap"
    ( cd "$xfer_work/$name" && timeout 120 "${rt[@]}" sipp "$@" -i 127.0.0.1 -timeout 60s \
        -timeout_error -trace_err -nostdin "$xfer_target" >"$xfer_work/$name/stdout" 2>&1 )
}
xfer_result() { # xfer_result NAME RC
    if [ "$2" = 0 ]; then echo "PASS $1"; else
        xfer_fail "$1 (sipp exit $2)"; tail -n 15 "$xfer_work/$1"/*errors.log 2>/dev/null; fi
}
xfer_call_id=""
xfer_answered_call() { # the voicebot call's Call-ID once it is answered
    xfer_call_id="$(curl -s "$xfer_api/api/calls" | python3 -c '
import json, sys
calls = [c for c in json.load(sys.stdin).get("calls", []) if c.get("state") == "answered"]
print(calls[0]["call_id"] if calls else "")' 2>/dev/null)"
    [ -n "$xfer_call_id" ]
}
xfer_transfer_state() { # xfer_transfer_state STATE: GET /api/calls/{id} shows it
    curl -s "$xfer_api/api/calls/$xfer_call_id" >"$xfer_work/call.json"
    grep -q "\"state\":\"$1\"" "$xfer_work/call.json" && grep -q '"transfer":{' "$xfer_work/call.json"
}
xfer_wav=""
xfer_wav_written() {
    xfer_wav="$(ls "$xfer_work/wav" | head -n 1)"
    [ -n "$xfer_wav" ] && ! kill -0 "$xfer_caller" 2>/dev/null
}
xfer_phone xfer-register-1003 -sf "$xfer_sc/register.xml" -s 1003 -au 1003 -ap secret1003 -m 1 -p 5903
xfer_result xfer-register-1003 $?
xfer_saved_range="${rtp_capture_range:-}"
rtp_capture_range=16900-16999
capture_start "$xfer_work/handoff.pcapng" 16902
xfer_phone xfer-agent -sf "$xfer_sc/b2b_callee_bye.xml" -m 1 -p 5903 -mp 16903 &
xfer_agent=$!
wait_until 30 udp_bound 5903
xfer_phone xfer-busy-agent -sf "$xfer_sc/b2b_callee_busy.xml" -m 1 -p 5904 &
xfer_busy=$!
wait_until 30 udp_bound 5904
xfer_phone xfer-caller -sf "$xfer_sc/xfer_caller_wait_bye.xml" -s 700 -m 1 -p 5902 -mp 16902 &
xfer_caller=$!
if wait_until 30 xfer_answered_call; then
    # First a target that is busy (486): the transfer fails, the caller stays with the bot.
    xfer_status xfer-api-transfer-busy-202 202 POST "/api/calls/$xfer_call_id/transfer" '{"to":"sip:agent@127.0.0.1:5904"}'
    wait_until 30 xfer_transfer_state failed && grep -q '"code":486' "$xfer_work/call.json" \
        && echo "PASS xfer-get-shows-transfer-failed-486" \
        || xfer_fail "xfer-get-shows-transfer-failed-486 ($(head -c 600 "$xfer_work/call.json"))"
    wait "$xfer_busy"; xfer_result xfer-busy-agent $?
    # The caller speaks to the bot for a while: the switch falls inside its speech.
    sleep 1
    xfer_status xfer-api-transfer-202 202 POST "/api/calls/$xfer_call_id/transfer" '{"to":"user:1003"}'
    wait_until 30 xfer_transfer_state completed && echo "PASS xfer-get-shows-transfer-completed" \
        || xfer_fail "xfer-get-shows-transfer-completed ($(head -c 600 "$xfer_work/call.json"))"
else
    xfer_fail "xfer-voicebot-call-answered"
fi
wait "$xfer_agent"; xfer_result xfer-agent $?
wait "$xfer_caller"; xfer_result xfer-caller $?
if wait_until 60 xfer_wav_written; then
    capture_stop
    if python3 "$xfer_here/transfer_wav_check.py" --capture "$xfer_work/handoff.pcapng" \
        --caller-mport 16902 --agent-mport 16903 --wav "$xfer_work/wav/$xfer_wav" \
        >"$xfer_work/handoff.wavcheck" 2>&1; then
        echo "PASS xfer-fork-hears-caller-then-agent"
    else
        xfer_fail "xfer-fork-hears-caller-then-agent"
    fi
    sed 's/^/    /' "$xfer_work/handoff.wavcheck"
else
    capture_stop
    xfer_fail "xfer-fork-wav-written"
fi

# --- The service hands off by itself, then the agent hands on (issue 17): the reference
# service (siphon-analytics, a process of its own on 9250) serves number 710 and, after 50
# frames of the caller, sends the native {"event":"transfer","to":"user:1003"}. The caller
# (5910, media 16910) speaks and waits for BYE; 1003 (5903, media 16914) answers and speaks.
# GET /api/calls shows the transfer completed `by` "service", the service logs Siphon's
# transfer events (trying, answered). Once 1003's speech is over, the API transfers the
# call again, to sip:agent2@127.0.0.1:5912 (media 16918; SIPp also binds media+2): 1003 gets BYE when agent 2
# answers; agent 2 speaks and hangs up, which ends the call. The fork's WAV holds the
# caller whole on channel 0 and each agent's speech on channel 1, and the caller receives
# each agent's RTP (refer_rtp_check.py).
xfer_svc_analytics="${XFER_ANALYTICS:-$(dirname "$siphon")/siphon-analytics}"
mkdir -p "$xfer_work/svcwav"
"$xfer_svc_analytics" --listen 127.0.0.1:9250 --out-dir "$xfer_work/svcwav" \
    --transfer-to user:1003 --transfer-after-frames 50 >"$xfer_work/service.log" 2>&1 &
xfer_svc_pid=$!
xfer_svc_listening() { (exec 3<>/dev/tcp/127.0.0.1/9250) 2>/dev/null; }
if ! wait_until 30 xfer_svc_listening; then
    xfer_fail "xfer-service-start ($xfer_svc_analytics: $(tail -n 3 "$xfer_work/service.log"))"
fi
rtp_capture_range=16900-16999
capture_start "$xfer_work/service.pcapng" 16910
xfer_phone xfer-svc-agent1 -sf "$xfer_sc/b2b_callee_answer.xml" -m 1 -p 5903 -mp 16914 &
xfer_agent1=$!
# Agent 2 speaks backwards: its frames must not be mistaken for 1003's in channel 1.
python3 "$xfer_here/pcap_20ms.py" /usr/share/sip-tester/g711a.pcap "$xfer_work/pcma_20ms_reversed.pcap" --reverse
xfer_pcap="$xfer_work/pcma_20ms_reversed.pcap" \
    xfer_phone xfer-svc-agent2 -sf "$xfer_sc/b2b_callee_bye.xml" -m 1 -p 5912 -mp 16918 &
xfer_agent2=$!
wait_until 30 udp_bound 5903
wait_until 30 udp_bound 5912
xfer_phone xfer-svc-caller -sf "$xfer_sc/xfer_caller_wait_bye.xml" -s 710 -m 1 -p 5910 -mp 16910 &
xfer_caller=$!
xfer_by_service() { xfer_answered_call && xfer_transfer_state completed && grep -q '"by":"service"' "$xfer_work/call.json"; }
if wait_until 30 xfer_by_service; then
    echo "PASS xfer-service-transfer-completed-by-service"
    xfer_svc_answered_at=$SECONDS
    xfer_events_told() { grep -q 'analytics: transfer.*"status":"answered"' "$xfer_work/service.log"; }
    wait_until 10 xfer_events_told && grep -q 'analytics: transfer.*"status":"trying"' "$xfer_work/service.log" \
        && echo "PASS xfer-service-hears-transfer-events" \
        || xfer_fail "xfer-service-hears-transfer-events ($(grep 'analytics: transfer' "$xfer_work/service.log" | head -c 600))"
    # 1003 speaks for about 8 s from its answer: the second transfer comes after that.
    xfer_agent1_done() { [ $((SECONDS - xfer_svc_answered_at)) -ge 10 ]; }
    wait_until 20 xfer_agent1_done
    xfer_status xfer-api-second-transfer-202 202 POST "/api/calls/$xfer_call_id/transfer" \
        '{"to":"sip:agent2@127.0.0.1:5912"}'
    xfer_to_agent2() { xfer_transfer_state completed && grep -q '"target":"sip:agent2@127.0.0.1:5912"' "$xfer_work/call.json"; }
    wait_until 30 xfer_to_agent2 && echo "PASS xfer-get-shows-second-transfer-completed" \
        || xfer_fail "xfer-get-shows-second-transfer-completed ($(head -c 600 "$xfer_work/call.json"))"
else
    xfer_fail "xfer-service-transfer-completed-by-service ($(curl -s "$xfer_api/api/calls" | head -c 600))"
fi
wait "$xfer_agent1"; xfer_result xfer-svc-agent1-got-bye-when-replaced $?
wait "$xfer_agent2"; xfer_result xfer-svc-agent2-answered-hung-up $?
wait "$xfer_caller"; xfer_result xfer-svc-caller-got-bye $?
xfer_svc_wav=""
xfer_svc_wav_written() {
    xfer_svc_wav="$(ls "$xfer_work/svcwav" | head -n 1)"
    [ -n "$xfer_svc_wav" ] && grep -q 'stream connection closed' "$xfer_work/service.log"
}
if wait_until 60 xfer_svc_wav_written; then
    capture_stop
    for xfer_n in 1:16914 2:16918; do
        if python3 "$xfer_here/transfer_wav_check.py" --capture "$xfer_work/service.pcapng" \
            --caller-mport 16910 --agent-mport "${xfer_n#*:}" --wav "$xfer_work/svcwav/$xfer_svc_wav" \
            >"$xfer_work/service${xfer_n%:*}.wavcheck" 2>&1; then
            echo "PASS xfer-service-fork-hears-caller-and-agent${xfer_n%:*}"
        else
            xfer_fail "xfer-service-fork-hears-caller-and-agent${xfer_n%:*}"
        fi
        sed 's/^/    /' "$xfer_work/service${xfer_n%:*}.wavcheck"
        # The caller hears that agent: its frames, byte for byte and in order, among what
        # Siphon sent the caller.
        if python3 "$xfer_here/refer_rtp_check.py" "$xfer_work/service.pcapng" "${xfer_n#*:}" 16910 \
            >"$xfer_work/service${xfer_n%:*}.rtpcheck" 2>&1; then
            echo "PASS xfer-service-caller-hears-agent${xfer_n%:*}"
        else
            xfer_fail "xfer-service-caller-hears-agent${xfer_n%:*}"
        fi
        sed 's/^/    /' "$xfer_work/service${xfer_n%:*}.rtpcheck"
    done
else
    capture_stop
    xfer_fail "xfer-service-fork-wav-written"
fi
kill -INT "$xfer_svc_pid" 2>/dev/null; wait "$xfer_svc_pid" 2>/dev/null
rtp_capture_range="$xfer_saved_range"

kill -TERM "$xfer_siphon_pid" 2>/dev/null; wait "$xfer_siphon_pid" 2>/dev/null
if [ "$failures" != "$xfer_failures_before" ]; then
    echo "--- transfer Siphon log (tail) ---"
    sed 's/\x1b\[[0-9;]*m//g' "$xfer_work/siphon.log" | tail -n 30 | sed 's/^/    /'
fi
if [ "$xfer_alone" = 1 ]; then
    [ -n "${KEEP_WORK:-}" ] && echo "work dir kept: $work" || rm -rf "$work"
    if [ "$failures" -ne 0 ]; then echo "$failures transfer check(s) failed"; exit 1; fi
    echo "all transfer checks passed"
fi
