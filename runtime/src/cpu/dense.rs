//! Dense projections on the CPU: GEMM through the `gemm` crate, the event-driven form in
//! [`super::spike`], and their backward passes. Each function checks its slice lengths
//! against the shapes and returns an error instead of panicking.

use super::matmul::{check_len, mul, parallelism, sgemm};
use super::mul2;
use super::*;
use crate::error::{Result, RuntimeError};
use crate::op::dense::{DenseOps, GemmDesc, GemmDwDesc, GemmDxDesc};

/// Writes (or adds) `bias` into every `n`-row of `y`; returns whether `y` now holds data to
/// accumulate into.
fn prefill_rows(y: &mut [f32], n: usize, bias: Option<&[f32]>, accumulate: bool) -> bool {
    match bias {
        Some(b) if n > 0 => {
            for row in y.chunks_exact_mut(n) {
                if accumulate {
                    row.iter_mut().zip(b).for_each(|(o, &v)| *o += v);
                } else {
                    row.copy_from_slice(b);
                }
            }
            true
        }
        _ => accumulate,
    }
}

/// The shapes of a dense layer's operands (`w` `[n, k]`, or its `[k, n]` transpose);
/// `false` when there is nothing to compute.
#[allow(clippy::too_many_arguments)]
pub(crate) fn check_dense(
    what: &str,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &[f32],
    rows: usize,
    k: usize,
    n: usize,
) -> Result<bool> {
    check_len(&format!("{what} input"), x.len(), mul(&[rows, k])?)?;
    check_len(&format!("{what} weight"), w.len(), mul(&[n, k])?)?;
    check_len(&format!("{what} output"), y.len(), mul(&[rows, n])?)?;
    if let Some(b) = bias {
        check_len(&format!("{what} bias"), b.len(), n)?;
    }
    Ok(rows > 0 && n > 0)
}

/// The shapes of a dense layer's weight-gradient operands, and the bias gradient
/// `db[n] += sum over rows of dy` (the same for every form of the weight product); `false`
/// when the weight gradient has nothing to compute.
#[allow(clippy::too_many_arguments)]
pub(crate) fn check_dense_dw_and_bias(
    what: &str,
    x: &[f32],
    dy: &[f32],
    dw: &[f32],
    db: Option<&mut [f32]>,
    rows: usize,
    k: usize,
    n: usize,
) -> Result<bool> {
    check_len(&format!("{what} input"), x.len(), mul(&[rows, k])?)?;
    check_len(
        &format!("{what} output gradient"),
        dy.len(),
        mul(&[rows, n])?,
    )?;
    check_len(&format!("{what} weight gradient"), dw.len(), mul(&[n, k])?)?;
    if rows == 0 || n == 0 {
        return Ok(false);
    }
    if let Some(db) = db {
        check_len(&format!("{what} bias gradient"), db.len(), n)?;
        for row in dy.chunks_exact(n) {
            db.iter_mut().zip(row).for_each(|(o, &v)| *o += v);
        }
    }
    Ok(k > 0)
}

/// Dense layer: `y[rows, n] (+)= x[rows, k] @ w^T (+ bias)` with `w` `[n, k]` (torch Linear).
#[allow(clippy::too_many_arguments)]
pub fn dense(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    rows: usize,
    k: usize,
    n: usize,
    accumulate: bool,
) -> Result<()> {
    if !check_dense("gemm", x, w, bias, y, rows, k, n)? {
        return Ok(());
    }
    let read_dst = prefill_rows(y, n, bias, accumulate);
    let par = parallelism(rows.saturating_mul(n).saturating_mul(k));
    // rhs = w^T: element (i, j) = w[j * k + i] -> row stride 1, column stride k.
    // SAFETY: lengths checked above; `y` is a unique borrow, so it overlaps neither input.
    unsafe {
        sgemm(
            rows,
            n,
            k,
            y.as_mut_ptr(),
            n,
            read_dst,
            x.as_ptr(),
            1,
            k,
            w.as_ptr(),
            k,
            1,
            par,
        );
    }
    Ok(())
}

/// Backward of [`dense`] for its input: `dx[rows, k] (+)= dy[rows, n] @ w` (`w` `[n, k]`).
#[allow(clippy::too_many_arguments)]
pub fn dense_dx(
    dy: &[f32],
    w: &[f32],
    dx: &mut [f32],
    rows: usize,
    k: usize,
    n: usize,
    accumulate: bool,
) -> Result<()> {
    check_len("gemm_dx output gradient", dy.len(), mul(&[rows, n])?)?;
    check_len("gemm_dx weight", w.len(), mul(&[n, k])?)?;
    check_len("gemm_dx input gradient", dx.len(), mul(&[rows, k])?)?;
    if rows == 0 || k == 0 {
        return Ok(());
    }
    let par = parallelism(rows.saturating_mul(n).saturating_mul(k));
    // SAFETY: lengths checked above; `dx` is a unique borrow.
    unsafe {
        sgemm(
            rows,
            k,
            n,
            dx.as_mut_ptr(),
            k,
            accumulate,
            dy.as_ptr(),
            1,
            n,
            w.as_ptr(),
            1,
            k,
            par,
        );
    }
    Ok(())
}

