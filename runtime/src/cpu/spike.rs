//! Event-driven projections: the dense layer, the conv2d layer (at the end of the file) and
//! their weight gradients when the input holds spikes (mostly zeros, the rest 1.0).
//!
//! * [`spike_dense`]: `y[r, :] (+)= bias + sum over active i of x[r, i] * wt[i, :]`, with
//!   `wt = w^T` (`[k, n]`, see [`transpose`]): one contiguous `n`-row of the transposed
//!   weight per non-zero input instead of `k` multiply-adds per output. The value of `x` is
//!   used (a 1.0 takes a plain add), so a non-binary input is still computed correctly,
//!   only without the saving.
//! * [`spike_dense_dw`]: `dw[:, i] += sum over rows r with x[r, i] != 0 of x[r, i] * dy[r, :]`,
//!   accumulated in a transposed `[k, n]` scratch and added into `dw` (`[n, k]`) at the end.
//!
//! The results equal [`super::ops::dense`] / [`super::ops::dense_dw`] up to the summation
//! order (the bias or the old value first, then the active inputs in increasing `i`): bit for
//! bit whenever the sums are exact (weights on a coarse dyadic grid), to rounding otherwise.
//!
//! The kernel: both ops are `out[rr, :] += sum over a list of source rows u of
//! coef[u, rr] * src[u, :]` for a tile of `R` output rows. The list is the *union* of the
//! non-zeros of the tile's rows (inputs active in any of the 4 samples for the forward,
//! samples active for any of 4 inputs for the gradient), so each loaded row of `src` feeds
//! `R` accumulators (multiplied by 0 where that row is not active: exact, `acc + 0 * w ==
//! acc` for finite weights). At a rate `p` the union is `1 - (1 - p)^4` of the inputs
//! (18.5% at p = 0.05, 34% at 0.1, 94% at 0.5), at GEMM-like efficiency: 16 zmm
//! accumulators (4 rows x 64 columns), 4 loads and 4 broadcasts per 16 FMAs. A first
//! version with one row at a time (a load from L2 per 16 adds, `[f32; 128]` accumulators
//! that LLVM kept on the stack) reached only 7-10 G adds/s, slower than dense GEMM above
//! a 10% rate. The crate is built for baseline x86-64, so the kernel uses AVX-512
//! intrinsics, picked at run time; other CPUs and partial tiles take a plain loop.
//!
//! Summation order: per output element, the old value (+ bias) first, then the terms in
//! increasing source index. With 0/1 inputs each term is exact (`fma(1, w, acc) ==
//! acc + w`), so the result is the same bits on every path and on the CUDA kernels.

use super::conv::per_image;
use super::conv::{check_conv2d, check_conv2d_dw_and_bias, ConvSizes};
use super::dense::{check_dense, check_dense_dw_and_bias};
use super::has_avx512;
use crate::error::Result;
use crate::plan::ConvGeom;
use gemm::Parallelism;
use rayon::prelude::*;

/// Output rows per register tile.
const R: usize = 4;
/// Columns per register tile (4 x 16 f32 with AVX-512).
const C: usize = 64;
/// Rows of `y` per parallel task of [`spike_dense`].
const ROW_BLOCK: usize = 64;
/// Inputs (rows of the transposed gradient) per parallel task of [`spike_dense_dw`].
const IN_BLOCK: usize = 16;
/// Rows of `x`/`dy` per tile of [`spike_dense_dw`]: a tile of `dy` stays in L2.
const ROW_TILE: usize = 256;
/// Products with at least this many (dense) multiply-adds use all threads.
const PAR_MACS: usize = 1 << 20;
fn parallel(macs: usize) -> bool {
    macs >= PAR_MACS && rayon::current_num_threads() > 1
}

/// `w` `[n, k]` -> `w^T` `[k, n]`.
pub fn transpose(w: &[f32], n: usize, k: usize) -> Vec<f32> {
    let mut t = vec![0.0f32; n * k];
    if n == 0 || k == 0 {
        return t;
    }
    const B: usize = 32;
    for o0 in (0..n).step_by(B) {
        for i0 in (0..k).step_by(B) {
            for o in o0..(o0 + B).min(n) {
                for i in i0..(i0 + B).min(k) {
                    t[i * n + o] = w[o * k + i];
                }
            }
        }
    }
    t
}

