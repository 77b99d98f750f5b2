//! `snnc train` for a model whose `train { }` block has a local-learning schedule
//! (`local = [layer(..), ..]`, docs/training.md "Local learning"): greedy, layer-wise
//! training by the projections' own rules, as Spyker's examples train (docs/spyker.md,
//! "Composition").
//!
//! Stage by stage, only the stage's layer learns ([`snn_runtime::Session::set_learning`]); each batch is a
//! forward pass and the rules ([`snn_runtime::Session::learn`]). Between batches the trainer sets the
//! rule parameters: Spyker's learning-rate growth (`grow`, `every`, `cap`) or, for a stage
//! with a `decision`, R-STDP's per-sample reward (from the decision gate's winner) and the
//! adaptive rates per chunk of images ([`snn_runtime::train::local`]). Each epoch ends with
//! the convergence measure of every plastic layer, a row of `metrics.csv`, the curves, the
//! learned filters as image tiles and an atomic checkpoint that `--resume` continues from.

use std::path::PathBuf;
use std::time::Instant;

use snn_runtime::data::{Batcher, Dataset};
use snn_runtime::exec::Footprint;
use snn_runtime::plan::{Plan, PlasticGeom};
use snn_runtime::train::local::{self, RstdpRates};
use snn_runtime::train::local_checkpoint::{self, LocalState};
use snn_runtime::Tensor;
use snnc::diag::{DResult, Diagnostic, ErrorKind};
use snnc::front::Parsed;
use snnc::ir::train::{LocalStage, TrainConfig};
use snnc::passes::local_schedule;
use snnc::session::{self, runtime_diag};
use snnc::Compiler;

use crate::train::{
    batch_tensor, is_sequence, load_data, print_written, write_atomic, Feed, TrainArgs,
};
use crate::{check_memory, local_plots, run_folder};

/// `metrics.csv`: one row per epoch; `epoch` counts over all stages (the resumed-run rules
/// of [`run_folder::resumed_metrics`] key on it), `stage_epoch` within the stage.
pub const HEADER: &str = "epoch,stage,layer,stage_epoch,images,convergence,plus,minus,\
                          punish_plus,punish_minus,accuracy,silent,seconds\n";

/// The input the dataset's images go into: the one that is not a rewarded projection's
/// `reward` (those the trainer fills, per sample, for the stage that decides).
fn image_input(plan: &Plan) -> DResult<usize> {
    let is_reward = |i: usize| {
        let buf = plan.inputs[i].buffer;
        plan.learn.iter().any(|l| l.reward == Some(buf))
    };
    let images: Vec<usize> = (0..plan.inputs.len()).filter(|&i| !is_reward(i)).collect();
    let [image] = images[..] else {
        return Err(Diagnostic::new(
            ErrorKind::BadArgument,
            format!(
                "`snnc train` feeds the dataset into one input; model `{}` has {} besides its \
                 rewards",
                plan.name,
                images.len()
            ),
        )
        .hint("give the model one input for the images (rewards are filled by the trainer)"));
    };
    Ok(image)
}

/// The feed of the image input, checked against the dataset.
fn feed_of(plan: &Plan, input: usize, d: &Dataset, sequence: bool) -> DResult<Feed> {
    let inp = &plan.inputs[input];
    let f: usize = inp.shape.iter().product();
    let per_step = if sequence {
        d.features() / d.shape.first().copied().unwrap_or(1).max(1)
    } else {
        d.features()
    };
    if f != per_step {
        return Err(Diagnostic::new(
            ErrorKind::Shape,
            format!(
                "input `{}` has {f} features per sample but dataset `{}` has {per_step} ({:?})",
                inp.name, d.name, d.shape
            ),
        )
        .hint("declare the input with the dataset's shape, e.g. `input img: [1, 28, 28]`"));
    }
    Ok(Feed {
        t: plan.t,
        sample: inp.shape.clone(),
        time_varying: inp.time_varying,
        sequence,
    })
}

/// The rule parameters a stage's schedule sets, in the order of `metrics.csv`'s `plus,
/// minus, punish_plus, punish_minus` (empty where the rule has none).
fn rate_names(stage: &LocalStage) -> [&'static str; 4] {
    if stage.decision.is_some() {
        ["reward_plus", "reward_minus", "punish_plus", "punish_minus"]
    } else {
        ["a_plus", "a_minus", "", ""]
    }
}

