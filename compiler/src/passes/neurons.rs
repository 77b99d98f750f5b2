//! Pass `neurons`: lower each population's neuron model to equations ([`NeuronEqs`]):
//! bind the instance's parameter values (checked against the model's `where` clauses),
//! resolve compile-time `if`s on flags and choices, turn ODEs into Euler steps, and resolve
//! every name in the equations.

use std::collections::HashMap;

use crate::diag::{did_you_mean, DResult, Diagnostic, ErrorKind, Span};
use crate::front::ast::{self, BinOp, Expr, ExprKind, Stmt, UnOp};
use crate::ir::eqn::*;
use crate::ir::net::*;
use snn_runtime::plan::ParamCheck;

/// `models`: the definitions `resolve` checked the populations against
/// ([`super::resolve::neuron_models`]).
pub fn run(m: &mut Module, models: &[ast::NeuronDef]) -> DResult<()> {
    for h in m.nodes.handles().collect::<Vec<_>>() {
        let NodeKind::Population { model, args, .. } = &m.nodes[h].kind else {
            continue;
        };
        let def = models
            .iter()
            .find(|d| d.name.name == *model)
            .expect("resolve checked the model exists");
        let eqs = lower(def, args)?;
        if let NodeKind::Population { eqs: slot, .. } = &mut m.nodes[h].kind {
            *slot = Some(Box::new(eqs));
        }
    }
    // Outputs that name populations: check they exist and resolve trace states.
    for o in &mut m.outputs {
        let node = &m.nodes[o.node];
        let eqs = match &node.kind {
            NodeKind::Population { eqs, .. } => eqs.as_ref(),
            _ => None,
        };
        match (o.kind, eqs) {
            (OutputKind::Trace, Some(eqs)) => {
                let (name, idx) = o.state.as_mut().expect("trace has a state");
                match eqs.states.iter().position(|s| s.name == *name) {
                    Some(i) => *idx = Some(i),
                    None => {
                        let names: Vec<&str> = eqs.states.iter().map(|s| s.name.as_str()).collect();
                        return Err(Diagnostic::new(
                            ErrorKind::UnknownName,
                            format!("`{}` ({}) has no state `{name}`", node.name, eqs.model),
                        )
                        .at(o.span, "unknown state")
                        .hint(format!("its states are: {}", names.join(", "))));
                    }
                }
            }
            (OutputKind::Trace, None) => {
                return Err(Diagnostic::new(
                    ErrorKind::BadArgument,
                    format!("`{}` is not a neuron population", node.name),
                )
                .at(
                    o.span,
                    format!("`{}` is a {}", node.name, node.kind.op_name()),
                )
                .hint("traces record a population's state, e.g. `trace(s1.v)`"))
            }
            (OutputKind::Spikes | OutputKind::Counts, Some(eqs)) if !eqs.spikes() => {
                return Err(Diagnostic::new(
                    ErrorKind::BadArgument,
                    format!("`{}` ({}) does not spike", node.name, eqs.model),
                )
                .at(o.span, "no spikes to record")
                .hint(format!(
                    "record its membrane instead: `trace({}.{})`",
                    node.name, eqs.states[0].name
                )))
            }
            (OutputKind::Counts, None) => {
                return Err(Diagnostic::new(
                    ErrorKind::BadArgument,
                    format!("`{}` is not a neuron population", node.name),
                )
                .at(
                    o.span,
                    format!("`{}` is a {}", node.name, node.kind.op_name()),
                )
                .hint(
                    "spike counts are recorded for populations; use `spikes(...)` for an encoder",
                ))
            }
            (OutputKind::Spikes, None)
                if !matches!(
                    node.kind,
                    NodeKind::Encode { .. } | NodeKind::Latency { .. }
                ) =>
            {
                return Err(Diagnostic::new(
                    ErrorKind::BadArgument,
                    format!("`{}` is not a spiking population", node.name),
                )
                .at(
                    o.span,
                    format!("`{}` is a {}", node.name, node.kind.op_name()),
                )
                .hint("spikes and counts come from neuron populations or encoders"))
            }
            _ => {}
        }
    }
    Ok(())
}

/// Compile-time environment of one instance.
struct Env<'a> {
    def: &'a ast::NeuronDef,
    flags: HashMap<&'a str, bool>,
    choices: HashMap<&'a str, &'a str>,
    /// Compile-time whole numbers (`const`), as chosen.
    consts: Vec<(String, usize)>,
    eqs: NeuronEqs,
    current: String,
}

