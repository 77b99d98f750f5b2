#!/usr/bin/env bash
# The GPU checks of issue 3, on a machine with an NVIDIA GPU and CUDA but no Rust toolchain.
# Run from the repository root with .gpu/ present (made on the CPU machine by
# scripts/gpu-pack.sh and carried along):
#
#   scripts/gpu-session.sh part1   # (a) tests/gpu.rs: every model, every training plan's
#                                  #     gradients, the optimizer on the GPU, CPU vs GPU
#                                  # (f) Network::new_cuda (tests/macro.rs)
#                                  # (c) copy bandwidth, lif-fwd and its fraction of the copy
#                                  #     (+ the LIF kernel alone under ncu)
#                                  # (d) mlp-infer  (e) conv-infer, psn-fwd, psn-fwdbwd
#   scripts/gpu-session.sh part2   # (h) mlp-train: a training step on the GPU
#                                  # (g) training on the GPU vs the CPU's accuracy
#                                  # (b) compute-sanitizer memcheck: `snnc run` of every example
#                                  #     (outputs compared with the CPU's) and training steps
#   scripts/gpu-session.sh [all]   # both, one after the other (over 10 minutes at worst)
#
# Nothing stops at a failure: every check has its own time limit, its result is recorded, and
# the next one runs. A part never runs longer than SNNC_GPU_BUDGET seconds (default 540 per
# part); checks left when it is spent are recorded as skipped. Writes to $OUT (default
# ./gpu-out), at most 6 files: summary.md (device, CUDA version, date; a table of the checks
# and one of the benchmarks, to paste into BENCHMARKS.md), env.log, tests.log, bench.log,
# train.log and memcheck.log (each part writes the ones of its checks). Exit status 0 when every
# check ran and none failed or timed out. Needs bash, coreutils and python3 (standard library).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PART=${1:-all}
case $PART in
part1 | part2 | all) ;;
*)
    echo "usage: scripts/gpu-session.sh [part1|part2|all]" >&2
    exit 2
    ;;
esac
OUT=${OUT:-$ROOT/gpu-out}
PACK=${SNNC_GPU_PACK:-$ROOT/.gpu}
if [ "$PART" = all ]; then BUDGET=${SNNC_GPU_BUDGET:-1080}; else BUDGET=${SNNC_GPU_BUDGET:-540}; fi
DEADLINE=$((SECONDS + BUDGET))
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd) || exit 1
WORK=$(mktemp -d /tmp/snnc-gpu-session.XXXXXX) || exit 1
trap 'rm -rf "$WORK"' EXIT
SNNC=$PACK/bin/snnc
REPORT=(python3 "$ROOT/scripts/gpu_report.py")
ROWS=$WORK/rows.tsv
BENCH=$WORK/bench.jsonl
ENVJ=$WORK/env.json
: > "$ROWS"
: > "$BENCH"
# The test binaries read the models from this checkout, not the one they were built in.
export SNNC_REPO_ROOT=$ROOT SNNC_CACHE_DIR=$WORK/cache NO_COLOR=1 PYTHONUNBUFFERED=1
# shellcheck source=scripts/gpu-train-runs.sh
. "$ROOT/scripts/gpu-train-runs.sh"

