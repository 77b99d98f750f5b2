//! Pass `schedule`: decide, per node, how time is walked.
//!
//! Feed-forward nodes run layer by layer over all T at once (one GEMM over `[T*B, in]`, then
//! one fused neuron kernel with the T loop inside). Nodes in a recurrent cycle run step by
//! step inside one `for t` loop. Values that do not change over time (a GEMM of a static
//! image) are computed once, first. Stages are ordered by depth so that independent
//! populations of the same depth sit together and can share a launch (see `fuse`).
//!
//! Each population also gets a time form ([`TimeForm`]): sequential (step after step) or
//! parallel (the whole time axis as matrix products: any `mix`, then the recurrence's impulse
//! response, then an elementwise kernel). Parallel needs a proof from the equations that the
//! step is linear in state and input with no reset ([`crate::ir::linear`]) and a population
//! outside any recurrent cycle; sequential needs a causal `mix` (a PSN's full matrix reads
//! future steps). When both are possible, a cost model of the target (the CPU back end:
//! [`CPU`]) compares the FLOPs, bytes and launches of both at the model's T and batch; a
//! user's `schedule = parallel | sequential` overrides it, and an impossible choice is an
//! error. The decision, its reason and both estimates are in the dump.

use std::collections::BTreeMap;

use crate::diag::{DResult, Diagnostic, ErrorKind, Span};
use crate::ir::eqn::{BinOp, EExpr, Func, Mix, NeuronEqs};
use crate::ir::expr::Node;
use crate::ir::linear::{self, LinearStep};
use crate::ir::net::*;
use crate::ir::sched::{Cost, PopTime, RateSource, Schedule, SparseChoice, Stage, StageKind};

pub use crate::ir::cost::{duration, si, Machine, CPU};

use super::{pop_outputs, Options};

/// The spike rate `auto` assumes without a `rate =`: the top of the usual 5-20%.
pub const DEFAULT_RATE: f32 = 0.2;

/// Whether `h`'s value is spikes (0/1): a spiking population or an encoder, through
/// `flatten` and max pooling (the maximum of 0/1 values is 0 or 1; padded cells never win).
pub fn is_spike_source(m: &Module, h: NodeId) -> bool {
    match &m.nodes[h].kind {
        NodeKind::Encode { .. } | NodeKind::Latency { .. } => true,
        NodeKind::Flatten { src } => is_spike_source(m, *src),
        NodeKind::Pool2d {
            src,
            kind: crate::ir::net::PoolKind::Max,
            ..
        } => is_spike_source(m, *src),
        NodeKind::Population { .. } => m.eqs(h).is_some_and(|e| e.spikes()),
        _ => false,
    }
}

/// Estimated seconds of a projection `[rows, k] -> [rows, n]`, dense and event-driven at
/// spike rate `p`: the event-driven kernel works on the union of the non-zeros of 4 rows,
/// `1 - (1 - p)^4` of the inputs.
pub fn projection_costs(mc: &Machine, rows: f64, k: f64, n: f64, p: f64) -> (f64, f64) {
    let dense = rows * k * n / mc.gemm_macs;
    let union = 1.0 - (1.0 - p).powi(4);
    let event = rows * k * mc.event_scan + union * rows * k * n / mc.event_macs;
    (dense, event)
}

/// Estimated seconds of a convolution of `images` images `[c_in, h, w]` by `c_out` kernels
/// of `kk = c_in * kh * kw` taps at `p` output positions, dense (im2col + GEMM) and
/// event-driven at spike rate `rate`: the scatter visits each active input cell's taps that
/// land on an output, about `rate * kk * p` per image, with `c_out` adds each.
#[allow(clippy::too_many_arguments)]
pub fn conv_costs(
    mc: &Machine,
    images: f64,
    in_cells: f64,
    kk: f64,
    p: f64,
    c_out: f64,
    rate: f64,
) -> (f64, f64) {
    let dense = images * c_out * p * kk / mc.conv_macs;
    let event =
        images * in_cells * mc.scatter_scan + rate * images * kk * p * c_out / mc.scatter_adds;
    (dense, event)
}

