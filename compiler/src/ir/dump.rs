//! Stable, readable text dumps of every IR stage (what `snnc ir` prints and what the
//! snapshot tests pin). Whatever a pass has filled in shows; nothing else.

use std::fmt::Write;

use crate::diag::SourceMap;
use crate::ir::kernel::Program;
use crate::ir::net::*;
use crate::ir::sched::StageKind;
use snn_runtime::plan::{Op, Plan};

fn dims(d: &[usize]) -> String {
    format!(
        "[{}]",
        d.iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// NetIR with every annotation the passes so far have made.
/// Pool padding as written: one number when every side is the same (as before lists),
/// else `[top, left, bottom, right]`.
fn pad_text(p: &[usize; 4]) -> String {
    if p.iter().all(|&x| x == p[0]) {
        p[0].to_string()
    } else {
        format!("[{}, {}, {}, {}]", p[0], p[1], p[2], p[3])
    }
}

pub fn module(m: &Module, sources: &SourceMap) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "model {}  T={} dt={:?} seed={} batch={}",
        m.name, m.t, m.dt, m.seed, m.batch
    );
    let nm = |h: NodeId| format!("{:?} {}", h, m.nodes[h].name);
    let _ = writeln!(out, "nodes:");
    for (h, n) in m.nodes.iter() {
        let (l, c) = sources.line_col(n.span.file, n.span.start);
        let what = match &n.kind {
            NodeKind::Input {
                dims: d,
                time_varying,
            } => {
                format!(
                    "input {}{}",
                    if *time_varying { "[T] " } else { "" },
                    dims(d)
                )
            }
            NodeKind::Encode { src, encoding } => match encoding {
                Encoding::Poisson { max_rate, seed } => {
                    format!("poisson({}, max_rate={max_rate:?}, seed={seed})", nm(*src))
                }
                Encoding::Bernoulli { gain, seed } => {
                    format!("bernoulli({}, gain={gain:?}, seed={seed})", nm(*src))
                }
            },
            NodeKind::Dense {
                src,
                out: o,
                bias,
                delay,
                init_gain,
                sparse,
                rate,
            } => {
                let mut extra = String::new();
                if *sparse != SparseMode::Auto {
                    extra += &format!(", sparse={}", sparse.name());
                }
                if let Some(r) = rate {
                    extra += &format!(", rate={r:?}");
                }
                format!("dense({}, out={o}, bias={bias}, delay={delay}, init_gain={init_gain:?}{extra})", nm(*src))
            }
            NodeKind::Conv2d {
                src,
                out_channels,
                kernel,
                stride,
                padding,
                bias,
                delay,
                init_gain,
                sparse,
                rate,
            } => {
                let mut extra = String::new();
                if *sparse != SparseMode::Auto {
                    extra += &format!(", sparse={}", sparse.name());
                }
                if let Some(r) = rate {
                    extra += &format!(", rate={r:?}");
                }
                format!(
                    "conv2d({}, out={out_channels}, kernel={}x{}, stride={stride}, padding={padding}, bias={bias}, delay={delay}, init_gain={init_gain:?}{extra})",
                    nm(*src),
                    kernel[0],
                    kernel[1]
                )
            }
            NodeKind::Pool2d {
                src,
                kernel,
                stride,
                padding,
                ..
            } => format!(
                "{}({}, kernel={kernel}, stride={stride}, padding={})",
                n.kind.op_name(),
                nm(*src),
                pad_text(padding)
            ),
            NodeKind::Flatten { src } => format!("flatten({})", nm(*src)),
            NodeKind::Filter {
                src,
                bank,
                size,
                pad,
                threshold,
            } => {
                let thr = threshold
                    .map(|t| format!(", threshold={t:?}"))
                    .unwrap_or_default();
                format!(
                    "{}({}, size={size}, {}, pad={pad}{thr}) frozen",
                    bank.op_name(),
                    nm(*src),
                    filter_params(bank)
                )
            }
            NodeKind::Latency { src, sort } => format!("latency({}, sort={sort})", nm(*src)),
            NodeKind::Inhibit { src, threshold } => {
                format!("inhibit({}, threshold={threshold:?})", nm(*src))
            }
            NodeKind::Wta {
                src,
                k,
                radius,
                threshold,
            } => format!(
                "wta({}, k={k}, radius={radius}, threshold={threshold:?})",
                nm(*src)
            ),
            NodeKind::Infinite { src, value } => {
                format!("infinite({}, value={value:?})", nm(*src))
            }
            NodeKind::Population {
                inputs,
                model,
                args,
                ..
            } => {
                let ins: Vec<String> = inputs.iter().map(|&i| nm(i)).collect();
                let mut a: Vec<String> = args
                    .params
                    .iter()
                    .map(|(k, v, _)| match args.learn.iter().find(|(n, _)| n == k) {
                        Some((_, l)) if l.per_neuron => format!("{k}=learn({v:?}, per_neuron)"),
                        Some(_) => format!("{k}=learn({v:?})"),
                        None => format!("{k}={v:?}"),
                    })
                    .collect();
                a.extend(args.flags.iter().map(|(k, v, _)| format!("{k}={v}")));
                a.extend(args.choices.iter().map(|(k, v, _)| format!("{k}={v}")));
                a.extend(args.consts.iter().map(|(k, v, _)| format!("{k}={v}")));
                a.extend(
                    args.schedule
                        .iter()
                        .map(|(f, _)| format!("schedule={}", f.name())),
                );
                let a = if a.is_empty() {
                    String::new()
                } else {
                    format!(", {}", a.join(", "))
                };
                format!("{model}({}{a})", ins.join(" + "))
            }
        };
        let shape = n
            .shape
            .as_ref()
            .map(|s| {
                format!(
                    " -> {} {}",
                    if s.extent == Extent::Seq {
                        "seq"
                    } else {
                        "static"
                    },
                    dims(&s.dims)
                )
            })
            .unwrap_or_default();
        let _ = writeln!(out, "  {h:?} {} = {what}{shape}  @{l}:{c}", n.name);
        if let NodeKind::Population { eqs: Some(eqs), .. } = &n.kind {
            out.push_str(&eqs.to_string());
        }
    }
    let _ = writeln!(out, "outputs:");
    for o in &m.outputs {
        let what = match (&o.kind, &o.state) {
            (OutputKind::Trace, Some((s, _))) => format!("trace({}.{s})", m.nodes[o.node].name),
            (OutputKind::Spikes, _) => format!("spikes({})", m.nodes[o.node].name),
            (OutputKind::Counts, _) => format!("counts({})", m.nodes[o.node].name),
            _ => "?".into(),
        };
        let _ = writeln!(out, "  {} = {what}", o.name);
    }
    for &(h, owner, _) in &m.ties {
        let _ = writeln!(
            out,
            "shared weight: {} uses {}'s weight",
            m.nodes[h].name, m.nodes[owner].name
        );
    }
    if !m.plastic.is_empty() {
        let _ = writeln!(out, "plasticity:");
        for p in &m.plastic {
            let name = |h: Option<NodeId>| match h {
                Some(h) => m.nodes[h].name.clone(),
                None => "?".into(),
            };
            let mut args: Vec<String> = p
                .args
                .params
                .iter()
                .map(|(n, v, _)| format!("{n}={v:?}"))
                .collect();
            args.extend(p.args.flags.iter().map(|(n, v, _)| format!("{n}={v}")));
            args.extend(p.args.choices.iter().map(|(n, v, _)| format!("{n}={v}")));
            let src = m.nodes[p.projection]
                .kind
                .sources()
                .first()
                .map(|(s, _)| m.nodes[*s].name.clone())
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  {}.weight: {}({})  pre={src} post={}{}{}",
                m.nodes[p.projection].name,
                p.rule,
                args.join(", "),
                name(p.post),
                p.gate
                    .map(|g| format!(" gate={}", m.nodes[g].name))
                    .unwrap_or_default(),
                p.reward
                    .map(|r| format!(" reward={}", m.nodes[r].name))
                    .unwrap_or_default(),
            );
            if let Some(eqs) = &p.eqs {
                let _ = writeln!(out, "{eqs}");
            }
        }
    }
    if let Some(r) = &m.recurrence {
        let _ = writeln!(out, "recurrence (components in execution order):");
        for (i, c) in r.components.iter().enumerate() {
            let names: Vec<&str> = c.iter().map(|&h| m.nodes[h].name.as_str()).collect();
            let cyc = c.len() > 1 || self_loop(m, c[0]);
            let _ = writeln!(
                out,
                "  c{i}: {}{}",
                names.join(", "),
                if cyc { "  [cycle]" } else { "" }
            );
        }
    }
    if let Some(s) = &m.schedule {
        let _ = writeln!(out, "schedule:");
        for (i, st) in s.stages.iter().enumerate() {
            let what = match &st.kind {
                StageKind::Layer(h) => format!("layer {}", m.nodes[*h].name),
                StageKind::Parallel(h) => format!("parallel {}", m.nodes[*h].name),
                StageKind::Steps(hs) => {
                    let names: Vec<&str> = hs.iter().map(|&h| m.nodes[h].name.as_str()).collect();
                    format!("steps {{{}}}", names.join(", "))
                }
            };
            let _ = writeln!(out, "  stage {i}: {what}  -- {}", st.reason);
        }
        if !s.time.is_empty() {
            use crate::ir::cost::{duration, si, CPU};
            if !s.projections.is_empty() {
                let _ = writeln!(
                    out,
                    "projections of spikes (cost model: {} at T={}, batch={}):",
                    CPU.name, s.cost_at.0, s.cost_at.1
                );
                for (&h, c) in &s.projections {
                    let _ = writeln!(
                        out,
                        "  {}: {}  -- {}; rate {} ({}): {} ~{}, event-driven ~{}{}",
                        m.nodes[h].name,
                        match (c.wave, c.sparse) {
                            (true, _) => "wave",
                            (false, true) => "event-driven",
                            (false, false) => "dense",
                        },
                        c.reason,
                        rate(c.rate),
                        c.rate_source,
                        match m.nodes[h].kind {
                            NodeKind::Conv2d { .. } => "im2col + GEMM",
                            _ => "dense GEMM",
                        },
                        duration(c.dense_s),
                        duration(c.event_s),
                        c.wave_s
                            .map(|w| format!(", wave ~{}", duration(w)))
                            .unwrap_or_default()
                    );
                }
            }
            let _ = writeln!(
                out,
                "time axis (cost model: {} at T={}, batch={}):",
                CPU.name, s.cost_at.0, s.cost_at.1
            );
            let cost = |c: &crate::ir::sched::Cost| {
                format!(
                    "{}FLOP, {}B, {} op{}, ~{}",
                    si(c.flops),
                    si(c.bytes),
                    c.ops,
                    if c.ops == 1.0 { "" } else { "s" },
                    duration(c.seconds)
                )
            };
            for (&h, pt) in &s.time {
                let _ = writeln!(
                    out,
                    "  {}: {}  -- {}",
                    m.nodes[h].name,
                    pt.form.name(),
                    pt.reason
                );
                if let (Some(l), Some(eqs)) = (&pt.linear, m.eqs(h)) {
                    let _ = writeln!(
                        out,
                        "    linear, no reset: {}",
                        crate::ir::linear::ShowLinear(eqs, l)
                    );
                }
                if let Some(c) = &pt.seq_cost {
                    let _ = writeln!(out, "    sequential: {}", cost(c));
                }
                if let Some(c) = &pt.par_cost {
                    let _ = writeln!(out, "    parallel:   {}", cost(c));
                }
            }
        }
    }
    if let (Some(bw), Some(cfg)) = (&m.backward, &m.train) {
        let g = &cfg.grad;
        let _ = writeln!(
            out,
            "autodiff: surrogate {}(alpha={:?}) detach_reset={} bpsta_spatial={} bpsta_temporal={:?}",
            g.surrogate.kind.name(),
            g.surrogate.alpha,
            g.detach_reset,
            g.bpsta_spatial,
            g.bpsta_temporal
        );
        let _ = writeln!(
            out,
            "  loss {:?} of output {}",
            cfg.loss.kind, m.outputs[bw.loss_output].name
        );
        // The nodes of a recurrent stage run in one reverse step loop: `[s, r: step loop]`.
        let stage_of = m
            .schedule
            .as_ref()
            .map(|s| s.stage_of())
            .unwrap_or_default();
        let cyclic = |h: NodeId| {
            m.schedule.as_ref().is_some_and(|s| {
                stage_of
                    .get(&h)
                    .is_some_and(|&i| matches!(s.stages[i].kind, StageKind::Steps(_)))
            })
        };
        let mut names: Vec<String> = Vec::new();
        let mut i = 0;
        while i < bw.order.len() {
            let h = bw.order[i];
            if cyclic(h) {
                let run: Vec<&str> = bw.order[i..]
                    .iter()
                    .take_while(|n| stage_of.get(n) == stage_of.get(&h))
                    .map(|&n| m.nodes[n].name.as_str())
                    .collect();
                i += run.len();
                names.push(format!("[{}: reverse step loop]", run.join(", ")));
            } else {
                names.push(m.nodes[h].name.clone());
                i += 1;
            }
        }
        let _ = writeln!(out, "  backward order: {}", names.join(", "));
        for (&h, step) in &bw.pops {
            let eqs = m.eqs(h).expect("population");
            let saves = step.saves();
            let saved: Vec<&str> = eqs
                .states
                .iter()
                .zip(&saves)
                .filter(|(_, &s)| s)
                .map(|(s, _)| s.name.as_str())
                .collect();
            let _ = writeln!(
                out,
                "  {} (saves {} per step):",
                m.nodes[h].name,
                if saved.is_empty() {
                    "nothing".to_string()
                } else {
                    saved.join(", ")
                }
            );
            step.dump(eqs, &mut out);
        }
    }
    if let Some(f) = &m.fusion {
        let _ = writeln!(out, "fusion:");
        for (i, g) in f.groups.iter().enumerate() {
            let names: Vec<&str> = g
                .members
                .iter()
                .map(|&h| m.nodes[h].name.as_str())
                .collect();
            let _ = writeln!(
                out,
                "  group {i}: [{}] {:?}, launched at stage {}, {}{}",
                names.join(", "),
                g.mode,
                g.stage,
                if g.stepwise {
                    "one step per launch"
                } else {
                    "T loop inside"
                },
                if g.members.len() > 1 {
                    ", merged launch"
                } else {
                    ""
                }
            );
        }
    }
    if let Some(mem) = &m.memory {
        let _ = writeln!(
            out,
            "memory: {} buffers in {} slots",
            mem.buffers.len(),
            mem.slots
        );
        for (i, b) in mem.buffers.iter().enumerate() {
            let _ = writeln!(
                out,
                "  buf {i} {} {:?} [{}] slot {}",
                b.name, b.extent, b.features, b.slot
            );
        }
    }
    out
}

