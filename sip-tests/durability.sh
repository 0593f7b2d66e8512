#!/usr/bin/env bash
# shellcheck shell=bash
# Runs for months (issue 16): what survives a restart and a crash, and memory that stays
# flat. Standalone: `bash sip-tests/durability.sh path/to/siphon` (PASS/FAIL lines, non-zero
# exit on failure); run.sh sources it near its end.
#
# Everything here uses its own ports only: Siphon SIP 127.0.0.1:5450, HTTP 8400, its
# analytics service 8401, RTP 30000-30998; SIPp signalling 5400-5449, media 16400-16499.
# The Siphon runs the default configuration (configs/siphon.toml, ports changed, a CDR file
# added) from a copy in a scratch folder, so its state (siphon-state/registrations.db and
# nonce.key, relative to the configuration file) lives there.
#
#   durability-restart-*   1002 registers (SIPp), Siphon is stopped (SIGTERM) or killed
#                          (kill -9) and started again; a caller then reaches 1002's SIPp
#                          without 1002 registering again.
#   durability-crash-*     kill -9 while forked calls to 700 run: after the start the
#                          registration is there, new calls work at once, the CDR file
#                          holds whole JSON lines only, and siphon_calls_lost_on_restart
#                          says how many calls were cut off (the journal's count).
#   durability-soak-memory scripts/soak.sh: rounds of calls of seven kinds; fails when RSS
#                          grows after the warm-up beyond a stated bound.
# DUR_SKIP_RESTART=1, DUR_SKIP_CRASH=1, DUR_SKIP_SOAK=1 leave a part out while debugging.

dur_here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dur_root="$(cd "$dur_here/.." && pwd)"
dur_sourced=0
[ "${BASH_SOURCE[0]}" != "$0" ] && dur_sourced=1
if [ "$dur_sourced" = 0 ]; then
    set -uo pipefail
    siphon="${1:-$dur_root/target/release/siphon}"
    failures=0
    here="$dur_here"
    # wait_until, udp_bound, rt: what run.sh has when it sources this.
    # shellcheck source=sip-tests/lib.sh
    source "$dur_here/lib.sh"
fi
dur_siphon="$(realpath "$siphon")"
dur_work="$(mktemp -d)"
dur_sc="$dur_here/scenarios"
dur_sip=127.0.0.1:5450
dur_http=127.0.0.1:8400
dur_pid=""
dur_load_pid=""

dur_pass() { echo "PASS $1"; }
dur_fail() { echo "FAIL $1"; failures=$((failures + 1)); }

dur_cleanup() {
    [ -n "$dur_load_pid" ] && kill "$dur_load_pid" 2>/dev/null
    if [ -n "$dur_pid" ]; then kill "$dur_pid" 2>/dev/null; wait "$dur_pid" 2>/dev/null; fi
    dur_pid=""
}
if [ "$dur_sourced" = 0 ]; then trap 'dur_cleanup' EXIT; fi

mkdir -p "$dur_work/conf"
dur_conf="$dur_work/conf/siphon.toml"
dur_store="$dur_work/conf/siphon-state/registrations.db"
dur_cdr="$dur_work/cdr.jsonl"
sed -e 's|^listen = "127.0.0.1:5060"|listen = "127.0.0.1:5450"|' \
    -e 's|^listen = "127.0.0.1:8080"|listen = "127.0.0.1:8400"|' \
    -e 's|^listen = "127.0.0.1:8090"|listen = "127.0.0.1:8401"|' \
    -e 's|ws://127.0.0.1:8090/native|ws://127.0.0.1:8401/native|' \
    -e 's|^port_min = 20000|port_min = 30000|' -e 's|^port_max = 29998|port_max = 30998|' \
    "$dur_root/configs/siphon.toml" >"$dur_conf"
printf '\n[cdr]\npath = "%s"\n' "$dur_cdr" >>"$dur_conf"