/// Why `h`'s value is a cumulative 0/1 wave by construction (a neuron that fires stays 1),
/// or `None`: a `latency` code; a `FireOnce` population (its spikes are `v > threshold` of
/// its input, cumulative when that input only grows, as a conv of a wave with non-negative
/// weights does: Spyker's layers); max pooling and `inhibit` (one channel kept per pixel) of
/// a wave. A wrong guess costs time, never results: the wave conv checks every sample.
pub fn wave_source(m: &Module, h: NodeId) -> Option<&'static str> {
    match &m.nodes[h].kind {
        NodeKind::Latency { .. } => Some("a latency code"),
        NodeKind::Population { model, .. } if model == "FireOnce" => Some("a FireOnce population"),
        NodeKind::Pool2d {
            src,
            kind: crate::ir::net::PoolKind::Max,
            ..
        } => wave_source(m, *src).map(|_| "a max pool of a wave"),
        NodeKind::Inhibit { src, .. } => wave_source(m, *src).map(|_| "inhibit of a wave"),
        _ => None,
    }
}

/// Estimated seconds of a wave conv (`images` samples of `t` steps; other arguments as
/// [`conv_costs`]) when every input spikes once: a scan of every step for the first-spike
/// map, each input's taps adding `c_out`-wide weight columns once, and a prefix sum over
/// the steps of every output.
#[allow(clippy::too_many_arguments)]
pub fn wave_conv_cost(
    mc: &Machine,
    images: f64,
    t: f64,
    in_cells: f64,
    kk: f64,
    p: f64,
    c_out: f64,
) -> f64 {
    images * (t * in_cells * mc.scatter_scan + (kk * p * c_out + t * c_out * p) / mc.scatter_adds)
}