fn lower(def: &ast::NeuronDef, args: &PopArgs) -> DResult<NeuronEqs> {
    let (flags, choices, mut variant) =
        switches(&def.flags, &def.choices, &args.flags, &args.choices);
    let mut consts = Vec::new();
    for c in &def.consts {
        let whole = |v: &f64| *v >= 0.0 && v.fract() == 0.0 && *v <= 1e6;
        let default = c.default.as_number().filter(whole).ok_or_else(|| {
            Diagnostic::new(
                ErrorKind::BadValue,
                format!(
                    "the default of `const {}` must be a whole number",
                    c.name.name
                ),
            )
            .at(c.default.span, "not a whole number")
            .hint("e.g. `const k = 2`")
        })? as usize;
        let (value, span) = match args.consts.iter().find(|(n, _, _)| *n == c.name.name) {
            Some((_, v, sp)) => (*v, *sp),
            None => (default, c.default.span),
        };
        if let Some(chk) = &c.check {
            if !eval_check(chk, &c.name.name, value as f32)? {
                return Err(Diagnostic::new(
                    ErrorKind::BadValue,
                    format!(
                        "bad value: `{} = {value}` violates `{}` in model `{}`",
                        c.name.name,
                        show_check(chk),
                        def.name.name
                    ),
                )
                .at(span, "bad value")
                .note(chk.span, "constraint declared here")
                .hint(format!("choose a value with {}", show_check(chk))));
            }
        }
        variant.push(format!("{}={value}", c.name.name));
        consts.push((c.name.name.clone(), value));
    }

    let mut env = Env {
        def,
        flags,
        choices,
        consts,
        eqs: NeuronEqs {
            model: def.name.name.clone(),
            variant: variant.join(" "),
            params: vec![],
            states: vec![],
            locals: vec![],
            update: vec![],
            spike: None,
            reset: vec![],
            mix: None,
        },
        current: def
            .current
            .as_ref()
            .map(|c| c.name.clone())
            .unwrap_or_else(|| "I".into()),
    };

    // Parameters: defaults, then the instance's values, each checked. A learned
    // parameter's value is its initial value; a `learn(...)` default in the model's
    // definition may compute it from the other parameters (PLIF's `-log(init_tau - 1)`),
    // which is done once every plain value is known.
    let mut deferred: Vec<(usize, &Expr)> = Vec::new();
    let mut spans = Vec::new();
    for p in &def.params {
        let learn = args.learn.iter().find(|(n, _)| *n == p.name.name);
        let (value, span, kind) = match args.params.iter().find(|(n, _, _)| *n == p.name.name) {
            Some((_, v, sp)) => (
                *v,
                *sp,
                match learn {
                    Some((_, l)) => ParamKind::Learned {
                        per_neuron: l.per_neuron,
                    },
                    None => ParamKind::Runtime,
                },
            ),
            None => match learn_call(&p.default)? {
                Some((init, l)) => {
                    let kind = ParamKind::Learned {
                        per_neuron: l.per_neuron,
                    };
                    match init.as_f32() {
                        Some(v) => (v, init.span, kind),
                        None => {
                            deferred.push((env.eqs.params.len(), init));
                            (0.0, init.span, kind)
                        }
                    }
                }
                None => {
                    let v = p.default.as_f32().ok_or_else(|| {
                        Diagnostic::new(
                            ErrorKind::BadValue,
                            format!("the default of `{}` must be a number", p.name.name),
                        )
                        .at(p.default.span, "not a number")
                        .hint("e.g. `param tau = 2.0`, or `param w = learn(0.0)` to learn it")
                    })?;
                    (v, p.default.span, ParamKind::Runtime)
                }
            },
        };
        spans.push(span);
        env.eqs.params.push(EqParam {
            name: p.name.name.clone(),
            value,
            check: ParamCheck::Any,
            kind,
        });
    }
    // The `where` clauses: plain values first (a computed initial value may depend on
    // them, e.g. PLIF's `init_tau > 1`), then the computed ones.
    for (i, p) in def.params.iter().enumerate() {
        if !deferred.iter().any(|(j, _)| *j == i) {
            env.eqs.params[i].check =
                check_value(&def.name.name, p, env.eqs.params[i].value, spans[i])?;
        }
    }
    // Initial values computed from other parameters (f64, rounded once, as Python would).
    for &(i, init) in &deferred {
        let e = env.expr(init, true)?;
        let mut reads_learned = None;
        e.visit_params(&mut |j| {
            if env.eqs.params[j].learned() {
                reads_learned = Some(j);
            }
        });
        if let Some(j) = reads_learned {
            let (pi, pj) = (&env.eqs.params[i].name, &env.eqs.params[j].name);
            let d = Diagnostic::new(
                ErrorKind::BadArgument,
                format!("`{pj}` cannot be learned: it sets the initial value of `{pi}`"),
            );
            // Point at the instance's `learn(...)`, where the user can change it.
            let d = match args.learn.iter().find(|(n, _)| n == pj) {
                Some((_, l)) => d.at(l.span, "learned here").note(init.span, "used here"),
                None => d.at(init.span, "computed from a learned parameter"),
            };
            return Err(d.hint(format!(
                "`{pi}` is the learned parameter: give `{pj}` a number, or learn `{pi}` from \
                 another initial value (`{pi} = learn(...)`)"
            )));
        }
        match const_eval(&e, &env.eqs.params).map(|v| v as f32) {
            Some(v) if v.is_finite() => env.eqs.params[i].value = v,
            _ => {
                return Err(Diagnostic::new(
                    ErrorKind::BadValue,
                    format!(
                        "the initial value of `{}` is not a finite number",
                        env.eqs.params[i].name
                    ),
                )
                .at(init.span, "evaluated at compile time")
                .hint("check the parameters it is computed from"))
            }
        }
        let p = &def.params[i];
        env.eqs.params[i].check =
            check_value(&def.name.name, p, env.eqs.params[i].value, spans[i])?;
    }
    if let Some(mx) = &def.mix {
        env.eqs.mix = Some(env.mix(mx)?);
    }
    for s in &def.states {
        if env.eqs.states.iter().any(|x| x.name == s.name.name) {
            return Err(Diagnostic::new(
                ErrorKind::Duplicate,
                format!("state `{}` is declared twice", s.name.name),
            )
            .at(s.name.span, "second declaration"));
        }
        let init = env.expr(&s.init, true)?;
        env.eqs.states.push(EqState {
            name: s.name.name.clone(),
            init,
        });
    }
    if env.eqs.states.is_empty() {
        return Err(Diagnostic::new(
            ErrorKind::BadArgument,
            format!("neuron model `{}` has no state", def.name.name),
        )
        .at(def.name.span, "no `state`")
        .hint("declare at least one state variable, e.g. `state v = 0.0`"));
    }
    let mut update = Vec::new();
    env.stmts(&def.update, &mut update)?;
    env.eqs.update = update;
    if let Some(s) = &def.spike {
        env.eqs.spike = Some(env.expr(s, false)?);
    } else if !def.on_spike.is_empty() {
        return Err(Diagnostic::new(
            ErrorKind::BadArgument,
            "`on_spike` without a `spike` condition",
        )
        .at(def.name.span, "never spikes")
        .hint("add `spike <condition>`, e.g. `spike v >= v_threshold`"));
    }
    let mut reset = Vec::new();
    env.stmts(&def.on_spike, &mut reset)?;
    if reset.iter().any(|a| matches!(a.target, Var::Local(_))) {
        // Locals assigned in a reset are invisible afterwards; forbid to avoid surprises.
        return Err(Diagnostic::new(
            ErrorKind::BadArgument,
            "`on_spike` may only assign state variables",
        )
        .at(def.name.span, "in this model")
        .hint("compute temporaries in `update`"));
    }
    env.eqs.reset = reset;
    learnability(def, args, &mut env.eqs)?;
    if !env.eqs.update.iter().any(|a| a.value.reads_current()) {
        return Err(Diagnostic::new(
            ErrorKind::BadArgument,
            format!(
                "neuron model `{}` never reads its input `{}`",
                def.name.name, env.current
            ),
        )
        .at(def.name.span, "input unused")
        .hint(format!(
            "use `{}` in `update`, e.g. `v = v + {}`",
            env.current, env.current
        )));
    }
    Ok(env.eqs)
}

