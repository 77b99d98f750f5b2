//! The compiled backward pass of every built-in neuron model, every loss and every
//! surrogate against an independent reference: BPTT written by hand, in f64, from each
//! model's equations (docs/language.md §8), on a tiny 3 -> 4 -> 2 network (T = 8, batch 3).
//! The reference knows nothing of the compiler's SSA form or its symbolic derivatives: each
//! model's backward step below is the chain rule applied by hand to its update, spike and
//! reset, reset term included (or left out with `detach_reset`). Each test's weights are
//! the first deterministic draw on which no comparison lies within 1e-3 of flipping, so
//! f32 and f64 make the same spikes. A smooth stand-in of every model's update is checked
//! against central finite differences of the compiled forward pass as well, and each
//! surrogate pointwise.
//!
//! The models are in tests/in/train/grad/: a subfolder, so that tests/snapshots.rs and
//! tests/nvrtc.rs, which take every tests/in/train/*.snn, do not pin 30 more plans.

mod common;

use std::f64::consts::PI;

use common::grad::{self, max_abs, Tol};
use snn_runtime::plan::LossKind;
use snn_runtime::train::loss::{self, Reduce};
use snn_runtime::train::optim::Optimizer;
use snn_runtime::{Session, Tensor};

fn load(path: &str) -> Session {
    common::session_from_file(path, common::train_opts())
}

// ---------------------------------------------------------------------------------------
// Surrogates, as their reference frameworks define them.

#[derive(Clone, Copy, Debug, PartialEq)]
enum Sg {
    /// SpikingJelly `surrogate.ATan` (and snnTorch `atan`): `a/2 / (1 + (pi/2 a x)^2)`.
    Atan(f64),
    /// SpikingJelly `surrogate.Sigmoid`: `a sig(a x) (1 - sig(a x))`.
    Sigmoid(f64),
    /// snnTorch `fast_sigmoid(slope = a)`: `1 / (a |x| + 1)^2`.
    FastSigmoid(f64),
    /// SpikingJelly `surrogate.PiecewiseQuadratic`: `a - a^2 |x|` inside `|x| <= 1/a`, else 0.
    Triangle(f64),
    /// SpikingJelly `surrogate.Rect`: `a` inside `|x| < 1/(2a)`, else 0.
    Rectangle(f64),
}

impl Sg {
    fn d(self, x: f64) -> f64 {
        match self {
            Sg::Atan(a) => a / 2.0 / (1.0 + (PI / 2.0 * a * x).powi(2)),
            Sg::Sigmoid(a) => {
                let s = 1.0 / (1.0 + (-a * x).exp());
                a * s * (1.0 - s)
            }
            Sg::FastSigmoid(a) => 1.0 / (a * x.abs() + 1.0).powi(2),
            Sg::Triangle(a) => {
                if x.abs() > 1.0 / a {
                    0.0
                } else {
                    a - a * a * x.abs()
                }
            }
            Sg::Rectangle(a) => {
                if x.abs() < 0.5 / a {
                    a
                } else {
                    0.0
                }
            }
        }
    }
    /// Where the surrogate jumps or has a kink (the spike threshold, x = 0, is always
    /// avoided): the reference and the f32 kernel must not straddle one.
    fn kinks(self) -> Vec<f64> {
        match self {
            Sg::Triangle(a) => vec![-1.0 / a, 1.0 / a],
            Sg::Rectangle(a) => vec![-0.5 / a, 0.5 / a],
            _ => vec![],
        }
    }
}

// ---------------------------------------------------------------------------------------
// Neuron models: one step forward and, by hand, its adjoint.

#[derive(Clone, Copy, Debug, PartialEq)]
enum Reset {
    /// `v = v_reset` (Leaky: `reset_mechanism = zero`).
    Hard,
    /// `v = v - v_threshold` (Leaky: `subtract`).
    Soft,
    None,
}

#[derive(Clone, Copy, Debug)]
enum Neuron {
    If {
        thr: f64,
        vr: f64,
        reset: Reset,
    },
    Lif {
        tau: f64,
        thr: f64,
        vr: f64,
        decay_input: bool,
        reset: Reset,
    },
    Li {
        tau: f64,
        rest: f64,
        decay_input: bool,
    },
    Leaky {
        beta: f64,
        thr: f64,
        reset: Reset,
        delay: bool,
    },
    Cuba {
        ts: f64,
        tm: f64,
        thr: f64,
        vr: f64,
        reset: Reset,
    },
    /// examples/neurons/adaptive.snn
    Alif {
        tau: f64,
        tau_a: f64,
        thr: f64,
        beta: f64,
    },
}

/// One forward step of one neuron.
struct Fwd {
    /// The states after the step (after the reset).
    out: Vec<f64>,
    /// 1 or 0; `None` for a non-spiking model.
    spike: Option<f64>,
    /// `l - r` of every comparison the step made (spike, Leaky's delayed reset), so a test
    /// can check that f32 rounding cannot flip one.
    conds: Vec<f64>,
}

fn heaviside(x: f64) -> f64 {
    if x >= 0.0 {
        1.0
    } else {
        0.0
    }
}

/// SpikingJelly's reset after the update `v1`: the new `v` and its derivatives by `v1` and
/// by the spike `s`.
fn sj_reset(reset: Reset, v1: f64, s: f64, thr: f64, vr: f64) -> (f64, f64, f64) {
    match reset {
        // v = (1 - S) v1 + S v_reset
        Reset::Hard => ((1.0 - s) * v1 + s * vr, 1.0 - s, vr - v1),
        // v = v1 - S v_threshold
        Reset::Soft => (v1 - s * thr, 1.0, -thr),
        Reset::None => (v1, 1.0, 0.0),
    }
}

/// The leaky update `v + (I - (v - r)) / tau` (or `v - (v - r) / tau + I`): the value and
/// its derivatives by `v` and by `I`.
fn leak(v: f64, i: f64, tau: f64, rest: f64, decay_input: bool) -> (f64, f64, f64) {
    if decay_input {
        (v + (i - (v - rest)) / tau, 1.0 - 1.0 / tau, 1.0 / tau)
    } else {
        (v - (v - rest) / tau + i, 1.0 - 1.0 / tau, 1.0)
    }
}

impl Neuron {
    fn init(&self) -> Vec<f64> {
        match *self {
            Neuron::If { vr, .. } | Neuron::Lif { vr, .. } => vec![vr],
            Neuron::Li { rest, .. } => vec![rest],
            Neuron::Leaky { .. } => vec![0.0],
            Neuron::Cuba { vr, .. } => vec![0.0, vr],
            Neuron::Alif { .. } => vec![0.0, 0.0],
        }
    }

    fn spikes(&self) -> bool {
        !matches!(self, Neuron::Li { .. })
    }

