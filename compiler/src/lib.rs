//! snnc: a compiler for spiking neural networks.
//!
//! ```text
//! .snn text --front (pest)--> AST --passes::resolve--> NetIR
//!   --shapes--> --neurons--> --recurrence--> --schedule--> --fuse--> --memory-->
//!   --lower--> KernelIR (runtime Plan + kernels) --back::rust--> Rust source
//!   --build (rustc -O, cached)--> cdylib --snn_runtime::Session--> outputs
//! ```
//!
//! [`Compiler`] drives the pipeline; every pass can be stopped after and dumped
//! (`snnc ir FILE --after PASS`). ARCHITECTURE.md walks through it.

pub mod back;
pub mod build;
pub mod diag;
pub mod footprint;
pub mod front;
#[doc(hidden)]
pub mod fuzzing;
pub mod ir;
pub mod passes;
pub mod readout;
pub mod session;

use std::path::Path;

use diag::{DResult, Diagnostic, ErrorKind, SourceMap};
use front::Parsed;
use ir::kernel::Program;
use ir::net::Module;
pub use passes::Options;

/// One compilation: the source files it read and the pipeline options.
#[derive(Default)]
pub struct Compiler {
    pub sources: SourceMap,
    pub opts: Options,
}

impl Compiler {
    pub fn new(opts: Options) -> Compiler {
        Compiler {
            sources: SourceMap::default(),
            opts,
        }
    }

    pub fn parse_file(&mut self, path: &Path) -> DResult<Parsed> {
        front::load_file(&mut self.sources, path)
    }

    pub fn parse_str(&mut self, name: &str, text: &str) -> DResult<Parsed> {
        front::load_str(&mut self.sources, name, text, None)
    }

    /// Run the NetIR passes up to and including `until` (a name from [`passes::PASSES`]).
    pub fn module_until(&self, parsed: &Parsed, until: &str) -> DResult<Module> {
        let order = [
            "resolve",
            "shapes",
            "neurons",
            "synapses",
            "recurrence",
            "schedule",
            "autodiff",
            "fuse",
            "memory",
        ];
        let stop = order
            .iter()
            .position(|p| *p == until)
            .unwrap_or(order.len() - 1);
        let mut m = passes::resolve::run(parsed)?;
        for pass in &order[1..=stop] {
            match *pass {
                "shapes" => passes::shapes::run(&mut m)?,
                "neurons" => {
                    passes::neurons::run(&mut m, &passes::resolve::neuron_models(parsed)?)?
                }
                "synapses" => {
                    passes::synapses::run(&mut m, &passes::resolve::synapse_models(parsed)?)?;
                    passes::local_schedule::check(&m)?;
                }
                "recurrence" => passes::recurrence::run(&mut m)?,
                "schedule" => passes::schedule::run(&mut m, &self.opts)?,
                "autodiff" => passes::autodiff::run(&mut m, &self.opts)?,
                "fuse" => passes::fuse::run(&mut m, &self.opts)?,
                "memory" => passes::memory::run(&mut m, &self.opts)?,
                _ => unreachable!(),
            }
        }
        Ok(m)
    }

    /// The whole pipeline: parsed files -> KernelIR.
    pub fn compile(&self, parsed: &Parsed) -> DResult<Program> {
        let m = self.module_until(parsed, "memory")?;
        passes::lower::run(&m, &self.opts)
    }

    /// The text dump after a pass (`parse`, `resolve`, ..., `lower`, or `rust`).
    pub fn dump_after(&self, parsed: &Parsed, pass: &str) -> DResult<String> {
        match pass {
            "parse" => {
                let root = &parsed
                    .files
                    .iter()
                    .find(|(id, _)| *id == parsed.root)
                    .expect("root")
                    .1;
                Ok(front::dump::ast_file(root))
            }
            "lower" => Ok(ir::dump::program(&self.compile(parsed)?)),
            "rust" => Ok(back::rust::print_program(&self.compile(parsed)?)),
            p if passes::PASSES.iter().any(|(n, _)| *n == p) => Ok(ir::dump::module(
                &self.module_until(parsed, p)?,
                &self.sources,
            )),
            other => {
                let names: Vec<&str> = passes::PASSES.iter().map(|(n, _)| *n).collect();
                Err(
                    Diagnostic::new(ErrorKind::UnknownName, format!("unknown pass `{other}`"))
                        .hint(format!("passes: {}, rust", names.join(", "))),
                )
            }
        }
    }
}
