//! From a compiled [`Program`] to a running [`Session`]: print the Rust kernels, build them
//! (or take them from the cache), load the library and hand the plan to the runtime.

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
