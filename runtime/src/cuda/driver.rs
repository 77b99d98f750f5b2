//! The real GPU behind [`super::CudaDevice`]: the CUDA driver, NVRTC and cuBLAS, loaded
//! at run time through cudarc. One context, one stream; transfers of [`PINNED_MIN`] floats
//! or more go through page-locked staging buffers ([`Staging`]).

use std::sync::Arc;

use cudarc::cublas::{result as blas, sys as blas_sys, CudaBlas};
use cudarc::driver::{
    CudaContext, CudaEvent, CudaFunction, CudaSlice, CudaStream, CudaView, CudaViewMut, DevicePtr,
    LaunchConfig, PinnedHostSlice, PushKernelArg,
};
use cudarc::nvrtc::Ptx;

use super::gpu::{Gpu, Kernel, Launch, Op, Sgemm};
use super::nvrtc::{compile_ptx, compile_ptx_cached, nvrtc_present, ptx_cache_file, store_ptx};
use super::OPS_SOURCE;
use crate::error::{Result, RuntimeError};

pub(super) fn dev_err(call: &str, e: impl std::fmt::Debug) -> RuntimeError {
    RuntimeError::Device(format!("{call} failed: {e:?}"))
}

/// Whether the driver library can be loaded (no GPU needed).
pub fn driver_present() -> bool {
    // SAFETY: only tries to dlopen the library.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Checks the libraries and the device without creating a context's resources; the error
/// says what is missing.
pub(super) fn check_libraries() -> Result<()> {
    if !driver_present() {
        return Err(RuntimeError::Device(
            "no CUDA driver (libcuda.so) found".into(),
        ));
    }
    if !nvrtc_present() {
        return Err(RuntimeError::Device(
            "no NVRTC library (libnvrtc.so) found; hint: install the CUDA toolkit or the `nvidia-cuda-nvrtc` package and add its lib directory to LD_LIBRARY_PATH".into(),
        ));
    }
    // SAFETY: as above.
    if !unsafe { blas_sys::is_culib_present() } {
        return Err(RuntimeError::Device(
            "no cuBLAS library (libcublas.so) found; hint: install the CUDA toolkit or the `nvidia-cublas` package and add its lib directory to LD_LIBRARY_PATH".into(),
        ));
    }
    Ok(())
}

pub(super) fn catch<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Err(RuntimeError::Device(format!("{what}: {msg}")))
        }
    }
}

/// Opens GPU `ordinal` for one in-order stream: no cross-stream events needed, so cudarc's
/// event tracking is off.
fn open_context(ordinal: usize) -> Result<Arc<CudaContext>> {
    let count = CudaContext::device_count()
        .map_err(|e| RuntimeError::Device(format!("no CUDA device (cuDeviceGetCount: {e:?})")))?;
    if count <= 0 {
        return Err(RuntimeError::Device("no CUDA device".into()));
    }
    if ordinal >= count as usize {
        return Err(RuntimeError::Device(format!(
            "CUDA device {ordinal} does not exist: this machine has {count} (use cuda:0..cuda:{})",
            count - 1
        )));
    }
    let ctx = CudaContext::new(ordinal)
        .map_err(|e| RuntimeError::Device(format!("cannot open CUDA device {ordinal}: {e:?}")))?;
    // SAFETY: nothing has been allocated on this context by us yet.
    unsafe { ctx.disable_event_tracking() };
    Ok(ctx)
}

/// What [`copy_bandwidth`] measured.
#[derive(Clone, Debug)]
pub struct CopyTimes {
    /// `cuda:N (name, sm_XY)`, as [`super::CudaDevice`] names itself.
    pub device: String,
    /// Bytes of one copy (each is read once and written once).
    pub bytes: usize,
    /// Milliseconds of each timed copy, in order.
    pub ms: Vec<f64>,
}

