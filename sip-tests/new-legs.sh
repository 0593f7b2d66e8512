#!/usr/bin/env bash
# shellcheck shell=bash
# Legs Siphon places itself (POST /api/calls; the API's transfer uses the same code) against
# real SIPp peers (issue 17). Runs alone (`bash sip-tests/new-legs.sh [path/to/siphon]`,
# exits non-zero on failure) or sourced by run.sh (it then adds to run.sh's `failures`).
# Its own Siphon (sip-tests/new-legs.toml: SIP 6200, HTTP 9150, RTP 42000-42998), SIPp on
# SIP 6201-6248 (media 42900-42990, inside no Siphon range), dnsmasq on 6249. Every name
# starts with legs_ so that sourcing it changes nothing of run.sh's.
#
# What it checks: two SIPp phones registered as 1002 both get the originated INVITE to
# user:1002; one answers, the other must see CANCEL (200, 487, ACK) and the API's hang-up
# reaches the one that answered. A `from` the trunk does not list is 403. A call to
# trunk:carrier/+44201234 from +15550001111: SRV sends it first to a SIPp answering 503
# (it must get the INVITE and the ACK), then to the next address, a SIPp that requires
# From +15550001111@carrier.example, challenges with 407, requires Proxy-Authorization for
# user siphon on the second INVITE and answers; GET /api/calls shows it answered, and
# siphon_trunk_failovers_total is 1.

legs_here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -uo pipefail
    siphon="${1:-$(cd "$legs_here/.." && pwd)/target/release/siphon}"
    work="$(mktemp -d)"
    failures=0
    here="$legs_here"
    # shellcheck source=sip-tests/lib.sh
    source "$legs_here/lib.sh"
fi
legs_sc="$legs_here/scenarios"
legs_target=127.0.0.1:6200
legs_api=http://127.0.0.1:9150
legs_work="$work/new-legs"
mkdir -p "$legs_work"
legs_failures_before=$failures

legs_fail() { echo "FAIL $1"; failures=$((failures + 1)); }
legs_pass() { echo "PASS $1"; }

