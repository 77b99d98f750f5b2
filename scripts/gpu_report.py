#!/usr/bin/env python3
"""Helpers of scripts/gpu-session.sh (python3 standard library only).

  gpu_report.py compare REF_DIR GOT_DIR     CPU vs GPU outputs of `snnc run` (.npy files)
  gpu_report.py gpu-test LOG                the numbers of tests/gpu.rs's output
  gpu_report.py ncu LOG BENCH_JSONL         the fused LIF kernel's time from an ncu --csv log
  gpu_report.py bench-line BENCH_JSONL WORKLOAD...   one line of numbers per workload
  gpu_report.py summary ROWS BENCH_JSONL ENV_JSON PART OUT_MD

Each prints one line (or writes OUT_MD) and exits 0; `compare` exits 1 when outputs differ
and 2 when one is missing or unreadable.
"""
import array
import ast
import csv
import json
import os
import struct
import sys

# Outputs whose values must match bit for bit (tests/gpu.rs); others (traces) to 1e-5
# relative, as there: cuBLAS sums in another order than the CPU GEMM.
EXACT_SUFFIXES = (".spikes.npy", ".counts.npy")
TRACE_RTOL = 1e-5


def read_npy(path):
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:6] != b"\x93NUMPY":
        raise ValueError(f"{path}: not an .npy file")
    major = raw[6]
    if major == 1:
        (hlen,) = struct.unpack("<H", raw[8:10])
        start = 10
    else:
        (hlen,) = struct.unpack("<I", raw[8:12])
        start = 12
    header = ast.literal_eval(raw[start : start + hlen].decode("latin1"))
    if header["descr"] != "<f4" or header["fortran_order"]:
        raise ValueError(f"{path}: {header['descr']} (only little-endian f32, C order)")
    data = array.array("f")
    data.frombytes(raw[start + hlen :])
    return tuple(header["shape"]), data


def compare(ref_dir, got_dir):
    names = sorted(n for n in os.listdir(ref_dir) if n.endswith(".npy"))
    if not names:
        print(f"no CPU outputs in {ref_dir}")
        return 2
    notes, bad, worst = [], 0, 0.0
    for n in names:
        out = n[: -len(".npy")]
        gp = os.path.join(got_dir, n)
        if not os.path.isfile(gp):
            print(f"the GPU run wrote no {n}")
            return 2
        try:
            (rs, r), (gs, g) = read_npy(os.path.join(ref_dir, n)), read_npy(gp)
        except (OSError, ValueError, SyntaxError, KeyError) as e:
            print(f"unreadable output: {e}")
            return 2
        if rs != gs:
            notes.append(f"{out}: shape {list(gs)} on the GPU, {list(rs)} on the CPU")
            bad += 1
            continue
        if r.tobytes() == g.tobytes():
            continue
        if n.endswith(EXACT_SUFFIXES):
            k = sum(1 for x, y in zip(r, g) if x != y)
            notes.append(f"{out}: {k} of {len(r)} values differ")
            bad += 1
        else:
            rel = max(abs(x - y) / max(abs(x), 1.0) for x, y in zip(r, g))
            worst = max(worst, rel)
            if rel > TRACE_RTOL:
                notes.append(f"{out}: max rel {rel:.2e} > {TRACE_RTOL:g}")
                bad += 1
    if bad:
        print("; ".join(notes))
        return 1
    same = "identical" if worst == 0.0 else f"spikes/counts identical, traces max rel {worst:.2e}"
    print(f"{len(names)} outputs vs the CPU: {same}")
    return 0


def gpu_test(log):
    text = open(log, errors="replace").read().splitlines()
    # Only the GPU's lines ("... on cuda:0 (...)", "cuda: ..."), not the host shim's.
    pairs = sum(1 for l in text if (" (default) on cuda:" in l or " (steps) on cuda:" in l))
    trained = sum(1 for l in text if (" (train) on cuda:" in l or " (train-sparse) on cuda:" in l))
    parts = [l.strip() for l in text if l.startswith("cuda: compared ")]
    grads = [l.strip() for l in text if l.startswith("cuda: ") and "weight gradients compared" in l]
    resumed = [l.strip() for l in text if l.startswith("cuda: 2 + 2 steps")]
    fails = [l.strip() for l in text if " differs in " in l or " differs by " in l]
    skip = [l[l.index("SKIP:"):].strip() for l in text if "SKIP:" in l]
    out = []
    if pairs:
        out.append(f"{pairs} model/plan pairs")
    out += parts[:1]
    if trained:
        out.append(f"{trained} training plans")
    out += grads[:1] + resumed[:1]
    if fails:
        out.append(f"{len(fails)} outputs or gradients differ, e.g. {fails[0]}")
    out += skip[:1]
    panics = [l.strip() for l in text if "panicked at" in l]
    if panics and not fails:
        i = text.index(next(l for l in text if "panicked at" in l))
        out.append(" ".join(x.strip() for x in text[i : i + 2])[:300])
    print("; ".join(out) or "no output")
    return 0


def bench_lines(path):
    rows = []
    if os.path.isfile(path):
        for line in open(path, errors="replace"):
            line = line.strip()
            if line.startswith("{"):
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    pass
    return rows


def throughput(r):
    """The workload's own unit: the first key after max_ms."""
    keys = list(r)
    if "max_ms" in keys:
        i = keys.index("max_ms") + 1
        if i < len(keys):
            return keys[i], r[keys[i]]
    return None, None


