//! Pass `resolve`: AST -> NetIR. Looks up every name (layers, populations, neuron models,
//! parameters), reads model settings (`T`, `dt`, `seed`, `batch`) and builds the node graph.
//! Names may be used before their binding, which is how recurrent connections are written.

use std::collections::{HashMap, HashSet};

use crate::diag::{did_you_mean, DResult, Diagnostic, ErrorKind, Span};
use crate::front::ast::{self, Arg, BinOp, Expr, ExprKind, Ident};
use crate::front::Parsed;
use crate::ir::arena::Arena;
use crate::ir::net::*;

use super::bind::{self, whole, whole_rule, Bound, Range, Signature};

mod filter_args;

const OPS: &[&str] = &[
    "dense",
    "conv2d",
    "maxpool2d",
    "avgpool2d",
    "flatten",
    "poisson",
    "bernoulli",
    "latency",
    "inhibit",
    "wta",
    "infinite",
    "dog",
    "log",
    "gabor",
];
const SETTINGS: &[&str] = &["T", "dt", "seed", "batch"];

/// The neuron models visible to the root model: every file's, prelude first, each name
/// defined once. `resolve` checks instances against them; `neurons` lowers them.
pub fn neuron_models(parsed: &Parsed) -> DResult<Vec<ast::NeuronDef>> {
    let mut models: Vec<ast::NeuronDef> = Vec::new();
    for (_, f) in &parsed.files {
        for n in &f.neurons {
            if let Some(prev) = models.iter().find(|m| m.name.name == n.name.name) {
                return Err(Diagnostic::new(
                    ErrorKind::Duplicate,
                    format!("neuron model `{}` is defined twice", n.name.name),
                )
                .at(n.name.span, "second definition")
                .note(prev.name.span, "first defined here")
                .hint("rename one of them (built-in models cannot be redefined)"));
            }
            models.push(n.clone());
        }
    }
    Ok(models)
}

/// The synapse models (plasticity rules) visible to the root model: every file's, prelude
/// first, each name defined once and none the name of a neuron model.
pub fn synapse_models(parsed: &Parsed) -> DResult<Vec<ast::SynapseDef>> {
    let neurons = neuron_models(parsed)?;
    let mut rules: Vec<ast::SynapseDef> = Vec::new();
    for (_, f) in &parsed.files {
        for r in &f.synapses {
            let prev = rules
                .iter()
                .map(|m| &m.name)
                .chain(neurons.iter().map(|n| &n.name))
                .find(|m| m.name == r.name.name);
            if let Some(prev) = prev {
                return Err(Diagnostic::new(
                    ErrorKind::Duplicate,
                    format!("`{}` is defined twice", r.name.name),
                )
                .at(r.name.span, "second definition (a synapse model)")
                .note(prev.span, "first defined here")
                .hint("rename one of them (built-in models cannot be redefined)"));
            }
            rules.push(r.clone());
        }
    }
    Ok(rules)
}

pub fn run(parsed: &Parsed) -> DResult<Module> {
    let models = neuron_models(parsed)?;
    let rules = synapse_models(parsed)?;
    let root = &parsed
        .files
        .iter()
        .find(|(id, _)| *id == parsed.root)
        .expect("root file")
        .1;
    let model = match root.models.as_slice() {
        [m] => m,
        [] => {
            let d = Diagnostic::new(ErrorKind::UnknownName, "this file defines no `model`")
                .hint("add `model NAME { input x: [784] ... output counts(...) }`");
            return Err(match root.neurons.first() {
                Some(n) => d.at(n.span, "only neuron definitions here"),
                None => d,
            });
        }
        [_, second, ..] => {
            return Err(
                Diagnostic::new(ErrorKind::Duplicate, "a file may define only one model")
                    .at(second.name.span, "second model")
                    .hint("move each model into its own file; share neurons with `include`"),
            )
        }
    };
    let mut r = Resolver {
        models: &models,
        rules: &rules,
        pending_plastic: Vec::new(),
        pending_ties: Vec::new(),
        module: Module {
            name: model.name.name.clone(),
            t: 1,
            dt: 1.0,
            seed: 0,
            batch: 8,
            nodes: Arena::default(),
            inputs: vec![],
            outputs: vec![],
            span: model.span,
            recurrence: None,
            schedule: None,
            fusion: None,
            memory: None,
            train: None,
            backward: None,
            plastic: Vec::new(),
            ties: Vec::new(),
        },
        names: HashMap::new(),
        taken: HashSet::new(),
    };
    r.settings(model)?;
    r.inputs(model)?;
    r.bindings(model)?;
    r.plastic()?;
    r.outputs(model)?;
    if let Some(tb) = &model.train {
        r.module.train = Some(super::train_block::config(
            &tb.settings,
            tb.span,
            r.module.batch,
        )?);
        super::train_block::check_data_input(&r.module)?;
    }
    Ok(r.module)
}

struct Resolver<'a> {
    models: &'a [ast::NeuronDef],
    rules: &'a [ast::SynapseDef],
    /// `synapse = ...` of the projections resolved so far, by the projection's node name
    /// (its handle is known once the binding is in place).
    pending_plastic: Vec<(String, Plastic)>,
    /// `weights = other` of the projections resolved so far: (projection's node name, the
    /// named owner, the argument's span).
    pending_ties: Vec<(String, String, Span)>,
    module: Module,
    names: HashMap<String, (NodeId, Span)>,
    /// Every node's name, for [`Resolver::fresh_name`] (a scan of the nodes per call made
    /// resolving n layers quadratic).
    taken: HashSet<String>,
}

fn bad_value(span: Span, msg: String, hint: &str) -> Diagnostic {
    Diagnostic::new(ErrorKind::BadValue, msg)
        .at(span, "invalid value")
        .hint(hint)
}