impl Env<'_> {
    /// Resolve `mix KIND(args)` against the instance's consts, params and flags.
    fn mix(&self, mx: &ast::MixDecl) -> DResult<Mix> {
        let model = &self.def.name.name;
        let usage = "mixes: `full`, `masked(k, lambda)`, `sliding(k)`, `sliding(k, exp_init)` \
                     (k a `const`, lambda a `param`, exp_init a `flag`)";
        let arity = |lo: usize, hi: usize| -> DResult<()> {
            if mx.args.len() < lo || mx.args.len() > hi {
                return Err(Diagnostic::new(
                    ErrorKind::BadArgument,
                    format!(
                        "`mix {}` takes {} argument(s), {} given",
                        mx.kind.name,
                        if lo == hi {
                            lo.to_string()
                        } else {
                            format!("{lo} or {hi}")
                        },
                        mx.args.len()
                    ),
                )
                .at(mx.span, "wrong number of arguments")
                .hint(usage));
            }
            Ok(())
        };
        let what = |a: &ast::Ident, kind: &str| {
            Diagnostic::new(
                ErrorKind::UnknownName,
                format!("`{}` is not a {kind} of neuron model `{model}`", a.name),
            )
            .at(a.span, format!("needs a {kind}"))
            .hint(format!("declare it, e.g. `{kind} {} = ...`", a.name))
        };
        let order = |a: &ast::Ident| -> DResult<usize> {
            let k = self
                .consts
                .iter()
                .find(|(n, _)| *n == a.name)
                .map(|(_, v)| *v)
                .ok_or_else(|| what(a, "const"))?;
            if k == 0 {
                return Err(Diagnostic::new(
                    ErrorKind::BadValue,
                    format!("the order `{}` of a mix must be at least 1", a.name),
                )
                .at(a.span, "order 0 mixes nothing")
                .hint(format!("give `{} = 1` or more", a.name)));
            }
            Ok(k)
        };
        Ok(match mx.kind.name.as_str() {
            "full" => {
                arity(0, 0)?;
                Mix::Full
            }
            "masked" => {
                arity(2, 2)?;
                let k = order(&mx.args[0])?;
                let lambda = self
                    .eqs
                    .params
                    .iter()
                    .position(|p| p.name == mx.args[1].name)
                    .ok_or_else(|| what(&mx.args[1], "param"))?;
                Mix::Masked { k, lambda }
            }
            "sliding" => {
                arity(1, 2)?;
                let k = order(&mx.args[0])?;
                let exp_init = match mx.args.get(1) {
                    None => false,
                    Some(f) => *self
                        .flags
                        .get(f.name.as_str())
                        .ok_or_else(|| what(f, "flag"))?,
                };
                Mix::Sliding { k, exp_init }
            }
            other => {
                let d = Diagnostic::new(ErrorKind::UnknownName, format!("unknown mix `{other}`"))
                    .at(mx.kind.span, "not a mix");
                return Err(match did_you_mean(other, ["full", "masked", "sliding"]) {
                    Some(s) => d.hint(format!("did you mean `{s}`? {usage}")),
                    None => d.hint(usage),
                });
            }
        })
    }

    fn stmts(&mut self, stmts: &[Stmt], out: &mut Vec<Assign>) -> DResult<()> {
        for s in stmts {
            match s {
                Stmt::If {
                    cond,
                    then,
                    otherwise,
                    ..
                } => {
                    if self.static_cond(cond)? {
                        self.stmts(then, out)?;
                    } else {
                        self.stmts(otherwise, out)?;
                    }
                }
                Stmt::Let { name, value, .. } => {
                    let v = self.expr(value, false)?;
                    if self.lookup(&name.name).is_some() && !self.eqs.locals.contains(&name.name) {
                        return Err(Diagnostic::new(
                            ErrorKind::Duplicate,
                            format!("`let {}` shadows a parameter or state", name.name),
                        )
                        .at(name.span, "already defined")
                        .hint("pick another name for the temporary"));
                    }
                    let i = match self.eqs.locals.iter().position(|l| *l == name.name) {
                        Some(i) => i,
                        None => {
                            self.eqs.locals.push(name.name.clone());
                            self.eqs.locals.len() - 1
                        }
                    };
                    out.push(Assign {
                        target: Var::Local(i),
                        value: v,
                    });
                }
                Stmt::Assign { name, value, .. } | Stmt::Ode { name, value, .. } => {
                    let target = self.target(name)?;
                    let mut v = self.expr(value, false)?;
                    if matches!(s, Stmt::Ode { .. }) {
                        // x' = f  ->  x = x + dt * f
                        let dt_f = EExpr::bin(BinOp::Mul, EExpr::Leaf(EqLeaf::Dt), v);
                        v = EExpr::bin(BinOp::Add, EExpr::var(target), dt_f);
                    }
                    out.push(Assign { target, value: v });
                }
            }
        }
        Ok(())
    }

    fn target(&self, name: &ast::Ident) -> DResult<Var> {
        if let Some(i) = self.eqs.states.iter().position(|s| s.name == name.name) {
            return Ok(Var::State(i));
        }
        if let Some(i) = self.eqs.locals.iter().position(|s| *s == name.name) {
            return Ok(Var::Local(i));
        }
        let what = if self.eqs.params.iter().any(|p| p.name == name.name) {
            "is a parameter (parameters are read-only)"
        } else {
            "is not a state variable"
        };
        Err(Diagnostic::new(
            ErrorKind::UnknownName,
            format!("cannot assign to `{}`: it {what}", name.name),
        )
        .at(name.span, "not assignable")
        .hint("declare it with `state NAME = initial`, or introduce a temporary with `let`"))
    }

    fn lookup(&self, name: &str) -> Option<EExpr> {
        if let Some(i) = self.eqs.locals.iter().position(|s| s == name) {
            return Some(EExpr::Leaf(EqLeaf::Local(i)));
        }
        if let Some(i) = self.eqs.states.iter().position(|s| s.name == name) {
            return Some(EExpr::Leaf(EqLeaf::State(i)));
        }
        if let Some(i) = self.eqs.params.iter().position(|s| s.name == name) {
            return Some(EExpr::Leaf(EqLeaf::Param(i)));
        }
        if name == self.current {
            return Some(EExpr::Leaf(EqLeaf::Current));
        }
        if let Some((_, v)) = self.consts.iter().find(|(n, _)| n == name) {
            return Some(EExpr::Const(*v as f32));
        }
        if name == "dt" {
            return Some(EExpr::Leaf(EqLeaf::Dt));
        }
        None
    }

    /// `init`: only params and constants may be read (state initial values).
    fn expr(&self, e: &Expr, init: bool) -> DResult<EExpr> {
        Ok(match &e.kind {
            ExprKind::Number(s) => EExpr::Const(s.parse().map_err(|_| {
                Diagnostic::new(ErrorKind::BadValue, format!("`{s}` is not a number"))
                    .at(e.span, "bad number")
            })?),
            ExprKind::Bool(b) => EExpr::Const(if *b { 1.0 } else { 0.0 }),
            ExprKind::Ident(n) => {
                let v = self.lookup(n);
                match v {
                    Some(EExpr::Leaf(EqLeaf::State(_) | EqLeaf::Local(_) | EqLeaf::Current))
                        if init =>
                    {
                        return Err(Diagnostic::new(
                            ErrorKind::BadArgument,
                            format!("an initial value may not read `{n}`"),
                        )
                        .at(e.span, "not a parameter")
                        .hint("initial values are built from parameters and numbers"))
                    }
                    Some(v) => v,
                    None => {
                        let what = if self.flags.contains_key(n.as_str()) {
                            " (a flag: test it with `if`)"
                        } else if self.choices.contains_key(n.as_str()) {
                            " (a choice: test it with `if name == variant`)"
                        } else {
                            ""
                        };
                        let mut known: Vec<&str> =
                            self.eqs.params.iter().map(|p| p.name.as_str()).collect();
                        known.extend(self.eqs.states.iter().map(|s| s.name.as_str()));
                        known.extend(self.eqs.locals.iter().map(String::as_str));
                        known.push(&self.current);
                        let d = Diagnostic::new(
                            ErrorKind::UnknownName,
                            format!(
                                "unknown name `{n}` in neuron model `{}`{what}",
                                self.def.name.name
                            ),
                        )
                        .at(e.span, "not defined");
                        return Err(match did_you_mean(n, known.iter().copied()) {
                            Some(s) => d.hint(format!("did you mean `{s}`?")),
                            None => d.hint(format!("names here: {}, dt", known.join(", "))),
                        });
                    }
                }
            }
            ExprKind::Unary { op, expr } => EExpr::Unary(*op, Box::new(self.expr(expr, init)?)),
            ExprKind::Binary { op, lhs, rhs } => EExpr::Binary(
                *op,
                Box::new(self.expr(lhs, init)?),
                Box::new(self.expr(rhs, init)?),
            ),
            ExprKind::Call { func, args } => {
                let Some((f, arity)) = Func::from_name(&func.name) else {
                    let d = Diagnostic::new(
                        ErrorKind::UnknownName,
                        format!("unknown function `{}`", func.name),
                    )
                    .at(func.span, "not a function");
                    return Err(
                        match did_you_mean(&func.name, Func::NAMES.iter().copied()) {
                            Some(s) => d.hint(format!("did you mean `{s}`?")),
                            None => d.hint(format!("functions: {}", Func::NAMES.join(", "))),
                        },
                    );
                };
                if args.len() != arity || args.iter().any(|a| a.name.is_some()) {
                    return Err(Diagnostic::new(
                        ErrorKind::BadArgument,
                        format!("`{}` takes {arity} positional argument(s)", func.name),
                    )
                    .at(e.span, format!("{} given", args.len())));
                }
                EExpr::Call(
                    f,
                    args.iter()
                        .map(|a| self.expr(&a.value, init))
                        .collect::<DResult<_>>()?,
                )
            }
            _ => {
                return Err(
                    Diagnostic::new(ErrorKind::BadArgument, "not allowed in an equation")
                        .at(e.span, "unexpected")
                        .hint("equations use numbers, names, operators and functions"),
                )
            }
        })
    }

    /// Evaluate an `if` condition at compile time.
    fn static_cond(&self, e: &Expr) -> DResult<bool> {
        static_cond(e, &self.flags, &self.choices, &self.def.choices)
    }
}

