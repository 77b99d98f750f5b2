#!/usr/bin/env python3
"""Reference vectors from the real Spyker 0.1.0 (PyPI CPU wheel, dense backend) for issue 19.

One JSON file per building block / rule is written next to this script. Every file holds the
inputs, the parameters, the exact Spyker call(s) and Spyker's outputs, plus a `note` on the
conventions. Where Spyker's arithmetic is order-independent the script also recomputes the
block with numpy from the formulas in docs/spyker.md and asserts bit equality, so the docs
are checked against the library every time the vectors are made.

Usage (one command; re-executes itself in the Spyker venv when `spyker` is not importable):
    python3 tests/vectors/spyker/make_vectors.py
The venv is made by `VENV=/work/.venvs/spyker bash ../shared/peers/setup_spyker_venv.sh`;
set SPYKER_VENV to use another one. Runs single-threaded and is deterministic: a second run
rewrites the same bytes.
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
VENV = os.environ.get("SPYKER_VENV", "/work/.venvs/spyker")

# One thread: oneDNN's and OpenMP's work split must not depend on the machine's load.
os.environ["OMP_NUM_THREADS"] = "1"

try:
    import numpy as np
    import spyker
except ImportError:
    py = os.path.join(VENV, "bin", "python")
    if os.path.abspath(sys.executable) != os.path.abspath(py) and os.path.exists(py):
        os.execv(py, [py, os.path.abspath(__file__)] + sys.argv[1:])
    sys.exit(f"spyker is not importable and {py} does not exist: make the venv with "
             f"VENV={VENV} bash ../shared/peers/setup_spyker_venv.sh (or set SPYKER_VENV)")

spyker.set_max_threads(1)

V = spyker.version.spyker
SPYKER_VERSION = f"{V.major}.{V.minor}.{V.patch}"
D = spyker.version.dnnl
DNNL_VERSION = f"{D.major}.{D.minor}.{D.patch}"
assert SPYKER_VERSION == "0.1.0", SPYKER_VERSION

LAYOUT_NOTE = (
    "Layout [B, T, C, H, W] (row-major nested lists) for waves and potentials, [B, C, H, W] for "
    "images, filter maps and first-spike-time maps. Spike waves are u8 0/1 and cumulative: a "
    "neuron that fires at t reads 1 for every t' >= t. First-spike time = first t with a "
    "nonzero value, or T if never. f32 values are printed as the exact f64 value of the f32 "
    "(parse as f64, cast to f32: same bits). f64 parameters (STDP rates) are also given as "
    "float.hex strings. Spyker runs single-threaded here (set_max_threads(1)).")

RNG = np.random.RandomState(19)  # issue 19; every input below is drawn from this stream in order


# ------------------------------------------------------------------------------------------------
# JSON helpers
# ------------------------------------------------------------------------------------------------
def f32(a):
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32))


def jf(a):
    """f32 array -> nested lists of floats whose f64 value is exactly the f32 value."""
    return np.asarray(a, dtype=np.float32).astype(np.float64).tolist()


def ji(a):
    return np.asarray(a).astype(np.int64).tolist()


def jwinners(winners):
    return [[{"c": int(w.c), "z": int(w.z), "y": int(w.y), "x": int(w.x)} for w in ws] for ws in winners]


def hexf(x):
    return float(x).hex()


def write(name, doc):
    doc = dict(doc)
    doc.setdefault("spyker", SPYKER_VERSION)
    doc.setdefault("backend", "dense CPU (oneDNN " + DNNL_VERSION + " convolutions), 1 thread")
    doc["layout_note"] = LAYOUT_NOTE
    head = ["spyker", "backend", "block", "calls", "note", "layout_note", "source"]
    keys = [k for k in head if k in doc] + sorted(k for k in doc if k not in head)
    lines = ["{"]
    for i, k in enumerate(keys):
        comma = "," if i + 1 < len(keys) else ""
        lines.append(f" {json.dumps(k)}: {json.dumps(doc[k], separators=(',', ':'), allow_nan=False)}{comma}")
    lines.append("}")
    with open(os.path.join(HERE, name), "w") as f:
        f.write("\n".join(lines) + "\n")


# ------------------------------------------------------------------------------------------------
# Inputs
# ------------------------------------------------------------------------------------------------
def images(batch, size):
    """MNIST-like u8 images (a few thick strokes, some noise) scaled like the examples: f32(p)/f32(255)."""
    img = np.zeros((batch, 1, size, size), np.uint8)
    for b in range(batch):
        for _ in range(3):
            y0, x0, y1, x1 = RNG.randint(1, size - 1, 4)
            n = 2 * size
            for s in np.linspace(0.0, 1.0, n):
                y = int(round(y0 + s * (y1 - y0)))
                x = int(round(x0 + s * (x1 - x0)))
                ys, xs = slice(max(y - 1, 0), y + 1), slice(max(x - 1, 0), x + 1)
                img[b, 0, ys, xs] = np.maximum(img[b, 0, ys, xs], RNG.randint(150, 256, img[b, 0, ys, xs].shape))
        noise = RNG.randint(0, 256, (size, size))
        mask = RNG.rand(size, size) < 0.08
        img[b, 0][mask] = noise[mask]
    return img, f32(img.astype(np.float32) / np.float32(255))


def random_wave(shape, never=0.4):
    """Cumulative u8 wave [B, T, C, H, W] from random first-spike times (T = never)."""
    b, t, c, h, w = shape
    first = RNG.randint(0, t, (b, c, h, w))
    first[RNG.rand(b, c, h, w) < never] = t
    return scatter_np(first, t), first


def scatter_np(first, t):
    steps = np.arange(t).reshape(1, t, 1, 1, 1)
    return (steps >= first[:, None]).astype(np.uint8)


def gather_np(wave):
    t = wave.shape[1]
    fired = wave != 0
    first = np.where(fired.any(1), fired.argmax(1), t)
    return first


# ------------------------------------------------------------------------------------------------
# numpy re-implementations of the documented semantics (asserted against Spyker)
# ------------------------------------------------------------------------------------------------
def gaussian_np(size, std):
    k = np.empty((2 * size + 1, 2 * size + 1), np.float64)
    for i in range(-size, size + 1):
        for j in range(-size, size + 1):
            dist = np.sqrt(float(i * i + j * j))
            k[i + size, j + size] = np.exp(-0.5 * (dist / std) ** 2)
    s = 0.0
    for v in k.reshape(-1):  # sequential f64 sum, row-major
        s += v
    return (k / s).astype(np.float32)


def gabor_np(size, sigma, theta, gamma, lam, psi):
    k = np.empty((2 * size + 1, 2 * size + 1), np.float64)
    for i in range(-size, size + 1):
        for j in range(-size, size + 1):
            x = i * np.cos(theta) + j * np.sin(theta)
            y = -i * np.sin(theta) + j * np.cos(theta)
            a = np.exp(-(x * x + gamma * gamma * y * y) / (2 * sigma * sigma))
            b = np.cos(2 * np.pi * x / lam + psi)
            k[i + size, j + size] = a * b
    s = 0.0
    for v in k.reshape(-1):
        s += v
    return (k / s).astype(np.float32)


def xcorr_f64(img, kernel, pad):
    """Cross-correlation (no kernel flip) in f64 of [N, Cin, H, W] with [Cout, Cin, kh, kw]; pad (t, l, b, r)."""
    n, cin, h, w = img.shape
    cout, _, kh, kw = kernel.shape
    p = np.zeros((n, cin, h + pad[0] + pad[2], w + pad[1] + pad[3]), np.float64)
    p[:, :, pad[0]:pad[0] + h, pad[1]:pad[1] + w] = img
    oh, ow = p.shape[2] - kh + 1, p.shape[3] - kw + 1
    out = np.zeros((n, cout, oh, ow), np.float64)
    k64 = kernel.astype(np.float64)
    for dy in range(kh):
        for dx in range(kw):
            out += np.einsum("ncyx,oc->noyx", p[:, :, dy:dy + oh, dx:dx + ow], k64[:, :, dy, dx])
    return out


def rank_code_np(x, t, sort):
    """Spyker's rank code per sample (flattened over C, H, W), first-spike times (T = never)."""
    end = np.float32(np.float32(t) + np.float32(1e-5))
    out = []
    for s in x.reshape(x.shape[0], -1):
        mn, mx = s.min(), s.max()
        if sort:
            order = np.argsort(-s, kind="stable")
            n = int((s > mn).sum())
            scale = np.float32(end / np.float32(n))
            times = np.empty(s.shape, np.int64)
            times[order] = [int(np.float32(np.float32(i) * scale)) for i in range(len(s))]
        else:
            scale = np.float32(end / np.float32(mx - mn))
            # end - scale * d is one fused multiply-subtract in the wheel (one rounding): in f64 the
            # product of two f32 and the difference are exact here, so one cast to f32 is that rounding
            times = np.array([int(np.float32(float(end) - float(scale) * float(np.float32(v - mn)))) for v in s])
        out.append(np.minimum(times, t))
    return np.array(out).reshape((x.shape[0],) + x.shape[1:])