impl Resolver<'_> {
    fn settings(&mut self, m: &ast::ModelDef) -> DResult<()> {
        let mut t_seen = false;
        for b in bind::settings(&m.bindings, SETTINGS)?.into_iter().flatten() {
            let v = &b.value;
            match b.name.name.as_str() {
                "T" => {
                    self.module.t = match whole(v) {
                        Some(t) if t >= 1 => t,
                        _ => {
                            return Err(bad_value(
                                v.span,
                                format!(
                                    "T must be a whole number of time steps {}, found `{}`",
                                    bind::whole_bounds(v, 1),
                                    snippet(v)
                                ),
                                "e.g. `T = 25`",
                            ))
                        }
                    };
                    t_seen = true;
                }
                "dt" => {
                    self.module.dt = match v.as_f32() {
                        Some(d) if d > 0.0 && d.is_finite() => d,
                        _ => {
                            return Err(bad_value(
                                v.span,
                                format!("dt must be a number > 0, found `{}`", snippet(v)),
                                "e.g. `dt = 1.0`",
                            ))
                        }
                    }
                }
                "seed" => {
                    self.module.seed = whole(v).ok_or_else(|| {
                        bad_value(
                            v.span,
                            format!("seed must be {}", whole_rule(v, 0)),
                            "e.g. `seed = 42`",
                        )
                    })? as u64
                }
                "batch" => {
                    self.module.batch = match whole(v) {
                        Some(b) if b >= 1 => b,
                        _ => {
                            return Err(bad_value(
                                v.span,
                                format!("batch must be {}", whole_rule(v, 1)),
                                "e.g. `batch = 32`",
                            ))
                        }
                    }
                }
                _ => unreachable!(),
            }
        }
        if !t_seen {
            return Err(Diagnostic::new(
                ErrorKind::BadValue,
                format!("model `{}` does not set T", m.name.name),
            )
            .at(m.name.span, "no `T = ...` in this model")
            .hint("add the number of time steps, e.g. `T = 25`"));
        }
        Ok(())
    }

    fn declare(&mut self, name: &Ident, h: NodeId) -> DResult<()> {
        if let Some((_, prev)) = self.names.get(&name.name) {
            return Err(Diagnostic::new(
                ErrorKind::Duplicate,
                format!("`{}` is defined twice", name.name),
            )
            .at(name.span, "second definition")
            .note(*prev, "first defined here")
            .hint("give each layer, population and input its own name"));
        }
        if self.models.iter().any(|m| m.name.name == name.name) || OPS.contains(&name.name.as_str())
        {
            return Err(Diagnostic::new(
                ErrorKind::Duplicate,
                format!("`{}` is the name of a neuron model or operation", name.name),
            )
            .at(name.span, "shadows a built-in")
            .hint("pick another name"));
        }
        self.names.insert(name.name.clone(), (h, name.span));
        Ok(())
    }

    fn inputs(&mut self, m: &ast::ModelDef) -> DResult<()> {
        for inp in &m.inputs {
            let ExprKind::List(items) = &inp.shape.kind else {
                return Err(Diagnostic::new(
                    ErrorKind::Syntax,
                    "an input shape is a list like `[784]`",
                )
                .at(inp.shape.span, "not a list"));
            };
            let mut dims = Vec::new();
            let mut time_varying = false;
            for (i, d) in items.iter().enumerate() {
                if d.as_ident() == Some("T") {
                    if i != 0 {
                        return Err(Diagnostic::new(
                            ErrorKind::Shape,
                            "`T` may only be the first dimension of an input",
                        )
                        .at(d.span, "T here")
                        .hint("write `[T, features...]` for an input that changes every step"));
                    }
                    time_varying = true;
                    continue;
                }
                match whole(d) {
                    Some(n) if n >= 1 => dims.push(n),
                    _ => {
                        return Err(bad_value(
                            d.span,
                            format!(
                                "an input dimension must be {}, found `{}`",
                                whole_rule(d, 1),
                                snippet(d)
                            ),
                            "e.g. `input x: [1, 28, 28]`",
                        ))
                    }
                }
            }
            if dims.is_empty() {
                return Err(Diagnostic::new(
                    ErrorKind::Shape,
                    "an input needs at least one feature dimension",
                )
                .at(inp.shape.span, "no features")
                .hint("e.g. `input x: [T, 16]`"));
            }
            let h = self.add_node(Node {
                name: inp.name.name.clone(),
                kind: NodeKind::Input { dims, time_varying },
                span: inp.span,
                shape: None,
            });
            self.declare(&inp.name, h)?;
            self.module.inputs.push(h);
        }
        if self.module.inputs.is_empty() {
            return Err(Diagnostic::new(
                ErrorKind::UnknownName,
                format!("model `{}` has no input", m.name.name),
            )
            .at(m.name.span, "no `input` statement")
            .hint("declare one, e.g. `input x: [784]`"));
        }
        Ok(())
    }

    fn bindings(&mut self, m: &ast::ModelDef) -> DResult<()> {
        let bindings: Vec<&ast::Binding> = m
            .bindings
            .iter()
            .filter(|b| !SETTINGS.contains(&b.name.name.as_str()))
            .collect();
        // Reserve a node per binding first so that later bindings can be referenced.
        let mut reserved = Vec::new();
        for b in &bindings {
            let h = self.add_node(Node {
                name: b.name.name.clone(),
                kind: NodeKind::Flatten {
                    src: NodeId::from_index(0),
                },
                span: b.span,
                shape: None,
            });
            self.declare(&b.name, h)?;
            reserved.push(h);
        }
        for (b, h) in bindings.iter().zip(reserved) {
            if let ExprKind::Binary { op: BinOp::Add, .. } = &b.value.kind {
                return Err(Diagnostic::new(
                    ErrorKind::BadArgument,
                    format!(
                        "`{}` is bound to a sum; sums of currents are only a population's input",
                        b.name.name
                    ),
                )
                .at(b.value.span, "a sum here")
                .hint("move the sum into the population: `s = LIF(dense(a, n) + dense(b, n))`"));
            }
            let ExprKind::Call { func, args } = &b.value.kind else {
                return Err(Diagnostic::new(
                    ErrorKind::BadArgument,
                    format!(
                        "`{}` must be bound to an operation or a neuron population",
                        b.name.name
                    ),
                )
                .at(b.value.span, "not an operation")
                .hint("e.g. `h1 = dense(x, 500)` or `s1 = LIF(h1, tau = 2.0)`"));
            };
            let kind = self.call(&b.name.name, func, args, b.value.span)?;
            self.module.nodes[h].kind = kind;
        }
        Ok(())
    }

    /// A node operand: a name, or a nested call that becomes an anonymous node.
    fn operand(&mut self, parent: &str, e: &Expr) -> DResult<NodeId> {
        match &e.kind {
            ExprKind::Ident(n) => match self.names.get(n) {
                Some((h, _)) => Ok(*h),
                None => {
                    let mut d =
                        Diagnostic::new(ErrorKind::UnknownName, format!("unknown name `{n}`"))
                            .at(e.span, "not defined in this model");
                    let known: Vec<&str> = self.names.keys().map(String::as_str).collect();
                    d = match did_you_mean(n, known) {
                        Some(s) => d.hint(format!("did you mean `{s}`?")),
                        None => d.hint("define it with `input` or a binding `name = ...`"),
                    };
                    Err(d)
                }
            },
            ExprKind::Call { func, args } => {
                let name = self.fresh_name(&format!("{parent}.{}", func.name));
                let kind = self.call(&name, func, args, e.span)?;
                Ok(self.add_node(Node {
                    name,
                    kind,
                    span: e.span,
                    shape: None,
                }))
            }
            ExprKind::Binary { op: BinOp::Add, .. } => Err(Diagnostic::new(
                ErrorKind::BadArgument,
                "`+` sums currents only as the input of a neuron population",
            )
            .at(e.span, "a sum here")
            .hint("e.g. `s = LIF(dense(x, 100) + dense(s, 100, delay = 1))`")),
            _ => Err(Diagnostic::new(
                ErrorKind::BadArgument,
                "expected a layer, population or input",
            )
            .at(e.span, "not a node")
            .hint("pass the name of an input, a layer or a population")),
        }
    }

    fn add_node(&mut self, node: Node) -> NodeId {
        self.taken.insert(node.name.clone());
        self.module.nodes.append(node)
    }

    fn fresh_name(&self, base: &str) -> String {
        let mut name = base.to_string();
        let mut i = 1;
        while self.taken.contains(&name) {
            i += 1;
            name = format!("{base}{i}");
        }
        name
    }

    fn call(&mut self, name: &str, func: &Ident, args: &[Arg], span: Span) -> DResult<NodeKind> {
        if let Some(mi) = self.models.iter().position(|m| m.name.name == func.name) {
            return self.population(name, mi, func, args, span);
        }
        if func.name == "learn" {
            return Err(Diagnostic::new(
                ErrorKind::BadArgument,
                "`learn(...)` is not a layer",
            )
            .at(span, "here")
            .hint("it marks a neuron parameter as learnable: `s1 = LIF(h1, tau = learn(2.0))`"));
        }
        let Some((params, positional)) = op_params(&func.name) else {
            let mut cands: Vec<&str> = OPS.to_vec();
            cands.extend(self.models.iter().map(|m| m.name.name.as_str()));
            let d = Diagnostic::new(
                ErrorKind::UnknownModel,
                format!("unknown neuron model or operation `{}`", func.name),
            )
            .at(func.span, "not defined");
            return Err(match did_you_mean(&func.name, cands.iter().copied()) {
                Some(s) => d.hint(format!("did you mean `{s}`?")),
                None => d.hint(format!(
                    "built-in operations: {}; neuron models: {}",
                    OPS.join(", "),
                    self.models
                        .iter()
                        .map(|m| m.name.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            });
        };
        for a in args {
            if let ExprKind::Call { func: f, .. } = &a.value.kind {
                if f.name == "learn" {
                    return Err(Diagnostic::new(
                        ErrorKind::BadArgument,
                        format!("an argument of `{}` cannot be learned", func.name),
                    )
                    .at(a.value.span, "learned here")
                    .hint(
                        "only neuron parameters are learnable, e.g. \
                         `s1 = LIF(h1, tau = learn(2.0))`; dense and conv weights are \
                         always trained",
                    ));
                }
            }
        }
        let sig = Signature {
            positional,
            usage: Some(usage(&func.name)),
            ..Signature::builtin(&func.name, params)
        };
        let a = bind::call(&sig, args, span)?;
        let kind = match func.name.as_str() {
            "dense" => {
                let src = self.operand(name, a.required("input", "the input")?)?;
                let out = a.required_usize("out_features", "the number of output features", 1)?;
                self.plastic_args(name, &a)?;
                self.tie_arg(name, &a)?;
                NodeKind::Dense {
                    src,
                    out,
                    bias: a.bool("bias", true)?,
                    delay: a.usize("delay", 0, 0)?,
                    init_gain: a.f32("init_gain", 1.0, Range::NonNegative)?,
                    sparse: sparse(&a)?,
                    rate: rate(&a)?,
                }
            }
            "conv2d" => {
                let src = self.operand(name, a.required("input", "the input")?)?;
                let out_channels =
                    a.required_usize("out_channels", "the number of output channels", 1)?;
                self.plastic_args(name, &a)?;
                self.tie_arg(name, &a)?;
                NodeKind::Conv2d {
                    src,
                    out_channels,
                    kernel: pair(&a, "kernel", 3)?,
                    stride: a.usize("stride", 1, 1)?,
                    padding: a.usize("padding", 0, 0)?,
                    bias: a.bool("bias", true)?,
                    delay: a.usize("delay", 0, 0)?,
                    init_gain: a.f32("init_gain", 1.0, Range::NonNegative)?,
                    sparse: sparse(&a)?,
                    rate: rate(&a)?,
                }
            }
            "maxpool2d" | "avgpool2d" => {
                let src = self.operand(name, a.required("input", "the input")?)?;
                let kernel = if a.by_position("kernel") {
                    a.required_usize("kernel", "the window size", 1)?
                } else {
                    a.usize("kernel", 2, 1)?
                };
                NodeKind::Pool2d {
                    src,
                    kind: if func.name == "maxpool2d" {
                        PoolKind::Max
                    } else {
                        PoolKind::Avg
                    },
                    kernel,
                    stride: a.usize("stride", kernel, 1)?,
                    padding: pool_padding(&a)?,
                }
            }
            "flatten" => NodeKind::Flatten {
                src: self.operand(name, a.required("input", "the input")?)?,
            },
            "poisson" | "bernoulli" => {
                let src = self.operand(name, a.required("input", "the input")?)?;
                // Each encoder gets its own stream unless the user pins a seed.
                let default_seed = (self.module.seed as u32)
                    .wrapping_mul(0x9E37_79B9)
                    .wrapping_add(self.module.nodes.len() as u32);
                let seed = a.usize("seed", default_seed as usize, 0)?;
                let seed = u32::try_from(seed).map_err(|_| {
                    bad_value(
                        span,
                        format!("seed {seed} does not fit in 32 bits"),
                        "use a seed below 4294967296",
                    )
                })?;
                let encoding = if func.name == "poisson" {
                    Encoding::Poisson {
                        max_rate: a.f32("max_rate", 1.0, Range::NonNegative)?,
                        seed,
                    }
                } else {
                    Encoding::Bernoulli {
                        gain: a.f32("gain", 1.0, Range::NonNegative)?,
                        seed,
                    }
                };
                NodeKind::Encode { src, encoding }
            }
            "dog" | "log" | "gabor" => {
                let src = self.operand(name, a.required("input", "the input")?)?;
                let f = filter_args::read(&func.name, &a)?;
                NodeKind::Filter {
                    src,
                    bank: f.bank,
                    size: f.size,
                    pad: f.pad,
                    threshold: f.threshold,
                }
            }
            "latency" => NodeKind::Latency {
                src: self.operand(name, a.required("input", "the input")?)?,
                sort: a.bool("sort", true)?,
            },
            "inhibit" => NodeKind::Inhibit {
                src: self.operand(name, a.required("input", "the input")?)?,
                threshold: a.f32("threshold", 0.0, Range::Any)?,
            },
            "wta" => NodeKind::Wta {
                src: self.operand(name, a.required("input", "the input")?)?,
                k: a.usize("k", 1, 1)?,
                radius: a.usize("radius", 0, 0)?,
                threshold: a.f32("threshold", 0.0, Range::Any)?,
            },
            "infinite" => NodeKind::Infinite {
                src: self.operand(name, a.required("input", "the input")?)?,
                value: a.f32("value", 0.0, Range::Any)?,
            },
            _ => unreachable!("op_params knows only these"),
        };
        Ok(kind)
    }

    /// `synapse = rule(..)` and its companions `post`, `gate`, `reward` on the projection
    /// `name` (kept pending until the projection's node exists).
    fn plastic_args(&mut self, name: &str, a: &Bound) -> DResult<()> {
        let Some(e) = a.get("synapse") else {
            for other in ["post", "gate", "reward"] {
                if let Some(x) = a.get(other) {
                    return Err(Diagnostic::new(
                        ErrorKind::BadArgument,
                        format!("`{other}` is an argument of a plastic projection"),
                    )
                    .at(x.span, "without `synapse = ...`")
                    .hint("give the projection a rule, e.g. `synapse = spyker_stdp()`"));
                }
            }
            return Ok(());
        };
        let (func, args): (&Ident, &[Arg]) = match &e.kind {
            ExprKind::Call { func, args } => (func, args),
            ExprKind::Ident(n) => {
                return Err(bad_value(
                    e.span,
                    format!("`synapse = {n}`: a rule is called, with its arguments"),
                    "e.g. `synapse = spyker_stdp()` or `synapse = spyker_stdp(a_plus = 0.004)`",
                ))
            }
            _ => {
                return Err(bad_value(
                    e.span,
                    "`synapse` must be a synapse model's call".into(),
                    "e.g. `synapse = spyker_stdp(a_plus = 0.004, a_minus = -0.003)`",
                ))
            }
        };
        let Some(rule) = self.rules.iter().find(|r| r.name.name == func.name) else {
            let d = Diagnostic::new(
                ErrorKind::UnknownModel,
                format!("unknown synapse model `{}`", func.name),
            )
            .at(func.span, "not a synapse model");
            let names: Vec<&str> = self.rules.iter().map(|r| r.name.name.as_str()).collect();
            return Err(match did_you_mean(&func.name, names.iter().copied()) {
                Some(s) => d.hint(format!("did you mean `{s}`?")),
                None => d.hint(format!("synapse models: {}", names.join(", "))),
            });
        };
        let args = rule_args(rule, args, e.span)?;
        let mut node = |key: &str| -> DResult<Option<NodeId>> {
            a.get(key).map(|x| self.operand(name, x)).transpose()
        };
        let (post, gate, reward) = (node("post")?, node("gate")?, node("reward")?);
        self.pending_plastic.push((
            name.to_string(),
            Plastic {
                projection: NodeId::from_index(0),
                rule: rule.name.name.clone(),
                rule_span: func.span,
                args,
                post,
                gate,
                reward,
                eqs: None,
                span: e.span,
            },
        ));
        Ok(())
    }

    /// `weights = other`: the projection `name` uses `other`'s weight.
    fn tie_arg(&mut self, name: &str, a: &Bound) -> DResult<()> {
        let Some(e) = a.get("weights") else {
            return Ok(());
        };
        let Some(owner) = e.as_ident() else {
            return Err(bad_value(
                e.span,
                "`weights` names another projection".into(),
                "e.g. `weights = c2`: this layer uses `c2`'s weight",
            ));
        };
        self.pending_ties
            .push((name.to_string(), owner.to_string(), e.span));
        Ok(())
    }

    /// The pending rules and ties, with their projections' handles.
    fn plastic(&mut self) -> DResult<()> {
        let by_name: HashMap<&str, NodeId> = self
            .module
            .nodes
            .iter()
            .map(|(h, n)| (n.name.as_str(), h))
            .collect();
        for (name, mut p) in std::mem::take(&mut self.pending_plastic) {
            p.projection = by_name[name.as_str()];
            self.module.plastic.push(p);
        }
        let nodes = &self.module.nodes;
        let is_projection = |h: NodeId| {
            matches!(
                nodes[h].kind,
                NodeKind::Dense { .. } | NodeKind::Conv2d { .. }
            )
        };
        let pending = std::mem::take(&mut self.pending_ties);
        for (name, owner, span) in &pending {
            let h = by_name[name.as_str()];
            let Some(&o) = by_name.get(owner.as_str()) else {
                let d = Diagnostic::new(ErrorKind::UnknownName, format!("unknown name `{owner}`"))
                    .at(*span, "not defined in this model");
                let names: Vec<&str> = by_name.keys().copied().collect();
                return Err(match did_you_mean(owner, names) {
                    Some(s) => d.hint(format!("did you mean `{s}`?")),
                    None => d.hint("name a `dense` or `conv2d` binding"),
                });
            };
            let same_op =
                std::mem::discriminant(&nodes[h].kind) == std::mem::discriminant(&nodes[o].kind);
            if o == h || !is_projection(o) || !same_op {
                return Err(Diagnostic::new(
                    ErrorKind::BadArgument,
                    format!(
                        "`weights = {owner}`: `{name}` can use the weight of another `{}` only",
                        nodes[h].kind.op_name()
                    ),
                )
                .at(*span, "not a projection of the same kind")
                .hint("e.g. `f2 = conv2d(p1, 150, kernel = 2, padding = 1, weights = c2)`"));
            }
            if pending.iter().any(|(n, _, _)| n == owner) {
                return Err(Diagnostic::new(
                    ErrorKind::BadArgument,
                    format!("`{owner}` uses another projection's weight itself"),
                )
                .at(*span, "a chain of shared weights")
                .hint("name the projection that owns the weight"));
            }
            self.module.ties.push((h, o, *span));
        }
        Ok(())
    }

    fn population(
        &mut self,
        name: &str,
        mi: usize,
        func: &Ident,
        args: &[Arg],
        span: Span,
    ) -> DResult<NodeKind> {
        let model = &self.models[mi];
        let positional: Vec<&Arg> = args.iter().filter(|a| a.name.is_none()).collect();
        let input = match positional.as_slice() {
            [one] => &one.value,
            [] => {
                return Err(Diagnostic::new(
                    ErrorKind::BadArgument,
                    format!(
                        "population `{name}` of `{}` needs an input current",
                        func.name
                    ),
                )
                .at(span, "no input")
                .hint(format!("e.g. `{}(dense(x, 100))`", func.name)))
            }
            [_, extra, ..] => {
                return Err(Diagnostic::new(
                    ErrorKind::BadArgument,
                    "a population takes one input current",
                )
                .at(extra.value.span, "extra positional argument")
                .hint("sum several currents with `+`, and give parameters by name: `tau = 2.0`"))
            }
        };
        let mut terms = Vec::new();
        flatten_sum(input, &mut terms);
        let mut inputs: Vec<NodeId> = Vec::new();
        let mut first: Vec<Span> = Vec::new();
        for t in terms {
            let h = self.operand(name, t)?;
            // Each input is one argument of the population's kernel, read once: a repeated
            // operand would give two arguments one buffer.
            if let Some(i) = inputs.iter().position(|&seen| seen == h) {
                return Err(Diagnostic::new(
                    ErrorKind::BadArgument,
                    format!(
                        "`{}` appears more than once in the input sum of `{name}`",
                        snippet(t)
                    ),
                )
                .at(t.span, "repeated here")
                .note(first[i], "first here")
                .hint(
                    "sum distinct currents; to scale a current, scale the weights of its layer",
                ));
            }
            inputs.push(h);
            first.push(t.span);
        }
        // The input current (by position only: no identifier has a space, so no parameter
        // of the model can clash with it), then every parameter, const, flag and choice.
        let mut params: Vec<&str> = vec!["input current"];
        params.extend(model.params.iter().map(|p| p.name.name.as_str()));
        params.extend(model.consts.iter().map(|p| p.name.name.as_str()));
        params.extend(model.flags.iter().map(|f| f.name.name.as_str()));
        params.extend(model.choices.iter().map(|c| c.name.name.as_str()));
        if !params.contains(&"schedule") {
            params.push("schedule");
        }
        let sig = Signature {
            callee: format!("neuron model `{}`", model.name.name),
            noun: "parameter",
            params: &params,
            positional: 1,
            usage: None,
            defined: Some((model.name.span, "model defined here")),
        };
        bind::call(&sig, args, span)?;
        let mut pa = PopArgs::default();
        for a in args.iter() {
            let Some(n) = &a.name else { continue };
            let learn = crate::passes::neurons::learn_call(&a.value)?;
            let own = |x: &str| {
                model.params.iter().any(|p| p.name.name == x)
                    || model.consts.iter().any(|p| p.name.name == x)
                    || model.flags.iter().any(|p| p.name.name == x)
                    || model.choices.iter().any(|p| p.name.name == x)
            };
            if n.name == "schedule" && !own("schedule") {
                let form = match a.value.as_ident() {
                    Some("parallel") => TimeForm::Parallel,
                    Some("sequential") => TimeForm::Sequential,
                    _ => {
                        return Err(bad_value(
                            a.value.span,
                            "`schedule` must be `parallel` or `sequential`".into(),
                            "e.g. `schedule = parallel` (all steps at once) or `schedule = sequential` (step after step)",
                        ))
                    }
                };
                pa.schedule = Some((form, n.span.to(a.value.span)));
            } else if model.consts.iter().any(|p| p.name.name == n.name) {
                let v = a
                    .value
                    .as_number()
                    .filter(|v| *v >= 0.0 && v.fract() == 0.0 && *v <= 1e6)
                    .ok_or_else(|| {
                        bad_value(
                            a.value.span,
                            format!("`{}` must be a whole number", n.name),
                            "it is fixed at compile time (a shape), e.g. `k = 3`",
                        )
                    })?;
                pa.consts.push((n.name.clone(), v as usize, a.value.span));
            } else if model.params.iter().any(|p| p.name.name == n.name) {
                let value = learn.map(|(init, _)| init).unwrap_or(&a.value);
                let v = value.as_f32().ok_or_else(|| {
                    bad_value(
                        value.span,
                        format!("parameter `{}` must be a number", n.name),
                        "parameters are numbers, e.g. `tau = 2.0`, or learned from an \
                         initial number, e.g. `tau = learn(2.0)`",
                    )
                })?;
                pa.params.push((n.name.clone(), v, value.span));
                if let Some((_, l)) = learn {
                    pa.learn.push((n.name.clone(), l));
                }
            } else if let (Some((_, l)), true) = (
                learn,
                model
                    .flags
                    .iter()
                    .map(|f| &f.name.name)
                    .chain(model.choices.iter().map(|c| &c.name.name))
                    .any(|x| *x == n.name),
            ) {
                return Err(Diagnostic::new(
                    ErrorKind::BadArgument,
                    format!(
                        "`{}` of `{}` is fixed at compile time and cannot be learned",
                        n.name, model.name.name
                    ),
                )
                .at(l.span, "learned here")
                .hint("flags and choices select the equations; only parameters are learnable"));
            } else if model.flags.iter().any(|f| f.name.name == n.name) {
                let ExprKind::Bool(b) = a.value.kind else {
                    return Err(bad_value(
                        a.value.span,
                        format!("flag `{}` must be true or false", n.name),
                        "e.g. `decay_input = false`",
                    ));
                };
                pa.flags.push((n.name.clone(), b, a.value.span));
            } else if let Some(c) = model.choices.iter().find(|c| c.name.name == n.name) {
                let variants: Vec<&str> = c.variants.iter().map(|v| v.name.as_str()).collect();
                match a.value.as_ident() {
                    Some(v) if variants.contains(&v) => {
                        pa.choices
                            .push((n.name.clone(), v.to_string(), a.value.span))
                    }
                    _ => {
                        return Err(bad_value(
                            a.value.span,
                            format!("`{}` must be one of {}", n.name, variants.join(" | ")),
                            &format!("e.g. `{} = {}`", n.name, variants[0]),
                        ))
                    }
                }
            } else {
                unreachable!("bind::call checked `{}` is a parameter", n.name);
            }
        }
        Ok(NodeKind::Population {
            inputs,
            model: model.name.name.clone(),
            args: pa,
            eqs: None,
        })
    }

    fn outputs(&mut self, m: &ast::ModelDef) -> DResult<()> {
        for o in &m.outputs {
            let kind = match o.kind.name.as_str() {
                "spikes" => OutputKind::Spikes,
                "counts" => OutputKind::Counts,
                "trace" => OutputKind::Trace,
                other => {
                    return Err(Diagnostic::new(
                        ErrorKind::UnknownName,
                        format!("unknown output kind `{other}`"),
                    )
                    .at(o.kind.span, "not an output kind")
                    .hint("use spikes(pop), counts(pop) or trace(pop.state)"))
                }
            };
            let (target, field) = match &o.target.kind {
                ExprKind::Field { base, field } => (base.as_ref(), Some(field)),
                _ => (&o.target, None),
            };
            let Some(n) = target.as_ident() else {
                return Err(Diagnostic::new(
                    ErrorKind::BadArgument,
                    format!(
                        "`{}` outputs a population or one of its states",
                        o.kind.name
                    ),
                )
                .at(target.span, "not a population's name")
                .hint("write `output counts(s2)`, `output spikes(s2)` or `output trace(s2.v)`"));
            };
            let node = match self.names.get(n) {
                Some((h, _)) => *h,
                None => {
                    let d = Diagnostic::new(
                        ErrorKind::UnknownName,
                        format!("unknown name `{n}` in output"),
                    )
                    .at(target.span, "not defined in this model");
                    let known: Vec<&str> = self.names.keys().map(String::as_str).collect();
                    return Err(match did_you_mean(n, known) {
                        Some(s) => d.hint(format!("did you mean `{s}`?")),
                        None => d.hint("outputs name a population, e.g. `output counts(s2)`"),
                    });
                }
            };
            let nname = self.module.nodes[node].name.clone();
            let (state, default_name) = match (kind, field) {
                (OutputKind::Trace, Some(f)) => {
                    (Some((f.name.clone(), None)), format!("{nname}.{}", f.name))
                }
                (OutputKind::Trace, None) => {
                    return Err(Diagnostic::new(
                        ErrorKind::BadArgument,
                        "trace needs a state variable",
                    )
                    .at(o.target.span, "which state?")
                    .hint(format!("e.g. `output trace({nname}.v)`")))
                }
                (_, Some(f)) => {
                    return Err(Diagnostic::new(
                        ErrorKind::BadArgument,
                        format!("{} takes a population, not a field", o.kind.name),
                    )
                    .at(f.span, "unexpected field")
                    .hint(format!(
                        "write `{}({nname})`, or `trace({nname}.{})` for a membrane trace",
                        o.kind.name, f.name
                    )))
                }
                (OutputKind::Spikes, None) => (None, format!("{nname}.spikes")),
                (OutputKind::Counts, None) => (None, format!("{nname}.counts")),
            };
            let name = o
                .alias
                .as_ref()
                .map(|a| a.name.clone())
                .unwrap_or(default_name);
            if let Some(prev) = self.module.outputs.iter().find(|p| p.name == name) {
                return Err(Diagnostic::new(
                    ErrorKind::Duplicate,
                    format!("output `{name}` is declared twice"),
                )
                .at(o.span, "second declaration")
                .note(prev.span, "first declared here")
                .hint("give one of them another name with `as`"));
            }
            self.module.outputs.push(Output {
                name,
                kind,
                node,
                state,
                span: o.span,
            });
        }
        if self.module.outputs.is_empty() {
            return Err(Diagnostic::new(
                ErrorKind::UnknownName,
                format!("model `{}` has no output", m.name.name),
            )
            .at(m.name.span, "nothing is observed")
            .hint("add e.g. `output counts(s2)` or `output trace(s2.v)`"));
        }
        Ok(())
    }
}

fn flatten_sum<'e>(e: &'e Expr, out: &mut Vec<&'e Expr>) {
    match &e.kind {
        ExprKind::Binary {
            op: BinOp::Add,
            lhs,
            rhs,
        } => {
            flatten_sum(lhs, out);
            flatten_sum(rhs, out);
        }
        _ => out.push(e),
    }
}

fn snippet(e: &Expr) -> String {
    match &e.kind {
        ExprKind::Number(s) => s.clone(),
        ExprKind::Ident(s) => s.clone(),
        ExprKind::Bool(b) => b.to_string(),
        ExprKind::Unary { expr, .. } => format!("-{}", snippet(expr)),
        _ => "...".into(),
    }
}

/// An operation's parameters, the positional ones first, and how many those are.
fn op_params(func: &str) -> Option<(&'static [&'static str], usize)> {
    Some(match func {
        "dense" => (
            &[
                "input",
                "out_features",
                "bias",
                "delay",
                "init_gain",
                "sparse",
                "rate",
                "synapse",
                "post",
                "gate",
                "reward",
                "weights",
            ],
            2,
        ),
        "conv2d" => (
            &[
                "input",
                "out_channels",
                "kernel",
                "stride",
                "padding",
                "bias",
                "delay",
                "init_gain",
                "sparse",
                "rate",
                "synapse",
                "post",
                "gate",
                "reward",
                "weights",
            ],
            2,
        ),
        "maxpool2d" | "avgpool2d" => (&["input", "kernel", "stride", "padding"], 2),
        "flatten" => (&["input"], 1),
        "poisson" => (&["input", "max_rate", "seed"], 1),
        "bernoulli" => (&["input", "gain", "seed"], 1),
        "latency" => (&["input", "sort"], 1),
        "inhibit" => (&["input", "threshold"], 1),
        "wta" => (&["input", "k", "radius", "threshold"], 1),
        "infinite" => (&["input", "value"], 1),
        "dog" | "log" => (&["input", "size", "sigmas", "pad", "threshold"], 1),
        "gabor" => (&["input", "size", "filters", "pad", "threshold"], 1),
        _ => return None,
    })
}