# legs_sipp NAME SIPP_ARGS...: SIPp in its own directory (with the 20 ms A-law speech).
legs_sipp() {
    local name="$1"; shift
    mkdir -p "$legs_work/$name"
    cp "$legs_work/pcma_20ms.pcap" "$legs_work/$name/"
    ( cd "$legs_work/$name" && timeout 120 "${rt[@]}" sipp "$@" -i 127.0.0.1 -timeout 60s \
        -timeout_error -trace_err -trace_msg -nostdin "$legs_target" >"$legs_work/$name/stdout" 2>&1 )
}
legs_result() { # legs_result NAME RC
    if [ "$2" = 0 ]; then legs_pass "$1"; else
        legs_fail "$1 (sipp exit $2)"; tail -n 15 "$legs_work/$1"/*errors.log 2>/dev/null; fi
}
# legs_originate BODY: POST /api/calls; legs_code is the HTTP status, legs_call the Call-ID.
legs_originate() {
    legs_code=$(curl -s -o "$legs_work/originate.json" -w '%{http_code}' -X POST \
        -H 'Content-Type: application/json' --data "$1" "$legs_api/api/calls")
    legs_call="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("call_id",""))' \
        "$legs_work/originate.json" 2>/dev/null)"
}
legs_state_is() { # legs_state_is STATE: GET /api/calls/{legs_call} shows it
    [ "$(curl -s "$legs_api/api/calls/$legs_call" | python3 -c 'import json,sys
print((json.load(sys.stdin) or {}).get("state",""))' 2>/dev/null)" = "$1" ]
}
legs_metric() {
    curl -s "$legs_api/metrics" | awk -v m="$1" '$1 == m { print $2; found = 1 } END { if (!found) print 0 }'
}

python3 "$legs_here/pcap_20ms.py" /usr/share/sip-tester/g711a.pcap "$legs_work/pcma_20ms.pcap"
dnsmasq --keep-in-foreground --no-daemon --port=6249 --listen-address=127.0.0.1 \
    --bind-interfaces --no-resolv --no-hosts --no-poll --user=root --pid-file= --local-ttl=1 \
    --host-record=a.carrier.test,127.0.0.1 --host-record=b.carrier.test,127.0.0.1 \
    --srv-host=_sip._udp.carrier.test,a.carrier.test,6211,10,0 \
    --srv-host=_sip._udp.carrier.test,b.carrier.test,6212,20,0 \
    >"$legs_work/dnsmasq.log" 2>&1 &
legs_dns_pid=$!
"${rt[@]}" "$siphon" --config "$legs_here/new-legs.toml" --log info >"$legs_work/siphon.log" 2>&1 &
legs_siphon_pid=$!
if ! wait_until 60 answers_options 6248 "$legs_target" "$legs_siphon_pid" \
    || ! kill -0 "$legs_siphon_pid" 2>/dev/null; then
    legs_fail "legs-siphon-start (no answer to OPTIONS on $legs_target)"
    tail -n 20 "$legs_work/siphon.log"
fi

# --- Parallel ringing: the desk phone (6201) answers, the mobile (6202) rings and must
# get CANCEL.
for legs_p in 6201 6202; do
    legs_sipp "legs-register-$legs_p" -sf "$legs_sc/register.xml" -s 1002 -au 1002 \
        -ap secret1002 -m 1 -p "$legs_p"
    legs_result "legs-register-$legs_p" $?
done
legs_sipp legs-desk-answers -sf "$legs_sc/b2b_callee_answer.xml" -m 1 -p 6201 -mp 42900 &
legs_desk=$!
legs_sipp legs-mobile-cancelled -sf "$legs_sc/b2b_callee_ring.xml" -m 1 -p 6202 -mp 42910 &
legs_mobile=$!
wait_until 30 udp_bound 6201; wait_until 30 udp_bound 6202
legs_originate '{"to": "user:1002", "from": "1002", "on_answer": {"action": "echo"}}'
if [ "$legs_code" = 201 ] && wait_until 30 legs_state_is answered; then
    legs_pass legs-user-originate-answered
else
    legs_fail "legs-user-originate-answered (HTTP $legs_code: $(head -c 300 "$legs_work/originate.json"))"
fi
wait "$legs_mobile"; legs_result legs-mobile-cancelled $?
curl -s -o /dev/null -X DELETE "$legs_api/api/calls/$legs_call"
wait "$legs_desk"; legs_result legs-desk-answers $?

# --- from: a caller ID the trunk does not list is refused.
legs_originate '{"to": "trunk:carrier/+44201234", "from": "+15550009999"}'
if [ "$legs_code" = 403 ]; then legs_pass legs-from-not-listed-403; else
    legs_fail "legs-from-not-listed-403 (HTTP $legs_code)"; fi

# --- Trunk: the first address answers 503, the second challenges, then answers.
legs_sipp legs-trunk-503 -sf "$legs_sc/carrier_503.xml" -m 1 -p 6211 &
legs_t503=$!
legs_sipp legs-trunk-407-from -sf "$legs_sc/legs_trunk_407.xml" -m 1 -p 6212 -mp 42920 &
legs_t407=$!
wait_until 30 udp_bound 6211; wait_until 30 udp_bound 6212
legs_trunk_call() {
    legs_originate '{"to": "trunk:carrier/+44201234", "from": "+15550001111", "on_answer": {"action": "echo"}}'
    [ "$legs_code" = 201 ]
}
# carrier.test resolves in the background after Siphon starts: until then 503.
if wait_until 30 legs_trunk_call && wait_until 30 legs_state_is answered; then
    legs_pass legs-trunk-originate-answered
else
    legs_fail "legs-trunk-originate-answered (HTTP $legs_code: $(head -c 300 "$legs_work/originate.json"))"
fi
legs_failovers="$(legs_metric siphon_trunk_failovers_total)"
if [ "$legs_failovers" = 1 ]; then legs_pass legs-trunk-failover-counted; else
    legs_fail "legs-trunk-failover-counted (siphon_trunk_failovers_total $legs_failovers)"; fi
wait "$legs_t503"; legs_result legs-trunk-503 $?
curl -s -o /dev/null -X DELETE "$legs_api/api/calls/$legs_call"
wait "$legs_t407"; legs_result legs-trunk-407-from $?

kill "$legs_siphon_pid" 2>/dev/null; wait "$legs_siphon_pid" 2>/dev/null
kill "$legs_dns_pid" 2>/dev/null; wait "$legs_dns_pid" 2>/dev/null
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    if [ "$failures" -gt "$legs_failures_before" ]; then
        echo "new-legs: $((failures - legs_failures_before)) failure(s); logs in $legs_work"
        exit 1
    fi
    echo "new-legs: all passed"
    exit 0
fi
