//! Pass `lower`: NetIR with all decisions made -> KernelIR [`Program`]: the runtime plan
//! (buffers, weights, params, ops in schedule order) and one [`Kernel`] per fused
//! population group, encoder group, or unfused phase.

use std::collections::BTreeMap;

use crate::diag::DResult;
use crate::ir::eqn::{BinOp, EExpr, EqLeaf, Func, Mix, NeuronEqs, ParamKind, UnOp, Var};
use crate::ir::filter;
use crate::ir::kernel::*;
use crate::ir::linear::{self, LinearStep};
use crate::ir::net::*;
use crate::ir::sched::{FuseMode, KernelGroup, MemoryPlan, StageKind};
use snn_runtime::plan::{
    self, BufId, Conv2d, ConvGeom, Extent as PExtent, FilterOut, Gemm, Infinite, Inhibit, Init,
    KernelDecl, LaunchGroup, LaunchTime, Op, ParamCheck, ParamDecl, Plan, Pool2d, PoolGeom,
    RankCode, TimeBias, TimeMatrix, TimeMix, TimeSel, WeightDecl, WeightId, WeightUse, Wta,
};

use super::{pop_outputs, spilled_locals, Options};

mod backward;
mod learn;
mod split_deep;

pub use split_deep::MAX_DEPTH;

pub fn run(m: &Module, opts: &Options) -> DResult<Program> {
    let mem = m.memory.as_ref().expect("memory pass has run");
    let mut l = Lowerer {
        m,
        mem,
        plan: Plan {
            name: m.name.clone(),
            t: m.t,
            batch: m.batch,
            seed: m.seed,
            buffers: mem.buffers.clone(),
            slots: mem.slots,
            weights: vec![],
            params: vec![],
            inputs: vec![],
            outputs: vec![],
            kernels: vec![],
            ops: vec![],
            train: None,
            learn: vec![],
        },
        kernels: vec![],
        param_base: BTreeMap::new(),
        weight_of: BTreeMap::new(),
        learned: BTreeMap::new(),
        group_kernels: vec![],
        response_kernel: BTreeMap::new(),
        stage_of: m
            .schedule
            .as_ref()
            .expect("schedule pass has run")
            .stage_of(),
        stage_ops_end: vec![],
    };
    l.params_and_weights();
    l.kernels();
    l.ops();
    l.io();
    l.backward()?;
    // Before anything reads the bodies: rustc and NVRTC must never see a deep tree.
    l.kernels.iter_mut().for_each(split_deep::split_deep);
    if opts.stream_stores {
        l.kernels.iter_mut().for_each(mark_streams);
    }
    for k in &mut l.kernels {
        mark_prefetch(k, opts.prefetch_steps);
    }
    let plastic = l.learn();
    Ok(Program {
        plan: l.plan,
        kernels: l.kernels,
        plastic,
    })
}

struct Lowerer<'a> {
    m: &'a Module,
    mem: &'a MemoryPlan,
    plan: Plan,
    kernels: Vec<Kernel>,
    /// Offset of each kernel node's parameters in the flat array.
    param_base: BTreeMap<NodeId, usize>,
    /// (weight, bias) of each projection.
    weight_of: BTreeMap<NodeId, (usize, Option<usize>)>,
    /// The plan weight of each learned parameter of a population, by parameter index.
    learned: BTreeMap<NodeId, BTreeMap<usize, WeightId>>,
    /// Kernel ids of each fusion group: one when fused, charge/fire/reset when not.
    group_kernels: Vec<Vec<usize>>,
    /// The impulse/free response kernel of each recurrent population on the parallel
    /// schedule.
    response_kernel: BTreeMap<NodeId, usize>,
    /// The schedule's stage of each node, looked up once per node (built once: a net of
    /// n layers asks n times).
    stage_of: BTreeMap<NodeId, usize>,
    /// The number of forward ops once each stage's are emitted (`ops`): a learning pass
    /// runs the prefix its rules read.
    stage_ops_end: Vec<usize>,
}

/// Which part of a population's step a kernel computes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Role {
    Fused,
    Charge,
    Fire,
    Reset,
    /// Training with `checkpoint = recompute`: the fused step run again before the
    /// backward kernel, writing only the saved states.
    Recompute,
}

