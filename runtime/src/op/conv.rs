//! 2-D convolutions (cross-correlation, torch `Conv2d`) over every `(t, b)` image, and their
//! two backward ops.

use super::{acc_text, bias_text, time_text, LibraryOp};
use crate::device::Loc;
use crate::error::{Result, RuntimeError};
use crate::exec::interp::Runner;
use crate::exec::validate::{sat, Checker};
use crate::plan::{BufId, BufferDecl, ConvGeom, Extent, Plan, TimeSel, WeightId};
use serde::{Deserialize, Serialize};

/// 2-D convolution (cross-correlation, torch Conv2d) over every `(t, b)` image.
/// `sparse`: `x` holds spikes, so the device scatters its non-zero cells through the
/// kernel taps instead of unfolding every window into a GEMM: the same result up to the
/// summation order (as for [`super::dense::Gemm`]).
/// `wave`: `x` is expected to be a cumulative 0/1 wave (a neuron that fires stays 1), so the
/// device convolves each input's first-spike time once instead of every step (see
/// [`ConvWaveDesc`]); needs the whole sequence (`TimeSel::All`, delay 0, `Seq` buffers).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Conv2d {
    pub x: BufId,
    pub w: WeightId,
    pub bias: Option<WeightId>,
    pub y: BufId,
    pub geom: ConvGeom,
    pub time: TimeSel,
    pub accumulate: bool,
    pub sparse: bool,
    #[serde(default)]
    pub wave: bool,
}

/// Backward of [`Conv2d`] for its input (a transposed convolution, col2im):
/// `dx[img] (+)= sum over c_out, window of W * dy[img]` for every `(t, b)` image, with the
/// forward op's geometry; rows map like the forward op's (`dx` plays `x`, `dy` plays
/// `y`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Conv2dDx {
    pub dy: BufId,
    pub w: WeightId,
    pub dx: BufId,
    pub geom: ConvGeom,
    pub time: TimeSel,
    pub accumulate: bool,
}

/// Backward of [`Conv2d`] for its weights: the gradient of `w` gets
/// `+= sum over images of dy[img] (x) unfold(x[img])` and that of `bias` the sum of `dy`
/// over images and positions, per output channel (accumulated over T and batch).
/// `sparse`: `x` holds spikes; event-driven over its non-zero cells.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Conv2dDw {
    pub x: BufId,
    pub dy: BufId,
    pub w: WeightId,
    pub bias: Option<WeightId>,
    pub geom: ConvGeom,
    pub time: TimeSel,
    pub sparse: bool,
}

/// Conv2d over `images` contiguous images: `x` is `[images, c_in, h, w]`, `y` is
/// `[images, c_out, h_out, w_out]`, weight `[c_out, c_in, kh, kw]`, bias `[c_out]` (see
/// [`Conv2d`]). `sparse`: `x` is mostly zeros (spikes): scatter its non-zero cells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvDesc {
    pub images: usize,
    pub x: Loc,
    pub y: Loc,
    pub w: WeightId,
    pub bias: Option<WeightId>,
    pub geom: ConvGeom,
    pub accumulate: bool,
    pub sparse: bool,
}

/// Conv2d of a whole sequence that should be a cumulative 0/1 wave: `x` `[t_len, batch,
/// c_in, h, w]`, `y` `[t_len, batch, c_out, h_out, w_out]` (+)=, weight and bias as
/// [`ConvDesc`]. `V[t] = bias + sum of w over the receptive-field inputs whose first spike
/// time is <= t`: each input's first-spike time is found once, each spiking input adds its
/// weight column (every output channel) into a per-step accumulator at that time, and a
/// prefix sum over t writes the steps. Work: spiking inputs x fan-out + T x outputs
/// instead of T x the dense conv. A sample whose input is not a cumulative 0/1 wave
/// (a value other than 0 and 1, or a 1 followed by a 0) runs the dense conv of every step
/// instead, so the result is always the convolution (up to the summation order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvWaveDesc {
    pub t_len: usize,
    pub batch: usize,
    pub x: Loc,
    pub y: Loc,
    pub w: WeightId,
    pub bias: Option<WeightId>,
    pub geom: ConvGeom,
    pub accumulate: bool,
}

/// Backward of a conv2d for its input over `images` contiguous images: `dx`
/// `[images, c_in, h, w]` (+)= the transposed convolution of `dy` `[images, c_out, h_out,
/// w_out]` with the weight `[c_out, c_in, kh, kw]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvDxDesc {
    pub images: usize,
    pub dy: Loc,
    pub dx: Loc,
    pub w: WeightId,
    pub geom: ConvGeom,
    pub accumulate: bool,
}

