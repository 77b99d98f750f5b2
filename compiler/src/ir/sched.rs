//! The decisions the middle passes record on a module: recurrence, schedule, fusion and
//! the memory plan. Kept apart from `net.rs` so each pass's output reads on its own.

use std::collections::BTreeMap;

use super::linear::LinearStep;
use super::net::{NodeId, TimeForm};
use snn_runtime::plan::{BufId, BufferDecl};

/// Output of `passes::recurrence`.
#[derive(Clone, Debug, Default)]
pub struct Recurrence {
    /// Strongly connected components over time, in execution order (sources first).
    /// Each component lists its nodes in the order they run within one step.
    pub components: Vec<Vec<NodeId>>,
}

impl Recurrence {
    /// A component is recurrent when it has more than one node or a self edge.
    pub fn is_cycle(&self, comp: usize, self_loop: impl Fn(NodeId) -> bool) -> bool {
        let c = &self.components[comp];
        c.len() > 1 || self_loop(c[0])
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StageKind {
    /// One op over all T at once (GEMM over `[T*B, in]`, or a T-loop kernel).
    Layer(NodeId),
    /// `for t in 0..T` around these nodes, in order.
    Steps(Vec<NodeId>),
    /// A population on the parallel schedule: its time axis as matrix products (any `mix`,
    /// then the recurrence's impulse response), then one elementwise kernel.
    Parallel(NodeId),
}

#[derive(Clone, Debug)]
pub struct Stage {
    pub kind: StageKind,
    /// Why the scheduler chose this, shown in dumps.
    pub reason: String,
}

/// Output of `passes::schedule`.
#[derive(Clone, Debug, Default)]
pub struct Schedule {
    pub stages: Vec<Stage>,
    /// The time-axis decision of every population.
    pub time: BTreeMap<NodeId, PopTime>,
    /// The `(T, batch)` the costs were estimated for.
    pub cost_at: (usize, usize),
    /// Every dense projection whose input is spikes: event-driven or dense GEMM, and why.
    pub projections: BTreeMap<NodeId, SparseChoice>,
}

/// The form of a projection of spikes (`dense` of a spiking population or an encoder).
#[derive(Clone, Debug)]
pub struct SparseChoice {
    /// Event-driven (`Op::Gemm(Gemm { sparse: true })`) rather than a dense GEMM.
    pub sparse: bool,
    /// The spike rate the estimates assume, and where it came from.
    pub rate: f32,
    pub rate_source: RateSource,
    /// The cost model made the choice (`sparse = auto`, no `--sparse`): a measured rate
    /// can change it.
    pub by_cost_model: bool,
    pub reason: String,
    /// Estimated seconds of the forward product, dense and event-driven.
    pub dense_s: f64,
    pub event_s: f64,
    /// A `conv2d` of a cumulative wave in its wave form (`Conv2d { wave: true }`: each
    /// input's first-spike time convolved once), which takes precedence over `sparse`.
    pub wave: bool,
    /// Estimated seconds of the wave form (every input spiking once), for a `conv2d` whose
    /// input is a wave by construction or marked `sparse = wave`.
    pub wave_s: Option<f64>,
}

/// Where the spike rate of a projection's input came from.
#[derive(Clone, Debug, PartialEq)]
pub enum RateSource {
    /// The layer's `rate = p`.
    Given,
    /// Counted on a calibration batch (`Options::calibration`): `samples` samples at
    /// `steps` time steps.
    Measured { samples: usize, steps: usize },
    /// Nothing known: the default rate of `passes::schedule` (`DEFAULT_RATE`).
    Assumed,
}

impl std::fmt::Display for RateSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RateSource::Given => write!(f, "`rate =`"),
            RateSource::Measured { samples, steps } => write!(
                f,
                "measured on a calibration batch of {samples} sample{} x {steps} steps",
                if *samples == 1 { "" } else { "s" }
            ),
            RateSource::Assumed => write!(f, "assumed"),
        }
    }
}

/// How one population walks the time axis, and why.
#[derive(Clone, Debug)]
pub struct PopTime {
    pub form: TimeForm,
    pub reason: String,
    /// The proof that the step is linear without reset (`None`: `no_parallel` says why not).
    pub linear: Option<LinearStep>,
    /// Why the parallel schedule is impossible, when it is.
    pub no_parallel: Option<String>,
    /// Estimated costs of the sequential schedule (when there is a choice) and of the
    /// parallel one (when it is possible).
    pub seq_cost: Option<Cost>,
    pub par_cost: Option<Cost>,
}

/// An estimate of one schedule of one population at the module's T and batch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cost {
    pub flops: f64,
    /// Bytes moved to and from memory (activations; weights are small).
    pub bytes: f64,
    /// Library calls and kernel launches.
    pub ops: f64,
    /// `max(flops / peak, bytes / bandwidth) + ops * overhead` on the target machine.
    pub seconds: f64,
}