/// A tile's union list: source rows `idx[j]` with the coefficients `coef[j * R + rr]`.
#[derive(Default)]
struct Union {
    idx: Vec<u32>,
    coef: Vec<f32>,
}

impl Union {
    /// Collects the `u < len` where any of `get(u)` is non-zero. Branch-free compaction:
    /// at a 50% rate a branch per element mispredicts half the time.
    fn build(&mut self, len: usize, get: impl Fn(usize) -> [f32; R]) {
        self.idx.clear();
        self.coef.clear();
        self.idx.resize(len, 0);
        self.coef.resize(len * R, 0.0);
        let mut c = 0;
        for u in 0..len {
            let v = get(u);
            self.coef[c * R..c * R + R].copy_from_slice(&v);
            self.idx[c] = u as u32;
            c += v.iter().any(|&e| e != 0.0) as usize;
        }
        self.idx.truncate(c);
        self.coef.truncate(c * R);
    }
}

/// `out[rr][c0 + q] += sum over j of coef[j * R + rr] * src[idx[j] * stride + c0 + q]` for
/// `rr < rows`, `q < width`: `out` holds `rows` rows of stride `out_stride`.
#[allow(clippy::too_many_arguments)]
fn tile(
    out: &mut [f32],
    out_stride: usize,
    rows: usize,
    width: usize,
    src: &[f32],
    stride: usize,
    u: &Union,
    avx512: bool,
) {
    let mut c0 = 0;
    while c0 < width {
        let m = C.min(width - c0);
        if m == C && rows == R && avx512 {
            #[cfg(target_arch = "x86_64")]
            {
                if let Some(&imax) = u.idx.last() {
                    assert!(imax as usize * stride + c0 + C <= src.len());
                }
                assert!((R - 1) * out_stride + c0 + C <= out.len());
                // SAFETY: AVX-512F was detected by the caller; bounds checked above (the
                // list is increasing, so its last entry is the largest).
                unsafe {
                    tile_avx512(
                        out.as_mut_ptr().add(c0),
                        out_stride,
                        src.as_ptr().add(c0),
                        stride,
                        &u.idx,
                        &u.coef,
                    )
                };
                c0 += C;
                continue;
            }
        }
        for (j, &i) in u.idx.iter().enumerate() {
            let s = &src[i as usize * stride + c0..i as usize * stride + c0 + m];
            for rr in 0..rows {
                let v = u.coef[j * R + rr];
                if v != 0.0 {
                    let o = &mut out[rr * out_stride + c0..rr * out_stride + c0 + m];
                    o.iter_mut().zip(s).for_each(|(a, &w)| *a += v * w);
                }
            }
        }
        c0 += C;
    }
}

/// [`tile`] for a full `R x C` tile, the accumulators in 16 zmm registers.
///
/// # Safety
/// The CPU must support AVX-512F; `out + rr * out_stride .. + C` (rr < R) must be writable
/// and `src + idx[j] * stride .. + C` readable; `coef.len() == R * idx.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile_avx512(
    out: *mut f32,
    out_stride: usize,
    src: *const f32,
    stride: usize,
    idx: &[u32],
    coef: &[f32],
) {
    use std::arch::x86_64::*;
    let mut a = [[_mm512_setzero_ps(); C / 16]; R];
    for (rr, row) in a.iter_mut().enumerate() {
        for (q, v) in row.iter_mut().enumerate() {
            *v = _mm512_loadu_ps(out.add(rr * out_stride + 16 * q));
        }
    }
    for (j, &i) in idx.iter().enumerate() {
        let p = src.add(i as usize * stride);
        let w = [
            _mm512_loadu_ps(p),
            _mm512_loadu_ps(p.add(16)),
            _mm512_loadu_ps(p.add(32)),
            _mm512_loadu_ps(p.add(48)),
        ];
        let cf = coef.as_ptr().add(j * R);
        for (rr, row) in a.iter_mut().enumerate() {
            let v = _mm512_set1_ps(*cf.add(rr));
            for (q, acc) in row.iter_mut().enumerate() {
                *acc = _mm512_fmadd_ps(v, w[q], *acc);
            }
        }
    }
    for (rr, row) in a.iter().enumerate() {
        for (q, v) in row.iter().enumerate() {
            _mm512_storeu_ps(out.add(rr * out_stride + 16 * q), *v);
        }
    }
}

