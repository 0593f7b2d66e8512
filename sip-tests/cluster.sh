# shellcheck shell=bash
# Siphon nodes behind Kamailio edges with registrations shared in Redis (docs/scaling.md),
# on this one machine, without Docker. Sourced by run.sh near its end (uses $work, $here,
# $siphon, failures, wait_until, rt); sip-tests/cluster-alone.sh runs it by itself.
#
#   Redis      127.0.0.1:6390 (location, and the phones' passwords in the htable "users")
#   edge A     Kamailio on 127.0.0.2:5060, edge B on 127.0.0.3:5060
#              (deploy/cluster/kamailio-edge.cfg, -A EDGE_IP=...)
#   nodes      Siphon on 127.0.0.11/12/13:5060, HTTP 127.0.0.1:8811/8812/8813, analytics
#              127.0.0.1:8891/8892/8893, RTP 35000-35998 / 36000-36998 / 37000-37998
#              (deploy/cluster/siphon-node.toml with these addresses)
#   phones     SIPp on 127.0.0.1:5820-5869, media 16800-16899 (4 ports each: audio, RTCP,
#              video, its RTCP)
#
# Checks: a phone registered at edge A is called by a phone registered at edge B through a
# node's B2BUA (RTP both ways); 300 calls to 700 through the edges spread over the three
# nodes; a node killed (SIGKILL) while calls are set up: time until the edges notice, then
# every new call answered by the other two; a rolling restart (SIGTERM, wait, start) of
# every node while calls go on: 0 failed; edge A killed: its phone re-registers at edge B
# and is reachable again.

cl_dir="$work/cluster"
cl_redis=6390
cl_nodes=(11 12 13)
declare -A cl_node_pid=()
declare -A cl_edge_pid=()
cl_pids=()

cl_fail() { echo "FAIL $1"; failures=$((failures + 1)); }
cl_pass() { echo "PASS $1"; }

# cl_metric NODE NAME: a metric without labels from node NODE (11, 12, 13); 0 if absent
# or the node is down.
cl_metric() {
    curl -s --max-time 5 "http://127.0.0.1:88${1}/metrics" 2>/dev/null |
        awk -v m="$2" '$1 == m { print $2; found = 1 } END { if (!found) print 0 }'
}

# cl_ds EDGE NODE: the dispatcher's flags for node NODE at edge EDGE (2 or 3): AP when
# in service (active, probing), IP when out of it (inactive, probing).
cl_ds() {
    kamcmd -s "unix:$cl_dir/ctl-$1" dispatcher.list 2>/dev/null |
        awk -v uri="sip:127.0.0.$2:5060" '$1 == "URI:" { u = $2 } $1 == "FLAGS:" && u == uri { print $2 }'
}
# cl_ds_all STATE NODE: every live edge's dispatcher has NODE in STATE ("A" or "I").
cl_ds_all() {
    local e flags
    for e in "${!cl_edge_pid[@]}"; do
        flags="$(cl_ds "$e" "$2")"
        [ "${flags:0:1}" = "$1" ] || return 1
    done
}

cl_redis_up() { redis-cli -p "$cl_redis" ping >/dev/null 2>&1; }

cl_start_node() {
    local n="$1"
    "${rt[@]}" "$siphon" --config "$cl_dir/node$n.toml" --log info >>"$cl_dir/node$n.log" 2>&1 &
    cl_node_pid[$n]=$!
}

cl_start_edge() {
    local e="$1"
    mkdir -p "$cl_dir/edge$e"
    # Its own process group: killing an edge means all its processes (Kamailio's children
    # keep serving the socket when only the main process dies).
    setsid kamailio -f "$here/../deploy/cluster/kamailio-edge.cfg" -DD -E -w "$cl_dir/edge$e" \
        -A "EDGE_IP=127.0.0.$e" -A "DISPATCHER_LIST=\"$cl_dir/dispatcher.list\"" \
        -A "CTL_SOCKET=\"unix:$cl_dir/ctl-$e\"" -A "REDIS_URL=\"redis://127.0.0.1:$cl_redis/0\"" \
        >>"$cl_dir/edge$e.log" 2>&1 &
    cl_edge_pid[$e]=$!
}

