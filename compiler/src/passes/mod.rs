//! The middle end: one pass per file, each `run(&mut Module, ..)`, each dumpable with
//! `snnc ir FILE --after PASS`.

pub mod autodiff;
pub mod bind;
pub mod fuse;
pub mod local_schedule;
pub mod lower;
pub mod memory;
pub mod neurons;
pub mod recurrence;
pub mod resolve;
pub mod schedule;
pub mod shapes;
pub mod synapses;
pub mod train_block;

use crate::ir::eqn::{EExpr, EqLeaf, NeuronEqs};
use crate::ir::net::*;

/// Pass names in pipeline order, as `--after` accepts them.
pub const PASSES: &[(&str, &str)] = &[
    ("parse", "the syntax tree of the root file"),
    ("resolve", "names resolved: the NetIR graph"),
    ("shapes", "per-sample shapes, static vs per-step values"),
    ("neurons", "neuron models lowered to equations"),
    (
        "synapses",
        "plasticity rules lowered; pre, post, gate and reward wired",
    ),
    ("recurrence", "strongly connected components over time"),
    ("schedule", "layer-by-layer vs step-by-step stages"),
    (
        "autodiff",
        "training: the backward pass derived from the equations",
    ),
    ("fuse", "kernels: fused populations and shared launches"),
    ("memory", "buffers, lifetimes and memory slots"),
    ("lower", "KernelIR: the plan and every kernel"),
];

/// Knobs of the compilation pipeline (tests flip them to compare plans).
#[derive(Clone, Debug)]
pub struct Options {
    /// Fuse charge + fire + reset into one kernel per population (default). Off: three
    /// kernels per step with state in memory.
    pub fuse: bool,
    /// Let same-model same-shape populations share a launch.
    pub merge: bool,
    /// Run every per-step node inside one step loop (the step-by-step schedule), even
    /// where layer-by-layer is possible.
    pub force_steps: bool,
    /// Reuse memory slots between buffers whose lifetimes do not overlap.
    pub reuse_memory: bool,
    /// Compile the backward pass (needs the model's `train { }` block).
    pub train: bool,
    /// Overrides the form of every projection of spikes: `Some(true)` event-driven,
    /// `Some(false)` dense GEMM; `None` (default): each layer's `sparse =`, else the cost
    /// model (`schedule`).
    pub sparse: Option<bool>,
    /// Spike rates observed on a calibration batch: the cost model uses them for the
    /// projections it decides (`sparse = auto`) that have no `rate =`.
    pub calibration: Option<Calibration>,
    /// Non-temporal stores for the large outputs a forward kernel writes once per step
    /// (`lower` marks them [`crate::ir::kernel::KArg::stream`]; the Rust back end streams
    /// a launch whose `[T, B, F]` arguments exceed 32 MiB). Off by default: on the dev VM
    /// it made `lif-fwd` faster in one of its two memory modes and slower in the other
    /// (BENCHMARKS.md, "non-temporal stores"). `--stream-stores` on the CLI.
    pub stream_stores: bool,
    /// Steps of a `Seq` kernel's `[T, B, F]` inputs loaded ahead, all before the block of
    /// steps is computed (`lower` sets [`crate::ir::kernel::Kernel::prefetch`]; the CUDA
    /// back end holds them in registers, so a thread keeps that many loads in flight).
    /// 1: load each step as it runs (the form measured on an H100 at 0.45 of the copy
    /// bandwidth). `--prefetch-steps` on the CLI.
    pub prefetch_steps: u32,
}

/// The input spike rate of projections of spikes, counted on a calibration batch (one
/// forward run: `snnc run`, `train`, `eval` and `bench` do it before the real work, see
/// `session::calibrate`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Calibration {
    /// Samples in the batch, and time steps.
    pub samples: usize,
    pub steps: usize,
    /// The fraction of non-zero elements of each projection's `[T*B, k]` input, by the
    /// `dense` node's name.
    pub rates: std::collections::BTreeMap<String, f64>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            fuse: true,
            merge: true,
            force_steps: false,
            reuse_memory: true,
            train: false,
            sparse: None,
            calibration: None,
            stream_stores: false,
            prefetch_steps: 8,
        }
    }
}

/// What a population writes besides its state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PopOutputs {
    /// Spikes `[T, B, N]` (spiking models always write them: they are the node's value).
    pub spikes: bool,
    /// Spike counts `[B, N]`.
    pub counts: bool,
    /// State indices traced `[T, B, N]`.
    pub traces: Vec<usize>,
}

pub fn pop_outputs(m: &Module, h: NodeId) -> PopOutputs {
    let eqs = m.eqs(h).expect("population has equations");
    let mut traces: Vec<usize> = m
        .outputs
        .iter()
        .filter(|o| o.node == h && o.kind == OutputKind::Trace)
        .filter_map(|o| o.state.as_ref().and_then(|s| s.1))
        .collect();
    if !eqs.spikes() {
        // A non-spiking population's value is its first state.
        traces.push(0);
    }
    traces.sort_unstable();
    traces.dedup();
    PopOutputs {
        spikes: eqs.spikes(),
        counts: m
            .outputs
            .iter()
            .any(|o| o.node == h && o.kind == OutputKind::Counts),
        traces,
    }
}

/// In an unfused plan, the per-step temporaries that the fire and reset kernels read and
/// so must be passed through memory. Index `eqs.locals.len()` stands for the input current.
pub fn spilled_locals(eqs: &NeuronEqs) -> Vec<usize> {
    let mut used = Vec::new();
    let mut visit = |e: &EExpr| {
        e.visit_leaves(&mut |l| {
            if let EqLeaf::Local(i) = l {
                used.push(*i);
            }
        });
        if e.reads_current() {
            used.push(eqs.locals.len());
        }
    };
    if let Some(s) = &eqs.spike {
        visit(s);
    }
    for a in &eqs.reset {
        visit(&a.value);
    }
    used.sort_unstable();
    used.dedup();
    used
}