/// Event-driven dense layer: `y[rows, n] (+)= x[rows, k] @ w^T (+ bias)`, given
/// `wt = w^T` (`[k, n]`). Work is proportional to the union of the non-zeros of 4 rows of
/// `x` times `n`.
#[allow(clippy::too_many_arguments)]
pub fn spike_dense(
    x: &[f32],
    wt: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    rows: usize,
    k: usize,
    n: usize,
    accumulate: bool,
) -> Result<()> {
    if !check_dense("spike gemm", x, wt, bias, y, rows, k, n)? {
        return Ok(());
    }
    let avx512 = has_avx512();
    let zeros = vec![0.0f32; k];
    let block = |(bi, yb): (usize, &mut [f32])| {
        // Union lists of every tile first, then column blocks outermost: the block's
        // `wt[:, c0..c0 + C]` (k x 256 B) is read from L2 by all its tiles.
        let mut unions: Vec<Union> = Vec::new();
        for (ti, yt) in yb.chunks_mut(R * n).enumerate() {
            let r0 = bi * ROW_BLOCK + ti * R;
            let nr = yt.len() / n;
            for yr in yt.chunks_exact_mut(n) {
                match bias {
                    Some(b) if accumulate => yr.iter_mut().zip(b).for_each(|(o, &v)| *o += v),
                    Some(b) => yr.copy_from_slice(b),
                    None if accumulate => {}
                    None => yr.fill(0.0),
                }
            }
            let xs: [&[f32]; R] = std::array::from_fn(|rr| {
                if rr < nr {
                    &x[(r0 + rr) * k..(r0 + rr + 1) * k]
                } else {
                    &zeros[..]
                }
            });
            let mut u = Union::default();
            u.build(k, |i| [xs[0][i], xs[1][i], xs[2][i], xs[3][i]]);
            unions.push(u);
        }
        for c0 in (0..n).step_by(C) {
            let m = C.min(n - c0);
            for (yt, u) in yb.chunks_mut(R * n).zip(&unions) {
                let nr = yt.len() / n;
                tile(&mut yt[c0..], n, nr, m, &wt[c0..], n, u, avx512);
            }
        }
    };
    if parallel(rows.saturating_mul(n).saturating_mul(k)) {
        y.par_chunks_mut(ROW_BLOCK * n).enumerate().for_each(block);
    } else {
        y.chunks_mut(ROW_BLOCK * n).enumerate().for_each(block);
    }
    Ok(())
}

/// The transposed gradient of one block of inputs `i0..` (`gb`, rows of `n`):
/// `gb[i, :] += sum over rows r of x[r, i0 + i] * dy[r, :]`, in row tiles, 4 inputs at once.
#[allow(clippy::too_many_arguments)]
fn dw_block(
    gb: &mut [f32],
    i0: usize,
    x: &[f32],
    dy: &[f32],
    rows: usize,
    k: usize,
    n: usize,
    avx512: bool,
) {
    let mut u = Union::default();
    for t0 in (0..rows).step_by(ROW_TILE) {
        let t1 = (t0 + ROW_TILE).min(rows);
        for (ti, gt) in gb.chunks_mut(R * n).enumerate() {
            let ia = i0 + ti * R;
            let ni = gt.len() / n;
            u.build(t1 - t0, |r| {
                let row = &x[(t0 + r) * k + ia..(t0 + r) * k + ia + ni];
                std::array::from_fn(|rr| if rr < ni { row[rr] } else { 0.0 })
            });
            u.idx.iter_mut().for_each(|r| *r += t0 as u32);
            tile(gt, n, ni, n, dy, n, &u, avx512);
        }
    }
}

