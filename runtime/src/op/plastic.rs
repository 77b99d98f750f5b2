//! Local learning: a projection whose weight learns by a rule (`synapse = rule(..)`,
//! docs/language.md "Synapse models"). After a forward pass, [`crate::Session::learn`] runs
//! each enabled [`LearnLayer`]'s generated plasticity kernel on the batch's waves: for every
//! postsynaptic event (a neuron the gate selects, or without a gate one that fired),
//! samples in batch order and each sample's neurons in index order, the rule updates every
//! synapse of the event's neuron, reading the weight as the previous event left it. That
//! is Spyker's order (docs/spyker.md, "Simplified STDP"): the forward pass used the batch's
//! starting weights, the updates are sequential.
//!
//! The kernel's ABI is [`crate::plan::KernelArgs`] with: `bufs = [weight, pre, post, gate,
//! reward, states..]` (a null pointer for an absent gate or reward), `params` the rule's parameters
//! as **f64** (the pointer cast), `features` the number of postsynaptic maps (a dense
//! layer's outputs, a convolution's channels) and `lo..hi` a range of them. A map's
//! synapses are written only by the thread that owns the map, so ranges run in parallel.

use crate::device::Loc;
use crate::error::{Result, RuntimeError};
use crate::plan::{BufId, ConvGeom, Extent, KernelId, Plan, WeightId};
use serde::{Deserialize, Serialize};

/// Which synapses a plastic projection has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PlasticGeom {
    /// Weight `[outputs, inputs]`; output `o` is map `o` with one neuron.
    Dense { inputs: usize, outputs: usize },
    /// Weight `[c_out, c_in, kh, kw]` shared by the `h_out * w_out` neurons of a map.
    Conv(ConvGeom),
}

impl PlasticGeom {
    /// Presynaptic neurons per sample.
    pub fn pre_features(&self) -> usize {
        match *self {
            PlasticGeom::Dense { inputs, .. } => inputs,
            PlasticGeom::Conv(g) => g.c_in * g.h * g.w,
        }
    }
    /// Postsynaptic neurons per sample.
    pub fn post_features(&self) -> usize {
        match *self {
            PlasticGeom::Dense { outputs, .. } => outputs,
            PlasticGeom::Conv(g) => g.c_out * g.h_out * g.w_out,
        }
    }
    /// Postsynaptic maps: the kernel's index space.
    pub fn maps(&self) -> usize {
        match *self {
            PlasticGeom::Dense { outputs, .. } => outputs,
            PlasticGeom::Conv(g) => g.c_out,
        }
    }
    /// Weights.
    pub fn synapses(&self) -> usize {
        match *self {
            PlasticGeom::Dense { inputs, outputs } => inputs * outputs,
            PlasticGeom::Conv(g) => g.c_out * g.c_in * g.kh * g.kw,
        }
    }
}

/// A rule parameter: f64, changeable between batches ([`crate::Session::set_rule_param`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RuleParam {
    pub name: String,
    pub value: f64,
}

/// One plastic projection of a plan ([`crate::plan::Plan::learn`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LearnLayer {
    /// The projection's name; its weight is `weight`.
    pub name: String,
    /// The rule (a synapse model), for messages and dumps.
    pub rule: String,
    pub weight: WeightId,
    /// The generated plasticity kernel.
    pub kernel: KernelId,
    /// Presynaptic spikes (`[T, B, pre]`), postsynaptic spikes (`[T, B, post]`).
    pub pre: BufId,
    pub post: BufId,
    /// A static `[B, post]` map: the events are its non-zero neurons.
    pub gate: Option<BufId>,
    /// A static `[B, 1]` value per sample, the rule's `reward`.
    pub reward: Option<BufId>,
    /// Per-synapse states besides the weight (`state e = ..`): weights of the weight's
    /// shape, bound after the reward (`bufs[5..]`).
    pub states: Vec<WeightId>,
    /// The forward ops (a prefix of `Plan::ops`) that compute everything this layer's
    /// rule reads: [`crate::Session::learn_step`] runs no more.
    pub forward_ops: usize,
    pub geom: PlasticGeom,
    pub params: Vec<RuleParam>,
}

