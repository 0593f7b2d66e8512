#!/usr/bin/env bash
# Runs only the cluster checks (cluster.sh: Redis, two Kamailio edges, three Siphon nodes),
# without the rest of run.sh. Usage: sip-tests/cluster-alone.sh [path/to/siphon]
# Needs root (pcap play, capture), like run.sh's media checks; KEEP_WORK=1 keeps the logs.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
siphon="${1:-$root/target/release/siphon}"
work="$(mktemp -d)"
failures=0
# What run.sh defines for the sections it sources.
# shellcheck source=sip-tests/lib.sh
source "$here/lib.sh"
trap '[ -n "${KEEP_WORK:-}" ] && echo "work dir kept: $work" || rm -rf "$work"' EXIT

# shellcheck source=sip-tests/cluster.sh
source "$here/cluster.sh"

if [ "$failures" -ne 0 ]; then
    echo "$failures cluster check(s) failed"; exit 1
fi
echo "all cluster checks passed"
