//! `snnc run`: compile, build the kernels, run on the CPU or a CUDA GPU, print or save the
//! outputs.

use std::path::PathBuf;
use std::time::Instant;

use snn_runtime::exec::Footprint;
use snn_runtime::io::npy;
use snn_runtime::plan::OutputKind;
use snn_runtime::Tensor;
use snnc::diag::{DResult, Diagnostic, ErrorKind};
use snnc::front::Parsed;
use snnc::session::{self, runtime_diag};
use snnc::{footprint, Compiler};

use crate::check_memory;

pub struct RunArgs {
    pub weights: Option<PathBuf>,
    pub inputs: Vec<PathBuf>,
    pub steps: Option<usize>,
    pub batch: Option<usize>,
    pub seed: Option<u64>,
    pub set: Vec<String>,
    pub out: Option<PathBuf>,
    pub save_weights: Option<PathBuf>,
    pub device: String,
    /// Skip the calibration run (projections left to the cost model keep the assumed rate).
    pub no_calibrate: bool,
}

pub fn run(c: &mut Compiler, parsed: &Parsed, args: &RunArgs) -> DResult<()> {
    session::parse_device(&args.device)?;
    let t0 = Instant::now();
    let program = c.compile(parsed)?;
    let compile_ms = t0.elapsed().as_secs_f64() * 1e3;
    // Sized before anything is allocated: with random inputs the whole run, with input
    // files (whose batch is known once read) the weights now and the run below.
    let plan = &program.plan;
    let before_load = if args.inputs.is_empty() {
        let t = args.steps.unwrap_or(plan.t).max(1);
        Footprint::run(plan, t, args.batch.unwrap_or(plan.batch).max(1), false)
    } else {
        Footprint::weights(plan, false)
    };
    check_memory::ensure(c, parsed, &before_load, footprint::RUN_HINT)?;
    let mut loaded = session::load_device(&program, &args.device, None)?;
    let s = &mut loaded.session;
    let plan = program.plan.clone();
    let seed = args.seed.unwrap_or(plan.seed);
    if args.seed.is_some() {
        s.init_weights(seed).map_err(runtime_diag)?;
    }
    if let Some(w) = &args.weights {
        s.load_weights(w).map_err(runtime_diag)?;
    }
    for kv in &args.set {
        let Some((k, v)) = kv.split_once('=') else {
            return Err(Diagnostic::new(
                ErrorKind::BadArgument,
                format!("`--set {kv}` is not NAME=VALUE"),
            )
            .hint("e.g. `--set s1.tau=4.0`"));
        };
        let v: f32 = v.trim().parse().map_err(|_| {
            Diagnostic::new(
                ErrorKind::BadValue,
                format!("`{v}` in `--set {kv}` is not a number"),
            )
        })?;
        s.set_param(k.trim(), v).map_err(runtime_diag)?;
    }
    if let Some(p) = &args.save_weights {
        s.save_weights(p).map_err(runtime_diag)?;
    }

    // Inputs: from .npy files, or seeded random values of the model's shapes.
    let steps = args.steps.unwrap_or(plan.t);
    if steps == 0 {
        return Err(Diagnostic::new(ErrorKind::BadValue, "--steps must be >= 1"));
    }
    let (inputs, batch) = if args.inputs.is_empty() {
        let b = args.batch.unwrap_or(plan.batch);
        if b == 0 {
            return Err(Diagnostic::new(ErrorKind::BadValue, "--batch must be >= 1"));
        }
        (s.random_inputs(steps, b, seed), b)
    } else {
        if args.inputs.len() != plan.inputs.len() {
            let names: Vec<&str> = plan.inputs.iter().map(|i| i.name.as_str()).collect();
            return Err(Diagnostic::new(
                ErrorKind::BadArgument,
                format!(
                    "the model has {} input(s) ({}) but {} --input file(s) were given",
                    names.len(),
                    names.join(", "),
                    args.inputs.len()
                ),
            )
            .hint("pass one --input FILE.npy per model input, in order"));
        }
        let mut v = Vec::new();
        for p in &args.inputs {
            v.push(npy::read_npy(p).map_err(runtime_diag)?);
        }
        let d = &plan.inputs[0];
        let b = if d.time_varying {
            v[0].shape.get(1)
        } else {
            v[0].shape.first()
        }
        .copied()
        .unwrap_or(0);
        if b == 0 {
            return Err(Diagnostic::new(
                ErrorKind::Shape,
                format!(
                    "the .npy file `{}` holds 0 samples",
                    args.inputs[0].display()
                ),
            )
            .hint("an input needs a batch of at least 1 sample"));
        }
        if let Some(want) = args.batch {
            if want != b {
                return Err(Diagnostic::new(
                    ErrorKind::Shape,
                    format!("--batch {want} but the input file holds a batch of {b}"),
                ));
            }
        }
        (v, b)
    };
    let fp = Footprint::run(&plan, steps, batch, false);
    check_memory::ensure(c, parsed, &fp, footprint::RUN_HINT)?;
    // Projections of spikes left to the cost model with no known rate: count the rates on
    // these inputs, and recompile if that changes a form.
    if !args.no_calibrate {
        session::calibrate_loaded(c, parsed, &mut loaded, &args.device, &inputs, steps, batch)?;
    }
    let s = &mut loaded.session;
    let t1 = Instant::now();
    let outputs = s.run(&inputs, steps, batch).map_err(runtime_diag)?;
    let run_ms = t1.elapsed().as_secs_f64() * 1e3;

    say!(
        "model `{}`: T = {steps}, batch = {batch}, {}, compile {compile_ms:.1} ms, run {run_ms:.1} ms",
        plan.name,
        loaded.kernels
    );
    for (decl, t) in &outputs {
        say!("{}", summary(&decl.name, decl.kind, t));
    }
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir).map_err(|e| {
            Diagnostic::new(
                ErrorKind::Io,
                format!("cannot create `{}`: {e}", dir.display()),
            )
        })?;
        for (decl, t) in &outputs {
            let path = dir.join(format!("{}.npy", decl.name));
            npy::write_npy(&path, t).map_err(runtime_diag)?;
        }
        say!("saved {} output(s) to {}", outputs.len(), dir.display());
    }
    Ok(())
}

