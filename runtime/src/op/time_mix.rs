//! Mixing over the time axis (the parallel schedule: one `[T, T] x [T, B*F]` product), its
//! two backward ops, and the host-side builders of the time matrix and bias, which the
//! interpreter makes from weights, parameters or a response buffer at each call.

use super::{acc_text, LibraryOp};
use crate::device::Loc;
use crate::error::{fmt_shape, Result, RuntimeError};
use crate::exec::interp::{buffer_len, Runner};
use crate::exec::validate::Checker;
use crate::plan::{BufId, Extent, Plan, TimeSel, WeightId};
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// The `[T, T]` matrix `A` of a [`TimeMix`] (row = output step, column = input step).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum TimeMatrix {
    /// `A = W`, a `[T0, T0]` weight: every step reads every step (PSN). Runs only at `T = T0`.
    Weight { w: WeightId },
    /// `A = (lambda * band_k + (1 - lambda)) * W` elementwise, `band_k[t][j] = 1` iff
    /// `t - k < j <= t`; `lambda` is the flat parameter at index `lambda` (masked PSN: the
    /// mask is annealed from 0 to 1 during training). `[T0, T0]` weight, runs only at `T0`.
    Masked {
        w: WeightId,
        k: usize,
        lambda: usize,
    },
    /// Causal Toeplitz band of a `[k]` weight: `A[t][j] = w[k - 1 - (t - j)]` for
    /// `0 <= t - j < k` (sliding PSN, a causal FIR filter over time): any `T`.
    Band { w: WeightId, k: usize },
    /// Causal Toeplitz of a response computed in the plan: `A[t][j] = r[t - j]`, where
    /// `r[n]` is element `(n, 0, 0)` of the `Seq` buffer `r` (features 1): the impulse
    /// response of a linear recurrence (a resetless LIF's decay `a^n b`).
    Response { r: BufId },
}

impl TimeMatrix {
    /// The weight the matrix is made of (none for a response).
    pub fn weight(&self) -> Option<WeightId> {
        match *self {
            TimeMatrix::Weight { w }
            | TimeMatrix::Masked { w, .. }
            | TimeMatrix::Band { w, .. } => Some(w),
            TimeMatrix::Response { .. } => None,
        }
    }
}

/// The per-step bias of a [`TimeMix`]: `bias[t]` is added to every column of row `t`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum TimeBias {
    /// A `[T0, 1]` weight (PSN, masked PSN): one value per step; runs only at `T0`.
    Weight(WeightId),
    /// A `[]` weight (one value, sliding PSN) added at every step.
    Scalar(WeightId),
    /// Element `(t, 0, 0)` of a `Seq` buffer (features 1): a linear recurrence's response
    /// to its initial state and constant drive.
    Response(BufId),
}

impl TimeBias {
    /// The weight the bias is (none for a response).
    pub fn weight(&self) -> Option<WeightId> {
        match *self {
            TimeBias::Weight(w) | TimeBias::Scalar(w) => Some(w),
            TimeBias::Response(_) => None,
        }
    }
}

/// Mixing over the time axis: `y[t, c] (+)= sum_j A[t][j] * x[j, c] (+ bias[t])` for
/// every column `c` of the `B * F` values of a step (the parallel schedule: one GEMM
/// `[T, T] x [T, B*F]`). `TimeSel::All { delay: 0 }` computes every row;
/// `TimeSel::Step { delay: 0 }` inside a step loop computes row `t` only, reading rows
/// `<= t` (a causal matrix only: `Band` or `Response`). A `Static` `x` is the same at
/// every step: `y[t] = (sum_j A[t][j]) x + bias[t]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TimeMix {
    pub x: BufId,
    pub y: BufId,
    pub matrix: TimeMatrix,
    pub bias: Option<TimeBias>,
    pub time: TimeSel,
    pub accumulate: bool,
}

/// Backward of [`TimeMix`] for its input: `dx[j, c] (+)= sum_t A[t][j] * dy[t, c]`
/// (`A^T dy` over all T rows); a `Static` `dx` gets `sum_t (sum_j A[t][j]) dy[t, c]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TimeMixDx {
    pub dy: BufId,
    pub dx: BufId,
    pub matrix: TimeMatrix,
    pub accumulate: bool,
}

