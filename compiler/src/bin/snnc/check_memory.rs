//! `snnc check`'s memory estimate (inference and, for a model with a `train { }` block,
//! training), and the located budget check `run`, `train` and `eval` make before loading.

use snn_runtime::budget::Budget;
use snn_runtime::exec::Footprint;
use snn_runtime::plan::Plan;
use snnc::diag::{DResult, Diagnostic, ErrorKind};
use snnc::front::Parsed;
use snnc::ir::kernel::Program;
use snnc::{footprint, Compiler};

/// Prints the estimate on stderr; a model over the budget is a warning here (`run` and
/// `train` refuse it).
pub fn report(
    c: &mut Compiler,
    parsed: &Parsed,
    program: &Program,
    steps: Option<usize>,
    batch: Option<usize>,
) -> DResult<()> {
    let plan = &program.plan;
    let t = steps.unwrap_or(plan.t);
    if t == 0 || batch == Some(0) {
        return Err(Diagnostic::new(
            ErrorKind::BadValue,
            "--steps and --batch must be >= 1",
        ));
    }
    let m = c.module_until(parsed, "shapes")?;
    let budget = Budget::current();
    let mut estimates = vec![(
        "inference",
        Footprint::run(plan, t, batch.unwrap_or(plan.batch), false),
    )];
    if let Some(cfg) = m.train.as_ref().filter(|t| !t.local.is_empty()) {
        // Local learning runs the inference plan (and the rules) at the train block's batch.
        let b = batch.unwrap_or(cfg.settings.batch);
        estimates.push(("local learning", Footprint::run(plan, t, b, false)));
    } else if m.train.is_some() {
        // The training plan adds backward buffers; compiled the way `snnc train` does.
        let train_opts = snnc::Options {
            train: true,
            ..c.opts.clone()
        };
        let saved = std::mem::replace(&mut c.opts, train_opts);
        let compiled = c.compile(parsed);
        c.opts = saved;
        match compiled {
            Ok(p) => {
                let b = batch.unwrap_or_else(|| train_batch(&p.plan));
                estimates.push(("training", Footprint::run(&p.plan, t, b, true)));
            }
            Err(d) => eprintln!("memory: training not estimated ({})", d.message),
        }
    }
    for (what, fp) in &estimates {
        eprintln!("memory: {what} {}", footprint::summary(&m, fp));
    }
    eprintln!("memory budget: {budget}");
    for (what, fp) in &estimates {
        if fp.total > budget.bytes {
            eprintln!(
                "warning: {what}: {}, over the memory budget ({budget}); `snnc {}` would refuse it (hint: lower --batch or --steps, shrink the layer, or raise --max-memory)",
                fp.describe(),
                if *what == "training" { "train" } else { "run" }
            );
        }
    }
    Ok(())
}

fn train_batch(plan: &Plan) -> usize {
    plan.train.as_ref().map_or(plan.batch, |t| t.settings.batch)
}

/// The hint of `snnc train` and `eval`, which have no --steps.
pub const TRAIN_HINT: &str = "lower the batch (the train block's `batch`, or --batch), shrink the layer, or raise --max-memory (e.g. --max-memory 64G)";

/// Refuses, located at the layer that needs the most, a footprint over the current budget.
pub fn ensure(c: &Compiler, parsed: &Parsed, fp: &Footprint, hint: &str) -> DResult<()> {
    let budget = Budget::current();
    if fp.total <= budget.bytes {
        return Ok(());
    }
    let m = c.module_until(parsed, "shapes")?;
    footprint::check(&m, fp, &budget, hint)
}
