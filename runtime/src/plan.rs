//! The execution plan: what the compiler hands the runtime.
//!
//! A plan is a list of buffers, weights, neuron parameters and ops in schedule order. The
//! ops are library calls (GEMM, conv, pooling) and launches of generated kernels; the plan
//! executor walks them on a [`crate::Device`]. The compiler (crate `snnc`) builds plans; the
//! runtime never looks inside a kernel.
//!
//! Layouts: every activation buffer is row-major `[T, B, F]` (time extent `Seq`), `[B, F]`
//! (`Static`: the same value at every step, e.g. a GEMM of a static image) or `[B, F]`
//! (`Single`: one step of state, carried between step launches). `F` is the product of the
//! per-sample feature shape.

use serde::{Deserialize, Serialize};

mod codec;
mod nesting;
pub use codec::{decode, encode, EmbeddedPlan};

pub use crate::op::conv::{Conv2d, Conv2dDw, Conv2dDx};
pub use crate::op::dense::{Gemm, GemmDw, GemmDx};
pub use crate::op::filter::{FilterOut, FilterStep};
pub use crate::op::plastic::{LearnLayer, PlasticGeom, RuleParam};
pub use crate::op::pool::{Pool2d, Pool2dDx};
pub use crate::op::time_mix::{TimeBias, TimeMatrix, TimeMix, TimeMixDw, TimeMixDx};
pub use crate::op::wave::{Infinite, Inhibit, RankCode, Wta};
use crate::op::LibraryOp;

/// Index into [`Plan::buffers`].
pub type BufId = usize;
/// Index into [`Plan::weights`].
pub type WeightId = usize;
/// Index into [`Plan::kernels`].
pub type KernelId = usize;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The model's name.
    pub name: String,
    /// Default number of time steps (the model's `T`); `run` may override it.
    pub t: usize,
    /// Default batch size for seeded random runs.
    pub batch: usize,
    /// Model seed: weight initialisation and random inputs.
    pub seed: u64,
    pub buffers: Vec<BufferDecl>,
    /// Physical memory slots; each logical buffer lives in one. Sizes are the maximum over
    /// the buffers assigned to the slot (computed at run time from T and B).
    pub slots: usize,
    pub weights: Vec<WeightDecl>,
    /// Neuron and encoder parameters, as one flat f32 array the kernels read.
    pub params: Vec<ParamDecl>,
    pub inputs: Vec<InputDecl>,
    pub outputs: Vec<OutputDecl>,
    pub kernels: Vec<KernelDecl>,
    pub ops: Vec<Op>,
    /// The backward pass and training settings, when compiled for training.
    pub train: Option<TrainPlan>,
    /// The projections that learn by a local rule (`synapse = ...`), run by
    /// [`crate::Session::learn`] after a forward pass.
    pub learn: Vec<LearnLayer>,
}

impl Plan {
    /// Whether the plan runs only at its own `t`: a `[T, T]` time matrix (a PSN's weight)
    /// fixes the number of steps.
    pub fn fixed_steps(&self) -> bool {
        fn any(ops: &[Op]) -> bool {
            ops.iter().any(|op| match op {
                Op::TimeMix(m) => matches!(
                    m.matrix,
                    TimeMatrix::Weight { .. } | TimeMatrix::Masked { .. }
                ),
                Op::StepLoop { body } | Op::ReverseStepLoop { body } => any(body),
                _ => false,
            })
        }
        any(&self.ops)
    }
}