impl Lowerer<'_> {
    fn params_and_weights(&mut self) {
        let m = self.m;
        for (h, node) in m.nodes.iter() {
            match &node.kind {
                NodeKind::Population { eqs: Some(eqs), .. } => {
                    self.param_base.insert(h, self.plan.params.len());
                    let mut learned = BTreeMap::new();
                    for (i, p) in eqs.params.iter().enumerate() {
                        let name = format!("{}.{}", node.name, p.name);
                        match p.kind {
                            ParamKind::Runtime => self.plan.params.push(ParamDecl {
                                name,
                                value: p.value,
                                check: p.check,
                            }),
                            // A learnable parameter is a weight: saved, loaded and trained
                            // with the projections' weights, under the same name a
                            // parameter would have.
                            ParamKind::Learned { per_neuron } => {
                                let n = if per_neuron { m.shape(h).features() } else { 1 };
                                self.plan.weights.push(WeightDecl {
                                    name,
                                    shape: vec![n],
                                    init: Init::Constant(p.value),
                                });
                                learned.insert(i, self.plan.weights.len() - 1);
                            }
                            ParamKind::InitOnly => {}
                        }
                    }
                    if !learned.is_empty() {
                        self.learned.insert(h, learned);
                    }
                    // A mix's weights, shaped and initialised as SpikingJelly's PSN family.
                    let (wshape, winit, bshape) = match eqs.mix {
                        None => continue,
                        Some(Mix::Full | Mix::Masked { .. }) => (
                            vec![m.t, m.t],
                            Init::UniformFanIn {
                                fan_in: m.t,
                                gain: 1.0,
                            },
                            vec![m.t, 1],
                        ),
                        Some(Mix::Sliding { k, exp_init }) => (
                            vec![k],
                            if exp_init {
                                Init::Geometric { ratio: 0.5 }
                            } else {
                                Init::UniformFanIn {
                                    fan_in: k,
                                    gain: 1.0,
                                }
                            },
                            vec![],
                        ),
                    };
                    self.plan.weights.push(WeightDecl {
                        name: format!("{}.weight", node.name),
                        shape: wshape,
                        init: winit,
                    });
                    self.plan.weights.push(WeightDecl {
                        name: format!("{}.bias", node.name),
                        shape: bshape,
                        init: Init::Constant(-1.0),
                    });
                    let n = self.plan.weights.len();
                    self.weight_of.insert(h, (n - 2, Some(n - 1)));
                }
                NodeKind::Encode { encoding, .. } => {
                    self.param_base.insert(h, self.plan.params.len());
                    let (seed, name, v, check) = match *encoding {
                        Encoding::Poisson { max_rate, seed } => {
                            (seed, "max_rate", max_rate, ParamCheck::NonNegative)
                        }
                        Encoding::Bernoulli { gain, seed } => {
                            (seed, "gain", gain, ParamCheck::NonNegative)
                        }
                    };
                    self.plan.params.push(ParamDecl {
                        name: format!("{}.seed", node.name),
                        value: f32::from_bits(seed),
                        check: ParamCheck::Bits,
                    });
                    self.plan.params.push(ParamDecl {
                        name: format!("{}.{name}", node.name),
                        value: v,
                        check,
                    });
                }
                // A projection that shares another's weight gets it below.
                NodeKind::Dense { .. } | NodeKind::Conv2d { .. }
                    if m.ties.iter().any(|t| t.0 == h) => {}
                NodeKind::Dense {
                    src,
                    out,
                    bias,
                    init_gain,
                    ..
                } => {
                    let k = m.shape(*src).features();
                    self.add_weights(h, vec![*out, k], k, *init_gain, *bias, *out);
                }
                NodeKind::Conv2d {
                    src,
                    out_channels,
                    kernel,
                    bias,
                    init_gain,
                    ..
                } => {
                    let c_in = m.shape(*src).dims[0];
                    let fan_in = c_in * kernel[0] * kernel[1];
                    let shape = vec![*out_channels, c_in, kernel[0], kernel[1]];
                    self.add_weights(h, shape, fan_in, *init_gain, *bias, *out_channels);
                }
                NodeKind::Filter {
                    src, bank, size, ..
                } => {
                    // Built here, bit for bit Spyker's; frozen: never trained or saved.
                    let c_in = m.shape(*src).dims[0];
                    let raw = bank.step().raw_channels(bank.len());
                    let kernels = bank.kernels((size - 1) / 2);
                    self.plan.weights.push(WeightDecl {
                        name: format!("{}.kernel", node.name),
                        shape: vec![c_in * raw, c_in, *size, *size],
                        init: Init::Frozen(filter::block_weight(&kernels, raw, c_in, *size)),
                    });
                    self.weight_of
                        .insert(h, (self.plan.weights.len() - 1, None));
                }
                _ => {}
            }
        }
        for &(h, owner, _) in &m.ties {
            self.weight_of.insert(h, self.weight_of[&owner]);
        }
    }

    fn add_weights(
        &mut self,
        h: NodeId,
        shape: Vec<usize>,
        fan_in: usize,
        gain: f32,
        bias: bool,
        out: usize,
    ) {
        let name = &self.m.nodes[h].name;
        self.plan.weights.push(WeightDecl {
            name: format!("{name}.weight"),
            shape,
            init: Init::UniformFanIn { fan_in, gain },
        });
        let w = self.plan.weights.len() - 1;
        let b = bias.then(|| {
            self.plan.weights.push(WeightDecl {
                name: format!("{name}.bias"),
                shape: vec![out],
                init: Init::UniformFanIn { fan_in, gain },
            });
            self.plan.weights.len() - 1
        });
        self.weight_of.insert(h, (w, b));
    }

    fn kernels(&mut self) {
        let fusion = self.m.fusion.as_ref().expect("fuse pass has run");
        for g in &fusion.groups {
            let lead = g.members[0];
            let roles: &[Role] = match (&self.m.nodes[lead].kind, g.mode) {
                (NodeKind::Population { eqs: Some(eqs), .. }, FuseMode::Unfused)
                    if eqs.spikes() =>
                {
                    &[Role::Charge, Role::Fire, Role::Reset]
                }
                (NodeKind::Population { .. }, FuseMode::Unfused) => &[Role::Charge],
                _ => &[Role::Fused],
            };
            let mut ids = Vec::new();
            for &role in roles {
                let (mut k, _) = self.build(lead, role, g);
                let id = self.kernels.len();
                k.symbol = mangle(id, &self.m.nodes[lead], role);
                self.plan.kernels.push(kernel_decl(&k));
                self.kernels.push(k);
                ids.push(id);
            }
            self.group_kernels.push(ids);
        }
        // The response kernels of recurrent populations on the parallel schedule.
        let sched = self.m.schedule.as_ref().expect("schedule pass has run");
        for (&h, pt) in &sched.time {
            let Some(lin) = pt.linear.as_ref().filter(|l| l.recurrent()) else {
                continue;
            };
            if pt.form != TimeForm::Parallel {
                continue;
            }
            let (mut k, _) = self.response(h, lin);
            let id = self.kernels.len();
            k.symbol = crate::ir::names::kernel_symbol(id, &self.m.nodes[h].name, "_response");
            self.plan.kernels.push(kernel_decl(&k));
            self.kernels.push(k);
            self.response_kernel.insert(h, id);
        }
    }

    /// The impulse and free responses of a linear recurrence, for the parallel schedule:
    /// `impulse_i[t]` is state `i` at step `t` after a unit input at step 0 (zero initial
    /// state, no constant term), `free_i[t]` its value with no input. Every launch lane
    /// computes the same sequence; the `[T, B, 1]` buffers' first column is what
    /// `TimeMatrix::Response` and `TimeBias::Response` read.
    fn response(&self, h: NodeId, lin: &LinearStep) -> (Kernel, Vec<BufId>) {
        let m = self.m;
        let eqs = m.eqs(h).expect("population");
        let mut kb = KB::new(
            format!(
                "{} population `{}`: impulse and free response of its linear step",
                eqs.model, m.nodes[h].name
            ),
            LaunchTime::Seq,
        );
        // Runtime parameters only: `linear::analyse` keeps learned ones off this schedule.
        let params = self.param_exprs(h, eqs, &mut kb);
        let n = eqs.states.len();
        let mut args = Vec::new();
        for (i, s) in eqs.states.iter().enumerate() {
            let (r, z) = self.mem.resp[&(h, i)];
            let ra = kb.arg(&format!("impulse_{}", s.name), r, PExtent::Seq, true);
            let za = kb.arg(&format!("free_{}", s.name), z, PExtent::Seq, true);
            args.push((ra, za));
        }
        let carried = |kb: &mut KB, name: String, init: KExpr| {
            kb.k.carried.push(Carried {
                name,
                init,
                buf: None,
                init_at_t0: false,
                store: false,
                grad: None,
            });
            KVar::Carried(kb.k.carried.len() - 1)
        };
        let kv: Vec<KVar> = eqs
            .states
            .iter()
            .map(|s| carried(&mut kb, format!("impulse_{}", s.name), KExpr::Const(0.0)))
            .collect();
        let zv: Vec<KVar> = eqs
            .states
            .iter()
            .map(|s| {
                let init = conv_vars(eqs, &s.init, &params, &[], &[], m.dt);
                carried(&mut kb, format!("free_{}", s.name), init)
            })
            .collect();
        let pulse = carried(&mut kb, "pulse".into(), KExpr::Const(1.0));
        let c = |e: &EExpr| conv_vars(eqs, e, &params, &[], &[], m.dt);
        // new_i = sum_k a[i][k] * old_k + (b[i] * pulse | c[i]), all from the old values.
        let affine = |old: &[KVar], extra: Option<KExpr>, i: usize| -> KExpr {
            let mut e: Option<KExpr> = None;
            let mut push = |t: KExpr| {
                e = Some(match e.take() {
                    None => t,
                    Some(acc) => KExpr::bin(BinOp::Add, acc, t),
                })
            };
            for (k, a) in lin.a[i].iter().enumerate() {
                if !linear::is_zero(a) {
                    push(KExpr::bin(BinOp::Mul, c(a), KExpr::var(old[k])));
                }
            }
            if let Some(x) = extra {
                push(x);
            }
            e.unwrap_or(KExpr::Const(0.0))
        };
        let nk: Vec<KVar> = (0..n)
            .map(|i| kb.local(&format!("next_impulse_{}", eqs.states[i].name)))
            .collect();
        let nz: Vec<KVar> = (0..n)
            .map(|i| kb.local(&format!("next_free_{}", eqs.states[i].name)))
            .collect();
        for i in 0..n {
            let drive = (!linear::is_zero(&lin.b[i]))
                .then(|| KExpr::bin(BinOp::Mul, c(&lin.b[i]), KExpr::var(pulse)));
            kb.set(nk[i], affine(&kv, drive, i));
            let konst = (!linear::is_zero(&lin.c[i])).then(|| c(&lin.c[i]));
            kb.set(nz[i], affine(&zv, konst, i));
        }
        for i in 0..n {
            kb.set(kv[i], KExpr::var(nk[i]));
            kb.set(zv[i], KExpr::var(nz[i]));
            kb.store(args[i].0, KExpr::var(kv[i]));
            kb.store(args[i].1, KExpr::var(zv[i]));
        }
        kb.set(pulse, KExpr::Const(0.0));
        (kb.k, kb.bufs)
    }

    /// The kernel for `role` of node `h`, and the buffers and weights its launch passes.
    fn build(&self, h: NodeId, role: Role, g: &KernelGroup) -> (Kernel, Bind) {
        match &self.m.nodes[h].kind {
            NodeKind::Encode { src, encoding } => self.encoder(h, *src, encoding, g.stepwise),
            NodeKind::Population {
                inputs,
                eqs: Some(eqs),
                ..
            } => self.population(h, inputs, eqs, role, g.stepwise),
            _ => unreachable!("only encoders and populations have kernels"),
        }
    }

    fn encoder(&self, h: NodeId, src: NodeId, enc: &Encoding, stepwise: bool) -> (Kernel, Bind) {
        let m = self.m;
        let mut kb = KB::new(
            format!(
                "{} encoder `{}`",
                m.nodes[h].kind.op_name(),
                m.nodes[h].name
            ),
            if stepwise {
                LaunchTime::Step
            } else {
                LaunchTime::Seq
            },
        );
        let x = kb.arg(
            "x",
            self.mem.node_out[&src],
            ext(m.shape(src).extent),
            false,
        );
        let out = kb.arg("spikes", self.mem.node_out[&h], PExtent::Seq, true);
        kb.k.params = vec![
            "seed".into(),
            if matches!(enc, Encoding::Poisson { .. }) {
                "max_rate"
            } else {
                "gain"
            }
            .into(),
        ];
        let xv = kb.local("x");
        let pv = kb.local("p");
        kb.set(xv, KExpr::load(x));
        let p = match enc {
            // p = 1 - exp(-(max_rate * x * dt))
            Encoding::Poisson { .. } => KExpr::bin(
                BinOp::Sub,
                KExpr::Const(1.0),
                KExpr::Call(
                    Func::Exp,
                    vec![KExpr::Unary(
                        UnOp::Neg,
                        Box::new(KExpr::bin(
                            BinOp::Mul,
                            KExpr::bin(BinOp::Mul, KExpr::Leaf(KLeaf::Param(1)), KExpr::var(xv)),
                            KExpr::Const(m.dt),
                        )),
                    )],
                ),
            ),
            Encoding::Bernoulli { .. } => {
                KExpr::bin(BinOp::Mul, KExpr::Leaf(KLeaf::Param(1)), KExpr::var(xv))
            }
        };
        kb.set(pv, p);
        kb.store(
            out,
            KExpr::bin(
                BinOp::Lt,
                KExpr::Leaf(KLeaf::Uniform { seed_param: 0 }),
                KExpr::var(pv),
            ),
        );
        kb.finish()
    }

    /// Whether node `h` runs in a recurrent (step-by-step) stage.
    fn cyclic(&self, h: NodeId) -> bool {
        let sched = self.m.schedule.as_ref().expect("schedule pass has run");
        self.stage_of
            .get(&h)
            .is_some_and(|&s| matches!(sched.stages[s].kind, StageKind::Steps(_)))
    }

    /// How population `h`'s kernel reads each parameter of `eqs`: from the flat parameter
    /// array (`kb.k.params`) or, for a learned one, from a weight argument it binds.
    fn param_exprs(&self, h: NodeId, eqs: &NeuronEqs, kb: &mut KB) -> Vec<KExpr> {
        let learned = self.learned.get(&h);
        eqs.params
            .iter()
            .enumerate()
            .map(|(i, p)| match p.kind {
                ParamKind::Runtime => {
                    kb.k.params.push(p.name.clone());
                    KExpr::Leaf(KLeaf::Param(kb.k.params.len() - 1))
                }
                ParamKind::Learned { per_neuron } => {
                    let w = learned.expect("learned parameters have weights")[&i];
                    KExpr::Leaf(KLeaf::Weight(kb.weight(&p.name, w, per_neuron, false)))
                }
                // Never read by the equations (see `passes::neurons`).
                ParamKind::InitOnly => KExpr::Const(p.value),
            })
            .collect()
    }

    fn population(
        &self,
        h: NodeId,
        inputs: &[NodeId],
        eqs: &NeuronEqs,
        role: Role,
        stepwise: bool,
    ) -> (Kernel, Bind) {
        let m = self.m;
        let mem = self.mem;
        let outs = pop_outputs(m, h);
        let name = &m.nodes[h].name;
        let what = match role {
            Role::Fused => "charge + fire + reset",
            Role::Charge => "charge (unfused)",
            Role::Fire => "fire (unfused)",
            Role::Reset => "reset (unfused)",
            Role::Recompute => "states recomputed for the backward pass",
        };
        let mut kb = KB::new(
            format!("{} population `{name}`: {what}", eqs.model),
            if stepwise {
                LaunchTime::Step
            } else {
                LaunchTime::Seq
            },
        );
        let params = self.param_exprs(h, eqs, &mut kb);
        let spilled = if matches!(role, Role::Fused | Role::Recompute) {
            vec![]
        } else {
            spilled_locals(eqs)
        };

        // The parallel schedule of a recurrent linear population: each state's last
        // assignment in the update reads its value from the time products instead.
        let pt = &m.schedule.as_ref().expect("schedule pass has run").time[&h];
        let replaced: BTreeMap<usize, usize> =
            if pt.form == TimeForm::Parallel && pt.linear.as_ref().is_some_and(|l| l.recurrent()) {
                (0..eqs.states.len())
                    .filter_map(|i| {
                        let last = eqs.update.iter().rposition(|a| a.target == Var::State(i))?;
                        Some((last, i))
                    })
                    .collect()
            } else {
                BTreeMap::new()
            };
        let reads_current = eqs
            .update
            .iter()
            .enumerate()
            .any(|(j, a)| !replaced.contains_key(&j) && a.value.reads_current())
            || eqs.spike.as_ref().is_some_and(EExpr::reads_current)
            || eqs.reset.iter().any(|a| a.value.reads_current());
        if !replaced.is_empty() {
            kb.k.doc = format!(
                "{} population `{name}`: fire, its states read from the time products (parallel schedule)",
                eqs.model
            );
        } else if mem.mixed.contains_key(&h) {
            kb.k.doc.push_str(", input mixed over time");
        }

        // Arguments, in a fixed order per role. A population with a `mix` reads its mixed
        // current.
        let mut in_args = Vec::new();
        if matches!(role, Role::Fused | Role::Charge | Role::Recompute)
            && (replaced.is_empty() || reads_current)
        {
            match mem.mixed.get(&h) {
                Some(&b) => in_args.push(kb.arg("mixed", b, PExtent::Seq, false)),
                None => {
                    for (i, &src) in inputs.iter().enumerate() {
                        in_args.push(kb.arg(
                            &format!("in{i}"),
                            mem.node_out[&src],
                            ext(m.shape(src).extent),
                            false,
                        ));
                    }
                }
            }
        }
        let lin_args: BTreeMap<usize, usize> = replaced
            .values()
            .map(|&i| {
                let name = format!("lin_{}", eqs.states[i].name);
                (i, kb.arg(&name, mem.lin[&(h, i)], PExtent::Seq, false))
            })
            .collect();
        let spikes_arg =
            (outs.spikes && !matches!(role, Role::Charge | Role::Recompute)).then(|| {
                kb.arg(
                    "spikes",
                    mem.node_out[&h],
                    PExtent::Seq,
                    matches!(role, Role::Fused | Role::Fire),
                )
            });
        let writes_traces = match role {
            Role::Fused | Role::Reset => true,
            Role::Charge => !outs.spikes,
            Role::Fire | Role::Recompute => false,
        };
        let trace_args: Vec<(usize, usize)> = if writes_traces {
            outs.traces
                .iter()
                .map(|&s| {
                    (
                        s,
                        kb.arg(
                            &format!("trace_{}", eqs.states[s].name),
                            mem.traces[&(h, s)],
                            PExtent::Seq,
                            true,
                        ),
                    )
                })
                .collect()
        } else {
            vec![]
        };
        let counts_arg = (outs.counts && matches!(role, Role::Fused | Role::Fire))
            .then(|| kb.arg("counts", mem.counts[&h], PExtent::Single, true));
        let state_args: Vec<Option<usize>> = eqs
            .states
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let state = mem.states.get(&(h, i)).filter(|_| role != Role::Recompute);
                state.map(|&b| {
                    kb.arg(
                        &format!("state_{}", s.name),
                        b,
                        PExtent::Single,
                        role != Role::Fire,
                    )
                })
            })
            .collect();
        let spill_args: BTreeMap<usize, usize> = spilled
            .iter()
            .map(|&l| {
                let lname = eqs.locals.get(l).map(String::as_str).unwrap_or("I");
                (
                    l,
                    kb.arg(
                        &format!("spill_{lname}"),
                        mem.spills[&(h, l)],
                        PExtent::Single,
                        role == Role::Charge,
                    ),
                )
            })
            .collect();

        // Training: the state at the start of every step, for the backward kernel (always
        // saved in a recurrent stage: recomputing it would need the whole cycle again).
        let recompute = m.train.as_ref().is_some_and(|c| c.recompute) && !self.cyclic(h);
        // Only the states the backward kernel reads have a save buffer
        // (`StepAdjoint::saves`): `(state, arg)`.
        let save_args: Vec<(usize, usize)> =
            if (role == Role::Fused && !recompute) || role == Role::Recompute {
                eqs.states
                    .iter()
                    .enumerate()
                    .filter_map(|(i, s)| {
                        mem.saves.get(&(h, i)).map(|&b| {
                            (
                                i,
                                kb.arg(&format!("save_{}", s.name), b, PExtent::Seq, true),
                            )
                        })
                    })
                    .collect()
            } else {
                vec![]
            };

        // Carried values: the states, then the spike count.
        for (i, s) in eqs.states.iter().enumerate() {
            let init = conv_vars(eqs, &s.init, &params, &[], &[], m.dt);
            let (init_at_t0, store) = match role {
                Role::Fused | Role::Charge => (true, true),
                Role::Fire => (false, false),
                Role::Reset => (false, true),
                Role::Recompute => (true, false),
            };
            kb.k.carried.push(Carried {
                name: s.name.clone(),
                init,
                buf: state_args[i],
                init_at_t0: init_at_t0 && state_args[i].is_some(),
                store: store && state_args[i].is_some(),
                grad: None,
            });
        }
        let count = counts_arg.map(|a| {
            kb.k.carried.push(Carried {
                name: "count".into(),
                init: KExpr::Const(0.0),
                buf: Some(a),
                init_at_t0: true,
                store: true,
                grad: None,
            });
            KVar::Carried(kb.k.carried.len() - 1)
        });

        // Locals: the model's temporaries, the input current I and the spike S.
        let locals: Vec<KVar> = eqs.locals.iter().map(|l| kb.local(l)).collect();
        let cur = kb.local("I");
        let s_var = kb.local("S");
        let mut lmap = locals.clone();
        lmap.push(cur);
        let state_vars: Vec<KVar> = (0..eqs.states.len()).map(KVar::Carried).collect();
        let cv = |e: &EExpr| conv_vars(eqs, e, &params, &state_vars, &lmap, m.dt);
        let target = |v: Var| match v {
            Var::State(i) => state_vars[i],
            Var::Local(i) => lmap[i],
        };

        // Spilled temporaries are read back in the fire and reset kernels.
        if matches!(role, Role::Fire | Role::Reset) {
            for (&l, &a) in &spill_args {
                kb.set(lmap[l], KExpr::load(a));
            }
        }
        // Saved: each state at the start of the step, or after its update (`save_post`:
        // all the backward step needs, see `StepAdjoint::save_post`).
        let save_post = m
            .backward
            .as_ref()
            .and_then(|b| b.pops.get(&h))
            .is_some_and(|s| s.save_post);
        if !save_post {
            for &(i, a) in &save_args {
                kb.store(a, KExpr::var(state_vars[i]));
            }
        }
        if matches!(role, Role::Fused | Role::Charge | Role::Recompute) {
            let mut sum: Option<KExpr> = None;
            for &a in &in_args {
                sum = Some(match sum {
                    None => KExpr::load(a),
                    Some(s) => KExpr::bin(BinOp::Add, s, KExpr::load(a)),
                });
            }
            if let Some(sum) = sum {
                kb.set(cur, sum);
            }
            for (j, a) in eqs.update.iter().enumerate() {
                match replaced.get(&j) {
                    Some(i) => kb.set(target(a.target), KExpr::load(lin_args[i])),
                    None => kb.set(target(a.target), cv(&a.value)),
                }
            }
            if role == Role::Charge {
                for (&l, &a) in &spill_args {
                    kb.store(a, KExpr::var(lmap[l]));
                }
            }
        }
        if save_post {
            for &(i, a) in &save_args {
                kb.store(a, KExpr::var(state_vars[i]));
            }
        }
        if let (Some(spike), true) = (
            &eqs.spike,
            matches!(role, Role::Fused | Role::Fire | Role::Recompute),
        ) {
            // S = 1 when the condition is non-zero.
            kb.set(
                s_var,
                KExpr::Call(
                    Func::Select,
                    vec![cv(spike), KExpr::Const(1.0), KExpr::Const(0.0)],
                ),
            );
            if let Some(a) = spikes_arg {
                kb.store(a, KExpr::var(s_var));
            }
            if let Some(c) = count {
                kb.set(c, KExpr::bin(BinOp::Add, KExpr::var(c), KExpr::var(s_var)));
            }
        }
        if eqs.spikes() && matches!(role, Role::Fused | Role::Reset | Role::Recompute) {
            if role == Role::Reset {
                kb.set(s_var, KExpr::load(spikes_arg.expect("spiking population")));
            }
            // x = S ? e : x, in order.
            for a in &eqs.reset {
                let t = target(a.target);
                kb.set(
                    t,
                    KExpr::Call(
                        Func::Select,
                        vec![KExpr::var(s_var), cv(&a.value), KExpr::var(t)],
                    ),
                );
            }
        }
        for &(s, a) in &trace_args {
            kb.store(a, KExpr::var(state_vars[s]));
        }
        kb.finish()
    }

    fn launch(&self, g: usize, role_idx: usize, time: LaunchTime) -> Op {
        let fusion = self.m.fusion.as_ref().unwrap();
        let group = &fusion.groups[g];
        let roles = [Role::Charge, Role::Fire, Role::Reset];
        let role = if group.mode == FuseMode::Fused {
            Role::Fused
        } else {
            roles[role_idx]
        };
        let kernel = self.group_kernels[g][role_idx];
        let groups = group
            .members
            .iter()
            .map(|&h| {
                let (k, bind) = self.build(h, role, group);
                debug_assert_eq!(
                    k.body, self.kernels[kernel].body,
                    "merged kernels share code"
                );
                LaunchGroup {
                    args: bind.bufs,
                    weights: bind.weights,
                    params: self.param_base[&h],
                    features: self.m.shape(h).features(),
                }
            })
            .collect();
        Op::Launch {
            kernel,
            groups,
            time,
        }
    }

    fn ops(&mut self) {
        let sched = self.m.schedule.as_ref().unwrap();
        let mut ops = Vec::new();
        self.stage_ops_end.clear();
        for (si, stage) in sched.stages.iter().enumerate() {
            match &stage.kind {
                StageKind::Layer(n) | StageKind::Parallel(n) => {
                    let mut pre = Vec::new();
                    let mut body = Vec::new();
                    self.node_ops(*n, si, false, &mut pre, &mut body);
                    ops.extend(pre);
                    ops.extend(body);
                }
                StageKind::Steps(ns) => {
                    let mut pre = Vec::new();
                    let mut body = Vec::new();
                    for &n in ns {
                        self.node_ops(n, si, true, &mut pre, &mut body);
                    }
                    ops.extend(pre);
                    ops.push(Op::StepLoop { body });
                }
            }
            self.stage_ops_end.push(ops.len());
        }
        self.plan.ops = ops;
    }

    /// The runtime geometry of conv2d node `n`.
    fn conv_geom(&self, n: NodeId) -> ConvGeom {
        let m = self.m;
        let NodeKind::Conv2d {
            src,
            out_channels,
            kernel,
            stride,
            padding,
            ..
        } = &m.nodes[n].kind
        else {
            unreachable!("a conv2d node")
        };
        let sd = &m.shape(*src).dims;
        let od = &m.shape(n).dims;
        ConvGeom {
            c_in: sd[0],
            h: sd[1],
            w: sd[2],
            c_out: *out_channels,
            kh: kernel[0],
            kw: kernel[1],
            stride: *stride,
            pad: *padding,
            h_out: od[1],
            w_out: od[2],
        }
    }

    /// The runtime kind and geometry of pooling node `n`.
    fn pool_geom(&self, n: NodeId) -> (plan::PoolKind, PoolGeom) {
        let m = self.m;
        let NodeKind::Pool2d {
            src,
            kind,
            kernel,
            stride,
            padding,
        } = &m.nodes[n].kind
        else {
            unreachable!("a pooling node")
        };
        let sd = &m.shape(*src).dims;
        let od = &m.shape(n).dims;
        let kind = match kind {
            PoolKind::Max => plan::PoolKind::Max,
            PoolKind::Avg => plan::PoolKind::Avg,
        };
        (
            kind,
            PoolGeom {
                c: sd[0],
                h: sd[1],
                w: sd[2],
                k: *kernel,
                stride: *stride,
                pad: *padding,
                h_out: od[1],
                w_out: od[2],
            },
        )
    }

    fn node_ops(&self, n: NodeId, si: usize, step: bool, pre: &mut Vec<Op>, body: &mut Vec<Op>) {
        let m = self.m;
        let out = |h: NodeId| self.mem.node_out[&h];
        let time = |delay: usize| {
            if step {
                TimeSel::Step { delay }
            } else {
                TimeSel::All { delay }
            }
        };
        match &m.nodes[n].kind {
            NodeKind::Input { .. } | NodeKind::Flatten { .. } => {}
            NodeKind::Dense {
                src,
                out: nout,
                delay,
                ..
            } => {
                if *delay > 0 {
                    pre.push(Op::Zero { buf: out(n) });
                }
                let (w, bias) = self.weight_of[&n];
                body.push(Op::Gemm(Gemm {
                    x: out(*src),
                    w,
                    bias,
                    y: out(n),
                    k: m.shape(*src).features(),
                    n: *nout,
                    time: time(*delay),
                    accumulate: false,
                    sparse: sparse_projection(m, n),
                }));
            }
            NodeKind::Conv2d { src, delay, .. } => {
                if *delay > 0 {
                    pre.push(Op::Zero { buf: out(n) });
                }
                let (w, bias) = self.weight_of[&n];
                // `schedule` chose the wave form only outside step loops, without delay.
                let wave = wave_projection(m, n) && !step;
                body.push(Op::Conv2d(Conv2d {
                    x: out(*src),
                    w,
                    bias,
                    y: out(n),
                    geom: self.conv_geom(n),
                    time: time(*delay),
                    accumulate: false,
                    sparse: sparse_projection(m, n) && !wave,
                    wave,
                }));
            }
            NodeKind::Filter {
                src,
                bank,
                size,
                pad,
                threshold,
            } => {
                let sd = &m.shape(*src).dims;
                let od = &m.shape(n).dims;
                let step = bank.step();
                let raw_c = step.raw_channels(bank.len());
                let raw = self.mem.filter_raw.get(&n).copied();
                body.push(Op::Conv2d(Conv2d {
                    x: out(*src),
                    w: self.weight_of[&n].0,
                    bias: None,
                    y: raw.unwrap_or(out(n)),
                    geom: ConvGeom {
                        c_in: sd[0],
                        h: sd[1],
                        w: sd[2],
                        c_out: sd[0] * raw_c,
                        kh: *size,
                        kw: *size,
                        stride: 1,
                        pad: *pad,
                        h_out: od[1],
                        w_out: od[2],
                    },
                    time: time(0),
                    accumulate: false,
                    sparse: false,
                    wave: false,
                }));
                if let Some(raw) = raw {
                    body.push(Op::FilterOut(FilterOut {
                        x: raw,
                        y: out(n),
                        step,
                        groups: sd[0],
                        n: bank.len(),
                        plane: od[1] * od[2],
                        threshold: *threshold,
                        time: time(0),
                    }));
                }
            }
            NodeKind::Latency { src, sort } => body.push(Op::RankCode(RankCode {
                x: out(*src),
                y: out(n),
                features: m.shape(n).features(),
                sort: *sort,
            })),
            NodeKind::Inhibit { src, threshold } => {
                let d = &m.shape(n).dims;
                body.push(Op::Inhibit(Inhibit {
                    x: out(*src),
                    y: out(n),
                    channels: d[0],
                    plane: d[1] * d[2],
                    threshold: *threshold,
                }))
            }
            NodeKind::Wta {
                src,
                k,
                radius,
                threshold,
            } => {
                // `[N]` is N maps of one pixel.
                let (c, h, w) = match m.shape(n).dims[..] {
                    [c, h, w] => (c, h, w),
                    [c] => (c, 1, 1),
                    _ => unreachable!("shapes checked wta's rank"),
                };
                body.push(Op::Wta(Wta {
                    x: out(*src),
                    y: out(n),
                    channels: c,
                    height: h,
                    width: w,
                    k: *k,
                    radius: *radius,
                    threshold: *threshold,
                    spikes: wave_source(m, *src),
                }))
            }
            NodeKind::Infinite { src, value } => body.push(Op::Infinite(Infinite {
                x: out(*src),
                y: out(n),
                features: m.shape(n).features(),
                value: *value,
            })),
            NodeKind::Pool2d { src, .. } => {
                let (kind, geom) = self.pool_geom(n);
                body.push(Op::Pool2d(Pool2d {
                    x: out(*src),
                    y: out(n),
                    kind,
                    geom,
                    time: time(0),
                }));
            }
            NodeKind::Encode { .. } | NodeKind::Population { .. } => {
                let fusion = m.fusion.as_ref().unwrap();
                let g = fusion.group_of[&n];
                let group = &fusion.groups[g];
                // A merged group launches once, at its last member.
                if group.stage != si || *group.members.last().unwrap() != n {
                    return;
                }
                let nk = self.group_kernels[g].len();
                // A population with a `mix` first mixes its inputs over time: all rows at
                // once, or row t inside the step loop.
                let mix = self.mix_ops(
                    n,
                    if group.stepwise {
                        TimeSel::Step { delay: 0 }
                    } else {
                        TimeSel::All { delay: 0 }
                    },
                );
                if group.stepwise {
                    let mut launches = mix;
                    launches.extend((0..nk).map(|r| self.launch(g, r, LaunchTime::Step)));
                    if step {
                        body.extend(launches);
                    } else {
                        // An unfused (or mixed sequential) population in a layer stage gets
                        // its own step loop.
                        body.push(Op::StepLoop { body: launches });
                    }
                } else {
                    body.extend(mix);
                    body.extend(self.response_ops(n));
                    body.push(self.launch(g, 0, LaunchTime::Seq));
                }
            }
        }
    }

    /// The `TimeMix` ops of a population's `mix`: one per input (accumulating), the bias
    /// with the first.
    fn mix_ops(&self, h: NodeId, time: TimeSel) -> Vec<Op> {
        let m = self.m;
        let (Some(_), NodeKind::Population { inputs, .. }) = (m.eqs(h), &m.nodes[h].kind) else {
            return vec![];
        };
        let Some((matrix, bias)) = self.mix_matrix(h) else {
            return vec![];
        };
        inputs
            .iter()
            .enumerate()
            .map(|(i, &src)| {
                Op::TimeMix(TimeMix {
                    x: self.mem.node_out[&src],
                    y: self.mem.mixed[&h],
                    matrix,
                    bias: (i == 0).then_some(bias),
                    time,
                    accumulate: i > 0,
                })
            })
            .collect()
    }

    /// The time matrix and bias of population `h`'s `mix`, if it has one.
    fn mix_matrix(&self, h: NodeId) -> Option<(TimeMatrix, TimeBias)> {
        let mix = self.m.eqs(h)?.mix.as_ref()?;
        let (w, b) = self.weight_of[&h];
        let b = b.expect("a mix has a bias");
        Some(match *mix {
            Mix::Full => (TimeMatrix::Weight { w }, TimeBias::Weight(b)),
            Mix::Masked { k, lambda } => (
                TimeMatrix::Masked {
                    w,
                    k,
                    lambda: self.param_base[&h] + lambda,
                },
                TimeBias::Weight(b),
            ),
            Mix::Sliding { k, .. } => (TimeMatrix::Band { w, k }, TimeBias::Scalar(b)),
        })
    }

    /// The parallel schedule of a recurrent linear population: its response kernel, then
    /// per state one Toeplitz product of the impulse response with each input (the free
    /// response as the bias of the first).
    fn response_ops(&self, h: NodeId) -> Vec<Op> {
        let Some(&kernel) = self.response_kernel.get(&h) else {
            return vec![];
        };
        let m = self.m;
        let eqs = m.eqs(h).expect("population");
        let NodeKind::Population { inputs, .. } = &m.nodes[h].kind else {
            unreachable!()
        };
        let sources: Vec<BufId> = match self.mem.mixed.get(&h) {
            Some(&b) => vec![b],
            None => inputs.iter().map(|&i| self.mem.node_out[&i]).collect(),
        };
        let mut args = Vec::new();
        for i in 0..eqs.states.len() {
            let (r, z) = self.mem.resp[&(h, i)];
            args.extend([r, z]);
        }
        let mut ops = vec![Op::Launch {
            kernel,
            groups: vec![LaunchGroup {
                args,
                weights: vec![],
                params: self.param_base[&h],
                features: 1,
            }],
            time: LaunchTime::Seq,
        }];
        for i in 0..eqs.states.len() {
            let (r, z) = self.mem.resp[&(h, i)];
            for (j, &x) in sources.iter().enumerate() {
                ops.push(Op::TimeMix(TimeMix {
                    x,
                    y: self.mem.lin[&(h, i)],
                    matrix: TimeMatrix::Response { r },
                    bias: (j == 0).then_some(TimeBias::Response(z)),
                    time: TimeSel::All { delay: 0 },
                    accumulate: j > 0,
                }));
            }
        }
        ops
    }

    fn io(&mut self) {
        let m = self.m;
        for &h in &m.inputs {
            let NodeKind::Input { dims, time_varying } = &m.nodes[h].kind else {
                unreachable!()
            };
            self.plan.inputs.push(plan::InputDecl {
                name: m.nodes[h].name.clone(),
                buffer: self.mem.node_out[&h],
                shape: dims.clone(),
                time_varying: *time_varying,
            });
        }
        for o in &m.outputs {
            let (kind, buffer) = match o.kind {
                OutputKind::Spikes => (plan::OutputKind::Spikes, self.mem.node_out[&o.node]),
                OutputKind::Counts => (plan::OutputKind::Counts, self.mem.counts[&o.node]),
                OutputKind::Trace => (
                    plan::OutputKind::Trace,
                    self.mem.traces[&(o.node, o.state.as_ref().and_then(|s| s.1).unwrap())],
                ),
            };
            self.plan.outputs.push(plan::OutputDecl {
                name: o.name.clone(),
                kind,
                buffer,
                shape: m.shape(o.node).dims.clone(),
            });
        }
    }
}

