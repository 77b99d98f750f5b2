//! From a compiled [`Program`] to a running [`Session`]: print the Rust kernels, build them
//! (or take them from the cache), load the library and hand the plan to the runtime; or, for
//! `cuda[:N]`, print the CUDA kernels and hand them to the runtime's
//! [`snn_runtime::cuda::CudaDevice`], which compiles them with NVRTC (for `cuda-shim`, the
//! same device over the host shim: [`snn_runtime::cuda::ShimGpu`]).

use std::path::Path;

use snn_runtime::{KernelTable, RuntimeError, Session, Tensor};

use crate::build::{self, BuiltLib};
use crate::diag::{DResult, Diagnostic, ErrorKind};
use crate::front::Parsed;
use crate::ir::kernel::Program;
use crate::ir::sched::{RateSource, SparseChoice};
use crate::passes::Calibration;
use crate::Compiler;

pub struct Loaded {
    pub session: Session,
    pub lib: BuiltLib,
}

/// Build and load the CPU kernels of `program`; `cache` overrides the cache directory.
pub fn load(program: &Program, cache: Option<&Path>) -> DResult<Loaded> {
    let source = crate::back::rust::print_program(program);
    let lib = build::build_cdylib(&source, cache)?;
    let table = KernelTable::load(&lib.path, &program.plan).map_err(runtime_diag)?;
    let session = Session::new(program.plan.clone(), table).map_err(runtime_diag)?;
    Ok(Loaded { session, lib })
}

/// A session on a named device, with a one-line description of where its kernels came from.
pub struct DeviceLoaded {
    pub session: Session,
    /// e.g. `cpu kernels cached (2 ms)`, `cuda kernels compiled with NVRTC (310 ms)`.
    pub kernels: String,
}

/// Where a session runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    /// `cpu`: the generated Rust kernels.
    Cpu,
    /// `cuda`, `cuda:N`: GPU N through the CUDA driver.
    Cuda(usize),
    /// `cuda-shim`: the CUDA device with the host standing in for the GPU (the generated
    /// CUDA C built by the system C++ compiler; slow, for checking without a GPU).
    CudaShim,
}

/// Parses `cpu`, `cuda`, `cuda:N` or `cuda-shim`.
pub fn parse_device(device: &str) -> DResult<DeviceKind> {
    match device {
        "cpu" => Ok(DeviceKind::Cpu),
        "cuda" => Ok(DeviceKind::Cuda(0)),
        "cuda-shim" => Ok(DeviceKind::CudaShim),
        d => match d.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => Ok(DeviceKind::Cuda(n)),
            _ => Err(
                Diagnostic::new(ErrorKind::BadArgument, format!("unknown device `{d}`"))
                    .hint("use --device cpu, cuda, cuda:N or cuda-shim"),
            ),
        },
    }
}

/// Load `program` on `device` (`cpu`, `cuda`, `cuda:N`, `cuda-shim`); `cache` is the CPU
/// kernel cache (and, under `shim/`, the host-shim libraries; default [`snn_runtime::cache_dir`]).
pub fn load_device(program: &Program, device: &str, cache: Option<&Path>) -> DResult<DeviceLoaded> {
    let start = std::time::Instant::now();
    let session = match parse_device(device)? {
        DeviceKind::Cpu => {
            let l = load(program, cache)?;
            return Ok(DeviceLoaded {
                session: l.session,
                kernels: format!(
                    "cpu kernels {} ({:.0} ms)",
                    if l.lib.cached { "cached" } else { "built" },
                    l.lib.seconds * 1e3
                ),
            });
        }
        DeviceKind::Cuda(ordinal) => {
            let source = crate::back::cuda::print_program(program);
            Session::new_cuda(program.plan.clone(), ordinal, &source).map_err(cuda_diag)?
        }
        DeviceKind::CudaShim => {
            let source = crate::back::cuda::print_program(program);
            let dir = cache.map_or_else(snn_runtime::cuda::shim::default_dir, |c| c.join("shim"));
            Session::new_cuda_shim(program.plan.clone(), &source, &dir).map_err(cuda_diag)?
        }
    };
    Ok(DeviceLoaded {
        kernels: format!(
            "{} ({:.0} ms to set up)",
            session.device_name(),
            start.elapsed().as_secs_f64() * 1e3
        ),
        session,
    })
}

