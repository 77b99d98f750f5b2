//! CPU library operations on host slices: dense GEMM, conv2d (im2col + GEMM) and pooling,
//! and their backward passes.
//!
//! GEMMs go to the `gemm` crate with explicit strides (no transposed copies). Each function
//! checks its slice lengths against the shapes and returns an error instead of panicking.

use crate::error::{Result, RuntimeError};
use crate::plan::{ConvGeom, PoolGeom, PoolKind};
use gemm::Parallelism;
use rayon::prelude::*;

/// Products with at least this many multiply-adds use all threads.
const PAR_MACS: usize = 1 << 20;
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

fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
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

pub(crate) fn check_len(what: &str, found: usize, expected: usize) -> Result<()> {
    if found != expected {
        return Err(RuntimeError::Device(format!(
            "{what} has {found} elements, the operation needs {expected}"
        )));
    }
    Ok(())
}

pub(crate) fn mul(dims: &[usize]) -> Result<usize> {
    dims.iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| RuntimeError::Device("operation size overflows".into()))
}

fn parallelism(macs: usize) -> Parallelism {
    if macs >= PAR_MACS && rayon::current_num_threads() > 1 {
        Parallelism::Rayon(0)
    } else {
        Parallelism::None
    }
}

/// `dst[m, n] = (read_dst ? dst : 0) + lhs[m, k] @ rhs[k, n]`, `dst` row stride `dst_rs`,
/// column stride 1.
///
/// # Safety
/// Every pointer must be valid for the elements its strides address, and `dst` must not
/// overlap `lhs` or `rhs`.
#[allow(clippy::too_many_arguments)]
unsafe fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    read_dst: bool,
    lhs: *const f32,
    lhs_cs: usize,
    lhs_rs: usize,
    rhs: *const f32,
    rhs_cs: usize,
    rhs_rs: usize,
    par: Parallelism,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !read_dst {
            for i in 0..m {
                std::ptr::write_bytes(dst.add(i * dst_rs), 0, n);
            }
        }
        return;
    }
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        read_dst,
        lhs,
        lhs_cs as isize,
        lhs_rs as isize,
        rhs,
        rhs_cs as isize,
        rhs_rs as isize,
        1.0f32,
        1.0f32,
        false,
        false,
        false,
        par,
    );
}

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

pub(crate) fn check_conv(g: &ConvGeom) -> Result<()> {
    let ok = g.c_in > 0
        && g.c_out > 0
        && g.kh > 0
        && g.kw > 0
        && g.stride > 0
        && g.h + 2 * g.pad >= g.kh
        && g.w + 2 * g.pad >= g.kw
        && g.h_out == (g.h + 2 * g.pad - g.kh) / g.stride + 1
        && g.w_out == (g.w + 2 * g.pad - g.kw) / g.stride + 1;
    if !ok {
        return Err(RuntimeError::Device(format!(
            "inconsistent conv2d geometry {g:?}"
        )));
    }
    Ok(())
}

/// Per-image sizes of a convolution: input `c_in * h * w`, output positions
/// `h_out * w_out`, output `c_out * p`, unfolded rows `c_in * kh * kw`.
pub(crate) struct ConvSizes {
    pub xi: usize,
    pub p: usize,
    pub yi: usize,
    pub kk: usize,
}

/// Checks the geometry and the slice lengths of a forward convolution over `images` images
/// (`w` is `[c_out, kk]`, or its transpose: the same length).
pub(crate) fn check_conv2d(
    what: &str,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &[f32],
    images: usize,
    g: &ConvGeom,
) -> Result<ConvSizes> {
    check_conv(g)?;
    let xi = mul(&[g.c_in, g.h, g.w])?;
    let p = mul(&[g.h_out, g.w_out])?;
    let yi = mul(&[g.c_out, p])?;
    let kk = mul(&[g.c_in, g.kh, g.kw])?;
    check_len(&format!("{what} input"), x.len(), mul(&[images, xi])?)?;
    check_len(&format!("{what} weight"), w.len(), mul(&[g.c_out, kk])?)?;
    check_len(&format!("{what} output"), y.len(), mul(&[images, yi])?)?;
    if let Some(b) = bias {
        check_len(&format!("{what} bias"), b.len(), g.c_out)?;
    }
    mul(&[kk, p])?;
    Ok(ConvSizes { xi, p, yi, kk })
}

