//! Max and average pooling on the CPU, and its backward pass.

use super::matmul::{check_len, mul};
use super::*;
use crate::error::{Result, RuntimeError};
use crate::op::pool::{PoolDesc, PoolDxDesc, PoolOps};
use crate::plan::{PoolGeom, PoolKind};

pub(crate) fn check_pool(g: &PoolGeom) -> Result<()> {
    let [top, left, bottom, right] = g.pad;
    let (hp, wp) = (
        g.h.checked_add(top).and_then(|v| v.checked_add(bottom)),
        g.w.checked_add(left).and_then(|v| v.checked_add(right)),
    );
    let pad_ok = if g.symmetric() {
        top.saturating_mul(2) <= g.k
    } else {
        g.pad.iter().all(|&p| p < g.k)
    };
    let ok = g.c > 0
        && g.k > 0
        && g.stride > 0
        && pad_ok
        && hp.zip(wp).is_some_and(|(hp, wp)| {
            hp >= g.k
                && wp >= g.k
                && g.h_out == (hp - g.k) / g.stride + 1
                && g.w_out == (wp - g.k) / g.stride + 1
        });
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
        let y0 = (oy * g.stride) as isize - g.pad[0] as isize;
        let ys = y0.max(0) as usize;
        let ye = ((y0 + g.k as isize).min(g.h as isize)).max(0) as usize;
        for ox in 0..g.w_out {
            let x0 = (ox * g.stride) as isize - g.pad[1] as isize;
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
/// `images` contiguous `[c, h, w]` images. Only the top and left padding place the windows;
/// the bottom and right ones only count in `h_out`, `w_out`.
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

/// The cell of window `(oy, ox)` that max pooling picks: the first maximum in row-major
/// order (a later cell wins only when strictly greater), never a padded cell. `None` only
/// for a window without cells (impossible in a valid geometry).
fn window_argmax(x: &[f32], g: &PoolGeom, oy: usize, ox: usize) -> Option<usize> {
    let y0 = (oy * g.stride) as isize - g.pad[0] as isize;
    let x0 = (ox * g.stride) as isize - g.pad[1] as isize;
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
        let ty = iy + g.pad[0];
        let oy_lo = if ty + 1 > g.k {
            (ty + 1 - g.k).div_ceil(g.stride)
        } else {
            0
        };
        let oy_hi = (ty / g.stride).min(g.h_out - 1);
        for ix in 0..g.w {
            let tx = ix + g.pad[1];
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

impl PoolOps for CpuDevice {
    fn pool2d(&mut self, d: &PoolDesc) -> Result<()> {
        let g = &d.geom;
        let xi = mul2(mul2(g.c, g.h)?, g.w)?;
        let yi = mul2(mul2(g.c, g.h_out)?, g.w_out)?;
        let (x, y) = pair(
            &mut self.slots,
            d.x,
            mul2(d.images, xi)?,
            d.y,
            mul2(d.images, yi)?,
            "pool2d",
        )?;
        pool2d(x, y, d.images, d.kind, g)
    }

    fn pool2d_dx(&mut self, d: &PoolDxDesc) -> Result<()> {
        let g = &d.geom;
        let xi = mul2(mul2(g.c, g.h)?, g.w)?;
        let yi = mul2(mul2(g.c, g.h_out)?, g.w_out)?;
        let rx = range(&self.slots, d.x, mul2(d.images, xi)?, "pool2d_dx input")?;
        let rdy = range(
            &self.slots,
            d.dy,
            mul2(d.images, yi)?,
            "pool2d_dx output gradient",
        )?;
        let rdx = range(
            &self.slots,
            d.dx,
            mul2(d.images, xi)?,
            "pool2d_dx input gradient",
        )?;
        if d.dx.slot == d.x.slot || d.dx.slot == d.dy.slot {
            return Err(RuntimeError::Device(format!(
                "pool2d_dx: the input gradient shares slot {} with an input",
                d.dx.slot
            )));
        }
        // Take the written slot out, so the two read slots stay borrowable.
        let mut dxs = std::mem::take(&mut self.slots[d.dx.slot]);
        let r = pool2d_dx(
            &self.slots[d.x.slot][rx],
            &self.slots[d.dy.slot][rdy],
            &mut dxs[rdx],
            d.images,
            d.kind,
            g,
            d.accumulate,
        );
        self.slots[d.dx.slot] = dxs;
        r
    }
}
