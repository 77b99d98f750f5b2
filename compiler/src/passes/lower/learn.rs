//! Lowering of the plastic projections (`synapse = rule(..)`): a [`LearnLayer`] in the plan
//! and a [`PlasticKernel`] per projection, after every forward and backward kernel.

use std::collections::BTreeSet;

use super::Lowerer;
use crate::ir::kernel::PlasticKernel;
use crate::ir::names;
use crate::ir::net::{NodeId, NodeKind};
use crate::ir::synapse::{RuleForm, SynLeaf};
use snn_runtime::plan::{Init, KernelDecl, LearnLayer, PlasticGeom, RuleParam, WeightDecl};

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
            // Per-synapse states: weights of the weight's shape, saved with it.
            let wshape = self.plan.weights[self.weight_of[&p.projection].0]
                .shape
                .clone();
            let states: Vec<usize> = (eqs.states.iter())
                .map(|st| {
                    let v = st
                        .init
                        .eval(|l| match l {
                            SynLeaf::Param(i) => Some(eqs.params[*i].value),
                            _ => None,
                        })
                        .expect("synapses checked: parameters and numbers");
                    self.plan.weights.push(WeightDecl {
                        name: format!("{}.{}", proj.name, st.name),
                        shape: wshape.clone(),
                        init: Init::Constant(v as f32),
                    });
                    self.plan.weights.len() - 1
                })
                .collect();
            let kernel = self.plan.kernels.len();
            let symbol =
                names::kernel_symbol(kernel, &format!("{}_{}", proj.name, eqs.model), "_learn");
            self.plan.kernels.push(KernelDecl {
                symbol: symbol.clone(),
                arity: 5 + states.len(),
                weights: vec![],
            });
            let buf = |h| mem.node_out[&h];
            let forward_ops = self.forward_prefix(&[Some(src), Some(post), p.gate, p.reward]);
            self.plan.learn.push(LearnLayer {
                name: proj.name.clone(),
                rule: eqs.model.clone(),
                weight: self.weight_of[&p.projection].0,
                kernel,
                pre: buf(src),
                post: buf(post),
                gate: p.gate.map(buf),
                reward: p.reward.map(buf),
                states,
                forward_ops,
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

    /// How many forward ops compute `seeds` and everything they read: the forward ops run
    /// up to the last stage holding one of them (stages are in dependency order).
    fn forward_prefix(&self, seeds: &[Option<NodeId>]) -> usize {
        let m = self.m;
        let fusion = m.fusion.as_ref().expect("fuse pass has run");
        let mut seen: BTreeSet<NodeId> = BTreeSet::new();
        let mut todo: Vec<NodeId> = seeds.iter().flatten().copied().collect();
        while let Some(h) = todo.pop() {
            if seen.insert(h) {
                todo.extend(m.nodes[h].kind.sources().into_iter().map(|(s, _)| s));
            }
        }
        let stage = |h: NodeId| match fusion.group_of.get(&h) {
            Some(&g) => Some(fusion.groups[g].stage),
            None => self.stage_of.get(&h).copied(),
        };
        seen.into_iter()
            .filter_map(stage)
            .map(|st| self.stage_ops_end[st])
            .max()
            .unwrap_or(0)
    }
}
