//! Part of `resolve`: the `train { ... }` block of a model read into typed training
//! settings ([`TrainConfig`]).
//!
//! Each setting is `name = expr` in the language's own expression syntax, e.g.
//! `loss = cross_entropy(counts(s2))`, `optimizer = adam(lr = 1e-3)`, `epochs = 20`.
//! `snnc train --set name=expr` overrides a setting with the same syntax. Errors point at
//! the setting with a hint listing what is accepted.

use super::bind::{self, Range, Signature};
use crate::diag::{did_you_mean, DResult, Diagnostic, ErrorKind, Span};
use crate::front::ast::{Arg, Binding, Expr, ExprKind};
use crate::ir::adjoint::{GradOptions, Surrogate, SurrogateKind};
use crate::ir::train::{LossSpec, LossTarget, RegSpec, TrainConfig};
use snn_runtime::plan::{
    DataDecl, ImageSequence, LossKind, LrScheduleDecl, OptimizerDecl, OptimizerKind, TrainSettings,
};

pub const SETTINGS: &[&str] = &[
    "loss",
    "regularize",
    "method",
    "surrogate",
    "detach_reset",
    "adjust",
    "optimizer",
    "lr_schedule",
    "warmup",
    "epochs",
    "batch",
    "data",
    "clip",
    "validation",
    "checkpoint",
    "input_grads",
    "local",
];

/// The settings of gradient training only: a block with `local = [..]` trains by the
/// projections' own rules and refuses them.
const GRADIENT_ONLY: &[&str] = &[
    "loss",
    "regularize",
    "method",
    "surrogate",
    "detach_reset",
    "adjust",
    "optimizer",
    "lr_schedule",
    "warmup",
    "clip",
    "checkpoint",
    "input_grads",
    "epochs",
];

fn err(span: Span, msg: impl Into<String>, hint: impl Into<String>) -> Diagnostic {
    Diagnostic::new(ErrorKind::BadValue, msg)
        .at(span, "invalid training setting")
        .hint(hint)
}

/// A call `f(args)` or a bare name `f`, split into its name and arguments.
fn call_of(e: &Expr) -> Option<(&str, &[Arg])> {
    match &e.kind {
        ExprKind::Ident(n) => Some((n.as_str(), &[])),
        ExprKind::Call { func, args } => Some((func.name.as_str(), args.as_slice())),
        _ => None,
    }
}

// The settings' values, read with the binder's rules.
fn number(e: &Expr, what: &str, range: Range) -> DResult<f32> {
    bind::read_f32(e, what, range).map_err(|m| err(e.span, m, "e.g. `1e-3`"))
}

fn int(e: &Expr, what: &str) -> DResult<usize> {
    bind::read_usize(e, what, 0).map_err(|m| err(e.span, m, "e.g. `10`"))
}

fn boolean(e: &Expr, what: &str) -> DResult<bool> {
    bind::read_bool(e, what).map_err(|m| err(e.span, m, "e.g. `true`"))
}

/// `counts(P)`, `spikes(P)`, or `P.state` (inside `max(..)` / `mean(..)`).
fn target(e: &Expr, want: &str) -> DResult<LossTarget> {
    let bad = || {
        err(
            e.span,
            format!("expected {want}"),
            "e.g. `cross_entropy(counts(s2))`, `cross_entropy(max(out.v))`, `first_spike(s2)`",
        )
    };
    match &e.kind {
        ExprKind::Field { base, field } => {
            let p = base.as_ident().ok_or_else(bad)?;
            Ok(LossTarget::Trace(p.to_string(), field.name.clone()))
        }
        ExprKind::Call { func, args } if args.len() == 1 && args[0].name.is_none() => {
            let p = args[0].value.as_ident().ok_or_else(bad)?.to_string();
            match func.name.as_str() {
                "counts" => Ok(LossTarget::Counts(p)),
                "spikes" => Ok(LossTarget::Spikes(p)),
                _ => Err(bad()),
            }
        }
        ExprKind::Ident(p) => Ok(LossTarget::Spikes(p.clone())),
        _ => Err(bad()),
    }
}

