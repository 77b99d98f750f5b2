#!/usr/bin/env bash
# One sitting: `snnc bench mlp-infer mlp-train` beside ../shared/peers/mlp_forward.py (snnTorch,
# SpikingJelly, plain torch) on the same machine, each started only when the machine is idle
# (run_bench.py). Results are appended to $OUT (JSON lines, with the machine's load).
# Needs the peers' venv: VENV=... bash ../shared/peers/setup_venv.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PEERS=${PEERS:-../shared/peers}
VENV=${VENV:-$HOME/.cache/snnc-peers-venv}
OUT=${OUT:-target/bench-mlp-peers.jsonl}
cargo build --release -p snnc
for round in 1 2; do
  for w in mlp-infer mlp-train; do
    python3 "$PEERS/run_bench.py" --out "$OUT" -- ./target/release/snnc bench "$w" --repeat 30 --json
  done
  python3 "$PEERS/run_bench.py" --out "$OUT" -- "$VENV/bin/python" "$PEERS/mlp_forward.py"
done
cat "$OUT"
