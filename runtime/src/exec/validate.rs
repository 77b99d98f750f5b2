//! The plan validator: checks every index, shape and extent of a plan once, and returns it as
//! a [`ValidPlan`] with a side table ([`PlanInfo`], the way naga's validator returns a
//! `ModuleInfo`) of what the interpreter needs resolved. Control ops are checked here; each
//! library op checks itself ([`crate::op::LibraryOp::check`]) with the helpers of [`Checker`].

use crate::device::{GroupDesc, WeightArg};
use crate::error::{fmt_shape, Result, RuntimeError};
use crate::plan::*;
use crate::tensor::numel;
use std::collections::HashSet;

/// What the validator resolved for the interpreter.
#[derive(Clone, Debug, Default)]
pub struct PlanInfo {
    /// Launch groups with their buffers resolved to slots, one entry per [`Op::Launch`] of
    /// the forward ops in pre-order (the order the interpreter meets them).
    pub forward_launches: Vec<Vec<GroupDesc>>,
    /// The same for the backward ops of a training plan.
    pub backward_launches: Vec<Vec<GroupDesc>>,
    /// Weights the interpreter reads on the host (time matrices and biases), sorted.
    pub host_reads: Vec<WeightId>,
}

/// A plan that passed [`validate`], with its side table; only the validator makes one.
#[derive(Clone, Debug)]
pub struct ValidPlan {
    plan: Plan,
    info: PlanInfo,
}

impl ValidPlan {
    pub fn plan(&self) -> &Plan {
        &self.plan
    }
    pub fn info(&self) -> &PlanInfo {
        &self.info
    }
}

/// Checks a plan against a device with `n_kernels` kernels.
pub fn validate(plan: Plan, n_kernels: usize) -> Result<ValidPlan> {
    if n_kernels != plan.kernels.len() {
        return Err(RuntimeError::KernelTable {
            expected: plan.kernels.len(),
            found: n_kernels,
        });
    }
    check_decls(&plan)?;
    let c = Checker {
        plan: &plan,
        n_kernels,
        backward: false,
    };
    let mut info = PlanInfo::default();
    c.ops(
        &plan.ops,
        false,
        "",
        &mut info.forward_launches,
        &mut info.host_reads,
    )?;
    if let Some(tp) = &plan.train {
        check_train(&c, tp)?;
        let cb = Checker {
            backward: true,
            ..c
        };
        cb.ops(
            &tp.backward,
            false,
            "backward ",
            &mut info.backward_launches,
            &mut info.host_reads,
        )?;
    }
    for (i, l) in plan.learn.iter().enumerate() {
        l.check(&plan, &format!("learn layer {i}"))?;
    }
    info.host_reads.sort_unstable();
    info.host_reads.dedup();
    Ok(ValidPlan { plan, info })
}

/// Slots, weight and parameter declarations, inputs and outputs.
fn check_decls(plan: &Plan) -> Result<()> {
    for b in &plan.buffers {
        if b.slot >= plan.slots {
            return Err(RuntimeError::plan(format!(
                "buffer `{}` is in slot {}, the plan has {} slots",
                b.name, b.slot, plan.slots
            )));
        }
    }
    let mut names = HashSet::new();
    for w in &plan.weights {
        if !names.insert(w.name.as_str()) {
            return Err(RuntimeError::plan(format!(
                "weight name `{}` appears twice",
                w.name
            )));
        }
        numel(&w.shape)?;
        if let Init::UniformFanIn { fan_in: 0, .. } = w.init {
            return Err(RuntimeError::plan(format!(
                "weight `{}`: UniformFanIn with fan_in = 0",
                w.name
            )));
        }
        if let Init::Frozen(v) = &w.init {
            if v.len() != w.numel() || !v.iter().all(|x| x.is_finite()) {
                return Err(RuntimeError::plan(format!(
                    "weight `{}`: {} frozen values for {} elements (all finite)",
                    w.name,
                    v.len(),
                    w.numel()
                )));
            }
        }
        if let Init::Constant(v) = w.init {
            if !v.is_finite() {
                return Err(RuntimeError::plan(format!(
                    "weight `{}`: initial value {v} is not finite",
                    w.name
                )));
            }
        }
    }
    for p in &plan.params {
        if !names.insert(p.name.as_str()) {
            return Err(RuntimeError::plan(format!(
                "parameter name `{}` appears twice (or is also a weight name)",
                p.name
            )));
        }
        if !p.check.holds(p.value) {
            return Err(RuntimeError::BadParam {
                name: p.name.clone(),
                value: p.value,
                expected: p.check.describe(),
                origin: "the plan".into(),
            });
        }
    }
    let c = Checker {
        plan,
        n_kernels: 0,
        backward: false,
    };
    for inp in &plan.inputs {
        let what = format!("input `{}`", inp.name);
        let b = c.buf(inp.buffer, &what)?;
        c.features(b, numel(&inp.shape)?, &what)?;
        let seq = b.extent == Extent::Seq;
        if seq != inp.time_varying {
            return Err(RuntimeError::plan(format!(
                "{what}: time_varying = {} but buffer `{}` is {}",
                inp.time_varying,
                b.name,
                ext_name(b.extent)
            )));
        }
    }
    for o in &plan.outputs {
        let what = format!("output `{}`", o.name);
        let b = c.buf(o.buffer, &what)?;
        c.features(b, numel(&o.shape)?, &what)?;
        let seq = b.extent == Extent::Seq;
        let want_seq = o.kind != OutputKind::Counts;
        if seq != want_seq {
            return Err(RuntimeError::plan(format!(
                "{what}: a {:?} output needs a {} buffer, `{}` is {}",
                o.kind,
                if want_seq { "Seq" } else { "Static or Single" },
                b.name,
                ext_name(b.extent)
            )));
        }
    }
    Ok(())
}

