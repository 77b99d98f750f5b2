//! Spike-wave ops: Spyker's rank-order latency coding (`code(x, T, sort)`), which turns a
//! static map into a cumulative spike wave (docs/spyker.md, "Rank-order coding"), and its
//! point-wise lateral inhibition (`inhibit(V, threshold)`, "Point-wise lateral inhibition"),
//! which decides one channel per pixel from all `T` steps of a layer's potentials; its
//! k-WTA (`convwta`, "k-WTA"), a static map of winners from all `T` steps, and the
//! "infinite threshold" (`infinite(V, value)`), which keeps only the last step.

use super::LibraryOp;
use crate::device::Loc;
use crate::error::{Result, RuntimeError};
use crate::exec::interp::Runner;
use crate::exec::validate::Checker;
use crate::plan::{BufId, Extent, Plan};
use serde::{Deserialize, Serialize};

/// Latency coding of each sample of the static `x` (`[B, F]`, all `F` values together) into
/// the cumulative wave `y` (`[T, B, F]`): `y[t, b, i] = (time[b, i] <= t)` with Spyker's
/// f32 time arithmetic (see [`first_spike_times`]). Runs over all `T` at once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RankCode {
    pub x: BufId,
    pub y: BufId,
    pub features: usize,
    /// `true`: by rank (Spyker's default); `false`: by value.
    pub sort: bool,
}

/// [`RankCode`] over `batch` samples of `features` values, into `t_len` steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RankCodeDesc {
    pub batch: usize,
    pub t_len: usize,
    pub features: usize,
    pub x: Loc,
    pub y: Loc,
    pub sort: bool,
}

/// Spyker's point-wise lateral inhibition of the sequence `x` (`[T, B, channels, plane]`)
/// into `y` (same shape): per sample and pixel only the channel [`inhibit_keep`] picks keeps
/// its values, at every step; every other channel is multiplied by 0.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Inhibit {
    pub x: BufId,
    pub y: BufId,
    pub channels: usize,
    /// `H * W`.
    pub plane: usize,
    pub threshold: f32,
}

/// [`Inhibit`] over `batch` samples and `t_len` steps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InhibitDesc {
    pub batch: usize,
    pub t_len: usize,
    pub channels: usize,
    pub plane: usize,
    pub x: Loc,
    pub y: Loc,
    pub threshold: f32,
}

/// Spyker's k-WTA (`convwta`) of the sequence `x` (`[T, B, channels, height, width]`) into
/// the static map `y` (`[B, channels, height, width]`): 1.0 at each winner, 0.0 elsewhere.
/// Scores from [`wta_scores`], winners from [`wta_select`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Wta {
    pub x: BufId,
    pub y: BufId,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// At most this many winners per sample.
    pub k: usize,
    pub radius: usize,
    pub threshold: f32,
    /// `x` is a cumulative 0/1 wave: Spyker's integer score `T - t_first`.
    pub spikes: bool,
}

/// [`Wta`] over `batch` samples and `t_len` steps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WtaDesc {
    pub batch: usize,
    pub t_len: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub x: Loc,
    pub y: Loc,
    pub k: usize,
    pub radius: usize,
    pub threshold: f32,
    pub spikes: bool,
}

/// Spyker's "infinite threshold" (`infinite(V, value)`): `y[t] = value` for `t < T - 1`,
/// `y[T - 1] = x[T - 1]`; `x`, `y` are `[T, B, features]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Infinite {
    pub x: BufId,
    pub y: BufId,
    pub features: usize,
    pub value: f32,
}

/// [`Infinite`] over `batch` samples and `t_len` steps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InfiniteDesc {
    pub batch: usize,
    pub t_len: usize,
    pub features: usize,
    pub x: Loc,
    pub y: Loc,
    pub value: f32,
}

/// What a device implements for spike waves.
pub trait WaveOps {
    /// See [`RankCodeDesc`].
    fn rank_code(&mut self, d: &RankCodeDesc) -> Result<()>;
    /// See [`InhibitDesc`].
    fn inhibit(&mut self, d: &InhibitDesc) -> Result<()>;
    /// See [`WtaDesc`].
    fn wta(&mut self, d: &WtaDesc) -> Result<()>;
    /// See [`InfiniteDesc`].
    fn infinite(&mut self, d: &InfiniteDesc) -> Result<()>;
}