/// Event-driven weight gradient of [`spike_dense`]: `dw[n, k] += dy[rows, n]^T @ x[rows, k]`
/// over the non-zeros of `x` only, and `db[n] += sum over rows of dy`.
#[allow(clippy::too_many_arguments)]
pub fn spike_dense_dw(
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
    db: Option<&mut [f32]>,
    rows: usize,
    k: usize,
    n: usize,
) -> Result<()> {
    if !check_dense_dw_and_bias("spike gemm_dw", x, dy, dw, db, rows, k, n)? {
        return Ok(());
    }
    let mut gt = vec![0.0f32; k * n];
    let par = parallel(rows.saturating_mul(n).saturating_mul(k));
    let avx512 = has_avx512();
    let block =
        |(bi, gb): (usize, &mut [f32])| dw_block(gb, bi * IN_BLOCK, x, dy, rows, k, n, avx512);
    if par {
        gt.par_chunks_mut(IN_BLOCK * n).enumerate().for_each(block);
    } else {
        gt.chunks_mut(IN_BLOCK * n).enumerate().for_each(block);
    }
    let add = |(o, row): (usize, &mut [f32])| {
        for (i, d) in row.iter_mut().enumerate() {
            *d += gt[i * n + o];
        }
    };
    if par {
        dw.par_chunks_mut(k).enumerate().for_each(add);
    } else {
        dw.chunks_mut(k).enumerate().for_each(add);
    }
    Ok(())
}

// ---------------------------------------------------------------- event-driven conv2d
//
// A convolution of spikes scatters each active input cell `(c, iy, ix)` into the outputs
// whose window holds it: for every kernel tap `(ki, kj)` that lands on an output position
// `q`, `acc[q, :] += x * wt[(c, ki, kj), :]`, a contiguous `c_out` row of the transposed
// weight (`[c_in * kh * kw, c_out]`, [`transpose`] of the `[c_out, c_in * kh * kw]`
// weight). The accumulator is the image's output in channels-last order (`[p, c_out]`,
// small enough for L1/L2), transposed back at the end. Work: the active cells times the
// taps that land, times `c_out` adds, instead of `c_out * p * c_in * kh * kw` multiply-adds.
//
// Summation order per output: the old value (plus the bias) first, then the active cells in
// increasing `(c, iy, ix)`. For a fixed output position that is increasing `(c, ki, kj)`
// (the tap index grows with the input coordinate), the order `snn_spike_conv2d` in ops.cuh
// uses: the two devices agree bit for bit.

/// The indices `i < x.len()` with `x[i] != 0`, increasing (branch-free compaction).
fn active(x: &[f32], out: &mut Vec<u32>) {
    out.clear();
    out.resize(x.len(), 0);
    let mut c = 0;
    for (i, &v) in x.iter().enumerate() {
        out[c] = i as u32;
        c += (v != 0.0) as usize;
    }
    out.truncate(c);
}

/// Along one axis, for each input coordinate `i`, the kernel taps `k` and output
/// coordinates `o` with `o * stride + k - pad == i`, tap ascending. Built once per call, so
/// the scatter loops do no division.
struct Taps {
    start: Vec<u32>,
    pairs: Vec<(u32, u32)>,
}

impl Taps {
    fn new(len_in: usize, k: usize, pad: usize, stride: usize, len_out: usize) -> Taps {
        let mut start = vec![0u32];
        let mut pairs = Vec::new();
        for i in 0..len_in {
            for kk in 0..k {
                let Some(t) = (i + pad).checked_sub(kk) else {
                    continue;
                };
                if t.is_multiple_of(stride) && t / stride < len_out {
                    pairs.push((kk as u32, (t / stride) as u32));
                }
            }
            start.push(pairs.len() as u32);
        }
        Taps { start, pairs }
    }

    #[inline(always)]
    fn of(&self, i: usize) -> &[(u32, u32)] {
        &self.pairs[self.start[i] as usize..self.start[i + 1] as usize]
    }
}

/// The taps of both axes of a geometry, and per kernel column `kj` the output column that
/// each input column `ix` feeds (`ox_of[kj * w + ix]`, [`NONE`] where it feeds none).
struct ConvTaps {
    y: Taps,
    ox_of: Vec<u32>,
}