# cl_sipp NAME EXPECTED ARGS...: a SIPp run in its own directory; its exit code must be
# EXPECTED.
cl_sipp() {
    local name="$1" expected="$2"; shift 2
    local dir="$work/$name"; mkdir -p "$dir"
    cp "$cl_dir/pcma_20ms.pcap" "$dir/" 2>/dev/null
    ( cd "$dir" && timeout 300 sipp "$@" -timeout 120s -timeout_error -trace_err -nostdin \
        >"$dir/stdout" 2>&1 )
    local rc=$?
    if [ "$rc" = "$expected" ]; then
        cl_pass "$name"
    else
        cl_fail "$name (sipp exit $rc, expected $expected)"
        tail -n 20 "$dir"/*errors.log 2>/dev/null; tail -n 5 "$dir/stdout"
    fi
}

# cl_load NAME EDGE PORT ARGS...: calls to 700 through edge EDGE from SIPp on PORT (as
# 1003), statistics in $work/NAME/stats.csv; in the background (pid in cl_load_pid).
cl_load() {
    local name="$1" edge="$2" port="$3"; shift 3
    local dir="$work/$name"; mkdir -p "$dir"
    printf 'SEQUENTIAL\n1003;\n' >"$dir/caller.csv"
    ( cd "$dir" && exec sipp -sf "$here/scenarios/cluster_call.xml" -s 700 \
        -inf "$dir/caller.csv" -au 1003 -ap secret1003 -p "$port" -i 127.0.0.1 \
        -mp "$((16800 + (port - 5820) * 4))" -trace_err -trace_stat -stf "$dir/stats.csv" -fd 1 \
        -timeout_error -nostdin "$@" "127.0.0.$edge:5060" >"$dir/stdout" 2>&1 ) &
    cl_load_pid=$!
}

# cl_stat NAME COLUMN: the last value of a SIPp statistics column (e.g. FailedCall(C)).
cl_stat() {
    awk -F';' -v col="$2" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == col) c = i; next }
        c { v = $c } END { print v + 0 }' "$work/$1/stats.csv" 2>/dev/null || echo 0
}

# cl_answered: calls answered by each node, "11:N 12:N 13:N".
cl_answered() {
    local n out=""
    for n in "${cl_nodes[@]}"; do out+="$n:$(cl_metric "$n" siphon_calls_answered_total) "; done
    echo "${out% }"
}

cl_cleanup() {
    local pid
    for pid in "${cl_node_pid[@]}" "${cl_pids[@]}"; do
        kill "$pid" 2>/dev/null
    done
    for pid in "${cl_edge_pid[@]}"; do kill -- "-$pid" 2>/dev/null; done
    for pid in "${cl_node_pid[@]}"; do kill -9 "$pid" 2>/dev/null; done
    for pid in "${cl_node_pid[@]}" "${cl_edge_pid[@]}" "${cl_pids[@]}"; do
        wait "$pid" 2>/dev/null
    done
}

cluster_tests() {
    mkdir -p "$cl_dir"
    python3 "$here/pcap_20ms.py" /usr/share/sip-tester/g711a.pcap "$cl_dir/pcma_20ms.pcap"

    # Redis: the location and the phones' passwords (the edges' htable "users").
    redis-server --port "$cl_redis" --bind 127.0.0.1 --save '' --appendonly no \
        --dir "$cl_dir" >"$cl_dir/redis.log" 2>&1 &
    cl_pids+=($!)
    if ! wait_until 60 cl_redis_up; then
        cl_fail "cluster-redis-starts"; cat "$cl_dir/redis.log"; return 1
    fi
    local i=1 user
    for user in 1001 1002 1003; do
        redis-cli -p "$cl_redis" HSET "htable:entry::$i" id "$i" key_name "$user" key_type 0 \
            value_type 0 key_value "secret$user" expires 0 >/dev/null
        i=$((i + 1))
    done

    printf '1 sip:127.0.0.%s:5060 0 0\n' "${cl_nodes[@]}" >"$cl_dir/dispatcher.list"
    local n
    for n in "${cl_nodes[@]}"; do
        local k=$((n - 10))
        sed -e "s/listen = \"0.0.0.0:5060\"/listen = \"127.0.0.$n:5060\"/" \
            -e "s/listen = \"0.0.0.0:8080\"/listen = \"127.0.0.1:88$n\"/" \
            -e "s/port_min = 20000/port_min = $((34000 + k * 1000))/" \
            -e "s/port_max = 29998/port_max = $((34998 + k * 1000))/" \
            -e "s/172\.28\.0\.2:/127.0.0.2:/; s/172\.28\.0\.3:/127.0.0.3:/" \
            -e "s|172\.28\.0\.2/32|127.0.0.2/32|; s|172\.28\.0\.3/32|127.0.0.3/32|" \
            -e "s|ws://172\.28\.0\.21:8090/native|ws://127.0.0.1:88$((n + 80))/native|" \
            "$here/../deploy/cluster/siphon-node.toml" >"$cl_dir/node$n.toml"
        printf '\n[analytics]\nlisten = "127.0.0.1:88%s"\n' "$((n + 80))" >>"$cl_dir/node$n.toml"
        cl_start_node "$n"
    done
    cl_start_edge 2
    cl_start_edge 3
    for n in "${cl_nodes[@]}"; do
        if ! wait_until 90 cl_ds_all A "$n"; then
            cl_fail "cluster-node-$n-in-service"
            tail -n 20 "$cl_dir/node$n.log" "$cl_dir/edge2.log"
            return 1
        fi
    done
    cl_pass "cluster-up (both edges dispatch to 3 nodes)"

    cl_two_phones
    # CLUSTER_QUICK=1: only the call between phones (while working on the edge).
    [ -n "${CLUSTER_QUICK:-}" ] && return
    cl_spread
    cl_node_killed
    cl_rolling_restart
    cl_edge_killed

    # Around the edges, a phone is a stranger to a node: challenged, its asserted identity
    # not taken (and node 11 then has a rejection counted, which the dashboard shows).
    cl_sipp cluster-node-challenges-bypass 0 -sf "$here/scenarios/cluster_bypass.xml" -s 1002 \
        -m 1 -p 5823 -i 127.0.0.1 -mp 16816 127.0.0.11:5060
    # The cluster dashboard (docker-compose.cluster.yml) queries only metrics a node exports.
    if python3 "$here/metrics_check.py" names --metrics "http://127.0.0.1:8811/metrics" \
        "$here/../deploy/cluster/grafana/siphon-cluster.json" >"$cl_dir/names" 2>&1; then
        cl_pass "cluster-dashboard-metrics"
    else
        cl_fail "cluster-dashboard-metrics"; cat "$cl_dir/names"
    fi
}

# A phone registered at edge A (1002) is called by a phone registered at edge B (1001),
# through a node: each must receive the other's speech whole.
cl_two_phones() {
    cl_sipp cluster-register-1002-at-a 0 -sf "$here/scenarios/register.xml" -s 1002 \
        -au 1002 -ap secret1002 -m 1 -p 5821 -i 127.0.0.1 -mp 16808 127.0.0.2:5060
    cl_sipp cluster-register-1001-at-b 0 -sf "$here/scenarios/register.xml" -s 1001 \
        -au 1001 -ap secret1001 -m 1 -p 5822 -i 127.0.0.1 -mp 16812 127.0.0.3:5060
    cl_sipp cluster-wrong-password-refused 0 -sf "$here/scenarios/cluster_register_refused.xml" \
        -s 1001 -au 1001 -ap wrong -m 1 -p 5824 -i 127.0.0.1 -mp 16820 127.0.0.2:5060
    cl_sipp cluster-unknown-user-refused 0 -sf "$here/scenarios/cluster_register_refused.xml" \
        -s 1009 -au 1009 -ap "" -m 1 -p 5824 -i 127.0.0.1 -mp 16820 127.0.0.3:5060
    tshark -i lo -f "udp portrange 16800-16899 or udp port 5060 or udp portrange 5820-5829" -w "$cl_dir/talk.pcapng" >"$cl_dir/tshark.log" 2>&1 &
    local tshark_pid=$!
    wait_until 60 test -s "$cl_dir/talk.pcapng"
    cl_phone_call cluster-a-called-from-b 127.0.0.3
    kill -INT "$tshark_pid" 2>/dev/null; wait "$tshark_pid" 2>/dev/null
    local side mp
    for side in callee:16800 caller:16804; do
        mp="${side#*:}"
        if python3 "$here/rtp_check.py" "$cl_dir/talk.pcapng" "$mp" 8 >"$cl_dir/talk-${side%%:*}.check" 2>&1; then
            cl_pass "cluster-rtp-to-${side%%:*}"
        else
            cl_fail "cluster-rtp-to-${side%%:*}"
        fi
        sed 's/^/    /' "$cl_dir/talk-${side%%:*}.check"
    done
}

# cl_phone_call NAME EDGE: 1002 (SIPp on 5821, which registered) answers; 1001 calls it
# through EDGE; both SIPp must exit 0.
cl_phone_call() {
    local name="$1" edge="$2" dir="$work/$1-callee"
    mkdir -p "$dir"; cp "$cl_dir/pcma_20ms.pcap" "$dir/"
    ( cd "$dir" && timeout 120 "${rt[@]}" sipp -sf "$here/scenarios/cluster_callee_answer.xml" -m 1 \
        -p 5821 -i 127.0.0.1 -mp 16800 -timeout 60s -timeout_error -trace_err -nostdin \
        127.0.0.2:5060 >"$dir/stdout" 2>&1 ) &
    local callee=$!
    wait_until 30 udp_bound 5821
    mkdir -p "$work/$name"; cp "$cl_dir/pcma_20ms.pcap" "$work/$name/"
    ( cd "$work/$name" && timeout 120 "${rt[@]}" sipp -sf "$here/scenarios/b2b_caller_bye.xml" \
        -s 1002 -au 1001 -ap secret1001 -m 1 -p 5822 -i 127.0.0.1 -mp 16804 -timeout 60s \
        -timeout_error -trace_err -nostdin "$edge:5060" >"$work/$name/stdout" 2>&1 )
    local rc=$?
    if [ "$rc" = 0 ]; then cl_pass "$name"; else
        cl_fail "$name (caller sipp exit $rc)"; tail -n 20 "$work/$name"/*errors.log 2>/dev/null
    fi
    if wait "$callee"; then cl_pass "$name-callee"; else
        cl_fail "$name-callee"; tail -n 20 "$dir"/*errors.log 2>/dev/null; tail -n 5 "$dir/stdout"
    fi
}


# 300 calls to 700 through both edges (150 each): none fails, every node answers a share.
cl_spread() {
    local before=() n
    for n in "${cl_nodes[@]}"; do before+=("$(cl_metric "$n" siphon_calls_answered_total)"); done
    cl_load cluster-spread-a 2 5830 -d 1000 -r 5 -m 150 -l 20
    local a=$cl_load_pid
    cl_load cluster-spread-b 3 5831 -d 1000 -r 5 -m 150 -l 20
    local b=$cl_load_pid
    wait "$a"; local rca=$?
    wait "$b"; local rcb=$?
    local ok=$(($(cl_stat cluster-spread-a 'SuccessfulCall(C)') + $(cl_stat cluster-spread-b 'SuccessfulCall(C)')))
    local bad=$(($(cl_stat cluster-spread-a 'FailedCall(C)') + $(cl_stat cluster-spread-b 'FailedCall(C)')))
    if [ "$rca" = 0 ] && [ "$rcb" = 0 ] && [ "$ok" = 300 ] && [ "$bad" = 0 ]; then
        cl_pass "cluster-300-calls ($ok answered, $bad failed)"
    else
        cl_fail "cluster-300-calls (sipp exits $rca/$rcb, $ok answered, $bad failed)"
        tail -n 10 "$work"/cluster-spread-*/*errors.log 2>/dev/null
    fi
    local shares="" i=0 total=0 each all=1
    for n in "${cl_nodes[@]}"; do
        each=$(($(cl_metric "$n" siphon_calls_answered_total) - before[i]))
        shares+="node $n: $each, "; total=$((total + each))
        # Round robin over three nodes: each gets a third, give or take failovers.
        [ "$each" -ge 50 ] || all=0
        i=$((i + 1))
    done
    if [ "$all" = 1 ] && [ "$total" = 300 ]; then
        cl_pass "cluster-spread (${shares%, })"
    else
        cl_fail "cluster-spread (${shares%, }; total $total)"
    fi
}

