//! Optimizers with torch.optim semantics (SGD with momentum/Nesterov, Adam, AdamW) and
//! global-norm gradient clipping (`torch.nn.utils.clip_grad_norm_`).
//!
//! The updates replicate torch's single-tensor (for-loop, CPU) implementations operation
//! by operation in f32, with the scalar coefficients (bias corrections, step size) in f64
//! as torch computes them from Python floats. torch's vectorised kernels fuse some
//! multiply-adds, so against torch itself expect agreement to about an ulp per step; the
//! tests pin bit patterns from a plain-Python f32 replay of torch's algorithm.
//!
//! State is per tensor and created lazily on its first update, as in torch; it can be
//! exported and restored ([`Optimizer::state`], [`Optimizer::load_state`]) so training
//! resumes bit-exactly from a checkpoint.

use super::widen;
use crate::error::{Result, RuntimeError};

/// An update rule and its hyperparameters (f64, as torch's Python floats). The learning
/// rate is not here: [`Optimizer::step`] takes it, so a schedule can drive it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Algorithm {
    /// torch `SGD` with `dampening=0`. torch rejects `nesterov` without momentum; here it
    /// is plain SGD.
    Sgd {
        momentum: f64,
        nesterov: bool,
        weight_decay: f64,
    },
    /// torch `Adam` (`amsgrad=False`): weight decay is L2, added to the gradient.
    Adam {
        betas: (f64, f64),
        eps: f64,
        weight_decay: f64,
    },
    /// torch `AdamW`: decoupled weight decay, `p *= 1 - lr * weight_decay` before the
    /// Adam update.
    AdamW {
        betas: (f64, f64),
        eps: f64,
        weight_decay: f64,
    },
}

/// One tensor's state: torch's `state[p]`.
#[derive(Clone, Debug, PartialEq)]
struct Slot {
    /// Updates applied to this tensor (torch `state["step"]`; kept for SGD too).
    step: u64,
    /// SGD `momentum_buffer` (empty until the first update, or without momentum); Adam
    /// `exp_avg`.
    buf: Vec<f32>,
    /// Adam `exp_avg_sq`; empty for SGD.
    sq: Vec<f32>,
    /// Whether the state exists (torch creates it on the first update): an SGD momentum
    /// buffer starts as the first gradient, Adam's moments as zeros.
    has_state: bool,
}

/// One optimizer over a list of tensors (the plan's weights, in order).
#[derive(Clone, Debug, PartialEq)]
pub struct Optimizer {
    algo: Algorithm,
    slots: Vec<Option<Slot>>,
}

impl Optimizer {
    pub fn new(algo: Algorithm) -> Optimizer {
        Optimizer {
            algo,
            slots: Vec::new(),
        }
    }

    /// torch `SGD(momentum=, nesterov=, weight_decay=)`, dampening 0.
    pub fn sgd(momentum: f32, nesterov: bool, weight_decay: f32) -> Optimizer {
        Optimizer::new(Algorithm::Sgd {
            momentum: widen(momentum),
            nesterov,
            weight_decay: widen(weight_decay),
        })
    }

    /// torch `Adam(betas=, eps=, weight_decay=)`.
    pub fn adam(betas: (f32, f32), eps: f32, weight_decay: f32) -> Optimizer {
        Optimizer::new(Algorithm::Adam {
            betas: (widen(betas.0), widen(betas.1)),
            eps: widen(eps),
            weight_decay: widen(weight_decay),
        })
    }

    /// torch `AdamW(betas=, eps=, weight_decay=)`.
    pub fn adamw(betas: (f32, f32), eps: f32, weight_decay: f32) -> Optimizer {
        Optimizer::new(Algorithm::AdamW {
            betas: (widen(betas.0), widen(betas.1)),
            eps: widen(eps),
            weight_decay: widen(weight_decay),
        })
    }

    /// torch `SGD` defaults: no momentum, no Nesterov, no weight decay.
    pub fn default_sgd() -> Optimizer {
        Optimizer::sgd(0.0, false, 0.0)
    }