/// Whether `wta` reads a 0/1 wave (a spike source, also through `inhibit`): then Spyker's
/// integer score of a `u8` wave, not the potentials' f32 score.
fn wave_source(m: &Module, h: NodeId) -> bool {
    match m.nodes[h].kind {
        NodeKind::Inhibit { src, .. } => wave_source(m, src),
        _ => super::schedule::is_spike_source(m, h),
    }
}

fn ext(e: Extent) -> PExtent {
    match e {
        Extent::Seq => PExtent::Seq,
        Extent::Static => PExtent::Static,
    }
}

/// A kernel's symbol ([`crate::ir::names::kernel_symbol`]): the node's name, an encoder's op.
fn mangle(id: usize, node: &Node, role: Role) -> String {
    let base: &str = match &node.kind {
        NodeKind::Encode { .. } => node.kind.op_name(),
        _ => &node.name,
    };
    let role = match role {
        Role::Fused => "",
        Role::Charge => "_charge",
        Role::Fire => "_fire",
        Role::Reset => "_reset",
        Role::Recompute => "_recompute",
    };
    crate::ir::names::kernel_symbol(id, base, role)
}

/// The plan's declaration of a kernel.
fn kernel_decl(k: &Kernel) -> KernelDecl {
    KernelDecl {
        symbol: k.symbol.clone(),
        arity: k.args.len(),
        weights: k
            .weights
            .iter()
            .map(|w| WeightUse {
                per_neuron: w.per_neuron,
                grad: w.grad,
            })
            .collect(),
    }
}

