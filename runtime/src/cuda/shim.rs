//! A GPU made of the host: [`ShimGpu`] runs [`super::CudaDevice`] without a GPU. Memory is
//! host memory (a device pointer is the host address), the library kernels (ops.cuh) and
//! the plan's generated CUDA C are compiled by the system C++ compiler through
//! `kernels/cuda/host_shim.h` into one shared library, and SGEMMs go to a reference
//! implementation with cuBLAS's column-major semantics and argument checks.
//!
//! It exists so that CPU-only CI runs the CUDA device's own code, every bounds check,
//! pointer offset, launch size and cuBLAS argument, on every model, against the CPU device
//! (tests/gpu.rs). `snnc run --device cuda-shim` uses it too: the CUDA path of
//! a model, debuggable with host tools. It is slow (one host thread walks every GPU
//! thread) and it cannot see what only a GPU shows: races between threads, the driver's own
//! errors, timing.
//!
//! Every SGEMM's matrices are checked against the live allocations: a leading dimension
//! or stride that would read or write past a buffer is an error here, where on a GPU it
//! would be a silent out-of-bounds access.

use std::collections::BTreeMap;
use std::ffi::c_int;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use super::gpu::{Gpu, Kernel, Launch, Op, Sgemm};
use super::{OPS_SOURCE, PRELUDE, PRELUDE_NAME};
use crate::error::{Result, RuntimeError};

/// kernels/cuda/host_shim.h, written beside the sources it compiles.
pub const HOST_SHIM: &str = include_str!("../../../kernels/cuda/host_shim.h");

/// Flags of every shim build (the numerics of NVRTC with `--fmad=false`).
const CXX_FLAGS: [&str; 5] = ["-std=c++20", "-O2", "-ffp-contract=off", "-fPIC", "-shared"];

/// `SNNC_SHIM_SANITIZE=address` (or any `-fsanitize=` list) builds the kernels with that
/// sanitizer: with the sanitizer's runtime preloaded into the process (`scripts/shim-memcheck.sh`),
/// an out-of-bounds access of a kernel into a buffer of the device is reported where it
/// happens, as compute-sanitizer's memcheck would on a GPU.
fn sanitize_flags() -> Vec<String> {
    match std::env::var("SNNC_SHIM_SANITIZE") {
        Ok(s) if !s.is_empty() => vec![
            format!("-fsanitize={s}"),
            "-fno-omit-frame-pointer".into(),
            "-fno-sanitize-recover=all".into(),
            "-g".into(),
        ],
        _ => Vec::new(),
    }
}

/// `SNNC_SHIM_ORDER=reverse`: [`ShimGpu::build`] runs every launch's blocks and threads
/// last to first (see [`ShimGpu::build_in_order`]).
fn reverse_from_env() -> bool {
    std::env::var("SNNC_SHIM_ORDER").is_ok_and(|o| o == "reverse")
}

/// The entry points of the shim library:
/// `int f(unsigned kernel, unsigned blocks, unsigned threads, const u64* words, u64 n)`.
type CallFn = unsafe extern "C" fn(u32, u32, u32, *const u64, u64) -> c_int;

/// Live allocations: start address -> length in floats.
type Registry = Arc<Mutex<BTreeMap<u64, usize>>>;

/// A tool run while the sanitizer's runtime is preloaded into this process
/// (`SNNC_SHIM_SANITIZE`, see `sanitize_flags`) must not inherit the preload: rustc and the
/// C++ compiler are not built for it.
pub fn tool_command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new(program);
    if std::env::var_os("SNNC_SHIM_SANITIZE").is_some() {
        c.env_remove("LD_PRELOAD");
    }
    c
}

