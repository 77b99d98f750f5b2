//! What [`super::CudaDevice`] asks of a GPU: zeroed allocations addressed by 64-bit device
//! pointers, copies, kernel launches whose arguments are all 64-bit words, and column-major
//! SGEMMs with cuBLAS's arguments. Two implement it: [`super::driver::DriverGpu`] (the CUDA
//! driver, NVRTC and cuBLAS through cudarc) and [`super::shim::ShimGpu`] (host memory, the
//! same CUDA C compiled by the system C++ compiler through `kernels/cuda/host_shim.h`, and
//! a reference SGEMM), so the device's own logic, every pointer offset, launch size and
//! GEMM argument, runs on CPU-only CI.

use crate::error::Result;

/// A hand-written library kernel of `kernels/cuda/ops.cuh`: its position among the file's
/// `extern "C" __global__` kernels ([`Op::all`]). The list is read from the source itself, so
/// a new kernel needs no entry here; devices look kernels up by name ([`Op::named`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Op(usize);

impl Op {
    /// Every library kernel's name, in ops.cuh's order.
    pub fn all() -> &'static [&'static str] {
        static ALL: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
        ALL.get_or_init(|| kernel_names(super::OPS_SOURCE))
    }

    /// The library kernel called `symbol`, or an error naming the kernels there are.
    pub fn named(symbol: &str) -> Result<Op> {
        match Op::all().iter().position(|&s| s == symbol) {
            Some(i) => Ok(Op(i)),
            None => Err(crate::error::RuntimeError::Device(format!(
                "ops.cuh has no kernel `{symbol}` (it has {})",
                Op::all().join(", ")
            ))),
        }
    }

    /// The kernel's name in ops.cuh.
    pub fn symbol(self) -> &'static str {
        Op::all()[self.0]
    }

    /// Position in [`Op::all`].
    pub fn index(self) -> usize {
        self.0
    }
}

/// The names of the `extern "C" __global__ void NAME(` kernels of a CUDA source, in order.
pub fn kernel_names(source: &str) -> Vec<&str> {
    const MARK: &str = "extern \"C\" __global__ void ";
    source
        .match_indices(MARK)
        .filter_map(|(i, _)| {
            let rest = &source[i + MARK.len()..];
            let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))?;
            Some(&rest[..end])
        })
        .collect()
}

/// A kernel to launch: a library kernel, or the plan's generated kernel number `i`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    Op(Op),
    Generated(usize),
}

/// A one-dimensional launch: `blocks` blocks of `threads` threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Launch {
    pub blocks: u32,
    pub threads: u32,
}

/// cuBLAS `sgemm` (`batch == 1`) or `sgemm_strided_batched`, column-major, alpha 1:
/// `C = op(A) op(B) + beta C` for each of `batch` matrices, `op(A)` being `m x k`, `op(B)`
/// `k x n`, `C` `m x n`. With `beta == 0` C is written without being read (cuBLAS's rule).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sgemm {
    pub trans_a: bool,
    pub trans_b: bool,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: u64,
    pub lda: usize,
    pub stride_a: usize,
    pub b: u64,
    pub ldb: usize,
    pub stride_b: usize,
    pub beta: f32,
    pub c: u64,
    pub ldc: usize,
    pub stride_c: usize,
    pub batch: usize,
}

/// One GPU and one in-order stream of work on it. Copies to the host and [`Gpu::sync`]
/// wait for everything submitted before them.
pub trait Gpu: Send {
    /// An allocation of f32; freed when dropped.
    type Mem: Send;

    /// A short name for messages, e.g. `cuda:0 (NVIDIA H100 80GB HBM3, sm_90)`.
    fn name(&self) -> String;
    /// How many generated kernels the backend holds.
    fn num_generated(&self) -> usize;
    /// `len` zeroed floats (at least one is allocated, so every allocation has an address).
    fn alloc_zeros(&mut self, len: usize) -> std::result::Result<Self::Mem, String>;
    /// The device address of element 0.
    fn addr(&self, m: &Self::Mem) -> u64;
    /// Host -> `dst[offset..offset + src.len()]`, in stream order; `src` may be reused on
    /// return.
    fn htod(&mut self, src: &[f32], dst: &mut Self::Mem, offset: usize, what: &str) -> Result<()>;
    /// `src[offset..offset + out.len()]` -> host, after all earlier work; complete on
    /// return.
    fn dtoh(&mut self, src: &Self::Mem, offset: usize, out: &mut [f32], what: &str) -> Result<()>;
    /// Zeroes `dst[offset..offset + len]` in stream order.
    fn zero(&mut self, dst: &mut Self::Mem, offset: usize, len: usize, what: &str) -> Result<()>;
    /// Launches `kernel` with one 64-bit word per parameter (a device pointer or an
    /// integer).
    fn launch(&mut self, kernel: Kernel, cfg: Launch, args: &[u64], what: &str) -> Result<()>;
    /// Submits one [`Sgemm`].
    fn sgemm(&mut self, g: &Sgemm, what: &str) -> Result<()>;
    /// Waits for all submitted work.
    fn sync(&mut self) -> Result<()>;
}
