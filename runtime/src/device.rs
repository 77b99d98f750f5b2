//! The device abstraction the plan interpreter drives.
//!
//! A device owns its memory: the plan's physical slots, the weights and the flat parameter
//! array live on it, and the interpreter addresses them by slot and element offset
//! ([`Loc`]), weight id, and parameter offset. The interpreter has already resolved time
//! selection (which rows an op touches) into plain offsets and row counts, so a device
//! implements only dense primitives.
//!
//! [`Device`] is a set of small traits, one per concern, so that a new family of ops is a
//! new trait rather than a bigger one: [`Memory`] (slots, weights, parameters, gradients,
//! copies), [`Kernels`] (generated-kernel launches), [`Optimizer`] (updates where the
//! weights live), and one trait per library-op family, declared beside the family's plan
//! ops in [`crate::op`] ([`DenseOps`], [`ConvOps`], [`PoolOps`], [`TimeMixOps`]). The CPU
//! device ([`crate::cpu::CpuDevice`]) and the CUDA device ([`crate::cuda::CudaDevice`])
//! implement each in a file of its own.
//!
//! Every method returns an error instead of panicking on out-of-range arguments.

use crate::error::Result;
use crate::plan::{KernelId, LaunchTime, WeightId};
use crate::train::optim::Update;

// The family traits, and their descriptors for callers outside the crate (devices import
// them from their family module in `crate::op`).
pub use crate::op::conv::{ConvDesc, ConvDwDesc, ConvDxDesc, ConvOps};
pub use crate::op::dense::{DenseOps, GemmDesc, GemmDwDesc, GemmDxDesc};
pub use crate::op::filter::{FilterDesc, FilterOps};
pub use crate::op::plastic::{PlasticDesc, PlasticOps};
pub use crate::op::pool::{PoolDesc, PoolDxDesc, PoolOps};
pub use crate::op::time_mix::{TimeMixDesc, TimeMixDwDesc, TimeMixOps};
pub use crate::op::wave::{InfiniteDesc, InhibitDesc, RankCodeDesc, WaveOps, WtaDesc};

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

/// [`Optimizer::set_optim_state`]'s argument check: buffer `k` (0 or 1) of a weight of `n`
/// values gets `len` values.
pub(crate) fn check_optim_state(id: WeightId, k: usize, n: usize, len: usize) -> Result<()> {
    if k > 1 || len != n {
        return Err(crate::error::RuntimeError::Device(format!(
            "set_optim_state: buffer {k} of weight {id} must hold {n} values, not {len}"
        )));
    }
    Ok(())
}

/// Everything the plan interpreter needs from a device; implemented by every type that
/// implements the concern traits. Calls may be asynchronous; [`Memory::sync`] and
/// [`Memory::download`] are the points where results must be complete.
pub trait Device:
    Memory
    + Kernels
    + Optimizer
    + DenseOps
    + ConvOps
    + PoolOps
    + TimeMixOps
    + FilterOps
    + WaveOps
    + PlasticOps
    + Send
{
}

impl<D> Device for D where
    D: Memory
        + Kernels
        + Optimizer
        + DenseOps
        + ConvOps
        + PoolOps
        + TimeMixOps
        + FilterOps
        + WaveOps
        + PlasticOps
        + Send
{
}

/// Memory: slots, weights, the parameter array, weight gradients, and host copies.
pub trait Memory {
    /// A short description, e.g. `cpu (8 threads)`.
    fn name(&self) -> String;

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

    /// Sets every weight gradient to zero (allocating them on first use).
    fn zero_grads(&mut self) -> Result<()>;

    /// Adds `data` into the gradient of weight `id` (allocated by `zero_grads`).
    fn add_grad(&mut self, id: WeightId, data: &[f32]) -> Result<()>;

    /// Copies the gradient of weight `id` to the host.
    fn get_grad(&mut self, id: WeightId, out: &mut [f32]) -> Result<()>;

    /// Waits for all submitted work.
    fn sync(&mut self) -> Result<()>;
}

/// Launches of the plan's generated kernels.
pub trait Kernels {
    /// Number of kernels the device can launch (`LaunchDesc::kernel < num_kernels()`).
    fn num_kernels(&self) -> usize;

    /// Runs a generated kernel over every group; groups may run concurrently.
    fn launch(&mut self, d: &LaunchDesc<'_>) -> Result<()>;
}

/// Optimizer updates where the weights live, and the gradient norm for clipping.
pub trait Optimizer {
    /// Adds the squares of gradient `id`'s elements, in f64, to `start` and returns the
    /// sum: gradient clipping's total norm, tensor after tensor. The CPU sums in element
    /// order (torch's result bit for bit); a GPU sums in its own order.
    fn grad_sq_sum(&mut self, id: WeightId, start: f64) -> Result<f64>;

    /// The sum of squares of gradients `0..n`, tensor after tensor as
    /// [`Optimizer::grad_sq_sum`] adds them (the default); a device may gather the partial
    /// sums in one round trip.
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
}

/// Every device trait, for code that calls device methods directly (tests, benchmarks):
/// `use snn_runtime::device::prelude::*;`.
pub mod prelude {
    pub use super::{
        ConvOps, DenseOps, Device, FilterOps, Kernels, Memory, Optimizer, PlasticOps, PoolOps,
        TimeMixOps, WaveOps,
    };
}
