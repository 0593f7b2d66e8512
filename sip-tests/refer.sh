#!/usr/bin/env bash
# shellcheck shell=bash
# Blind transfer by REFER from a bridged phone (issue 17, RFC 3515) against real SIPp
# phones. Runs alone (`bash sip-tests/refer.sh [path/to/siphon]`, exits non-zero on
# failure) or sourced by run.sh (it then adds to run.sh's `failures`). It starts a Siphon
# of its own (sip-tests/refer.toml: SIP 6000, HTTP 8950, analytics 8951, RTP 38000-38998) and SIPp only on
# SIP ports 6001-6049 and media ports 16950-16999. Every name here starts with refer_ so
# that sourcing it changes nothing of run.sh's. Needs root for the tshark capture.
#
# What it checks: A (admitted by address) calls 1002 (B, a registered SIPp phone) through
# a user route and sends REFER to 1003 (C, registered): 202, NOTIFY 100 Trying, NOTIFY
# 200 OK (subscription terminated), A hangs up; B then hears C's speech, byte for byte,
# GET /api/calls shows the transfer completed by `refer`, the route's fork (stereo WAV
# of the embedded analytics service) has C's speech on the caller's channel, and C's BYE
# ends B's leg. Then a
# REFER to a busy phone (1004 answers 486): NOTIFY 486, A and B stay connected (A's BYE
# reaches B, the call table says failed 486). A REFER in no dialog: 481. And the admin
# API's transfer of a bridged call (POST /api/calls/{id}/transfer, 202): the callee gets
# BYE, the caller hears the new party. The blind REFER's NOTIFYs include `180 Ringing`;
# a REFER with Refer-Sub: false gets no NOTIFY. And an attended transfer (REFER with
# Replaces naming A's other call): the two calls are joined, B hears C (below).

refer_here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
refer_alone=0
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    refer_alone=1
    set -uo pipefail
    siphon="${1:-$(cd "$refer_here/.." && pwd)/target/release/siphon}"
    work="$(mktemp -d)"
    failures=0
    here="$refer_here"
    # shellcheck source=sip-tests/lib.sh
    source "$refer_here/lib.sh"
fi
refer_sc="$refer_here/scenarios"
refer_target=127.0.0.1:6000
refer_api=http://127.0.0.1:8950
refer_work="$work/refer"
mkdir -p "$refer_work"

refer_fail() { echo "FAIL $1"; failures=$((failures + 1)); }

