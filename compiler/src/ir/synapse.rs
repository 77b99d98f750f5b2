//! Synapse models: a projection's plasticity rule after flags and choices are resolved
//! (docs/language.md, "Synapse models").
//!
//! Two forms ([`RuleForm`]), decided by what the rule declares and reads:
//!
//! * **First-spike rules** (Spyker's STDP): `on_post` runs once per postsynaptic *event* for
//!   every synapse of the event's neuron (its receptive field, for a convolution), reading
//!   the first spike times `t_pre`, `t_post`: the events of a sample are the postsynaptic
//!   neurons its gate selects (or, without a gate, that fired), samples in batch order, each
//!   sample's events in index order, every update reading the weight as the previous one
//!   left it, rounded to f32 once per event (docs/spyker.md).
//! * **Per-step rules** (trace STDP, SpikingJelly's `STDPLearner`): `pre`/`post` traces
//!   start at their initial values in every sample; each step runs `on_step` (the traces'
//!   dynamics, reading the spikes `s_pre`, `s_post`), then `on_pre` if the presynaptic
//!   neuron spiked, then `on_post` if the postsynaptic one did. `w` reads the weight as the
//!   batch started; each block's change to it is summed over steps, samples and (for a
//!   convolution) positions, and added once after the batch, as a gradient step is.
//!
//! The arithmetic is f64 from the f32 weight, parameters held in f64.

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
    /// Presynaptic trace `i` (per-step rules).
    PreState(usize),
    /// Postsynaptic trace `i` (per-step rules).
    PostState(usize),
    /// The presynaptic neuron's spike at this step (0 or 1; per-step rules).
    SPre,
    /// The postsynaptic neuron's spike at this step.
    SPost,
}

/// How a rule walks a sample (module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleForm {
    FirstSpike,
    PerStep,
}

/// A `pre` or `post` trace.
#[derive(Clone, Debug, PartialEq)]
pub struct SynState {
    pub name: String,
    /// Its value before the first step of every sample (parameters and numbers only).
    pub init: SExpr,
}

pub type SExpr = Expr<SynLeaf>;

/// A variable a rule assigns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SynVar {
    W,
    Local(usize),
    PreState(usize),
    PostState(usize),
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
    pub form: RuleForm,
    pub params: Vec<SynParam>,
    pub locals: Vec<String>,
    pub pre_states: Vec<SynState>,
    pub post_states: Vec<SynState>,
    /// Per-step rules: every step, before the events.
    pub on_step: Vec<SynAssign>,
    /// Per-step rules: at each presynaptic spike.
    pub on_pre: Vec<SynAssign>,
    /// At each postsynaptic event (module documentation).
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
            SynLeaf::PreState(i) => self.pre_states[*i].name.clone(),
            SynLeaf::PostState(i) => self.post_states[*i].name.clone(),
            SynLeaf::SPre => "s_pre".into(),
            SynLeaf::SPost => "s_post".into(),
        }
    }

    pub fn var_name(&self, v: SynVar) -> String {
        match v {
            SynVar::W => "w".into(),
            SynVar::Local(i) => self.locals[i].clone(),
            SynVar::PreState(i) => self.pre_states[i].name.clone(),
            SynVar::PostState(i) => self.post_states[i].name.clone(),
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
        match self.form {
            RuleForm::FirstSpike => writeln!(
                f,
                " (first-spike rule; f64, w rounded to f32 once per event)"
            )?,
            RuleForm::PerStep => {
                writeln!(f, " (per-step rule; f64, the batch's change added once)")?
            }
        }
        for p in &self.params {
            writeln!(f, "      param {} = {:?}", p.name, p.value)?;
        }
        for (word, states) in [("pre", &self.pre_states), ("post", &self.post_states)] {
            for st in states {
                writeln!(f, "      {word} {} = {}", st.name, self.show(&st.init))?;
            }
        }
        let blocks = [
            ("on_step (every step)", &self.on_step),
            ("on_pre (at each presynaptic spike)", &self.on_pre),
            (
                match self.form {
                    RuleForm::FirstSpike => "on_post (once per postsynaptic event)",
                    RuleForm::PerStep => "on_post (at each postsynaptic spike)",
                },
                &self.on_post,
            ),
        ];
        let mut first = true;
        for (word, body) in blocks {
            if body.is_empty() {
                continue;
            }
            if !first {
                writeln!(f)?;
            }
            first = false;
            writeln!(f, "      {word} {{")?;
            for a in body {
                writeln!(
                    f,
                    "        {} = {}",
                    self.var_name(a.target),
                    self.show(&a.value)
                )?;
            }
            write!(f, "      }}")?;
        }
        Ok(())
    }
}
