#!/usr/bin/env bash
# The programmable-calls checks (docs/calls-api.md): originate (POST /api/calls), webhook
# routes and signed status events, against real components: a Siphon of its own (SIP
# 127.0.0.1:5850, HTTP 8850, embedded analytics 8851 writing one WAV per stream, RTP
# 36000-36998), SIPp phones and trunk (5852-5879, media 16800-16899), and a real HTTP
# application in Python (sip-tests/calls_api_app.py: the webhook app on 8852, the event
# receiver on 8853, which verifies every signature). Usage:
#     bash sip-tests/calls-api.sh [path/to/siphon]
# Needs root (tshark capture and SIPp pcap play), like run.sh's media checks.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
# Sourced by run.sh, its Siphon binary and capture range are kept (restored at the end).
siphon="${1:-${siphon:-$root/target/release/siphon}}"
ca_saved_range="${rtp_capture_range:-}"
ca_target=127.0.0.1:5850
ca_http=127.0.0.1:8850
ca_work="$(mktemp -d)"
ca_failures=0
ca_secret="whsec_calls_api_test"
rtp_capture_range=36000-36999
# shellcheck source=sip-tests/lib.sh
source "$here/lib.sh"
ca_pass() { echo "PASS $1"; }
ca_fail() { echo "FAIL $1"; ca_failures=$((ca_failures + 1)); }
ca_sc="$here/scenarios"

mkdir -p "$ca_work/wav"
cat >"$ca_work/siphon.toml" <<EOF
[sip]
listen = "127.0.0.1:5850"
ring_timeout_s = 20

[http]
listen = "127.0.0.1:8850"
fork_url_prefixes = ["ws://127.0.0.1:8851/"]

[rtp]
port_min = 36000
port_max = 36998

[[accounts]]
username = "1001"
password = "secret1001"
kind = "phone"
caller_ids = ["+15550001111"]

[[accounts]]
username = "1002"
password = "secret1002"
kind = "phone"

[[accounts]]
username = "1003"
password = "secret1003"
kind = "phone"

[[trunks]]
name = "provider"
address = "127.0.0.1:5860"
domain = "carrier.example"

# The webhook routes: the application's answer decides (fork, user, reject); when it is
# down or answers nonsense, route 801 (echo) takes the call.
[[dialplan]]
number = "800"
action = "webhook"
url = "http://127.0.0.1:8852/route/fork"
fallback = "801"
ringing = true

[[dialplan]]
number = "801"
action = "echo"
auth = "none"

[[dialplan]]
number = "802"
action = "webhook"
auth = "none"
url = "http://127.0.0.1:8859/route/echo"
connect_timeout_ms = 500
fallback = "801"

[[dialplan]]
number = "803"
action = "webhook"
url = "http://127.0.0.1:8852/route/user"

[[dialplan]]
number = "804"
action = "webhook"
auth = "none"
url = "http://127.0.0.1:8852/route/reject"
pass_headers = ["X-Customer"]
ringing = true

[[dialplan]]
number = "805"
action = "webhook"
auth = "none"
url = "http://127.0.0.1:8852/route/nonsense"
fallback = "801"

[[dialplan]]
number = "806"
action = "echo"
auth = "none"
ring_ms = 100

# The application answers with a SIP URI, and with a fixed number through the trunk.
[[dialplan]]
number = "807"
action = "webhook"
url = "http://127.0.0.1:8852/route/uri"

[[dialplan]]
number = "808"
action = "webhook"
url = "http://127.0.0.1:8852/route/trunk-dial"

[analytics]
listen = "127.0.0.1:8851"
out_dir = "$ca_work/wav"

[events]
urls = ["http://127.0.0.1:8853/events"]
secret = "$ca_secret"
queue = 40
retry_min_ms = 100
retry_max_ms = 1000
EOF

