//! The CUDA device: slots, weights and parameters in device memory, GEMMs through cuBLAS,
//! conv2d as im2col + strided-batched cuBLAS GEMM, pooling and bias kernels from
//! `kernels/cuda/ops.cuh`, and the compiler's generated kernels compiled with NVRTC.
//!
//! The CUDA libraries (`libcuda`, `libnvrtc`, `libcublas`) are loaded at run time, so this
//! builds and links on machines without a toolkit; [`CudaDevice::new`] checks for them first
//! and returns a [`RuntimeError::Device`] (never a panic) when one is missing or no device
//! answers. Generated code is compiled with `--fmad=false` so the neuron updates round like
//! the CPU kernels; PTX is cached in memory per (source, headers, architecture), and on disk
//! under [`crate::cache_dir`]`/ptx` keyed by a SHA-256 of those and NVRTC's version, so a
//! model that was run before starts without NVRTC.
//!
//! All work goes to one stream in submission order; [`Memory::download`] and
//! [`Memory::sync`] wait for it. Inputs and outputs of [`PINNED_MIN`] elements or more move
//! through page-locked host buffers: the DMA engine reads them directly, and an upload
//! returns once its data is in the staging buffer, before the copy runs.
//!
//! The device's logic (bounds checks, pointer offsets, launch sizes, the cuBLAS arguments
//! of each operation) is written once over the [`Gpu`] trait. [`DriverGpu`] is the real
//! GPU (driver.rs, NVRTC in nvrtc.rs); [`ShimGpu`] (shim.rs) runs the same CUDA C on the
//! host through `kernels/cuda/host_shim.h` with a reference SGEMM, so CPU-only CI runs every
//! model through this device too.
//!
//! This file holds the device's memory (the [`Memory`] trait) and the helpers every op
//! uses; each op family and concern implements its trait in a file of its own (`dense.rs`,
//! `conv.rs`, `pool.rs`, `time_mix.rs`, `filter.rs`, `wave.rs`, `launch.rs`, `optim.rs`).

mod conv;
mod dense;
mod driver;
mod filter;
mod gpu;
mod launch;
mod nvrtc;
mod optim;
mod plastic;
mod pool;
pub mod shim;
mod time_mix;
mod wave;

pub use driver::{copy_bandwidth, driver_present, CopyTimes, DriverGpu, PINNED_MIN};
pub use gpu::{Gpu, Kernel, Launch, Op, Sgemm};
pub use nvrtc::{compile_ptx, compile_ptx_cached, nvrtc_present, nvrtc_version, ptx_cache_file};
pub use shim::ShimGpu;

use crate::device::{Loc, Memory};
use crate::error::{Result, RuntimeError};
use crate::plan::{PoolKind, WeightId};

/// The hand-written library kernels (im2col, bias, pooling).
pub const OPS_SOURCE: &str = include_str!("../../../kernels/cuda/ops.cuh");
/// Hand-written device support (Philox, bit casts) that generated kernels `#include`.
pub const PRELUDE: &str = include_str!("../../../kernels/cuda/snn_prelude.cuh");
/// The name generated files include the prelude by (NVRTC header name).
pub const PRELUDE_NAME: &str = "snn_prelude.cuh";
/// Threads per block for every launch.
pub const BLOCK: u32 = 256;
/// Most f32 elements of the im2col scratch buffer (256 MiB); larger convs run in chunks.
const SCRATCH_MAX: usize = 64 << 20;

/// A device buffer of `len` f32 (at least one element is allocated).
struct Buf<M> {
    mem: M,
    len: usize,
}

/// A conv kernel's arguments (ops.cuh): `lead`, then the geometry in the order every conv
/// kernel takes it (`c_in, h, w, kh, kw, stride, pad, h_out, w_out`), then `tail`.
fn conv_args(lead: &[u64], g: &crate::plan::ConvGeom, tail: &[u64]) -> Vec<u64> {
    let geom = [
        g.c_in, g.h, g.w, g.kh, g.kw, g.stride, g.pad, g.h_out, g.w_out,
    ];
    let mut v = lead.to_vec();
    v.extend(geom.iter().map(|&x| x as u64));
    v.extend_from_slice(tail);
    v
}

/// The `kind` argument of `snn_pool2d` / `snn_pool2d_dx` in kernels/cuda/ops.cuh.
fn pool_code(kind: PoolKind) -> u64 {
    match kind {
        PoolKind::Max => 0,
        PoolKind::Avg => 1,
    }
}

