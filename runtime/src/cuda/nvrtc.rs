//! NVRTC: the generated CUDA C (and ops.cuh) to PTX at run time, with a process-wide
//! cache in memory and a disk cache under [`crate::cache_dir`]`/ptx` keyed by a SHA-256 of
//! the texts, the architecture, the options and NVRTC's version.

use std::collections::HashMap;
use std::ffi::{c_char, c_int, CString};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use cudarc::nvrtc::{result as rtc, sys as rtc_sys};
use sha2::{Digest, Sha256};

use super::driver::dev_err;
use crate::error::{Result, RuntimeError};

/// Whether the NVRTC library can be loaded (no GPU needed).
pub fn nvrtc_present() -> bool {
    // SAFETY: only tries to dlopen the library.
    unsafe { rtc_sys::is_culib_present() }
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
    static SWEPT: std::sync::Once = std::sync::Once::new();
    if let Some(ptx_dir) = file.parent() {
        SWEPT.call_once(|| crate::cache_tmp::remove_stale_tmp(ptx_dir));
    }
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

pub(super) fn store_ptx(file: &Path, ptx: &str) {
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
