//! `snnc train` and `snnc eval`: the training loop around a compiled training plan.
//!
//! Per batch: run the forward ops, compute the loss and dLoss/d(output) on the host
//! ([`snn_runtime::train::loss`]), run the backward ops, read the weight gradients, clip,
//! take an optimizer step and write the weights back. Each epoch ends with a validation
//! pass, a line in `metrics.csv` and an atomic checkpoint (weights alone for `--weights`,
//! plus optimizer state for `--resume`).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use snn_runtime::data::Dataset;
use snn_runtime::exec::Footprint;
use snn_runtime::plan::{DataDecl, LossKind, OutputKind, Plan};
use snn_runtime::train::{loss_and_grads, StepStats, Trainer};
use snn_runtime::{Session, Tensor};
use snnc::diag::{DResult, Diagnostic, ErrorKind};
use snnc::front::Parsed;
use snnc::session::{self, runtime_diag};
use snnc::Compiler;

use crate::{check_memory, plot, run_folder};

pub struct TrainArgs {
    /// `key=expr` overrides of the `train { }` settings.
    pub set: Vec<String>,
    pub epochs: Option<usize>,
    pub batch: Option<usize>,
    pub lr: Option<f32>,
    pub seed: Option<u64>,
    /// Output directory (checkpoints, metrics.csv).
    pub out: Option<PathBuf>,
    pub resume: Option<PathBuf>,
    pub device: String,
    /// Use at most this many training samples (quick runs).
    pub limit: Option<usize>,
    pub quiet: bool,
    /// Skip the calibration run on the first training batch.
    pub no_calibrate: bool,
}

/// Turns the command-line overrides into `train { }` settings of the root model.
pub fn apply_overrides(c: &mut Compiler, parsed: &mut Parsed, args: &TrainArgs) -> DResult<()> {
    let mut text = String::new();
    for kv in &args.set {
        let Some((k, v)) = kv.split_once('=') else {
            return Err(Diagnostic::new(
                ErrorKind::BadArgument,
                format!("`--set {kv}` is not NAME=EXPR"),
            )
            .hint("e.g. `--set optimizer=\"sgd(lr = 0.1, momentum = 0.9)\"`"));
        };
        text.push_str(&format!("  {} = {}\n", k.trim(), v.trim()));
    }
    if let Some(e) = args.epochs {
        text.push_str(&format!("  epochs = {e}\n"));
    }
    if let Some(b) = args.batch {
        text.push_str(&format!("  batch = {b}\n"));
    }
    if text.is_empty() && args.lr.is_none() {
        return Ok(());
    }
    let src = format!("model command_line {{\n train {{\n{text} }}\n}}\n");
    let extra = c.parse_str("<command line>", &src)?;
    let mut settings = extra
        .files
        .iter()
        .find(|(id, _)| *id == extra.root)
        .and_then(|(_, f)| f.models.first())
        .and_then(|m| m.train.clone())
        .map(|t| t.settings)
        .unwrap_or_default();
    let root = parsed.root;
    let file = &mut parsed
        .files
        .iter_mut()
        .find(|(id, _)| *id == root)
        .expect("root file")
        .1;
    let Some(model) = file.models.first_mut() else {
        return Ok(());
    };
    let block = model
        .train
        .get_or_insert_with(|| snnc::front::ast::TrainBlock {
            settings: vec![],
            span: model.span,
        });
    // `--lr` rewrites the optimizer's lr argument, keeping the rest.
    if let Some(lr) = args.lr {
        let opt = settings
            .iter()
            .rev()
            .chain(block.settings.iter().rev())
            .find(|b| b.name.name == "optimizer")
            .map(|b| b.value.clone());
        let (name, mut rest) = match opt.as_ref().map(|e| &e.kind) {
            Some(snnc::front::ast::ExprKind::Call { func, args }) => (
                func.name.clone(),
                args.iter()
                    .filter(|a| a.name.as_ref().is_some_and(|n| n.name != "lr"))
                    .map(|a| {
                        format!(
                            "{} = {}",
                            a.name.as_ref().unwrap().name,
                            c.sources.snippet(a.value.span)
                        )
                    })
                    .collect::<Vec<_>>(),
            ),
            Some(snnc::front::ast::ExprKind::Ident(n)) => (n.clone(), vec![]),
            _ => ("adam".to_string(), vec![]),
        };
        rest.insert(0, format!("lr = {lr:e}"));
        let src = format!(
            "model command_line {{ train {{ optimizer = {name}({}) }} }}",
            rest.join(", ")
        );
        let p = c.parse_str("<--lr>", &src)?;
        if let Some(t) = p
            .files
            .iter()
            .find(|(id, _)| *id == p.root)
            .and_then(|(_, f)| f.models.first())
            .and_then(|m| m.train.clone())
        {
            settings.extend(t.settings);
        }
    }
    // On the command line a later flag wins (`--epochs 3` after `--set epochs=2`); only the
    // file's own block refuses a repeated setting.
    let mut last: Vec<snnc::front::ast::Binding> = Vec::new();
    for b in settings.into_iter().rev() {
        if !last.iter().any(|k| k.name.name == b.name.name) {
            last.push(b);
        }
    }
    block.settings.extend(last.into_iter().rev());
    Ok(())
}