/// The score no neuron has: Spyker's `Limits<F32>::min()` (`-FLT_MAX`) for potentials, 0
/// for a wave's integer scores.
pub fn wta_sentinel(spikes: bool) -> f32 {
    if spikes {
        0.0
    } else {
        f32::MIN
    }
}

/// Spyker's k-WTA score of every neuron `i < features` of one sample, `row(t)` its values
/// at step `t` (at least `features` of them) (`cpu/wta.cpp:40-85`). Potentials: `min`, `max` over the whole sample,
/// `diff = (max - min) * 2`, and from the first step `t` with `V > threshold`,
/// `f32(T - 1 - t) + (V - min) / diff` (those f32 operations in that order), else the
/// sentinel. A wave (`spikes`): `T - t_first` for the first nonzero step, else 0 (exact in
/// f32). CUDA's `snn_wta` computes the same, in the same order.
pub fn wta_scores<'a>(
    t_len: usize,
    features: usize,
    threshold: f32,
    spikes: bool,
    row: impl Fn(usize) -> &'a [f32],
) -> Vec<f32> {
    // The first step of every neuron that passes, found step by step (a step's values are
    // contiguous in the devices' layouts).
    let passes = |v: f32| if spikes { v != 0.0 } else { v > threshold };
    let mut first = vec![usize::MAX; features];
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    for t in 0..t_len {
        let r = &row(t)[..features];
        if !spikes {
            // Eight running extremes, so the loop vectorises: the minimum and maximum of a
            // set do not depend on the order (f32::min / max skip NaN either way).
            let (mut lo8, mut hi8) = ([lo; 8], [hi; 8]);
            let chunks = r.chunks_exact(8);
            for &v in chunks.remainder() {
                lo = lo.min(v);
                hi = hi.max(v);
            }
            for c in chunks {
                for k in 0..8 {
                    lo8[k] = lo8[k].min(c[k]);
                    hi8[k] = hi8[k].max(c[k]);
                }
            }
            for k in 0..8 {
                lo = lo.min(lo8[k]);
                hi = hi.max(hi8[k]);
            }
        }
        for (f, &v) in first.iter_mut().zip(r) {
            if *f == usize::MAX && passes(v) {
                *f = t;
            }
        }
    }
    if spikes {
        return first
            .iter()
            .map(|&t| match t {
                usize::MAX => 0.0,
                t => (t_len - t) as u16 as f32,
            })
            .collect();
    }
    let diff = (hi - lo) * 2.0;
    first
        .iter()
        .enumerate()
        .map(|(i, &t)| match t {
            usize::MAX => f32::MIN,
            t => (t_len - 1 - t) as f32 + (row(t)[i] - lo) / diff,
        })
        .collect()
}

/// Spyker's winner selection (`cpu/wta.cpp:128-182`) on one sample's `scores`
/// (`[channels, height, width]`, overwritten): up to `k` times, the first maximum in
/// `(c, y, x)` order (`std::max_element`: a later score wins only when greater), unless
/// it is within `1e-5` of the sentinel; then the sentinel over the `radius` square around
/// it in every map and over its whole map. Returns the winners' flat indices in order.
pub fn wta_select(
    scores: &mut [f32],
    (channels, height, width): (usize, usize, usize),
    k: usize,
    radius: usize,
    sentinel: f32,
) -> Vec<usize> {
    let plane = height * width;
    let mut winners = Vec::new();
    if scores.is_empty() {
        return winners;
    }
    for _ in 0..k.min(channels) {
        let mut idx = 0;
        for (i, &s) in scores.iter().enumerate().skip(1) {
            if scores[idx] < s {
                idx = i;
            }
        }
        if (scores[idx] - sentinel).abs() < 1e-5 {
            break;
        }
        winners.push(idx);
        let (z, y, x) = (idx / plane, idx % plane / width, idx % width);
        let (y0, y1) = (y.saturating_sub(radius), (y + radius).min(height - 1));
        let (x0, x1) = (x.saturating_sub(radius), (x + radius).min(width - 1));
        for c in 0..channels {
            for yy in y0..=y1 {
                scores[c * plane + yy * width + x0..=c * plane + yy * width + x1].fill(sentinel);
            }
        }
        scores[z * plane..(z + 1) * plane].fill(sentinel);
    }
    winners
}

