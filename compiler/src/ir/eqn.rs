//! Neuron equations: a population's model after flags and choices are resolved.
//!
//! One time step is: run `update` in order; evaluate `spike` (fires when non-zero); then
//! every `reset` assignment `x = e` acts as `x = S ? e : x`. Comparisons yield 1.0 or 0.0.
//! All arithmetic is f32 in the written order, so back ends reproduce peers bit for bit.

use std::fmt;

pub use super::op::{BinOp, UnOp};
use snn_runtime::plan::ParamCheck;

#[derive(Clone, Debug, PartialEq)]
pub struct NeuronEqs {
    /// The model's name, e.g. `LIF`.
    pub model: String,
    /// Compile-time switches as chosen, e.g. `decay_input=true reset=hard`.
    pub variant: String,
    pub params: Vec<EqParam>,
    pub states: Vec<EqState>,
    /// Per-step temporaries (`let`).
    pub locals: Vec<String>,
    pub update: Vec<Assign>,
    pub spike: Option<EExpr>,
    pub reset: Vec<Assign>,
    /// `mix`: the input current is first mixed over the time axis by learnable weights.
    pub mix: Option<Mix>,
}

/// How a model mixes its input current over the time axis before the per-step update
/// (the PSN family). The weights are plan weights `NAME.weight` and `NAME.bias`.
#[derive(Clone, Debug, PartialEq)]
pub enum Mix {
    /// `I[t] <- sum_j weight[t][j] * I[j] + bias[t]`: a `[T, T]` matrix, `bias` `[T, 1]`
    /// (SpikingJelly `PSN`). Every step reads every step.
    Full,
    /// The same through `weight * (lambda * band_k + 1 - lambda)`, `band_k[t][j] = 1` iff
    /// `t - k < j <= t` (SpikingJelly `MaskedPSN`); `lambda` is a parameter index.
    Masked { k: usize, lambda: usize },
    /// `I[t] <- sum_(m < k) weight[k-1-m] * I[t-m] + bias`: `k` weights shared by every
    /// step, `bias` `[]` (SpikingJelly `SlidingPSN`); runs at any T. `exp_init`: the weights
    /// start at `2^-(k-1), .., 1/2, 1`, else uniform.
    Sliding { k: usize, exp_init: bool },
}