/// Checks a convolution's weight-gradient operands, then adds the bias gradient: `db[c] +=`
/// the sum of `dy` over images and positions of channel `c` (summed image by image, position
/// by position, from zero: the order of `snn_conv_bias_grad` in ops.cuh).
pub(crate) fn check_conv2d_dw_and_bias(
    what: &str,
    x: &[f32],
    dy: &[f32],
    dw: &[f32],
    db: Option<&mut [f32]>,
    images: usize,
    g: &ConvGeom,
) -> Result<ConvSizes> {
    check_conv(g)?;
    let xi = mul(&[g.c_in, g.h, g.w])?;
    let p = mul(&[g.h_out, g.w_out])?;
    let yi = mul(&[g.c_out, p])?;
    let kk = mul(&[g.c_in, g.kh, g.kw])?;
    check_len(&format!("{what} input"), x.len(), mul(&[images, xi])?)?;
    check_len(
        &format!("{what} output gradient"),
        dy.len(),
        mul(&[images, yi])?,
    )?;
    check_len(
        &format!("{what} weight gradient"),
        dw.len(),
        mul(&[g.c_out, kk])?,
    )?;
    if let Some(db) = &db {
        check_len(&format!("{what} bias gradient"), db.len(), g.c_out)?;
    }
    mul(&[kk, p])?;
    if let Some(db) = db {
        if yi > 0 {
            for (c, o) in db.iter_mut().enumerate() {
                let mut acc = 0.0f32;
                for img in 0..images {
                    for &v in &dy[img * yi + c * p..img * yi + (c + 1) * p] {
                        acc += v;
                    }
                }
                *o += acc;
            }
        }
    }
    Ok(ConvSizes { xi, p, yi, kk })
}

/// Unfolds one `[c_in, h, w]` image into `col[c_in * kh * kw, h_out * w_out]`.
fn im2col(x: &[f32], g: &ConvGeom, col: &mut [f32]) {
    let p = g.h_out * g.w_out;
    let mut r = 0;
    for c in 0..g.c_in {
        let plane = &x[c * g.h * g.w..(c + 1) * g.h * g.w];
        for i in 0..g.kh {
            for j in 0..g.kw {
                let dst = &mut col[r * p..(r + 1) * p];
                r += 1;
                for oy in 0..g.h_out {
                    let iy = (oy * g.stride + i) as isize - g.pad as isize;
                    let drow = &mut dst[oy * g.w_out..(oy + 1) * g.w_out];
                    if iy < 0 || iy >= g.h as isize {
                        drow.fill(0.0);
                        continue;
                    }
                    let srow = &plane[iy as usize * g.w..(iy as usize + 1) * g.w];
                    for (ox, d) in drow.iter_mut().enumerate() {
                        let ix = (ox * g.stride + j) as isize - g.pad as isize;
                        *d = if ix < 0 || ix >= g.w as isize {
                            0.0
                        } else {
                            srow[ix as usize]
                        };
                    }
                }
            }
        }
    }
}