/// The form of every projection of spikes (`dense` and `conv2d`): event-driven where the
/// input is spikes and the cost model (or `sparse = on`) says so; the wave form for a
/// `conv2d` of a wave (`sparse = wave`, or the cost model on an input that is a wave by
/// construction, [`wave_source`]) that runs over all T at once outside a training plan.
fn projections(
    m: &Module,
    opts: &Options,
    stages: &[Stage],
) -> DResult<BTreeMap<NodeId, SparseChoice>> {
    let in_steps: Vec<NodeId> = stages
        .iter()
        .filter_map(|s| match &s.kind {
            StageKind::Steps(ns) => Some(ns.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    let mut out = BTreeMap::new();
    for (h, node) in m.nodes.iter() {
        let (src, sparse, rate) = match &node.kind {
            NodeKind::Dense {
                src, sparse, rate, ..
            }
            | NodeKind::Conv2d {
                src, sparse, rate, ..
            } => (*src, *sparse, *rate),
            _ => continue,
        };
        let is_conv = matches!(node.kind, NodeKind::Conv2d { .. });
        if sparse == SparseMode::Wave && !is_conv {
            return Err(Diagnostic::new(
                ErrorKind::BadArgument,
                "`sparse = wave` is for `conv2d` only".to_string(),
            )
            .at(node.span, "a dense projection")
            .hint("use `sparse = on`, `off` or `auto` on `dense`"));
        }
        let wave_src = if is_conv { wave_source(m, src) } else { None };
        let spikes = is_spike_source(m, src) || wave_src.is_some();
        if !spikes && sparse != SparseMode::On && sparse != SparseMode::Wave {
            continue;
        }
        let samples = match m.shape(src).extent {
            Extent::Static => m.batch as f64,
            _ => m.t as f64 * m.batch as f64,
        };
        let measured = opts.calibration.as_ref().and_then(|c| {
            c.rates.get(&node.name).map(|&r| {
                (
                    r as f32,
                    RateSource::Measured {
                        samples: c.samples,
                        steps: c.steps,
                    },
                )
            })
        });
        let (p, rate_source) = match (rate, measured) {
            (Some(r), _) => (r, RateSource::Given),
            (None, Some(m)) => m,
            (None, None) => (DEFAULT_RATE, RateSource::Assumed),
        };
        let (dense_s, event_s) = match &node.kind {
            NodeKind::Conv2d {
                out_channels,
                kernel,
                ..
            } => {
                let in_cells = m.shape(src).features() as f64;
                let c_in = m.shape(src).dims[0] as f64;
                let positions = (m.shape(h).features() / out_channels) as f64;
                let kk = c_in * (kernel[0] * kernel[1]) as f64;
                let c_out = *out_channels as f64;
                conv_costs(&CPU, samples, in_cells, kk, positions, c_out, p as f64)
            }
            NodeKind::Dense { out: n, .. } => {
                let k = m.shape(src).features() as f64;
                projection_costs(&CPU, samples, k, *n as f64, p as f64)
            }
            _ => unreachable!("matched above"),
        };
        let by_cost_model = spikes && opts.sparse.is_none() && sparse == SparseMode::Auto;
        // The wave form: the whole sequence at once, so no step loop and no delay.
        let wave_s = match &node.kind {
            NodeKind::Conv2d {
                out_channels,
                kernel,
                delay,
                ..
            } if wave_src.is_some() || sparse == SparseMode::Wave => {
                let whole =
                    *delay == 0 && !in_steps.contains(&h) && m.shape(src).extent == Extent::Seq;
                if !whole && sparse == SparseMode::Wave {
                    return Err(Diagnostic::new(
                        ErrorKind::BadArgument,
                        "`sparse = wave` needs the whole sequence at once".to_string(),
                    )
                    .at(
                        node.span,
                        "delayed, in a recurrent cycle or of a static input",
                    )
                    .hint(
                        "the wave form convolves each input's first-spike time over all T: \
                         use it on a feed-forward `conv2d` of a sequence with `delay = 0`",
                    ));
                }
                whole.then(|| {
                    let positions = (m.shape(h).features() / out_channels) as f64;
                    let kk = m.shape(src).dims[0] as f64 * (kernel[0] * kernel[1]) as f64;
                    wave_conv_cost(
                        &CPU,
                        m.batch as f64,
                        m.t as f64,
                        m.shape(src).features() as f64,
                        kk,
                        positions,
                        *out_channels as f64,
                    )
                })
            }
            _ => None,
        };
        let wave_reason = match (wave_s, sparse) {
            (None, _) => None,
            (Some(_), _) if opts.train => Some((
                false,
                "not the wave form: a training plan keeps the per-step forms".to_string(),
            )),
            (Some(_), SparseMode::Wave) => Some((true, "`sparse = wave`".to_string())),
            (Some(ws), SparseMode::Auto) if opts.sparse.is_none() => {
                let what = wave_src.unwrap_or("a wave");
                Some(if ws < dense_s.min(event_s) {
                    (
                        true,
                        format!(
                            "the input is {what}: the wave form (first-spike times) is cheaper on the {}",
                            CPU.name
                        ),
                    )
                } else {
                    (
                        false,
                        format!("the wave form (the input is {what}) is not cheaper"),
                    )
                })
            }
            (Some(_), _) => None,
        };
        let (sparse_on, reason) = match sparse {
            _ if spikes && opts.sparse.is_some() => {
                let on = opts.sparse == Some(true);
                (
                    on,
                    format!(
                        "forced by options (`--sparse {}`)",
                        if on { "on" } else { "off" }
                    ),
                )
            }
            SparseMode::On => (true, "`sparse = on`".to_string()),
            SparseMode::Off => (false, "`sparse = off`".to_string()),
            SparseMode::Wave => (false, "`sparse = wave`".to_string()),
            SparseMode::Auto if event_s < dense_s => (true, format!("cheaper on the {}", CPU.name)),
            SparseMode::Auto => (false, format!("cheaper on the {}", CPU.name)),
        };
        let wave = wave_reason.as_ref().is_some_and(|w| w.0);
        let reason = match wave_reason {
            Some((true, why)) => why,
            Some((false, why)) => format!("{reason}; {why}"),
            None => reason,
        };
        out.insert(
            h,
            SparseChoice {
                sparse: sparse_on && !wave,
                rate: p,
                rate_source,
                by_cost_model,
                reason: if spikes {
                    reason
                } else {
                    format!("{reason} (the input is not spikes: no saving expected)")
                },
                dense_s,
                event_s,
                wave,
                wave_s,
            },
        );
    }
    Ok(out)
}

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

    // The time form of every population.
    let mut time = BTreeMap::new();
    for (ci, c) in rec.components.iter().enumerate() {
        let cycle = rec.is_cycle(ci, |n| self_loop(m, n)).then(|| {
            let names: Vec<&str> = c.iter().map(|&n| m.nodes[n].name.as_str()).collect();
            format!("{{{}}}", names.join(", "))
        });
        for &h in c {
            if m.is_population(h) {
                time.insert(h, decide(m, h, cycle.as_deref(), opts)?);
            }
        }
    }
    let parallel = |n: NodeId| {
        time.get(&n)
            .is_some_and(|p: &PopTime| p.form == TimeForm::Parallel)
    };

    let is_input = |m: &Module, n: NodeId| matches!(m.nodes[n].kind, NodeKind::Input { .. });
    // A static value read off a sequence (`wta`'s winners, and what reads them) waits for it
    // in the sequence's order below; every other static value comes first.
    let mut late = vec![false; m.nodes.len()];
    for &ci in &order {
        for &n in &rec.components[ci] {
            late[n.index()] = m.shape(n).extent == Extent::Static
                && m.nodes[n]
                    .kind
                    .sources()
                    .iter()
                    .any(|&(s, _)| m.shape(s).extent == Extent::Seq || late[s.index()]);
        }
    }
    let mut stages = Vec::new();
    // Static values first: they depend only on static values.
    for &ci in &order {
        for &n in &rec.components[ci] {
            if !is_input(m, n) && m.shape(n).extent == Extent::Static && !late[n.index()] {
                stages.push(Stage {
                    kind: StageKind::Layer(n),
                    reason: "static: same value at every step, computed once".into(),
                });
            }
        }
    }
    let parallel_stage = |n: NodeId| Stage {
        kind: StageKind::Parallel(n),
        reason: "parallel: matrix products over the time axis, then one elementwise kernel".into(),
    };
    let seq = |m: &Module, n: NodeId| {
        !is_input(m, n) && (m.shape(n).extent == Extent::Seq || late[n.index()])
    };
    if opts.force_steps {
        // Every per-step node in one step loop, split where a population needs all T at once.
        let all: Vec<NodeId> = order
            .iter()
            .flat_map(|&ci| rec.components[ci].iter().copied())
            .filter(|&n| seq(m, n))
            .collect();
        let mut run: Vec<NodeId> = Vec::new();
        let flush = |run: &mut Vec<NodeId>, stages: &mut Vec<Stage>| {
            if !run.is_empty() {
                stages.push(Stage {
                    kind: StageKind::Steps(std::mem::take(run)),
                    reason: "step by step for every node (forced by options)".into(),
                });
            }
        };
        for n in all {
            if parallel(n) {
                flush(&mut run, &mut stages);
                stages.push(parallel_stage(n));
            } else if matches!(
                m.nodes[n].kind,
                NodeKind::Latency { .. }
                    | NodeKind::Inhibit { .. }
                    | NodeKind::Wta { .. }
                    | NodeKind::Infinite { .. }
            ) || late[n.index()]
            {
                // A sample's spike times come from all its values at once: one op, all T.
                flush(&mut run, &mut stages);
                stages.push(Stage {
                    kind: StageKind::Layer(n),
                    reason: "rank-order coding / inhibition: one op over all T".into(),
                });
            } else {
                run.push(n);
            }
        }
        flush(&mut run, &mut stages);
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
                // Inhibition needs every step of its input before its first output step.
                if let Some(&h) = comp.iter().find(|&&h| {
                    matches!(
                        m.nodes[h].kind,
                        NodeKind::Inhibit { .. } | NodeKind::Wta { .. } | NodeKind::Infinite { .. }
                    )
                }) {
                    let op = m.nodes[h].kind.op_name();
                    return Err(Diagnostic::new(
                        ErrorKind::BadArgument,
                        format!(
                            "`{op}` inside a recurrent cycle: it reads all T steps of its input at once"
                        ),
                    )
                    .at(m.nodes[h].span, "in a recurrent cycle")
                    .hint(match op {
                        "inhibit" => "inhibit a feed-forward layer's output".to_string(),
                        _ => format!("apply `{op}` to a feed-forward layer's output"),
                    }));
                }
                let names: Vec<&str> = comp.iter().map(|&n| m.nodes[n].name.as_str()).collect();
                stages.push(Stage {
                    kind: StageKind::Steps(comp.clone()),
                    reason: format!("recurrent cycle {{{}}}: step by step", names.join(", ")),
                });
            } else if parallel(comp[0]) {
                stages.push(parallel_stage(comp[0]));
            } else {
                let n = comp[0];
                let reason = match &m.nodes[n].kind {
                    NodeKind::Population { eqs: Some(e), .. } if e.mix.is_some() => {
                        "feed-forward, sequential: a step loop (one row of the mix, then one step)"
                    }
                    NodeKind::Population { .. } => "feed-forward: one fused kernel, T loop inside",
                    NodeKind::Encode { .. } => "feed-forward: one kernel over all T",
                    NodeKind::Flatten { .. } => "feed-forward: a view, no work",
                    NodeKind::Filter { .. } => "feed-forward: a frozen conv, once per sample",
                    NodeKind::Latency { .. } => {
                        "feed-forward: one rank-code op writes all T (spike times per sample)"
                    }
                    NodeKind::Inhibit { .. } => {
                        "feed-forward: one inhibition op over all T (winner per pixel)"
                    }
                    NodeKind::Wta { .. } => {
                        "feed-forward: one k-WTA op over all T (static winners per sample)"
                    }
                    NodeKind::Infinite { .. } => {
                        "feed-forward: one op over all T (only the last step kept)"
                    }
                    _ => "feed-forward: one op over all T*B rows",
                };
                stages.push(Stage {
                    kind: StageKind::Layer(n),
                    reason: reason.into(),
                });
            }
        }
    }
    let projections = projections(m, opts, &stages)?;
    m.schedule = Some(Schedule {
        stages,
        time,
        cost_at: (m.t, m.batch),
        projections,
    });
    Ok(())
}

