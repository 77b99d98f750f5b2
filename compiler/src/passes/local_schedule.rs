//! The `local = [layer(..), ..]` setting of a `train { }` block: a greedy, layer-wise
//! schedule of local learning (docs/training.md, "Local learning"). [`parse`] reads it with
//! the block's other settings; [`check`] holds it against the model once the plastic
//! projections are wired (`passes::synapses`), so that every mistake is reported at the
//! stage that makes it.

use super::bind::{self, Signature};
use crate::diag::{did_you_mean, DResult, Diagnostic, ErrorKind, Span};
use crate::front::ast::{Expr, ExprKind};
use crate::ir::net::{Module, NodeKind};
use crate::ir::train::{DecisionSpec, LocalStage};
use snn_runtime::train::local::RateGrowth;

const HINT: &str = "e.g. `local = [layer(c1, epochs = 2, grow = 2.0, every = 500, cap = 0.15), \
    layer(c2, epochs = 20), layer(c3, epochs = 20, decision = g3, classes = 10, chunk = 1024)]`";

/// Spyker's `Conv` default, `N(0.5, 0.02)`: every plastic layer starts there unless its
/// stage says `init = normal(..)` (C_l starts near its maximum, 0.25).
pub const DEFAULT_INIT: (f64, f64) = (0.5, 0.02);

const ARGS: &[&str] = &[
    "layer", "epochs", "grow", "every", "cap", "decision", "classes", "chunk", "init",
];

fn err(span: Span, msg: impl Into<String>, hint: impl Into<String>) -> Diagnostic {
    Diagnostic::new(ErrorKind::BadValue, msg)
        .at(span, "invalid local-learning stage")
        .hint(hint)
}

/// A positive number, in f64 as written.
fn positive(e: &Expr, name: &str) -> DResult<f64> {
    e.as_number()
        .filter(|v| v.is_finite() && *v > 0.0)
        .ok_or_else(|| err(e.span, format!("`{name}` must be a number > 0"), HINT))
}

fn whole(e: &Expr, name: &str, min: usize) -> DResult<usize> {
    bind::read_usize(e, name, min).map_err(|m| err(e.span, m, HINT))
}

/// `local = layer(..)` or `local = [layer(..), ..]`: the stages in order.
pub fn parse(e: &Expr) -> DResult<Vec<LocalStage>> {
    let items: Vec<&Expr> = match &e.kind {
        ExprKind::List(v) => v.iter().collect(),
        _ => vec![e],
    };
    if items.is_empty() {
        return Err(err(e.span, "`local` lists no stage", HINT));
    }
    items.into_iter().map(stage).collect()
}

fn stage(e: &Expr) -> DResult<LocalStage> {
    let ExprKind::Call { func, args } = &e.kind else {
        return Err(err(
            e.span,
            "expected a stage `layer(NAME, epochs = N, ..)`",
            HINT,
        ));
    };
    if func.name != "layer" {
        return Err(err(
            func.span,
            format!("unknown stage `{}`", func.name),
            HINT,
        ));
    }
    let sig = Signature::builtin("layer", ARGS);
    let a = bind::call(&sig, args, e.span)?;
    let layer = a.required("layer", "the plastic projection it trains")?;
    let Some(name) = layer.as_ident() else {
        return Err(err(layer.span, "`layer` names a plastic projection", HINT));
    };
    let epochs = match a.get("epochs") {
        Some(v) => whole(v, "epochs", 1)?,
        None => 1,
    };
    let growth = match (a.get("grow"), a.get("every"), a.get("cap")) {
        (None, None, None) => None,
        (Some(g), Some(every), cap) => Some(RateGrowth {
            factor: positive(g, "grow")?,
            every: whole(every, "every", 1)?,
            cap: match cap {
                Some(c) => positive(c, "cap")?,
                None => f64::INFINITY,
            },
        }),
        (g, every, cap) => {
            let at = g.or(every).or(cap).expect("one is given").span;
            return Err(err(
                at,
                "the learning-rate growth needs `grow` (the factor) and `every` (images)",
                "e.g. `layer(c1, grow = 2.0, every = 500, cap = 0.15)`: after every 500 images \
                 a_plus and a_minus double, a_plus up to 0.15",
            ));
        }
    };
    let decision = match a.get("decision") {
        None => {
            if let Some(x) = a.get("classes").or(a.get("chunk")) {
                return Err(err(
                    x.span,
                    "`classes` and `chunk` belong to an R-STDP stage",
                    "add `decision = G`, the gate `wta(infinite(..), k = 1)` that decides",
                ));
            }
            None
        }
        Some(d) => {
            let Some(gate) = d.as_ident() else {
                return Err(err(d.span, "`decision` names a gate node", HINT));
            };
            Some(DecisionSpec {
                gate: gate.to_string(),
                gate_span: d.span,
                classes: match a.get("classes") {
                    Some(c) => whole(c, "classes", 1)?,
                    None => 10,
                },
                chunk: match a.get("chunk") {
                    Some(c) => whole(c, "chunk", 1)?,
                    None => 1024,
                },
            })
        }
    };
    if let (Some(_), Some(d)) = (&growth, &decision) {
        return Err(err(
            d.gate_span,
            "an R-STDP stage adapts its rates to its decisions; it has no `grow`",
            "drop `grow`, `every` and `cap` from this stage",
        ));
    }
    let init = match a.get("init") {
        None => DEFAULT_INIT,
        Some(i) => normal(i)?,
    };
    Ok(LocalStage {
        layer: name.to_string(),
        layer_span: layer.span,
        epochs,
        growth,
        decision,
        init,
        span: e.span,
    })
}