/// Conv2d with torch semantics (cross-correlation, zero padding) over `images` contiguous
/// images: `x` `[images, c_in, h, w]`, `w` `[c_out, c_in, kh, kw]`, `bias` `[c_out]`,
/// `y` `[images, c_out, h_out, w_out]`.
#[allow(clippy::too_many_arguments)]
pub fn conv2d(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    images: usize,
    g: &ConvGeom,
    accumulate: bool,
) -> Result<()> {
    let ConvSizes { xi, p, yi, kk } = check_conv2d("conv2d", x, w, bias, y, images, g)?;
    if images == 0 || yi == 0 || xi == 0 {
        return Ok(());
    }
    let direct = g.kh == 1 && g.kw == 1 && g.stride == 1 && g.pad == 0;
    let macs_per_image = g.c_out.saturating_mul(p).saturating_mul(kk);

    let one = |x_img: &[f32], y_img: &mut [f32], col: &mut Vec<f32>, par: Parallelism| {
        let rhs: &[f32] = if direct {
            x_img
        } else {
            col.resize(kk * p, 0.0);
            im2col(x_img, g, col);
            col
        };
        let read_dst = match bias {
            Some(b) => {
                for (row, &v) in y_img.chunks_exact_mut(p).zip(b) {
                    if accumulate {
                        row.iter_mut().for_each(|o| *o += v);
                    } else {
                        row.fill(v);
                    }
                }
                true
            }
            None => accumulate,
        };
        // SAFETY: y_img is [c_out, p], w is [c_out, kk], rhs is [kk, p] (checked above).
        unsafe {
            sgemm(
                g.c_out,
                p,
                kk,
                y_img.as_mut_ptr(),
                p,
                read_dst,
                w.as_ptr(),
                1,
                kk,
                rhs.as_ptr(),
                1,
                p,
                par,
            );
        }
    };

    per_image(y, yi, x, xi, images, macs_per_image, one);
    Ok(())
}

/// Runs `one(input image, output image, scratch, gemm parallelism)` for every image: images
/// in parallel (a scratch buffer per thread, single-threaded GEMMs) when there are enough of
/// them and enough work, otherwise one after another with threaded GEMMs.
pub(crate) fn per_image<F>(
    out: &mut [f32],
    out_len: usize,
    inp: &[f32],
    in_len: usize,
    images: usize,
    macs_per_image: usize,
    one: F,
) where
    F: Fn(&[f32], &mut [f32], &mut Vec<f32>, Parallelism) + Sync,
{
    let threads = rayon::current_num_threads();
    if images >= threads && threads > 1 && images.saturating_mul(macs_per_image) >= PAR_MACS / 4 {
        out.par_chunks_mut(out_len)
            .zip(inp.par_chunks(in_len))
            .for_each_init(Vec::new, |col, (o, i)| one(i, o, col, Parallelism::None));
    } else {
        let par = parallelism(macs_per_image);
        let mut col = Vec::new();
        for (o, i) in out.chunks_mut(out_len).zip(inp.chunks(in_len)) {
            one(i, o, &mut col, par);
        }
    }
}

pub(crate) fn check_pool(g: &PoolGeom) -> Result<()> {
    let ok = g.c > 0
        && g.k > 0
        && g.stride > 0
        && 2 * g.pad <= g.k
        && g.h + 2 * g.pad >= g.k
        && g.w + 2 * g.pad >= g.k
        && g.h_out == (g.h + 2 * g.pad - g.k) / g.stride + 1
        && g.w_out == (g.w + 2 * g.pad - g.k) / g.stride + 1;
    if !ok {
        return Err(RuntimeError::Device(format!(
            "inconsistent pool2d geometry {g:?}"
        )));
    }
    Ok(())
}

fn pool_plane(x: &[f32], y: &mut [f32], kind: PoolKind, g: &PoolGeom) {
    let inv = 1.0 / (g.k * g.k) as f32;
    for oy in 0..g.h_out {
        let y0 = (oy * g.stride) as isize - g.pad as isize;
        let ys = y0.max(0) as usize;
        let ye = ((y0 + g.k as isize).min(g.h as isize)).max(0) as usize;
        for ox in 0..g.w_out {
            let x0 = (ox * g.stride) as isize - g.pad as isize;
            let xs = x0.max(0) as usize;
            let xe = ((x0 + g.k as isize).min(g.w as isize)).max(0) as usize;
            let v = match kind {
                PoolKind::Max => {
                    let mut m = f32::NEG_INFINITY;
                    for iy in ys..ye {
                        for &v in &x[iy * g.w + xs..iy * g.w + xe] {
                            m = m.max(v);
                        }
                    }
                    m
                }
                PoolKind::Avg => {
                    let mut s = 0.0f32;
                    for iy in ys..ye {
                        for &v in &x[iy * g.w + xs..iy * g.w + xe] {
                            s += v;
                        }
                    }
                    s * inv
                }
            };
            y[oy * g.w_out + ox] = v;
        }
    }
}

