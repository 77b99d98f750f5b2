//! `snnc features`: forward-only inference over an image dataset's train and test splits,
//! one model output reduced over time per image, written as `.npy` for a linear readout
//! (`snnc readout`, or `scripts/score_features.py`'s LinearSVC as Spyker's example scores
//! its features).

use std::path::{Path, PathBuf};
use std::time::Instant;

use snn_runtime::data::Dataset;
use snn_runtime::exec::Footprint;
use snn_runtime::io::npy;
use snn_runtime::plan::{OutputDecl, OutputKind, Plan};
use snn_runtime::Tensor;
use snnc::diag::{did_you_mean, DResult, Diagnostic, ErrorKind, Span};
use snnc::front::ast::ModelDef;
use snnc::front::Parsed;
use snnc::session::{self, runtime_diag};
use snnc::{footprint, Compiler};

use crate::check_memory;

pub struct FeaturesArgs {
    pub weights: Option<PathBuf>,
    /// `mnist(DIR)` or `fashion_mnist(DIR)`.
    pub data: String,
    pub out: PathBuf,
    /// The first N images of each split (default: all).
    pub train: Option<usize>,
    pub test: Option<usize>,
    pub batch: Option<usize>,
    /// A plan output name (`n2.spikes`) or its population (`n2`); default the first output.
    pub output: Option<String>,
    /// Spike-any (count > 0) instead of counts.
    pub any: bool,
    pub seed: Option<u64>,
    pub device: String,
    pub no_calibrate: bool,
    pub quiet: bool,
}

/// The file names `snnc readout` and `scripts/score_features.py` read.
pub const FILES: [&str; 4] = [
    "train_features.npy",
    "train_labels.npy",
    "test_features.npy",
    "test_labels.npy",
];

pub fn features(c: &mut Compiler, parsed: &Parsed, args: &FeaturesArgs) -> DResult<()> {
    session::parse_device(&args.device)?;
    let dir = data_dir(&args.data)?;
    if let Some(w) = &args.weights {
        if !w.is_file() {
            return Err(Diagnostic::new(
                ErrorKind::MissingFile,
                format!("weights file `{}` not found", w.display()),
            )
            .hint("pass the weights.safetensors a training run wrote (or leave --weights out for the model's seeded initialisation)"));
        }
    }
    let program = c.compile(parsed)?;
    let plan = program.plan.clone();
    let model = root_model(parsed);
    let out_i = pick_output(&plan, model, args.output.as_deref())?;
    let decl = plan.outputs[out_i].clone();
    let (mut train, mut test) = load_mnist(&args.data, &dir)?;
    train = train.subset(0..args.train.unwrap_or(train.len()).min(train.len()));
    test = test.subset(0..args.test.unwrap_or(test.len()).min(test.len()));
    check_input(&plan, model, &train)?;
    let batch = args.batch.unwrap_or(plan.batch).max(1);
    let t = plan.t;
    check_memory::ensure(
        c,
        parsed,
        &Footprint::run(&plan, t, batch, false),
        footprint::RUN_HINT,
    )?;

    let mut loaded = session::load_device(&program, &args.device, None)?;
    let s = &mut loaded.session;
    if let Some(seed) = args.seed {
        s.init_weights(seed).map_err(runtime_diag)?;
    }
    if let Some(w) = &args.weights {
        s.load_weights(w).map_err(runtime_diag)?;
    }
    // Projections left to the cost model: count their rates on the first training batch.
    if !args.no_calibrate && !train.is_empty() {
        let idx: Vec<usize> = (0..batch.min(train.len())).collect();
        let x = input_tensor(&plan, &train, &idx);
        session::calibrate_loaded(c, parsed, &mut loaded, &args.device, &[x], t, idx.len())?;
    }
    let s = &mut loaded.session;

    std::fs::create_dir_all(&args.out).map_err(|e| {
        Diagnostic::new(
            ErrorKind::Io,
            format!("cannot create `{}`: {e}", args.out.display()),
        )
    })?;
    let bar = if args.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new((train.len() + test.len()) as u64)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} images ({per_sec}, {elapsed})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    let start = Instant::now();
    let mut shapes = vec![];
    let mut density = 0.0;
    for (split, d, files) in [("train", &train, &FILES[..2]), ("test", &test, &FILES[2..])] {
        bar.set_prefix(split);
        let x = extract(s, &plan, d, &decl, batch, args.any, &bar)?;
        density += x.data.iter().filter(|&&v| v != 0.0).count() as f64;
        let y = Tensor {
            shape: vec![d.len()],
            data: d.y.iter().map(|&l| l as f32).collect(),
        };
        shapes.push(x.shape.clone());
        npy::write_npy(args.out.join(files[0]), &x).map_err(runtime_diag)?;
        npy::write_npy(args.out.join(files[1]), &y).map_err(runtime_diag)?;
    }
    bar.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    let images = train.len() + test.len();
    let values: usize = shapes.iter().map(|s| s.iter().product::<usize>()).sum();
    say!(
        "features of `{}` ({}, {} over T = {t}): train {:?}, test {:?}, {:.1}% non-zero",
        plan.name,
        decl.name,
        if args.any {
            "spike-any"
        } else {
            "spike counts"
        },
        shapes[0],
        shapes[1],
        100.0 * density / values.max(1) as f64
    );
    say!(
        "{images} images in {secs:.2} s: {:.1} images/s (batch {batch}, {}, {})",
        images as f64 / secs.max(1e-9),
        s.device_name(),
        loaded.kernels
    );
    say!("wrote {} in {}", FILES.join(", "), args.out.display());
    Ok(())
}