    /// torch `Adam` defaults: betas (0.9, 0.999), eps 1e-8, no weight decay (lr 1e-3).
    pub fn default_adam() -> Optimizer {
        Optimizer::adam((0.9, 0.999), 1e-8, 0.0)
    }

    /// torch `AdamW` defaults: betas (0.9, 0.999), eps 1e-8, weight decay 1e-2 (lr 1e-3).
    pub fn default_adamw() -> Optimizer {
        Optimizer::adamw((0.9, 0.999), 1e-8, 1e-2)
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algo
    }

    /// Updates applied so far (the largest per-tensor step count).
    pub fn steps(&self) -> u64 {
        self.slots
            .iter()
            .flatten()
            .map(|s| s.step)
            .max()
            .unwrap_or(0)
    }

    /// One update of every tensor with learning rate `lr`. Panics if `grads` does not
    /// match `params` tensor for tensor, or if loaded state does not fit a tensor.
    pub fn step(&mut self, params: &mut [Vec<f32>], grads: &[Vec<f32>], lr: f32) {
        assert_eq!(
            params.len(),
            grads.len(),
            "{} gradients for {} tensors",
            grads.len(),
            params.len()
        );
        for (i, (p, g)) in params.iter_mut().zip(grads).enumerate() {
            assert_eq!(
                p.len(),
                g.len(),
                "tensor {i}: {} gradients for {} values",
                g.len(),
                p.len()
            );
            let u = self.next_update(i, lr);
            let slot = self.slots[i].as_mut().expect("made by next_update");
            for (what, v) in [("momentum/exp_avg", &slot.buf), ("exp_avg_sq", &slot.sq)] {
                assert!(
                    v.is_empty() || v.len() == p.len(),
                    "optimizer state `{what}` of tensor {i} has {} values, the tensor {} \
                     (a checkpoint of another model?)",
                    v.len(),
                    p.len()
                );
            }
            let k = u.state_buffers();
            if k >= 1 && slot.buf.is_empty() {
                slot.buf = vec![0.0; p.len()];
            }
            if k >= 2 && slot.sq.is_empty() {
                slot.sq = vec![0.0; p.len()];
            }
            u.apply(p, g, None, &mut slot.buf, &mut slot.sq);
        }
    }

    /// Advances tensor `i`'s step count and returns its next update at learning rate `lr`
    /// as plain coefficients, for a device to apply where the weights live
    /// ([`crate::device::Optimizer::optim_step`]); its state buffers stay with the device.
    pub fn next_update(&mut self, i: usize, lr: f32) -> Update {
        if self.slots.len() <= i {
            self.slots.resize(i + 1, None);
        }
        let slot = self.slots[i].get_or_insert_with(|| Slot {
            step: 0,
            buf: Vec::new(),
            sq: Vec::new(),
            has_state: false,
        });
        let first = !slot.has_state;
        slot.has_state = true;
        slot.step += 1;
        let lr = widen(lr);
        match self.algo {
            Algorithm::Sgd {
                momentum,
                nesterov,
                weight_decay,
            } => Update::Sgd {
                neg_lr: (-lr) as f32,
                wd: weight_decay as f32,
                momentum: momentum as f32,
                nesterov,
                first,
                use_wd: weight_decay != 0.0,
                use_momentum: momentum != 0.0,
            },
            Algorithm::Adam {
                betas,
                eps,
                weight_decay,
            } => adam_coefs(slot.step, lr, betas, eps, weight_decay, false, first),
            Algorithm::AdamW {
                betas,
                eps,
                weight_decay,
            } => adam_coefs(slot.step, lr, betas, eps, weight_decay, true, first),
        }
    }

    /// Replaces tensor `i`'s state buffers (`buf`: momentum or exp_avg, `sq`: exp_avg_sq)
    /// with what a device held, so that [`Optimizer::state`] writes them.
    pub fn set_buffers(&mut self, i: usize, buf: Vec<f32>, sq: Vec<f32>) {
        if let Some(Some(slot)) = self.slots.get_mut(i) {
            slot.buf = buf;
            slot.sq = sq;
        }
    }

