//! KernelIR: backend-neutral kernels plus the runtime plan that launches them.
//!
//! A kernel is a loop over flat neuron indices `idx in lo..hi` of the `B * F` space, with
//! the time loop inside (`LaunchTime::Seq`: state in registers for all T) or a single step
//! (`LaunchTime::Step`, state loaded from and stored to `[B, F]` buffers). The body is a
//! list of typed scalar statements. Back ends only print this; they decide nothing.

use std::fmt;

use crate::ir::expr::{print, Expr, Parens, Text};
use crate::ir::synapse::SynapseEqs;
use snn_runtime::plan::{Extent, LaunchTime, Plan, PlasticGeom};

#[derive(Clone, Debug)]
pub struct Program {
    pub plan: Plan,
    /// One per `plan.kernels` entry, same order, for the first `kernels.len()` entries.
    pub kernels: Vec<Kernel>,
    /// The plasticity kernels: the remaining `plan.kernels` entries, same order (each
    /// [`snn_runtime::plan::LearnLayer`] names its own).
    pub plastic: Vec<PlasticKernel>,
}

impl Program {
    /// Every kernel's symbol, in plan order.
    pub fn symbols(&self) -> Vec<String> {
        self.kernels
            .iter()
            .map(|k| k.symbol.clone())
            .chain(self.plastic.iter().map(|k| k.symbol.clone()))
            .collect()
    }
}

