//! Pass `fuse`: group each population's charge, fire and reset into one kernel (the T loop
//! inside for layer stages, so state stays in registers), or, unfused, into three kernels per
//! step with the state in memory between them (a reference plan for tests). Populations
//! with the same code, shape and outputs and no dependency between them share one launch (GeNN's merged
//! groups): one parallel region over all of them.

use std::collections::BTreeMap;

use crate::diag::DResult;
use crate::ir::net::*;
use crate::ir::sched::{FuseMode, Fusion, KernelGroup, StageKind};

use super::{pop_outputs, Options};

pub fn run(m: &mut Module, opts: &Options) -> DResult<()> {
    let sched = m.schedule.as_ref().expect("schedule pass has run");
    let mut groups: Vec<KernelGroup> = Vec::new();
    let mut group_of = BTreeMap::new();
    // Merge candidates: (code key, stage depth band) -> group index. Members come from
    // consecutive layer stages with
    // no dependency between them (stages are depth-ordered by `schedule`); it launches at
    // its last member's stage.
    let mut open: BTreeMap<String, usize> = BTreeMap::new();
    let mut band_nodes: Vec<NodeId> = Vec::new();
    for (si, stage) in sched.stages.iter().enumerate() {
        let (nodes, stepwise) = match &stage.kind {
            StageKind::Layer(n) | StageKind::Parallel(n) => (vec![*n], false),
            StageKind::Steps(ns) => (ns.clone(), true),
        };
        for n in nodes {
            let key = match &m.nodes[n].kind {
                NodeKind::Population {
                    eqs: Some(eqs),
                    inputs,
                    ..
                } => {
                    let outs = pop_outputs(m, n);
                    let layouts: Vec<String> = inputs
                        .iter()
                        .map(|i| format!("{:?}", m.shape(*i).extent))
                        .collect();
                    format!(
                        "{}|{}|{:?}|{}",
                        eqs.code_key(),
                        layouts.join(","),
                        outs,
                        m.shape(n).features()
                    )
                }
                NodeKind::Encode { encoding, src } => {
                    let kind = match encoding {
                        Encoding::Poisson { .. } => "poisson",
                        Encoding::Bernoulli { .. } => "bernoulli",
                    };
                    format!(
                        "{kind}|{:?}|{}",
                        m.shape(*src).extent,
                        m.shape(n).features()
                    )
                }
                _ => {
                    // A non-kernel node ends the band if it reads a band member.
                    if reads_any(m, n, &band_nodes) {
                        open.clear();
                        band_nodes.clear();
                    }
                    continue;
                }
            };
            // A parallel population's kernel is elementwise: always one fused kernel. A
            // mixed population on the sequential schedule runs in a step loop (one row of
            // its mix per step).
            let parallel = sched
                .time
                .get(&n)
                .is_some_and(|p| p.form == TimeForm::Parallel);
            let mixed_steps = !parallel
                && matches!(&m.nodes[n].kind, NodeKind::Population { eqs: Some(e), .. } if e.mix.is_some());
            let mode =
                if opts.fuse || parallel || matches!(m.nodes[n].kind, NodeKind::Encode { .. }) {
                    FuseMode::Fused
                } else {
                    FuseMode::Unfused
                };
            if reads_any(m, n, &band_nodes) {
                open.clear();
                band_nodes.clear();
            }
            // Training plans keep one launch per population: each has its own backward.
            let mergeable = opts.merge
                && !opts.train
                && !stepwise
                && !parallel
                && !mixed_steps
                && mode == FuseMode::Fused;
            if let Some(&g) = open.get(&key).filter(|_| mergeable) {
                groups[g].members.push(n);
                // Launch after the last member's inputs exist; nothing in between reads
                // a member (that would have closed the band).
                groups[g].stage = si;
                group_of.insert(n, g);
            } else {
                groups.push(KernelGroup {
                    members: vec![n],
                    mode,
                    stage: si,
                    stepwise: stepwise || mixed_steps || mode == FuseMode::Unfused,
                });
                group_of.insert(n, groups.len() - 1);
                if mergeable {
                    open.insert(key, groups.len() - 1);
                }
            }
            band_nodes.push(n);
        }
    }
    m.fusion = Some(Fusion { groups, group_of });
    Ok(())
}

/// Whether `n` depends (transitively, through non-kernel nodes) on any of `set`.
fn reads_any(m: &Module, n: NodeId, set: &[NodeId]) -> bool {
    if set.is_empty() {
        return false;
    }
    let mut todo: Vec<NodeId> = m.nodes[n]
        .kind
        .sources()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    while let Some(s) = todo.pop() {
        if !seen.insert(s) {
            continue;
        }
        if set.contains(&s) {
            return true;
        }
        todo.extend(m.nodes[s].kind.sources().into_iter().map(|(x, _)| x));
    }
    false
}
