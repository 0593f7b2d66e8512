# shellcheck shell=bash
# Calls between phones through Siphon (the `user` dialplan action, B2BUA). Sourced by run.sh
# near its end; uses what run.sh defines: $work, $here, $target, run(), failures,
# capture_start/capture_stop, wait_until, answers_options, udp_bound (sip-tests/lib.sh), rt (the real-time prefix for the
# processes whose audio is checked), and a Siphon on $target running
# the default configuration (routes 1001/1002 ring the phones registered as those accounts).
#
# Two SIPp instances per call: the phone registered as 1002 (a UAS scenario, on the port
# that registered, since Siphon sends to where the REGISTER came from) and the caller 1001
# (a UAC scenario with digest auth). SIP ports 5200-5202, media ports 16200 (callee) and
# 16210 (caller).

b2b_sc="$here/scenarios"
b2b_callee_port=5201

# b2b_pair NAME CALLEE_SCENARIO CALLER_SCENARIO: the callee's SIPp in the background, then
# the caller's through run(); both must exit 0.
b2b_pair() {
    local name="$1" callee_sf="$2" caller_sf="$3"
    local dir="$work/$name-callee"
    mkdir -p "$dir" "$work/$name"
    cp "$work/b2b-pcma_20ms.pcap" "$dir/pcma_20ms.pcap"
    cp "$work/b2b-pcma_20ms.pcap" "$work/$name/pcma_20ms.pcap"
    ( cd "$dir" && timeout 120 "${rt[@]}" sipp -sf "$b2b_sc/$callee_sf" -m 1 -p "$b2b_callee_port" \
        -i 127.0.0.1 -mp 16200 -timeout 60s -timeout_error -trace_err -nostdin "$target" \
        >"$dir/stdout" 2>&1 ) &
    local callee_pid=$!
    wait_until 30 udp_bound "$b2b_callee_port" # SIPp's UAS is listening
    run "$name" 0 -sf "$b2b_sc/$caller_sf" -s 1002 -au 1001 -ap secret1001 -m 1 -p 5202 \
        -i 127.0.0.1 -mp 16210
    wait "$callee_pid"
    local rc=$?
    if [ "$rc" = 0 ]; then
        echo "PASS $name-callee"
    else
        echo "FAIL $name-callee (sipp exit $rc, expected 0)"
        tail -n 20 "$dir"/*errors.log 2>/dev/null
        tail -n 5 "$dir/stdout"
        failures=$((failures + 1))
    fi
}

python3 "$here/pcap_20ms.py" /usr/share/sip-tester/g711a.pcap "$work/b2b-pcma_20ms.pcap"
# 1002's bindings from earlier checks (e.g. over TCP, connection long closed) would ring
# too: clear them, then register from the port the callee scenarios listen on.
run b2b-clear-1002 0 -sf "$b2b_sc/unregister.xml" -s 1002 -au 1002 -ap secret1002 -m 1 -p 5200
run b2b-register-1002 0 -sf "$b2b_sc/register.xml" -s 1002 -au 1002 -ap secret1002 -m 1 \
    -p "$b2b_callee_port"
# The caller registers too (the issue's two registered user agents), from its own port.
run b2b-register-1001 0 -sf "$b2b_sc/register.xml" -s 1001 -au 1001 -ap secret1001 -m 1 -p 5202

# 1001 calls 1002, both play 7 s of PCMA speech, 1001 hangs up. Each phone must receive the
# other's stream through Siphon whole: as many packets as were sent, one SSRC, continuous
# sequence numbers, +160 timestamps, 20 ms apart, PCMA (rtp_check.py, as for echo-rtp).
if capture_start "$work/b2b-talk.pcapng" 16200; then
    b2b_pair b2b-talk-caller-bye b2b_callee_answer.xml b2b_caller_bye.xml
    capture_stop
    for side in callee:16200 caller:16210; do
        mp="${side#*:}"
        if python3 "$here/rtp_check.py" "$work/b2b-talk.pcapng" "$mp" 8 \
            >"$work/b2b-talk-${side%%:*}.check" 2>&1; then
            echo "PASS b2b-rtp-to-${side%%:*}"
        else
            echo "FAIL b2b-rtp-to-${side%%:*}"; failures=$((failures + 1))
        fi
        sed 's/^/    /' "$work/b2b-talk-${side%%:*}.check"
    done
else
    echo "FAIL b2b-talk (no capture)"; failures=$((failures + 1))
fi

# Transcoding: the caller offers PCMU only and plays the speech in mu-law, the callee answers
# PCMA. Each side must get a whole stream in its own codec (PT 0 to the caller, 8 to the
# callee).
python3 "$here/pcap_to_pcmu.py" "$work/b2b-pcma_20ms.pcap" "$work/b2b-pcmu_20ms.pcap"
mkdir -p "$work/b2b-transcode"
cp "$work/b2b-pcmu_20ms.pcap" "$work/b2b-transcode/pcmu_20ms.pcap"
if capture_start "$work/b2b-transcode.pcapng" 16200; then
    b2b_pair b2b-transcode b2b_callee_answer.xml b2b_caller_bye_pcmu.xml
    capture_stop
    for side in callee:16200:8 caller:16210:0; do
        IFS=: read -r who mp pt <<<"$side"
        if python3 "$here/rtp_check.py" "$work/b2b-transcode.pcapng" "$mp" "$pt" \
            >"$work/b2b-transcode-$who.check" 2>&1; then
            echo "PASS b2b-transcoded-to-$who"
        else
            echo "FAIL b2b-transcoded-to-$who"; failures=$((failures + 1))
        fi
        sed 's/^/    /' "$work/b2b-transcode-$who.check"
    done
else
    echo "FAIL b2b-transcode (no capture)"; failures=$((failures + 1))
fi

# The callee hangs up: the caller gets BYE.
b2b_pair b2b-callee-bye b2b_callee_bye.xml b2b_caller_wait_bye.xml
# Busy: the callee's 486 reaches the caller.
b2b_pair b2b-busy-486 b2b_callee_busy.xml b2b_caller_busy.xml
# The caller cancels while 1002 rings: 487 for the caller, CANCEL for the phone.
b2b_pair b2b-cancel b2b_callee_ring.xml b2b_caller_cancel.xml

# --- Trunks, with a second Siphon (b2bua-trunk.toml: SIP 127.0.0.1:5066, RTP 31000-31998).
# SIPp plays the provider: a registrar (5206) that Siphon registers to at start with digest
# auth and must refresh within the 10 s lifetime it grants, and a trunk (5205) that
# challenges Siphon's INVITE with 407 and expects the number rewritten (0201234 ->
# +44201234). The caller is 1001, as above.
b2b_trunk_tests() {
    local target=127.0.0.1:5066
    local reg_dir="$work/b2b-registrar" trunk_dir="$work/b2b-trunk-callee"
    mkdir -p "$reg_dir" "$trunk_dir" "$work/b2b-trunk-407"
    cp "$work/b2b-pcma_20ms.pcap" "$work/b2b-trunk-407/pcma_20ms.pcap"
    # The registrar listens before Siphon starts (Siphon registers at once).
    ( cd "$reg_dir" && timeout 120 "${rt[@]}" sipp -sf "$b2b_sc/b2b_registrar.xml" -m 1 -p 5206 \
        -timeout 60s -timeout_error -trace_err -trace_msg -nostdin "$target" >"$reg_dir/stdout" 2>&1 ) &
    local reg_pid=$!
    wait_until 30 udp_bound 5206
    "${rt[@]}" "$siphon" --config "$here/b2bua-trunk.toml" --log info >"$work/b2b-siphon2.log" 2>&1 &
    local siphon2=$!
    wait_until 60 answers_options 5209 "$target" "$siphon2"
    ( cd "$trunk_dir" && timeout 120 "${rt[@]}" sipp -sf "$b2b_sc/b2b_trunk_407.xml" -m 1 -p 5205 \
        -i 127.0.0.1 -mp 16220 -timeout 60s -timeout_error -trace_err -nostdin "$target" \
        >"$trunk_dir/stdout" 2>&1 ) &
    local trunk_pid=$!
    wait_until 30 udp_bound 5205
    run b2b-trunk-407 0 -sf "$b2b_sc/b2b_caller_bye.xml" -s 0201234 -au 1001 -ap secret1001 \
        -m 1 -p 5207 -i 127.0.0.1 -mp 16230
    local name pid rc
    for name in b2b-trunk-407-provider:$trunk_pid b2b-registrar-refresh:$reg_pid; do
        pid="${name#*:}"; name="${name%%:*}"
        wait "$pid"; rc=$?
        if [ "$rc" = 0 ]; then
            echo "PASS $name"
        else
            echo "FAIL $name (sipp exit $rc, expected 0)"; failures=$((failures + 1))
            tail -n 20 "$reg_dir"/*errors.log "$trunk_dir"/*errors.log 2>/dev/null
            echo "    --- second Siphon log (tail) ---"
            tail -n 15 "$work/b2b-siphon2.log" | sed 's/\x1b\[[0-9;]*m//g; s/^/    /'
        fi
    done
    kill -TERM "$siphon2" 2>/dev/null; wait "$siphon2" 2>/dev/null
}
b2b_trunk_tests