ca_pids=()
ca_cleanup() {
    capture_stop
    local p
    for p in "${ca_pids[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${ca_pids[@]}"; do wait "$p" 2>/dev/null; done
    if [ -n "${KEEP_WORK:-}" ]; then echo "work dir kept: $ca_work"; else rm -rf "$ca_work"; fi
}
# Run alone, the trap cleans up; sourced by run.sh, the end of this section does (run.sh's
# own trap stays).
[ "${BASH_SOURCE[0]}" = "$0" ] && trap ca_cleanup EXIT

python3 "$here/calls_api_app.py" webhook --port 8852 --log "$ca_work/webhook.jsonl" \
    --secret "$ca_secret" &
ca_pids+=($!)
ca_start_receiver() {
    python3 "$here/calls_api_app.py" events --port 8853 --log "$ca_work/events.jsonl" \
        --secret "$ca_secret" &
    ca_receiver=$!
    ca_pids+=($ca_receiver)
}
ca_start_receiver
"${rt[@]}" "$siphon" --config "$ca_work/siphon.toml" --log info >"$ca_work/siphon.log" 2>&1 &
ca_siphon=$!
ca_pids+=($ca_siphon)
ca_listening() { curl -s -o /dev/null "http://127.0.0.1:$1/" 2>/dev/null; }
wait_until 60 answers_options 5851 "$ca_target" "$ca_siphon"
wait_until 30 ca_listening 8852
wait_until 30 ca_listening 8853
python3 "$here/pcap_20ms.py" /usr/share/sip-tester/g711a.pcap "$ca_work/pcma_20ms.pcap"