/// Evaluate an `if` condition of a neuron or synapse model at compile time: flags and
/// choices as chosen (`declared`: the model's choices, for their variants).
pub(crate) fn static_cond(
    e: &Expr,
    flags: &HashMap<&str, bool>,
    choices: &HashMap<&str, &str>,
    declared: &[ast::ChoiceDecl],
) -> DResult<bool> {
    let err = |span: Span| {
        Diagnostic::new(ErrorKind::BadArgument, "an `if` condition must be known at compile time")
            .at(span, "depends on run-time values")
            .hint("test flags (`if decay_input`) or choices (`if reset == soft`); for run-time choices use `select(c, a, b)`")
    };
    match &e.kind {
        ExprKind::Bool(b) => Ok(*b),
        ExprKind::Ident(n) => flags.get(n.as_str()).copied().ok_or_else(|| err(e.span)),
        ExprKind::Unary {
            op: UnOp::Not,
            expr,
        } => Ok(!static_cond(expr, flags, choices, declared)?),
        ExprKind::Binary {
            op: BinOp::And,
            lhs,
            rhs,
        } => Ok(static_cond(lhs, flags, choices, declared)?
            && static_cond(rhs, flags, choices, declared)?),
        ExprKind::Binary {
            op: BinOp::Or,
            lhs,
            rhs,
        } => Ok(static_cond(lhs, flags, choices, declared)?
            || static_cond(rhs, flags, choices, declared)?),
        ExprKind::Binary {
            op: op @ (BinOp::Eq | BinOp::Ne),
            lhs,
            rhs,
        } => {
            let (Some(c), Some(v)) = (lhs.as_ident(), rhs.as_ident()) else {
                return Err(err(e.span));
            };
            let Some(cur) = choices.get(c) else {
                return Err(err(lhs.span));
            };
            let decl = declared
                .iter()
                .find(|d| d.name.name == c)
                .expect("choice declared");
            if !decl.variants.iter().any(|x| x.name == v) {
                let vs: Vec<&str> = decl.variants.iter().map(|x| x.name.as_str()).collect();
                return Err(Diagnostic::new(
                    ErrorKind::UnknownName,
                    format!("`{v}` is not a variant of `{c}`"),
                )
                .at(rhs.span, "unknown variant")
                .hint(format!("variants: {}", vs.join(" | "))));
            }
            Ok((*cur == v) == (*op == BinOp::Eq))
        }
        _ => Err(err(e.span)),
    }
}

