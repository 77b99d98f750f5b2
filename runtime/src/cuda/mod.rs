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
//! All work goes to one stream in submission order; [`Device::download`] and
//! [`Device::sync`] wait for it. Inputs and outputs of [`PINNED_MIN`] elements or more move
//! through page-locked host buffers: the DMA engine reads them directly, and an upload
//! returns once its data is in the staging buffer, before the copy runs.
//!
//! The device's logic (bounds checks, pointer offsets, launch sizes, the cuBLAS arguments
//! of each operation) is written once over the [`Gpu`] trait. [`DriverGpu`] is the real
//! GPU (driver.rs, NVRTC in nvrtc.rs); [`ShimGpu`] (shim.rs) runs the same CUDA C on the
//! host through `kernels/cuda/host_shim.h` with a reference SGEMM, so CPU-only CI runs every
//! model through this file too.

mod driver;
mod gpu;
mod nvrtc;
pub mod shim;

pub use driver::{copy_bandwidth, driver_present, CopyTimes, DriverGpu, PINNED_MIN};
pub use gpu::{Gpu, Kernel, Launch, Op, Sgemm};
pub use nvrtc::{compile_ptx, compile_ptx_cached, nvrtc_present, nvrtc_version, ptx_cache_file};
pub use shim::ShimGpu;

