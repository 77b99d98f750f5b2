//! Dense projections: `y = x @ W^T (+ bias)` (torch `Linear`) and its two backward ops.

use super::{acc_text, bias_text, time_text, LibraryOp};
use crate::device::Loc;
use crate::error::Result;
use crate::exec::interp::Runner;
use crate::exec::validate::Checker;
use crate::plan::{BufId, Plan, TimeSel, WeightId};
use serde::{Deserialize, Serialize};

/// `y[rows, n] (+)= x[rows, k] @ W^T (+ bias)`, `W` is `[n, k]` (torch Linear).
/// `sparse`: `x` holds spikes (mostly zeros), so the device runs the event-driven form,
/// `y[r, :] (+)= bias + sum over the non-zero x[r, i] of x[r, i] * W[:, i]`: the same
/// result up to the summation order, for any `x`; the compiler's cost model sets it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Gemm {
    pub x: BufId,
    pub w: WeightId,
    pub bias: Option<WeightId>,
    pub y: BufId,
    pub k: usize,
    pub n: usize,
    pub time: TimeSel,
    pub accumulate: bool,
    pub sparse: bool,
}

/// Backward of [`Gemm`] for its input: `dx[rows, k] (+)= dy[rows, n] @ W`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GemmDx {
    pub dy: BufId,
    pub w: WeightId,
    pub dx: BufId,
    pub k: usize,
    pub n: usize,
    pub time: TimeSel,
    pub accumulate: bool,
}

/// Backward of [`Gemm`] for its weights: the gradient of `w` gets
/// `+= dy[rows, n]^T @ x[rows, k]` and that of `bias` gets `+= sum over rows of dy`.
/// `sparse`: `x` holds spikes; event-driven over its non-zeros (as for [`Gemm`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GemmDw {
    pub x: BufId,
    pub dy: BufId,
    pub w: WeightId,
    pub bias: Option<WeightId>,
    pub k: usize,
    pub n: usize,
    pub time: TimeSel,
    pub sparse: bool,
}

/// `y[rows, n] (+)= x[rows, k] @ W^T (+ bias)`; `W` is `[n, k]` row-major, `x` and `y` are
/// contiguous row-major blocks. The bias is added once. `sparse`: `x` is mostly zeros
/// (spikes): run over its non-zeros (see [`Gemm`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmDesc {
    pub rows: usize,
    pub k: usize,
    pub n: usize,
    pub x: Loc,
    pub y: Loc,
    pub w: WeightId,
    pub bias: Option<WeightId>,
    pub accumulate: bool,
    pub sparse: bool,
}

/// Backward of a GEMM for its input: `dx[rows, k] (+)= dy[rows, n] @ W`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmDxDesc {
    pub rows: usize,
    pub k: usize,
    pub n: usize,
    pub dy: Loc,
    pub dx: Loc,
    pub w: WeightId,
    pub accumulate: bool,
}

/// Backward of a GEMM for its weights: the gradient of `w` gets `+= dy^T @ x`, that of
/// `bias` `+= sum over rows of dy`. `sparse`: over the non-zeros of `x` only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmDwDesc {
    pub rows: usize,
    pub k: usize,
    pub n: usize,
    pub x: Loc,
    pub dy: Loc,
    pub w: WeightId,
    pub bias: Option<WeightId>,
    pub sparse: bool,
}

/// What a device implements for dense projections.
pub trait DenseOps {
    /// See [`GemmDesc`].
    fn gemm(&mut self, d: &GemmDesc) -> Result<()>;
    /// See [`GemmDxDesc`].
    fn gemm_dx(&mut self, d: &GemmDxDesc) -> Result<()>;
    /// See [`GemmDwDesc`]; accumulates into the weight gradients.
    fn gemm_dw(&mut self, d: &GemmDwDesc) -> Result<()>;
}

/// The buffers and weights of a dense op: `x [.., k]`, `y [.., n]`, `W [n, k]`, bias `[n]`.
fn check_dense(
    c: &Checker<'_>,
    (x, y): (BufId, BufId),
    (w, bias): (WeightId, Option<WeightId>),
    (k, n): (usize, usize),
    time: TimeSel,
    in_loop: bool,
    what: &str,
) -> Result<()> {
    let (xd, yd) = c.io_pair(x, y, time, in_loop, what)?;
    c.features(xd, k, what)?;
    c.features(yd, n, what)?;
    c.weight_shape(w, &[n, k], what)?;
    if let Some(bi) = bias {
        c.weight_shape(bi, &[n], what)?;
    }
    Ok(())
}