const NONE: u32 = u32::MAX;

impl ConvTaps {
    fn new(g: &ConvGeom) -> ConvTaps {
        let x = Taps::new(g.w, g.kw, g.pad, g.stride, g.w_out);
        let mut ox_of = vec![NONE; g.kw * g.w];
        for ix in 0..g.w {
            for &(kj, ox) in x.of(ix) {
                ox_of[kj as usize * g.w + ix] = ox;
            }
        }
        ConvTaps {
            y: Taps::new(g.h, g.kh, g.pad, g.stride, g.h_out),
            ox_of,
        }
    }
}

/// `dst += v * src` (a plain add for a spike), 16 lanes at a time: a whole zmm register
/// per chunk when compiled for AVX-512 (an open-ended zip would be vectorised 64 wide and
/// leave a typical 16- or 32-channel row to the scalar remainder).
#[inline(always)]
fn add_row(dst: &mut [f32], src: &[f32], v: f32) {
    let mut d = dst.chunks_exact_mut(16);
    let mut s = src.chunks_exact(16);
    if v == 1.0 {
        for (a, b) in (&mut d).zip(&mut s) {
            for q in 0..16 {
                a[q] += b[q];
            }
        }
        for (a, &b) in d.into_remainder().iter_mut().zip(s.remainder()) {
            *a += b;
        }
    } else {
        for (a, b) in (&mut d).zip(&mut s) {
            for q in 0..16 {
                a[q] += v * b[q];
            }
        }
        for (a, &b) in d.into_remainder().iter_mut().zip(s.remainder()) {
            *a += v * b;
        }
    }
}

/// Scatters the non-zero cells of one image `x` (`[c_in, h, w]`) into `acc` (`[p, c_out]`).
/// Per input row and kernel tap, the row's active cells go to distinct output positions, so
/// consecutive row adds do not wait on each other (cell by cell, neighbouring cells hit the
/// same outputs and every add waited for the previous store: ~10 cycles each). For a fixed
/// output the terms still come in increasing `(c, ki, kj)`.
#[inline(always)]
fn scatter_image_generic(
    x: &[f32],
    wt: &[f32],
    acc: &mut [f32],
    g: &ConvGeom,
    taps: &ConvTaps,
    act: &mut Vec<u32>,
) {
    let n = g.c_out;
    for c in 0..g.c_in {
        for iy in 0..g.h {
            let ty = taps.y.of(iy);
            if ty.is_empty() {
                continue;
            }
            let row = &x[(c * g.h + iy) * g.w..(c * g.h + iy + 1) * g.w];
            active(row, act);
            if act.is_empty() {
                continue;
            }
            for &(ki, oy) in ty {
                let out_row = oy as usize * g.w_out;
                for kj in 0..g.kw {
                    let r = (c * g.kh + ki as usize) * g.kw + kj;
                    let wr = &wt[r * n..(r + 1) * n];
                    let ox_of = &taps.ox_of[kj * g.w..(kj + 1) * g.w];
                    for &ix in act.iter() {
                        let ox = ox_of[ix as usize];
                        if ox == NONE {
                            continue;
                        }
                        let q = out_row + ox as usize;
                        add_row(&mut acc[q * n..(q + 1) * n], wr, row[ix as usize]);
                    }
                }
            }
        }
    }
}

/// [`scatter_image_generic`] compiled for AVX-512 (the crate targets baseline x86-64).
///
/// # Safety
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn scatter_image_avx512(
    x: &[f32],
    wt: &[f32],
    acc: &mut [f32],
    g: &ConvGeom,
    taps: &ConvTaps,
    act: &mut Vec<u32>,
) {
    scatter_image_generic(x, wt, acc, g, taps, act)
}

fn scatter_image(
    x: &[f32],
    wt: &[f32],
    acc: &mut [f32],
    g: &ConvGeom,
    taps: &ConvTaps,
    act: &mut Vec<u32>,
    avx512: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if avx512 {
        // SAFETY: AVX-512F was detected at run time (`has_avx512`).
        return unsafe { scatter_image_avx512(x, wt, acc, g, taps, act) };
    }
    let _ = avx512;
    scatter_image_generic(x, wt, acc, g, taps, act)
}