/// Backward of [`TimeMix`] for its learnable matrix and bias. With
/// `G[t][j] = sum_c dy[t, c] * x[j, c]`: a `Weight` matrix's gradient gets `+= G`, a
/// `Masked` one `+= G * (lambda * band_k + 1 - lambda)`, a `Band`'s `[k]` weight
/// `grad[k - 1 - d] += sum_t G[t][t - d]` (the sum along each diagonal); a `Weight` bias
/// gets `+= sum_c dy[t, c]` per row, a `Scalar` one the sum over every row. A `Response`
/// matrix has no weight (nothing to do for it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TimeMixDw {
    pub x: BufId,
    pub dy: BufId,
    pub matrix: TimeMatrix,
    pub bias: Option<TimeBias>,
}

/// Mixing over time rows: `y[rows_out, cols] (+)= a[rows_out, rows_in] @ x[rows_in, cols]
/// (+ bias[rows_out], broadcast over the columns)`. `a` and `bias` are host slices (the
/// interpreter builds the matrix from weights, parameters or a response buffer); `x` and
/// `y` are contiguous row-major blocks in distinct slots. The bias is added once.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TimeMixDesc<'a> {
    pub rows_out: usize,
    pub rows_in: usize,
    pub cols: usize,
    pub a: &'a [f32],
    pub bias: Option<&'a [f32]>,
    pub x: Loc,
    pub y: Loc,
    pub accumulate: bool,
}

/// The backward of a time mix for its matrix: `g[t * rows_in + j] = sum_c dy[t, c] *
/// x[j, c]` for `t < rows_out`, `j < rows_in`, and the row sums `sum_c dy[t, c]`; both come
/// back to the host (they are `T x T` and `T` values). With `band = Some(k)` only the
/// entries with `0 <= t - j < k` are read by the caller (the rest may hold anything).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeMixDwDesc {
    pub rows_out: usize,
    pub rows_in: usize,
    pub cols: usize,
    pub dy: Loc,
    pub x: Loc,
    pub band: Option<usize>,
}