/// The channel one pixel keeps, as Spyker's `inhibit` (`cpu/inhibit.cpp`) picks it:
/// `at(t, c)` is the potential of channel `c` at step `t`. Per step the maximum over the
/// channels and the lowest channel attaining it (an upward scan with a strict `>`);
/// `count` = the steps whose maximum is above `threshold`; the kept channel is the
/// maximum's at step `T - max(count, 1)`. For cumulative potentials that is the first
/// step at which any channel fires (the last step if none does). CUDA's `snn_inhibit` is
/// the same scan. `t_len` must be at least 1.
pub fn inhibit_keep(
    t_len: usize,
    channels: usize,
    threshold: f32,
    at: impl Fn(usize, usize) -> f32,
) -> usize {
    let argmax = |t: usize| {
        let (mut best, mut ch) = (at(t, 0), 0);
        for c in 1..channels {
            let v = at(t, c);
            if v > best {
                best = v;
                ch = c;
            }
        }
        (best, ch)
    };
    let count = (0..t_len).filter(|&t| argmax(t).0 > threshold).count();
    argmax(t_len - count.max(1)).1
}

/// Spyker's `Epsilon` (`base.h`): the coding window is `f32(T) + 1e-5`.
pub const EPSILON: f32 = 1e-5;

/// The first-spike time of every value of one sample, as Spyker's `code` computes it in
/// f32 and truncates to `u16` (a time `>= T` never fires). `sort = true`: the value ranked
/// `r` (descending; ties: lower index first) fires at `trunc(r * (end / n))`, `n` the
/// number of values above the sample's minimum, `end = f32(T) + 1e-5`; the minimum never
/// fires. `sort = false`: `trunc(fma(-end / (max - min), x - min, end))`. A sample whose
/// values are all equal fires everything at 0 (Spyker's NaN/inf cast to `u16` on x86).
/// CUDA's `snn_rank_code` is the same arithmetic, element by element.
pub fn first_spike_times(x: &[f32], t_len: usize, sort: bool) -> Vec<u32> {
    let end = t_len as f32 + EPSILON;
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    for &v in x {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if sort {
        let n = x.iter().filter(|&&v| v > lo).count();
        let scale = end / n as f32;
        // Descending, and stable: equal values keep their index order, which is the
        // CUDA kernel's count `#{u > v} + #{u == v before}` in O(n log n).
        let mut order: Vec<usize> = (0..x.len()).collect();
        order.sort_by(|&a, &b| x[b].partial_cmp(&x[a]).unwrap_or(std::cmp::Ordering::Equal));
        let mut times = vec![0u32; x.len()];
        for (rank, &i) in order.iter().enumerate() {
            times[i] = to_u16(rank as f32 * scale);
        }
        times
    } else {
        let scale = end / (hi - lo);
        x.iter()
            .map(|&v| to_u16((-scale).mul_add(v - lo, end)))
            .collect()
    }
}

/// Spyker's `f32 -> u16` conversion as the x86 wheel does it: through a 32-bit integer,
/// NaN and out-of-range values giving 0 (`cvttss2si`'s indefinite value truncated to
/// 16 bits), so an all-equal sample fires at 0; large ranks wrap modulo 65536.
pub fn to_u16(t: f32) -> u32 {
    if t.is_nan() || !(-2147483648.0..2147483648.0).contains(&t) {
        return 0;
    }
    (t as i32 as u32) & 0xffff
}

impl LibraryOp for RankCode {
    fn name(&self) -> &'static str {
        "rank_code"
    }
    fn check(&self, c: &Checker<'_>, in_loop: bool, what: &str) -> Result<()> {
        let (xd, yd) = c.whole_sequence(
            self.x,
            self.y,
            Extent::Static,
            in_loop,
            what,
            "codes a static",
        )?;
        c.features(xd, self.features, what)?;
        c.features(yd, self.features, what)
    }
    fn run(&self, r: &mut Runner<'_>) -> Result<()> {
        let (xs, ys) = (r.buf(self.x).slot, r.buf(self.y).slot);
        r.dev.rank_code(&RankCodeDesc {
            batch: r.batch,
            t_len: r.t_len,
            features: self.features,
            x: Loc::new(xs, 0),
            y: Loc::new(ys, 0),
            sort: self.sort,
        })
    }
    fn print(&self, p: &Plan) -> String {
        format!(
            "rank_code {} = latency({}, sort = {}) [{}] -> cumulative wave  (all T)",
            p.buffers[self.y].name, p.buffers[self.x].name, self.sort, self.features
        )
    }
}

