#!/usr/bin/env bash
# Memcheck of the CUDA device without a GPU: the host-shim tests of tests/gpu.rs (every
# model's forward pass and every training plan's gradients through the CUDA device's code)
# with the kernels built with -fsanitize=address (SNNC_SHIM_SANITIZE) and AddressSanitizer's
# runtime preloaded, so a kernel that reads or writes past one of the device's buffers
# aborts with a report naming the kernel's line and the buffer's allocation: what
# compute-sanitizer's memcheck reports on a GPU (scripts/gpu-session.sh part2 runs that one).
#
# The same run also reverses every launch's block and thread order (SNNC_SHIM_ORDER=reverse),
# so a kernel whose threads depend on each other's writes within a launch, a race on a GPU,
# fails the comparisons with the CPU (tests/gpu.rs::host_shim_reverse_order_* is its
# control).
#
# First a positive control (a launch over more elements than its buffers hold) must be
# caught; then the tests must pass; then a short `snnc train --device cuda-shim`.
# Skips with one line when the C++ compiler has no AddressSanitizer runtime.
# Extra arguments go to `cargo test` (e.g. --release).
set -euo pipefail
cd "$(dirname "$0")/.."
say() { echo "[shim-memcheck] $*"; }

cxx=${CXX:-g++}
asan=$("$cxx" -print-file-name=libasan.so 2>/dev/null || true)
if [ -z "$asan" ] || [ ! -e "$asan" ] || ! command -v "$cxx" > /dev/null; then
    say "SKIP: $cxx has no AddressSanitizer runtime (libasan.so)"
    exit 0
fi

bin=$(cargo test --locked --test gpu --no-run "$@" 2>&1 | sed -n 's/.*Executable tests\/gpu.rs (\(.*\))/\1/p' | tail -1)
[ -x "$bin" ] || { say "error: could not build the tests/gpu.rs test binary"; exit 1; }
snnc_profile=debug
for a in "$@"; do [ "$a" = "--release" ] && snnc_profile=release; done
cargo build --locked -q -p snnc --bin snnc "$@"

export SNNC_SHIM_SANITIZE=address
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT

say "positive control: an overflowing launch must be reported"
if LD_PRELOAD=$asan "$bin" shim_memcheck_control --ignored > "$log" 2>&1; then
    cat "$log"
    say "error: the control overflow was not reported: the sanitizer is not active"
    exit 1
fi
grep -q 'AddressSanitizer: heap-buffer-overflow' "$log" || {
    cat "$log"
    say "error: the control failed, but not with AddressSanitizer's report"
    exit 1
}
say "control caught: $(grep -m1 -o 'heap-buffer-overflow.*' "$log" | cut -c1-60)..."

say "tests/gpu.rs host-shim and device-optimizer tests under AddressSanitizer, threads in reverse order"
LD_PRELOAD=$asan SNNC_SHIM_ORDER=reverse "$bin" host_shim optimizer_ training_resumes trainer_steps --skip shim_memcheck_control > "$log" 2>&1 || {
    cat "$log"
    say "error: a host-shim test failed under AddressSanitizer"
    exit 1
}
grep -E '^test |test result' "$log"

say "snnc train --device cuda-shim under AddressSanitizer (Yin-Yang, 1 epoch of 200 samples)"
out=target/shim-memcheck
rm -rf "$out"
LD_PRELOAD=$asan SNNC_SHIM_ORDER=reverse SNNC_CACHE_DIR="$PWD/target/snnc-test-cache" \
    "target/$snnc_profile/snnc" train examples/yinyang.snn --device cuda-shim --epochs 1 \
    --limit 200 -q -o "$out" > "$log" 2>&1 || {
    cat "$log"
    say "error: snnc train --device cuda-shim failed under AddressSanitizer"
    exit 1
}
grep 'test accuracy' "$log" || true
say "ok: no out-of-bounds access in any kernel"
