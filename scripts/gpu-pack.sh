#!/usr/bin/env bash
# Pack what a GPU session needs into .gpu/ (run HERE, on a machine with the Rust toolchain):
# the GPU machine has CUDA but no Rust, so it gets built binaries and CPU reference outputs.
#
#   scripts/gpu-pack.sh            # then, on the GPU machine, from the repository root with .gpu
#                                  # carried:  scripts/gpu-session.sh part1 ; scripts/gpu-session.sh part2
#
# .gpu/ holds:
#   bin/snnc, bin/test-gpu, bin/test-macro   release builds, stripped (tests/gpu.rs, tests/macro.rs)
#   refs/                the CPU outputs tests/gpu.rs compares with (SNNC_GPU_REFS)
#   run/<example>/       the CPU outputs of `snnc run examples/<example>.snn` (default seeds)
#   cpu.json             the CPU's training runs (scripts/gpu-train-runs.sh: test accuracy,
#                        seconds) and the pack's commit and date
#   manifest.txt         commit, date, toolchain, sizes
# and must fit, with the working tree, in the 64 MiB a GPU session carries (checked at the end).
# Environment: SNNC_GPU_PACK (default .gpu), CARGO_TARGET_DIR and CARGO_BUILD_JOBS as for cargo.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PACK=${SNNC_GPU_PACK:-$ROOT/.gpu}
LIMIT_MIB=64
TMP=$(mktemp -d /tmp/snnc-gpu-pack.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
export NO_COLOR=1 SNNC_CACHE_DIR=$TMP/cache

say() { printf '[gpu-pack] %s\n' "$*" >&2; }

# The paths of the executables cargo reports (one JSON message per artifact on stdout).
executables() {
    python3 -c '
import json, sys
want = set(sys.argv[1:])
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        kind = m["target"]["kind"][0]
        if kind + ":" + m["target"]["name"] in want:
            print(kind + ":" + m["target"]["name"], m["executable"])
' "$@"
}

say "building release snnc"
cargo build --release --locked -p snnc --bin snnc --message-format=json-render-diagnostics \
    > "$TMP/build.json"
say "building the GPU test binaries (cargo test --release --no-run --test gpu --test macro)"
cargo test --release --locked --no-run --test gpu --test macro \
    --message-format=json-render-diagnostics > "$TMP/tests.json"
cat "$TMP/build.json" "$TMP/tests.json" | executables bin:snnc test:gpu test:macro > "$TMP/exes"
exe() {
    local p
    p=$(awk -v k="$1" '$1 == k { print $2 }' "$TMP/exes" | tail -1)
    [ -n "$p" ] && [ -x "$p" ] || { say "error: cargo reported no executable for $1"; exit 1; }
    echo "$p"
}
SNNC=$(exe bin:snnc)
TEST_GPU=$(exe test:gpu)
TEST_MACRO=$(exe test:macro)

# Only what this script makes is replaced (scripts/gpu_lif_prepare.sh writes beside it).
rm -rf "$PACK/bin" "$PACK/refs" "$PACK/run" "$PACK/cpu.json" "$PACK/manifest.txt"
mkdir -p "$PACK/bin" "$PACK/refs" "$PACK/run"
for pair in "$SNNC:snnc" "$TEST_GPU:test-gpu" "$TEST_MACRO:test-macro"; do
    src=${pair%:*}
    dst=$PACK/bin/${pair##*:}
    if command -v strip > /dev/null; then
        strip -o "$dst" "$src"
    else
        cp "$src" "$dst"
    fi
done

say "recording the CPU outputs of tests/gpu.rs (SNNC_GPU_REFS)"
# Without a GPU the test computes and writes every CPU output, then prints its SKIP line.
SNNC_GPU_REFS=$PACK/refs "$TEST_GPU" --nocapture --skip host_shim > "$TMP/refs.log" 2>&1 || {
    cat "$TMP/refs.log" >&2
    say "error: recording the references failed"
    exit 1
}
nrefs=$(find "$PACK/refs" -name '*.npy' | wc -l)
[ "$nrefs" -gt 0 ] || { say "error: no references were written"; exit 1; }

# The STDP networks (Spyker's, batch 64 and up to 1 GB) run at batch 4: the GPU session runs
# every example under compute-sanitizer within a time limit. gpu-session.sh uses the same.
example_batch() { grep -q 'synapse *=' "$1" && echo "--batch 4"; }

say "recording the CPU outputs of snnc run on every example"
for ex in examples/*.snn; do
    name=$(basename "$ex" .snn)
    # shellcheck disable=SC2046 # the batch flag is one word or none
    "$PACK/bin/snnc" run "$ex" $(example_batch "$ex") -o "$PACK/run/$name" > "$TMP/run-$name.log" 2>&1 || {
        cat "$TMP/run-$name.log" >&2
        say "error: snnc run $ex failed on the CPU"
        exit 1
    }
done

# shellcheck source=scripts/gpu-train-runs.sh
. scripts/gpu-train-runs.sh
commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
dirty=$(git status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo "+uncommitted changes" || true)
: > "$TMP/train.tsv"
for run in $TRAIN_RUNS; do
    train_args "$run"
    say "training $run on the CPU (snnc train ${ARGS[*]}): the accuracy the GPU run is compared with"
    start=$(date +%s.%N)
    "$PACK/bin/snnc" train "${ARGS[@]}" -q -o "$TMP/train-$run" > "$TMP/train-$run.log" 2>&1 || {
        cat "$TMP/train-$run.log" >&2
        say "error: CPU training of $run failed"
        exit 1
    }
    end=$(date +%s.%N)
    printf '%s\t%s\t%s\t%s\n' "$run" "$TMP/train-$run.log" "$start" "$end" >> "$TMP/train.tsv"
done
python3 - "$TMP/train.tsv" "$commit$dirty" "$PACK/cpu.json" <<'PY'
import json, re, sys, time
runs, commit, out = sys.argv[1:]
train = {}
for line in open(runs):
    name, log, start, end = line.rstrip("\n").split("\t")
    m = re.search(r"test accuracy: ([0-9.]+)% \(.*?([0-9.]+) s training\)", open(log).read())
    if not m:
        sys.exit(f"no test accuracy in the CPU training log of {name}")
    train[name] = {"test_accuracy": float(m.group(1)), "training_s": float(m.group(2)),
                   "wall_s": round(float(end) - float(start), 2)}
json.dump({"commit": commit, "packed": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "train": train}, open(out, "w"), indent=1)
PY

tree_bytes=$(git ls-files -z -co --exclude-standard | xargs -0 stat -c %s 2> /dev/null \
    | awk '{ s += $1 } END { print s + 0 }')
pack_bytes=$(du -sb "$PACK" | cut -f1)
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
{
    echo "snnc GPU pack (scripts/gpu-pack.sh)"
    echo "commit: $commit$dirty"
    echo "packed: $(date -u '+%Y-%m-%d %H:%M UTC') on $(uname -sm)"
    echo "rustc: $(rustc -V 2>/dev/null || echo unknown)"
    echo "references: $nrefs npy files (tests/gpu.rs), $(ls "$PACK/run" | wc -l) examples (snnc run)"
    echo "size: $(mib "$pack_bytes") MiB (.gpu) + $(mib "$tree_bytes") MiB (working tree)"
    (cd "$PACK" && find bin -type f -printf '%p %s bytes\n' | sort)
} > "$PACK/manifest.txt"
cat "$PACK/manifest.txt" >&2
total=$((pack_bytes + tree_bytes))
if [ "$total" -gt $((LIMIT_MIB * 1048576)) ]; then
    say "error: .gpu ($(mib "$pack_bytes") MiB) and the working tree ($(mib "$tree_bytes") MiB) are $(mib "$total") MiB together: over the $LIMIT_MIB MiB a GPU session carries"
    exit 1
fi
say "ok: $PACK is $(mib "$pack_bytes") MiB ($(mib "$total") of $LIMIT_MIB MiB with the working tree)"