dur_healthy() { curl -fsS -o /dev/null "http://$dur_http/healthz" 2>/dev/null; }
# dur_start: a Siphon on the durability ports (its log appended to siphon.log); 1 if it
# does not come up within 60 s.
dur_start() {
    "$dur_siphon" --config "$dur_conf" --log info >>"$dur_work/siphon.log" 2>&1 &
    dur_pid=$!
    wait_until 60 dur_healthy
}
# dur_stop SIGNAL: TERM (a clean stop: drain, write, exit) or KILL (a crash).
dur_stop() {
    kill -"$1" "$dur_pid" 2>/dev/null
    wait "$dur_pid" 2>/dev/null
    dur_pid=""
}
dur_metric() {
    curl -fsS "http://$dur_http/metrics" 2>/dev/null | awk -v m="$1" '$1 == m {print $2}'
}
dur_registered() {
    curl -fsS "http://$dur_http/api/registrations" 2>/dev/null | grep -q "\"aor\":\"$1\""
}
dur_rows() { sqlite3 "$dur_store" "$1" 2>/dev/null; }
# dur_stored AOR: the store file holds AOR's binding (asked anew each time it is called).
dur_stored() { [ "$(dur_rows "SELECT count(*) FROM bindings WHERE aor = '$1'")" = 1 ]; }
# dur_sipp NAME SIPP_ARGS...: SIPp in its own folder against the durability Siphon.
dur_sipp() {
    local name="$1"; shift
    mkdir -p "$dur_work/$name"
    ( cd "$dur_work/$name" && timeout 120 sipp "$@" -timeout 60s -timeout_error -trace_err \
        -nostdin "$dur_sip" >stdout 2>&1 )
}
dur_show() { tail -n 15 "$dur_work/$1"/*errors.log "$dur_work/$1/stdout" 2>/dev/null | sed 's/^/    /'; }

# dur_call_1002 NAME: 1002's SIPp (on the port it registered from, 5401) answers busy, 1001
# calls 1002 (digest) and must get that 486: the INVITE reached the registered contact.
dur_call_1002() {
    local name="$1"
    mkdir -p "$dur_work/$name-callee"
    ( cd "$dur_work/$name-callee" && timeout 120 sipp -sf "$dur_sc/b2b_callee_busy.xml" -m 1 \
        -p 5401 -i 127.0.0.1 -timeout 60s -timeout_error -trace_err -nostdin "$dur_sip" \
        >stdout 2>&1 ) &
    local callee=$!
    wait_until 30 udp_bound 5401
    dur_sipp "$name-caller" -sf "$dur_sc/b2b_caller_busy.xml" -s 1002 -au 1001 -ap secret1001 \
        -m 1 -p 5402 -i 127.0.0.1
    local caller_rc=$?
    wait "$callee"
    local callee_rc=$?
    if [ "$caller_rc" = 0 ] && [ "$callee_rc" = 0 ]; then
        dur_pass "$name (1002's SIPp got the INVITE, the caller its 486)"
    else
        dur_fail "$name (caller sipp exit $caller_rc, callee $callee_rc)"
        dur_show "$name-caller"; dur_show "$name-callee"
    fi
}

# --- Registrations survive a restart and a crash -------------------------------------
dur_restart_tests() {
    if ! dur_start; then
        dur_fail "durability-start (no /healthz within 60 s)"; tail -n 20 "$dur_work/siphon.log"
        return 1
    fi
    if ! dur_sipp register-1002 -sf "$dur_sc/register.xml" -s 1002 -au 1002 -ap secret1002 \
        -m 1 -p 5401 -i 127.0.0.1; then
        dur_fail "durability-register-1002"; dur_show register-1002; return 1
    fi
    dur_call_1002 durability-call-before-restart
    local how
    for how in TERM KILL; do
        # Written through: the binding is in the file while Siphon runs (WAL lets another
        # reader in), before the stop. kill -9 loses only what was not yet written.
        if ! wait_until 30 dur_stored 1002; then
            dur_fail "durability-store-written (no row for 1002 in $dur_store)"
        fi
        dur_stop "$how"
        if ! dur_start; then
            dur_fail "durability-restart-$how (Siphon did not come back)"; return 1
        fi
        if dur_registered 1002; then
            dur_pass "durability-restart-$how-registration (1002 listed at once after the start)"
        else
            dur_fail "durability-restart-$how-registration (1002 not in /api/registrations)"
        fi
        dur_call_1002 "durability-restart-$how-call"
    done
}

# --- kill -9 under load ----------------------------------------------------------------
# Forked calls to 700 (SIPp's built-in uac_pcap: the 8 s of g711a.pcap each, through the
# WebSocket fork to the analytics service and back): DUR_CRASH_CALLS up at once (120 by
# default rather than 200: on a loaded 2-core machine 200 forked calls starve SIPp and
# the check would measure the machine; set DUR_CRASH_CALLS=200 on a quiet one). kill -9
# once that many are up, then start again.
dur_crash_tests() {
    local want="${DUR_CRASH_CALLS:-120}"
    [ -n "$dur_pid" ] || dur_start || { dur_fail "durability-crash-start"; return 1; }
    dur_registered 1002 || dur_sipp register-1002-crash -sf "$dur_sc/register.xml" -s 1002 \
        -au 1002 -ap secret1002 -m 1 -p 5401 -i 127.0.0.1 ||
        { dur_fail "durability-crash-register-1002"; dur_show register-1002-crash; }
    # Some calls end normally first, so the CDR file has lines to judge.
    dur_sipp crash-warmup -sn uac -s 600 -m 5 -r 5 -d 500 -p 5404 -mp 16480 -i 127.0.0.1 ||
        { dur_fail "durability-crash-warmup (echo calls)"; dur_show crash-warmup; }
    mkdir -p "$dur_work/crash-load/pcap"
    # uac_pcap plays pcap/g711a.pcap and pcap/dtmf_2833_1.pcap from its working folder.
    cp /usr/share/sip-tester/g711a.pcap /usr/share/sip-tester/dtmf_2833_1.pcap "$dur_work/crash-load/pcap/"
    ( cd "$dur_work/crash-load" && exec timeout 300 sipp -sn uac_pcap -s 700 -r 40 -l "$want" \
        -m "$((want * 3))" -p 5403 -mp 16400 -i 127.0.0.1 -nostdin "$dur_sip" >stdout 2>&1 ) &
    dur_load_pid=$!
    calls_up() { [ "$(dur_metric siphon_calls_active)" -ge "$want" ] 2>/dev/null; }
    if ! wait_until 120 calls_up; then
        dur_fail "durability-crash-load (never $want calls up; $(dur_metric siphon_calls_active) at most)"
        kill "$dur_load_pid" 2>/dev/null; wait "$dur_load_pid" 2>/dev/null; dur_load_pid=""
        return 1
    fi
    local up_before
    up_before="$(dur_metric siphon_calls_active)"
    dur_stop KILL
    kill "$dur_load_pid" 2>/dev/null; wait "$dur_load_pid" 2>/dev/null; dur_load_pid=""
    # What the dead process's journal says was up: the next start must report exactly it.
    local journal
    journal="$(dur_rows "SELECT count(*) FROM active_calls")"
    local t0=$SECONDS
    if ! dur_start; then dur_fail "durability-crash-restart (no /healthz)"; return 1; fi
    echo "    killed with $up_before calls up; journal held ${journal:-?}; back in $((SECONDS - t0)) s"
    local lost
    lost="$(dur_metric siphon_calls_lost_on_restart)"
    # The journal may miss the calls of the last moment (their rows still pending), never
    # more: at least 90 % of the calls up must be counted.
    if [ -n "$journal" ] && [ "${lost:-x}" = "$journal" ] && [ "$lost" -ge $((up_before * 9 / 10)) ]; then
        dur_pass "durability-crash-lost-calls-metric (siphon_calls_lost_on_restart $lost of $up_before up)"
    else
        dur_fail "durability-crash-lost-calls-metric (metric ${lost:-none}, journal ${journal:-?}, $up_before up)"
    fi
    if dur_registered 1002; then
        dur_pass "durability-crash-registration (1002 still bound after kill -9 under load)"
    else
        dur_fail "durability-crash-registration (1002 lost)"
    fi
    # New calls at once: an echo call and a call to the registered phone.
    if dur_sipp crash-after-echo -sn uac -s 600 -m 1 -d 500 -p 5404 -mp 16480 -i 127.0.0.1; then
        dur_pass "durability-crash-new-call (600 answered right after the start)"
    else
        dur_fail "durability-crash-new-call"; dur_show crash-after-echo
    fi
    dur_call_1002 durability-crash-call-1002
    # Whole lines only: every line of the CDR file is a JSON object (a torn last line
    # would have been cut off at the start, and counted lost).
    if python3 - "$dur_cdr" <<'PY'
import json, sys
lines = open(sys.argv[1], "rb").read().split(b"\n")
assert lines[-1] == b"", "the file does not end with a newline"
for i, line in enumerate(lines[:-1], 1):
    v = json.loads(line)
    assert isinstance(v, dict) and v.get("call_id"), f"line {i} is not a CDR"
print(f"    {len(lines) - 1} CDR lines, all whole JSON")
PY
    then
        dur_pass "durability-crash-cdr-whole-lines"
    else
        dur_fail "durability-crash-cdr-whole-lines"
    fi
}

# --- Memory that stays flat: scripts/soak.sh on a fresh Siphon (same ports), 10 rounds of
# 550 calls of seven kinds; fails when RSS grows by more than 3 MB over the 4 rounds after
# the 6-round warm-up (see the script for why those numbers).
dur_soak_tests() {
    local out="$dur_work/soak"
    if ROUNDS="${DUR_SOAK_ROUNDS:-10}" SIP_PORT=5450 HTTP_PORT=8400 ANALYTICS_PORT=8401 \
        RTP=30000-30998 SIPP_PORT_BASE=5420 SIPP_MEDIA_BASE=16420 OUT="$out" \
        bash "$dur_root/scripts/soak.sh" "$dur_siphon" >"$dur_work/soak.log" 2>&1; then
        dur_pass "durability-soak-memory ($(grep -o 'RSS grew[^)]*' "$dur_work/soak.log"))"
    else
        dur_fail "durability-soak-memory ($(grep -o 'FAIL.*' "$dur_work/soak.log" | head -n 1))"
    fi
    sed 's/^/    /' "$dur_work/soak.log"
}

[ -n "${DUR_SKIP_RESTART:-}" ] || dur_restart_tests
[ -n "${DUR_SKIP_CRASH:-}" ] || dur_crash_tests
dur_cleanup
[ -n "${DUR_SKIP_SOAK:-}" ] || dur_soak_tests

if [ "$dur_sourced" = 0 ]; then
    if [ "$failures" = 0 ]; then echo "durability: all passed"; else echo "durability: $failures failed"; fi
    [ "$failures" = 0 ]
fi
