# shellcheck shell=bash
# The training runs that scripts/gpu-pack.sh makes on the CPU and scripts/gpu-session.sh
# repeats on the GPU, to compare their test accuracies (sourced by both).
#
# train_args NAME [step]: sets ARGS to the arguments of `snnc train` for run NAME and TOL to
# the accuracy difference (in points) still called a match; with `step`, one short epoch
# instead (for compute-sanitizer).
TRAIN_RUNS="yinyang smnist_psn"
train_args() {
    case $1 in
    yinyang)
        # The main job (README): 100 epochs, 1000 test samples.
        ARGS=(examples/yinyang.snn)
        TOL=1.5
        [ -z "${2:-}" ] || ARGS+=(--epochs 1 --limit 64)
        ;;
    smnist_psn)
        # Sliding PSNs (the PSN backward: transposed time products) on the checked-in
        # 100-image MNIST subset, row by row, as tests/cli.rs trains it: 100 test images.
        ARGS=(examples/smnist_psn.snn --set 'data=mnist("tests/data/mnist-100", sequence = rows)'
            --set validation=0 --batch 10)
        TOL=10
        if [ -z "${2:-}" ]; then ARGS+=(--epochs 20); else ARGS+=(--epochs 1 --limit 20); fi
        ;;
    *)
        echo "unknown training run $1" >&2
        return 1
        ;;
    esac
}
