#!/usr/bin/env python3
"""Reference vectors for classic trace STDP from SpikingJelly 2.0.0's `STDPLearner` (issue 19).

Writes `linear.json` and `conv.json` next to this script: the inputs, the output spikes of the
real forward pass (synapse + IFNode), the learner's traces and `delta_w`. The script also
re-implements the rule in numpy from the formulas in README.md and asserts that it reproduces
SpikingJelly: bit for bit for the linear rule and the traces, and within the stated tolerance
for the convolution, whose reduction order is torch's own. A change of SpikingJelly's
behaviour therefore stops the script instead of silently changing a vector.

Usage (re-executes itself in the venv when spikingjelly is not importable):
    python3 tests/vectors/spikingjelly_stdp/make_vectors.py
The venv: `python3 -m venv /work/.venvs/sj && /work/.venvs/sj/bin/pip install torch==2.15.0
"numpy<2.4" spikingjelly==2.0.0` (set SJ_VENV to use another one). CPU only, one thread,
deterministic: a second run rewrites the same bytes.
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
VENV = os.environ.get("SJ_VENV", "/work/.venvs/sj")

# One thread: torch's work split (and so any reduction order) must not depend on the machine.
os.environ["OMP_NUM_THREADS"] = "1"

try:
    import numpy as np
    import torch
    import spikingjelly
    from spikingjelly.activation_based import functional, layer, learning, neuron
except ImportError:
    py = os.path.join(VENV, "bin", "python")
    if os.path.abspath(sys.executable) != os.path.abspath(py) and os.path.exists(py):
        os.execv(py, [py, os.path.abspath(__file__)] + sys.argv[1:])
    sys.exit(f"spikingjelly is not importable and {py} does not exist: see the README "
             f"(or set SJ_VENV)")

torch.set_num_threads(1)
TORCH_VERSION = torch.__version__.split("+")[0]
SJ_VERSION = getattr(spikingjelly, "__version__", None)
if SJ_VERSION is None:
    from importlib.metadata import version
    SJ_VERSION = version("spikingjelly")
assert TORCH_VERSION == "2.15.0", TORCH_VERSION
assert SJ_VERSION == "2.0.0", SJ_VERSION

SOURCE = ("spikingjelly/activation_based/learning/plasticity.py (STDPLearner._single_step, "
          "STDPLearner.step, _padded_conv_input, _accumulate_weight_gradient) and "
          "spikingjelly/activation_based/functional/learning.py (stdp_linear_step, "
          "stdp_conv2d_step), spikingjelly 2.0.0 from PyPI")

LAYOUT_NOTE = (
    "Every tensor is {\"shape\": [...], \"data\": [flat row-major list]}. Spike trains are "
    "[T, B, ...] (time first, as SpikingJelly's step_mode='m'), 0/1 ints. f32 values are "
    "printed as the exact f64 value of the f32 (parse as f64, cast to f32: same bits). Weights "
    "and delta_w are [out, in] (linear) or [C_out, C_in, K_h, K_w] (conv). trace_pre / "
    "trace_post [t] are the traces after step t's update, i.e. the values the weight term of "
    "step t reads. The conv trace_pre is over the zero-padded input [T, B, C_in, H + 2p, W + 2p], "
    "as SpikingJelly keeps it. Computed on the CPU in f32 with one thread.")

RNG = np.random.RandomState(19)  # issue 19; every input below is drawn from this stream in order


# ------------------------------------------------------------------------------------------------
# JSON helpers
# ------------------------------------------------------------------------------------------------
def jf(a):
    a = np.asarray(a, dtype=np.float32)
    return {"shape": list(a.shape), "data": a.astype(np.float64).ravel().tolist()}


def jexact(a):
    """An f64 array (not f32-representable): the exact value of a sum, for tolerance checks."""
    a = np.asarray(a, dtype=np.float64)
    return {"shape": list(a.shape), "data": a.ravel().tolist()}


def js(a):
    a = np.asarray(a)
    assert np.all((a == 0) | (a == 1)), "spikes must be 0/1"
    return {"shape": list(a.shape), "data": a.astype(np.int64).ravel().tolist()}


def write(name, doc, cases):
    head = ["spikingjelly", "torch", "block", "calls", "note", "layout_note", "source", "tolerance"]
    keys = [k for k in head if k in doc] + sorted(k for k in doc if k not in head)
    dump = lambda v: json.dumps(v, separators=(",", ":"), allow_nan=False)
    lines = ["{"]
    for k in keys:
        lines.append(f" {json.dumps(k)}: {dump(doc[k])},")
    lines.append(' "cases": {')
    for i, (cname, case) in enumerate(cases):
        comma = "," if i + 1 < len(cases) else ""
        lines.append(f"  {json.dumps(cname)}: {dump(case)}{comma}")
    lines.append(" }")
    lines.append("}")
    with open(os.path.join(HERE, name), "w") as f:
        f.write("\n".join(lines) + "\n")


def t32(a):
    return torch.from_numpy(np.ascontiguousarray(np.asarray(a, dtype=np.float32)))


def n32(t):
    return t.detach().cpu().numpy().astype(np.float32, copy=True)


# ------------------------------------------------------------------------------------------------
# The weight modulations f_pre / f_post, each in torch (given to SpikingJelly) and numpy (the
# re-implementation), evaluated in f32 in the same order.
# ------------------------------------------------------------------------------------------------
def modulation(kind):
    """(f_pre, f_post, f_pre_np, f_post_np, description)."""
    if kind == "identity":  # SpikingJelly's default: f(w) = w for both
        ident = lambda w: w
        return ident, ident, ident, ident, "f_pre(w) = w, f_post(w) = w (SpikingJelly's default)"
    if kind == "soft_bound":  # stdp_mnist.py's form with ltp = 1
        return (lambda w: w, lambda w: 1 - w,
                lambda w: w, lambda w: np.float32(1) - w,
                "f_pre(w) = w, f_post(w) = 1 - w (stdp_mnist.py's soft bounds with ltp = 1)")
    if kind == "soft_bound_ltp":  # stdp_mnist.py's form: ltp * w, ltp * (1 - w)
        ltp = 0.01
        l32 = np.float32(ltp)
        return (lambda w: ltp * w, lambda w: ltp * (1 - w),
                lambda w: l32 * w, lambda w: l32 * (np.float32(1) - w),
                "f_pre(w) = 0.01 * w, f_post(w) = 0.01 * (1 - w) (stdp_mnist.py's form, ltp = 0.01; "
                "0.01 is rounded to f32 first, 1 - w is rounded before the product)")
    if kind == "additive":
        a_pre, a_post = 0.0105, 0.01
        return (lambda w: torch.full_like(w, a_pre), lambda w: torch.full_like(w, a_post),
                lambda w: np.full(w.shape, np.float32(a_pre), np.float32),
                lambda w: np.full(w.shape, np.float32(a_post), np.float32),
                "f_pre(w) = 0.0105, f_post(w) = 0.01 (additive: constants, rounded to f32)")
    raise ValueError(kind)


# ------------------------------------------------------------------------------------------------
# numpy re-implementation of README.md's formulas
# ------------------------------------------------------------------------------------------------
def trace_step(trace, spike, tau):
    """trace - trace / tau + spike, in f32, left to right (true division by the f32 tau)."""
    return (trace - trace / np.float32(tau)) + spike


def linear_np(pre, post, w, tau_pre, tau_post, f_pre, f_post, tr_pre, tr_post):
    """One sequence [T, B, *]. Returns (delta_w, traces_pre [T..], traces_post [T..]) in f32."""
    dw = np.zeros_like(w)
    tps, tqs = [], []
    for t in range(pre.shape[0]):
        tr_pre = trace_step(tr_pre, pre[t], tau_pre)
        tr_post = trace_step(tr_post, post[t], tau_post)
        dep = np.zeros_like(w)  # sum_b tr_post[b, o] * pre[b, i], b in order
        pot = np.zeros_like(w)  # sum_b tr_pre[b, i] * post[b, o]
        for b in range(pre.shape[1]):
            dep = dep + tr_post[b][:, None] * pre[t, b][None, :]
            pot = pot + tr_pre[b][None, :] * post[t, b][:, None]
        dw = dw + ((-f_pre(w)) * dep + f_post(w) * pot)
        tps.append(tr_pre)
        tqs.append(tr_post)
    return dw, np.stack(tps), np.stack(tqs)


def linear_f64(pre, post, w, tps, tqs, f_pre, f_post):
    """The same sum in f64 from the f32 traces and f32 f(w): the exact value up to 1e-16."""
    fp, fq = f_pre(w).astype(np.float64), f_post(w).astype(np.float64)
    dep = np.einsum("tbo,tbi->oi", tqs.astype(np.float64), pre.astype(np.float64))
    pot = np.einsum("tbi,tbo->oi", tps.astype(np.float64), post.astype(np.float64))
    return -fp * dep + fq * pot


def conv_np(pre, post, w, stride, pad, tau_pre, tau_post, f_pre, f_post, tr_pre, tr_post):
    """One sequence [T, B, C, H, W]: traces in f32 (bit-exact), the sums in f64.

    Returns (delta_w in f64, traces_pre over the padded input, traces_post)."""
    k_h, k_w = w.shape[2:]
    pre_p = np.pad(pre, ((0, 0), (0, 0), (0, 0), (pad, pad), (pad, pad)))
    h_out, w_out = post.shape[3:]
    dw = np.zeros(w.shape, np.float64)
    tps, tqs = [], []
    for t in range(pre.shape[0]):
        tr_pre = trace_step(tr_pre, pre_p[t], tau_pre)
        tr_post = trace_step(tr_post, post[t], tau_post)
        tq64, s_post = tr_post.astype(np.float64), post[t].astype(np.float64)
        for kh in range(k_h):
            for kw in range(k_w):
                win = (slice(None), slice(None),
                       slice(kh, kh + stride * (h_out - 1) + 1, stride),
                       slice(kw, kw + stride * (w_out - 1) + 1, stride))
                s_pre = pre_p[t][win].astype(np.float64)
                tp = tr_pre[win].astype(np.float64)
                dep = np.einsum("boyx,biyx->oi", tq64, s_pre)
                pot = np.einsum("biyx,boyx->oi", tp, s_post)
                w_hw = w[:, :, kh, kw]
                dw[:, :, kh, kw] += (-f_pre(w_hw).astype(np.float64) * dep
                                     + f_post(w_hw).astype(np.float64) * pot)
        tps.append(tr_pre)
        tqs.append(tr_post)
    return dw, np.stack(tps), np.stack(tqs)


def if_np(current, v_th=1.0):
    """IFNode, hard reset to 0, in f32: H = V + X, S = H >= v_th, V = S ? 0 : H.

    Returns (spikes, the smallest |H - v_th| seen: how far the decisions are from the edge)."""
    v = np.zeros(current.shape[1:], np.float32)
    spikes, margin = [], np.inf
    for x in current:
        h = v + x
        s = (h >= np.float32(v_th)).astype(np.float32)
        margin = min(margin, float(np.abs(h.astype(np.float64) - v_th).min()))
        v = np.where(s == 1, np.float32(0), h)
        spikes.append(s)
    return np.stack(spikes), margin


def spikes(shape, p):
    return (RNG.rand(*shape) < p).astype(np.float32)


# ------------------------------------------------------------------------------------------------
# Linear: nn.Linear(6, 4, bias=False) + IFNode, step_mode='m'
# ------------------------------------------------------------------------------------------------
T_LIN, B_LIN, N_IN, N_OUT = 8, 3, 6, 4


def linear_case(name, w, seqs, tau_pre, tau_post, kind, on_grad=None):
    """Runs SpikingJelly on each sequence of `seqs` (step() after each, no reset between: the
    traces persist), checks it against numpy, and returns the case's JSON."""
    f_pre, f_post, f_pre_np, f_post_np, f_desc = modulation(kind)

    # The real thing: multi-step network and learner, one step() per sequence.
    net = torch.nn.Sequential(torch.nn.Linear(N_IN, N_OUT, bias=False),
                              neuron.IFNode(step_mode="m"))
    net[0].weight.data.copy_(t32(w))
    learner = learning.STDPLearner("m", net[0], net[1], tau_pre, tau_post, f_pre=f_pre, f_post=f_post)
    # The same in single-step mode, stepped every time step, to read SpikingJelly's own traces.
    net_s = torch.nn.Sequential(torch.nn.Linear(N_IN, N_OUT, bias=False), neuron.IFNode(step_mode="s"))
    net_s[0].weight.data.copy_(t32(w))
    learner_s = learning.STDPLearner("s", net_s[0], net_s[1], tau_pre, tau_post, f_pre=f_pre, f_post=f_post)

    out = {"tau_pre": tau_pre, "tau_post": tau_post, "modulation": kind, "f": f_desc,
           "weight": jf(w), "sequences": []}
    tr_pre = np.zeros((B_LIN, N_IN), np.float32)
    tr_post = np.zeros((B_LIN, N_OUT), np.float32)
    for seq_i, pre in enumerate(seqs):
        # A new sample: the neurons start from rest; the learner's traces are not reset.
        functional.reset_net(net)
        functional.reset_net(net_s)
        with torch.no_grad():
            post = n32(net(t32(pre)))
        if on_grad is None:
            dw = n32(learner.step(on_grad=False))
        else:
            net[0].weight.grad = None
            learner.step(on_grad=True, scale=on_grad["scale"])
            grad = n32(net[0].weight.grad)
            opt = torch.optim.SGD(net[0].parameters(), lr=on_grad["lr"])
            w_before = n32(net[0].weight)
            opt.step()
            w_after = n32(net[0].weight)
            net[0].weight.data.copy_(t32(w_before))  # keep the forward weights of the case fixed

        # Single-step run: same spikes, same traces, and the per-step dw sum to the same bits.
        dw_s = np.zeros_like(w)
        tps_sj, tqs_sj = [], []
        for t in range(T_LIN):
            with torch.no_grad():
                post_t = n32(net_s(t32(pre[t])))
            assert np.array_equal(post_t, post[t]), (name, "s/m spikes differ")
            dw_s = dw_s + n32(learner_s.step(on_grad=False))
            tps_sj.append(n32(learner_s.trace_pre))
            tqs_sj.append(n32(learner_s.trace_post))

        # numpy re-implementation of the README (bit for bit).
        x = np.einsum("tbi,oi->tbo", pre.astype(np.float64), w.astype(np.float64))
        dw_np, tps, tqs = linear_np(pre, post, w, tau_pre, tau_post, f_pre_np, f_post_np, tr_pre, tr_post)
        tr_pre, tr_post = tps[-1], tqs[-1]
        assert np.array_equal(dw_s, dw_np), (name, seq_i, "s-mode sum", np.abs(dw_s - dw_np).max())
        if on_grad is None:
            assert np.array_equal(dw, dw_np), (name, seq_i, np.abs(dw - dw_np).max())
        else:
            # step() scales the summed update in f32, then weight.grad = -delta_w.
            assert np.array_equal(grad, -(dw_np * np.float32(on_grad["scale"]))), name
            lr32 = np.float32(on_grad["lr"])
            # SGD is weight.add_(grad, alpha=-lr): torch's CPU kernel fuses it (one rounding).
            fused = (w.astype(np.float64) - np.float64(lr32) * grad.astype(np.float64)).astype(np.float32)
            assert np.array_equal(w_after, fused), (name, "SGD step")
        assert np.array_equal(np.stack(tps_sj), tps) and np.array_equal(np.stack(tqs_sj), tqs), name
        assert np.array_equal(n32(learner.trace_pre), tps[-1]), name
        assert np.array_equal(n32(learner.trace_post), tqs[-1]), name
        # The forward pass itself: an f32 IF on the exact current (rounded to f32) gives the same
        # spikes, far from the threshold.
        s64, margin = if_np(x.astype(np.float32))
        assert np.array_equal(s64, post), (name, "IF re-simulation differs")
        assert margin > 1e-4, (name, "a spike hinges on the current's rounding", margin)
        f64 = linear_f64(pre, post, w, tps, tqs, f_pre_np, f_post_np)
        seq = {"in_spike": js(pre), "out_spike": js(post), "trace_pre": jf(tps), "trace_post": jf(tqs),
               "delta_w": jf(dw_np), "delta_w_exact": jexact(f64),
               "max_abs_delta_w": float(np.abs(dw_np).max()),
               "sj_vs_exact_max_abs": float(np.abs(dw_np.astype(np.float64) - f64).max()),
               "if_threshold_margin": margin}
        if on_grad is not None:
            seq.update({"scale": on_grad["scale"], "lr": on_grad["lr"], "grad": jf(grad),
                        "weight_after_sgd": jf(w_after)})
        out["sequences"].append(seq)
        print(f"linear/{name} seq {seq_i}: out spikes {int(post.sum())}/{post.size}, "
              f"max|dw| {np.abs(dw_np).max():.4g}, SJ-exact {seq['sj_vs_exact_max_abs']:.3g}, "
              f"IF margin {margin:.3g}")
    learner.close()
    learner_s.close()
    return out


