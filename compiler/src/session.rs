//! From a compiled [`Program`] to a running [`Session`]: print the Rust kernels, build them
//! (or take them from the cache), load the library and hand the plan to the runtime; or, for
//! `cuda[:N]`, print the CUDA kernels and hand them to the runtime's [`CudaDevice`], which
//! compiles them with NVRTC.

use std::path::Path;

use snn_runtime::{KernelTable, RuntimeError, Session};

use crate::build::{self, BuiltLib};
use crate::diag::{DResult, Diagnostic, ErrorKind};
use crate::ir::kernel::Program;

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

/// Parses `cpu`, `cuda` or `cuda:N` into `None` (CPU) or `Some(ordinal)`.
pub fn parse_device(device: &str) -> DResult<Option<usize>> {
    match device {
        "cpu" => Ok(None),
        "cuda" => Ok(Some(0)),
        d => match d.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => Ok(Some(n)),
            _ => Err(
                Diagnostic::new(ErrorKind::BadArgument, format!("unknown device `{d}`"))
                    .hint("use --device cpu, cuda or cuda:N"),
            ),
        },
    }
}

/// Load `program` on `device` (`cpu`, `cuda`, `cuda:N`); `cache` is the CPU kernel cache.
pub fn load_device(program: &Program, device: &str, cache: Option<&Path>) -> DResult<DeviceLoaded> {
    let Some(ordinal) = parse_device(device)? else {
        let l = load(program, cache)?;
        return Ok(DeviceLoaded {
            session: l.session,
            kernels: format!(
                "cpu kernels {} ({:.0} ms)",
                if l.lib.cached { "cached" } else { "built" },
                l.lib.seconds * 1e3
            ),
        });
    };
    let start = std::time::Instant::now();
    let source = crate::back::cuda::print_program(program);
    let session = Session::new_cuda(program.plan.clone(), ordinal, &source).map_err(cuda_diag)?;
    Ok(DeviceLoaded {
        kernels: format!(
            "{} ({:.0} ms to set up)",
            session.device_name(),
            start.elapsed().as_secs_f64() * 1e3
        ),
        session,
    })
}

/// A CUDA set-up error as one clear line (no driver, no device, NVRTC failure).
fn cuda_diag(e: RuntimeError) -> Diagnostic {
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
        _ => ErrorKind::Runtime,
    };
    Diagnostic::new(kind, e.to_string())
}