impl Mix {
    /// Step `t` reads only steps `<= t`, a bounded number of them: it can run step by step.
    pub fn causal(&self) -> bool {
        matches!(self, Mix::Sliding { .. })
    }
    pub fn describe(&self, params: &[EqParam]) -> String {
        match self {
            Mix::Full => "mix full: I[t] = sum_j weight[t][j] * I[j] + bias[t]".into(),
            Mix::Masked { k, lambda } => {
                let l = &params[*lambda].name;
                format!(
                    "mix masked(k={k}, {l}): I[t] = sum_j ({l} * band{k}[t][j] + 1 - {l}) * weight[t][j] * I[j] + bias[t]"
                )
            }
            Mix::Sliding { k, exp_init } => format!(
                "mix sliding(k={k}{}): I[t] = sum_(m<{k}) weight[{}-m] * I[t-m] + bias",
                if *exp_init { ", exp_init" } else { "" },
                k - 1
            ),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct EqParam {
    pub name: String,
    /// The value; for a learned parameter its initial value.
    pub value: f32,
    pub check: ParamCheck,
    pub kind: ParamKind,
}

/// Where a parameter's value lives at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    /// In the flat parameter array: set at run time (`Session::set_param`), not trained.
    Runtime,
    /// A plan weight (`learn(init)`): `[1]`, shared by the population's neurons, or `[F]`
    /// with `per_neuron`; saved, loaded and trained like the projections' weights.
    Learned { per_neuron: bool },
    /// Read only by the initial value of a learned parameter in the model's definition (e.g.
    /// PLIF's `init_tau`): folded at compile time, absent from the plan.
    InitOnly,
}

impl EqParam {
    pub fn learned(&self) -> bool {
        matches!(self.kind, ParamKind::Learned { .. })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct EqState {
    pub name: String,
    /// Initial value; may read params.
    pub init: EExpr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Var {
    State(usize),
    Local(usize),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Assign {
    pub target: Var,
    pub value: EExpr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Func {
    Exp,
    Log,
    Sqrt,
    Abs,
    Tanh,
    Floor,
    Sigmoid,
    /// Heaviside with `step(0) = 1`.
    Step,
    Min,
    Max,
    /// `select(c, a, b)`: `a` where `c != 0`, else `b`.
    Select,
    Clamp,
}

impl Func {
    pub fn from_name(name: &str) -> Option<(Func, usize)> {
        Some(match name {
            "exp" => (Func::Exp, 1),
            "log" => (Func::Log, 1),
            "sqrt" => (Func::Sqrt, 1),
            "abs" => (Func::Abs, 1),
            "tanh" => (Func::Tanh, 1),
            "floor" => (Func::Floor, 1),
            "sigmoid" => (Func::Sigmoid, 1),
            "step" => (Func::Step, 1),
            "min" => (Func::Min, 2),
            "max" => (Func::Max, 2),
            "select" => (Func::Select, 3),
            "clamp" => (Func::Clamp, 3),
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            Func::Exp => "exp",
            Func::Log => "log",
            Func::Sqrt => "sqrt",
            Func::Abs => "abs",
            Func::Tanh => "tanh",
            Func::Floor => "floor",
            Func::Sigmoid => "sigmoid",
            Func::Step => "step",
            Func::Min => "min",
            Func::Max => "max",
            Func::Select => "select",
            Func::Clamp => "clamp",
        }
    }
    pub const NAMES: &'static [&'static str] = &[
        "exp", "log", "sqrt", "abs", "tanh", "floor", "sigmoid", "step", "min", "max", "select",
        "clamp",
    ];
}

#[derive(Clone, Debug, PartialEq)]
pub enum EExpr {
    Const(f32),
    Param(usize),
    State(usize),
    Local(usize),
    /// The summed synaptic input of this step.
    Current,
    /// The model's step length.
    Dt,
    Unary(UnOp, Box<EExpr>),
    Binary(BinOp, Box<EExpr>, Box<EExpr>),
    Call(Func, Vec<EExpr>),
}

impl EExpr {
    pub fn var(v: Var) -> EExpr {
        match v {
            Var::State(i) => EExpr::State(i),
            Var::Local(i) => EExpr::Local(i),
        }
    }
    /// Visit every parameter read.
    pub fn visit_params(&self, f: &mut impl FnMut(usize)) {
        match self {
            EExpr::Param(i) => f(*i),
            EExpr::Unary(_, x) => x.visit_params(f),
            EExpr::Binary(_, a, b) => {
                a.visit_params(f);
                b.visit_params(f);
            }
            EExpr::Call(_, args) => args.iter().for_each(|a| a.visit_params(f)),
            EExpr::Const(_) | EExpr::State(_) | EExpr::Local(_) | EExpr::Current | EExpr::Dt => {}
        }
    }
    /// Visit every variable read.
    pub fn visit_vars(&self, f: &mut impl FnMut(Var)) {
        match self {
            EExpr::State(i) => f(Var::State(*i)),
            EExpr::Local(i) => f(Var::Local(*i)),
            EExpr::Unary(_, e) => e.visit_vars(f),
            EExpr::Binary(_, a, b) => {
                a.visit_vars(f);
                b.visit_vars(f);
            }
            EExpr::Call(_, args) => args.iter().for_each(|a| a.visit_vars(f)),
            EExpr::Const(_) | EExpr::Param(_) | EExpr::Current | EExpr::Dt => {}
        }
    }
    pub fn reads_current(&self) -> bool {
        match self {
            EExpr::Current => true,
            EExpr::Unary(_, e) => e.reads_current(),
            EExpr::Binary(_, a, b) => a.reads_current() || b.reads_current(),
            EExpr::Call(_, args) => args.iter().any(EExpr::reads_current),
            _ => false,
        }
    }
}

/// Prints expressions with the names of one model, fully parenthesised where needed.
pub struct ExprPrinter<'a> {
    pub eqs: &'a NeuronEqs,
    pub expr: &'a EExpr,
}

fn prec(e: &EExpr) -> u8 {
    match e {
        EExpr::Binary(op, _, _) => match op {
            BinOp::Or => 1,
            BinOp::And => 2,
            BinOp::Eq | BinOp::Ne => 3,
            BinOp::Ge | BinOp::Le | BinOp::Gt | BinOp::Lt => 4,
            BinOp::Add | BinOp::Sub => 5,
            BinOp::Mul | BinOp::Div => 6,
            BinOp::Pow => 8,
        },
        EExpr::Unary(..) => 7,
        _ => 9,
    }
}

impl<'a> fmt::Display for ExprPrinter<'a> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sub = |e: &'a EExpr| ExprPrinter {
            eqs: self.eqs,
            expr: e,
        };
        match self.expr {
            EExpr::Const(c) => write!(f, "{c:?}"),
            EExpr::Param(i) => write!(f, "{}", self.eqs.params[*i].name),
            EExpr::State(i) => write!(f, "{}", self.eqs.states[*i].name),
            EExpr::Local(i) => write!(f, "{}", self.eqs.locals[*i]),
            EExpr::Current => write!(f, "I"),
            EExpr::Dt => write!(f, "dt"),
            EExpr::Unary(op, e) => {
                let o = if *op == UnOp::Neg { "-" } else { "!" };
                if prec(e) < 7 {
                    write!(f, "{o}({})", sub(e))
                } else {
                    write!(f, "{o}{}", sub(e))
                }
            }
            EExpr::Binary(op, a, b) => {
                let p = prec(self.expr);
                // Left-associative: the right operand needs parentheses at equal precedence.
                let (lp, rp) = if *op == BinOp::Pow {
                    (p + 1, p)
                } else {
                    (p, p + 1)
                };
                if prec(a) < lp {
                    write!(f, "({})", sub(a))?;
                } else {
                    write!(f, "{}", sub(a))?;
                }
                write!(f, " {} ", op.symbol())?;
                if prec(b) < rp {
                    write!(f, "({})", sub(b))
                } else {
                    write!(f, "{}", sub(b))
                }
            }
            EExpr::Call(func, args) => {
                write!(f, "{}(", func.name())?;
                for (i, a) in args.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{}", sub(a))?;
                }
                write!(f, ")")
            }
        }
    }
}

impl NeuronEqs {
    pub fn show<'a>(&'a self, e: &'a EExpr) -> ExprPrinter<'a> {
        ExprPrinter { eqs: self, expr: e }
    }
    pub fn var_name(&self, v: Var) -> &str {
        match v {
            Var::State(i) => &self.states[i].name,
            Var::Local(i) => &self.locals[i],
        }
    }
    pub fn spikes(&self) -> bool {
        self.spike.is_some()
    }
    /// A key equal for populations that can share one kernel (same code; params may differ).
    pub fn code_key(&self) -> String {
        let mut s = format!("{}[{}]", self.model, self.variant);
        for a in self.update.iter().chain(&self.reset) {
            s.push_str(&format!("{:?}={:?};", a.target, a.value));
        }
        s.push_str(&format!("{:?}", self.spike));
        for st in &self.states {
            s.push_str(&format!("{:?}", st.init));
        }
        // Learned parameters are read from weights: different code.
        for p in self.params.iter().filter(|p| p.kind != ParamKind::Runtime) {
            s.push_str(&format!("{}:{:?};", p.name, p.kind));
        }
        if let Some(mx) = &self.mix {
            s.push_str(&format!("{mx:?}"));
        }
        s
    }
}

impl fmt::Display for NeuronEqs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "    model {} [{}]", self.model, self.variant)?;
        for p in &self.params {
            match p.kind {
                ParamKind::Runtime => writeln!(f, "      param {} = {:?}", p.name, p.value)?,
                ParamKind::Learned { per_neuron } => writeln!(
                    f,
                    "      param {} = learn({:?}{})",
                    p.name,
                    p.value,
                    if per_neuron { ", per_neuron" } else { "" }
                )?,
                ParamKind::InitOnly => writeln!(
                    f,
                    "      param {} = {:?}  // compile time: initial values only",
                    p.name, p.value
                )?,
            }
        }
        if let Some(mx) = &self.mix {
            writeln!(f, "      {}", mx.describe(&self.params))?;
        }
        for s in &self.states {
            writeln!(f, "      state {} = {}", s.name, self.show(&s.init))?;
        }
        for a in &self.update {
            let kw = if matches!(a.target, Var::Local(_)) {
                "let "
            } else {
                ""
            };
            writeln!(
                f,
                "      {kw}{} = {}",
                self.var_name(a.target),
                self.show(&a.value)
            )?;
        }
        match &self.spike {
            Some(s) => writeln!(f, "      spike S = {}", self.show(s))?,
            None => writeln!(f, "      no spikes")?,
        }
        for a in &self.reset {
            writeln!(
                f,
                "      {} = S ? {} : {}",
                self.var_name(a.target),
                self.show(&a.value),
                self.var_name(a.target)
            )?;
        }
        Ok(())
    }
}