/// Max or average pooling (torch semantics, `count_include_pad = True`, floor mode) over
/// `images` contiguous `[c, h, w]` images.
pub fn pool2d(x: &[f32], y: &mut [f32], images: usize, kind: PoolKind, g: &PoolGeom) -> Result<()> {
    check_pool(g)?;
    let pin = mul(&[g.h, g.w])?;
    let pout = mul(&[g.h_out, g.w_out])?;
    let planes = mul(&[images, g.c])?;
    check_len("pool2d input", x.len(), mul(&[planes, pin])?)?;
    check_len("pool2d output", y.len(), mul(&[planes, pout])?)?;
    if planes == 0 || pout == 0 || pin == 0 {
        return Ok(());
    }
    let work = pout.saturating_mul(g.k * g.k).max(1);
    let min_len = (16_384 / work).max(1);
    y.par_chunks_mut(pout)
        .zip(x.par_chunks(pin))
        .with_min_len(min_len)
        .for_each(|(yp, xp)| pool_plane(xp, yp, kind, g));
    Ok(())
}

/// Folds `col[c_in * kh * kw, h_out * w_out]` (the layout of [`im2col`]) back onto one
/// `[c_in, h, w]` image: `dx (+)=` the sum of every column entry that unfolded from a cell.
/// Each cell gathers its entries (kernel row, then column, ascending) into a sum that starts
/// at zero and is then stored or added: the order of `snn_col2im` in ops.cuh.
fn col2im(col: &[f32], g: &ConvGeom, dx: &mut [f32], accumulate: bool) {
    let p = g.h_out * g.w_out;
    for c in 0..g.c_in {
        for iy in 0..g.h {
            for ix in 0..g.w {
                let mut acc = 0.0f32;
                for ki in 0..g.kh {
                    let ty = iy + g.pad;
                    if ty < ki || !(ty - ki).is_multiple_of(g.stride) {
                        continue;
                    }
                    let oy = (ty - ki) / g.stride;
                    if oy >= g.h_out {
                        continue;
                    }
                    for kj in 0..g.kw {
                        let tx = ix + g.pad;
                        if tx < kj || !(tx - kj).is_multiple_of(g.stride) {
                            continue;
                        }
                        let ox = (tx - kj) / g.stride;
                        if ox >= g.w_out {
                            continue;
                        }
                        let r = (c * g.kh + ki) * g.kw + kj;
                        acc += col[r * p + oy * g.w_out + ox];
                    }
                }
                let o = &mut dx[(c * g.h + iy) * g.w + ix];
                *o = if accumulate { *o + acc } else { acc };
            }
        }
    }
}

/// Backward of [`conv2d`] for its input over `images` images: `dx` `[images, c_in, h, w]`
/// (+)= the transposed convolution of `dy` `[images, c_out, h_out, w_out]`: per image
/// `col = W^T @ dy` (a GEMM), then `col2im`. A pointwise conv (1x1, stride 1, no padding)
/// is the GEMM alone.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_dx(
    dy: &[f32],
    w: &[f32],
    dx: &mut [f32],
    images: usize,
    g: &ConvGeom,
    accumulate: bool,
) -> Result<()> {
    check_conv(g)?;
    let xi = mul(&[g.c_in, g.h, g.w])?;
    let p = mul(&[g.h_out, g.w_out])?;
    let yi = mul(&[g.c_out, p])?;
    let kk = mul(&[g.c_in, g.kh, g.kw])?;
    check_len("conv2d_dx output gradient", dy.len(), mul(&[images, yi])?)?;
    check_len("conv2d_dx weight", w.len(), mul(&[g.c_out, kk])?)?;
    check_len("conv2d_dx input gradient", dx.len(), mul(&[images, xi])?)?;
    if images == 0 || xi == 0 {
        return Ok(());
    }
    mul(&[kk, p])?;
    let direct = g.kh == 1 && g.kw == 1 && g.stride == 1 && g.pad == 0;
    let macs_per_image = g.c_out.saturating_mul(p).saturating_mul(kk);

    let one = |dy_img: &[f32], dx_img: &mut [f32], col: &mut Vec<f32>, par: Parallelism| {
        // col[kk, p] = W^T[kk, c_out] @ dy[c_out, p]; W^T element (i, j) = w[j * kk + i].
        let (dst, read_dst) = if direct {
            (dx_img.as_mut_ptr(), accumulate)
        } else {
            col.resize(kk * p, 0.0);
            (col.as_mut_ptr(), false)
        };
        // SAFETY: dst is [kk, p] (dx_img when direct: kk = c_in, p = h * w), w is
        // [c_out, kk], dy_img is [c_out, p] (checked above); dst is a unique borrow.
        unsafe {
            sgemm(
                kk,
                p,
                g.c_out,
                dst,
                p,
                read_dst,
                w.as_ptr(),
                kk,
                1,
                dy_img.as_ptr(),
                1,
                p,
                par,
            );
        }
        if !direct {
            col2im(col, g, dx_img, accumulate);
        }
    };

    per_image(dx, xi, dy, yi, images, macs_per_image, one);
    Ok(())
}

