# shellcheck shell=bash
# Trunks by DNS name (RFC 3263), over UDP and over TLS opened by Siphon, failing over along
# the SRV order. Sourced by run.sh near its end; uses what run.sh defines: $work, $here,
# $siphon, failures, wait_until, rt, and b2bua.sh's udp_bound.
#
# A DNS server (dnsmasq, on 127.0.0.1:5790) serves carrier.test:
#   _sip._udp   prio 5 -> :5788 (nothing answers: the failover timeout),
#               prio 10 -> :5781 (SIPp: 503), prio 20 -> :5782 (SIPp: answers)
#   _sips._tcp  prio 5 -> :5787 (nothing listens: a transport error),
#               prio 10 -> :5783 (Kamailio over TLS: 503), prio 20 -> :5784 (Kamailio over
#               TLS, relaying to the carrier's core, SIPp on UDP 5785)
# Siphon (its own, SIP 5780, TLS 5779, HTTP 8780, RTP 34000-34998) knows the carrier only as
# "carrier.test" and checks its TLS certificate (carrier.test, signed by a CA made here).
# Caller 1001 is SIPp on 5791 (media 16791).

td_http="127.0.0.1:8780"

# td_metric NAME: the value of a metric without labels on Siphon's /metrics (0 if absent).
td_metric() {
    curl -s "http://$td_http/metrics" | awk -v m="$1" '$1 == m { print $2; found = 1 } END { if (!found) print 0 }'
}

# td_uas NAME PORT MEDIA_PORT SCENARIO: a carrier SIPp in the background (pid in td_pids).
td_uas() {
    local name="$1" port="$2" mp="$3" sf="$4" dir="$work/$1"
    mkdir -p "$dir"; cp "$work/td-pcma_20ms.pcap" "$dir/pcma_20ms.pcap"
    ( cd "$dir" && timeout 120 "${rt[@]}" sipp -sf "$sf" -m 1 -p "$port" -i 127.0.0.1 -mp "$mp" \
        -timeout 60s -timeout_error -trace_err -trace_msg -nostdin 127.0.0.1:5780 \
        >"$dir/stdout" 2>&1 ) &
    td_pids+=("$name:$!")
    wait_until 30 udp_bound "$port"
}