fn loss(e: &Expr) -> DResult<LossSpec> {
    const HINT: &str = "losses: cross_entropy(counts(P)), cross_entropy(max(P.v)), \
        cross_entropy(mean(P.v)), mse(counts(P), on = 1.0, off = 0.0, groups = 1), first_spike(P)";
    let (f, args) = call_of(e).ok_or_else(|| err(e.span, "expected a loss", HINT))?;
    let span = e.span;
    match f {
        "cross_entropy" | "ce" => {
            let sig = Signature::builtin(f, &["of"]);
            let a = bind::call(&sig, args, span)?;
            let of = a
                .get("of")
                .ok_or_else(|| err(span, "cross_entropy needs what it reads", HINT))?;
            match &of.kind {
                ExprKind::Call { func, args: inner }
                    if matches!(func.name.as_str(), "max" | "mean") && inner.len() == 1 =>
                {
                    let t = target(&inner[0].value, "a membrane, e.g. `max(out.v)`")?;
                    let LossTarget::Trace(..) = t else {
                        return Err(err(
                            inner[0].value.span,
                            "max/mean read a state, e.g. `out.v`",
                            HINT,
                        ));
                    };
                    let kind = if func.name == "max" {
                        LossKind::CrossEntropyMaxMembrane
                    } else {
                        LossKind::CrossEntropyMeanMembrane
                    };
                    Ok(LossSpec {
                        kind,
                        target: t,
                        span,
                    })
                }
                _ => {
                    let t = target(of, "`counts(P)`")?;
                    match t {
                        LossTarget::Counts(_) => Ok(LossSpec {
                            kind: LossKind::CrossEntropyCounts,
                            target: t,
                            span,
                        }),
                        _ => Err(err(
                            of.span,
                            "cross_entropy reads counts(P), max(P.v) or mean(P.v)",
                            HINT,
                        )),
                    }
                }
            }
        }
        "mse" => {
            let sig = Signature::builtin(f, &["of", "on", "off", "groups"]);
            let a = bind::call(&sig, args, span)?;
            let of = a
                .get("of")
                .ok_or_else(|| err(span, "mse needs what it reads", HINT))?;
            let t = target(of, "`counts(P)`")?;
            if !matches!(t, LossTarget::Counts(_)) {
                return Err(err(
                    of.span,
                    "mse reads spike counts: `mse(counts(P))`",
                    HINT,
                ));
            }
            let groups = a.usize("groups", 1, 1)?;
            Ok(LossSpec {
                kind: LossKind::MseCounts {
                    on: a.f32("on", 1.0, Range::Any)?,
                    off: a.f32("off", 0.0, Range::Any)?,
                    groups,
                },
                target: t,
                span,
            })
        }
        "first_spike" => {
            let sig = Signature::builtin(f, &["of"]);
            let a = bind::call(&sig, args, span)?;
            let of = a
                .get("of")
                .ok_or_else(|| err(span, "first_spike needs a population", HINT))?;
            let t = match target(of, "a population")? {
                LossTarget::Counts(p) | LossTarget::Spikes(p) => LossTarget::Spikes(p),
                LossTarget::Trace(..) => {
                    return Err(err(of.span, "first_spike reads spikes", HINT))
                }
            };
            Ok(LossSpec {
                kind: LossKind::FirstSpikeTime,
                target: t,
                span,
            })
        }
        other => {
            let known = ["cross_entropy", "mse", "first_spike"];
            let d = err(e.span, format!("unknown loss `{other}`"), HINT);
            Err(match did_you_mean(other, known) {
                Some(s) => d.hint(format!("did you mean `{s}`? {HINT}")),
                None => d,
            })
        }
    }
}

fn regularizers(e: &Expr) -> DResult<Vec<RegSpec>> {
    let items: Vec<&Expr> = match &e.kind {
        ExprKind::List(v) => v.iter().collect(),
        _ => vec![e],
    };
    let mut out = Vec::new();
    for it in items {
        const HINT: &str = "e.g. `regularize = rate(s1, lambda = 0.1, target = 0.05)`";
        let (f, args) = call_of(it).ok_or_else(|| err(it.span, "expected a regulariser", HINT))?;
        if f != "rate" {
            return Err(err(it.span, format!("unknown regulariser `{f}`"), HINT));
        }
        let sig = Signature::builtin(f, &["of", "lambda", "target"]);
        let a = bind::call(&sig, args, it.span)?;
        let of = a
            .get("of")
            .ok_or_else(|| err(it.span, "rate needs a population", HINT))?;
        let population = of
            .as_ident()
            .ok_or_else(|| err(of.span, "rate needs a population name", HINT))?
            .to_string();
        out.push(RegSpec {
            population,
            lambda: a.f32("lambda", 0.1, Range::Any)?,
            target: a.f32("target", 0.0, Range::Any)?,
            span: it.span,
        });
    }
    Ok(out)
}

