//! The adjoint of one neuron time step, derived symbolically from its equations.
//!
//! A population's step (see [`crate::ir::eqn`]) is rewritten in SSA form: every assignment
//! makes a new value (`v.1`, `v.2`, ...), the spike is a value `S` whose derivative is the
//! chosen surrogate, and each `on_spike` assignment `x = e` becomes `x.k = select(S, e, x.j)`.
//! Reverse-mode differentiation of that straight-line program gives the backward step: the
//! adjoints of the states at the start of the step (carried to step `t - 1`) and of the
//! input current, from the adjoints of the states at the end of the step and of `S`.
//! The reverse-time kernel recomputes the forward values of the step from the saved state
//! (the forward kernel stores each state's value at the start of every step, or after its
//! update when that is all the statements need: [`StepAdjoint::save_post`]) and then runs
//! these statements; everything stays in registers.

use crate::ir::eqn::{EExpr, EqLeaf, NeuronEqs, ParamKind, Var};
use crate::ir::expr::{print, BinOp, Expr, Func, Node, Parens, Rules, Text, UnOp};

/// The derivative that replaces the spike's Heaviside step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SurrogateKind {
    /// SpikingJelly `ATan`: `alpha/2 / (1 + (pi/2 * alpha * x)^2)`.
    Atan,
    /// SpikingJelly `Sigmoid`: `alpha * sig(alpha x) * (1 - sig(alpha x))`.
    Sigmoid,
    /// SuperSpike / snnTorch `fast_sigmoid(slope = alpha)`: `1 / (alpha |x| + 1)^2`.
    FastSigmoid,
    /// SpikingJelly `PiecewiseQuadratic`-style triangle: `max(0, alpha - alpha^2 |x|)`.
    Triangle,
    /// Rectangle of width `1/alpha` and height `alpha`: `alpha * (|x| < 1/(2 alpha))`.
    Rectangle,
}

