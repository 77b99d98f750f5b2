//! The generated kernels of a plan, as C-ABI function pointers.
//!
//! In the CLI path snnc builds the generated Rust kernels into a cdylib and the runtime loads
//! it here, checking the kernel ABI version before trusting any symbol; in the macro path the
//! kernels are compiled into the user's crate and handed over with [`KernelTable::from_fns`].

use crate::error::{Result, RuntimeError};
use crate::plan::{KernelFn, KernelId, Plan, KERNEL_ABI_VERSION};
use std::fmt;
use std::path::{Path, PathBuf};

/// Name of the ABI-version symbol every kernel library exports:
/// `extern "C" fn snn_abi_version() -> u32`.
pub const ABI_SYMBOL: &str = "snn_abi_version";

/// `error: cause: cause` (libloading keeps the dlopen message in the source).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// Kernel function pointers in `plan.kernels` order. When loaded from a library, the library
/// stays open as long as the table lives.
pub struct KernelTable {
    fns: Vec<KernelFn>,
    names: Vec<String>,
    source: Option<PathBuf>,
    // Declared last: dropped after the function pointers that point into it.
    _lib: Option<libloading::Library>,
}

impl fmt::Debug for KernelTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KernelTable")
            .field("kernels", &self.names)
            .field("source", &self.source)
            .finish()
    }
}

impl KernelTable {
    /// Loads a kernel library built by snnc and resolves the symbol of every
    /// `plan.kernels` entry.
    ///
    /// Loading a library runs its initialisers, and the resolved functions are called with
    /// raw pointers: only load libraries snnc generated for this plan. The ABI version
    /// check guards against stale libraries, not against malicious ones.
    pub fn load(path: &Path, plan: &Plan) -> Result<KernelTable> {
        if !path.exists() {
            return Err(RuntimeError::KernelLibrary {
                path: path.to_path_buf(),
                detail: "the file does not exist".into(),
            });
        }
        // SAFETY: see the doc comment; the library is trusted generated code.
        let lib =
            unsafe { libloading::Library::new(path) }.map_err(|e| RuntimeError::KernelLibrary {
                path: path.to_path_buf(),
                detail: error_chain(&e),
            })?;
        // SAFETY: the symbol's type is fixed by the kernel ABI.
        let version = unsafe {
            let f = lib
                .get::<unsafe extern "C" fn() -> u32>(ABI_SYMBOL)
                .map_err(|_| RuntimeError::KernelLibrary {
                    path: path.to_path_buf(),
                    detail: format!(
                        "it exports no `{ABI_SYMBOL}`, so it is not an snnc kernel library"
                    ),
                })?;
            f()
        };
        if version != KERNEL_ABI_VERSION {
            return Err(RuntimeError::KernelAbi {
                path: path.to_path_buf(),
                expected: KERNEL_ABI_VERSION,
                found: version,
            });
        }
        let mut fns = Vec::with_capacity(plan.kernels.len());
        for k in &plan.kernels {
            // SAFETY: generated kernels have the `KernelFn` signature (ABI checked above).
            let f: KernelFn = unsafe {
                *lib.get::<KernelFn>(k.symbol.as_str())
                    .map_err(|_| RuntimeError::KernelSymbol {
                        path: path.to_path_buf(),
                        symbol: k.symbol.clone(),
                    })?
            };
            fns.push(f);
        }
        Ok(KernelTable {
            fns,
            names: plan.kernels.iter().map(|k| k.symbol.clone()).collect(),
            source: Some(path.to_path_buf()),
            _lib: Some(lib),
        })
    }

    /// A table of statically linked kernels, in `plan.kernels` order.
    pub fn from_fns(fns: Vec<KernelFn>) -> KernelTable {
        let names = (0..fns.len()).map(|i| format!("kernel{i}")).collect();
        KernelTable {
            fns,
            names,
            source: None,
            _lib: None,
        }
    }

    /// An empty table (plans without generated kernels).
    pub fn empty() -> KernelTable {
        KernelTable::from_fns(Vec::new())
    }

    /// Names the kernels (for errors and dumps), e.g. with the plan's symbols.
    pub fn with_names(mut self, names: Vec<String>) -> KernelTable {
        if names.len() == self.fns.len() {
            self.names = names;
        }
        self
    }

    pub fn len(&self) -> usize {
        self.fns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fns.is_empty()
    }

    pub fn get(&self, id: KernelId) -> Option<KernelFn> {
        self.fns.get(id).copied()
    }

    /// The kernel's name (its symbol when loaded from a library).
    pub fn name(&self, id: KernelId) -> Option<&str> {
        self.names.get(id).map(|s| s.as_str())
    }

    /// The library the kernels came from, if any.
    pub fn source(&self) -> Option<&Path> {
        self.source.as_deref()
    }
}