# Node 13 killed while calls are set up. The calls it holds are lost (counted); the edges
# notice (OPTIONS unanswered) and every call from then on is answered by 11 and 12.
cl_node_killed() {
    cl_load cluster-kill-load 2 5832 -d 1000 -r 5 -m 100000 -l 30
    local load=$cl_load_pid
    # Calls are flowing through node 13 when it dies.
    if ! cl_answered_more 13 3 || ! wait_until 120 cl_node13_busy; then
        cl_fail "cluster-kill-load (no call reached node 13 before the kill)"
    fi
    local t0; t0=$(date +%s.%N)
    kill -9 "${cl_node_pid[13]}"; wait "${cl_node_pid[13]}" 2>/dev/null
    unset 'cl_node_pid[13]'
    if wait_until 60 cl_ds_all I 13; then
        local t1; t1=$(date +%s.%N)
        cl_pass "cluster-kill-noticed (both edges took node 13 out $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s after SIGKILL)"
    else
        cl_fail "cluster-kill-noticed (node 13 still in service after 60 s)"
    fi
    # From here on: every new call is answered by 11 and 12.
    local s11 s12; s11=$(cl_metric 11 siphon_calls_answered_total); s12=$(cl_metric 12 siphon_calls_answered_total)
    cl_load cluster-after-kill 3 5833 -d 1000 -r 5 -m 100 -l 20
    local after=$cl_load_pid
    wait "$after"; local rc=$?
    local ok bad; ok=$(cl_stat cluster-after-kill 'SuccessfulCall(C)'); bad=$(cl_stat cluster-after-kill 'FailedCall(C)')
    local by=$(($(cl_metric 11 siphon_calls_answered_total) - s11 + $(cl_metric 12 siphon_calls_answered_total) - s12))
    if [ "$rc" = 0 ] && [ "$ok" = 100 ] && [ "$bad" = 0 ] && [ "$by" -ge 100 ]; then
        cl_pass "cluster-calls-after-kill (100 answered by nodes 11 and 12, 0 failed)"
    else
        cl_fail "cluster-calls-after-kill (sipp exit $rc, $ok answered, $bad failed, nodes 11+12 answered $by)"
        tail -n 10 "$work/cluster-after-kill"/*errors.log 2>/dev/null
    fi
    kill -USR1 "$load" 2>/dev/null
    wait "$load"
    echo "    calls lost with node 13 (in progress on it when it died): $(cl_stat cluster-kill-load 'FailedCall(C)') of $(($(cl_stat cluster-kill-load 'SuccessfulCall(C)') + $(cl_stat cluster-kill-load 'FailedCall(C)')))"
    # Node 13 back for what follows.
    cl_start_node 13
    if ! wait_until 90 cl_ds_all A 13; then cl_fail "cluster-node-13-back"; fi
}

# cl_answered_more NODE N: waits until NODE has answered N more calls than now.
cl_answered_more() {
    local want=$(($(cl_metric "$1" siphon_calls_answered_total) + $2))
    wait_until 120 cl_answered_at_least "$1" "$want"
}
cl_answered_at_least() { [ "$(cl_metric "$1" siphon_calls_answered_total)" -ge "$2" ]; }

# Node 13 holds at least one call (ringing or answered) right now.
cl_node13_busy() { [ "$(cl_metric 13 siphon_calls_active)" -ge 1 ]; }

# Every node restarted in turn (SIGTERM: drain, exit; start; back in service) while calls
# of 5 s go on through both edges: the edges take each draining node out (503 to OPTIONS),
# and not one call fails.
cl_rolling_restart() {
    cl_load cluster-rolling-a 2 5834 -d 5000 -r 4 -m 100000 -l 60
    local a=$cl_load_pid
    cl_load cluster-rolling-b 3 5835 -d 5000 -r 4 -m 100000 -l 60
    local b=$cl_load_pid
    local n ok=1
    for n in "${cl_nodes[@]}"; do
        cl_answered_more "$n" 2
        kill -TERM "${cl_node_pid[$n]}"
        # Its calls last 5 s, so it drains for seconds: the edges must take it out of
        # service while it still runs (its OPTIONS answer 503), not when it is gone.
        if wait_until 60 cl_ds_all I "$n" && kill -0 "${cl_node_pid[$n]}" 2>/dev/null; then
            cl_pass "cluster-rolling-node-$n-out-while-draining"
        else
            cl_fail "cluster-rolling-node-$n-out-while-draining"; ok=0
        fi
        if ! wait_until 120 cl_gone "${cl_node_pid[$n]}"; then
            cl_fail "cluster-rolling-node-$n-drains"; ok=0
            kill -9 "${cl_node_pid[$n]}" 2>/dev/null
        fi
        wait "${cl_node_pid[$n]}" 2>/dev/null
        cl_start_node "$n"
        if ! wait_until 90 cl_ds_all A "$n"; then cl_fail "cluster-rolling-node-$n-back"; ok=0; fi
    done
    # Calls after the last restart still go through the restarted nodes.
    kill -USR1 "$a" "$b" 2>/dev/null
    wait "$a"; wait "$b"
    local total bad
    total=$(($(cl_stat cluster-rolling-a 'SuccessfulCall(C)') + $(cl_stat cluster-rolling-b 'SuccessfulCall(C)')))
    bad=$(($(cl_stat cluster-rolling-a 'FailedCall(C)') + $(cl_stat cluster-rolling-b 'FailedCall(C)')))
    # Every call SIPp started ended as a success (none abandoned uncounted).
    local started
    started=$(($(cl_stat cluster-rolling-a 'OutgoingCall(C)') + $(cl_stat cluster-rolling-b 'OutgoingCall(C)')))
    if [ "$ok" = 1 ] && [ "$bad" = 0 ] && [ "$total" -gt 0 ] && [ "$total" = "$started" ]; then
        cl_pass "cluster-rolling-restart ($total calls during the restarts of 3 nodes, 0 failed)"
    else
        cl_fail "cluster-rolling-restart ($started started, $total answered, $bad failed)"
        tail -n 10 "$work"/cluster-rolling-*/*errors.log 2>/dev/null
    fi
}

cl_gone() { ! kill -0 "$1" 2>/dev/null; }

# Edge A dies: 1002, registered through it, registers again through edge B and is called
# through edge B.
cl_edge_killed() {
    kill -9 -- "-${cl_edge_pid[2]}"; wait "${cl_edge_pid[2]}" 2>/dev/null
    unset 'cl_edge_pid[2]'
    cl_sipp cluster-reregister-1002-at-b 0 -sf "$here/scenarios/register.xml" -s 1002 \
        -au 1002 -ap secret1002 -m 1 -p 5821 -i 127.0.0.1 -mp 16808 127.0.0.3:5060
    cl_phone_call cluster-reachable-after-edge-a-died 127.0.0.3
}

cluster_tests
cl_cleanup