/// Backward of a conv2d for its weights over `images` contiguous images: the gradient of
/// `w` gets `+=` the sum over images of `dy[img] @ im2col(x[img])^T`, that of `bias` the
/// sum of `dy` per output channel. `sparse`: over the non-zero cells of `x` only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvDwDesc {
    pub images: usize,
    pub x: Loc,
    pub dy: Loc,
    pub w: WeightId,
    pub bias: Option<WeightId>,
    pub geom: ConvGeom,
    pub sparse: bool,
}

/// What a device implements for convolutions.
pub trait ConvOps {
    /// See [`ConvDesc`].
    fn conv2d(&mut self, d: &ConvDesc) -> Result<()>;
    /// See [`ConvWaveDesc`].
    fn conv2d_wave(&mut self, d: &ConvWaveDesc) -> Result<()>;
    /// See [`ConvDxDesc`].
    fn conv2d_dx(&mut self, d: &ConvDxDesc) -> Result<()>;
    /// See [`ConvDwDesc`]; accumulates into the weight gradients.
    fn conv2d_dw(&mut self, d: &ConvDwDesc) -> Result<()>;
}

/// A conv's geometry, its buffers' features and its weights' shapes.
fn check_conv(
    c: &Checker<'_>,
    xd: &BufferDecl,
    yd: &BufferDecl,
    w: WeightId,
    bias: Option<WeightId>,
    g: &ConvGeom,
    what: &str,
) -> Result<()> {
    let ok = g.c_in > 0
        && g.c_out > 0
        && g.kh > 0
        && g.kw > 0
        && g.stride > 0
        && g.h.saturating_add(g.pad.saturating_mul(2)) >= g.kh
        && g.w.saturating_add(g.pad.saturating_mul(2)) >= g.kw
        && g.h_out == (g.h.saturating_add(g.pad.saturating_mul(2)) - g.kh) / g.stride + 1
        && g.w_out == (g.w.saturating_add(g.pad.saturating_mul(2)) - g.kw) / g.stride + 1;
    if !ok {
        return Err(RuntimeError::plan(format!(
            "{what}: inconsistent geometry {g:?} (h_out must be (h + 2 pad - kh) / stride + 1, all sizes >= 1)"
        )));
    }
    c.features(xd, sat(&[g.c_in, g.h, g.w]), what)?;
    c.features(yd, sat(&[g.c_out, g.h_out, g.w_out]), what)?;
    c.weight_shape(w, &[g.c_out, g.c_in, g.kh, g.kw], what)?;
    if let Some(bi) = bias {
        c.weight_shape(bi, &[g.c_out], what)?;
    }
    Ok(())
}

impl LibraryOp for Conv2d {
    fn name(&self) -> &'static str {
        "conv2d"
    }
    fn check(&self, c: &Checker<'_>, in_loop: bool, what: &str) -> Result<()> {
        let (xd, yd) = c.io_pair(self.x, self.y, self.time, in_loop, what)?;
        let whole_sequence = self.time == TimeSel::All { delay: 0 }
            && xd.extent == Extent::Seq
            && yd.extent == Extent::Seq;
        if self.wave && (!whole_sequence || self.sparse) {
            return Err(RuntimeError::plan(format!(
                "{what}: a wave conv2d reads and writes whole sequences (TimeSel::All, delay 0, Seq buffers) and is not also event-driven"
            )));
        }
        check_conv(c, xd, yd, self.w, self.bias, &self.geom, what)
    }
    fn run(&self, r: &mut Runner<'_>) -> Result<()> {
        let (xs, ys) = (r.buf(self.x).slot, r.buf(self.y).slot);
        let g = self.geom;
        if self.wave {
            let len = r.t_len * r.batch * g.c_in * g.h * g.w;
            r.probe_input(self.w, Loc::new(xs, 0), len)?;
            return r.dev.conv2d_wave(&ConvWaveDesc {
                t_len: r.t_len,
                batch: r.batch,
                x: Loc::new(xs, 0),
                y: Loc::new(ys, 0),
                w: self.w,
                bias: self.bias,
                geom: g,
                accumulate: self.accumulate,
            });
        }
        for b in r.blocks(self.time, self.x, self.y) {
            r.probe_input(self.w, Loc::new(xs, b.x), b.rows * g.c_in * g.h * g.w)?;
            r.dev.conv2d(&ConvDesc {
                images: b.rows,
                x: Loc::new(xs, b.x),
                y: Loc::new(ys, b.y),
                w: self.w,
                bias: self.bias,
                geom: g,
                accumulate: self.accumulate,
                sparse: self.sparse,
            })?;
        }
        Ok(())
    }
    fn print(&self, p: &Plan) -> String {
        let g = &self.geom;
        format!(
            "conv2d {} = {} [{}x{}x{}] * {} [{}x{}, stride {}, pad {}] -> [{}x{}x{}]{}  ({}){}",
            p.buffers[self.y].name,
            p.buffers[self.x].name,
            g.c_in,
            g.h,
            g.w,
            p.weights[self.w].name,
            g.kh,
            g.kw,
            g.stride,
            g.pad,
            g.c_out,
            g.h_out,
            g.w_out,
            bias_text(p, self.bias),
            time_text(&self.time),
            match (self.sparse, self.wave) {
                (_, true) => "  wave (first-spike times, dense per step where not a wave)",
                (true, false) => "  event-driven",
                (false, false) => "",
            }
        )
    }
}