/// A plasticity kernel (`synapse = rule(..)`): one thread per postsynaptic map owns that
/// map's synapses and walks the batch in order; for each event of a sample (a neuron of the
/// map its gate selects, or that fired) it finds the first spike times and runs the rule on
/// every synapse of the neuron (`snn_runtime::op::plastic`). Back ends print this loop
/// nest around the rule's body (f64; the weight rounded to f32 after each event).
#[derive(Clone, Debug, PartialEq)]
pub struct PlasticKernel {
    /// Exported symbol, unique and mangled like the other kernels'.
    pub symbol: String,
    /// One line on what it computes, printed as a comment.
    pub doc: String,
    pub geom: PlasticGeom,
    /// Events are the gate's non-zero neurons (else the neurons that fired).
    pub gate: bool,
    /// The rule reads the sample's reward (`bufs[4]`).
    pub reward: bool,
    /// The rule: parameter `i` is `params[i]` (f64), its locals, its `on_post` body.
    pub rule: SynapseEqs,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Kernel {
    /// Exported symbol; unique and mangled (`snn_k{index}_{model}_{role}`).
    pub symbol: String,
    /// One line on what it computes, printed as a comment.
    pub doc: String,
    pub args: Vec<KArg>,
    /// Parameter names; `Param(i)` reads `params[i]` of the launch group.
    pub params: Vec<String>,
    /// Weight arguments (learnable neuron parameters), bound after the buffers: `Weight(i)`
    /// reads weight `i`; a `grad` weight receives a carried value's sum (`Carried::grad`).
    pub weights: Vec<KWeight>,
    pub time: LaunchTime,
    /// `Seq` kernels: run the T loop backwards (`t = T-1 .. 0`), as backward kernels do.
    /// `Step` kernels (inside a `ReverseStepLoop`): the first step is `T - 1`.
    pub reverse: bool,
    /// Values carried from step to step (neuron state, spike counts).
    pub carried: Vec<Carried>,
    /// Per-step scalar temporaries.
    pub locals: Vec<String>,
    /// One time step.
    pub body: Vec<KStmt>,
    /// `Seq` kernels: the [`prefetched`] inputs are loaded this many steps at a time, all
    /// steps of a block before any of them is computed ([`mark_prefetch`]); 1: each step
    /// loads as it runs (every `Step` kernel). The CUDA back end holds a block's inputs in
    /// registers, so each thread has that many loads in flight: one per thread leaves a GPU
    /// waiting on memory latency (BENCHMARKS.md, "the fused LIF kernel on an H100"). The
    /// Rust back end prints the plain loop: its blocks read each step's row as one
    /// contiguous span, which the CPU's prefetcher already follows.
    pub prefetch: u32,
}

/// A weight argument: a learnable parameter's values, or its gradient.
#[derive(Clone, Debug, PartialEq)]
pub struct KWeight {
    pub name: String,
    /// `[F]`, read at `idx % F`; otherwise `[1]`, read at 0.
    pub per_neuron: bool,
    /// The gradient: written only by `Carried::grad`, as atomic adds.
    pub grad: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct KArg {
    pub name: String,
    pub extent: Extent,
    pub write: bool,
    /// A `[T, B, F]` output of a forward `Seq` kernel stored exactly once per step and never
    /// read back by the kernel (spikes, traces, saved states): each element is written once
    /// and the next reader is another op. A back end may store it with non-temporal
    /// (streaming) stores when the launch is too large for its outputs to stay in cache (set
    /// by [`mark_streams`]).
    pub stream: bool,
}

/// How a carried value enters and leaves a kernel.
#[derive(Clone, Debug, PartialEq)]
pub struct Carried {
    pub name: String,
    /// Value before the first step.
    pub init: KExpr,
    /// The `[B, F]` buffer that holds it between launches or receives it at the end.
    pub buf: Option<usize>,
    /// Step kernels: read `buf` (or `init` at the first step when `init_at_t0`: `t == 0`,
    /// or `t == T - 1` in a `reverse` step kernel).
    pub init_at_t0: bool,
    /// Write it back to `buf`: after each step (step kernels) or after the T loop.
    pub store: bool,
    /// `Seq` kernels: after the T loop, add the value into this `grad` weight argument: a
    /// reduction over time in a register, then over neurons and the batch with atomic adds
    /// (a back end may add partial sums of several neurons first). `Step` kernels: the
    /// same after the step.
    pub grad: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KVar {
    Carried(usize),
    Local(usize),
}

#[derive(Clone, Debug, PartialEq)]
pub enum KStmt {
    Set(KVar, KExpr),
    /// Write at the current `(t, idx)` of an argument.
    Store(usize, KExpr),
}

/// What a name in a kernel body refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KLeaf {
    Param(usize),
    /// A learnable parameter: weight argument `i` at 0, or at `idx % F` when per neuron.
    Weight(usize),
    Var(KVar),
    /// Read at the current `(t, idx)` of an argument.
    Load(usize),
    /// Uniform [0, 1) from Philox4x32-10 keyed by `(seed bits, 0x5EED5EED)`: word `idx % 4`
    /// of the call with counter `(idx / 4, t, 0)` (`snn_uniform` in kernels/rust/prelude.rs
    /// and kernels/cuda/snn_prelude.cuh); identical on every back end.
    Uniform {
        seed_param: usize,
    },
}

pub type KExpr = Expr<KLeaf>;

/// Sets [`KArg::stream`] on every argument of a forward `Seq` kernel that is a `[T, B, F]`
/// output stored exactly once by the step and never loaded: the kernel writes every element
/// of it once, in whole rows of its index range, and reads none of it. Reverse-time
/// (backward) kernels are left out: they read two streams for each one they write, and
/// streaming their gradient made `lif-fwdbwd` slower on the dev VM (BENCHMARKS.md,
/// "non-temporal stores").
pub fn mark_streams(k: &mut Kernel) {
    let loads = |i: usize| {
        k.body.iter().any(|s| match s {
            KStmt::Set(_, e) | KStmt::Store(_, e) => e.loads(i),
        }) || k
            .carried
            .iter()
            .any(|c| c.buf == Some(i) || c.init.loads(i))
    };
    let stores = |i: usize| {
        k.body
            .iter()
            .filter(|s| matches!(s, KStmt::Store(j, _) if *j == i))
            .count()
    };
    let stream: Vec<bool> = (0..k.args.len())
        .map(|i| {
            let a = &k.args[i];
            k.time == LaunchTime::Seq
                && !k.reverse
                && a.extent == Extent::Seq
                && a.write
                && stores(i) == 1
                && !loads(i)
        })
        .collect();
    for (a, s) in k.args.iter_mut().zip(stream) {
        a.stream = s;
    }
}

/// Floats of prefetched inputs a thread may hold ([`mark_prefetch`] shortens the blocks of
/// a kernel with many inputs): on an H100 about 1000 threads per SM are resident, so 64
/// registers per thread still keep all of them.
pub const PREFETCH_FLOATS: u32 = 32;

/// The arguments a `Seq` kernel may load ahead: `[T, B, F]` inputs the body loads and the
/// kernel never writes, so a load moved before earlier steps reads the same value.
pub fn prefetched(k: &Kernel) -> Vec<usize> {
    if k.time != LaunchTime::Seq {
        return vec![];
    }
    (0..k.args.len())
        .filter(|&i| {
            let a = &k.args[i];
            a.extent == Extent::Seq
                && !a.write
                && !k.carried.iter().any(|c| c.store && c.buf == Some(i))
                && k.body
                    .iter()
                    .all(|s| !matches!(s, KStmt::Store(j, _) if *j == i))
                && k.body.iter().any(|s| match s {
                    KStmt::Set(_, e) | KStmt::Store(_, e) => e.loads(i),
                })
        })
        .collect()
}

/// Sets [`Kernel::prefetch`] of a `Seq` kernel that has [`prefetched`] inputs to `steps`,
/// shortened so that the held inputs fit in [`PREFETCH_FLOATS`]; other kernels keep 1.
pub fn mark_prefetch(k: &mut Kernel, steps: u32) {
    let n = prefetched(k).len() as u32;
    k.prefetch = match PREFETCH_FLOATS.checked_div(n) {
        None => 1,
        Some(fit) => steps.clamp(1, fit.max(1)),
    };
}

impl KExpr {
    pub fn var(v: KVar) -> KExpr {
        Expr::Leaf(KLeaf::Var(v))
    }
    /// A read at the current `(t, idx)` of argument `a`.
    pub fn load(a: usize) -> KExpr {
        Expr::Leaf(KLeaf::Load(a))
    }
    /// Whether the expression loads argument `a`.
    pub fn loads(&self, a: usize) -> bool {
        self.any_leaf(|l| *l == KLeaf::Load(a))
    }
}

// ------------------------------------------------------------------ text dump

/// `e` with the names of kernel `k`, every operation parenthesised.
fn show(k: &Kernel, e: &KExpr) -> String {
    let leaf = |l: &KLeaf| match l {
        KLeaf::Param(i) => format!("param.{}", k.params[*i]),
        KLeaf::Weight(i) => {
            let w = &k.weights[*i];
            let at = if w.per_neuron { "[idx % F]" } else { "" };
            format!("weight.{}{at}", w.name)
        }
        KLeaf::Var(v) => var_name(k, *v),
        KLeaf::Load(a) => format!("{}[{}]", k.args[*a].name, index(k.args[*a].extent)),
        KLeaf::Uniform { seed_param } => {
            format!("uniform(seed = param.{}, idx, t)", k.params[*seed_param])
        }
    };
    let text = Text {
        parens: Parens::Full,
        leaf,
    };
    print(&text, e)
}

fn index(e: Extent) -> &'static str {
    match e {
        Extent::Seq => "t, idx",
        Extent::Static | Extent::Single => "idx",
    }
}

pub fn var_name(k: &Kernel, v: KVar) -> String {
    match v {
        KVar::Carried(i) => format!("{}'", k.carried[i].name),
        KVar::Local(i) => k.locals[i].clone(),
    }
}

impl fmt::Display for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let time = match self.time {
            LaunchTime::Seq if self.reverse => "for t in (0..T).rev() (inside)",
            LaunchTime::Seq => "for t in 0..T (inside)",
            LaunchTime::Step if self.reverse => "one step t (reverse: the first is T-1)",
            LaunchTime::Step => "one step t",
        };
        writeln!(f, "kernel {}  // {}", self.symbol, self.doc)?;
        for (i, a) in self.args.iter().enumerate() {
            writeln!(
                f,
                "  arg {i} {} {:?} {}{}",
                a.name,
                a.extent,
                if a.write { "write" } else { "read" },
                if a.stream { " stream" } else { "" }
            )?;
        }
        if !self.params.is_empty() {
            writeln!(f, "  params {}", self.params.join(", "))?;
        }
        for (i, w) in self.weights.iter().enumerate() {
            writeln!(
                f,
                "  weight {i} {} {} {}",
                w.name,
                if w.per_neuron { "[F]" } else { "[1]" },
                if w.grad { "grad (atomic add)" } else { "read" }
            )?;
        }
        for c in &self.carried {
            let buf = c
                .buf
                .map(|b| format!(" buf {}", self.args[b].name))
                .unwrap_or_default();
            let grad = c
                .grad
                .map(|w| {
                    let w = &self.weights[w];
                    if w.per_neuron {
                        format!(" then {}[idx % F] += sum over the batch", w.name)
                    } else {
                        format!(" then {} += sum over neurons and the batch", w.name)
                    }
                })
                .unwrap_or_default();
            writeln!(
                f,
                "  carried {}' = {}{buf}{}{}{grad}",
                c.name,
                show(self, &c.init),
                match (c.init_at_t0, self.reverse && self.time == LaunchTime::Step) {
                    (true, true) => " init@T-1",
                    (true, false) => " init@t0",
                    (false, _) => "",
                },
                if c.store { " store" } else { "" }
            )?;
        }
        if self.prefetch > 1 {
            let names: Vec<&str> = prefetched(self)
                .into_iter()
                .map(|i| self.args[i].name.as_str())
                .collect();
            writeln!(
                f,
                "  prefetch {} steps of {}",
                self.prefetch,
                names.join(", ")
            )?;
        }
        writeln!(f, "  over idx in lo..hi, {time}:")?;
        for s in &self.body {
            match s {
                KStmt::Set(v, e) => writeln!(f, "    {} = {}", var_name(self, *v), show(self, e))?,
                KStmt::Store(a, e) => writeln!(
                    f,
                    "    {}[{}] <- {}",
                    self.args[*a].name,
                    index(self.args[*a].extent),
                    show(self, e)
                )?,
            }
        }
        Ok(())
    }
}