/// The CUDA device: one GPU (`G`: the driver's, or the host shim's), one stream.
pub struct CudaDevice<G: Gpu = DriverGpu> {
    gpu: G,
    slots: Vec<Buf<G::Mem>>,
    weights: Vec<Option<Buf<G::Mem>>>,
    /// `[k, n]` transposed copies of the weights an event-driven GEMM reads, made on first
    /// use and dropped by `set_weight`.
    transposed: Vec<Option<Buf<G::Mem>>>,
    /// Weight gradients (allocated by `zero_grads`).
    grads: Vec<Option<Buf<G::Mem>>>,
    params: Option<Buf<G::Mem>>,
    scratch: Option<Buf<G::Mem>>,
    /// The matrix and bias of a `time_mix`, or a rule's parameters, uploaded per call.
    mix_scratch: Option<Buf<G::Mem>>,
    /// A `time_mix_dw`'s products, row sums and a row of ones.
    dw_scratch: Option<Buf<G::Mem>>,
    /// Optimizer state per weight (`optim_step`): momentum or `exp_avg`, then `exp_avg_sq`.
    optim: Vec<[Option<Buf<G::Mem>>; 2]>,
    /// `snn_sq_sum`'s f64 partial sums (two floats each).
    sq_scratch: Option<Buf<G::Mem>>,
    /// `conv2d_dw`'s channel-major columns and output gradients.
    perm_scratch: Option<Buf<G::Mem>>,
}

/// Threads (and f64 partial sums) of `snn_sq_sum` per tensor: enough to fill a GPU, few
/// enough that the partials of all tensors download in one small copy.
const SQ_PARTS: usize = 8192;

impl<G: Gpu> std::fmt::Debug for CudaDevice<G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaDevice")
            .field("name", &self.gpu.name())
            .field("kernels", &self.gpu.num_generated())
            .finish()
    }
}

/// `len` zeroed floats on `gpu`; an allocation failure names `what` and its size.
fn alloc_on<G: Gpu>(gpu: &mut G, len: usize, what: &str) -> Result<Buf<G::Mem>> {
    let mem = gpu.alloc_zeros(len).map_err(|e| {
        RuntimeError::Device(format!(
            "cannot allocate {what} ({} MiB) on the GPU: {e}; hint: reduce T or the batch size",
            len.saturating_mul(4) >> 20
        ))
    })?;
    Ok(Buf { mem, len })
}

/// The scratch buffer in `slot`, reallocated (contents lost) when it holds fewer than
/// `need` floats.
fn grown<'a, G: Gpu>(
    gpu: &mut G,
    slot: &'a mut Option<Buf<G::Mem>>,
    need: usize,
    what: &str,
) -> Result<&'a mut Buf<G::Mem>> {
    if slot.as_ref().is_none_or(|s| s.len < need) {
        // Free the old buffer before allocating its replacement.
        *slot = None;
        *slot = Some(alloc_on(gpu, need, what)?);
    }
    Ok(slot.as_mut().expect("allocated above"))
}

/// The length of buffer `id` of `bufs` (weights, gradients), if it exists.
fn held_len<M>(bufs: &[Option<Buf<M>>], id: WeightId) -> Option<usize> {
    bufs.get(id).and_then(|b| b.as_ref()).map(|b| b.len)
}

fn grid(n: usize, what: &str) -> Result<Launch> {
    let blocks = n.div_ceil(BLOCK as usize);
    let blocks = u32::try_from(blocks)
        .ok()
        .filter(|&b| b < i32::MAX as u32)
        .ok_or_else(|| RuntimeError::Device(format!("{what}: {n} threads is too many")))?;
    Ok(Launch {
        blocks: blocks.max(1),
        threads: BLOCK,
    })
}

fn mul(a: usize, b: usize) -> Result<usize> {
    a.checked_mul(b)
        .ok_or_else(|| RuntimeError::Device("operation size overflows".into()))
}

impl CudaDevice<DriverGpu> {
    /// Opens GPU `ordinal`, compiles `cuda_source` (which may `#include` any of `headers`,
    /// given as `(name, text)`) and looks up the kernels `symbols` in plan order.
    pub fn new(
        ordinal: usize,
        cuda_source: &str,
        headers: &[(&str, &str)],
        symbols: Vec<String>,
    ) -> Result<CudaDevice> {
        let gpu = DriverGpu::open(ordinal, cuda_source, headers, &symbols)?;
        Ok(CudaDevice::with_gpu(gpu))
    }

    /// The NVRTC architecture the kernels were compiled for, e.g. `compute_90`.
    pub fn arch(&self) -> &str {
        self.gpu.arch()
    }
}

