#!/usr/bin/env bash
# Runs every test Siphon has: formatting and lints, unit and in-process integration tests,
# then the SIPp interop tests against the real binary. Installs what is missing (SIPp is
# Debian's `sip-tester`). CI (.ci/run) runs exactly this.
set -euo pipefail
cd "$(dirname "$0")"

missing=()
command -v sipp >/dev/null 2>&1 || missing+=(sip-tester)
# The media interop checks capture RTP with tshark (editcap comes with it) and analyse it
# with python3's standard library.
command -v tshark >/dev/null 2>&1 || missing+=(tshark)
command -v editcap >/dev/null 2>&1 || missing+=(wireshark-common)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
# The Pipecat interop check builds a venv (Debian splits venv/ensurepip out of python3).
python3 -c 'import ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
# The SIP-over-TLS check uses baresip as the client (SIPp from Debian has no TLS) and
# openssl for its certificate.
command -v baresip >/dev/null 2>&1 || missing+=(baresip-core)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v curl >/dev/null 2>&1 || missing+=(curl)
# The trunk DNS checks serve SRV records with dnsmasq and play a carrier's TLS edge with
# Kamailio (its TLS module is a package of its own); the carrier checks (carrier.sh) run
# Kamailio as a forking proxy.
command -v dnsmasq >/dev/null 2>&1 || missing+=(dnsmasq-base)
command -v kamailio >/dev/null 2>&1 || missing+=(kamailio)
dpkg -s kamailio-tls-modules >/dev/null 2>&1 || missing+=(kamailio-tls-modules)
# The cluster checks (sip-tests/cluster.sh): Kamailio edges sharing registrations in Redis
# (db_redis, htable from Redis), dispatching to Siphon nodes.
dpkg -s kamailio-redis-modules >/dev/null 2>&1 || missing+=(kamailio-redis-modules)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
# The durability checks read the registrations store's call journal with the sqlite3 shell.
command -v sqlite3 >/dev/null 2>&1 || missing+=(sqlite3)
# Validates docker-compose.yml without a Docker engine.
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
if [ "${#missing[@]}" -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    echo "installing: ${missing[*]}"
    $sudo apt-get update
    # tshark asks whether non-root users may capture; the default answer is fine.
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y "${missing[@]}"
fi

cargo fmt --all --check
# Modules import each other without a cycle, in every crate (docs/architecture.md).
python3 scripts/check-module-cycles.py
# The compose stack must parse (services, volumes, the files it mounts); its dashboard's
# metric names are checked against a live Siphon in sip-tests/run.sh.
docker-compose -f docker-compose.yml config -q
docker-compose -f docker-compose.cluster.yml config -q
# The cluster's edge configuration parses (kamailio -c also loads its modules).
kamailio -c -f deploy/cluster/kamailio-edge.cfg -A 'DISPATCHER_LIST="deploy/cluster/dispatcher.list"' \
    -A 'CTL_SOCKET="unix:/tmp/siphon-kamailio-edge-check.ctl"' >/dev/null
for f in deploy/prometheus.yml deploy/alerts.yml deploy/grafana/dashboards/siphon.json \
    deploy/grafana/provisioning/datasources/prometheus.yml \
    deploy/grafana/provisioning/dashboards/siphon.yml deploy/Dockerfile deploy/siphon.toml; do
    [ -s "$f" ] || { echo "missing $f (mounted by docker-compose.yml)"; exit 1; }
done
python3 -c 'import json,sys; json.load(open(sys.argv[1]))' deploy/grafana/dashboards/siphon.json
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
# The interop suite runs the optimised binary, as users do (the flood check measures
# whether established calls keep their audio under load).
cargo build --release -p siphon -p siphon-analytics   # sip-tests/transfer.sh runs the reference service as a bot
sip-tests/run.sh "$PWD/target/release/siphon"
# Every fuzz target, built as for fuzzing (libFuzzer, AddressSanitizer), runs once over its
# committed inputs: seeds, promoted finds and every saved crash (fuzz/regressions). No random
# input: the same result every run. The open-ended search is `scripts/fuzz.sh SECONDS`
# (docs/fuzzing.md). Installs cargo-fuzz if missing; the fuzz build has its own workspace.
scripts/fuzz.sh --replay
