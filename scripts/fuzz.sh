#!/usr/bin/env bash
# The fuzz targets in fuzz/, in two modes:
#
#   scripts/fuzz.sh --replay               the gate (./test.sh runs it): builds every target
#                                          and runs each once over its committed inputs
#                                          (fuzz/corpus-seed, fuzz/corpus-found and
#                                          fuzz/regressions): no random input, no time limit,
#                                          the same result on every run
#   scripts/fuzz.sh [SECONDS_PER_TARGET]   the search: libFuzzer mutates for the given time
#                                          per target (default 300) from the committed
#                                          inputs plus the working corpus fuzz/corpus
#   scripts/fuzz.sh --promote              merges what searches added to the working corpus
#                                          (new coverage only) into fuzz/corpus-found, the
#                                          committed corpus that --replay runs
#
# Either exits non-zero if a target crashes (panic, failed property, sanitizer report,
# timeout, OOM). A crash found by a search is written to fuzz/artifacts/<target>/; how it
# becomes a regression test is in docs/fuzzing.md.
#
# Environment:
#   FUZZ_TARGETS="sdp wav"   only these targets (default: all of `cargo fuzz list`)
#   FUZZ_SANITIZER=none      skip AddressSanitizer (default: address, falling back to none
#                            if the ASan build fails)
#   FUZZ_TOOLCHAIN=nightly   use `cargo +nightly` instead of the default toolchain
#   CARGO_BUILD_JOBS=N       build jobs, as for any cargo build
#   FUZZ_CODEGEN_UNITS=N     rustc codegen units (default 16: a faster build than
#                            cargo-fuzz's default of 1, for somewhat slower fuzzing;
#                            use 1 for long searches)
#
# Toolchain: cargo-fuzz passes nightly-only flags (-Zsanitizer=...) to rustc. Machines of
# this project have one (stable) toolchain, so unless FUZZ_TOOLCHAIN is set the script runs
# cargo-fuzz on it with RUSTC_BOOTSTRAP=1, which lets stable rustc accept those flags. It is
# confined to the fuzz build (fuzz/ has its own workspace and target dir). See
# docs/fuzzing.md.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=search
secs=300
case "${1:-}" in
    --replay) mode=replay ;;
    --promote) mode=promote ;;
    "") ;;
    *)
        if ! [[ "$1" =~ ^[0-9]+$ ]] || [ "$1" -lt 1 ]; then
            echo "usage: $0 [--replay | --promote | SECONDS_PER_TARGET]" >&2
            exit 2
        fi
        secs="$1"
        ;;
esac

cargo_cmd=(cargo)
if [ -n "${FUZZ_TOOLCHAIN:-}" ]; then
    cargo_cmd=(cargo "+$FUZZ_TOOLCHAIN")
else
    export RUSTC_BOOTSTRAP=1
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

# The same build options go to `build` and `run` (run rebuilds when they differ).
build_args=(--codegen-units "${FUZZ_CODEGEN_UNITS:-16}")

start=$SECONDS
sanitizer="${FUZZ_SANITIZER:-address}"
echo "fuzz: building targets (sanitizer: $sanitizer)"
if ! "${cargo_cmd[@]}" fuzz build -s "$sanitizer" "${build_args[@]}"; then
    if [ "$sanitizer" = none ]; then
        echo "fuzz: build failed" >&2
        exit 1
    fi
    echo "fuzz: the $sanitizer build failed; building without a sanitizer" >&2
    sanitizer=none
    "${cargo_cmd[@]}" fuzz build -s none "${build_args[@]}"
fi
echo "fuzz: built in $((SECONDS - start)) s"

if [ -n "${FUZZ_TARGETS:-}" ]; then
    read -r -a targets <<<"$FUZZ_TARGETS"
else
    mapfile -t targets < <("${cargo_cmd[@]}" fuzz list)
fi

# committed_dirs TARGET: the committed inputs of a target that exist.
committed_dirs() {
    local d
    for d in corpus-seed corpus-found regressions; do
        [ -d "fuzz/$d/$1" ] && echo "fuzz/$d/$1"
    done
    return 0
}

passed=0
failed=()
for t in "${targets[@]}"; do
    mapfile -t dirs < <(committed_dirs "$t")
    # -timeout: one input taking 10 s is a hang; -rss_limit_mb: 2 GB is a leak.
    limits=(-timeout=10 -rss_limit_mb=2048)
    case "$mode" in
        replay)
            # -runs=0: execute every input of the given folders once, mutate nothing. The
            # first folder would receive new inputs; with no mutation none are written.
            echo "fuzz: $t: replaying $(find "${dirs[@]}" -type f | wc -l) inputs (${dirs[*]})"
            args=("${dirs[@]}" -- -runs=0 "${limits[@]}")
            ;;
        search)
            mkdir -p "fuzz/corpus/$t"
            echo "fuzz: $t for ${secs} s"
            # The working corpus first: libFuzzer writes what it finds into the first folder.
            args=("fuzz/corpus/$t" "${dirs[@]}" -- -max_total_time="$secs" "${limits[@]}"
                -print_final_stats=1)
            ;;
        promote)
            mkdir -p "fuzz/corpus/$t" "fuzz/corpus-found/$t"
            before=$(find "fuzz/corpus-found/$t" -type f | wc -l)
            # -merge=1: copy into the first folder the inputs of the others that add
            # coverage to it.
            args=("fuzz/corpus-found/$t" "fuzz/corpus/$t" -- -merge=1 "${limits[@]}")
            ;;
    esac
    log="$(mktemp)"
    if "${cargo_cmd[@]}" fuzz run -s "$sanitizer" "${build_args[@]}" "$t" "${args[@]}" \
        >"$log" 2>&1; then
        passed=$((passed + 1))
        case "$mode" in
            search) grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | sed "s/^/fuzz: $t: /" || true ;;
            promote) echo "fuzz: $t: corpus-found $before -> $(find "fuzz/corpus-found/$t" -type f | wc -l) inputs" ;;
            replay) ;;
        esac
    else
        failed+=("$t")
        # What went wrong (panic message or sanitizer report), then how to reproduce it.
        grep -E -A8 'panicked at|ERROR: (libFuzzer|AddressSanitizer|LeakSanitizer)' "$log" \
            | head -n 40 || true
        echo "..."
        grep -E -A3 'Failing input:|Reproduce with:|Minimize test case with:|Test unit written to' "$log" || true
        echo "fuzz: $t FAILED"
    fi
    rm -f "$log"
done

echo "fuzz: whole $mode run took $((SECONDS - start)) s"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz: failing targets: ${failed[*]}"
fi
echo "fuzz: ${passed} passed, ${#failed[@]} failed"
[ "${#failed[@]}" -eq 0 ]