/// Backward of [`conv2d`] for its weights over `images` images: `dw[c_out, c_in*kh*kw] +=
/// sum over images of dy[img] @ im2col(x[img])^T`, and `db[c] +=` the sum of `dy` over
/// images and positions of channel `c` (summed image by image, position by position, from
/// zero, then added: the order of `snn_conv_bias_grad` in ops.cuh). Many images run in a
/// fixed number of contiguous chunks on rayon threads, each into its own partial sum, and
/// the partial sums are added in chunk order: deterministic.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_dw(
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
    db: Option<&mut [f32]>,
    images: usize,
    g: &ConvGeom,
) -> Result<()> {
    let ConvSizes { xi, p, yi, kk } =
        check_conv2d_dw_and_bias("conv2d_dw", x, dy, dw, db, images, g)?;
    if images == 0 || yi == 0 {
        return Ok(());
    }
    let direct = g.kh == 1 && g.kw == 1 && g.stride == 1 && g.pad == 0;
    let macs_per_image = g.c_out.saturating_mul(p).saturating_mul(kk);

    // dst[c_out, kk] += dy_img[c_out, p] @ col[kk, p]^T over the images of one chunk.
    let chunk = |x: &[f32], dy: &[f32], dst: &mut [f32], par: Parallelism| {
        let mut col = Vec::new();
        for (xo, yo) in x.chunks(xi).zip(dy.chunks(yi)) {
            let rhs: &[f32] = if direct {
                xo
            } else {
                col.resize(kk * p, 0.0);
                im2col(xo, g, &mut col);
                &col
            };
            // SAFETY: dst is [c_out, kk], yo is [c_out, p], rhs is [kk, p] (checked above);
            // col^T element (q, r) = rhs[r * p + q].
            unsafe {
                sgemm(
                    g.c_out,
                    kk,
                    p,
                    dst.as_mut_ptr(),
                    kk,
                    true,
                    yo.as_ptr(),
                    1,
                    p,
                    rhs.as_ptr(),
                    p,
                    1,
                    par,
                );
            }
        }
    };

    let threads = rayon::current_num_threads();
    if images >= 2 && threads > 1 && images.saturating_mul(macs_per_image) >= PAR_MACS / 4 {
        let chunks = threads.min(images);
        let per = images.div_ceil(chunks);
        let partials: Vec<Vec<f32>> = (0..chunks)
            .into_par_iter()
            .map(|c| {
                let (a, b) = ((c * per).min(images), ((c + 1) * per).min(images));
                let mut part = vec![0.0f32; dw.len()];
                chunk(
                    &x[a * xi..b * xi],
                    &dy[a * yi..b * yi],
                    &mut part,
                    Parallelism::None,
                );
                part
            })
            .collect();
        for part in partials {
            dw.iter_mut().zip(&part).for_each(|(o, v)| *o += v);
        }
    } else {
        chunk(x, dy, dw, parallelism(macs_per_image));
    }
    Ok(())
}

