//! Pass `synapses`: each plastic projection's rule (`synapse = rule(..)`) lowered to
//! [`SynapseEqs`] (flags and choices resolved, names bound), and its wiring checked: the
//! presynaptic spikes (the projection's input), the postsynaptic spikes (`post = n`, else
//! the one population the projection drives), the gate and the reward.

use std::collections::HashMap;

use crate::diag::{did_you_mean, DResult, Diagnostic, ErrorKind, Span};
use crate::front::ast::{self, Expr, ExprKind, Stmt};
use crate::ir::expr::Func;
use crate::ir::net::*;
use crate::ir::synapse::{
    RuleForm, SExpr, SynAssign, SynLeaf, SynParam, SynState, SynVar, SynapseEqs,
};

use super::neurons::{check_value, static_cond, switches};

/// Names every rule may read besides its parameters and temporaries.
const BUILT_INS: &[&str] = &["w", "t_pre", "t_post", "s_pre", "s_post", "reward", "T"];

/// The block being lowered: what it may assign and read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Block {
    Step,
    Pre,
    Post,
}

impl Block {
    fn word(self) -> &'static str {
        match self {
            Block::Step => "on_step",
            Block::Pre => "on_pre",
            Block::Post => "on_post",
        }
    }
}

pub fn run(m: &mut Module, rules: &[ast::SynapseDef]) -> DResult<()> {
    for i in 0..m.plastic.len() {
        let p = &m.plastic[i];
        let def = rules
            .iter()
            .find(|r| r.name.name == p.rule)
            .expect("resolve checked the rule's name");
        let eqs = lower(def, &p.args, p.rule_span)?;
        let post = match p.post {
            Some(h) => h,
            None => driven_population(m, p.projection, p.span)?,
        };
        check_wiring(m, &m.plastic[i], post, &eqs)?;
        let p = &mut m.plastic[i];
        p.post = Some(post);
        p.eqs = Some(Box::new(eqs));
    }
    Ok(())
}