def inhibit_np(v, threshold=0.0):
    b, t, c = v.shape[:3]
    flat = v.reshape(b, t, c, -1).copy()
    thr = np.float32(threshold)
    for i in range(b):
        mx = flat[i].max(1)                      # [T, HW]
        ch = flat[i].argmax(1)                   # lowest channel among equal maxima
        count = (mx > thr).sum(0)                # steps at which some channel is above threshold
        step = t - np.maximum(count, 1)
        keep = ch[step, np.arange(flat.shape[3])]
        mask = (np.arange(c)[:, None] == keep[None, :])
        flat[i] = flat[i] * mask[None].astype(flat.dtype)
    return flat.reshape(v.shape)


def convwta_np(v, radius, count, threshold=0.0):
    b, t, c, h, w = v.shape
    ry, rx = radius
    res = []
    for i in range(b):
        s = v[i].reshape(t, -1)
        if v.dtype == np.uint8:
            score = np.zeros(s.shape[1], np.int64)
            for step in range(t - 1, -1, -1):
                score[s[step] != 0] = t - step
            empty = 0
        else:
            mn, mx = s.min(), s.max()
            diff = np.float32((mx - mn) * np.float32(2))
            score = np.full(s.shape[1], -np.finfo(np.float32).max, np.float32)
            for step in range(t - 1, -1, -1):
                sel = s[step] > np.float32(threshold)
                level = np.float32(t - step - 1)
                score[sel] = level + (s[step][sel] - mn) / diff
            empty = -np.finfo(np.float32).max
        score = score.reshape(c, h, w)
        ws = []
        for _ in range(count):
            idx = int(np.argmax(score))           # first maximum = lowest (c, y, x)
            if score.reshape(-1)[idx] == empty:
                break
            z, y, x = np.unravel_index(idx, score.shape)
            ws.append({"c": 0, "z": int(z), "y": int(y), "x": int(x)})
            score[:, max(0, y - ry):min(h, y + ry + 1), max(0, x - rx):min(w, x + rx + 1)] = empty
            score[z] = empty
        res.append(ws)
    return res


def pool_np(wave, k, s, pad):
    b, t, c, h, w = wave.shape
    p = np.zeros((b, t, c, h + pad[0] + pad[2], w + pad[1] + pad[3]), wave.dtype)
    p[..., pad[0]:pad[0] + h, pad[1]:pad[1] + w] = wave
    oh = (p.shape[3] - k[0]) // s[0] + 1
    ow = (p.shape[4] - k[1]) // s[1] + 1
    out = np.zeros((b, t, c, oh, ow), wave.dtype)
    for y in range(oh):
        for x in range(ow):
            out[..., y, x] = p[..., y * s[0]:y * s[0] + k[0], x * s[1]:x * s[1] + k[1]].max((-1, -2))
    return out


def stdp_np(inp, kernel, out, configs, winners, stride, pad):
    """Spyker's rank_convstdp: winners applied in sample order, in f64, rounded to f32."""
    k = kernel.copy()
    b, t, c, h, w = inp.shape
    p = np.zeros((b, t, c, h + pad[0] + pad[2], w + pad[1] + pad[3]), inp.dtype)
    p[..., pad[0]:pad[0] + h, pad[1]:pad[1] + w] = inp
    kh, kw = k.shape[2:]
    trace = []
    for i in range(b):
        first = gather_np(p[i:i + 1])[0]                        # [C, Hp, Wp], T if silent
        for wn in winners[i]:
            if wn["c"] < 0:
                continue
            cfg = configs[wn["c"]]
            y0, x0 = wn["y"] * stride[0], wn["x"] * stride[1]
            tpre = first[:, y0:y0 + kh, x0:x0 + kw]
            col = out[i, :, wn["z"], wn["y"], wn["x"]]
            tpost = int(np.argmax(col != 0)) if (col != 0).any() else out.shape[1]
            old = k[wn["z"]].astype(np.float64)
            fac = (old - cfg["lower"]) * (cfg["upper"] - old) if cfg["stabilize"] else 1.0
            rate = np.where(tpre <= tpost, cfg["positive"], cfg["negative"])
            new = old + rate * fac
            k[wn["z"]] = np.maximum(cfg["lower"], np.minimum(new, cfg["upper"])).astype(np.float32)
            trace.append({"sample": i, "z": wn["z"], "t_post": tpost, "t_pre": ji(tpre)})
    return k, trace


def cfg_dict(c):
    return {"positive": c.positive, "negative": c.negative, "stabilize": bool(c.stabilize),
            "lower": c.lower, "upper": c.upper,
            "hex": {"positive": hexf(c.positive), "negative": hexf(c.negative),
                    "lower": hexf(c.lower), "upper": hexf(c.upper)}}


