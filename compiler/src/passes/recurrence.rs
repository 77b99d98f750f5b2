//! Pass `recurrence`: strongly connected components over time (Tarjan). A component with
//! more than one node, or a node reading itself, is a recurrent cycle; it must run step by
//! step, and every cycle must contain a delay of at least one step (otherwise a value would
//! depend on itself within one step).

use crate::diag::{DResult, Diagnostic, ErrorKind};
use crate::ir::net::*;
use crate::ir::sched::Recurrence;

pub fn run(m: &mut Module) -> DResult<()> {
    let n = m.nodes.len();
    let deps: Vec<Vec<(usize, usize)>> = m
        .nodes
        .iter()
        .map(|(_, node)| {
            node.kind
                .sources()
                .into_iter()
                .map(|(h, d)| (h.index(), d))
                .collect()
        })
        .collect();
    let comps = tarjan(n, &deps);
    let mut components = Vec::new();
    for comp in comps {
        // Order inside one step: a topological sort over the zero-delay edges.
        let inside = |x: usize| comp.contains(&x);
        let mut order = Vec::new();
        let mut mark = vec![0u8; n];
        for &v in &comp {
            if let Err(cycle) = visit(v, &deps, &inside, &mut mark, &mut order, &mut Vec::new()) {
                let names: Vec<String> = cycle
                    .iter()
                    .map(|&i| m.nodes[NodeId::from_index(i)].name.clone())
                    .collect();
                let at = NodeId::from_index(cycle[0]);
                return Err(Diagnostic::new(
                    ErrorKind::Cycle,
                    format!("zero-delay cycle: {} -> {}", names.join(" -> "), names[0]),
                )
                .at(m.nodes[at].span, "depends on itself within one time step")
                .hint("a recurrent projection needs `delay = 1` (or more), e.g. `dense(s, 100, delay = 1)`"));
            }
        }
        components.push(order.into_iter().map(NodeId::from_index).collect());
    }
    m.recurrence = Some(Recurrence { components });
    Ok(())
}

fn visit(
    v: usize,
    deps: &[Vec<(usize, usize)>],
    inside: &impl Fn(usize) -> bool,
    mark: &mut [u8],
    order: &mut Vec<usize>,
    path: &mut Vec<usize>,
) -> Result<(), Vec<usize>> {
    match mark[v] {
        2 => return Ok(()),
        1 => {
            let start = path.iter().position(|&x| x == v).unwrap_or(0);
            return Err(path[start..].to_vec());
        }
        _ => {}
    }
    mark[v] = 1;
    path.push(v);
    for &(d, delay) in &deps[v] {
        if delay == 0 && inside(d) {
            visit(d, deps, inside, mark, order, path)?;
        }
    }
    path.pop();
    mark[v] = 2;
    order.push(v);
    Ok(())
}

/// Tarjan's algorithm over "reads" edges. Components come out dependencies first, which
/// is execution order.
fn tarjan(n: usize, deps: &[Vec<(usize, usize)>]) -> Vec<Vec<usize>> {
    struct T<'a> {
        deps: &'a [Vec<(usize, usize)>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        out: Vec<Vec<usize>>,
    }
    impl T<'_> {
        fn strong(&mut self, v: usize) {
            self.index[v] = Some(self.next);
            self.low[v] = self.next;
            self.next += 1;
            self.stack.push(v);
            self.on_stack[v] = true;
            for &(w, _) in &self.deps[v] {
                match self.index[w] {
                    None => {
                        self.strong(w);
                        self.low[v] = self.low[v].min(self.low[w]);
                    }
                    Some(iw) if self.on_stack[w] => self.low[v] = self.low[v].min(iw),
                    _ => {}
                }
            }
            if Some(self.low[v]) == self.index[v] {
                let mut comp = Vec::new();
                loop {
                    let w = self.stack.pop().expect("tarjan stack");
                    self.on_stack[w] = false;
                    comp.push(w);
                    if w == v {
                        break;
                    }
                }
                comp.sort_unstable();
                self.out.push(comp);
            }
        }
    }
    let mut t = T {
        deps,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: vec![],
        next: 0,
        out: vec![],
    };
    for v in 0..n {
        if t.index[v].is_none() {
            t.strong(v);
        }
    }
    t.out
}
