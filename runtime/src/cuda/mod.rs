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
//! through page-locked host buffers ([`Staging`]): the DMA engine reads them directly, and
//! an upload returns once its data is in the staging buffer, before the copy runs.

use std::collections::HashMap;
use std::ffi::{c_char, c_int, CString};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::cublas::{result as blas, sys as blas_sys, CudaBlas};
use cudarc::driver::{
    CudaContext, CudaEvent, CudaFunction, CudaSlice, CudaStream, CudaView, CudaViewMut, DevicePtr,
    LaunchConfig, PinnedHostSlice, PushKernelArg,
};
use cudarc::nvrtc::{result as rtc, sys as rtc_sys, Ptx};
use sha2::{Digest, Sha256};

use crate::device::{
    ConvDesc, ConvDwDesc, ConvDxDesc, Device, GemmDesc, GemmDwDesc, GemmDxDesc, LaunchDesc, Loc,
    PoolDesc, PoolDxDesc, TimeMixDesc, TimeMixDwDesc,
};
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

fn dev_err(call: &str, e: impl std::fmt::Debug) -> RuntimeError {
    RuntimeError::Device(format!("{call} failed: {e:?}"))
}

/// Whether the driver library can be loaded (no GPU needed).
pub fn driver_present() -> bool {
    // SAFETY: only tries to dlopen the library.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Whether the NVRTC library can be loaded (no GPU needed).
pub fn nvrtc_present() -> bool {
    // SAFETY: only tries to dlopen the library.
    unsafe { rtc_sys::is_culib_present() }
}

/// Checks the libraries and the device without creating a context's resources; the error
/// says what is missing.
fn check_libraries() -> Result<()> {
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

fn catch<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
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

type PtxKey = (u64, String);

fn ptx_cache() -> &'static Mutex<HashMap<PtxKey, String>> {
    static CACHE: OnceLock<Mutex<HashMap<PtxKey, String>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

fn c_string(what: &str, s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| RuntimeError::Device(format!("{what} contains a NUL byte")))
}

fn log_text(raw: &[c_char]) -> String {
    let bytes: Vec<u8> = raw
        .iter()
        .map(|&c| c as u8)
        .take_while(|&b| b != 0)
        .collect();
    String::from_utf8_lossy(&bytes).trim().to_string()
}

/// Compiles `source` (with in-memory `headers`) to PTX for `arch` (e.g. `compute_90`),
/// through the process-wide cache.
pub fn compile_ptx(source: &str, headers: &[(&str, &str)], arch: &str) -> Result<String> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    source.hash(&mut h);
    headers.hash(&mut h);
    let key = (h.finish(), arch.to_string());
    if let Some(p) = ptx_cache().lock().ok().and_then(|c| c.get(&key).cloned()) {
        return Ok(p);
    }
    let ptx = nvrtc_compile(source, headers, arch)?;
    if let Ok(mut c) = ptx_cache().lock() {
        c.insert(key, ptx.clone());
    }
    Ok(ptx)
}

/// NVRTC options of every compile (part of the disk cache key).
const NVRTC_OPTIONS: [&str; 2] = ["--fmad=false", "--std=c++17"];

