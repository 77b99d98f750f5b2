#!/usr/bin/env python3
"""The table of scripts/bench-vs-peers.sh: snnc beside its peers, from one sitting's JSON lines.

    python3 scripts/bench_table.py RESULTS.jsonl [--write BENCHMARKS.md]

Each (tool, workload) is the best of its rounds' medians (every tool gets the same rule; the
2-core VM's noise is one-sided). Ratios are peer time / snnc time: above 1, snnc is faster.
With --write, the section between the `bench-vs-peers` markers of BENCHMARKS.md is replaced
(or appended when the markers are missing).
"""
import argparse
import json
import platform
import subprocess
import sys
from collections import defaultdict

BEGIN = "<!-- bench-vs-peers:begin -->"
END = "<!-- bench-vs-peers:end -->"

# MLP forward FLOPs: 2 * T * B * (784*512 + 512*10).
MLP_FWD_FLOP = 2 * 25 * 128 * (784 * 512 + 512 * 10)

# (row label, snnc workload, peer bench, peer field, issue-7 goal as a minimum ratio)
ROWS = [
    ("LIF fwd [T=64, B=32, N=4096]", "lif-fwd", "lif_multistep", "fwd_ms", 10.0),
    ("LIF fwd+bwd [T=64, B=32, N=4096]", "lif-fwdbwd", "lif_multistep", "fwdbwd_ms", 5.0),
    ("MLP 784-512-10 infer (T=25, B=128)", "mlp-infer", "mlp_forward", "infer_ms", 4.0),
    ("MLP 784-512-10 train step", "mlp-train", "mlp_forward", "train_ms", 3.0),
]
PEERS = {
    "lif_multistep": [("snnTorch", "snntorch_leaky"), ("SpikingJelly", "sj_lif"),
                      ("Norse", "norse_lif"), ("torch", "torch_eager")],
    "mlp_forward": [("snnTorch", "snntorch"), ("SpikingJelly", "sj_multistep"),
                    ("Norse", None), ("torch", "torch_eager")],
}
COLS = ["snnTorch", "SpikingJelly", "Norse", "torch"]


# snnc's `--neuron` names -> psn_vs_lif.py's.
PSN_NAMES = {"psn": "psn", "masked": "masked_psn", "sliding": "sliding_psn", "lif": "lif"}


def best(values):
    values = [v for v in values if isinstance(v, (int, float))]
    return min(values) if values else None


def load(path):
    snnc = defaultdict(list)      # workload -> [line]
    peers = defaultdict(list)     # bench -> [line]
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            d = json.loads(line)
            if "workload" in d and isinstance(d["workload"], str):
                w = d["workload"]
                if w in ("psn-fwd", "psn-fwdbwd") and "neuron" in d:
                    # One line per neuron and T: keyed like the peer's names.
                    w = f"{w}:{PSN_NAMES.get(d['neuron'], d['neuron'])}:T{d['T']}"
                elif w == "psn-schedule":
                    w = f"{w}:{d['neuron']}:T{d['T']}"
                snnc[w].append(d)
            elif "bench" in d:
                peers[d["bench"]].append(d)
    return snnc, peers


def peer_time(peers, bench, impl, field):
    if impl is None:
        return None, None
    vals = []
    err = None
    for d in peers.get(bench, []):
        r = d.get("results", {}).get(impl)
        if r is None:
            continue
        if "error" in r:
            err = r["error"][:60]
        vals.append(r.get(field))
    return best(vals), err


def fmt_ms(v):
    return "—" if v is None else (f"{v:.2f} ms" if v < 10 else f"{v:.1f} ms")


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    except OSError:
        nproc = "?"
    return f"{cpu}, {nproc} vCPU"


