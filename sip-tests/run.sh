#!/usr/bin/env bash
# Interop tests: real SIPp (Debian's sip-tester 3.6.1) against a real Siphon process running
# the embedded default configuration. Each check prints PASS/FAIL; the script exits non-zero
# if any failed. Usage: sip-tests/run.sh [path/to/siphon]   (SIP_PORT=5060 by default)
# The pipecat checks run a Pipecat service from a venv cached under
# ${XDG_CACHE_HOME:-~/.cache}/siphon/pipecat-venv; the first run creates it (PyPI, ~2-3 min).
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
siphon="${1:-$root/target/debug/siphon}"
port="${SIP_PORT:-5060}"
target="127.0.0.1:$port"
http="127.0.0.1:${HTTP_PORT:-8080}"
work="$(mktemp -d)"
failures=0

# shellcheck source=sip-tests/lib.sh
source "$here/lib.sh"

root_hint() { [ "$(id -u)" = 0 ] || echo " (not root: SIPp's pcap play needs a raw socket)"; }

cleanup() {
    capture_stop
    if [ -n "${siphon_pid:-}" ]; then kill "$siphon_pid" 2>/dev/null; wait "$siphon_pid" 2>/dev/null; fi
    # The pipecat section's Pipecat service and second Siphon.
    if [ -n "${pipecat_pid:-}" ]; then kill "$pipecat_pid" 2>/dev/null; wait "$pipecat_pid" 2>/dev/null; fi
    if [ -n "${siphon2_pid:-}" ]; then kill "$siphon2_pid" 2>/dev/null; wait "$siphon2_pid" 2>/dev/null; fi
    [ -n "${KEEP_WORK:-}" ] && echo "work dir kept: $work" || rm -rf "$work"
}
trap cleanup EXIT

"${rt[@]}" "$siphon" --listen "$target" --http "$http" --log info >"$work/siphon.log" 2>&1 &
siphon_pid=$!
# Wait until Siphon answers OPTIONS.
if ! wait_until 60 answers_options 5199 "$target" "$siphon_pid"; then
    echo "FAIL siphon-start (no answer to OPTIONS within 60 s)"; failures=$((failures + 1))
fi