def make_linear():
    w = RNG.uniform(0.0, 1.0, (N_OUT, N_IN)).astype(np.float32)
    seq_a = spikes((T_LIN, B_LIN, N_IN), 0.3)
    seq_b = spikes((T_LIN, B_LIN, N_IN), 0.3)
    cases = [
        ("tau2", linear_case("tau2", w, [seq_a], 2.0, 2.0, "identity")),
        ("tau4_3", linear_case("tau4_3", w, [seq_a], 4.0, 3.0, "identity")),
        ("soft_bound", linear_case("soft_bound", w, [seq_a], 2.0, 2.0, "soft_bound")),
        ("soft_bound_ltp", linear_case("soft_bound_ltp", w, [seq_a], 4.0, 3.0, "soft_bound_ltp")),
        ("additive", linear_case("additive", w, [seq_a], 4.0, 3.0, "additive")),
        ("two_sequences", linear_case("two_sequences", w, [seq_a, seq_b], 4.0, 3.0, "identity")),
        ("on_grad_sgd", linear_case("on_grad_sgd", w, [seq_a], 4.0, 3.0, "identity",
                                    on_grad={"scale": 0.25, "lr": 0.1})),
    ]
    check_records_and_reset(w, seq_a, seq_b)
    doc = {
        "spikingjelly": SJ_VERSION, "torch": TORCH_VERSION + " (CPU)",
        "block": "STDPLearner on nn.Linear(6, 4, bias=False) + neuron.IFNode(step_mode='m')",
        "calls": ("net = nn.Sequential(nn.Linear(6, 4, bias=False), neuron.IFNode(step_mode='m')); "
                  "learner = learning.STDPLearner('m', net[0], net[1], tau_pre, tau_post, f_pre, f_post); "
                  "for seq in sequences: out_spike = net(in_spike); delta_w = learner.step(on_grad=False) "
                  "(no reset between sequences: the traces persist). on_grad_sgd: "
                  "learner.step(on_grad=True, scale=0.25); grad = weight.grad; SGD(lr=0.1).step()"),
        "note": ("IFNode: v_threshold 1, hard reset to 0, spike when H >= 1; the neurons are reset "
                 "before every sequence, the learner is not. trace_pre/trace_post are SpikingJelly's "
                 "own (read from a step_mode='s' twin after every step). delta_w is SpikingJelly's "
                 "f32 result, bit for bit the numpy re-implementation in README.md. delta_w_exact: "
                 "the same formulas with the f32 traces and f32 f(w) but f64 sums and products (f64 "
                 "values, not f32); sj_vs_exact_max_abs: |delta_w - delta_w_exact|. "
                 "if_threshold_margin: the smallest |H - 1| of the forward pass. on_grad_sgd: "
                 "delta_w is unscaled; grad = -(scale * delta_w) (the product rounded to f32), "
                 "weight_after_sgd = weight - lr * grad rounded once (torch's fused add_ with "
                 "alpha = -lr)."),
        "layout_note": LAYOUT_NOTE, "source": SOURCE,
        "tolerance": ("delta_w, traces and spikes bit-exact in f32 with README.md's order of "
                      "operations; with any other summation order |a - delta_w_exact| <= "
                      "1e-6 * max(1, |delta_w_exact|)"),
        "shapes": {"T": T_LIN, "B": B_LIN, "in": N_IN, "out": N_OUT},
    }
    write("linear.json", doc, cases)