def same(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


# ------------------------------------------------------------------------------------------------
# Filters
# ------------------------------------------------------------------------------------------------
PIX_U8, IMG = images(2, 12)


def filter_stats(name, spy_out, ref64):
    err = float(np.abs(spy_out.astype(np.float64) - ref64).max())
    assert err < 1e-6, (name, err)
    return err


def make_dog():
    cases = []
    for name, size, stds, pad, thr in [
        ("kheradpisheh", 3, [(1, 2), (2, 1)], 3, 0.01),
        ("mozafari", 3, [(3 / 9, 6 / 9), (6 / 9, 3 / 9), (7 / 9, 14 / 9), (14 / 9, 7 / 9),
                         (13 / 9, 26 / 9), (26 / 9, 13 / 9)], 3, 0.02),
    ]:
        dog = spyker.DoG(size, [spyker.DoGFilter(a, b) for a, b in stds], pad=pad)
        kernel = spyker.to_numpy(dog.kernel).copy()                   # [2, n, k, k] f32
        ref_k = np.stack([np.stack([gaussian_np(size, s[j]) for s in stds]) for j in (0, 1)])
        assert same(kernel, ref_k), name
        out = dog(IMG)                                                # [B, n, H, W] f32
        g = xcorr_f64(IMG, kernel.reshape(-1, 1, 2 * size + 1, 2 * size + 1), (pad,) * 4)
        n = len(stds)
        err = filter_stats(name, out, np.maximum(g[:, :n] - g[:, n:], 0))
        gs = conv_np_seq_f32(IMG[:, None], kernel.reshape(-1, 1, 2 * size + 1, 2 * size + 1), (pad,) * 4)[:, 0]
        seq = np.maximum(gs[:, :n] - gs[:, n:], np.float32(0))
        seq_err = float(np.abs(seq.astype(np.float64) - out).max())
        thr_out = spyker.threshold(out.copy(), thr)                   # in place on the copy
        assert same(thr_out, np.where(out <= np.float32(thr), np.float32(0), out))
        margin = float(np.abs(out.astype(np.float64) - float(np.float32(thr))).min())
        cases.append({
            "name": name, "size": size, "filters": [{"std1": a, "std2": b} for a, b in stds], "pad": pad,
            "threshold": thr, "kernel": jf(kernel), "output": jf(out), "thresholded": jf(thr_out),
            "max_abs_err_vs_f64": err, "threshold_margin": margin, "max_abs_diff_sequential_f32": seq_err,
        })
    write("dog.json", {
        "block": "DoG filter (Spyker's kernel construction, normalisation, rectification) + threshold",
        "calls": ["dog = spyker.DoG(size, [spyker.DoGFilter(std1, std2), ...], pad=pad)",
                  "output = dog(images)", "thresholded = spyker.threshold(output.copy(), threshold)"],
        "source": ["src/spyker/opers.cpp:702-717 (DoG kernel [2, n, 2s+1, 2s+1]: [0] = G(std1), [1] = G(std2))",
                   "src/spyker/cpu/init.cpp:38-62 (gaussian: exp(-0.5 (sqrt(i^2+j^2)/std)^2), divided by its f64 sum)",
                   "src/spyker/opers.cpp:245-260, src/spyker/cpu/dog.cpp:40-60 (conv all 2n kernels, max(G1*I - G2*I, 0) in f32)",
                   "src/spyker/cpu/fire.cpp:41-57 (threshold: x <= thr -> 0)"],
        "note": ("kernel is bit-exact (f64 construction then one rounding to f32). output goes through oneDNN's "
                 "f32 convolution, whose summation order is not specified: compare with |a-b| <= 1e-6 "
                 "(max_abs_err_vs_f64 is Spyker's own error against an exact f64 reference; "
                 "max_abs_diff_sequential_f32 is the difference to a plain f32 loop over (ky, kx) then max(g1 - "
                 "g2, 0) in f32). threshold_margin is "
                 "the smallest |output - f32(threshold)|; when it exceeds the tolerance the thresholded map's zero "
                 "pattern is exact. images = f32(u8 pixel) / f32(255), as the examples do. Output channel order for "
                 "a multi-channel input is c_in * n + filter."),
        "pixels_u8": ji(PIX_U8), "images": jf(IMG), "cases": cases,
    })
    return cases[0]


def make_log():
    stds = [0.471404521, 1.099943882, 2.042752923]
    size, pad, thr = 3, 3, 0.01
    log = spyker.LoG(size, stds, pad=pad)
    kernel = spyker.to_numpy(log.kernel).copy()                       # [2, n, 7, 7]
    ref_k = np.stack([np.stack([gaussian_np(size, s / np.sqrt(2)) for s in stds]),
                      np.stack([gaussian_np(size, s * np.sqrt(2)) for s in stds])])
    assert same(kernel, ref_k)
    out = log(IMG)                                                    # [B, 2n, H, W]
    g = xcorr_f64(IMG, kernel.reshape(-1, 1, 7, 7), (pad,) * 4)
    n = len(stds)
    d = g[:, :n] - g[:, n:]
    err = filter_stats("log", out, np.concatenate([np.maximum(d, 0), np.maximum(-d, 0)], 1))
    gs = conv_np_seq_f32(IMG[:, None], kernel.reshape(-1, 1, 7, 7), (pad,) * 4)[:, 0]
    ds = gs[:, :n] - gs[:, n:]
    seq = np.concatenate([np.maximum(ds, np.float32(0)), np.maximum(-ds, np.float32(0))], 1)
    seq_err = float(np.abs(seq.astype(np.float64) - out).max())
    thr_out = spyker.threshold(out.copy(), thr)
    margin = float(np.abs(out.astype(np.float64) - float(np.float32(thr))).min())
    write("log.json", {
        "block": "LoG filter (Spyker's 'LoG' = DoG(std/sqrt2, std*sqrt2) split into ON and OFF channels) + threshold",
        "calls": ["log = spyker.LoG(3, stds, pad=3)", "output = log(images)",
                  "thresholded = spyker.threshold(output.copy(), 0.01)"],
        "source": ["src/spyker/opers.cpp:773-788 (kernel [0][i] = G(std_i/sqrt(2)), [1][i] = G(std_i*sqrt(2)); "
                   "cpu/init.cpp log_kernel is NOT used)",
                   "src/spyker/cpu/dog.cpp:62-83 (d = G1*I - G2*I; channel i = max(d, 0), channel n+i = max(-d, 0))",
                   "examples/rezghi_mnist_dense.py:44-50 (stds, size 3, pad 3, threshold 0.01)"],
        "note": ("Rezghi's example parameters. Output channels: [ON_0..ON_{n-1}, OFF_0..OFF_{n-1}] per input channel. "
                 "kernel bit-exact; output to 1e-6 (oneDNN summation order). images as in dog.json."),
        "stds": stds, "size": size, "pad": pad, "threshold": thr, "images": jf(IMG),
        "kernel": jf(kernel), "output": jf(out), "thresholded": jf(thr_out),
        "max_abs_err_vs_f64": err, "threshold_margin": margin, "max_abs_diff_sequential_f32": seq_err,
    })


def make_gabor():
    size, pad = 2, 2
    # theta in DEGREES: GaborFilter multiplies it by 0.017453292519943295 (src/spyker/opers.h:203-207)
    params = [(2.0, 0.0, 0.5, 8.0, 0.0), (2.0, 45.0, 0.5, 8.0, 0.0),
              (2.0, 90.0, 0.5, 8.0, 0.0), (1.5, 135.0, 0.8, 6.0, np.pi / 8)]
    filters = [spyker.GaborFilter(*p) for p in params]
    gab = spyker.Gabor(size, filters, pad=pad)
    kernel = spyker.to_numpy(gab.kernel).copy()                       # [n, 5, 5]
    for p, f in zip(params, filters):
        assert f.theta == p[1] * 0.017453292519943295
    ref_k = np.stack([gabor_np(size, p[0], p[1] * 0.017453292519943295, *p[2:]) for p in params])
    assert same(kernel, ref_k)
    out = gab(IMG)
    err = filter_stats("gabor", out, xcorr_f64(IMG, kernel[:, None], (pad,) * 4))
    seq = conv_np_seq_f32(IMG[:, None], kernel[:, None], (pad,) * 4)[:, 0]
    seq_err = float(np.abs(seq.astype(np.float64) - out).max())
    flipped = xcorr_f64(IMG, kernel[:, None, ::-1, ::-1].copy(), (pad,) * 4)
    assert np.abs(out - flipped).max() > 1e-3  # it is a cross-correlation, not a flipped convolution
    write("gabor.json", {
        "block": "Gabor filter (kernel construction, sum normalisation; output not rectified)",
        "calls": ["gab = spyker.Gabor(2, [spyker.GaborFilter(sigma, theta, gamma, lambda_, psi), ...], pad=2)",
                  "output = gab(images)"],
        "source": ["src/spyker/opers.h:203-207 (GaborFilter: theta is given in degrees, stored as theta * 0.017453292519943295)",
                   "src/spyker/cpu/init.cpp:64-77 (x = i cos(theta) + j sin(theta), y = -i sin(theta) + j cos(theta), "
                   "i = row offset, j = column offset; exp(-(x^2 + gamma^2 y^2)/(2 sigma^2)) cos(2 pi x/lambda + psi), "
                   "divided by the f64 kernel sum)",
                   "src/spyker/opers.cpp:739-754, src/spyker/cpu/dog.cpp:94 (plain convolution, no max(., 0))"],
        "note": ("Filters are applied as cross-correlation (no kernel flip; checked: the flipped kernel gives a "
                 "different output). GaborFilter's theta is in DEGREES (the Python docstring says radians): it "
                 "is multiplied by 0.017453292519943295 in f64; psi stays in radians. Negative outputs stay. "
                 "kernel bit-exact; output to 1e-6 (oneDNN). "
                 "PI = 3.14159265358979323846."),
        "filters": [{"sigma": p[0], "theta_degrees": p[1], "theta_radians": f.theta, "gamma": p[2], "lambda": p[3],
                     "psi": p[4]} for p, f in zip(params, filters)],
        "size": size, "pad": pad, "images": jf(IMG), "kernel": jf(kernel), "output": jf(out),
        "max_abs_err_vs_f64": err, "max_abs_diff_sequential_f32": seq_err,
    })


# ------------------------------------------------------------------------------------------------
# Rank-order coding
# ------------------------------------------------------------------------------------------------
def check_no_straddling_ties(x, t):
    """Every group of equal non-minimum values must land in one bin whatever the sort order."""
    end = np.float32(np.float32(t) + np.float32(1e-5))
    for s in x.reshape(x.shape[0], -1):
        mn = s.min()
        n = int((s > mn).sum())
        scale = np.float32(end / np.float32(n))
        srt = np.sort(s)[::-1]
        i = 0
        while i < len(srt) and srt[i] > mn:
            j = i
            while j + 1 < len(srt) and srt[j + 1] == srt[i]:
                j += 1
            bins = {int(np.float32(np.float32(r) * scale)) for r in range(i, j + 1)}
            assert len(bins) == 1, ("a tie group straddles a bin", srt[i], bins)
            i = j + 1


def make_code(dog_case):
    t = 15
    x = f32(dog_case["thresholded"])                                  # Kheradpisheh DoG -> threshold 0.01
    check_no_straddling_ties(x, t)
    cases = []
    for sort in (True, False):
        wave = spyker.code(x, t, sort=sort)                           # [B, T, C, H, W] u8
        first = spyker.gather(wave)                                   # [B, C, H, W] u8, T = never
        assert same(first.astype(np.int64), gather_np(wave))
        assert same(first.astype(np.int64), rank_code_np(x, t, sort))
        assert same(spyker.scatter(first, t), wave)
        cases.append({"sort": sort, "wave": ji(wave), "first_spike": ji(first)})
    # Edge: a sample whose values are all equal (n = 0 values above the minimum).
    flat = np.zeros((1, 2, 3, 3), np.float32)
    edges = []
    for sort in (True, False):
        w = spyker.code(flat, t, sort=sort)
        edges.append({"sort": sort, "name": "all_equal", "input": jf(flat), "first_spike": ji(spyker.gather(w))})
        assert (spyker.gather(w) == 0).all()
    # Edge: sort=False values within 2 ulps of every bin edge (min 0, max 1). Spyker's
    # trunc(fma(-scale, x - min, end)) is compared with two roundings and with the real-number formula.
    end = np.float32(np.float32(t) + np.float32(1e-5))
    near = []
    for k in range(1, t):
        c = np.float32(1 - k / (t + 1e-5))
        for _ in range(2):
            c = np.nextafter(c, np.float32(-1))
        for _ in range(5):
            near.append(c)
            c = np.nextafter(c, np.float32(2))
    bx = f32([[0.0, 1.0] + near])                                    # [1, 72]: min 0, max 1
    bfirst = spyker.gather(spyker.code(bx, t, sort=False))
    assert same(bfirst.astype(np.int64), rank_code_np(bx, t, False))
    scale = np.float32(end / np.float32(1.0))
    two = [min(int(np.float32(end - np.float32(scale * v))), t) for v in bx[0]]
    real = [min(int(np.floor((t + 1e-5) * (1 - float(v)))), t) for v in bx[0]]
    assert two != ji(bfirst[0])                                       # the fused rounding matters
    edges.append({"sort": False, "name": "bin_edges", "input": jf(bx), "first_spike": ji(bfirst),
                  "two_roundings_f32": two, "real_number_formula": real,
                  "differs_two_roundings": sum(a != b for a, b in zip(two, ji(bfirst[0]))),
                  "differs_real_number": sum(a != b for a, b in zip(real, ji(bfirst[0])))})
    write("code.json", {
        "block": "rank-order latency coding code(x, T, sort) + gather/scatter (first-spike-time maps)",
        "calls": ["wave = spyker.code(x, 15, sort=True)", "wave = spyker.code(x, 15, sort=False)",
                  "first_spike = spyker.gather(wave)", "spyker.scatter(first_spike, 15) == wave (checked)"],
        "source": ["src/spyker/opers.cpp:496-511 (per sample, flattened over C*H*W)",
                   "src/spyker/cpu/code.cpp:85-119 (sort=True), 42-83 (sort=False), src/spyker/base.h:776 (Epsilon 1e-5f)",
                   "src/spyker/cpu/time.cpp:40-85 (gather / scatter)"],
        "note": ("x is dog.json's kheradpisheh 'thresholded' map (the examples' pipeline). sort=True: stable or "
                 "unstable order does not matter for this x: every group of equal values above the minimum falls "
                 "into one time bin (checked by the script); the minimum group (the zeros) never fires. Spyker's "
                 "std::sort is unstable, so inputs with a tie group straddling a bin boundary have no defined "
                 "answer. edges 'all_equal': a sample with max == min fires EVERY neuron at t = 0 in both modes "
                 "(NaN/inf converted to u16 gives 0 on x86; undefined behaviour in C++ but what the wheel does). "
                 "edges 'bin_edges': sort=False on [0, 1, v...] ([1, 72], not an image) with v within 2 f32 ulps "
                 "of every bin edge. The wheel computes end - scale*(x - min) as ONE fused multiply-subtract "
                 "(one rounding to f32, then trunc); two_roundings_f32 (product rounded, then difference) and "
                 "real_number_formula (floor((T+eps)(1 - (x-min)/(max-min))) in f64) both disagree with it on "
                 "some of these values."),
        "T": t, "input": jf(x), "cases": cases, "edges": edges,
    })


# ------------------------------------------------------------------------------------------------
# Convolution + fire / threshold
# ------------------------------------------------------------------------------------------------
def conv_np_seq_f32(wave, kernel, pad):
    """The naive order: one f32 accumulator per output, terms in (c_in, ky, kx) order."""
    b, t, c, h, w = wave.shape
    x = wave.reshape(b * t, c, h, w).astype(np.float32)
    p = np.zeros((b * t, c, h + pad[0] + pad[2], w + pad[1] + pad[3]), np.float32)
    p[:, :, pad[0]:pad[0] + h, pad[1]:pad[1] + w] = x
    cout, _, kh, kw = kernel.shape
    oh, ow = p.shape[2] - kh + 1, p.shape[3] - kw + 1
    acc = np.zeros((b * t, cout, oh, ow), np.float32)
    for ci in range(c):
        for dy in range(kh):
            for dx in range(kw):
                acc = acc + p[:, None, ci, dy:dy + oh, dx:dx + ow] * kernel[None, :, ci, dy, dx, None, None]
    return acc.reshape((b, t) + acc.shape[1:])


def conv_np_exact(wave, kernel, pad):
    b, t = wave.shape[:2]
    v = xcorr_f64(wave.reshape((b * t,) + wave.shape[2:]).astype(np.float64), kernel, pad)
    return v.reshape((b, t) + v.shape[1:])


def make_conv_fire():
    t = 6
    wave, _ = random_wave((2, t, 2, 10, 10), never=0.35)
    kernels = {
        "dyadic": f32(RNG.randint(0, 256, (3, 2, 5, 5)) / 256.0),
        "normal": f32(RNG.normal(0.8, 0.05, (3, 2, 5, 5))),
    }
    cases = []
    for name, kernel in kernels.items():
        conv = spyker.Conv(2, 3, 5, pad=2)
        spyker.to_tensor(kernel).to(conv.kernel)
        v = conv(wave)                                                # [B, T, 3, 10, 10] f32
        exact = conv_np_exact(wave, kernel, (2, 2, 2, 2))
        err = float(np.abs(v.astype(np.float64) - exact).max())
        if name == "dyadic":
            assert err == 0.0
            # a threshold that some potential equals exactly, to pin the strict comparison
            vals = np.unique(v[v > 5])
            thr = float(vals[len(vals) // 2])
            assert (v == np.float32(thr)).any()
        else:
            thr = 10.0
        margin = float(np.abs(v.astype(np.float64) - thr).min())
        seq = conv_np_seq_f32(wave, kernel, (2, 2, 2, 2))
        seq_rel = float((np.abs(seq.astype(np.float64) - v) / np.maximum(1.0, np.abs(v))).max())
        spikes = spyker.fire(v, thr)
        assert same(spikes, (v > np.float32(thr)).astype(np.uint8))
        thresholded = spyker.threshold(v.copy(), thr)
        assert same(thresholded, np.where(v <= np.float32(thr), np.float32(0), v))
        spikes0 = spyker.fire(thresholded)
        assert same(spikes0, spikes)
        cases.append({"name": name, "kernel": jf(kernel), "threshold": thr, "potential": jf(v),
                      "spikes": ji(spikes), "thresholded": jf(thresholded),
                      "max_abs_err_vs_f64": err, "threshold_margin": margin,
                      "max_rel_diff_sequential_f32": seq_rel,
                      "equal_to_threshold": int((v == np.float32(thr)).sum())})
    write("conv_fire.json", {
        "block": "conv of a cumulative spike wave (all T at once, no bias) + fire (V > theta, strict) + threshold (V <= theta -> 0)",
        "calls": ["conv = spyker.Conv(2, 3, 5, pad=2); spyker.to_tensor(kernel).to(conv.kernel)",
                  "potential = conv(wave)", "spikes = spyker.fire(potential, threshold)",
                  "thresholded = spyker.threshold(potential.copy(), threshold)",
                  "spyker.fire(thresholded) == spikes (checked)"],
        "source": ["src/spyker/opers.cpp:408-423 (input [B, T, C, H, W] viewed as [B*T, C, H, W]; u8 converted to f32)",
                   "src/spyker/cpu/conv.cpp:41-110 (oneDNN convolution_auto, cross-correlation, zero padding)",
                   "src/spyker/cpu/fire.cpp:67-82 (fire: out = V > f32(theta)), 41-57 (threshold: V <= f32(theta) -> value)"],
        "note": ("'dyadic' weights are k/256: every potential is exact in f32 whatever the summation order, so "
                 "potential, spikes and thresholded are bit-exact; its threshold equals some potentials exactly "
                 "(equal_to_threshold of them), which must NOT fire. 'normal' weights are f32(N(0.8, 0.05)) like "
                 "the examples' init: compare potentials with |a-b| <= 1e-6 * max(1, |b|) (oneDNN order; "
                 "max_abs_err_vs_f64 is Spyker's own error); spikes are exact because threshold_margin is far "
                 "above the tolerance. max_rel_diff_sequential_f32: a plain f32 loop in (c_in, ky, kx) order "
                 "against Spyker, max of |a-b| / max(1, |b|). threshold and fire take theta as f32. The "
                 "examples call threshold in place "
                 "and then fire(thresholded) with theta = 0."),
        "T": t, "pad": 2, "wave": ji(wave), "cases": cases,
    })


# ------------------------------------------------------------------------------------------------
# Point-wise inhibition
# ------------------------------------------------------------------------------------------------
def constructed_potentials(shape, never=0.5, step=1 / 16):
    """Thresholded-looking potentials: 0 before a random first step, then nondecreasing dyadic values."""
    b, t, c, h, w = shape
    first = RNG.randint(0, t, (b, c, h, w))
    first[RNG.rand(b, c, h, w) < never] = t
    start = 10 + RNG.randint(0, 64, (b, c, h, w)) * step
    incr = RNG.randint(0, 32, (b, t, c, h, w)) * step
    v = np.zeros(shape, np.float32)
    for s in range(t):
        grow = incr[:, :s + 1].sum(1)
        v[:, s] = np.where(s >= first, start + grow, 0)
    return f32(v), first


def set_neuron(v, b, c, y, x, first, values):
    v[b, :, c, y, x] = 0
    for s, val in zip(range(first, v.shape[1]), values):
        v[b, s, c, y, x] = val


def make_inhibit():
    t, c = 5, 4
    v, _ = constructed_potentials((2, t, c, 6, 6))
    ties = []
    # (0,0): ch1 and ch3 fire at t=1 with equal potential -> lowest channel (1) wins
    for ch in range(c):
        set_neuron(v, 0, ch, 0, 0, t, [])
    set_neuron(v, 0, 1, 0, 0, 1, [12.5] * 4)
    set_neuron(v, 0, 3, 0, 0, 1, [12.5, 13, 14, 15])
    ties.append({"b": 0, "y": 0, "x": 0, "keeps": 1, "why": "ch1 and ch3 first fire at t=1 with equal V: lowest channel"})
    # (0,1): ch0 and ch2 fire at t=2, ch2 larger -> ch2
    for ch in range(c):
        set_neuron(v, 0, ch, 0, 1, t, [])
    set_neuron(v, 0, 0, 0, 1, 2, [12, 30, 31])
    set_neuron(v, 0, 2, 0, 1, 2, [15, 15, 15])
    ties.append({"b": 0, "y": 0, "x": 1, "keeps": 2, "why": "same first step t=2, larger V at that step wins"})
    # (0,2): ch3 fires first (t=0, small V), ch0 later with a huge V -> ch3
    for ch in range(c):
        set_neuron(v, 0, ch, 0, 2, t, [])
    set_neuron(v, 0, 3, 0, 2, 0, [10.0625] * 5)
    set_neuron(v, 0, 0, 0, 2, 1, [99] * 4)
    ties.append({"b": 0, "y": 0, "x": 2, "keeps": 3, "why": "earliest first spike wins over a later larger potential"})
    # (0,3): nobody fires
    for ch in range(c):
        set_neuron(v, 0, ch, 0, 3, t, [])
    ties.append({"b": 0, "y": 0, "x": 3, "keeps": 0, "why": "silent pixel: channel 0 kept (all zeros anyway)"})
    v = f32(v)
    out = spyker.inhibit(v.copy())
    assert same(out, inhibit_np(v))
    for tc in ties:
        kept = [ch for ch in range(c) if out[tc["b"], :, ch, tc["y"], tc["x"]].any()]
        assert kept in ([tc["keeps"]], []), (tc, kept)

    # Spike-wave input (the Kheradpisheh example inhibits conv2's u8 input wave).
    wave, _ = random_wave((2, t, c, 6, 6), never=0.5)
    wave[0, :, :, 0, 0] = 0
    wave[0, 2:, 1, 0, 0] = 1
    wave[0, 2:, 2, 0, 0] = 1                                          # ch1, ch2 tie at t=2 -> ch1
    wave_out = spyker.inhibit(wave.copy())
    assert same(wave_out, inhibit_np(wave))

    # threshold parameter on raw (unthresholded) potentials: silent pixels keep the argmax at T-1.
    raw = f32(RNG.randint(0, 160, (1, t, c, 4, 4)) / 16.0)
    raw = f32(np.maximum.accumulate(raw, axis=1))                    # nondecreasing like a real potential
    theta = 8.0
    raw_out = spyker.inhibit(raw.copy(), theta)
    assert same(raw_out, inhibit_np(raw, theta))
    write("inhibit.json", {
        "block": "point-wise lateral inhibition inhibit(V, threshold=0) (in place)",
        "calls": ["out = spyker.inhibit(potential.copy())", "wave_out = spyker.inhibit(wave.copy())",
                  "raw_out = spyker.inhibit(raw.copy(), 8.0)"],
        "source": ["src/spyker/opers.cpp:639-646 (viewed as [B, T, C, H*W]; in place unless inplace=False)",
                   "src/spyker/cpu/inhibit.cpp:41-121"],
        "note": ("Per sample and pixel: m[t] = max_c V[t,c] with ch[t] = lowest channel attaining it (strict >); "
                 "count = #{t : m[t] > threshold}; step = T - max(count, 1); keep = ch[step]; every other channel "
                 "is multiplied by 0 at every t. For cumulative potentials step is the first firing step (T-1 if the "
                 "pixel never fires). Bit-exact: only comparisons and x*0/x*1. 'ties' lists the hand-made pixels of "
                 "sample 0. wave: the same op on a u8 spike wave (earliest spike, ties -> lowest channel). raw: "
                 "threshold parameter 8.0 on potentials that are not thresholded; a pixel where nothing exceeds 8 "
                 "keeps the channel with the largest V[T-1] and its sub-threshold potentials."),
        "T": t, "potential": jf(v), "output": jf(out), "ties": ties,
        "wave": ji(wave), "wave_output": ji(wave_out),
        "raw": jf(raw), "raw_threshold": theta, "raw_output": jf(raw_out),
    })


# ------------------------------------------------------------------------------------------------
# k-WTA
# ------------------------------------------------------------------------------------------------
def make_wta():
    t, c, h, w = 5, 4, 8, 8
    v, _ = constructed_potentials((3, t, c, h, w), never=0.6)
    v = inhibit_np(v)
    # sample 0: exact score tie across maps -> lowest (c, y, x)
    for ch in range(c):
        for (y, x) in [(2, 5), (6, 1)]:
            set_neuron(v, 0, ch, y, x, t, [])
    v[0][v[0] > 0] = np.minimum(v[0][v[0] > 0], 40)                   # keep the tie neurons the strongest
    set_neuron(v, 0, 3, 2, 5, 0, [50.0] * t)
    set_neuron(v, 0, 1, 6, 1, 0, [50.0] * t)
    # sample 1: f32 score collision: V differ (50 vs 50.000008) but the f32 scores are equal -> lower index
    v[1][v[1] > 0] = np.minimum(v[1][v[1] > 0], 40)
    for ch in range(c):
        for (y, x) in [(0, 0), (7, 7)]:
            set_neuron(v, 1, ch, y, x, t, [])
    set_neuron(v, 1, 0, 0, 0, 0, [50.0] * t)
    set_neuron(v, 1, 2, 7, 7, 0, [50.00001] * t)
    # sample 2: silent
    v[2] = 0
    v = f32(v)
    s1 = v[1].reshape(t, -1)
    mn, diff = s1.min(), np.float32((s1.max() - s1.min()) * np.float32(2))
    a = np.float32(t - 1) + (np.float32(50.0) - mn) / diff
    bsc = np.float32(t - 1) + (np.float32(50.00001) - mn) / diff
    assert a == bsc and np.float32(50.00001) > np.float32(50.0)
    cases = []
    for r, k in [(1, 3), (2, 5), (0, 40), (3, 8)]:
        ws = spyker.convwta(v, r, k)
        assert jwinners(ws) == convwta_np(v, (r, r), k), (r, k)
        cases.append({"radius": r, "count": k, "winners": jwinners(ws)})
    assert cases[0]["winners"][0][0] == {"c": 0, "z": 1, "y": 6, "x": 1}
    assert cases[0]["winners"][1][0] == {"c": 0, "z": 0, "y": 0, "x": 0}
    assert cases[0]["winners"][2] == []

    # threshold parameter on raw potentials (no zeros): min/max of the whole sample normalise the score.
    raw = f32(np.maximum.accumulate(RNG.randint(1, 200, (2, t, c, 6, 6)) / 8.0, axis=1))
    raw_cases = []
    for r, k, theta in [(1, 4, 18.0), (0, 6, 22.0)]:
        ws = spyker.convwta(raw, r, k, theta)
        assert jwinners(ws) == convwta_np(raw, (r, r), k, theta)
        raw_cases.append({"radius": r, "count": k, "threshold": theta, "winners": jwinners(ws)})

    # u8 spike wave: time only (T - t_first), ties -> lowest index.
    wave, _ = random_wave((2, t, c, h, w), never=0.7)
    wave_cases = []
    for r, k in [(1, 5), (2, 3)]:
        ws = spyker.convwta(wave, r, k)
        assert jwinners(ws) == convwta_np(wave, (r, r), k)
        wave_cases.append({"radius": r, "count": k, "winners": jwinners(ws)})
    write("wta.json", {
        "block": "k-WTA with inhibition radius convwta(V, r, k, threshold=0): winners (c, y, x) per sample",
        "calls": ["winners = spyker.convwta(potential, r, k)", "spyker.convwta(raw, r, k, threshold)",
                  "spyker.convwta(wave, r, k)"],
        "source": ["src/spyker/opers.cpp:656-662", "src/spyker/cpu/wta.cpp:40-64 (f32 score), 66-85 (integer score), "
                   "128-182 (selection and erasure)", "src/spyker/base.h:759-776 (Limits<F32>::min() = -FLT_MAX)"],
        "note": ("Winner fields: z = feature map (channel), y, x; c = STDP config index (0 from convwta). Float "
                 "inputs: min, max over the whole sample (all T, C, H, W); diff = (max - min) * 2 in f32; scanning "
                 "t = T-1 down to 0, every V[t] > threshold sets score = f32(T-1-t) + (V[t] - min) / diff (f32), so "
                 "the earliest step above threshold wins; untouched scores stay -FLT_MAX. Repeat count times: idx = "
                 "first maximum in (c, y, x) order; stop if score[idx] is still -FLT_MAX (|score+FLT_MAX| < 1e-5); "
                 "record it; set to -FLT_MAX the square [y-r, y+r] x [x-r, x+r] (clipped) in every map and the "
                 "whole map c. Sample 0 has an exact score tie (maps 3 and 1) -> (1, 6, 1); sample 1 has potentials "
                 "50 and 50.000008 whose f32 scores are equal -> the lower index (0, 0, 0) wins although its V is "
                 "smaller; sample 2 is silent -> []. u8 inputs: score = T - t_first (0 = silent), no potential term."),
        "T": t, "potential": jf(v), "cases": cases,
        "raw": jf(raw), "raw_cases": raw_cases, "wave": ji(wave), "wave_cases": wave_cases,
    })


# ------------------------------------------------------------------------------------------------
# Pooling
# ------------------------------------------------------------------------------------------------
def make_pool():
    wave, _ = random_wave((2, 5, 3, 9, 9), never=0.5)
    cases = []
    for kernel, stride, pad in [(2, None, 1), (2, None, 0), (3, None, 0), (2, 1, 0), (2, None, (1, 0, 0, 1)),
                                (3, 2, (0, 2))]:
        out = spyker.pool(wave, kernel, stride, pad)
        k2 = (kernel, kernel)
        s2 = k2 if stride is None else (stride, stride)
        p4 = (pad,) * 4 if isinstance(pad, int) else (pad if len(pad) == 4 else (pad[0], pad[1], pad[0], pad[1]))
        assert same(out, pool_np(wave, k2, s2, p4)), (kernel, stride, pad)
        cases.append({"kernel": kernel, "stride": kernel if stride is None else stride,
                      "pad": pad, "pad_tlbr": list(p4), "output": ji(out)})
    write("pool.json", {
        "block": "max-pool of a spike wave with zero padding",
        "calls": ["out = spyker.pool(wave, kernel, stride, pad)  # stride None -> kernel"],
        "source": ["src/python/spyker/private.py:100-109 (expand4: int p -> (p,p,p,p); (a, b) -> (a, b, a, b))",
                   "src/spyker/shape.cpp:108-122 (out = (H + top + bottom - k) / s + 1, floor)",
                   "src/spyker/cpu/pool.cpp:41-86 (pad with 0: top = pad[0] rows, left = pad[1] columns; max over window)"],
        "note": ("Pad order is (top, left, bottom, right) = pad_tlbr, NOT the '(left, right, top, bottom)' of the "
                 "Python docstring; a 2-tuple is (vertical, horizontal). The (1, 0, 0, 1) case shows it: one zero row "
                 "on top and one zero column on the right. Max over a window of a cumulative wave = earliest spike "
                 "in the window; padded cells are 0 (silent). Bit-exact. The examples: Kheradpisheh pool(x, 2, "
                 "pad=1), Mozafari pool(x, 2) and pool(x, 3)."),
        "wave": ji(wave), "cases": cases,
    })


# ------------------------------------------------------------------------------------------------
# Infinite threshold (decision layer)
# ------------------------------------------------------------------------------------------------
def make_infinite():
    t = 5
    wave, _ = random_wave((3, t, 3, 6, 6), never=0.3)
    wave[2] = 0                                                       # sample 2 silent -> no winner
    kernel = f32(RNG.randint(0, 256, (20, 3, 3, 3)) / 256.0)
    conv = spyker.Conv(3, 20, 3, pad=1)
    spyker.to_tensor(kernel).to(conv.kernel)
    v = conv(wave)
    assert np.abs(v.astype(np.float64) - conv_np_exact(wave, kernel, (1, 1, 1, 1))).max() == 0
    out = spyker.infinite(v.copy())
    ref = v.copy()
    ref[:, :t - 1] = 0
    assert same(out, ref)
    winners = spyker.convwta(out, 0, 1)
    assert jwinners(winners) == convwta_np(out, (0, 0), 1)
    spikes = spyker.fire(out)
    write("infinite.json", {
        "block": "'infinite threshold' decision layer: infinite(V) zeroes V[t] for t < T-1 (in place); decision = convwta(., 0, 1)",
        "calls": ["potential = conv(wave)  # Conv(3, 20, 3, pad=1), dyadic kernel", "out = spyker.infinite(potential.copy())",
                  "winners = spyker.convwta(out, 0, 1)", "spikes = spyker.fire(out)"],
        "source": ["src/spyker/opers.cpp:513-520 (viewed as [B, T, rest])", "src/spyker/cpu/fire.cpp:59-65",
                   "examples/mozafari_mnist_original.py:112-138"],
        "note": ("infinite keeps only V[T-1] (value=0 elsewhere). The decision winner is the largest V[T-1] > 0, "
                 "ties -> lowest (c, y, x); the label is winner.z // (C // 10) (here C = 20: 2 maps per class). "
                 "spikes = fire(out) has ones only at T-1, so the R-STDP t_post is T-1. Bit-exact (dyadic kernel)."),
        "T": t, "wave": ji(wave), "kernel": jf(kernel), "potential": jf(v), "output": jf(out),
        "winners": jwinners(winners), "spikes": ji(spikes),
    })


# ------------------------------------------------------------------------------------------------
# STDP / R-STDP
# ------------------------------------------------------------------------------------------------
def run_stdp(kernel0, wave, spikes, configs, winners_json, pad=2):
    cin, cout, k = kernel0.shape[1], kernel0.shape[0], kernel0.shape[2]
    conv = spyker.Conv(cin, cout, k, pad=pad)
    spyker.to_tensor(kernel0).to(conv.kernel)
    conv.stdpconfig = configs
    ws = []
    for sample in winners_json:
        row = []
        for w in sample:
            x = spyker.Winner(w["c"], 0, w["z"])
            x.y, x.x = w["y"], w["x"]
            row.append(x)
        ws.append(row)
    conv.stdp(wave, ws, spikes)
    after = spyker.to_numpy(conv.kernel).copy()
    ref, trace = stdp_np(wave, kernel0, spikes, [cfg_dict(c) for c in configs], winners_json, (1, 1), (pad,) * 4)
    assert same(after, ref)
    return after, trace


def make_stdp():
    t = 6
    wave, _ = random_wave((2, t, 2, 10, 10), never=0.35)
    kernel0 = f32(RNG.normal(0.8, 0.05, (4, 2, 5, 5)))
    # special initial weights: at the bounds, outside them (not clipped at init), mid-range
    kernel0[0, 0, 0, :5] = [0.0, 1.0, 1.03, -0.02, 0.5]
    kernel0[1, 1, 4, :4] = [0.2, 0.8, 0.85, 0.1]
    conv = spyker.Conv(2, 4, 5, pad=2)
    spyker.to_tensor(kernel0).to(conv.kernel)
    theta = 15.0
    out = spyker.inhibit(spyker.threshold(conv(wave), theta))        # the examples' forward pass
    winners = jwinners(spyker.convwta(out, 2, 3))
    spikes = spyker.fire(out)
    assert all(len(w) > 0 for w in winners), winners
    # hand-made winners: border (padding -> silent -> LTD), a map hit in both samples (sequential),
    # a 'winner' whose output never fired (t_post = T: everything potentiates), one skipped (c = -1)
    h, w = spikes.shape[3:]
    fired0 = [tuple(int(i) for i in p) for p in np.argwhere(spikes[0, t - 1])]
    border = next(p for p in fired0 if p[1] in (0, h - 1) or p[2] in (0, w - 1))
    fired1 = [tuple(int(i) for i in p) for p in np.argwhere(spikes[1, t - 1])]
    same_map = next(p for p in fired1 if p[0] == border[0])
    other = next(p for p in fired1 if p[0] != border[0])
    silent = next(tuple(int(i) for i in p) for p in np.argwhere(spikes[1, t - 1] == 0) if p[0] not in (border[0], other[0]))
    hand = [[{"c": 0, "z": border[0], "y": border[1], "x": border[2]}],
            [{"c": 0, "z": same_map[0], "y": same_map[1], "x": same_map[2]},
             {"c": -1, "z": other[0], "y": other[1], "x": other[2]},
             {"c": 0, "z": silent[0], "y": silent[1], "x": silent[2]}]]
    configs = {
        "stabilized": [spyker.STDPConfig(0.004, -0.003)],
        "plain": [spyker.STDPConfig(0.004, -0.003, False, 0.0, 1.0)],
        "bounds_0.2_0.8_large_rates": [spyker.STDPConfig(0.05, -0.04, True, 0.2, 0.8)],
    }
    cases = []
    for name, cfg in configs.items():
        for wname, ws in (("convwta", winners), ("hand", hand)):
            after, trace = run_stdp(kernel0, wave, spikes, cfg, ws)
            cases.append({"name": f"{name}/{wname}", "configs": [cfg_dict(c) for c in cfg], "winners": ws,
                          "kernel_after": jf(after), "trace": trace,
                          "changed": int((after != kernel0).sum())})
    write("stdp.json", {
        "block": "simplified STDP of a conv kernel: Conv.stdp(input_wave, winners, output_spikes)",
        "calls": ["conv = spyker.Conv(2, 4, 5, pad=2); spyker.to_tensor(kernel_before).to(conv.kernel)",
                  "conv.stdpconfig = [spyker.STDPConfig(positive, negative, stabilize, lower, upper)]",
                  "out = spyker.inhibit(spyker.threshold(conv(wave), 15.0)); spikes = spyker.fire(out)",
                  "winners = spyker.convwta(out, 2, 3)  # or the hand-made list (spyker.Winner(c, 0, z); .y, .x)",
                  "conv.stdp(wave, winners, spikes); kernel_after = conv.kernel"],
        "source": ["src/spyker/opers.cpp:873-880, 679-693", "src/spyker/cpu/stdp.cpp:99-169",
                   "src/spyker/utils.h:505-524 (STDPConfig fields are f64)"],
        "note": ("Winners are applied one after another in sample order, then list order, each reading the kernel "
                 "as left by the previous one. For a winner (c, z, y, x) with c >= 0: t_post = first t with "
                 "spikes[b, t, z, y, x] != 0, else T; t_pre[ci, ky, kx] = first t with a nonzero input at "
                 "(ci, y*stride + ky, x*stride + kx) of the zero-PADDED input, else T (padding is silent). For "
                 "every weight w of kernel z: old = f64(w); f = stabilize ? (old - lower)*(upper - old) : 1; "
                 "new = old + (t_pre <= t_post ? positive : negative) * f; w = f32(max(lower, min(new, upper))). "
                 "All in f64 with the f64 rates, one rounding to f32: bit-exact. c < 0 skips the winner. Initial "
                 "weights are not clipped: 1.03 with the stabilizer has f < 0 and is then clamped. 'trace' gives "
                 "t_post and t_pre per applied winner. The hand-made third winner of sample 1 never fired "
                 "(t_post = T) so every weight, silent inputs included, is potentiated. Hand-made winners: sample 0 a "
                 "fired neuron on the map border (part of its receptive field is padding), sample 1 a fired neuron "
                 "of the same map (applied after sample 0's update), a skipped one (c = -1) and the never-fired one."),
        "T": t, "pad": 2, "stride": 1, "wave": ji(wave), "forward_threshold": theta,
        "kernel_before": jf(kernel0), "forward_output": jf(out), "spikes": ji(spikes), "cases": cases,
    })


def make_rstdp():
    t, c = 6, 20
    wave, _ = random_wave((3, t, 3, 6, 6), never=0.3)
    wave[2] = 0                                                       # silent sample: no winner, no update
    kernel0 = f32(RNG.normal(0.5, 0.15, (c, 3, 3, 3)))
    conv = spyker.Conv(3, c, 3, pad=1)
    spyker.to_tensor(kernel0).to(conv.kernel)
    out = spyker.infinite(conv(wave))
    ws = spyker.convwta(out, 0, 1)
    per = c // 10
    labels = [ws[i][0].z // per if len(ws[i]) == 1 else -1 for i in range(len(ws))]
    assert labels[0] >= 0 and labels[1] >= 0 and labels[2] == -1
    spikes = spyker.fire(out)
    reward = spyker.STDPConfig(0.004, -0.003, False, 0.2, 0.8)
    punish = spyker.STDPConfig(-0.004, 0.0005, False, 0.2, 0.8)
    cases = []
    for name, targets in [("reward", [labels[0], labels[1], 4]),               # both right
                          ("punish", [(labels[0] + 1) % 10, (labels[1] + 3) % 10, 4]),  # both wrong
                          ("mixed", [labels[0], (labels[1] + 3) % 10, 4])]:      # right, then wrong
        winners = jwinners(ws)
        for i, row in enumerate(winners):
            for wn in row:
                wn["c"] = int(labels[i] != targets[i])                 # 0 = reward config, 1 = punish config
        after, trace = run_stdp(kernel0, wave, spikes, [reward, punish], winners, pad=1)
        cases.append({"name": name, "targets": targets, "winners": winners, "kernel_after": jf(after),
                      "trace": trace, "changed": int((after != kernel0).sum())})

    # Adaptive scaling after each chunk of 1024 images (example's arithmetic, f64).
    base = [reward.positive, reward.negative, punish.positive, punish.negative]
    chunks = []
    for correct, wrong, silent in [(900, 100, 24), (512, 500, 12), (1024, 0, 0)]:
        perf = np.array([correct, wrong, silent, correct + wrong + silent], np.float64)
        r = [base[0] * (perf[1] / perf[3]), base[1] * (perf[1] / perf[3]),
             base[2] * (perf[0] / perf[3]), base[3] * (perf[0] / perf[3])]
        chunks.append({"correct": correct, "wrong": wrong, "silent": silent,
                       "reward": [float(r[0]), float(r[1])], "punish": [float(r[2]), float(r[3])],
                       "hex": [hexf(x) for x in r]})
    write("rstdp.json", {
        "block": "R-STDP: one reward and one punish update of the decision layer + the adaptive rate scaling",
        "calls": ["conv = spyker.Conv(3, 20, 3, pad=1); kernel_before loaded",
                  "out = spyker.infinite(conv(wave)); winners = spyker.convwta(out, 0, 1)",
                  "label = winner.z // (20 // 10); winner.c = int(label != target)",
                  "conv.stdpconfig = [STDPConfig(0.004, -0.003, False, 0.2, 0.8), STDPConfig(-0.004, 0.0005, False, 0.2, 0.8)]",
                  "conv.stdp(wave, winners, spyker.fire(out))"],
        "source": ["examples/mozafari_mnist_original.py:85-87 (configs), 112-126 (train_layer3), 175-196 (scaling)",
                   "src/spyker/cpu/stdp.cpp:121-154"],
        "note": ("Three cases from the same kernel_before and forward pass, differing only in the targets: "
                 "'reward' (samples 0 and 1 right: config c=0), 'punish' (both wrong: c=1), 'mixed' (0 right, 1 "
                 "wrong, applied in that order). Sample 2 is silent (no winner: no update, label -1). t_post = "
                 "T-1 (fire of the infinite-threshold output), so every "
                 "input that spiked at all is potentiated by the config's 'positive' and silent inputs get "
                 "'negative'; no stabilizer; clamp to [0.2, 0.8] (initial weights outside stay outside until "
                 "touched). Bit-exact. rate_scaling: after every 1024 images (counter perf_batch[3] % 1024 == 0, "
                 "not reset per epoch) the example sets reward = base_reward * wrong/total and punish = "
                 "base_punish * correct/total, total including silent samples; the first chunk runs at base rates."),
        "T": t, "pad": 1, "wave": ji(wave), "kernel_before": jf(kernel0), "output": jf(out),
        "labels": labels, "spikes": ji(spikes), "configs": [cfg_dict(reward), cfg_dict(punish)], "cases": cases,
        "rate_scaling": {"chunk": 1024, "base": base, "chunks": chunks},
    })


def make_schedule():
    """Run the examples' update() on a real Conv's STDPConfig (mutation through the list persists)."""
    def update(config, mult, limit):                                  # examples/kheradpisheh_mnist_dense.py:28-31
        ratio = config.negative / config.positive
        config.positive = min(config.positive * mult, limit)
        config.negative = config.positive * ratio

    tables = {}
    for name, a, mult, limit, every, images in [("kheradpisheh_l1_mozafari_l1_l2", (0.004, -0.003), 2, 0.15, 500, 8192),
                                                ("rezghi_l1_l2", (0.0004, -0.0003), 1.5, 1.5, 2000, 65536)]:
        conv = spyker.Conv(2, 4, 5)
        conv.stdpconfig = [spyker.STDPConfig(*a)]
        count, seen, rows = 0, 0, []
        prev = None
        while seen < images:
            cur = (conv.stdpconfig[0].positive, conv.stdpconfig[0].negative)
            if cur != prev:
                rows.append({"from_image": seen, "positive": cur[0], "negative": cur[1],
                             "hex": [hexf(cur[0]), hexf(cur[1])]})
                prev = cur
            seen += 64                                                # one batch trained with `cur`
            count += 64
            if count > every:
                count -= every
                update(conv.stdpconfig[0], mult, limit)
        tables[name] = {"batch": 64, "every": every, "mult": mult, "limit": limit, "start": list(a),
                        "images": images, "rows": rows}
    write("schedule.json", {
        "block": "STDP learning-rate schedule of the examples (not a Spyker op: Python in the example scripts)",
        "calls": ["count += batch; if count > every: count -= every; update(conv.stdpconfig[0], mult, limit)",
                  "update: ratio = neg/pos; pos = min(pos*mult, limit); neg = pos*ratio"],
        "source": ["examples/kheradpisheh_mnist_dense.py:28-31 (update), 62-69 (layer 1 only; train2 has none)",
                   "examples/mozafari_mnist_original.py:93-110 (layers 1 and 2)",
                   "examples/rezghi_mnist_dense.py:63-80 (x1.5 every 2000, limit 1.5)"],
        "note": ("Batches of 64. The check runs after each batch's STDP, so the batch that crosses the count uses "
                 "the old rate; row from_image = index of the first image trained with that rate. Doubling after "
                 "512, 1024, 1536, ... images (count keeps the remainder: 12 after the first). The cap 0.15 is "
                 "reached after the 6th doubling; negative = positive * ratio with ratio recomputed from the "
                 "previous f64 values each time, so negative is not exactly -0.75 * positive (hex gives the "
                 "bits). Assigning through conv.stdpconfig[0] persists (checked on the real object)."),
        "tables": tables,
    })


# ------------------------------------------------------------------------------------------------
# Composition: one Kheradpisheh layer-1 and layer-2 training step
# ------------------------------------------------------------------------------------------------
def make_layers(dog_case):
    t, th1, th2 = 15, 10.0, 1.0
    x = spyker.code(f32(dog_case["thresholded"]), t)                 # [2, 15, 2, 12, 12]
    k1 = f32(RNG.normal(0.8, 0.05, (4, 2, 5, 5)))
    k2 = f32(RNG.normal(0.8, 0.05, (6, 4, 2, 2)))
    conv1, conv2 = spyker.Conv(2, 4, 5, pad=2), spyker.Conv(4, 6, 2, pad=1)
    spyker.to_tensor(k1).to(conv1.kernel)
    spyker.to_tensor(k2).to(conv2.kernel)
    conv1.stdpconfig = [spyker.STDPConfig(0.004, -0.003)]
    conv2.stdpconfig = [spyker.STDPConfig(0.004, -0.003)]

    # train1 (examples/kheradpisheh_mnist_dense.py:62-64)
    v1 = conv1(x)
    margin1 = float(np.abs(v1.astype(np.float64) - th1).min())
    out1 = spyker.inhibit(spyker.threshold(v1.copy(), th1))
    w1 = spyker.convwta(out1, 2, 5)
    s1 = spyker.fire(out1)
    conv1.stdp(x, w1, s1)
    k1_after = spyker.to_numpy(conv1.kernel).copy()
    # the same step from the numpy formulas (sequential f32 conv matches oneDNN here; see conv_fire.json)
    r1 = conv_np_seq_f32(x, k1, (2, 2, 2, 2))
    assert same(r1, v1)
    r_out1 = inhibit_np(np.where(r1 <= np.float32(th1), np.float32(0), r1))
    assert same(r_out1, out1) and jwinners(w1) == convwta_np(r_out1, (2, 2), 5)
    r_k1, _ = stdp_np(x, k1, (r_out1 > 0).astype(np.uint8), [cfg_dict(conv1.stdpconfig[0])], jwinners(w1), (1, 1), (2,) * 4)
    assert same(r_k1, k1_after)

    # train2 with the updated layer 1 (examples/kheradpisheh_mnist_dense.py:71-74)
    a = spyker.pool(spyker.fire(conv1(x), th1), 2, pad=1)            # [2, 15, 4, 7, 7]
    a_before = a.copy()
    v2 = conv2(spyker.inhibit(a))                                     # inhibit works in place: a is changed
    assert not same(a, a_before)
    margin2 = float(np.abs(v2.astype(np.float64) - th2).min())
    out2 = spyker.inhibit(spyker.threshold(v2.copy(), th2))
    w2 = spyker.convwta(out2, 1, 8)
    s2 = spyker.fire(out2)
    conv2.stdp(a, w2, s2)                                             # STDP sees the inhibited input
    k2_after = spyker.to_numpy(conv2.kernel).copy()
    r_k2_inh, _ = stdp_np(a, k2, s2, [cfg_dict(conv2.stdpconfig[0])], jwinners(w2), (1, 1), (1,) * 4)
    r_k2_raw, _ = stdp_np(a_before, k2, s2, [cfg_dict(conv2.stdpconfig[0])], jwinners(w2), (1, 1), (1,) * 4)
    assert same(r_k2_inh, k2_after) and not same(r_k2_raw, k2_after)

    # features (examples/kheradpisheh_mnist_dense.py:76-79): spike-any over time per map location
    f = spyker.pool(spyker.fire(conv1(x), th1), 2, pad=1)
    f = spyker.pool(spyker.fire(conv2(f), th2), 2, pad=1)
    feats = f.max(axis=1).reshape(f.shape[0], -1)
    write("layers.json", {
        "block": "composition: one Kheradpisheh layer-1 step, one layer-2 step and the feature readout (2 images)",
        "calls": ["x = spyker.code(thresholded_dog, 15)",
                  "out1 = spyker.inhibit(spyker.threshold(conv1(x), 10)); w1 = spyker.convwta(out1, 2, 5)",
                  "conv1.stdp(x, w1, spyker.fire(out1))",
                  "a = spyker.pool(spyker.fire(conv1(x), 10), 2, pad=1)",
                  "out2 = spyker.inhibit(spyker.threshold(conv2(spyker.inhibit(a)), 1)); w2 = spyker.convwta(out2, 1, 8)",
                  "conv2.stdp(a, w2, spyker.fire(out2))  # a was inhibited in place",
                  "f = spyker.pool(spyker.fire(conv2(spyker.pool(spyker.fire(conv1(x), 10), 2, pad=1)), 1), 2, pad=1)",
                  "features = f.max(axis=1).reshape(B, -1)"],
        "source": ["examples/kheradpisheh_mnist_dense.py:43-79"],
        "note": ("The examples' composition at toy size: conv1 2->4 (5x5, pad 2, theta 10), conv2 4->6 (2x2, pad 1, "
                 "theta 1), weights f32(N(0.8, 0.05)), rates (0.004, -0.003), stabilizer on. Waves are given as "
                 "first-spike-time maps (T = 15 = never) to keep the file small: scatter them to get the wave. The "
                 "layer-2 STDP reads the INHIBITED pooled wave (inhibit is in place; checked: the un-inhibited wave "
                 "gives a different kernel), while the feature pass does not inhibit. Potentials go through oneDNN "
                 "(tolerance 1e-6 relative); every spike and winner decision has a margin far above it "
                 "(threshold_margin1/2), and on this machine a sequential f32 conv reproduced Spyker exactly, so "
                 "the chain was re-derived bit for bit by the script. features: u8 [B, 6*5*5]."),
        "T": t, "thresholds": [th1, th2], "input_first_spike": ji(spyker.gather(x)),
        "conv1_kernel": jf(k1), "conv1_out_first_spike": ji(spyker.gather(s1)), "conv1_winners": jwinners(w1),
        "conv1_kernel_after": jf(k1_after), "threshold_margin1": margin1,
        "pooled_first_spike": ji(spyker.gather(a_before)), "pooled_inhibited_first_spike": ji(spyker.gather(a)),
        "conv2_kernel": jf(k2), "conv2_out_first_spike": ji(spyker.gather(s2)), "conv2_winners": jwinners(w2),
        "conv2_kernel_after": jf(k2_after), "threshold_margin2": margin2, "features": ji(feats),
    })


def main():
    dog = make_dog()
    make_log()
    make_gabor()
    make_code(dog)
    make_conv_fire()
    make_inhibit()
    make_wta()
    make_pool()
    make_infinite()
    make_stdp()
    make_rstdp()
    make_schedule()
    make_layers(dog)
    total = sum(os.path.getsize(os.path.join(HERE, f)) for f in os.listdir(HERE) if f.endswith(".json"))
    print(f"wrote {len([f for f in os.listdir(HERE) if f.endswith('.json')])} files, {total} bytes, "
          f"spyker {SPYKER_VERSION}, oneDNN {DNNL_VERSION}")


if __name__ == "__main__":
    main()