/// Event-driven conv2d (torch semantics, as [`super::ops::conv2d`]) over `images` images:
/// `x` `[images, c_in, h, w]` mostly zeros, `wt` the transposed weight
/// `[c_in * kh * kw, c_out]`, `bias` `[c_out]`, `y` `[images, c_out, h_out, w_out]` (+)=.
#[allow(clippy::too_many_arguments)]
pub fn spike_conv2d(
    x: &[f32],
    wt: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    images: usize,
    g: &ConvGeom,
    accumulate: bool,
) -> Result<()> {
    let ConvSizes { xi, p, yi, kk } = check_conv2d("spike conv2d", x, wt, bias, y, images, g)?;
    if images == 0 || yi == 0 || xi == 0 {
        return Ok(());
    }
    let n = g.c_out;
    let avx512 = has_avx512();
    let taps = ConvTaps::new(g);
    let one = |x_img: &[f32], y_img: &mut [f32], scratch: &mut Vec<f32>, _: Parallelism| {
        // scratch: the accumulator `[p, n]`, then the active list (as u32 bits).
        scratch.resize(p * n, 0.0);
        let acc = &mut scratch[..];
        for o in 0..n {
            let b = bias.map_or(0.0, |b| b[o]);
            let yo = &y_img[o * p..(o + 1) * p];
            for q in 0..p {
                acc[q * n + o] = match (accumulate, bias.is_some()) {
                    (true, true) => yo[q] + b,
                    (true, false) => yo[q],
                    (false, _) => b,
                };
            }
        }
        ACTIVE.with_borrow_mut(|act| scatter_image(x_img, wt, acc, g, &taps, act, avx512));
        for o in 0..n {
            for (q, d) in y_img[o * p..(o + 1) * p].iter_mut().enumerate() {
                *d = acc[q * n + o];
            }
        }
    };
    per_image(
        y,
        yi,
        x,
        xi,
        images,
        n.saturating_mul(p).saturating_mul(kk),
        one,
    );
    Ok(())
}

