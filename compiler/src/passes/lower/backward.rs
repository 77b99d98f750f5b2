//! Lowering of the backward pass (training plans): one reverse-time kernel per
//! differentiated population, transposed GEMMs for projections, and the plan's
//! [`TrainPlan`].
//!
//! Backward ops run in reverse stage order. Gradient buffers are written once by their
//! first producer (a kernel store or a GEMM without `accumulate`) and accumulated into by
//! later ones, so no buffer needs zeroing except behind delayed projections.

use std::collections::BTreeSet;

use super::{ext, kernel_decl, mangle, symbol_part, Bind, Lowerer, Role, KB};
use crate::diag::{DResult, Diagnostic, ErrorKind};
use crate::ir::adjoint::{GExpr, StepAdjoint, ValKind};
use crate::ir::eqn::ParamKind;
use crate::ir::eqn::{BinOp, Func};
use crate::ir::kernel::*;
use crate::ir::net::*;
use snn_runtime::plan::{
    Extent as PExtent, LaunchGroup, LaunchTime, LossDecl, Op, RegDecl, TimeSel, TrainPlan,
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
        for &h in &bw.order {
            match &m.nodes[h].kind {
                NodeKind::Population { inputs, .. } => {
                    let Some(step) = bw.pops.get(&h) else {
                        continue;
                    };
                    let (mut k, bind) = self.population_backward(h, inputs, step, &written)?;
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
                    if cfg.recompute {
                        ops.push(self.recompute(h, inputs));
                    }
                    let id = self.kernels.len();
                    k.symbol = format!("snn_k{id}_{}_backward", symbol_part(&m.nodes[h].name));
                    self.plan.kernels.push(kernel_decl(&k));
                    self.kernels.push(k);
                    ops.push(Op::Launch {
                        kernel: id,
                        groups: vec![LaunchGroup {
                            args: bind.bufs,
                            weights: bind.weights,
                            params: self.param_base[&h],
                            features: m.shape(h).features(),
                        }],
                        time: LaunchTime::Seq,
                    });
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
                    ops.push(Op::GemmDw {
                        x: mem.node_out[src],
                        dy,
                        w,
                        bias,
                        k,
                        n: *n,
                        time,
                        sparse: super::sparse_projection(m, h),
                    });
                    if let Some(&dx) = mem.grads.get(src) {
                        let mut accumulate = written.contains(&dx);
                        if *delay > 0 && !accumulate {
                            // Rows the delay never reaches stay zero.
                            ops.push(Op::Zero { buf: dx });
                            accumulate = true;
                        }
                        ops.push(Op::GemmDx {
                            dy,
                            w,
                            dx,
                            k,
                            n: *n,
                            time,
                            accumulate,
                        });
                        written.insert(dx);
                    }
                }
                _ => {}
            }
        }
        let output_index = |oi: usize| oi; // plan outputs follow the module's order
        self.plan.train = Some(TrainPlan {
            backward: ops,
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

    fn population_backward(
        &self,
        h: NodeId,
        inputs: &[NodeId],
        step: &StepAdjoint,
        written: &BTreeSet<usize>,
    ) -> DResult<(Kernel, Bind)> {
        let m = self.m;
        let mem = self.mem;
        let eqs = m.eqs(h).expect("population");
        let bw = m.backward.as_ref().expect("training");
        let mut kb = KB::new(
            format!(
                "backward of {} population `{}` (reverse time)",
                eqs.model, m.nodes[h].name
            ),
            LaunchTime::Seq,
        );
        kb.k.reverse = true;
        let params = self.param_exprs(h, eqs, &mut kb);

        // Reads: the inputs (to recompute the current), the saved states, the gradients of
        // this population's value and of the loss/regularisers that read it.
        let in_args: Vec<usize> = inputs
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
            .collect();
        let save_args: Vec<usize> = eqs
            .states
            .iter()
            .enumerate()
            .map(|(i, s)| {
                kb.arg(
                    &format!("save_{}", s.name),
                    mem.saves[&(h, i)],
                    PExtent::Seq,
                    false,
                )
            })
            .collect();
        // Incoming gradient terms of S and of each state's value after the step.
        let mut g_spike: Vec<KExpr> = Vec::new();
        let mut g_state: Vec<Vec<KExpr>> = vec![Vec::new(); eqs.states.len()];
        if let Some(&g) = mem.grads.get(&h).filter(|g| written.contains(g)) {
            let a = kb.arg("grad_out", g, PExtent::Seq, false);
            if eqs.spikes() {
                g_spike.push(KExpr::Load(a));
            } else {
                g_state[0].push(KExpr::Load(a));
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
                    g_spike.push(KExpr::Load(a));
                }
                OutputKind::Spikes => {
                    let a = kb.arg(&format!("grad_spikes{n}"), g, PExtent::Seq, false);
                    g_spike.push(KExpr::Load(a));
                }
                OutputKind::Trace => {
                    let s = o.state.as_ref().and_then(|s| s.1).expect("resolved state");
                    let a = kb.arg(
                        &format!("grad_{}{n}", eqs.states[s].name),
                        g,
                        PExtent::Seq,
                        false,
                    );
                    g_state[s].push(KExpr::Load(a));
                }
            }
        }
        // Writes: the gradient of the current into each input that needs one.
        let out_args: Vec<(usize, PExtent)> = inputs
            .iter()
            .filter_map(|src| {
                mem.grads.get(src).map(|&g| {
                    let e = ext(m.shape(*src).extent);
                    (
                        kb.arg(
                            &format!("grad_{}", symbol_part(&m.nodes[*src].name)),
                            g,
                            e,
                            true,
                        ),
                        e,
                    )
                })
            })
            .collect();

        // Carried: the adjoint of each state after the step, then static accumulators.
        for s in &eqs.states {
            kb.k.carried.push(Carried {
                name: format!("g_{}", s.name),
                init: KExpr::Const(0.0),
                buf: None,
                init_at_t0: false,
                store: false,
                grad: None,
            });
        }
        // One register per learned parameter sums its gradient over the T steps; after the
        // loop it is added into the parameter's gradient (atomically: neurons and batch
        // elements share it).
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
                    init_at_t0: false,
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
                None => KExpr::Load(a),
                Some(s) => KExpr::bin(BinOp::Add, s, KExpr::Load(a)),
            });
        }
        kb.set(cur, sum.expect("a population has an input"));
        for (j, v) in step.vals.iter().enumerate() {
            match (&v.kind, &v.def) {
                (ValKind::StateIn(i), _) => kb.set(vals[j], KExpr::Load(save_args[*i])),
                (_, Some(d)) => kb.set(vals[j], cv(d)),
                (_, None) => unreachable!("only state inputs lack a definition"),
            }
        }
        // Incoming adjoints.
        let add_all = |first: KExpr, rest: Vec<KExpr>| {
            rest.into_iter()
                .fold(first, |acc, e| KExpr::bin(BinOp::Add, acc, e))
        };
        for (i, terms) in g_state.into_iter().enumerate() {
            kb.set(adjs[i], add_all(KExpr::Var(KVar::Carried(i)), terms));
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
            .map(|a| KExpr::Var(adjs[a]))
            .unwrap_or(KExpr::Const(0.0));
        for (n, &(a, _)) in out_args.iter().enumerate() {
            match acc_of[n] {
                Some(acc) => kb.set(acc, KExpr::bin(BinOp::Add, KExpr::Var(acc), g_cur.clone())),
                None => kb.store(a, g_cur.clone()),
            }
        }
        for &(acc, g) in &param_accs {
            kb.set(
                acc,
                KExpr::bin(BinOp::Add, KExpr::Var(acc), KExpr::Var(adjs[g])),
            );
        }
        for (i, g) in step.grad_state_in.iter().enumerate() {
            let e = g.map(|a| KExpr::Var(adjs[a])).unwrap_or(KExpr::Const(0.0));
            kb.set(KVar::Carried(i), e);
        }
        Ok(kb.finish())
    }
}

fn gconv(e: &GExpr, params: &[KExpr], cur: KVar, vals: &[KVar], adjs: &[KVar]) -> KExpr {
    let c = |x: &GExpr| gconv(x, params, cur, vals, adjs);
    match e {
        GExpr::Const(v) => KExpr::Const(*v),
        GExpr::Param(i) => params[*i].clone(),
        GExpr::Current => KExpr::Var(cur),
        GExpr::Val(j) => KExpr::Var(vals[*j]),
        GExpr::Adj(k) => KExpr::Var(adjs[*k]),
        GExpr::Unary(op, x) => KExpr::Unary(*op, Box::new(c(x))),
        GExpr::Binary(op, x, y) => KExpr::bin(*op, c(x), c(y)),
        GExpr::Call(f, args) => {
            debug_assert!(!matches!(f, Func::Step) || args.len() == 1);
            KExpr::Call(*f, args.iter().map(c).collect())
        }
    }
}