/// Why the parallel schedule is impossible, with a hint for a user who asked for it.
struct NoParallel {
    why: String,
    hint: &'static str,
}

fn decide(m: &Module, h: NodeId, cycle: Option<&str>, opts: &Options) -> DResult<PopTime> {
    let node = &m.nodes[h];
    let NodeKind::Population {
        eqs: Some(eqs),
        args,
        ..
    } = &node.kind
    else {
        unreachable!("populations have equations after `neurons`")
    };
    let lin = linear::analyse(eqs);
    let no_parallel = match (&lin, cycle) {
        (Err(why), _) => Some(NoParallel {
            why: why.clone(),
            hint: if eqs.reset.is_empty() {
                "the parallel schedule needs every update to be a * state + b * I + c with a, b, c \
                 built from parameters; remove `schedule = parallel`"
            } else {
                "the parallel schedule needs a population without reset (e.g. `reset = none`); \
                 remove `schedule = parallel` to run it step after step"
            },
        }),
        (Ok(_), Some(c)) => Some(NoParallel {
            why: format!(
                "it is in the recurrent cycle {c}: each step needs the previous step's output"
            ),
            hint: "only populations outside recurrent cycles run in parallel; remove \
                   `schedule = parallel` (or the delayed feedback)",
        }),
        (Ok(_), None) => None,
    };
    let no_sequential = match &eqs.mix {
        Some(Mix::Full) => Some(
            "its `mix full` makes every step read every step of the sequence, later ones too: \
             it has no step-by-step form"
                .to_string(),
        ),
        Some(Mix::Masked { lambda, .. }) => Some(format!(
            "its `mix masked` reads later steps unless `{}` = 1, and that is a run-time \
             parameter: it has no step-by-step form",
            eqs.params[*lambda].name
        )),
        _ => None,
    };
    let (seq_cost, par_cost) = estimate(m, h, eqs, lin.as_ref().ok(), &CPU);
    let seq_cost = (no_parallel.is_none() && no_sequential.is_none()).then_some(seq_cost);
    let par_cost = no_parallel.is_none().then_some(par_cost);
    let name = &node.name;
    let (form, reason) = match (args.schedule, &no_parallel, &no_sequential) {
        (Some((TimeForm::Parallel, span)), Some(np), _) => {
            return Err(refuse(name, span, TimeForm::Parallel, &np.why, np.hint))
        }
        (Some((TimeForm::Sequential, span)), _, Some(why)) => {
            return Err(refuse(
                name,
                span,
                TimeForm::Sequential,
                why,
                "PSN and MaskedPSN run only on the parallel schedule; SlidingPSN runs either \
                 way; remove `schedule = sequential`",
            ))
        }
        (Some((f, _)), _, _) => (f, format!("forced by `schedule = {}`", f.name())),
        (None, Some(np), Some(ns)) => {
            return Err(Diagnostic::new(
                ErrorKind::BadArgument,
                format!("population `{name}` can be scheduled neither way"),
            )
            .at(node.span, "no schedule fits")
            .hint(format!(
                "sequential is impossible: {ns}; parallel is impossible: {}. A PSN or \
                 MaskedPSN must sit outside recurrent cycles; SlidingPSN runs step by step",
                np.why
            )))
        }
        (None, Some(np), None) => (
            TimeForm::Sequential,
            format!("parallel impossible: {}", np.why),
        ),
        (None, None, Some(ns)) => (TimeForm::Parallel, format!("sequential impossible: {ns}")),
        (None, None, None) if opts.force_steps => (
            TimeForm::Sequential,
            "step by step (forced by options)".into(),
        ),
        (None, None, None) => {
            let (s, p) = (seq_cost.unwrap(), par_cost.unwrap());
            if p.seconds < s.seconds {
                (TimeForm::Parallel, format!("cheaper on the {}", CPU.name))
            } else {
                (TimeForm::Sequential, format!("cheaper on the {}", CPU.name))
            }
        }
    };
    Ok(PopTime {
        form,
        reason,
        linear: lin.ok(),
        no_parallel: no_parallel.map(|n| n.why),
        seq_cost,
        par_cost,
    })
}