thread_local! {
    /// The active-cell list of the image a thread works on (reused between calls).
    static ACTIVE: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Event-driven weight gradient of a conv2d of spikes over `images` images: `dw`
/// `[c_out, c_in * kh * kw]` `+= sum over images of dy[img] @ im2col(x[img])^T` over the
/// non-zero cells of `x` only, and `db` as [`super::ops::conv2d_dw`]. Each active cell adds
/// `x * dy[img][:, q]` (a `c_out` row of `dy` transposed) into the row of each tap that
/// lands on a position `q`.
///
/// Summation order per weight `(o, r)`: from zero, images ascending, then positions `q`
/// ascending, then added to `dw`: the order of `snn_spike_conv2d_dw` in ops.cuh. Work is
/// split by input channel (every image in order within a task): deterministic.
pub fn spike_conv2d_dw(
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
    db: Option<&mut [f32]>,
    images: usize,
    g: &ConvGeom,
) -> Result<()> {
    let ConvSizes { xi, p, yi, kk } =
        check_conv2d_dw_and_bias("spike conv2d_dw", x, dy, dw, db, images, g)?;
    if images == 0 || yi == 0 || xi == 0 {
        return Ok(());
    }
    let n = g.c_out;
    let hw = g.h * g.w;
    let taps_per_channel = g.kh * g.kw;
    let par = parallel(
        images
            .saturating_mul(n)
            .saturating_mul(p)
            .saturating_mul(kk),
    );
    // dy transposed per image to `[p, n]`: a position's gradients are one contiguous row.
    let mut dyt = vec![0.0f32; images * yi];
    let tr = |(dt, d): (&mut [f32], &[f32])| {
        for o in 0..n {
            for (q, &v) in d[o * p..(o + 1) * p].iter().enumerate() {
                dt[q * n + o] = v;
            }
        }
    };
    if par {
        dyt.par_chunks_mut(yi).zip(dy.par_chunks(yi)).for_each(tr);
    } else {
        dyt.chunks_mut(yi).zip(dy.chunks(yi)).for_each(tr);
    }
    // gt[r, o] for the rows `r` of one input channel: `taps_per_channel * n` floats per task.
    let mut gt = vec![0.0f32; kk * n];
    let avx512 = has_avx512();
    let ct = ConvTaps::new(g);
    let channel = |(c, gc): (usize, &mut [f32])| {
        let mut act = Vec::new();
        for img in 0..images {
            let plane = &x[img * xi + c * hw..img * xi + (c + 1) * hw];
            let dyt = &dyt[img * yi..(img + 1) * yi];
            gather_plane(plane, dyt, gc, g, &ct, &mut act, avx512);
        }
    };
    if par {
        gt.par_chunks_mut(taps_per_channel * n)
            .enumerate()
            .for_each(channel);
    } else {
        gt.chunks_mut(taps_per_channel * n)
            .enumerate()
            .for_each(channel);
    }
    for (o, row) in dw.chunks_mut(kk).enumerate() {
        for (r, d) in row.iter_mut().enumerate() {
            *d += gt[r * n + o];
        }
    }
    Ok(())
}

/// One image plane's share of [`spike_conv2d_dw`]: `gc[(ki, kj), :] += x * dyt[q, :]` for
/// every non-zero cell and every tap that lands on a position `q`. Per input row and tap the
/// gradient row is held in registers (16 lanes at a time) while the row's active cells are
/// added in increasing column, so for each tap the positions come in increasing order.
#[inline(always)]
fn gather_plane_generic(
    plane: &[f32],
    dyt: &[f32],
    gc: &mut [f32],
    g: &ConvGeom,
    taps: &ConvTaps,
    act: &mut Vec<u32>,
) {
    let n = g.c_out;
    for iy in 0..g.h {
        let ty = taps.y.of(iy);
        if ty.is_empty() {
            continue;
        }
        let row = &plane[iy * g.w..(iy + 1) * g.w];
        active(row, act);
        if act.is_empty() {
            continue;
        }
        for &(ki, oy) in ty {
            let out_row = oy as usize * g.w_out;
            for kj in 0..g.kw {
                let t = ki as usize * g.kw + kj;
                let ox_of = &taps.ox_of[kj * g.w..(kj + 1) * g.w];
                let dst = &mut gc[t * n..(t + 1) * n];
                let mut c0 = 0;
                while c0 + 16 <= n {
                    let mut a: [f32; 16] = dst[c0..c0 + 16].try_into().expect("16 lanes");
                    for &ix in act.iter() {
                        let ox = ox_of[ix as usize];
                        if ox == NONE {
                            continue;
                        }
                        let v = row[ix as usize];
                        let src = &dyt[(out_row + ox as usize) * n + c0..][..16];
                        for q in 0..16 {
                            a[q] += v * src[q];
                        }
                    }
                    dst[c0..c0 + 16].copy_from_slice(&a);
                    c0 += 16;
                }
                for o in c0..n {
                    let mut a = dst[o];
                    for &ix in act.iter() {
                        let ox = ox_of[ix as usize];
                        if ox != NONE {
                            a += row[ix as usize] * dyt[(out_row + ox as usize) * n + o];
                        }
                    }
                    dst[o] = a;
                }
            }
        }
    }
}

/// # Safety
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn gather_plane_avx512(
    plane: &[f32],
    dyt: &[f32],
    gc: &mut [f32],
    g: &ConvGeom,
    taps: &ConvTaps,
    act: &mut Vec<u32>,
) {
    gather_plane_generic(plane, dyt, gc, g, taps, act)
}

fn gather_plane(
    plane: &[f32],
    dyt: &[f32],
    gc: &mut [f32],
    g: &ConvGeom,
    taps: &ConvTaps,
    act: &mut Vec<u32>,
    avx512: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if avx512 {
        // SAFETY: AVX-512F was detected at run time (`has_avx512`).
        return unsafe { gather_plane_avx512(plane, dyt, gc, g, taps, act) };
    }
    let _ = avx512;
    gather_plane_generic(plane, dyt, gc, g, taps, act)
}