/// One readable paragraph per output: shape, statistics, and the values when small.
fn summary(name: &str, kind: OutputKind, t: &Tensor) -> String {
    let n = t.data.len().max(1) as f64;
    let mean = t.data.iter().map(|&x| x as f64).sum::<f64>() / n;
    let shape = format!("{:?}", t.shape);
    match kind {
        OutputKind::Spikes => format!("  {name} {shape}: spike rate {:.4}", mean),
        OutputKind::Trace => {
            let min = t.data.iter().copied().fold(f32::INFINITY, f32::min);
            let max = t.data.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            format!("  {name} {shape}: mean {mean:.4}, min {min:.4}, max {max:.4}")
        }
        OutputKind::Counts => {
            let b = t.shape[0];
            let per = t.data.len() / b.max(1);
            let mut s = format!("  {name} {shape}: mean count {mean:.3}");
            if per <= 16 {
                for i in 0..b.min(8) {
                    let row = &t.data[i * per..(i + 1) * per];
                    let arg = row
                        .iter()
                        .enumerate()
                        .fold(0, |best, (j, &x)| if x > row[best] { j } else { best });
                    let vals: Vec<String> = row.iter().map(|x| format!("{x}")).collect();
                    s.push_str(&format!(
                        "\n    sample {i}: [{}] -> argmax {arg}",
                        vals.join(", ")
                    ));
                }
                if b > 8 {
                    s.push_str(&format!("\n    ... {} more samples", b - 8));
                }
            }
            s
        }
    }
}
