//! Convolutions on the CPU: im2col + GEMM (or the event-driven scatter of [`super::spike`])
//! and their backward passes (col2im for the input, GEMM per chunk for the weights).

use super::matmul::{check_len, mul, parallelism, sgemm, PAR_MACS};
use super::*;
use crate::error::{Result, RuntimeError};
use crate::op::conv::{ConvDesc, ConvDwDesc, ConvDxDesc, ConvOps, ConvWaveDesc};
use crate::plan::ConvGeom;
use ::gemm::Parallelism;
use rayon::prelude::*;

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

impl ConvOps for CpuDevice {
    fn conv2d(&mut self, d: &ConvDesc) -> Result<()> {
        let g = &d.geom;
        let w = held(&self.weights, d.w, "conv2d", "weight")?;
        let bias = d
            .bias
            .map(|b| held(&self.weights, b, "conv2d", "bias"))
            .transpose()?;
        let xi = mul2(mul2(g.c_in, g.h)?, g.w)?;
        let yi = mul2(mul2(g.c_out, g.h_out)?, g.w_out)?;
        let kk = mul2(mul2(g.c_in, g.kh)?, g.kw)?;
        let (x, y) = pair(
            &mut self.slots,
            d.x,
            mul2(d.images, xi)?,
            d.y,
            mul2(d.images, yi)?,
            "conv2d",
        )?;
        if d.sparse && w.len() == mul2(g.c_out, kk)? {
            let wt = transposed(&mut self.transposed, d.w, w, g.c_out, kk);
            return spike::spike_conv2d(x, wt, bias, y, d.images, g, d.accumulate);
        }
        conv2d(x, w, bias, y, d.images, g, d.accumulate)
    }

    fn conv2d_wave(&mut self, d: &ConvWaveDesc) -> Result<()> {
        let g = &d.geom;
        let w = held(&self.weights, d.w, "wave conv2d", "weight")?;
        let bias = d
            .bias
            .map(|b| held(&self.weights, b, "wave conv2d", "bias"))
            .transpose()?;
        let rows = mul2(d.t_len, d.batch)?;
        let xi = mul2(mul2(g.c_in, g.h)?, g.w)?;
        let yi = mul2(mul2(g.c_out, g.h_out)?, g.w_out)?;
        let kk = mul2(mul2(g.c_in, g.kh)?, g.kw)?;
        let (x, y) = pair(
            &mut self.slots,
            d.x,
            mul2(rows, xi)?,
            d.y,
            mul2(rows, yi)?,
            "wave conv2d",
        )?;
        check_len("wave conv2d weight", w.len(), mul2(g.c_out, kk)?)?;
        let wt = transposed(&mut self.transposed, d.w, w, g.c_out, kk);
        super::wave_conv::wave_conv2d(x, w, wt, bias, y, d.t_len, d.batch, g, d.accumulate)
    }

    fn conv2d_dx(&mut self, d: &ConvDxDesc) -> Result<()> {
        let g = &d.geom;
        let w = held(&self.weights, d.w, "conv2d_dx", "weight")?;
        let xi = mul2(mul2(g.c_in, g.h)?, g.w)?;
        let yi = mul2(mul2(g.c_out, g.h_out)?, g.w_out)?;
        let (dy, dx) = pair(
            &mut self.slots,
            d.dy,
            mul2(d.images, yi)?,
            d.dx,
            mul2(d.images, xi)?,
            "conv2d_dx",
        )?;
        conv2d_dx(dy, w, dx, d.images, g, d.accumulate)
    }

    fn conv2d_dw(&mut self, d: &ConvDwDesc) -> Result<()> {
        let g = &d.geom;
        let xi = mul2(mul2(g.c_in, g.h)?, g.w)?;
        let yi = mul2(mul2(g.c_out, g.h_out)?, g.w_out)?;
        let rx = range(&self.slots, d.x, mul2(d.images, xi)?, "conv2d_dw input")?;
        let rdy = range(
            &self.slots,
            d.dy,
            mul2(d.images, yi)?,
            "conv2d_dw output gradient",
        )?;
        if self.grads.len() < self.weights.len() {
            return Err(RuntimeError::Device(
                "conv2d_dw: gradients are not allocated (zero_grads first)".into(),
            ));
        }
        let (dw, db) = grad_pair(&mut self.grads, d.w, d.bias, "conv2d_dw")?;
        let x = &self.slots[d.x.slot][rx];
        let dy = &self.slots[d.dy.slot][rdy];
        let db = db.map(|v| v.as_mut_slice());
        if d.sparse {
            spike::spike_conv2d_dw(x, dy, dw, db, d.images, g)
        } else {
            conv2d_dw(x, dy, dw, db, d.images, g)
        }
    }
}