/// The runtime's dataset errors already name the file and carry the fetch-script hint.
fn data_err(msg: String) -> Diagnostic {
    Diagnostic::new(ErrorKind::MissingFile, msg)
}

/// (train, validation, test) splits of the configured dataset.
pub(crate) fn load_data(
    decl: &DataDecl,
    validation: usize,
    seed: u64,
) -> DResult<(Dataset, Dataset, Dataset)> {
    use snn_runtime::data::{idx, yinyang};
    let rt = |e: snn_runtime::RuntimeError| data_err(e.to_string());
    Ok(match decl {
        DataDecl::YinYang => (
            yinyang::standard("train").map_err(rt)?,
            yinyang::standard("validation").map_err(rt)?,
            yinyang::standard("test").map_err(rt)?,
        ),
        DataDecl::Mnist { dir, sequence } | DataDecl::FashionMnist { dir, sequence } => {
            let mut train = idx::mnist(Path::new(dir), true).map_err(rt)?;
            let mut test = idx::mnist(Path::new(dir), false).map_err(rt)?;
            if let Some(order) = sequence {
                train = train.image_sequence(*order).map_err(rt)?;
                test = test.image_sequence(*order).map_err(rt)?;
            }
            let (train, val) = train.split_off_validation(validation, seed);
            (train, val, test)
        }
        DataDecl::Npy {
            x,
            y,
            test_x,
            test_y,
        } => {
            let all = Dataset::from_npy(Path::new(x), Path::new(y)).map_err(rt)?;
            let (train, val) = all.split_off_validation(validation, seed);
            let test = match (test_x, test_y) {
                (Some(tx), Some(ty)) => {
                    Dataset::from_npy(Path::new(tx), Path::new(ty)).map_err(rt)?
                }
                _ => val.clone(),
            };
            (train, val, test)
        }
    })
}

/// Whether the configured dataset's samples are sequences (`[T, F]`, fed one step a row).
pub(crate) fn is_sequence(decl: &DataDecl) -> bool {
    matches!(
        decl,
        DataDecl::Mnist {
            sequence: Some(_),
            ..
        } | DataDecl::FashionMnist {
            sequence: Some(_),
            ..
        }
    )
}

