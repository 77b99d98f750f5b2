//! `snnc run`: compile, build the kernels, run on the CPU, print or save outputs.
use std::path::PathBuf;

use snnc::diag::{DResult, Diagnostic, ErrorKind};
use snnc::front::Parsed;
use snnc::Compiler;

pub struct RunArgs {
    pub weights: Option<PathBuf>,
    pub inputs: Vec<PathBuf>,
    pub steps: Option<usize>,
    pub batch: Option<usize>,
    pub seed: Option<u64>,
    pub set: Vec<String>,
    pub out: Option<PathBuf>,
    pub save_weights: Option<PathBuf>,
    pub device: String,
}

pub fn run(_c: &Compiler, _parsed: &Parsed, _args: &RunArgs) -> DResult<()> {
    Err(Diagnostic::new(ErrorKind::Runtime, "not yet"))
}