/// `kernel = 3` or `kernel = [h, w]`.
fn pair(a: &Bound, name: &str, default: usize) -> DResult<[usize; 2]> {
    let Some(e) = a.get(name) else {
        return Ok([default, default]);
    };
    let bad = || {
        bad_value(
            e.span,
            format!("`{name}` must be a size >= 1 or a pair `[h, w]`"),
            "e.g. `kernel = 3` or `kernel = [3, 5]`",
        )
    };
    match &e.kind {
        ExprKind::List(items) if items.len() == 2 => {
            let h = whole(&items[0]).filter(|v| *v >= 1).ok_or_else(bad)?;
            let w = whole(&items[1]).filter(|v| *v >= 1).ok_or_else(bad)?;
            Ok([h, w])
        }
        _ => {
            let v = whole(e).filter(|v| *v >= 1).ok_or_else(bad)?;
            Ok([v, v])
        }
    }
}

/// A pool's `padding`: one size for every side, `[vertical, horizontal]` or `[top, left,
/// bottom, right]` (Spyker's order and its expansion of a pair, docs/spyker.md "Padding").
fn pool_padding(a: &Bound) -> DResult<[usize; 4]> {
    let Some(e) = a.get("padding") else {
        return Ok([0; 4]);
    };
    let bad = || {
        bad_value(
            e.span,
            "`padding` must be a size >= 0, a pair `[vertical, horizontal]` or four sizes `[top, left, bottom, right]`".into(),
            "e.g. `padding = 1`, `padding = [0, 2]` or `padding = [1, 0, 0, 1]`",
        )
    };
    let sizes = |items: &[Expr]| -> DResult<Vec<usize>> {
        items.iter().map(|i| whole(i).ok_or_else(bad)).collect()
    };
    match &e.kind {
        ExprKind::List(items) if items.len() == 2 => {
            let p = sizes(items)?;
            Ok([p[0], p[1], p[0], p[1]])
        }
        ExprKind::List(items) if items.len() == 4 => {
            let p = sizes(items)?;
            Ok([p[0], p[1], p[2], p[3]])
        }
        ExprKind::List(_) => Err(bad()),
        _ => Ok([a.usize("padding", 0, 0)?; 4]),
    }
}