    fn forward(&self, s: &[f64], i: f64) -> Fwd {
        match *self {
            Neuron::If { thr, vr, reset } => {
                let v1 = s[0] + i;
                let sp = heaviside(v1 - thr);
                let (v2, _, _) = sj_reset(reset, v1, sp, thr, vr);
                Fwd {
                    out: vec![v2],
                    spike: Some(sp),
                    conds: vec![v1 - thr],
                }
            }
            Neuron::Lif {
                tau,
                thr,
                vr,
                decay_input,
                reset,
            } => {
                let (v1, _, _) = leak(s[0], i, tau, vr, decay_input);
                let sp = heaviside(v1 - thr);
                let (v2, _, _) = sj_reset(reset, v1, sp, thr, vr);
                Fwd {
                    out: vec![v2],
                    spike: Some(sp),
                    conds: vec![v1 - thr],
                }
            }
            Neuron::Li {
                tau,
                rest,
                decay_input,
            } => Fwd {
                out: vec![leak(s[0], i, tau, rest, decay_input).0],
                spike: None,
                conds: vec![],
            },
            Neuron::Leaky {
                beta,
                thr,
                reset,
                delay,
            } => {
                let m = s[0];
                let r = f64::from(u8::from(m > thr));
                let m1 = match reset {
                    Reset::Soft => beta * m + i - r * thr,
                    Reset::Hard => beta * ((1.0 - r) * m) + i,
                    Reset::None => beta * m + i,
                };
                let f = f64::from(u8::from(m1 > thr));
                let m2 = match (delay, reset) {
                    (false, Reset::Soft) => m1 - (f - r) * thr,
                    (false, Reset::Hard) => m1 - (f - r) * m1,
                    _ => m1,
                };
                Fwd {
                    out: vec![m2],
                    spike: Some(f),
                    conds: vec![m - thr, m1 - thr],
                }
            }
            Neuron::Cuba {
                ts,
                tm,
                thr,
                vr,
                reset,
            } => {
                let i1 = s[0] - s[0] / ts + i;
                let v1 = s[1] + (i1 - (s[1] - vr)) / tm;
                let sp = heaviside(v1 - thr);
                let (v2, _, _) = sj_reset(reset, v1, sp, thr, vr);
                Fwd {
                    out: vec![i1, v2],
                    spike: Some(sp),
                    conds: vec![v1 - thr],
                }
            }
            Neuron::Alif {
                tau,
                tau_a,
                thr,
                beta,
            } => {
                let v1 = s[0] + (i - s[0]) / tau;
                let a1 = s[1] - s[1] / tau_a;
                let b = thr + beta * a1;
                let sp = heaviside(v1 - b);
                Fwd {
                    out: vec![v1 - sp * b, a1 + sp],
                    spike: Some(sp),
                    conds: vec![v1 - b],
                }
            }
        }
    }

