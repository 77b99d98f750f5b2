//! 2-D pooling (max or average) over every `(t, b)` image, and its backward op.

use super::{acc_text, time_text, LibraryOp};
use crate::device::Loc;
use crate::error::{Result, RuntimeError};
use crate::exec::interp::Runner;
use crate::exec::validate::{ext_name, sat, Checker};
use crate::plan::{BufId, BufferDecl, Plan, PoolGeom, PoolKind, TimeSel};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pool2d {
    pub x: BufId,
    pub y: BufId,
    pub kind: PoolKind,
    pub geom: PoolGeom,
    pub time: TimeSel,
}

/// Backward of [`Pool2d`]: `dx (+)= ` the gradient `dy` of every window routed to its
/// input cells. Max: all of it to the window's maximum, recomputed from the forward input
/// `x` (the first maximum in row-major order on ties, padding never wins); average: `dy /
/// k^2` to every cell of the window inside the image (padding counted, as in the
/// forward). `x` has `dx`'s layout.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pool2dDx {
    pub x: BufId,
    pub dy: BufId,
    pub dx: BufId,
    pub kind: PoolKind,
    pub geom: PoolGeom,
    pub time: TimeSel,
    pub accumulate: bool,
}

/// Pool2d over `images` contiguous images `[images, c, h, w]` -> `[images, c, h_out, w_out]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolDesc {
    pub images: usize,
    pub x: Loc,
    pub y: Loc,
    pub kind: PoolKind,
    pub geom: PoolGeom,
}

/// Backward of a pool2d over `images` contiguous images: `dx` (+)= `dy` routed back through
/// the windows (see [`Pool2dDx`]); `x` is the forward input, laid out like `dx`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolDxDesc {
    pub images: usize,
    pub x: Loc,
    pub dy: Loc,
    pub dx: Loc,
    pub kind: PoolKind,
    pub geom: PoolGeom,
    pub accumulate: bool,
}

/// What a device implements for pooling.
pub trait PoolOps {
    /// See [`PoolDesc`].
    fn pool2d(&mut self, d: &PoolDesc) -> Result<()>;
    /// See [`PoolDxDesc`].
    fn pool2d_dx(&mut self, d: &PoolDxDesc) -> Result<()>;
}

/// A pooling op's geometry and its buffers' features.
fn check_pool(
    c: &Checker<'_>,
    xd: &BufferDecl,
    yd: &BufferDecl,
    g: &PoolGeom,
    what: &str,
) -> Result<()> {
    let [top, left, bottom, right] = g.pad;
    let (hp, wp) = (
        g.h.saturating_add(top).saturating_add(bottom),
        g.w.saturating_add(left).saturating_add(right),
    );
    // Symmetric: torch's pad <= k / 2; sides that differ (Spyker's): each < k, so that no
    // window holds padding only.
    let pad_ok = if g.symmetric() {
        top.saturating_mul(2) <= g.k
    } else {
        g.pad.iter().all(|&p| p < g.k)
    };
    let ok = g.c > 0
        && g.k > 0
        && g.stride > 0
        && pad_ok
        && hp >= g.k
        && wp >= g.k
        && g.h_out == (hp - g.k) / g.stride + 1
        && g.w_out == (wp - g.k) / g.stride + 1;
    if !ok {
        return Err(RuntimeError::plan(format!(
            "{what}: inconsistent geometry {g:?} (h_out must be (h + top + bottom - k) / stride + 1, pad <= k / 2 (each side < k if they differ), all sizes >= 1)"
        )));
    }
    c.features(xd, sat(&[g.c, g.h, g.w]), what)?;
    c.features(yd, sat(&[g.c, g.h_out, g.w_out]), what)?;
    Ok(())
}

/// `1`, or `[top, left, bottom, right]` when the sides differ.
fn pad_text(g: &PoolGeom) -> String {
    let p = g.pad;
    if g.symmetric() {
        p[0].to_string()
    } else {
        format!("[{}, {}, {}, {}]", p[0], p[1], p[2], p[3])
    }
}

impl LibraryOp for Pool2d {
    fn name(&self) -> &'static str {
        "pool2d"
    }
    fn check(&self, c: &Checker<'_>, in_loop: bool, what: &str) -> Result<()> {
        let (xd, yd) = c.io_pair(self.x, self.y, self.time, in_loop, what)?;
        check_pool(c, xd, yd, &self.geom, what)
    }
    fn run(&self, r: &mut Runner<'_>) -> Result<()> {
        let (xs, ys) = (r.buf(self.x).slot, r.buf(self.y).slot);
        for b in r.blocks(self.time, self.x, self.y) {
            r.dev.pool2d(&PoolDesc {
                images: b.rows,
                x: Loc::new(xs, b.x),
                y: Loc::new(ys, b.y),
                kind: self.kind,
                geom: self.geom,
            })?;
        }
        Ok(())
    }
    fn print(&self, p: &Plan) -> String {
        let g = &self.geom;
        format!(
            "{:?}pool {} = {} [{}x{}x{}] window {} stride {} pad {} -> [{}x{}]  ({})",
            self.kind,
            p.buffers[self.y].name,
            p.buffers[self.x].name,
            g.c,
            g.h,
            g.w,
            g.k,
            g.stride,
            pad_text(g),
            g.h_out,
            g.w_out,
            time_text(&self.time)
        )
    }
}

impl LibraryOp for Pool2dDx {
    fn name(&self) -> &'static str {
        "pool2d_dx"
    }
    fn check(&self, c: &Checker<'_>, in_loop: bool, what: &str) -> Result<()> {
        let (xd, yd) = c.io_pair(self.dx, self.dy, self.time, in_loop, what)?;
        check_pool(c, xd, yd, &self.geom, what)?;
        // The forward input: read at dx's offsets, so the same layout.
        let (fd, _) = c.io_pair(self.x, self.dy, self.time, in_loop, what)?;
        if fd.extent != xd.extent || fd.features != xd.features || fd.slot == xd.slot {
            return Err(RuntimeError::plan(format!(
                "{what}: the forward input `{}` ({}, {} features, slot {}) must have the layout of `{}` ({}, {} features) and another slot",
                fd.name,
                ext_name(fd.extent),
                fd.features,
                fd.slot,
                xd.name,
                ext_name(xd.extent),
                xd.features
            )));
        }
        Ok(())
    }
    fn run(&self, r: &mut Runner<'_>) -> Result<()> {
        // `x` has `dx`'s extent and features (validated): the same offsets.
        let (fs, xs, ys) = (r.buf(self.x).slot, r.buf(self.dx).slot, r.buf(self.dy).slot);
        for b in r.blocks(self.time, self.dx, self.dy) {
            r.dev.pool2d_dx(&PoolDxDesc {
                images: b.rows,
                x: Loc::new(fs, b.x),
                dx: Loc::new(xs, b.x),
                dy: Loc::new(ys, b.y),
                kind: self.kind,
                geom: self.geom,
                accumulate: self.accumulate || b.x_again,
            })?;
        }
        Ok(())
    }
    fn print(&self, p: &Plan) -> String {
        let g = &self.geom;
        format!(
            "{:?}pool_dx {} {}= {} routed through {} [{}x{}x{}] window {} stride {} pad {}  ({})",
            self.kind,
            p.buffers[self.dx].name,
            acc_text(self.accumulate),
            p.buffers[self.dy].name,
            p.buffers[self.x].name,
            g.c,
            g.h,
            g.w,
            g.k,
            g.stride,
            pad_text(g),
            time_text(&self.time)
        )
    }
}
