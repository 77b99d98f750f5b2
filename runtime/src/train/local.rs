//! Host-side bookkeeping of local learning (`snnc train` with `local = [..]`, issue 19):
//! Spyker's learning-rate growth, R-STDP's adaptive rates, the convergence measure and the
//! plastic layers' normal initialisation. The rules themselves run on the device
//! ([`crate::Session::learn`]); these decide the rule parameters between batches, in f64
//! exactly as Spyker's example scripts do (docs/spyker.md, "Learning-rate schedule" and
//! "R-STDP"; pinned by tests/vectors/spyker/schedule.json and rstdp.json `rate_scaling`).

use crate::rng;

/// Spyker's learning-rate growth (`kheradpisheh_mnist_dense.py:28-31, 62-69`): after each
/// batch `count += batch`, and once the count passes `every` it drops by `every` (the
/// remainder carries over) and the rates grow by `factor`, the positive one capped.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateGrowth {
    pub factor: f64,
    pub every: usize,
    pub cap: f64,
}

impl RateGrowth {
    /// After a batch of `batch` images: advances `count` and, when it passes `every`, grows
    /// `(positive, negative)`. Returns whether the rates changed.
    pub fn after_batch(&self, count: &mut usize, batch: usize, rates: &mut (f64, f64)) -> bool {
        *count += batch;
        if *count <= self.every {
            return false;
        }
        *count -= self.every;
        *rates = grow(*rates, self.factor, self.cap);
        true
    }
}

/// The example's `update(cfg, mult, limit)`: `ratio = neg / pos`, `pos = min(pos * mult,
/// limit)`, `neg = pos * ratio`, in f64 (so `neg` is not exactly the old ratio times `pos`
/// once the cap is reached; schedule.json has the bits).
pub fn grow((pos, neg): (f64, f64), factor: f64, cap: f64) -> (f64, f64) {
    let ratio = neg / pos;
    // Python's `min(a, b)`: `b` only when it is smaller.
    let p = pos * factor;
    let p = if cap < p { cap } else { p };
    (p, p * ratio)
}

/// R-STDP's adaptive rates (`mozafari_mnist_original.py:175-196`): the decisions are
/// counted over chunks of `chunk` images, across epoch ends; when a chunk is complete the
/// reward pair becomes `base * wrong / total` and the punish pair `base * correct / total`
/// (silent samples count in `total` only). The first chunk runs at the base rates.
#[derive(Clone, Debug, PartialEq)]
pub struct RstdpRates {
    /// `[reward_plus, reward_minus, punish_plus, punish_minus]` as the model sets them.
    pub base: [f64; 4],
    pub chunk: usize,
    /// The open chunk's decisions so far.
    pub correct: usize,
    pub wrong: usize,
    pub total: usize,
}

impl RstdpRates {
    pub fn new(base: [f64; 4], chunk: usize) -> RstdpRates {
        RstdpRates {
            base,
            chunk,
            correct: 0,
            wrong: 0,
            total: 0,
        }
    }

    /// Counts one batch's decisions; when that completes a chunk, returns the rates for the
    /// next one and starts a new chunk. With batches that divide `chunk` (the example's 64
    /// and 1024) a chunk is exactly `chunk` images; otherwise it closes with the batch that
    /// reaches `chunk`.
    pub fn after_batch(&mut self, correct: usize, wrong: usize, silent: usize) -> Option<[f64; 4]> {
        self.correct += correct;
        self.wrong += wrong;
        self.total += correct + wrong + silent;
        if self.total < self.chunk {
            return None;
        }
        let rates = scaled_rates(self.base, self.correct, self.wrong, self.total);
        (self.correct, self.wrong, self.total) = (0, 0, 0);
        Some(rates)
    }
}

/// `[reward_plus, reward_minus, punish_plus, punish_minus]` after a chunk: Python's
/// `base * wrong / total` (left to right, f64) for the reward pair, `base * correct / total`
/// for the punish pair.
pub fn scaled_rates(base: [f64; 4], correct: usize, wrong: usize, total: usize) -> [f64; 4] {
    let (c, w, n) = (correct as f64, wrong as f64, total as f64);
    [
        base[0] * w / n,
        base[1] * w / n,
        base[2] * c / n,
        base[3] * c / n,
    ]
}

/// Kheradpisheh et al. (2018)'s convergence measure of a layer's weights, `mean w (1 - w)`
/// in f64: 0.25 at w = 0.5, falling toward 0 as STDP drives every weight to 0 or 1.
pub fn convergence(weights: &[f32]) -> f64 {
    if weights.is_empty() {
        return 0.0;
    }
    let sum: f64 = weights
        .iter()
        .map(|&w| {
            let w = w as f64;
            w * (1.0 - w)
        })
        .sum();
    sum / weights.len() as f64
}

/// Fills `out` with `N(mean, std)` values (Box-Muller on two Philox streams of
/// `(seed, id)`), each computed in f64 and rounded once to f32, as Spyker's `Conv` rounds
/// its f64 normal draws. The values are not Spyker's (its generator is an `mt19937`).
pub fn fill_normal(out: &mut [f32], mean: f64, std: f64, seed: u64, id: u32) {
    let mut u1 = vec![0.0f32; out.len()];
    let mut u2 = vec![0.0f32; out.len()];
    rng::fill_uniform01(&mut u1, seed, id, rng::stream::LOCAL_INIT);
    rng::fill_uniform01(&mut u2, seed, id, rng::stream::LOCAL_INIT + 1);
    for ((o, &a), &b) in out.iter_mut().zip(&u1).zip(&u2) {
        // `1 - a` is in (0, 1]: the logarithm stays finite.
        let r = (-2.0 * (1.0 - a as f64).ln()).sqrt();
        let z = r * (std::f64::consts::TAU * b as f64).cos();
        *o = (mean + std * z) as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_carries_the_remainder() {
        let g = RateGrowth {
            factor: 2.0,
            every: 500,
            cap: 0.15,
        };
        let (mut count, mut rates) = (0, (0.004, -0.003));
        let mut changed_at = vec![];
        for batch in 0..60 {
            if g.after_batch(&mut count, 64, &mut rates) {
                changed_at.push((batch + 1) * 64);
            }
        }
        assert_eq!(&changed_at[..6], &[512, 1024, 1536, 2048, 2560, 3008]);
        assert_eq!(rates.0, 0.15);
    }

    #[test]
    fn rstdp_chunks_close_on_the_chunk_and_restart() {
        let mut r = RstdpRates::new([0.004, -0.003, -0.004, 0.0005], 4);
        assert_eq!(r.after_batch(1, 1, 0), None);
        let rates = r.after_batch(2, 0, 0).unwrap();
        assert_eq!(rates, scaled_rates(r.base, 3, 1, 4));
        assert_eq!((r.correct, r.wrong, r.total), (0, 0, 0));
    }

    #[test]
    fn convergence_is_a_quarter_at_one_half_and_zero_at_the_bounds() {
        assert_eq!(convergence(&[0.5, 0.5]), 0.25);
        assert_eq!(convergence(&[0.0, 1.0]), 0.0);
        let mut w = vec![0.0; 4096];
        fill_normal(&mut w, 0.8, 0.05, 7, 0);
        let mean = w.iter().map(|&x| x as f64).sum::<f64>() / w.len() as f64;
        let var = w.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / w.len() as f64;
        assert!((mean - 0.8).abs() < 0.005, "{mean}");
        assert!((var.sqrt() - 0.05).abs() < 0.005, "{}", var.sqrt());
    }
}
