#!/usr/bin/env bash
# snnc beside its peers in one sitting: `snnc bench --json` and the peer scripts of
# ../shared/peers (snnTorch, SpikingJelly, Norse, plain torch) on the same workloads,
# alternating, each started when the machine is idle (run_bench.py records the load during the
# run). Appends JSON lines to $OUT and writes the table of ratios into BENCHMARKS.md (the
# section between the `bench-vs-peers` markers) with the machine, versions and date.
#
#   scripts/bench-vs-peers.sh [--rounds N] [--quick] [--no-write]
#
# The peers are optional. Install them once into a venv (about 5.5 GB, CPU is enough):
#   VENV=~/.cache/snnc-peers-venv bash ../shared/peers/setup_venv.sh
# A missing venv, peer directory or framework is skipped with a visible line.
set -uo pipefail
cd "$(dirname "$0")/.."
PEERS=${PEERS:-../shared/peers}
VENV=${VENV:-$HOME/.cache/snnc-peers-venv}
OUT=${OUT:-target/bench-vs-peers-$(date +%Y%m%d-%H%M).jsonl}
ROUNDS=2
QUICK=""
WRITE=1
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --quick) QUICK=--quick; shift ;;
    --no-write) WRITE=0; shift ;;
    *) echo "usage: scripts/bench-vs-peers.sh [--rounds N] [--quick] [--no-write]" >&2; exit 2 ;;
  esac
done
mkdir -p "$(dirname "$OUT")"

cargo build --release -p snnc || exit 1
SNNC=./target/release/snnc
REPEAT=30
[ -n "$QUICK" ] && REPEAT=5

# run_bench.py waits for an idle machine and adds the load; without it, run directly.
run() {
  if [ -f "$PEERS/run_bench.py" ]; then
    python3 "$PEERS/run_bench.py" --out "$OUT" -- "$@" || echo "SKIP: $* failed (exit $?)"
  else
    "$@" | tail -n 1 >> "$OUT" || echo "SKIP: $* failed"
  fi
}

PY="$VENV/bin/python"
peers=1
if [ ! -d "$PEERS" ]; then
  echo "SKIP peers: $PEERS not found (set PEERS=path/to/shared/peers)"; peers=0
elif [ ! -x "$PY" ]; then
  echo "SKIP peers: no venv at $VENV (install: VENV=$VENV bash $PEERS/setup_venv.sh)"; peers=0
fi

# Workloads snnc runs, each a separate process (run_bench keeps the last JSON line).
# The PSN workloads print a line per neuron and T: run_bench keeps one line per process, so
# they run one (neuron, T) at a time below.
SNNC_WORKLOADS=${SNNC_WORKLOADS:-$($SNNC bench --list | awk '{print $1}' | grep -v '^compile$\|^build$\|^psn-')}
PSN_TS=${PSN_TS:-8 32 64 128}
PSN_REPEAT=10
[ -n "$QUICK" ] && PSN_REPEAT=3
for round in $(seq 1 "$ROUNDS"); do
  echo "== round $round/$ROUNDS -> $OUT"
  for w in $SNNC_WORKLOADS; do
    run "$SNNC" bench "$w" --repeat "$REPEAT" --json
  done
  for t in $PSN_TS; do
    for n in psn masked sliding lif; do
      for w in psn-fwd psn-fwdbwd; do
        run "$SNNC" bench "$w" --neuron "$n" --t "$t" --repeat "$PSN_REPEAT" --json
      done
    done
    for n in lif-none sliding; do
      run "$SNNC" bench psn-schedule --neuron "$n" --t "$t" --repeat "$PSN_REPEAT" --json
    done
  done
  if [ "$peers" = 1 ]; then
    for script in lif_multistep.py mlp_forward.py psn_vs_lif.py; do
      if [ -f "$PEERS/$script" ]; then
        run "$PY" "$PEERS/$script" $QUICK
      else
        echo "SKIP peer script $script: not in $PEERS"
      fi
    done
  fi
done
# compile/build once: they do not depend on the load in the same way.
for w in compile build; do
  "$SNNC" bench "$w" --repeat "$REPEAT" --json >> "$OUT"
done

if [ "$WRITE" = 1 ]; then
  python3 scripts/bench_table.py "$OUT" --write BENCHMARKS.md
else
  python3 scripts/bench_table.py "$OUT"
fi