use crate::device::{
    check_optim_state, ConvDesc, ConvDwDesc, ConvDxDesc, Device, GemmDesc, GemmDwDesc, GemmDxDesc,
    LaunchDesc, Loc, PoolDesc, PoolDxDesc, TimeMixDesc, TimeMixDwDesc,
};
use crate::error::{Result, RuntimeError};
use crate::plan::{PoolKind, WeightId};
use crate::train::optim::Update;

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
    /// The matrix and bias of a `time_mix`, uploaded per call.
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
    fn launch_ops(&mut self, op: Op, n: usize, args: &[u64]) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let what = op.symbol();
        let cfg = grid(n, what)?;
        self.gpu.launch(Kernel::Op(op), cfg, args, what)
    }

    /// The event-driven form of [`Device::gemm`] (`d.sparse`): the bias as for a dense
    /// GEMM, then `snn_spike_gemm` on the weight's transposed copy.
    fn spike_gemm(&mut self, d: &GemmDesc) -> Result<()> {
        Self::distinct(d.x, d.y, "gemm")?;
        let x = self.slot_ptr(d.x, mul(d.rows, d.k)?, "gemm")?;
        let y = self.slot_ptr(d.y, mul(d.rows, d.n)?, "gemm")?;
        let len = mul(d.n, d.k)?;
        let w = self.weight_ptr(d.w, len, "gemm")?;
        let bias = match d.bias {
            Some(b) => Some(self.weight_ptr(b, d.n, "gemm bias")?),
            None => None,
        };
        if d.rows == 0 || d.n == 0 {
            return Ok(());
        }
        if self.transposed.len() <= d.w {
            self.transposed.resize_with(d.w + 1, || None);
        }
        if !matches!(&self.transposed[d.w], Some(b) if b.len == len) {
            let t = self.alloc(len, &format!("transposed weight {}", d.w))?;
            let wt = self.gpu.addr(&t.mem);
            self.transposed[d.w] = Some(t);
            self.launch_ops(Op::Transpose, len, &[w, wt, d.n as u64, d.k as u64])?;
        }
        let wt = self
            .gpu
            .addr(&self.transposed[d.w].as_ref().expect("made above").mem);
        let read_dst = match bias {
            Some(b) => {
                self.bias(y, b, d.rows * d.n, 1, d.n, d.accumulate)?;
                true
            }
            None => d.accumulate,
        };
        self.launch_ops(
            Op::SpikeGemm,
            d.rows * d.n,
            &[
                x,
                wt,
                y,
                d.rows as u64,
                d.k as u64,
                d.n as u64,
                read_dst as u64,
            ],
        )
    }

    fn bias(
        &mut self,
        y: u64,
        b: u64,
        n: usize,
        inner: usize,
        channels: usize,
        acc: bool,
    ) -> Result<()> {
        self.launch_ops(
            Op::Bias,
            n,
            &[y, b, n as u64, inner as u64, channels as u64, acc as u64],
        )
    }

    /// The im2col/col2im scratch buffer, at least `need` elements; its device address.
    fn scratch(&mut self, need: usize, what: &str) -> Result<u64> {
        let b = grown(&mut self.gpu, &mut self.scratch, need, what)?;
        Ok(self.gpu.addr(&b.mem))
    }

    /// `start` plus the squares of gradients `ids`, tensor after tensor: `snn_sq_sum`'s
    /// f64 partials of every tensor into one scratch buffer, one download, the partials
    /// added in order on the host.
    fn grad_sq_sums(&mut self, ids: &[WeightId], start: f64) -> Result<f64> {
        let mut jobs = Vec::with_capacity(ids.len());
        let mut total = 0;
        for &id in ids {
            let len = held_len(&self.grads, id).ok_or_else(|| {
                RuntimeError::Device(format!("grad_sq_sum: gradient {id} was never computed"))
            })?;
            let g = self.grad_ptr(id, len, "grad_sq_sum")?;
            let parts = len.min(SQ_PARTS);
            jobs.push((g, len, parts, total));
            total += parts;
        }
        if total == 0 {
            return Ok(start);
        }
        let b = grown(
            &mut self.gpu,
            &mut self.sq_scratch,
            2 * total,
            "grad_sq_sum partials",
        )?;
        let base = self.gpu.addr(&b.mem);
        for &(g, len, parts, at) in &jobs {
            let partial = base + 8 * at as u64;
            self.launch_ops(Op::SqSum, parts, &[g, partial, len as u64, parts as u64])?;
        }
        let mut words = vec![0.0f32; 2 * total];
        let buf = self.sq_scratch.as_ref().expect("made above");
        self.gpu
            .dtoh(&buf.mem, 0, &mut words, "grad_sq_sum partials")?;
        // Little-endian f64s, two floats each (the GPU's and the host's byte order).
        Ok(words.chunks_exact(2).fold(start, |acc, w| {
            acc + f64::from_bits(w[0].to_bits() as u64 | (w[1].to_bits() as u64) << 32)
        }))
    }

    /// `conv2d_dw`'s channel-major copies of columns and output gradients, at least
    /// `need` elements; its device address.
    fn perm_scratch(&mut self, need: usize) -> Result<u64> {
        let what = "conv2d_dw channel-major scratch";
        let b = grown(&mut self.gpu, &mut self.perm_scratch, need, what)?;
        Ok(self.gpu.addr(&b.mem))
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

impl<G: Gpu> Device for CudaDevice<G> {
    fn name(&self) -> String {
        self.gpu.name()
    }

    fn num_kernels(&self) -> usize {
        self.gpu.num_generated()
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

    fn gemm(&mut self, d: &GemmDesc) -> Result<()> {
        if d.sparse {
            return self.spike_gemm(d);
        }
        Self::distinct(d.x, d.y, "gemm")?;
        let x = self.slot_ptr(d.x, mul(d.rows, d.k)?, "gemm")?;
        let y = self.slot_ptr(d.y, mul(d.rows, d.n)?, "gemm")?;
        let w = self.weight_ptr(d.w, mul(d.n, d.k)?, "gemm")?;
        let bias = match d.bias {
            Some(b) => Some(self.weight_ptr(b, d.n, "gemm bias")?),
            None => None,
        };
        if d.rows == 0 || d.n == 0 {
            return Ok(());
        }
        let read_dst = match bias {
            Some(b) => {
                self.bias(y, b, d.rows * d.n, 1, d.n, d.accumulate)?;
                true
            }
            None => d.accumulate,
        };
        if d.k == 0 {
            if !read_dst {
                self.zero(d.y, d.rows * d.n)?;
            }
            return Ok(());
        }
        // Row-major y[rows, n] = x[rows, k] @ W[n, k]^T is, read column-major,
        // C(n x rows) = A^T * B with A = W seen as (k x n, lda k), B = x as (k x rows, ldb k).
        self.sgemm(
            (true, false),
            d.n,
            d.rows,
            d.k,
            w,
            d.k,
            0,
            x,
            d.k,
            0,
            if read_dst { 1.0 } else { 0.0 },
            y,
            d.n,
            0,
            1,
            "gemm",
        )
    }

    fn time_mix(&mut self, d: &TimeMixDesc<'_>) -> Result<()> {
        Self::distinct(d.x, d.y, "time_mix")?;
        let x = self.slot_ptr(d.x, mul(d.rows_in, d.cols)?, "time_mix")?;
        let y = self.slot_ptr(d.y, mul(d.rows_out, d.cols)?, "time_mix")?;
        let na = mul(d.rows_out, d.rows_in)?;
        if d.a.len() != na || d.bias.is_some_and(|b| b.len() != d.rows_out) {
            return Err(RuntimeError::Device(format!(
                "time_mix: the matrix has {} elements (needs {na}) or the bias is not [{}]",
                d.a.len(),
                d.rows_out
            )));
        }
        if d.rows_out == 0 || d.cols == 0 {
            return Ok(());
        }
        // The matrix, then the bias, in one scratch buffer (stream order keeps an earlier
        // mix's GEMM ahead of this upload).
        let mut host = d.a.to_vec();
        host.extend(d.bias.unwrap_or(&[]));
        let what = "time_mix matrix";
        let buf = grown(&mut self.gpu, &mut self.mix_scratch, host.len(), what)?;
        self.gpu.htod(&host, &mut buf.mem, 0, "time_mix matrix")?;
        let a = self.gpu.addr(&buf.mem);
        let read_dst = match d.bias {
            Some(_) => {
                let b = a + 4 * na as u64;
                self.bias(y, b, d.rows_out * d.cols, d.cols, d.rows_out, d.accumulate)?;
                true
            }
            None => d.accumulate,
        };
        if d.rows_in == 0 {
            if !read_dst {
                self.zero(d.y, d.rows_out * d.cols)?;
            }
            return Ok(());
        }
        // Row-major y[ro, cols] = a[ro, ri] @ x[ri, cols] is, read column-major,
        // C(cols x ro) = X(cols x ri, ld cols) * A'(ri x ro, ld ri).
        self.sgemm(
            (false, false),
            d.cols,
            d.rows_out,
            d.rows_in,
            x,
            d.cols,
            0,
            a,
            d.rows_in,
            0,
            if read_dst { 1.0 } else { 0.0 },
            y,
            d.cols,
            0,
            1,
            "time_mix",
        )
    }

    fn gemm_dx(&mut self, d: &GemmDxDesc) -> Result<()> {
        Self::distinct(d.dy, d.dx, "gemm_dx")?;
        let dy = self.slot_ptr(d.dy, mul(d.rows, d.n)?, "gemm_dx")?;
        let dx = self.slot_ptr(d.dx, mul(d.rows, d.k)?, "gemm_dx")?;
        let w = self.weight_ptr(d.w, mul(d.n, d.k)?, "gemm_dx")?;
        if d.rows == 0 || d.k == 0 {
            return Ok(());
        }
        if d.n == 0 {
            if !d.accumulate {
                self.zero(d.dx, d.rows * d.k)?;
            }
            return Ok(());
        }
        // Row-major dx[rows, k] = dy[rows, n] @ W[n, k] is, column-major,
        // C(k x rows) = A(k x n) * B(n x rows) with A = W (lda k) and B = dy (ldb n).
        self.sgemm(
            (false, false),
            d.k,
            d.rows,
            d.n,
            w,
            d.k,
            0,
            dy,
            d.n,
            0,
            if d.accumulate { 1.0 } else { 0.0 },
            dx,
            d.k,
            0,
            1,
            "gemm_dx",
        )
    }

    fn gemm_dw(&mut self, d: &GemmDwDesc) -> Result<()> {
        let x = self.slot_ptr(d.x, mul(d.rows, d.k)?, "gemm_dw")?;
        let dy = self.slot_ptr(d.dy, mul(d.rows, d.n)?, "gemm_dw")?;
        let dw = self.grad_ptr(d.w, mul(d.n, d.k)?, "gemm_dw")?;
        let db = match d.bias {
            Some(b) => Some(self.grad_ptr(b, d.n, "gemm_dw bias")?),
            None => None,
        };
        if d.rows == 0 || d.n == 0 {
            return Ok(());
        }
        if let Some(db) = db {
            self.launch_ops(Op::BiasGrad, d.n, &[db, dy, d.rows as u64, d.n as u64])?;
        }
        if d.k == 0 {
            return Ok(());
        }
        if d.sparse {
            return self.launch_ops(
                Op::SpikeGemmDw,
                d.n * d.k,
                &[x, dy, dw, d.rows as u64, d.k as u64, d.n as u64],
            );
        }
        // Row-major dW[n, k] += dy^T @ x is, column-major, C(k x n) += A(k x rows) * B^T
        // with A = x (lda k) and B = dy seen as (n x rows, ldb n).
        self.sgemm(
            (false, true),
            d.k,
            d.n,
            d.rows,
            x,
            d.k,
            0,
            dy,
            d.n,
            0,
            1.0,
            dw,
            d.k,
            0,
            1,
            "gemm_dw",
        )
    }

    fn time_mix_dw(
        &mut self,
        d: &TimeMixDwDesc,
        g: &mut [f32],
        sums: Option<&mut [f32]>,
    ) -> Result<()> {
        let dy = self.slot_ptr(d.dy, mul(d.rows_out, d.cols)?, "time_mix_dw")?;
        let x = self.slot_ptr(d.x, mul(d.rows_in, d.cols)?, "time_mix_dw")?;
        let ng = mul(d.rows_out, d.rows_in)?;
        if g.len() != ng || sums.as_ref().is_some_and(|s| s.len() != d.rows_out) {
            return Err(RuntimeError::Device(format!(
                "time_mix_dw: {} products (needs {ng}) or row sums not [{}]",
                g.len(),
                d.rows_out
            )));
        }
        g.fill(0.0);
        if d.rows_out == 0 || d.cols == 0 {
            if let Some(s) = sums {
                s.fill(0.0);
            }
            return Ok(());
        }
        // Scratch: the products, the row sums, then `cols` ones (the band is computed in
        // full: the caller reads only its diagonals).
        let len = ng + d.rows_out + d.cols;
        let ones = vec![1.0f32; d.cols];
        let what = "time_mix_dw scratch";
        let buf = grown(&mut self.gpu, &mut self.dw_scratch, len, what)?;
        self.gpu
            .htod(&ones, &mut buf.mem, ng + d.rows_out, "time_mix_dw ones")?;
        let base = self.gpu.addr(&buf.mem);
        let (gp, sp, op) = (
            base,
            base + 4 * ng as u64,
            base + 4 * (ng + d.rows_out) as u64,
        );
        if d.rows_in > 0 {
            // Row-major g[ro, ri] = dy[ro, cols] @ x[ri, cols]^T is, column-major,
            // C(ri x ro) = X^T (X: cols x ri, ld cols) * DY (cols x ro, ld cols).
            self.sgemm(
                (true, false),
                d.rows_in,
                d.rows_out,
                d.cols,
                x,
                d.cols,
                0,
                dy,
                d.cols,
                0,
                0.0,
                gp,
                d.rows_in,
                0,
                1,
                "time_mix_dw",
            )?;
        }
        // sums(1 x ro) = ones^T (cols x 1) * DY (cols x ro).
        self.sgemm(
            (true, false),
            1,
            d.rows_out,
            d.cols,
            op,
            d.cols,
            0,
            dy,
            d.cols,
            0,
            0.0,
            sp,
            1,
            0,
            1,
            "time_mix_dw sums",
        )?;
        let buf = self.dw_scratch.as_ref().unwrap();
        self.gpu.dtoh(&buf.mem, 0, g, "time_mix_dw")?;
        if let Some(s) = sums {
            self.gpu.dtoh(&buf.mem, ng, s, "time_mix_dw sums")?;
        }
        Ok(())
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

    fn grad_sq_sum(&mut self, id: WeightId, start: f64) -> Result<f64> {
        self.grad_sq_sums(&[id], start)
    }

    fn grad_sq_total(&mut self, n: usize) -> Result<f64> {
        let ids: Vec<WeightId> = (0..n).collect();
        self.grad_sq_sums(&ids, 0.0)
    }

    fn optim_step(&mut self, id: WeightId, u: &Update, grad_scale: Option<f32>) -> Result<()> {
        let len = held_len(&self.weights, id).ok_or_else(|| {
            RuntimeError::Device(format!("optim_step: weight {id} was never set"))
        })?;
        let p = self.weight_ptr(id, len, "optim_step")?;
        let g = self.grad_ptr(id, len, "optim_step")?;
        if self.optim.len() <= id {
            self.optim.resize_with(id + 1, Default::default);
        }
        let mut state = [0u64; 2];
        for (k, st) in state.iter_mut().enumerate().take(u.state_buffers()) {
            if !matches!(&self.optim[id][k], Some(b) if b.len == len) {
                let b = self.alloc(len, &format!("optimizer state of weight {id}"))?;
                self.optim[id][k] = Some(b);
            }
            *st = self
                .gpu
                .addr(&self.optim[id][k].as_ref().expect("made above").mem);
        }
        if let Some(t) = self.transposed.get_mut(id) {
            *t = None;
        }
        let f = |x: f32| x.to_bits() as u64;
        let scale = grad_scale.map_or(0, f);
        let scaled = (grad_scale.is_some() as u64) << 4;
        match *u {
            Update::Sgd {
                neg_lr,
                wd,
                momentum,
                nesterov,
                first,
                use_wd,
                use_momentum,
            } => {
                let flags = use_wd as u64
                    | (use_momentum as u64) << 1
                    | (nesterov as u64) << 2
                    | (first as u64) << 3
                    | scaled;
                // Without momentum the buffer is never read: any valid address will do.
                let buf = if use_momentum { state[0] } else { p };
                self.launch_ops(
                    Op::Sgd,
                    len,
                    &[
                        p,
                        g,
                        buf,
                        len as u64,
                        f(neg_lr),
                        f(wd),
                        f(momentum),
                        scale,
                        flags,
                    ],
                )
            }
            Update::Adam {
                neg_step_size,
                bc2_sqrt,
                decay,
                wd,
                w,
                small,
                one_minus_w,
                beta2,
                one_minus_b2,
                eps,
                use_wd,
                decoupled,
                first,
            } => {
                let flags = use_wd as u64
                    | (decoupled as u64) << 1
                    | (small as u64) << 2
                    | (first as u64) << 3
                    | scaled;
                self.launch_ops(
                    Op::Adam,
                    len,
                    &[
                        p,
                        g,
                        state[0],
                        state[1],
                        len as u64,
                        f(neg_step_size),
                        f(bc2_sqrt),
                        f(decay),
                        f(wd),
                        f(w),
                        f(one_minus_w),
                        f(beta2),
                        f(one_minus_b2),
                        f(eps),
                        scale,
                        flags,
                    ],
                )
            }
        }
    }

    fn get_optim_state(&mut self, id: WeightId, k: usize, out: &mut [f32]) -> Result<bool> {
        match self
            .optim
            .get(id)
            .and_then(|s| s.get(k))
            .and_then(|b| b.as_ref())
        {
            Some(b) if b.len == out.len() => {
                self.gpu.dtoh(&b.mem, 0, out, "optimizer state")?;
                Ok(true)
            }
            Some(b) => Err(RuntimeError::Device(format!(
                "optimizer state {k} of weight {id} has {} elements, {} requested",
                b.len,
                out.len()
            ))),
            None => Ok(false),
        }
    }

    fn set_optim_state(&mut self, id: WeightId, k: usize, data: &[f32]) -> Result<()> {
        let n = held_len(&self.weights, id).unwrap_or(0);
        check_optim_state(id, k, n, data.len())?;
        if self.optim.len() <= id {
            self.optim.resize_with(id + 1, Default::default);
        }
        if !matches!(&self.optim[id][k], Some(b) if b.len == n) {
            let b = self.alloc(n, &format!("optimizer state of weight {id}"))?;
            self.optim[id][k] = Some(b);
        }
        let b = self.optim[id][k].as_mut().expect("made above");
        self.gpu.htod(data, &mut b.mem, 0, "optimizer state")
    }

    fn conv2d(&mut self, d: &ConvDesc) -> Result<()> {
        let g = &d.geom;
        crate::cpu::ops::check_conv(g)?;
        Self::distinct(d.x, d.y, "conv2d")?;
        let xi = mul(mul(g.c_in, g.h)?, g.w)?;
        let p = mul(g.h_out, g.w_out)?;
        let yi = mul(g.c_out, p)?;
        let kk = mul(mul(g.c_in, g.kh)?, g.kw)?;
        let x = self.slot_ptr(d.x, mul(d.images, xi)?, "conv2d")?;
        let y = self.slot_ptr(d.y, mul(d.images, yi)?, "conv2d")?;
        let w = self.weight_ptr(d.w, mul(g.c_out, kk)?, "conv2d")?;
        let bias = match d.bias {
            Some(b) => Some(self.weight_ptr(b, g.c_out, "conv2d bias")?),
            None => None,
        };
        if d.images == 0 || yi == 0 || xi == 0 {
            return Ok(());
        }
        let col_len = mul(kk, p)?;
        let read_dst = match bias {
            Some(b) => {
                self.bias(y, b, d.images * yi, p, g.c_out, d.accumulate)?;
                true
            }
            None => d.accumulate,
        };
        if d.sparse {
            let n = d.images * yi;
            return self.launch_ops(
                Op::SpikeConv2d,
                n,
                &conv_args(&[x, w, y, n as u64], g, &[g.c_out as u64, read_dst as u64]),
            );
        }
        let beta = if read_dst { 1.0 } else { 0.0 };
        let direct = g.kh == 1 && g.kw == 1 && g.stride == 1 && g.pad == 0;
        // Per image, row-major y[c_out, p] = W[c_out, kk] @ col[kk, p], i.e. column-major
        // C(p x c_out) = (col as p x kk) * (W as kk x c_out).
        if direct {
            return self.sgemm(
                (false, false),
                p,
                g.c_out,
                kk,
                x,
                p,
                col_len,
                w,
                kk,
                0,
                beta,
                y,
                p,
                yi,
                d.images,
                "conv2d",
            );
        }
        let chunk = (SCRATCH_MAX / col_len.max(1)).clamp(1, d.images);
        let col = self.scratch(mul(chunk, col_len)?, "conv2d im2col scratch")?;
        let mut img = 0;
        while img < d.images {
            let m = chunk.min(d.images - img);
            let xs = x + 4 * (img * xi) as u64;
            let ys = y + 4 * (img * yi) as u64;
            let n = m * col_len;
            self.launch_ops(Op::Im2col, n, &conv_args(&[xs, col, n as u64], g, &[]))?;
            self.sgemm(
                (false, false),
                p,
                g.c_out,
                kk,
                col,
                p,
                col_len,
                w,
                kk,
                0,
                beta,
                ys,
                p,
                yi,
                m,
                "conv2d",
            )?;
            img += m;
        }
        Ok(())
    }

    fn pool2d(&mut self, d: &PoolDesc) -> Result<()> {
        let g = &d.geom;
        crate::cpu::ops::check_pool(g)?;
        Self::distinct(d.x, d.y, "pool2d")?;
        let pin = mul(g.h, g.w)?;
        let pout = mul(g.h_out, g.w_out)?;
        let planes = mul(d.images, g.c)?;
        let x = self.slot_ptr(d.x, mul(planes, pin)?, "pool2d")?;
        let y = self.slot_ptr(d.y, mul(planes, pout)?, "pool2d")?;
        if planes == 0 || pout == 0 || pin == 0 {
            return Ok(());
        }
        let n = planes * pout;
        let kind = pool_code(d.kind);
        self.launch_ops(
            Op::Pool2d,
            n,
            &[
                x,
                y,
                n as u64,
                g.h as u64,
                g.w as u64,
                g.k as u64,
                g.stride as u64,
                g.pad as u64,
                g.h_out as u64,
                g.w_out as u64,
                kind,
            ],
        )
    }

    fn conv2d_dx(&mut self, d: &ConvDxDesc) -> Result<()> {
        let g = &d.geom;
        crate::cpu::ops::check_conv(g)?;
        Self::distinct(d.dy, d.dx, "conv2d_dx")?;
        let xi = mul(mul(g.c_in, g.h)?, g.w)?;
        let p = mul(g.h_out, g.w_out)?;
        let yi = mul(g.c_out, p)?;
        let kk = mul(mul(g.c_in, g.kh)?, g.kw)?;
        let dy = self.slot_ptr(d.dy, mul(d.images, yi)?, "conv2d_dx")?;
        let dx = self.slot_ptr(d.dx, mul(d.images, xi)?, "conv2d_dx")?;
        let w = self.weight_ptr(d.w, mul(g.c_out, kk)?, "conv2d_dx")?;
        if d.images == 0 || xi == 0 {
            return Ok(());
        }
        let col_len = mul(kk, p)?;
        // Per image, row-major col[kk, p] = W^T @ dy[c_out, p], i.e. column-major
        // C(p x kk) = (dy as p x c_out) * (W as kk x c_out)^T.
        let direct = g.kh == 1 && g.kw == 1 && g.stride == 1 && g.pad == 0;
        if direct {
            return self.sgemm(
                (false, true),
                p,
                kk,
                g.c_out,
                dy,
                p,
                yi,
                w,
                kk,
                0,
                if d.accumulate { 1.0 } else { 0.0 },
                dx,
                p,
                xi,
                d.images,
                "conv2d_dx",
            );
        }
        let chunk = (SCRATCH_MAX / col_len.max(1)).clamp(1, d.images);
        let col = self.scratch(mul(chunk, col_len)?, "conv2d_dx col2im scratch")?;
        let mut img = 0;
        while img < d.images {
            let m = chunk.min(d.images - img);
            let dys = dy + 4 * (img * yi) as u64;
            let dxs = dx + 4 * (img * xi) as u64;
            self.sgemm(
                (false, true),
                p,
                kk,
                g.c_out,
                dys,
                p,
                yi,
                w,
                kk,
                0,
                0.0,
                col,
                p,
                col_len,
                m,
                "conv2d_dx",
            )?;
            let n = m * xi;
            self.launch_ops(
                Op::Col2im,
                n,
                &conv_args(&[col, dxs, n as u64], g, &[d.accumulate as u64]),
            )?;
            img += m;
        }
        Ok(())
    }

    fn conv2d_dw(&mut self, d: &ConvDwDesc) -> Result<()> {
        let g = &d.geom;
        crate::cpu::ops::check_conv(g)?;
        let xi = mul(mul(g.c_in, g.h)?, g.w)?;
        let p = mul(g.h_out, g.w_out)?;
        let yi = mul(g.c_out, p)?;
        let kk = mul(mul(g.c_in, g.kh)?, g.kw)?;
        let x = self.slot_ptr(d.x, mul(d.images, xi)?, "conv2d_dw")?;
        let dy = self.slot_ptr(d.dy, mul(d.images, yi)?, "conv2d_dw")?;
        let dw = self.grad_ptr(d.w, mul(g.c_out, kk)?, "conv2d_dw")?;
        let db = match d.bias {
            Some(b) if b == d.w => {
                return Err(RuntimeError::Device(
                    "conv2d_dw: weight and bias are the same tensor".into(),
                ))
            }
            Some(b) => Some(self.grad_ptr(b, g.c_out, "conv2d_dw bias")?),
            None => None,
        };
        if d.images == 0 || yi == 0 {
            return Ok(());
        }
        if let Some(db) = db {
            self.launch_ops(
                Op::ConvBiasGrad,
                g.c_out,
                &[db, dy, d.images as u64, g.c_out as u64, p as u64],
            )?;
        }
        if d.sparse {
            let n = g.c_out * kk;
            return self.launch_ops(
                Op::SpikeConv2dDw,
                n,
                &conv_args(
                    &[x, dy, dw, n as u64, d.images as u64],
                    g,
                    &[g.c_out as u64],
                ),
            );
        }
        // One GEMM per chunk of m images, not one per image: the chunk's columns (im2col,
        // or x itself for a 1x1 stride-1 conv) and its dy go channel-major, [kk, m*p] and
        // [c_out, m*p], so row-major dW[c_out, kk] += dy' @ col'^T sums over images and
        // positions at once (K = m*p). Column-major: C(kk x c_out) += (col' as (m*p) x
        // kk)^T * (dy' as (m*p) x c_out).
        let direct = g.kh == 1 && g.kw == 1 && g.stride == 1 && g.pad == 0;
        let col_len = mul(kk, p)?;
        let per_image = col_len + yi + if direct { 0 } else { col_len };
        let chunk = (SCRATCH_MAX / per_image.max(1)).clamp(1, d.images);
        let col = if direct {
            0
        } else {
            self.scratch(mul(chunk, col_len)?, "conv2d_dw im2col scratch")?
        };
        let perm = self.perm_scratch(mul(chunk, col_len + yi)?)?;
        let mut img = 0;
        while img < d.images {
            let m = chunk.min(d.images - img);
            let xs = x + 4 * (img * xi) as u64;
            let src = if direct {
                xs
            } else {
                let n = m * col_len;
                self.launch_ops(Op::Im2col, n, &conv_args(&[xs, col, n as u64], g, &[]))?;
                col
            };
            let (col_t, dy_t) = (perm, perm + 4 * (m * col_len) as u64);
            let mp = m * p;
            self.launch_ops(
                Op::ToChannelMajor,
                m * col_len,
                &[src, col_t, m as u64, kk as u64, p as u64],
            )?;
            self.launch_ops(
                Op::ToChannelMajor,
                m * yi,
                &[
                    dy + 4 * (img * yi) as u64,
                    dy_t,
                    m as u64,
                    g.c_out as u64,
                    p as u64,
                ],
            )?;
            self.sgemm(
                (true, false),
                kk,
                g.c_out,
                mp,
                col_t,
                mp,
                0,
                dy_t,
                mp,
                0,
                1.0,
                dw,
                kk,
                0,
                1,
                "conv2d_dw",
            )?;
            img += m;
        }
        Ok(())
    }

    fn pool2d_dx(&mut self, d: &PoolDxDesc) -> Result<()> {
        let g = &d.geom;
        crate::cpu::ops::check_pool(g)?;
        Self::distinct(d.x, d.dx, "pool2d_dx")?;
        Self::distinct(d.dy, d.dx, "pool2d_dx")?;
        let pin = mul(g.h, g.w)?;
        let pout = mul(g.h_out, g.w_out)?;
        let planes = mul(d.images, g.c)?;
        let x = self.slot_ptr(d.x, mul(planes, pin)?, "pool2d_dx")?;
        let dy = self.slot_ptr(d.dy, mul(planes, pout)?, "pool2d_dx")?;
        let dx = self.slot_ptr(d.dx, mul(planes, pin)?, "pool2d_dx")?;
        if planes == 0 || pout == 0 || pin == 0 {
            return Ok(());
        }
        let n = planes * pin;
        let kind = pool_code(d.kind);
        self.launch_ops(
            Op::Pool2dDx,
            n,
            &[
                x,
                dy,
                dx,
                n as u64,
                g.h as u64,
                g.w as u64,
                g.k as u64,
                g.stride as u64,
                g.pad as u64,
                g.h_out as u64,
                g.w_out as u64,
                kind,
                d.accumulate as u64,
            ],
        )
    }

    fn launch(&mut self, d: &LaunchDesc<'_>) -> Result<()> {
        if d.kernel >= self.gpu.num_generated() {
            return Err(RuntimeError::Device(format!(
                "launch of kernel {}: the module has {} kernels",
                d.kernel,
                self.gpu.num_generated()
            )));
        }
        let params = self
            .params
            .as_ref()
            .ok_or_else(|| RuntimeError::Device("launch: parameters were never set".into()))?;
        let params_base = self.gpu.addr(&params.mem);
        for g in d.groups {
            if g.params > params.len {
                return Err(RuntimeError::Device(format!(
                    "launch: parameter offset {} is beyond the {} parameters",
                    g.params, params.len
                )));
            }
            let n = mul(d.batch, g.features)?;
            let mut args: Vec<u64> = Vec::with_capacity(g.slots.len() + g.weights.len() + 7);
            for &s in &g.slots {
                args.push(self.slot_ptr(Loc::new(s, 0), n, "launch")?);
            }
            for w in &g.weights {
                args.push(if w.grad {
                    self.grad_ptr(w.id, w.len, "launch")?
                } else {
                    self.weight_ptr(w.id, w.len, "launch")?
                });
            }
            args.push(params_base + 4 * g.params as u64);
            args.extend([
                d.t_len as u64,
                d.t_step as u64,
                d.batch as u64,
                g.features as u64,
                0,
                n as u64,
            ]);
            if n == 0 {
                continue;
            }
            // Generated kernels take one pointer per buffer, one per weight, the parameter
            // pointer and six u64 (compiler/src/back/cuda.rs); every buffer holds B * F
            // elements and every weight the elements it is read at (checked above); threads
            // write only their own index, and add into gradients with atomicAdd.
            let cfg = grid(n, "launch")?;
            self.gpu
                .launch(Kernel::Generated(d.kernel), cfg, &args, "generated kernel")?;
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        self.gpu.sync()
    }
}