# td_wait: every carrier SIPp started by td_uas must have exited 0.
td_wait() {
    local entry name pid
    for entry in "${td_pids[@]}"; do
        name="${entry%%:*}"; pid="${entry#*:}"
        if wait "$pid"; then
            echo "PASS $name"
        else
            echo "FAIL $name"; tail -n 20 "$work/$name"/*errors.log 2>/dev/null
            failures=$((failures + 1))
        fi
    done
    td_pids=()
}

# td_call NAME NUMBER: 1001 calls NUMBER (digest), talks, hangs up; SIPp must exit 0.
td_call() {
    local dir="$work/$1"; mkdir -p "$dir"; cp "$work/td-pcma_20ms.pcap" "$dir/pcma_20ms.pcap"
    ( cd "$dir" && timeout 120 "${rt[@]}" sipp -sf "$here/scenarios/b2b_caller_bye.xml" -s "$2" \
        -au 1001 -ap secret1001 -m 1 -p 5791 -i 127.0.0.1 -mp 16791 -timeout 60s -timeout_error \
        -trace_err -nostdin 127.0.0.1:5780 >"$dir/stdout" 2>&1 )
    local rc=$?
    if [ "$rc" = 0 ]; then
        echo "PASS $1"
    else
        echo "FAIL $1 (sipp exit $rc)"; tail -n 20 "$dir"/*errors.log 2>/dev/null; tail -n 5 "$dir/stdout"
        failures=$((failures + 1))
    fi
}

# td_expect NAME ACTUAL EXPECTED: a metric moved by exactly EXPECTED.
td_expect() {
    if [ "$2" = "$3" ]; then
        echo "PASS $1 ($2)"
    else
        echo "FAIL $1 (got $2, expected $3)"; failures=$((failures + 1))
    fi
}

trunk_dns_tests() {
    local dir="$work/trunk-dns"; mkdir -p "$dir"
    td_pids=()
    python3 "$here/pcap_20ms.py" /usr/share/sip-tester/g711a.pcap "$work/td-pcma_20ms.pcap"

    # The carrier's certificate, for the name Siphon was given (RFC 5922: the domain, not
    # the SRV targets), signed by a CA that only Siphon's trunk configuration trusts.
    if ! { openssl req -x509 -newkey rsa:2048 -nodes -keyout "$dir/ca.key" -out "$dir/ca.pem" \
            -days 1 -subj /CN=carrier-test-ca &&
        openssl req -newkey rsa:2048 -nodes -keyout "$dir/key.pem" -out "$dir/cert.csr" \
            -subj /CN=carrier.test &&
        printf 'subjectAltName=DNS:carrier.test\n' >"$dir/san.ext" &&
        openssl x509 -req -in "$dir/cert.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
            -CAcreateserial -days 1 -extfile "$dir/san.ext" -out "$dir/cert.pem"; } >"$dir/openssl.log" 2>&1; then
        echo "FAIL trunk-dns-certificates"; cat "$dir/openssl.log"; failures=$((failures + 1)); return 1
    fi

    dnsmasq --keep-in-foreground --no-daemon --port=5790 --listen-address=127.0.0.1 \
        --bind-interfaces --no-resolv --no-hosts --no-poll --user=root --pid-file= --local-ttl=1 \
        --host-record=a.carrier.test,127.0.0.1 --host-record=b.carrier.test,127.0.0.1 \
        --host-record=c.carrier.test,127.0.0.1 \
        --srv-host=_sip._udp.carrier.test,c.carrier.test,5788,5,0 \
        --srv-host=_sip._udp.carrier.test,a.carrier.test,5781,10,0 \
        --srv-host=_sip._udp.carrier.test,b.carrier.test,5782,20,0 \
        --srv-host=_sips._tcp.carrier.test,c.carrier.test,5787,5,0 \
        --srv-host=_sips._tcp.carrier.test,a.carrier.test,5783,10,0 \
        --srv-host=_sips._tcp.carrier.test,b.carrier.test,5784,20,0 \
        --log-queries >"$dir/dnsmasq.log" 2>&1 &
    local dns_pid=$!

    printf '[server:default]\nmethod = TLSv1.2+\nverify_certificate = no\nrequire_certificate = no\nprivate_key = %s\ncertificate = %s\n' \
        "$dir/key.pem" "$dir/cert.pem" >"$dir/tls.cfg"
    sed "s|@TLS_CFG@|$dir/tls.cfg|" "$here/kamailio/carrier-tls.cfg" >"$dir/kamailio.cfg"
    kamailio -f "$dir/kamailio.cfg" -DD -E -w "$dir" >"$dir/kamailio.log" 2>&1 &
    local kam_pid=$!

    cat >"$dir/siphon.toml" <<EOF
[sip]
listen = "127.0.0.1:5780"
tls_listen = "127.0.0.1:5779"
tls_cert = "$dir/cert.pem"
tls_key = "$dir/key.pem"

[http]
listen = "$td_http"

[rtp]
port_min = 34000
port_max = 34998

[dns]
servers = ["127.0.0.1:5790"]

[[accounts]]
username = "1001"
password = "secret1001"
kind = "phone"

[[trunks]]
name = "carrier-udp"
address = "carrier.test"
failover_timeout_s = 2

[[trunks]]
name = "carrier-tls"
address = "carrier.test"
transport = "tls"
tls_ca_file = "$dir/ca.pem"

# The carrier's certificate says carrier.test, not this name: Siphon must refuse it.
[[trunks]]
name = "carrier-wrong-name"
address = "b.carrier.test:5784"
transport = "tls"
tls_ca_file = "$dir/ca.pem"

[[dialplan]]
number = "_7X."
action = "trunk"
trunk = "carrier-wrong-name"

[[dialplan]]
number = "_8X."
action = "trunk"
trunk = "carrier-udp"

[[dialplan]]
number = "_9X."
action = "trunk"
trunk = "carrier-tls"
EOF
    "${rt[@]}" "$siphon" --config "$dir/siphon.toml" --log info >"$work/trunk-dns-siphon.log" 2>&1 &
    local td_siphon=$!
    if ! wait_until 60 answers_options 5792 127.0.0.1:5780 "$td_siphon"; then
        echo "FAIL trunk-dns-start"; failures=$((failures + 1))
    fi
    # Both trunks resolved (SRV, then each target's A record) before calls are placed.
    if wait_until 30 grep -q 'trunk resolved.*carrier-tls' "$work/trunk-dns-siphon.log" &&
        wait_until 30 grep -q 'trunk resolved.*carrier-udp' "$work/trunk-dns-siphon.log"; then
        echo "PASS trunk-dns-resolved"
    else
        echo "FAIL trunk-dns-resolved"; tail -n 5 "$work/trunk-dns-siphon.log"; failures=$((failures + 1))
    fi

    # A certificate for another name is refused (no call is placed over that connection):
    # the caller gets 480 (a trunk's 503, real or from a failed connection, is not passed
    # on: it would tell the caller's proxy that Siphon itself is out of service) and the
    # failure is counted. (First: connections are shared per
    # address, and a later call leaves one open to 5784, checked for carrier.test.)
    local connect_before
    connect_before="$(td_metric siphon_sip_connect_failures_total)"
    mkdir -p "$work/trunk-dns-wrong-name"
    # The busy caller's scenario, expecting 480 where it expects 486.
    sed 's/response="486"/response="480"/' "$here/scenarios/b2b_caller_busy.xml" \
        >"$work/trunk-dns-wrong-name/caller_480.xml"
    ( cd "$work/trunk-dns-wrong-name" && timeout 60 sipp -sf caller_480.xml \
        -s 71234 -au 1001 -ap secret1001 -m 1 -p 5791 -i 127.0.0.1 -timeout 30s -timeout_error \
        -trace_err -nostdin 127.0.0.1:5780 >"$work/trunk-dns-wrong-name/stdout" 2>&1 )
    local wrong_rc=$?
    if [ "$wrong_rc" = 0 ] &&
        grep -q 'cannot connect to trunk.*peer=127.0.0.1:5784.*\(certificate\|NotValidForName\)' "$work/trunk-dns-siphon.log"; then
        echo "PASS trunk-dns-tls-wrong-name-refused"
    else
        echo "FAIL trunk-dns-tls-wrong-name-refused"; grep 'cannot connect' "$work/trunk-dns-siphon.log" | tail -n 3
        failures=$((failures + 1))
    fi
    td_expect trunk-dns-tls-wrong-name-counted "$(( $(td_metric siphon_sip_connect_failures_total) - connect_before ))" 1

    # UDP: the first address never answers (2 s failover timeout), the second says 503,
    # the third answers; the caller is connected, and never hears the 503.
    local before
    before="$(td_metric siphon_trunk_failovers_total)"
    td_uas trunk-dns-udp-503 5781 16781 "$here/scenarios/carrier_503.xml"
    td_uas trunk-dns-udp-answers 5782 16782 "$here/scenarios/b2b_callee_answer.xml"
    td_call trunk-dns-udp-call 81234
    td_wait
    td_expect trunk-dns-udp-failovers "$(( $(td_metric siphon_trunk_failovers_total) - before ))" 2

    # TLS opened by Siphon: nothing listens on the first address (a transport error, at
    # once: a 503 from the dialer), Kamailio's 5783 says 503, its 5784 relays to the core.
    before="$(td_metric siphon_trunk_failovers_total)"
    connect_before="$(td_metric siphon_sip_connect_failures_total)"
    if ! capture_start "$work/trunk-dns-tls.pcapng" "" "udp portrange 34000-34999 or udp port 16785 or udp port 16791"; then
        echo "FAIL trunk-dns-tls (no capture)"; failures=$((failures + 1))
    fi
    td_uas trunk-dns-tls-core 5785 16785 "$here/scenarios/carrier_core_answer.xml"
    td_call trunk-dns-tls-call 91234
    td_wait
    capture_stop
    # Signalling went over TLS; the audio of the call must still flow whole both ways.
    local side mp
    for side in carrier:16785 caller:16791; do
        mp="${side#*:}"
        if python3 "$here/rtp_check.py" "$work/trunk-dns-tls.pcapng" "$mp" 8 \
            >"$work/trunk-dns-tls-${side%%:*}.check" 2>&1; then
            echo "PASS trunk-dns-tls-rtp-to-${side%%:*}"
        else
            echo "FAIL trunk-dns-tls-rtp-to-${side%%:*}"; failures=$((failures + 1))
            sed 's/^/    /' "$work/trunk-dns-tls-${side%%:*}.check"
        fi
    done
    td_expect trunk-dns-tls-failovers "$(( $(td_metric siphon_trunk_failovers_total) - before ))" 2
    td_expect trunk-dns-tls-connect-failure "$(( $(td_metric siphon_sip_connect_failures_total) - connect_before ))" 1
    if grep -q 'INVITE on 5783 over tls' "$dir/kamailio.log" &&
        grep -q 'INVITE on 5784 over tls for 91234 relayed' "$dir/kamailio.log"; then
        echo "PASS trunk-dns-tls-carrier-saw-tls"
    else
        echo "FAIL trunk-dns-tls-carrier-saw-tls"; grep -i 'carrier:\|error' "$dir/kamailio.log" | tail -n 10
        failures=$((failures + 1))
    fi

    kill "$td_siphon" "$kam_pid" "$dns_pid" 2>/dev/null
    wait "$td_siphon" "$kam_pid" "$dns_pid" 2>/dev/null
}

trunk_dns_tests