/// The population whose input current the projection is, directly or through ops that
/// keep the neuron layout (`inhibit`, `infinite`): the postsynaptic neurons of the rule.
fn driven_population(m: &Module, proj: NodeId, span: Span) -> DResult<NodeId> {
    let mut found: Vec<NodeId> = Vec::new();
    let mut frontier = vec![proj];
    while let Some(h) = frontier.pop() {
        for (c, node) in m.nodes.iter() {
            let reads = node.kind.sources().iter().any(|(s, _)| *s == h);
            if !reads {
                continue;
            }
            match node.kind {
                NodeKind::Population { .. } if !found.contains(&c) => found.push(c),
                NodeKind::Inhibit { .. } | NodeKind::Infinite { .. } => frontier.push(c),
                _ => {}
            }
        }
    }
    let name = &m.nodes[proj].name;
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(Diagnostic::new(
            ErrorKind::BadArgument,
            format!("plastic projection `{name}` drives no neuron population"),
        )
        .at(span, "whose spikes are the postsynaptic events?")
        .hint("feed it to a population (`n = FireOnce(..)`) or name the spikes with `post = n`")),
        many => Err(Diagnostic::new(
            ErrorKind::BadArgument,
            format!(
                "plastic projection `{name}` drives {} populations ({})",
                many.len(),
                many.iter()
                    .map(|h| format!("`{}`", m.nodes[*h].name))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
        .at(span, "which one's spikes are the postsynaptic events?")
        .hint("name it with `post = NAME`")),
    }
}

fn check_wiring(m: &Module, p: &Plastic, post: NodeId, eqs: &SynapseEqs) -> DResult<()> {
    let proj = &m.nodes[p.projection];
    let (src, delay) = match proj.kind {
        NodeKind::Dense { src, delay, .. } | NodeKind::Conv2d { src, delay, .. } => (src, delay),
        _ => unreachable!("resolve attaches rules to dense and conv2d only"),
    };
    if delay != 0 {
        return Err(Diagnostic::new(
            ErrorKind::BadArgument,
            format!("plastic projection `{}` has a delay", proj.name),
        )
        .at(proj.span, "delay > 0")
        .hint("a rule pairs each postsynaptic spike with the presynaptic spikes of the same steps; drop `delay` or the rule"));
    }
    if m.shape(src).extent != Extent::Seq {
        return Err(Diagnostic::new(
            ErrorKind::BadArgument,
            format!(
                "the input of plastic projection `{}` is the same at every step",
                proj.name
            ),
        )
        .at(m.nodes[src].span, "static: no spike times")
        .note(p.span, "the rule reads presynaptic spike times")
        .hint("feed it spikes: a population, an encoder (`latency(..)`, `poisson(..)`) or an input `[T, ...]`"));
    }
    let out = m.shape(p.projection);
    let ps = m.shape(post);
    if ps.extent != Extent::Seq || ps.features() != out.features() {
        return Err(Diagnostic::new(
            ErrorKind::Shape,
            format!(
                "`post = {}` must be a sequence of {} neurons, one per output of `{}` {:?}",
                m.nodes[post].name,
                out.features(),
                proj.name,
                out.dims
            ),
        )
        .at(m.nodes[post].span, format!("{:?} {:?}", ps.extent, ps.dims))
        .note(p.span, "the rule")
        .hint("post must be the spikes of the neurons this projection drives"));
    }
    if let Some(g) = p.gate {
        let gs = m.shape(g);
        if gs.extent != Extent::Static || gs.features() != out.features() {
            return Err(Diagnostic::new(
                ErrorKind::Shape,
                format!(
                    "`gate = {}` must be one static value per postsynaptic neuron ({} of them, {:?})",
                    m.nodes[g].name,
                    out.features(),
                    out.dims
                ),
            )
            .at(m.nodes[g].span, format!("{:?} {:?}", gs.extent, gs.dims))
            .note(p.span, "the rule")
            .hint("a gate is a per-sample map over the postsynaptic neurons, e.g. `gate = wta(v, k = 5, radius = 2)`"));
        }
    }
    let reads_reward = eqs.reads(SynLeaf::Reward);
    match p.reward {
        Some(r) => {
            if !reads_reward {
                return Err(Diagnostic::new(
                    ErrorKind::BadArgument,
                    format!("rule `{}` does not read `reward`", eqs.model),
                )
                .at(m.nodes[r].span, "unused reward")
                .hint("drop `reward = ...`, or use a rule that reads it (`rstdp`)"));
            }
            let rs = m.shape(r);
            if rs.extent != Extent::Static || rs.features() != 1 {
                return Err(Diagnostic::new(
                    ErrorKind::Shape,
                    format!(
                        "`reward = {}` must be one static value per sample (`[1]`)",
                        m.nodes[r].name
                    ),
                )
                .at(m.nodes[r].span, format!("{:?} {:?}", rs.extent, rs.dims))
                .hint("e.g. `input reward: [1]`, filled per sample by the trainer"));
            }
        }
        None if reads_reward => {
            return Err(Diagnostic::new(
                ErrorKind::BadArgument,
                format!("rule `{}` reads `reward`, but none is given", eqs.model),
            )
            .at(p.span, "no `reward = ...`")
            .hint("add `reward = r` to the projection, e.g. with `input r: [1]`"))
        }
        None => {}
    }
    Ok(())
}

struct Env<'a> {
    def: &'a ast::SynapseDef,
    flags: HashMap<&'a str, bool>,
    choices: HashMap<&'a str, &'a str>,
    block: Block,
    /// The sides (pre, post) each local's last value read, for the locality checks.
    local_sides: Vec<(bool, bool)>,
    eqs: SynapseEqs,
}