/// Backward of [`dense`] for its weights: `dw[n, k] += dy[rows, n]^T @ x[rows, k]` and
/// `db[n] += sum over rows of dy`.
#[allow(clippy::too_many_arguments)]
pub fn dense_dw(
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
    db: Option<&mut [f32]>,
    rows: usize,
    k: usize,
    n: usize,
) -> Result<()> {
    if !check_dense_dw_and_bias("gemm_dw", x, dy, dw, db, rows, k, n)? {
        return Ok(());
    }
    let par = parallelism(rows.saturating_mul(n).saturating_mul(k));
    // lhs = dy^T: element (i, r) = dy[r * n + i] -> column stride n, row stride 1.
    // SAFETY: lengths checked above; `dw` is a unique borrow.
    unsafe {
        sgemm(
            n,
            k,
            rows,
            dw.as_mut_ptr(),
            k,
            true,
            dy.as_ptr(),
            n,
            1,
            x.as_ptr(),
            1,
            k,
            par,
        );
    }
    Ok(())
}

impl CpuDevice {
    /// The event-driven form of [`DenseOps::gemm`] (`d.sparse`), on the transposed weight.
    fn spike_gemm(&mut self, d: &GemmDesc) -> Result<()> {
        let w = held(&self.weights, d.w, "gemm", "weight")?;
        if w.len() != mul2(d.n, d.k)? {
            return Err(RuntimeError::Device(format!(
                "gemm: weight {} has {} elements, the operation needs {}",
                d.w,
                w.len(),
                d.n * d.k
            )));
        }
        let wt = transposed(&mut self.transposed, d.w, w, d.n, d.k);
        let bias = d
            .bias
            .map(|b| held(&self.weights, b, "gemm", "bias"))
            .transpose()?;
        let (x, y) = pair(
            &mut self.slots,
            d.x,
            mul2(d.rows, d.k)?,
            d.y,
            mul2(d.rows, d.n)?,
            "gemm",
        )?;
        spike::spike_dense(x, wt, bias, y, d.rows, d.k, d.n, d.accumulate)
    }
}

impl DenseOps for CpuDevice {
    fn gemm(&mut self, d: &GemmDesc) -> Result<()> {
        if d.sparse {
            return self.spike_gemm(d);
        }
        let w = held(&self.weights, d.w, "gemm", "weight")?;
        let bias = d
            .bias
            .map(|b| held(&self.weights, b, "gemm", "bias"))
            .transpose()?;
        let (x, y) = pair(
            &mut self.slots,
            d.x,
            mul2(d.rows, d.k)?,
            d.y,
            mul2(d.rows, d.n)?,
            "gemm",
        )?;
        dense(x, w, bias, y, d.rows, d.k, d.n, d.accumulate)
    }

    fn gemm_dx(&mut self, d: &GemmDxDesc) -> Result<()> {
        let w = held(&self.weights, d.w, "gemm_dx", "weight")?;
        let (dy, dx) = pair(
            &mut self.slots,
            d.dy,
            mul2(d.rows, d.n)?,
            d.dx,
            mul2(d.rows, d.k)?,
            "gemm_dx",
        )?;
        dense_dx(dy, w, dx, d.rows, d.k, d.n, d.accumulate)
    }

    fn gemm_dw(&mut self, d: &GemmDwDesc) -> Result<()> {
        let rx = range(&self.slots, d.x, mul2(d.rows, d.k)?, "gemm_dw input")?;
        let rdy = range(
            &self.slots,
            d.dy,
            mul2(d.rows, d.n)?,
            "gemm_dw output gradient",
        )?;
        if self.grads.len() < self.weights.len() {
            return Err(RuntimeError::Device(
                "gemm_dw: gradients are not allocated (zero_grads first)".into(),
            ));
        }
        let (dw, db) = grad_pair(&mut self.grads, d.w, d.bias, "gemm_dw")?;
        let x = &self.slots[d.x.slot][rx];
        let dy = &self.slots[d.dy.slot][rdy];
        let db = db.map(|v| v.as_mut_slice());
        if d.sparse {
            spike::spike_dense_dw(x, dy, dw, db, d.rows, d.k, d.n)
        } else {
            dense_dw(x, dy, dw, db, d.rows, d.k, d.n)
        }
    }
}