/// NVRTC's `(major, minor)` version.
pub fn nvrtc_version() -> Result<(i32, i32)> {
    let (mut major, mut minor) = (0, 0);
    // SAFETY: two valid out-pointers.
    unsafe { rtc_sys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .map_err(|e| dev_err("nvrtcVersion", e))?;
    Ok((major, minor))
}

/// The file in `dir` that caches the PTX of `source` with `headers` for `arch`: a SHA-256
/// of everything NVRTC's output depends on (its version, the options, the texts).
pub fn ptx_cache_file(
    dir: &Path,
    source: &str,
    headers: &[(&str, &str)],
    arch: &str,
) -> Result<PathBuf> {
    let (major, minor) = nvrtc_version()?;
    let mut h = Sha256::new();
    let mut part = |b: &[u8]| {
        // Length-prefixed, so that no two lists of parts hash alike.
        h.update((b.len() as u64).to_le_bytes());
        h.update(b);
    };
    part(b"snnc ptx 1");
    part(format!("nvrtc {major}.{minor} {arch}").as_bytes());
    for o in NVRTC_OPTIONS {
        part(o.as_bytes());
    }
    part(source.as_bytes());
    for (n, t) in headers {
        part(n.as_bytes());
        part(t.as_bytes());
    }
    let key: String = h
        .finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(dir.join("ptx").join(format!("{key}.ptx")))
}

/// [`compile_ptx`] through a disk cache under `dir` (`ptx/<hash>.ptx`, written to a unique
/// temporary file and renamed into place, so readers never see half a file). Returns the
/// PTX and whether it came from the disk. A cache that cannot be read or written is only
/// slower: the error is not the caller's.
pub fn compile_ptx_cached(
    dir: &Path,
    source: &str,
    headers: &[(&str, &str)],
    arch: &str,
) -> Result<(String, bool)> {
    let file = ptx_cache_file(dir, source, headers, arch)?;
    if let Ok(text) = std::fs::read_to_string(&file) {
        if let Some(ptx) = text.strip_suffix(PTX_END) {
            return Ok((ptx.to_string(), true));
        }
    }
    let ptx = compile_ptx(source, headers, arch)?;
    store_ptx(&file, &ptx);
    Ok((ptx, false))
}

/// The last line of a cache file: a file without it was cut short and is not used.
const PTX_END: &str = "\n// snnc: end of cached PTX\n";

fn store_ptx(file: &Path, ptx: &str) {
    static WRITES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = file.with_extension(format!("tmp-{}-{n}", std::process::id()));
    let ok = file
        .parent()
        .is_some_and(|d| std::fs::create_dir_all(d).is_ok())
        && std::fs::write(&tmp, format!("{ptx}{PTX_END}")).is_ok()
        && std::fs::rename(&tmp, file).is_ok();
    if !ok {
        let _ = std::fs::remove_file(&tmp);
    }
}

fn nvrtc_compile(source: &str, headers: &[(&str, &str)], arch: &str) -> Result<String> {
    let src = c_string("CUDA source", source)?;
    let name = c_string("program name", "snn_kernels.cu")?;
    let mut texts = Vec::with_capacity(headers.len());
    let mut names = Vec::with_capacity(headers.len());
    for (n, t) in headers {
        names.push(c_string("header name", n)?);
        texts.push(c_string("header", t)?);
    }
    let text_ptrs: Vec<*const c_char> = texts.iter().map(|s| s.as_ptr()).collect();
    let name_ptrs: Vec<*const c_char> = names.iter().map(|s| s.as_ptr()).collect();
    let mut prog: rtc_sys::nvrtcProgram = std::ptr::null_mut();
    // SAFETY: every pointer addresses a live NUL-terminated string; the arrays hold
    // `headers.len()` entries.
    unsafe {
        rtc_sys::nvrtcCreateProgram(
            &mut prog,
            src.as_ptr(),
            name.as_ptr(),
            headers.len() as c_int,
            if headers.is_empty() {
                std::ptr::null()
            } else {
                text_ptrs.as_ptr()
            },
            if headers.is_empty() {
                std::ptr::null()
            } else {
                name_ptrs.as_ptr()
            },
        )
        .result()
        .map_err(|e| dev_err("nvrtcCreateProgram", e))?;
    }
    let mut opts = vec![format!("--gpu-architecture={arch}")];
    opts.extend(NVRTC_OPTIONS.iter().map(|o| o.to_string()));
    // SAFETY: prog was created above and is destroyed once below.
    let compiled = unsafe { rtc::compile_program(prog, &opts) };
    let out = match compiled {
        Ok(()) => {
            // SAFETY: prog compiled successfully.
            unsafe { rtc::get_ptx(prog) }
                .map(|p| log_text(&p))
                .map_err(|e| dev_err("nvrtcGetPTX", e))
        }
        Err(e) => {
            // SAFETY: prog is live.
            let log = unsafe { rtc::get_program_log(prog) }
                .map(|l| log_text(&l))
                .unwrap_or_default();
            let head: String = log.lines().take(40).collect::<Vec<_>>().join("\n");
            Err(RuntimeError::Device(format!(
                "NVRTC failed ({e:?}): {head}"
            )))
        }
    };
    // SAFETY: prog is live and not used after this.
    let _ = unsafe { rtc::destroy_program(prog) };
    out
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
    /// `cuda:N (name, sm_XY)`, as [`CudaDevice`] names itself.
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

/// A device buffer of `len` f32 (at least one element is allocated).
struct Buf {
    mem: CudaSlice<f32>,
    len: usize,
}

struct OpsKernels {
    im2col: CudaFunction,
    bias: CudaFunction,
    bias_grad: CudaFunction,
    pool2d: CudaFunction,
    col2im: CudaFunction,
    conv_bias_grad: CudaFunction,
    pool2d_dx: CudaFunction,
    transpose: CudaFunction,
    spike_gemm: CudaFunction,
    spike_gemm_dw: CudaFunction,
    spike_conv2d: CudaFunction,
    spike_conv2d_dw: CudaFunction,
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

/// The CUDA device (one GPU, one stream).
pub struct CudaDevice {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    kernels: Vec<CudaFunction>,
    ops: OpsKernels,
    slots: Vec<Buf>,
    weights: Vec<Option<Buf>>,
    /// `[k, n]` transposed copies of the weights an event-driven GEMM reads, made on first
    /// use and dropped by `set_weight`.
    transposed: Vec<Option<Buf>>,
    /// Weight gradients (allocated by `zero_grads`).
    grads: Vec<Option<Buf>>,
    params: Option<Buf>,
    scratch: Option<Buf>,
    /// The matrix and bias of a `time_mix`, uploaded per call.
    mix_scratch: Option<Buf>,
    /// A `time_mix_dw`'s products, row sums and a row of ones.
    dw_scratch: Option<Buf>,
    /// Page-locked host buffers of uploads and downloads, by length.
    staging: Staging,
    name: String,
    arch: String,
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

impl Drop for CudaDevice {
    fn drop(&mut self) {
        // Page-locked memory must outlive the copies that use it.
        let _ = self.staging.drain();
    }
}

impl std::fmt::Debug for CudaDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaDevice")
            .field("name", &self.name)
            .field("kernels", &self.kernels.len())
            .finish()
    }
}

fn grid(n: usize, what: &str) -> Result<LaunchConfig> {
    let blocks = n.div_ceil(BLOCK as usize);
    let blocks = u32::try_from(blocks)
        .ok()
        .filter(|&b| b < i32::MAX as u32)
        .ok_or_else(|| RuntimeError::Device(format!("{what}: {n} threads is too many")))?;
    Ok(LaunchConfig {
        grid_dim: (blocks.max(1), 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    })
}

fn mul(a: usize, b: usize) -> Result<usize> {
    a.checked_mul(b)
        .ok_or_else(|| RuntimeError::Device("operation size overflows".into()))
}

fn int(v: usize, what: &str) -> Result<c_int> {
    c_int::try_from(v).map_err(|_| {
        RuntimeError::Device(format!("{what}: dimension {v} exceeds cuBLAS's int range"))
    })
}

impl CudaDevice {
    /// Opens GPU `ordinal`, compiles `cuda_source` (which may `#include` any of `headers`,
    /// given as `(name, text)`) and looks up the kernels `symbols` in plan order.
    pub fn new(
        ordinal: usize,
        cuda_source: &str,
        headers: &[(&str, &str)],
        symbols: Vec<String>,
    ) -> Result<CudaDevice> {
        check_libraries()?;
        catch("CUDA initialisation panicked", || {
            Self::open(ordinal, cuda_source, headers, symbols)
        })
    }

    fn open(
        ordinal: usize,
        cuda_source: &str,
        headers: &[(&str, &str)],
        symbols: Vec<String>,
    ) -> Result<CudaDevice> {
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
        let f = |name: &str| {
            ops_mod
                .load_function(name)
                .map_err(|e| dev_err(&format!("cuModuleGetFunction({name})"), e))
        };
        let ops = OpsKernels {
            im2col: f("snn_im2col")?,
            bias: f("snn_bias")?,
            bias_grad: f("snn_bias_grad")?,
            pool2d: f("snn_pool2d")?,
            col2im: f("snn_col2im")?,
            conv_bias_grad: f("snn_conv_bias_grad")?,
            pool2d_dx: f("snn_pool2d_dx")?,
            transpose: f("snn_transpose")?,
            spike_gemm: f("snn_spike_gemm")?,
            spike_gemm_dw: f("snn_spike_gemm_dw")?,
            spike_conv2d: f("snn_spike_conv2d")?,
            spike_conv2d_dw: f("snn_spike_conv2d_dw")?,
        };

        let mut kernels = Vec::with_capacity(symbols.len());
        if !symbols.is_empty() {
            let module = load(cuda_source, headers, "generated kernels")?;
            for s in &symbols {
                kernels.push(module.load_function(s).map_err(|e| {
                    RuntimeError::Device(format!(
                        "the compiled CUDA module has no kernel `{s}`: {e:?}"
                    ))
                })?);
            }
        }
        Ok(CudaDevice {
            ctx: ctx.clone(),
            stream,
            blas,
            kernels,
            ops,
            slots: Vec::new(),
            weights: Vec::new(),
            transposed: Vec::new(),
            grads: Vec::new(),
            params: None,
            scratch: None,
            mix_scratch: None,
            dw_scratch: None,
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

    fn alloc(&self, len: usize, what: &str) -> Result<Buf> {
        let mem = self.stream.alloc_zeros::<f32>(len.max(1)).map_err(|e| {
            RuntimeError::Device(format!(
                "cannot allocate {what} ({} MiB) on the GPU: {e:?}; hint: reduce T or the batch size",
                len.saturating_mul(4) >> 20
            ))
        })?;
        Ok(Buf { mem, len })
    }

    /// Device address of element `loc.offset..+len` of a slot, after a bounds check.
    fn slot_ptr(&self, loc: Loc, len: usize, what: &str) -> Result<u64> {
        let b = self.slots.get(loc.slot).ok_or_else(|| {
            RuntimeError::Device(format!("{what}: slot {} does not exist", loc.slot))
        })?;
        match loc.offset.checked_add(len) {
            Some(end) if end <= b.len => Ok(self.base(&b.mem) + 4 * loc.offset as u64),
            _ => Err(RuntimeError::Device(format!(
                "{what}: elements {}..{} are outside slot {} ({} elements)",
                loc.offset,
                loc.offset.saturating_add(len),
                loc.slot,
                b.len
            ))),
        }
    }

    fn base(&self, mem: &CudaSlice<f32>) -> u64 {
        let (p, _sync) = mem.device_ptr(&self.stream);
        p
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
        Ok(self.base(&b.mem))
    }

    /// Device -> host copy of the whole weight (or gradient) `id` of `bufs`, then a sync.
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
        let view = b.mem.slice(0..out.len());
        self.staging.dtoh(&self.stream, &view, out, &what)
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
        Ok(self.base(&b.mem))
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
    fn launch_ops(&self, f: &CudaFunction, n: usize, args: &[u64], what: &str) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let cfg = grid(n, what)?;
        let mut b = self.stream.launch_builder(f);
        for a in args {
            b.arg(a);
        }
        // SAFETY: the argument list matches the kernel's signature in ops.cuh; every pointer
        // was bounds-checked for the `n` elements the kernel touches.
        unsafe { b.launch(cfg) }.map_err(|e| dev_err(&format!("cuLaunchKernel({what})"), e))?;
        Ok(())
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
            let wt = self.base(&t.mem);
            self.launch_ops(
                &self.ops.transpose,
                len,
                &[w, wt, d.n as u64, d.k as u64],
                "transpose",
            )?;
            self.transposed[d.w] = Some(t);
        }
        let wt = self.base(&self.transposed[d.w].as_ref().expect("made above").mem);
        let read_dst = match bias {
            Some(b) => {
                self.bias(y, b, d.rows * d.n, 1, d.n, d.accumulate)?;
                true
            }
            None => d.accumulate,
        };
        self.launch_ops(
            &self.ops.spike_gemm,
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
            "spike_gemm",
        )
    }

    fn bias(
        &self,
        y: u64,
        b: u64,
        n: usize,
        inner: usize,
        channels: usize,
        acc: bool,
    ) -> Result<()> {
        self.launch_ops(
            &self.ops.bias,
            n,
            &[y, b, n as u64, inner as u64, channels as u64, acc as u64],
            "bias",
        )
    }

    /// The im2col/col2im scratch buffer, at least `need` elements; its device address.
    fn scratch(&mut self, need: usize, what: &str) -> Result<u64> {
        if self.scratch.as_ref().is_none_or(|s| s.len < need) {
            self.scratch = None;
            self.scratch = Some(self.alloc(need, what)?);
        }
        Ok(self.base(&self.scratch.as_ref().expect("allocated above").mem))
    }

    /// Column-major cuBLAS SGEMM (strided batched when `batch > 1`).
    #[allow(clippy::too_many_arguments)]
    fn sgemm(
        &self,
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
        let alpha = 1.0f32;
        let op_a = if trans_a {
            blas_sys::cublasOperation_t::CUBLAS_OP_T
        } else {
            blas_sys::cublasOperation_t::CUBLAS_OP_N
        };
        let op_b = if trans_b {
            blas_sys::cublasOperation_t::CUBLAS_OP_T
        } else {
            blas_sys::cublasOperation_t::CUBLAS_OP_N
        };
        self.ctx
            .bind_to_thread()
            .map_err(|e| dev_err("cuCtxSetCurrent", e))?;
        // SAFETY: the caller bounds-checked every matrix for these shapes and strides.
        let r = unsafe {
            if batch == 1 {
                blas::sgemm(
                    *self.blas.handle(),
                    op_a,
                    op_b,
                    int(m, what)?,
                    int(n, what)?,
                    int(k, what)?,
                    &alpha,
                    a as *const f32,
                    int(lda, what)?,
                    b as *const f32,
                    int(ldb, what)?,
                    &beta,
                    c as *mut f32,
                    int(ldc, what)?,
                )
            } else {
                blas::sgemm_strided_batched(
                    *self.blas.handle(),
                    op_a,
                    op_b,
                    int(m, what)?,
                    int(n, what)?,
                    int(k, what)?,
                    &alpha,
                    a as *const f32,
                    int(lda, what)?,
                    stride_a as i64,
                    b as *const f32,
                    int(ldb, what)?,
                    stride_b as i64,
                    &beta,
                    c as *mut f32,
                    int(ldc, what)?,
                    stride_c as i64,
                    int(batch, what)?,
                )
            }
        };
        r.map_err(|e| dev_err(&format!("cublasSgemm({what})"), e))
    }
}

impl Device for CudaDevice {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn num_kernels(&self) -> usize {
        self.kernels.len()
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
        let mut view = b.mem.slice_mut(0..data.len());
        self.staging.htod(&self.stream, data, &mut view, "weight")
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
        if !params.is_empty() {
            let mut view = b.mem.slice_mut(0..params.len());
            self.stream
                .memcpy_htod(params, &mut view)
                .map_err(|e| dev_err("cuMemcpyHtoD(params)", e))?;
        }
        Ok(())
    }

    fn upload(&mut self, dst: Loc, data: &[f32]) -> Result<()> {
        self.slot_ptr(dst, data.len(), "upload")?;
        if data.is_empty() {
            return Ok(());
        }
        let b = &mut self.slots[dst.slot];
        let mut view = b.mem.slice_mut(dst.offset..dst.offset + data.len());
        self.staging.htod(&self.stream, data, &mut view, "upload")
    }

    fn download(&mut self, src: Loc, out: &mut [f32]) -> Result<()> {
        self.slot_ptr(src, out.len(), "download")?;
        if out.is_empty() {
            return Ok(());
        }
        let b = &self.slots[src.slot];
        let view = b.mem.slice(src.offset..src.offset + out.len());
        self.staging.dtoh(&self.stream, &view, out, "download")
    }

    fn zero(&mut self, dst: Loc, len: usize) -> Result<()> {
        self.slot_ptr(dst, len, "zero")?;
        if len == 0 {
            return Ok(());
        }
        let b = &mut self.slots[dst.slot];
        let mut view = b.mem.slice_mut(dst.offset..dst.offset + len);
        self.stream
            .memset_zeros(&mut view)
            .map_err(|e| dev_err("cuMemsetD8", e))
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
        if self.mix_scratch.as_ref().is_none_or(|s| s.len < host.len()) {
            self.mix_scratch = None;
            self.mix_scratch = Some(self.alloc(host.len(), "time_mix matrix")?);
        }
        let Some(buf) = self.mix_scratch.as_mut() else {
            unreachable!()
        };
        let mut view = buf.mem.slice_mut(0..host.len());
        self.stream
            .memcpy_htod(&host, &mut view)
            .map_err(|e| dev_err("cuMemcpyHtoD(time_mix)", e))?;
        let a = self.base(&self.mix_scratch.as_ref().unwrap().mem);
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
            self.launch_ops(
                &self.ops.bias_grad,
                d.n,
                &[db, dy, d.rows as u64, d.n as u64],
                "bias_grad",
            )?;
        }
        if d.k == 0 {
            return Ok(());
        }
        if d.sparse {
            return self.launch_ops(
                &self.ops.spike_gemm_dw,
                d.n * d.k,
                &[x, dy, dw, d.rows as u64, d.k as u64, d.n as u64],
                "spike_gemm_dw",
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
        if self.dw_scratch.as_ref().is_none_or(|s| s.len < len) {
            self.dw_scratch = None;
            self.dw_scratch = Some(self.alloc(len, "time_mix_dw scratch")?);
        }
        let ones = vec![1.0f32; d.cols];
        {
            let Some(buf) = self.dw_scratch.as_mut() else {
                unreachable!()
            };
            let mut view = buf.mem.slice_mut(ng + d.rows_out..len);
            self.stream
                .memcpy_htod(&ones, &mut view)
                .map_err(|e| dev_err("cuMemcpyHtoD(time_mix_dw)", e))?;
        }
        let base = self.base(&self.dw_scratch.as_ref().unwrap().mem);
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
        if ng > 0 {
            self.stream
                .memcpy_dtoh(&buf.mem.slice(0..ng), g)
                .map_err(|e| dev_err("cuMemcpyDtoH(time_mix_dw)", e))?;
        }
        if let Some(s) = sums {
            self.stream
                .memcpy_dtoh(&buf.mem.slice(ng..ng + d.rows_out), s)
                .map_err(|e| dev_err("cuMemcpyDtoH(time_mix_dw)", e))?;
        }
        self.sync()
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
        let mut view = b.mem.slice_mut(0..host.len());
        self.stream
            .memcpy_htod(&host, &mut view)
            .map_err(|e| dev_err("cuMemcpyHtoD(add_grad)", e))
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
                let mut view = b.mem.slice_mut(0..len);
                self.stream
                    .memset_zeros(&mut view)
                    .map_err(|e| dev_err("cuMemsetD8(gradient)", e))?;
            }
        }
        Ok(())
    }

    fn get_grad(&mut self, id: WeightId, out: &mut [f32]) -> Result<()> {
        self.copy_out(true, id, out)
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
                &self.ops.spike_conv2d,
                n,
                &conv_args(&[x, w, y, n as u64], g, &[g.c_out as u64, read_dst as u64]),
                "spike_conv2d",
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
            self.launch_ops(
                &self.ops.im2col,
                n,
                &conv_args(&[xs, col, n as u64], g, &[]),
                "im2col",
            )?;
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
            &self.ops.pool2d,
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
            "pool2d",
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
                &self.ops.col2im,
                n,
                &conv_args(&[col, dxs, n as u64], g, &[d.accumulate as u64]),
                "col2im",
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
                &self.ops.conv_bias_grad,
                g.c_out,
                &[db, dy, d.images as u64, g.c_out as u64, p as u64],
                "conv_bias_grad",
            )?;
        }
        if d.sparse {
            let n = g.c_out * kk;
            return self.launch_ops(
                &self.ops.spike_conv2d_dw,
                n,
                &conv_args(
                    &[x, dy, dw, n as u64, d.images as u64],
                    g,
                    &[g.c_out as u64],
                ),
                "spike_conv2d_dw",
            );
        }
        // Per image, row-major dW[c_out, kk] += dy[c_out, p] @ col[kk, p]^T, i.e.
        // column-major C(kk x c_out) += (col as p x kk)^T * (dy as p x c_out).
        let direct = g.kh == 1 && g.kw == 1 && g.stride == 1 && g.pad == 0;
        let col_len = mul(kk, p)?;
        let one = |dev: &Self, col: u64, dys: u64| {
            dev.sgemm(
                (true, false),
                kk,
                g.c_out,
                p,
                col,
                p,
                0,
                dys,
                p,
                0,
                1.0,
                dw,
                kk,
                0,
                1,
                "conv2d_dw",
            )
        };
        if direct {
            for img in 0..d.images {
                one(self, x + 4 * (img * xi) as u64, dy + 4 * (img * yi) as u64)?;
            }
            return Ok(());
        }
        let chunk = (SCRATCH_MAX / col_len.max(1)).clamp(1, d.images);
        let col = self.scratch(mul(chunk, col_len)?, "conv2d_dw im2col scratch")?;
        let mut img = 0;
        while img < d.images {
            let m = chunk.min(d.images - img);
            let n = m * col_len;
            self.launch_ops(
                &self.ops.im2col,
                n,
                &conv_args(&[x + 4 * (img * xi) as u64, col, n as u64], g, &[]),
                "im2col",
            )?;
            for j in 0..m {
                one(
                    self,
                    col + 4 * (j * col_len) as u64,
                    dy + 4 * ((img + j) * yi) as u64,
                )?;
            }
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
            &self.ops.pool2d_dx,
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
            "pool2d_dx",
        )
    }

    fn launch(&mut self, d: &LaunchDesc<'_>) -> Result<()> {
        let f = self.kernels.get(d.kernel).ok_or_else(|| {
            RuntimeError::Device(format!(
                "launch of kernel {}: the module has {} kernels",
                d.kernel,
                self.kernels.len()
            ))
        })?;
        let params = self
            .params
            .as_ref()
            .ok_or_else(|| RuntimeError::Device("launch: parameters were never set".into()))?;
        let params_base = self.base(&params.mem);
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
            let cfg = grid(n, "launch")?;
            let mut b = self.stream.launch_builder(f);
            for a in &args {
                b.arg(a);
            }
            // SAFETY: generated kernels take one pointer per buffer, one per weight, the
            // parameter pointer and six u64 (compiler/src/back/cuda.rs); every buffer holds
            // B * F elements and every weight the elements it is read at (checked above);
            // threads write only their own index, and add into gradients with atomicAdd.
            unsafe { b.launch(cfg) }.map_err(|e| dev_err("cuLaunchKernel", e))?;
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(|e| dev_err("cuStreamSynchronize", e))
    }
}