impl LibraryOp for Inhibit {
    fn name(&self) -> &'static str {
        "inhibit"
    }
    fn check(&self, c: &Checker<'_>, in_loop: bool, what: &str) -> Result<()> {
        let (xd, yd) = c.whole_sequence(
            self.x,
            self.y,
            Extent::Seq,
            in_loop,
            what,
            "inhibits a sequence",
        )?;
        let features = self
            .channels
            .checked_mul(self.plane)
            .ok_or_else(|| RuntimeError::plan(format!("{what}: channels x plane overflows")))?;
        c.features(xd, features, what)?;
        c.features(yd, features, what)
    }
    fn run(&self, r: &mut Runner<'_>) -> Result<()> {
        let (xs, ys) = (r.buf(self.x).slot, r.buf(self.y).slot);
        r.dev.inhibit(&InhibitDesc {
            batch: r.batch,
            t_len: r.t_len,
            channels: self.channels,
            plane: self.plane,
            x: Loc::new(xs, 0),
            y: Loc::new(ys, 0),
            threshold: self.threshold,
        })
    }
    fn print(&self, p: &Plan) -> String {
        format!(
            "inhibit {} = inhibit({}, threshold = {:?}) [{} x {}] -> one channel per pixel  (all T)",
            p.buffers[self.y].name,
            p.buffers[self.x].name,
            self.threshold,
            self.channels,
            self.plane
        )
    }
}

impl LibraryOp for Wta {
    fn name(&self) -> &'static str {
        "wta"
    }
    fn check(&self, c: &Checker<'_>, in_loop: bool, what: &str) -> Result<()> {
        let (xd, yd) = c.whole_run(
            self.x,
            self.y,
            (Extent::Seq, Extent::Static),
            in_loop,
            what,
            "takes the winners of a sequence",
        )?;
        let fits = self.height >= 1
            && self.width >= 1
            && self
                .radius
                .checked_mul(2)
                .is_some_and(|d| d < self.height.max(self.width));
        if self.k == 0 || !fits {
            return Err(RuntimeError::plan(format!(
                "{what}: k = {} must be >= 1 and the radius {} square fit the {}x{} maps",
                self.k, self.radius, self.height, self.width
            )));
        }
        let features = self
            .channels
            .checked_mul(self.height)
            .and_then(|v| v.checked_mul(self.width))
            .ok_or_else(|| RuntimeError::plan(format!("{what}: channels x plane overflows")))?;
        c.features(xd, features, what)?;
        c.features(yd, features, what)
    }
    fn run(&self, r: &mut Runner<'_>) -> Result<()> {
        let (xs, ys) = (r.buf(self.x).slot, r.buf(self.y).slot);
        r.dev.wta(&WtaDesc {
            batch: r.batch,
            t_len: r.t_len,
            channels: self.channels,
            height: self.height,
            width: self.width,
            x: Loc::new(xs, 0),
            y: Loc::new(ys, 0),
            k: self.k,
            radius: self.radius,
            threshold: self.threshold,
            spikes: self.spikes,
        })
    }
    fn print(&self, p: &Plan) -> String {
        format!(
            "wta {} = wta({}, k = {}, radius = {}, threshold = {:?}) [{} x {}x{}] score {} -> winners 1, else 0  (all T)",
            p.buffers[self.y].name,
            p.buffers[self.x].name,
            self.k,
            self.radius,
            self.threshold,
            self.channels,
            self.height,
            self.width,
            if self.spikes { "T - first spike" } else { "first step above threshold + potential" }
        )
    }
}

