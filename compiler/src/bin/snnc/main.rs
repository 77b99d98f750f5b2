//! The `snnc` command line. Exit codes: 0 ok, 1 user error (diagnostics on stderr),
//! 2 usage error.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// `println!` that tolerates a closed pipe (`snnc ir x.snn | head`).
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

use snnc::diag::{Diagnostic, ErrorKind};
use snnc::{passes, Compiler, Options};

#[derive(Parser)]
#[command(
    name = "snnc",
    version,
    about = "Compiler for spiking neural networks",
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Memory a model may take (weights, gradients, optimizer state, buffers): bytes, or
    /// with K, M, G, T (powers of 1000) or KiB, MiB, GiB; default: SNN_MAX_MEMORY, else
    /// 80% of physical memory.
    #[arg(long, global = true, value_name = "SIZE", value_parser = snn_runtime::budget::parse_size)]
    max_memory: Option<u64>,
}

#[derive(clap::Args, Clone)]
struct PipelineArgs {
    /// Keep charge, fire and reset in separate kernels (a reference plan; slower).
    #[arg(long)]
    no_fuse: bool,
    /// Run every per-step node step by step instead of layer by layer.
    #[arg(long)]
    step_by_step: bool,
    /// Do not merge launches of identical populations.
    #[arg(long)]
    no_merge: bool,
    /// Compile for training: add the backward pass derived from the `train { }` block.
    #[arg(long)]
    train: bool,
    /// Projections of spikes: `on` event-driven, `off` dense GEMM, `auto` (default) each
    /// layer's `sparse =` or the cost model.
    #[arg(long, value_parser = ["auto", "on", "off"], default_value = "auto")]
    sparse: String,
    /// Non-temporal stores for the large outputs of forward kernels (off by default).
    #[arg(long)]
    stream_stores: bool,
    /// CUDA: load a fused kernel's inputs this many time steps ahead, into registers
    /// (default 8; 1 loads each step as it runs).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
    prefetch_steps: Option<u32>,
}

/// `--sparse auto | on | off` as [`Options::sparse`].
fn sparse_opt(s: &str) -> Option<bool> {
    match s {
        "on" => Some(true),
        "off" => Some(false),
        _ => None,
    }
}

