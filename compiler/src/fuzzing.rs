//! The body of the `source` fuzz target (`fuzz/fuzz_targets/source.rs`), kept here so that
//! the stable replay test (`compiler/tests/fuzz_replay.rs`) runs exactly what was fuzzed.
//!
//! Bytes go through the front end, every pass (for inference and for training), the IR
//! dumps and both printers (Rust and CUDA source); no rustc, no NVRTC, no model buffers.
//! A diagnostic is a fine outcome and is rendered (rendering once panicked); a panic, an
//! abort or a hang is a finding.

use std::path::{Path, PathBuf};

use crate::diag::{Diagnostic, SourceMap};
use crate::{back, front, ir, passes, Compiler, Options};

/// Includes resolve against this directory, which does not exist: a fuzz input must not
/// read the files around the fuzzer (absolute paths still reach the front end's checks).
const INCLUDE_DIR: &str = "/nonexistent/snnc-fuzz";

/// Compiles `bytes` as a `.snn` file. Invalid UTF-8 goes through the file reader (the one
/// entry point that takes bytes) and then, decoded lossily, through the compiler.
pub fn source(bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(text) => compile_text(text, options_for(bytes.len())),
        Err(_) => {
            from_file(bytes);
            compile_text(&String::from_utf8_lossy(bytes), options_for(bytes.len()));
        }
    }
}

/// The pipeline options, picked by the input's length so that the fuzzer explores the
/// non-default schedules without paying for every one on every input.
fn options_for(len: usize) -> Options {
    let mut opts = Options::default();
    match len % 3 {
        1 => {
            opts.fuse = false;
            opts.merge = false;
            opts.reuse_memory = false;
            opts.force_steps = true;
        }
        2 => {
            opts.sparse = Some(true);
            opts.stream_stores = true;
            opts.prefetch_steps = 1;
        }
        _ => {}
    }
    opts
}

fn compile_text(text: &str, opts: Options) {
    for train in [false, true] {
        let mut c = Compiler::new(Options {
            train,
            ..opts.clone()
        });
        let parsed = match front::load_str(
            &mut c.sources,
            "fuzz.snn",
            text,
            Some(Path::new(INCLUDE_DIR)),
        ) {
            Ok(p) => p,
            Err(d) => return render(&c.sources, &d),
        };
        if !train {
            match c.dump_after(&parsed, "parse") {
                Ok(dump) => drop(dump),
                Err(d) => render(&c.sources, &d),
            }
        }
        let module = match c.module_until(&parsed, "memory") {
            Ok(m) => m,
            Err(d) => {
                render(&c.sources, &d);
                continue;
            }
        };
        drop(ir::dump::module(&module, &c.sources));
        match passes::lower::run(&module, &c.opts) {
            Ok(program) => {
                drop(ir::dump::program(&program));
                drop(back::rust::print_program(&program));
                drop(back::cuda::print_program(&program));
            }
            Err(d) => render(&c.sources, &d),
        }
    }
}

/// The bytes as a file on disk, read by [`Compiler::parse_file`] (which reports invalid
/// UTF-8 at its line and column).
fn from_file(bytes: &[u8]) {
    let dir = std::env::temp_dir().join(format!("snnc-fuzz-{}", std::process::id()));
    let path: PathBuf = dir.join("fuzz.snn");
    if std::fs::create_dir_all(&dir).is_err() || std::fs::write(&path, bytes).is_err() {
        return;
    }
    let mut c = Compiler::new(Options::default());
    let result = c.parse_file(&path);
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(d) = result {
        render(&c.sources, &d);
    }
}

/// Renders a diagnostic both ways; its locations must lie in the sources it came with.
fn render(sources: &SourceMap, d: &Diagnostic) {
    if let Some(span) = d.span {
        assert!(
            sources.contains(span),
            "diagnostic outside its sources: {d}"
        );
    }
    drop(d.render(sources, false));
    drop(d.plain(sources));
}