impl LibraryOp for Infinite {
    fn name(&self) -> &'static str {
        "infinite"
    }
    fn check(&self, c: &Checker<'_>, in_loop: bool, what: &str) -> Result<()> {
        let (xd, yd) = c.whole_sequence(
            self.x,
            self.y,
            Extent::Seq,
            in_loop,
            what,
            "keeps the last step of a sequence",
        )?;
        c.features(xd, self.features, what)?;
        c.features(yd, self.features, what)
    }
    fn run(&self, r: &mut Runner<'_>) -> Result<()> {
        let (xs, ys) = (r.buf(self.x).slot, r.buf(self.y).slot);
        r.dev.infinite(&InfiniteDesc {
            batch: r.batch,
            t_len: r.t_len,
            features: self.features,
            x: Loc::new(xs, 0),
            y: Loc::new(ys, 0),
            value: self.value,
        })
    }
    fn print(&self, p: &Plan) -> String {
        format!(
            "infinite {} = infinite({}, value = {:?}) [{}] -> steps < T-1 set, T-1 kept  (all T)",
            p.buffers[self.y].name, p.buffers[self.x].name, self.value, self.features
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inhibit_keeps_the_first_firing_then_the_larger_then_the_lower_channel() {
        // [T = 3][C = 3] potentials of one pixel, threshold 1.
        let keep = |v: [[f32; 3]; 3]| inhibit_keep(3, 3, 1.0, |t, c| v[t][c]);
        // Channel 2 crosses at t = 1, channel 0 only at t = 2 with more.
        assert_eq!(keep([[0.0, 0.0, 0.5], [0.0, 0.0, 2.0], [9.0, 0.0, 2.0]]), 2);
        // Both cross at t = 1: the larger at that step wins.
        assert_eq!(keep([[0.0; 3], [1.5, 0.0, 2.0], [9.0, 0.0, 2.0]]), 2);
        // An exact tie at the first firing step: the lower channel.
        assert_eq!(keep([[0.0; 3], [0.0, 2.0, 2.0], [0.0, 2.0, 2.0]]), 1);
        // Never above the threshold: the largest at T - 1.
        assert_eq!(keep([[0.0; 3], [0.0, 0.5, 0.0], [0.2, 0.5, 0.9]]), 2);
    }

    #[test]
    fn wta_scores_take_the_first_step_above_the_threshold_plus_half_the_potential() {
        // [T = 3][4] values; min 0, max 4: diff 8.
        let v = [
            [0.0, 0.0, 1.0, 0.0],
            [0.0, 2.0, 4.0, 0.0],
            [0.0, 2.0, 4.0, 0.5],
        ];
        let s = wta_scores(3, 4, 0.0, false, |t| &v[t][..]);
        assert_eq!(s, [f32::MIN, 1.0 + 2.0 / 8.0, 2.0 + 1.0 / 8.0, 0.5 / 8.0]);
        // A wave: T - t_first, 0 if silent.
        let w01: Vec<Vec<f32>> = v
            .iter()
            .map(|r| r.iter().map(|&x| (x > 0.0) as u8 as f32).collect())
            .collect();
        let w = wta_scores(3, 4, 0.0, true, |t| &w01[t][..]);
        assert_eq!(w, [0.0, 2.0, 3.0, 1.0]);
    }

    #[test]
    fn wta_selects_first_maxima_one_per_map_and_clears_the_radius_square() {
        // [C = 2][H = 1][W = 4].
        let mut s = [1.0, 3.0, 3.0, 0.0, 2.0, 0.5, 0.0, 3.0];
        // First maximum (0, 0, 1); radius 1 clears x 0..=2 in both maps and map 0: then
        // (1, 0, 3) is left.
        assert_eq!(wta_select(&mut s, (2, 1, 4), 5, 1, f32::MIN), [1, 7]);
        // Only sentinels left: no winner.
        let mut s = [f32::MIN; 4];
        assert_eq!(
            wta_select(&mut s, (2, 1, 2), 2, 0, f32::MIN),
            Vec::<usize>::new()
        );
    }

    #[test]
    fn times_convert_to_u16_as_spykers_x86_wheel() {
        assert_eq!(to_u16(3.99), 3);
        assert_eq!(to_u16(-0.5), 0);
        assert_eq!(to_u16(f32::NAN), 0);
        assert_eq!(to_u16(f32::INFINITY), 0);
        assert_eq!(to_u16(65537.0), 1);
        assert_eq!(to_u16(3e9), 0);
    }

    #[test]
    fn ranks_break_ties_by_lower_index_and_the_minimum_never_fires() {
        // n = 3 values above the minimum 0; T = 3: scale = (3 + 1e-5) / 3 just above 1.
        let t = first_spike_times(&[0.5, 0.0, 0.9, 0.5], 3, true);
        assert_eq!(t, [1, 3, 0, 2]);
        // All equal: NaN / inf times fire at 0, both modes.
        assert_eq!(first_spike_times(&[0.0; 4], 3, true), [0; 4]);
        assert_eq!(first_spike_times(&[0.0; 4], 3, false), [0; 4]);
        // By value: the maximum at 0, the minimum at T (never).
        assert_eq!(first_spike_times(&[0.0, 1.0, 0.5], 4, false), [4, 0, 2]);
    }
}