/// What a device implements for time mixing.
pub trait TimeMixOps {
    /// See [`TimeMixDesc`].
    fn time_mix(&mut self, d: &TimeMixDesc<'_>) -> Result<()>;
    /// See [`TimeMixDwDesc`]: `g` gets the `rows_out x rows_in` products, `sums` (when
    /// given, `rows_out` long) the row sums of `dy`.
    fn time_mix_dw(
        &mut self,
        d: &TimeMixDwDesc,
        g: &mut [f32],
        sums: Option<&mut [f32]>,
    ) -> Result<()>;
}

// ---------------------------------------------------------------------------------------
// Validation

/// A time matrix's weights and parameters (`out_slot`: the op's output, which a response
/// buffer must not share); `Some(T0)` for a `[T0, T0]` weight.
fn check_matrix(
    c: &Checker<'_>,
    matrix: &TimeMatrix,
    out_slot: usize,
    what: &str,
) -> Result<Option<usize>> {
    let square = |w: WeightId| -> Result<usize> {
        let d = c.weight(w, what)?;
        match d.shape.as_slice() {
            [a, b] if a == b && *a > 0 => Ok(*a),
            _ => Err(RuntimeError::plan(format!(
                "{what}: weight `{}` has shape {}, a time matrix is [T, T]",
                d.name,
                fmt_shape(&d.shape)
            ))),
        }
    };
    Ok(match *matrix {
        TimeMatrix::Weight { w } => Some(square(w)?),
        TimeMatrix::Masked { w, k, lambda } => {
            if k == 0 || lambda >= c.plan.params.len() {
                return Err(RuntimeError::plan(format!(
                    "{what}: a masked matrix needs k >= 1 and a parameter (k = {k}, parameter {lambda})"
                )));
            }
            Some(square(w)?)
        }
        TimeMatrix::Band { w, k } => {
            if k == 0 {
                return Err(RuntimeError::plan(format!("{what}: band of width 0")));
            }
            c.weight_shape(w, &[k], what)?;
            None
        }
        TimeMatrix::Response { r } => {
            check_response(c, r, out_slot, what)?;
            None
        }
    })
}

fn check_response(c: &Checker<'_>, r: BufId, out_slot: usize, what: &str) -> Result<()> {
    let d = c.buf(r, what)?;
    if d.extent != Extent::Seq || d.features != 1 {
        return Err(RuntimeError::plan(format!(
            "{what}: response buffer `{}` must be Seq with 1 feature",
            d.name
        )));
    }
    if d.slot == out_slot {
        return Err(RuntimeError::plan(format!(
            "{what}: response buffer `{}` shares the output's slot",
            d.name
        )));
    }
    Ok(())
}

fn check_bias(
    c: &Checker<'_>,
    bias: &TimeBias,
    steps: Option<usize>,
    out_slot: usize,
    what: &str,
) -> Result<()> {
    match *bias {
        TimeBias::Weight(b) => match steps {
            Some(n) => c.weight_shape(b, &[n, 1], what)?,
            None => {
                return Err(RuntimeError::plan(format!(
                    "{what}: a per-step bias weight needs a [T, T] weight matrix"
                )))
            }
        },
        TimeBias::Scalar(b) => {
            let d = c.weight(b, what)?;
            if d.numel() != 1 {
                return Err(RuntimeError::plan(format!(
                    "{what}: scalar bias `{}` has shape {}",
                    d.name,
                    fmt_shape(&d.shape)
                )));
            }
        }
        TimeBias::Response(r) => check_response(c, r, out_slot, what)?,
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Host-side builders of the matrix and bias

/// A `[T0, T0]` weight or bias used at `t_len` steps: only `t_len == T0` is defined.
fn check_steps(p: &Plan, w: WeightId, n: usize, t_len: usize) -> Result<()> {
    if n != t_len {
        return Err(RuntimeError::InvalidArgument(format!(
            "weight `{}` mixes {n} time steps: this model runs only at T = {n}, not T = {t_len} \
             (a SlidingPSN runs at any T)",
            p.weights[w].name
        )));
    }
    Ok(())
}

/// The first column (`(n, 0, 0)` for `n < t_len`) of a `Seq` buffer with one feature.
fn column(r: &mut Runner<'_>, buf: BufId) -> Result<Vec<f32>> {
    let d = &r.plan.buffers[buf];
    let (t_len, b) = (r.t_len, r.batch);
    let mut data = vec![0.0; buffer_len(d, t_len, b)?];
    r.dev.download(Loc::new(d.slot, 0), &mut data)?;
    Ok((0..t_len).map(|n| data[n * b * d.features]).collect())
}

/// Rows `rows` of the matrix, columns `0..t_len`.
fn matrix_rows(r: &mut Runner<'_>, m: &TimeMatrix, rows: Range<usize>) -> Result<Vec<f32>> {
    let t_len = r.t_len;
    let mut a = vec![0.0f32; rows.len() * t_len];
    let response = match m {
        TimeMatrix::Response { r: buf } => Some(column(r, *buf)?),
        _ => None,
    };
    let w = |id: WeightId| r.weights[id].as_slice();
    for (i, t) in rows.enumerate() {
        let row = &mut a[i * t_len..(i + 1) * t_len];
        match *m {
            TimeMatrix::Weight { w: id } => {
                check_steps(r.plan, id, r.plan.weights[id].shape[0], t_len)?;
                row.copy_from_slice(&w(id)[t * t_len..(t + 1) * t_len]);
            }
            TimeMatrix::Masked { w: id, k, lambda } => {
                check_steps(r.plan, id, r.plan.weights[id].shape[0], t_len)?;
                let l = r.params[lambda];
                let src = &w(id)[t * t_len..(t + 1) * t_len];
                for (j, v) in row.iter_mut().enumerate() {
                    // SpikingJelly: lambda >= 1 is the plain band (weight * mask0).
                    let band = if j <= t && t - j < k { 1.0f32 } else { 0.0 };
                    *v = if l >= 1.0 {
                        src[j] * band
                    } else {
                        (l * band + (1.0 - l)) * src[j]
                    };
                }
            }
            TimeMatrix::Band { w: id, k } => {
                let wv = w(id);
                for d in 0..k.min(t + 1) {
                    row[t - d] = wv[k - 1 - d];
                }
            }
            TimeMatrix::Response { .. } => {
                let resp = response.as_deref().unwrap_or(&[]);
                for j in 0..=t {
                    row[j] = resp[t - j];
                }
            }
        }
    }
    Ok(a)
}

/// Rows `rows` of the bias.
fn bias_rows(r: &mut Runner<'_>, bias: &TimeBias, rows: Range<usize>) -> Result<Vec<f32>> {
    Ok(match *bias {
        TimeBias::Weight(id) => {
            check_steps(r.plan, id, r.weights[id].len(), r.t_len)?;
            r.weights[id][rows].to_vec()
        }
        TimeBias::Scalar(id) => vec![r.weights[id][0]; rows.len()],
        TimeBias::Response(buf) => column(r, buf)?[rows].to_vec(),
    })
}

// ---------------------------------------------------------------------------------------
// The ops

/// The matrix and bias of a time mix as dumps print them.
fn mix_text(p: &Plan, matrix: &TimeMatrix, bias: &Option<TimeBias>) -> (String, String) {
    let wn = |i: usize| p.weights[i].name.clone();
    let b = |i: usize| p.buffers[i].name.clone();
    let a = match *matrix {
        TimeMatrix::Weight { w } => format!("{} [T, T]", wn(w)),
        TimeMatrix::Masked { w, k, lambda } => format!(
            "({} * band{k}(param.{})) [T, T]",
            wn(w),
            p.params[lambda].name
        ),
        TimeMatrix::Band { w, k } => format!("band({}) [k={k}]", wn(w)),
        TimeMatrix::Response { r } => format!("toeplitz({})", b(r)),
    };
    let bias = match bias {
        None => String::new(),
        Some(TimeBias::Weight(w)) => format!(" + {}[t]", wn(*w)),
        Some(TimeBias::Scalar(w)) => format!(" + {}", wn(*w)),
        Some(TimeBias::Response(r)) => format!(" + {}[t]", b(*r)),
    };
    (a, bias)
}

/// The matrix's and bias's weights, which the interpreter reads on the host.
fn reads(matrix: &TimeMatrix, bias: &Option<TimeBias>) -> Vec<WeightId> {
    matrix
        .weight()
        .into_iter()
        .chain(bias.and_then(|b| b.weight()))
        .collect()
}

impl LibraryOp for TimeMix {
    fn name(&self) -> &'static str {
        "time_mix"
    }
    fn check(&self, c: &Checker<'_>, in_loop: bool, what: &str) -> Result<()> {
        let (xd, yd) = c.io_pair(self.x, self.y, self.time, in_loop, what)?;
        let delayed =
            matches!(self.time, TimeSel::All { delay } | TimeSel::Step { delay } if delay != 0);
        if yd.extent != Extent::Seq || delayed {
            return Err(RuntimeError::plan(format!(
                "{what}: the output must be a sequence and the delay 0"
            )));
        }
        c.features(xd, yd.features, what)?;
        let steps = check_matrix(c, &self.matrix, yd.slot, what)?;
        if in_loop && !matches!(self.matrix, TimeMatrix::Band { .. }) {
            return Err(RuntimeError::plan(format!(
                "{what}: only a band matrix (causal, finite) runs step by step"
            )));
        }
        if let Some(bi) = &self.bias {
            check_bias(c, bi, steps, yd.slot, what)?;
        }
        Ok(())
    }
    fn run(&self, r: &mut Runner<'_>) -> Result<()> {
        let (xd, yd) = (r.buf(self.x).clone(), r.buf(self.y).clone());
        let t_len = r.t_len;
        let cols = r.batch * yd.features;
        let x_static = xd.extent != Extent::Seq;
        // Output rows, and the first input row the matrix touches.
        let (rows, j0) = match (self.time, r.step) {
            (TimeSel::Step { .. }, Some(t)) => match self.matrix {
                TimeMatrix::Band { k, .. } => (t..t + 1, (t + 1).saturating_sub(k)),
                _ => (t..t + 1, 0),
            },
            _ => (0..t_len, 0),
        };
        let full = matrix_rows(r, &self.matrix, rows.clone())?;
        let bias = match &self.bias {
            Some(bi) => Some(bias_rows(r, bi, rows.clone())?),
            None => None,
        };
        let ro = rows.len();
        // A static input is the same at every step: one input row, the row sums.
        let (a, ri, x0) = if x_static {
            let sums = full.chunks(t_len).map(|r| r.iter().sum()).collect();
            (sums, 1, 0)
        } else {
            let ri = rows.end - j0;
            let mut a = Vec::with_capacity(ro * ri);
            for row in full.chunks(t_len) {
                a.extend_from_slice(&row[j0..rows.end]);
            }
            (a, ri, j0 * cols)
        };
        r.dev.time_mix(&TimeMixDesc {
            rows_out: ro,
            rows_in: ri,
            cols,
            a: &a,
            bias: bias.as_deref(),
            x: Loc::new(xd.slot, x0),
            y: Loc::new(yd.slot, rows.start * cols),
            accumulate: self.accumulate,
        })
    }
    fn print(&self, p: &Plan) -> String {
        let (a, bias) = mix_text(p, &self.matrix, &self.bias);
        format!(
            "time_mix {} {}= {a} @ {}{bias}  ({})",
            p.buffers[self.y].name,
            acc_text(self.accumulate),
            p.buffers[self.x].name,
            super::time_text(&self.time)
        )
    }
    fn host_reads(&self) -> Vec<WeightId> {
        reads(&self.matrix, &self.bias)
    }
}

impl LibraryOp for TimeMixDx {
    fn name(&self) -> &'static str {
        "time_mix_dx"
    }
    fn check(&self, c: &Checker<'_>, in_loop: bool, what: &str) -> Result<()> {
        let (yd, xd) = (c.buf(self.dy, what)?, c.buf(self.dx, what)?);
        if in_loop || yd.extent != Extent::Seq || xd.extent == Extent::Single {
            return Err(RuntimeError::plan(format!(
                "{what}: runs over all T, from a sequence into a sequence or a static value"
            )));
        }
        if yd.slot == xd.slot {
            return Err(RuntimeError::plan(format!(
                "{what}: `{}` and `{}` share slot {}",
                yd.name, xd.name, yd.slot
            )));
        }
        c.features(xd, yd.features, what)?;
        check_matrix(c, &self.matrix, xd.slot, what)?;
        Ok(())
    }
    fn run(&self, r: &mut Runner<'_>) -> Result<()> {
        let (yd, xd) = (r.buf(self.dy).clone(), r.buf(self.dx).clone());
        let t_len = r.t_len;
        let cols = r.batch * yd.features;
        let full = matrix_rows(r, &self.matrix, 0..t_len)?;
        // A static input was read at every step through the row sums of A.
        let (a, ro) = if xd.extent != Extent::Seq {
            (
                full.chunks(t_len.max(1)).map(|r| r.iter().sum()).collect(),
                1,
            )
        } else {
            let mut at = vec![0.0f32; t_len * t_len];
            for t in 0..t_len {
                for j in 0..t_len {
                    at[j * t_len + t] = full[t * t_len + j];
                }
            }
            (at, t_len)
        };
        r.dev.time_mix(&TimeMixDesc {
            rows_out: ro,
            rows_in: t_len,
            cols,
            a: &a,
            bias: None,
            x: Loc::new(yd.slot, 0),
            y: Loc::new(xd.slot, 0),
            accumulate: self.accumulate,
        })
    }
    fn print(&self, p: &Plan) -> String {
        let (a, _) = mix_text(p, &self.matrix, &None);
        format!(
            "time_mix_dx {} {}= ({a})^T @ {}  (all T)",
            p.buffers[self.dx].name,
            acc_text(self.accumulate),
            p.buffers[self.dy].name,
        )
    }
    fn host_reads(&self) -> Vec<WeightId> {
        reads(&self.matrix, &None)
    }
}

impl LibraryOp for TimeMixDw {
    fn name(&self) -> &'static str {
        "time_mix_dw"
    }
    fn check(&self, c: &Checker<'_>, in_loop: bool, what: &str) -> Result<()> {
        let (xd, yd) = (c.buf(self.x, what)?, c.buf(self.dy, what)?);
        if in_loop || yd.extent != Extent::Seq || xd.extent == Extent::Single {
            return Err(RuntimeError::plan(format!(
                "{what}: runs over all T, with a sequence gradient and a sequence or static input"
            )));
        }
        c.features(xd, yd.features, what)?;
        if let TimeMatrix::Response { .. } = self.matrix {
            return Err(RuntimeError::plan(format!(
                "{what}: a response matrix has no weight to differentiate"
            )));
        }
        let steps = check_matrix(c, &self.matrix, usize::MAX, what)?;
        if let Some(bi) = &self.bias {
            if let TimeBias::Response(_) = bi {
                return Err(RuntimeError::plan(format!(
                    "{what}: a response bias has no weight to differentiate"
                )));
            }
            check_bias(c, bi, steps, usize::MAX, what)?;
        }
        Ok(())
    }
    fn run(&self, r: &mut Runner<'_>) -> Result<()> {
        let (xd, yd) = (r.buf(self.x).clone(), r.buf(self.dy).clone());
        let t_len = r.t_len;
        let cols = r.batch * yd.features;
        let x_static = xd.extent != Extent::Seq;
        let ri = if x_static { 1 } else { t_len };
        let band = match self.matrix {
            TimeMatrix::Band { k, .. } if !x_static => Some(k),
            _ => None,
        };
        let mut g = vec![0.0f32; t_len * ri];
        let mut sums = self.bias.map(|_| vec![0.0f32; t_len]);
        r.dev.time_mix_dw(
            &TimeMixDwDesc {
                rows_out: t_len,
                rows_in: ri,
                cols,
                dy: Loc::new(yd.slot, 0),
                x: Loc::new(xd.slot, 0),
                band,
            },
            &mut g,
            sums.as_deref_mut(),
        )?;
        // G[t][j]; a static input is the same at every step j.
        let gij = |t: usize, j: usize| if x_static { g[t] } else { g[t * t_len + j] };
        match self.matrix {
            TimeMatrix::Weight { w } => {
                check_steps(r.plan, w, r.plan.weights[w].shape[0], t_len)?;
                let d: Vec<f32> = (0..t_len * t_len)
                    .map(|i| gij(i / t_len, i % t_len))
                    .collect();
                r.dev.add_grad(w, &d)?;
            }
            TimeMatrix::Masked { w, k, lambda } => {
                check_steps(r.plan, w, r.plan.weights[w].shape[0], t_len)?;
                let l = r.params[lambda];
                let d: Vec<f32> = (0..t_len * t_len)
                    .map(|i| {
                        let (t, j) = (i / t_len, i % t_len);
                        let band = if j <= t && t - j < k { 1.0f32 } else { 0.0 };
                        let m = if l >= 1.0 { band } else { l * band + (1.0 - l) };
                        gij(t, j) * m
                    })
                    .collect();
                r.dev.add_grad(w, &d)?;
            }
            TimeMatrix::Band { w, k } => {
                // A[t][t - d] = w[k - 1 - d]: the sum along diagonal d.
                let mut d = vec![0.0f32; k];
                for (dd, o) in d.iter_mut().rev().enumerate() {
                    *o = (dd..t_len).map(|t| gij(t, t - dd)).sum();
                }
                r.dev.add_grad(w, &d)?;
            }
            TimeMatrix::Response { .. } => {}
        }
        match (self.bias, &sums) {
            (Some(TimeBias::Weight(bw)), Some(s)) => {
                check_steps(r.plan, bw, r.weights[bw].len(), t_len)?;
                r.dev.add_grad(bw, s)?;
            }
            (Some(TimeBias::Scalar(bw)), Some(s)) => r.dev.add_grad(bw, &[s.iter().sum()])?,
            _ => {}
        }
        Ok(())
    }
    fn print(&self, p: &Plan) -> String {
        let (a, _) = mix_text(p, &self.matrix, &None);
        let dy = &p.buffers[self.dy].name;
        let bias = match self.bias {
            Some(TimeBias::Weight(w)) => format!(", grad {} += rowsum({dy})", p.weights[w].name),
            Some(TimeBias::Scalar(w)) => format!(", grad {} += sum({dy})", p.weights[w].name),
            _ => String::new(),
        };
        format!(
            "time_mix_dw grad of {a} += {dy} @ {}^T{bias}  (all T)",
            p.buffers[self.x].name,
        )
    }
    fn host_reads(&self) -> Vec<WeightId> {
        reads(&self.matrix, &self.bias)
    }
}