/// The loss, regulariser and input-gradient buffers of a training plan.
fn check_train(c: &Checker<'_>, tp: &TrainPlan) -> Result<()> {
    let plan = c.plan;
    let check_out = |o: usize, grad: BufId, what: &str| -> Result<()> {
        let out = plan.outputs.get(o).ok_or_else(|| {
            RuntimeError::plan(format!(
                "{what} reads output {o}, the plan has {}",
                plan.outputs.len()
            ))
        })?;
        let g = c.buf(grad, what)?;
        let ob = c.buf(out.buffer, what)?;
        if g.features != ob.features || (g.extent == Extent::Seq) != (ob.extent == Extent::Seq) {
            return Err(RuntimeError::plan(format!(
                "{what}: gradient buffer `{}` does not match output `{}`",
                g.name, out.name
            )));
        }
        Ok(())
    };
    check_out(tp.loss.output, tp.loss.grad, "the loss")?;
    for r in &tp.regularizers {
        check_out(r.output, r.grad, "a regulariser")?;
    }
    for &(i, g) in &tp.input_grads {
        let input = plan.inputs.get(i).ok_or_else(|| {
            RuntimeError::plan(format!(
                "an input gradient names input {i}, the plan has {}",
                plan.inputs.len()
            ))
        })?;
        let (gb, ib) = (
            c.buf(g, "an input gradient")?,
            c.buf(input.buffer, "an input")?,
        );
        if gb.features != ib.features || gb.extent != ib.extent {
            return Err(RuntimeError::plan(format!(
                "input gradient buffer `{}` does not match input `{}`",
                gb.name, input.name
            )));
        }
    }
    Ok(())
}

/// Product, saturating (an impossible size that fails every comparison).
pub(crate) fn sat(dims: &[usize]) -> usize {
    dims.iter().fold(1usize, |a, &d| a.saturating_mul(d))
}

pub(crate) fn ext_name(e: Extent) -> &'static str {
    match e {
        Extent::Seq => "Seq [T, B, F]",
        Extent::Static => "Static [B, F]",
        Extent::Single => "Single [B, F]",
    }
}

/// The validator's view of a plan, and the checks library ops share.
pub struct Checker<'a> {
    pub plan: &'a Plan,
    n_kernels: usize,
    /// Checking the backward ops (gradient accumulation allowed).
    backward: bool,
}

