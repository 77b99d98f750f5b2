//! Pass `autodiff` (training only): derive the backward pass from the equations.
//!
//! For every population on the gradient path the neuron step is differentiated
//! symbolically ([`crate::ir::adjoint::derive`]): one reverse-time kernel per population,
//! the spike's Heaviside replaced by the chosen surrogate. Projections get their transposed
//! GEMMs (input gradient) and weight/bias gradient products when lowered; convolutions
//! their transposed convolution and weight/bias gradients, pooling layers the routing of
//! the gradient back through their windows. The pass records
//! which nodes need a gradient, the backward order, and the outputs the loss and the
//! regularisers read (adding them to the model's outputs when the user did not declare
//! them). What the forward pass must keep for the backward pass follows from this: the
//! state at the start of each step of every differentiated population (`passes::memory`),
//! and the inputs of each differentiated projection. A recurrent (step-by-step) stage is
//! differentiated through time: its nodes' backward ops run in a reverse step loop.

use std::collections::{BTreeMap, BTreeSet};

use crate::diag::{DResult, Diagnostic, ErrorKind};
use crate::ir::adjoint;
use crate::ir::net::*;
use crate::ir::sched::{Backward, StageKind};
use crate::ir::train::LossTarget;
use snn_runtime::plan::LossKind;

use super::Options;

fn unsupported(m: &Module, h: NodeId, what: &str) -> Diagnostic {
    Diagnostic::new(
        ErrorKind::BadArgument,
        format!("training through {what} is not supported yet"),
    )
    .at(m.nodes[h].span, "on the gradient path")
    .hint(
        "the backward pass covers dense, conv2d and pooling layers and neuron populations \
         (with their learnable parameters), feed-forward or in recurrent cycles (BPTT), except \
         conv/pool layers inside a cycle",
    )
}

