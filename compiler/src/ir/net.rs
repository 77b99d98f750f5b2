//! NetIR: the network as a typed graph of nodes in an arena. Passes annotate it in place
//! (shapes, neuron equations, recurrence, schedule, fusion, memory) before it is lowered
//! to KernelIR.

use super::arena::{Arena, Handle};
use super::eqn::NeuronEqs;
use super::filter::FilterBank;
use crate::diag::Span;

pub type NodeId = Handle<Node>;

#[derive(Clone, Debug)]
pub struct Module {
    pub name: String,
    /// Time steps.
    pub t: usize,
    /// Step length; available as `dt` in neuron equations.
    pub dt: f32,
    pub seed: u64,
    /// Default batch for seeded random runs.
    pub batch: usize,
    pub nodes: Arena<Node>,
    pub inputs: Vec<NodeId>,
    pub outputs: Vec<Output>,
    pub span: Span,
    /// Filled by `passes::recurrence`.
    pub recurrence: Option<super::sched::Recurrence>,
    /// Filled by `passes::schedule`.
    pub schedule: Option<super::sched::Schedule>,
    /// Filled by `passes::fuse`.
    pub fusion: Option<super::sched::Fusion>,
    /// Filled by `passes::memory`.
    pub memory: Option<super::sched::MemoryPlan>,
    /// The model's `train { }` settings (checked by `passes::resolve`).
    pub train: Option<super::train::TrainConfig>,
    /// Filled by `passes::autodiff` when compiling for training.
    pub backward: Option<super::sched::Backward>,
    /// The projections that learn by a local rule (`synapse = ...`), in binding order.
    pub plastic: Vec<Plastic>,
    /// `weights = other`: a projection that uses another projection's weight (and bias),
    /// `(projection, the one that owns the weight, the argument)`.
    pub ties: Vec<(NodeId, NodeId, Span)>,
}

/// `synapse = rule(..)` on a `dense` or `conv2d` projection: its weight learns by the rule
/// after each forward pass of local learning (`snnc train` with a rule, `Session::learn`).
#[derive(Clone, Debug)]
pub struct Plastic {
    /// The projection (a `Dense` or `Conv2d` node) whose weight the rule changes.
    pub projection: NodeId,
    /// The rule's name (a `synapse` model) and where it is called.
    pub rule: String,
    pub rule_span: Span,
    pub args: RuleArgs,
    /// `post = n`: the node whose spikes are the postsynaptic events; `None` until
    /// `passes::synapses` finds the population the projection drives.
    pub post: Option<NodeId>,
    /// `gate = g`: a static per-sample map over the postsynaptic neurons (`wta(..)`): a
    /// neuron is an event where it is non-zero. Without one, every neuron that fired is.
    pub gate: Option<NodeId>,
    /// `reward = r`: one value per sample (`[1]`), read by the rule as `reward`.
    pub reward: Option<NodeId>,
    /// Filled by `passes::synapses`.
    pub eqs: Option<Box<super::synapse::SynapseEqs>>,
    /// The `synapse = ...` argument.
    pub span: Span,
}

/// The arguments of a rule instance, checked against its model.
#[derive(Clone, Debug, Default)]
pub struct RuleArgs {
    /// Parameter values in f64, exactly as written.
    pub params: Vec<(String, f64, Span)>,
    pub flags: Vec<(String, bool, Span)>,
    pub choices: Vec<(String, String, Span)>,
}

#[derive(Clone, Debug)]
pub struct Node {
    /// The binding's name; nested calls get `parent.op`.
    pub name: String,
    pub kind: NodeKind,
    pub span: Span,
    /// Filled by `passes::shapes`.
    pub shape: Option<Shape>,
}

/// Whether a value changes over time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extent {
    /// `[T, B, dims]`.
    Seq,
    /// `[B, dims]`, the same at every step.
    Static,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shape {
    pub extent: Extent,
    /// Per-sample dims, e.g. `[784]` or `[16, 14, 14]`.
    pub dims: Vec<usize>,
}

impl Shape {
    pub fn features(&self) -> usize {
        self.dims.iter().product()
    }
}

/// Whether a projection of spikes runs event-driven (`dense(.., sparse = ...)`): `Auto`
/// lets the cost model of `schedule` decide from the spike rate. `Wave` (`conv2d` only):
/// the input is a cumulative 0/1 wave, convolved once per first-spike time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SparseMode {
    Auto,
    On,
    Off,
    Wave,
}