def check_records_and_reset(w, seq_a, seq_b):
    """Two forward calls before one step() equal two step()s summed; reset() zeroes the traces."""
    f_pre, f_post, *_ = modulation("identity")

    def fresh():
        net = torch.nn.Sequential(torch.nn.Linear(N_IN, N_OUT, bias=False), neuron.IFNode(step_mode="m"))
        net[0].weight.data.copy_(t32(w))
        return net, learning.STDPLearner("m", net[0], net[1], 4.0, 3.0, f_pre=f_pre, f_post=f_post)

    net, lr = fresh()
    with torch.no_grad():
        net(t32(seq_a))
        net(t32(seq_b))
    both = n32(lr.step(on_grad=False))
    net2, lr2 = fresh()
    with torch.no_grad():
        net2(t32(seq_a))
    d_a = n32(lr2.step(on_grad=False))
    with torch.no_grad():
        net2(t32(seq_b))
    d_b = n32(lr2.step(on_grad=False))
    assert np.array_equal(both, d_a + d_b), "two records in one step() != two steps summed"
    # reset() clears the traces (and the neuron is reset separately): seq_b alone again.
    lr2.reset()
    functional.reset_net(net2)
    net3, lr3 = fresh()
    with torch.no_grad():
        net2(t32(seq_b))
        net3(t32(seq_b))
    assert np.array_equal(n32(lr2.step(on_grad=False)), n32(lr3.step(on_grad=False))), "reset"
    for x in (lr, lr2, lr3):
        x.close()