/// What one launch group binds to a kernel's arguments.
struct Bind {
    bufs: Vec<BufId>,
    weights: Vec<WeightId>,
}

/// A kernel under construction and the buffers and weights its arguments bind to.
struct KB {
    k: Kernel,
    bufs: Vec<BufId>,
    weights: Vec<WeightId>,
}

impl KB {
    fn new(doc: String, time: LaunchTime) -> KB {
        KB {
            k: Kernel {
                symbol: String::new(),
                doc,
                args: vec![],
                params: vec![],
                weights: vec![],
                time,
                reverse: false,
                carried: vec![],
                locals: vec![],
                body: vec![],
                prefetch: 1,
            },
            bufs: vec![],
            weights: vec![],
        }
    }
    fn finish(self) -> (Kernel, Bind) {
        (
            self.k,
            Bind {
                bufs: self.bufs,
                weights: self.weights,
            },
        )
    }
    fn weight(&mut self, name: &str, id: WeightId, per_neuron: bool, grad: bool) -> usize {
        self.k.weights.push(KWeight {
            name: name.to_string(),
            per_neuron,
            grad,
        });
        self.weights.push(id);
        self.k.weights.len() - 1
    }
    fn arg(&mut self, name: &str, buf: BufId, extent: PExtent, write: bool) -> usize {
        self.k.args.push(KArg {
            name: name.to_string(),
            extent,
            write,
            stream: false,
        });
        self.bufs.push(buf);
        self.k.args.len() - 1
    }
    fn local(&mut self, name: &str) -> KVar {
        self.k.locals.push(name.to_string());
        KVar::Local(self.k.locals.len() - 1)
    }
    fn set(&mut self, v: KVar, e: KExpr) {
        self.k.body.push(KStmt::Set(v, e));
    }
    fn store(&mut self, a: usize, e: KExpr) {
        self.k.body.push(KStmt::Store(a, e));
    }
}