/// The label of each sample's decision: the winner map `z` of the gate `[B, C * HW]`,
/// `z / (C / classes)`; `None` for a silent sample.
fn decisions(gate: &[f32], batch: usize, geom: PlasticGeom, classes: usize) -> Vec<Option<u32>> {
    let maps = geom.maps();
    let per_map = geom.post_features() / maps.max(1);
    let group = (maps / classes).max(1);
    gate.chunks(geom.post_features())
        .take(batch)
        .map(|g| {
            g.iter()
                .position(|&v| v != 0.0)
                .map(|i| ((i / per_map) / group) as u32)
        })
        .collect()
}

/// Correct, wrong and silent decisions of a batch.
#[derive(Clone, Copy, Default)]
struct Tally {
    correct: usize,
    wrong: usize,
    silent: usize,
}

pub fn train(c: &mut Compiler, parsed: Parsed, cfg: TrainConfig, args: &TrainArgs) -> DResult<()> {
    c.opts.train = false;
    let program = c.compile(&parsed)?;
    let plan = program.plan.clone();
    let settings = &cfg.settings;
    let batch = settings.batch;
    let fp = Footprint::run(&plan, plan.t, batch, false);
    check_memory::ensure(c, &parsed, &fp, check_memory::TRAIN_HINT)?;
    let seed = args.seed.unwrap_or(plan.seed);
    let Some(data) = &settings.data else {
        return Err(Diagnostic::new(
            ErrorKind::BadArgument,
            format!("model `{}` names no training data", plan.name),
        )
        .hint("add e.g. `data = mnist(\"data/mnist\")` to its train block, or `--set data=...`"));
    };
    let (mut train_set, _, _) = load_data(data, settings.validation, seed)?;
    if let Some(n) = args.limit {
        train_set = train_set.subset(0..n.min(train_set.len()));
    }
    if train_set.is_empty() {
        return Err(Diagnostic::new(
            ErrorKind::BadValue,
            format!("dataset `{}` leaves no training sample", train_set.name),
        )
        .hint("lower `validation` in the train block"));
    }
    let image = image_input(&plan)?;
    let feed = feed_of(&plan, image, &train_set, is_sequence(data))?;
    let t = plan.t;
    let layer_index = |name: &str| plan.learn.iter().position(|l| l.name == name);
    let stages = &cfg.local;

    let mut loaded = session::load_device(&program, &args.device, None)?;
    let s = &mut loaded.session;
    if args.seed.is_some() {
        s.init_weights(seed).map_err(runtime_diag)?;
    }
    let mut state = LocalState::default();
    if let Some(r) = &args.resume {
        state = local_checkpoint::load(s, r).map_err(|e| {
            Diagnostic::new(ErrorKind::Weights, e.to_string())
                .hint("resume from the checkpoint.safetensors that `snnc train` wrote")
        })?;
        if state.stage >= stages.len() {
            return Err(Diagnostic::new(
                ErrorKind::Weights,
                format!(
                    "`{}` is at stage {} of a schedule with {}",
                    r.display(),
                    state.stage + 1,
                    stages.len()
                ),
            )
            .hint("resume with the model and `local` schedule that wrote the checkpoint"));
        }
        eprintln!(
            "resuming stage {} ({}) after epoch {} from {}",
            state.stage + 1,
            stages[state.stage].layer,
            state.epoch,
            r.display()
        );
    } else {
        // Spyker's Conv draws its kernel from N(mean, std); every plastic layer starts there
        // (those without a stage too, so a shorter schedule starts as the full one does).
        for l in &plan.learn {
            let (mean, std) = (stages.iter().find(|st| st.layer == l.name))
                .map_or(local_schedule::DEFAULT_INIT, |st| st.init);
            let mut w = vec![0.0f32; plan.weights[l.weight].numel()];
            local::fill_normal(&mut w, mean, std, seed, l.weight as u32);
            s.set_weight(&plan.weights[l.weight].name, &w)
                .map_err(runtime_diag)?;
        }
    }

    let folder = run_folder::claim(args.out.as_deref(), args.resume.as_deref(), &plan.name)?;
    let out_dir = folder.dir;
    if let Some(asked) = &folder.instead_of {
        eprintln!(
            "writing to {} ({} holds an earlier run)",
            out_dir.display(),
            asked.display()
        );
    }
    // Epochs over all stages before stage `i`.
    let before = |i: usize| stages[..i].iter().map(|s| s.epochs).sum::<usize>();
    let csv_path = out_dir.join("metrics.csv");
    let mut csv = HEADER.to_string();
    if let Some(r) = &args.resume {
        if let Ok(old) = std::fs::read_to_string(r.with_file_name("metrics.csv")) {
            csv = run_folder::resumed_metrics(&old, HEADER, before(state.stage) + state.epoch);
        }
    }
    eprintln!(
        "training `{}` by local rules on {} ({} samples), {} stage(s): {}; batch {batch}, device {}",
        plan.name,
        train_set.name,
        train_set.len(),
        stages.len(),
        stages
            .iter()
            .map(|s| format!("{} x{}", s.layer, s.epochs))
            .collect::<Vec<_>>()
            .join(", "),
        s.device_name()
    );
    let mut written: Vec<(&str, PathBuf)> = vec![];
    let mut trained = false;
    let t_start = Instant::now();
    for (si, st) in stages.iter().enumerate().skip(state.stage) {
        if si > state.stage || state.epoch >= st.epochs {
            if si == state.stage {
                continue; // the checkpoint finished this stage
            }
            state = LocalState {
                stage: si,
                ..LocalState::default()
            };
        }
        let li = layer_index(&st.layer).expect("checked by the compiler");
        let learn = plan.learn[li].clone();
        for l in &plan.learn {
            s.set_learning(&l.name, l.name == st.layer)
                .map_err(runtime_diag)?;
        }
        let names = rate_names(st);
        let base = |n: &str| learn.params.iter().find(|p| p.name == n).map(|p| p.value);
        let mut rstdp = st.decision.as_ref().map(|d| {
            let b = names.map(|n| base(n).expect("checked by the compiler"));
            let mut r = RstdpRates::new(b, d.chunk);
            [r.correct, r.wrong, r.total] = state.chunk;
            r
        });
        for epoch in state.epoch..st.epochs {
            let global = before(si) + epoch;
            let t_epoch = Instant::now();
            let batches = Batcher {
                batch,
                shuffle: true,
                seed,
                drop_last: false,
            }
            .epoch(train_set.len(), global as u64);
            let bar = if args.quiet {
                indicatif::ProgressBar::hidden()
            } else {
                indicatif::ProgressBar::new(batches.len() as u64)
            };
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed})",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_prefix(format!("{} epoch {}/{}", st.layer, epoch + 1, st.epochs));
            let mut tally = Tally::default();
            for idx in &batches {
                let b = idx.len();
                // Rewards start at 0 (no event of a rule that reads them is rewarded).
                let xs: Vec<Tensor> = (0..plan.inputs.len())
                    .map(|i| {
                        if i == image {
                            return batch_tensor(&train_set, idx, &feed);
                        }
                        let shape = s.input_shape(i, t, b).expect("a model input");
                        let data = vec![0.0; shape.iter().product()];
                        Tensor { shape, data }
                    })
                    .collect();
                let step = match &st.decision {
                    None => s.learn_step(&xs, t, b),
                    Some(d) => {
                        let labels: Vec<u32> = idx.iter().map(|&i| train_set.y[i]).collect();
                        let mut batch_tally = Tally::default();
                        let r = s.learn_rewarded(&xs, t, b, &st.layer, |gate| {
                            decisions(gate, b, learn.geom, d.classes)
                                .iter()
                                .zip(&labels)
                                .map(|(z, y)| match z {
                                    Some(z) if z == y => {
                                        batch_tally.correct += 1;
                                        1.0
                                    }
                                    Some(_) => {
                                        batch_tally.wrong += 1;
                                        -1.0
                                    }
                                    None => {
                                        batch_tally.silent += 1;
                                        0.0
                                    }
                                })
                                .collect()
                        });
                        tally.correct += batch_tally.correct;
                        tally.wrong += batch_tally.wrong;
                        tally.silent += batch_tally.silent;
                        if let Some(rates) = rstdp.as_mut().and_then(|r| {
                            r.after_batch(
                                batch_tally.correct,
                                batch_tally.wrong,
                                batch_tally.silent,
                            )
                        }) {
                            for (n, v) in names.iter().zip(rates) {
                                s.set_rule_param(&st.layer, n, v).map_err(runtime_diag)?;
                            }
                        }
                        r.map(|_| ())
                    }
                };
                step.map_err(runtime_diag)?;
                state.images += b as u64;
                if let Some(g) = &st.growth {
                    let get = |n: &str| s.rule_param(&st.layer, n).map_err(runtime_diag);
                    let mut rates = (get("a_plus")?, get("a_minus")?);
                    if g.after_batch(&mut state.growth_count, b, &mut rates) {
                        s.set_rule_param(&st.layer, "a_plus", rates.0)
                            .map_err(runtime_diag)?;
                        s.set_rule_param(&st.layer, "a_minus", rates.1)
                            .map_err(runtime_diag)?;
                    }
                }
                if st.decision.is_some() {
                    let seen = (tally.correct + tally.wrong + tally.silent).max(1);
                    bar.set_message(format!(
                        "decisions {:.1}% right",
                        100.0 * tally.correct as f64 / seen as f64
                    ));
                }
                bar.inc(1);
            }
            bar.finish_and_clear();
            s.sync_weights().map_err(runtime_diag)?;
            let secs = t_epoch.elapsed().as_secs_f64();
            state.epoch = epoch + 1;
            state.chunk = rstdp
                .as_ref()
                .map_or([0; 3], |r| [r.correct, r.wrong, r.total]);
            // Every plastic layer's convergence: the frozen ones stay where they ended.
            let conv: Vec<(String, f64)> = plan
                .learn
                .iter()
                .map(|l| (l.name.clone(), local::convergence(&s.weights()[l.weight])))
                .collect();
            let c_l = conv[li].1;
            let rate = |n: &str| {
                if n.is_empty() {
                    String::new()
                } else {
                    s.rule_param(&st.layer, n)
                        .map(|v| format!("{v}"))
                        .unwrap_or_default()
                }
            };
            let seen = tally.correct + tally.wrong + tally.silent;
            let (acc, silent) = if st.decision.is_some() && seen > 0 {
                (
                    format!("{}", tally.correct as f64 / seen as f64),
                    format!("{}", tally.silent as f64 / seen as f64),
                )
            } else {
                (String::new(), String::new())
            };
            eprintln!(
                "stage {}/{} {} epoch {:>3}/{}  C = {}  {}{}  ({:.1} s)",
                si + 1,
                stages.len(),
                st.layer,
                epoch + 1,
                st.epochs,
                conv.iter()
                    .map(|(n, v)| format!("{n} {v:.4}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                names
                    .iter()
                    .filter(|n| !n.is_empty())
                    .map(|n| format!("{n} {} ", rate(n)))
                    .collect::<String>(),
                if acc.is_empty() {
                    String::new()
                } else {
                    format!(
                        "| decisions {:.2}% right, {:.2}% silent",
                        100.0 * tally.correct as f64 / seen as f64,
                        100.0 * tally.silent as f64 / seen as f64
                    )
                },
                secs
            );
            csv.push_str(&format!(
                "{},{},{},{},{},{c_l},{},{},{},{},{acc},{silent},{secs:.3}\n",
                global + 1,
                si + 1,
                st.layer,
                epoch + 1,
                state.images,
                rate(names[0]),
                rate(names[1]),
                rate(names[2]),
                rate(names[3]),
            ));
            write_atomic(&csv_path, csv.as_bytes())?;
            let curves = local_plots::curves(&local_plots::parse_metrics(&csv), &plan.name)?;
            write_atomic(&out_dir.join("training.svg"), curves.as_bytes())?;
            for l in &plan.learn {
                if let PlasticGeom::Conv(g) = l.geom {
                    let svg = local_plots::filters(&l.name, &s.weights()[l.weight], g)?;
                    let path = out_dir.join(format!("filters-{}.svg", l.name));
                    write_atomic(&path, svg.as_bytes())?;
                    if !written.iter().any(|(_, p)| *p == path) {
                        written.push(("filters", path));
                    }
                }
            }
            s.save_weights(out_dir.join("weights.safetensors"))
                .map_err(runtime_diag)?;
            local_checkpoint::save(s, &state, &out_dir.join("checkpoint.safetensors"))
                .map_err(runtime_diag)?;
            trained = true;
        }
    }
    if trained {
        written.splice(
            0..0,
            [
                ("weights", out_dir.join("weights.safetensors")),
                ("checkpoint", out_dir.join("checkpoint.safetensors")),
                ("metrics", csv_path),
                ("plots", out_dir.join("training.svg")),
            ],
        );
    }
    eprintln!(
        "local learning done in {:.1} s",
        t_start.elapsed().as_secs_f64()
    );
    print_written(&written);
    Ok(())
}
