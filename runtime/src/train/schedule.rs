//! Learning-rate schedules per epoch, closed forms of torch's StepLR and
//! CosineAnnealingLR.

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LrSchedule {
    Constant,
    /// `base * gamma^(epoch / step_size)`.
    Step {
        step_size: usize,
        gamma: f32,
    },
    /// `eta_min + (base - eta_min) * (1 + cos(pi * epoch / t_max)) / 2`.
    Cosine {
        t_max: usize,
        eta_min: f32,
    },
}

impl LrSchedule {
    pub fn lr_at(&self, base: f32, epoch: usize) -> f32 {
        match *self {
            LrSchedule::Constant => base,
            LrSchedule::Step { step_size, gamma } => {
                base * gamma.powi((epoch / step_size.max(1)) as i32)
            }
            LrSchedule::Cosine { t_max, eta_min } => {
                let x = std::f64::consts::PI * epoch as f64 / t_max.max(1) as f64;
                (eta_min as f64 + (base - eta_min) as f64 * (1.0 + x.cos()) / 2.0) as f32
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_forms() {
        let s = LrSchedule::Step {
            step_size: 2,
            gamma: 0.5,
        };
        assert_eq!([0, 1, 2, 5].map(|e| s.lr_at(1.0, e)), [1.0, 1.0, 0.5, 0.25]);
        let c = LrSchedule::Cosine {
            t_max: 10,
            eta_min: 0.0,
        };
        assert_eq!(c.lr_at(1.0, 0), 1.0);
        assert!((c.lr_at(1.0, 5) - 0.5).abs() < 1e-6);
        assert!(c.lr_at(1.0, 10).abs() < 1e-6);
    }
}