/// `sparse = auto | on | off | wave` (a projection of spikes: event-driven, dense GEMM, or
/// a conv of a cumulative wave's first-spike times).
fn sparse(a: &Bound) -> DResult<SparseMode> {
    match a.get("sparse") {
        None => Ok(SparseMode::Auto),
        Some(e) => match &e.kind {
            ExprKind::Ident(w) if w == "auto" => Ok(SparseMode::Auto),
            ExprKind::Ident(w) if w == "on" => Ok(SparseMode::On),
            ExprKind::Ident(w) if w == "off" => Ok(SparseMode::Off),
            ExprKind::Ident(w) if w == "wave" => Ok(SparseMode::Wave),
            _ => Err(bad_value(
                e.span,
                "`sparse` must be `auto`, `on`, `off` or `wave`".into(),
                "`sparse = on` runs the projection of spikes event-driven (work per input spike), `off` as a dense GEMM, `wave` (conv2d) convolves a cumulative wave's first-spike times, `auto` (the default) lets the cost model choose from `rate`",
            )),
        },
    }
}

/// `rate = p`, `0 <= p <= 1`: the expected fraction of non-zero inputs.
fn rate(a: &Bound) -> DResult<Option<f32>> {
    match a.get("rate") {
        None => Ok(None),
        Some(e) => match e.as_f32() {
            Some(v) if (0.0..=1.0).contains(&v) => Ok(Some(v)),
            _ => Err(bad_value(
                e.span,
                "`rate` must be a number between 0 and 1".into(),
                "the expected fraction of inputs that spike at a step, e.g. `rate = 0.1`",
            )),
        },
    }
}

