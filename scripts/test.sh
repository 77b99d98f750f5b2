#!/usr/bin/env bash
# The test command (README, .ci/run): fetches NVRTC 13.0 and ptxas for the GPU-less CUDA
# compile checks in tests/nvrtc.rs (skipped with one line when offline), then runs every
# test suite of the workspace, then the CUDA device's memcheck through the host shim
# (scripts/shim-memcheck.sh: AddressSanitizer, skipped with one line without it). Extra
# arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-cuda-tools.sh
cargo test --workspace --locked "$@"
exec scripts/shim-memcheck.sh