/// `normal(mean, std)`.
fn normal(e: &Expr) -> DResult<(f64, f64)> {
    const H: &str = "e.g. `init = normal(0.8, 0.05)` (Spyker's examples)";
    let ExprKind::Call { func, args } = &e.kind else {
        return Err(err(e.span, "expected `normal(mean, std)`", H));
    };
    if func.name != "normal" {
        return Err(err(
            e.span,
            format!("unknown initialiser `{}`", func.name),
            H,
        ));
    }
    let sig = Signature::builtin("normal", &["mean", "std"]);
    let a = bind::call(&sig, args, e.span)?;
    let mean = a.required("mean", "the mean")?;
    let mean = mean
        .as_number()
        .filter(|v| v.is_finite())
        .ok_or_else(|| err(mean.span, "`mean` must be a number", H))?;
    let std = match a.get("std") {
        Some(s) => s
            .as_number()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| err(s.span, "`std` must be a number >= 0", H))?,
        None => 0.0,
    };
    Ok((mean, std))
}

/// The parameters a rule needs for a stage's schedule.
fn rule_needs(m: &Module, p: usize, names: &[&str], why: &str, at: Span) -> DResult<()> {
    let plastic = &m.plastic[p];
    let eqs = plastic.eqs.as_ref().expect("synapses pass has run");
    for n in names {
        if !eqs.params.iter().any(|q| q.name == *n) {
            return Err(Diagnostic::new(
                ErrorKind::BadValue,
                format!(
                    "{why} sets `{n}`, but rule `{}` of `{}` has no such parameter",
                    plastic.rule, m.nodes[plastic.projection].name
                ),
            )
            .at(at, "set here")
            .note(plastic.rule_span, "the rule")
            .hint(format!("a rule with {}", names.join(", "))));
        }
    }
    Ok(())
}