/// Equation expression -> kernel expression; `params` says how each parameter is read.
fn conv_vars(
    eqs: &NeuronEqs,
    e: &EExpr,
    params: &[KExpr],
    states: &[KVar],
    locals: &[KVar],
    dt: f32,
) -> KExpr {
    e.map_leaves(&mut |l| match l {
        EqLeaf::Param(i) => params[*i].clone(),
        EqLeaf::State(i) => KExpr::var(states[*i]),
        EqLeaf::Local(i) => KExpr::var(locals[*i]),
        EqLeaf::Current => KExpr::var(locals[eqs.locals.len()]),
        EqLeaf::Dt => KExpr::Const(dt),
    })
}

/// Whether the `conv2d` `h` runs in its wave form (the `schedule` pass's decision).
pub(crate) fn wave_projection(m: &Module, h: NodeId) -> bool {
    m.schedule
        .as_ref()
        .and_then(|s| s.projections.get(&h))
        .is_some_and(|c| c.wave)
}

/// Whether the projection `h` runs event-driven (the `schedule` pass's decision).
pub(crate) fn sparse_projection(m: &Module, h: NodeId) -> bool {
    m.schedule
        .as_ref()
        .and_then(|s| s.projections.get(&h))
        .is_some_and(|c| c.sparse)
}