def table(path):
    snnc, peers = load(path)
    s_best = {w: best(d.get("median_ms") for d in ls) for w, ls in snnc.items()}
    triad = best(-d.get("GB/s", 0) for d in snnc.get("triad", []))
    triad = -triad if triad is not None else None
    gemm = best(-d.get("GFLOP/s", 0) for d in snnc.get("gemm-peak", []))
    gemm = -gemm if gemm is not None else None
    dates = sorted(d["env"]["date"] for ls in list(snnc.values()) + list(peers.values())
                   for d in ls if "env" in d and "date" in d["env"])
    loads = [d["env"].get("foreign_cores_avg", 0) for ls in list(snnc.values()) + list(peers.values())
             for d in ls if "env" in d]
    torch_v = next((d.get("torch") for ls in peers.values() for d in ls if d.get("torch")), None)
    rounds = max((len(v) for v in snnc.values()), default=0)

    out = []
    out.append(f"Machine: {machine()}; {dates[0] if dates else '?'} .. {dates[-1] if dates else '?'}; "
               f"{rounds} round(s); peers on torch {torch_v or '(not installed)'}; "
               f"foreign load during runs: max {max(loads, default=0):.2f} busy cores. "
               f"Source: `{path}`.")
    out.append("")
    lim = []
    if triad:
        lim.append(f"STREAM triad {triad:.1f} GB/s")
    if gemm:
        lim.append(f"GEMM peak {gemm:.0f} GFLOP/s (2048^3 through the runtime's `gemm` path)")
    if lim:
        out.append("Machine limits measured in the same sitting: " + "; ".join(lim) + ".")
        out.append("")
    out.append("| workload | snnc | " + " | ".join(COLS) + " | goal (each peer / snnc) | met | of the machine's limit |")
    out.append("|---|---|" + "---|" * len(COLS) + "---|---|---|")
    for label, w, bench, field, goal in ROWS:
        s = s_best.get(w)
        cells, ratios = [], []
        for col in COLS:
            impl = dict(PEERS[bench]).get(col)
            v, err = peer_time(peers, bench, impl, field)
            if v is None:
                cells.append("missing" if err else "—")
                continue
            r = v / s if s else None
            if r is not None:
                ratios.append(r)
            cells.append(f"{fmt_ms(v)}" + (f" ({r:.1f}x)" if r is not None else ""))
        if s is None:
            met = "not measured by snnc yet"
        elif not ratios:
            met = "no peer ran"
        else:
            met = "yes" if min(ratios) >= goal else f"no: {min(ratios):.1f}x (needs {goal / min(ratios):.1f}x more)"
        limit = ""
        if w == "lif-fwd" and s and triad:
            gbs = 2 * 64 * 32 * 4096 * 4 / (s * 1e-3) / 1e9
            limit = f"{gbs:.1f} GB/s = {gbs / triad:.0%} of triad"
        if w == "mlp-infer" and s and gemm:
            g = MLP_FWD_FLOP / (s * 1e-3) / 1e9
            limit = f"{g:.0f} GFLOP/s dense-equivalent = {g / gemm:.0%} of GEMM peak"
        out.append(f"| {label} | **{fmt_ms(s)}** | " + " | ".join(cells) + f" | {goal:.0f}x | {met} | {limit} |")

    # PSN family vs LIF (SpikingJelly's own), when both sides ran.
    psn = [d for d in peers.get("psn_vs_lif", [])]
    if psn:
        out.append("")
        out.append("SpikingJelly PSN family vs LIF (peer side, best of rounds; snnc's `psn-*` rows where measured):")
        out.append("")
        out.append("| T | neuron | SJ fwd | SJ fwd+bwd | snnc fwd | snnc fwd+bwd |")
        out.append("|---|---|---|---|---|---|")
        by = defaultdict(lambda: defaultdict(list))
        for d in psn:
            for row in d.get("results", []):
                for name in ("lif", "psn", "masked_psn", "sliding_psn"):
                    if name in row:
                        by[(row["T"], name)]["fwd"].append(row[name].get("fwd_ms"))
                        by[(row["T"], name)]["fwdbwd"].append(row[name].get("fwdbwd_ms"))
        for (t, name), v in sorted(by.items()):
            sf = s_best.get(f"psn-fwd:{name}:T{t}")
            sb = s_best.get(f"psn-fwdbwd:{name}:T{t}")
            out.append(f"| {t} | {name} | {fmt_ms(best(v['fwd']))} | {fmt_ms(best(v['fwdbwd']))} | "
                       f"{fmt_ms(sf)} | {fmt_ms(sb)} |")

    # The schedule chooser: its pick against the faster of the two forced schedules.
    sched = {w: ls for w, ls in snnc.items() if w.startswith("psn-schedule:")}
    if sched:
        out.append("")
        out.append("Schedule chooser (`psn-schedule`, B=32, N=4096; each time the best of rounds; "
                   "goal: the pick at most 10% slower than the faster schedule):")
        out.append("")
        out.append("| neuron | T | fwd: parallel / sequential | picked | over best | "
                   "fwd+bwd: parallel / sequential | picked | over best |")
        out.append("|---|---|---|---|---|---|---|---|")
        worst = 1.0
        for w in sorted(sched, key=lambda w: (w.split(":")[1], int(w.split(":T")[1]))):
            ls = sched[w]
            d0 = ls[0]
            fp = best(d.get("fwd_parallel_ms") for d in ls)
            fs = best(d.get("fwd_sequential_ms") for d in ls)
            bp = best(d.get("fwdbwd_parallel_ms") for d in ls)
            bs = best(d.get("fwdbwd_sequential_ms") for d in ls)
            pf, pt = d0.get("picked"), d0.get("picked_train", d0.get("picked"))
            rf = (fp if pf == "parallel" else fs) / min(fp, fs)
            rb = (bp if pt == "parallel" else bs) / min(bp, bs)
            worst = max(worst, rf, rb)
            out.append(f"| {d0['neuron']} | {d0['T']} | {fmt_ms(fp)} / {fmt_ms(fs)} | {pf} | {rf:.2f} | "
                       f"{fmt_ms(bp)} / {fmt_ms(bs)} | {pt} | {rb:.2f} |")
        out.append("")
        out.append(f"Worst pick: {worst:.2f}x the best ({'met' if worst <= 1.10 else 'missed'}: goal 1.10x).")

    other = sorted(w for w in s_best if w not in {r[1] for r in ROWS} | {"triad", "gemm-peak"}
                   and not w.startswith("psn-"))
    if other:
        out.append("")
        out.append("Other snnc workloads in the same sitting: " + "; ".join(
            f"`{w}` {fmt_ms(s_best[w])}" for w in other) + ".")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results")
    ap.add_argument("--write", metavar="BENCHMARKS_MD")
    a = ap.parse_args()
    t = table(a.results)
    print(t)
    if a.write:
        doc = open(a.write).read()
        section = f"{BEGIN}\n{t}\n{END}"
        if BEGIN in doc and END in doc:
            pre, rest = doc.split(BEGIN, 1)
            post = rest.split(END, 1)[1]
            doc = pre + section + post
        else:
            doc = doc.rstrip("\n") + "\n\n## snnc vs peers, one sitting (scripts/bench-vs-peers.sh)\n\n" + section + "\n"
        with open(a.write, "w") as f:
            f.write(doc)
        print(f"wrote the table into {a.write}", file=sys.stderr)


if __name__ == "__main__":
    main()