/// Compile-time switches of a neuron or synapse model as an instance chooses them: flags and
/// choices by name (defaults where not given), and the `name=value` list dumps print.
#[allow(clippy::type_complexity)]
pub(crate) fn switches<'a>(
    flags: &'a [ast::FlagDecl],
    choices: &'a [ast::ChoiceDecl],
    set_flags: &'a [(String, bool, Span)],
    set_choices: &'a [(String, String, Span)],
) -> (
    HashMap<&'a str, bool>,
    HashMap<&'a str, &'a str>,
    Vec<String>,
) {
    let mut f: HashMap<&str, bool> = flags
        .iter()
        .map(|x| (x.name.name.as_str(), x.default))
        .collect();
    for (n, v, _) in set_flags {
        f.insert(n.as_str(), *v);
    }
    let mut c: HashMap<&str, &str> = choices
        .iter()
        .map(|x| (x.name.name.as_str(), x.variants[0].name.as_str()))
        .collect();
    for (n, v, _) in set_choices {
        c.insert(n.as_str(), v.as_str());
    }
    let mut variant: Vec<String> = flags
        .iter()
        .map(|x| format!("{}={}", x.name.name, f[x.name.name.as_str()]))
        .collect();
    variant.extend(
        choices
            .iter()
            .map(|x| format!("{}={}", x.name.name, c[x.name.name.as_str()])),
    );
    (f, c, variant)
}

