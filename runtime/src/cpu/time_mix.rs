//! Mixing over time rows on the CPU: sparse row updates for banded matrices, a GEMM
//! otherwise, and the products the matrix gradient needs.

use super::matmul::{check_len, mul, parallelism, sgemm, PAR_MACS};
use super::*;
use crate::error::Result;
use crate::op::time_mix::{TimeMixDesc, TimeMixDwDesc, TimeMixOps};
use ::gemm::Parallelism;
use rayon::prelude::*;

/// [`time_mix`] runs row updates instead of a GEMM up to this many non-zeros per row.
pub const SPARSE_ROW: usize = 8;

/// Floats of one operand block meant to stay in a core's L2 cache (256 KiB).
const L2_FLOATS: usize = 1 << 16;

/// A pointer shared by tasks that write disjoint ranges behind it.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: only used where each task writes its own disjoint range (see the callers).
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
impl SendPtr {
    /// A method, not the field: a closure must capture the whole (Sync) wrapper.
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// A row of a time mix's output before its products: `y = bias` or `y += bias`, zero or
/// left as it is without a bias.
#[inline(always)]
fn init_row(yr: &mut [f32], bias: Option<f32>, accumulate: bool) {
    match bias {
        Some(b) if accumulate => yr.iter_mut().for_each(|v| *v += b),
        Some(b) => yr.fill(b),
        None if accumulate => {}
        None => yr.fill(0.0),
    }
}

/// Columns `c0 .. c0 + w` of `y[r] (+)= bias[r] + sum over row r's non-zeros c * x[j]`.
/// Multiply, then add (never fused), so every instruction set gives the same bits.
///
/// # Safety
/// `y` points to `rows.len()` rows of `cols` floats, `x` holds every row a non-zero names,
/// `c0 + w <= cols`, and no other thread touches these columns of `y`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn mix_block(
    rows: &[Vec<(usize, f32)>],
    bias: Option<&[f32]>,
    accumulate: bool,
    x: &[f32],
    y: *mut f32,
    cols: usize,
    c0: usize,
    w: usize,
) {
    for (r, nz) in rows.iter().enumerate() {
        let yr = std::slice::from_raw_parts_mut(y.add(r * cols + c0), w);
        init_row(yr, bias.map(|b| b[r]), accumulate);
        for &(j, c) in nz {
            let xr = &x[j * cols + c0..j * cols + c0 + w];
            yr.iter_mut().zip(xr).for_each(|(v, &xv)| *v += c * xv);
        }
    }
}

/// [`mix_block`] compiled for AVX-512 (the runtime itself is built for baseline x86-64).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn mix_block_avx512(
    rows: &[Vec<(usize, f32)>],
    bias: Option<&[f32]>,
    accumulate: bool,
    x: &[f32],
    y: *mut f32,
    cols: usize,
    c0: usize,
    w: usize,
) {
    mix_block(rows, bias, accumulate, x, y, cols, c0, w)
}

/// `sum a[i] * b[i]` in f64 over eight lanes (vectorised; lane order fixed, so the result
/// does not depend on threads).
fn dot_f64(a: &[f32], b: &[f32]) -> f64 {
    let mut acc = [0f64; 8];
    let (ah, at) = a.split_at(a.len() / 8 * 8);
    let (bh, bt) = b.split_at(ah.len());
    for (ca, cb) in ah.chunks_exact(8).zip(bh.chunks_exact(8)) {
        for l in 0..8 {
            acc[l] += ca[l] as f64 * cb[l] as f64;
        }
    }
    let tail: f64 = at.iter().zip(bt).map(|(&p, &q)| p as f64 * q as f64).sum();
    acc.iter().sum::<f64>() + tail
}

/// `sum a[i]` in f64 over eight lanes, like [`dot_f64`].
fn sum_f64(a: &[f32]) -> f64 {
    let mut acc = [0f64; 8];
    let (ah, at) = a.split_at(a.len() / 8 * 8);
    for ca in ah.chunks_exact(8) {
        for l in 0..8 {
            acc[l] += ca[l] as f64;
        }
    }
    acc.iter().sum::<f64>() + at.iter().map(|&v| v as f64).sum::<f64>()
}