fn lower(def: &ast::SynapseDef, args: &RuleArgs, call: Span) -> DResult<SynapseEqs> {
    let (flags, choices, variant) = switches(&def.flags, &def.choices, &args.flags, &args.choices);
    let mut params = Vec::new();
    for p in &def.params {
        if BUILT_INS.contains(&p.name.name.as_str()) {
            return Err(Diagnostic::new(
                ErrorKind::Duplicate,
                format!(
                    "`param {}` hides the rule's built-in `{}`",
                    p.name.name, p.name.name
                ),
            )
            .at(p.name.span, "a built-in name")
            .hint(format!(
                "rules read {}; pick another name",
                BUILT_INS.join(", ")
            )));
        }
        let (value, span) = match args.params.iter().find(|(n, _, _)| *n == p.name.name) {
            Some((_, v, sp)) => (*v, *sp),
            None => (
                p.default.as_number().ok_or_else(|| {
                    Diagnostic::new(
                        ErrorKind::BadValue,
                        format!(
                            "the default of rule parameter `{}` must be a number",
                            p.name.name
                        ),
                    )
                    .at(p.default.span, "not a number")
                    .hint("e.g. `param a_plus = 0.004`")
                })?,
                p.default.span,
            ),
        };
        let check = check_value(&def.name.name, p, value as f32, span)?;
        if !value.is_finite() {
            return Err(Diagnostic::new(
                ErrorKind::BadValue,
                format!("parameter `{}` must be finite", p.name.name),
            )
            .at(span, "not finite"));
        }
        params.push(SynParam {
            name: p.name.name.clone(),
            value,
            check,
        });
    }
    let reads = |name: &str| {
        (def.on_step.iter())
            .chain(&def.on_pre)
            .chain(&def.on_post)
            .any(|st| stmt_mentions(st, name))
    };
    let per_step = !def.pre_states.is_empty()
        || !def.post_states.is_empty()
        || def.on_step_span.is_some()
        || def.on_pre_span.is_some()
        || reads("s_pre")
        || reads("s_post");
    let mut env = Env {
        def,
        flags,
        choices,
        block: Block::Post,
        local_sides: Vec::new(),
        eqs: SynapseEqs {
            model: def.name.name.clone(),
            variant: variant.join(" "),
            form: if per_step {
                RuleForm::PerStep
            } else {
                RuleForm::FirstSpike
            },
            params,
            locals: vec![],
            states: vec![],
            pre_states: vec![],
            post_states: vec![],
            on_step: vec![],
            on_pre: vec![],
            on_post: vec![],
        },
    };
    for (side, decls) in [
        (0, &def.states),
        (1, &def.pre_states),
        (2, &def.post_states),
    ] {
        for d in decls.iter() {
            let taken = BUILT_INS.contains(&d.name.name.as_str())
                || env.eqs.params.iter().any(|p| p.name == d.name.name)
                || env.eqs.states.iter().any(|p| p.name == d.name.name)
                || env.eqs.pre_states.iter().any(|p| p.name == d.name.name)
                || env.eqs.post_states.iter().any(|p| p.name == d.name.name);
            if taken {
                return Err(Diagnostic::new(
                    ErrorKind::Duplicate,
                    format!("`{}` is already a name of the rule", d.name.name),
                )
                .at(d.name.span, "defined twice")
                .hint("give each parameter and trace its own name"));
            }
            let init = env.init(&d.init)?;
            let st = SynState {
                name: d.name.name.clone(),
                init,
            };
            match side {
                0 => env.eqs.states.push(st),
                1 => env.eqs.pre_states.push(st),
                _ => env.eqs.post_states.push(st),
            }
        }
    }
    let Some(post_at) = def.on_post_span.or(def.on_pre_span) else {
        return Err(Diagnostic::new(
            ErrorKind::BadArgument,
            format!("synapse model `{}` has no `on_post` block", def.name.name),
        )
        .at(def.name.span, "never changes a weight")
        .note(call, "used here")
        .hint("add `on_post { w = ... }`: the update at each postsynaptic event"));
    };
    for (block, body) in [
        (Block::Step, &def.on_step),
        (Block::Pre, &def.on_pre),
        (Block::Post, &def.on_post),
    ] {
        env.block = block;
        let mut out = Vec::new();
        env.stmts(body, &mut out)?;
        match block {
            Block::Step => env.eqs.on_step = out,
            Block::Pre => env.eqs.on_pre = out,
            Block::Post => env.eqs.on_post = out,
        }
    }
    let writes_w = (env.eqs.on_pre.iter())
        .chain(&env.eqs.on_post)
        .any(|a| a.target == SynVar::W);
    if !writes_w {
        let block = if def.on_post_span.is_some() {
            "`on_post`"
        } else {
            "`on_pre`"
        };
        return Err(Diagnostic::new(
            ErrorKind::BadArgument,
            format!(
                "{block} of synapse model `{}` never assigns the weight `w`",
                def.name.name
            ),
        )
        .at(post_at, "no `w = ...` here")
        .hint("a rule updates the weight, e.g. `w = clamp(w + a_plus, 0.0, 1.0)`"));
    }
    Ok(env.eqs)
}