impl SparseMode {
    pub fn name(self) -> &'static str {
        match self {
            SparseMode::Auto => "auto",
            SparseMode::On => "on",
            SparseMode::Off => "off",
            SparseMode::Wave => "wave",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Encoding {
    /// `bernoulli(x, gain)`: spike with probability `clamp(gain * x, 0, 1)` each step.
    Bernoulli { gain: f32, seed: u32 },
    /// `poisson(x, max_rate)`: a Poisson process of rate `max_rate * x` per unit time,
    /// discretised: spike with probability `1 - exp(-max_rate * x * dt)` each step.
    Poisson { max_rate: f32, seed: u32 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKind {
    Max,
    Avg,
}

#[derive(Clone, Debug)]
pub enum NodeKind {
    Input {
        dims: Vec<usize>,
        time_varying: bool,
    },
    Encode {
        src: NodeId,
        encoding: Encoding,
    },
    Dense {
        src: NodeId,
        out: usize,
        bias: bool,
        delay: usize,
        /// Scale of the default weight initialisation.
        init_gain: f32,
        /// `sparse = auto | on | off`: the event-driven form for a spike input.
        sparse: SparseMode,
        /// `rate = p`: the expected fraction of non-zero inputs, for the cost model.
        rate: Option<f32>,
    },
    Conv2d {
        src: NodeId,
        out_channels: usize,
        kernel: [usize; 2],
        stride: usize,
        padding: usize,
        bias: bool,
        delay: usize,
        init_gain: f32,
        /// `sparse = auto | on | off`, as for `Dense`.
        sparse: SparseMode,
        /// `rate = p`, as for `Dense`.
        rate: Option<f32>,
    },
    Pool2d {
        src: NodeId,
        kind: PoolKind,
        kernel: usize,
        stride: usize,
        /// Zero padding (top, left, bottom, right), Spyker's order.
        padding: [usize; 4],
    },
    Flatten {
        src: NodeId,
    },
    /// `dog(..)`, `log(..)`, `gabor(..)`: Spyker's image filters, a frozen convolution with
    /// kernels built at compile time, then the bank's output step and an optional
    /// threshold (values `<= threshold` become 0).
    Filter {
        src: NodeId,
        bank: FilterBank,
        /// The odd window size.
        size: usize,
        /// Zero padding on every side.
        pad: usize,
        threshold: Option<f32>,
    },
    /// `latency(x, sort)`: Spyker's rank-order latency coding of a static map into a
    /// cumulative spike wave over the model's `T` steps.
    Latency {
        src: NodeId,
        sort: bool,
    },
    /// `inhibit(x, threshold)`: Spyker's point-wise lateral inhibition of a `[C, H, W]`
    /// sequence of potentials over all its `T` steps at once: per pixel only the channel
    /// that fires first (more steps above `threshold`) keeps its values.
    Inhibit {
        src: NodeId,
        threshold: f32,
    },
    /// `wta(v, k, radius, threshold)`: Spyker's k-WTA (`convwta`) of a `[C, H, W]` sequence
    /// over all its `T` steps at once: a static map, 1 at each of at most `k` winners (at
    /// most one per channel, none within `radius` of another), 0 elsewhere. A spike
    /// source is scored by its first spike alone (Spyker's integer score of a `u8` wave).
    Wta {
        src: NodeId,
        k: usize,
        radius: usize,
        threshold: f32,
    },
    /// `infinite(v, value)`: Spyker's "infinite threshold": every step but the last set to
    /// `value`, the last step kept.
    Infinite {
        src: NodeId,
        value: f32,
    },
    /// A neuron population; its input current is the sum of `inputs`.
    Population {
        inputs: Vec<NodeId>,
        /// The neuron model's name (`passes::neurons` lowers its definition).
        model: String,
        args: PopArgs,
        /// Filled by `passes::neurons`. Boxed: equations are large, other nodes small.
        eqs: Option<Box<NeuronEqs>>,
    },
}

/// The arguments of a population instance, checked against its model.
#[derive(Clone, Debug, Default)]
pub struct PopArgs {
    /// Parameter values (for a learned one, its initial value) and the value's span.
    pub params: Vec<(String, f32, Span)>,
    pub flags: Vec<(String, bool, Span)>,
    pub choices: Vec<(String, String, Span)>,
    /// Parameters given as `learn(init)` (their init is in `params`).
    pub learn: Vec<(String, Learn)>,
    /// Compile-time whole numbers (`k = 3`).
    pub consts: Vec<(String, usize, Span)>,
    /// `schedule = parallel | sequential`: the user's choice of time schedule.
    pub schedule: Option<(TimeForm, Span)>,
}

/// `name = learn(init)` or `learn(init, per_neuron = true)`: a learnable parameter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Learn {
    pub per_neuron: bool,
    /// The `learn(...)` call.
    pub span: Span,
}

/// How a population walks the time axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TimeForm {
    /// Step after step: each step's state from the previous one (a T loop in one kernel,
    /// or step kernels inside a step loop).
    Sequential,
    /// All steps at once: the recurrence (and any `mix`) as matrix products over the time
    /// axis, then an elementwise kernel. Only for populations without a reset whose update
    /// is linear in state and input.
    Parallel,
}

impl TimeForm {
    pub fn name(self) -> &'static str {
        match self {
            TimeForm::Sequential => "sequential",
            TimeForm::Parallel => "parallel",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputKind {
    Spikes,
    Counts,
    Trace,
}

#[derive(Clone, Debug)]
pub struct Output {
    pub name: String,
    pub kind: OutputKind,
    pub node: NodeId,
    /// For traces: the state variable's index (resolved by `passes::neurons`) and name.
    pub state: Option<(String, Option<usize>)>,
    pub span: Span,
}

impl NodeKind {
    /// The nodes this node reads, with the delay of each edge in steps.
    pub fn sources(&self) -> Vec<(NodeId, usize)> {
        match self {
            NodeKind::Input { .. } => vec![],
            NodeKind::Encode { src, .. }
            | NodeKind::Pool2d { src, .. }
            | NodeKind::Flatten { src }
            | NodeKind::Filter { src, .. }
            | NodeKind::Latency { src, .. }
            | NodeKind::Inhibit { src, .. }
            | NodeKind::Wta { src, .. }
            | NodeKind::Infinite { src, .. } => {
                vec![(*src, 0)]
            }
            NodeKind::Dense { src, delay, .. } | NodeKind::Conv2d { src, delay, .. } => {
                vec![(*src, *delay)]
            }
            NodeKind::Population { inputs, .. } => inputs.iter().map(|&i| (i, 0)).collect(),
        }
    }
    pub fn op_name(&self) -> &'static str {
        match self {
            NodeKind::Input { .. } => "input",
            NodeKind::Encode {
                encoding: Encoding::Bernoulli { .. },
                ..
            } => "bernoulli",
            NodeKind::Encode {
                encoding: Encoding::Poisson { .. },
                ..
            } => "poisson",
            NodeKind::Dense { .. } => "dense",
            NodeKind::Conv2d { .. } => "conv2d",
            NodeKind::Pool2d {
                kind: PoolKind::Max,
                ..
            } => "maxpool2d",
            NodeKind::Pool2d {
                kind: PoolKind::Avg,
                ..
            } => "avgpool2d",
            NodeKind::Flatten { .. } => "flatten",
            NodeKind::Filter { bank, .. } => bank.op_name(),
            NodeKind::Latency { .. } => "latency",
            NodeKind::Inhibit { .. } => "inhibit",
            NodeKind::Wta { .. } => "wta",
            NodeKind::Infinite { .. } => "infinite",
            NodeKind::Population { .. } => "population",
        }
    }
}

impl Module {
    pub fn node_by_name(&self, name: &str) -> Option<NodeId> {
        self.nodes
            .iter()
            .find(|(_, n)| n.name == name)
            .map(|(h, _)| h)
    }
    pub fn eqs(&self, h: NodeId) -> Option<&NeuronEqs> {
        match &self.nodes[h].kind {
            NodeKind::Population { eqs, .. } => eqs.as_deref(),
            _ => None,
        }
    }
    pub fn is_population(&self, h: NodeId) -> bool {
        matches!(self.nodes[h].kind, NodeKind::Population { .. })
    }
    pub fn shape(&self, h: NodeId) -> &Shape {
        self.nodes[h].shape.as_ref().expect("shapes pass has run")
    }
}

/// Whether a node reads itself directly.
pub fn self_loop(m: &Module, h: NodeId) -> bool {
    m.nodes[h].kind.sources().iter().any(|(s, _)| *s == h)
}