def bench_line(path, workloads):
    rows = [r for r in bench_lines(path) if r.get("workload") in workloads]
    if len(rows) > 4:
        ms = [r["median_ms"] for r in rows]
        print(f"{len(rows)} cases, {min(ms):.4g} .. {max(ms):.4g} ms: the benchmark table below")
        return 0
    out = []
    for r in rows:
        unit, v = throughput(r)
        s = f"{r['workload']} {r['median_ms']:.4g} ms"
        if unit:
            s += f", {v:.3g} {unit}"
        if "of_copy" in r:
            s += f" ({r['GB/s']:.0f} GB/s minimum traffic = {r['of_copy']:.2f} of the copy; goal 0.8)"
        elif r.get("workload") == "lif-fwd" and "GB/s" in r:
            s += f" ({r['GB/s']:.0f} GB/s minimum traffic)"
        out.append(s)
    print("; ".join(out) or "no result")
    return 0


def ncu(log, bench):
    """gpu__time_duration and DRAM bytes of the profiled LIF kernel launch."""
    scale = {"nsecond": 1e-9, "usecond": 1e-6, "msecond": 1e-3, "second": 1.0,
             "ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0,
             "byte": 1, "Kbyte": 1e3, "Mbyte": 1e6, "Gbyte": 1e9,
             "B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9}
    lines = open(log, errors="replace").read().splitlines()
    start = next((i for i, l in enumerate(lines) if l.startswith('"ID"')), None)
    if start is None:
        print("no ncu metrics in the log")
        return 0
    vals, kernel = {}, ""
    for row in csv.DictReader(l for l in lines[start:] if l.startswith('"')):
        try:
            v = float(row["Metric Value"].replace(",", ""))
        except (KeyError, ValueError):
            continue
        vals[row["Metric Name"]] = v * scale.get(row.get("Metric Unit", ""), 1.0)
        kernel = row.get("Kernel Name", kernel)
    t = vals.get("gpu__time_duration.sum")
    if not t:
        print("no gpu__time_duration in the ncu log")
        return 0
    T, B, N = 64, 32, 4096
    gbs = 2 * T * B * N * 4 / t / 1e9
    s = f"{kernel.split('(')[0]}: {t * 1e3:.4f} ms kernel time, {gbs:.0f} GB/s minimum traffic"
    copy = [r for r in bench_lines(bench) if r.get("workload") == "copy"]
    if copy:
        s += f" = {gbs / copy[-1]['GB/s']:.2f} of the copy (goal 0.8)"
    rd, wr = vals.get("dram__bytes_read.sum"), vals.get("dram__bytes_write.sum")
    if rd is not None and wr is not None:
        s += f"; DRAM {rd / 1e6:.1f} MB read, {wr / 1e6:.1f} MB written"
    print(s)
    return 0


def cell(s):
    return str(s).replace("|", "\\|").replace("\n", " ")


def summary(rows_path, bench, env_path, part, out):
    env = {}
    if os.path.isfile(env_path):
        env = json.load(open(env_path))
    lines = [f"### GPU checks of issue 3: `scripts/gpu-session.sh {part}`", ""]
    lines.append(
        f"Device: {env.get('gpu', 'none found')}"
        + (f" ({env['memory']})" if env.get("memory") else "")
        + f", driver {env.get('driver', '-')}, CUDA {env.get('cuda', '-')}"
        + (f" (nvcc {env['nvcc']})" if env.get("nvcc") else "")
        + f"; {env.get('date', '-')}; pack: commit {env.get('commit', '-')}, packed {env.get('packed', '-')}."
    )
    lines += ["", "| check | result | numbers |", "|---|---|---|"]
    if os.path.isfile(rows_path):
        for line in open(rows_path, errors="replace"):
            parts = line.rstrip("\n").split("\t")
            if len(parts) == 3:
                lines.append("| " + " | ".join(cell(p) for p in parts) + " |")
    rows = bench_lines(bench)
    if rows:
        lines += ["", "Benchmarks (`snnc bench WORKLOAD --device cuda --json`; median of the repeats; "
                  "the time of a whole `rerun`, stream synchronised, except `copy`: CUDA events):", "",
                  "| workload | case | median ms | min .. max ms | throughput | notes |",
                  "|---|---|---|---|---|---|"]
        skip = {"workload", "median_ms", "min_ms", "max_ms", "neuron", "T", "B", "N"}
        for r in rows:
            unit, v = throughput(r)
            case = ""
            if "neuron" in r:
                case = f"{r['neuron']} T={r['T']} B={r.get('B')} N={r.get('N')}"
            notes = ", ".join(f"{k} {r[k]}" for k in r if k not in skip and k != unit)
            tp = f"{v:.3g} {unit}" if unit else ""
            lines.append("| " + " | ".join(cell(x) for x in [
                r.get("workload"), case, f"{r.get('median_ms', 0):.4f}",
                f"{r.get('min_ms', 0):.4f} .. {r.get('max_ms', 0):.4f}", tp, notes]) + " |")
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")
    return 0


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    cmd, args = argv[1], argv[2:]
    if cmd == "compare" and len(args) == 2:
        return compare(*args)
    if cmd == "gpu-test" and len(args) == 1:
        return gpu_test(*args)
    if cmd == "ncu" and len(args) == 2:
        return ncu(*args)
    if cmd == "bench-line" and len(args) >= 2:
        return bench_line(args[0], set(args[1:]))
    if cmd == "summary" and len(args) == 5:
        return summary(*args)
    sys.exit(__doc__)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
