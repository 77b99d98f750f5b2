//! Optimizers with torch.optim semantics (SGD with momentum/Nesterov, Adam, AdamW) and
//! global-norm gradient clipping. State is exportable, so checkpoints resume bit-exactly.

use crate::error::{Result, RuntimeError};

#[derive(Clone, Debug, PartialEq)]
enum Kind {
    Sgd { momentum: f32, nesterov: bool },
    Adam { decoupled: bool },
}

/// One optimizer over a list of tensors (the plan's weights, in order).
#[derive(Clone, Debug, PartialEq)]
pub struct Optimizer {
    kind: Kind,
    betas: (f32, f32),
    eps: f32,
    weight_decay: f32,
    step: u64,
    /// SGD: momentum buffers; Adam: first moments.
    m: Vec<Vec<f32>>,
    /// Adam: second moments.
    v: Vec<Vec<f32>>,
}

impl Optimizer {
    /// torch `SGD(momentum, nesterov, weight_decay)` (dampening 0).
    pub fn sgd(momentum: f32, nesterov: bool, weight_decay: f32) -> Optimizer {
        Optimizer::new(
            Kind::Sgd { momentum, nesterov },
            (0.9, 0.999),
            1e-8,
            weight_decay,
        )
    }
    /// torch `Adam` (weight decay added to the gradient, L2).
    pub fn adam(betas: (f32, f32), eps: f32, weight_decay: f32) -> Optimizer {
        Optimizer::new(Kind::Adam { decoupled: false }, betas, eps, weight_decay)
    }
    /// torch `AdamW` (decoupled weight decay).
    pub fn adamw(betas: (f32, f32), eps: f32, weight_decay: f32) -> Optimizer {
        Optimizer::new(Kind::Adam { decoupled: true }, betas, eps, weight_decay)
    }
    fn new(kind: Kind, betas: (f32, f32), eps: f32, weight_decay: f32) -> Optimizer {
        Optimizer {
            kind,
            betas,
            eps,
            weight_decay,
            step: 0,
            m: vec![],
            v: vec![],
        }
    }

    /// One update of every tensor with learning rate `lr`.
    pub fn step(&mut self, params: &mut [Vec<f32>], grads: &[Vec<f32>], lr: f32) {
        if self.m.len() != params.len() {
            self.m = params.iter().map(|p| vec![0.0; p.len()]).collect();
            self.v = params.iter().map(|p| vec![0.0; p.len()]).collect();
        }
        self.step += 1;
        let wd = self.weight_decay;
        match self.kind {
            Kind::Sgd { momentum, nesterov } => {
                let first = self.step == 1;
                for ((p, g), buf) in params.iter_mut().zip(grads).zip(&mut self.m) {
                    for i in 0..p.len() {
                        let mut d = g[i] + wd * p[i];
                        if momentum != 0.0 {
                            // torch: the buffer starts as the first gradient.
                            buf[i] = if first { d } else { momentum * buf[i] + d };
                            d = if nesterov {
                                d + momentum * buf[i]
                            } else {
                                buf[i]
                            };
                        }
                        p[i] -= lr * d;
                    }
                }
            }
            Kind::Adam { decoupled } => {
                let (b1, b2) = self.betas;
                let bc1 = 1.0 - b1.powi(self.step as i32);
                let bc2 = 1.0 - b2.powi(self.step as i32);
                let step_size = lr / bc1;
                let bc2_sqrt = bc2.sqrt();
                for (((p, g), m), v) in params
                    .iter_mut()
                    .zip(grads)
                    .zip(&mut self.m)
                    .zip(&mut self.v)
                {
                    for i in 0..p.len() {
                        let mut gi = g[i];
                        if decoupled {
                            p[i] *= 1.0 - lr * wd;
                        } else {
                            gi += wd * p[i];
                        }
                        m[i] = b1 * m[i] + (1.0 - b1) * gi;
                        v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
                        let denom = v[i].sqrt() / bc2_sqrt + self.eps;
                        p[i] -= step_size * m[i] / denom;
                    }
                }
            }
        }
    }

    /// The state as named flat tensors (moments per tensor and the step count).
    pub fn state(&self) -> Vec<(String, Vec<f32>)> {
        let mut out = vec![(
            "step".to_string(),
            vec![
                f32::from_bits(self.step as u32),
                f32::from_bits((self.step >> 32) as u32),
            ],
        )];
        for (i, m) in self.m.iter().enumerate() {
            out.push((format!("m.{i}"), m.clone()));
        }
        for (i, v) in self.v.iter().enumerate() {
            out.push((format!("v.{i}"), v.clone()));
        }
        out
    }

