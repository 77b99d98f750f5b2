#!/usr/bin/env bash
# Runs the cargo-fuzz targets of fuzz/ for a bounded time each (docs/testing.md, "Fuzzing").
#
#   scripts/fuzz.sh SECONDS [TARGET...]     # targets: source, data (default: both)
#
# Installs cargo-fuzz into .tools/cargo-fuzz when it is not on PATH. libFuzzer needs a nightly
# compiler: `+nightly` when rustup has one, else the stable toolchain with RUSTC_BOOTSTRAP=1
# (all a fresh machine has). Each target runs at low priority on one core, in fork mode so
# that a crash is saved and the run goes on; an input slower than 10 s is a finding (the
# project's bound on one check or compile), and so is one that needs more than 4 GiB.
# New inputs land in fuzz/target/new-corpus/TARGET and only those that add coverage are
# merged into fuzz/corpus/TARGET. Crashes go to fuzz/artifacts/TARGET; see the end of the
# output. Extra libFuzzer flags: FUZZ_ARGS="-max_len=512".
set -euo pipefail

if [[ $# -lt 1 || ! $1 =~ ^[0-9]+$ ]]; then
    echo "usage: scripts/fuzz.sh SECONDS [TARGET...]" >&2
    exit 2
fi
seconds=$1
shift
root="$(cd "$(dirname "$0")/.." && pwd)"
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(source data)

if ! command -v cargo-fuzz >/dev/null; then
    tools="$root/.tools/cargo-fuzz"
    if [[ ! -x $tools/bin/cargo-fuzz ]]; then
        echo "fuzz: installing cargo-fuzz into $tools"
        cargo install cargo-fuzz --locked --root "$tools"
    fi
    export PATH="$tools/bin:$PATH"
fi

toolchain=()
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    toolchain=(+nightly)
else
    # The stable compiler builds libFuzzer's instrumentation once told it may use unstable
    # flags (-Zsanitizer and friends).
    echo "fuzz: no nightly toolchain; using stable with RUSTC_BOOTSTRAP=1"
    export RUSTC_BOOTSTRAP=1
fi

cd "$root/fuzz"
# -O with debug assertions: overflow checks are findings too.
build=(cargo "${toolchain[@]}" fuzz build -O --debug-assertions)
run=(cargo "${toolchain[@]}" fuzz run -O --debug-assertions)
for t in "${targets[@]}"; do
    "${build[@]}" "$t"
done

for t in "${targets[@]}"; do
    new="target/new-corpus/$t"
    mkdir -p "corpus/$t" "$new" "artifacts/$t"
    echo "fuzz: $t for ${seconds}s"
    # shellcheck disable=SC2086 # FUZZ_ARGS is a list of flags
    nice -n 19 "${run[@]}" "$t" "$new" "corpus/$t" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 \
        -fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 \
        -print_final_stats=1 ${FUZZ_ARGS:-} 2>&1 | tee "target/fuzz-$t.log" | grep -E '^#|INFO: fuzzed for|crash|timeout|oom|stat::' || true
    # Keep only the new inputs that reach new edges (hit counts aside): a small committed corpus.
    nice -n 19 "${run[@]}" "$t" "corpus/$t" "$new" -- -merge=1 -use_counters=0 \
        >"target/merge-$t.log" 2>&1
    rm -rf "$new"
done

echo "fuzz: findings (crashes, timeouts, out-of-memory inputs):"
found=$(for t in "${targets[@]}"; do find "artifacts/$t" -type f; done)
if [[ -n $found ]]; then
    sed 's/^/  fuzz\//' <<<"$found"
else
    echo "  none"
fi