/// The C++ compiler the shim uses: `$CXX`, else the first of g++, clang++, c++ that runs.
pub fn find_cxx() -> Option<String> {
    let candidates: Vec<String> = match std::env::var("CXX") {
        Ok(c) if !c.is_empty() => vec![c],
        _ => ["g++", "clang++", "c++"].map(String::from).to_vec(),
    };
    candidates.into_iter().find(|c| {
        tool_command(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// Host memory standing in for a device allocation; the address is the device pointer.
pub struct HostMem {
    ptr: *mut f32,
    len: usize,
    registry: Registry,
}

// SAFETY: the memory is owned by this value alone; the pointer is not shared elsewhere
// except as addresses handed to kernels that run on the calling thread.
unsafe impl Send for HostMem {}

/// cudaMalloc's alignment, which kernels may rely on (`snn_sq_sum` writes f64 partials
/// into a float buffer).
const ALIGN: usize = 256;

fn layout(len: usize) -> std::alloc::Layout {
    std::alloc::Layout::from_size_align(len.max(1) * 4, ALIGN).expect("checked by alloc_zeros")
}

impl Drop for HostMem {
    fn drop(&mut self) {
        if let Ok(mut r) = self.registry.lock() {
            r.remove(&(self.ptr as u64));
        }
        // SAFETY: `ptr` came from `alloc_zeroed` with this layout.
        unsafe { std::alloc::dealloc(self.ptr as *mut u8, layout(self.len)) };
    }
}

thread_local! {
    /// Launches of each library kernel ([`Op::all`]'s order) through the shim on this
    /// thread (a shim launch runs on the thread that makes it).
    static OP_LAUNCHES: std::cell::RefCell<Vec<usize>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// How often each library kernel has been launched through the shim on this thread: tests
/// check that the models they run reach every kernel.
pub fn op_launches() -> Vec<(Op, usize)> {
    OP_LAUNCHES.with(|c| {
        let c = c.borrow();
        (0..Op::all().len())
            .map(|i| {
                let op = Op::named(Op::all()[i]).expect("a listed kernel");
                (op, c.get(i).copied().unwrap_or(0))
            })
            .collect()
    })
}

/// The host as a GPU (see the module documentation).
pub struct ShimGpu {
    ops: CallFn,
    generated: CallFn,
    num_generated: usize,
    registry: Registry,
    library: PathBuf,
    // Last: the entry points above point into it.
    _lib: libloading::Library,
}

impl std::fmt::Debug for ShimGpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShimGpu")
            .field("library", &self.library)
            .finish()
    }
}

fn shim_err(msg: impl Into<String>) -> RuntimeError {
    RuntimeError::Device(msg.into())
}

/// The translation unit of the library kernels and its dispatcher.
fn ops_unit() -> String {
    let mut s = String::from(
        "// ShimGpu: ops.cuh on the host (generated by snn_runtime::cuda::shim).\n\
         #include \"host_shim.h\"\n#include \"ops.cuh\"\n\n\
         extern \"C\" int snn_shim_ops_call(unsigned k, unsigned blocks, unsigned threads,\n\
         \x20                                const unsigned long long* w, unsigned long long n) {\n\
         \x20   switch (k) {\n",
    );
    for (i, symbol) in Op::all().iter().enumerate() {
        s.push_str(&format!(
            "    case {i}: return snn_shim_launch_words({symbol}, dim3(blocks), dim3(threads), w, n);\n"
        ));
    }
    s.push_str("    default: return -2;\n    }\n}\n");
    s
}

/// The translation unit of the generated kernels (`model.cu`) and its dispatcher.
fn generated_unit(symbols: &[String]) -> String {
    let mut s = String::from(
        "// ShimGpu: the generated kernels on the host (generated by snn_runtime::cuda::shim).\n\
         #include \"host_shim.h\"\n#include \"model.cu\"\n\n\
         extern \"C\" int snn_shim_generated_call(unsigned k, unsigned blocks, unsigned threads,\n\
         \x20                                      const unsigned long long* w, unsigned long long n) {\n\
         \x20   switch (k) {\n",
    );
    for (i, sym) in symbols.iter().enumerate() {
        s.push_str(&format!(
            "    case {i}: return snn_shim_launch_words({sym}, dim3(blocks), dim3(threads), w, n);\n"
        ));
    }
    s.push_str("    default: return -2;\n    }\n}\n");
    s
}

/// A name no other build in this process or any other uses: tests build the same model's
/// shim on several threads at once, and a temporary named by the PID alone was renamed away
/// by one thread under the other's feet.
fn unique_tmp(path: &Path) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}-{n}", std::process::id()));
    path.with_file_name(name)
}

/// Writes `text` to `path` unless it is there already, through a temporary and a rename, so
/// a compiler reading the file from another build never sees it half written.
fn write_if_changed(path: &Path, text: &str) -> Result<()> {
    if std::fs::read_to_string(path).is_ok_and(|t| t == text) {
        return Ok(());
    }
    let tmp = unique_tmp(path);
    let written = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path));
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        shim_err(format!("cannot write `{}`: {e}", path.display()))
    })
}

