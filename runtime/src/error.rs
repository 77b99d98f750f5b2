//! Runtime errors.
//!
//! Every failure the runtime can meet on user input (files, shapes, parameter values, kernel
//! libraries, plans) is a [`RuntimeError`] value whose message names the cause, the file or
//! tensor involved, and where it helps, a hint. The runtime never panics on bad input.

use std::fmt;
use std::path::{Path, PathBuf};

/// `Result` with a [`RuntimeError`].
pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

/// Formats a shape as `[10, 784]` (a scalar is `[]`).
pub fn fmt_shape(shape: &[usize]) -> String {
    let parts: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

fn fmt_list(names: &[String], max: usize) -> String {
    let mut s: Vec<String> = names.iter().take(max).map(|n| format!("`{n}`")).collect();
    if names.len() > max {
        s.push(format!("... ({} more)", names.len() - max));
    }
    s.join(", ")
}

/// Everything that can go wrong in the runtime.
#[derive(Debug)]
#[non_exhaustive]
pub enum RuntimeError {
    /// An OS-level I/O failure on a file (`action` is e.g. "read", "write", "rename").
    Io {
        path: PathBuf,
        action: &'static str,
        source: std::io::Error,
    },
    /// A file exists but is not valid in its format (corrupt, truncated, wrong magic).
    Format {
        path: PathBuf,
        /// `"weights file"`, `"array file"`.
        kind: &'static str,
        detail: String,
    },
    /// A tensor or array stored with an element type the runtime does not convert.
    UnsupportedDtype {
        path: PathBuf,
        /// The tensor's name (safetensors) or `None` (npy: the whole file).
        tensor: Option<String>,
        dtype: String,
        supported: &'static str,
    },
    /// A tensor (weight, parameter, array) has the wrong shape.
    Shape {
        /// What was checked, e.g. "weights file `w.safetensors`: tensor `fc1.weight`".
        what: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    /// Tensors the model needs are absent from a weights file.
    MissingTensors { path: PathBuf, names: Vec<String> },
    /// A weights file holds tensors that are neither weights nor parameters of the model.
    UnknownTensors {
        path: PathBuf,
        names: Vec<String>,
        known: Vec<String>,
    },
    /// A weights file to be written names a tensor twice.
    DuplicateTensor { path: PathBuf, name: String },
    /// `param`/`set_param` with a name the model does not have.
    UnknownParam { name: String, known: Vec<String> },
    /// `weight`/`set_weight` with a name the model does not have.
    UnknownWeight { name: String, known: Vec<String> },
    /// A parameter value violates its [`crate::plan::ParamCheck`].
    BadParam {
        name: String,
        value: f32,
        expected: &'static str,
        /// Where the value came from, e.g. "weights file `w.safetensors`" (empty: a call).
        origin: String,
    },
    /// `run` was given the wrong number of input tensors.
    InputCount {
        expected: usize,
        found: usize,
        names: Vec<String>,
    },
    /// An input tensor has the wrong shape.
    InputShape {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
        time_varying: bool,
    },
    /// A tensor's data length does not match its shape.
    TensorData { shape: Vec<usize>, len: usize },
    /// The kernel library could not be opened.
    KernelLibrary { path: PathBuf, detail: String },
    /// The kernel library lacks a symbol the plan needs.
    KernelSymbol { path: PathBuf, symbol: String },
    /// The kernel library was built for another kernel ABI.
    KernelAbi {
        path: PathBuf,
        expected: u32,
        found: u32,
    },
    /// The kernel table does not fit the plan.
    KernelTable { expected: usize, found: usize },
    /// The plan is inconsistent (a compiler bug, or a hand-built plan with a mistake).
    InvalidPlan(String),
    /// A call with an invalid argument (e.g. `t = 0`).
    InvalidArgument(String),
    /// A device operation failed.
    Device(String),
    /// What a model needs is over the memory budget: nothing was allocated.
    MemoryBudget {
        /// e.g. "the model needs 160.0 GB for T=8, batch=32" ([`crate::exec::Footprint::describe`]).
        needs: String,
        /// e.g. "19.2 GB: 80% of 24.0 GB physical memory".
        budget: String,
        /// The largest weight or buffer and its bytes.
        largest: Option<(String, String)>,
    },
    /// A dataset file is missing, corrupt or inconsistent.
    Data { path: PathBuf, message: String },
    /// A dataset's file was not found under any of the names it may have.
    DataMissing {
        /// What was looked for, e.g. "MNIST test images (t10k-images-idx3-ubyte)".
        what: String,
        /// Every path tried, in order.
        tried: Vec<PathBuf>,
    },
}

impl RuntimeError {
    pub(crate) fn io(path: &Path, action: &'static str, source: std::io::Error) -> Self {
        RuntimeError::Io {
            path: path.to_path_buf(),
            action,
            source,
        }
    }
    pub(crate) fn format(path: &Path, kind: &'static str, detail: impl Into<String>) -> Self {
        RuntimeError::Format {
            path: path.to_path_buf(),
            kind,
            detail: detail.into(),
        }
    }
    pub(crate) fn plan(msg: impl Into<String>) -> Self {
        RuntimeError::InvalidPlan(msg.into())
    }
}

impl fmt::Display for RuntimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use RuntimeError::*;
        match self {
            Io {
                path,
                action,
                source,
            } => {
                write!(f, "cannot {action} `{}`: {source}", path.display())?;
                if source.kind() == std::io::ErrorKind::NotFound && path.is_relative() {
                    if let Ok(cwd) = std::env::current_dir() {
                        write!(f, " (hint: the path is relative to `{}`)", cwd.display())?;
                    }
                }
                Ok(())
            }
            Format { path, kind, detail } => write!(
                f,
                "{kind} `{}` is corrupt or not in the expected format: {detail}",
                path.display()
            ),
            UnsupportedDtype {
                path,
                tensor,
                dtype,
                supported,
            } => {
                match tensor {
                    Some(t) => write!(f, "file `{}`: tensor `{t}` has element type {dtype}", path.display())?,
                    None => write!(f, "array file `{}` has element type {dtype}", path.display())?,
                }
                write!(f, ", which the runtime does not read (supported: {supported}; hint: convert it to float32)")
            }
            Shape {
                what,
                expected,
                found,
            } => write!(
                f,
                "{what} has shape {}, the model expects {}",
                fmt_shape(found),
                fmt_shape(expected)
            ),
            MissingTensors { path, names } => write!(
                f,
                "weights file `{}` lacks {} tensor{} the model needs: {} (hint: was it saved from this model?)",
                path.display(),
                names.len(),
                if names.len() == 1 { "" } else { "s" },
                fmt_list(names, 12)
            ),
            UnknownTensors { path, names, known } => write!(
                f,
                "weights file `{}` has tensor{} the model does not know: {}; the model's weights and parameters are: {}",
                path.display(),
                if names.len() == 1 { "" } else { "s" },
                fmt_list(names, 12),
                fmt_list(known, 24)
            ),
            DuplicateTensor { path, name } => write!(
                f,
                "cannot write weights file `{}`: tensor `{name}` appears twice",
                path.display()
            ),
            UnknownParam { name, known } => {
                write!(f, "the model has no parameter `{name}`")?;
                if known.is_empty() {
                    write!(f, " (it has no parameters)")
                } else {
                    write!(f, "; its parameters are: {}", fmt_list(known, 32))
                }
            }
            UnknownWeight { name, known } => {
                write!(f, "the model has no weight `{name}`")?;
                if known.is_empty() {
                    write!(f, " (it has no weights)")
                } else {
                    write!(f, "; its weights are: {}", fmt_list(known, 32))
                }
            }
            BadParam {
                name,
                value,
                expected,
                origin,
            } => {
                if !origin.is_empty() {
                    write!(f, "{origin}: ")?;
                }
                write!(f, "parameter `{name}` = {value} is invalid: it must be {expected}")
            }
            InputCount {
                expected,
                found,
                names,
            } => write!(
                f,
                "the model takes {expected} input tensor{} ({}), {found} given",
                if *expected == 1 { "" } else { "s" },
                fmt_list(names, 16)
            ),
            InputShape {
                name,
                expected,
                found,
                time_varying,
            } => write!(
                f,
                "input `{name}` has shape {}, expected {} ({})",
                fmt_shape(found),
                fmt_shape(expected),
                if *time_varying {
                    "time-varying input: [T, B, ...features]"
                } else {
                    "static input: [B, ...features]"
                }
            ),
            TensorData { shape, len } => write!(
                f,
                "tensor of shape {} needs {} elements, {len} given",
                fmt_shape(shape),
                shape.iter().product::<usize>()
            ),
            KernelLibrary { path, detail } => write!(
                f,
                "cannot load kernel library `{}`: {detail} (hint: rebuild the model's kernels with snnc)",
                path.display()
            ),
            KernelSymbol { path, symbol } => write!(
                f,
                "kernel library `{}` does not export `{symbol}` (hint: the library was built for another model or snnc version; rebuild it)",
                path.display()
            ),
            KernelAbi {
                path,
                expected,
                found,
            } => write!(
                f,
                "kernel library `{}` uses kernel ABI version {found}, this runtime needs version {expected} (hint: rebuild the kernels with the snnc that matches this runtime)",
                path.display()
            ),
            KernelTable { expected, found } => write!(
                f,
                "the plan has {expected} kernel{}, the kernel table {found}",
                if *expected == 1 { "" } else { "s" }
            ),
            InvalidPlan(msg) => write!(f, "invalid plan: {msg}"),
            InvalidArgument(msg) => write!(f, "{msg}"),
            Device(msg) => write!(f, "device error: {msg}"),
            MemoryBudget {
                needs,
                budget,
                largest,
            } => {
                write!(f, "{needs}, over the memory budget ({budget})")?;
                if let Some((name, bytes)) = largest {
                    write!(f, "; the largest part is `{name}` ({bytes})")?;
                }
                write!(
                    f,
                    " (hint: lower the batch or T, shrink the layer, or raise the budget: {}=SIZE or Session::set_memory_budget)",
                    crate::budget::ENV_VAR
                )
            }
            Data { path, message } => write!(
                f,
                "dataset file `{}`: {message} (hint: run scripts/fetch-data.sh, or point the model's `data = ...` at the right files)",
                path.display()
            ),
            DataMissing { what, tried } => {
                let paths: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
                write!(
                    f,
                    "cannot find the {what}; tried {} (hint: run scripts/fetch-data.sh, or point the model's `data = ...` at the directory)",
                    fmt_list(&paths, 8)
                )
            }
        }
    }
}

impl std::error::Error for RuntimeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RuntimeError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