/// The model's single input, checked against the dataset's samples (`sequence`: each sample
/// is `[T, ...]`, one step per row).
fn input_of(plan: &Plan, d: &Dataset, sequence: bool) -> DResult<Feed> {
    if plan.inputs.len() != 1 {
        return Err(Diagnostic::new(
            ErrorKind::BadArgument,
            format!(
                "`snnc train` feeds one dataset into one input; the model has {}",
                plan.inputs.len()
            ),
        ));
    }
    // The loss indexes its output by label: every class needs an output neuron.
    if let Some(tp) = &plan.train {
        let o = &plan.outputs[tp.loss.output];
        let neurons: usize = o.shape.iter().product();
        let classes = match tp.loss.kind {
            LossKind::MseCounts { groups, .. } => neurons / groups.max(1),
            _ => neurons,
        };
        if let Some(&bad) = d.y.iter().find(|&&y| y as usize >= classes) {
            return Err(Diagnostic::new(
                ErrorKind::Shape,
                format!(
                    "dataset `{}` has label {bad}, but the loss reads `{}` with {classes} classes",
                    d.name, o.name
                ),
            )
            .hint(format!(
                "give the output population {} neurons (one per class{})",
                d.classes.max(bad as usize + 1),
                if matches!(tp.loss.kind, LossKind::MseCounts { .. }) {
                    ", times `groups`"
                } else {
                    ""
                }
            )));
        }
    }
    let inp = &plan.inputs[0];
    let f: usize = inp.shape.iter().product();
    if sequence {
        // The compiler checked MNIST's 28 x 28 against the input; this is the loaded file.
        let steps = d.shape.first().copied().unwrap_or(0);
        let per_step = d.features() / steps.max(1);
        if !inp.time_varying || f != per_step || plan.t != steps {
            return Err(Diagnostic::new(
                ErrorKind::Shape,
                format!(
                    "dataset `{}` has sequences of {steps} steps of {per_step} values, but input \
                     `{}` is {}[{f}] at T = {}",
                    d.name,
                    inp.name,
                    if inp.time_varying {
                        "per step "
                    } else {
                        "static "
                    },
                    plan.t
                ),
            )
            .hint(format!(
                "declare `input {}: [T, {per_step}]` and set `T = {steps}`",
                inp.name
            )));
        }
        return Ok(Feed {
            t: plan.t,
            sample: inp.shape.clone(),
            time_varying: true,
            sequence: true,
        });
    }
    if f != d.features() {
        return Err(Diagnostic::new(
            ErrorKind::Shape,
            format!(
                "input `{}` has {f} features per sample but dataset `{}` has {} ({:?})",
                inp.name,
                d.name,
                d.features(),
                d.shape
            ),
        )
        .hint("declare the input with the dataset's shape, e.g. `input image: [784]`"));
    }
    Ok(Feed {
        t: plan.t,
        sample: inp.shape.clone(),
        time_varying: inp.time_varying,
        sequence: false,
    })
}

/// How dataset samples become the model's input tensor.
#[derive(Clone, Debug)]
pub(crate) struct Feed {
    pub t: usize,
    /// The input's shape per sample and step (`[784]`, `[1, 28, 28]`).
    pub sample: Vec<usize>,
    /// `[T, B, ..sample]` (the sample repeated each step) rather than `[B, ..sample]`.
    pub time_varying: bool,
    /// Each sample is `[T, F]`: step `t` gets its row `t` (`mnist(.., sequence = rows)`).
    pub sequence: bool,
}

/// One batch as the model's input tensor (repeated over time for a per-step input), shaped
/// as the input is declared.
pub(crate) fn batch_tensor(d: &Dataset, idx: &[usize], feed: &Feed) -> Tensor {
    let (t, b) = (feed.t, idx.len());
    let lead = if feed.time_varying {
        vec![t, b]
    } else {
        vec![b]
    };
    let shape: Vec<usize> = lead
        .into_iter()
        .chain(feed.sample.iter().copied())
        .collect();
    if feed.sequence {
        return Tensor {
            shape,
            data: d.sequence_batch(idx).x,
        };
    }
    let mut x = Vec::with_capacity(b * d.features());
    for &i in idx {
        x.extend_from_slice(d.sample(i));
    }
    let data = if feed.time_varying { x.repeat(t) } else { x };
    Tensor { shape, data }
}

/// Forward only, with the loss and statistics (validation and test batches).
fn eval_step(s: &mut Session, x: Tensor, labels: &[u32], t: usize) -> DResult<StepStats> {
    let outs = s.run(&[x], t, labels.len()).map_err(runtime_diag)?;
    Ok(loss_and_grads(s.plan(), &outs, labels, t)
        .map_err(runtime_diag)?
        .0)
}

struct EvalOut {
    loss: f64,
    accuracy: f64,
    spikes_per_sample: f64,
}