impl ShimGpu {
    /// Builds (or reuses) the shim library of `cuda_source` (which may `#include` any of
    /// `headers`; the prelude is always available) in `dir` with the C++ compiler `cxx`,
    /// and loads it with the kernels `symbols` in plan order. The library is named by a
    /// hash of everything it is built from, so a second call with the same model loads it
    /// without compiling.
    pub fn build(
        cxx: &str,
        dir: &Path,
        cuda_source: &str,
        headers: &[(&str, &str)],
        symbols: &[String],
    ) -> Result<ShimGpu> {
        Self::build_in_order(cxx, dir, cuda_source, headers, symbols, reverse_from_env())
    }

    /// [`ShimGpu::build`], with `reverse`: every launch runs its blocks and threads last to
    /// first (`-DSNN_SHIM_REVERSE` in host_shim.h). A kernel whose threads depend on each
    /// other's writes within a launch, a race on a GPU, then computes something else.
    pub fn build_in_order(
        cxx: &str,
        dir: &Path,
        cuda_source: &str,
        headers: &[(&str, &str)],
        symbols: &[String],
        reverse: bool,
    ) -> Result<ShimGpu> {
        for s in symbols {
            if s.is_empty() || !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(shim_err(format!(
                    "kernel symbol `{s}` is not a C identifier"
                )));
            }
        }
        let mut files: Vec<(String, String)> = vec![
            ("host_shim.h".into(), HOST_SHIM.into()),
            ("ops.cuh".into(), OPS_SOURCE.into()),
            (PRELUDE_NAME.into(), PRELUDE.into()),
            ("model.cu".into(), cuda_source.into()),
            ("ops_unit.cpp".into(), ops_unit()),
            ("generated_unit.cpp".into(), generated_unit(symbols)),
        ];
        for (n, t) in headers {
            if n.contains(['/', '\\']) || n.starts_with('.') {
                return Err(shim_err(format!(
                    "header name `{n}` is not a plain file name"
                )));
            }
            files.push((n.to_string(), t.to_string()));
        }
        let mut extra = sanitize_flags();
        if reverse {
            extra.push("-DSNN_SHIM_REVERSE".into());
        }
        let mut h = Sha256::new();
        h.update(cxx.as_bytes());
        for f in CXX_FLAGS
            .iter()
            .copied()
            .chain(extra.iter().map(|s| s.as_str()))
        {
            h.update((f.len() as u64).to_le_bytes());
            h.update(f.as_bytes());
        }
        for (n, t) in &files {
            h.update((n.len() as u64).to_le_bytes());
            h.update(n.as_bytes());
            h.update((t.len() as u64).to_le_bytes());
            h.update(t.as_bytes());
        }
        let key: String = h
            .finalize()
            .iter()
            .take(12)
            .map(|b| format!("{b:02x}"))
            .collect();
        let src = dir.join(format!("shim-{key}"));
        let library = dir.join(format!("libsnn_shim_{key}.so"));
        if !library.is_file() {
            std::fs::create_dir_all(&src)
                .map_err(|e| shim_err(format!("cannot create `{}`: {e}", src.display())))?;
            // Temporaries of builds that were killed (a live process's are never touched).
            crate::cache_tmp::remove_stale_tmp(dir);
            crate::cache_tmp::remove_stale_tmp(&src);
            for (n, t) in &files {
                write_if_changed(&src.join(n), t)?;
            }
            let tmp = unique_tmp(&library);
            let out = tool_command(cxx)
                .args(CXX_FLAGS)
                .args(&extra)
                .arg("-I")
                .arg(&src)
                .arg(src.join("ops_unit.cpp"))
                .arg(src.join("generated_unit.cpp"))
                .arg("-o")
                .arg(&tmp)
                .output()
                .map_err(|e| {
                    shim_err(format!(
                        "cannot run the C++ compiler `{cxx}`: {e}; hint: install g++ or set CXX"
                    ))
                })?;
            if !out.status.success() {
                let _ = std::fs::remove_file(&tmp);
                let log = String::from_utf8_lossy(&out.stderr);
                let head: Vec<&str> = log.lines().take(30).collect();
                return Err(shim_err(format!(
                    "the host-shim build of the CUDA kernels failed ({cxx}, sources in `{}`):\n{}",
                    src.display(),
                    head.join("\n")
                )));
            }
            if !tmp.is_file() {
                return Err(shim_err(format!(
                    "the C++ compiler `{cxx}` reported success but wrote no shim library; \
                     hint: set CXX to g++ or clang++"
                )));
            }
            std::fs::rename(&tmp, &library)
                .map_err(|e| shim_err(format!("cannot move the shim library into place: {e}")))?;
        }
        Self::load(&library, symbols.len())
    }

    fn load(library: &Path, num_generated: usize) -> Result<ShimGpu> {
        // SAFETY: the library was built above from the shim's own sources; its initialisers
        // only set up thread-local shim state.
        let lib = unsafe { libloading::Library::new(library) }.map_err(|e| {
            shim_err(format!(
                "cannot load the shim library `{}`: {e}",
                library.display()
            ))
        })?;
        let sym = |name: &[u8]| -> Result<CallFn> {
            // SAFETY: both entry points are defined by ops_unit/generated_unit with this
            // signature.
            unsafe { lib.get::<CallFn>(name) }
                .map(|f| *f)
                .map_err(|e| shim_err(format!("shim library without its entry point: {e}")))
        };
        let ops = sym(b"snn_shim_ops_call\0")?;
        let generated = sym(b"snn_shim_generated_call\0")?;
        Ok(ShimGpu {
            ops,
            generated,
            num_generated,
            registry: Arc::new(Mutex::new(BTreeMap::new())),
            library: library.to_path_buf(),
            _lib: lib,
        })
    }

    /// The shared library in use.
    pub fn library(&self) -> &Path {
        &self.library
    }

    /// Checks that `count` floats from `addr` lie inside one live allocation.
    fn check_span(&self, addr: u64, count: usize, what: &str) -> Result<()> {
        if count == 0 {
            return Ok(());
        }
        let r = self
            .registry
            .lock()
            .map_err(|_| shim_err("shim allocation registry poisoned"))?;
        let inside = r.range(..=addr).next_back().is_some_and(|(&start, &len)| {
            let end = start + 4 * len as u64;
            addr % 4 == start % 4 && addr + 4 * count as u64 <= end
        });
        if inside {
            Ok(())
        } else {
            Err(shim_err(format!(
                "{what}: {count} floats at 0x{addr:x} are not inside one allocation (an \
                 out-of-bounds access on a GPU)"
            )))
        }
    }
}

