//! Pass `memory`: decide every buffer (node values, spikes, traces, counts, step state,
//! unfused spills), its lifetime in stages, and the physical slot it lives in. Buffers
//! whose lifetimes do not overlap share a slot; model inputs and outputs never share.

use std::collections::BTreeMap;

use crate::diag::DResult;
use crate::ir::net::*;
use crate::ir::sched::{FuseMode, MemoryPlan, StageKind};
use snn_runtime::plan::{BufferDecl, Extent as PExtent};

use super::{pop_outputs, spilled_locals, Options};

struct Life {
    first: usize,
    last: usize,
    pinned: bool,
}

pub fn run(m: &mut Module, opts: &Options) -> DResult<()> {
    let sched = m.schedule.as_ref().expect("schedule pass has run");
    let fusion = m.fusion.as_ref().expect("fuse pass has run");
    let stage_of = sched.stage_of();
    let end = sched.stages.len();
    // The stage at which each node's value is produced.
    let def_stage = |h: NodeId| -> usize {
        if let Some(&g) = fusion.group_of.get(&h) {
            return fusion.groups[g].stage;
        }
        stage_of.get(&h).copied().unwrap_or(0)
    };

    let mut plan = MemoryPlan::default();
    let mut lives: Vec<Life> = Vec::new();
    let add = |plan: &mut MemoryPlan,
               lives: &mut Vec<Life>,
               name: String,
               extent: PExtent,
               features: usize,
               first: usize,
               pinned: bool| {
        plan.buffers.push(BufferDecl {
            name,
            extent,
            features,
            slot: 0,
        });
        lives.push(Life {
            first,
            last: first,
            pinned,
        });
        plan.buffers.len() - 1
    };
    let ext = |e: Extent| match e {
        Extent::Seq => PExtent::Seq,
        Extent::Static => PExtent::Static,
    };

    for (h, node) in m.nodes.iter() {
        let shape = node.shape.as_ref().expect("shapes");
        let f = shape.features();
        let d = def_stage(h);
        match &node.kind {
            NodeKind::Input { .. } => {
                let b = add(
                    &mut plan,
                    &mut lives,
                    node.name.clone(),
                    ext(shape.extent),
                    f,
                    0,
                    true,
                );
                plan.node_out.insert(h, b);
            }
            NodeKind::Filter {
                bank, threshold, ..
            } => {
                // The convolution's raw channels, combined by the filter's output step
                // (a Gabor bank without a threshold writes its output directly).
                if let Some(raw) = filter_raw_features(bank, *threshold, shape) {
                    let b = add(
                        &mut plan,
                        &mut lives,
                        format!("{}.raw", node.name),
                        ext(shape.extent),
                        raw,
                        d,
                        false,
                    );
                    plan.filter_raw.insert(h, b);
                }
                let b = add(
                    &mut plan,
                    &mut lives,
                    node.name.clone(),
                    ext(shape.extent),
                    f,
                    d,
                    false,
                );
                plan.node_out.insert(h, b);
            }
            NodeKind::Encode { .. }
            | NodeKind::Latency { .. }
            | NodeKind::Inhibit { .. }
            | NodeKind::Wta { .. }
            | NodeKind::Infinite { .. }
            | NodeKind::Dense { .. }
            | NodeKind::Conv2d { .. }
            | NodeKind::Pool2d { .. } => {
                let b = add(
                    &mut plan,
                    &mut lives,
                    node.name.clone(),
                    ext(shape.extent),
                    f,
                    d,
                    false,
                );
                plan.node_out.insert(h, b);
            }
            NodeKind::Flatten { .. } => {}
            NodeKind::Population { eqs: Some(eqs), .. } => {
                let outs = pop_outputs(m, h);
                if outs.spikes {
                    let b = add(
                        &mut plan,
                        &mut lives,
                        format!("{}.spikes", node.name),
                        PExtent::Seq,
                        f,
                        d,
                        false,
                    );
                    plan.node_out.insert(h, b);
                }
                for &s in &outs.traces {
                    let b = add(
                        &mut plan,
                        &mut lives,
                        format!("{}.{}", node.name, eqs.states[s].name),
                        PExtent::Seq,
                        f,
                        d,
                        false,
                    );
                    plan.traces.insert((h, s), b);
                    if !outs.spikes && s == 0 {
                        plan.node_out.insert(h, b);
                    }
                }
                if outs.counts {
                    let b = add(
                        &mut plan,
                        &mut lives,
                        format!("{}.counts", node.name),
                        PExtent::Single,
                        f,
                        d,
                        false,
                    );
                    plan.counts.insert(h, b);
                }
                let pt = &sched.time[&h];
                if eqs.mix.is_some() {
                    let b = add(
                        &mut plan,
                        &mut lives,
                        format!("{}.mixed", node.name),
                        PExtent::Seq,
                        f,
                        d,
                        false,
                    );
                    plan.mixed.insert(h, b);
                }
                let recurrent = pt.linear.as_ref().is_some_and(|l| l.recurrent());
                if pt.form == TimeForm::Parallel && recurrent {
                    for (i, st) in eqs.states.iter().enumerate() {
                        let mut seq = |what: &str, features: usize| {
                            add(
                                &mut plan,
                                &mut lives,
                                format!("{}.{what}.{}", node.name, st.name),
                                PExtent::Seq,
                                features,
                                d,
                                false,
                            )
                        };
                        let r = seq("impulse", 1);
                        let z = seq("free", 1);
                        let l = seq("lin", f);
                        plan.resp.insert((h, i), (r, z));
                        plan.lin.insert((h, i), l);
                    }
                }
                let g = &fusion.groups[fusion.group_of[&h]];
                if g.stepwise {
                    for (i, st) in eqs.states.iter().enumerate() {
                        let b = add(
                            &mut plan,
                            &mut lives,
                            format!("{}.state.{}", node.name, st.name),
                            PExtent::Single,
                            f,
                            d,
                            false,
                        );
                        plan.states.insert((h, i), b);
                    }
                }
                if g.mode == FuseMode::Unfused {
                    for l in spilled_locals(eqs) {
                        let lname = eqs.locals.get(l).map(String::as_str).unwrap_or("I");
                        let b = add(
                            &mut plan,
                            &mut lives,
                            format!("{}.spill.{lname}", node.name),
                            PExtent::Single,
                            f,
                            d,
                            false,
                        );
                        plan.spills.insert((h, l), b);
                    }
                }
            }
            NodeKind::Population { eqs: None, .. } => unreachable!("neurons pass has run"),
        }
    }
    // Flatten is a view of its source (possibly of another flatten).
    loop {
        let mut changed = false;
        for (h, node) in m.nodes.iter() {
            if let NodeKind::Flatten { src } = node.kind {
                if !plan.node_out.contains_key(&h) {
                    if let Some(&b) = plan.node_out.get(&src) {
                        plan.node_out.insert(h, b);
                        changed = true;
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
    // Uses extend lifetimes: a node reads its sources at the stage it runs.
    for (h, node) in m.nodes.iter() {
        let d = def_stage(h);
        for (s, _) in node.kind.sources() {
            if let Some(&b) = plan.node_out.get(&s) {
                lives[b].last = lives[b].last.max(d);
                lives[b].first = lives[b].first.min(d);
            }
        }
    }
    // Training: the backward of the node at stage `s` runs at `2 * end - s`, after every
    // forward stage; what it reads lives until then.
    let mut end = end;
    if let Some(bw) = &m.backward {
        let recompute = m.train.as_ref().is_some_and(|c| c.recompute);
        let bwd = |s: usize| 2 * end - s;
        let touch = |lives: &mut Vec<Life>, b: usize, at: usize| {
            lives[b].first = lives[b].first.min(at);
            lives[b].last = lives[b].last.max(at);
        };
        // Gradient buffers: one per node that needs a gradient (flatten shares).
        for &h in &bw.order {
            if matches!(m.nodes[h].kind, NodeKind::Flatten { .. }) {
                continue;
            }
            let shape = m.shape(h);
            let b = add(
                &mut plan,
                &mut lives,
                format!("grad.{}", m.nodes[h].name),
                ext(shape.extent),
                shape.features(),
                bwd(def_stage(h)),
                false,
            );
            plan.grads.insert(h, b);
        }
        // `input_grads`: read by the host after the backward pass, so never shared.
        for &h in &bw.inputs {
            let shape = m.shape(h);
            let b = add(
                &mut plan,
                &mut lives,
                format!("grad.{}", m.nodes[h].name),
                ext(shape.extent),
                shape.features(),
                end,
                true,
            );
            plan.grads.insert(h, b);
        }
        loop {
            let mut changed = false;
            for &h in &bw.order {
                if let NodeKind::Flatten { src } = m.nodes[h].kind {
                    if !plan.grads.contains_key(&h) {
                        if let Some(&g) = plan.grads.get(&src) {
                            plan.grads.insert(h, g);
                            changed = true;
                        }
                    }
                }
            }
            if !changed {
                break;
            }
        }
        // Loss and regulariser gradients, written by the host before the backward ops.
        for &oi in std::iter::once(&bw.loss_output).chain(&bw.reg_outputs) {
            let o = &m.outputs[oi];
            let extent = if o.kind == OutputKind::Counts {
                PExtent::Static
            } else {
                PExtent::Seq
            };
            let b = add(
                &mut plan,
                &mut lives,
                format!("grad.{}", o.name),
                extent,
                m.shape(o.node).features(),
                end,
                false,
            );
            touch(&mut lives, b, bwd(def_stage(o.node)));
            plan.loss_grads.push(b);
        }
        for &h in bw.pops.keys() {
            let NodeKind::Population {
                inputs,
                eqs: Some(eqs),
                ..
            } = &m.nodes[h].kind
            else {
                unreachable!("differentiated nodes are populations")
            };
            let at = bwd(def_stage(h));
            // In a recurrent stage: the step kernel saves its states (never recomputed: that
            // would need the whole cycle again) and the reverse step loop carries each
            // state's adjoint in a `[B, N]` buffer.
            let cyclic = stage_of
                .get(&h)
                .is_some_and(|&s| matches!(sched.stages[s].kind, StageKind::Steps(_)));
            // Saved by the forward kernel, or (recompute) written just before the backward
            // kernel reads them.
            let saved_from = if recompute && !cyclic {
                at
            } else {
                def_stage(h)
            };
            if cyclic {
                for (i, st) in eqs.states.iter().enumerate() {
                    let b = add(
                        &mut plan,
                        &mut lives,
                        format!("{}.adj.{}", m.nodes[h].name, st.name),
                        PExtent::Single,
                        m.shape(h).features(),
                        at,
                        false,
                    );
                    plan.adjs.insert((h, i), b);
                }
            }
            // A save buffer for each state the backward kernel reads.
            let saves = bw.pops[&h].saves();
            for (i, st) in eqs.states.iter().enumerate() {
                if !saves[i] {
                    continue;
                }
                let b = add(
                    &mut plan,
                    &mut lives,
                    format!("{}.save.{}", m.nodes[h].name, st.name),
                    PExtent::Seq,
                    m.shape(h).features(),
                    saved_from,
                    false,
                );
                touch(&mut lives, b, at);
                plan.saves.insert((h, i), b);
            }
            // The kernel recomputes the current from its inputs, reads its own value's
            // gradient and writes its inputs' gradients.
            for i in inputs {
                touch(&mut lives, plan.node_out[i], at);
                if let Some(&g) = plan.grads.get(i) {
                    touch(&mut lives, g, at);
                }
            }
            if let Some(&g) = plan.grads.get(&h) {
                touch(&mut lives, g, at);
            }
            // A mix or the parallel schedule: the kernel reads the mixed current and the
            // `lin` values and writes their gradients, which the transposed time products
            // (reading the impulse responses) carry back to the inputs and weights.
            let name = &m.nodes[h].name;
            let f = m.shape(h).features();
            if let Some(&b) = plan.mixed.get(&h) {
                touch(&mut lives, b, at);
                let g = add(
                    &mut plan,
                    &mut lives,
                    format!("grad.{name}.mixed"),
                    PExtent::Seq,
                    f,
                    at,
                    false,
                );
                plan.grad_mixed.insert(h, g);
            }
            for (i, st) in eqs.states.iter().enumerate() {
                let Some(&l) = plan.lin.get(&(h, i)) else {
                    continue;
                };
                touch(&mut lives, l, at);
                touch(&mut lives, plan.resp[&(h, i)].0, at);
                let g = add(
                    &mut plan,
                    &mut lives,
                    format!("grad.{name}.lin.{}", st.name),
                    PExtent::Seq,
                    f,
                    at,
                    false,
                );
                plan.grad_lin.insert((h, i), g);
            }
        }
        // Layers read their input (dense, conv: for the weight gradient; max pooling: to
        // find each window's maximum again) and their output's gradient, and write their
        // input's gradient.
        for &h in &bw.order {
            if let NodeKind::Dense { src, .. }
            | NodeKind::Conv2d { src, .. }
            | NodeKind::Pool2d { src, .. } = m.nodes[h].kind
            {
                let at = bwd(def_stage(h));
                touch(&mut lives, plan.node_out[&src], at);
                touch(&mut lives, plan.grads[&h], at);
                if let Some(&g) = plan.grads.get(&src) {
                    touch(&mut lives, g, at);
                }
            }
        }
        end = 2 * end + 1;
    }
    // Model outputs live to the end and keep their own slots.
    for o in &m.outputs {
        let b = match o.kind {
            OutputKind::Spikes => plan.node_out[&o.node],
            OutputKind::Counts => plan.counts[&o.node],
            OutputKind::Trace => {
                plan.traces[&(
                    o.node,
                    o.state.as_ref().and_then(|s| s.1).expect("trace state"),
                )]
            }
        };
        lives[b].pinned = true;
    }
    // Plastic projections read their pre and post spikes, gate and reward after the
    // forward pass (`Session::learn`): those keep their slots to the end.
    for p in &m.plastic {
        let src = m.nodes[p.projection].kind.sources()[0].0;
        for h in [Some(src), p.post, p.gate, p.reward].into_iter().flatten() {
            if let Some(&b) = plan.node_out.get(&h) {
                lives[b].pinned = true;
            }
        }
    }
    // Greedy slot assignment in order of first use.
    let mut order: Vec<usize> = (0..plan.buffers.len()).collect();
    order.sort_by_key(|&b| (lives[b].first, b));
    let mut slots: Vec<(usize, bool, PExtent, usize)> = Vec::new(); // (free after, shareable, extent, features)
    for b in order {
        let (first, last, pinned) = (lives[b].first, lives[b].last, lives[b].pinned);
        let (last, pinned) = if pinned { (end, true) } else { (last, false) };
        let want = (
            plan.buffers[b].extent == PExtent::Seq,
            plan.buffers[b].features,
        );
        let pick = (opts.reuse_memory && !pinned)
            .then(|| {
                slots
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.1 && s.0 < first && (s.2 == PExtent::Seq) == want.0)
                    .min_by_key(|(_, s)| s.3.abs_diff(want.1))
                    .map(|(i, _)| i)
            })
            .flatten();
        let slot = match pick {
            Some(i) => {
                slots[i].0 = last;
                slots[i].3 = slots[i].3.max(want.1);
                i
            }
            None => {
                slots.push((last, !pinned, plan.buffers[b].extent, want.1));
                slots.len() - 1
            }
        };
        plan.buffers[b].slot = slot;
    }
    plan.slots = slots.len();
    m.memory = Some(plan);
    Ok(())
}

/// Lifetimes are recomputed for dumps; this keeps the dump independent of pass internals.
pub fn slot_users(plan: &MemoryPlan) -> BTreeMap<usize, Vec<String>> {
    let mut m: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for b in &plan.buffers {
        m.entry(b.slot).or_default().push(b.name.clone());
    }
    m
}

/// Features of a filter's raw convolution output (`out` its value's shape), when its
/// output step needs a buffer apart from the node's value: DoG and LoG combine channels,
/// a threshold zeroes values; a plain Gabor bank convolves straight into its value.
pub fn filter_raw_features(
    bank: &crate::ir::filter::FilterBank,
    threshold: Option<f32>,
    out: &Shape,
) -> Option<usize> {
    use snn_runtime::plan::FilterStep;
    let step = bank.step();
    if step == FilterStep::Plain && threshold.is_none() {
        return None;
    }
    let n = bank.len();
    Some(out.features() / step.out_channels(n) * step.raw_channels(n))
}