impl<G: Gpu> CudaDevice<G> {
    /// The device on `gpu`, which holds the plan's generated kernels.
    pub fn with_gpu(gpu: G) -> CudaDevice<G> {
        CudaDevice {
            gpu,
            slots: Vec::new(),
            weights: Vec::new(),
            transposed: Vec::new(),
            grads: Vec::new(),
            params: None,
            scratch: None,
            mix_scratch: None,
            dw_scratch: None,
            optim: Vec::new(),
            sq_scratch: None,
            perm_scratch: None,
        }
    }

    /// The GPU underneath.
    pub fn gpu(&self) -> &G {
        &self.gpu
    }

    fn alloc(&mut self, len: usize, what: &str) -> Result<Buf<G::Mem>> {
        alloc_on(&mut self.gpu, len, what)
    }

    /// Device address of element `loc.offset..+len` of a slot, after a bounds check.
    fn slot_ptr(&self, loc: Loc, len: usize, what: &str) -> Result<u64> {
        let b = self.slots.get(loc.slot).ok_or_else(|| {
            RuntimeError::Device(format!("{what}: slot {} does not exist", loc.slot))
        })?;
        match loc.offset.checked_add(len) {
            Some(end) if end <= b.len => Ok(self.gpu.addr(&b.mem) + 4 * loc.offset as u64),
            _ => Err(RuntimeError::Device(format!(
                "{what}: elements {}..{} are outside slot {} ({} elements)",
                loc.offset,
                loc.offset.saturating_add(len),
                loc.slot,
                b.len
            ))),
        }
    }

    fn weight_ptr(&self, id: WeightId, len: usize, what: &str) -> Result<u64> {
        let b = self
            .weights
            .get(id)
            .and_then(|w| w.as_ref())
            .ok_or_else(|| RuntimeError::Device(format!("{what}: weight {id} was never set")))?;
        if b.len != len {
            return Err(RuntimeError::Device(format!(
                "{what}: weight {id} has {} elements, the operation needs {len}",
                b.len
            )));
        }
        Ok(self.gpu.addr(&b.mem))
    }

    /// Device -> host copy of the whole weight (or gradient) `id`, complete on return.
    fn copy_out(&mut self, grads: bool, id: WeightId, out: &mut [f32]) -> Result<()> {
        let (what, absent, bufs) = if grads {
            ("gradient", "was never computed", &self.grads)
        } else {
            ("weight", "was never set", &self.weights)
        };
        let what = format!("{what} {id}");
        let b = bufs
            .get(id)
            .and_then(|w| w.as_ref())
            .ok_or_else(|| RuntimeError::Device(format!("{what} {absent}")))?;
        if b.len != out.len() {
            return Err(RuntimeError::Device(format!(
                "{what} has {} elements, {} requested",
                b.len,
                out.len()
            )));
        }
        self.gpu.dtoh(&b.mem, 0, out, &what)
    }

    fn grad_ptr(&self, id: WeightId, len: usize, what: &str) -> Result<u64> {
        let b = self.grads.get(id).and_then(|w| w.as_ref()).ok_or_else(|| {
            RuntimeError::Device(format!(
                "{what}: gradients are not allocated (zero_grads first)"
            ))
        })?;
        if b.len != len {
            return Err(RuntimeError::Device(format!(
                "{what}: gradient {id} has {} elements, the operation needs {len}",
                b.len
            )));
        }
        Ok(self.gpu.addr(&b.mem))
    }

    fn distinct(a: Loc, b: Loc, what: &str) -> Result<()> {
        if a.slot == b.slot {
            return Err(RuntimeError::Device(format!(
                "{what}: input and output share slot {}",
                a.slot
            )));
        }
        Ok(())
    }

    /// Launches a library kernel over `n` threads with `u64` arguments.
    fn launch_ops(&mut self, symbol: &str, n: usize, args: &[u64]) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let op = Op::named(symbol)?;
        let cfg = grid(n, symbol)?;
        self.gpu.launch(Kernel::Op(op), cfg, args, symbol)
    }

    /// Column-major SGEMM (strided batched when `batch > 1`), alpha 1.
    #[allow(clippy::too_many_arguments)]
    fn sgemm(
        &mut self,
        (trans_a, trans_b): (bool, bool),
        m: usize,
        n: usize,
        k: usize,
        a: u64,
        lda: usize,
        stride_a: usize,
        b: u64,
        ldb: usize,
        stride_b: usize,
        beta: f32,
        c: u64,
        ldc: usize,
        stride_c: usize,
        batch: usize,
        what: &str,
    ) -> Result<()> {
        let g = Sgemm {
            trans_a,
            trans_b,
            m,
            n,
            k,
            a,
            lda,
            stride_a,
            b,
            ldb,
            stride_b,
            beta,
            c,
            ldc,
            stride_c,
            batch,
        };
        self.gpu.sgemm(&g, what)
    }
}