fn optimizer(e: &Expr) -> DResult<OptimizerDecl> {
    const HINT: &str = "optimizers: sgd(lr, momentum, nesterov, weight_decay), \
        adam(lr, beta1, beta2, eps, weight_decay), adamw(...)";
    let (f, args) = call_of(e).ok_or_else(|| err(e.span, "expected an optimizer", HINT))?;
    let (kind, names): (_, &[&str]) = match f {
        "sgd" => (0, &["lr", "momentum", "nesterov", "weight_decay"]),
        "adam" => (1, &["lr", "beta1", "beta2", "eps", "weight_decay"]),
        "adamw" => (2, &["lr", "beta1", "beta2", "eps", "weight_decay"]),
        other => {
            let d = err(e.span, format!("unknown optimizer `{other}`"), HINT);
            return Err(match did_you_mean(other, ["sgd", "adam", "adamw"]) {
                Some(s) => d.hint(format!("did you mean `{s}`? {HINT}")),
                None => d,
            });
        }
    };
    let sig = Signature::builtin(f, names);
    let a = bind::call(&sig, args, e.span)?;
    let lr = a.f32("lr", if kind == 0 { 0.1 } else { 1e-3 }, Range::Positive)?;
    let (momentum, nesterov) = if kind == 0 {
        (
            a.f32("momentum", 0.0, Range::Any)?,
            a.bool("nesterov", false)?,
        )
    } else {
        (0.0, false)
    };
    if nesterov && momentum <= 0.0 {
        // torch refuses this too: Nesterov needs a momentum to look ahead with.
        return Err(err(
            e.span,
            "`nesterov = true` needs a momentum > 0",
            "e.g. `sgd(lr = 0.1, momentum = 0.9, nesterov = true)`",
        ));
    }
    Ok(match kind {
        0 => OptimizerDecl {
            kind: OptimizerKind::Sgd { momentum, nesterov },
            lr,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: a.f32("weight_decay", 0.0, Range::Any)?,
        },
        _ => OptimizerDecl {
            kind: if kind == 1 {
                OptimizerKind::Adam
            } else {
                OptimizerKind::AdamW
            },
            lr,
            betas: (
                a.f32("beta1", 0.9, Range::Any)?,
                a.f32("beta2", 0.999, Range::Any)?,
            ),
            eps: a.f32("eps", 1e-8, Range::Any)?,
            weight_decay: a.f32(
                "weight_decay",
                if kind == 1 { 0.0 } else { 1e-2 },
                Range::Any,
            )?,
        },
    })
}

fn lr_schedule(e: &Expr) -> DResult<LrScheduleDecl> {
    const HINT: &str = "schedules: constant, step(step_size, gamma), cosine(eta_min)";
    let (f, args) = call_of(e).ok_or_else(|| err(e.span, "expected a schedule", HINT))?;
    Ok(match f {
        "constant" => LrScheduleDecl::Constant,
        "step" => {
            let sig = Signature::builtin(f, &["step_size", "gamma"]);
            let a = bind::call(&sig, args, e.span)?;
            let step_size = a.usize("step_size", 10, 0)?.max(1);
            LrScheduleDecl::Step {
                step_size,
                gamma: a.f32("gamma", 0.1, Range::Any)?,
            }
        }
        "cosine" => {
            let sig = Signature::builtin(f, &["eta_min"]);
            let a = bind::call(&sig, args, e.span)?;
            LrScheduleDecl::Cosine {
                eta_min: a.f32("eta_min", 0.0, Range::Any)?,
            }
        }
        other => return Err(err(e.span, format!("unknown schedule `{other}`"), HINT)),
    })
}