/// The cell of window `(oy, ox)` that max pooling picks: the first maximum in row-major
/// order (a later cell wins only when strictly greater), never a padded cell. `None` only
/// for a window without cells (impossible in a valid geometry).
fn window_argmax(x: &[f32], g: &PoolGeom, oy: usize, ox: usize) -> Option<usize> {
    let y0 = (oy * g.stride) as isize - g.pad as isize;
    let x0 = (ox * g.stride) as isize - g.pad as isize;
    let ys = y0.max(0) as usize;
    let ye = ((y0 + g.k as isize).min(g.h as isize)).max(0) as usize;
    let xs = x0.max(0) as usize;
    let xe = ((x0 + g.k as isize).min(g.w as isize)).max(0) as usize;
    let mut best: Option<(usize, f32)> = None;
    for iy in ys..ye {
        for ix in xs..xe {
            let v = x[iy * g.w + ix];
            let better = match best {
                None => true,
                Some((_, b)) => v > b,
            };
            if better {
                best = Some((iy * g.w + ix, v));
            }
        }
    }
    best.map(|(i, _)| i)
}

/// The gradient of one `[h, w]` plane: every cell gathers, over the windows that contain
/// it (row, then column, ascending), `dy` (max: if it is the window's pick) or `dy / k^2`
/// (average), from zero; then stores or adds. The order of `snn_pool2d_dx` in ops.cuh.
fn pool_plane_dx(x: &[f32], dy: &[f32], dx: &mut [f32], kind: PoolKind, g: &PoolGeom, acc_: bool) {
    let inv = 1.0 / (g.k * g.k) as f32;
    for iy in 0..g.h {
        // Windows oy with oy * stride <= iy + pad < oy * stride + k.
        let ty = iy + g.pad;
        let oy_lo = if ty + 1 > g.k {
            (ty + 1 - g.k).div_ceil(g.stride)
        } else {
            0
        };
        let oy_hi = (ty / g.stride).min(g.h_out - 1);
        for ix in 0..g.w {
            let tx = ix + g.pad;
            let ox_lo = if tx + 1 > g.k {
                (tx + 1 - g.k).div_ceil(g.stride)
            } else {
                0
            };
            let ox_hi = (tx / g.stride).min(g.w_out - 1);
            let mut acc = 0.0f32;
            let me = iy * g.w + ix;
            for oy in oy_lo..=oy_hi {
                for ox in ox_lo..=ox_hi {
                    let d = dy[oy * g.w_out + ox];
                    match kind {
                        PoolKind::Max => {
                            if window_argmax(x, g, oy, ox) == Some(me) {
                                acc += d;
                            }
                        }
                        PoolKind::Avg => acc += d * inv,
                    }
                }
            }
            let o = &mut dx[me];
            *o = if acc_ { *o + acc } else { acc };
        }
    }
}

/// Backward of [`pool2d`] over `images` contiguous `[c, h, w]` images: `dx (+)=` `dy`
/// routed back through the windows. Max pooling recomputes each window's maximum from the
/// forward input `x` (the first maximum on ties, as torch); average pooling spreads
/// `dy / k^2` over the window's cells inside the image (`count_include_pad = True`, as the
/// forward).
#[allow(clippy::too_many_arguments)]
pub fn pool2d_dx(
    x: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    images: usize,
    kind: PoolKind,
    g: &PoolGeom,
    accumulate: bool,
) -> Result<()> {
    check_pool(g)?;
    let pin = mul(&[g.h, g.w])?;
    let pout = mul(&[g.h_out, g.w_out])?;
    let planes = mul(&[images, g.c])?;
    check_len("pool2d_dx input", x.len(), mul(&[planes, pin])?)?;
    check_len("pool2d_dx output gradient", dy.len(), mul(&[planes, pout])?)?;
    check_len("pool2d_dx input gradient", dx.len(), mul(&[planes, pin])?)?;
    if planes == 0 || pout == 0 || pin == 0 {
        return Ok(());
    }
    let work = pin.saturating_mul(g.k * g.k).max(1);
    let min_len = (16_384 / work).max(1);
    dx.par_chunks_mut(pin)
        .zip(x.par_chunks(pin))
        .zip(dy.par_chunks(pout))
        .with_min_len(min_len)
        .for_each(|((dxp, xp), dyp)| pool_plane_dx(xp, dyp, dxp, kind, g, accumulate));
    Ok(())
}