/// Mixing over time rows: `y[ro, cols] (+)= a[ro, ri] @ x[ri, cols] (+ bias[ro])`, the
/// bias broadcast over the columns. A matrix with at most [`SPARSE_ROW`] non-zeros per row
/// on average (a band: the sliding PSN, a masked PSN at lambda = 1; any matrix of short
/// sequences) runs as row updates over its non-zeros only, O(nnz * cols): the bias first,
/// then the non-zeros in column order, skipping zero coefficients (a NaN or infinity under a
/// zero coefficient does not propagate). One row of a band at step t therefore sums in the
/// same order as the whole band at once, so the step-by-step and the all-steps schedules of
/// a sliding PSN agree bit for bit. A denser matrix (a long PSN, a decay triangle) runs as
/// one GEMM.
#[allow(clippy::too_many_arguments)]
pub fn time_mix(
    a: &[f32],
    bias: Option<&[f32]>,
    x: &[f32],
    y: &mut [f32],
    ro: usize,
    ri: usize,
    cols: usize,
    accumulate: bool,
) -> Result<()> {
    check_len("time_mix matrix", a.len(), mul(&[ro, ri])?)?;
    check_len("time_mix input", x.len(), mul(&[ri, cols])?)?;
    check_len("time_mix output", y.len(), mul(&[ro, cols])?)?;
    if let Some(b) = bias {
        check_len("time_mix bias", b.len(), ro)?;
    }
    if ro == 0 || cols == 0 {
        return Ok(());
    }
    let nnz = a.iter().filter(|&&v| v != 0.0).count();
    if nnz <= SPARSE_ROW.saturating_mul(ro) {
        // The non-zeros of each row, in column order.
        let rows: Vec<Vec<(usize, f32)>> = a
            .chunks_exact(ri)
            .map(|r| {
                r.iter()
                    .enumerate()
                    .filter(|&(_, &c)| c != 0.0)
                    .map(|(j, &c)| (j, c))
                    .collect()
            })
            .collect();
        // Column blocks small enough that the block of `x` stays in L2 while every output
        // row reads it: `x` and `y` cross memory once (row by row over the whole width
        // re-read `x` once per output row: 10x slower on a [32, 32] PSN).
        let cb = (L2_FLOATS / ri.max(1)).clamp(64, 4096) / 16 * 16;
        let blocks = cols.div_ceil(cb);
        let yp = SendPtr(y.as_mut_ptr());
        let avx512 = has_avx512();
        let block = |bi: usize| {
            let c0 = bi * cb;
            let w = cb.min(cols - c0);
            // SAFETY: `y` is [ro, cols] and `x` [ri, cols] (checked above), the non-zeros'
            // columns are < ri; blocks are disjoint column ranges, so no two tasks touch
            // the same element of `y`.
            unsafe {
                #[cfg(target_arch = "x86_64")]
                if avx512 {
                    return mix_block_avx512(&rows, bias, accumulate, x, yp.get(), cols, c0, w);
                }
                mix_block(&rows, bias, accumulate, x, yp.get(), cols, c0, w)
            }
        };
        let work = nnz.saturating_mul(cols);
        if work >= PAR_MACS && blocks > 1 && rayon::current_num_threads() > 1 {
            (0..blocks).into_par_iter().for_each(block);
        } else {
            (0..blocks).for_each(block);
        }
        return Ok(());
    }
    // By column blocks: the bias and the product of one block of `y` meet in cache (a bias
    // pass over all of `y` first costs two more trips through memory), and each block is
    // one single-threaded GEMM with a short inner dimension, which `gemm` runs well.
    let cb = (L2_FLOATS / (ri + ro).max(1)).clamp(256, 8192) / 16 * 16;
    let blocks = cols.div_ceil(cb);
    let yp = SendPtr(y.as_mut_ptr());
    let block = |bi: usize| {
        let c0 = bi * cb;
        let w = cb.min(cols - c0);
        // SAFETY: `y` is [ro, cols] and `x` [ri, cols] (checked above); blocks are disjoint
        // column ranges of `y`, which overlaps neither input (a unique borrow).
        unsafe {
            let y0 = yp.get().add(c0);
            if let Some(b) = bias {
                for (r, &bv) in b.iter().enumerate() {
                    init_row(
                        std::slice::from_raw_parts_mut(y0.add(r * cols), w),
                        Some(bv),
                        accumulate,
                    );
                }
            }
            sgemm(
                ro,
                w,
                ri,
                y0,
                cols,
                bias.is_some() || accumulate,
                a.as_ptr(),
                1,
                ri,
                x.as_ptr().add(c0),
                1,
                cols,
                Parallelism::None,
            );
        }
    };
    if ro.saturating_mul(ri).saturating_mul(cols) >= PAR_MACS
        && blocks > 1
        && rayon::current_num_threads() > 1
    {
        (0..blocks).into_par_iter().for_each(block);
    } else {
        (0..blocks).for_each(block);
    }
    Ok(())
}