fn data(e: &Expr) -> DResult<DataDecl> {
    const HINT: &str = "data: yinyang, mnist(\"DIR\"), fashion_mnist(\"DIR\") (either with \
        `sequence = rows | columns`), npy(x = \"X.npy\", y = \"Y.npy\", test_x = .., test_y = ..)";
    let (f, args) = call_of(e).ok_or_else(|| err(e.span, "expected a dataset", HINT))?;
    Ok(match f {
        "yinyang" => DataDecl::YinYang,
        "mnist" | "fashion_mnist" => {
            let sig = Signature::builtin(f, &["dir", "sequence"]);
            let a = bind::call(&sig, args, e.span)?;
            let default = if f == "mnist" {
                "data/mnist"
            } else {
                "data/fashion-mnist"
            };
            let dir = a.string("dir")?.unwrap_or_else(|| default.to_string());
            let sequence = match a.get("sequence") {
                None => None,
                Some(v) => match v.as_ident().and_then(ImageSequence::from_name) {
                    Some(s) => Some(s),
                    None => {
                        return Err(err(
                            v.span,
                            format!("unknown sequence order `{}`", v.as_ident().unwrap_or("?")),
                            "`sequence = rows` feeds each image as 28 steps of one 28-pixel \
                             row (input `[T, 28]`, `T = 28`); `sequence = columns` feeds its \
                             columns",
                        ))
                    }
                },
            };
            if f == "mnist" {
                DataDecl::Mnist { dir, sequence }
            } else {
                DataDecl::FashionMnist { dir, sequence }
            }
        }
        "npy" => {
            let sig = Signature::builtin(f, &["x", "y", "test_x", "test_y"]);
            let a = bind::call(&sig, args, e.span)?;
            let need = |n: &str| {
                a.string(n)?
                    .ok_or_else(|| err(e.span, format!("npy needs `{n} = \"...\"`"), HINT))
            };
            DataDecl::Npy {
                x: need("x")?,
                y: need("y")?,
                test_x: a.string("test_x")?,
                test_y: a.string("test_y")?,
            }
        }
        other => {
            let d = err(e.span, format!("unknown dataset `{other}`"), HINT);
            return Err(
                match did_you_mean(other, ["yinyang", "mnist", "fashion_mnist", "npy"]) {
                    Some(s) => d.hint(format!("did you mean `{s}`? {HINT}")),
                    None => d,
                },
            );
        }
    })
}

fn surrogate(e: &Expr) -> DResult<Surrogate> {
    let hint = format!(
        "surrogates: {} (each with an optional alpha, e.g. `atan(alpha = 2.0)`)",
        SurrogateKind::NAMES.join(", ")
    );
    let (f, args) = call_of(e).ok_or_else(|| err(e.span, "expected a surrogate", hint.clone()))?;
    let Some(kind) = SurrogateKind::from_name(f) else {
        let d = err(e.span, format!("unknown surrogate `{f}`"), hint.clone());
        return Err(
            match did_you_mean(f, SurrogateKind::NAMES.iter().copied()) {
                Some(s) => d.hint(format!("did you mean `{s}`? {hint}")),
                None => d,
            },
        );
    };
    let sig = Signature::builtin(f, &["alpha"]);
    let a = bind::call(&sig, args, e.span)?;
    let alpha = a.f32("alpha", kind.default_alpha(), Range::Positive)?;
    Ok(Surrogate { kind, alpha })
}

/// `adjust = none | bpsta | bpsta(spatial = true, temporal = true, gamma = 0.2)`.
fn adjust(e: &Expr, g: &mut GradOptions) -> DResult<()> {
    const HINT: &str = "`adjust = bpsta` (both adjustments) or \
        `adjust = bpsta(spatial = true, temporal = false, gamma = 0.2)`, or `none`";
    let (f, args) = call_of(e).ok_or_else(|| err(e.span, "expected an adjustment", HINT))?;
    match f {
        "none" => {
            g.bpsta_spatial = false;
            g.bpsta_temporal = None;
        }
        "bpsta" => {
            let sig = Signature::builtin(f, &["spatial", "temporal", "gamma"]);
            let a = bind::call(&sig, args, e.span)?;
            g.bpsta_spatial = a.bool("spatial", true)?;
            let gamma = a.f32("gamma", 0.2, Range::Any)?;
            g.bpsta_temporal = a.bool("temporal", true)?.then_some(gamma);
        }
        other => return Err(err(e.span, format!("unknown adjustment `{other}`"), HINT)),
    }
    Ok(())
}

/// A setting written twice in one file's `train { }` is a mistake, not an override (which
/// one counts would depend on the order). Overrides come from another file (`--set`, the
/// `<command line>`) and are meant to replace the block's.
fn refuse_repeats(block: &[Binding]) -> DResult<()> {
    for (i, b) in block.iter().enumerate() {
        let same = |p: &&Binding| p.name.name == b.name.name && p.span.file == b.span.file;
        if let Some(first) = block[..i].iter().find(same) {
            return Err(Diagnostic::new(
                ErrorKind::Duplicate,
                format!("training setting `{}` is given twice", b.name.name),
            )
            .at(b.name.span, "second setting")
            .note(first.name.span, "first given here")
            .hint("keep one of them; to change a setting for one run, use `--set NAME=EXPR`"));
        }
    }
    Ok(())
}