fn refuse(name: &str, span: Span, form: TimeForm, why: &str, hint: &str) -> Diagnostic {
    Diagnostic::new(
        ErrorKind::BadArgument,
        format!(
            "population `{name}` cannot run on the {} schedule: {why}",
            form.name()
        ),
    )
    .at(span, format!("`schedule = {}` asked here", form.name()))
    .hint(hint)
}

/// FLOPs of one evaluation of an expression (a transcendental function counts 8).
fn expr_flops(e: &EExpr) -> f64 {
    e.fold(&mut |n| match n {
        Node::Const(_) | Node::Leaf(_) => 0.0,
        Node::Unary(_, x) => 1.0 + x,
        Node::Binary(op, a, b) => (if op == BinOp::Pow { 8.0 } else { 1.0 }) + a + b,
        Node::Call(f, args) => {
            let own = match f {
                Func::Exp | Func::Log | Func::Tanh | Func::Sigmoid => 8.0,
                _ => 1.0,
            };
            own + args.iter().sum::<f64>()
        }
    })
}

/// FLOPs of one neuron-step of the fused kernel.
fn step_flops(eqs: &NeuronEqs, inputs: usize) -> f64 {
    let upd: f64 = eqs.update.iter().map(|a| expr_flops(&a.value)).sum();
    let spike = eqs.spike.as_ref().map_or(0.0, |s| 1.0 + expr_flops(s));
    let reset: f64 = eqs.reset.iter().map(|a| 1.0 + expr_flops(&a.value)).sum();
    (inputs.saturating_sub(1)) as f64 + upd + spike + reset
}