fn ops(out: &mut String, p: &Plan, ops_: &[Op], indent: usize) {
    let pad = " ".repeat(indent);
    let b = |i: usize| p.buffers[i].name.clone();
    for op in ops_ {
        match op {
            Op::Zero { buf } => {
                let _ = writeln!(out, "{pad}zero {}", b(*buf));
            }
            Op::Launch {
                kernel,
                groups,
                time: t,
            } => {
                let _ = writeln!(
                    out,
                    "{pad}launch {} ({:?}) x{} group(s):",
                    p.kernels[*kernel].symbol,
                    t,
                    groups.len()
                );
                for g in groups {
                    let args: Vec<String> = g.args.iter().map(|&a| b(a)).collect();
                    let weights: String = g
                        .weights
                        .iter()
                        .zip(&p.kernels[*kernel].weights)
                        .map(|(&w, u)| {
                            let name = &p.weights[w].name;
                            if u.grad {
                                format!(" grad {name}")
                            } else {
                                format!(" weight {name}")
                            }
                        })
                        .collect();
                    let _ = writeln!(
                        out,
                        "{pad}  ({}) params@{} features {}{weights}",
                        args.join(", "),
                        g.params,
                        g.features
                    );
                }
            }
            Op::StepLoop { body } => {
                let _ = writeln!(out, "{pad}for t in 0..T:");
                ops(out, p, body, indent + 2);
            }
            Op::ReverseStepLoop { body } => {
                let _ = writeln!(out, "{pad}for t in (0..T).rev():");
                ops(out, p, body, indent + 2);
            }
            _ => {
                if let Some(lib) = op.library() {
                    let _ = writeln!(out, "{pad}{}", lib.print(p));
                }
            }
        }
    }
}