/// Device-to-device copy bandwidth of GPU `ordinal` (the GPU's counterpart of the CPU's STREAM
/// triad, `snnc bench copy`): one buffer of `bytes` copied into another with
/// `cuMemcpyDtoDAsync` on one stream, `warmup` untimed copies, then `repeat` copies, each
/// between two CUDA events. Needs only the driver (no NVRTC or cuBLAS); without one, or
/// without the memory, the error names the cause.
pub fn copy_bandwidth(
    ordinal: usize,
    bytes: usize,
    warmup: usize,
    repeat: usize,
) -> Result<CopyTimes> {
    if !driver_present() {
        return Err(RuntimeError::Device(
            "no CUDA driver (libcuda.so) found".into(),
        ));
    }
    catch("CUDA copy benchmark panicked", || {
        let ctx = open_context(ordinal)?;
        let (major, minor) = ctx
            .compute_capability()
            .map_err(|e| dev_err("cuDeviceGetAttribute(compute capability)", e))?;
        let gpu = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        let stream = ctx.default_stream();
        let n = bytes / 4;
        let alloc = || {
            stream.alloc_zeros::<f32>(n.max(1)).map_err(|e| {
                RuntimeError::Device(format!(
                    "cannot allocate the copy buffers (2 x {} MiB) on the GPU: {e:?}",
                    bytes >> 20
                ))
            })
        };
        let src = alloc()?;
        let mut dst = alloc()?;
        let timing = Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);
        let start = ctx
            .new_event(timing)
            .map_err(|e| dev_err("cuEventCreate", e))?;
        let stop = ctx
            .new_event(timing)
            .map_err(|e| dev_err("cuEventCreate", e))?;
        let mut ms = Vec::with_capacity(repeat);
        for i in 0..warmup + repeat.max(1) {
            start
                .record(&stream)
                .map_err(|e| dev_err("cuEventRecord", e))?;
            stream
                .memcpy_dtod(&src, &mut dst)
                .map_err(|e| dev_err("cuMemcpyDtoDAsync", e))?;
            stop.record(&stream)
                .map_err(|e| dev_err("cuEventRecord", e))?;
            // elapsed_ms waits for both events.
            let t = start
                .elapsed_ms(&stop)
                .map_err(|e| dev_err("cuEventElapsedTime", e))?;
            if i >= warmup {
                ms.push(t as f64);
            }
        }
        Ok(CopyTimes {
            device: format!("cuda:{ordinal} ({gpu}, sm_{major}{minor})"),
            bytes: 4 * n,
            ms,
        })
    })
}

/// Transfers this long or longer (floats: 256 KiB) go through a page-locked buffer; for
/// shorter ones the extra host copy costs about what the faster DMA saves.
pub const PINNED_MIN: usize = 64 << 10;
/// Staging buffers kept; inputs and outputs recur with the same lengths batch after batch.
const STAGED_MAX: usize = 8;

/// Page-locked host buffers, one per transfer length, each with the event recorded after
/// the last copy that used it. Event tracking is off on this context (one stream), so the
/// events are ours: a buffer is rewritten only after its event says the copy is done.
struct Staging {
    ctx: Arc<CudaContext>,
    bufs: Vec<(PinnedHostSlice<f32>, Option<CudaEvent>)>,
}