    /// Tensor `i`'s state buffers as [`Optimizer::set_buffers`] takes them, and whether
    /// it has state at all (a tensor never updated has none).
    pub fn buffers(&self, i: usize) -> Option<(&[f32], &[f32])> {
        match self.slots.get(i) {
            Some(Some(slot)) if slot.has_state => Some((&slot.buf, &slot.sq)),
            _ => None,
        }
    }

    /// The state as named flat tensors, torch's names with the tensor index:
    /// `step.{i}` (two exact integers: `step mod 2^24`, `step / 2^24`, since f32 holds
    /// integers exactly only up to 2^24), then `momentum_buffer.{i}` (SGD with momentum)
    /// or `exp_avg.{i}` and `exp_avg_sq.{i}` (Adam, AdamW). Tensors not yet updated have
    /// no entries.
    pub fn state(&self) -> Vec<(String, Vec<f32>)> {
        let adam = !matches!(self.algo, Algorithm::Sgd { .. });
        let mut out = Vec::new();
        for (i, slot) in self.slots.iter().enumerate() {
            let Some(s) = slot else { continue };
            let lo = (s.step % (1 << 24)) as f32;
            let hi = (s.step >> 24) as f32;
            out.push((format!("step.{i}"), vec![lo, hi]));
            if adam {
                out.push((format!("exp_avg.{i}"), s.buf.clone()));
                out.push((format!("exp_avg_sq.{i}"), s.sq.clone()));
            } else if !s.buf.is_empty() {
                out.push((format!("momentum_buffer.{i}"), s.buf.clone()));
            }
        }
        out
    }

    /// Replaces the state with one from [`Optimizer::state`] (entries in any order). Fails,
    /// leaving the optimizer unchanged, on unknown entries, state of another algorithm, or
    /// incomplete tensors. Sizes are checked against the tensors at the next step.
    pub fn load_state(&mut self, state: Vec<(String, Vec<f32>)>) -> Result<()> {
        let bad = |m: String| RuntimeError::InvalidArgument(format!("optimizer state: {m}"));
        let adam = !matches!(self.algo, Algorithm::Sgd { .. });
        let momentum = matches!(self.algo, Algorithm::Sgd { momentum, .. } if momentum != 0.0);
        type Partial = (Option<u64>, Option<Vec<f32>>, Option<Vec<f32>>);
        let mut parts: Vec<Partial> = Vec::new();
        for (name, data) in state {
            let (kind, idx) = name
                .rsplit_once('.')
                .and_then(|(k, i)| Some((k, i.parse::<usize>().ok()?)))
                .ok_or_else(|| bad(format!("unknown entry `{name}`")))?;
            if parts.len() <= idx {
                parts.resize(idx + 1, (None, None, None));
            }
            let part = &mut parts[idx];
            let dup = match kind {
                "step" => {
                    let word = |x: f32| {
                        (x >= 0.0 && x < (1u64 << 24) as f32 && x.fract() == 0.0)
                            .then_some(x as u64)
                    };
                    let step = match data[..] {
                        [lo, hi] => word(lo).zip(word(hi)).map(|(lo, hi)| lo | hi << 24),
                        _ => None,
                    }
                    .ok_or_else(|| bad(format!("`{name}` is not a step count")))?;
                    part.0.replace(step).is_some()
                }
                "momentum_buffer" if !adam && momentum => part.1.replace(data).is_some(),
                "exp_avg" if adam => part.1.replace(data).is_some(),
                "exp_avg_sq" if adam => part.2.replace(data).is_some(),
                "momentum_buffer" | "exp_avg" | "exp_avg_sq" => {
                    return Err(bad(format!(
                        "`{name}` does not belong to {}",
                        match self.algo {
                            Algorithm::Sgd { .. } if momentum => "SGD",
                            Algorithm::Sgd { .. } => "SGD without momentum",
                            Algorithm::Adam { .. } => "Adam",
                            Algorithm::AdamW { .. } => "AdamW",
                        }
                    )))
                }
                _ => return Err(bad(format!("unknown entry `{name}`"))),
            };
            if dup {
                return Err(bad(format!("`{name}` appears twice")));
            }
        }
        let mut slots = Vec::with_capacity(parts.len());
        for (i, part) in parts.into_iter().enumerate() {
            slots.push(match part {
                (None, None, None) => None,
                (Some(step), buf, sq) => {
                    let complete = match (adam, &buf, &sq) {
                        (true, Some(m), Some(v)) => m.len() == v.len(),
                        (false, Some(_), None) => momentum,
                        (false, None, None) => !momentum,
                        _ => false,
                    };
                    if !complete {
                        return Err(bad(format!("the state of tensor {i} is incomplete")));
                    }
                    Some(Slot {
                        step,
                        has_state: true,
                        buf: buf.unwrap_or_default(),
                        sq: sq.unwrap_or_default(),
                    })
                }
                (None, ..) => return Err(bad(format!("tensor {i} has no `step.{i}`"))),
            });
        }
        self.slots = slots;
        Ok(())
    }
}