# ------------------------------------------------------------------------------------------------
# Conv: layer.Conv2d(2, 3, 3, padding=1, stride, bias=False, step_mode='m') + IFNode
# ------------------------------------------------------------------------------------------------
T_CONV, B_CONV, C_IN, C_OUT, SIZE, K, PAD = 5, 2, 2, 3, 6, 3, 1
CONV_TOL = 1e-6  # relative: |a - b| <= CONV_TOL * max(1, |b|)


def conv_case(name, w, pre, stride, tau_pre, tau_post, kind):
    f_pre, f_post, f_pre_np, f_post_np, f_desc = modulation(kind)
    conv = layer.Conv2d(C_IN, C_OUT, K, padding=PAD, stride=stride, bias=False, step_mode="m")
    net = torch.nn.Sequential(conv, neuron.IFNode(step_mode="m"))
    conv.weight.data.copy_(t32(w))
    with torch.no_grad():
        current = n32(conv(t32(pre)))  # before the learner's hooks exist
    learner = learning.STDPLearner("m", conv, net[1], tau_pre, tau_post, f_pre=f_pre, f_post=f_post)
    net_s = torch.nn.Sequential(
        layer.Conv2d(C_IN, C_OUT, K, padding=PAD, stride=stride, bias=False, step_mode="s"),
        neuron.IFNode(step_mode="s"))
    net_s[0].weight.data.copy_(t32(w))
    learner_s = learning.STDPLearner("s", net_s[0], net_s[1], tau_pre, tau_post, f_pre=f_pre, f_post=f_post)

    with torch.no_grad():
        post = n32(net(t32(pre)))
    dw = n32(learner.step(on_grad=False))
    tps_sj, tqs_sj = [], []
    for t in range(T_CONV):
        with torch.no_grad():
            assert np.array_equal(n32(net_s(t32(pre[t]))), post[t]), (name, "s/m spikes differ")
        learner_s.step(on_grad=False)
        tps_sj.append(n32(learner_s.trace_pre))
        tqs_sj.append(n32(learner_s.trace_post))

    zeros_pre = np.zeros((B_CONV, C_IN, SIZE + 2 * PAD, SIZE + 2 * PAD), np.float32)
    zeros_post = np.zeros(post.shape[1:], np.float32)
    dw64, tps, tqs = conv_np(pre, post, w, stride, PAD, tau_pre, tau_post, f_pre_np, f_post_np,
                             zeros_pre, zeros_post)
    assert np.array_equal(np.stack(tps_sj), tps) and np.array_equal(np.stack(tqs_sj), tqs), name
    assert np.array_equal(n32(learner.trace_pre), tps[-1]), name
    err = float(np.abs(dw.astype(np.float64) - dw64).max())
    rel = float((np.abs(dw.astype(np.float64) - dw64) / np.maximum(1, np.abs(dw64))).max())
    assert rel <= CONV_TOL, (name, rel)
    s_np, margin = if_np(current)
    assert np.array_equal(s_np, post), (name, "IF re-simulation differs")
    # The conv current against an exact f64 convolution: the forward is not the point here, but
    # the spikes must not hinge on torch's summation order (margin >> the current's error).
    pre_p = np.pad(pre, ((0, 0), (0, 0), (0, 0), (PAD, PAD), (PAD, PAD))).astype(np.float64)
    h_out = post.shape[3]
    cur64 = np.zeros(post.shape, np.float64)
    for kh in range(K):
        for kw in range(K):
            win = pre_p[..., kh:kh + stride * (h_out - 1) + 1:stride, kw:kw + stride * (h_out - 1) + 1:stride]
            cur64 += np.einsum("tbiyx,oi->tboyx", win, w[:, :, kh, kw].astype(np.float64))
    cur_err = float(np.abs(current - cur64).max())
    assert cur_err < margin / 10, (name, cur_err, margin)
    print(f"conv/{name}: out spikes {int(post.sum())}/{post.size}, max|dw| {np.abs(dw).max():.4g}, "
          f"SJ-f64 {err:.3g} (relative {rel:.3g}), current error {cur_err:.3g}, IF margin {margin:.3g}")
    learner.close()
    learner_s.close()
    return {"stride": stride, "padding": PAD, "tau_pre": tau_pre, "tau_post": tau_post,
            "modulation": kind, "f": f_desc, "weight": jf(w), "in_spike": js(pre),
            "out_spike": js(post), "trace_pre": jf(tps), "trace_post": jf(tqs), "delta_w": jf(dw),
            "delta_w_exact": jexact(dw64), "max_abs_delta_w": float(np.abs(dw).max()),
            "sj_vs_exact_max_abs": err, "sj_vs_exact_max_rel": rel,
            "if_threshold_margin": margin}


