//! Spyker's image filters (`dog`, `log`, `gabor` layers): their parameters and the frozen
//! convolution kernels built from them at compile time, with Spyker's construction and
//! normalisation (docs/spyker.md, "Filters"): each kernel is computed in f64, divided by
//! its sum taken sequentially in row-major order, and rounded to f32 once, which
//! reproduces Spyker's kernels bit for bit.

use snn_runtime::plan::FilterStep;

/// One Gabor filter, as Spyker's `GaborFilter(sigma, theta, gamma, lambda_, psi)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Gabor {
    pub sigma: f64,
    /// In degrees, as Spyker takes it (its docstring says radians; its code converts).
    pub theta: f64,
    pub gamma: f64,
    pub lambda: f64,
    /// In radians.
    pub psi: f64,
}

/// A bank of filters of one kind, applied to every input channel.
#[derive(Clone, Debug, PartialEq)]
pub enum FilterBank {
    /// `(std1, std2)` per output channel: `max(G(std1) * I - G(std2) * I, 0)`.
    Dog {
        pairs: Vec<(f64, f64)>,
    },
    /// One std per ON/OFF pair: Spyker's "LoG", a DoG of `G(std / sqrt 2)` and
    /// `G(std * sqrt 2)`.
    Log {
        stds: Vec<f64>,
    },
    Gabor {
        filters: Vec<Gabor>,
    },
}

/// Spyker's `theta` conversion constant (degrees to radians, an f64 multiplication; its
/// `PI = 3.14159265358979323846` is `std::f64::consts::PI`).
const DEGREE: f64 = 0.017453292519943295;

impl FilterBank {
    /// The layer's name in the language.
    pub fn op_name(&self) -> &'static str {
        match self {
            FilterBank::Dog { .. } => "dog",
            FilterBank::Log { .. } => "log",
            FilterBank::Gabor { .. } => "gabor",
        }
    }
    /// Filters in the bank.
    pub fn len(&self) -> usize {
        match self {
            FilterBank::Dog { pairs } => pairs.len(),
            FilterBank::Log { stds } => stds.len(),
            FilterBank::Gabor { filters } => filters.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// What follows the convolution.
    pub fn step(&self) -> FilterStep {
        match self {
            FilterBank::Dog { .. } => FilterStep::Dog,
            FilterBank::Log { .. } => FilterStep::Log,
            FilterBank::Gabor { .. } => FilterStep::Plain,
        }
    }
    /// The raw kernels `[step().raw_channels(len()), window, window]` for a window of
    /// `2 half + 1`: DoG and LoG the `n` first Gaussians then the `n` second ones (Spyker's
    /// `[2, n, k, k]`), Gabor one per filter.
    pub fn kernels(&self, half: usize) -> Vec<f32> {
        let mut out = Vec::new();
        match self {
            FilterBank::Dog { pairs } => {
                for &(s1, _) in pairs {
                    out.extend(gaussian(half, s1));
                }
                for &(_, s2) in pairs {
                    out.extend(gaussian(half, s2));
                }
            }
            FilterBank::Log { stds } => {
                let r2 = 2f64.sqrt();
                for &s in stds {
                    out.extend(gaussian(half, s / r2));
                }
                for &s in stds {
                    out.extend(gaussian(half, s * r2));
                }
            }
            FilterBank::Gabor { filters } => {
                for g in filters {
                    out.extend(gabor(half, g));
                }
            }
        }
        out
    }
}

/// `k / sum(k)` with the sum taken in row-major order, each value rounded to f32 once.
fn normalise(k: Vec<f64>) -> Vec<f32> {
    let mut sum = 0.0f64;
    for &v in &k {
        sum += v;
    }
    k.into_iter().map(|v| (v / sum) as f32).collect()
}

/// Spyker's Gaussian (`cpu/init.cpp`): `exp(-0.5 (sqrt(i^2 + j^2) / std)^2)` over
/// `i, j in -half..=half`, normalised.
pub fn gaussian(half: usize, std: f64) -> Vec<f32> {
    let s = half as i64;
    let mut k = Vec::new();
    for i in -s..=s {
        for j in -s..=s {
            let q = ((i * i + j * j) as f64).sqrt() / std;
            k.push((-0.5 * (q * q)).exp());
        }
    }
    normalise(k)
}

/// Spyker's Gabor kernel (`cpu/init.cpp`), `i` the row and `j` the column offset:
/// `exp(-(x^2 + gamma^2 y^2) / (2 sigma^2)) cos(2 PI x / lambda + psi)` with `x = i cos +
/// j sin`, `y = -i sin + j cos`, normalised (not rectified).
pub fn gabor(half: usize, g: &Gabor) -> Vec<f32> {
    let s = half as i64;
    let th = g.theta * DEGREE;
    let (sin, cos) = (th.sin(), th.cos());
    let mut k = Vec::new();
    for i in -s..=s {
        for j in -s..=s {
            let (fi, fj) = (i as f64, j as f64);
            let x = fi * cos + fj * sin;
            let y = -fi * sin + fj * cos;
            let a = (-(x * x + g.gamma * g.gamma * y * y) / (2.0 * g.sigma * g.sigma)).exp();
            let b = (2.0 * std::f64::consts::PI * x / g.lambda + g.psi).cos();
            k.push(a * b);
        }
    }
    normalise(k)
}

/// The conv2d weight `[groups * raw, groups, k, k]` that applies the bank's raw kernels to
/// each of `groups` input channels on its own (Spyker views `[B, C, H, W]` as
/// `[B * C, 1, H, W]`): output channel `c * raw + r` reads input channel `c` only; the
/// other taps are 0, which adds exact zeros to the sums.
pub fn block_weight(raw: &[f32], raw_channels: usize, groups: usize, window: usize) -> Vec<f32> {
    let kk = window * window;
    let mut w = vec![0.0f32; groups * raw_channels * groups * kk];
    for c in 0..groups {
        for r in 0..raw_channels {
            let o = c * raw_channels + r;
            let at = (o * groups + c) * kk;
            w[at..at + kk].copy_from_slice(&raw[r * kk..(r + 1) * kk]);
        }
    }
    w
}