impl PipelineArgs {
    fn options(&self) -> Options {
        Options {
            fuse: !self.no_fuse,
            merge: !self.no_merge,
            force_steps: self.step_by_step,
            train: self.train,
            sparse: sparse_opt(&self.sparse),
            stream_stores: self.stream_stores,
            prefetch_steps: self
                .prefetch_steps
                .unwrap_or(Options::default().prefetch_steps),
            ..Options::default()
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Parse and validate a model and print its memory estimate; exit 0 if it is well-formed
    /// (a model over the memory budget is a warning).
    Check {
        file: PathBuf,
        /// Time steps for the estimate (default: the model's T).
        #[arg(long)]
        steps: Option<usize>,
        /// Batch size for the estimate (default: the model's batch; for training, the
        /// `train { }` block's).
        #[arg(long)]
        batch: Option<usize>,
    },
    /// Print the IR after a pass (default: the final KernelIR).
    Ir {
        file: Option<PathBuf>,
        /// Pass to stop after (see --list-passes); `rust` prints the generated Rust.
        #[arg(long, default_value = "lower")]
        after: String,
        /// List the passes and exit.
        #[arg(long)]
        list_passes: bool,
        #[command(flatten)]
        pipeline: PipelineArgs,
    },
    /// Write the IR dump and generated code to a directory.
    Compile {
        file: PathBuf,
        /// Output directory (default: `<model>.out` beside the file).
        #[arg(short, long)]
        out: Option<PathBuf>,
        /// What to write: any of ir, rust, cuda.
        #[arg(long, value_delimiter = ',', default_value = "ir,rust")]
        emit: Vec<String>,
        /// Also build the Rust kernels into the cache (reports the build time).
        #[arg(long)]
        build: bool,
        #[command(flatten)]
        pipeline: PipelineArgs,
    },
    /// Time named workloads (median of repeats after a warm-up).
    Bench {
        /// Workloads to run (default: all); see --list.
        workloads: Vec<String>,
        /// Repetitions per workload.
        #[arg(long, default_value_t = 20)]
        repeat: usize,
        /// One JSON line per workload.
        #[arg(long)]
        json: bool,
        /// List the workloads and exit.
        #[arg(long)]
        list: bool,
        /// Device: cpu, or cuda[:N] for the GPU workloads (lif-fwd, mlp-infer).
        #[arg(long, default_value = "cpu")]
        device: String,
        /// PSN workloads: the neurons (psn, masked, sliding, lif; default all).
        #[arg(long, value_delimiter = ',')]
        neuron: Vec<String>,
        /// PSN workloads: the sequence lengths (default 8,32,64,128).
        #[arg(long = "t", value_delimiter = ',')]
        steps: Vec<usize>,
        /// Projections of spikes in the MLP workloads: auto (the cost model), on, off.
        #[arg(long, value_parser = ["auto", "on", "off"], default_value = "auto")]
        sparse: String,
        /// With `--sparse auto`: no calibration run (the MLP workloads keep the assumed rate).
        #[arg(long)]
        no_calibrate: bool,
        /// Compile the workloads with non-temporal stores for the large outputs of forward
        /// kernels (`lif-fwd`, `lif-fwdbwd`, the PSN workloads).
        #[arg(long)]
        stream_stores: bool,
        /// CUDA: time steps of a fused kernel's inputs loaded ahead (default 8).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
        prefetch_steps: Option<u32>,
    },
    /// Train a model (its `train { }` block says how); prints test accuracy at the end.
    Train {
        file: PathBuf,
        /// Override a training setting, e.g. `--set optimizer="sgd(lr = 0.1)"`.
        #[arg(long = "set", value_name = "NAME=EXPR")]
        set: Vec<String>,
        #[arg(long)]
        epochs: Option<usize>,
        /// Batch size.
        #[arg(long)]
        batch: Option<usize>,
        /// Learning rate (keeps the optimizer's other settings).
        #[arg(long)]
        lr: Option<f32>,
        /// Seed for the weight initialisation and shuffling (default: the model's seed).
        #[arg(long)]
        seed: Option<u64>,
        /// Output directory for checkpoints and metrics (default: runs/<model>; a folder that
        /// holds an earlier run's files is kept and DIR-2, DIR-3, ... is used instead).
        #[arg(short, long)]
        out: Option<PathBuf>,
        /// Continue from a checkpoint.safetensors written by `snnc train`.
        #[arg(long)]
        resume: Option<PathBuf>,
        /// Use only the first N training samples (quick runs).
        #[arg(long, value_parser = at_least_one_sample)]
        limit: Option<usize>,
        /// No progress bar.
        #[arg(long, short)]
        quiet: bool,
        #[arg(long, default_value = "cpu")]
        device: String,
        /// No calibration run on the first training batch (see `snnc run --help`).
        #[arg(long)]
        no_calibrate: bool,
    },
    /// Test accuracy and spikes per sample of trained weights.
    Eval {
        file: PathBuf,
        #[arg(long)]
        weights: PathBuf,
        /// Use only the first N test samples.
        #[arg(long, value_parser = at_least_one_sample)]
        limit: Option<usize>,
        /// Override a training setting, e.g. `--set data="mnist(\"DIR\")"`.
        #[arg(long = "set", value_name = "NAME=EXPR")]
        set: Vec<String>,
        #[arg(long, default_value = "cpu")]
        device: String,
        /// No calibration run on the first test batch (see `snnc run --help`).
        #[arg(long)]
        no_calibrate: bool,
    },
    /// Features for a linear readout: forward-only inference over an image dataset's train
    /// and test splits, one output reduced over time per image, saved as .npy.
    Features {
        file: PathBuf,
        /// Weights (safetensors); default: the model's seeded initialisation.
        #[arg(long)]
        weights: Option<PathBuf>,
        /// The images: mnist(DIR) or fashion_mnist(DIR).
        #[arg(long)]
        data: String,
        /// Folder for train_features.npy, train_labels.npy, test_features.npy, test_labels.npy.
        #[arg(short, long)]
        out: PathBuf,
        /// Use the first N training images (default: all).
        #[arg(long, value_parser = at_least_one_sample)]
        train: Option<usize>,
        /// Use the first N test images (default: all).
        #[arg(long, value_parser = at_least_one_sample)]
        test: Option<usize>,
        /// Images per run (default: the model's batch).
        #[arg(long, value_parser = at_least_one_sample)]
        batch: Option<usize>,
        /// The output to export, by name (`n2.spikes`) or population (`n2`); default the first.
        #[arg(long)]
        output: Option<String>,
        /// Spike-any over time (1 where the count is non-zero) instead of spike counts.
        #[arg(long)]
        any: bool,
        /// Seed for the weight initialisation (default: the model's seed).
        #[arg(long)]
        seed: Option<u64>,
        #[arg(long, default_value = "cpu")]
        device: String,
        /// No calibration run on the first training batch (see `snnc run --help`).
        #[arg(long)]
        no_calibrate: bool,
        /// No progress bar.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Train a linear readout (multinomial logistic regression, the project's own trainer)
    /// on the features `snnc features` wrote; prints train and test accuracy.
    Readout {
        /// The --out folder of `snnc features`.
        dir: PathBuf,
        #[arg(long, default_value_t = 30)]
        epochs: usize,
        #[arg(long, default_value_t = 3e-2)]
        lr: f32,
        #[arg(long, default_value_t = 64, value_parser = at_least_one_sample)]
        batch: usize,
        /// `sgd` (momentum 0.9) or `adam` (AdamW with a weight decay).
        #[arg(long, value_parser = ["sgd", "adam"], default_value = "sgd")]
        optimizer: String,
        /// Weight decay (SGD: L2; Adam: decoupled).
        #[arg(long, default_value_t = 0.0)]
        weight_decay: f32,
        /// Seed for the initialisation and shuffling.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Standardise each feature with the training split's mean and standard deviation
        /// (default: the features as they are, as the harness's LinearSVC takes them).
        #[arg(long)]
        standardize: bool,
        #[arg(long, default_value = "cpu")]
        device: String,
        /// No line per epoch.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Run inference on the CPU and print or save the outputs.
    Run {
        file: PathBuf,
        /// Weights (safetensors); default: a seeded random initialisation.
        #[arg(long)]
        weights: Option<PathBuf>,
        /// Inputs as .npy, one per model input in order; default: seeded random inputs.
        #[arg(long)]
        input: Vec<PathBuf>,
        /// Time steps (default: the model's T).
        #[arg(long)]
        steps: Option<usize>,
        /// Batch size (default: the model's batch, or the input's).
        #[arg(long)]
        batch: Option<usize>,
        /// Seed for random weights and inputs (default: the model's seed).
        #[arg(long)]
        seed: Option<u64>,
        /// Set a parameter without recompiling, e.g. `--set s1.tau=4`.
        #[arg(long = "set", value_name = "NAME=VALUE")]
        set: Vec<String>,
        /// Save every output as NAME.npy in this directory.
        #[arg(short, long)]
        out: Option<PathBuf>,
        /// Save the weights used (after initialisation) to this safetensors file.
        #[arg(long)]
        save_weights: Option<PathBuf>,
        /// Device: cpu, cuda or cuda:N (an NVIDIA GPU; kernels compiled with NVRTC), or cuda-shim (the CUDA device on the host, through the system C++ compiler: slow, for checking without a GPU).
        #[arg(long, default_value = "cpu")]
        device: String,
        /// No calibration run: projections of spikes left to the cost model (`sparse =
        /// auto`, no `rate =`) keep the assumed rate instead of the one counted on the inputs.
        #[arg(long)]
        no_calibrate: bool,
        #[command(flatten)]
        pipeline: PipelineArgs,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    // Backstop: a bug must still end in one clear line, not a backtrace.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| dispatch(cli, color)));
    match result {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(code)) => ExitCode::from(code),
        Err(_) => {
            eprintln!("error: internal compiler error (a bug in snnc); please report it with the input file");
            ExitCode::from(101)
        }
    }
}

/// `--limit N`: a whole number of samples, at least 1 (0 would leave nothing to run).
fn at_least_one_sample(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("at least 1 sample".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("`{s}` is not a whole number of samples")),
    }
}

fn report(c: &Compiler, d: &Diagnostic, color: bool) -> u8 {
    eprint!("{}", d.render(&c.sources, color));
    1
}

fn dispatch(cli: Cli, color: bool) -> Result<(), u8> {
    if let Some(bytes) = cli.max_memory {
        snn_runtime::Budget::set_process_default(Some(snn_runtime::Budget::given(
            bytes,
            "--max-memory",
        )));
    }
    match cli.cmd {
        Cmd::Check { file, steps, batch } => {
            let mut c = Compiler::new(Options::default());
            let parsed = c.parse_file(&file).map_err(|d| report(&c, &d, color))?;
            let program = c.compile(&parsed).map_err(|d| report(&c, &d, color))?;
            eprintln!(
                "ok: model `{}` — {} kernels, {} ops, {} weights, {} params",
                program.plan.name,
                program.kernels.len(),
                count_ops(&program.plan.ops),
                program.plan.weights.len(),
                program.plan.params.len()
            );
            for l in &program.plan.learn {
                eprintln!(
                    "learns: `{}.weight` by {} (a plasticity kernel)",
                    l.name, l.rule
                );
            }
            check_memory::report(&mut c, &parsed, &program, steps, batch)
                .map_err(|d| report(&c, &d, color))
        }
        Cmd::Ir {
            file,
            after,
            list_passes,
            pipeline,
        } => {
            if list_passes {
                for (name, what) in passes::PASSES {
                    say!("{name:<11} {what}");
                }
                say!("{:<11} the generated Rust kernels", "rust");
                return Ok(());
            }
            let Some(file) = file else {
                eprintln!("error: `snnc ir` needs a FILE (or --list-passes)");
                return Err(2);
            };
            let mut c = Compiler::new(pipeline.options());
            let parsed = c.parse_file(&file).map_err(|d| report(&c, &d, color))?;
            let text = c
                .dump_after(&parsed, &after)
                .map_err(|d| report(&c, &d, color))?;
            {
                use std::io::Write as _;
                let _ = std::io::stdout().write_all(text.as_bytes());
            }
            Ok(())
        }
        Cmd::Compile {
            file,
            out,
            emit,
            build,
            pipeline,
        } => compile(&file, out, &emit, build, &pipeline, color),
        Cmd::Bench {
            workloads,
            repeat,
            json,
            list,
            device,
            neuron,
            steps,
            sparse,
            no_calibrate,
            stream_stores,
            prefetch_steps,
        } => {
            if list {
                for (n, what) in bench::WORKLOADS {
                    say!("{n:<10} {what}");
                }
                return Ok(());
            }
            let c = Compiler::new(Options::default());
            let psn = bench::PsnOpts {
                neurons: neuron,
                ts: steps,
            };
            bench::bench(
                &workloads,
                repeat,
                json,
                &device,
                &psn,
                sparse_opt(&sparse),
                !no_calibrate,
                stream_stores,
                prefetch_steps,
            )
            .map_err(|d| report(&c, &d, color))
        }
        Cmd::Train {
            file,
            set,
            epochs,
            batch,
            lr,
            seed,
            out,
            resume,
            limit,
            quiet,
            device,
            no_calibrate,
        } => {
            let args = train::TrainArgs {
                set,
                epochs,
                batch,
                lr,
                seed,
                out,
                resume,
                device,
                limit,
                quiet,
                no_calibrate,
            };
            let mut c = Compiler::new(Options::default());
            let parsed = c.parse_file(&file).map_err(|d| report(&c, &d, color))?;
            let r = train::train(&mut c, parsed, &args);
            r.map_err(|d| report(&c, &d, color))
        }
        Cmd::Eval {
            file,
            weights,
            limit,
            set,
            device,
            no_calibrate,
        } => {
            let mut c = Compiler::new(Options::default());
            let parsed = c.parse_file(&file).map_err(|d| report(&c, &d, color))?;
            let r = train::eval(&mut c, parsed, &weights, &device, limit, !no_calibrate, set);
            r.map_err(|d| report(&c, &d, color))
        }
        Cmd::Features {
            file,
            weights,
            data,
            out,
            train,
            test,
            batch,
            output,
            any,
            seed,
            device,
            no_calibrate,
            quiet,
        } => {
            let args = features::FeaturesArgs {
                weights,
                data,
                out,
                train,
                test,
                batch,
                output,
                any,
                seed,
                device,
                no_calibrate,
                quiet,
            };
            let mut c = Compiler::new(Options::default());
            let parsed = c.parse_file(&file).map_err(|d| report(&c, &d, color))?;
            features::features(&mut c, &parsed, &args).map_err(|d| report(&c, &d, color))
        }
        Cmd::Readout {
            dir,
            epochs,
            lr,
            batch,
            optimizer,
            weight_decay,
            seed,
            standardize,
            device,
            quiet,
        } => {
            use snnc::readout::ReadoutOptimizer;
            let o = snnc::readout::ReadoutOptions {
                epochs,
                lr,
                batch,
                optimizer: if optimizer == "adam" {
                    ReadoutOptimizer::Adam
                } else {
                    ReadoutOptimizer::Sgd
                },
                weight_decay,
                seed,
                standardize,
                device,
                cache: None,
            };
            let c = Compiler::new(Options::default());
            readout::readout(&dir, &o, quiet).map_err(|d| report(&c, &d, color))
        }
        Cmd::Run {
            file,
            weights,
            input,
            steps,
            batch,
            seed,
            set,
            out,
            save_weights,
            device,
            no_calibrate,
            pipeline,
        } => {
            let args = run::RunArgs {
                weights,
                inputs: input,
                steps,
                batch,
                seed,
                set,
                out,
                save_weights,
                device,
                no_calibrate,
            };
            let mut c = Compiler::new(pipeline.options());
            let parsed = c.parse_file(&file).map_err(|d| report(&c, &d, color))?;
            run::run(&mut c, &parsed, &args).map_err(|d| report(&c, &d, color))
        }
    }
}

fn count_ops(ops: &[snn_runtime::plan::Op]) -> usize {
    ops.iter()
        .map(|o| match o {
            snn_runtime::plan::Op::StepLoop { body }
            | snn_runtime::plan::Op::ReverseStepLoop { body } => 1 + count_ops(body),
            _ => 1,
        })
        .sum()
}

fn write_file(path: &Path, text: &str) -> Result<(), Diagnostic> {
    std::fs::write(path, text).map_err(|e| {
        Diagnostic::new(
            ErrorKind::Io,
            format!("cannot write `{}`: {e}", path.display()),
        )
    })
}

fn compile(
    file: &Path,
    out: Option<PathBuf>,
    emit: &[String],
    build: bool,
    p: &PipelineArgs,
    color: bool,
) -> Result<(), u8> {
    let start = std::time::Instant::now();
    let mut c = Compiler::new(p.options());
    let parsed = c.parse_file(file).map_err(|d| report(&c, &d, color))?;
    let program = c.compile(&parsed).map_err(|d| report(&c, &d, color))?;
    for e in emit {
        if !["ir", "rust", "cuda"].contains(&e.as_str()) {
            eprintln!("error: unknown --emit kind `{e}` (expected ir, rust or cuda)");
            return Err(2);
        }
    }
    let dir = out.unwrap_or_else(|| file.with_extension("out"));
    std::fs::create_dir_all(&dir).map_err(|e| {
        report(
            &c,
            &Diagnostic::new(
                ErrorKind::Io,
                format!("cannot create `{}`: {e}", dir.display()),
            ),
            color,
        )
    })?;
    let name = &program.plan.name;
    let mut written = Vec::new();
    if emit.iter().any(|e| e == "ir") {
        let path = dir.join(format!("{name}.ir.txt"));
        write_file(&path, &snnc::ir::dump::program(&program)).map_err(|d| report(&c, &d, color))?;
        written.push(path);
    }
    let rust = snnc::back::rust::print_program(&program);
    if emit.iter().any(|e| e == "rust") {
        let path = dir.join(format!("{name}.kernels.rs"));
        write_file(&path, &rust).map_err(|d| report(&c, &d, color))?;
        written.push(path);
    }
    if emit.iter().any(|e| e == "cuda") {
        // The kernels, the prelude they include, and the launch manifest (the plan: buffers,
        // weights, params and the ops in order) that a CUDA runtime walks.
        let path = dir.join(format!("{name}.cu"));
        write_file(&path, &snnc::back::cuda::print_program(&program))
            .map_err(|d| report(&c, &d, color))?;
        written.push(path);
        let path = dir.join(snnc::back::cuda::PRELUDE_NAME);
        write_file(&path, snnc::back::cuda::PRELUDE).map_err(|d| report(&c, &d, color))?;
        written.push(path);
        let path = dir.join(format!("{name}.launch.txt"));
        let manifest = snnc::ir::dump::program(&program);
        let manifest = manifest.split("\nkernel ").next().unwrap_or_default();
        write_file(&path, manifest).map_err(|d| report(&c, &d, color))?;
        written.push(path);
    }
    let compile_s = start.elapsed().as_secs_f64();
    for w in &written {
        eprintln!("wrote {}", w.display());
    }
    eprintln!("compiled `{name}` in {:.1} ms", compile_s * 1e3);
    if build {
        let lib = snnc::build::build_cdylib(&rust, None).map_err(|d| report(&c, &d, color))?;
        eprintln!(
            "kernels {} in {:.1} ms: {}",
            if lib.cached {
                "found in cache"
            } else {
                "built"
            },
            lib.seconds * 1e3,
            lib.path.display()
        );
    }
    Ok(())
}

mod bench;
mod check_memory;
mod features;
mod local_plots;
mod plot;
mod readout;
mod run;
mod run_folder;
mod train;
mod train_local;