/// Whether statement `s` mentions the name `name` anywhere.
fn stmt_mentions(s: &Stmt, name: &str) -> bool {
    fn expr(e: &Expr, name: &str) -> bool {
        match &e.kind {
            ExprKind::Ident(n) => n == name,
            ExprKind::Unary { expr: x, .. } => expr(x, name),
            ExprKind::Binary { lhs, rhs, .. } => expr(lhs, name) || expr(rhs, name),
            ExprKind::Call { args, .. } => args.iter().any(|a| expr(&a.value, name)),
            ExprKind::List(items) => items.iter().any(|x| expr(x, name)),
            ExprKind::Field { base, .. } => expr(base, name),
            _ => false,
        }
    }
    match s {
        Stmt::If {
            cond,
            then,
            otherwise,
            ..
        } => {
            expr(cond, name)
                || then.iter().any(|x| stmt_mentions(x, name))
                || otherwise.iter().any(|x| stmt_mentions(x, name))
        }
        Stmt::Let { value, .. } | Stmt::Assign { value, .. } | Stmt::Ode { value, .. } => {
            expr(value, name)
        }
    }
}

/// Which sides (presynaptic, postsynaptic) an expression reads.
fn sides(e: &SExpr, locals: &[(bool, bool)]) -> (bool, bool) {
    let (mut pre, mut post) = (false, false);
    e.any_leaf(|l| {
        match l {
            // A synapse's own state belongs to both sides.
            SynLeaf::State(_) => {
                pre = true;
                post = true;
            }
            SynLeaf::PreState(_) | SynLeaf::SPre | SynLeaf::TPre => pre = true,
            SynLeaf::PostState(_) | SynLeaf::SPost | SynLeaf::TPost => post = true,
            SynLeaf::Local(i) => {
                let (a, b) = locals.get(*i).copied().unwrap_or_default();
                pre |= a;
                post |= b;
            }
            _ => {}
        }
        false
    });
    (pre, post)
}

