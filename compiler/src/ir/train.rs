//! A model's training settings (its `train { }` block, read by
//! `passes::train_block`): the loss, regularisers, gradient options and the runtime's
//! [`TrainSettings`], or a local-learning schedule ([`LocalStage`]).

use super::adjoint::GradOptions;
use crate::diag::Span;
use snn_runtime::plan::{LossKind, TrainSettings};

/// What the loss reads: a population's counts, spikes or a state trace.
#[derive(Clone, Debug, PartialEq)]
pub enum LossTarget {
    Counts(String),
    Spikes(String),
    /// `(population, state)`.
    Trace(String, String),
}

impl LossTarget {
    pub fn population(&self) -> &str {
        match self {
            LossTarget::Counts(p) | LossTarget::Spikes(p) | LossTarget::Trace(p, _) => p,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct LossSpec {
    pub kind: LossKind,
    pub target: LossTarget,
    pub span: Span,
}

/// `rate(pop, lambda = .., target = ..)`: a spike-rate regulariser on a population.
#[derive(Clone, Debug, PartialEq)]
pub struct RegSpec {
    pub population: String,
    pub lambda: f32,
    pub target: f32,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TrainConfig {
    pub loss: LossSpec,
    pub regularizers: Vec<RegSpec>,
    pub grad: GradOptions,
    /// `checkpoint = recompute`: forward kernels keep no per-step state for the backward
    /// pass; each population's backward is preceded by a kernel that recomputes its states
    /// from its inputs into a buffer that lives only for that backward step, so the saved
    /// states of all layers are never resident at once (one layer's instead).
    pub recompute: bool,
    /// `input_grads = true`: the backward pass also computes dLoss/d(input) for every input
    /// on the gradient path (saliency, adversarial examples, benchmarks against frameworks
    /// that differentiate their inputs); `Session::input_grad` reads them.
    pub input_grads: bool,
    pub settings: TrainSettings,
    /// Where `data = ...` was set (the last setting wins), for shape errors against it.
    pub data_span: Option<Span>,
    /// `local = [layer(..), ..]`: training by the projections' own rules, one stage per
    /// layer (greedy, layer-wise), instead of by a loss. Empty for gradient training.
    pub local: Vec<LocalStage>,
}

/// One stage of a local-learning schedule: `layer(c1, epochs = 2, ..)`. Only `layer`'s rule
/// learns (the other plastic projections are frozen) for `epochs` passes over the data.
#[derive(Clone, Debug, PartialEq)]
pub struct LocalStage {
    /// The plastic projection's name.
    pub layer: String,
    pub layer_span: Span,
    pub epochs: usize,
    /// `grow = .., every = .., cap = ..`: Spyker's learning-rate growth of `a_plus` /
    /// `a_minus` (docs/spyker.md, "Learning-rate schedule").
    pub growth: Option<snn_runtime::train::local::RateGrowth>,
    /// `decision = g, classes = .., chunk = ..`: R-STDP from the decision of gate `g`.
    pub decision: Option<DecisionSpec>,
    /// `init = normal(mean, std)`: the layer's weights drawn before training (Spyker's Conv
    /// initialiser and its default N(0.5, 0.02); the examples use N(0.8, 0.05)).
    pub init: (f64, f64),
    /// The whole `layer(..)` call.
    pub span: Span,
}

/// The decision that rewards an R-STDP layer: the gate `wta(infinite(..), k = 1)` picks a
/// winner map `z`, whose label is `z / (maps / classes)`.
#[derive(Clone, Debug, PartialEq)]
pub struct DecisionSpec {
    /// The gate node's name.
    pub gate: String,
    pub gate_span: Span,
    pub classes: usize,
    /// Images per adaptive-rate update (Spyker's example: 1024).
    pub chunk: usize,
}
