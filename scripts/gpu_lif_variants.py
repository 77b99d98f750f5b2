#!/usr/bin/env python3
"""Experiment: the fused LIF kernel's T loop with several unroll factors and block sizes."""
import json, sys
import cupy as cp
import numpy as np
sys.argv = [sys.argv[0], ".gpu"]
T, B, N = 64, 32, 4096
ref = json.load(open(".gpu/ref.json"))
base = open(".gpu/lif.cu").read()
n = B * N
x = cp.random.rand(T * n, dtype=cp.float32) * 2.5
sp = cp.empty(T * n, dtype=cp.float32); cnt = cp.empty(n, dtype=cp.float32)
params = cp.asarray(np.array(ref["params"], dtype=np.float32))
u = np.uint64
def bench(fn, reps=200):
    for _ in range(10): fn()
    a, b = cp.cuda.Event(), cp.cuda.Event(); ts = []
    for _ in range(reps):
        a.record(); fn(); b.record(); b.synchronize(); ts.append(cp.cuda.get_elapsed_time(a, b))
    return float(np.median(ts))
# rotate among 4 input sets so L2 (50 MB) cannot hold the input between runs
xs = [cp.random.rand(T * n, dtype=cp.float32) * 2.5 for _ in range(4)]
for unroll in [None, 4, 8, 16]:
    src = base if unroll is None else base.replace("    for (unsigned long long t = 0;", f"    #pragma unroll {unroll}\n    for (unsigned long long t = 0;", 1)
    k = cp.RawModule(code=src, options=("--fmad=false", "-I.gpu")).get_function(ref["symbol"])
    for block in [128, 256, 512]:
        grid = (n + block - 1) // block
        i = [0]
        def f():
            i[0] = (i[0] + 1) % 4
            k((grid,), (block,), (xs[i[0]], sp, cnt, params, u(T), u(0), u(B), u(N), u(0), u(n)))
        ms = bench(f)
        print(json.dumps({"unroll": unroll, "block": block, "ms": round(ms, 4), "GBps": round(2 * T * n * 4 / ms / 1e6, 1)}))
