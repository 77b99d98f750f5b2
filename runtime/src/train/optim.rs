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
        if self.slots.len() < params.len() {
            self.slots.resize(params.len(), None);
        }
        let lr = widen(lr);
        for (i, (p, g)) in params.iter_mut().zip(grads).enumerate() {
            assert_eq!(
                p.len(),
                g.len(),
                "tensor {i}: {} gradients for {} values",
                g.len(),
                p.len()
            );
            let slot = self.slots[i].get_or_insert_with(|| Slot {
                step: 0,
                buf: Vec::new(),
                sq: Vec::new(),
            });
            for (what, v) in [("momentum/exp_avg", &slot.buf), ("exp_avg_sq", &slot.sq)] {
                assert!(
                    v.is_empty() || v.len() == p.len(),
                    "optimizer state `{what}` of tensor {i} has {} values, the tensor {} \
                     (a checkpoint of another model?)",
                    v.len(),
                    p.len()
                );
            }
            slot.step += 1;
            match self.algo {
                Algorithm::Sgd {
                    momentum,
                    nesterov,
                    weight_decay,
                } => sgd_update(p, g, slot, lr, momentum, nesterov, weight_decay),
                Algorithm::Adam {
                    betas,
                    eps,
                    weight_decay,
                } => adam_update(p, g, slot, lr, betas, eps, weight_decay, false),
                Algorithm::AdamW {
                    betas,
                    eps,
                    weight_decay,
                } => adam_update(p, g, slot, lr, betas, eps, weight_decay, true),
            }
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

/// torch `_single_tensor_sgd`, one tensor:
/// `g += wd*p; buf = g (first step) or momentum*buf + g; g = nesterov ? g + momentum*buf
/// : buf; p += -lr*g`.
fn sgd_update(
    p: &mut [f32],
    g: &[f32],
    slot: &mut Slot,
    lr: f64,
    momentum: f64,
    nesterov: bool,
    weight_decay: f64,
) {
    let (wd, mom, neg_lr) = (weight_decay as f32, momentum as f32, (-lr) as f32);
    let first = slot.buf.is_empty();
    if momentum != 0.0 && first {
        slot.buf = vec![0.0; p.len()];
    }
    for j in 0..p.len() {
        let mut d = g[j];
        if weight_decay != 0.0 {
            d += wd * p[j];
        }
        if momentum != 0.0 {
            // torch: the buffer starts as a copy of the first gradient (no dampening).
            let b = if first { d } else { slot.buf[j] * mom + d };
            slot.buf[j] = b;
            d = if nesterov { d + mom * b } else { b };
        }
        p[j] += neg_lr * d;
    }
}

/// torch `_single_tensor_adam` (amsgrad off), one tensor, in torch's order:
/// decay (`p *= 1 - lr*wd` for AdamW, `g += wd*p` for Adam); `m.lerp_(g, 1-b1)`;
/// `v = v*b2 + (1-b2)*g*g`; `denom = sqrt(v)/sqrt(1-b2^t) + eps`;
/// `p += -(lr/(1-b1^t)) * m / denom`.
#[allow(clippy::too_many_arguments)]
fn adam_update(
    p: &mut [f32],
    g: &[f32],
    slot: &mut Slot,
    lr: f64,
    (b1, b2): (f64, f64),
    eps: f64,
    weight_decay: f64,
    decoupled: bool,
) {
    if slot.buf.is_empty() {
        slot.buf = vec![0.0; p.len()];
        slot.sq = vec![0.0; p.len()];
    }
    let t = slot.step as f64;
    // Python floats: `1 - beta ** step`, `lr / bc1`, `math.sqrt(bc2)`.
    let bc1 = 1.0 - b1.powf(t);
    let bc2 = 1.0 - b2.powf(t);
    let neg_step_size = (-(lr / bc1)) as f32;
    let bc2_sqrt = bc2.sqrt() as f32;
    let decay = (1.0 - lr * weight_decay) as f32;
    let wd = weight_decay as f32;
    // `lerp_` with a scalar weight w: `m + w*(g-m)` if |w| < 0.5, else `g - (g-m)*(1-w)`.
    let w = (1.0 - b1) as f32;
    let small = w.abs() < 0.5;
    let one_minus_w = 1.0 - w;
    let (beta2, one_minus_b2, eps) = (b2 as f32, (1.0 - b2) as f32, eps as f32);
    let (m, v) = (&mut slot.buf, &mut slot.sq);
    for j in 0..p.len() {
        let mut gj = g[j];
        if weight_decay != 0.0 {
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
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 || coef.is_nan() {
        grads.iter_mut().flatten().for_each(|g| *g *= coef);
    }
    norm
}