pub fn run(m: &mut Module, opts: &Options) -> DResult<()> {
    if !opts.train {
        return Ok(());
    }
    let Some(cfg) = m.train.clone() else {
        return Err(Diagnostic::new(
            ErrorKind::BadValue,
            format!("model `{}` has no `train {{ ... }}` block", m.name),
        )
        .at(m.span, "nothing says how to train this model")
        .hint(
            "add e.g. `train { loss = cross_entropy(counts(out))  optimizer = adam(lr = 1e-3) }`",
        ));
    };
    if let Some(&(h, _, span)) = m.ties.first() {
        return Err(Diagnostic::new(
            ErrorKind::BadArgument,
            format!(
                "`{}` shares another projection's weight, which gradient training does not support yet",
                m.nodes[h].name
            ),
        )
        .at(span, "a shared weight")
        .hint("shared weights learn by local rules (`synapse = ...`); for gradient training give the layer its own weight"));
    }

    if let Some(stage) = cfg.local.first() {
        return Err(Diagnostic::new(
            ErrorKind::BadValue,
            format!(
                "model `{}` learns by local rules (`local = [..]`), not by a loss",
                m.name
            ),
        )
        .at(stage.span, "local learning, without a backward pass")
        .hint("train it with `snnc train`, which runs the rules; compile it without `--train`"));
    }
    // One weight, two learning rules: the gradient step and the rule would both write it.
    if let Some(p) = m.plastic.first() {
        return Err(Diagnostic::new(
            ErrorKind::BadValue,
            format!(
                "`{}` learns by its rule `{}`; gradient training of a model with plastic \
                 projections is not supported",
                m.nodes[p.projection].name, p.rule
            ),
        )
        .at(p.span, "a local rule")
        .hint(
            "train the rules with a local schedule (`local = [layer(..), ..]` instead of `loss` \
             in the train block), or drop `synapse = ...` to train by the loss",
        ));
    }
    if !opts.fuse || opts.force_steps {
        return Err(Diagnostic::new(
            ErrorKind::BadArgument,
            "training needs the fused, layer-by-layer plan",
        )
        .at(m.span, "compiled for training")
        .hint("drop --no-fuse / --step-by-step when training"));
    }
    let sched = m.schedule.as_ref().expect("schedule pass has run");
    // Which values need a gradient: anything downstream of a trainable projection or of a
    // population with learned parameters (`tau = learn(2.0)`).
    let mut needs_grad = BTreeSet::new();
    loop {
        let before = needs_grad.len();
        for (h, node) in m.nodes.iter() {
            let trainable = match &node.kind {
                NodeKind::Dense { .. } | NodeKind::Conv2d { .. } => true,
                NodeKind::Population { eqs: Some(eqs), .. } => {
                    eqs.params.iter().any(|p| p.learned()) || eqs.mix.is_some()
                }
                NodeKind::Input { .. } => cfg.input_grads,
                // Spike encoders sample: no gradient flows through them.
                NodeKind::Encode { .. } => continue,
                _ => false,
            };
            if trainable
                || node
                    .kind
                    .sources()
                    .iter()
                    .any(|(s, _)| needs_grad.contains(s))
            {
                needs_grad.insert(h);
            }
        }
        if needs_grad.len() == before {
            break;
        }
    }

    // Inhibition selects a channel per pixel, k-WTA its winners: they have no gradient
    // (Spyker trains the layers around them with STDP); nor has `infinite` here yet.
    if let Some(h) = m.nodes.iter().map(|(h, _)| h).find(|h| {
        needs_grad.contains(h)
            && matches!(
                m.nodes[*h].kind,
                NodeKind::Inhibit { .. } | NodeKind::Wta { .. } | NodeKind::Infinite { .. }
            )
    }) {
        let op = m.nodes[h].kind.op_name();
        return Err(Diagnostic::new(
            ErrorKind::BadArgument,
            format!("`{op}` passes no gradient, but a trained layer is behind it"),
        )
        .at(m.nodes[h].span, "on the gradient path")
        .hint(match op {
            "inhibit" => {
                "train the layers after the inhibition only, or train without `inhibit`".into()
            }
            _ => format!("train the layers after `{op}` only, or train without it"),
        }));
    }

    // Conv and pooling layers train feed-forward; inside a recurrent cycle they do not yet.
    for stage in &sched.stages {
        if let StageKind::Steps(ns) = &stage.kind {
            if let Some(&h) = ns.iter().find(|&&h| {
                needs_grad.contains(&h)
                    && matches!(
                        m.nodes[h].kind,
                        NodeKind::Conv2d { .. } | NodeKind::Pool2d { .. }
                    )
            }) {
                return Err(unsupported(
                    m,
                    h,
                    "a conv/pool layer inside a recurrent cycle",
                ));
            }
        }
    }

    // The loss's output (and the regularisers'), added when not declared.
    let pop_of = |m: &Module, name: &str, span| -> DResult<NodeId> {
        match m.node_by_name(name) {
            Some(h) if m.is_population(h) => Ok(h),
            _ => {
                let pops: Vec<&str> = m
                    .nodes
                    .iter()
                    .filter(|(h, _)| m.is_population(*h))
                    .map(|(_, n)| n.name.as_str())
                    .collect();
                let d = Diagnostic::new(
                    ErrorKind::UnknownName,
                    format!("the loss reads `{name}`, which is not a population of this model"),
                )
                .at(span, "in this training setting");
                Err(
                    match crate::diag::did_you_mean(name, pops.iter().copied()) {
                        Some(s) => d.hint(format!("did you mean `{s}`?")),
                        None => d.hint(format!("populations: {}", pops.join(", "))),
                    },
                )
            }
        }
    };
    let loss = &cfg.loss;
    let lp = pop_of(m, loss.target.population(), loss.span)?;
    let eqs = m.eqs(lp).expect("population");
    let (kind, state) = match &loss.target {
        LossTarget::Counts(_) | LossTarget::Spikes(_) => {
            if !eqs.spikes() {
                return Err(Diagnostic::new(
                    ErrorKind::BadArgument,
                    format!(
                        "`{}` does not spike, so it has no spike counts",
                        m.nodes[lp].name
                    ),
                )
                .at(loss.span, "this loss reads spikes")
                .hint(format!(
                    "for a readout, use `cross_entropy(max({}.{}))`",
                    m.nodes[lp].name, eqs.states[0].name
                )));
            }
            let k = if matches!(loss.target, LossTarget::Counts(_)) {
                OutputKind::Counts
            } else {
                OutputKind::Spikes
            };
            (k, None)
        }
        LossTarget::Trace(_, s) => {
            let Some(i) = eqs.states.iter().position(|st| &st.name == s) else {
                let names: Vec<&str> = eqs.states.iter().map(|s| s.name.as_str()).collect();
                return Err(Diagnostic::new(
                    ErrorKind::UnknownName,
                    format!("`{}` has no state `{s}`", m.nodes[lp].name),
                )
                .at(loss.span, "in this loss")
                .hint(format!("its states: {}", names.join(", "))));
            };
            (OutputKind::Trace, Some((s.clone(), Some(i))))
        }
    };
    if matches!(loss.kind, LossKind::FirstSpikeTime) && kind != OutputKind::Spikes {
        unreachable!("first_spike reads spikes (checked by train_block::config)");
    }
    let loss_output = ensure_output(m, lp, kind, state, loss.span);
    let mut reg_outputs = Vec::new();
    for r in &cfg.regularizers {
        let h = pop_of(m, &r.population, r.span)?;
        if !m.eqs(h).expect("population").spikes() {
            return Err(Diagnostic::new(
                ErrorKind::BadArgument,
                format!(
                    "`{}` does not spike; a rate regulariser needs spikes",
                    r.population
                ),
            )
            .at(r.span, "this regulariser"));
        }
        reg_outputs.push(ensure_output(m, h, OutputKind::Counts, None, r.span));
    }
    if !needs_grad.contains(&lp) {
        return Err(Diagnostic::new(
            ErrorKind::BadArgument,
            "nothing to train: no weights lie upstream of the loss",
        )
        .at(loss.span, "this loss")
        .hint(
            "the loss must read a population fed (through dense layers) by the inputs, or \
             one with a learnable parameter (`tau = learn(2.0)`)",
        ));
    }

    // `input_grads`: the inputs a differentiable node reads.
    let mut inputs = Vec::new();
    if cfg.input_grads {
        for (h, node) in m.nodes.iter() {
            if !matches!(node.kind, NodeKind::Input { .. }) {
                continue;
            }
            let read = m.nodes.iter().any(|(c, n)| {
                needs_grad.contains(&c)
                    && !matches!(n.kind, NodeKind::Input { .. } | NodeKind::Encode { .. })
                    && n.kind.sources().iter().any(|(s, _)| *s == h)
            });
            if read {
                inputs.push(h);
            }
        }
        if inputs.is_empty() {
            return Err(Diagnostic::new(
                ErrorKind::BadArgument,
                "`input_grads = true`, but no input feeds a differentiable layer",
            )
            .at(loss.span, "this loss")
            .hint(
                "spike encoders (`bernoulli`, `poisson`) sample and have no gradient: feed the \
                 input to a dense/conv layer or a population directly",
            ));
        }
    }

    // The backward step of every population on the gradient path: its current or one of
    // its parameters needs a gradient.
    let mut pops = BTreeMap::new();
    let sched = m.schedule.as_ref().expect("schedule pass has run");
    for (h, node) in m.nodes.iter() {
        let NodeKind::Population { eqs: Some(eqs), .. } = &node.kind else {
            continue;
        };
        if !needs_grad.contains(&h) {
            continue;
        }
        // On the parallel schedule a recurrent population's states come from the time
        // products: the step is differentiated from there on (`derive_parallel`).
        let pt = &sched.time[&h];
        let parallel =
            pt.form == TimeForm::Parallel && pt.linear.as_ref().is_some_and(|l| l.recurrent());
        let derive = if parallel {
            adjoint::derive_parallel
        } else {
            adjoint::derive
        };
        let mut step = derive(eqs, &cfg.grad, m.dt).map_err(|e| {
            Diagnostic::new(ErrorKind::BadArgument, format!("cannot differentiate `{}`: {}", node.name, e.0))
                .at(node.span, "this population")
                .hint("a trainable neuron model's spike condition must be a comparison, e.g. `spike v >= v_threshold`")
        })?;
        // Sequential schedule: save each state after its update when that is all the
        // backward step needs (it then reads neither the input nor the start state).
        step.save_post = pt.form != TimeForm::Parallel && step.needs_only_post_update();
        pops.insert(h, step);
    }

    // Backward order: stages from last to first; inside a recurrent (step-by-step) stage,
    // its nodes from last to first too (lowering wraps them in a reverse step loop).
    let sched = m.schedule.as_ref().expect("schedule pass has run");
    let mut order = Vec::new();
    for stage in sched.stages.iter().rev() {
        match &stage.kind {
            StageKind::Layer(n) | StageKind::Parallel(n) => {
                if needs_grad.contains(n) {
                    order.push(*n);
                }
            }
            StageKind::Steps(ns) => {
                order.extend(ns.iter().rev().filter(|n| needs_grad.contains(n)));
            }
        }
    }
    m.backward = Some(Backward {
        pops,
        needs_grad,
        order,
        loss_output,
        reg_outputs,
        inputs,
    });
    Ok(())
}

/// The index of an output of `kind` on `node` (and `state`), added if missing.
fn ensure_output(
    m: &mut Module,
    node: NodeId,
    kind: OutputKind,
    state: Option<(String, Option<usize>)>,
    span: crate::diag::Span,
) -> usize {
    let same_state = |o: &Output| match (&o.state, &state) {
        (Some((_, a)), Some((_, b))) => a == b,
        (None, None) => true,
        _ => false,
    };
    if let Some(i) = m
        .outputs
        .iter()
        .position(|o| o.node == node && o.kind == kind && same_state(o))
    {
        return i;
    }
    let pname = &m.nodes[node].name;
    let name = match (&kind, &state) {
        (OutputKind::Counts, _) => format!("{pname}.counts"),
        (OutputKind::Spikes, _) => format!("{pname}.spikes"),
        (OutputKind::Trace, Some((s, _))) => format!("{pname}.{s}"),
        (OutputKind::Trace, None) => unreachable!("traces name a state"),
    };
    m.outputs.push(Output {
        name,
        kind,
        node,
        state,
        span,
    });
    m.outputs.len() - 1
}