/// `learn(init)` / `learn(init, per_neuron = true)`: the initial value's expression and the
/// options; `None` when `e` is not a call of `learn`.
pub(crate) fn learn_call(e: &Expr) -> DResult<Option<(&Expr, Learn)>> {
    let ExprKind::Call { func, args } = &e.kind else {
        return Ok(None);
    };
    if func.name != "learn" {
        return Ok(None);
    }
    let usage = "`learn(2.0)` (one value shared by the population's neurons) or \
                 `learn(2.0, per_neuron = true)` (one per neuron)";
    let mut init = None;
    let mut per_neuron = false;
    for a in args {
        match &a.name {
            None if init.is_none() => init = Some(&a.value),
            None => {
                return Err(Diagnostic::new(
                    ErrorKind::BadArgument,
                    "`learn` takes one positional argument, the initial value",
                )
                .at(a.value.span, "extra argument")
                .hint(usage))
            }
            Some(n) if n.name == "per_neuron" => match a.value.kind {
                ExprKind::Bool(b) => per_neuron = b,
                _ => {
                    return Err(Diagnostic::new(
                        ErrorKind::BadValue,
                        "`per_neuron` must be true or false",
                    )
                    .at(a.value.span, "not a boolean")
                    .hint(usage))
                }
            },
            Some(n) => {
                let d = Diagnostic::new(
                    ErrorKind::UnknownName,
                    format!("`learn` has no option `{}`", n.name),
                )
                .at(n.span, "unknown option");
                return Err(match did_you_mean(&n.name, ["per_neuron"]) {
                    Some(s) => d.hint(format!("did you mean `{s}`?")),
                    None => d.hint(usage),
                });
            }
        }
    }
    let Some(init) = init else {
        return Err(
            Diagnostic::new(ErrorKind::BadArgument, "`learn` needs the initial value")
                .at(e.span, "no initial value")
                .hint(usage),
        );
    };
    Ok(Some((
        init,
        Learn {
            per_neuron,
            span: e.span,
        },
    )))
}

