//! Lowering of the backward pass (training plans): one reverse-time kernel per
//! differentiated population, transposed GEMMs for dense projections, the input and
//! weight gradients of convolutions and the routing of pooling, and the plan's
//! [`TrainPlan`].
//!
//! Backward ops run in reverse stage order. Gradient buffers are written once by their
//! first producer (a kernel store or a GEMM without `accumulate`) and accumulated into by
//! later ones, so no buffer needs zeroing except behind delayed projections.

use std::collections::BTreeSet;

use super::{ext, kernel_decl, mangle, Bind, Lowerer, Role, KB};
use crate::diag::{DResult, Diagnostic, ErrorKind};
use crate::ir::adjoint::{AdjLeaf, GExpr, StepAdjoint, ValKind};
use crate::ir::eqn::{BinOp, ParamKind};
use crate::ir::kernel::*;
use crate::ir::names;
use crate::ir::net::*;
use snn_runtime::plan::{
    BufId, Conv2dDw, Conv2dDx, Extent as PExtent, GemmDw, GemmDx, LaunchGroup, LaunchTime,
    LossDecl, Op, Pool2dDx, RegDecl, TimeMatrix, TimeMixDw, TimeMixDx, TimeSel, TrainPlan,
};

impl Lowerer<'_> {
    pub(super) fn backward(&mut self) -> DResult<()> {
        let m = self.m;
        let Some(bw) = &m.backward else {
            return Ok(());
        };
        let cfg = m.train.as_ref().expect("autodiff checked the train block");
        let mem = self.mem;
        // Which gradient buffers hold data already.
        let mut written: BTreeSet<usize> = BTreeSet::new();
        let mut ops = Vec::new();
        let sched = m.schedule.as_ref().expect("schedule pass has run");
        let stage_of = sched.stage_of();
        let mut i = 0;
        while i < bw.order.len() {
            let h = bw.order[i];
            // A recurrent stage: its nodes (consecutive in the order) in one reverse loop.
            if self.cyclic(h) {
                let j = i + bw.order[i..]
                    .iter()
                    .take_while(|n| stage_of.get(n) == stage_of.get(&h))
                    .count();
                self.cycle_backward(&bw.order[i..j], &mut written, &mut ops)?;
                i = j;
                continue;
            }
            i += 1;
            match &m.nodes[h].kind {
                NodeKind::Population { inputs, .. } if bw.pops.contains_key(&h) => {
                    // (Nothing to recompute when the backward reads no saved state.)
                    if cfg.recompute && bw.pops[&h].saves().contains(&true) {
                        ops.push(self.recompute(h, inputs));
                    }
                    ops.push(self.population_backward_op(h, &mut written, false)?);
                    ops.extend(self.time_backward(h, inputs));
                }
                NodeKind::Dense {
                    src, out: n, delay, ..
                } => {
                    let dy = mem.grads[&h];
                    if !written.contains(&dy) {
                        // Nothing downstream produced a gradient: it is zero.
                        continue;
                    }
                    let (w, bias) = self.weight_of[&h];
                    let k = m.shape(*src).features();
                    let time = TimeSel::All { delay: *delay };
                    ops.push(Op::GemmDw(GemmDw {
                        x: mem.node_out[src],
                        dy,
                        w,
                        bias,
                        k,
                        n: *n,
                        time,
                        sparse: super::sparse_projection(m, h),
                    }));
                    if let Some(&dx) = mem.grads.get(src) {
                        let mut accumulate = written.contains(&dx);
                        if *delay > 0 && !accumulate {
                            // Rows the delay never reaches stay zero.
                            ops.push(Op::Zero { buf: dx });
                            accumulate = true;
                        }
                        ops.push(Op::GemmDx(GemmDx {
                            dy,
                            w,
                            dx,
                            k,
                            n: *n,
                            time,
                            accumulate,
                        }));
                        written.insert(dx);
                    }
                }
                NodeKind::Conv2d { src, delay, .. } => {
                    let dy = mem.grads[&h];
                    if !written.contains(&dy) {
                        continue;
                    }
                    let (w, bias) = self.weight_of[&h];
                    let geom = self.conv_geom(h);
                    let time = TimeSel::All { delay: *delay };
                    ops.push(Op::Conv2dDw(Conv2dDw {
                        x: mem.node_out[src],
                        dy,
                        w,
                        bias,
                        geom,
                        time,
                        sparse: super::sparse_projection(m, h),
                    }));
                    if let Some(&dx) = mem.grads.get(src) {
                        let mut accumulate = written.contains(&dx);
                        if *delay > 0 && !accumulate {
                            ops.push(Op::Zero { buf: dx });
                            accumulate = true;
                        }
                        ops.push(Op::Conv2dDx(Conv2dDx {
                            dy,
                            w,
                            dx,
                            geom,
                            time,
                            accumulate,
                        }));
                        written.insert(dx);
                    }
                }
                NodeKind::Pool2d { src, .. } => {
                    let dy = mem.grads[&h];
                    let Some(&dx) = mem.grads.get(src) else {
                        continue;
                    };
                    if !written.contains(&dy) {
                        continue;
                    }
                    let (kind, geom) = self.pool_geom(h);
                    ops.push(Op::Pool2dDx(Pool2dDx {
                        x: mem.node_out[src],
                        dy,
                        dx,
                        kind,
                        geom,
                        time: TimeSel::All { delay: 0 },
                        accumulate: written.contains(&dx),
                    }));
                    written.insert(dx);
                }
                _ => {}
            }
        }
        // Input gradients nothing wrote (an input only some ops read) are zero.
        let input_grads: Vec<(usize, usize)> = bw
            .inputs
            .iter()
            .map(|h| {
                let i = m.inputs.iter().position(|x| x == h).expect("a model input");
                (i, mem.grads[h])
            })
            .collect();
        for &(_, g) in &input_grads {
            if !written.contains(&g) {
                ops.insert(0, Op::Zero { buf: g });
            }
        }
        let output_index = |oi: usize| oi; // plan outputs follow the module's order
        self.plan.train = Some(TrainPlan {
            backward: ops,
            input_grads,
            loss: LossDecl {
                kind: cfg.loss.kind,
                output: output_index(bw.loss_output),
                grad: mem.loss_grads[0],
            },
            regularizers: cfg
                .regularizers
                .iter()
                .zip(&bw.reg_outputs)
                .enumerate()
                .map(|(i, (r, &oi))| RegDecl {
                    output: output_index(oi),
                    grad: mem.loss_grads[1 + i],
                    lambda: r.lambda,
                    target: r.target,
                })
                .collect(),
            settings: cfg.settings.clone(),
        });
        Ok(())
    }

    /// The backward of a recurrent (step-by-step) stage, `ns` its nodes from last to first:
    /// backpropagation through time as one reverse step loop. At step `t` (from `T - 1`
    /// down to 0) each population's backward step kernel reads the gradient of its value at
    /// `t` (complete by then: later layers wrote every row before the loop, the cycle's
    /// projections at steps `> t` added theirs), carries its state adjoints to step `t - 1`
    /// in `P.adj.<state>` and stores the gradient of its current; each projection of the
    /// cycle sends `dy[t] @ W` to row `t - delay` of its source's gradient. The weight
    /// gradients need every row of `dy` and the saved source rows, so they are one
    /// `GemmDw` over all T after the loop (one large GEMM instead of T small ones).
    fn cycle_backward(
        &mut self,
        ns: &[NodeId],
        written: &mut BTreeSet<usize>,
        ops: &mut Vec<Op>,
    ) -> DResult<()> {
        let m = self.m;
        let mem = self.mem;
        // The cycle's projections accumulate into their sources' gradients, which must hold
        // data (zeros, when no later layer wrote them) before the loop.
        for &h in ns {
            if let NodeKind::Dense { src, .. } = &m.nodes[h].kind {
                if let Some(&dx) = mem.grads.get(src) {
                    if written.insert(dx) {
                        ops.push(Op::Zero { buf: dx });
                    }
                }
            }
        }
        let mut body = Vec::new();
        let mut after = Vec::new();
        for &h in ns {
            match &m.nodes[h].kind {
                NodeKind::Population { .. }
                    if m.backward.as_ref().expect("training").pops.contains_key(&h) =>
                {
                    body.push(self.population_backward_op(h, written, true)?);
                }
                NodeKind::Dense {
                    src, out: n, delay, ..
                } => {
                    let dy = mem.grads[&h];
                    if !written.contains(&dy) {
                        continue;
                    }
                    let (w, bias) = self.weight_of[&h];
                    let k = m.shape(*src).features();
                    if let Some(&dx) = mem.grads.get(src) {
                        body.push(Op::GemmDx(GemmDx {
                            dy,
                            w,
                            dx,
                            k,
                            n: *n,
                            time: TimeSel::Step { delay: *delay },
                            accumulate: true,
                        }));
                    }
                    after.push(Op::GemmDw(GemmDw {
                        x: mem.node_out[src],
                        dy,
                        w,
                        bias,
                        k,
                        n: *n,
                        time: TimeSel::All { delay: *delay },
                        sparse: super::sparse_projection(m, h),
                    }));
                }
                _ => {}
            }
        }
        ops.push(Op::ReverseStepLoop { body });
        ops.extend(after);
        Ok(())
    }

    /// The launch of population `h`'s backward kernel (a reverse `Seq` kernel, or one
    /// reverse step inside a recurrent stage's loop); marks its inputs' gradients written.
    fn population_backward_op(
        &mut self,
        h: NodeId,
        written: &mut BTreeSet<usize>,
        stepwise: bool,
    ) -> DResult<Op> {
        let m = self.m;
        let mem = self.mem;
        let bw = m.backward.as_ref().expect("training");
        let NodeKind::Population { inputs, .. } = &m.nodes[h].kind else {
            unreachable!("differentiated nodes are populations")
        };
        let step = &bw.pops[&h];
        let (mut k, bind) = self.population_backward(h, inputs, step, written, stepwise)?;
        for i in inputs {
            if let Some(&g) = mem.grads.get(i) {
                if !written.insert(g) {
                    return Err(Diagnostic::new(
                        ErrorKind::BadArgument,
                        format!(
                            "training: `{}` feeds several populations, which the \
                             backward pass does not support yet",
                            m.nodes[*i].name
                        ),
                    )
                    .at(m.nodes[*i].span, "used more than once")
                    .hint("give each population its own projection"));
                }
            }
        }
        let id = self.kernels.len();
        k.symbol = names::kernel_symbol(id, &m.nodes[h].name, "_backward");
        self.plan.kernels.push(kernel_decl(&k));
        self.kernels.push(k);
        Ok(Op::Launch {
            kernel: id,
            groups: vec![LaunchGroup {
                args: bind.bufs,
                weights: bind.weights,
                params: self.param_base[&h],
                features: m.shape(h).features(),
            }],
            time: if stepwise {
                LaunchTime::Step
            } else {
                LaunchTime::Seq
            },
        })
    }

    /// The reverse-time kernel of population `h` and the buffers its launch binds.
    /// `checkpoint = recompute`: the forward step of `h` again, storing only the states
    /// its backward kernel reads (the launch that precedes it).
    fn recompute(&mut self, h: NodeId, inputs: &[NodeId]) -> Op {
        let NodeKind::Population { eqs: Some(eqs), .. } = &self.m.nodes[h].kind else {
            unreachable!("differentiated nodes are populations")
        };
        let (mut k, bufs) = self.population(h, inputs, eqs, Role::Recompute, false);
        let id = self.kernels.len();
        k.symbol = mangle(id, &self.m.nodes[h], Role::Recompute);
        self.plan.kernels.push(kernel_decl(&k));
        self.kernels.push(k);
        Op::Launch {
            kernel: id,
            groups: vec![LaunchGroup {
                args: bufs.bufs,
                weights: bufs.weights,
                params: self.param_base[&h],
                features: self.m.shape(h).features(),
            }],
            time: LaunchTime::Seq,
        }
    }

    /// After a population's backward kernel: the transposed time products. On the
    /// parallel schedule each state's `lin` gradient goes through the transposed Toeplitz
    /// of its impulse response into the current's gradient (the inputs', or the mixed
    /// current's); a `mix` then sends the mixed current's gradient to each input
    /// (`A^T dY`) and to its weight and bias.
    fn time_backward(&self, h: NodeId, inputs: &[NodeId]) -> Vec<Op> {
        let mem = self.mem;
        let n_states = self.m.eqs(h).map_or(0, |e| e.states.len());
        let mixed = mem.grad_mixed.get(&h).copied();
        let targets: Vec<BufId> = match mixed {
            Some(g) => vec![g],
            None => inputs
                .iter()
                .filter_map(|i| mem.grads.get(i).copied())
                .collect(),
        };
        let mut ops = Vec::new();
        for i in 0..n_states {
            let Some(&gl) = mem.grad_lin.get(&(h, i)) else {
                continue;
            };
            let r = mem.resp[&(h, i)].0;
            for &dx in &targets {
                ops.push(Op::TimeMixDx(TimeMixDx {
                    dy: gl,
                    dx,
                    matrix: TimeMatrix::Response { r },
                    accumulate: true,
                }));
            }
        }
        if let (Some(gm), Some((matrix, bias))) = (mixed, self.mix_matrix(h)) {
            for (n, src) in inputs.iter().enumerate() {
                if let Some(&dx) = mem.grads.get(src) {
                    ops.push(Op::TimeMixDx(TimeMixDx {
                        dy: gm,
                        dx,
                        matrix,
                        accumulate: false,
                    }));
                }
                ops.push(Op::TimeMixDw(TimeMixDw {
                    x: mem.node_out[src],
                    dy: gm,
                    matrix,
                    bias: (n == 0).then_some(bias),
                }));
            }
        }
        ops
    }

    fn population_backward(
        &self,
        h: NodeId,
        inputs: &[NodeId],
        step: &StepAdjoint,
        written: &BTreeSet<usize>,
        stepwise: bool,
    ) -> DResult<(Kernel, Bind)> {
        let m = self.m;
        let mem = self.mem;
        let eqs = m.eqs(h).expect("population");
        let bw = m.backward.as_ref().expect("training");
        let mut kb = KB::new(
            format!(
                "backward of {} population `{}` ({})",
                eqs.model,
                m.nodes[h].name,
                if stepwise {
                    "one step of the reverse step loop"
                } else {
                    "reverse time"
                }
            ),
            if stepwise {
                LaunchTime::Step
            } else {
                LaunchTime::Seq
            },
        );
        kb.k.reverse = true;
        let params = self.param_exprs(h, eqs, &mut kb);

        // Reads: the inputs (to recompute the current), the saved states, the gradients of
        // this population's value and of the loss/regularisers that read it. With
        // `save_post` the saved values are the states after their update and the step
        // needs neither the current nor the start state: only the values it uses are
        // computed (`post_update_closure`).
        let post: Option<Vec<usize>> = if step.save_post {
            Some(
                step.post_update_closure()
                    .expect("save_post is set only when the closure exists"),
            )
        } else {
            None
        };
        let in_args: Vec<usize> = match mem.mixed.get(&h) {
            _ if post.is_some() => vec![],
            Some(&b) => vec![kb.arg("mixed", b, PExtent::Seq, false)],
            None => inputs
                .iter()
                .enumerate()
                .map(|(i, &src)| {
                    kb.arg(
                        &format!("in{i}"),
                        mem.node_out[&src],
                        ext(m.shape(src).extent),
                        false,
                    )
                })
                .collect(),
        };
        // The parallel schedule: each state's values from the time products.
        let lin_args: Vec<Option<usize>> = (0..eqs.states.len())
            .map(|i| {
                mem.lin.get(&(h, i)).map(|&b| {
                    kb.arg(
                        &format!("lin_{}", eqs.states[i].name),
                        b,
                        PExtent::Seq,
                        false,
                    )
                })
            })
            .collect();
        // The saved states the step reads (`StepAdjoint::saves`: memory made no buffer
        // for the others).
        let save_args: Vec<Option<usize>> = eqs
            .states
            .iter()
            .enumerate()
            .map(|(i, s)| {
                mem.saves
                    .get(&(h, i))
                    .map(|&b| kb.arg(&format!("save_{}", s.name), b, PExtent::Seq, false))
            })
            .collect();
        let saved = |i: usize| save_args[i].expect("the backward reads only saved states");
        // Incoming gradient terms of S and of each state's value after the step.
        let mut g_spike: Vec<KExpr> = Vec::new();
        let mut g_state: Vec<Vec<KExpr>> = vec![Vec::new(); eqs.states.len()];
        if let Some(&g) = mem.grads.get(&h).filter(|g| written.contains(g)) {
            let a = kb.arg("grad_out", g, PExtent::Seq, false);
            if eqs.spikes() {
                g_spike.push(KExpr::load(a));
            } else {
                g_state[0].push(KExpr::load(a));
            }
        }
        let loss_like = std::iter::once((bw.loss_output, mem.loss_grads[0])).chain(
            bw.reg_outputs
                .iter()
                .zip(&mem.loss_grads[1..])
                .map(|(&o, &g)| (o, g)),
        );
        for (n, (oi, g)) in loss_like.enumerate() {
            let o = &m.outputs[oi];
            if o.node != h {
                continue;
            }
            match o.kind {
                OutputKind::Counts => {
                    let a = kb.arg(&format!("grad_counts{n}"), g, PExtent::Static, false);
                    g_spike.push(KExpr::load(a));
                }
                OutputKind::Spikes => {
                    let a = kb.arg(&format!("grad_spikes{n}"), g, PExtent::Seq, false);
                    g_spike.push(KExpr::load(a));
                }
                OutputKind::Trace => {
                    let s = o.state.as_ref().and_then(|s| s.1).expect("resolved state");
                    let a = kb.arg(
                        &format!("grad_{}{n}", eqs.states[s].name),
                        g,
                        PExtent::Seq,
                        false,
                    );
                    g_state[s].push(KExpr::load(a));
                }
            }
        }
        // Writes: the gradient of the current into each input that needs one.
        // (A `mix`: into the mixed current's gradient, which the time products carry on.)
        let out_args: Vec<(usize, PExtent)> = if let Some(&g) = mem.grad_mixed.get(&h) {
            vec![(kb.arg("grad_mixed", g, PExtent::Seq, true), PExtent::Seq)]
        } else {
            inputs
                .iter()
                .filter_map(|src| {
                    mem.grads.get(src).map(|&g| {
                        let e = ext(m.shape(*src).extent);
                        (
                            kb.arg(
                                &format!("grad_{}", names::part(&m.nodes[*src].name)),
                                g,
                                e,
                                true,
                            ),
                            e,
                        )
                    })
                })
                .collect()
        };
        let grad_lin_args: Vec<(usize, Option<usize>)> = (0..eqs.states.len())
            .filter_map(|i| {
                let g = mem.grad_lin.get(&(h, i))?;
                let a = kb.arg(
                    &format!("grad_lin_{}", eqs.states[i].name),
                    *g,
                    PExtent::Seq,
                    true,
                );
                Some((a, step.grad_lin.get(i).copied().flatten()))
            })
            .collect();

        // Step-wise: each state's adjoint lives in a `[B, N]` buffer between the steps.
        let adj_args: Vec<Option<usize>> = eqs
            .states
            .iter()
            .enumerate()
            .map(|(i, s)| {
                stepwise.then(|| {
                    kb.arg(
                        &format!("adj_{}", s.name),
                        mem.adjs[&(h, i)],
                        PExtent::Single,
                        true,
                    )
                })
            })
            .collect();

        // Carried: the adjoint of each state after the step (zero after the last step), then
        // static accumulators.
        for (i, s) in eqs.states.iter().enumerate() {
            kb.k.carried.push(Carried {
                name: format!("g_{}", s.name),
                init: KExpr::Const(0.0),
                buf: adj_args[i],
                init_at_t0: stepwise,
                store: stepwise,
                grad: None,
            });
        }
        // One register per learned parameter sums its gradient over the T steps; after the
        // loop it is added into the parameter's gradient (atomically: neurons and batch
        // elements share it). A step kernel adds each step's term after the step.
        let learned = self.learned.get(&h);
        let param_accs: Vec<(KVar, usize)> = step
            .grad_params
            .iter()
            .filter_map(|&(i, g)| {
                let g = g?;
                let ParamKind::Learned { per_neuron } = eqs.params[i].kind else {
                    unreachable!("only learned parameters have gradients")
                };
                let name = &eqs.params[i].name;
                let w = learned.expect("learned parameters have weights")[&i];
                let gw = kb.weight(&format!("grad_{name}"), w, per_neuron, true);
                kb.k.carried.push(Carried {
                    name: format!("acc_{name}"),
                    init: KExpr::Const(0.0),
                    buf: None,
                    init_at_t0: false,
                    store: false,
                    grad: Some(gw),
                });
                Some((KVar::Carried(kb.k.carried.len() - 1), g))
            })
            .collect();
        let mut acc_of: Vec<Option<KVar>> = Vec::new();
        for &(a, e) in &out_args {
            acc_of.push((e == PExtent::Static).then(|| {
                kb.k.carried.push(Carried {
                    name: format!("acc_{}", kb.k.args[a].name),
                    init: KExpr::Const(0.0),
                    buf: Some(a),
                    // A step kernel reads back the sum of the later steps.
                    init_at_t0: stepwise,
                    store: true,
                    grad: None,
                });
                KVar::Carried(kb.k.carried.len() - 1)
            }));
        }

        // Locals: the current, every forward value, every backward temporary.
        let cur = kb.local("I");
        let vals: Vec<KVar> = step.vals.iter().map(|v| kb.local(&v.name)).collect();
        let adjs: Vec<KVar> = step.adj_names.iter().map(|n| kb.local(n)).collect();
        let cv = |e: &GExpr| gconv(e, &params, cur, &vals, &adjs);

        let mut sum: Option<KExpr> = None;
        for &a in &in_args {
            sum = Some(match sum {
                None => KExpr::load(a),
                Some(s) => KExpr::bin(BinOp::Add, s, KExpr::load(a)),
            });
        }
        // Only the values the adjoint statements use are computed.
        match &post {
            Some(need) => {
                for &j in need {
                    match step.post_update.iter().position(|&p| p == j) {
                        Some(i) => kb.set(vals[j], KExpr::load(saved(i))),
                        None => kb.set(
                            vals[j],
                            cv(step.vals[j].def.as_ref().expect("a defined value")),
                        ),
                    }
                }
            }
            None => {
                kb.set(cur, sum.expect("a population has an input"));
                for j in step.needed_vals() {
                    match (&step.vals[j].kind, &step.vals[j].def) {
                        (ValKind::StateIn(i), _) => kb.set(vals[j], KExpr::load(saved(*i))),
                        (ValKind::Lin(i), _) => kb.set(
                            vals[j],
                            KExpr::load(
                                lin_args[*i].expect("the parallel schedule has `lin` values"),
                            ),
                        ),
                        (_, Some(d)) => kb.set(vals[j], cv(d)),
                        (_, None) => unreachable!("only state inputs lack a definition"),
                    }
                }
            }
        }
        // Incoming adjoints.
        let add_all = |first: KExpr, rest: Vec<KExpr>| {
            rest.into_iter()
                .fold(first, |acc, e| KExpr::bin(BinOp::Add, acc, e))
        };
        for (i, terms) in g_state.into_iter().enumerate() {
            kb.set(adjs[i], add_all(KExpr::var(KVar::Carried(i)), terms));
        }
        if let Some(si) = step.incoming_spike() {
            let e = match g_spike.len() {
                0 => KExpr::Const(0.0),
                _ => {
                    let mut it = g_spike.into_iter();
                    let first = it.next().expect("a term");
                    add_all(first, it.collect())
                }
            };
            kb.set(adjs[si], e);
        }
        for (a, e) in &step.stmts {
            kb.set(adjs[*a], cv(e));
        }
        let g_cur = step
            .grad_current
            .map(|a| KExpr::var(adjs[a]))
            .unwrap_or(KExpr::Const(0.0));
        for (n, &(a, _)) in out_args.iter().enumerate() {
            match acc_of[n] {
                Some(acc) => kb.set(acc, KExpr::bin(BinOp::Add, KExpr::var(acc), g_cur.clone())),
                None => kb.store(a, g_cur.clone()),
            }
        }
        for &(acc, g) in &param_accs {
            kb.set(
                acc,
                KExpr::bin(BinOp::Add, KExpr::var(acc), KExpr::var(adjs[g])),
            );
        }
        for &(a, g) in &grad_lin_args {
            kb.store(a, g.map_or(KExpr::Const(0.0), |g| KExpr::var(adjs[g])));
        }
        for (i, g) in step.grad_state_in.iter().enumerate() {
            let e = g.map(|a| KExpr::var(adjs[a])).unwrap_or(KExpr::Const(0.0));
            kb.set(KVar::Carried(i), e);
        }
        Ok(kb.finish())
    }
}

fn gconv(e: &GExpr, params: &[KExpr], cur: KVar, vals: &[KVar], adjs: &[KVar]) -> KExpr {
    e.map_leaves(&mut |l| match l {
        AdjLeaf::Param(i) => params[*i].clone(),
        AdjLeaf::Current => KExpr::var(cur),
        AdjLeaf::Val(j) => KExpr::var(vals[*j]),
        AdjLeaf::Adj(k) => KExpr::var(adjs[*k]),
    })
}