/// KernelIR: the plan and the kernels.
pub fn program(p: &Program) -> String {
    let plan = &p.plan;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "program {}  T={} batch={} seed={}",
        plan.name, plan.t, plan.batch, plan.seed
    );
    let _ = writeln!(out, "buffers ({} slots):", plan.slots);
    for (i, b) in plan.buffers.iter().enumerate() {
        let _ = writeln!(
            out,
            "  {i} {} {:?} [{}] slot {}",
            b.name, b.extent, b.features, b.slot
        );
    }
    let _ = writeln!(out, "weights:");
    for w in &plan.weights {
        let init = match &w.init {
            // The values are the compiler's; the dump names them rather than listing them.
            snn_runtime::plan::Init::Frozen(v) => format!(
                "Frozen({} values built at compile time, not trained)",
                v.len()
            ),
            other => format!("{other:?}"),
        };
        let _ = writeln!(out, "  {} {} {init}", w.name, dims(&w.shape));
    }
    let _ = writeln!(out, "params:");
    for (i, pd) in plan.params.iter().enumerate() {
        let v = if pd.check == snn_runtime::plan::ParamCheck::Bits {
            format!("bits {}", pd.value.to_bits())
        } else {
            format!("{:?}", pd.value)
        };
        let _ = writeln!(out, "  {i} {} = {v} ({:?})", pd.name, pd.check);
    }
    let _ = writeln!(out, "inputs:");
    for i in &plan.inputs {
        let _ = writeln!(
            out,
            "  {} {}{} -> {}",
            i.name,
            if i.time_varying { "[T, B] " } else { "[B] " },
            dims(&i.shape),
            plan.buffers[i.buffer].name
        );
    }
    let _ = writeln!(out, "outputs:");
    for o in &plan.outputs {
        let _ = writeln!(
            out,
            "  {} {:?} {} <- {}",
            o.name,
            o.kind,
            dims(&o.shape),
            plan.buffers[o.buffer].name
        );
    }
    let _ = writeln!(out, "ops:");
    ops(&mut out, plan, &plan.ops, 2);
    if let Some(tp) = &plan.train {
        let _ = writeln!(
            out,
            "loss: {:?} of {} (gradient in {})",
            tp.loss.kind, plan.outputs[tp.loss.output].name, plan.buffers[tp.loss.grad].name
        );
        for r in &tp.regularizers {
            let _ = writeln!(
                out,
                "regularizer: {} * mean((rate - {})^2) of {} (gradient in {})",
                r.lambda, r.target, plan.outputs[r.output].name, plan.buffers[r.grad].name
            );
        }
        let _ = writeln!(out, "backward ops:");
        ops(&mut out, plan, &tp.backward, 2);
    }
    if !plan.learn.is_empty() {
        let _ = writeln!(out, "learn (after a forward pass, Session::learn):");
        for l in &plan.learn {
            let _ = writeln!(out, "  {}", l.print(plan));
        }
    }
    for k in &p.kernels {
        let _ = writeln!(out);
        out.push_str(&k.to_string());
    }
    for k in &p.plastic {
        let _ = writeln!(out);
        out.push_str(&k.to_string());
    }
    out
}

