//! The memory a compiled model needs, per layer, against the budget: the runtime's
//! [`Footprint`] (computed from the plan, so it is what a session allocates) with each weight
//! and buffer traced back to the layer that owns it, so that a model over the budget is an
//! error at the layer that needs the most, before anything is allocated.

use snn_runtime::budget::{fmt_bytes, Budget};
use snn_runtime::exec::Footprint;

use crate::diag::{DResult, Diagnostic, ErrorKind};
use crate::ir::net::{Module, NodeId, NodeKind};

/// The layer a plan weight or buffer belongs to: plan names are the layer's name, then
/// `.role` (`h.weight`, `s1.spikes`, `s1.state.v`), or `grad.` before it in a backward
/// plan. Layer names may hold dots themselves (`h.bernoulli`): the longest one wins.
pub fn layer_of(m: &Module, part: &str) -> Option<NodeId> {
    let name = part.strip_prefix("grad.").unwrap_or(part);
    m.nodes
        .iter()
        .filter(|(_, n)| {
            name == n.name || (name.starts_with(&n.name) && name[n.name.len()..].starts_with('.'))
        })
        .max_by_key(|(_, n)| n.name.len())
        .map(|(h, _)| h)
}

/// Bytes per layer, largest first; parts no layer owns are left out.
pub fn by_layer(m: &Module, fp: &Footprint) -> Vec<(NodeId, u64)> {
    let mut sums: Vec<(NodeId, u64)> = Vec::new();
    for p in &fp.parts {
        let Some(h) = layer_of(m, &p.name) else {
            continue;
        };
        match sums.iter_mut().find(|(n, _)| *n == h) {
            Some((_, b)) => *b = b.saturating_add(p.bytes),
            None => sums.push((h, p.bytes)),
        }
    }
    sums.sort_by_key(|s| std::cmp::Reverse(s.1));
    sums
}

/// `dense, 10000000000 outputs`, `conv2d, 64 channels`, `input [1, 28, 28]`, `LIF [500]`.
pub fn describe_layer(m: &Module, h: NodeId) -> String {
    let node = &m.nodes[h];
    let dims = node
        .shape
        .as_ref()
        .map(|s| {
            let d: Vec<String> = s.dims.iter().map(|x| x.to_string()).collect();
            format!("[{}]", d.join(", "))
        })
        .unwrap_or_default();
    match &node.kind {
        NodeKind::Dense { out, .. } => format!("dense, {out} outputs"),
        NodeKind::Conv2d { out_channels, .. } => {
            format!("conv2d, {out_channels} channels, {dims} per sample")
        }
        NodeKind::Population { model, .. } => format!("{model} {dims}"),
        k => format!("{} {dims}", k.op_name()),
    }
}

/// The hint of a budget error for `snnc run` ([`check`] takes another for other callers).
pub const RUN_HINT: &str =
    "lower --batch or --steps, shrink the layer, or raise --max-memory (e.g. --max-memory 64G)";

/// `Err` located at the layer that needs the most when `fp` is over `budget`; `hint` says
/// what the caller can change (e.g. [`RUN_HINT`]).
pub fn check(m: &Module, fp: &Footprint, budget: &Budget, hint: &str) -> DResult<()> {
    if fp.total <= budget.bytes {
        return Ok(());
    }
    let mut d = Diagnostic::new(
        ErrorKind::Memory,
        format!("{} (budget {budget})", fp.describe()),
    )
    .hint(hint);
    if let Some(&(h, bytes)) = by_layer(m, fp).first() {
        d = d.at(
            m.nodes[h].span,
            format!(
                "layer `{}` ({}) needs {}",
                m.nodes[h].name,
                describe_layer(m, h),
                fmt_bytes(bytes)
            ),
        );
    }
    Err(d)
}

/// One line for `snnc check`: `1.2 MB for T=25, batch=16 (largest: layer `h1`, 800.0 kB)`.
pub fn summary(m: &Module, fp: &Footprint) -> String {
    let mut s = fmt_bytes(fp.total);
    if let Some((t, b)) = fp.sizes {
        s.push_str(&format!(" for T={t}, batch={b}"));
    }
    if let Some(&(h, bytes)) = by_layer(m, fp).first() {
        s.push_str(&format!(
            " (largest: layer `{}`, {})",
            m.nodes[h].name,
            fmt_bytes(bytes)
        ));
    }
    s
}