impl Schedule {
    /// The stage index of each node.
    pub fn stage_of(&self) -> BTreeMap<NodeId, usize> {
        let mut m = BTreeMap::new();
        for (i, s) in self.stages.iter().enumerate() {
            match &s.kind {
                StageKind::Layer(n) | StageKind::Parallel(n) => {
                    m.insert(*n, i);
                }
                StageKind::Steps(ns) => {
                    for n in ns {
                        m.insert(*n, i);
                    }
                }
            }
        }
        m
    }
}

/// How a population's step is split into kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FuseMode {
    /// Charge, fire and reset in one kernel (T loop inside for layer stages).
    Fused,
    /// Separate charge / fire / reset kernels per step, state in memory between them.
    Unfused,
}

#[derive(Clone, Debug)]
pub struct KernelGroup {
    /// Populations (or encoders) that share this kernel and launch.
    pub members: Vec<NodeId>,
    pub mode: FuseMode,
    /// The stage that launches the group.
    pub stage: usize,
    /// Step-wise (inside a step loop) rather than T loop inside.
    pub stepwise: bool,
}

/// Output of `passes::fuse`.
#[derive(Clone, Debug, Default)]
pub struct Fusion {
    pub groups: Vec<KernelGroup>,
    /// Population/encoder -> group index.
    pub group_of: BTreeMap<NodeId, usize>,
}

/// Output of `passes::memory`.
#[derive(Clone, Debug, Default)]
pub struct MemoryPlan {
    pub buffers: Vec<BufferDecl>,
    pub slots: usize,
    /// The value each node produces (spikes for spiking populations, the first state for
    /// non-spiking ones). Flatten shares its source's buffer.
    pub node_out: BTreeMap<NodeId, BufId>,
    /// A `dog` / `log` / `gabor` filter's raw convolution output, before its output step.
    pub filter_raw: BTreeMap<NodeId, BufId>,
    pub counts: BTreeMap<NodeId, BufId>,
    /// Traces `[T, B, N]` of state variables, by (population, state index).
    pub traces: BTreeMap<(NodeId, usize), BufId>,
    /// `[B, N]` state carried between step launches, by (population, state index).
    pub states: BTreeMap<(NodeId, usize), BufId>,
    /// `[B, N]` per-step temporaries that cross kernel boundaries in unfused plans.
    pub spills: BTreeMap<(NodeId, usize), BufId>,
    /// Training: each state at the start of every step `[T, B, N]`, by (population, state).
    pub saves: BTreeMap<(NodeId, usize), BufId>,
    /// The input current of a population with a `mix`, after mixing `[T, B, N]`.
    pub mixed: BTreeMap<NodeId, BufId>,
    /// Parallel schedule of a recurrent linear population, per state: its values over all
    /// steps `[T, B, N]` (`lin`), and the impulse and free responses `[T, B, 1]` of its
    /// recurrence (`resp`: (impulse, free)).
    pub lin: BTreeMap<(NodeId, usize), BufId>,
    pub resp: BTreeMap<(NodeId, usize), (BufId, BufId)>,
    /// Training, populations in a recurrent (step-by-step) stage: the adjoint of each state
    /// `[B, N]`, carried between the steps of the reverse step loop.
    pub adjs: BTreeMap<(NodeId, usize), BufId>,
    /// Training: the gradient of each node's value (flatten shares its source's).
    pub grads: BTreeMap<NodeId, BufId>,
    /// Training: dLoss/d(output) for the loss, then each regulariser.
    pub loss_grads: Vec<BufId>,
    /// Training: the gradient of a population's mixed current `[T, B, N]`.
    pub grad_mixed: BTreeMap<NodeId, BufId>,
    /// Training, parallel schedule: the gradient of each state's `lin` values `[T, B, N]`.
    pub grad_lin: BTreeMap<(NodeId, usize), BufId>,
}

/// Output of `passes::autodiff`: what the backward pass computes.
#[derive(Clone, Debug)]
pub struct Backward {
    /// The derived backward step of each population on the gradient path.
    pub pops: BTreeMap<NodeId, crate::ir::adjoint::StepAdjoint>,
    /// Nodes whose value needs a gradient (something trainable lies upstream).
    pub needs_grad: std::collections::BTreeSet<NodeId>,
    /// Nodes in backward order (reverse execution order; the nodes of a recurrent stage
    /// from last to first, run by one reverse step loop).
    pub order: Vec<NodeId>,
    /// Index into `Module::outputs` of the loss's output, and of each regulariser's.
    pub loss_output: usize,
    pub reg_outputs: Vec<usize>,
    /// `input_grads = true`: the inputs whose gradient the backward pass computes.
    pub inputs: Vec<NodeId>,
}
