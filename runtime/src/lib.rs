//! `snn-runtime`: everything needed to run a compiled spiking network.
//!
//! The compiler (`snnc`) turns a network into a [`plan::Plan`] (buffers, weights, parameters
//! and ops in schedule order) plus generated kernels. This crate runs that plan: a
//! [`Session`] validates it, owns the weights and the flat parameter array, and walks the ops
//! on a [`Device`] — library calls (GEMM, conv, pooling) plus launches of generated kernels.
//! The runtime never interprets neuron models itself, so the CPU and a GPU device share one
//! executor and differ only in how they implement the [`Device`] primitives.
//!
//! Also here: weight checkpoints ([`io::weights`], safetensors), arrays ([`io::npy`]),
//! the Philox RNG shared with the generated kernels ([`rng`]), and kernel-library loading
//! ([`KernelTable`]).

pub mod budget;
pub mod cache_tmp;
pub mod cpu;
pub mod cuda;
pub mod data;
pub mod device;
pub mod error;
pub mod exec;
#[doc(hidden)]
pub mod fuzzing;
pub mod io;
pub mod kernels;
pub mod op;
pub mod plan;
pub mod rng;
pub mod tensor;
pub mod train;

pub use budget::Budget;
pub use cpu::CpuDevice;
pub use cuda::CudaDevice;
pub use device::Device;
pub use error::{Result, RuntimeError};
pub use exec::Session;
pub use kernels::KernelTable;
pub use tensor::Tensor;

/// Where compiled kernels are cached: `$SNNC_CACHE_DIR`, else `$XDG_CACHE_HOME/snnc`, else
/// `~/.cache/snnc`, else a directory under the system temp dir. The compiler keeps its CPU
/// kernel libraries there, the CUDA device its PTX (`ptx/`).
pub fn cache_dir() -> std::path::PathBuf {
    use std::path::PathBuf;
    if let Some(d) = std::env::var_os("SNNC_CACHE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("snnc");
    }
    if let Some(h) = std::env::var_os("HOME") {
        return PathBuf::from(h).join(".cache").join("snnc");
    }
    std::env::temp_dir().join("snnc-cache")
}
