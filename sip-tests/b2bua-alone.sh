#!/usr/bin/env bash
# Runs only the B2BUA checks (b2bua.sh), without the rest of run.sh, against a Siphon of its
# own on ports that run.sh does not use (SIP 127.0.0.1:5070, HTTP 8070, analytics 8071,
# RTP 40000-40998), with CDRs on. Usage: sip-tests/b2bua-alone.sh [path/to/siphon]
# Needs root (or capture and raw-socket capabilities), like run.sh's media checks.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
siphon="${1:-$root/target/release/siphon}"
target=127.0.0.1:5070
work="$(mktemp -d)"
failures=0
sed -e 's/listen = "127.0.0.1:5060"/listen = "127.0.0.1:5070"/' \
    -e 's/listen = "127.0.0.1:8080"/listen = "127.0.0.1:8070"/' \
    -e 's/listen = "127.0.0.1:8090"/listen = "127.0.0.1:8071"/' \
    -e 's/port_min = 20000/port_min = 40000/' -e 's/port_max = 29998/port_max = 40998/' \
    "$root/configs/siphon.toml" >"$work/siphon.toml"
printf '\n[cdr]\npath = "%s/cdr.jsonl"\n' "$work" >>"$work/siphon.toml"

# What run.sh defines for the sections it sources (lib.sh), for this Siphon's RTP range.
rtp_capture_range=40000-40999
# shellcheck source=sip-tests/lib.sh
source "$here/lib.sh"
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

"${rt[@]}" "$siphon" --config "$work/siphon.toml" --log info >"$work/siphon.log" 2>&1 &
siphon_pid=$!
trap 'capture_stop; kill "$siphon_pid" 2>/dev/null; wait "$siphon_pid" 2>/dev/null; [ -n "${KEEP_WORK:-}" ] && echo "work dir kept: $work" || rm -rf "$work"' EXIT
wait_until 60 answers_options 5208 "$target" "$siphon_pid"

# shellcheck source=sip-tests/b2bua.sh
source "$here/b2bua.sh"

echo "CDRs written: $(wc -l <"$work/cdr.jsonl" 2>/dev/null || echo 0)"
if [ "$failures" -ne 0 ]; then
    echo "--- siphon log (tail) ---"; tail -n 40 "$work/siphon.log"
    echo "$failures B2BUA check(s) failed"; exit 1
fi
echo "all B2BUA checks passed"