fn usage(func: &str) -> String {
    match func {
        "dense" => "usage: dense(input, out_features, bias = true, delay = 0, init_gain = 1.0, sparse = auto, rate = 0.2, synapse = rule(..), weights = other)".into(),
        "conv2d" => "usage: conv2d(input, out_channels, kernel = 3, stride = 1, padding = 0, bias = true, delay = 0, init_gain = 1.0, synapse = rule(..), weights = other)".into(),
        "maxpool2d" | "avgpool2d" => format!("usage: {func}(input, kernel, stride = kernel, padding = 0 | [vertical, horizontal] | [top, left, bottom, right])"),
        "flatten" => "usage: flatten(input)".into(),
        "poisson" => "usage: poisson(input, max_rate = 1.0, seed = N)".into(),
        "bernoulli" => "usage: bernoulli(input, gain = 1.0, seed = N)".into(),
        "latency" => "usage: latency(input, sort = true)".into(),
        "inhibit" => "usage: inhibit(input, threshold = 0.0)".into(),
        "wta" => "usage: wta(input, k = 1, radius = 0, threshold = 0.0)".into(),
        "infinite" => "usage: infinite(input, value = 0.0)".into(),
        "dog" => "usage: dog(input, size = 7, sigmas = [std1, std2, ...], pad = (size - 1) / 2, threshold = none)".into(),
        "log" => "usage: log(input, size = 7, sigmas = [std, ...], pad = (size - 1) / 2, threshold = none)".into(),
        "gabor" => "usage: gabor(input, size = 5, filters = [sigma, theta_degrees, gamma, lambda, psi, ...], pad = (size - 1) / 2, threshold = none)".into(),
        _ => String::new(),
    }
}