/// Reads the settings (the block's, then `overrides` in order; a later one wins).
pub fn config(block: &[Binding], span: Span, model_batch: usize) -> DResult<TrainConfig> {
    let mut loss_spec = None;
    let mut regs = Vec::new();
    let mut grad = GradOptions::default();
    let mut recompute = false;
    let mut input_grads = false;
    let mut data_span = None;
    let mut local = Vec::new();
    let mut local_span = None;
    let mut settings = TrainSettings {
        optimizer: OptimizerDecl {
            kind: OptimizerKind::Adam,
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
        },
        schedule: LrScheduleDecl::Constant,
        warmup: 0,
        epochs: 10,
        batch: model_batch,
        data: None,
        clip: None,
        validation: 0,
    };
    refuse_repeats(block)?;
    for b in block {
        let v = &b.value;
        match b.name.name.as_str() {
            "loss" => loss_spec = Some(loss(v)?),
            "regularize" => regs = regularizers(v)?,
            "method" => match v.as_ident() {
                Some("bptt") => {}
                _ => {
                    return Err(err(
                        v.span,
                        "unknown training method",
                        "methods: bptt (surrogate-gradient BPTT; BPSTA via `adjust = bpsta`)",
                    ))
                }
            },
            "surrogate" => grad.surrogate = surrogate(v)?,
            "detach_reset" => grad.detach_reset = boolean(v, "detach_reset")?,
            "adjust" => adjust(v, &mut grad)?,
            "optimizer" => settings.optimizer = optimizer(v)?,
            "lr_schedule" => settings.schedule = lr_schedule(v)?,
            "warmup" => settings.warmup = int(v, "warmup")?,
            "epochs" => settings.epochs = int(v, "epochs")?,
            "batch" => {
                settings.batch = int(v, "batch")?;
                if settings.batch == 0 {
                    return Err(err(v.span, "`batch` must be >= 1", "e.g. `batch = 64`"));
                }
            }
            "data" => {
                settings.data = Some(data(v)?);
                data_span = Some(v.span);
            }
            "clip" => {
                settings.clip = Some(number(v, "clip", Range::Positive)?);
            }
            "validation" => settings.validation = int(v, "validation")?,
            "checkpoint" => {
                recompute = match v.as_ident() {
                    Some("recompute") => true,
                    Some("save") => false,
                    _ => {
                        return Err(err(
                            v.span,
                            "unknown checkpoint mode",
                            "checkpoint = save (keep every state for the backward pass, the \
                             default) or checkpoint = recompute (recompute them per layer)",
                        ))
                    }
                }
            }
            "input_grads" => input_grads = boolean(v, "input_grads")?,
            "local" => {
                local = super::local_schedule::parse(v)?;
                local_span = Some(b.name.span);
            }
            other => {
                let d = Diagnostic::new(
                    ErrorKind::UnknownName,
                    format!("unknown training setting `{other}`"),
                )
                .at(b.name.span, "not a training setting");
                return Err(match did_you_mean(other, SETTINGS.iter().copied()) {
                    Some(s) => d.hint(format!("did you mean `{s}`?")),
                    None => d.hint(format!("settings: {}", SETTINGS.join(", "))),
                });
            }
        }
    }
    if let Some(at) = local_span {
        // The last word on each setting counts (`--set` overrides the file's).
        let gradient = block
            .iter()
            .rev()
            .find(|b| GRADIENT_ONLY.contains(&b.name.name.as_str()));
        if let Some(g) = gradient {
            let hint = if g.name.name == "epochs" {
                "local learning counts epochs per stage: `layer(c1, epochs = 2)`".to_string()
            } else {
                format!(
                    "drop `{}`: a model learns by its loss (gradient training) or by its \
                     projections' rules (`local = [..]`), not both",
                    g.name.name
                )
            };
            return Err(Diagnostic::new(
                ErrorKind::BadValue,
                format!(
                    "`{}` is a setting of gradient training, but this block trains by local \
                     rules",
                    g.name.name
                ),
            )
            .at(g.name.span, "gradient training")
            .note(at, "local learning chosen here")
            .hint(hint));
        }
        return Ok(TrainConfig {
            // Never read: autodiff refuses a block with `local`, and nothing else reads the
            // loss of a module that is not differentiated.
            loss: LossSpec {
                kind: LossKind::CrossEntropyCounts,
                target: LossTarget::Counts(String::new()),
                span: at,
            },
            regularizers: regs,
            grad,
            recompute,
            input_grads,
            settings,
            data_span,
            local,
        });
    }
    let loss =
        loss_spec.ok_or_else(|| {
            Diagnostic::new(ErrorKind::BadValue, "the training settings have no loss")
            .at(span, "no `loss = ...` here")
            .hint("e.g. `loss = cross_entropy(counts(out))`, or for training by the projections' \
                   own rules `local = [layer(c1, epochs = 2), ..]`")
        })?;
    Ok(TrainConfig {
        loss,
        regularizers: regs,
        grad,
        recompute,
        input_grads,
        settings,
        data_span,
        local,
    })
}

