//! The syntax tree of a `.snn` file. Every node keeps its span.

use crate::diag::Span;
/// The operators are the IR's: equations keep them as written.
pub use crate::ir::expr::{BinOp, UnOp};

#[derive(Clone, Debug, PartialEq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

#[derive(Clone, Debug, Default)]
pub struct File {
    pub includes: Vec<Include>,
    pub neurons: Vec<NeuronDef>,
    pub synapses: Vec<SynapseDef>,
    pub models: Vec<ModelDef>,
}

#[derive(Clone, Debug)]
pub struct Include {
    pub path: String,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct NeuronDef {
    pub name: Ident,
    pub params: Vec<ParamDecl>,
    /// `const k = 2`: compile-time whole numbers (same form as a parameter).
    pub consts: Vec<ParamDecl>,
    /// `mix sliding(k)`: the input is mixed over time by learnable weights first.
    pub mix: Option<MixDecl>,
    pub flags: Vec<FlagDecl>,
    pub choices: Vec<ChoiceDecl>,
    pub states: Vec<StateDecl>,
    /// Name of the synaptic input inside the equations (`I` unless `current X`).
    pub current: Option<Ident>,
    pub update: Vec<Stmt>,
    pub spike: Option<Expr>,
    pub on_spike: Vec<Stmt>,
    pub span: Span,
}

/// `synapse NAME { ... }`: a plasticity rule (docs/language.md, "Synapse models").
#[derive(Clone, Debug)]
pub struct SynapseDef {
    pub name: Ident,
    pub params: Vec<ParamDecl>,
    pub flags: Vec<FlagDecl>,
    pub choices: Vec<ChoiceDecl>,
    /// `pre x = init`: a trace per presynaptic neuron and sample (per-step rules).
    pub pre_states: Vec<StateDecl>,
    /// `post y = init`: a trace per postsynaptic neuron and sample.
    pub post_states: Vec<StateDecl>,
    /// Runs every step before the events (per-step rules): the traces' dynamics.
    pub on_step: Vec<Stmt>,
    /// Runs at each presynaptic spike (per-step rules).
    pub on_pre: Vec<Stmt>,
    /// Runs at each postsynaptic event; writes the weight `w`.
    pub on_post: Vec<Stmt>,
    /// Where each block is declared (`on_step`, `on_pre`, `on_post`), for messages.
    pub on_step_span: Option<Span>,
    pub on_pre_span: Option<Span>,
    pub on_post_span: Option<Span>,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct ParamDecl {
    pub name: Ident,
    pub default: Expr,
    /// `where <expr>`: a condition the value must satisfy.
    pub check: Option<Expr>,
    pub span: Span,
}

/// `mix KIND` or `mix KIND(name, ...)`; the names refer to the model's consts, params and
/// flags.
#[derive(Clone, Debug)]
pub struct MixDecl {
    pub kind: Ident,
    pub args: Vec<Ident>,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct FlagDecl {
    pub name: Ident,
    pub default: bool,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct ChoiceDecl {
    pub name: Ident,
    /// The first variant is the default.
    pub variants: Vec<Ident>,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct StateDecl {
    pub name: Ident,
    pub init: Expr,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub enum Stmt {
    /// Compile-time branch on flags and choices.
    If {
        cond: Expr,
        then: Vec<Stmt>,
        otherwise: Vec<Stmt>,
        span: Span,
    },
    Let {
        name: Ident,
        value: Expr,
        span: Span,
    },
    Assign {
        name: Ident,
        value: Expr,
        span: Span,
    },
    /// `x' = f`: forward Euler, `x = x + dt * f`.
    Ode {
        name: Ident,
        value: Expr,
        span: Span,
    },
}

#[derive(Clone, Debug)]
pub struct ModelDef {
    pub name: Ident,
    pub inputs: Vec<InputStmt>,
    pub outputs: Vec<OutputStmt>,
    pub bindings: Vec<Binding>,
    /// The `train { ... }` settings, if any (last block wins; settings in order).
    pub train: Option<TrainBlock>,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct TrainBlock {
    pub settings: Vec<Binding>,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct InputStmt {
    pub name: Ident,
    /// A list expression: `[784]` or `[T, 16]`.
    pub shape: Expr,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct OutputStmt {
    /// `spikes`, `counts` or `trace`.
    pub kind: Ident,
    pub target: Expr,
    pub alias: Option<Ident>,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct Binding {
    pub name: Ident,
    pub value: Expr,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    /// The literal text is kept so that `0.1` becomes the f32 nearest to 0.1 (not via f64).
    Number(String),
    Bool(bool),
    Str(String),
    Ident(String),
    List(Vec<Expr>),
    Call {
        func: Ident,
        args: Vec<Arg>,
    },
    Field {
        base: Box<Expr>,
        field: Ident,
    },
    Unary {
        op: UnOp,
        expr: Box<Expr>,
    },
    Binary {
        op: BinOp,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Arg {
    pub name: Option<Ident>,
    pub value: Expr,
}

impl Expr {
    /// A compile-time number: a literal, optionally negated.
    pub fn as_number(&self) -> Option<f64> {
        match &self.kind {
            ExprKind::Number(s) => s.parse().ok(),
            ExprKind::Unary {
                op: UnOp::Neg,
                expr,
            } => expr.as_number().map(|v| -v),
            _ => None,
        }
    }
    /// A compile-time f32, parsed from the literal text directly (round to nearest f32).
    pub fn as_f32(&self) -> Option<f32> {
        match &self.kind {
            ExprKind::Number(s) => s.parse().ok(),
            ExprKind::Unary {
                op: UnOp::Neg,
                expr,
            } => expr.as_f32().map(|v| -v),
            _ => None,
        }
    }
    pub fn as_ident(&self) -> Option<&str> {
        match &self.kind {
            ExprKind::Ident(s) => Some(s),
            _ => None,
        }
    }
}