impl Staging {
    /// Host -> device on `stream`; long copies through a staging buffer, so the call
    /// returns before the copy runs.
    fn htod(
        &mut self,
        stream: &Arc<CudaStream>,
        data: &[f32],
        dst: &mut CudaViewMut<'_, f32>,
        what: &str,
    ) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        if data.len() < PINNED_MIN {
            return stream
                .memcpy_htod(data, dst)
                .map_err(|e| dev_err(&format!("cuMemcpyHtoD({what})"), e));
        }
        let (host, done) = self.get(data.len())?;
        host.as_mut_slice()
            .map_err(|e| dev_err("staging buffer", e))?
            .copy_from_slice(data);
        stream
            .memcpy_htod(&*host, dst)
            .map_err(|e| dev_err(&format!("cuMemcpyHtoDAsync({what}, pinned)"), e))?;
        *done = Some(
            stream
                .record_event(None)
                .map_err(|e| dev_err("cuEventRecord(staging)", e))?,
        );
        Ok(())
    }

    /// Device -> host on `stream`, complete on return (the stream is synchronised).
    fn dtoh(
        &mut self,
        stream: &Arc<CudaStream>,
        src: &CudaView<'_, f32>,
        out: &mut [f32],
        what: &str,
    ) -> Result<()> {
        let sync = |stream: &Arc<CudaStream>| {
            stream
                .synchronize()
                .map_err(|e| dev_err("cuStreamSynchronize", e))
        };
        if out.is_empty() {
            return sync(stream);
        }
        if out.len() < PINNED_MIN {
            stream
                .memcpy_dtoh(src, out)
                .map_err(|e| dev_err(&format!("cuMemcpyDtoH({what})"), e))?;
            return sync(stream);
        }
        let (host, _) = self.get(out.len())?;
        stream
            .memcpy_dtoh(src, host)
            .map_err(|e| dev_err(&format!("cuMemcpyDtoHAsync({what}, pinned)"), e))?;
        sync(stream)?;
        out.copy_from_slice(host.as_slice().map_err(|e| dev_err("staging buffer", e))?);
        Ok(())
    }

    /// The buffer of exactly `len` floats, free to write: its last copy has finished.
    fn get(&mut self, len: usize) -> Result<&mut (PinnedHostSlice<f32>, Option<CudaEvent>)> {
        let at = match self.bufs.iter().position(|(b, _)| b.len() == len) {
            Some(i) => i,
            None => {
                if self.bufs.len() >= STAGED_MAX {
                    // The oldest goes; its copy must be done before the memory is freed
                    // (`host` is dropped, and freed, only after the wait).
                    let (host, done) = self.bufs.remove(0);
                    wait(done)?;
                    drop(host);
                }
                // Flags 0 (not write-combined): downloads read it back on the host.
                // SAFETY: the contents are written before any copy reads them.
                let host = unsafe { self.ctx.alloc_pinned_with_flags::<f32>(len, 0) }
                    .map_err(|e| dev_err("cuMemHostAlloc", e))?;
                self.bufs.push((host, None));
                self.bufs.len() - 1
            }
        };
        let entry = &mut self.bufs[at];
        wait(entry.1.take())?;
        Ok(entry)
    }

    /// Waits for every copy still reading or writing a staging buffer.
    fn drain(&mut self) -> Result<()> {
        for (_, done) in &mut self.bufs {
            wait(done.take())?;
        }
        Ok(())
    }
}

fn wait(done: Option<CudaEvent>) -> Result<()> {
    match done {
        Some(e) => e
            .synchronize()
            .map_err(|e| dev_err("cuEventSynchronize(staging)", e)),
        None => Ok(()),
    }
}

/// The CUDA driver's GPU: a context, its default stream, a cuBLAS handle in plain FP32, the
/// library kernels and the plan's generated kernels loaded from PTX.
pub struct DriverGpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    /// ops.cuh's kernels, in [`Op::all`]'s order.
    ops: Vec<CudaFunction>,
    generated: Vec<CudaFunction>,
    staging: Staging,
    name: String,
    arch: String,
}

impl DriverGpu {
    /// Opens GPU `ordinal`, compiles ops.cuh and `cuda_source` (which may `#include` any of
    /// `headers`, given as `(name, text)`) and looks up the kernels `symbols` in plan order.
    pub fn open(
        ordinal: usize,
        cuda_source: &str,
        headers: &[(&str, &str)],
        symbols: &[String],
    ) -> Result<DriverGpu> {
        check_libraries()?;
        catch("CUDA initialisation panicked", || {
            Self::open_inner(ordinal, cuda_source, headers, symbols)
        })
    }