/// One tensor's update as the f32 coefficients and flags a device applies element by
/// element: [`Update::apply`] on the host, `snn_sgd` and `snn_adam` in kernels/cuda/ops.cuh
/// on a GPU, with the same operations in the same order (bit-identical results).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Update {
    /// torch `_single_tensor_sgd`: `g += wd*p; buf = g (first step) or momentum*buf + g;
    /// g = nesterov ? g + momentum*buf : buf; p += -lr*g`.
    Sgd {
        neg_lr: f32,
        wd: f32,
        momentum: f32,
        nesterov: bool,
        /// The first update: the momentum buffer starts as the gradient.
        first: bool,
        use_wd: bool,
        use_momentum: bool,
    },
    /// torch `_single_tensor_adam` (amsgrad off), in torch's order: decay (`p *= decay`
    /// for AdamW, `g += wd*p` for Adam); `m.lerp_(g, w)`; `v = v*beta2 + (1-beta2)*g*g`;
    /// `denom = sqrt(v)/bc2_sqrt + eps`; `p += neg_step_size * m / denom`.
    Adam {
        neg_step_size: f32,
        bc2_sqrt: f32,
        decay: f32,
        wd: f32,
        /// `lerp_`'s weight `1 - beta1`, and which of torch's two formulas it takes.
        w: f32,
        small: bool,
        one_minus_w: f32,
        beta2: f32,
        one_minus_b2: f32,
        eps: f32,
        use_wd: bool,
        decoupled: bool,
        /// The first update: the moments start at zero.
        first: bool,
    },
}

/// Adam's coefficients at step `t` (Python floats: `1 - beta ** step`, `lr / bc1`,
/// `math.sqrt(bc2)`, then f32 as torch passes them to the tensor ops).
fn adam_coefs(
    t: u64,
    lr: f64,
    (b1, b2): (f64, f64),
    eps: f64,
    weight_decay: f64,
    decoupled: bool,
    first: bool,
) -> Update {
    let t = t as f64;
    let bc1 = 1.0 - b1.powf(t);
    let bc2 = 1.0 - b2.powf(t);
    // `lerp_` with a scalar weight w: `m + w*(g-m)` if |w| < 0.5, else `g - (g-m)*(1-w)`.
    let w = (1.0 - b1) as f32;
    Update::Adam {
        neg_step_size: (-(lr / bc1)) as f32,
        bc2_sqrt: bc2.sqrt() as f32,
        decay: (1.0 - lr * weight_decay) as f32,
        wd: weight_decay as f32,
        w,
        small: w.abs() < 0.5,
        one_minus_w: 1.0 - w,
        beta2: b2 as f32,
        one_minus_b2: (1.0 - b2) as f32,
        eps: eps as f32,
        use_wd: weight_decay != 0.0,
        decoupled,
        first,
    }
}

