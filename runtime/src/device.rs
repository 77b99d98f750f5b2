//! The device abstraction the plan executor drives.
//!
//! A device owns its memory: the plan's physical slots, the weights and the flat parameter
//! array live on it, and the executor addresses them by slot and element offset ([`Loc`]),
//! weight id, and parameter offset. The executor has already resolved time selection
//! (which rows an op touches) into plain offsets and row counts, so a device implements
//! only dense primitives: copy in/out, zero, GEMM, conv, pooling and kernel launches. The
//! CPU device ([`crate::cpu::CpuDevice`]) is one implementation; a CUDA device implements
//! the same trait with device pointers, cuBLAS and NVRTC-compiled kernels.
//!
//! Every method returns an error instead of panicking on out-of-range arguments.

use crate::error::Result;
use crate::plan::{ConvGeom, KernelId, LaunchTime, PoolGeom, PoolKind, WeightId};
use crate::train::optim::Update;

/// Index of a physical memory slot.
pub type SlotId = usize;

/// A position in device memory: element `offset` of slot `slot`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Loc {
    pub slot: SlotId,
    pub offset: usize,
}

impl Loc {
    pub fn new(slot: SlotId, offset: usize) -> Loc {
        Loc { slot, offset }
    }
}

/// `y[rows, n] (+)= x[rows, k] @ W^T (+ bias)`; `W` is `[n, k]` row-major, `x` and `y` are
/// contiguous row-major blocks. The bias is added once. `sparse`: `x` is mostly zeros
/// (spikes): run over its non-zeros (see [`crate::plan::Op::Gemm`]).
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

/// Mixing over time rows: `y[rows_out, cols] (+)= a[rows_out, rows_in] @ x[rows_in, cols]
/// (+ bias[rows_out], broadcast over the columns)`. `a` and `bias` are host slices (the
/// executor builds the matrix from weights, parameters or a response buffer); `x` and `y`
/// are contiguous row-major blocks in distinct slots. The bias is added once.
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

/// Conv2d (torch semantics) over `images` contiguous images: `x` is `[images, c_in, h, w]`,
/// `y` is `[images, c_out, h_out, w_out]`, weight `[c_out, c_in, kh, kw]`, bias `[c_out]`.
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
/// Conv2d over `images` contiguous images (see [`crate::plan::Op::Conv2d`]). `sparse`: `x`
/// is mostly zeros (spikes): scatter its non-zero cells.
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

/// Pool2d over `images` contiguous images `[images, c, h, w]` -> `[images, c, h_out, w_out]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolDesc {
    pub images: usize,
    pub x: Loc,
    pub y: Loc,
    pub kind: PoolKind,
    pub geom: PoolGeom,
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

/// Backward of a pool2d over `images` contiguous images: `dx` (+)= `dy` routed back through
/// the windows (see [`crate::plan::Op::Pool2dDx`]); `x` is the forward input, laid out like
/// `dx`.
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

/// One launch group with its buffers resolved to slots (buffers start at offset 0).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupDesc {
    pub slots: Vec<SlotId>,
    /// Offset into the flat parameter array.
    pub params: usize,
    /// Neurons per sample; the index space is `batch * features`.
    pub features: usize,
    /// Weight arguments, passed after the slots.
    pub weights: Vec<WeightArg>,
}

/// A weight argument of a launch: the weight's values, or (`grad`) its gradient, which the
/// kernel adds into atomically. `len` is the number of elements the kernel may touch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WeightArg {
    pub id: WeightId,
    pub grad: bool,
    pub len: usize,
}

/// A launch of one generated kernel over several groups (one parallel region).
#[derive(Clone, Copy, Debug)]
pub struct LaunchDesc<'a> {
    pub kernel: KernelId,
    pub groups: &'a [GroupDesc],
    pub time: LaunchTime,
    pub t_len: usize,
    /// Current step (0 for [`LaunchTime::Seq`]).
    pub t_step: usize,
    pub batch: usize,
}

/// [`Device::set_optim_state`]'s argument check: buffer `k` (0 or 1) of a weight of `n`
/// values gets `len` values.
pub(crate) fn check_optim_state(id: WeightId, k: usize, n: usize, len: usize) -> Result<()> {
    if k > 1 || len != n {
        return Err(crate::error::RuntimeError::Device(format!(
            "set_optim_state: buffer {k} of weight {id} must hold {n} values, not {len}"
        )));
    }
    Ok(())
}

/// What the plan executor needs from a device. Calls may be asynchronous; [`Device::sync`]
/// and [`Device::download`] are the points where results must be complete.
pub trait Device: Send {
    /// A short description, e.g. `cpu (8 threads)`.
    fn name(&self) -> String;

    /// Number of kernels the device can launch (`LaunchDesc::kernel < num_kernels()`).
    fn num_kernels(&self) -> usize;

    /// Makes slot `i` hold at least `sizes[i]` f32 elements. A slot whose size is unchanged
    /// keeps its allocation; contents after a resize are zero.
    fn alloc_slots(&mut self, sizes: &[usize]) -> Result<()>;

