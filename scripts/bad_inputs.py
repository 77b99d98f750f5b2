#!/usr/bin/env python3
"""The bad-input sweep of issue 18: every class of input that once crashed, hung or lost
work, fed to the `snnc` binary. Counts clean errors, successes, panics, deaths by signal and
commands over 10 s; exits 1 on any panic, signal, slow command or overwritten run.

    scripts/bad_inputs.py [--snnc target/release/snnc] [--keep DIR]

Classes: deep and long expressions of every operator (10,000 levels and at the limit),
statements nested by `if` and `else if`, huge layers/inputs/batches, repeated operands,
corrupt kernel-cache entries, and a second `snnc train` into the same place.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

BINARY = ["+", "-", "*", "/", "^", "<", "<=", ">", ">=", "==", "!=", "&&", "||"]
SLOW = 10.0


def source(update, width="3", extra="", inp="[T, 3]", args=""):
    return f"""neuron N {{
  param v_threshold = 1.0
  flag f = true
  state v = 0.0
  update {{ {update} }}
  spike v >= v_threshold
  on_spike {{ v = 0.0 }}
}}
model m {{
  T = 4
  batch = 1
  input x: {inp}
  h = dense(x, {width})
  s = N(h{args})
  output counts(s)
  {extra}
  train {{ loss = cross_entropy(counts(s)) }}
}}
"""


def expressions(n):
    out = {}
    for i, op in enumerate(BINARY):
        out[f"flat{i}"] = source("v = I" + f" {op} 1.0" * (n - 1))
        e = "I"
        for _ in range(n - 1):
            e = f"(1.0 {op} {e})"
        out[f"nested{i}"] = source("v = " + e)
        out[f"mixed{i}"] = source("v = v" + f" {op} I" * (n - 1))
    out["neg"] = source("v = " + "-" * (n - 1) + "I")
    out["not"] = source("v = " + "!" * (n - 1) + "I")
    out["neg_spaced"] = source("v = " + "- " * (n - 1) + "I")
    out["calls"] = source("v = " + "exp(" * (n - 1) + "I" + ")" * (n - 1))
    out["clamp"] = source("v = " + "clamp(" * (n - 1) + "I" + ", 0.0, 1.0)" * (n - 1))
    out["parens"] = source("v = " + "(" * n + "I" + ")" * n)
    out["fields"] = source("v = I", extra="output trace(s" + ".v" * n + ")")
    out["lists"] = source("v = I", inp="[" * n + "3" + "]" * n)
    out["ifs"] = source("if f { " * (n - 1) + "v = I" + " }" * (n - 1))
    out["else_ifs"] = source("if f { v = I }" + " else if f { v = 1.0 }" * (n - 1))
    out["lets"] = source(
        "let a0 = v + I\n"
        + "".join(f"let a{i} = a{i - 1} + 1.0\n" for i in range(1, n))
        + f"v = a{n - 1}"
    )
    out["lets_twice"] = source(
        "let a0 = v + I\n"
        + "".join(f"let a{i} = a{i - 1} + a{i - 1}\n" for i in range(1, n))
        + f"v = a{n - 1}"
    )
    out["assigns"] = source("v = v + I\n" + "v = v + 1.0\n" * (n - 1))
    out["layer_sum"] = source("v = I", width="1" + " + 1" * (n - 1))
    out["arg_sum"] = source("v = I", args=", v_threshold = 1.0" + " + 0.0" * (n - 1))
    return out


def huge():
    return {
        "dense_1e10": source("v = v + I", width="10000000000"),
        "dense_u64": source("v = v + I", width="99999999999999999999"),
        "input_huge": source("v = v + I", inp="[T, 100000, 100000, 100000]"),
        "conv_huge": """model m {
  T = 4
  batch = 1
  input x: [3, 64, 64]
  h = conv2d(x, 10000000, kernel = 3)
  s = LIF(h)
  output counts(s)
}
""",
        "repeat_hh": """model m {
  T = 4
  batch = 1
  input x: [3]
  h = dense(x, 2)
  s = LIF(h + h)
  output counts(s)
}
""",
    }


class Tally:
    def __init__(self):
        self.rows = []

    def run(self, name, args, cwd=None, env=None):
        t0 = time.time()
        try:
            p = subprocess.run(args, cwd=cwd, env=env, capture_output=True, timeout=120)
            rc, err = p.returncode, p.stderr.decode("utf-8", "replace")
        except subprocess.TimeoutExpired:
            rc, err = "timeout", ""
        secs = time.time() - t0
        if rc == "timeout":
            verdict = "TIMEOUT"
        elif rc < 0 or rc >= 128:
            verdict = "SIGNAL"
        elif "panicked" in err or rc == 101:
            verdict = "PANIC"
        elif "bug in snnc" in err:
            verdict = "BUG"
        elif secs > SLOW:
            verdict = "SLOW"
        elif rc == 0:
            verdict = "ok"
        else:
            verdict = "error"
        first = next((l for l in err.splitlines() if "rror" in l), "")[:110]
        self.rows.append((verdict, name, " ".join(args[1:2]), secs, first))
        print(f"{verdict:8} {secs:6.2f}s {name:28} {args[1]:8} {first}", flush=True)
        return rc

    def bad(self):
        return [r for r in self.rows if r[0] not in ("ok", "error")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--snnc", default="target/release/snnc")
    ap.add_argument("--keep")
    a = ap.parse_args()
    snnc = os.path.abspath(a.snnc)
    work = a.keep or tempfile.mkdtemp(prefix="snnc-bad-inputs-")
    os.makedirs(work, exist_ok=True)
    env = dict(os.environ, SNNC_CACHE_DIR=os.path.join(work, "cache"))
    t = Tally()

    cases = {}
    for n in (10_000, 254):
        for k, v in expressions(n).items():
            cases[f"{k}_{n}"] = v
    cases.update(huge())
    for name, text in sorted(cases.items()):
        f = os.path.join(work, name + ".snn")
        with open(f, "w") as fh:
            fh.write(text)
        for cmd in (["check"], ["ir"], ["ir", "--train"], ["compile", "-o", os.path.join(work, "out")]):
            t.run(name, [snnc, cmd[0], f] + cmd[1:], env=env)
    for name in ("dense_1e10", "input_huge", "conv_huge"):
        t.run(name, [snnc, "run", os.path.join(work, name + ".snn")], env=env)
    mlp = os.path.join(os.path.dirname(__file__), "..", "examples", "mlp.snn")
    t.run("mlp --batch 1e9", [snnc, "run", mlp, "--batch", "1000000000"], env=env)

    # Corrupt cache entries: truncate, empty and unlisted libraries are rebuilt.
    t.run("mlp (fills the cache)", [snnc, "run", mlp], env=env)
    cache = env["SNNC_CACHE_DIR"]
    libs = [os.path.join(r, f) for r, _, fs in os.walk(cache) for f in fs if f.endswith(".so")]
    for how in ("half", "empty", "manifest"):
        for lib in libs:
            if how == "half":
                os.truncate(lib, os.path.getsize(lib) // 2)
            elif how == "empty":
                os.truncate(lib, 0)
            else:
                m = os.path.join(os.path.dirname(lib), "manifest.txt")
                if os.path.exists(m):
                    os.remove(m)
        t.run(f"mlp (cache {how})", [snnc, "run", mlp], env=env)

    # A second training run never replaces the first one's files.
    runs = os.path.join(work, "train")
    os.makedirs(runs, exist_ok=True)
    yy = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "examples", "yinyang.snn"))
    args = [snnc, "train", yy, "--epochs", "1", "--limit", "64"]
    t.run("train #1", args, cwd=runs, env=env)
    first = snapshot(runs)
    t.run("train #2", args, cwd=runs, env=env)
    second = snapshot(runs)
    overwritten = [p for p, h in first.items() if second.get(p) != h]
    print(f"files of the first run changed by the second: {len(overwritten)} {overwritten[:3]}")

    bad = t.bad()
    counts = {}
    for r in t.rows:
        counts[r[0]] = counts.get(r[0], 0) + 1
    print(f"{len(t.rows)} commands: {counts}; slowest {max(r[3] for r in t.rows):.2f} s")
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(1 if bad or overwritten else 0)


def snapshot(d):
    import hashlib

    out = {}
    for r, _, fs in os.walk(d):
        for f in fs:
            p = os.path.join(r, f)
            with open(p, "rb") as fh:
                out[p] = hashlib.sha256(fh.read()).hexdigest()
    return out


if __name__ == "__main__":
    main()