fn evaluate(s: &mut Session, d: &Dataset, batch: usize, feed: &Feed) -> DResult<EvalOut> {
    let (mut loss, mut correct, mut spikes) = (0.0, 0usize, 0.0);
    let idx: Vec<usize> = (0..d.len()).collect();
    for chunk in idx.chunks(batch) {
        let labels: Vec<u32> = chunk.iter().map(|&i| d.y[i]).collect();
        let x = batch_tensor(d, chunk, feed);
        let o = eval_step(s, x, &labels, feed.t)?;
        loss += o.loss * chunk.len() as f64;
        correct += o.correct;
        spikes += o.spikes_per_sample * chunk.len() as f64;
    }
    let n = d.len().max(1) as f64;
    Ok(EvalOut {
        loss: loss / n,
        accuracy: correct as f64 / n,
        spikes_per_sample: spikes / n,
    })
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> Diagnostic {
    Diagnostic::new(ErrorKind::Io, format!("{what} `{}`: {e}", path.display()))
}

pub fn train(c: &mut Compiler, mut parsed: Parsed, args: &TrainArgs) -> DResult<()> {
    session::parse_device(&args.device)?;
    c.opts.train = true;
    apply_overrides(c, &mut parsed, args)?;
    // A `local = [..]` schedule trains by the projections' rules, without a backward pass.
    if let Some(cfg) = c.module_until(&parsed, "synapses")?.train {
        if !cfg.local.is_empty() {
            return crate::train_local::train(c, parsed, cfg, args);
        }
    }
    let program = c.compile(&parsed)?;
    let plan = program.plan.clone();
    let tp = plan.train.clone().expect("compiled for training");
    let cfg = tp.settings.clone();
    // Sized before the data or the weights are loaded: the training batch, then the batch
    // of the validation and test runs.
    for b in [cfg.batch, cfg.batch.max(64)] {
        let fp = Footprint::run(&plan, plan.t, b, true);
        check_memory::ensure(c, &parsed, &fp, check_memory::TRAIN_HINT)?;
    }
    let seed = args.seed.unwrap_or(plan.seed);
    let Some(data) = &cfg.data else {
        return Err(Diagnostic::new(
            ErrorKind::BadArgument,
            format!("model `{}` names no training data", plan.name),
        )
        .hint("add e.g. `data = yinyang` or `data = mnist(\"data/mnist\")` to its train block, or `--set data=yinyang`"));
    };
    let (mut train_set, val_set, test_set) = load_data(data, cfg.validation, seed)?;
    // The split takes what it can: a split of everything leaves nothing to train on.
    if train_set.is_empty() && cfg.validation > 0 {
        return Err(Diagnostic::new(
            ErrorKind::BadValue,
            format!(
                "validation = {} but the training set has {} samples",
                cfg.validation,
                val_set.len()
            ),
        )
        .hint("set `validation` in the train block below the number of training samples"));
    }
    if let Some(n) = args.limit {
        train_set = train_set.subset(0..n.min(train_set.len()));
    }
    let feed = input_of(&plan, &train_set, is_sequence(data))?;
    let t = plan.t;

    let mut loaded = session::load_device(&program, &args.device, None)?;
    let s = &mut loaded.session;
    if args.seed.is_some() {
        s.init_weights(seed).map_err(runtime_diag)?;
    }
    let mut trainer = Trainer::new(&cfg);
    let mut first_epoch = 0;
    if let Some(r) = &args.resume {
        first_epoch = trainer.load_checkpoint(s, r).map_err(|e| {
            Diagnostic::new(ErrorKind::Weights, e.to_string())
                .hint("resume from the checkpoint.safetensors that `snnc train` wrote")
        })?;
        eprintln!("resuming after epoch {first_epoch} from {}", r.display());
    }
    // Projections of spikes left to the cost model with no known rate: count their input
    // rates on the first training batch (the initial or resumed weights), and recompile if
    // that changes a form (forward GEMM and weight gradient alike).
    if !args.no_calibrate {
        let idx: Vec<usize> = (0..cfg.batch.min(train_set.len())).collect();
        let x = batch_tensor(&train_set, &idx, &feed);
        session::calibrate_loaded(c, &parsed, &mut loaded, &args.device, &[x], t, idx.len())?;
    }
    let s = &mut loaded.session;

    // Claimed once the model, data and checkpoint have loaded: a failed start leaves no folder.
    let folder = run_folder::claim(args.out.as_deref(), args.resume.as_deref(), &plan.name)?;
    let out_dir = folder.dir;
    if let Some(asked) = &folder.instead_of {
        eprintln!(
            "writing to {} ({} holds an earlier run)",
            out_dir.display(),
            asked.display()
        );
    }
    let csv_path = out_dir.join("metrics.csv");
    let header = "epoch,lr,train_loss,train_acc,val_loss,val_acc,seconds,spikes_per_sample\n";
    let mut csv = header.to_string();
    if let Some(r) = args.resume.as_deref().filter(|_| first_epoch > 0) {
        // The resumed run's rows up to its checkpoint, not those of epochs trained after it
        // (a run killed between its metrics and its checkpoint trains that epoch again).
        let old_path = r.with_file_name("metrics.csv");
        if let Ok(old) = std::fs::read_to_string(&old_path) {
            csv = run_folder::resumed_metrics(&old, header, first_epoch);
        }
    }
    // What this run wrote, printed at the end (labels as `weights: PATH`).
    let mut written: Vec<(&str, PathBuf)> = vec![];
    eprintln!(
        "training `{}` on {} ({} train / {} validation / {} test samples), {} epochs, batch {}, device {}",
        plan.name,
        train_set.name,
        train_set.len(),
        val_set.len(),
        test_set.len(),
        cfg.epochs,
        cfg.batch,
        s.device_name()
    );
    // Activation memory of one training step (forward values, saved states, gradients).
    let slots = s.slot_sizes(t, cfg.batch).map_err(runtime_diag)?;
    eprintln!(
        "activation memory per step: {:.1} MiB in {} buffers (T = {t}, batch {})",
        slots.iter().sum::<usize>() as f64 * 4.0 / (1 << 20) as f64,
        slots.len(),
        cfg.batch
    );
    let rate_names: Vec<String> = plan
        .outputs
        .iter()
        .filter(|o| matches!(o.kind, OutputKind::Counts | OutputKind::Spikes))
        .map(|o| o.name.clone())
        .collect();
    let t_start = Instant::now();
    for epoch in first_epoch..cfg.epochs {
        let t_epoch = Instant::now();
        let lr = trainer.lr(epoch);
        let batches = snn_runtime::data::Batcher {
            batch: cfg.batch,
            shuffle: true,
            seed,
            drop_last: false,
        }
        .epoch(train_set.len(), epoch as u64);
        let bar = if args.quiet {
            indicatif::ProgressBar::hidden()
        } else {
            indicatif::ProgressBar::new(batches.len() as u64)
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "epoch {prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed})",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(format!("{}/{}", epoch + 1, cfg.epochs));
        let (mut sum_loss, mut correct, mut seen) = (0.0, 0usize, 0usize);
        let mut rates = vec![0.0; rate_names.len()];
        for (bi, idx) in batches.iter().enumerate() {
            let labels: Vec<u32> = idx.iter().map(|&i| train_set.y[i]).collect();
            let x = batch_tensor(&train_set, idx, &feed);
            let so = trainer
                .step(s, &[x], &labels, t, lr)
                .map_err(runtime_diag)?;
            if !so.loss.is_finite() {
                bar.finish_and_clear();
                return Err(Diagnostic::new(
                    ErrorKind::Runtime,
                    format!(
                        "the loss became {} in epoch {} batch {bi}",
                        so.loss,
                        epoch + 1
                    ),
                )
                .hint("lower the learning rate (--lr) or clip gradients (--set clip=1.0)"));
            }
            sum_loss += so.loss * idx.len() as f64;
            correct += so.correct;
            seen += idx.len();
            for (r, v) in rates.iter_mut().zip(&so.rates) {
                *r += v * idx.len() as f64;
            }
            bar.set_message(format!(
                "loss {:.4} acc {:.1}%",
                sum_loss / seen as f64,
                100.0 * correct as f64 / seen as f64
            ));
            bar.inc(1);
        }
        bar.finish_and_clear();
        // The steps updated the weights on the device; the host copy is saved below and
        // read by the raster and evaluation reloads.
        s.sync_weights().map_err(runtime_diag)?;
        let val = evaluate(s, &val_set, cfg.batch.max(64), &feed)?;
        let secs = t_epoch.elapsed().as_secs_f64();
        let rate_txt: Vec<String> = rate_names
            .iter()
            .zip(&rates)
            .map(|(n, r)| format!("{n} {:.3}", r / seen.max(1) as f64))
            .collect();
        eprintln!(
            "epoch {:>3}/{}  lr {:.2e}  loss {:.4}  acc {:.2}%  | val loss {:.4}  acc {:.2}%  | rates {}  ({:.1} s)",
            epoch + 1,
            cfg.epochs,
            lr,
            sum_loss / seen.max(1) as f64,
            100.0 * correct as f64 / seen.max(1) as f64,
            val.loss,
            100.0 * val.accuracy,
            rate_txt.join(", "),
            secs
        );
        csv.push_str(&format!(
            "{},{lr},{},{},{},{},{secs:.3},{}\n",
            epoch + 1,
            sum_loss / seen.max(1) as f64,
            correct as f64 / seen.max(1) as f64,
            val.loss,
            val.accuracy,
            val.spikes_per_sample
        ));
        write_atomic(&csv_path, csv.as_bytes())?;
        let curves = plot::learning_curves(&plot::parse_metrics(&csv), &plan.name)?;
        write_atomic(&out_dir.join("training.svg"), curves.as_bytes())?;
        s.save_weights(out_dir.join("weights.safetensors"))
            .map_err(runtime_diag)?;
        trainer
            .save_checkpoint(s, epoch + 1, &out_dir.join("checkpoint.safetensors"))
            .map_err(runtime_diag)?;
    }
    if first_epoch < cfg.epochs {
        written.extend([
            ("weights", out_dir.join("weights.safetensors")),
            ("checkpoint", out_dir.join("checkpoint.safetensors")),
            ("metrics", csv_path.clone()),
            ("plots", out_dir.join("training.svg")),
        ]);
    }
    let test = evaluate(s, &test_set, cfg.batch.max(64), &feed)?;
    say(format!(
        "test accuracy: {:.2}% ({} samples, {:.1} spikes per sample, {:.1} s training)",
        100.0 * test.accuracy,
        test_set.len(),
        test.spikes_per_sample,
        t_start.elapsed().as_secs_f64()
    ));
    let raster_path = out_dir.join("raster.svg");
    let layers = raster_of(c, &parsed, s, &args.device, &test_set, &feed)?;
    if !layers.is_empty() {
        let svg = plot::raster(&layers, &format!("{}: test sample 0", plan.name))?;
        write_atomic(&raster_path, svg.as_bytes())?;
        written.push(("plots", raster_path));
    }
    print_written(&written);
    Ok(())
}

/// `weights: PATH   ...   plots: A, B`: one label per kind, in the order written.
pub(crate) fn print_written(written: &[(&str, PathBuf)]) {
    let mut parts: Vec<(&str, Vec<String>)> = vec![];
    for (label, path) in written {
        let shown = path.display().to_string();
        match parts.iter_mut().find(|(l, _)| l == label) {
            Some((_, paths)) => paths.push(shown),
            None => parts.push((label, vec![shown])),
        }
    }
    if parts.is_empty() {
        return;
    }
    let line: Vec<String> = parts
        .iter()
        .map(|(label, paths)| format!("{label}: {}", paths.join(", ")))
        .collect();
    eprintln!("{}", line.join("   "));
}

fn say(s: String) {
    let _ = writeln!(std::io::stdout(), "{s}");
}

pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> DResult<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(|e| io_err("cannot write", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_err("cannot replace", path, e))
}

/// The spikes of every population the model reports counts or spikes of, for the first
/// test sample: the model is compiled again for inference with a `spikes(P)` output added
/// per population, and run with the trained weights.
fn raster_of(
    c: &mut Compiler,
    parsed: &Parsed,
    trained: &Session,
    device: &str,
    test: &Dataset,
    feed: &Feed,
) -> DResult<Vec<plot::RasterLayer>> {
    if test.is_empty() {
        return Ok(vec![]);
    }
    let mut parsed = parsed.clone();
    let root = parsed.root;
    let Some(model) = parsed
        .files
        .iter_mut()
        .find(|(id, _)| *id == root)
        .and_then(|(_, f)| f.models.first_mut())
    else {
        return Ok(vec![]);
    };
    let snippet = |o: &snnc::front::ast::OutputStmt| c.sources.snippet(o.target.span).to_string();
    let spiking: Vec<String> = model
        .outputs
        .iter()
        .filter(|o| o.kind.name == "counts" || o.kind.name == "spikes")
        .map(snippet)
        .collect();
    let have: Vec<String> = model
        .outputs
        .iter()
        .filter(|o| o.kind.name == "spikes")
        .map(snippet)
        .collect();
    let mut extra = vec![];
    for target in &spiking {
        if !have.contains(target) && !extra.contains(target) {
            extra.push(target.clone());
        }
    }
    for o in model.outputs.clone() {
        if o.kind.name == "counts" && extra.contains(&snippet(&o)) {
            let mut spikes = o.clone();
            spikes.kind.name = "spikes".into();
            spikes.alias = None;
            model.outputs.push(spikes);
            extra.retain(|x| *x != snippet(&o));
        }
    }
    let train = std::mem::replace(&mut c.opts.train, false);
    let program = c.compile(&parsed);
    c.opts.train = train;
    let program = program?;
    let mut loaded = session::load_device(&program, device, None)?;
    let s = &mut loaded.session;
    let named: Vec<(String, Vec<usize>, &[f32])> = trained
        .plan()
        .weights
        .iter()
        .zip(trained.weights())
        .map(|(d, w)| (d.name.clone(), d.shape.clone(), w.as_slice()))
        .collect();
    for (name, _, w) in &named {
        s.set_weight(name, w).map_err(runtime_diag)?;
    }
    let x = batch_tensor(test, &[0], feed);
    let outs = s.run(&[x], feed.t, 1).map_err(runtime_diag)?;
    Ok(outs
        .into_iter()
        .filter(|(d, _)| d.kind == OutputKind::Spikes)
        .map(|(d, v)| plot::RasterLayer {
            name: d.name.trim_end_matches(".spikes").to_string(),
            t: feed.t,
            n: d.shape.iter().product(),
            spikes: v.data,
        })
        .collect())
}

/// `snnc eval`: accuracy and spikes per sample on the test split.
pub fn eval(
    c: &mut Compiler,
    mut parsed: Parsed,
    weights: &Path,
    device: &str,
    limit: Option<usize>,
    calibrate: bool,
    set: Vec<String>,
) -> DResult<()> {
    c.opts.train = true;
    let args = TrainArgs {
        set,
        epochs: None,
        batch: None,
        lr: None,
        seed: None,
        out: None,
        resume: None,
        device: device.to_string(),
        limit,
        quiet: true,
        no_calibrate: !calibrate,
    };
    apply_overrides(c, &mut parsed, &args)?;
    let program = c.compile(&parsed)?;
    let plan = program.plan.clone();
    let cfg = plan.train.as_ref().expect("training plan").settings.clone();
    let fp = Footprint::run(&plan, plan.t, cfg.batch.max(64), true);
    check_memory::ensure(c, &parsed, &fp, check_memory::TRAIN_HINT)?;
    let Some(data) = &cfg.data else {
        return Err(
            Diagnostic::new(ErrorKind::BadArgument, "the model names no data")
                .hint("add `data = ...` to its train block"),
        );
    };
    let (_, _, mut test) = load_data(data, cfg.validation, plan.seed)?;
    if let Some(n) = limit {
        test = test.subset(0..n.min(test.len()));
    }
    let feed = input_of(&plan, &test, is_sequence(data))?;
    let mut loaded = session::load_device(&program, device, None)?;
    let s = &mut loaded.session;
    s.load_weights(weights).map_err(runtime_diag)?;
    let batch = cfg.batch.max(64);
    if calibrate {
        // On the first test batch, with the trained weights.
        let idx: Vec<usize> = (0..batch.min(test.len())).collect();
        let x = batch_tensor(&test, &idx, &feed);
        session::calibrate_loaded(c, &parsed, &mut loaded, device, &[x], feed.t, idx.len())?;
    }
    let s = &mut loaded.session;
    let r = evaluate(s, &test, batch, &feed)?;
    say(format!(
        "test accuracy: {:.2}% ({} samples), loss {:.4}, {:.1} spikes per sample",
        100.0 * r.accuracy,
        test.len(),
        r.loss,
        r.spikes_per_sample
    ));
    Ok(())
}