/// Floats a column-major `rows x cols` matrix with leading dimension `ld` spans, times
/// `batch` with `stride` between them.
fn span(rows: usize, cols: usize, ld: usize, stride: usize, batch: usize) -> usize {
    if rows == 0 || cols == 0 || batch == 0 {
        return 0;
    }
    (batch - 1) * stride + (cols - 1) * ld + rows
}

impl Gpu for ShimGpu {
    type Mem = HostMem;

    fn name(&self) -> String {
        "cuda-shim (the CUDA device on the host)".into()
    }

    fn num_generated(&self) -> usize {
        self.num_generated
    }

    fn alloc_zeros(&mut self, len: usize) -> std::result::Result<HostMem, String> {
        let len = len.max(1);
        if len
            .checked_mul(4)
            .is_none_or(|b| b > isize::MAX as usize - ALIGN)
        {
            return Err(format!("{len} floats is too large"));
        }
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout(len)) } as *mut f32;
        if ptr.is_null() {
            return Err(format!("out of host memory for {len} floats"));
        }
        self.registry
            .lock()
            .map_err(|_| "shim allocation registry poisoned".to_string())?
            .insert(ptr as u64, len);
        Ok(HostMem {
            ptr,
            len,
            registry: self.registry.clone(),
        })
    }

    fn addr(&self, m: &HostMem) -> u64 {
        m.ptr as u64
    }

    fn htod(&mut self, src: &[f32], dst: &mut HostMem, offset: usize, what: &str) -> Result<()> {
        if offset
            .checked_add(src.len())
            .is_none_or(|end| end > dst.len)
        {
            return Err(shim_err(format!("{what}: copy past the end of its buffer")));
        }
        // SAFETY: in bounds (checked); `dst` is exclusively borrowed.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst.ptr.add(offset), src.len()) };
        Ok(())
    }

    fn dtoh(&mut self, src: &HostMem, offset: usize, out: &mut [f32], what: &str) -> Result<()> {
        if offset
            .checked_add(out.len())
            .is_none_or(|end| end > src.len)
        {
            return Err(shim_err(format!("{what}: copy past the end of its buffer")));
        }
        // SAFETY: in bounds (checked); no kernel runs concurrently.
        unsafe { std::ptr::copy_nonoverlapping(src.ptr.add(offset), out.as_mut_ptr(), out.len()) };
        Ok(())
    }

    fn zero(&mut self, dst: &mut HostMem, offset: usize, len: usize, what: &str) -> Result<()> {
        if offset.checked_add(len).is_none_or(|end| end > dst.len) {
            return Err(shim_err(format!(
                "{what}: memset past the end of its buffer"
            )));
        }
        // SAFETY: in bounds (checked).
        unsafe { std::ptr::write_bytes(dst.ptr.add(offset), 0, len) };
        Ok(())
    }

    fn launch(&mut self, kernel: Kernel, cfg: Launch, args: &[u64], what: &str) -> Result<()> {
        let (f, index) = match kernel {
            Kernel::Op(op) => (self.ops, op.index()),
            Kernel::Generated(i) if i < self.num_generated => (self.generated, i),
            Kernel::Generated(i) => {
                return Err(shim_err(format!(
                    "launch of kernel {i}: the module has {} kernels",
                    self.num_generated
                )))
            }
        };
        // SAFETY: the dispatcher checks the word count against the kernel's parameters;
        // the caller bounds-checked every pointer for the threads launched.
        let r = unsafe {
            f(
                index as u32,
                cfg.blocks,
                cfg.threads,
                args.as_ptr(),
                args.len() as u64,
            )
        };
        match r {
            0 => {
                if let Kernel::Op(op) = kernel {
                    OP_LAUNCHES.with(|c| {
                        let mut c = c.borrow_mut();
                        if c.len() <= op.index() {
                            c.resize(op.index() + 1, 0);
                        }
                        c[op.index()] += 1;
                    });
                }
                Ok(())
            }
            -1 => Err(shim_err(format!(
                "{what}: {} arguments do not match the kernel's parameters",
                args.len()
            ))),
            _ => Err(shim_err(format!(
                "{what}: no kernel {index} in the shim library"
            ))),
        }
    }

    fn sgemm(&mut self, g: &Sgemm, what: &str) -> Result<()> {
        // cuBLAS's own argument checks (CUBLAS_STATUS_INVALID_VALUE).
        let (ra, rb) = (
            if g.trans_a { g.k } else { g.m },
            if g.trans_b { g.n } else { g.k },
        );
        if g.lda < ra.max(1) || g.ldb < rb.max(1) || g.ldc < g.m.max(1) || g.batch == 0 {
            return Err(shim_err(format!(
                "cublasSgemm({what}) failed: CUBLAS_STATUS_INVALID_VALUE (lda {} ldb {} ldc {} \
                 for m {} n {} k {})",
                g.lda, g.ldb, g.ldc, g.m, g.n, g.k
            )));
        }
        if g.m == 0 || g.n == 0 {
            return Ok(());
        }
        let (ca, cb) = (
            if g.trans_a { g.m } else { g.k },
            if g.trans_b { g.k } else { g.n },
        );
        let sa = span(ra, ca, g.lda, g.stride_a, g.batch);
        let sb = span(rb, cb, g.ldb, g.stride_b, g.batch);
        let sc = span(g.m, g.n, g.ldc, g.stride_c, g.batch);
        self.check_span(
            g.a,
            if g.k == 0 { 0 } else { sa },
            &format!("{what}: matrix A"),
        )?;
        self.check_span(
            g.b,
            if g.k == 0 { 0 } else { sb },
            &format!("{what}: matrix B"),
        )?;
        self.check_span(g.c, sc, &format!("{what}: matrix C"))?;
        let (a, b, c) = (g.a as *const f32, g.b as *const f32, g.c as *mut f32);
        for bi in 0..g.batch {
            for j in 0..g.n {
                for i in 0..g.m {
                    let mut acc = 0.0f64;
                    for l in 0..g.k {
                        let ai = if g.trans_a {
                            l + i * g.lda
                        } else {
                            i + l * g.lda
                        };
                        let bj = if g.trans_b {
                            j + l * g.ldb
                        } else {
                            l + j * g.ldb
                        };
                        // SAFETY: every index lies in the spans checked above.
                        let (x, y) =
                            unsafe { (*a.add(bi * g.stride_a + ai), *b.add(bi * g.stride_b + bj)) };
                        acc += x as f64 * y as f64;
                    }
                    // SAFETY: as above.
                    unsafe {
                        let out = c.add(bi * g.stride_c + i + j * g.ldc);
                        *out = if g.beta == 0.0 {
                            acc as f32
                        } else {
                            (acc + g.beta as f64 * *out as f64) as f32
                        };
                    }
                }
            }
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Where `snnc run --device cuda-shim` builds its libraries: `<cache_dir>/shim`.
pub fn default_dir() -> PathBuf {
    crate::cache_dir().join("shim")
}
