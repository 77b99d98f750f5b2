#!/usr/bin/env bash
# A/B speed check of two snnc binaries in one sitting: ROUNDS rounds, each running every
# workload on OLD then NEW (alternating, so drift and noise hit both alike), and prints per
# workload the median over rounds of NEW/OLD (each round's own median time). Used to show a
# refactor left the speed unchanged (issue 17: within 3%).
#   [REPEAT=10] scripts/bench-ab.sh OLD_SNNC NEW_SNNC [ROUNDS] [WORKLOAD...]
set -euo pipefail
old=$1 new=$2 rounds=${3:-10}
shift $(( $# >= 3 ? 3 : $# ))
workloads=("$@")
[ ${#workloads[@]} -gt 0 ] || workloads=(lif-fwd lif-fwdbwd mlp-infer mlp-train psn-fwdbwd)
out=$(mktemp -d)
for r in $(seq 1 "$rounds"); do
  for w in "${workloads[@]}"; do
    extra=()
    [ "$w" = psn-fwdbwd ] && extra=(--t 32)
    for side in old new; do
      bin=$old; [ $side = new ] && bin=$new
      "$bin" bench "$w" "${extra[@]}" --repeat "${REPEAT:-10}" --json 2>/dev/null \
        | sed "s/^/$side $r /" >> "$out/runs.txt"
    done
  done
  echo "round $r done" >&2
done
python3 - "$out/runs.txt" <<'PY'
import json, statistics, sys, collections
t = collections.defaultdict(dict)
for line in open(sys.argv[1]):
    side, r, js = line.split(' ', 2)
    d = json.loads(js)
    key = d['workload'] + ''.join(f" {k}={d[k]}" for k in ('neuron', 'T') if k in d)
    t[key].setdefault(r, {})[side] = d['median_ms']
print(f"{'workload':32} {'old ms':>9} {'new ms':>9} {'new/old (median of rounds)':>28}")
for k, rs in t.items():
    pairs = [(v['old'], v['new']) for v in rs.values() if 'old' in v and 'new' in v]
    ratios = [n / o for o, n in pairs]
    print(f"{k:32} {statistics.median(p[0] for p in pairs):9.3f} "
          f"{statistics.median(p[1] for p in pairs):9.3f} {statistics.median(ratios):28.3f}"
          f"   ({len(pairs)} rounds, ratios {min(ratios):.3f}..{max(ratios):.3f})")
PY
echo "raw: $out/runs.txt" >&2
