#!/usr/bin/env bash
# Builds every fuzz target in fuzz/ and runs each for a bounded time; exits non-zero if any
# target crashes (panic, failed assertion, sanitizer report, timeout, OOM).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]     default 10 (the CI smoke mode)
#
# Environment:
#   FUZZ_TARGETS="sdp wav"   run only these targets (default: all of `cargo fuzz list`)
#   FUZZ_SANITIZER=none      skip AddressSanitizer (default: address, falling back to none
#                            if the ASan build fails)
#   FUZZ_TOOLCHAIN=nightly   use `cargo +nightly` instead of the default toolchain
#   CARGO_BUILD_JOBS=N       build jobs, as for any cargo build
#   FUZZ_CODEGEN_UNITS=N     rustc codegen units (default 16: a faster build than
#                            cargo-fuzz's default of 1, for somewhat slower fuzzing;
#                            use 1 for long runs)
#
# Toolchain: cargo-fuzz passes nightly-only flags (-Zsanitizer=...) to rustc. Machines of
# this project have one (stable) toolchain, so unless FUZZ_TOOLCHAIN is set the script runs
# cargo-fuzz on it with RUSTC_BOOTSTRAP=1, which lets stable rustc accept those flags. It is
# confined to the fuzz build (fuzz/ has its own workspace and target dir). See
# docs/fuzzing.md.
#
# Inputs: fuzz/corpus-seed/<target> (committed seeds), fuzz/corpus/<target> (the working
# corpus, gitignored, grows across runs) and fuzz/regressions/<target> (known crashers,
# replayed at start-up with the corpus, so a bug not fixed yet fails the run). Crashes found
# are written to fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-10}"
if ! [[ "$secs" =~ ^[0-9]+$ ]] || [ "$secs" -lt 1 ]; then
    echo "usage: $0 [SECONDS_PER_TARGET]" >&2
    exit 2
fi

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

passed=0
failed=()
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t"
    dirs=("fuzz/corpus/$t")
    [ -d "fuzz/corpus-seed/$t" ] && dirs+=("fuzz/corpus-seed/$t")
    [ -d "fuzz/regressions/$t" ] && dirs+=("fuzz/regressions/$t")
    echo "fuzz: $t for ${secs} s"
    log="$(mktemp)"
    # -timeout: one input taking 10 s is a hang; -rss_limit_mb: 2 GB is a leak.
    if "${cargo_cmd[@]}" fuzz run -s "$sanitizer" "${build_args[@]}" "$t" "${dirs[@]}" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$log" 2>&1; then
        passed=$((passed + 1))
        grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | sed "s/^/fuzz: $t: /" || true
    else
        failed+=("$t")
        # What went wrong (panic message or sanitizer report), then how to reproduce it.
        grep -E -A8 'panicked at|ERROR: (libFuzzer|AddressSanitizer|LeakSanitizer)' "$log" \
            | head -n 40 || true
        echo "..."
        grep -E -A3 'Failing input:|Reproduce with:|Minimize test case with:' "$log" || true
        echo "fuzz: $t FAILED (artifacts in fuzz/artifacts/$t/)"
    fi
    rm -f "$log"
done

echo "fuzz: whole run took $((SECONDS - start)) s"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz: failing targets: ${failed[*]}"
fi
echo "fuzz: ${passed} passed, ${#failed[@]} failed"
[ "${#failed[@]}" -eq 0 ]