impl Checker<'_> {
    pub fn buf(&self, id: BufId, what: &str) -> Result<&BufferDecl> {
        self.plan.buffers.get(id).ok_or_else(|| {
            RuntimeError::plan(format!(
                "{what} refers to buffer {id}, the plan has {} buffers",
                self.plan.buffers.len()
            ))
        })
    }

    pub fn weight(&self, id: WeightId, what: &str) -> Result<&WeightDecl> {
        self.plan.weights.get(id).ok_or_else(|| {
            RuntimeError::plan(format!(
                "{what} refers to weight {id}, the plan has {} weights",
                self.plan.weights.len()
            ))
        })
    }

    pub fn weight_shape(&self, id: WeightId, expected: &[usize], what: &str) -> Result<()> {
        let w = self.weight(id, what)?;
        if w.shape != expected {
            return Err(RuntimeError::plan(format!(
                "{what}: weight `{}` has shape {}, the op needs {}",
                w.name,
                fmt_shape(&w.shape),
                fmt_shape(expected)
            )));
        }
        Ok(())
    }

    pub fn features(&self, b: &BufferDecl, expected: usize, what: &str) -> Result<()> {
        if b.features != expected {
            return Err(RuntimeError::plan(format!(
                "{what}: buffer `{}` has {} features, the op needs {expected}",
                b.name, b.features
            )));
        }
        Ok(())
    }

    /// Checks an op that writes every step of the sequence `y` from `x` (whose extent must be
    /// `x_extent`) in one call, outside step loops, in another slot; `doing` names the
    /// input's role for the message ("codes a static", "inhibits a sequence").
    pub fn whole_sequence(
        &self,
        x: BufId,
        y: BufId,
        x_extent: Extent,
        in_loop: bool,
        what: &str,
        doing: &str,
    ) -> Result<(&BufferDecl, &BufferDecl)> {
        self.whole_run(x, y, (x_extent, Extent::Seq), in_loop, what, doing)
    }

    /// [`Checker::whole_sequence`] for an output of any extent `extents.1` (k-WTA writes a
    /// static map from all steps of a sequence).
    pub fn whole_run(
        &self,
        x: BufId,
        y: BufId,
        (x_extent, y_extent): (Extent, Extent),
        in_loop: bool,
        what: &str,
        doing: &str,
    ) -> Result<(&BufferDecl, &BufferDecl)> {
        let xd = self.buf(x, what)?;
        let yd = self.buf(y, what)?;
        if in_loop || xd.extent != x_extent || yd.extent != y_extent {
            let into = match y_extent {
                Extent::Seq => "a sequence",
                _ => "a static",
            };
            return Err(RuntimeError::plan(format!(
                "{what}: {doing} `{}` ({}) into {into} `{}` ({}) outside step loops",
                xd.name,
                ext_name(xd.extent),
                yd.name,
                ext_name(yd.extent)
            )));
        }
        if xd.slot == yd.slot {
            return Err(RuntimeError::plan(format!(
                "{what}: input `{}` and output `{}` share slot {}",
                xd.name, yd.name, xd.slot
            )));
        }
        Ok((xd, yd))
    }

    /// Checks a library op's source/destination pair and time selection.
    pub fn io_pair(
        &self,
        x: BufId,
        y: BufId,
        time: TimeSel,
        in_loop: bool,
        what: &str,
    ) -> Result<(&BufferDecl, &BufferDecl)> {
        let xd = self.buf(x, what)?;
        let yd = self.buf(y, what)?;
        if x == y || xd.slot == yd.slot {
            return Err(RuntimeError::plan(format!(
                "{what}: input `{}` and output `{}` share slot {}",
                xd.name, yd.name, xd.slot
            )));
        }
        match (time, in_loop) {
            (TimeSel::All { delay }, false) => {
                let xseq = xd.extent == Extent::Seq;
                let yseq = yd.extent == Extent::Seq;
                if xseq && !yseq {
                    return Err(RuntimeError::plan(format!(
                        "{what}: TimeSel::All reads sequence `{}` ({}) into `{}` ({})",
                        xd.name,
                        ext_name(xd.extent),
                        yd.name,
                        ext_name(yd.extent)
                    )));
                }
                if !yseq && delay != 0 {
                    return Err(RuntimeError::plan(format!(
                        "{what}: delay {delay} into non-sequence buffer `{}`",
                        yd.name
                    )));
                }
            }
            (TimeSel::Step { .. }, true) => {}
            (TimeSel::All { .. }, true) => {
                return Err(RuntimeError::plan(format!(
                    "{what}: TimeSel::All inside a step loop"
                )))
            }
            (TimeSel::Step { .. }, false) => {
                return Err(RuntimeError::plan(format!(
                    "{what}: TimeSel::Step outside a step loop"
                )))
            }
        }
        Ok((xd, yd))
    }

    /// Checks `ops`, appending each launch's resolved groups to `launches` in pre-order and
    /// the weights read on the host to `host_reads`.
    fn ops(
        &self,
        ops: &[Op],
        in_loop: bool,
        path: &str,
        launches: &mut Vec<Vec<GroupDesc>>,
        host_reads: &mut Vec<WeightId>,
    ) -> Result<()> {
        for (i, op) in ops.iter().enumerate() {
            let what = format!("op {path}{i}");
            match op {
                Op::Zero { buf } => {
                    self.buf(*buf, &what)?;
                }
                Op::Launch {
                    kernel,
                    groups,
                    time,
                } => {
                    let what = format!("{what} (launch)");
                    launches.push(self.launch(*kernel, groups, *time, in_loop, &what)?);
                }
                Op::StepLoop { body } | Op::ReverseStepLoop { body } => {
                    if in_loop {
                        return Err(RuntimeError::plan(format!(
                            "{what}: step loops cannot nest"
                        )));
                    }
                    self.ops(body, true, &format!("{path}{i}."), launches, host_reads)?;
                }
                _ => {
                    let lib = op
                        .library()
                        .expect("every op is a control op or a library op");
                    lib.check(self, in_loop, &format!("{what} ({})", lib.name()))?;
                    host_reads.extend(lib.host_reads());
                }
            }
        }
        Ok(())
    }

    /// A launch's kernel, time and groups; returns the groups resolved to slots.
    fn launch(
        &self,
        kernel: KernelId,
        groups: &[LaunchGroup],
        time: LaunchTime,
        in_loop: bool,
        what: &str,
    ) -> Result<Vec<GroupDesc>> {
        let decl = self.plan.kernels.get(kernel).ok_or_else(|| {
            RuntimeError::plan(format!(
                "{what}: kernel {kernel} does not exist (the plan has {} kernels)",
                self.plan.kernels.len()
            ))
        })?;
        if kernel >= self.n_kernels {
            return Err(RuntimeError::plan(format!(
                "{what}: kernel {kernel} is not in the kernel table ({} kernels)",
                self.n_kernels
            )));
        }
        match (time, in_loop) {
            (LaunchTime::Seq, false) | (LaunchTime::Step, true) => {}
            (LaunchTime::Seq, true) => {
                return Err(RuntimeError::plan(format!(
                    "{what}: LaunchTime::Seq inside a step loop"
                )))
            }
            (LaunchTime::Step, false) => {
                return Err(RuntimeError::plan(format!(
                    "{what}: LaunchTime::Step outside a step loop"
                )))
            }
        }
        let mut descs = Vec::with_capacity(groups.len());
        for (gi, g) in groups.iter().enumerate() {
            let what = &format!("{what} group {gi} of `{}`", decl.symbol);
            if g.args.len() != decl.arity {
                return Err(RuntimeError::plan(format!(
                    "{what}: {} buffer arguments, the kernel takes {}",
                    g.args.len(),
                    decl.arity
                )));
            }
            if g.params > self.plan.params.len() {
                return Err(RuntimeError::plan(format!(
                    "{what}: parameter offset {} is beyond the {} parameters",
                    g.params,
                    self.plan.params.len()
                )));
            }
            let mut slots = Vec::with_capacity(g.args.len());
            for &a in &g.args {
                let bd = self.buf(a, what)?;
                self.features(bd, g.features, what)?;
                if slots.contains(&bd.slot) {
                    return Err(RuntimeError::plan(format!(
                        "{what}: two arguments share slot {} (buffer `{}`)",
                        bd.slot, bd.name
                    )));
                }
                slots.push(bd.slot);
            }
            if g.weights.len() != decl.weights.len() {
                return Err(RuntimeError::plan(format!(
                    "{what}: {} weight arguments, the kernel takes {}",
                    g.weights.len(),
                    decl.weights.len()
                )));
            }
            let mut weights = Vec::with_capacity(g.weights.len());
            for (&id, u) in g.weights.iter().zip(&decl.weights) {
                let wd = self.weight(id, what)?;
                let len = if u.per_neuron { g.features } else { 1 };
                if wd.numel() != len {
                    return Err(RuntimeError::plan(format!(
                        "{what}: weight `{}` has {} elements, the kernel reads {len} ({})",
                        wd.name,
                        wd.numel(),
                        if u.per_neuron {
                            "one per neuron"
                        } else {
                            "one"
                        }
                    )));
                }
                if u.grad && !self.backward {
                    return Err(RuntimeError::plan(format!(
                        "{what}: accumulates the gradient of `{}` outside the backward ops",
                        wd.name
                    )));
                }
                weights.push(WeightArg {
                    id,
                    grad: u.grad,
                    len,
                });
            }
            descs.push(GroupDesc {
                slots,
                params: g.params,
                features: g.features,
                weights,
            });
        }
        Ok(descs)
    }
}