/// The projections of spikes whose form the cost model decides from the assumed rate
/// (`sparse = auto`, no `rate =`, no `--sparse`; an earlier calibration's rates count as unknown): what a calibration run can inform. By
/// the `dense` node's name; empty when there is nothing to calibrate.
pub fn calibration_targets(c: &Compiler, parsed: &Parsed) -> DResult<Vec<String>> {
    let m = c.module_until(parsed, "schedule")?;
    Ok(choices(&m)
        .into_iter()
        .filter(|(_, ch)| ch.by_cost_model && ch.rate_source != RateSource::Given)
        .map(|(name, _)| name)
        .collect())
}

fn choices(m: &crate::ir::net::Module) -> Vec<(String, SparseChoice)> {
    m.schedule
        .as_ref()
        .map(|s| {
            s.projections
                .iter()
                .map(|(&h, ch)| (m.nodes[h].name.clone(), ch.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// What a calibration run measured and decided.
#[derive(Clone, Debug)]
pub struct Calibrated {
    pub calibration: Calibration,
    /// Per calibrated projection: its name and the cost model's choice with the measured
    /// rate (rate, estimates, `sparse`).
    pub choices: Vec<(String, SparseChoice)>,
    /// Some projection changed form: the program must be compiled again
    /// ([`Compiler::compile`] with the compiler's options, which now hold the rates).
    pub changed: bool,
}

impl Calibrated {
    /// One line for the user: what was measured and chosen.
    pub fn summary(&self) -> String {
        let parts: Vec<String> = self
            .choices
            .iter()
            .map(|(name, ch)| {
                format!(
                    "{name} input rate {:.4} -> {} (dense ~{}, event-driven ~{})",
                    ch.rate,
                    if ch.sparse { "event-driven" } else { "dense" },
                    crate::passes::schedule::duration(ch.dense_s),
                    crate::passes::schedule::duration(ch.event_s)
                )
            })
            .collect();
        format!(
            "calibration on {} sample{} x {} steps: {}{}",
            self.calibration.samples,
            if self.calibration.samples == 1 {
                ""
            } else {
                "s"
            },
            self.calibration.steps,
            parts.join("; "),
            if self.changed {
                " (recompiled)"
            } else {
                " (as compiled)"
            }
        )
    }
}

/// A calibration run: when some projection of spikes is left to the cost model with no
/// known rate ([`calibration_targets`]), run `session` (a session of `c.compile(parsed)`
/// with its weights and parameters set) forward once on `inputs` and count the fraction
/// of non-zero elements each such projection reads
/// ([`Session::projection_input_rates`]). The rates go into `c.opts.calibration`, and the
/// cost model decides again with them. `None`: nothing to calibrate (no run).
///
/// The count does not depend on the form the session's projections run in: both forms
/// compute the same currents (to rounding), so the same spikes.
pub fn calibrate(
    c: &mut Compiler,
    parsed: &Parsed,
    session: &mut Session,
    inputs: &[Tensor],
    t: usize,
    batch: usize,
) -> DResult<Option<Calibrated>> {
    let before = c.module_until(parsed, "schedule")?;
    let targets: Vec<String> = choices(&before)
        .into_iter()
        .filter(|(_, ch)| ch.by_cost_model && ch.rate_source != RateSource::Given)
        .map(|(name, _)| name)
        .collect();
    if targets.is_empty() {
        return Ok(None);
    }
    let counts = session
        .projection_input_rates(inputs, t, batch)
        .map_err(runtime_diag)?;
    let mut rates = std::collections::BTreeMap::new();
    for (weight, nonzero, total) in counts {
        let Some(node) = weight.strip_suffix(".weight") else {
            continue;
        };
        if targets.iter().any(|n| n == node) && total > 0 {
            rates.insert(node.to_string(), nonzero as f64 / total as f64);
        }
    }
    let calibration = Calibration {
        samples: batch,
        steps: t,
        rates,
    };
    c.opts.calibration = Some(calibration.clone());
    let after = c.module_until(parsed, "schedule")?;
    let old = choices(&before);
    let choices: Vec<(String, SparseChoice)> = choices(&after)
        .into_iter()
        .filter(|(name, _)| calibration.rates.contains_key(name))
        .collect();
    let changed = choices
        .iter()
        .any(|(name, ch)| old.iter().any(|(n, o)| n == name && o.sparse != ch.sparse));
    Ok(Some(Calibrated {
        calibration,
        choices,
        changed,
    }))
}

/// A session of `program` on `device` with the weights and parameters of `old` (the same
/// model compiled with other options: a recompilation after a calibration run).
pub fn reload(
    program: &Program,
    old: &Session,
    device: &str,
    cache: Option<&Path>,
) -> DResult<DeviceLoaded> {
    let mut new = load_device(program, device, cache)?;
    new.session
        .set_all_weights(old.weights().to_vec())
        .map_err(runtime_diag)?;
    for (d, &v) in old.plan().params.iter().zip(old.param_array()) {
        // A seed is stored as its raw bits and set as a number.
        let v = if d.check == snn_runtime::plan::ParamCheck::Bits {
            v.to_bits() as f32
        } else {
            v
        };
        new.session.set_param(&d.name, v).map_err(runtime_diag)?;
    }
    Ok(new)
}

/// [`calibrate`], then, when a projection changed form, recompile and replace `loaded` by
/// a session of the new program with the same weights and parameters. Prints the
/// calibration's summary line on stderr. What `snnc run | train | eval | bench` do.
pub fn calibrate_loaded(
    c: &mut Compiler,
    parsed: &Parsed,
    loaded: &mut DeviceLoaded,
    device: &str,
    inputs: &[Tensor],
    t: usize,
    batch: usize,
) -> DResult<Option<Calibrated>> {
    let Some(cal) = calibrate(c, parsed, &mut loaded.session, inputs, t, batch)? else {
        return Ok(None);
    };
    if cal.changed {
        let program = c.compile(parsed)?;
        *loaded = reload(&program, &loaded.session, device, None)?;
    }
    eprintln!("{}", cal.summary());
    Ok(Some(cal))
}

/// A CUDA set-up error as one clear line (no driver, no device, NVRTC failure).
pub fn cuda_diag(e: RuntimeError) -> Diagnostic {
    let msg = match &e {
        RuntimeError::Device(m) => m.clone(),
        other => other.to_string(),
    };
    if msg.starts_with("no CUDA driver") || msg.starts_with("no CUDA device") {
        Diagnostic::new(
            ErrorKind::Runtime,
            format!("{msg}: --device cuda needs an NVIDIA GPU and driver"),
        )
    } else {
        Diagnostic::new(ErrorKind::Runtime, format!("CUDA device: {msg}"))
    }
}

/// A runtime error as a diagnostic (no source location: it concerns files and data).
pub fn runtime_diag(e: RuntimeError) -> Diagnostic {
    let kind = match &e {
        RuntimeError::Io { .. } => ErrorKind::MissingFile,
        RuntimeError::Format { .. }
        | RuntimeError::UnsupportedDtype { .. }
        | RuntimeError::Shape { .. }
        | RuntimeError::MissingTensors { .. }
        | RuntimeError::UnknownTensors { .. }
        | RuntimeError::DuplicateTensor { .. }
        | RuntimeError::UnknownWeight { .. } => ErrorKind::Weights,
        RuntimeError::UnknownParam { .. } => ErrorKind::UnknownName,
        RuntimeError::BadParam { .. } => ErrorKind::BadValue,
        RuntimeError::InputCount { .. }
        | RuntimeError::InputShape { .. }
        | RuntimeError::TensorData { .. } => ErrorKind::Shape,
        RuntimeError::MemoryBudget { .. } => ErrorKind::Memory,
        _ => ErrorKind::Runtime,
    };
    Diagnostic::new(kind, e.to_string())
}
