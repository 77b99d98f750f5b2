//! The output step of Spyker's image filters (DoG, LoG, Gabor): the filter itself is a
//! frozen [`super::conv::Conv2d`] whose raw channels this op combines, rectifies and
//! thresholds, as Spyker does after its convolution (docs/spyker.md, "Filters").

use super::LibraryOp;
use crate::device::Loc;
use crate::error::{Result, RuntimeError};
use crate::exec::interp::Runner;
use crate::exec::validate::{sat, Checker};
use crate::plan::{BufId, Plan, TimeSel};
use serde::{Deserialize, Serialize};

/// What one filter bank does with its `2n` (DoG, LoG) or `n` (Gabor) raw conv channels
/// per input channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FilterStep {
    /// `out[i] = max(raw[i] - raw[n + i], 0)`: `n` channels.
    Dog,
    /// `d = raw[i] - raw[n + i]`; `out[i] = max(d, 0)` (ON), `out[n + i] = max(-d, 0)`
    /// (OFF): `2n` channels.
    Log,
    /// `out[i] = raw[i]`, not rectified: `n` channels.
    Plain,
}

impl FilterStep {
    /// Raw conv channels per input channel for `n` filters.
    pub fn raw_channels(self, n: usize) -> usize {
        match self {
            FilterStep::Dog | FilterStep::Log => 2 * n,
            FilterStep::Plain => n,
        }
    }
    /// Output channels per input channel for `n` filters.
    pub fn out_channels(self, n: usize) -> usize {
        match self {
            FilterStep::Dog | FilterStep::Plain => n,
            FilterStep::Log => 2 * n,
        }
    }
    pub fn code(self) -> u64 {
        match self {
            FilterStep::Dog => 0,
            FilterStep::Log => 1,
            FilterStep::Plain => 2,
        }
    }
}

/// `y = step(x)` per image, then (with `threshold`) Spyker's `threshold`: every value
/// `<= threshold` becomes 0. `x` is `[groups * raw_channels(n), plane]` per image, `y`
/// `[groups * out_channels(n), plane]`; group `g`'s output channel `i` is `g *
/// out_channels(n) + i` (Spyker's order: input channel outer).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FilterOut {
    pub x: BufId,
    pub y: BufId,
    pub step: FilterStep,
    /// Input channels (each filtered by the same bank).
    pub groups: usize,
    /// Filters in the bank.
    pub n: usize,
    /// Pixels per channel (`h_out * w_out`).
    pub plane: usize,
    pub threshold: Option<f32>,
    pub time: TimeSel,
}

/// [`FilterOut`] over `images` contiguous images.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FilterDesc {
    pub images: usize,
    pub x: Loc,
    pub y: Loc,
    pub step: FilterStep,
    pub groups: usize,
    pub n: usize,
    pub plane: usize,
    pub threshold: Option<f32>,
}

impl FilterDesc {
    /// Elements per image of `x` and of `y`.
    pub fn features(&self) -> Result<(usize, usize)> {
        let per = |c: usize| {
            self.groups
                .checked_mul(c)
                .and_then(|v| v.checked_mul(self.plane))
                .ok_or_else(|| RuntimeError::Device("filter_out: size overflows".into()))
        };
        Ok((
            per(self.step.raw_channels(self.n))?,
            per(self.step.out_channels(self.n))?,
        ))
    }
}

/// What a device implements for the filters' output step.
pub trait FilterOps {
    /// See [`FilterDesc`].
    fn filter_out(&mut self, d: &FilterDesc) -> Result<()>;
}

impl LibraryOp for FilterOut {
    fn name(&self) -> &'static str {
        "filter_out"
    }
    fn check(&self, c: &Checker<'_>, in_loop: bool, what: &str) -> Result<()> {
        let (xd, yd) = c.io_pair(self.x, self.y, self.time, in_loop, what)?;
        if self.groups == 0 || self.n == 0 || self.plane == 0 {
            return Err(RuntimeError::plan(format!(
                "{what}: groups, filters and plane must be >= 1"
            )));
        }
        if self.threshold.is_some_and(|t| !t.is_finite()) {
            return Err(RuntimeError::plan(format!("{what}: threshold not finite")));
        }
        c.features(
            xd,
            sat(&[self.groups, self.step.raw_channels(self.n), self.plane]),
            what,
        )?;
        c.features(
            yd,
            sat(&[self.groups, self.step.out_channels(self.n), self.plane]),
            what,
        )
    }
    fn run(&self, r: &mut Runner<'_>) -> Result<()> {
        let (xs, ys) = (r.buf(self.x).slot, r.buf(self.y).slot);
        for b in r.blocks(self.time, self.x, self.y) {
            r.dev.filter_out(&FilterDesc {
                images: b.rows,
                x: Loc::new(xs, b.x),
                y: Loc::new(ys, b.y),
                step: self.step,
                groups: self.groups,
                n: self.n,
                plane: self.plane,
                threshold: self.threshold,
            })?;
        }
        Ok(())
    }
    fn print(&self, p: &Plan) -> String {
        let step = match self.step {
            FilterStep::Dog => "dog: max(g1 - g2, 0)",
            FilterStep::Log => "log: on max(g1 - g2, 0), off max(g2 - g1, 0)",
            FilterStep::Plain => "plain",
        };
        let thr = self
            .threshold
            .map(|t| format!(", <= {t:?} -> 0"))
            .unwrap_or_default();
        format!(
            "filter_out {} = {} ({step}{thr}) {} group(s) x {} filter(s) x {} px  ({})",
            p.buffers[self.y].name,
            p.buffers[self.x].name,
            self.groups,
            self.n,
            self.plane,
            super::time_text(&self.time)
        )
    }
}