impl<G: Gpu> Memory for CudaDevice<G> {
    fn name(&self) -> String {
        self.gpu.name()
    }

    fn alloc_slots(&mut self, sizes: &[usize]) -> Result<()> {
        self.slots.truncate(sizes.len());
        for (i, &size) in sizes.iter().enumerate() {
            if let Some(b) = self.slots.get(i) {
                if b.len == size {
                    continue;
                }
            }
            // Free the old buffer before allocating its replacement.
            if i < self.slots.len() {
                let placeholder = self.alloc(0, "slot")?;
                drop(std::mem::replace(&mut self.slots[i], placeholder));
                self.slots[i] = self.alloc(size, &format!("slot {i}"))?;
            } else {
                let b = self.alloc(size, &format!("slot {i}"))?;
                self.slots.push(b);
            }
        }
        Ok(())
    }

    fn set_weight(&mut self, id: WeightId, data: &[f32]) -> Result<()> {
        if self.weights.len() <= id {
            self.weights.resize_with(id + 1, || None);
        }
        let fits = matches!(&self.weights[id], Some(b) if b.len == data.len());
        if !fits {
            self.weights[id] = Some(self.alloc(data.len(), &format!("weight {id}"))?);
        }
        if let Some(t) = self.transposed.get_mut(id) {
            *t = None;
        }
        let Some(b) = self.weights[id].as_mut() else {
            unreachable!()
        };
        self.gpu.htod(data, &mut b.mem, 0, "weight")
    }

    fn get_weight(&mut self, id: WeightId, out: &mut [f32]) -> Result<()> {
        self.copy_out(false, id, out)
    }

    fn set_params(&mut self, params: &[f32]) -> Result<()> {
        let fits = matches!(&self.params, Some(b) if b.len == params.len());
        if !fits {
            self.params = Some(self.alloc(params.len(), "parameters")?);
        }
        let Some(b) = self.params.as_mut() else {
            unreachable!()
        };
        self.gpu.htod(params, &mut b.mem, 0, "parameters")
    }

    fn upload(&mut self, dst: Loc, data: &[f32]) -> Result<()> {
        self.slot_ptr(dst, data.len(), "upload")?;
        if data.is_empty() {
            return Ok(());
        }
        let b = &mut self.slots[dst.slot];
        self.gpu.htod(data, &mut b.mem, dst.offset, "upload")
    }

    fn download(&mut self, src: Loc, out: &mut [f32]) -> Result<()> {
        self.slot_ptr(src, out.len(), "download")?;
        if out.is_empty() {
            return Ok(());
        }
        let b = &self.slots[src.slot];
        self.gpu.dtoh(&b.mem, src.offset, out, "download")
    }

    fn zero(&mut self, dst: Loc, len: usize) -> Result<()> {
        self.slot_ptr(dst, len, "zero")?;
        if len == 0 {
            return Ok(());
        }
        let b = &mut self.slots[dst.slot];
        self.gpu.zero(&mut b.mem, dst.offset, len, "slot")
    }

    fn add_grad(&mut self, id: WeightId, data: &[f32]) -> Result<()> {
        self.grad_ptr(id, data.len(), "add_grad")?;
        let mut host = vec![0.0f32; data.len()];
        self.get_grad(id, &mut host)?;
        host.iter_mut().zip(data).for_each(|(o, &v)| *o += v);
        if host.is_empty() {
            return Ok(());
        }
        let Some(b) = self.grads[id].as_mut() else {
            unreachable!("checked by grad_ptr")
        };
        self.gpu.htod(&host, &mut b.mem, 0, "add_grad")
    }

    fn zero_grads(&mut self) -> Result<()> {
        if self.grads.len() < self.weights.len() {
            self.grads.resize_with(self.weights.len(), || None);
        }
        for i in 0..self.weights.len() {
            let len = self.weights[i].as_ref().map_or(0, |w| w.len);
            let fits = matches!(&self.grads[i], Some(b) if b.len == len);
            if !fits {
                self.grads[i] = Some(self.alloc(len, &format!("gradient {i}"))?);
            }
            if len > 0 {
                let b = self.grads[i].as_mut().expect("allocated above");
                self.gpu.zero(&mut b.mem, 0, len, "gradient")?;
            }
        }
        Ok(())
    }

    fn get_grad(&mut self, id: WeightId, out: &mut [f32]) -> Result<()> {
        self.copy_out(true, id, out)
    }

    fn sync(&mut self) -> Result<()> {
        self.gpu.sync()
    }
}