/// The directory of `mnist(DIR)` / `fashion_mnist(DIR)` (quotes optional).
fn data_dir(spec: &str) -> DResult<PathBuf> {
    let bad = || {
        Diagnostic::new(
            ErrorKind::BadArgument,
            format!("--data `{spec}` is not a dataset snnc features reads"),
        )
        .hint("--data mnist(DIR) or --data fashion_mnist(DIR), DIR holding the IDX files (scripts/fetch-data.sh)")
    };
    let s = spec.trim();
    let (name, rest) = s.split_once('(').ok_or_else(bad)?;
    if !matches!(name.trim(), "mnist" | "fashion_mnist") {
        return Err(bad());
    }
    let inner = rest.strip_suffix(')').ok_or_else(bad)?.trim();
    let inner = inner
        .strip_prefix('"')
        .and_then(|i| i.strip_suffix('"'))
        .unwrap_or(inner);
    if inner.is_empty() {
        return Err(bad());
    }
    Ok(PathBuf::from(inner))
}

fn load_mnist(spec: &str, dir: &Path) -> DResult<(Dataset, Dataset)> {
    use snn_runtime::data::mnist;
    // The runtime's errors name the missing file and the fetch script.
    let rt = |e: snn_runtime::RuntimeError| {
        Diagnostic::new(ErrorKind::MissingFile, format!("--data {spec}: {e}"))
    };
    Ok((
        mnist::load(dir, true).map_err(rt)?,
        mnist::load(dir, false).map_err(rt)?,
    ))
}

/// The root file's model (the one compiled).
fn root_model(parsed: &Parsed) -> Option<&ModelDef> {
    parsed
        .files
        .iter()
        .find(|(id, _)| *id == parsed.root)
        .and_then(|(_, f)| f.models.first())
}

/// The span of all the model's output statements, for "its outputs are here".
fn outputs_span(model: Option<&ModelDef>) -> Option<Span> {
    let m = model?;
    Some(m.outputs.first()?.span.to(m.outputs.last()?.span))
}

/// `--output NAME`: a plan output's full name (`n2.spikes`), or a population with exactly
/// one output (`n2`); default the first.
fn pick_output(plan: &Plan, model: Option<&ModelDef>, want: Option<&str>) -> DResult<usize> {
    let Some(want) = want else { return Ok(0) };
    if let Some(i) = plan.outputs.iter().position(|o| o.name == want) {
        return Ok(i);
    }
    let by_pop: Vec<usize> = (0..plan.outputs.len())
        .filter(|&i| plan.outputs[i].name.split('.').next() == Some(want))
        .collect();
    if let [i] = by_pop.as_slice() {
        return Ok(*i);
    }
    let names: Vec<String> = plan.outputs.iter().map(|o| o.name.clone()).collect();
    let listed: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    let mut d = Diagnostic::new(
        ErrorKind::UnknownName,
        if by_pop.len() > 1 {
            format!(
                "`{want}` names {} outputs of model `{}`",
                by_pop.len(),
                plan.name
            )
        } else {
            format!("model `{}` has no output `{want}`", plan.name)
        },
    );
    if let Some(span) = outputs_span(model) {
        d = d.at(span, format!("its outputs: {}", listed.join(", ")));
    }
    Err(match did_you_mean(want, names.iter().map(|s| s.as_str())) {
        Some(s) => d.hint(format!("did you mean `--output {s}`?")),
        None => d.hint(format!("--output takes one of {}", listed.join(", "))),
    })
}