# run NAME EXPECTED_EXIT SIPP_ARGS...: runs SIPp in the scratch folder, checks its exit code.
run() {
    local name="$1" expected="$2"; shift 2
    local dir="$work/$name"; mkdir -p "$dir"
    ( cd "$dir" && timeout 120 "${rt[@]}" sipp "$@" -timeout 60s -timeout_error -trace_err -trace_stat \
        -nostdin "$target" >"$dir/stdout" 2>&1 )
    local rc=$?
    if [ "$rc" = "$expected" ]; then
        echo "PASS $name"
    else
        echo "FAIL $name (sipp exit $rc, expected $expected)"
        tail -n 20 "$dir"/*errors.log 2>/dev/null
        tail -n 5 "$dir/stdout"
        failures=$((failures + 1))
    fi
}

sc="$here/scenarios"
run options-udp 0 -sf "$sc/options.xml" -m 5 -p 5101
run options-tcp 0 -sf "$sc/options.xml" -m 5 -p 5102 -t t1
run register-1001 0 -sf "$sc/register.xml" -s 1001 -au 1001 -ap secret1001 -m 1 -p 5103
run register-1002-tcp 0 -sf "$sc/register.xml" -s 1002 -au 1002 -ap secret1002 -m 1 -p 5104 -t t1
run register-wrong-password 0 -sf "$sc/register_wrong_password.xml" -s 1001 -au 1001 -ap not-secret1001 -m 1 -p 5105
run register-unknown-user 0 -sf "$sc/register_wrong_password.xml" -s 4242 -au 4242 -ap guess -m 1 -p 5111
run unregister 0 -sf "$sc/unregister.xml" -s 1001 -au 1001 -ap secret1001 -m 1 -p 5106
# The issue's acceptance command: 50 calls to the echo number at 10 calls/s, 0 failed.
run call-600-x50 0 -sn uac -s 600 -m 50 -r 10 -d 500 -p 5107
run call-600-tcp 0 -sn uac -s 600 -m 5 -r 5 -d 200 -p 5108 -t t1
run cancel-ringing 0 -sf "$sc/cancel.xml" -s 610 -m 3 -p 5109
# A number the dialplan does not know: 404, but only to a caller Siphon knows (1001,
# after its 407 and digest); the log must show it.
run unknown-number-404 0 -sf "$sc/unknown_number_auth.xml" -s 999 -au 1001 -ap secret1001 -m 1 -p 5110
# A scanner sweeping numbers learns nothing: accounts (1001, 1002), routes that need
# digest, and numbers that do not exist all answer 407 to a stranger.
for n in 1000 1001 1002 1003 999 5555 0044123456; do
    run "scanner-sweep-$n" 0 -sf "$sc/scan_invite.xml" -s "$n" -m 1 -p 5122
done

if ! grep -q "no route; 404" "$work/siphon.log"; then
    echo "FAIL unknown-number-404 (Siphon did not log a 404)"; failures=$((failures + 1))
fi

# --- Media: real RTP, captured on loopback. Needs root (or capture and raw-socket
# capabilities): tshark captures on lo, and SIPp's pcap play sends through a raw socket.
# Without those rights the checks fail loudly; they are never skipped.

# Echo with real RTP: 7 s of speech (g711a.pcap re-cut to 20 ms PCMA packets, since the
# original's 30 ms packets cannot match a 20 ms stream packet for packet) to 600. What comes
# back must be a continuous, 20 ms-paced PCMA stream carrying all of it (rtp_check.py).
# rtp_echo NAME NUMBER MEDIA_PORT SIPP_PORT: plays the re-cut speech into NUMBER under
# capture and checks the stream that comes back with rtp_check.py.
rtp_echo() {
    local name="$1" number="$2" mp="$3" port="$4"
    mkdir -p "$work/$name"
    python3 "$here/pcap_20ms.py" /usr/share/sip-tester/g711a.pcap "$work/$name/pcma_20ms.pcap"
    if ! capture_start "$work/$name.pcapng" "$mp"; then
        echo "FAIL $name (no capture)"; failures=$((failures + 1)); return 1
    fi
    run "$name" 0 -sf "$sc/echo_rtp.xml" -s "$number" -m 1 -p "$port" -i 127.0.0.1 -mp "$mp"
    capture_stop
    # Forked numbers (7xx) play what a service sends back, and the codec's silence in a
    # slot its audio missed (see rtp_check.py).
    local gaps=()
    [[ "$number" == 7* ]] && gaps=(--gaps-at-markers --silence-fill)
    if python3 "$here/rtp_check.py" "$work/$name.pcapng" "$mp" "${gaps[@]}" >"$work/$name/check" 2>&1; then
        echo "PASS $name-stream"
    else
        echo "FAIL $name-stream"; failures=$((failures + 1))
    fi
    sed 's/^/    /' "$work/$name/check"
}

rtp_echo echo-rtp 600 16000 5112
if [ -f "$work/echo-rtp.pcapng" ]; then
    # The checker must itself catch loss: the same capture without three of Siphon's packets.
    drop="$(tshark -r "$work/echo-rtp.pcapng" -Y "udp.dstport == 16000" -T fields -e frame.number 2>/dev/null | sed -n '100p;200p;201p')"
    # shellcheck disable=SC2086 # one argument per frame number
    editcap "$work/echo-rtp.pcapng" "$work/echo-rtp/lossy.pcapng" $drop
    lossy="$(python3 "$here/rtp_check.py" "$work/echo-rtp/lossy.pcapng" 16000 2>&1)"
    if grep -q "FAIL: sequence numbers not continuous" <<<"$lossy"; then
        echo "PASS rtp-check-self-test"
    else
        echo "FAIL rtp-check-self-test (rtp_check.py did not report 3 packets cut from the capture)"
        failures=$((failures + 1))
    fi
fi

# The same speech to 700: it crosses a real WebSocket to the built-in analytics service
# (native mode, L16), which echoes it back through the fork into Siphon's pacer. The caller
# must get a continuous 20 ms stream with all of it.
rtp_echo fork-700-rtp 700 16020 5114

# Operations: 20 overlapping forked calls to 700 (the 7 s of speech each, 10 calls/s) while
# metrics_check.py scrapes /metrics every 0.5 s: the calls, RTP and fork counters must move
# by what 20 calls carry (each sends 353 packets; 340 leaves room for the last ones in flight
# at the BYE), the fork latency histogram must fill, and every active gauge (calls, media
# tasks, forks, fork connections, RTP ports) must be back to 0 after the calls.
mkdir -p "$work/metrics-700"
python3 "$here/pcap_20ms.py" /usr/share/sip-tester/g711a.pcap "$work/metrics-700/pcma_20ms.pcap"
if ( cd "$work/metrics-700" && python3 "$here/metrics_check.py" calls --metrics "http://$http/metrics" \
    --calls 20 --packets 340 -- timeout 120 "${rt[@]}" sipp -sf "$sc/echo_rtp.xml" -s 700 -m 20 -l 20 -r 10 \
    -p 5117 -i 127.0.0.1 -mp 16050 -timeout 60s -timeout_error -trace_err -nostdin "$target" \
    >"$work/metrics-700/check" 2>&1 ); then
    echo "PASS metrics-700-x20"
else
    echo "FAIL metrics-700-x20$(root_hint)"; failures=$((failures + 1))
    tail -n 20 "$work/metrics-700/command.out" "$work/metrics-700"/*errors.log 2>/dev/null
fi
grep "^    " "$work/metrics-700/check"

# quote STRING: percent-encoded for a URL path segment (Call-IDs hold '@').
quote() { python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$1"; }
# active_call_ids: the Call-IDs /api/calls lists, one per line.
active_call_ids() {
    curl -fsS "http://$http/api/calls" |
        python3 -c 'import json, sys; [print(c["call_id"]) for c in json.load(sys.stdin)["calls"]]'
}
# call_answered: /api/calls lists an answered call.
call_answered() {
    curl -fsS "http://$http/api/calls" 2>/dev/null | python3 -c '
import json, sys
sys.exit(0 if any(c["state"] == "answered" for c in json.load(sys.stdin)["calls"]) else 1)'
}

# Admin API: DELETE /api/calls/{id} ends a live call with a BYE that SIPp must receive
# (wait_bye.xml fails unless the BYE comes within 30 s), and the call leaves the list.
mkdir -p "$work/admin-hangup"
( cd "$work/admin-hangup" && timeout 60 sipp -sf "$sc/wait_bye.xml" -s 600 -m 1 -p 5118 \
    -mp 16060 -timeout 40s -timeout_error -trace_err -nostdin "$target" >stdout 2>&1 ) &
hangup_sipp=$!
hangup_id=""
# call_listed: sets hangup_id once /api/calls lists the call (or SIPp gave up).
call_listed() {
    hangup_id="$(active_call_ids | head -n 1)"
    [ -n "$hangup_id" ] || ! kill -0 "$hangup_sipp" 2>/dev/null
}
wait_until 60 call_listed
hangup_code="$(curl -s -o "$work/admin-hangup/delete.json" -w '%{http_code}' -X DELETE \
    "http://$http/api/calls/$(quote "$hangup_id")")"
wait "$hangup_sipp"; hangup_rc=$?
if [ -n "$hangup_id" ] && [ "$hangup_code" = 204 ] && [ "$hangup_rc" = 0 ] && [ -z "$(active_call_ids)" ]; then
    echo "PASS admin-hangup (DELETE /api/calls/$hangup_id: 204, SIPp got the BYE)"
else
    echo "FAIL admin-hangup (call '$hangup_id', DELETE answered $hangup_code, SIPp exit $hangup_rc," \
        "calls left: $(active_call_ids | tr '\n' ' '))"
    cat "$work/admin-hangup/delete.json" 2>/dev/null; tail -n 5 "$work/admin-hangup/stdout"
    failures=$((failures + 1))
fi

# DTMF: keys 1, 2, 3 as RFC 4733 events (payload type 101, offered as 101) to 600. Each
# key must give exactly one "DTMF received digit=N" line, and nothing else DTMF may be
# logged during the call. The log is coloured (tracing's ANSI escapes): strip them first.
log_mark=$(wc -l <"$work/siphon.log")
run dtmf-123 0 -sf "$sc/dtmf.xml" -s 600 -m 1 -p 5113 -i 127.0.0.1 -mp 16010
dtmf_log="$(tail -n +"$((log_mark + 1))" "$work/siphon.log" | sed 's/\x1b\[[0-9;]*m//g' | grep "DTMF received")"
dtmf_ok=1
for d in 1 2 3; do
    n=$(grep -cE "DTMF received digit=$d( |$)" <<<"$dtmf_log")
    [ "$n" = 1 ] || { echo "FAIL dtmf-digit-$d ($n log lines, expected 1)$(root_hint)"; dtmf_ok=0; }
done
n=$(grep -c . <<<"$dtmf_log")
[ "$n" = 3 ] || { echo "FAIL dtmf-total ($n DTMF lines, expected 3)"; dtmf_ok=0; }
if [ "$dtmf_ok" = 1 ]; then echo "PASS dtmf-log"; else failures=$((failures + 1)); grep . <<<"$dtmf_log"; fi

# Overload: an INVITE flood at 4x the default 100 calls/s limit while a call with real RTP
# runs. The flood's excess must get 503s, Siphon's memory must stay bounded, and the
# established call must lose no RTP (the same stream checks as echo-rtp).
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$siphon_pid/status"; }
rss_before=$(rss_kb)
mkdir -p "$work/flood"
# The flood starts once the measured call is up (answered in /api/calls; it would otherwise
# compete for the same call-rate tokens as the flood: refusing it would be correct, but not
# the point here), and so runs while the call's audio flows.
( wait_until 120 call_answered; cd "$work/flood" && timeout 120 sipp -sf "$sc/flood.xml" -s 600 -r 400 -m 2000 -l 1000 \
    -p 5115 -mp 16030 -trace_logs -nostdin 127.0.0.1:"$port" >stdout 2>&1 ) &
flood_pid=$!
rtp_echo echo-under-flood 600 16040 5116
wait "$flood_pid"
refused=$(cat "$work"/flood/*_logs.log 2>/dev/null | grep -c "refused 503")
rss_after=$(rss_kb)
growth=$(( (rss_after - rss_before) / 1024 ))
if [ "$refused" -gt 0 ]; then
    echo "PASS flood-503 ($refused of 2000 flood INVITEs refused with 503)"
else
    echo "FAIL flood-503 (no 503 seen by the flood)"; failures=$((failures + 1))
fi
if [ "$growth" -lt 64 ]; then
    echo "PASS flood-memory (RSS ${rss_before} kB -> ${rss_after} kB)"
else
    echo "FAIL flood-memory (RSS grew ${growth} MB: ${rss_before} kB -> ${rss_after} kB)"
    failures=$((failures + 1))
fi

# --- Pipecat: a voice-AI service built on Pipecat (PyPI pipecat-ai) must work against
# Siphon's "twilio" fork mode unchanged. pipecat_twilio_service.py is such a service: it
# detects the provider with Pipecat's parse_telephony_websocket and turns every message into
# frames (and its echo back into messages) with Pipecat's TwilioFrameSerializer. It runs in
# a venv cached under ${XDG_CACHE_HOME:-~/.cache}/siphon/pipecat-venv (created when missing:
# pip needs PyPI; a failure is a FAIL with pip's words, never a skip). A second Siphon
# (sip-tests/pipecat.toml: SIP 127.0.0.1:5064, RTP 30000-30998, no built-in analytics)
# forks route 702 to it. Two calls: the 7 s of speech (as echo-rtp, checked the same way
# with rtp_check.py; the capture filter's "udp port MEDIA_PORT" takes both directions), then
# DTMF 1 2 3. pipecat_check.py then judges what Pipecat saw and what the caller heard.
pipecat_version=1.14.0
pipecat_venv="${XDG_CACHE_HOME:-$HOME/.cache}/siphon/pipecat-venv"
pipecat_py="$pipecat_venv/bin/python"
pipecat_ws=127.0.0.1:8094   # must match route 702's fork url in pipecat.toml
pipecat_sip=127.0.0.1:5064  # must match pipecat.toml's sip.listen

# pipecat_venv_ready: the cached venv has pipecat-ai $pipecat_version and websockets, and
# finished installing (the marker is written last).
pipecat_venv_ready() {
    [ "$(cat "$pipecat_venv/.siphon-pipecat" 2>/dev/null)" = "pipecat-ai==$pipecat_version" ] &&
        "$pipecat_py" -c "import importlib.metadata as m; m.version('websockets');
assert m.version('pipecat-ai') == '$pipecat_version'" 2>/dev/null
}

# ensure_pipecat_venv: reuses the cached venv or builds it; prints PASS or FAIL (with why).
ensure_pipecat_venv() {
    local log="$work/pipecat/venv.log" t0=$SECONDS
    if pipecat_venv_ready; then
        echo "PASS pipecat-venv (cached: $pipecat_venv)"; return 0
    fi
    if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        echo "FAIL pipecat-venv (pipecat-ai $pipecat_version needs Python >= 3.11; python3 is" \
            "$(python3 --version 2>&1))"
        return 1
    fi
    echo "    creating $pipecat_venv (pip install pipecat-ai==$pipecat_version websockets)"
    rm -rf "$pipecat_venv"; mkdir -p "$(dirname "$pipecat_venv")"
    if ! python3 -m venv "$pipecat_venv" >"$log" 2>&1; then
        echo "FAIL pipecat-venv (python3 -m venv failed; on Debian/Ubuntu install python3-venv):"
        tail -n 5 "$log" | sed 's/^/    /'; rm -rf "$pipecat_venv"; return 1
    fi
    if ! timeout 1200 "$pipecat_py" -m pip install --disable-pip-version-check --no-input \
        "pipecat-ai==$pipecat_version" websockets >>"$log" 2>&1; then
        echo "FAIL pipecat-venv (pip install pipecat-ai==$pipecat_version websockets failed" \
            "after $((SECONDS - t0)) s; PyPI must be reachable). pip said:"
        { grep -iE "error|could not|failed|timed out" "$log" || tail -n 5 "$log"; } |
            awk '!seen[$0]++' | tail -n 10 | sed 's/^/    /'
        rm -rf "$pipecat_venv"; return 1
    fi
    echo "pipecat-ai==$pipecat_version" >"$pipecat_venv/.siphon-pipecat"
    if ! pipecat_venv_ready; then
        echo "FAIL pipecat-venv (installed, but pipecat-ai $pipecat_version is not what it holds)"
        rm -rf "$pipecat_venv"; return 1
    fi
    echo "PASS pipecat-venv (created in $((SECONDS - t0)) s: $pipecat_venv," \
        "$(du -sh "$pipecat_venv" | cut -f1))"
}

# pipecat_fail WHAT: one failure, with the logs that explain it.
pipecat_fail() {
    echo "FAIL $1"; failures=$((failures + 1))
    echo "    --- Pipecat service log (tail) ---"; tail -n 15 "$work/pipecat/service.log" 2>/dev/null | sed 's/^/    /'
    echo "    --- second Siphon log (tail) ---"
    tail -n 15 "$work/pipecat/siphon.log" 2>/dev/null | sed 's/\x1b\[[0-9;]*m//g; s/^/    /'
}

pipecat_tests() {
    # run() and rtp_echo() send SIPp to $target: this function's calls go to the second Siphon.
    local target="$pipecat_sip" result="$work/pipecat/result.json" ok=1 t0=$SECONDS
    "$pipecat_py" "$here/pipecat_twilio_service.py" --listen "$pipecat_ws" --calls 2 \
        --result "$result" --pcm-dir "$work/pipecat" --timeout 300 >"$work/pipecat/service.log" 2>&1 &
    pipecat_pid=$!
    "${rt[@]}" "$siphon" --config "$here/pipecat.toml" --log info >"$work/pipecat/siphon.log" 2>&1 &
    siphon2_pid=$!
    # The service is up once it says so (importing Pipecat takes a few seconds, more on a
    # loaded machine); Siphon once it answers OPTIONS.
    service_listening() {
        grep -q "^listening on" "$work/pipecat/service.log" 2>/dev/null ||
            ! kill -0 "$pipecat_pid" 2>/dev/null
    }
    wait_until 120 service_listening
    if ! grep -q "^listening on" "$work/pipecat/service.log" 2>/dev/null; then
        pipecat_fail "pipecat-service-start (the Pipecat service did not start listening on $pipecat_ws)"
        return 1
    fi
    local service_up=$((SECONDS - t0))
    wait_until 60 answers_options 5198 "$pipecat_sip" "$siphon2_pid"
    echo "    (Pipecat service listening after ${service_up} s, second Siphon answering after" \
        "$((SECONDS - t0)) s)"

    rtp_echo pipecat-702-rtp 702 16030 5115
    run pipecat-702-dtmf 0 -sf "$sc/dtmf.xml" -s 702 -m 1 -p 5116 -i 127.0.0.1 -mp 16040

    # The service exits once both calls' WebSockets have closed (at once, when Siphon closes
    # them after each call).
    service_exited() { ! kill -0 "$pipecat_pid" 2>/dev/null; }
    wait_until 60 service_exited
    if kill -0 "$pipecat_pid" 2>/dev/null; then
        pipecat_fail "pipecat-service-exit (the service still waits for a call's WebSocket to end)"
        kill "$pipecat_pid" 2>/dev/null; ok=0
    fi
    wait "$pipecat_pid" 2>/dev/null; pipecat_pid=""

    local common=(--result "$result" --config "$here/pipecat.toml" --number 702
        --siphon-log "$work/pipecat/siphon.log")
    if "$pipecat_py" "$here/pipecat_check.py" "${common[@]}" --call 0 \
        --capture "$work/pipecat-702-rtp.pcapng" --mport 16030 >"$work/pipecat/check-audio" 2>&1; then
        echo "PASS pipecat-702-service"
    else
        pipecat_fail "pipecat-702-service"; ok=0
    fi
    sed 's/^/    /' "$work/pipecat/check-audio"
    if "$pipecat_py" "$here/pipecat_check.py" "${common[@]}" --call 1 --dtmf 123 \
        >"$work/pipecat/check-dtmf" 2>&1; then
        echo "PASS pipecat-702-dtmf-service"
    else
        pipecat_fail "pipecat-702-dtmf-service"; ok=0
    fi
    sed 's/^/    /' "$work/pipecat/check-dtmf"

    if ! kill -0 "$siphon2_pid" 2>/dev/null; then
        pipecat_fail "pipecat-siphon (the second Siphon exited during the tests)"
    fi
    kill -TERM "$siphon2_pid"
    if wait "$siphon2_pid"; then echo "PASS pipecat-clean-shutdown"; else
        pipecat_fail "pipecat-clean-shutdown"; fi
    siphon2_pid=""
    [ "$ok" = 1 ]
}

mkdir -p "$work/pipecat"
pipecat_t0=$SECONDS
if ensure_pipecat_venv; then
    pipecat_tests
    echo "    (pipecat section: $((SECONDS - pipecat_t0)) s)"
else
    failures=$((failures + 1))
fi

# Every metric the Grafana dashboard and the alert rules query must be one Siphon exports
# (checked after all the traffic above, so that labelled series exist).
if python3 "$here/metrics_check.py" names --metrics "http://$http/metrics" \
    "$root/deploy/grafana/dashboards/siphon.json" "$root/deploy/alerts.yml" >"$work/names" 2>&1; then
    echo "PASS dashboard-metrics"
else
    echo "FAIL dashboard-metrics"; failures=$((failures + 1))
fi
cat "$work/names"

# --- The three fork protocols end to end: a second Siphon (the default configuration with
# its own ports: SIP 5066, HTTP 8086, RTP 40000-40098, and its built-in analytics service on
# 8095 writing one WAV per stream) forks 711 (native, L16), 712 (twilio, mu-law) and 713
# (audio_fork, L16) to the reference analytics service, which echoes. For each: the speech
# call as echo-rtp (the caller must hear the service's echo as one continuous stream,
# rtp_check.py), then fork_wav_check.py: the WAV the service wrote must be exactly SIPp's
# audio (A-law decoded; for twilio carried as mu-law), every frame, in order.
modes_tests() {
    local target=127.0.0.1:5066 dir="$work/modes" conf="$work/modes/siphon.toml"
    mkdir -p "$dir/wav"
    sed -e 's/^listen = "127.0.0.1:5060"/listen = "127.0.0.1:5066"/' \
        -e 's/^listen = "127.0.0.1:8080"/listen = "127.0.0.1:8086"/' \
        -e 's/^listen = "127.0.0.1:8090"/listen = "127.0.0.1:8095"\nout_dir = "'"${dir//\//\\/}"'\/wav"/' \
        -e 's/^port_min = 20000/port_min = 40000/' -e 's/^port_max = 29998/port_max = 40098/' \
        "$root/configs/siphon.toml" >"$conf"
    local n=711
    for mode in native twilio audio_fork; do
        local path="${mode/_/-}" enc="l16"
        [ "$mode" = twilio ] && enc="pcmu"
        printf '\n[[dialplan]]\nnumber = "%s"\naction = "fork"\nauth = "none"\n[[dialplan.forks]]\nurl = "ws://127.0.0.1:8095/%s"\nmode = "%s"\nencoding = "%s"\nsample_rate = 8000\ntracks = "inbound"\n' \
            "$n" "$path" "$mode" "$enc" >>"$conf"
        n=$((n + 1))
    done
    "${rt[@]}" "$siphon" --config "$conf" --log info >"$dir/siphon.log" 2>&1 &
    siphon2_pid=$!
    wait_until 60 answers_options 5197 "$target" "$siphon2_pid"
    n=711
    local mp=16300 sp=5130
    local before wav
    # wav_written: sets wav to the stream's new WAV once the service has finished it. The
    # service writes the sizes into the header when the stream's connection ends (after
    # the fork's stop, moments after the call); until then they do not match the file.
    wav_written() {
        wav="$(comm -13 <(echo "$before") <(ls "$dir/wav") | head -n 1)"
        [ -n "$wav" ] && python3 - "$dir/wav/$wav" <<'PY'
import os, struct, sys
size = os.path.getsize(sys.argv[1])
with open(sys.argv[1], "rb") as f:
    h = f.read(44)
riff, data = struct.unpack("<I", h[4:8])[0], struct.unpack("<I", h[40:44])[0]
sys.exit(0 if size > 44 and riff == size - 8 and data == size - 44 else 1)
PY
    }
    for mode in native twilio audio_fork; do
        before="$(ls "$dir/wav")"
        rtp_echo "fork-$n-$mode-rtp" "$n" "$mp" "$sp"
        wait_until 60 wav_written
        if [ -n "$wav" ] && python3 "$here/fork_wav_check.py" --capture "$work/fork-$n-$mode-rtp.pcapng" \
            --mport "$mp" --wav "$dir/wav/$wav" --mode "$mode" >"$dir/check-$mode" 2>&1; then
            echo "PASS fork-$n-$mode-service-audio"
        else
            echo "FAIL fork-$n-$mode-service-audio (WAV '${wav:-none}')"; failures=$((failures + 1))
        fi
        sed 's/^/    /' "$dir/check-$mode"
        n=$((n + 1)); mp=$((mp + 20)); sp=$((sp + 1))
    done
    kill -TERM "$siphon2_pid"
    if ! wait "$siphon2_pid"; then
        echo "FAIL modes-siphon-shutdown"; failures=$((failures + 1))
        tail -n 20 "$dir/siphon.log"
    fi
    siphon2_pid=""
}
modes_tests

# --- A restart under a registered phone: SIPp registers 1001 with digest on a Siphon of
# its own (the default configuration with SIP 5069, HTTP 8089, analytics 8099, RTP
# 40400-40498), Siphon is restarted (SIGTERM, start again: a new nonce key, as without
# [auth] nonce_secret_file), and the phone refreshes with its cached credentials: it must
# get 401 with stale=true (not 403, not a failure count) and then register
# (register_restart.xml). /metrics must show no authentication failure afterwards.
restart_tests() {
    local target=127.0.0.1:5069 http4=127.0.0.1:8089 dir="$work/restart"
    mkdir -p "$dir"
    sed -e 's|^listen = "127.0.0.1:5060"|listen = "127.0.0.1:5069"|' \
        -e 's|^listen = "127.0.0.1:8080"|listen = "127.0.0.1:8089"|' \
        -e 's|^listen = "127.0.0.1:8090"|listen = "127.0.0.1:8099"|' \
        -e 's|^port_min = 20000|port_min = 40400|' -e 's|^port_max = 29998|port_max = 40498|' \
        -e '/^nonce_secret_file = /d' "$root/configs/siphon.toml" >"$dir/siphon.toml"
    start_restart_siphon() {
        "$siphon" --config "$dir/siphon.toml" --log info >>"$dir/siphon.log" 2>&1 &
        siphon2_pid=$!
        for _ in $(seq 200); do
            curl -fsS "http://$http4/healthz" >/dev/null 2>&1 && return 0
            sleep 0.1
        done
        return 1
    }
    start_restart_siphon
    ( cd "$dir" && timeout 120 sipp -sf "$sc/register_restart.xml" -s 1001 -au 1001 -ap secret1001 \
        -m 1 -p 5123 -timeout 90s -timeout_error -trace_err -nostdin "$target" >stdout 2>&1 ) &
    local sipp_pid=$! registered=0
    for _ in $(seq 200); do
        if curl -fsS "http://$http4/api/registrations" 2>/dev/null | grep -q '"aor":"1001"'; then
            registered=1; break
        fi
        sleep 0.1
    done
    kill -TERM "$siphon2_pid"; wait "$siphon2_pid"; siphon2_pid=""
    local restarted=0
    start_restart_siphon && restarted=1
    wait "$sipp_pid"; local rc=$?
    local failed
    failed="$(curl -fsS "http://$http4/metrics" | awk '/^siphon_sip_auth_failures_total / {print $2}')"
    kill -TERM "$siphon2_pid"; wait "$siphon2_pid"; siphon2_pid=""
    if [ "$registered" = 1 ] && [ "$restarted" = 1 ] && [ "$rc" = 0 ] && [ "${failed:-x}" = 0 ]; then
        echo "PASS restart-cached-credentials (401 stale=true, then 200; 0 auth failures)"
    else
        echo "FAIL restart-cached-credentials (registered=$registered restarted=$restarted" \
            "sipp exit $rc, auth failures ${failed:-?})"
        tail -n 20 "$dir"/*errors.log "$dir/stdout" 2>/dev/null
        sed 's/\x1b\[[0-9;]*m//g' "$dir/siphon.log" | grep -i "register\|auth" | tail -n 10
        failures=$((failures + 1))
    fi
}
restart_tests

# Calls between registered phones (B2BUA): its own file, SIP ports 5200-5202, media 162xx.
source "$here/b2bua.sh"
# shellcheck source=sip-tests/extensions.sh
source "$here/extensions.sh"

# --- SIP over TLS with a real client: baresip (Debian's baresip-core 1.0) registers 1001
# over TLS with digest auth and calls 600 on a third Siphon (the default configuration with
# SIP 5067, TLS 5068, HTTP 8087, analytics 8097, RTP 40200-40298) whose certificate openssl
# makes here and baresip trusts (sip_cafile). SIPp cannot do this: Debian's sip-tester is
# built without OpenSSL. baresip's own log says whether it registered and got RTP;
# Siphon's /api/registrations shows the TLS binding and /metrics the call's RTP both ways.
tls_tests() {
    local dir="$work/tls" http3=127.0.0.1:8087
    mkdir -p "$dir/baresip"
    if ! openssl req -x509 -newkey rsa:2048 -nodes -keyout "$dir/key.pem" -out "$dir/cert.pem" \
        -days 1 -subj /CN=localhost -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
        >"$dir/openssl.log" 2>&1; then
        echo "FAIL tls-certificate"; cat "$dir/openssl.log"; failures=$((failures + 1)); return 1
    fi
    sed -e 's|^listen = "127.0.0.1:5060"|listen = "127.0.0.1:5067"\ntls_listen = "127.0.0.1:5068"\ntls_cert = "'"$dir"'/cert.pem"\ntls_key = "'"$dir"'/key.pem"|' \
        -e 's|^listen = "127.0.0.1:8080"|listen = "127.0.0.1:8087"|' \
        -e 's|^listen = "127.0.0.1:8090"|listen = "127.0.0.1:8097"|' \
        -e 's|^port_min = 20000|port_min = 40200|' -e 's|^port_max = 29998|port_max = 40298|' \
        "$root/configs/siphon.toml" >"$dir/siphon.toml"
    # ausine generates 48 kHz stereo only; baresip resamples to PCMU's 8 kHz mono. aufile
    # cannot play in baresip 1.0, so what the caller hears is judged from Siphon's counters.
    printf '%s\n' "poll_method epoll" "sip_listen 127.0.0.1:5310" "sip_cafile $dir/cert.pem" \
        "audio_player aufile,$dir/baresip/unused.wav" "audio_source ausine,440" \
        "audio_alert aufile,/dev/null" "ausrc_srate 48000" "ausrc_channels 2" \
        "auplay_srate 48000" "rtp_ports 16400-16498" "module_path /usr/lib/baresip/modules" \
        "module g711.so" "module ausine.so" "module aufile.so" "module_app account.so" \
        "module_app menu.so" >"$dir/baresip/config"
    echo "<sip:1001@127.0.0.1:5068;transport=tls>;auth_pass=secret1001;regint=300;audio_codecs=PCMU" \
        >"$dir/baresip/accounts"
    "${rt[@]}" "$siphon" --config "$dir/siphon.toml" --log info >"$dir/siphon.log" 2>&1 &
    siphon2_pid=$!
    wait_until 60 curl -fsS -o /dev/null "http://$http3/healthz"
    # Fifteen seconds: register, call 600 (echo; seconds of RTP however slow the start on a
    # loaded machine), hang up and unregister on the way out.
    timeout 60 baresip -f "$dir/baresip" -e "/dial 600" -t 15 >"$dir/baresip.log" 2>&1 &
    local baresip_pid=$! reg=""
    # tls_bound: sets reg once the registration over TLS is listed (or baresip has quit).
    tls_bound() {
        reg="$(curl -fsS "http://$http3/api/registrations" 2>/dev/null)"
        grep -q '"transport":"TLS"' <<<"$reg" || ! kill -0 "$baresip_pid" 2>/dev/null
    }
    wait_until 60 tls_bound
    wait "$baresip_pid"
    local metrics rtp_in rtp_out
    metrics="$(curl -fsS "http://$http3/metrics")"
    kill -TERM "$siphon2_pid"; wait "$siphon2_pid"; siphon2_pid=""
    rtp_in="$(awk '/^siphon_rtp_packets_total\{direction="in"\}/ {print $2}' <<<"$metrics")"
    rtp_out="$(awk '/^siphon_rtp_packets_total\{direction="out"\}/ {print $2}' <<<"$metrics")"
    if grep -aq "{0/TLS/v4} 200 OK" "$dir/baresip.log" && grep -q '"aor":"1001"' <<<"$reg" &&
        grep -q '"transport":"TLS"' <<<"$reg"; then
        echo "PASS tls-baresip-register (1001 bound over TLS)"
    else
        echo "FAIL tls-baresip-register (registrations: ${reg:-none})"; failures=$((failures + 1))
        grep -a "reg:\|TLS" "$dir/baresip.log" | head -n 5
    fi
    if grep -aq "incoming rtp for 'audio' established" "$dir/baresip.log" &&
        [ "${rtp_in:-0}" -ge 150 ] && [ "${rtp_out:-0}" -ge 150 ]; then
        echo "PASS tls-baresip-call-600 (RTP in $rtp_in, out $rtp_out packets)"
    else
        echo "FAIL tls-baresip-call-600 (RTP in ${rtp_in:-?}, out ${rtp_out:-?})"; failures=$((failures + 1))
        grep -a "call:\|audio:\|session" "$dir/baresip.log" | head -n 8
    fi
}
tls_tests

# The compose stack's configuration is valid for this binary.
# With the admin token the compose file passes in the environment (HTTP listens on every
# interface there, which needs one).
if SIPHON_HTTP_TOKEN=compose-token "$siphon" check-config "$root/deploy/siphon.toml" \
    >"$work/deploy-check" 2>&1; then
    echo "PASS deploy-config"
else
    echo "FAIL deploy-config"; cat "$work/deploy-check"; failures=$((failures + 1))
fi

if ! kill -0 "$siphon_pid" 2>/dev/null; then
    echo "FAIL siphon exited during the tests"; failures=$((failures + 1))
fi
# Graceful shutdown: SIGTERM while a call is up. /readyz must turn 503, a new call must be
# refused with 503 and Retry-After (refused_503.xml), the call in progress must go on to its
# own BYE (SIPp's uac hangs up 10 s after the answer: the checks below run within that; the
# default drain timeout is 30 s), and Siphon must then exit 0 with a log line saying what it
# drained.
mkdir -p "$work/drain"
( cd "$work/drain" && timeout 90 sipp -sn uac -s 600 -m 1 -d 10000 -p 5119 -timeout 60s \
    -timeout_error -trace_err -nostdin "$target" >stdout 2>&1 ) &
drain_call=$!
wait_until 60 call_answered
kill -TERM "$siphon_pid"
# draining: /readyz answers 503 (at once after SIGTERM; polled rather than assumed).
ready_code=""
draining() {
    ready_code="$(curl -s -o /dev/null -w '%{http_code}' "http://$http/readyz")"
    [ "$ready_code" = 503 ]
}
wait_until 30 draining
if [ "$ready_code" = 503 ]; then echo "PASS drain-readyz (503)"; else
    echo "FAIL drain-readyz (/readyz answered $ready_code while draining)"; failures=$((failures + 1)); fi
run drain-refuses-new-call 0 -sf "$sc/refused_503.xml" -s 600 -m 1 -p 5120
if wait "$drain_call"; then echo "PASS drain-call-completes"; else
    echo "FAIL drain-call-completes (the call up at SIGTERM did not end normally)"
    tail -n 5 "$work/drain/stdout"; failures=$((failures + 1)); fi
if wait "$siphon_pid"; then echo "PASS clean-shutdown"; else echo "FAIL clean-shutdown"; failures=$((failures + 1)); fi
siphon_pid=""
drained="$(sed 's/\x1b\[[0-9;]*m//g' "$work/siphon.log" | grep "drained: no call left")"
if grep -q "calls=1 ended_by_their_parties=1 hung_up_at_timeout=0" <<<"$drained"; then
    echo "PASS drain-log ($(sed 's/.*drained/drained/' <<<"$drained"))"
else
    echo "FAIL drain-log (no drain summary for the one call: '$drained')"; failures=$((failures + 1))
fi

# Logs for machines: a Siphon with --log-format json whose SIP message tracing is switched
# on at runtime (PUT /api/sip-trace) must log every line as a JSON object, and the traced
# OPTIONS in full. Runs once the main Siphon is gone (it takes the same ports).
"${rt[@]}" "$siphon" --listen "$target" --http "$http" --log-format json >"$work/json.log" 2>&1 &
siphon_pid=$!
wait_until 60 curl -fsS -o /dev/null "http://$http/healthz"
trace_reply="$(curl -fsS -X PUT "http://$http/api/sip-trace" -H 'Content-Type: application/json' \
    -d '{"enabled": true}')"
run json-log-options 0 -sf "$sc/options.xml" -m 1 -p 5121
kill -TERM "$siphon_pid"; wait "$siphon_pid"; siphon_pid=""
if python3 - "$work/json.log" <<'PY'
import json, sys
lines = [l for l in open(sys.argv[1]) if l.strip()]
objs = [json.loads(l) for l in lines]  # raises (and fails the check) on a non-JSON line
traced = [o for o in objs if o.get("target") == "siphon::sip_trace"]
dirs = {o["fields"].get("direction") for o in traced
        if "OPTIONS sip:" in o["fields"].get("message", "") or "CSeq: 1 OPTIONS" in o["fields"].get("message", "")}
print(f"    {len(objs)} JSON log lines, {len(traced)} traced SIP messages")
sys.exit(0 if lines and {"in", "out"} <= dirs else 1)
PY
then
    echo "PASS json-log-sip-trace ($trace_reply)"
else
    echo "FAIL json-log-sip-trace (PUT answered '$trace_reply')"; head -n 5 "$work/json.log"
    failures=$((failures + 1))
fi

# IPv6 and dual stack, with a Siphon of their own on [::]:5750.
source "$here/ipv6.sh"
# Trunks by DNS name (dnsmasq), failing over along SRV order, over UDP and over TLS that
# Siphon opens to a carrier edge (Kamailio), with a Siphon of their own on 5780.
source "$here/trunk-dns.sh"
# Carriers and phones (issue 20): RTP in every slot, forked answers through Kamailio,
# phones and a trunk behind NAT; a Siphon of its own on 5550, SIPp/Kamailio on 5500-5569.
# The silent-fork call lasts the issue's full minute: longer than carriers' RTP timeouts.
CARRIER_SILENT_S=60 bash "$here/carrier.sh" "$siphon" | sed 's/^/  /' || failures=$((failures + 1))
# Restarts, crashes and memory over many calls (issue 16): its own ports (SIP 5450, HTTP 8400).
source "$here/durability.sh"
# Siphon nodes behind two Kamailio edges sharing registrations in Redis: calls between
# phones at different edges, load spread, a node killed, a rolling restart, an edge killed.
source "$here/cluster.sh"
# Programmable calls (issue 17): originate, webhook routes, signed status events, with a
# Siphon of its own on 5850 (HTTP 8850), SIPp on 5851-5879 and a Python app on 8852-8853.
# shellcheck source=sip-tests/calls-api.sh
source "$here/calls-api.sh"
# Transfer (issue 17 part 2): REFER refusals and the transfer route's checks; a Siphon of
# its own on SIP 5950, HTTP 8900, RTP 37000-37998.
source "$here/transfer.sh"
# Blind REFER from a bridged phone (issue 17): 202, NOTIFY sipfrag, re-bridge, busy target,
# REFER in no dialog; a Siphon of its own on SIP 6000, HTTP 8950, RTP 38000-38998.
# shellcheck source=sip-tests/refer.sh
source "$here/refer.sh"
# Legs Siphon places itself (issue 17): every phone of an account rings, trunk failover,
# digest and caller ID; a Siphon of its own on SIP 6200, HTTP 9150, RTP 42000-42998.
# shellcheck source=sip-tests/new-legs.sh
source "$here/new-legs.sh"

if [ "$failures" -ne 0 ]; then
    echo "--- siphon log (tail) ---"; tail -n 40 "$work/siphon.log"
    echo "$failures SIPp check(s) failed"; exit 1
fi
echo "all SIPp checks passed"
