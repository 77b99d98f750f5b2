//! Synapse models: a projection's plasticity rule after flags and choices are resolved
//! (docs/language.md, "Synapse models").
//!
//! A rule is a list of assignments run once per postsynaptic *event* for every synapse of
//! the event's neuron (its receptive field, for a convolution): the events of a sample are
//! the postsynaptic neurons its gate selects (or, without a gate, that fired), samples in
//! batch order, each sample's events in index order, every update reading the weight as the
//! previous one left it. The arithmetic is f64 from the f32 weight, parameters held in f64,
//! and the weight is rounded to f32 once per event: Spyker's STDP (docs/spyker.md).

use std::fmt;

use crate::ir::expr::{print, Expr, Parens, Text};
use snn_runtime::plan::ParamCheck;

/// What a name in a rule refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SynLeaf {
    /// Rule parameter `i` (an f64 changeable at run time).
    Param(usize),
    /// The synapse's weight, as the previous event left it (then as this rule assigns it).
    W,
    /// The first step at which the presynaptic neuron spiked in this sample (`T` if never;
    /// zero padding of a convolution never spikes).
    TPre,
    /// The first step at which the postsynaptic neuron spiked in this sample (`T` if never).
    TPost,
    /// The sample's reward (the projection's `reward = r`, one value per sample).
    Reward,
    /// The number of time steps `T` of the run.
    Steps,
    /// A `let` temporary.
    Local(usize),
}

pub type SExpr = Expr<SynLeaf>;

/// A variable a rule assigns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SynVar {
    W,
    Local(usize),
}

#[derive(Clone, Debug, PartialEq)]
pub struct SynAssign {
    pub target: SynVar,
    pub value: SExpr,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SynParam {
    pub name: String,
    /// The value the instance gives (or the model's default), exactly as written, in f64.
    pub value: f64,
    pub check: ParamCheck,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SynapseEqs {
    /// The rule's name, e.g. `spyker_stdp`.
    pub model: String,
    /// Compile-time switches as chosen, e.g. `stabilize=true`.
    pub variant: String,
    pub params: Vec<SynParam>,
    pub locals: Vec<String>,
    /// Run once per postsynaptic event, in order.
    pub on_post: Vec<SynAssign>,
}

impl SynapseEqs {
    /// Whether the rule reads the sample's reward.
    pub fn reads(&self, leaf: SynLeaf) -> bool {
        self.on_post
            .iter()
            .any(|a| a.value.any_leaf(|l| *l == leaf))
    }

    pub fn leaf_name(&self, l: &SynLeaf) -> String {
        match l {
            SynLeaf::Param(i) => self.params[*i].name.clone(),
            SynLeaf::W => "w".into(),
            SynLeaf::TPre => "t_pre".into(),
            SynLeaf::TPost => "t_post".into(),
            SynLeaf::Reward => "reward".into(),
            SynLeaf::Steps => "T".into(),
            SynLeaf::Local(i) => self.locals[*i].clone(),
        }
    }

    pub fn var_name(&self, v: SynVar) -> String {
        match v {
            SynVar::W => "w".into(),
            SynVar::Local(i) => self.locals[i].clone(),
        }
    }

    /// `e` as the IR dumps print it.
    pub fn show(&self, e: &SExpr) -> String {
        print(
            &Text {
                parens: Parens::Minimal,
                leaf: |l: &SynLeaf| self.leaf_name(l),
            },
            e,
        )
    }
}

impl fmt::Display for SynapseEqs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "    synapse {}", self.model)?;
        if !self.variant.is_empty() {
            write!(f, " [{}]", self.variant)?;
        }
        writeln!(f, " (f64; w rounded to f32 once per event)")?;
        for p in &self.params {
            writeln!(f, "      param {} = {:?}", p.name, p.value)?;
        }
        writeln!(f, "      on_post (once per postsynaptic event) {{")?;
        for a in &self.on_post {
            writeln!(
                f,
                "        {} = {}",
                self.var_name(a.target),
                self.show(&a.value)
            )?;
        }
        write!(f, "      }}")
    }
}