impl LibraryOp for Gemm {
    fn name(&self) -> &'static str {
        "gemm"
    }
    fn check(&self, c: &Checker<'_>, in_loop: bool, what: &str) -> Result<()> {
        let io = (self.x, self.y);
        check_dense(
            c,
            io,
            (self.w, self.bias),
            (self.k, self.n),
            self.time,
            in_loop,
            what,
        )
    }
    fn run(&self, r: &mut Runner<'_>) -> Result<()> {
        let (xs, ys) = (r.buf(self.x).slot, r.buf(self.y).slot);
        for b in r.blocks(self.time, self.x, self.y) {
            r.probe_input(self.w, Loc::new(xs, b.x), b.rows * self.k)?;
            r.dev.gemm(&GemmDesc {
                rows: b.rows,
                k: self.k,
                n: self.n,
                x: Loc::new(xs, b.x),
                y: Loc::new(ys, b.y),
                w: self.w,
                bias: self.bias,
                accumulate: self.accumulate,
                sparse: self.sparse,
            })?;
        }
        Ok(())
    }
    fn print(&self, p: &Plan) -> String {
        let (k, n) = (self.k, self.n);
        format!(
            "gemm {} {}= {} [.., {k}] @ {}^T [{k} -> {n}]{}  ({}){}",
            p.buffers[self.y].name,
            acc_text(self.accumulate),
            p.buffers[self.x].name,
            p.weights[self.w].name,
            bias_text(p, self.bias),
            time_text(&self.time),
            if self.sparse { "  event-driven" } else { "" }
        )
    }
}

impl LibraryOp for GemmDx {
    fn name(&self) -> &'static str {
        "gemm_dx"
    }
    fn check(&self, c: &Checker<'_>, in_loop: bool, what: &str) -> Result<()> {
        // The forward op's row mapping: dx plays x, dy plays y.
        let io = (self.dx, self.dy);
        check_dense(
            c,
            io,
            (self.w, None),
            (self.k, self.n),
            self.time,
            in_loop,
            what,
        )
    }
    fn run(&self, r: &mut Runner<'_>) -> Result<()> {
        let (xs, ys) = (r.buf(self.dx).slot, r.buf(self.dy).slot);
        for b in r.blocks(self.time, self.dx, self.dy) {
            r.dev.gemm_dx(&GemmDxDesc {
                rows: b.rows,
                k: self.k,
                n: self.n,
                dx: Loc::new(xs, b.x),
                dy: Loc::new(ys, b.y),
                w: self.w,
                accumulate: self.accumulate,
            })?;
        }
        Ok(())
    }
    fn print(&self, p: &Plan) -> String {
        let (k, n) = (self.k, self.n);
        format!(
            "gemm_dx {} {}= {} [.., {n}] @ {} [{n} -> {k}]  ({})",
            p.buffers[self.dx].name,
            acc_text(self.accumulate),
            p.buffers[self.dy].name,
            p.weights[self.w].name,
            match self.time {
                // dx plays the source: row t of dy goes to row t - delay.
                TimeSel::Step { delay } if delay > 0 => format!("step t, into t-{delay}"),
                t => time_text(&t),
            }
        )
    }
}

impl LibraryOp for GemmDw {
    fn name(&self) -> &'static str {
        "gemm_dw"
    }
    fn check(&self, c: &Checker<'_>, in_loop: bool, what: &str) -> Result<()> {
        let io = (self.x, self.dy);
        check_dense(
            c,
            io,
            (self.w, self.bias),
            (self.k, self.n),
            self.time,
            in_loop,
            what,
        )
    }
    fn run(&self, r: &mut Runner<'_>) -> Result<()> {
        let (xs, ys) = (r.buf(self.x).slot, r.buf(self.dy).slot);
        for b in r.blocks(self.time, self.x, self.dy) {
            r.dev.gemm_dw(&GemmDwDesc {
                rows: b.rows,
                k: self.k,
                n: self.n,
                x: Loc::new(xs, b.x),
                dy: Loc::new(ys, b.y),
                w: self.w,
                bias: self.bias,
                sparse: self.sparse,
            })?;
        }
        Ok(())
    }
    fn print(&self, p: &Plan) -> String {
        let dy = &p.buffers[self.dy].name;
        let bias = self
            .bias
            .map(|i| format!(", grad {} += rowsum({dy})", p.weights[i].name))
            .unwrap_or_default();
        format!(
            "gemm_dw grad {} += {dy}^T @ {}{bias}  ({}){}",
            p.weights[self.w].name,
            p.buffers[self.x].name,
            time_text(&self.time),
            if self.sparse { "  event-driven" } else { "" }
        )
    }
}