/// A compile-time value of an expression over numbers and parameters, in f64.
fn const_eval(e: &EExpr, params: &[EqParam]) -> Option<f64> {
    e.eval(|l| match l {
        EqLeaf::Param(i) => Some(params[*i].value as f64),
        _ => None,
    })
}

/// Identifiers an AST expression mentions.
fn idents<'a>(e: &'a Expr, out: &mut Vec<&'a str>) {
    match &e.kind {
        ExprKind::Ident(n) => out.push(n),
        ExprKind::Unary { expr, .. } => idents(expr, out),
        ExprKind::Binary { lhs, rhs, .. } => {
            idents(lhs, out);
            idents(rhs, out);
        }
        ExprKind::Call { args, .. } => args.iter().for_each(|a| idents(&a.value, out)),
        ExprKind::List(xs) => xs.iter().for_each(|x| idents(x, out)),
        ExprKind::Field { base, .. } => idents(base, out),
        ExprKind::Number(_) | ExprKind::Bool(_) | ExprKind::Str(_) => {}
    }
}

/// Checks where learned parameters are read, and marks the parameters that only feed the
/// initial values of learned ones (`learn(...)` defaults of the definition) as compile-time.
///
/// A learned parameter must be read by the step (`update`, `spike`, `on_spike`): that is
/// what its gradient is the derivative of. It may not set a state's initial value, whose
/// gradient (the adjoint left after the reverse time loop) the backward kernel does not
/// compute; the same rule holds without `--train`, so a model compiles for inference exactly
/// when it compiles for training.
fn learnability(def: &ast::NeuronDef, args: &PopArgs, eqs: &mut NeuronEqs) -> DResult<()> {
    let n = eqs.params.len();
    let mut in_step = vec![false; n];
    for a in eqs.update.iter().chain(&eqs.reset) {
        a.value.visit_params(&mut |i| in_step[i] = true);
    }
    if let Some(sp) = &eqs.spike {
        sp.visit_params(&mut |i| in_step[i] = true);
    }
    let mut in_init: Vec<Option<usize>> = vec![None; n];
    for (si, st) in eqs.states.iter().enumerate() {
        st.init.visit_params(&mut |i| in_init[i] = Some(si));
    }
    let mut for_learn_init = vec![false; n];
    for p in &def.params {
        if let Ok(Some((init, _))) = learn_call(&p.default) {
            let mut names = Vec::new();
            idents(init, &mut names);
            for name in names {
                if let Some(i) = eqs.params.iter().position(|q| q.name == name) {
                    for_learn_init[i] = true;
                }
            }
        }
    }
    for (i, p) in def.params.iter().enumerate() {
        let q = &eqs.params[i];
        if q.learned() {
            let span = args
                .learn
                .iter()
                .find(|(nm, _)| *nm == q.name)
                .map(|(_, l)| l.span)
                .unwrap_or(p.default.span);
            if let Some(si) = in_init[i] {
                return Err(Diagnostic::new(
                    ErrorKind::BadArgument,
                    format!(
                        "`{}` cannot be learned: it sets the initial value of state `{}`",
                        q.name, eqs.states[si].name
                    ),
                )
                .at(span, "learned here")
                .note(def.states[si].init.span, "initial value declared here")
                .hint(format!(
                    "learned parameters may be read by `update`, `spike` and `on_spike` \
                     only; give `{}` a fixed value",
                    q.name
                )));
            }
            if let Some(crate::ir::eqn::Mix::Masked { lambda, .. }) = &eqs.mix {
                if *lambda == i {
                    return Err(Diagnostic::new(
                        ErrorKind::BadArgument,
                        format!(
                            "`{}` cannot be learned: it builds the `mix masked` time matrix, \
                             which is fixed",
                            q.name
                        ),
                    )
                    .at(span, "learned here")
                    .hint(format!(
                        "give `{}` a number (SpikingJelly schedules it from 0 to 1 during \
                         training; set it between runs with `set_param`)",
                        q.name
                    )));
                }
            }
            if !in_step[i] {
                return Err(Diagnostic::new(
                    ErrorKind::BadArgument,
                    format!(
                        "`{}` cannot be learned: the equations of `{}` never read it",
                        q.name, def.name.name
                    ),
                )
                .at(span, "learned here")
                .hint(format!(
                    "learnable parameters of `{}`: {}",
                    def.name.name,
                    learnable_names(eqs, &in_step, &in_init).join(", ")
                )));
            }
        } else if for_learn_init[i] && !in_step[i] && in_init[i].is_none() {
            eqs.params[i].kind = ParamKind::InitOnly;
        }
    }
    Ok(())
}