    /// The adjoint of one step: from the adjoints of the states after it (`g_out`) and of
    /// its spike (`g_s`), those of the states before it and of the current.
    fn backward(
        &self,
        s: &[f64],
        i: f64,
        g_out: &[f64],
        g_s: f64,
        sg: Sg,
        detach: bool,
    ) -> (Vec<f64>, f64) {
        // The reset's dependence on the spike, unless detached.
        let keep = if detach { 0.0 } else { 1.0 };
        match *self {
            Neuron::If { thr, vr, reset } => {
                let v1 = s[0] + i;
                let sp = heaviside(v1 - thr);
                let (_, dv1, ds) = sj_reset(reset, v1, sp, thr, vr);
                let g_s = g_s + keep * ds * g_out[0];
                let g_v1 = dv1 * g_out[0] + g_s * sg.d(v1 - thr);
                (vec![g_v1], g_v1)
            }
            Neuron::Lif {
                tau,
                thr,
                vr,
                decay_input,
                reset,
            } => {
                let (v1, dv, di) = leak(s[0], i, tau, vr, decay_input);
                let sp = heaviside(v1 - thr);
                let (_, dv1, ds) = sj_reset(reset, v1, sp, thr, vr);
                let g_s = g_s + keep * ds * g_out[0];
                let g_v1 = dv1 * g_out[0] + g_s * sg.d(v1 - thr);
                (vec![dv * g_v1], di * g_v1)
            }
            Neuron::Li {
                tau,
                rest,
                decay_input,
            } => {
                let (_, dv, di) = leak(s[0], i, tau, rest, decay_input);
                (vec![dv * g_out[0]], di * g_out[0])
            }
            Neuron::Leaky {
                beta,
                thr,
                reset,
                delay,
            } => {
                // snnTorch detaches the delayed reset `r` (mem_reset), but not the spike in
                // the immediate reset (reset_delay = False), and has no detach_reset: the
                // setting changes nothing here.
                let m = s[0];
                let r = f64::from(u8::from(m > thr));
                let m1 = match reset {
                    Reset::Soft => beta * m + i - r * thr,
                    Reset::Hard => beta * ((1.0 - r) * m) + i,
                    Reset::None => beta * m + i,
                };
                let f = f64::from(u8::from(m1 > thr));
                let g2 = g_out[0];
                // m2 = m1 - (f - r) thr   or   m2 = m1 - (f - r) m1
                let (g_m1, g_f) = match (delay, reset) {
                    (false, Reset::Soft) => (g2, g_s - thr * g2),
                    (false, Reset::Hard) => ((1.0 - (f - r)) * g2, g_s - m1 * g2),
                    _ => (g2, g_s),
                };
                let g_m1 = g_m1 + g_f * sg.d(m1 - thr);
                let dm = match reset {
                    Reset::Hard => beta * (1.0 - r),
                    _ => beta,
                };
                (vec![dm * g_m1], g_m1)
            }
            Neuron::Cuba {
                ts,
                tm,
                thr,
                vr,
                reset,
            } => {
                let i1 = s[0] - s[0] / ts + i;
                let v1 = s[1] + (i1 - (s[1] - vr)) / tm;
                let sp = heaviside(v1 - thr);
                let (_, dv1, ds) = sj_reset(reset, v1, sp, thr, vr);
                let g_s = g_s + keep * ds * g_out[1];
                let g_v1 = dv1 * g_out[1] + g_s * sg.d(v1 - thr);
                let g_i1 = g_out[0] + g_v1 / tm;
                (vec![g_i1 * (1.0 - 1.0 / ts), g_v1 * (1.0 - 1.0 / tm)], g_i1)
            }
            Neuron::Alif {
                tau,
                tau_a,
                thr,
                beta,
            } => {
                // v1 = v + (I - v)/tau; a1 = a - a/tau_a; b = thr + beta a1;
                // S = H(v1 - b); v2 = v1 - S b; a2 = a1 + S.
                let v1 = s[0] + (i - s[0]) / tau;
                let a1 = s[1] - s[1] / tau_a;
                let b = thr + beta * a1;
                let sp = heaviside(v1 - b);
                let (g_v2, g_a2) = (g_out[0], g_out[1]);
                let g_s = g_s + keep * (-b * g_v2 + g_a2);
                let g_x = g_s * sg.d(v1 - b);
                let g_v1 = g_v2 + g_x;
                // a1 enters b (through the spike condition and the reset) and a2.
                let g_b = -sp * g_v2 - g_x;
                let g_a1 = g_a2 + beta * g_b;
                (
                    vec![g_v1 * (1.0 - 1.0 / tau), g_a1 * (1.0 - 1.0 / tau_a)],
                    g_v1 / tau,
                )
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The network and its loss, forward and backward, by hand.

#[derive(Clone, Copy, Debug, PartialEq)]
enum Loss {
    CeCounts,
    /// Cross-entropy of one state of the output layer (its index), reduced over time.
    CeTrace(Reduce, usize),
    Mse {
        on: f64,
        off: f64,
        groups: usize,
    },
    FirstSpike,
}

/// `rate(P, lambda, target)` on the hidden layer (0) or the output layer (1).
#[derive(Clone, Copy, Debug)]
struct Reg {
    layer: usize,
    lambda: f64,
    target: f64,
}

#[derive(Clone, Debug)]
struct Case {
    file: &'static str,
    hidden: Neuron,
    out: Neuron,
    /// Output neurons (classes times `groups` for mse).
    nc: usize,
    sg: Sg,
    detach: bool,
    loss: Loss,
    regs: Vec<Reg>,
    /// `input x: [3]` instead of `[T, 3]`.
    static_input: bool,
    /// The delay of `h2`.
    delay: usize,
    /// The output layer also reads `hs = dense(x, nc, bias = false)`.
    skip: bool,
}

const T: usize = 8;
const B: usize = 3;
const NIN: usize = 3;
const NH: usize = 4;
const LABELS: [usize; B] = [0, 1, 1];

/// One layer of neurons over the whole run, indexed `[t][b * n + j]`.
struct Layer {
    start: Vec<Vec<Vec<f64>>>,
    cur: Vec<Vec<f64>>,
    spike: Vec<Vec<f64>>,
    end: Vec<Vec<Vec<f64>>>,
    /// What the next layer reads: the spike, or the first state of a non-spiking model.
    val: Vec<Vec<f64>>,
}

fn run_layer(n: &Neuron, cur: Vec<Vec<f64>>, conds: &mut Vec<f64>) -> Layer {
    let width = cur[0].len();
    let mut state = vec![n.init(); width];
    let mut l = Layer {
        start: vec![],
        cur: vec![],
        spike: vec![],
        end: vec![],
        val: vec![],
    };
    for c in &cur {
        l.start.push(state.clone());
        let mut sp = vec![0.0; width];
        let mut val = vec![0.0; width];
        for k in 0..width {
            let f = n.forward(&state[k], c[k]);
            conds.extend(&f.conds);
            sp[k] = f.spike.unwrap_or(0.0);
            val[k] = f.spike.unwrap_or(f.out[0]);
            state[k] = f.out;
        }
        l.end.push(state.clone());
        l.spike.push(sp);
        l.val.push(val);
    }
    l.cur = cur;
    l
}

/// `y[t][b, n] = bias[n] + sum_k w[n, k] x[t - delay][b, k]`, zero for `t < delay`.
fn dense(x: &[Vec<f64>], w: &[f64], bias: Option<&[f64]>, n: usize, delay: usize) -> Vec<Vec<f64>> {
    let k = x[0].len() / B;
    (0..x.len())
        .map(|t| {
            if t < delay {
                return vec![0.0; B * n];
            }
            let xt = &x[t - delay];
            (0..B * n)
                .map(|o| {
                    let (b, j) = (o / n, o % n);
                    bias.map_or(0.0, |bias| bias[j])
                        + (0..k).map(|i| w[j * k + i] * xt[b * k + i]).sum::<f64>()
                })
                .collect()
        })
        .collect()
}

/// Weight and bias gradients of `dense`, and the gradient of its input.
fn dense_back(
    x: &[Vec<f64>],
    w: &[f64],
    g: &[Vec<f64>],
    n: usize,
    delay: usize,
) -> (Vec<f64>, Vec<f64>, Vec<Vec<f64>>) {
    let k = x[0].len() / B;
    let mut dw = vec![0.0; n * k];
    let mut db = vec![0.0; n];
    let mut dx = vec![vec![0.0; B * k]; g.len()];
    for t in delay..g.len() {
        for b in 0..B {
            for j in 0..n {
                let gy = g[t][b * n + j];
                db[j] += gy;
                for i in 0..k {
                    dw[j * k + i] += gy * x[t - delay][b * k + i];
                    dx[t - delay][b * k + i] += gy * w[j * k + i];
                }
            }
        }
    }
    (dw, db, dx)
}

/// Softmax cross-entropy of the test's labels, mean over the batch, and its gradient.
fn ce(logits: &[f64], c: usize) -> (f64, Vec<f64>) {
    grad::cross_entropy(logits, &LABELS, c)
}

struct Reference {
    hidden: Layer,
    out: Layer,
    /// Comparisons made by every step of every neuron (`l - r`).
    conds: Vec<f64>,
    loss: f64,
    /// dLoss/d(the output the loss reads), in the runtime's layout.
    loss_grad: Vec<f64>,
    /// In plan order: h1.weight, h1.bias, h2.weight, h2.bias (, hs.weight).
    grads: Vec<Vec<f64>>,
}

struct Weights {
    x: Vec<f64>,
    /// As [`Reference::grads`].
    w: Vec<Vec<f64>>,
}

impl Case {
    fn names(&self) -> Vec<&'static str> {
        let mut v = vec!["h1.weight", "h1.bias", "h2.weight", "h2.bias"];
        if self.skip {
            v.push("hs.weight");
        }
        v
    }

    fn inputs(&self, x: &[f64]) -> Vec<Vec<f64>> {
        if self.static_input {
            vec![x.to_vec(); T]
        } else {
            x.chunks(B * NIN).map(|c| c.to_vec()).collect()
        }
    }

    fn reference(&self, wt: &Weights) -> Reference {
        let nc = self.nc;
        let (w1, b1, w2, b2) = (&wt.w[0], &wt.w[1], &wt.w[2], &wt.w[3]);
        let xs = self.inputs(&wt.x);
        let mut conds = Vec::new();
        let hidden = run_layer(&self.hidden, dense(&xs, w1, Some(b1), NH, 0), &mut conds);
        let mut cur2 = dense(&hidden.val, w2, Some(b2), nc, self.delay);
        if self.skip {
            let skip = dense(&xs, &wt.w[4], None, nc, 0);
            for (c, s) in cur2.iter_mut().zip(skip) {
                c.iter_mut().zip(s).for_each(|(c, s)| *c += s);
            }
        }
        let out = run_layer(&self.out, cur2, &mut conds);

        // The loss and where its gradient enters the output layer.
        let mut g_spike2 = vec![vec![0.0; B * nc]; T];
        let n_states = self.out.init().len();
        let mut g_state2 = vec![vec![vec![0.0; n_states]; B * nc]; T];
        let counts = |l: &Layer, w: usize| -> Vec<f64> {
            (0..B * w)
                .map(|k| (0..T).map(|t| l.spike[t][k]).sum())
                .collect()
        };
        let (mut loss, loss_grad) = match self.loss {
            Loss::CeCounts => {
                let (l, g) = ce(&counts(&out, nc), nc);
                for gt in g_spike2.iter_mut() {
                    gt.copy_from_slice(&g);
                }
                (l, g)
            }
            Loss::CeTrace(reduce, state) => {
                let v = |t: usize, k: usize| out.end[t][k][state];
                let (logits, at): (Vec<f64>, Vec<usize>) = (0..B * nc)
                    .map(|k| match reduce {
                        Reduce::Max => {
                            let t = (0..T).fold(0, |m, t| if v(t, k) > v(m, k) { t } else { m });
                            (v(t, k), t)
                        }
                        Reduce::Mean => ((0..T).map(|t| v(t, k)).sum::<f64>() / T as f64, 0),
                    })
                    .unzip();
                let (l, g) = ce(&logits, nc);
                let mut full = vec![0.0; T * B * nc];
                for k in 0..B * nc {
                    for t in 0..T {
                        let gt = match reduce {
                            Reduce::Max if t == at[k] => g[k],
                            Reduce::Max => 0.0,
                            Reduce::Mean => g[k] / T as f64,
                        };
                        g_state2[t][k][state] = gt;
                        full[t * B * nc + k] = gt;
                    }
                }
                (l, full)
            }
            Loss::Mse { on, off, groups } => {
                let classes = nc / groups;
                let cnt = counts(&out, nc);
                let mut l = 0.0;
                let mut g = vec![0.0; B * nc];
                let n = (B * classes) as f64;
                for (b, &y) in LABELS.iter().enumerate() {
                    for c in 0..classes {
                        let ks = b * nc + c * groups..b * nc + (c + 1) * groups;
                        let rate = cnt[ks.clone()].iter().sum::<f64>() / (groups * T) as f64;
                        let d = rate - if c == y { on } else { off };
                        l += d * d / n;
                        for k in ks {
                            g[k] = 2.0 * d / n / (groups * T) as f64;
                        }
                    }
                }
                for gt in g_spike2.iter_mut() {
                    gt.copy_from_slice(&g);
                }
                (l, g)
            }
            Loss::FirstSpike => {
                // Logits are minus the first-spike step (T - 1 for silence); the gradient
                // of the spike at that step is -dL/dtime = dL/dlogit.
                let first: Vec<usize> = (0..B * nc)
                    .map(|k| (0..T).find(|&t| out.spike[t][k] == 1.0).unwrap_or(T - 1))
                    .collect();
                let logits: Vec<f64> = first.iter().map(|&t| -(t as f64)).collect();
                let (l, g) = ce(&logits, nc);
                let mut full = vec![0.0; T * B * nc];
                for k in 0..B * nc {
                    g_spike2[first[k]][k] = g[k];
                    full[first[k] * B * nc + k] = g[k];
                }
                (l, full)
            }
        };
        // Rate regularisers: lambda * mean over B, N of (counts / T - target)^2.
        let mut g_spike1 = vec![vec![0.0; B * NH]; T];
        for r in &self.regs {
            let (layer, w, g_sp) = if r.layer == 0 {
                (&hidden, NH, &mut g_spike1)
            } else {
                (&out, nc, &mut g_spike2)
            };
            let m = (B * w) as f64;
            for (k, c) in counts(layer, w).iter().enumerate() {
                let d = c / T as f64 - r.target;
                loss += r.lambda * d * d / m;
                for gt in g_sp.iter_mut() {
                    gt[k] += 2.0 * r.lambda * d / m / T as f64;
                }
            }
        }

        // Backward through time, output layer first.
        // `g_st[t][k]`: gradients into the states after step `t` (a trace loss, the next
        // layer reading a non-spiking model's first state).
        let layer_back = |n: &Neuron, l: &Layer, g_sp: &[Vec<f64>], g_st: &[Vec<Vec<f64>>]| {
            let width = l.cur[0].len();
            let mut carried = vec![vec![0.0; n.init().len()]; width];
            let mut g_cur = vec![vec![0.0; width]; T];
            for t in (0..T).rev() {
                for k in 0..width {
                    let mut g_out = carried[k].clone();
                    for (g, e) in g_out.iter_mut().zip(&g_st[t][k]) {
                        *g += e;
                    }
                    let (g_in, g_i) = n.backward(
                        &l.start[t][k],
                        l.cur[t][k],
                        &g_out,
                        g_sp[t][k],
                        self.sg,
                        self.detach,
                    );
                    carried[k] = g_in;
                    g_cur[t][k] = g_i;
                }
            }
            g_cur
        };
        let g_cur2 = layer_back(&self.out, &out, &g_spike2, &g_state2);
        let (dw2, db2, g_val1) = dense_back(&hidden.val, w2, &g_cur2, nc, self.delay);
        // The next layer's gradient enters the spike, or a non-spiking model's first state.
        let n_states = self.hidden.init().len();
        let mut g_state1 = vec![vec![vec![0.0; n_states]; B * NH]; T];
        let g_cur1 = if self.hidden.spikes() {
            let g: Vec<Vec<f64>> = g_val1
                .iter()
                .zip(&g_spike1)
                .map(|(a, b)| a.iter().zip(b).map(|(x, y)| x + y).collect())
                .collect();
            layer_back(&self.hidden, &hidden, &g, &g_state1)
        } else {
            for (gs, gv) in g_state1.iter_mut().zip(&g_val1) {
                for (g, v) in gs.iter_mut().zip(gv) {
                    g[0] = *v;
                }
            }
            layer_back(
                &self.hidden,
                &hidden,
                &vec![vec![0.0; B * NH]; T],
                &g_state1,
            )
        };
        let (dw1, db1, _) = dense_back(&xs, w1, &g_cur1, NH, 0);
        let mut grads = vec![dw1, db1, dw2, db2];
        if self.skip {
            grads.push(dense_back(&xs, &wt.w[4], &g_cur2, nc, 0).0);
        }
        Reference {
            hidden,
            out,
            conds,
            loss,
            loss_grad,
            grads,
        }
    }

    /// The first deterministic weights and inputs (seed 1, 2, ...) on which the case is
    /// well-conditioned and non-trivial: no comparison within 1e-3 of flipping (so f32 and
    /// f64 make the same spikes) or of a surrogate's kink, some hidden neurons firing and
    /// some silent, output spikes for the losses that read them, and gradients that reach
    /// the first layer.
    fn weights(&self) -> (Weights, Reference) {
        for seed in 1..2000u64 {
            let gain = [1.5, 2.5, 4.0][(seed % 3) as usize];
            let gain2 = [2.0, 3.0, 5.0][(seed / 3 % 3) as usize];
            let mut rng = Rng::new(seed);
            let nx = if self.static_input {
                B * NIN
            } else {
                T * B * NIN
            };
            let mut wt = Weights {
                x: (0..nx).map(|_| rng.uniform(0.0, 1.0)).collect(),
                w: vec![
                    (0..NH * NIN)
                        .map(|_| gain * rng.uniform(-0.5, 1.0))
                        .collect(),
                    (0..NH).map(|_| rng.uniform(-0.3, 0.3)).collect(),
                    (0..self.nc * NH)
                        .map(|_| gain2 * rng.uniform(-0.5, 1.0))
                        .collect(),
                    (0..self.nc).map(|_| rng.uniform(-0.3, 0.3)).collect(),
                    (0..self.nc * NIN).map(|_| rng.uniform(-1.0, 1.0)).collect(),
                ],
            };
            wt.w.truncate(self.names().len());
            let r = self.reference(&wt);
            let kinks = self.sg.kinks();
            let far = |x: f64| x.abs() > 1e-3 && kinks.iter().all(|k| (x - k).abs() > 1e-3);
            if !r.conds.iter().all(|&x| far(x)) {
                continue;
            }
            let fired = |l: &Layer, k: usize| (0..T).filter(|&t| l.spike[t][k] == 1.0).count();
            if self.hidden.spikes() {
                // 15-60% of the hidden (step, neuron) pairs fire, some neuron never does.
                let total: usize = (0..B * NH).map(|k| fired(&r.hidden, k)).sum();
                let silent = (0..B * NH).any(|k| fired(&r.hidden, k) == 0);
                if !silent || total * 100 < 15 * T * B * NH || total * 100 > 60 * T * B * NH {
                    continue;
                }
            }
            if self.out.spikes() {
                // Several output spikes but not at every step, some neuron fires more than
                // once (so its reset matters); first_spike also needs a silent one.
                let n: Vec<usize> = (0..B * self.nc).map(|k| fired(&r.out, k)).collect();
                let total: usize = n.iter().sum();
                if total < 6
                    || total * 4 > 3 * T * B * self.nc
                    || n.iter().all(|&c| c < 2)
                    || (self.loss == Loss::FirstSpike && n.iter().all(|&c| c > 0))
                {
                    continue;
                }
            }
            if let Loss::CeTrace(Reduce::Max, state) = self.loss {
                // No near-ties for the maximum over time.
                let ok = (0..B * self.nc).all(|k| {
                    let mut v: Vec<f64> = (0..T).map(|t| r.out.end[t][k][state]).collect();
                    v.sort_by(|a, b| b.partial_cmp(a).unwrap());
                    v[0] - v[1] > 1e-3
                });
                if !ok {
                    continue;
                }
            }
            if max_abs(&r.grads[0]) < 1e-3 {
                continue;
            }
            return (wt, r);
        }
        panic!("{}: no well-conditioned weights found", self.file);
    }
}

/// xorshift64*: deterministic inputs and weights.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        let s = &mut self.0;
        *s ^= *s >> 12;
        *s ^= *s << 25;
        *s ^= *s >> 27;
        let u = (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64;
        lo + (hi - lo) * u
    }
}

/// Compile the case's model, run it on the reference's weights and inputs, compute the
/// loss with `snn_runtime::train::loss` as `snnc train` does, run the backward pass and
/// compare every weight and bias gradient; then take one SGD step with the runtime's
/// optimizer and check the weights it writes back. Returns the reference.
/// `|got - want| <= 1e-4 |want| + 1e-6 max|want| + 1e-9` for every gradient element.
const GRADS: Tol = Tol::sum(1e-4, 1e-6, 1e-9);

fn check(case: &Case) -> Reference {
    let (wt, r) = case.weights();
    let mut s = load(case.file);
    let decls = s.plan().weights.clone();
    let names = case.names();
    assert_eq!(
        decls.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
        names
    );
    let f32s = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    for (name, w) in names.iter().zip(&wt.w) {
        s.set_weight(name, &f32s(w)).unwrap();
    }
    let shape = if case.static_input {
        vec![B, NIN]
    } else {
        vec![T, B, NIN]
    };
    let x = Tensor {
        shape,
        data: f32s(&wt.x),
    };
    let outs = s.run(&[x], T, B).unwrap();
    let tp = s.plan().train.clone().expect("a training plan");
    let (od, out) = &outs[tp.loss.output];
    let labels: Vec<u32> = LABELS.iter().map(|&l| l as u32).collect();
    let nc = case.nc;

    // Forward: the same spikes (or membrane) as the reference.
    let spike_sum =
        |l: &Layer, k: usize| -> f32 { (0..T).map(|t| l.spike[t][k]).sum::<f64>() as f32 };
    let lo = match (case.loss, tp.loss.kind) {
        (Loss::CeCounts, LossKind::CrossEntropyCounts) => {
            let want: Vec<f32> = (0..B * nc).map(|k| spike_sum(&r.out, k)).collect();
            assert_eq!(out.data, want, "{}: output counts", case.file);
            loss::cross_entropy_counts(&out.data, &labels, B, nc)
        }
        (Loss::Mse { on, off, groups }, LossKind::MseCounts { .. }) => {
            let want: Vec<f32> = (0..B * nc).map(|k| spike_sum(&r.out, k)).collect();
            assert_eq!(out.data, want, "{}: output counts", case.file);
            loss::mse_counts(&out.data, &labels, T, B, nc, on as f32, off as f32, groups)
        }
        (Loss::FirstSpike, LossKind::FirstSpikeTime) => {
            let want: Vec<f32> = r.out.spike.concat().iter().map(|&v| v as f32).collect();
            assert_eq!(out.data, want, "{}: output spikes", case.file);
            loss::first_spike_time(&out.data, &labels, T, B, nc)
        }
        (Loss::CeTrace(reduce, state), LossKind::CrossEntropyMaxMembrane)
        | (Loss::CeTrace(reduce, state), LossKind::CrossEntropyMeanMembrane) => {
            assert!(od.name.ends_with(".v"), "{}", od.name);
            for (i, &a) in out.data.iter().enumerate() {
                let b = r.out.end[i / (B * nc)][i % (B * nc)][state];
                assert!(
                    (a as f64 - b).abs() < 1e-5,
                    "{}: v[{i}] {a} vs {b}",
                    case.file
                );
            }
            loss::cross_entropy_membrane(&out.data, &labels, T, B, nc, reduce)
        }
        (l, k) => panic!(
            "{}: the test's loss {l:?} is not the model's {k:?}",
            case.file
        ),
    };
    let mut total = lo.loss as f64;
    let mut grads_in = vec![lo.grad];
    assert_eq!(tp.regularizers.len(), case.regs.len());
    for (rd, rc) in tp.regularizers.iter().zip(&case.regs) {
        assert_eq!((rd.lambda, rd.target), (rc.lambda as f32, rc.target as f32));
        let (od, counts) = &outs[rd.output];
        let n: usize = od.shape.iter().product();
        let (l, g) = loss::spike_rate_reg(&counts.data, T, B, n, rd.lambda, rd.target);
        total += l as f64;
        grads_in.push(g);
    }
    assert!(
        (total - r.loss).abs() < 1e-5 * r.loss.abs().max(1.0),
        "{}: loss {total} vs reference {}",
        case.file,
        r.loss
    );
    for (j, (&a, &b)) in grads_in[0].iter().zip(&r.loss_grad).enumerate() {
        assert!(
            (a as f64 - b).abs() < 1e-6,
            "{}: dLoss/doutput[{j}] {a} vs {b}",
            case.file
        );
    }

    let refs: Vec<&[f32]> = grads_in.iter().map(|g| g.as_slice()).collect();
    s.backward(&refs, T, B).unwrap();
    let grads = s.grads().unwrap();
    for (i, name) in names.iter().enumerate() {
        let what = format!("{}: {name}", case.file);
        grad::assert_close(&what, &grads[i], &r.grads[i], GRADS, "reference");
    }

    // One training step: plain SGD, w -= lr * grad, written back to the device.
    let lr = 0.5;
    let mut params = s.weights().to_vec();
    Optimizer::sgd(0.0, false, 0.0).step(&mut params, &grads, lr);
    s.set_all_weights(params).unwrap();
    for (i, name) in names.iter().enumerate() {
        let want: Vec<f64> = wt.w[i]
            .iter()
            .zip(&r.grads[i])
            .map(|(&w, g)| (w as f32) as f64 - lr as f64 * g)
            .collect();
        let got = s.weight(name).unwrap();
        for (j, (&a, &b)) in got.iter().zip(&want).enumerate() {
            assert!(
                (a as f64 - b).abs() <= 1e-4 * lr as f64 * max_abs(&r.grads[i]) + 1e-6,
                "{}: {name}[{j}] after one SGD step: {a} vs {b}",
                case.file
            );
        }
    }
    println!(
        "{}: loss {:.5}, hidden spikes {}, output spikes {}, |dW1| {:.3e}",
        case.file,
        r.loss,
        r.hidden.spike.concat().iter().sum::<f64>(),
        r.out.spike.concat().iter().sum::<f64>(),
        max_abs(&r.grads[0])
    );
    r
}

/// Asserts that the reference computed with `other` differs clearly from `case`'s, so the
/// comparison above could tell the two apart (a surrogate, `detach_reset`).
fn assert_discriminates(case: &Case, other: &Case) {
    let (wt, r) = case.weights();
    let o = other.reference(&wt);
    let diff = (0..r.grads.len())
        .map(|i| {
            r.grads[i]
                .iter()
                .zip(&o.grads[i])
                .fold(0.0f64, |m, (a, b)| {
                    m.max((a - b).abs() / max_abs(&r.grads[i]))
                })
        })
        .fold(0.0, f64::max);
    println!("{}: largest change {diff:.3e}", case.file);
    assert!(
        diff > 1e-2,
        "{}: the reference does not depend on the setting under test",
        case.file
    );
}

fn case(file: &'static str, hidden: Neuron, out: Neuron) -> Case {
    Case {
        file,
        hidden,
        out,
        nc: 2,
        sg: Sg::Atan(2.0),
        detach: false,
        loss: Loss::CeCounts,
        regs: vec![],
        static_input: false,
        delay: 0,
        skip: false,
    }
}

fn lif(tau: f64, reset: Reset) -> Neuron {
    Neuron::Lif {
        tau,
        thr: 1.0,
        vr: 0.0,
        decay_input: true,
        reset,
    }
}

// ---------------------------------------------------------------------------------------
// Neuron models (cross-entropy of spike counts).

#[test]
fn if_hard_reset_static_input_sigmoid() {
    let mut c = case(
        "tests/in/train/grad/n_if_hard.snn",
        Neuron::If {
            thr: 1.0,
            vr: 0.0,
            reset: Reset::Hard,
        },
        Neuron::If {
            thr: 0.8,
            vr: -0.1,
            reset: Reset::Hard,
        },
    );
    c.sg = Sg::Sigmoid(4.0);
    c.static_input = true;
    check(&c);
    assert_discriminates(
        &c,
        &Case {
            sg: Sg::Atan(2.0),
            ..c.clone()
        },
    );
}

#[test]
fn if_soft_and_no_reset_detached_fast_sigmoid() {
    let mut c = case(
        "tests/in/train/grad/n_if_soft_detach.snn",
        Neuron::If {
            thr: 1.0,
            vr: 0.0,
            reset: Reset::Soft,
        },
        Neuron::If {
            thr: 0.9,
            vr: 0.0,
            reset: Reset::None,
        },
    );
    c.sg = Sg::FastSigmoid(10.0);
    c.detach = true;
    check(&c);
    assert_discriminates(
        &c,
        &Case {
            detach: false,
            ..c.clone()
        },
    );
    assert_discriminates(
        &c,
        &Case {
            sg: Sg::Atan(2.0),
            ..c.clone()
        },
    );
}

fn lif_pair(file: &'static str) -> Case {
    case(
        file,
        lif(2.0, Reset::Hard),
        Neuron::Lif {
            tau: 3.0,
            thr: 1.0,
            vr: -0.2,
            decay_input: false,
            reset: Reset::Hard,
        },
    )
}

#[test]
fn lif_hard_reset_atan() {
    let c = lif_pair("tests/in/train/grad/n_lif_hard.snn");
    check(&c);
    assert_discriminates(
        &c,
        &Case {
            detach: true,
            ..c.clone()
        },
    );
}

#[test]
fn lif_hard_reset_detached_triangle() {
    let mut c = lif_pair("tests/in/train/grad/n_lif_hard_detach.snn");
    c.sg = Sg::Triangle(1.0);
    c.detach = true;
    check(&c);
    assert_discriminates(
        &c,
        &Case {
            detach: false,
            ..c.clone()
        },
    );
    assert_discriminates(
        &c,
        &Case {
            sg: Sg::Atan(2.0),
            ..c.clone()
        },
    );
}

#[test]
fn lif_soft_reset() {
    let c = case(
        "tests/in/train/grad/n_lif_soft.snn",
        lif(2.0, Reset::Soft),
        Neuron::Lif {
            tau: 1.5,
            thr: 1.0,
            vr: 0.0,
            decay_input: false,
            reset: Reset::Soft,
        },
    );
    check(&c);
    assert_discriminates(
        &c,
        &Case {
            detach: true,
            ..c.clone()
        },
    );
}

#[test]
fn lif_soft_and_no_reset_detached_rectangle() {
    let mut c = case(
        "tests/in/train/grad/n_lif_soft_detach.snn",
        lif(2.0, Reset::Soft),
        lif(2.5, Reset::None),
    );
    c.sg = Sg::Rectangle(0.5);
    c.detach = true;
    check(&c);
    assert_discriminates(
        &c,
        &Case {
            detach: false,
            ..c.clone()
        },
    );
    assert_discriminates(
        &c,
        &Case {
            sg: Sg::Atan(2.0),
            ..c.clone()
        },
    );
}

#[test]
fn li_hidden_layer() {
    let c = case(
        "tests/in/train/grad/n_li_hidden.snn",
        Neuron::Li {
            tau: 3.0,
            rest: 0.1,
            decay_input: false,
        },
        lif(2.0, Reset::Hard),
    );
    check(&c);
}

fn leaky(beta: f64, thr: f64, reset: Reset, delay: bool) -> Neuron {
    Neuron::Leaky {
        beta,
        thr,
        reset,
        delay,
    }
}

#[test]
fn leaky_delayed_reset() {
    check(&case(
        "tests/in/train/grad/n_leaky_delay.snn",
        leaky(0.8, 1.0, Reset::Soft, true),
        leaky(0.7, 0.9, Reset::Hard, true),
    ));
}

#[test]
fn leaky_immediate_reset() {
    check(&case(
        "tests/in/train/grad/n_leaky_now.snn",
        leaky(0.8, 1.0, Reset::Soft, false),
        leaky(0.7, 0.9, Reset::Hard, false),
    ));
}

#[test]
fn leaky_no_reset() {
    let mut c = case(
        "tests/in/train/grad/n_leaky_none.snn",
        leaky(0.6, 1.0, Reset::None, true),
        leaky(0.9, 1.0, Reset::None, false),
    );
    c.detach = true;
    check(&c);
}

#[test]
fn cubalif_hard_reset_sigmoid() {
    let mut c = case(
        "tests/in/train/grad/n_cubalif_hard.snn",
        Neuron::Cuba {
            ts: 3.0,
            tm: 4.0,
            thr: 1.0,
            vr: 0.0,
            reset: Reset::Hard,
        },
        Neuron::Cuba {
            ts: 2.0,
            tm: 3.0,
            thr: 0.7,
            vr: -0.1,
            reset: Reset::Hard,
        },
    );
    c.sg = Sg::Sigmoid(4.0);
    check(&c);
    assert_discriminates(
        &c,
        &Case {
            detach: true,
            ..c.clone()
        },
    );
}

#[test]
fn cubalif_soft_reset_detached() {
    let mut c = case(
        "tests/in/train/grad/n_cubalif_soft_detach.snn",
        Neuron::Cuba {
            ts: 3.0,
            tm: 4.0,
            thr: 1.0,
            vr: 0.0,
            reset: Reset::Soft,
        },
        Neuron::Cuba {
            ts: 2.0,
            tm: 3.0,
            thr: 1.0,
            vr: 0.0,
            reset: Reset::Soft,
        },
    );
    c.detach = true;
    check(&c);
    assert_discriminates(
        &c,
        &Case {
            detach: false,
            ..c.clone()
        },
    );
}

fn alif_pair(file: &'static str) -> Case {
    case(
        file,
        Neuron::Alif {
            tau: 2.0,
            tau_a: 4.0,
            thr: 1.0,
            beta: 0.5,
        },
        Neuron::Alif {
            tau: 3.0,
            tau_a: 6.0,
            thr: 0.8,
            beta: 0.3,
        },
    )
}

#[test]
fn alif_adaptive_threshold() {
    let c = alif_pair("tests/in/train/grad/n_alif.snn");
    check(&c);
    assert_discriminates(
        &c,
        &Case {
            detach: true,
            ..c.clone()
        },
    );
}

#[test]
fn alif_adaptive_threshold_detached() {
    let mut c = alif_pair("tests/in/train/grad/n_alif_detach.snn");
    c.detach = true;
    check(&c);
}

// ---------------------------------------------------------------------------------------
// Losses and regularisers, end to end (LIF hidden layer).

#[test]
fn loss_cross_entropy_max_membrane() {
    let mut c = case(
        "tests/in/train/grad/loss_ce_max.snn",
        lif(2.0, Reset::Hard),
        Neuron::Li {
            tau: 2.0,
            rest: 0.0,
            decay_input: true,
        },
    );
    c.loss = Loss::CeTrace(Reduce::Max, 0);
    check(&c);
}

#[test]
fn loss_cross_entropy_mean_membrane() {
    let mut c = case(
        "tests/in/train/grad/loss_ce_mean.snn",
        lif(2.0, Reset::Hard),
        Neuron::Li {
            tau: 3.0,
            rest: -0.1,
            decay_input: false,
        },
    );
    c.loss = Loss::CeTrace(Reduce::Mean, 0);
    check(&c);
}

#[test]
fn loss_mse_of_rates_with_groups() {
    let mut c = case(
        "tests/in/train/grad/loss_mse.snn",
        lif(2.0, Reset::Hard),
        lif(2.0, Reset::Hard),
    );
    c.nc = 4;
    c.loss = Loss::Mse {
        on: 0.8,
        off: 0.1,
        groups: 2,
    };
    check(&c);
}

#[test]
fn loss_first_spike_time() {
    let mut c = case(
        "tests/in/train/grad/loss_first_spike.snn",
        lif(2.0, Reset::Hard),
        lif(2.0, Reset::Hard),
    );
    c.loss = Loss::FirstSpike;
    check(&c);
}

#[test]
fn loss_cross_entropy_counts_with_rate_regularisers() {
    let mut c = case(
        "tests/in/train/grad/loss_rate_reg.snn",
        lif(2.0, Reset::Hard),
        lif(2.0, Reset::Hard),
    );
    c.regs = vec![
        Reg {
            layer: 0,
            lambda: 0.5,
            target: 0.2,
        },
        Reg {
            layer: 1,
            lambda: 0.3,
            target: 0.4,
        },
    ];
    check(&c);
    assert_discriminates(
        &c,
        &Case {
            regs: vec![],
            ..c.clone()
        },
    );
}

/// A delayed projection (`h2` reads the hidden spikes of step `t - 2`) and a second
/// projection into the same population (`s2 = LIF(h2 + hs)`, `hs` straight from the input).
#[test]
fn delayed_projection_and_summed_currents() {
    let mut c = case(
        "tests/in/train/grad/n_lif_delay_sum.snn",
        lif(2.0, Reset::Hard),
        lif(2.0, Reset::Hard),
    );
    c.delay = 2;
    c.skip = true;
    check(&c);
}

/// A membrane loss on spiking populations: the gradient enters the membrane after the reset
/// (and, for CUBALIF, its second state `v`), besides the surrogate path of the spikes.
#[test]
fn loss_on_the_membrane_of_spiking_populations() {
    let mut c = case(
        "tests/in/train/grad/loss_max_lif_v.snn",
        lif(2.0, Reset::Hard),
        lif(2.0, Reset::Soft),
    );
    c.loss = Loss::CeTrace(Reduce::Max, 0);
    check(&c);
    let mut c = case(
        "tests/in/train/grad/loss_mean_cubalif_v.snn",
        lif(2.0, Reset::Hard),
        Neuron::Cuba {
            ts: 2.0,
            tm: 3.0,
            thr: 1.0,
            vr: 0.0,
            reset: Reset::Hard,
        },
    );
    c.loss = Loss::CeTrace(Reduce::Mean, 1);
    check(&c);
}

// ---------------------------------------------------------------------------------------
// Smooth stand-ins against central finite differences.

/// Every model's update equations, with the spike's Heaviside replaced by a sigmoid and
/// the reset by a mix (tests/in/train/grad/smooth_neurons.snn: IF soft, LIF hard, Leaky's
/// delayed and immediate resets, CUBALIF, ALIF as ODEs in `dt = 0.5` with a named current;
/// three branches summed into an LI readout, a static input added to a per-step one, a
/// population read by two projections), against central finite differences of the
/// compiled forward pass, for every weight and bias.
#[test]
fn smooth_stand_ins_match_finite_differences() {
    let mut s = load("tests/in/train/grad/smooth_neurons.snn");
    let (t, c) = (6, 2);
    let mut rng = Rng::new(7);
    let mut input = |shape: Vec<usize>| Tensor {
        data: (0..shape.iter().product())
            .map(|_| rng.uniform(0.0, 1.0) as f32)
            .collect(),
        shape,
    };
    let xs = [input(vec![t, B, NIN]), input(vec![B, 2])];
    let decls = s.plan().weights.clone();
    for d in &decls {
        let w: Vec<f32> = (0..d.numel())
            .map(|_| rng.uniform(-0.5, 1.5) as f32)
            .collect();
        s.set_weight(&d.name, &w).unwrap();
    }
    let labels: Vec<u32> = LABELS.iter().map(|&l| l as u32).collect();
    // The loss in f64 from the f32 membrane, so only the forward pass rounds.
    let loss_of = |s: &mut Session| -> (f64, Vec<f32>) {
        let tr = s.run(&xs, t, B).unwrap().remove(0).1.data;
        let logits: Vec<f64> = (0..B * c)
            .map(|k| (0..t).map(|st| tr[st * B * c + k] as f64).sum::<f64>() / t as f64)
            .collect();
        let g = loss::cross_entropy_membrane(&tr, &labels, t, B, c, Reduce::Mean).grad;
        (ce(&logits, c).0, g)
    };
    let (_, g) = loss_of(&mut s);
    s.backward(&[&g], t, B).unwrap();
    let grads = s.grads().unwrap();
    // The f32 forward pass leaves about 5e-6 of noise in the quotient at any step from 2e-3
    // to 2e-2; the truncation error of 1e-2 is below that.
    let floor = 1e-5;
    let tol = Tol::sum(1e-3, 0.0, floor);
    let all = grad::check_weights(&mut s, &grads, &[1e-2], tol, "", |s| loss_of(s).0);
    let above: Vec<&grad::Checked> = all.iter().filter(|c| c.fd.abs() > 100.0 * floor).collect();
    let worst = above
        .iter()
        .map(|c| (c.backward - c.fd).abs() / c.fd.abs())
        .fold(0.0f64, f64::max);
    let (checked, above_floor) = (all.len(), above.len());
    println!(
        "{checked} weights, {above_floor} with |grad| > 1e-3, worst relative error {worst:.2e}"
    );
    assert_eq!(checked, 4 * 12 + 6 + 9 + 8 + 3 * 6);
    assert!(
        above_floor * 3 > checked * 2,
        "most gradients must be well above the floor"
    );
}

// ---------------------------------------------------------------------------------------
// Surrogates, pointwise.

/// Each surrogate's derivative with a non-default alpha, sampled at 8 points inside and
/// outside its window (tests/in/train/grad/sg_*.snn: neuron n of an IF layer gets the current
/// `w[n]`, so `dL/dw[n] = dL/dcount[n] * surrogate(w[n] - 1)`).
#[test]
fn every_surrogate_is_the_reference_derivative() {
    let points: [f32; 8] = [-2.0, -1.0, -0.5, -0.1, 0.1, 0.4, 0.9, 1.6];
    for (file, sg) in [
        ("sg_atan", Sg::Atan(3.0)),
        ("sg_sigmoid", Sg::Sigmoid(5.0)),
        ("sg_fast_sigmoid", Sg::FastSigmoid(7.0)),
        ("sg_triangle", Sg::Triangle(0.8)),
        ("sg_rectangle", Sg::Rectangle(0.8)),
    ] {
        // The reference curves at 0: atan a/2, sigmoid a/4, fast sigmoid 1, triangle and
        // rectangle a.
        let peak = match sg {
            Sg::Atan(a) => a / 2.0,
            Sg::Sigmoid(a) => a / 4.0,
            Sg::FastSigmoid(_) => 1.0,
            Sg::Triangle(a) | Sg::Rectangle(a) => a,
        };
        assert!((sg.d(0.0) - peak).abs() < 1e-12, "{file}");
        let mut s = load(&format!("tests/in/train/grad/{file}.snn"));
        let w: Vec<f32> = points.iter().map(|p| 1.0 + p).collect();
        s.set_weight("h.weight", &w).unwrap();
        let x = Tensor {
            shape: vec![1, 1],
            data: vec![1.0],
        };
        let out = s.run(&[x], 1, 1).unwrap();
        let fired: Vec<f32> = points
            .iter()
            .map(|&p| f32::from(u8::from(p > 0.0)))
            .collect();
        assert_eq!(out[0].1.data, fired, "{file}: spikes");
        let g: Vec<f32> = (0..8).map(|n| 0.5 + 0.25 * n as f32).collect();
        s.backward(&[&g], 1, 1).unwrap();
        let grads = s.grads().unwrap();
        let mut outside = 0;
        for (n, &p) in points.iter().enumerate() {
            // The kernel's x is w - 1 in f32. The absolute term is f32 rounding near the
            // peak (the sigmoid's `1 - sig(a x)` in the tail loses digits in SpikingJelly's
            // f32 too).
            let xf = ((1.0 + p) - 1.0) as f64;
            let want = g[n] as f64 * sg.d(xf);
            let got = grads[0][n] as f64;
            assert!(
                (got - want).abs() <= 1e-5 * want.abs() + 2e-7 * g[n] as f64 * peak,
                "{file}: surrogate at {p}: compiled {got} vs reference {want}"
            );
            outside += usize::from(want == 0.0);
        }
        let want_outside = match sg {
            Sg::Triangle(_) => 2,
            Sg::Rectangle(_) => 4,
            _ => 0,
        };
        assert_eq!(outside, want_outside, "{file}: points outside the window");
    }
}
