//! The memory a compiled model needs, per layer, against the budget: the runtime's
//! [`Footprint`] (computed from the plan, so it is what a session allocates) with each weight
//! and buffer traced back to the layer that owns it, so that a model over the budget is an
//! error at the layer that needs the most, before anything is allocated.

use std::collections::HashMap;

use snn_runtime::budget::{fmt_bytes, Budget};
use snn_runtime::exec::Footprint;

use crate::diag::{DResult, Diagnostic, ErrorKind};
use crate::ir::net::{Module, NodeId, NodeKind};

/// The layer a plan weight or buffer belongs to: plan names are the layer's name, then
/// `.role` (`h.weight`, `s1.spikes`, `s1.state.v`), or `grad.` before it in a backward
/// plan. Layer names may hold dots themselves (`h.bernoulli`): the longest one wins.
/// `layers` maps each node's name to the node ([`layer_names`]).
pub fn layer_of(layers: &HashMap<&str, NodeId>, part: &str) -> Option<NodeId> {
    let name = part.strip_prefix("grad.").unwrap_or(part);
    let cuts = name.match_indices('.').map(|(i, _)| i).rev();
    std::iter::once(name.len())
        .chain(cuts)
        .find_map(|end| layers.get(&name[..end]).copied())
}

/// Each node's name and the node, looked up once per plan part (a scan of the nodes per
/// part made the estimate of a net of n layers quadratic).
pub fn layer_names(m: &Module) -> HashMap<&str, NodeId> {
    m.nodes.iter().map(|(h, n)| (n.name.as_str(), h)).collect()
}

/// Bytes per layer, largest first; parts no layer owns are left out.
pub fn by_layer(m: &Module, fp: &Footprint) -> Vec<(NodeId, u64)> {
    let layers = layer_names(m);
    let mut sums: HashMap<NodeId, u64> = HashMap::new();
    for p in &fp.parts {
        if let Some(h) = layer_of(&layers, &p.name) {
            let b = sums.entry(h).or_insert(0);
            *b = b.saturating_add(p.bytes);
        }
    }
    let mut sums: Vec<(NodeId, u64)> = sums.into_iter().collect();
    // Largest first; equal sizes in node order, so the named layer does not depend on hashing.
    sums.sort_by_key(|&(h, b)| (std::cmp::Reverse(b), h.index()));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_part_belongs_to_the_longest_layer_name_it_starts_with() {
        let mut c = crate::Compiler::new(crate::Options::default());
        let src = "model m {\n  T = 2\n  input x: [3]\n  h = dense(bernoulli(x), 2)\n  \
                   s = LIF(h)\n  output counts(s)\n}\n";
        let parsed = c.parse_str("m.snn", src).unwrap();
        let m = c.module_until(&parsed, "memory").unwrap();
        let layers = layer_names(&m);
        let name = |h: Option<NodeId>| h.map(|h| m.nodes[h].name.clone());
        assert_eq!(name(layer_of(&layers, "h.weight")).as_deref(), Some("h"));
        assert_eq!(
            name(layer_of(&layers, "grad.s.state.v")).as_deref(),
            Some("s")
        );
        assert_eq!(name(layer_of(&layers, "s")).as_deref(), Some("s"));
        let enc = m
            .nodes
            .iter()
            .find(|(_, n)| n.name.contains('.'))
            .unwrap()
            .1;
        let part = format!("{}.spikes", enc.name);
        assert_eq!(name(layer_of(&layers, &part)), Some(enc.name.clone()));
        assert_eq!(layer_of(&layers, "nothing.weight"), None);
    }
}