impl Update {
    /// State buffers the update reads and writes: 0 (SGD without momentum), 1 (the
    /// momentum buffer), 2 (Adam's `exp_avg` and `exp_avg_sq`).
    pub fn state_buffers(&self) -> usize {
        match self {
            Update::Sgd { use_momentum, .. } => *use_momentum as usize,
            Update::Adam { .. } => 2,
        }
    }

    /// Applies the update to `p` with gradient `g` (times `grad_scale`, gradient clipping's
    /// coefficient, when given) and state `s0`, `s1` ([`Update::state_buffers`] of them,
    /// each as long as `p`; the others may be empty). Adam's first update zeroes its
    /// moments first, as torch creates them.
    pub fn apply(
        &self,
        p: &mut [f32],
        g: &[f32],
        grad_scale: Option<f32>,
        s0: &mut [f32],
        s1: &mut [f32],
    ) {
        let grad = |j: usize| match grad_scale {
            Some(c) => g[j] * c,
            None => g[j],
        };
        match *self {
            Update::Sgd {
                neg_lr,
                wd,
                momentum,
                nesterov,
                first,
                use_wd,
                use_momentum,
            } => {
                for j in 0..p.len() {
                    let mut d = grad(j);
                    if use_wd {
                        d += wd * p[j];
                    }
                    if use_momentum {
                        // torch: the buffer starts as a copy of the first gradient.
                        let b = if first { d } else { s0[j] * momentum + d };
                        s0[j] = b;
                        d = if nesterov { d + momentum * b } else { b };
                    }
                    p[j] += neg_lr * d;
                }
            }
            Update::Adam {
                neg_step_size,
                bc2_sqrt,
                decay,
                wd,
                w,
                small,
                one_minus_w,
                beta2,
                one_minus_b2,
                eps,
                use_wd,
                decoupled,
                first,
            } => {
                if first {
                    s0.fill(0.0);
                    s1.fill(0.0);
                }
                let (m, v) = (s0, s1);
                for j in 0..p.len() {
                    let mut gj = grad(j);
                    if use_wd {
                        if decoupled {
                            p[j] *= decay;
                        } else {
                            gj += wd * p[j];
                        }
                    }
                    m[j] = if small {
                        m[j] + w * (gj - m[j])
                    } else {
                        gj - (gj - m[j]) * one_minus_w
                    };
                    v[j] = v[j] * beta2 + one_minus_b2 * gj * gj;
                    let denom = v[j].sqrt() / bc2_sqrt + eps;
                    p[j] += neg_step_size * m[j] / denom;
                }
            }
        }
    }
}

/// Gradient clipping's coefficient for a total norm `norm` (torch `clip_grad_norm_`):
/// `max_norm / (norm + 1e-6)` in f32, applied when below 1 or NaN (non-finite gradients
/// propagate, as torch's clamp does); `None` when the gradients stay as they are.
pub fn clip_coef(max_norm: f32, norm: f32) -> Option<f32> {
    let coef = max_norm / (norm + 1e-6);
    (coef < 1.0 || coef.is_nan()).then_some(coef)
}

/// torch `clip_grad_norm_(max_norm, norm_type=2)` over all tensors: the total 2-norm (here
/// summed in f64), `coef = max_norm / (norm + 1e-6)` in f32, and every gradient times
/// `min(coef, 1)`. A NaN coefficient (non-finite gradients) propagates, as torch's clamp
/// does. Returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut [Vec<f32>], max_norm: f32) -> f32 {
    let norm = grads
        .iter()
        .flatten()
        .map(|&g| g as f64 * g as f64)
        .sum::<f64>()
        .sqrt() as f32;
    if let Some(coef) = clip_coef(max_norm, norm) {
        grads.iter_mut().flatten().for_each(|g| *g *= coef);
    }
    norm
}