/// The model must have one input taking an image per sample (any shape of 784 values).
fn check_input(plan: &Plan, model: Option<&ModelDef>, d: &Dataset) -> DResult<()> {
    let at = |i: usize, dg: Diagnostic, label: String| match model.and_then(|m| m.inputs.get(i)) {
        Some(inp) => dg.at(inp.span, label),
        None => dg,
    };
    if plan.inputs.len() != 1 {
        let dg = Diagnostic::new(
            ErrorKind::BadArgument,
            format!(
                "`snnc features` feeds one dataset into one input; model `{}` has {}",
                plan.name,
                plan.inputs.len()
            ),
        )
        .hint("extract features from a model with a single image input");
        return Err(at(1, dg, "a second input".into()));
    }
    let inp = &plan.inputs[0];
    let f: usize = inp.shape.iter().product();
    if f != d.features() {
        let dg = Diagnostic::new(
            ErrorKind::Shape,
            format!(
                "dataset `{}` gives {} values per image ({:?}), but input `{}` takes {f}",
                d.name,
                d.features(),
                d.shape,
                inp.name
            ),
        )
        .hint(format!(
            "declare the input with the images' shape, e.g. `input {}: [1, 28, 28]`",
            inp.name
        ));
        return Err(at(
            0,
            dg,
            format!("input `{}` is {:?}", inp.name, inp.shape),
        ));
    }
    Ok(())
}

/// One batch as the model's input: `[B, ..shape]`, or the image repeated at every step
/// (`[T, B, ..shape]`) for a per-step input.
pub fn input_tensor(plan: &Plan, d: &Dataset, idx: &[usize]) -> Tensor {
    let inp = &plan.inputs[0];
    let mut x = Vec::with_capacity(idx.len() * d.features());
    for &i in idx {
        x.extend_from_slice(d.sample(i));
    }
    let mut shape = vec![idx.len()];
    let mut data = x;
    if inp.time_varying {
        shape.insert(0, plan.t);
        data = data.repeat(plan.t);
    }
    shape.extend_from_slice(&inp.shape);
    Tensor { shape, data }
}

/// `[N, F]` features of every image of `d`, in order, batch by batch.
fn extract(
    s: &mut snn_runtime::Session,
    plan: &Plan,
    d: &Dataset,
    decl: &OutputDecl,
    batch: usize,
    any: bool,
    bar: &indicatif::ProgressBar,
) -> DResult<Tensor> {
    let f: usize = decl.shape.iter().product();
    let mut data = Vec::with_capacity(d.len() * f);
    let idx: Vec<usize> = (0..d.len()).collect();
    for chunk in idx.chunks(batch) {
        let x = input_tensor(plan, d, chunk);
        let out = s
            .run_output(&[x], plan.t, chunk.len(), &decl.name)
            .map_err(runtime_diag)?;
        data.extend(reduce(decl.kind, &out.data, chunk.len(), f, any));
        bar.inc(chunk.len() as u64);
    }
    Ok(Tensor {
        shape: vec![d.len(), f],
        data,
    })
}

/// `[B, F]` per image: a counts output as it is, a `[T, B, F]` spikes (or trace) output
/// summed over time in step order; with `any`, 1 where that sum is non-zero.
pub fn reduce(kind: OutputKind, out: &[f32], b: usize, f: usize, any: bool) -> Vec<f32> {
    let mut counts = match kind {
        OutputKind::Counts => out[..b * f].to_vec(),
        _ => {
            let mut acc = vec![0.0f32; b * f];
            for step in out.chunks_exact(b * f) {
                for (a, &v) in acc.iter_mut().zip(step) {
                    *a += v;
                }
            }
            acc
        }
    };
    if any {
        for v in &mut counts {
            *v = if *v != 0.0 { 1.0 } else { 0.0 };
        }
    }
    counts
}