ca_metric() { # ca_metric NAME LABELS: a sample's value (0 when absent)
    curl -s "http://$ca_http/metrics" | awk -v m="$1{$2}" '$1 == m { v = $2 } END { print v + 0 }'
}
ca_post() { # ca_post JSON: the status, and the body in $ca_work/post.json
    curl -s -o "$ca_work/post.json" -w '%{http_code}' -H 'Content-Type: application/json' \
        -X POST --data "$1" "http://$ca_http/api/calls"
}
ca_sipp() { # ca_sipp NAME ARGS...: one SIPp run in its own directory (pcap there too)
    local name="$1"; shift
    mkdir -p "$ca_work/$name"
    cp "${ca_pcap:-$ca_work/pcma_20ms.pcap}" "$ca_work/$name/pcma_20ms.pcap"
    ( cd "$ca_work/$name" && timeout 120 "${rt[@]}" sipp "$@" -i 127.0.0.1 -timeout 60s \
        -timeout_error -trace_err -nostdin >"$ca_work/$name/stdout" 2>&1 )
}
ca_sipp_result() { # ca_sipp_result NAME RC
    if [ "$2" = 0 ]; then ca_pass "$1"; else
        ca_fail "$1 (sipp exit $2)"; tail -n 15 "$ca_work/$1"/*errors.log 2>/dev/null; fi
}

# wav_check NAME MPORT: the newest WAV the analytics service finished is exactly the audio
# SIPp played from MPORT (fork_wav_check.py, native L16).
ca_before=""
ca_wav=""
ca_wav_written() {
    ca_wav="$(comm -13 <(echo "$ca_before") <(ls "$ca_work/wav") | head -n 1)"
    [ -n "$ca_wav" ] && python3 - "$ca_work/wav/$ca_wav" <<'PY'
import os, struct, sys
size = os.path.getsize(sys.argv[1])
with open(sys.argv[1], "rb") as f:
    h = f.read(44)
riff, data = struct.unpack("<I", h[4:8])[0], struct.unpack("<I", h[40:44])[0]
sys.exit(0 if size > 44 and riff == size - 8 and data == size - 44 else 1)
PY
}
ca_wav_check() {
    wait_until 60 ca_wav_written
    capture_stop
    if [ -n "$ca_wav" ] && python3 "$here/fork_wav_check.py" --capture "$ca_work/$1.pcapng" \
        --mport "$2" --wav "$ca_work/wav/$ca_wav" --mode native >"$ca_work/$1.wavcheck" 2>&1; then
        ca_pass "$1-fork-audio-bit-exact"
    else
        ca_fail "$1-fork-audio-bit-exact"; cat "$ca_work/$1.wavcheck" 2>/dev/null
    fi
    sed 's/^/    /' "$ca_work/$1.wavcheck" 2>/dev/null | head -n 3
}
ca_fork='{"url":"ws://127.0.0.1:8851/native","mode":"native","encoding":"l16","sample_rate":8000,"tracks":"inbound"}'

# --- The API refuses what it must: bad JSON, a caller ID no account may present, an
# account with no phone, a target that is not one.
[ "$(ca_post '{"to": ')" = 400 ] && ca_pass originate-bad-json-400 || ca_fail "originate-bad-json-400 ($(cat "$ca_work/post.json"))"
[ "$(ca_post '{"to":"user:1002","from":"+19998887777"}')" = 403 ] && ca_pass originate-foreign-caller-id-403 || ca_fail "originate-foreign-caller-id-403 ($(cat "$ca_work/post.json"))"
[ "$(ca_post '{"to":"user:1002","from":"1001"}')" = 404 ] && ca_pass originate-unregistered-404 || ca_fail "originate-unregistered-404 ($(cat "$ca_work/post.json"))"
[ "$(ca_post '{"to":"tel:123"}')" = 400 ] && ca_pass originate-bad-target-400 || ca_fail "originate-bad-target-400 ($(cat "$ca_work/post.json"))"

# --- Originate to the phone registered as 1002: it rings, answers with PCMA, plays 7 s of
# speech and hangs up; on_answer forks it to the analytics service, whose WAV must be that
# speech bit for bit. Its events (the originate request's callback URL too) come signed.
ca_sipp register-1002 -sf "$ca_sc/register.xml" -s 1002 -au 1002 -ap secret1002 -m 1 -p 5852 "$ca_target"
ca_sipp_result register-1002 $?
ca_before="$(ls "$ca_work/wav")"
capture_start "$ca_work/originate-user.pcapng" 16802
ca_sipp originate-user-callee -sf "$ca_sc/b2b_callee_bye.xml" -m 1 -p 5852 -mp 16802 "$ca_target" &
ca_callee=$!
wait_until 30 udp_bound 5852
status="$(ca_post '{"to":"user:1002","from":"+15550001111","ring_timeout_s":15,"on_answer":{"action":"fork","forks":['"$ca_fork"']},"custom_parameters":{"lead":"42"},"callback_url":"http://127.0.0.1:8853/callback"}')"
ca_user_call="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("call_id",""))' "$ca_work/post.json" 2>/dev/null)"
if [ "$status" = 201 ] && [ -n "$ca_user_call" ]; then ca_pass originate-user-201; else
    ca_fail "originate-user-201 (status $status: $(cat "$ca_work/post.json"))"; fi
ca_answered() { curl -s "http://$ca_http/api/calls/$1" | grep -q '"state":"answered"'; }
wait_until 30 ca_answered "$ca_user_call" && ca_pass originate-user-get-shows-answered || ca_fail originate-user-get-shows-answered
wait "$ca_callee"; ca_sipp_result originate-user-callee $?
ca_wav_check originate-user 16802

# --- Originate through the trunk (SIPp plays the provider, on 5860).
ca_before="$(ls "$ca_work/wav")"
capture_start "$ca_work/originate-trunk.pcapng" 16810
ca_sipp originate-trunk-callee -sf "$ca_sc/b2b_callee_bye.xml" -m 1 -p 5860 -mp 16810 "$ca_target" &
ca_callee=$!
wait_until 30 udp_bound 5860
status="$(ca_post '{"to":"trunk:provider/+15551234567","from":"1001","on_answer":{"action":"fork","forks":['"$ca_fork"']}}')"
ca_trunk_call="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("call_id",""))' "$ca_work/post.json" 2>/dev/null)"
[ "$status" = 201 ] && ca_pass originate-trunk-201 || ca_fail "originate-trunk-201 (status $status: $(cat "$ca_work/post.json"))"
wait "$ca_callee"; ca_sipp_result originate-trunk-callee $?
ca_wav_check originate-trunk 16810

# --- A webhook route whose application answers fork: 1001 calls 800 (digest auth first),
# plays 7 s of speech; the fork's WAV must be that speech.
ca_before="$(ls "$ca_work/wav")"
capture_start "$ca_work/webhook-fork.pcapng" 16820
ca_sipp webhook-fork -sf "$ca_sc/b2b_caller_bye.xml" -s 800 -au 1001 -ap secret1001 -m 1 \
    -p 5870 -mp 16820 "$ca_target"
ca_sipp_result webhook-fork $?
ca_wav_check webhook-fork 16820
if python3 - "$ca_work/webhook.jsonl" <<'PY'
import json, sys
calls = [json.loads(l) for l in open(sys.argv[1])]
c = next(l for l in calls if l["path"] == "/route/fork")
ok = c["sig_ok"] and c["call"]["account"] == "1001" and c["call"]["number"] == "800" \
    and c["call"]["source"].startswith("127.0.0.1:") and c["call"]["call_id"]
sys.exit(0 if ok else 1)
PY
then ca_pass webhook-request-attributes-signed; else ca_fail webhook-request-attributes-signed; fi

# --- The application answers reject (486) and user (ring 1002, bridged).
ca_sipp webhook-reject -sf "$ca_sc/calls_reject.xml" -s 804 -m 1 -p 5871 -mp 16830 "$ca_target"
ca_sipp_result webhook-reject-486 $?
grep -q '"X-Customer": "42"' "$ca_work/webhook.jsonl" && ca_pass webhook-pass-headers || ca_fail webhook-pass-headers
ca_sipp webhook-user-callee -sf "$ca_sc/b2b_callee_answer.xml" -m 1 -p 5852 -mp 16802 "$ca_target" &
ca_callee=$!
wait_until 30 udp_bound 5852
ca_sipp webhook-user -sf "$ca_sc/b2b_caller_bye.xml" -s 803 -au 1001 -ap secret1001 -m 1 \
    -p 5872 -mp 16840 "$ca_target"
ca_sipp_result webhook-user-caller $?
wait "$ca_callee"; ca_sipp_result webhook-user-callee $?

# --- The application answers uri (bridged to SIPp at sip:agent@127.0.0.1:5862) and trunk
# with dial (the SIPp trunk on 5860 must be asked for +15557654321, not 808).
ca_sipp webhook-uri-callee -sf "$ca_sc/b2b_callee_answer.xml" -m 1 -p 5862 -mp 16888 "$ca_target" &
ca_callee=$!
wait_until 30 udp_bound 5862
ca_sipp webhook-uri -sf "$ca_sc/b2b_caller_bye.xml" -s 807 -au 1001 -ap secret1001 -m 1 -p 5876 -mp 16880 "$ca_target"
ca_sipp_result webhook-uri-caller $?
wait "$ca_callee"; ca_sipp_result webhook-uri-callee-bridged $?
ca_sipp webhook-dial-trunk -sf "$ca_sc/b2b_callee_answer.xml" -m 1 -p 5860 -mp 16892 -trace_msg "$ca_target" &
ca_callee=$!
wait_until 30 udp_bound 5860
ca_sipp webhook-dial -sf "$ca_sc/b2b_caller_bye.xml" -s 808 -au 1001 -ap secret1001 -m 1 -p 5877 -mp 16884 "$ca_target"
ca_sipp_result webhook-dial-caller $?
wait "$ca_callee"; ca_sipp_result webhook-dial-trunk-bridged $?
grep -q '^INVITE sip:+15557654321@carrier.example SIP/2.0' "$ca_work/webhook-dial-trunk/"*_messages.log 2>/dev/null \
    && ca_pass webhook-trunk-dials-the-number \
    || ca_fail "webhook-trunk-dials-the-number ($(grep -m1 '^INVITE' "$ca_work/webhook-dial-trunk/"*_messages.log 2>/dev/null))"

# --- The application is down (nothing listens on 8859), or answers nonsense: route 801
# (echo) takes the call, counted as a fallback.
fallback0="$(ca_metric siphon_webhooks_total 'result="fallback"')"
ca_sipp webhook-app-down -sn uac -s 802 -m 1 -d 500 -p 5873 -mp 16850 "$ca_target"
ca_sipp_result webhook-app-down-fallback $?
ca_sipp webhook-nonsense -sn uac -s 805 -m 1 -d 500 -p 5874 -mp 16860 "$ca_target"
ca_sipp_result webhook-nonsense-fallback $?
fallback1="$(ca_metric siphon_webhooks_total 'result="fallback"')"
[ $((fallback1 - fallback0)) = 2 ] && ca_pass webhook-fallbacks-counted || ca_fail "webhook-fallbacks-counted ($fallback0 -> $fallback1)"

# --- Click-to-call: originate to 1002 (5852, media 16804) with on_answer user 1003 (5853,
# media 16805). 1002 answers and plays speech, waiting for BYE; Siphon then rings 1003, which
# answers, plays speech and hangs up after 15 s: 1002 must get BYE, and each party's RTP
# must reach the other unchanged (relayed through the call's media task).
ca_sipp register-1003 -sf "$ca_sc/register.xml" -s 1003 -au 1003 -ap secret1003 -m 1 -p 5853 "$ca_target"
ca_sipp_result register-1003 $?
capture_start "$ca_work/click.pcapng" 16804 "udp port 16804 or udp port 16805"
ca_sipp click-first -sf "$ca_sc/b2b_callee_answer.xml" -m 1 -p 5852 -mp 16804 "$ca_target" &
ca_first=$!
ca_sipp click-second -sf "$ca_sc/b2b_callee_bye.xml" -m 1 -p 5853 -mp 16805 "$ca_target" &
ca_second=$!
wait_until 30 udp_bound 5852
wait_until 30 udp_bound 5853
status="$(ca_post '{"to":"user:1002","from":"1001","on_answer":{"action":"user","user":"1003","ring_timeout_s":10}}')"
ca_click_call="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("call_id",""))' "$ca_work/post.json" 2>/dev/null)"
[ "$status" = 201 ] && ca_pass click-to-call-201 || ca_fail "click-to-call-201 (status $status: $(cat "$ca_work/post.json"))"
ca_click_completed() { curl -s "http://$ca_http/api/calls/$1" | grep -q '"state":"completed"'; }
wait_until 30 ca_click_completed "$ca_click_call" && ca_pass click-to-call-get-shows-bridged \
    || ca_fail "click-to-call-get-shows-bridged ($(curl -s "http://$ca_http/api/calls/$ca_click_call" | head -c 600))"
wait "$ca_second"; ca_sipp_result click-second-answered-hung-up $?
wait "$ca_first"; ca_sipp_result click-first-answered-got-bye $?
capture_stop
# Each direction: what arrives at one party's media port is what the other sent, payload
# for payload (both PCMA: relayed unchanged), at least 5 s of it.
if python3 - "$ca_work/click.pcapng" >"$ca_work/click.rtpcheck" 2>&1 <<'PY'
import subprocess, sys
out = subprocess.run(["tshark", "-r", sys.argv[1], "-d", "udp.port==16804,rtp",
    "-d", "udp.port==16805,rtp", "-T", "fields", "-e", "udp.srcport", "-e", "udp.dstport",
    "-e", "rtp.payload"], capture_output=True, text=True, check=True).stdout
sent, got = {16804: set(), 16805: set()}, {16804: [], 16805: []}
for line in out.splitlines():
    f = line.split("\t")
    if len(f) < 3 or not f[2]:
        continue
    src, dst, payload = int(f[0]), int(f[1]), f[2]
    if src in sent:
        sent[src].add(payload)
    elif dst in got:
        got[dst].append(payload)
ok = True
for a, b in ((16804, 16805), (16805, 16804)):
    silence = {"d5" * 160, ":".join(["d5"] * 160)}
    speech = [p for p in got[b] if p not in silence]
    matched = sum(1 for p in speech if p in sent[a])
    print(f"{a} -> {b}: {len(got[b])} packets arrived, {len(speech)} not silence, {matched} sent by {a}")
    ok &= matched >= 250 and matched == len(speech)
sys.exit(0 if ok else 1)
PY
then ca_pass click-to-call-rtp-both-ways; else ca_fail click-to-call-rtp-both-ways; fi
sed 's/^/    /' "$ca_work/click.rtpcheck"

# --- Click-to-call whose second target is busy (486): the first party, answered, gets BYE,
# and the call's end event says why.
ca_sipp click-busy-first -sf "$ca_sc/b2b_callee_answer.xml" -m 1 -p 5852 -mp 16804 "$ca_target" &
ca_first=$!
ca_sipp click-busy-second -sf "$ca_sc/b2b_callee_busy.xml" -m 1 -p 5853 "$ca_target" &
ca_second=$!
wait_until 30 udp_bound 5852
wait_until 30 udp_bound 5853
status="$(ca_post '{"to":"user:1002","from":"1001","on_answer":{"action":"user","user":"1003"}}')"
ca_busy_call="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("call_id",""))' "$ca_work/post.json" 2>/dev/null)"
[ "$status" = 201 ] && ca_pass click-to-call-busy-201 || ca_fail "click-to-call-busy-201 (status $status: $(cat "$ca_work/post.json"))"
wait "$ca_second"; ca_sipp_result click-busy-second-486 $?
wait "$ca_first"; ca_sipp_result click-busy-first-got-bye $?
ca_busy_ended() { grep "\"call.ended\"" "$ca_work/events.jsonl" | grep "$ca_busy_call" | grep -q '"code": *486'; }
wait_until 30 ca_busy_ended && ca_pass click-to-call-busy-ended-event-says-486 \
    || ca_fail "click-to-call-busy-ended-event-says-486 ($(grep "$ca_busy_call" "$ca_work/events.jsonl" | tail -n 1 | head -c 800))"

# --- Click-to-call through the trunk, forked: originate to 1002 (5852, media 16806) with
# on_answer trunk "provider", dial 5551234567 with prepend +1, and a stereo fork. 1002
# answers and speaks, waiting for BYE; the SIPp trunk (5860, media 16811) must be asked for
# +15551234567 at the trunk's domain, answers, speaks and hangs up. The fork's WAV must hold
# the first party on channel 0 (whole) and the trunk party on channel 1, and the trunk party
# must receive the first party's RTP.
[ "$(ca_post '{"to":"user:1002","on_answer":{"action":"trunk","trunk":"provider"}}')" = 400 ] \
    && ca_pass click-to-call-trunk-without-dial-400 || ca_fail "click-to-call-trunk-without-dial-400 ($(cat "$ca_work/post.json"))"
[ "$(ca_post '{"to":"user:1002","on_answer":{"action":"uri","uri":"sip:agent@example.com"}}')" = 400 ] \
    && ca_pass click-to-call-uri-hostname-400 || ca_fail "click-to-call-uri-hostname-400 ($(cat "$ca_work/post.json"))"
ca_before="$(ls "$ca_work/wav")"
capture_start "$ca_work/click-trunk.pcapng" 16806 "udp port 16806 or udp port 16811"
ca_sipp click-trunk-first -sf "$ca_sc/b2b_callee_answer.xml" -m 1 -p 5852 -mp 16806 "$ca_target" &
ca_first=$!
# The trunk party speaks backwards: channel 1 cannot pass by holding the first party.
python3 "$here/pcap_20ms.py" /usr/share/sip-tester/g711a.pcap "$ca_work/pcma_20ms_reversed.pcap" --reverse
ca_pcap="$ca_work/pcma_20ms_reversed.pcap" \
    ca_sipp click-trunk-second -sf "$ca_sc/b2b_callee_bye.xml" -m 1 -p 5860 -mp 16811 -trace_msg "$ca_target" &
ca_second=$!
wait_until 30 udp_bound 5852
wait_until 30 udp_bound 5860
ca_fork_both='{"url":"ws://127.0.0.1:8851/native","mode":"native","encoding":"l16","sample_rate":8000,"tracks":"both"}'
status="$(ca_post '{"to":"user:1002","from":"1001","on_answer":{"action":"trunk","trunk":"provider","dial":"5551234567","prepend":"+1","ring_timeout_s":10,"forks":['"$ca_fork_both"']}}')"
ca_ct_call="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("call_id",""))' "$ca_work/post.json" 2>/dev/null)"
[ "$status" = 201 ] && ca_pass click-to-call-trunk-201 || ca_fail "click-to-call-trunk-201 (status $status: $(cat "$ca_work/post.json"))"
wait_until 30 ca_click_completed "$ca_ct_call" && ca_pass click-to-call-trunk-get-shows-bridged \
    || ca_fail "click-to-call-trunk-get-shows-bridged ($(curl -s "http://$ca_http/api/calls/$ca_ct_call" | head -c 600))"
wait "$ca_second"; ca_sipp_result click-trunk-second-answered-hung-up $?
wait "$ca_first"; ca_sipp_result click-trunk-first-answered-got-bye $?
grep -q '^INVITE sip:+15551234567@carrier.example SIP/2.0' "$ca_work/click-trunk-second/"*_messages.log 2>/dev/null \
    && ca_pass click-to-call-trunk-dials-the-number \
    || ca_fail "click-to-call-trunk-dials-the-number ($(grep -m1 '^INVITE' "$ca_work/click-trunk-second/"*_messages.log 2>/dev/null))"
wait_until 60 ca_wav_written
capture_stop
if [ -n "$ca_wav" ] && python3 "$here/transfer_wav_check.py" --capture "$ca_work/click-trunk.pcapng" \
    --caller-mport 16806 --agent-mport 16811 --second-party --wav "$ca_work/wav/$ca_wav" \
    >"$ca_work/click-trunk.wavcheck" 2>&1; then
    ca_pass click-to-call-fork-hears-both-parties
else
    ca_fail click-to-call-fork-hears-both-parties
fi
sed 's/^/    /' "$ca_work/click-trunk.wavcheck" 2>/dev/null

# --- Click-to-call to a SIP URI: the second party is whatever answers at
# sip:agent@127.0.0.1:5861 (SIPp, media 16812), no account or trunk involved.
ca_sipp click-uri-first -sf "$ca_sc/b2b_callee_answer.xml" -m 1 -p 5852 -mp 16807 "$ca_target" &
ca_first=$!
ca_sipp click-uri-second -sf "$ca_sc/b2b_callee_bye.xml" -m 1 -p 5861 -mp 16812 "$ca_target" &
ca_second=$!
wait_until 30 udp_bound 5852
wait_until 30 udp_bound 5861
status="$(ca_post '{"to":"user:1002","from":"1001","on_answer":{"action":"uri","uri":"sip:agent@127.0.0.1:5861"}}')"
ca_cu_call="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("call_id",""))' "$ca_work/post.json" 2>/dev/null)"
[ "$status" = 201 ] && ca_pass click-to-call-uri-201 || ca_fail "click-to-call-uri-201 (status $status: $(cat "$ca_work/post.json"))"
wait_until 30 ca_click_completed "$ca_cu_call" && ca_pass click-to-call-uri-get-shows-bridged \
    || ca_fail "click-to-call-uri-get-shows-bridged ($(curl -s "http://$ca_http/api/calls/$ca_cu_call" | head -c 600))"
wait "$ca_second"; ca_sipp_result click-uri-second-answered-hung-up $?
wait "$ca_first"; ca_sipp_result click-uri-first-answered-got-bye $?

# --- Every event so far arrived, signed, in order per call; the originated calls' in the
# order they happened.
ca_has_ended() { grep -q "\"call.ended\".*$1\|$1.*\"call.ended\"" "$ca_work/events.jsonl"; }
wait_until 30 ca_has_ended "$ca_trunk_call"
sleep_until_quiet() { local a b; a="$(wc -l <"$ca_work/events.jsonl")"; sleep 1; b="$(wc -l <"$ca_work/events.jsonl")"; [ "$a" = "$b" ]; }
wait_until 30 sleep_until_quiet
if python3 "$here/calls_api_app.py" check --log "$ca_work/events.jsonl" \
    --expect-call "$ca_user_call" call.ringing,call.answered,fork.started,call.ended,fork.stopped \
    --expect-call "$ca_trunk_call" call.ringing,call.answered,fork.started,call.ended,fork.stopped \
    >"$ca_work/events.check" 2>&1; then
    ca_pass events-signed-in-order
else
    ca_fail events-signed-in-order
fi
sed 's/^/    /' "$ca_work/events.check"
grep -q "\"/callback\".*$ca_user_call" "$ca_work/events.jsonl" && ca_pass events-callback-url || ca_fail events-callback-url
[ "$(ca_metric siphon_events_total 'result="dropped"')" = 0 ] && ca_pass events-none-dropped-so-far || ca_fail events-none-dropped-so-far

# --- The receiver is down for 10 s while 30 calls (3 events each: ringing, answered,
# ended) come: the 40 the queue holds (and the one being retried) arrive once it is back,
# the rest are counted as dropped; nothing is lost otherwise and no call waited.
kill "$ca_receiver"; wait "$ca_receiver" 2>/dev/null
down_at=$SECONDS
lines0="$(wc -l <"$ca_work/events.jsonl")"
dropped0="$(ca_metric siphon_events_total 'result="dropped"')"
ca_sipp events-outage-calls -sn uac -s 806 -m 30 -r 10 -l 10 -d 200 -p 5875 -mp 16870 "$ca_target"
ca_sipp_result events-outage-calls-unaffected $?
ca_ten_s() { [ $((SECONDS - down_at)) -ge 10 ]; }
wait_until 30 ca_ten_s
ca_start_receiver
wait_until 30 ca_listening 8853
ca_outage_settled() {
    local got dropped
    got=$(( $(wc -l <"$ca_work/events.jsonl") - lines0 ))
    dropped=$(( $(ca_metric siphon_events_total 'result="dropped"') - dropped0 ))
    [ $((got + dropped)) -ge 90 ]
}
wait_until 60 ca_outage_settled
got=$(( $(wc -l <"$ca_work/events.jsonl") - lines0 ))
dropped=$(( $(ca_metric siphon_events_total 'result="dropped"') - dropped0 ))
failed="$(ca_metric siphon_events_total 'result="failed"')"
echo "    outage: 90 events emitted, $got delivered after the receiver came back, $dropped dropped (queue 40), $failed failed"
if [ $((got + dropped)) = 90 ] && [ "$got" -ge 40 ] && [ "$dropped" -gt 0 ] && [ "$failed" = 0 ]; then
    ca_pass events-outage-nothing-lost-that-fit-overflow-counted
else
    ca_fail events-outage-nothing-lost-that-fit-overflow-counted
fi
python3 "$here/calls_api_app.py" check --log "$ca_work/events.jsonl" >"$ca_work/events.check2" 2>&1 \
    && ca_pass events-after-outage-signed-in-order || { ca_fail events-after-outage-signed-in-order; cat "$ca_work/events.check2"; }

if [ "$ca_failures" -ne 0 ]; then
    echo "--- siphon log (tail) ---"; tail -n 40 "$ca_work/siphon.log"
    echo "$ca_failures calls-API check(s) failed"
else
    echo "all calls-API checks passed"
fi
if [ "${BASH_SOURCE[0]}" != "$0" ]; then
    # Sourced by run.sh: its failure count, and this section's processes stopped here.
    failures=$((${failures:-0} + ca_failures))
    ca_cleanup
    rtp_capture_range="$ca_saved_range"
else
    [ "$ca_failures" -eq 0 ] || exit 1
fi
