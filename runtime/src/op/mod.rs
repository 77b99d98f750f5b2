//! The plan's library ops, one module per family (dense, conv, pool, time mix). A family
//! module holds everything about its ops that is not device code: the plan structs (what the
//! compiler emits), the validation rule, how the interpreter maps an op's time selection to
//! device calls, the op's line in `snnc ir` dumps, and the device trait (with its
//! descriptors) that every device implements for the family. Adding an op to a family
//! touches that module, [`crate::plan::Op`], the family's file in `cpu/` and `cuda/`,
//! `kernels/cuda/ops.cuh` and the compiler pass that emits it.

pub mod conv;
pub mod dense;
pub mod filter;
pub mod plastic;
pub mod pool;
pub mod time_mix;
pub mod wave;

use crate::error::Result;
use crate::exec::interp::Runner;
use crate::exec::validate::Checker;
use crate::plan::{Plan, TimeSel, WeightId};

/// What the validator and the interpreter need of a library op; [`crate::plan::Op::library`]
/// gives it for every op that is not a control op (zero, launch, step loop).
pub trait LibraryOp {
    /// The op's name in messages, e.g. `gemm`.
    fn name(&self) -> &'static str;
    /// Checks every index, shape and extent the op uses (`in_loop`: inside a step loop).
    fn check(&self, c: &Checker<'_>, in_loop: bool, what: &str) -> Result<()>;
    /// Runs the op at the runner's `(T, B, step)`.
    fn run(&self, r: &mut Runner<'_>) -> Result<()>;
    /// The op's line in plan dumps (`snnc ir --after lower`).
    fn print(&self, p: &Plan) -> String;
    /// Weights the interpreter reads on the host (it builds time matrices from them): the
    /// session keeps their host copies fresh after device optimizer steps.
    fn host_reads(&self) -> Vec<WeightId> {
        Vec::new()
    }
}

/// A time selection as dumps print it.
pub fn time_text(t: &TimeSel) -> String {
    match t {
        TimeSel::All { delay: 0 } => "all T".into(),
        TimeSel::All { delay } => format!("all T, delay {delay}"),
        TimeSel::Step { delay: 0 } => "step t".into(),
        TimeSel::Step { delay } => format!("step t, reads t-{delay}"),
    }
}

/// `" + bias_name"` for an optional bias weight, as dumps print it.
fn bias_text(p: &Plan, bias: Option<WeightId>) -> String {
    bias.map(|i| format!(" + {}", p.weights[i].name))
        .unwrap_or_default()
}

/// `"+"` for an accumulating op, as dumps print it.
fn acc_text(accumulate: bool) -> &'static str {
    if accumulate {
        "+"
    } else {
        ""
    }
}