/// A spike rate as the dump shows it: 4 significant digits at most, trailing zeros dropped
/// (a given `0.05` stays `0.05`, a measured 0.0992578 is `0.09926`).
fn rate(p: f32) -> String {
    if p <= 0.0 || !p.is_finite() {
        return format!("{p}");
    }
    let decimals = (3 - p.log10().floor() as i32).max(4) as usize;
    let s = format!("{p:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// A filter bank's parameters as the dump prints them.
fn filter_params(bank: &crate::ir::filter::FilterBank) -> String {
    use crate::ir::filter::FilterBank;
    let list = |v: Vec<String>| v.join(", ");
    match bank {
        FilterBank::Dog { pairs } => format!(
            "sigmas=[{}]",
            list(
                pairs
                    .iter()
                    .map(|(a, b)| format!("({a:?}, {b:?})"))
                    .collect()
            )
        ),
        FilterBank::Log { stds } => format!(
            "sigmas=[{}]",
            list(stds.iter().map(|s| format!("{s:?}")).collect())
        ),
        FilterBank::Gabor { filters } => format!(
            "filters=[{}]",
            list(
                filters
                    .iter()
                    .map(|g| format!(
                        "(sigma {:?}, theta {:?} deg, gamma {:?}, lambda {:?}, psi {:?})",
                        g.sigma, g.theta, g.gamma, g.lambda, g.psi
                    ))
                    .collect()
            )
        ),
    }
}