/// What the compiler derived for training: the backward ops (run after the forward ops,
/// once the loss gradient is in place) and the settings of the model's `train { }` block.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainPlan {
    pub backward: Vec<Op>,
    pub loss: LossDecl,
    /// Spike-count regularisers on hidden populations.
    pub regularizers: Vec<RegDecl>,
    /// `input_grads = true`: (index into [`Plan::inputs`], the buffer that holds
    /// dLoss/d(input) after the backward ops, laid out like the input).
    pub input_grads: Vec<(usize, BufId)>,
    pub settings: TrainSettings,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum LossKind {
    /// Cross-entropy of softmax(spike counts) (`[B, C]` output).
    CrossEntropyCounts,
    /// Cross-entropy of softmax(max over time of a readout membrane) (`[T, B, C]` trace).
    CrossEntropyMaxMembrane,
    /// Cross-entropy of softmax(mean over time of a readout membrane).
    CrossEntropyMeanMembrane,
    /// Mean squared error of spike rates (counts / T) against `on` for the label's neurons
    /// and `off` elsewhere; `groups` neurons vote for each class (BPSTA uses 10).
    MseCounts { on: f32, off: f32, groups: usize },
    /// Cross-entropy over negative first-spike times (snnTorch `ce_temporal_loss`) on a
    /// `[T, B, C]` spike output.
    FirstSpikeTime,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LossDecl {
    pub kind: LossKind,
    /// Index into [`Plan::outputs`] of the value the loss reads.
    pub output: usize,
    /// The buffer that receives dLoss/d(output) before the backward ops run; same layout
    /// as the output.
    pub grad: BufId,
}

/// `lambda * mean((counts / T - target)^2)` on a population's spike counts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RegDecl {
    pub output: usize,
    pub grad: BufId,
    pub lambda: f32,
    pub target: f32,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum OptimizerKind {
    Sgd { momentum: f32, nesterov: bool },
    Adam,
    AdamW,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct OptimizerDecl {
    pub kind: OptimizerKind,
    pub lr: f32,
    pub betas: (f32, f32),
    pub eps: f32,
    pub weight_decay: f32,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum LrScheduleDecl {
    Constant,
    /// torch StepLR: multiply by `gamma` every `step_size` epochs.
    Step {
        step_size: usize,
        gamma: f32,
    },
    /// torch CosineAnnealingLR over the training epochs down to `eta_min`.
    Cosine {
        eta_min: f32,
    },
}

/// How an image dataset is fed as a sequence (`mnist("DIR", sequence = rows)`): the input
/// is `[T, F]` and each image is `T` steps of `F` pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ImageSequence {
    /// Step `t` is row `t` of the image (`H` steps of `W` pixels): row-by-row digits.
    Rows,
    /// Step `t` is column `t`, top to bottom (`W` steps of `H` pixels), as the PSN paper's
    /// sequential CIFAR.
    Columns,
}

impl ImageSequence {
    pub const NAMES: &'static [&'static str] = &["rows", "columns"];
    pub fn name(self) -> &'static str {
        match self {
            ImageSequence::Rows => "rows",
            ImageSequence::Columns => "columns",
        }
    }
    pub fn from_name(s: &str) -> Option<ImageSequence> {
        match s {
            "rows" => Some(ImageSequence::Rows),
            "columns" => Some(ImageSequence::Columns),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum DataDecl {
    /// The Yin-Yang dataset, generated (standard splits).
    YinYang,
    /// MNIST IDX files in a directory; with `sequence`, each image is fed as a sequence.
    Mnist {
        dir: String,
        sequence: Option<ImageSequence>,
    },
    /// Fashion-MNIST IDX files in a directory (`sequence` as for MNIST).
    FashionMnist {
        dir: String,
        sequence: Option<ImageSequence>,
    },
    /// NPY arrays: `x` `[N, ...]` features, `y` `[N]` labels (test split optional).
    Npy {
        x: String,
        y: String,
        test_x: Option<String>,
        test_y: Option<String>,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainSettings {
    pub optimizer: OptimizerDecl,
    pub schedule: LrScheduleDecl,
    /// Linear learning-rate warm-up over this many epochs.
    pub warmup: usize,
    pub epochs: usize,
    pub batch: usize,
    pub data: Option<DataDecl>,
    /// Clip the global gradient norm to this value.
    pub clip: Option<f32>,
    /// Training samples held out for validation each epoch.
    pub validation: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Extent {
    /// `[T, B, F]`.
    Seq,
    /// `[B, F]`, constant over time.
    Static,
    /// `[B, F]`, one step (state carried between step launches).
    Single,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BufferDecl {
    /// Readable name for dumps and errors, e.g. `s1.spikes`.
    pub name: String,
    pub extent: Extent,
    /// Per-sample feature count `F`.
    pub features: usize,
    /// Physical slot (memory plan). Buffers sharing a slot are never live together.
    pub slot: usize,
}

impl BufferDecl {
    /// Number of f32 elements for the given T and B.
    pub fn len(&self, t: usize, b: usize) -> usize {
        match self.extent {
            Extent::Seq => t * b * self.features,
            Extent::Static | Extent::Single => b * self.features,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Init {
    /// torch `nn.Linear`/`nn.Conv2d` default scaled by `gain`:
    /// `U(-gain/sqrt(fan_in), gain/sqrt(fan_in))` (gain 1 is torch's init).
    UniformFanIn {
        fan_in: usize,
        gain: f32,
    },
    Zeros,
    /// Every element set to this value: the initial value of a learnable neuron parameter
    /// (`tau = learn(2.0)`), the PSN family's bias (-1: threshold 1).
    Constant(f32),
    /// `w[i] = ratio^(n - 1 - i)` for a weight of `n` elements: the newest element 1, each
    /// older one `ratio` times the next (SpikingJelly `SlidingPSN(exp_init=True)`: 1/2).
    Geometric {
        ratio: f32,
    },
    /// Fixed values built by the compiler (a DoG / LoG / Gabor filter's kernel), row-major
    /// in the weight's shape. Frozen: never trained, saved or loaded (see
    /// [`WeightDecl::frozen`]).
    Frozen(Vec<f32>),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WeightDecl {
    /// Tensor name in safetensors files, e.g. `fc1.weight`.
    pub name: String,
    /// torch convention: dense `[out, in]`, conv `[c_out, c_in, kh, kw]`, bias `[out]`.
    pub shape: Vec<usize>,
    pub init: Init,
}

impl WeightDecl {
    /// A compile-time constant rather than a parameter of the model: the optimizer skips
    /// it, weight files neither hold nor need it.
    pub fn frozen(&self) -> bool {
        matches!(self.init, Init::Frozen(_))
    }
    /// Elements (saturated: a gigantic shape is refused by the memory budget, not wrapped).
    pub fn numel(&self) -> usize {
        self.shape.iter().fold(1, |n, &d| n.saturating_mul(d))
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParamDecl {
    /// `population.param`, e.g. `s1.tau`.
    pub name: String,
    pub value: f32,
    /// A constraint the value must satisfy, checked when a user changes it.
    pub check: ParamCheck,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum ParamCheck {
    Any,
    Positive,
    NonNegative,
    /// A probability-like value in [0, 1].
    UnitInterval,
    /// Not a number: 32 raw bits (an RNG seed) stored with `f32::from_bits`.
    Bits,
}

impl ParamCheck {
    pub fn holds(self, v: f32) -> bool {
        match self {
            ParamCheck::Any => v.is_finite(),
            ParamCheck::Positive => v.is_finite() && v > 0.0,
            ParamCheck::NonNegative => v.is_finite() && v >= 0.0,
            ParamCheck::UnitInterval => (0.0..=1.0).contains(&v),
            ParamCheck::Bits => true,
        }
    }
    pub fn describe(self) -> &'static str {
        match self {
            ParamCheck::Any => "a finite number",
            ParamCheck::Positive => "a number > 0",
            ParamCheck::NonNegative => "a number >= 0",
            ParamCheck::UnitInterval => "a number in [0, 1]",
            ParamCheck::Bits => "a 32-bit integer (seed)",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InputDecl {
    pub name: String,
    pub buffer: BufId,
    /// Per-sample shape, without T and B.
    pub shape: Vec<usize>,
    /// `[T, B, ...]` when true, `[B, ...]` otherwise.
    pub time_varying: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OutputKind {
    /// `[T, B, ...]` 0/1 spikes.
    Spikes,
    /// `[B, ...]` spikes summed over time.
    Counts,
    /// `[T, B, ...]` a state variable after each step.
    Trace,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutputDecl {
    /// e.g. `s2.counts`, `s2.v`.
    pub name: String,
    pub kind: OutputKind,
    pub buffer: BufId,
    pub shape: Vec<usize>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KernelDecl {
    /// Exported symbol of the generated kernel.
    pub symbol: String,
    /// Number of buffer arguments.
    pub arity: usize,
    /// The weights the kernel reads (learnable neuron parameters), or whose gradients it
    /// accumulates into, after the buffers: each launch group binds one weight per entry.
    pub weights: Vec<WeightUse>,
}

/// How a kernel uses one weight argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightUse {
    /// One value per neuron (`[F]`, read at `idx % F`) rather than one per population
    /// (`[1]`).
    pub per_neuron: bool,
    /// The kernel adds into the weight's *gradient* (atomically: several threads and batch
    /// elements share an element) instead of reading the weight. Backward ops only.
    pub grad: bool,
}

/// Which time rows an op touches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TimeSel {
    /// Whole sequence: destination rows `t in delay..T` read source rows `t - delay`.
    /// For `Static` source and destination (delay 0) the op runs once on `[B, F]`.
    All { delay: usize },
    /// Inside a [`Op::StepLoop`] at step `t`: destination row `t` reads source row
    /// `t - delay`; nothing happens when `t < delay`.
    Step { delay: usize },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConvGeom {
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub pad: usize,
    pub h_out: usize,
    pub w_out: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PoolKind {
    Max,
    /// Average over the window; padded cells count as zeros (torch `count_include_pad=True`).
    Avg,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolGeom {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub k: usize,
    pub stride: usize,
    /// Zero padding (top, left, bottom, right), Spyker's order.
    pub pad: [usize; 4],
    pub h_out: usize,
    pub w_out: usize,
}

impl PoolGeom {
    /// The same padding on every side.
    pub fn symmetric(&self) -> bool {
        self.pad.iter().all(|&p| p == self.pad[0])
    }
}

/// One launch group: a population (or encoder) run by a kernel. Several groups of one
/// kernel form a merged launch (same model, same code, different buffers and parameters).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LaunchGroup {
    pub args: Vec<BufId>,
    /// One weight per [`KernelDecl::weights`] entry (its value or its gradient).
    pub weights: Vec<WeightId>,
    /// Offset of this group's parameters in the flat parameter array.
    pub params: usize,
    /// Neurons per sample `F`; the kernel's index space is `B * F`.
    pub features: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LaunchTime {
    /// The kernel loops over all T itself (state in registers).
    Seq,
    /// Inside a step loop: the kernel does one step `t`.
    Step,
}

/// One step of a plan: a control op (zero a buffer, launch a generated kernel, loop over
/// time) or a library op, whose plan struct, validation, interpretation, text form and device
/// trait live together in its family module under [`crate::op`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// Fill a buffer with zeros.
    Zero {
        buf: BufId,
    },
    /// Run a generated kernel over every group.
    Launch {
        kernel: KernelId,
        groups: Vec<LaunchGroup>,
        time: LaunchTime,
    },
    /// `for t in 0..T { body }`; ops inside use `TimeSel::Step` / `LaunchTime::Step`.
    StepLoop {
        #[serde(deserialize_with = "nesting::body")]
        body: Vec<Op>,
    },
    /// `for t in (0..T).rev() { body }`: the backward of a [`Op::StepLoop`] (training plans),
    /// with the same rules inside. A `Step` kernel with `reverse` starts at `t = T - 1`.
    ReverseStepLoop {
        #[serde(deserialize_with = "nesting::body")]
        body: Vec<Op>,
    },
    Gemm(Gemm),
    GemmDx(GemmDx),
    GemmDw(GemmDw),
    Conv2d(Conv2d),
    Conv2dDx(Conv2dDx),
    Conv2dDw(Conv2dDw),
    Pool2d(Pool2d),
    Pool2dDx(Pool2dDx),
    TimeMix(TimeMix),
    TimeMixDx(TimeMixDx),
    TimeMixDw(TimeMixDw),
    FilterOut(FilterOut),
    RankCode(RankCode),
    Inhibit(Inhibit),
    Wta(Wta),
    Infinite(Infinite),
}

impl Op {
    /// The library op, for every op that is not a control op.
    pub fn library(&self) -> Option<&dyn LibraryOp> {
        Some(match self {
            Op::Zero { .. } | Op::Launch { .. } | Op::StepLoop { .. } => return None,
            Op::ReverseStepLoop { .. } => return None,
            Op::Gemm(o) => o,
            Op::GemmDx(o) => o,
            Op::GemmDw(o) => o,
            Op::Conv2d(o) => o,
            Op::Conv2dDx(o) => o,
            Op::Conv2dDw(o) => o,
            Op::Pool2d(o) => o,
            Op::Pool2dDx(o) => o,
            Op::TimeMix(o) => o,
            Op::TimeMixDx(o) => o,
            Op::TimeMixDw(o) => o,
            Op::FilterOut(o) => o,
            Op::RankCode(o) => o,
            Op::Inhibit(o) => o,
            Op::Wta(o) => o,
            Op::Infinite(o) => o,
        })
    }
}

/// The C ABI of a generated kernel: `extern "C" fn(*const KernelArgs)`.
///
/// The kernel processes flat neuron indices `lo..hi` of the `B * F` index space (a row of
/// a `Seq` buffer at step `t` starts at `t * batch * features`). `bufs` holds one pointer
/// per buffer argument, then one per weight argument ([`KernelDecl::weights`]): the weight's
/// values, or its gradient for a `grad` use.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct KernelArgs {
    pub bufs: *const *mut f32,
    pub params: *const f32,
    pub t_len: usize,
    pub t_step: usize,
    pub batch: usize,
    pub features: usize,
    pub lo: usize,
    pub hi: usize,
}

/// Bumped whenever [`KernelArgs`] or the kernel calling convention changes; generated
/// libraries export it as `snn_abi_version` and the loader refuses a mismatch.
pub const KERNEL_ABI_VERSION: u32 = 1;

pub type KernelFn = unsafe extern "C" fn(*const KernelArgs);