/// Holds the schedule against the model: each stage names a plastic projection, once; a
/// decision is that projection's `wta` gate, over at least `classes` maps, and the
/// projection takes a `reward` input; a projection with a `reward` input learns with a
/// decision; growth needs `a_plus` / `a_minus`, R-STDP the reward and punish rates.
pub fn check(m: &Module) -> DResult<()> {
    let Some(cfg) = &m.train else { return Ok(()) };
    for (i, st) in cfg.local.iter().enumerate() {
        let plastic_names = || {
            m.plastic
                .iter()
                .map(|p| m.nodes[p.projection].name.as_str())
        };
        let Some(h) = m.node_by_name(&st.layer) else {
            let d = Diagnostic::new(
                ErrorKind::UnknownName,
                format!("unknown layer `{}` in `local`", st.layer),
            )
            .at(st.layer_span, "no such projection");
            return Err(match did_you_mean(&st.layer, plastic_names()) {
                Some(s) => d.hint(format!("did you mean `{s}`?")),
                None => d.hint(format!(
                    "plastic projections: {}",
                    plastic_names().collect::<Vec<_>>().join(", ")
                )),
            });
        };
        let Some(p) = m.plastic.iter().position(|p| p.projection == h) else {
            return Err(Diagnostic::new(
                ErrorKind::BadValue,
                format!(
                    "`{}` has no `synapse = ...`: it has no rule to learn by",
                    st.layer
                ),
            )
            .at(st.layer_span, "not a plastic projection")
            .note(m.nodes[h].span, "defined here")
            .hint("give it a rule, e.g. `conv2d(x, 4, kernel = 5, synapse = spyker_stdp())`"));
        };
        if let Some(first) = cfg.local[..i].iter().find(|f| f.layer == st.layer) {
            return Err(Diagnostic::new(
                ErrorKind::Duplicate,
                format!("layer `{}` has two stages", st.layer),
            )
            .at(st.layer_span, "second stage")
            .note(first.layer_span, "first stage")
            .hint("give it one stage with all its epochs"));
        }
        let plastic = &m.plastic[p];
        if st.growth.is_some() {
            rule_needs(m, p, &["a_plus", "a_minus"], "`grow`", st.span)?;
        }
        match &st.decision {
            None => {
                if let Some(r) = plastic.reward {
                    return Err(Diagnostic::new(
                        ErrorKind::BadValue,
                        format!(
                            "`{}` is rewarded (`reward = {}`): its stage needs the decision \
                             that rewards it",
                            st.layer, m.nodes[r].name
                        ),
                    )
                    .at(st.span, "no `decision = ...`")
                    .hint(format!(
                        "e.g. `layer({}, epochs = 20, decision = G, classes = 10)` with G its \
                         gate `wta(infinite(..), k = 1)`",
                        st.layer
                    )));
                }
            }
            Some(d) => {
                let not_gate = |msg: String| {
                    Diagnostic::new(ErrorKind::BadValue, msg)
                        .at(d.gate_span, "not the decision gate")
                        .note(plastic.span, "the projection's rule")
                        .hint(format!(
                            "give `{}` `gate = G` with `G = wta(infinite(..), k = 1)`, and name \
                             G here",
                            st.layer
                        ))
                };
                let Some(g) = m.node_by_name(&d.gate) else {
                    return Err(not_gate(format!("unknown node `{}`", d.gate)));
                };
                let NodeKind::Wta { k, .. } = m.nodes[g].kind else {
                    return Err(not_gate(format!("`{}` is not a `wta(..)` gate", d.gate)));
                };
                if plastic.gate != Some(g) {
                    return Err(not_gate(format!(
                        "`{}` is not the gate of `{}`",
                        d.gate, st.layer
                    )));
                }
                if k != 1 {
                    return Err(not_gate(format!(
                        "a decision has one winner; `{}` has k = {k}",
                        d.gate
                    )));
                }
                let maps = m.nodes[g]
                    .shape
                    .as_ref()
                    .and_then(|s| s.dims.first().copied())
                    .unwrap_or(0);
                if maps < d.classes {
                    return Err(err(
                        d.gate_span,
                        format!("`{}` has {maps} maps for {} classes", d.gate, d.classes),
                        "give the decision layer at least one map per class (label = map / \
                         (maps / classes))",
                    ));
                }
                let Some(r) = plastic.reward else {
                    return Err(Diagnostic::new(
                        ErrorKind::BadValue,
                        format!("`{}` takes no reward for its decision to set", st.layer),
                    )
                    .at(plastic.span, "no `reward = r`")
                    .hint(
                        "declare `input r: [1]` and pass `reward = r` to the projection; the \
                         trainer fills it",
                    ));
                };
                if !matches!(m.nodes[r].kind, NodeKind::Input { .. }) {
                    return Err(Diagnostic::new(
                        ErrorKind::BadValue,
                        format!(
                            "the reward of `{}` must be a model input for the trainer to fill",
                            st.layer
                        ),
                    )
                    .at(m.nodes[r].span, "not an input")
                    .hint("declare `input r: [1]` and pass `reward = r`"));
                }
                rule_needs(
                    m,
                    p,
                    &["reward_plus", "reward_minus", "punish_plus", "punish_minus"],
                    "R-STDP's adaptive rates",
                    st.span,
                )?;
            }
        }
    }
    Ok(())
}