    /// Stores (and on first use allocates) weight `id`.
    fn set_weight(&mut self, id: WeightId, data: &[f32]) -> Result<()>;

    /// Copies weight `id` back to the host.
    fn get_weight(&mut self, id: WeightId, out: &mut [f32]) -> Result<()>;

    /// Replaces the flat parameter array the kernels read.
    fn set_params(&mut self, params: &[f32]) -> Result<()>;

    /// Host -> device copy of `data.len()` elements.
    fn upload(&mut self, dst: Loc, data: &[f32]) -> Result<()>;

    /// Device -> host copy of `out.len()` elements.
    fn download(&mut self, src: Loc, out: &mut [f32]) -> Result<()>;

    /// Sets `len` elements to zero.
    fn zero(&mut self, dst: Loc, len: usize) -> Result<()>;

    /// How many of the `len` elements at `src` are not zero (a calibration run counts the
    /// spikes a projection reads). The default downloads them; a device may count in place.
    fn count_nonzero(&mut self, src: Loc, len: usize) -> Result<usize> {
        let mut host = vec![0.0; len];
        self.download(src, &mut host)?;
        Ok(host.iter().filter(|&&v| v != 0.0).count())
    }

    fn gemm(&mut self, d: &GemmDesc) -> Result<()>;

    /// See [`TimeMixDesc`].
    fn time_mix(&mut self, d: &TimeMixDesc<'_>) -> Result<()>;

    /// See [`GemmDxDesc`].
    fn gemm_dx(&mut self, d: &GemmDxDesc) -> Result<()>;

    /// See [`GemmDwDesc`]; accumulates into the weight gradients.
    fn gemm_dw(&mut self, d: &GemmDwDesc) -> Result<()>;

    /// Sets every weight gradient to zero (allocating them on first use).
    /// See [`TimeMixDwDesc`]: `g` gets the `rows_out x rows_in` products, `sums` (when
    /// given, `rows_out` long) the row sums of `dy`.
    fn time_mix_dw(
        &mut self,
        d: &TimeMixDwDesc,
        g: &mut [f32],
        sums: Option<&mut [f32]>,
    ) -> Result<()>;

    /// Adds `data` into the gradient of weight `id` (allocated by `zero_grads`).
    fn add_grad(&mut self, id: WeightId, data: &[f32]) -> Result<()>;

    fn zero_grads(&mut self) -> Result<()>;

    /// Copies the gradient of weight `id` to the host.
    fn get_grad(&mut self, id: WeightId, out: &mut [f32]) -> Result<()>;

    /// Adds the squares of gradient `id`'s elements, in f64, to `start` and returns the
    /// sum: gradient clipping's total norm, tensor after tensor. The CPU sums in element
    /// order (torch's result bit for bit); a GPU sums in its own order.
    fn grad_sq_sum(&mut self, id: WeightId, start: f64) -> Result<f64>;

    /// The sum of squares of gradients `0..n`, tensor after tensor as [`Device::grad_sq_sum`]
    /// adds them (the default); a device may gather the partial sums in one round trip.
    fn grad_sq_total(&mut self, n: usize) -> Result<f64> {
        let mut acc = 0.0f64;
        for i in 0..n {
            acc = self.grad_sq_sum(i, acc)?;
        }
        Ok(acc)
    }

    /// One optimizer update of weight `id` in place, from its gradient (times
    /// `grad_scale`) and the optimizer state the device keeps for it (allocated on first
    /// use): [`Update::apply`]'s arithmetic, so the weights never leave the device.
    fn optim_step(&mut self, id: WeightId, u: &Update, grad_scale: Option<f32>) -> Result<()>;

    /// State buffer `k` (0: momentum or `exp_avg`, 1: `exp_avg_sq`) of weight `id`: copied
    /// into `out` (as long as the weight) and `true`, or `false` when the device holds none.
    fn get_optim_state(&mut self, id: WeightId, k: usize, out: &mut [f32]) -> Result<bool>;

    /// Sets state buffer `k` of weight `id` (a checkpoint's), as long as the weight.
    fn set_optim_state(&mut self, id: WeightId, k: usize, data: &[f32]) -> Result<()>;

    fn conv2d(&mut self, d: &ConvDesc) -> Result<()>;

    fn pool2d(&mut self, d: &PoolDesc) -> Result<()>;

    /// See [`ConvDxDesc`].
    fn conv2d_dx(&mut self, d: &ConvDxDesc) -> Result<()>;

    /// See [`ConvDwDesc`]; accumulates into the weight gradients.
    fn conv2d_dw(&mut self, d: &ConvDwDesc) -> Result<()>;

    /// See [`PoolDxDesc`].
    fn pool2d_dx(&mut self, d: &PoolDxDesc) -> Result<()>;

    /// Runs a generated kernel over every group; groups may run concurrently.
    fn launch(&mut self, d: &LaunchDesc<'_>) -> Result<()>;

    /// Waits for all submitted work.
    fn sync(&mut self) -> Result<()>;
}