/// The (sequential, parallel) costs of population `h` at the module's T and batch.
fn estimate(
    m: &Module,
    h: NodeId,
    eqs: &NeuronEqs,
    lin: Option<&LinearStep>,
    mc: &Machine,
) -> (Cost, Cost) {
    let NodeKind::Population { inputs, .. } = &m.nodes[h].kind else {
        unreachable!()
    };
    let t = m.t as f64;
    let bn = m.batch as f64 * m.shape(h).features() as f64;
    let tbn = t * bn;
    let outs = pop_outputs(m, h);
    let written = (usize::from(outs.spikes) + outs.traces.len()) as f64;
    let n_in = inputs.len() as f64;
    let states = eqs.states.len() as f64;
    let step = step_flops(eqs, inputs.len());
    let f4 = 4.0;
    // The mix: flops and bytes of one application over all T.
    let (mix_flops, mix_k) = match &eqs.mix {
        Some(Mix::Full | Mix::Masked { .. }) => (2.0 * t * tbn, t),
        Some(Mix::Sliding { k, .. }) => (2.0 * *k as f64 * tbn, *k as f64),
        None => (0.0, 0.0),
    };
    let mixed = eqs.mix.is_some();

    let seq = if mixed {
        // A step loop: per step and input one row of the mix (k rows read), then a step
        // kernel that loads and stores its state.
        mc.cost(
            n_in * mix_flops + tbn * step,
            tbn * f4 * (n_in * (mix_k + 1.0) + 1.0 + written + 2.0 * states),
            t * (n_in + 1.0),
        )
    } else {
        mc.cost(tbn * step, tbn * f4 * (n_in + written), 1.0)
    };

    let recurrent = lin.is_some_and(LinearStep::recurrent);
    let sources = if mixed { 1.0 } else { n_in };
    let mut flops = tbn * step;
    let mut bytes = tbn * f4 * written;
    let mut ops = 1.0;
    if mixed {
        flops += n_in * mix_flops;
        bytes += tbn * f4 * (n_in + 1.0);
        ops += n_in;
    }
    if recurrent {
        // The impulse/free response kernel (tiny), then one Toeplitz GEMM per state and
        // source; the elementwise kernel reads each state's result.
        flops += states * sources * 2.0 * t * tbn;
        bytes += tbn * f4 * (states * sources + states + states);
        ops += 1.0 + states * sources;
    } else {
        bytes += tbn * f4 * sources;
    }
    (seq, mc.cost(flops, bytes, ops))
}