impl LibraryOp for Conv2dDx {
    fn name(&self) -> &'static str {
        "conv2d_dx"
    }
    fn check(&self, c: &Checker<'_>, in_loop: bool, what: &str) -> Result<()> {
        let (xd, yd) = c.io_pair(self.dx, self.dy, self.time, in_loop, what)?;
        check_conv(c, xd, yd, self.w, None, &self.geom, what)
    }
    fn run(&self, r: &mut Runner<'_>) -> Result<()> {
        // The forward row mapping: dx plays x, dy plays y. A static dx read by every step
        // sums the blocks.
        let (xs, ys) = (r.buf(self.dx).slot, r.buf(self.dy).slot);
        for b in r.blocks(self.time, self.dx, self.dy) {
            r.dev.conv2d_dx(&ConvDxDesc {
                images: b.rows,
                dx: Loc::new(xs, b.x),
                dy: Loc::new(ys, b.y),
                w: self.w,
                geom: self.geom,
                accumulate: self.accumulate || b.x_again,
            })?;
        }
        Ok(())
    }
    fn print(&self, p: &Plan) -> String {
        let g = &self.geom;
        format!(
            "conv2d_dx {} {}= {} [{}x{}x{}] *T {} [{}x{}, stride {}, pad {}] -> [{}x{}x{}]  ({})",
            p.buffers[self.dx].name,
            acc_text(self.accumulate),
            p.buffers[self.dy].name,
            g.c_out,
            g.h_out,
            g.w_out,
            p.weights[self.w].name,
            g.kh,
            g.kw,
            g.stride,
            g.pad,
            g.c_in,
            g.h,
            g.w,
            time_text(&self.time)
        )
    }
}

impl LibraryOp for Conv2dDw {
    fn name(&self) -> &'static str {
        "conv2d_dw"
    }
    fn check(&self, c: &Checker<'_>, in_loop: bool, what: &str) -> Result<()> {
        let (xd, yd) = c.io_pair(self.x, self.dy, self.time, in_loop, what)?;
        check_conv(c, xd, yd, self.w, self.bias, &self.geom, what)?;
        if self.bias == Some(self.w) {
            return Err(RuntimeError::plan(format!(
                "{what}: weight and bias are the same tensor"
            )));
        }
        Ok(())
    }
    fn run(&self, r: &mut Runner<'_>) -> Result<()> {
        let (xs, ys) = (r.buf(self.x).slot, r.buf(self.dy).slot);
        for b in r.blocks(self.time, self.x, self.dy) {
            r.dev.conv2d_dw(&ConvDwDesc {
                images: b.rows,
                x: Loc::new(xs, b.x),
                dy: Loc::new(ys, b.y),
                w: self.w,
                bias: self.bias,
                geom: self.geom,
                sparse: self.sparse,
            })?;
        }
        Ok(())
    }
    fn print(&self, p: &Plan) -> String {
        let g = &self.geom;
        let dy = &p.buffers[self.dy].name;
        let bias = self
            .bias
            .map(|i| format!(", grad {} += chansum({dy})", p.weights[i].name))
            .unwrap_or_default();
        format!(
            "conv2d_dw grad {} += {dy} (x) unfold({}) [{}x{}, stride {}, pad {}]{bias}  ({}){}",
            p.weights[self.w].name,
            p.buffers[self.x].name,
            g.kh,
            g.kw,
            g.stride,
            g.pad,
            time_text(&self.time),
            if self.sparse { "  event-driven" } else { "" }
        )
    }
}