impl SurrogateKind {
    pub const NAMES: &'static [&'static str] =
        &["atan", "sigmoid", "fast_sigmoid", "triangle", "rectangle"];
    pub fn from_name(s: &str) -> Option<SurrogateKind> {
        Some(match s {
            "atan" => SurrogateKind::Atan,
            "sigmoid" => SurrogateKind::Sigmoid,
            "fast_sigmoid" | "superspike" => SurrogateKind::FastSigmoid,
            "triangle" => SurrogateKind::Triangle,
            "rectangle" => SurrogateKind::Rectangle,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            SurrogateKind::Atan => "atan",
            SurrogateKind::Sigmoid => "sigmoid",
            SurrogateKind::FastSigmoid => "fast_sigmoid",
            SurrogateKind::Triangle => "triangle",
            SurrogateKind::Rectangle => "rectangle",
        }
    }
    /// The conventional default `alpha` of each (SpikingJelly's, snnTorch's slope 25).
    pub fn default_alpha(self) -> f32 {
        match self {
            SurrogateKind::Atan => 2.0,
            SurrogateKind::Sigmoid => 4.0,
            SurrogateKind::FastSigmoid => 25.0,
            SurrogateKind::Triangle => 1.0,
            SurrogateKind::Rectangle => 1.0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Surrogate {
    pub kind: SurrogateKind,
    pub alpha: f32,
}

impl Default for Surrogate {
    fn default() -> Self {
        Surrogate {
            kind: SurrogateKind::Atan,
            alpha: 2.0,
        }
    }
}

/// How spikes are differentiated (the training method's options).
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct GradOptions {
    pub surrogate: Surrogate,
    /// Treat `S` in the reset as a constant (SpikingJelly `detach_reset`).
    pub detach_reset: bool,
    /// BPSTA spatial adjustment: `dS/du = 1/u` for a neuron that fired, 0 otherwise (no
    /// surrogate window for silent neurons); `u` is the spike condition's left operand.
    pub bpsta_spatial: bool,
    /// BPSTA temporal adjustment: the reset's dependence on `S` is replaced by this weight,
    /// so the error of the next step re-enters through the spike (`0.2` in BPSTA).
    pub bpsta_temporal: Option<f32>,
}

/// What a name in the backward step refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AdjLeaf {
    Param(usize),
    /// The step's input current.
    Current,
    /// A forward value of the step.
    Val(usize),
    /// A backward temporary (adjoint or surrogate term).
    Adj(usize),
}

/// An expression of the backward step.
pub type GExpr = Expr<AdjLeaf>;

impl GExpr {
    pub fn val(j: usize) -> GExpr {
        Expr::Leaf(AdjLeaf::Val(j))
    }
    pub fn adj(k: usize) -> GExpr {
        Expr::Leaf(AdjLeaf::Adj(k))
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum ValKind {
    /// State `i` at the start of the step (loaded from the saved buffer).
    StateIn(usize),
    /// An `update` assignment.
    Update,
    /// The spike: 1.0 or 0.0; its derivative is the surrogate.
    Spike,
    /// An `on_spike` assignment.
    Reset,
    /// The parallel schedule: state `i`'s last update, read from the time products
    /// (`lin`); a leaf whose adjoint ([`StepAdjoint::grad_lin`]) goes back through them.
    Lin(usize),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Val {
    pub name: String,
    pub kind: ValKind,
    /// `None` for [`ValKind::StateIn`].
    pub def: Option<GExpr>,
}

/// The backward of one step; see the module docs.
#[derive(Clone, Debug, PartialEq)]
pub struct StepAdjoint {
    pub vals: Vec<Val>,
    pub state_in: Vec<usize>,
    pub state_out: Vec<usize>,
    pub spike: Option<usize>,
    /// Names of the backward temporaries. The first `states.len()` are the incoming
    /// adjoints of the states at the end of the step, then (spiking models) that of `S`.
    pub adj_names: Vec<String>,
    /// Backward statements in order: `Adj(k) = expr`.
    pub stmts: Vec<(usize, GExpr)>,
    /// The adjoint of each state at the start of the step (`None`: zero).
    pub grad_state_in: Vec<Option<usize>>,
    /// The adjoint of the input current (`None`: the current does not matter).
    pub grad_current: Option<usize>,
    /// The parallel schedule ([`derive_parallel`]): the adjoint of each state's last update
    /// value (`None`: zero, or the sequential schedule). The backward pass sends it through
    /// the transposed Toeplitz product of the impulse response.
    pub grad_lin: Vec<Option<usize>>,
    /// This step's contribution to the gradient of each learned parameter, by parameter
    /// index (`None`: the step does not depend on it). The backward kernel sums it over
    /// time, neurons (when shared) and the batch.
    pub grad_params: Vec<(usize, Option<usize>)>,
    /// Each state's value after the `update` assignments (before the spike and the resets).
    pub post_update: Vec<usize>,
    /// What the forward kernel saves for the backward kernel: `false`, each state at the
    /// start of the step (the backward kernel recomputes the step from it and the input
    /// current); `true`, each state after its update ([`StepAdjoint::post_update`]), set by
    /// the autodiff pass when [`StepAdjoint::needs_only_post_update`] holds on the
    /// sequential schedule: the backward kernel then reads neither the input current nor
    /// the start state, one stream less (BENCHMARKS.md, "lif-fwdbwd profile").
    pub save_post: bool,
}

impl StepAdjoint {
    pub fn incoming_spike(&self) -> Option<usize> {
        self.spike.map(|_| self.state_in.len())
    }

    /// The forward values the backward statements need, in order, when every state's
    /// post-update value ([`StepAdjoint::post_update`]) is given; `None` when they also
    /// need the state at the start of the step, a value read from the time products or the
    /// input current.
    pub fn post_update_closure(&self) -> Option<Vec<usize>> {
        let need = self.needed(true)?;
        Some((0..self.vals.len()).filter(|&j| need[j]).collect())
    }

    /// The forward values the backward statements read, directly or through the
    /// definitions of other values, in the form the backward kernel computes them: from
    /// the saved post-update values (`save_post`, see [`StepAdjoint::post_update_closure`])
    /// or from the saved start states, the `lin` values and the current.
    pub fn needed_vals(&self) -> Vec<usize> {
        let need = self
            .needed(self.save_post)
            .expect("save_post is set only when the closure exists");
        (0..self.vals.len()).filter(|&j| need[j]).collect()
    }

    /// Which states the backward kernel reads from the forward's save buffers: with
    /// `save_post` the states whose post-update value it needs, otherwise those whose
    /// start-of-step value it needs. A state it never reads is not saved (no buffer, no
    /// store): an LI readout's backward, for one, is a function of the incoming adjoints
    /// only.
    pub fn saves(&self) -> Vec<bool> {
        let need = self.needed_vals();
        let at = if self.save_post {
            &self.post_update
        } else {
            &self.state_in
        };
        at.iter().map(|j| need.contains(j)).collect()
    }

    /// Marks the values the backward statements need. With `post`, a state's post-update
    /// value is a leaf (it is loaded), and `None` means a statement needs the start state,
    /// a `lin` value or the current.
    fn needed(&self, post: bool) -> Option<Vec<bool>> {
        fn walk(e: &GExpr, me: &StepAdjoint, post: bool, need: &mut Vec<bool>) -> bool {
            e.all_leaves(|l| match l {
                AdjLeaf::Param(_) | AdjLeaf::Adj(_) => true,
                AdjLeaf::Current => !post,
                AdjLeaf::Val(j) => {
                    if need[*j] {
                        return true;
                    }
                    need[*j] = true;
                    if post && me.post_update.contains(j) {
                        return true;
                    }
                    match (&me.vals[*j].kind, &me.vals[*j].def) {
                        (ValKind::StateIn(_) | ValKind::Lin(_), _) | (_, None) => !post,
                        (_, Some(d)) => walk(d, me, post, need),
                    }
                }
            })
        }
        let mut need = vec![false; self.vals.len()];
        for (_, e) in &self.stmts {
            if !walk(e, self, post, &mut need) {
                return None;
            }
        }
        Some(need)
    }

    /// True when the backward statements need only each state's post-update value.
    pub fn needs_only_post_update(&self) -> bool {
        self.grad_lin.iter().all(Option::is_none) && self.post_update_closure().is_some()
    }
}

/// Why a model cannot be differentiated.
#[derive(Clone, Debug, PartialEq)]
pub struct AdjointError(pub String);

/// Derive the backward step of `eqs`.
pub fn derive(eqs: &NeuronEqs, opts: &GradOptions, dt: f32) -> Result<StepAdjoint, AdjointError> {
    derive_with(eqs, opts, dt, false)
}

/// The backward step of a population on the parallel schedule: each state's last update is
/// a value read from the time products ([`ValKind::Lin`]), so the step differentiates only
/// what follows it (spike, traces, the carry into the previous step's value) and
/// [`StepAdjoint::grad_lin`] holds the adjoint of each such value.
pub fn derive_parallel(
    eqs: &NeuronEqs,
    opts: &GradOptions,
    dt: f32,
) -> Result<StepAdjoint, AdjointError> {
    derive_with(eqs, opts, dt, true)
}

fn derive_with(
    eqs: &NeuronEqs,
    opts: &GradOptions,
    dt: f32,
    parallel: bool,
) -> Result<StepAdjoint, AdjointError> {
    let mut d = Deriver {
        learned: eqs.params.iter().map(|p| p.learned()).collect(),
        param_terms: vec![Vec::new(); eqs.params.len()],
        ..Deriver::default()
    };
    let n_states = eqs.states.len();
    // SSA: the current value of each variable.
    let mut cur_state: Vec<usize> = Vec::new();
    for (i, s) in eqs.states.iter().enumerate() {
        cur_state.push(d.val(format!("{}.0", s.name), ValKind::StateIn(i), None));
    }
    let mut cur_local: Vec<Option<usize>> = vec![None; eqs.locals.len()];
    let mut versions: Vec<usize> = vec![0; n_states];

    // The local the spike condition names, if any: its assignment *is* the spike.
    let spike_local = match &eqs.spike {
        Some(EExpr::Leaf(EqLeaf::Local(l))) => Some(*l),
        _ => None,
    };
    let mut spike_val: Option<usize> = None;

    let last_update: Vec<Option<usize>> = (0..n_states)
        .map(|i| {
            eqs.update
                .iter()
                .rposition(|a| a.target == Var::State(i))
                .filter(|_| parallel)
        })
        .collect();
    let mut lin_val: Vec<Option<usize>> = vec![None; n_states];
    for (ai, a) in eqs.update.iter().enumerate() {
        let e = ssa(&a.value, &cur_state, &cur_local, dt)?;
        match a.target {
            Var::State(i) if last_update[i] == Some(ai) => {
                versions[i] += 1;
                let v = d.val(
                    format!("{}.{}", eqs.states[i].name, versions[i]),
                    ValKind::Lin(i),
                    None,
                );
                lin_val[i] = Some(v);
                cur_state[i] = v;
            }
            Var::State(i) => {
                versions[i] += 1;
                let name = format!("{}.{}", eqs.states[i].name, versions[i]);
                let e = d.shared(e, &name);
                let v = d.val(name, ValKind::Update, Some(e));
                cur_state[i] = v;
            }
            Var::Local(l) => {
                let is_spike = spike_local == Some(l) && spike_val.is_none() && is_cmp(&e);
                let kind = if is_spike {
                    ValKind::Spike
                } else {
                    ValKind::Update
                };
                let e = d.shared(e, &eqs.locals[l]);
                let v = d.val(eqs.locals[l].clone(), kind, Some(e));
                if is_spike {
                    spike_val = Some(v);
                }
                cur_local[l] = Some(v);
            }
        }
    }
    let post_update = cur_state.clone();
    if let Some(spike) = &eqs.spike {
        let s = match spike_val {
            // The named local is the spike only if it was not reassigned afterwards.
            Some(v) if cur_local[spike_local.unwrap()] == Some(v) => v,
            _ => {
                let e = ssa(spike, &cur_state, &cur_local, dt)?;
                if !is_cmp(&e) {
                    return Err(AdjointError(format!(
                        "the spike condition `{}` is not a comparison, so it has no surrogate \
                         gradient",
                        eqs.show(spike)
                    )));
                }
                let e = d.shared(e, "S");
                d.val("S".into(), ValKind::Spike, Some(e))
            }
        };
        // The forward kernel stores select(cond, 1, 0); a comparison already is 1 or 0.
        spike_val = Some(s);
        for a in &eqs.reset {
            let Var::State(i) = a.target else {
                return Err(AdjointError("an `on_spike` block assigns a local".into()));
            };
            let e = ssa(&a.value, &cur_state, &cur_local, dt)?;
            versions[i] += 1;
            let name = format!("{}.{}", eqs.states[i].name, versions[i]);
            let e = d.shared(e, &name);
            let v = d.val(
                name,
                ValKind::Reset,
                Some(GExpr::Call(
                    Func::Select,
                    vec![GExpr::val(s), e, GExpr::val(cur_state[i])],
                )),
            );
            cur_state[i] = v;
        }
    }

    // Reverse mode. Incoming adjoints first.
    d.contrib = vec![Vec::new(); d.vals.len()];
    for (i, s) in eqs.states.iter().enumerate() {
        let a = d.adj(format!("g_{}.out", s.name));
        d.contrib[cur_state[i]].push(GExpr::adj(a));
    }
    if let Some(s) = spike_val {
        let a = d.adj("g_S.out".into());
        d.contrib[s].push(GExpr::adj(a));
    }
    let mut grad_lin = vec![None; n_states];
    for j in (0..d.vals.len()).rev() {
        if matches!(d.vals[j].kind, ValKind::StateIn(_)) {
            continue;
        }
        if let ValKind::Lin(i) = d.vals[j].kind {
            grad_lin[i] = d.materialize(j);
            continue;
        }
        let Some(a) = d.materialize(j) else { continue };
        let def = d.vals[j].def.clone().expect("defined value");
        match d.vals[j].kind {
            ValKind::Spike => {
                let GExpr::Binary(op, l, r) = &def else {
                    unreachable!("spike values are comparisons")
                };
                // x = l - r for `l >= r` / `l > r`, r - l for `<=` / `<`; u is the membrane.
                let (x, u) = match op {
                    BinOp::Ge | BinOp::Gt => (R.sub((**l).clone(), (**r).clone()), (**l).clone()),
                    _ => (R.sub((**r).clone(), (**l).clone()), (**r).clone()),
                };
                let sg = if opts.bpsta_spatial {
                    // select(S, 1/u, 0)
                    GExpr::Call(
                        Func::Select,
                        vec![
                            GExpr::val(j),
                            R.div(GExpr::Const(1.0), u),
                            GExpr::Const(0.0),
                        ],
                    )
                } else {
                    let xv = d.adj("sg_x".into());
                    d.stmts.push((xv, x.clone()));
                    surrogate(opts.surrogate, GExpr::adj(xv))
                };
                let sgv = d.adj("sg".into());
                d.stmts.push((sgv, sg));
                let g = R.mul(GExpr::adj(a), GExpr::adj(sgv));
                d.push(&x, g);
            }
            ValKind::Reset => {
                let GExpr::Call(Func::Select, args) = &def else {
                    unreachable!("reset values are selects")
                };
                let (s, e, prev) = (&args[0], &args[1], &args[2]);
                d.push(e, R.select(s.clone(), GExpr::adj(a), GExpr::Const(0.0)));
                d.push(prev, R.select(s.clone(), GExpr::Const(0.0), GExpr::adj(a)));
                if let Some(gamma) = opts.bpsta_temporal {
                    d.push(s, R.mul(GExpr::Const(gamma), GExpr::adj(a)));
                } else if !opts.detach_reset {
                    d.push(s, R.mul(GExpr::adj(a), R.sub(e.clone(), prev.clone())));
                }
            }
            _ => d.push(&def, GExpr::adj(a)),
        }
    }
    let grad_state_in = cur_state_in(&d, n_states)
        .into_iter()
        .map(|j| d.materialize(j))
        .collect::<Vec<_>>();
    let grad_current = if d.current.is_empty() {
        None
    } else {
        let terms = std::mem::take(&mut d.current);
        Some(d.sum_into("g_I".into(), terms))
    };
    let mut grad_params = Vec::new();
    for (i, p) in eqs.params.iter().enumerate() {
        if !p.learned() {
            continue;
        }
        let terms = std::mem::take(&mut d.param_terms[i]);
        grad_params.push((
            i,
            (!terms.is_empty()).then(|| d.sum_into(format!("g_{}", p.name), terms)),
        ));
    }
    let state_in = cur_state_in(&d, n_states);
    Ok(StepAdjoint {
        vals: d.vals,
        state_in,
        state_out: cur_state,
        spike: spike_val,
        adj_names: d.adj_names,
        stmts: d.stmts,
        grad_state_in,
        grad_current,
        grad_lin: if parallel { grad_lin } else { Vec::new() },
        grad_params,
        post_update,
        save_post: false,
    })
}

fn cur_state_in(d: &Deriver, n: usize) -> Vec<usize> {
    (0..n)
        .map(|i| {
            d.vals
                .iter()
                .position(|v| v.kind == ValKind::StateIn(i))
                .expect("state value")
        })
        .collect()
}

#[derive(Default)]
struct Deriver {
    vals: Vec<Val>,
    contrib: Vec<Vec<GExpr>>,
    current: Vec<GExpr>,
    /// Which parameters are learned (have a gradient), and the terms of their adjoints.
    learned: Vec<bool>,
    param_terms: Vec<Vec<GExpr>>,
    adj_names: Vec<String>,
    stmts: Vec<(usize, GExpr)>,
}

impl Deriver {
    fn val(&mut self, name: String, kind: ValKind, def: Option<GExpr>) -> usize {
        self.vals.push(Val { name, kind, def });
        self.vals.len() - 1
    }
    fn adj(&mut self, name: String) -> usize {
        self.adj_names.push(name);
        self.adj_names.len() - 1
    }
    /// The adjoint of value `j` as one variable (`None` when nothing flows into it).
    fn materialize(&mut self, j: usize) -> Option<usize> {
        let terms = std::mem::take(&mut self.contrib[j]);
        if terms.is_empty() {
            return None;
        }
        if let [GExpr::Leaf(AdjLeaf::Adj(a))] = terms.as_slice() {
            return Some(*a);
        }
        let name = format!("g_{}", self.vals[j].name);
        Some(self.sum_into(name, terms))
    }
    fn sum_into(&mut self, name: String, terms: Vec<GExpr>) -> usize {
        let mut it = terms.into_iter();
        let first = it.next().expect("a term");
        let e = it.fold(first, |a, b| R.add(a, b));
        let a = self.adj(name);
        self.stmts.push((a, e));
        a
    }
    /// Reverse-mode through an expression tree: `a` is the adjoint of `e`'s value.
    fn push(&mut self, e: &GExpr, a: GExpr) {
        if !self.depends(e) || a == GExpr::Const(0.0) {
            return;
        }
        match e {
            GExpr::Leaf(AdjLeaf::Param(i)) => self.param_terms[*i].push(a),
            GExpr::Const(_) | GExpr::Leaf(AdjLeaf::Adj(_)) => {}
            GExpr::Leaf(AdjLeaf::Current) => self.current.push(a),
            GExpr::Leaf(AdjLeaf::Val(j)) => self.contrib[*j].push(a),
            GExpr::Unary(UnOp::Neg, x) => self.push(x, R.neg(a)),
            GExpr::Unary(UnOp::Not, _) => {}
            GExpr::Binary(op, x, y) => {
                let (x, y) = (&**x, &**y);
                match op {
                    BinOp::Add => {
                        self.push(x, a.clone());
                        self.push(y, a);
                    }
                    BinOp::Sub => {
                        self.push(x, a.clone());
                        self.push(y, R.neg(a));
                    }
                    BinOp::Mul => {
                        self.push(x, R.mul(a.clone(), y.clone()));
                        self.push(y, R.mul(a, x.clone()));
                    }
                    BinOp::Div => {
                        self.push(x, R.div(a.clone(), y.clone()));
                        // d(x/y)/dy = -x / y^2
                        let dy = R.neg(R.div(R.mul(a, x.clone()), R.mul(y.clone(), y.clone())));
                        self.push(y, dy);
                    }
                    BinOp::Pow => {
                        // d(x^y)/dx = y * x^(y-1); d/dy = x^y * ln x
                        let px = R.mul(
                            R.mul(a.clone(), y.clone()),
                            GExpr::Binary(
                                BinOp::Pow,
                                Box::new(x.clone()),
                                Box::new(R.sub(y.clone(), GExpr::Const(1.0))),
                            ),
                        );
                        self.push(x, px);
                        if self.depends(y) {
                            let py =
                                R.mul(R.mul(a, e.clone()), GExpr::Call(Func::Log, vec![x.clone()]));
                            self.push(y, py);
                        }
                    }
                    // Comparisons and logic are steps: zero almost everywhere. Only the
                    // spike condition gets a surrogate.
                    _ => {}
                }
            }
            GExpr::Call(f, args) => {
                let x = args[0].clone();
                match f {
                    Func::Exp => self.push(&x, R.mul(a, e.clone())),
                    Func::Log => self.push(&x, R.div(a, x.clone())),
                    Func::Sqrt => self.push(&x, R.div(a, R.mul(GExpr::Const(2.0), e.clone()))),
                    Func::Abs => self.push(
                        &x,
                        R.select(
                            GExpr::Binary(
                                BinOp::Ge,
                                Box::new(x.clone()),
                                Box::new(GExpr::Const(0.0)),
                            ),
                            a.clone(),
                            R.neg(a),
                        ),
                    ),
                    Func::Tanh => self.push(
                        &x,
                        R.mul(a, R.sub(GExpr::Const(1.0), R.mul(e.clone(), e.clone()))),
                    ),
                    Func::Sigmoid => self.push(
                        &x,
                        R.mul(R.mul(a, e.clone()), R.sub(GExpr::Const(1.0), e.clone())),
                    ),
                    Func::Floor | Func::Step => {}
                    Func::Min | Func::Max => {
                        let y = args[1].clone();
                        let op = if *f == Func::Min {
                            BinOp::Le
                        } else {
                            BinOp::Ge
                        };
                        let c = GExpr::Binary(op, Box::new(x.clone()), Box::new(y.clone()));
                        self.push(&x, R.select(c.clone(), a.clone(), GExpr::Const(0.0)));
                        self.push(&y, R.select(c, GExpr::Const(0.0), a));
                    }
                    Func::Select => {
                        let c = args[0].clone();
                        self.push(&args[1], R.select(c.clone(), a.clone(), GExpr::Const(0.0)));
                        self.push(&args[2], R.select(c, GExpr::Const(0.0), a));
                    }
                    Func::Clamp => {
                        let (lo, hi) = (args[1].clone(), args[2].clone());
                        let below =
                            GExpr::Binary(BinOp::Lt, Box::new(x.clone()), Box::new(lo.clone()));
                        let above =
                            GExpr::Binary(BinOp::Gt, Box::new(x.clone()), Box::new(hi.clone()));
                        let inside = GExpr::Binary(
                            BinOp::And,
                            Box::new(GExpr::Unary(UnOp::Not, Box::new(below.clone()))),
                            Box::new(GExpr::Unary(UnOp::Not, Box::new(above.clone()))),
                        );
                        self.push(&x, R.select(inside, a.clone(), GExpr::Const(0.0)));
                        self.push(&lo, R.select(below, a.clone(), GExpr::Const(0.0)));
                        self.push(&hi, R.select(above, a, GExpr::Const(0.0)));
                    }
                }
            }
        }
    }
}

/// Forward expressions of more nodes than this, or deeper than [`SHARE_DEEPER`], are
/// differentiated through temporaries ([`Deriver::shared`]). Reverse mode over a tree writes
/// each operand's adjoint as a copy of its sibling operands and of the adjoint above it, so
/// a nested quotient or power of n levels has a backward step of about n^3 nodes (100 levels
/// printed 240-600 MB of Rust); over temporaries it is linear. Every built-in and test
/// model's expressions are smaller (at most 24 nodes, 7 deep), so their backward steps are
/// unchanged; the largest backward step a smaller expression makes (a 10-level nested power
/// of the membrane) prints about 70 KB of Rust.
const SHARE_ABOVE: usize = 32;
/// See [`SHARE_ABOVE`].
const SHARE_DEEPER: usize = 10;

impl Deriver {
    /// `e` (the definition of value `name`) as it is differentiated: itself when small and
    /// shallow, otherwise its root operation over a forward value per interior node that
    /// depends on something with a gradient (`name.t1`, `name.t2`, ..., innermost first), so
    /// that each adjoint is a short expression of values and adjoint temporaries.
    fn shared(&mut self, e: GExpr, name: &str) -> GExpr {
        let (nodes, depth) = e.fold(&mut |n: Node<'_, AdjLeaf, (usize, usize)>| match n {
            Node::Const(_) | Node::Leaf(_) => (1, 1),
            Node::Unary(_, (n, d)) => (n + 1, d + 1),
            Node::Binary(_, (na, da), (nb, db)) => (na + nb + 1, da.max(db) + 1),
            Node::Call(_, args) => args
                .into_iter()
                .fold((1, 1), |(n, d), (na, da)| (n + na, d.max(da + 1))),
        });
        if nodes <= SHARE_ABOVE && depth <= SHARE_DEEPER {
            return e;
        }
        let mut count = 0;
        self.operands(e, &mut |d, x| d.hoist(x, name, &mut count))
    }

    /// `e` with each interior node that depends on a value, the current or a learned
    /// parameter made a forward value of its own (operands first); see [`Deriver::shared`].
    fn hoist(&mut self, e: GExpr, name: &str, count: &mut usize) -> GExpr {
        if matches!(e, GExpr::Const(_) | GExpr::Leaf(_)) {
            return e;
        }
        let node = self.operands(e, &mut |d, x| d.hoist(x, name, count));
        if !self.depends(&node) {
            return node;
        }
        *count += 1;
        GExpr::val(self.val(format!("{name}.t{count}"), ValKind::Update, Some(node)))
    }

    /// The same operation over `f` of each operand, left to right (a leaf as it is).
    fn operands(&mut self, e: GExpr, f: &mut impl FnMut(&mut Deriver, GExpr) -> GExpr) -> GExpr {
        match e {
            GExpr::Unary(op, x) => GExpr::unary(op, f(self, *x)),
            GExpr::Binary(op, a, b) => {
                let a = f(self, *a);
                GExpr::bin(op, a, f(self, *b))
            }
            GExpr::Call(func, args) => {
                GExpr::Call(func, args.into_iter().map(|a| f(self, a)).collect())
            }
            leaf => leaf,
        }
    }

    /// Whether an expression depends on anything with a gradient (values, the current, a
    /// learned parameter).
    fn depends(&self, e: &GExpr) -> bool {
        e.any_leaf(|l| match l {
            AdjLeaf::Val(_) | AdjLeaf::Current => true,
            AdjLeaf::Param(i) => self.learned.get(*i).copied().unwrap_or(false),
            AdjLeaf::Adj(_) => false,
        })
    }
}

fn is_cmp(e: &GExpr) -> bool {
    matches!(
        e,
        GExpr::Binary(BinOp::Ge | BinOp::Gt | BinOp::Le | BinOp::Lt, _, _)
    )
}

fn ssa(
    e: &EExpr,
    states: &[usize],
    locals: &[Option<usize>],
    dt: f32,
) -> Result<GExpr, AdjointError> {
    e.try_map_leaves(&mut |l| {
        Ok(match l {
            EqLeaf::Param(i) => GExpr::Leaf(AdjLeaf::Param(*i)),
            EqLeaf::State(i) => GExpr::val(states[*i]),
            EqLeaf::Local(i) => GExpr::val(
                locals[*i]
                    .ok_or_else(|| AdjointError("a local is read before it is set".into()))?,
            ),
            EqLeaf::Current => GExpr::Leaf(AdjLeaf::Current),
            // The forward kernels fold dt to a constant too.
            EqLeaf::Dt => GExpr::Const(dt),
        })
    })
}

/// The surrogate derivative of the Heaviside step at `x` (a temporary).
fn surrogate(s: Surrogate, x: GExpr) -> GExpr {
    let al = s.alpha;
    let absx = || GExpr::Call(Func::Abs, vec![x.clone()]);
    match s.kind {
        SurrogateKind::Atan => {
            // alpha/2 / (1 + (pi/2 * alpha * x)^2)
            let k = R.mul(GExpr::Const(std::f32::consts::FRAC_PI_2 * al), x.clone());
            R.div(
                GExpr::Const(al / 2.0),
                R.add(GExpr::Const(1.0), R.mul(k.clone(), k)),
            )
        }
        SurrogateKind::Sigmoid => {
            let sg = GExpr::Call(Func::Sigmoid, vec![R.mul(GExpr::Const(al), x.clone())]);
            R.mul(
                R.mul(GExpr::Const(al), sg.clone()),
                R.sub(GExpr::Const(1.0), sg),
            )
        }
        SurrogateKind::FastSigmoid => {
            let d = R.add(R.mul(GExpr::Const(al), absx()), GExpr::Const(1.0));
            R.div(GExpr::Const(1.0), R.mul(d.clone(), d))
        }
        SurrogateKind::Triangle => GExpr::Call(
            Func::Max,
            vec![
                GExpr::Const(0.0),
                R.sub(GExpr::Const(al), R.mul(GExpr::Const(al * al), absx())),
            ],
        ),
        SurrogateKind::Rectangle => R.select(
            GExpr::Binary(
                BinOp::Lt,
                Box::new(absx()),
                Box::new(GExpr::Const(0.5 / al)),
            ),
            GExpr::Const(al),
            GExpr::Const(0.0),
        ),
    }
}

// ---------------------------------------------------------------- simplifying constructors

/// The adjoint statements are pinned as the identities alone simplify them.
const R: Rules = Rules::IDENTITIES;

// ---------------------------------------------------------------- text dump

/// `e` with the names of one model and step, every operation parenthesised.
pub fn show(eqs: &NeuronEqs, step: &StepAdjoint, e: &GExpr) -> String {
    let leaf = |l: &AdjLeaf| match l {
        AdjLeaf::Param(i) => eqs.params[*i].name.clone(),
        AdjLeaf::Current => "I".into(),
        AdjLeaf::Val(j) => step.vals[*j].name.clone(),
        AdjLeaf::Adj(k) => step.adj_names[*k].clone(),
    };
    let text = Text {
        parens: Parens::Full,
        leaf,
    };
    print(&text, e)
}

impl StepAdjoint {
    /// A readable listing for `snnc ir --after autodiff`.
    pub fn dump(&self, eqs: &NeuronEqs, out: &mut String) {
        use std::fmt::Write;
        let show = |e| show(eqs, self, e);
        let _ = writeln!(out, "      forward (recomputed from the saved state):");
        for v in &self.vals {
            match (&v.kind, &v.def) {
                (ValKind::StateIn(i), _) => {
                    let _ = writeln!(out, "        {} = saved {}[t]", v.name, eqs.states[*i].name);
                }
                (ValKind::Lin(i), _) => {
                    let _ = writeln!(
                        out,
                        "        {} = lin {}[t]   // from the time products",
                        v.name, eqs.states[*i].name
                    );
                }
                (kind, Some(d)) => {
                    let tag = match kind {
                        ValKind::Spike => "   // spike: d/dx = surrogate",
                        _ => "",
                    };
                    let _ = writeln!(out, "        {} = {}{tag}", v.name, show(d));
                }
                _ => {}
            }
        }
        let _ = writeln!(out, "      backward (reverse time):");
        for (a, e) in &self.stmts {
            let _ = writeln!(out, "        {} = {}", self.adj_names[*a], show(e));
        }
        for (i, g) in self.grad_state_in.iter().enumerate() {
            let name = &eqs.states[i].name;
            match g {
                Some(a) => {
                    let _ = writeln!(out, "        carry g_{name}.out <- {}", self.adj_names[*a]);
                }
                None => {
                    let _ = writeln!(out, "        carry g_{name}.out <- 0");
                }
            }
        }
        for (i, g) in self.grad_lin.iter().enumerate() {
            let name = &eqs.states[i].name;
            let g = g.map_or("0".to_string(), |a| self.adj_names[a].clone());
            let _ = writeln!(out, "        dL/dlin_{name}[t] = {g}   // then toeplitz^T");
        }
        match self.grad_current {
            Some(a) => {
                let _ = writeln!(out, "        dL/dI[t] = {}", self.adj_names[a]);
            }
            None => {
                let _ = writeln!(out, "        dL/dI[t] = 0");
            }
        }
        for &(i, g) in &self.grad_params {
            let name = &eqs.params[i].name;
            let (sum, at) = match eqs.params[i].kind {
                ParamKind::Learned { per_neuron: true } => ("the batch", "[n]"),
                _ => ("neurons and the batch", ""),
            };
            match g {
                Some(a) => {
                    let _ = writeln!(
                        out,
                        "        dL/d{name}{at} += {}   // summed over t, {sum}",
                        self.adj_names[a]
                    );
                }
                None => {
                    let _ = writeln!(out, "        dL/d{name}{at} += 0");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::net::NodeKind;

    fn eqs_of(src: &str, pop: &str) -> NeuronEqs {
        let mut c = crate::Compiler::default();
        let parsed = c.parse_str("t.snn", src).unwrap();
        let m = c.module_until(&parsed, "neurons").unwrap();
        let h = m.node_by_name(pop).unwrap();
        match &m.nodes[h].kind {
            NodeKind::Population { eqs: Some(e), .. } => (**e).clone(),
            _ => panic!(),
        }
    }

    #[test]
    fn lif_hard_reset_matches_spikingjelly_recursion() {
        let eqs = eqs_of(
            "model m { T = 4\n input x: [T, 3]\n s = LIF(x, tau = 2.0) \n output spikes(s) }",
            "s",
        );
        let step = derive(&eqs, &GradOptions::default(), 1.0).unwrap();
        let mut out = String::new();
        step.dump(&eqs, &mut out);
        println!("{out}");
        assert!(out.contains("sg_x = (v.1 - v_threshold)"), "{out}");
    }

    /// A state is saved only when the backward statements read it: an LI readout's
    /// backward is a function of the incoming adjoints alone, so nothing is saved (a
    /// learned `tau` needs the start state, and it is); a CUBALIF saved after its update
    /// needs only `v`; a LIF needs `v` either way.
    #[test]
    fn saves_only_the_states_the_backward_reads() {
        let saves = |pop: &str, post: Option<bool>| {
            let src =
                format!("model m {{ T = 4\n input x: [T, 3]\n s = {pop}\n output spikes(s) }}");
            let src = if pop.starts_with("LI(") {
                src.replace("spikes(s)", "trace(s.v)")
            } else {
                src
            };
            let mut step = derive(&eqs_of(&src, "s"), &GradOptions::default(), 1.0).unwrap();
            step.save_post = post.unwrap_or_else(|| step.needs_only_post_update());
            step.saves()
        };
        for post in [None, Some(false)] {
            assert_eq!(saves("LI(x, tau = 4.0)", post), [false]);
            assert_eq!(saves("LIF(x, tau = 2.0)", post), [true]);
        }
        assert_eq!(saves("LI(x, tau = learn(4.0))", None), [true]);
        assert_eq!(saves("CUBALIF(x)", None), [false, true]);
        assert_eq!(saves("CUBALIF(x)", Some(false)), [true, true]);
    }
}