# --- the CUDA tools and libraries --------------------------------------------------------
# snnc loads libcuda, libnvrtc and libcublas at run time; add the toolkit's directories (and
# those of NVIDIA's Python wheels) after whatever LD_LIBRARY_PATH already holds.
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
    [ -d "$d" ] && LD_LIBRARY_PATH=${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$d
done
wheel_libs=$(timeout 30 python3 - 2> /dev/null <<'PY'
import glob, os, site
dirs = set()
for sp in site.getsitepackages() + [site.getusersitepackages()]:
    for lib in ("libnvrtc.so*", "libcublas.so*"):
        for f in glob.glob(os.path.join(sp, "nvidia", "*", "lib", lib)) + glob.glob(
                os.path.join(sp, "nvidia", "*", "*", "lib", lib)):
            dirs.add(os.path.dirname(f))
print(":".join(sorted(dirs)))
PY
)
[ -n "$wheel_libs" ] && LD_LIBRARY_PATH=${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$wheel_libs
export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}
for d in /usr/local/cuda/bin /usr/local/cuda/compute-sanitizer /opt/nvidia/nsight-compute/*; do
    [ -d "$d" ] && PATH=$PATH:$d
done
export PATH
SANITIZER=$(command -v compute-sanitizer || true)
NCU=$(command -v ncu || true)
HAVE_GPU=0
timeout 30 nvidia-smi -L 2> /dev/null | grep -q '^GPU ' && HAVE_GPU=1

# --- recording ---------------------------------------------------------------------------
say() { printf '[gpu-session] %s\n' "$*"; }

# row CHECK RESULT NUMBERS: one line of the summary table; summary.md is rewritten every time,
# so a session cut short still leaves the rows it reached.
row() {
    printf '%s\t%s\t%s\n' "$1" "$2" "$(printf '%s' "$3" | tr '\t\n' '  ')" >> "$ROWS"
    "${REPORT[@]}" summary "$ROWS" "$BENCH" "$ENVJ" "$PART" "$OUT/summary.md" ||
        say "warning: could not write summary.md"
    say "$1: $2${3:+ -- $3}"
}

# limited SECONDS LOG CMD...: runs CMD with a time limit of SECONDS or what is left of the
# budget, whichever is less; its output goes to $WORK/last.out and is appended to LOG. Sets
# RC (124 or 137: timed out; 125: not run, the budget is spent) and TOOK (seconds).
limited() {
    local want=$1 log=$2 left t start
    shift 2
    left=$((DEADLINE - SECONDS))
    t=$((want < left ? want : left))
    : > "$WORK/last.out"
    TOOK=0
    if ((t < 5)); then
        printf '\n[not run, the time budget of this part is spent] %s\n' "$*" >> "$log"
        RC=125
        return
    fi
    printf '\n$ %s   [time limit %ss]\n' "$*" "$t" >> "$log"
    start=$SECONDS
    timeout -k 10 "$t" "$@" > "$WORK/last.out" 2>&1
    RC=$?
    TOOK=$((SECONDS - start))
    cat "$WORK/last.out" >> "$log"
    printf '[exit %s after %s s]\n' "$RC" "$TOOK" >> "$log"
}

# verdict: PASS, FAIL (..), TIMEOUT or SKIP (..) for the last `limited` command.
verdict() {
    if ((RC == 125)); then
        echo "SKIP (time budget spent)"
    elif ((RC == 124 || RC == 137)); then
        echo "TIMEOUT (${TOOK} s)"
    elif grep -qE 'no CUDA driver|no CUDA device|SKIP:' "$WORK/last.out"; then
        if ((HAVE_GPU)); then echo "FAIL (CUDA unavailable)"; else echo "SKIP (no GPU)"; fi
    elif ((RC == 0)); then
        echo PASS
    elif ((RC == 127)); then
        echo "FAIL (command not found)"
    else
        echo "FAIL (exit $RC)"
    fi
}

# why: the line of the last command's output that says what went wrong.
why() {
    grep -m1 -E 'no CUDA|SKIP:|^error|panicked|ERROR|[Ee]rror:' "$WORK/last.out" | cut -c1-300
}

# --- the checks --------------------------------------------------------------------------
envinfo() {
    local log=$OUT/env.log q cuda nvccv
    {
        echo "# scripts/gpu-session.sh $PART, $(date -u '+%Y-%m-%d %H:%M:%S UTC'), $(uname -srm)"
        echo "# repository: $ROOT   pack: $PACK   budget: ${BUDGET}s   GPU seen: $HAVE_GPU"
        echo
        cat "$PACK/manifest.txt" 2> /dev/null ||
            echo "(no $PACK/manifest.txt: run scripts/gpu-pack.sh on the CPU machine and carry .gpu)"
        cat "$PACK/cpu.json" 2> /dev/null
        for c in "nvidia-smi" \
            "nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem,power.limit --format=csv" \
            "nvcc --version" "compute-sanitizer --version" "ncu --version" "python3 --version"; do
            printf '\n$ %s\n' "$c"
            # shellcheck disable=SC2086
            timeout 30 $c 2>&1 || echo "(failed or not found)"
        done
        printf '\nLD_LIBRARY_PATH=%s\n' "$LD_LIBRARY_PATH"
        printf '\n$ ldconfig -p | grep libcuda/libnvrtc/libcublas\n'
        ldconfig -p 2> /dev/null | grep -E 'libcuda\.so|libnvrtc\.so|libcublas\.so' || echo "(none)"
    } > "$log" 2>&1
    q=$(timeout 30 nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2> /dev/null | head -1)
    cuda=$(timeout 30 nvidia-smi 2> /dev/null | grep -oE 'CUDA Version: *[0-9.]+' | head -1 | grep -oE '[0-9.]+$')
    nvccv=$(timeout 30 nvcc --version 2> /dev/null | grep -oE 'release [0-9.]+' | head -1 | cut -d' ' -f2)
    python3 - "$ENVJ" "$q" "$cuda" "$nvccv" "$PACK/cpu.json" <<'PY'
import json, os, sys, time
out, q, cuda, nvcc, cpu = sys.argv[1:]
f = [x.strip() for x in q.split(",")] if q else []
env = {"gpu": f[0] if f else "no GPU found", "driver": f[1] if len(f) > 1 else "-",
       "memory": f[2] if len(f) > 2 else "", "cuda": cuda or "-", "nvcc": nvcc,
       "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
if os.path.isfile(cpu):
    c = json.load(open(cpu))
    env["commit"], env["packed"] = c.get("commit", "-"), c.get("packed", "-")
json.dump(env, open(out, "w"))
PY
    say "device: ${q:-no GPU found}; CUDA ${cuda:--}; compute-sanitizer: ${SANITIZER:-none}; ncu: ${NCU:-none}"
}

check_gpu_tests() {
    limited 300 "$OUT/tests.log" env SNNC_GPU_REFS="$PACK/refs" "$PACK/bin/test-gpu" --nocapture --test-threads 1 --skip host_shim
    row "(a) tests/gpu.rs: every model and plan, every training plan's gradients, the optimizer on the GPU, CPU vs GPU" "$(verdict)" \
        "$("${REPORT[@]}" gpu-test "$WORK/last.out")"
}

check_new_cuda() {
    limited 90 "$OUT/tests.log" "$PACK/bin/test-macro" new_cuda_errs_cleanly_or_matches_the_cpu \
        --exact --nocapture --test-threads 1
    local v
    v=$(verdict)
    if [ "$v" = PASS ] && ! grep -q ' 1 passed' "$WORK/last.out"; then v="FAIL (the test did not run)"; fi
    if [ "$v" = PASS ]; then
        row "(f) tests/macro.rs new_cuda: include_snn! network on the GPU" "$v" \
            "mlp::Network::new_cuda(0) forward: counts equal to the CPU's"
    else
        row "(f) tests/macro.rs new_cuda: include_snn! network on the GPU" "$v" "$(why)"
    fi
}

# bench CHECK SECONDS WORKLOAD... [-- FLAGS]: `snnc bench WORKLOADS --device cuda --json`.
bench() {
    local check=$1 want=$2 v
    shift 2
    limited "$want" "$OUT/bench.log" "$SNNC" bench "$@" --device cuda --json
    grep '^{' "$WORK/last.out" >> "$BENCH"
    v=$(verdict)
    [ "$v" = PASS ] && v=measured
    local names=()
    for w in "$@"; do
        case $w in -*) break ;; *) names+=("$w") ;; esac
    done
    if [ "$v" = measured ]; then
        row "$check" "$v" "$("${REPORT[@]}" bench-line "$BENCH" "${names[@]}")"
    else
        row "$check" "$v" "$(why)"
    fi
}

# The fused LIF forward with other prefetch blocks (`--prefetch-steps`, default 8): which
# block length reaches the most of the copy bandwidth (BENCHMARKS.md, "why the fused LIF
# kernel stopped at 0.45"). Each N in its own file, so the benchmark table keeps the default.
sweep_prefetch() {
    local n v file
    for n in 1 2 4 16; do
        file=$WORK/prefetch-$n.jsonl
        limited 60 "$OUT/bench.log" "$SNNC" bench copy lif-fwd --repeat 50 \
            --prefetch-steps "$n" --device cuda --json
        grep '^{' "$WORK/last.out" > "$file"
        v=$(verdict)
        if [ "$v" = PASS ]; then
            row "(c) fused LIF forward, --prefetch-steps $n" measured \
                "$("${REPORT[@]}" bench-line "$file" lif-fwd)"
        else
            row "(c) fused LIF forward, --prefetch-steps $n" "$v" "$(why)"
        fi
    done
}

check_ncu() {
    local check="(c) LIF kernel alone under ncu (kernel time, DRAM bytes)"
    if [ -z "$NCU" ]; then
        row "$check" "SKIP (no ncu)" ""
        return
    fi
    # The 6th launch of a generated kernel: after the first run and warm-ups.
    limited 120 "$OUT/bench.log" "$NCU" --clock-control none --kernel-name 'regex:^snn_k[0-9]' \
        --launch-skip 5 --launch-count 1 \
        --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum --csv \
        "$SNNC" bench lif-fwd --device cuda --repeat 3 --json
    local v nums
    v=$(verdict)
    if [ "$v" != PASS ]; then
        row "$check" "$v" "$(why)"
        return
    fi
    nums=$("${REPORT[@]}" ncu "$WORK/last.out" "$BENCH")
    if [[ $nums == *"kernel time"* ]]; then
        row "$check" measured "$nums"
    else
        row "$check" "FAIL (no metrics)" "$nums"
    fi
}

check_train() {
    local run=$1 cpu v acc secs nums cacc csecs
    train_args "$run"
    limited 240 "$OUT/train.log" "$SNNC" train "${ARGS[@]}" --device cuda -q -o "$WORK/train-$run"
    v=$(verdict)
    read -r acc secs < <(grep -oE 'test accuracy: [0-9.]+% \(.*[0-9.]+ s training\)' "$WORK/last.out" |
        sed -E 's/test accuracy: ([0-9.]+)% \(.* ([0-9.]+) s training\)/\1 \2/')
    cpu=$(python3 -c "import json,sys; t=json.load(open(sys.argv[1]))['train'][sys.argv[2]]; print(t['test_accuracy'], t['training_s'])" \
        "$PACK/cpu.json" "$run" 2> /dev/null)
    if [ "$v" = PASS ] && [ -n "${acc:-}" ]; then
        nums="GPU ${acc}% in ${secs} s of training"
        if [ -n "$cpu" ]; then
            read -r cacc csecs <<< "$cpu"
            nums="$nums; CPU ${cacc}% in ${csecs} s (same seed and settings)"
            if ! awk -v a="$acc" -v c="$cacc" -v t="$TOL" 'BEGIN { d = a - c; exit !(d <= t && -d <= t) }'; then
                v="FAIL (accuracy off by more than $TOL points)"
            fi
        else
            v="FAIL (no CPU accuracy in the pack)"
        fi
    elif [ "$v" = PASS ]; then
        v="FAIL (no test accuracy printed)"
    else
        nums=$(why)
    fi
    row "(g) training \`$run\` on the GPU vs the CPU (scripts/gpu-train-runs.sh)" "$v" "$nums"
}

# sanitized LOG SECONDS CMD...: CMD under compute-sanitizer memcheck when there is one.
sanitized() {
    local log=$1 want=$2
    shift 2
    if [ -n "$SANITIZER" ]; then
        limited "$want" "$log" "$SANITIZER" --tool memcheck --print-limit 10 --error-exitcode 86 "$@"
    else
        limited "$want" "$log" "$@"
    fi
}

# memcheck_verdict: the verdict of a `sanitized` command, and the sanitizer's error count.
memcheck_verdict() {
    local v
    v=$(verdict)
    if ((RC == 86)); then
        v="FAIL (memcheck errors)"
    elif [ "$v" = PASS ] && [ -z "$SANITIZER" ]; then
        v="SKIP (no compute-sanitizer; the run itself passed)"
    fi
    echo "$v"
}

# The STDP networks run at batch 4, as scripts/gpu-pack.sh recorded them.
example_batch() { grep -q 'synapse *=' "$1" && echo "--batch 4"; }

check_memcheck_run() {
    local ex=$1 name v errs cmp crc nums
    name=$(basename "$ex" .snn)
    rm -rf "$WORK/run-$name"
    # shellcheck disable=SC2046 # the batch flag is one word or none
    sanitized "$OUT/memcheck.log" 120 "$SNNC" run "$ex" $(example_batch "$ex") --device cuda -o "$WORK/run-$name"
    v=$(memcheck_verdict)
    errs=$(grep -oE 'ERROR SUMMARY: [0-9]+ errors?' "$WORK/last.out" | tail -1)
    nums=${errs:+$errs; }
    [[ $v == PASS* || $v == "SKIP (no compute"* ]] || nums+="$(why); "
    if ((RC == 0)); then
        cmp=$("${REPORT[@]}" compare "$PACK/run/$name" "$WORK/run-$name")
        crc=$?
        echo "[outputs vs the CPU's: $cmp]" >> "$OUT/memcheck.log"
        if ((crc != 0)); then v="FAIL (outputs differ from the CPU's)"; fi
        nums+=$cmp
    fi
    row "(b) memcheck: snnc run $ex --device cuda" "$v" "${nums%; }"
}

check_memcheck_train() {
    local run=$1 v errs nums
    train_args "$run" step
    sanitized "$OUT/memcheck.log" 180 "$SNNC" train "${ARGS[@]}" --device cuda -q -o "$WORK/step-$run"
    v=$(memcheck_verdict)
    errs=$(grep -oE 'ERROR SUMMARY: [0-9]+ errors?' "$WORK/last.out" | tail -1)
    if [[ $v == PASS* || $v == "SKIP (no compute"* ]]; then
        nums=$(grep -m1 -oE 'test accuracy: [0-9.]+%' "$WORK/last.out")
    else
        nums=$(why)
    fi
    row "(b) memcheck: one short training epoch of \`$run\`" "$v" "${errs:+$errs; }$nums"
}

# --- the parts ---------------------------------------------------------------------------
part1() {
    : > "$OUT/tests.log"
    : > "$OUT/bench.log"
    check_gpu_tests
    check_new_cuda
    bench "(c) copy bandwidth; fused LIF forward [T=64, B=32, N=4096]" 90 copy lif-fwd --repeat 50
    sweep_prefetch
    check_ncu
    bench "(d) mlp-infer: 784-512-10 LIF MLP, T=25, B=128" 90 mlp-infer --repeat 50
    bench "(e) conv-infer: examples/conv.snn, B=64" 90 conv-infer --repeat 20
    bench "(e) psn-fwd: PSN family and LIF, T=8..128" 150 psn-fwd --repeat 20
    bench "(e) psn-fwdbwd: PSN family and LIF, forward + backward" 180 psn-fwdbwd --repeat 20
}

part2() {
    : > "$OUT/train.log"
    : > "$OUT/memcheck.log"
    : > "$OUT/bench.log"
    # One training step with the optimizer on the GPU (the peers' `train` column).
    bench "(h) mlp-train: one training step (forward, backward, Adam on the GPU)" 90 mlp-train --repeat 50
    bench "(i) kheradpisheh: Spyker's STDP net, inference and layer-wise STDP, B=64" 120 kheradpisheh --repeat 5
    for run in $TRAIN_RUNS; do check_train "$run"; done
    for ex in examples/*.snn; do check_memcheck_run "$ex"; done
    for run in $TRAIN_RUNS; do check_memcheck_train "$run"; done
}

say "scripts/gpu-session.sh $PART: writing to $OUT (budget ${BUDGET} s)"
: > "$OUT/summary.md"
envinfo
if [ ! -x "$SNNC" ] || [ ! -f "$PACK/cpu.json" ]; then
    row "pack" "FAIL (no pack)" "$PACK/bin/snnc or $PACK/cpu.json is missing: run scripts/gpu-pack.sh on the CPU machine and carry .gpu"
    exit 1
fi
case $PART in
part1) part1 ;;
part2) part2 ;;
all)
    part1
    part2
    ;;
esac
# Logs stay under the 16 MiB a file may have to come back.
for f in "$OUT"/*.log; do
    [ -f "$f" ] && [ "$(stat -c %s "$f")" -gt 15000000 ] && truncate -s 15000000 "$f"
done
failed=$(cut -f2 "$ROWS" | grep -cE '^(FAIL|TIMEOUT)' || true)
unrun=$(cut -f2 "$ROWS" | grep -c 'time budget spent' || true)
say "done in $SECONDS s: $(wc -l < "$ROWS") checks, $failed failed or timed out, $unrun not run (time budget spent); $OUT/summary.md"
[ "$failed" -eq 0 ] && [ "$unrun" -eq 0 ]
