# shellcheck shell=bash
# IPv6 and dual stack (RFC 3261 §25.1 IPv6 references, RFC 5954; SDP `c=IN IP6`). Sourced
# by run.sh near its end; uses what run.sh defines: $work, $here, $siphon, failures,
# wait_until, answers_options, capture_start/capture_stop, rt, and b2bua.sh's udp_bound.
#
# Its own Siphon (ipv6.toml) listens on [::]:5750: one socket, both families. SIPp plays an
# IPv6 phone on ::1 and an IPv4 phone on 127.0.0.1. SIP ports 5700-5709, media 16700-16710,
# Siphon's RTP 33000-33998, HTTP 127.0.0.1:8750.

v6_target="[::1]:5750"
v4_target="127.0.0.1:5750"
v6_http="127.0.0.1:8750"

# v6_run NAME TARGET SIPP_ARGS...: SIPp against TARGET (run() always uses run.sh's $target).
v6_run() {
    local name="$1" to="$2"; shift 2
    local dir="$work/$name"; mkdir -p "$dir"
    ( cd "$dir" && timeout 120 "${rt[@]}" sipp "$@" -timeout 60s -timeout_error -trace_err \
        -trace_msg -nostdin "$to" >"$dir/stdout" 2>&1 )
    local rc=$?
    if [ "$rc" = 0 ]; then
        echo "PASS $name"
    else
        echo "FAIL $name (sipp exit $rc, expected 0)"
        tail -n 20 "$dir"/*errors.log 2>/dev/null; tail -n 5 "$dir/stdout"
        failures=$((failures + 1))
    fi
    return "$rc"
}

# v6_expect NAME FILE PATTERN: a line of FILE matches PATTERN (extended regex).
v6_expect() {
    local name="$1" file="$2" pattern="$3"
    if grep -Eq "$pattern" "$file" 2>/dev/null; then
        echo "PASS $name"
    else
        echo "FAIL $name (no '$pattern' in $(basename "$file"))"; failures=$((failures + 1))
    fi
}

ipv6_tests() {
    local sc="$here/scenarios"
    "${rt[@]}" "$siphon" --config "$here/ipv6.toml" --log info >"$work/ipv6-siphon.log" 2>&1 &
    local v6_siphon=$!
    # Reached over IPv6: the OPTIONS's Request-URI is sip:siphon@[::1]:5750, its Via
    # [::1]:5700 (rsip 0.4.0 answered the first with 400 and dropped the second).
    if ! wait_until 60 answers_options_v6 5700 "$v6_target" "$v6_siphon"; then
        echo "FAIL ipv6-start (no answer over IPv6 within 60 s)"; failures=$((failures + 1))
        kill "$v6_siphon" 2>/dev/null; wait "$v6_siphon" 2>/dev/null; return 1
    fi
    v6_run ipv6-options "$v6_target" -sf "$sc/options.xml" -m 3 -i ::1 -p 5700
    # The same socket serves IPv4 (dual stack).
    v6_run ipv6-dual-stack-options-v4 "$v4_target" -sf "$sc/options.xml" -m 3 -i 127.0.0.1 -p 5701

    # The IPv6 phone registers as 1002 from [::1]:5702 with digest auth; the binding keeps
    # its IPv6 contact and source.
    v6_run ipv6-register-1002 "$v6_target" -sf "$sc/register.xml" -s 1002 -au 1002 \
        -ap secret1002 -m 1 -i ::1 -p 5702
    local regs
    regs="$(curl -s "http://$v6_http/api/registrations")"
    if grep -q '"source":"\[::1\]:5702"' <<<"$regs"; then
        echo "PASS ipv6-binding"
    else
        echo "FAIL ipv6-binding (/api/registrations: $regs)"; failures=$((failures + 1))
    fi

    # The IPv4 phone 1001 calls 1002 (the `user` route, B2BUA). Each leg's signalling and
    # media are in its own family: the IPv6 phone gets an INVITE naming Siphon by its IPv6
    # address (Via, Contact, c=IN IP6), the IPv4 caller an answer with c=IN IP4. Both play
    # 7 s of PCMA speech; each must receive the other's whole (rtp_check.py), the callee's
    # over IPv6.
    local callee_dir="$work/ipv6-callee" caller_dir="$work/ipv6-call-from-v4"
    mkdir -p "$callee_dir" "$caller_dir"
    python3 "$here/pcap_20ms.py" /usr/share/sip-tester/g711a.pcap "$callee_dir/pcma_20ms.pcap"
    cp "$callee_dir/pcma_20ms.pcap" "$caller_dir/pcma_20ms.pcap"
    if capture_start "$work/ipv6-call.pcapng" "" "udp portrange 33000-33999 or udp port 16700 or udp port 16710"; then
        ( cd "$callee_dir" && timeout 120 "${rt[@]}" sipp -sf "$sc/b2b_callee_answer.xml" -m 1 \
            -i ::1 -p 5702 -mp 16700 -timeout 60s -timeout_error -trace_err -trace_msg -nostdin \
            "$v6_target" >"$callee_dir/stdout" 2>&1 )&
        local callee_pid=$!
        wait_until 30 udp_bound 5702
        v6_run ipv6-call-from-v4 "$v4_target" -sf "$sc/b2b_caller_bye.xml" -s 1002 -au 1001 \
            -ap secret1001 -m 1 -i 127.0.0.1 -p 5703 -mp 16710
        if wait "$callee_pid"; then
            echo "PASS ipv6-callee-answers"
        else
            echo "FAIL ipv6-callee-answers"; tail -n 20 "$callee_dir"/*errors.log 2>/dev/null
            failures=$((failures + 1))
        fi
        capture_stop
        local invite="$callee_dir/invite.txt"
        awk '/message received/ { n++ } n == 1' "$callee_dir"/*_messages.log >"$invite" 2>/dev/null
        v6_expect ipv6-invite-via "$invite" '^Via: SIP/2.0/UDP \[[0-9a-f:]+\]:5750;'
        v6_expect ipv6-invite-contact "$invite" '^Contact: <sip:siphon@\[[0-9a-f:]+\]:5750>'
        v6_expect ipv6-invite-sdp "$invite" '^c=IN IP6 [0-9a-f:]+[[:space:]]*$'
        local answer="$caller_dir/answer.txt"
        grep -A 30 '^SIP/2.0 200' "$caller_dir"/*_messages.log >"$answer" 2>/dev/null
        v6_expect ipv6-caller-sdp-v4 "$answer" '^c=IN IP4 [0-9.]+[[:space:]]*$'
        # The callee's stream really went over IPv6 (rtp_check reads both families).
        local v6_packets
        v6_packets="$(tshark -r "$work/ipv6-call.pcapng" -Y "ipv6 && udp.dstport == 16700" 2>/dev/null | wc -l)"
        if [ "${v6_packets:-0}" -ge 300 ]; then
            echo "PASS ipv6-rtp-over-ipv6 ($v6_packets packets to [::1]:16700)"
        else
            echo "FAIL ipv6-rtp-over-ipv6 (${v6_packets:-0} IPv6 packets to 16700)"
            failures=$((failures + 1))
        fi
        local side mp
        for side in callee:16700 caller:16710; do
            mp="${side#*:}"
            if python3 "$here/rtp_check.py" "$work/ipv6-call.pcapng" "$mp" 8 \
                >"$work/ipv6-${side%%:*}.check" 2>&1; then
                echo "PASS ipv6-rtp-to-${side%%:*}"
            else
                echo "FAIL ipv6-rtp-to-${side%%:*}"; failures=$((failures + 1))
            fi
            sed 's/^/    /' "$work/ipv6-${side%%:*}.check"
        done
    else
        echo "FAIL ipv6-call (no capture)"; failures=$((failures + 1))
    fi

    # The IPv6 phone calls the echo number over IPv6 and hears itself.
    mkdir -p "$work/ipv6-echo"
    cp "$callee_dir/pcma_20ms.pcap" "$work/ipv6-echo/pcma_20ms.pcap"
    if capture_start "$work/ipv6-echo.pcapng" "" "udp portrange 33000-33999 or udp port 16720"; then
        v6_run ipv6-echo "$v6_target" -sf "$sc/echo_rtp.xml" -s 600 -m 1 -i ::1 -p 5704 -mp 16720
        capture_stop
        if python3 "$here/rtp_check.py" "$work/ipv6-echo.pcapng" 16720 >"$work/ipv6-echo/check" 2>&1; then
            echo "PASS ipv6-echo-stream"
        else
            echo "FAIL ipv6-echo-stream"; failures=$((failures + 1))
        fi
        sed 's/^/    /' "$work/ipv6-echo/check"
    else
        echo "FAIL ipv6-echo (no capture)"; failures=$((failures + 1))
    fi

    kill "$v6_siphon" 2>/dev/null; wait "$v6_siphon" 2>/dev/null
}

# answers_options_v6 SIPP_PORT TARGET PID: as run.sh's answers_options, from ::1.
answers_options_v6() {
    if ! kill -0 "$3" 2>/dev/null; then return 0; fi
    sipp -sf "$here/scenarios/options.xml" -m 1 -i ::1 -p "$1" -timeout 1s -timeout_error "$2" \
        >/dev/null 2>&1
}

ipv6_tests