/// The arguments of a rule instance `rule(a = .., ..)`: parameters (numbers, kept in f64 as
/// written), flags and choices of the synapse model, all by name.
fn rule_args(rule: &ast::SynapseDef, args: &[Arg], span: Span) -> DResult<RuleArgs> {
    let mut names: Vec<&str> = rule.params.iter().map(|p| p.name.name.as_str()).collect();
    names.extend(rule.flags.iter().map(|f| f.name.name.as_str()));
    names.extend(rule.choices.iter().map(|c| c.name.name.as_str()));
    let sig = Signature {
        callee: format!("synapse model `{}`", rule.name.name),
        noun: "parameter",
        params: &names,
        positional: 0,
        usage: None,
        defined: Some((rule.name.span, "model defined here")),
    };
    bind::call(&sig, args, span)?;
    let mut out = RuleArgs::default();
    for a in args {
        let Some(n) = &a.name else { continue };
        if rule.params.iter().any(|p| p.name.name == n.name) {
            let v = a.value.as_number().ok_or_else(|| {
                bad_value(
                    a.value.span,
                    format!("parameter `{}` must be a number", n.name),
                    "rule parameters are numbers, e.g. `a_plus = 0.004`",
                )
            })?;
            out.params.push((n.name.clone(), v, a.value.span));
        } else if rule.flags.iter().any(|f| f.name.name == n.name) {
            let ExprKind::Bool(b) = a.value.kind else {
                return Err(bad_value(
                    a.value.span,
                    format!("flag `{}` must be true or false", n.name),
                    "e.g. `stabilize = false`",
                ));
            };
            out.flags.push((n.name.clone(), b, a.value.span));
        } else if let Some(c) = rule.choices.iter().find(|c| c.name.name == n.name) {
            let vs: Vec<&str> = c.variants.iter().map(|v| v.name.as_str()).collect();
            match a.value.as_ident() {
                Some(v) if vs.contains(&v) => {
                    out.choices
                        .push((n.name.clone(), v.to_string(), a.value.span))
                }
                _ => {
                    return Err(bad_value(
                        a.value.span,
                        format!("`{}` must be one of {}", n.name, vs.join(", ")),
                        &format!("e.g. `{} = {}`", n.name, vs[0]),
                    ))
                }
            }
        }
    }
    Ok(out)
}