/// Backward of [`time_mix`] for its matrix: `g[t, j] = sum_c dy[t, c] * x[j, c]`
/// (`dy [ro, cols]`, `x [ri, cols]`), only `0 <= t - j < k` with `band = Some(k)` (the other
/// entries are zero), and `sums[t] = sum_c dy[t, c]`.
#[allow(clippy::too_many_arguments)]
pub fn time_mix_dw(
    dy: &[f32],
    x: &[f32],
    g: &mut [f32],
    sums: Option<&mut [f32]>,
    ro: usize,
    ri: usize,
    cols: usize,
    band: Option<usize>,
) -> Result<()> {
    check_len("time_mix_dw output gradient", dy.len(), mul(&[ro, cols])?)?;
    check_len("time_mix_dw input", x.len(), mul(&[ri, cols])?)?;
    check_len("time_mix_dw matrix gradient", g.len(), mul(&[ro, ri])?)?;
    if let Some(s) = sums {
        check_len("time_mix_dw row sums", s.len(), ro)?;
        let row_sum = |r: &[f32]| sum_f64(r) as f32;
        if cols > 0 {
            if ro.saturating_mul(cols) >= PAR_MACS && rayon::current_num_threads() > 1 {
                s.par_iter_mut()
                    .zip(dy.par_chunks(cols))
                    .for_each(|(o, r)| *o = row_sum(r));
            } else {
                s.iter_mut()
                    .zip(dy.chunks(cols))
                    .for_each(|(o, r)| *o = row_sum(r));
            }
        } else {
            s.fill(0.0);
        }
    }
    g.fill(0.0);
    if ro == 0 || ri == 0 || cols == 0 {
        return Ok(());
    }
    match band {
        Some(k) => {
            // k dot products per row, each over `cols` values, by column blocks (so the
            // k rows of `x` a row of `dy` meets stay in cache for the next row), each block
            // summed in f64 and the blocks added in order: independent of the threads.
            let cb = (L2_FLOATS / (k + 1)).clamp(256, 8192) / 16 * 16;
            let blocks = cols.div_ceil(cb);
            let band = |t: usize| (t + 1).saturating_sub(k)..=t.min(ri - 1);
            let block = |bi: usize| -> Vec<f64> {
                let c0 = bi * cb;
                let c1 = (c0 + cb).min(cols);
                let mut part = vec![0f64; ro * k];
                for t in 0..ro {
                    let dyr = &dy[t * cols + c0..t * cols + c1];
                    for j in band(t) {
                        part[t * k + (t - j)] = dot_f64(dyr, &x[j * cols + c0..j * cols + c1]);
                    }
                }
                part
            };
            let parts: Vec<Vec<f64>> = if (k * ro).saturating_mul(cols) >= PAR_MACS
                && blocks > 1
                && rayon::current_num_threads() > 1
            {
                (0..blocks).into_par_iter().map(block).collect()
            } else {
                (0..blocks).map(block).collect()
            };
            for t in 0..ro {
                for j in band(t) {
                    g[t * ri + j] = parts.iter().map(|p| p[t * k + (t - j)]).sum::<f64>() as f32;
                }
            }
        }
        None => {
            let par = parallelism(ro.saturating_mul(ri).saturating_mul(cols));
            // g[ro, ri] = dy[ro, cols] @ x^T: rhs element (c, j) = x[j * cols + c].
            // SAFETY: lengths checked above; `g` is a unique borrow.
            unsafe {
                sgemm(
                    ro,
                    ri,
                    cols,
                    g.as_mut_ptr(),
                    ri,
                    false,
                    dy.as_ptr(),
                    1,
                    cols,
                    x.as_ptr(),
                    cols,
                    1,
                    par,
                );
            }
        }
    }
    Ok(())
}

impl TimeMixOps for CpuDevice {
    fn time_mix(&mut self, d: &TimeMixDesc<'_>) -> Result<()> {
        let (x, y) = pair(
            &mut self.slots,
            d.x,
            mul2(d.rows_in, d.cols)?,
            d.y,
            mul2(d.rows_out, d.cols)?,
            "time_mix",
        )?;
        time_mix(
            d.a,
            d.bias,
            x,
            y,
            d.rows_out,
            d.rows_in,
            d.cols,
            d.accumulate,
        )
    }

    fn time_mix_dw(
        &mut self,
        d: &TimeMixDwDesc,
        g: &mut [f32],
        sums: Option<&mut [f32]>,
    ) -> Result<()> {
        let rdy = range(
            &self.slots,
            d.dy,
            mul2(d.rows_out, d.cols)?,
            "time_mix_dw dy",
        )?;
        let rx = range(&self.slots, d.x, mul2(d.rows_in, d.cols)?, "time_mix_dw x")?;
        let dy = &self.slots[d.dy.slot][rdy];
        let x = &self.slots[d.x.slot][rx];
        time_mix_dw(dy, x, g, sums, d.rows_out, d.rows_in, d.cols, d.band)
    }
}