impl LearnLayer {
    /// Checks the layer against the plan (`kernels`: the kernel table's size).
    pub fn check(&self, p: &Plan, what: &str) -> Result<()> {
        let err = |m: String| RuntimeError::plan(format!("{what} ({}): {m}", self.name));
        let w = p
            .weights
            .get(self.weight)
            .ok_or_else(|| err(format!("weight {} does not exist", self.weight)))?;
        if w.numel() != self.geom.synapses() {
            return Err(err(format!(
                "weight `{}` has {} values, the rule's geometry {}",
                w.name,
                w.numel(),
                self.geom.synapses()
            )));
        }
        if self.forward_ops > p.ops.len() {
            return Err(err(format!(
                "its forward pass is {} ops, the plan has {}",
                self.forward_ops,
                p.ops.len()
            )));
        }
        if self.kernel >= p.kernels.len() {
            return Err(err(format!("kernel {} does not exist", self.kernel)));
        }
        if p.kernels[self.kernel].arity != 5 + self.states.len() {
            return Err(err(format!(
                "kernel {} takes {} buffers, the layer binds {}",
                self.kernel,
                p.kernels[self.kernel].arity,
                5 + self.states.len()
            )));
        }
        for &st in &self.states {
            let d = p
                .weights
                .get(st)
                .ok_or_else(|| err(format!("state weight {st} does not exist")))?;
            if d.numel() != self.geom.synapses() || st == self.weight {
                return Err(err(format!(
                    "state `{}` is not a separate array of {} values",
                    d.name,
                    self.geom.synapses()
                )));
            }
        }
        let buf = |b: BufId, extent: Extent, features: usize, role: &str| {
            let d = p
                .buffers
                .get(b)
                .ok_or_else(|| err(format!("{role} buffer {b} does not exist")))?;
            if d.extent != extent || d.features != features {
                return Err(err(format!(
                    "{role} buffer `{}` is {:?} [{}], expected {:?} [{features}]",
                    d.name, d.extent, d.features, extent
                )));
            }
            Ok(())
        };
        buf(self.pre, Extent::Seq, self.geom.pre_features(), "pre")?;
        buf(self.post, Extent::Seq, self.geom.post_features(), "post")?;
        if let Some(g) = self.gate {
            buf(g, Extent::Static, self.geom.post_features(), "gate")?;
        }
        if let Some(r) = self.reward {
            buf(r, Extent::Static, 1, "reward")?;
        }
        if let PlasticGeom::Conv(g) = self.geom {
            if g.stride == 0 || g.kh == 0 || g.kw == 0 {
                return Err(err("a zero stride or kernel size".into()));
            }
        }
        if self.params.iter().any(|q| !q.value.is_finite()) {
            return Err(err("a rule parameter is not finite".into()));
        }
        Ok(())
    }

    /// The layer's line in plan dumps.
    pub fn print(&self, p: &Plan) -> String {
        let b = |i: BufId| p.buffers[i].name.clone();
        let params: Vec<String> = self
            .params
            .iter()
            .map(|q| format!("{}={:?}", q.name, q.value))
            .collect();
        let geom = match self.geom {
            PlasticGeom::Dense { inputs, outputs } => format!("dense {inputs} -> {outputs}"),
            PlasticGeom::Conv(g) => format!(
                "conv {}x{}x{} -> {}x{}x{}, kernel {}x{}, stride {}, pad {}",
                g.c_in, g.h, g.w, g.c_out, g.h_out, g.w_out, g.kh, g.kw, g.stride, g.pad
            ),
        };
        format!(
            "learn {} by {}({}) with k{}: pre {}, post {}{}{}  [{geom}]",
            p.weights[self.weight].name,
            self.rule,
            params.join(", "),
            self.kernel,
            b(self.pre),
            b(self.post),
            self.gate
                .map(|g| format!(", gate {}", b(g)))
                .unwrap_or_default(),
            self.reward
                .map(|r| format!(", reward {}", b(r)))
                .unwrap_or_default(),
        )
    }
}

/// One run of a plasticity kernel over a batch.
#[derive(Clone, Copy, Debug)]
pub struct PlasticDesc<'a> {
    pub kernel: KernelId,
    pub weight: WeightId,
    pub geom: PlasticGeom,
    pub t_len: usize,
    pub batch: usize,
    pub pre: Loc,
    pub post: Loc,
    pub gate: Option<Loc>,
    pub reward: Option<Loc>,
    /// The per-synapse state weights, `bufs[5..]`.
    pub states: &'a [WeightId],
    pub params: &'a [f64],
}

/// What a device implements for local learning.
pub trait PlasticOps {
    /// Runs the plasticity kernel of `d` over every postsynaptic map (see the module
    /// documentation); the weight changes in place.
    fn plastic(&mut self, d: &PlasticDesc<'_>) -> Result<()>;
}