    fn open_inner(
        ordinal: usize,
        cuda_source: &str,
        headers: &[(&str, &str)],
        symbols: &[String],
    ) -> Result<DriverGpu> {
        let ctx = open_context(ordinal)?;
        let (major, minor) = ctx
            .compute_capability()
            .map_err(|e| dev_err("cuDeviceGetAttribute(compute capability)", e))?;
        let arch = format!("compute_{major}{minor}");
        let gpu = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        let stream = ctx.default_stream();
        let blas = CudaBlas::new(stream.clone()).map_err(|e| dev_err("cublasCreate", e))?;
        // Plain FP32 (no TF32 tensor-core rounding), so results stay within float rounding
        // of the CPU.
        // SAFETY: the handle is live.
        unsafe {
            blas_sys::cublasSetMathMode(
                *blas.handle(),
                blas_sys::cublasMath_t::CUBLAS_PEDANTIC_MATH,
            )
            .result()
            .map_err(|e| dev_err("cublasSetMathMode", e))?;
        }

        // PTX from the disk cache; if the driver refuses a cached file, compile afresh.
        let cache = crate::cache_dir();
        let load = |source: &str, headers: &[(&str, &str)], what: &str| {
            let (ptx, cached) = compile_ptx_cached(&cache, source, headers, &arch)?;
            match ctx.load_module(Ptx::from_src(ptx)) {
                Err(_) if cached => {
                    let ptx = compile_ptx(source, headers, &arch)?;
                    store_ptx(&ptx_cache_file(&cache, source, headers, &arch)?, &ptx);
                    ctx.load_module(Ptx::from_src(ptx))
                }
                r => r,
            }
            .map_err(|e| dev_err(&format!("cuModuleLoadData({what})"), e))
        };
        let ops_mod = load(OPS_SOURCE, &[], "ops")?;
        let ops = Op::all()
            .iter()
            .map(|&symbol| {
                ops_mod
                    .load_function(symbol)
                    .map_err(|e| dev_err(&format!("cuModuleGetFunction({symbol})"), e))
            })
            .collect::<Result<Vec<_>>>()?;

        let mut generated = Vec::with_capacity(symbols.len());
        if !symbols.is_empty() {
            let module = load(cuda_source, headers, "generated kernels")?;
            for s in symbols {
                generated.push(module.load_function(s).map_err(|e| {
                    RuntimeError::Device(format!(
                        "the compiled CUDA module has no kernel `{s}`: {e:?}"
                    ))
                })?);
            }
        }
        Ok(DriverGpu {
            ctx: ctx.clone(),
            stream,
            blas,
            ops,
            generated,
            staging: Staging {
                ctx,
                bufs: Vec::new(),
            },
            name: format!("cuda:{ordinal} ({gpu}, sm_{major}{minor})"),
            arch,
        })
    }

    /// The NVRTC architecture the kernels were compiled for, e.g. `compute_90`.
    pub fn arch(&self) -> &str {
        &self.arch
    }
}

impl Drop for DriverGpu {
    fn drop(&mut self) {
        // Page-locked memory must outlive the copies that use it.
        let _ = self.staging.drain();
    }
}

impl Gpu for DriverGpu {
    type Mem = CudaSlice<f32>;

    fn name(&self) -> String {
        self.name.clone()
    }

    fn num_generated(&self) -> usize {
        self.generated.len()
    }

    fn alloc_zeros(&mut self, len: usize) -> std::result::Result<CudaSlice<f32>, String> {
        self.stream
            .alloc_zeros::<f32>(len.max(1))
            .map_err(|e| format!("{e:?}"))
    }

    fn addr(&self, m: &CudaSlice<f32>) -> u64 {
        let (p, _sync) = m.device_ptr(&self.stream);
        p
    }