# refer_phone NAME SIPP_ARGS...: SIPp in its own directory with the 20 ms A-law speech.
refer_phone() {
    local name="$1"; shift
    mkdir -p "$refer_work/$name"
    cp "$refer_work/pcma_20ms.pcap" "$refer_work/$name/"
    ( cd "$refer_work/$name" && timeout 120 "${rt[@]}" sipp "$@" -i 127.0.0.1 -timeout 60s \
        -timeout_error -trace_err -nostdin "$refer_target" >"$refer_work/$name/stdout" 2>&1 )
}
refer_result() { # refer_result NAME RC
    if [ "$2" = 0 ]; then echo "PASS $1"; else
        refer_fail "$1 (sipp exit $2)"; tail -n 15 "$refer_work/$1"/*errors.log 2>/dev/null; fi
}
refer_call_id=""
refer_answered_call() { # the bridged call's Call-ID once it is answered
    refer_call_id="$(curl -s "$refer_api/api/calls" | python3 -c '
import json, sys
calls = [c for c in json.load(sys.stdin).get("calls", []) if c.get("state") == "answered"]
print(calls[0]["call_id"] if calls else "")' 2>/dev/null)"
    [ -n "$refer_call_id" ]
}
refer_transfer_state() { # refer_transfer_state STATE CODE [BY]: GET /api/calls/{id} shows it
    curl -s "$refer_api/api/calls/$refer_call_id" >"$refer_work/call.json"
    python3 - "$refer_work/call.json" "$1" "$2" "${3:-refer}" <<'PY'
import json, sys
t = (json.load(open(sys.argv[1])) or {}).get("transfer") or {}
ok = t.get("state") == sys.argv[2] and t.get("code") == int(sys.argv[3]) and t.get("by") == sys.argv[4]
sys.exit(0 if ok else 1)
PY
}

refer_failures_before=$failures
python3 "$refer_here/pcap_20ms.py" /usr/share/sip-tester/g711a.pcap "$refer_work/pcma_20ms.pcap"
mkdir -p "$refer_work/wav"
{ cat "$refer_here/refer.toml"; printf '\n[analytics]\nlisten = "127.0.0.1:8951"\nout_dir = "%s"\n' \
    "$refer_work/wav"; printf '\n[cdr]\npath = "%s"\n' "$refer_work/cdr.jsonl"; } >"$refer_work/siphon.toml"
"${rt[@]}" "$siphon" --config "$refer_work/siphon.toml" --log info >"$refer_work/siphon.log" 2>&1 &
refer_siphon_pid=$!
if ! wait_until 60 answers_options 6049 "$refer_target" "$refer_siphon_pid" \
    || ! kill -0 "$refer_siphon_pid" 2>/dev/null; then
    refer_fail "refer-siphon-start (no answer to OPTIONS on $refer_target)"
    tail -n 20 "$refer_work/siphon.log"
fi

for refer_n in 1002 1003 1004; do
    refer_phone "refer-register-$refer_n" -sf "$refer_sc/register.xml" -s "$refer_n" \
        -au "$refer_n" -ap "secret$refer_n" -m 1 -p "60${refer_n#10}"
    refer_result "refer-register-$refer_n" $?
done

# --- REFER in no dialog Siphon holds: 481.
refer_phone refer-no-dialog-481 -sf "$refer_sc/refer_no_dialog.xml" -m 1 -p 6007
refer_result refer-no-dialog-481 $?

# --- An INVITE with Replaces naming no dialog Siphon holds: 481 (RFC 3891 §3).
refer_phone refer-invite-replaces-481 -sf "$refer_sc/refer_invite_replaces.xml" -m 1 -p 6012
refer_result refer-invite-replaces-481 $?

# --- Blind transfer: B (6002, media 16970) answers, silent; A (6001, media 16960) calls
# 1002 and after 1.5 s refers B to 1003; C (6003, media 16980) answers, speaks for 7 s and
# hangs up, which ends B's leg.
refer_saved_range="${rtp_capture_range:-}"
rtp_capture_range=38000-38998
capture_start "$refer_work/blind.pcapng" 16970
refer_phone refer-b -sf "$refer_sc/refer_callee_quiet.xml" -m 1 -p 6002 -mp 16970 &
refer_b=$!
wait_until 30 udp_bound 6002
refer_phone refer-c -sf "$refer_sc/b2b_callee_bye.xml" -m 1 -p 6003 -mp 16980 &
refer_c=$!
wait_until 30 udp_bound 6003
refer_phone refer-a -sf "$refer_sc/refer_caller_ok.xml" -s 1002 -m 1 -p 6001 -mp 16960 &
refer_a=$!
if wait_until 30 refer_answered_call; then
    if wait_until 30 refer_transfer_state completed 200; then
        echo "PASS refer-get-shows-transfer-completed"
    else
        refer_fail "refer-get-shows-transfer-completed ($(head -c 600 "$refer_work/call.json"))"
    fi
else
    refer_fail "refer-bridged-call-answered"
fi
wait "$refer_a"; refer_result refer-a $?
wait "$refer_c"; refer_result refer-c $?
wait "$refer_b"; refer_result refer-b $?
capture_stop
refer_wav=""
refer_wav_written() { # the WAV exists and its header has its sizes (the fork stopped)
    refer_wav="$(ls "$refer_work/wav" | head -n 1)"
    [ -n "$refer_wav" ] && python3 -c 'import sys, wave
sys.exit(0 if wave.open(sys.argv[1]).getnframes() > 0 else 1)' "$refer_work/wav/$refer_wav" 2>/dev/null
}
wait_until 30 refer_wav_written
# The fork's WAV is written when the call ends: C's speech is on channel 0 (A's leg).
if python3 "$refer_here/refer_rtp_check.py" "$refer_work/blind.pcapng" 16980 16970 \
    --wav "$refer_work/wav/$refer_wav" --channel 0 >"$refer_work/blind.rtpcheck" 2>&1; then
    echo "PASS refer-b-and-fork-hear-c"
else
    refer_fail "refer-b-and-fork-hear-c"
fi
sed 's/^/    /' "$refer_work/blind.rtpcheck"
if grep -q "the referrer hung up after its transfer" "$refer_work/siphon.log"; then
    echo "PASS refer-referrer-dialog-ended"
else
    refer_fail "refer-referrer-dialog-ended (no BYE from A seen in its old dialog)"
fi

# --- The target is busy: 1004 (6004) answers 486; A (6005, media 16990) and B (6002,
# media 16994) stay connected.
refer_phone refer-busy-b -sf "$refer_sc/b2b_callee_answer.xml" -m 1 -p 6002 -mp 16994 &
refer_b=$!
wait_until 30 udp_bound 6002
refer_phone refer-busy-d -sf "$refer_sc/b2b_callee_busy.xml" -m 1 -p 6004 &
refer_d=$!
wait_until 30 udp_bound 6004
refer_phone refer-busy-a -sf "$refer_sc/refer_caller_busy.xml" -s 1002 -m 1 -p 6005 -mp 16990 &
refer_a=$!
if wait_until 30 refer_answered_call && wait_until 30 refer_transfer_state failed 486; then
    echo "PASS refer-get-shows-transfer-failed-486"
else
    refer_fail "refer-get-shows-transfer-failed-486 ($(head -c 600 "$refer_work/call.json" 2>/dev/null))"
fi
wait "$refer_d"; refer_result refer-busy-d $?
wait "$refer_a"; refer_result refer-busy-a $?
wait "$refer_b"; refer_result refer-busy-b-still-bridged $?

# --- Refer-Sub: false (RFC 4488): the same busy target, but A asks for no subscription:
# the 202 says Refer-Sub: false and no NOTIFY comes (SIPp aborts on one); the call table
# still shows the failed transfer and A's BYE reaches B.
refer_phone refer-nosub-b -sf "$refer_sc/b2b_callee_answer.xml" -m 1 -p 6002 -mp 16994 &
refer_b=$!
wait_until 30 udp_bound 6002
refer_phone refer-nosub-d -sf "$refer_sc/b2b_callee_busy.xml" -m 1 -p 6004 &
refer_d=$!
wait_until 30 udp_bound 6004
refer_phone refer-nosub-a -sf "$refer_sc/refer_caller_nosub.xml" -s 1002 -m 1 -p 6010 -mp 16990 &
refer_a=$!
if wait_until 30 refer_answered_call && wait_until 30 refer_transfer_state failed 486; then
    echo "PASS refer-nosub-get-shows-transfer-failed-486"
else
    refer_fail "refer-nosub-get-shows-transfer-failed-486 ($(head -c 600 "$refer_work/call.json" 2>/dev/null))"
fi
wait "$refer_d"; refer_result refer-nosub-d $?
wait "$refer_a"; refer_result refer-nosub-a-no-notify $?
wait "$refer_b"; refer_result refer-nosub-b-still-bridged $?

# --- The admin API transfers a bridged call's caller (no REFER): A (6006, media 16964)
# speaks and waits for BYE; B (6002, media 16974, silent) answers and must get Siphon's
# BYE when the new leg answers; the API moves A to user:1003 (202); C (6003, media 16984)
# answers, speaks 7 s and hangs up, which ends A's call. A must hear C.
capture_start "$refer_work/api.pcapng" 16964
refer_phone refer-api-b -sf "$refer_sc/refer_callee_quiet.xml" -m 1 -p 6002 -mp 16974 &
refer_b=$!
wait_until 30 udp_bound 6002
refer_phone refer-api-c -sf "$refer_sc/b2b_callee_bye.xml" -m 1 -p 6003 -mp 16984 &
refer_c=$!
wait_until 30 udp_bound 6003
refer_phone refer-api-a -sf "$refer_sc/xfer_caller_wait_bye.xml" -s 1002 -m 1 -p 6006 -mp 16964 &
refer_a=$!
if wait_until 30 refer_answered_call; then
    refer_got=$(curl -s -o "$refer_work/api-transfer.json" -w '%{http_code}' -X POST \
        -H 'Content-Type: application/json' --data '{"to":"user:1003"}' \
        "$refer_api/api/calls/$refer_call_id/transfer")
    if [ "$refer_got" = 202 ]; then echo "PASS refer-api-transfer-bridged-202"; else
        refer_fail "refer-api-transfer-bridged-202 (HTTP $refer_got: $(head -c 300 "$refer_work/api-transfer.json"))"; fi
    if wait_until 30 refer_transfer_state completed 200 api; then
        echo "PASS refer-api-get-shows-transfer-completed"
    else
        refer_fail "refer-api-get-shows-transfer-completed ($(head -c 600 "$refer_work/call.json"))"
    fi
else
    refer_fail "refer-api-bridged-call-answered"
fi
wait "$refer_b"; refer_result refer-api-b-hung-up $?
wait "$refer_c"; refer_result refer-api-c $?
wait "$refer_a"; refer_result refer-api-a $?
capture_stop
if python3 "$refer_here/refer_rtp_check.py" "$refer_work/api.pcapng" 16984 16964 \
    >"$refer_work/api.rtpcheck" 2>&1; then
    echo "PASS refer-api-a-hears-c"
else
    refer_fail "refer-api-a-hears-c"
fi
sed 's/^/    /' "$refer_work/api.rtpcheck"

# --- Attended transfer (REFER with Replaces, RFC 3891 / RFC 5589 §7). A's first call
# (6008, media 16950) calls 1002: B (6002, media 16958, silent) answers, A puts it on hold
# (Siphon relays the hold to B), and writes that dialog's Call-ID and tags to call1.csv.
# A's second call (6009, media 16954) calls 1003: C (6003, media 16986) answers, and A
# sends REFER there with Refer-To B and Replaces naming the first call. Siphon joins C
# into the first call in A's place: 202, NOTIFY 100 and 200 to A's second dialog (A's BYE
# there answered), BYE to A's first dialog, B taken off hold (re-INVITE sendrecv). C,
# silent for 4 s, then speaks 7 s and hangs up; B gets BYE. B (and the first call's fork)
# must hear C byte for byte; the call table must hold one call, with an attended transfer
# naming the other; the CDRs of both calls must say so.
rm -f "$refer_work/wav"/*
capture_start "$refer_work/attended.pcapng" 16958
refer_phone refer-att-b -sf "$refer_sc/refer_attended_b.xml" -m 1 -p 6002 -mp 16958 &
refer_b=$!
wait_until 30 udp_bound 6002
refer_phone refer-att-c -sf "$refer_sc/refer_attended_c.xml" -m 1 -p 6003 -mp 16986 &
refer_c=$!
wait_until 30 udp_bound 6003
refer_phone refer-att-a1 -sf "$refer_sc/refer_attended_a1.xml" -s 1002 -m 1 -p 6008 -mp 16950 \
    -cid_str "attended-%u-%p" &
refer_a1=$!
refer_call1_csv="$refer_work/refer-att-a1/call1.csv"
if wait_until 30 test -s "$refer_call1_csv"; then
    refer_call1="$(sed -n 2p "$refer_call1_csv" | cut -d';' -f1)"
    refer_phone refer-att-a2 -sf "$refer_sc/refer_attended_a2.xml" -s 1003 -m 1 -p 6009 -mp 16954 \
        -inf "$refer_call1_csv" &
    refer_a2=$!
    refer_attended_left() { # one call left: the first, its transfer attended, joined = the second
        curl -s "$refer_api/api/calls" >"$refer_work/attended-calls.json"
        python3 - "$refer_work/attended-calls.json" "$refer_call1" <<'PY'
import json, sys
calls = json.load(open(sys.argv[1])).get("calls", [])
if len(calls) != 1 or calls[0].get("call_id") != sys.argv[2]:
    sys.exit(1)
t = calls[0].get("transfer") or {}
ok = (t.get("attended") is True and t.get("by") == "refer" and t.get("state") == "completed"
      and t.get("code") == 200 and t.get("joined") and t.get("joined") != sys.argv[2])
sys.exit(0 if ok else 1)
PY
    }
    if wait_until 30 refer_attended_left; then
        echo "PASS refer-attended-one-call-left-transfer-attended"
    else
        refer_fail "refer-attended-one-call-left-transfer-attended ($(head -c 800 "$refer_work/attended-calls.json"))"
    fi
    wait "$refer_a2"; refer_result refer-att-a2 $?
else
    refer_fail "refer-att-a1-wrote-its-dialog"
fi
wait "$refer_a1"; refer_result refer-att-a1 $?
wait "$refer_c"; refer_result refer-att-c $?
wait "$refer_b"; refer_result refer-att-b $?
capture_stop
wait_until 30 refer_wav_written
if python3 "$refer_here/refer_rtp_check.py" "$refer_work/attended.pcapng" 16986 16958 \
    --wav "$refer_work/wav/$refer_wav" --channel 0 >"$refer_work/attended.rtpcheck" 2>&1; then
    echo "PASS refer-attended-b-and-fork-hear-c"
else
    refer_fail "refer-attended-b-and-fork-hear-c"
fi
sed 's/^/    /' "$refer_work/attended.rtpcheck"
refer_attended_cdrs() { # both calls' CDRs carry the attended transfer, each naming the other
    python3 - "$refer_work/cdr.jsonl" "${refer_call1:-}" <<'PY'
import json, sys
cdrs = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    cdrs[r["call_id"]] = r
first = cdrs.get(sys.argv[2]) or {}
t1 = first.get("transfer") or {}
second = cdrs.get(t1.get("joined") or "") or {}
t2 = second.get("transfer") or {}
ok = (t1.get("attended") is True and t2.get("attended") is True
      and t2.get("joined") == sys.argv[2] and second.get("end_reason") == "AttendedTransfer")
sys.exit(0 if ok else 1)
PY
}
if wait_until 30 refer_attended_cdrs; then
    echo "PASS refer-attended-cdrs-of-both-calls"
else
    refer_fail "refer-attended-cdrs-of-both-calls"
    tail -n 3 "$refer_work/cdr.jsonl" 2>/dev/null | cut -c1-600 | sed 's/^/    /'
fi

# --- REFER in a call Siphon serves: A (6011, media 16962) calls 700 (fork), speaks, and
# 1.5 s in refers to 1003: C (6003, media 16988) answers, speaks 7 s, hangs up; A gets the
# NOTIFYs 100, 180 and 200, stays in its dialog, hears C, and gets BYE when C hangs up.
capture_start "$refer_work/served.pcapng" 16962
refer_phone refer-served-c -sf "$refer_sc/b2b_callee_bye.xml" -m 1 -p 6003 -mp 16988 &
refer_c=$!
wait_until 30 udp_bound 6003
refer_phone refer-served-a -sf "$refer_sc/refer_served_caller.xml" -s 700 -m 1 -p 6011 -mp 16962 &
refer_a=$!
if wait_until 30 refer_answered_call && wait_until 30 refer_transfer_state completed 200; then
    echo "PASS refer-served-get-shows-transfer-completed"
else
    refer_fail "refer-served-get-shows-transfer-completed ($(head -c 600 "$refer_work/call.json" 2>/dev/null))"
fi
wait "$refer_c"; refer_result refer-served-c $?
wait "$refer_a"; refer_result refer-served-a-notified-then-bye $?
capture_stop
if python3 "$refer_here/refer_rtp_check.py" "$refer_work/served.pcapng" 16988 16962 \
    >"$refer_work/served.rtpcheck" 2>&1; then
    echo "PASS refer-served-a-hears-c"
else
    refer_fail "refer-served-a-hears-c"
fi
sed 's/^/    /' "$refer_work/served.rtpcheck"
rtp_capture_range="$refer_saved_range"

kill -TERM "$refer_siphon_pid" 2>/dev/null; wait "$refer_siphon_pid" 2>/dev/null
if [ "$failures" != "$refer_failures_before" ]; then
    echo "--- refer Siphon log (tail) ---"
    sed 's/\x1b\[[0-9;]*m//g' "$refer_work/siphon.log" | tail -n 30 | sed 's/^/    /'
fi
if [ "$refer_alone" = 1 ]; then
    [ -n "${KEEP_WORK:-}" ] && echo "work dir kept: $work" || rm -rf "$work"
    if [ "$failures" -ne 0 ]; then echo "$failures REFER check(s) failed"; exit 1; fi
    echo "all REFER checks passed"
fi
