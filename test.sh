#!/usr/bin/env bash
# Runs every test Siphon has: formatting and lints, unit and in-process integration tests,
# then the SIPp interop tests against the real binary. Installs what is missing (SIPp is
# Debian's `sip-tester`). CI (.ci/run) runs exactly this.
set -euo pipefail
cd "$(dirname "$0")"

missing=()
command -v sipp >/dev/null 2>&1 || missing+=(sip-tester)
if [ "${#missing[@]}" -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    echo "installing: ${missing[*]}"
    $sudo apt-get update
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y "${missing[@]}"
fi

cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
cargo build -p siphon
sip-tests/run.sh "$PWD/target/debug/siphon"