def make_conv():
    w = RNG.uniform(0.0, 0.3, (C_OUT, C_IN, K, K)).astype(np.float32)
    pre = spikes((T_CONV, B_CONV, C_IN, SIZE, SIZE), 0.3)
    cases = [
        ("stride1", conv_case("stride1", w, pre, 1, 2.0, 2.0, "identity")),
        ("stride2", conv_case("stride2", w, pre, 2, 2.0, 2.0, "identity")),
        ("stride1_soft_bound_tau4_3", conv_case("stride1_soft_bound_tau4_3", w, pre, 1, 4.0, 3.0, "soft_bound")),
    ]
    doc = {
        "spikingjelly": SJ_VERSION, "torch": TORCH_VERSION + " (CPU)",
        "block": ("STDPLearner on layer.Conv2d(2, 3, kernel_size=3, padding=1, stride, bias=False, "
                  "step_mode='m') + neuron.IFNode(step_mode='m')"),
        "calls": ("net = nn.Sequential(layer.Conv2d(2, 3, 3, padding=1, stride=s, bias=False, "
                  "step_mode='m'), neuron.IFNode(step_mode='m')); learner = "
                  "learning.STDPLearner('m', net[0], net[1], tau_pre, tau_post, f_pre, f_post); "
                  "out_spike = net(in_spike); delta_w = learner.step(on_grad=False)"),
        "note": ("IFNode: v_threshold 1, hard reset to 0, spike when H >= 1. trace_pre/trace_post "
                 "are SpikingJelly's own (read from a step_mode='s' twin after every step). delta_w "
                 "is SpikingJelly's f32 result. delta_w_exact: README.md's formulas with the f32 "
                 "traces and f32 f(w) but f64 sums and products (f64 values, not f32); "
                 "sj_vs_exact_max_abs / _rel: |delta_w - delta_w_exact| (relative: divided by "
                 "max(1, |delta_w_exact|)). if_threshold_margin: the smallest |H - 1| of the "
                 "forward pass (far above the f32 error of the convolution)."),
        "layout_note": LAYOUT_NOTE, "source": SOURCE,
        "tolerance": (f"|a - delta_w_exact| <= {CONV_TOL} * max(1, |delta_w_exact|) (torch's "
                      "reduction order over batch and positions is its own, so delta_w is not "
                      "bit-reproducible; traces and spikes are bit-exact)"),
        "shapes": {"T": T_CONV, "B": B_CONV, "C_in": C_IN, "C_out": C_OUT, "H": SIZE, "W": SIZE,
                   "K": K},
    }
    write("conv.json", doc, cases)


if __name__ == "__main__":
    make_linear()
    make_conv()
    print("wrote", ", ".join(sorted(f for f in os.listdir(HERE) if f.endswith(".json"))))