impl Env<'_> {
    fn stmts(&mut self, stmts: &[Stmt], out: &mut Vec<SynAssign>) -> DResult<()> {
        for s in stmts {
            match s {
                Stmt::If {
                    cond,
                    then,
                    otherwise,
                    ..
                } => {
                    if static_cond(cond, &self.flags, &self.choices, &self.def.choices)? {
                        self.stmts(then, out)?;
                    } else {
                        self.stmts(otherwise, out)?;
                    }
                }
                Stmt::Let { name, value, .. } => {
                    let v = self.expr(value)?;
                    let shadows = self.eqs.params.iter().any(|p| p.name == name.name)
                        || BUILT_INS.contains(&name.name.as_str());
                    if shadows {
                        return Err(Diagnostic::new(
                            ErrorKind::Duplicate,
                            format!("`let {}` shadows a parameter or built-in", name.name),
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
                    let side = sides(&v, &self.local_sides);
                    if self.local_sides.len() <= i {
                        self.local_sides.resize(i + 1, (false, false));
                    }
                    self.local_sides[i] = side;
                    out.push(SynAssign {
                        target: SynVar::Local(i),
                        value: v,
                    });
                }
                Stmt::Assign { name, value, span } => {
                    let target = self.target(name)?;
                    let value = self.expr(value)?;
                    self.check_locality(target, &value, name, *span)?;
                    if let SynVar::Local(i) = target {
                        self.local_sides[i] = sides(&value, &self.local_sides);
                    }
                    out.push(SynAssign { target, value });
                }
                Stmt::Ode { name, span, .. } => {
                    return Err(Diagnostic::new(
                        ErrorKind::BadArgument,
                        format!("`{}'` is an ODE; a rule runs once per event", name.name),
                    )
                    .at(*span, "not in a synapse rule")
                    .hint("write the change as an assignment: `w = w + ...`"))
                }
            }
        }
        Ok(())
    }

    /// What each block may write, and what a trace's new value may read: a presynaptic
    /// trace is one per presynaptic neuron, shared by all its synapses, so it reads only its
    /// own side (and the postsynaptic likewise).
    fn check_locality(
        &self,
        target: SynVar,
        value: &SExpr,
        name: &ast::Ident,
        span: Span,
    ) -> DResult<()> {
        let block = self.block;
        let bad = |msg: String, hint: &str| {
            Err(Diagnostic::new(ErrorKind::BadArgument, msg)
                .at(span, format!("in `{}`", block.word()))
                .hint(hint.to_string()))
        };
        match (block, target) {
            (Block::Step, SynVar::State(_)) => bad(
                format!("`on_step` may not assign the synapse state `{}`", name.name),
                "`on_step` runs the traces' dynamics; change per-synapse state in `on_pre` or `on_post`",
            ),
            (Block::Step, SynVar::W) => bad(
                "`on_step` may not assign the weight `w`".to_string(),
                "`on_step` runs the traces' dynamics; change `w` in `on_pre` or `on_post`",
            ),
            (Block::Pre, SynVar::PostState(_)) => bad(
                format!(
                    "`on_pre` may not write the postsynaptic trace `{}`",
                    name.name
                ),
                "a presynaptic spike changes the weight and presynaptic traces; update postsynaptic traces in `on_post` or `on_step`",
            ),
            (Block::Post, SynVar::PreState(_)) => bad(
                format!(
                    "`on_post` may not write the presynaptic trace `{}`",
                    name.name
                ),
                "a postsynaptic event changes the weight and postsynaptic traces; update presynaptic traces in `on_pre` or `on_step`",
            ),
            (_, SynVar::PreState(_)) if sides(value, &self.local_sides).1 => bad(
                format!(
                    "presynaptic trace `{}` may not read the postsynaptic side",
                    name.name
                ),
                "a presynaptic trace is shared by all synapses of its neuron: it reads presynaptic traces, `s_pre`, parameters and numbers",
            ),
            (_, SynVar::PostState(_)) if sides(value, &self.local_sides).0 => bad(
                format!(
                    "postsynaptic trace `{}` may not read the presynaptic side",
                    name.name
                ),
                "a postsynaptic trace is shared by all synapses of its neuron: it reads postsynaptic traces, `s_post`, parameters and numbers",
            ),
            _ => Ok(()),
        }
    }

    /// A trace's initial value: parameters and numbers.
    fn init(&self, e: &Expr) -> DResult<SExpr> {
        let v = self.expr(e)?;
        if v.any_leaf(|l| !matches!(l, SynLeaf::Param(_))) {
            return Err(Diagnostic::new(
                ErrorKind::BadArgument,
                "a trace's initial value may read only parameters and numbers",
            )
            .at(e.span, "reads a run-time value")
            .hint("e.g. `pre x = 0.0`"));
        }
        Ok(v)
    }

    fn target(&self, name: &ast::Ident) -> DResult<SynVar> {
        if name.name == "w" {
            return Ok(SynVar::W);
        }
        if let Some(i) = self.eqs.locals.iter().position(|s| *s == name.name) {
            return Ok(SynVar::Local(i));
        }
        if let Some(i) = self.eqs.states.iter().position(|s| s.name == name.name) {
            return Ok(SynVar::State(i));
        }
        if let Some(i) = self.eqs.pre_states.iter().position(|s| s.name == name.name) {
            return Ok(SynVar::PreState(i));
        }
        if let Some(i) = self
            .eqs
            .post_states
            .iter()
            .position(|s| s.name == name.name)
        {
            return Ok(SynVar::PostState(i));
        }
        let what = if self.eqs.params.iter().any(|p| p.name == name.name) {
            "is a parameter (parameters are read-only)".to_string()
        } else if BUILT_INS.contains(&name.name.as_str()) {
            format!(
                "is read-only: `{}` belongs to the {} side",
                name.name,
                match name.name.as_str() {
                    "t_pre" | "s_pre" => "presynaptic",
                    "t_post" | "s_post" => "postsynaptic",
                    _ => "sample's",
                }
            )
        } else {
            "is not the weight".to_string()
        };
        Err(Diagnostic::new(
            ErrorKind::UnknownName,
            format!("cannot assign to `{}`: it {what}", name.name),
        )
        .at(name.span, "not assignable")
        .hint(
            "a rule assigns the weight `w`, its `pre` and `post` traces and its `let` temporaries",
        ))
    }

    fn lookup(&self, name: &str) -> Option<SExpr> {
        if let Some(i) = self.eqs.locals.iter().position(|s| s == name) {
            return Some(SExpr::Leaf(SynLeaf::Local(i)));
        }
        if let Some(i) = self.eqs.params.iter().position(|s| s.name == name) {
            return Some(SExpr::Leaf(SynLeaf::Param(i)));
        }
        if let Some(i) = self.eqs.states.iter().position(|s| s.name == name) {
            return Some(SExpr::Leaf(SynLeaf::State(i)));
        }
        if let Some(i) = self.eqs.pre_states.iter().position(|s| s.name == name) {
            return Some(SExpr::Leaf(SynLeaf::PreState(i)));
        }
        if let Some(i) = self.eqs.post_states.iter().position(|s| s.name == name) {
            return Some(SExpr::Leaf(SynLeaf::PostState(i)));
        }
        Some(SExpr::Leaf(match name {
            "w" => SynLeaf::W,
            "t_pre" => SynLeaf::TPre,
            "t_post" => SynLeaf::TPost,
            "s_pre" => SynLeaf::SPre,
            "s_post" => SynLeaf::SPost,
            "reward" => SynLeaf::Reward,
            "T" => SynLeaf::Steps,
            _ => return None,
        }))
    }

    fn expr(&self, e: &Expr) -> DResult<SExpr> {
        Ok(match &e.kind {
            ExprKind::Number(s) => SExpr::Const(s.parse().map_err(|_| {
                Diagnostic::new(ErrorKind::BadValue, format!("`{s}` is not a number"))
                    .at(e.span, "bad number")
            })?),
            ExprKind::Bool(b) => SExpr::Const(if *b { 1.0 } else { 0.0 }),
            ExprKind::Ident(n)
                if self.eqs.form == RuleForm::PerStep && (n == "t_pre" || n == "t_post") =>
            {
                return Err(Diagnostic::new(
                    ErrorKind::BadArgument,
                    format!("`{n}` is a first-spike rule's; this rule runs per step"),
                )
                .at(e.span, "a first-spike time")
                .hint("a per-step rule (one with `pre`/`post` traces, `on_step` or `on_pre`) reads the spikes `s_pre`, `s_post` and its traces"));
            }
            ExprKind::Ident(n) => match self.lookup(n) {
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
                    known.extend(self.eqs.locals.iter().map(String::as_str));
                    known.extend(BUILT_INS);
                    let d = Diagnostic::new(
                        ErrorKind::UnknownName,
                        format!(
                            "unknown name `{n}` in synapse model `{}`{what}",
                            self.def.name.name
                        ),
                    )
                    .at(e.span, "not defined");
                    return Err(match did_you_mean(n, known.iter().copied()) {
                        Some(s) => d.hint(format!("did you mean `{s}`?")),
                        None => d.hint(format!("names here: {}", known.join(", "))),
                    });
                }
            },
            ExprKind::Unary { op, expr } => SExpr::Unary(*op, Box::new(self.expr(expr)?)),
            ExprKind::Binary { op, lhs, rhs } => {
                SExpr::Binary(*op, Box::new(self.expr(lhs)?), Box::new(self.expr(rhs)?))
            }
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
                SExpr::Call(
                    f,
                    args.iter()
                        .map(|a| self.expr(&a.value))
                        .collect::<DResult<_>>()?,
                )
            }
            _ => {
                return Err(Diagnostic::new(
                    ErrorKind::BadArgument,
                    "not allowed in a synapse rule",
                )
                .at(e.span, "unexpected")
                .hint("rules use numbers, names, operators and functions"))
            }
        })
    }
}