impl fmt::Display for PlasticKernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.rule;
        writeln!(f, "kernel {}  // {}", self.symbol, self.doc)?;
        writeln!(
            f,
            "  bufs weight, pre, post{}{}; params (f64) {}",
            if self.gate { ", gate" } else { "" },
            if self.reward { ", reward" } else { "" },
            r.params
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )?;
        let (map, neuron, synapse) = match self.geom {
            PlasticGeom::Dense { inputs, .. } => (
                "o",
                "neuron o",
                format!("i in 0..{inputs}: presynaptic neuron i"),
            ),
            PlasticGeom::Conv(g) => (
                "z",
                "(y, x) of map z",
                format!(
                    "(c, ky, kx) in {}x{}x{}: presynaptic neuron (c, y*{} + ky - {}, x*{} + kx - {}) (silent in the padding)",
                    g.c_in, g.kh, g.kw, g.stride, g.pad, g.stride, g.pad
                ),
            ),
        };
        let line = |f: &mut fmt::Formatter<'_>, ind: &str, a: &crate::ir::synapse::SynAssign| {
            writeln!(f, "{ind}{} = {}", r.var_name(a.target), r.show(&a.value))
        };
        writeln!(f, "  over {map} in lo..hi (postsynaptic maps):")?;
        if r.form == crate::ir::synapse::RuleForm::PerStep {
            writeln!(
                f,
                "    for each synapse {synapse}: w0 = f64(weight), acc = 0"
            )?;
            writeln!(
                f,
                "      for b in 0..B, for each {neuron}, traces at their initial values:"
            )?;
            writeln!(
                f,
                "        for t in 0..T: s_pre, s_post = the pair's spikes at t"
            )?;
            for a in &r.on_step {
                line(f, "          ", a)?;
            }
            let post = if self.gate {
                "s_post != 0 and gate != 0"
            } else {
                "s_post != 0"
            };
            for (cond, body) in [("s_pre != 0", &r.on_pre), (post, &r.on_post)] {
                if body.is_empty() {
                    continue;
                }
                writeln!(f, "          if {cond}: w = w0")?;
                for a in body {
                    line(f, "            ", a)?;
                }
                writeln!(f, "            acc += w - w0")?;
            }
            return writeln!(f, "      weight = f32(w0 + acc)");
        }
        writeln!(f, "    for b in 0..B (in order):")?;
        writeln!(
            f,
            "      for each {neuron} {}: t_post = its first spike (T if none)",
            if self.gate {
                "where gate != 0"
            } else {
                "that fired"
            }
        )?;
        writeln!(
            f,
            "        for each synapse {synapse}, t_pre = its first spike (T if none):"
        )?;
        writeln!(f, "          w = f64(weight)")?;
        for a in &r.on_post {
            line(f, "          ", a)?;
        }
        writeln!(f, "          weight = f32(w)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::expr::BinOp;

    fn arg(name: &str, extent: Extent, write: bool) -> KArg {
        KArg {
            name: name.into(),
            extent,
            write,
            stream: false,
        }
    }

    /// A `Seq` kernel reading `reads` `[T, B, F]` inputs, a `[B, F]` one, and writing one
    /// output it also reads back.
    fn kernel(reads: usize) -> Kernel {
        let mut args: Vec<KArg> = (0..reads)
            .map(|i| arg(&format!("in{i}"), Extent::Seq, false))
            .collect();
        args.push(arg("w", Extent::Single, false));
        args.push(arg("acc", Extent::Seq, true));
        args.push(arg("unused", Extent::Seq, false));
        let (w, acc) = (reads, reads + 1);
        let mut sum = KExpr::load(w);
        for i in 0..reads {
            sum = KExpr::bin(BinOp::Add, sum, KExpr::load(i));
        }
        let acc_plus = KExpr::bin(BinOp::Add, KExpr::load(acc), sum);
        Kernel {
            symbol: "k".into(),
            doc: String::new(),
            args,
            params: vec![],
            weights: vec![],
            time: LaunchTime::Seq,
            reverse: false,
            carried: vec![],
            locals: vec![],
            body: vec![KStmt::Store(acc, acc_plus)],
            prefetch: 1,
        }
    }

    #[test]
    fn prefetch_takes_read_only_sequences_within_the_register_budget() {
        let mut k = kernel(2);
        // Not the [B, F] input, not the output read back, not the argument never loaded.
        assert_eq!(prefetched(&k), vec![0, 1]);
        mark_prefetch(&mut k, 8);
        assert_eq!(k.prefetch, 8);
        mark_prefetch(&mut k, 0);
        assert_eq!(k.prefetch, 1);
        // 5 inputs x 6 steps = 30 <= 32 floats; 40 inputs still get single steps.
        let mut k = kernel(5);
        mark_prefetch(&mut k, 8);
        assert_eq!(k.prefetch, 6);
        let mut k = kernel(40);
        mark_prefetch(&mut k, 8);
        assert_eq!(k.prefetch, 1);
        // Step kernels and kernels without such inputs load as they go.
        let mut k = kernel(2);
        k.time = LaunchTime::Step;
        mark_prefetch(&mut k, 8);
        assert_eq!((prefetched(&k).len(), k.prefetch), (0, 1));
        let mut k = kernel(0);
        mark_prefetch(&mut k, 8);
        assert_eq!(k.prefetch, 1);
        assert!(k.to_string().contains("over idx"));
        let mut k = kernel(2);
        mark_prefetch(&mut k, 4);
        assert!(k.to_string().contains("  prefetch 4 steps of in0, in1\n"));
    }
}
