//! Pass `schedule`: decide, per node, how time is walked.
//!
//! Feed-forward nodes run layer by layer over all T at once (one GEMM over `[T*B, in]`, then
//! one fused neuron kernel with the T loop inside). Nodes in a recurrent cycle run step by
//! step inside one `for t` loop. Values that do not change over time (a GEMM of a static
//! image) are computed once, first. Stages are ordered by depth so that independent
//! populations of the same depth sit together and can share a launch (see `fuse`).

use crate::diag::DResult;
use crate::ir::net::*;
use crate::ir::sched::{Schedule, Stage, StageKind};

use super::{recurrence::self_loop, Options};

pub fn run(m: &mut Module, opts: &Options) -> DResult<()> {
    let rec = m
        .recurrence
        .as_ref()
        .expect("recurrence pass has run")
        .clone();
    // Depth of each component (longest path from the inputs), for a stable level order.
    let mut comp_of = vec![0usize; m.nodes.len()];
    for (ci, c) in rec.components.iter().enumerate() {
        for n in c {
            comp_of[n.index()] = ci;
        }
    }
    let mut depth = vec![0usize; rec.components.len()];
    for (ci, c) in rec.components.iter().enumerate() {
        for n in c {
            for (s, _) in m.nodes[*n].kind.sources() {
                let cs = comp_of[s.index()];
                if cs != ci {
                    depth[ci] = depth[ci].max(depth[cs] + 1);
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..rec.components.len()).collect();
    order.sort_by_key(|&ci| depth[ci]);

    let is_input = |m: &Module, n: NodeId| matches!(m.nodes[n].kind, NodeKind::Input { .. });
    let mut stages = Vec::new();
    // Static values first: they depend only on static values.
    for &ci in &order {
        for &n in &rec.components[ci] {
            if !is_input(m, n) && m.shape(n).extent == Extent::Static {
                stages.push(Stage {
                    kind: StageKind::Layer(n),
                    reason: "static: same value at every step, computed once".into(),
                });
            }
        }
    }
    let seq = |m: &Module, n: NodeId| !is_input(m, n) && m.shape(n).extent == Extent::Seq;
    if opts.force_steps {
        let all: Vec<NodeId> = order
            .iter()
            .flat_map(|&ci| rec.components[ci].iter().copied())
            .filter(|&n| seq(m, n))
            .collect();
        if !all.is_empty() {
            stages.push(Stage {
                kind: StageKind::Steps(all),
                reason: "step by step for every node (forced by options)".into(),
            });
        }
    } else {
        for &ci in &order {
            let comp: Vec<NodeId> = rec.components[ci]
                .iter()
                .copied()
                .filter(|&n| seq(m, n))
                .collect();
            if comp.is_empty() {
                continue;
            }
            if rec.is_cycle(ci, |n| self_loop(m, n)) {
                let names: Vec<&str> = comp.iter().map(|&n| m.nodes[n].name.as_str()).collect();
                stages.push(Stage {
                    kind: StageKind::Steps(comp.clone()),
                    reason: format!("recurrent cycle {{{}}}: step by step", names.join(", ")),
                });
            } else {
                let n = comp[0];
                let reason = match &m.nodes[n].kind {
                    NodeKind::Population { .. } => "feed-forward: one fused kernel, T loop inside",
                    NodeKind::Encode { .. } => "feed-forward: one kernel over all T",
                    NodeKind::Flatten { .. } => "feed-forward: a view, no work",
                    _ => "feed-forward: one op over all T*B rows",
                };
                stages.push(Stage {
                    kind: StageKind::Layer(n),
                    reason: reason.into(),
                });
            }
        }
    }
    m.schedule = Some(Schedule { stages });
    Ok(())
}