    fn htod(
        &mut self,
        src: &[f32],
        dst: &mut CudaSlice<f32>,
        offset: usize,
        what: &str,
    ) -> Result<()> {
        if src.is_empty() {
            return Ok(());
        }
        let mut view = dst.slice_mut(offset..offset + src.len());
        self.staging.htod(&self.stream, src, &mut view, what)
    }

    fn dtoh(
        &mut self,
        src: &CudaSlice<f32>,
        offset: usize,
        out: &mut [f32],
        what: &str,
    ) -> Result<()> {
        let view = src.slice(offset..offset + out.len());
        self.staging.dtoh(&self.stream, &view, out, what)
    }

    fn zero(
        &mut self,
        dst: &mut CudaSlice<f32>,
        offset: usize,
        len: usize,
        what: &str,
    ) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        let mut view = dst.slice_mut(offset..offset + len);
        self.stream
            .memset_zeros(&mut view)
            .map_err(|e| dev_err(&format!("cuMemsetD8({what})"), e))
    }

    fn launch(&mut self, kernel: Kernel, cfg: Launch, args: &[u64], what: &str) -> Result<()> {
        let f = match kernel {
            Kernel::Op(op) => &self.ops[op.index()],
            Kernel::Generated(i) => self.generated.get(i).ok_or_else(|| {
                RuntimeError::Device(format!(
                    "launch of kernel {i}: the module has {} kernels",
                    self.generated.len()
                ))
            })?,
        };
        let mut b = self.stream.launch_builder(f);
        for a in args {
            b.arg(a);
        }
        let cfg = LaunchConfig {
            grid_dim: (cfg.blocks, 1, 1),
            block_dim: (cfg.threads, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the caller passes one word per kernel parameter (every parameter of
        // ops.cuh and of generated kernels is a pointer or a 64-bit integer) and
        // bounds-checked every pointer for the threads launched.
        unsafe { b.launch(cfg) }.map_err(|e| dev_err(&format!("cuLaunchKernel({what})"), e))?;
        Ok(())
    }

    fn sgemm(&mut self, g: &Sgemm, what: &str) -> Result<()> {
        let alpha = 1.0f32;
        let op = |t: bool| {
            if t {
                blas_sys::cublasOperation_t::CUBLAS_OP_T
            } else {
                blas_sys::cublasOperation_t::CUBLAS_OP_N
            }
        };
        let int = |v: usize| {
            std::ffi::c_int::try_from(v).map_err(|_| {
                RuntimeError::Device(format!("{what}: dimension {v} exceeds cuBLAS's int range"))
            })
        };
        self.ctx
            .bind_to_thread()
            .map_err(|e| dev_err("cuCtxSetCurrent", e))?;
        // SAFETY: the caller bounds-checked every matrix for these shapes and strides.
        let r = unsafe {
            if g.batch == 1 {
                blas::sgemm(
                    *self.blas.handle(),
                    op(g.trans_a),
                    op(g.trans_b),
                    int(g.m)?,
                    int(g.n)?,
                    int(g.k)?,
                    &alpha,
                    g.a as *const f32,
                    int(g.lda)?,
                    g.b as *const f32,
                    int(g.ldb)?,
                    &g.beta,
                    g.c as *mut f32,
                    int(g.ldc)?,
                )
            } else {
                blas::sgemm_strided_batched(
                    *self.blas.handle(),
                    op(g.trans_a),
                    op(g.trans_b),
                    int(g.m)?,
                    int(g.n)?,
                    int(g.k)?,
                    &alpha,
                    g.a as *const f32,
                    int(g.lda)?,
                    g.stride_a as i64,
                    g.b as *const f32,
                    int(g.ldb)?,
                    g.stride_b as i64,
                    &g.beta,
                    g.c as *mut f32,
                    int(g.ldc)?,
                    g.stride_c as i64,
                    int(g.batch)?,
                )
            }
        };
        r.map_err(|e| dev_err(&format!("cublasSgemm({what})"), e))
    }

    fn sync(&mut self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(|e| dev_err("cuStreamSynchronize", e))
    }
}