/// The side of an MNIST / Fashion-MNIST image (both are 28 x 28).
const MNIST_SIDE: usize = 28;

/// Checks the model's input against an image dataset named in its train block, so a
/// mismatch is reported at the input (with the data setting) before anything is built:
/// a plain `mnist(..)` feeds 784 values per step (`input image: [784]`, `[1, 28, 28]`,
/// or `[T, 784]`: the image at every step); `sequence = rows | columns` feeds 28 steps of 28
/// pixels (`input x: [T, 28]` with `T = 28`). Other datasets' shapes are known only once
/// loaded; `snnc train` checks those.
pub fn check_data_input(m: &crate::ir::net::Module) -> DResult<()> {
    use crate::ir::net::NodeKind;
    let Some(cfg) = &m.train else { return Ok(()) };
    let (name, sequence) = match &cfg.settings.data {
        Some(DataDecl::Mnist { sequence, .. }) => ("mnist", *sequence),
        Some(DataDecl::FashionMnist { sequence, .. }) => ("fashion_mnist", *sequence),
        _ => return Ok(()),
    };
    // With several inputs `snnc train` says it feeds one; nothing to compare here.
    let [inp] = m.inputs.as_slice() else {
        return Ok(());
    };
    let node = &m.nodes[*inp];
    let NodeKind::Input { dims, time_varying } = &node.kind else {
        return Ok(());
    };
    let f: usize = dims.iter().product();
    let shown = format!(
        "[{}{}]",
        if *time_varying { "T, " } else { "" },
        dims.iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let side = MNIST_SIDE;
    let with_data = |d: Diagnostic| match cfg.data_span {
        Some(s) => d.note(s, "the dataset is chosen here"),
        None => d,
    };
    let shape_err = |msg: String, hint: String| {
        with_data(
            Diagnostic::new(ErrorKind::Shape, msg)
                .at(node.span, format!("input `{}` is {shown}", node.name))
                .hint(hint),
        )
    };
    match sequence {
        None if f == side * side => Ok(()),
        None => {
            let hint = if *time_varying && f == side {
                format!(
                    "to feed each image row by row ({side} steps of {side} pixels), write \
                     `data = {name}(\"DIR\", sequence = rows)` and `T = {side}`"
                )
            } else {
                format!(
                    "declare the input `[{}]` (or `[1, {side}, {side}]`), or feed the images as \
                     sequences with `{name}(\"DIR\", sequence = rows)` and `input x: [T, {side}]`",
                    side * side
                )
            };
            Err(shape_err(
                format!(
                    "`{name}` gives {} values per sample, but input `{}` takes {f} per step",
                    side * side,
                    node.name
                ),
                hint,
            ))
        }
        Some(order) => {
            let what = match order {
                ImageSequence::Rows => "row",
                ImageSequence::Columns => "column",
            };
            let fix = format!(
                "declare `input {}: [T, {side}]` and set `T = {side}`",
                node.name
            );
            if !*time_varying || f != side {
                return Err(shape_err(
                    format!(
                        "`sequence = {}` feeds each image as {side} steps of one {side}-pixel \
                         {what}, but input `{}` is {shown}",
                        order.name(),
                        node.name
                    ),
                    fix,
                ));
            }
            if m.t != side {
                return Err(shape_err(
                    format!(
                        "`sequence = {}` feeds each image as {side} steps, but the model has \
                         T = {}",
                        order.name(),
                        m.t
                    ),
                    format!("set `T = {side}`: one step per image {what}"),
                ));
            }
            Ok(())
        }
    }
}
