//! Build generated Rust kernels into a small cdylib with `rustc -O`, cached by a content
//! hash of the source, the compiler version and the flags, so an unchanged model never
//! rebuilds. The cache entry is written to a temporary directory and renamed into place,
//! so a crash or a concurrent build never leaves a half-written library behind; a cached
//! library is checked against the length and checksum recorded at publish before it is used.

mod cache_check;

use snn_runtime::cuda::shim::tool_command;
use std::path::{Path, PathBuf};
use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::diag::{DResult, Diagnostic, ErrorKind};

const FLAGS: &[&str] = &[
    "--edition=2021",
    "--crate-type=cdylib",
    "-Copt-level=3",
    "-Ctarget-cpu=native",
    "-Cpanic=abort",
    "-Ccodegen-units=1",
    "-Cdebuginfo=0",
    "-Cstrip=symbols",
];

#[derive(Clone, Debug)]
pub struct BuiltLib {
    pub path: PathBuf,
    /// True when the library came from the cache.
    pub cached: bool,
    pub seconds: f64,
}

/// Where kernel libraries are cached (shared with the CUDA device's PTX cache).
pub use snn_runtime::cache_dir;

fn rustc() -> String {
    std::env::var("SNNC_RUSTC")
        .or_else(|_| std::env::var("RUSTC"))
        .unwrap_or_else(|_| "rustc".into())
}

fn rustc_version(rustc: &str) -> DResult<String> {
    let out = tool_command(rustc).arg("-vV").output().map_err(|e| {
        Diagnostic::new(ErrorKind::Build, format!("cannot run `{rustc}`: {e}"))
            .hint("snnc builds CPU kernels with rustc: install Rust (https://rustup.rs) or set SNNC_RUSTC")
    })?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The cache key of a kernel source.
pub fn cache_key(source: &str) -> DResult<String> {
    let mut h = Sha256::new();
    h.update(source.as_bytes());
    h.update(rustc_version(&rustc())?.as_bytes());
    for f in FLAGS {
        h.update(f.as_bytes());
    }
    // The entry layout (library + manifest): entries from before the manifest are not reused.
    h.update(cache_check::MANIFEST.as_bytes());
    let digest = h.finalize();
    Ok(digest.iter().take(12).map(|b| format!("{b:02x}")).collect())
}

fn lib_name() -> &'static str {
    if cfg!(target_os = "macos") {
        "libsnnkernels.dylib"
    } else if cfg!(windows) {
        "snnkernels.dll"
    } else {
        "libsnnkernels.so"
    }
}

/// Build (or fetch from the cache) the cdylib for `source`.
pub fn build_cdylib(source: &str, cache: Option<&Path>) -> DResult<BuiltLib> {
    let start = Instant::now();
    let dir = cache.map(Path::to_path_buf).unwrap_or_else(cache_dir);
    let key = cache_key(source)?;
    let final_dir = dir.join(&key);
    let lib = final_dir.join(lib_name());
    cache_check::remove_stale_tmp(&dir);
    if final_dir.exists() {
        match cache_check::problem(&final_dir, &lib) {
            None => {
                return Ok(BuiltLib {
                    path: lib,
                    cached: true,
                    seconds: start.elapsed().as_secs_f64(),
                })
            }
            Some(why) => {
                eprintln!(
                    "snnc: cached kernels in {} were corrupt ({why}); rebuilding",
                    final_dir.display()
                );
                discard(&dir, &final_dir);
            }
        }
    }
    std::fs::create_dir_all(&dir).map_err(|e| io_err("create the kernel cache", &dir, e))?;
    // Unique per build, not only per process: test threads build the same key at once.
    static BUILDS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = BUILDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!("{key}.tmp-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| io_err("create", &tmp, e))?;
    // A failed build leaves nothing in the cache (`snnc ir FILE --after rust` prints the
    // same source again).
    if let Err(d) = build_in(&tmp, source) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(d);
    }
    // Publish atomically; a concurrent build of the same key may have won the race.
    if std::fs::rename(&tmp, &final_dir).is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
        if let Some(why) = cache_check::problem(&final_dir, &lib) {
            return Err(Diagnostic::new(
                ErrorKind::Io,
                format!(
                    "cannot publish kernels to `{}` (the entry there is unusable: {why})",
                    final_dir.display()
                ),
            )
            .hint("remove that directory or set SNNC_CACHE_DIR to another one"));
        }
    }
    Ok(BuiltLib {
        path: lib,
        cached: false,
        seconds: start.elapsed().as_secs_f64(),
    })
}

fn io_err(what: &str, p: &Path, e: std::io::Error) -> Diagnostic {
    Diagnostic::new(
        ErrorKind::Io,
        format!("cannot {what} `{}`: {e}", p.display()),
    )
    .hint("set SNNC_CACHE_DIR to a writable directory")
}

/// Writes `source` into the build directory `tmp`, builds the library there and adds its
/// manifest: an entry ready to publish.
fn build_in(tmp: &Path, source: &str) -> DResult<()> {
    let src = tmp.join("kernels.rs");
    std::fs::write(&src, source).map_err(|e| io_err("write", &src, e))?;
    let rc = rustc();
    let out = tool_command(&rc)
        .args(FLAGS)
        .arg("-o")
        .arg(tmp.join(lib_name()))
        .arg(&src)
        .output()
        .map_err(|e| {
            Diagnostic::new(ErrorKind::Build, format!("cannot run `{rc}`: {e}"))
                .hint("snnc builds CPU kernels with rustc: install Rust (https://rustup.rs) or set SNNC_RUSTC")
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let head: String = stderr.lines().take(40).collect::<Vec<_>>().join("\n");
        return Err(Diagnostic::new(
            ErrorKind::Build,
            format!("rustc failed on the generated kernels:\n{head}"),
        )
        .hint(
            "this is a bug in snnc's Rust back end; please report it with the .snn file \
             (`snnc ir FILE --after rust` prints the generated source)",
        ));
    }
    // The manifest goes in before the rename, so every published entry has one.
    cache_check::write_manifest(tmp, &tmp.join(lib_name()))
        .map_err(|e| io_err("write the manifest in", tmp, e))
}

/// Takes a corrupt entry out of the cache: renamed aside first (atomic, so a concurrent build
/// publishing the same key never sees half of it removed), then deleted.
fn discard(cache: &Path, entry: &Path) {
    static DISCARDS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = DISCARDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = entry.file_name().unwrap_or_default().to_string_lossy();
    let aside = cache.join(format!("{name}.tmp-{}-corrupt{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&aside);
    if std::fs::rename(entry, &aside).is_ok() {
        let _ = std::fs::remove_dir_all(&aside);
    } else {
        let _ = std::fs::remove_dir_all(entry);
    }
}