    /// Restores [`Optimizer::state`].
    pub fn load_state(&mut self, state: Vec<(String, Vec<f32>)>) -> Result<()> {
        let bad = |m: &str| RuntimeError::InvalidArgument(format!("optimizer state: {m}"));
        let mut m = Vec::new();
        let mut v = Vec::new();
        let mut step = None;
        for (name, data) in state {
            if name == "step" {
                if data.len() != 2 {
                    return Err(bad("step must hold two words"));
                }
                step = Some(data[0].to_bits() as u64 | (data[1].to_bits() as u64) << 32);
            } else if let Some(i) = name
                .strip_prefix("m.")
                .and_then(|s| s.parse::<usize>().ok())
            {
                m.push((i, data));
            } else if let Some(i) = name
                .strip_prefix("v.")
                .and_then(|s| s.parse::<usize>().ok())
            {
                v.push((i, data));
            } else {
                return Err(bad(&format!("unknown entry `{name}`")));
            }
        }
        m.sort_by_key(|x| x.0);
        v.sort_by_key(|x| x.0);
        if m.len() != v.len() || m.iter().enumerate().any(|(i, x)| x.0 != i) {
            return Err(bad("moments are incomplete"));
        }
        self.step = step.ok_or_else(|| bad("no step count"))?;
        self.m = m.into_iter().map(|x| x.1).collect();
        self.v = v.into_iter().map(|x| x.1).collect();
        Ok(())
    }
}

/// torch `clip_grad_norm_`: scales every gradient by `max_norm / (norm + 1e-6)` when that
/// is below 1; returns the total 2-norm before clipping.
pub fn clip_grad_norm(grads: &mut [Vec<f32>], max_norm: f32) -> f32 {
    let norm = grads
        .iter()
        .flatten()
        .map(|&g| g as f64 * g as f64)
        .sum::<f64>()
        .sqrt() as f32;
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        grads.iter_mut().flatten().for_each(|g| *g *= coef);
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adam_first_step_moves_each_weight_by_lr() {
        // With bias correction, Adam's first step is lr * g / (|g| + eps') = lr * sign(g).
        let mut p = vec![vec![1.0f32, -2.0]];
        let mut o = Optimizer::adam((0.9, 0.999), 1e-8, 0.0);
        o.step(&mut p, &[vec![0.5, -3.0]], 0.1);
        assert!(
            (p[0][0] - 0.9).abs() < 1e-6 && (p[0][1] + 1.9).abs() < 1e-6,
            "{p:?}"
        );
    }

    #[test]
    fn sgd_momentum_matches_torch_recursion() {
        // torch: buf1 = g1; p -= lr*buf1; buf2 = m*buf1 + g2; p -= lr*buf2.
        let mut p = vec![vec![1.0f32]];
        let mut o = Optimizer::sgd(0.9, false, 0.0);
        o.step(&mut p, &[vec![1.0]], 0.1);
        o.step(&mut p, &[vec![2.0]], 0.1);
        assert!((p[0][0] - (1.0 - 0.1 - 0.1 * 2.9)).abs() < 1e-6);
    }

    #[test]
    fn state_round_trip_resumes_bit_exactly() {
        let g = |k: usize| vec![vec![0.3 * k as f32 - 1.0, 0.7, -0.2 * k as f32]];
        let mut a = vec![vec![0.5f32, -0.5, 2.0]];
        let mut oa = Optimizer::adamw((0.9, 0.99), 1e-8, 0.01);
        for k in 0..5 {
            oa.step(&mut a, &g(k), 0.01);
        }
        let mut b = vec![vec![0.5f32, -0.5, 2.0]];
        let mut ob = Optimizer::adamw((0.9, 0.99), 1e-8, 0.01);
        for k in 0..2 {
            ob.step(&mut b, &g(k), 0.01);
        }
        let mut oc = Optimizer::adamw((0.9, 0.99), 1e-8, 0.01);
        oc.load_state(ob.state()).unwrap();
        for k in 2..5 {
            oc.step(&mut b, &g(k), 0.01);
        }
        assert_eq!(a, b);
    }

    #[test]
    fn clipping_scales_to_the_max_norm() {
        let mut g = vec![vec![3.0f32], vec![4.0]];
        assert_eq!(clip_grad_norm(&mut g, 1.0), 5.0);
        assert!((g[0][0] - 0.6).abs() < 1e-6 && (g[1][0] - 0.8).abs() < 1e-6);
    }
}
