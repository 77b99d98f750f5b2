//! Lowering of the plastic projections (`synapse = rule(..)`): a [`LearnLayer`] in the plan
//! and a [`PlasticKernel`] per projection, after every forward and backward kernel.

use super::Lowerer;
use crate::ir::kernel::PlasticKernel;
use crate::ir::names;
use crate::ir::net::NodeKind;
use crate::ir::synapse::{RuleForm, SynLeaf};
use snn_runtime::plan::{KernelDecl, LearnLayer, PlasticGeom, RuleParam};

impl Lowerer<'_> {
    pub(super) fn learn(&mut self) -> Vec<PlasticKernel> {
        let (m, mem) = (self.m, self.mem);
        let mut kernels = Vec::new();
        for p in &m.plastic {
            let eqs = p.eqs.as_deref().expect("synapses pass has run");
            let post = p.post.expect("synapses pass has run");
            let proj = &m.nodes[p.projection];
            let (src, geom) = match proj.kind {
                NodeKind::Dense { src, out, .. } => (
                    src,
                    PlasticGeom::Dense {
                        inputs: m.shape(src).features(),
                        outputs: out,
                    },
                ),
                NodeKind::Conv2d { src, .. } => {
                    (src, PlasticGeom::Conv(self.conv_geom(p.projection)))
                }
                _ => unreachable!("rules attach to dense and conv2d"),
            };
            let kernel = self.plan.kernels.len();
            let symbol =
                names::kernel_symbol(kernel, &format!("{}_{}", proj.name, eqs.model), "_learn");
            self.plan.kernels.push(KernelDecl {
                symbol: symbol.clone(),
                arity: 5,
                weights: vec![],
            });
            let buf = |h| mem.node_out[&h];
            self.plan.learn.push(LearnLayer {
                name: proj.name.clone(),
                rule: eqs.model.clone(),
                weight: self.weight_of[&p.projection].0,
                kernel,
                pre: buf(src),
                post: buf(post),
                gate: p.gate.map(buf),
                reward: p.reward.map(buf),
                geom,
                params: eqs
                    .params
                    .iter()
                    .map(|q| RuleParam {
                        name: q.name.clone(),
                        value: q.value,
                    })
                    .collect(),
            });
            kernels.push(PlasticKernel {
                symbol,
                doc: match eqs.form {
                    RuleForm::FirstSpike => format!(
                        "{}.weight learns by {} (once per postsynaptic event{})",
                        proj.name,
                        eqs.model,
                        if p.gate.is_some() {
                            " the gate selects"
                        } else {
                            " that fired"
                        }
                    ),
                    RuleForm::PerStep => format!(
                        "{}.weight learns by {} (per step; the batch's change added once)",
                        proj.name, eqs.model
                    ),
                },
                geom,
                gate: p.gate.is_some(),
                reward: eqs.reads(SynLeaf::Reward),
                rule: eqs.clone(),
            });
        }
        kernels
    }
}
