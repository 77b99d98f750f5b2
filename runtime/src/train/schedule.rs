//! Learning rate per epoch: the closed forms (`_get_closed_form_lr`) of torch's `StepLR`
//! and `CosineAnnealingLR`, optionally times a linear warm-up. Evaluated in f64 like
//! torch's Python floats, with f32 inputs widened through their decimal form.

use super::widen;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LrSchedule {
    /// `base`.
    Constant,
    /// torch `StepLR`: `base * gamma ^ (epoch // step_size)` (`step_size` 0 counts as 1).
    Step { step_size: usize, gamma: f32 },
    /// torch `CosineAnnealingLR`:
    /// `eta_min + (base - eta_min) * (1 + cos(pi * epoch / t_max)) / 2` (`t_max` 0 counts
    /// as 1). Past `t_max` the closed form rises again, as torch's does.
    Cosine { t_max: usize, eta_min: f32 },
}

impl LrSchedule {
    /// The learning rate of `epoch` (0-based) for initial rate `base`.
    pub fn lr_at(&self, base: f32, epoch: usize) -> f32 {
        self.lr_f64(widen(base), epoch) as f32
    }

    /// [`LrSchedule::lr_at`] times [`warmup_factor`]: torch `ChainedScheduler` of
    /// `LinearLR(start_factor=1/(warmup+1), total_iters=warmup)` and this schedule, so
    /// the schedule itself still counts from epoch 0.
    pub fn lr_at_warmup(&self, base: f32, epoch: usize, warmup: usize) -> f32 {
        (self.lr_f64(widen(base), epoch) * warmup_factor(epoch, warmup)) as f32
    }

    fn lr_f64(&self, base: f64, epoch: usize) -> f64 {
        let e = epoch as f64;
        match *self {
            LrSchedule::Constant => base,
            LrSchedule::Step { step_size, gamma } => {
                base * widen(gamma).powf((epoch / step_size.max(1)) as f64)
            }
            LrSchedule::Cosine { t_max, eta_min } => {
                let eta = widen(eta_min);
                let x = std::f64::consts::PI * e / t_max.max(1) as f64;
                eta + (base - eta) * (1.0 + x.cos()) / 2.0
            }
        }
    }
}

/// Linear warm-up factor, torch `LinearLR(start_factor=1/(warmup+1), end_factor=1,
/// total_iters=warmup)` closed form: `s + (1 - s) * min(epoch, warmup) / warmup`, i.e.
/// `(epoch + 1) / (warmup + 1)` rising to 1 at `epoch = warmup`; 1 without warm-up.
pub fn warmup_factor(epoch: usize, warmup: usize) -> f64 {
    if warmup == 0 {
        return 1.0;
    }
    let s = 1.0 / (warmup as f64 + 1.0);
    s + (1.0 - s) * epoch.min(warmup) as f64 / warmup as f64
}
