//! Shared helpers for the integration tests.
#![allow(dead_code)]

pub mod grad;
pub mod spyker;

use std::path::{Path, PathBuf};

use snnc::diag::Diagnostic;
use snnc::ir::kernel::Program;
use snnc::{Compiler, Options};

/// The repository root: `$SNNC_REPO_ROOT` when set, else the checkout the test was built in,
/// else the current directory. The first and last serve test binaries carried to another
/// machine and run from a copy of the repository at another path (scripts/gpu-session.sh).
pub fn root() -> PathBuf {
    if let Some(dir) = std::env::var_os("SNNC_REPO_ROOT") {
        return PathBuf::from(dir);
    }
    let built = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    if built.join("examples").is_dir() {
        built
    } else {
        std::env::current_dir().expect("the current directory")
    }
}

/// The `.snn` files directly in `dir` (relative to the repository root), sorted.
pub fn snn_files(dir: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "snn"))
        .collect();
    v.sort();
    v
}

/// Every model the snapshot and equivalence tests cover: the examples and tests/in.
pub fn model_files() -> Vec<PathBuf> {
    ["examples", "tests/in"]
        .into_iter()
        .flat_map(snn_files)
        .collect()
}

pub fn compile_file(path: &Path, opts: Options) -> Result<Program, String> {
    let mut c = Compiler::new(opts);
    let parsed = c
        .parse_file(path)
        .map_err(|d| d.render(&c.sources, false))?;
    c.compile(&parsed).map_err(|d| d.render(&c.sources, false))
}

/// Compile source text; on error return the diagnostic and its `file:line:col`.
#[allow(clippy::result_large_err)]
pub fn compile_str(text: &str) -> Result<Program, (Diagnostic, String)> {
    let mut c = Compiler::new(Options::default());
    let parsed = c.parse_str("test.snn", text).map_err(|d| {
        let loc = d.span.map(|s| c.sources.location(s)).unwrap_or_default();
        (d, loc)
    })?;
    c.compile(&parsed).map_err(|d| {
        let loc = d.span.map(|s| c.sources.location(s)).unwrap_or_default();
        (d, loc)
    })
}

/// Compile `src` (called `name` in diagnostics) with `opts` and load it with the test kernel
/// cache; a diagnostic panics, rendered.
pub fn session_from_str(name: &str, src: &str, opts: Options) -> snn_runtime::Session {
    let mut c = Compiler::new(opts);
    let parsed = c
        .parse_str(name, src)
        .unwrap_or_else(|d| panic!("{}", d.render(&c.sources, false)));
    load_parsed(&mut c, &parsed)
}

/// [`session_from_str`] for a file, its path relative to the repository root.
pub fn session_from_file(path: &str, opts: Options) -> snn_runtime::Session {
    let mut c = Compiler::new(opts);
    let parsed = c
        .parse_file(&root().join(path))
        .unwrap_or_else(|d| panic!("{}", d.render(&c.sources, false)));
    load_parsed(&mut c, &parsed)
}

fn load_parsed(c: &mut Compiler, parsed: &snnc::front::Parsed) -> snn_runtime::Session {
    let program = c
        .compile(parsed)
        .unwrap_or_else(|d| panic!("{}", d.render(&c.sources, false)));
    snnc::session::load(&program, Some(&cache_dir()))
        .unwrap_or_else(|d| panic!("{}", d.render(&c.sources, false)))
        .session
}

/// Options with `train` set.
pub fn train_opts() -> Options {
    Options {
        train: true,
        ..Options::default()
    }
}

/// A per-test kernel cache inside target/, so tests never touch the user's cache.
pub fn cache_dir() -> PathBuf {
    root().join("target").join("snnc-test-cache")
}

/// Multiply every weight by 4: larger than the default init, so that every layer of a
/// random network actually spikes and comparisons between paths mean something.
pub fn scale_weights(s: &mut snn_runtime::Session) {
    for w in s.plan().weights.clone() {
        let scaled: Vec<f32> = s.weight(&w.name).unwrap().iter().map(|x| x * 4.0).collect();
        s.set_weight(&w.name, &scaled).unwrap();
    }
}