fn learnable_names<'a>(
    eqs: &'a NeuronEqs,
    in_step: &[bool],
    in_init: &[Option<usize>],
) -> Vec<&'a str> {
    eqs.params
        .iter()
        .enumerate()
        .filter(|(i, _)| in_step[*i] && in_init[*i].is_none())
        .map(|(_, p)| p.name.as_str())
        .collect()
}

/// A parameter's value against its `where` clause; the check the runtime keeps applying.
pub(crate) fn check_value(
    model: &str,
    p: &ast::ParamDecl,
    value: f32,
    span: Span,
) -> DResult<ParamCheck> {
    let check = match &p.check {
        None => ParamCheck::Any,
        Some(c) => {
            if !eval_check(c, &p.name.name, value)? {
                return Err(Diagnostic::new(
                    ErrorKind::BadValue,
                    format!(
                        "bad parameter value: `{} = {value}` violates `{}` in model `{}`",
                        p.name.name,
                        show_check(c),
                        model
                    ),
                )
                .at(span, "bad value")
                .note(c.span, "constraint declared here")
                .hint(format!("choose a value with {}", show_check(c))));
            }
            classify_check(c, &p.name.name)
        }
    };
    if !value.is_finite() {
        return Err(Diagnostic::new(
            ErrorKind::BadValue,
            format!("parameter `{}` must be finite", p.name.name),
        )
        .at(span, "not finite"));
    }
    Ok(check)
}

/// Evaluate a `where` clause for a parameter value.
fn eval_check(e: &Expr, name: &str, v: f32) -> DResult<bool> {
    fn num(e: &Expr, name: &str, v: f32) -> Option<f64> {
        match &e.kind {
            ExprKind::Ident(n) if n == name => Some(v as f64),
            _ => e.as_number(),
        }
    }
    let bad = || {
        Diagnostic::new(
            ErrorKind::BadArgument,
            format!("a `where` clause may only compare `{name}` with numbers"),
        )
        .at(e.span, "unsupported constraint")
        .hint(format!(
            "e.g. `where {name} > 0` or `where {name} >= 0 && {name} <= 1`"
        ))
    };
    match &e.kind {
        ExprKind::Binary {
            op: BinOp::And,
            lhs,
            rhs,
        } => Ok(eval_check(lhs, name, v)? && eval_check(rhs, name, v)?),
        ExprKind::Binary {
            op: BinOp::Or,
            lhs,
            rhs,
        } => Ok(eval_check(lhs, name, v)? || eval_check(rhs, name, v)?),
        ExprKind::Binary { op, lhs, rhs } => {
            let (Some(a), Some(b)) = (num(lhs, name, v), num(rhs, name, v)) else {
                return Err(bad());
            };
            Ok(match op {
                BinOp::Gt => a > b,
                BinOp::Ge => a >= b,
                BinOp::Lt => a < b,
                BinOp::Le => a <= b,
                BinOp::Eq => a == b,
                BinOp::Ne => a != b,
                _ => return Err(bad()),
            })
        }
        _ => Err(bad()),
    }
}

/// Map a `where` clause to the check the runtime applies when a value is changed later.
fn classify_check(e: &Expr, name: &str) -> ParamCheck {
    let is = |x: &Expr| x.as_ident() == Some(name);
    match &e.kind {
        ExprKind::Binary {
            op: BinOp::Gt,
            lhs,
            rhs,
        } if is(lhs) && rhs.as_number() == Some(0.0) => ParamCheck::Positive,
        ExprKind::Binary {
            op: BinOp::Ge,
            lhs,
            rhs,
        } if is(lhs) && rhs.as_number() == Some(0.0) => ParamCheck::NonNegative,
        ExprKind::Binary {
            op: BinOp::And,
            lhs,
            rhs,
        } => match (classify_check(lhs, name), &rhs.kind) {
            (
                ParamCheck::NonNegative,
                ExprKind::Binary {
                    op: BinOp::Le,
                    lhs: l2,
                    rhs: r2,
                },
            ) if is(l2) && r2.as_number() == Some(1.0) => ParamCheck::UnitInterval,
            _ => ParamCheck::Any,
        },
        _ => ParamCheck::Any,
    }
}

fn show_check(e: &Expr) -> String {
    match &e.kind {
        ExprKind::Binary { op, lhs, rhs } => {
            format!("{} {} {}", show_check(lhs), op.symbol(), show_check(rhs))
        }
        ExprKind::Ident(n) => n.clone(),
        ExprKind::Number(s) => s.clone(),
        ExprKind::Unary {
            op: UnOp::Neg,
            expr,
        } => format!("-{}", show_check(expr)),
        _ => "?".into(),
    }
}
