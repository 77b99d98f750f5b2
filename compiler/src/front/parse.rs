//! Text -> AST with pest (grammar/snn.pest). Syntax errors become diagnostics.

use pest::iterators::{Pair, Pairs};
use pest::Parser;

use super::ast::*;
use super::depth;
use crate::diag::{Diagnostic, ErrorKind, FileId, Span};

#[derive(pest_derive::Parser)]
#[grammar = "../../grammar/snn.pest"]
struct SnnParser;

/// Parse one source file.
pub fn parse_file(file: FileId, text: &str) -> Result<File, Diagnostic> {
    depth::check_brackets(file, text)?;
    let mut pairs = SnnParser::parse(Rule::file, text).map_err(|e| syntax_error(file, text, e))?;
    let root = pairs.next().expect("pest returns the file rule");
    let p = Builder { file };
    let mut out = File::default();
    for item in root.into_inner() {
        match item.as_rule() {
            Rule::include => {
                let span = p.span(&item);
                let s = item.into_inner().next().unwrap();
                out.includes.push(Include {
                    path: s.into_inner().next().unwrap().as_str().to_string(),
                    span,
                });
            }
            Rule::neuron_def => out.neurons.push(p.neuron(item)?),
            Rule::synapse_def => out.synapses.push(p.synapse(item)?),
            Rule::model_def => out.models.push(p.model(item)?),
            Rule::EOI => {}
            r => unreachable!("grammar item {r:?}"),
        }
    }
    Ok(out)
}

fn rule_name(r: &Rule) -> &'static str {
    match r {
        Rule::ident => "a name",
        Rule::expr => "an expression",
        Rule::number => "a number",
        Rule::string => "a string",
        Rule::list => "a list `[...]`",
        Rule::boolean => "true or false",
        Rule::block => "a block `{ ... }`",
        Rule::neuron_def => "`neuron`",
        Rule::synapse_def => "`synapse`",
        Rule::on_post_block => "`on_post`",
        Rule::on_pre_block => "`on_pre`",
        Rule::on_step_block => "`on_step`",
        Rule::pre_decl => "`pre`",
        Rule::post_decl => "`post`",
        Rule::model_def => "`model`",
        Rule::include => "`include`",
        Rule::param_decl => "`param`",
        Rule::const_decl => "`const`",
        Rule::mix_decl => "`mix`",
        Rule::flag_decl => "`flag`",
        Rule::choice_decl => "`choice`",
        Rule::state_decl => "`state`",
        Rule::current_decl => "`current`",
        Rule::update_block => "`update`",
        Rule::spike_decl => "`spike`",
        Rule::on_spike_block => "`on_spike`",
        Rule::input_stmt => "`input`",
        Rule::output_stmt => "`output`",
        Rule::binding => "`name = ...`",
        Rule::train_block => "`train { ... }`",
        Rule::if_stmt => "`if`",
        Rule::let_stmt => "`let`",
        Rule::assign_stmt | Rule::ode_stmt => "an assignment",
        Rule::call => "a call",
        Rule::arg => "an argument",
        Rule::EOI => "end of file",
        Rule::add | Rule::sub | Rule::mul | Rule::div | Rule::pow => "an operator",
        Rule::eq | Rule::ne | Rule::ge | Rule::le | Rule::gt | Rule::lt => "a comparison",
        Rule::and | Rule::or => "`&&` or `||`",
        Rule::neg | Rule::not => "`-` or `!`",
        Rule::field => "`.field`",
        _ => "something else",
    }
}

fn syntax_error(file: FileId, text: &str, e: pest::error::Error<Rule>) -> Diagnostic {
    use pest::error::{ErrorVariant, InputLocation};
    let (start, end) = match e.location {
        InputLocation::Pos(p) => (p, p),
        InputLocation::Span((s, e)) => (s, e),
    };
    // Mistakes the grammar only sees as a stray token: say what they are.
    if let Some(d) = unterminated_comment(file, text, start) {
        return d;
    }
    if let Some(d) = malformed_number(file, text, start) {
        return d;
    }
    let found: String = text[start.min(text.len())..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .take(16)
        .collect();
    let end = if end > start {
        end
    } else {
        start + found.len().max(1)
    };
    let (message, label) = match &e.variant {
        ErrorVariant::ParsingError { positives, .. } => {
            let mut names: Vec<&str> = positives.iter().map(rule_name).collect();
            names.sort_unstable();
            names.dedup();
            names.retain(|n| *n != "something else");
            let expected = match names.len() {
                0 => "valid syntax".to_string(),
                1 => names[0].to_string(),
                _ => {
                    let last = names.pop().unwrap();
                    format!("{} or {}", names.join(", "), last)
                }
            };
            let found = if found.is_empty() {
                "end of input".to_string()
            } else {
                format!("`{found}`")
            };
            (
                format!("syntax error: expected {expected}, found {found}"),
                format!("expected {expected}"),
            )
        }
        ErrorVariant::CustomError { message } => {
            (format!("syntax error: {message}"), message.clone())
        }
    };
    let mut hint =
        "see the language reference in README.md (section `The .snn language`)".to_string();
    if found.starts_with('}') || found.is_empty() {
        hint = "a `{` or `(` may be unclosed, or a statement is incomplete".into();
    } else if label.contains("a name")
        && text[start..].starts_with(|c: char| c.is_ascii_alphabetic())
    {
        hint = format!(
            "`{}` is a reserved word; pick another name",
            found.trim_matches(|c: char| !c.is_alphanumeric() && c != '_')
        );
    }
    Diagnostic::new(ErrorKind::Syntax, message)
        .at(
            Span::new(file, start, end.min(text.len()).max(start)),
            label,
        )
        .hint(hint)
}

/// A `/*` with no `*/` after it (outside strings and line comments), at or before the
/// position where parsing failed.
fn unterminated_comment(file: FileId, text: &str, failed_at: usize) -> Option<Diagnostic> {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() && i <= failed_at {
        if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            match text[i + 2..].find("*/") {
                Some(close) => i += 2 + close + 1,
                None => {
                    return Some(
                        Diagnostic::new(ErrorKind::Syntax, "unterminated block comment")
                            .at(Span::new(file, i, i + 2), "this `/*` is never closed")
                            .hint("close the comment with `*/`"),
                    );
                }
            }
        }
        i += 1;
    }
    None
}

/// A number with more than one `.` (`2.0.0`) around the error position.
fn malformed_number(file: FileId, text: &str, at: usize) -> Option<Diagnostic> {
    let b = text.as_bytes();
    let part = |c: u8| c.is_ascii_digit() || c == b'.';
    let at = at.min(b.len());
    let mut s = at;
    while s > 0 && part(b[s - 1]) {
        s -= 1;
    }
    let mut e = at;
    while e < b.len() && part(b[e]) {
        e += 1;
    }
    let token = &text[s..e];
    // Not part of a name (`x1.2`), holds a digit and more than one dot.
    let after_name = s > 0 && (b[s - 1].is_ascii_alphabetic() || b[s - 1] == b'_');
    if after_name || !token.bytes().any(|c| c.is_ascii_digit()) || token.matches('.').count() < 2 {
        return None;
    }
    Some(
        Diagnostic::new(
            ErrorKind::Syntax,
            format!("malformed number `{token}`: a number has at most one `.`"),
        )
        .at(Span::new(file, s, e), "not a number")
        .hint("write a number like `2.0` or `0.5`"),
    )
}

struct Builder {
    file: FileId,
}

impl Builder {
    fn span(&self, p: &Pair<Rule>) -> Span {
        let s = p.as_span();
        // Implicit whitespace can trail a rule's match; keep carets on the text itself.
        let text = s.as_str();
        let end = s.start() + text.trim_end().len();
        Span::new(self.file, s.start(), end.max(s.start()))
    }

    fn ident(&self, p: Pair<Rule>) -> Ident {
        debug_assert_eq!(p.as_rule(), Rule::ident);
        Ident {
            name: p.as_str().to_string(),
            span: self.span(&p),
        }
    }

    fn neuron(&self, p: Pair<Rule>) -> Result<NeuronDef, Diagnostic> {
        let span = self.span(&p);
        let mut it = p.into_inner();
        let name = self.ident(it.next().unwrap());
        let mut def = NeuronDef {
            name,
            params: vec![],
            consts: vec![],
            mix: None,
            flags: vec![],
            choices: vec![],
            states: vec![],
            current: None,
            update: vec![],
            spike: None,
            on_spike: vec![],
            span,
        };
        for item in it {
            let span = self.span(&item);
            let rule = item.as_rule();
            let mut parts = item.into_inner();
            match rule {
                Rule::param_decl => def.params.push(self.param_decl(parts, span)?),
                Rule::const_decl => def.consts.push(self.param_decl(parts, span)?),
                Rule::mix_decl => {
                    if def.mix.is_some() {
                        return Err(dup_block("mix", span));
                    }
                    let spec = self.primary(parts.next().unwrap())?;
                    let (kind, args) = match spec.kind {
                        ExprKind::Call { func, args } => {
                            let mut names = Vec::new();
                            for a in args {
                                match (&a.name, &a.value.kind) {
                                    (None, ExprKind::Ident(n)) => names.push(Ident {
                                        name: n.clone(),
                                        span: a.value.span,
                                    }),
                                    _ => {
                                        return Err(Diagnostic::new(
                                            ErrorKind::BadArgument,
                                            "the arguments of `mix` are names",
                                        )
                                        .at(a.value.span, "not a name")
                                        .hint("name the model's `const`, `param` or `flag`, e.g. `mix sliding(k)`"))
                                    }
                                }
                            }
                            (func, names)
                        }
                        ExprKind::Ident(n) => (
                            Ident {
                                name: n,
                                span: spec.span,
                            },
                            vec![],
                        ),
                        _ => unreachable!("the grammar allows a call or a name"),
                    };
                    def.mix = Some(MixDecl { kind, args, span });
                }
                Rule::flag_decl => def.flags.push(self.flag_decl(parts, span)),
                Rule::choice_decl => def.choices.push(self.choice_decl(parts, span)),
                Rule::state_decl => def.states.push(self.state_decl(parts, span)?),
                Rule::current_decl => def.current = Some(self.ident(parts.next().unwrap())),
                Rule::update_block => {
                    if !def.update.is_empty() {
                        return Err(dup_block("update", span));
                    }
                    def.update = self.block(parts.next().unwrap(), 1)?;
                }
                Rule::spike_decl => {
                    if def.spike.is_some() {
                        return Err(dup_block("spike", span));
                    }
                    def.spike = Some(self.expr(parts.next().unwrap())?);
                }
                Rule::on_spike_block => {
                    if !def.on_spike.is_empty() {
                        return Err(dup_block("on_spike", span));
                    }
                    def.on_spike = self.block(parts.next().unwrap(), 1)?;
                }
                r => unreachable!("neuron item {r:?}"),
            }
        }
        Ok(def)
    }

    fn synapse(&self, p: Pair<Rule>) -> Result<SynapseDef, Diagnostic> {
        let span = self.span(&p);
        let mut it = p.into_inner();
        let name = self.ident(it.next().unwrap());
        let mut def = SynapseDef {
            name,
            params: vec![],
            flags: vec![],
            choices: vec![],
            states: vec![],
            pre_states: vec![],
            post_states: vec![],
            on_step: vec![],
            on_pre: vec![],
            on_post: vec![],
            on_step_span: None,
            on_pre_span: None,
            on_post_span: None,
            span,
        };
        for item in it {
            let span = self.span(&item);
            let rule = item.as_rule();
            let mut parts = item.into_inner();
            match rule {
                Rule::param_decl => def.params.push(self.param_decl(parts, span)?),
                Rule::flag_decl => def.flags.push(self.flag_decl(parts, span)),
                Rule::choice_decl => def.choices.push(self.choice_decl(parts, span)),
                Rule::state_decl => def.states.push(self.state_decl(parts, span)?),
                Rule::pre_decl | Rule::post_decl => {
                    let d = self.state_decl(parts, span)?;
                    if rule == Rule::pre_decl {
                        def.pre_states.push(d);
                    } else {
                        def.post_states.push(d);
                    }
                }
                Rule::on_step_block | Rule::on_pre_block | Rule::on_post_block => {
                    let (slot, body, word) = match rule {
                        Rule::on_step_block => (&mut def.on_step_span, &mut def.on_step, "on_step"),
                        Rule::on_pre_block => (&mut def.on_pre_span, &mut def.on_pre, "on_pre"),
                        _ => (&mut def.on_post_span, &mut def.on_post, "on_post"),
                    };
                    if slot.is_some() {
                        return Err(dup_block(word, span));
                    }
                    *slot = Some(span);
                    *body = self.block(parts.next().unwrap(), 1)?;
                }
                r => unreachable!("synapse item {r:?}"),
            }
        }
        Ok(def)
    }

    /// `param NAME = expr (where expr)?` (also `const`).
    fn param_decl(&self, mut parts: Pairs<Rule>, span: Span) -> Result<ParamDecl, Diagnostic> {
        let name = self.ident(parts.next().unwrap());
        let default = self.expr(parts.next().unwrap())?;
        let check = parts.next().map(|e| self.expr(e)).transpose()?;
        Ok(ParamDecl {
            name,
            default,
            check,
            span,
        })
    }

    /// `flag NAME = true|false`.
    fn flag_decl(&self, mut parts: Pairs<Rule>, span: Span) -> FlagDecl {
        let name = self.ident(parts.next().unwrap());
        let default = parts.next().unwrap().as_str() == "true";
        FlagDecl {
            name,
            default,
            span,
        }
    }

    /// `choice NAME = a | b | ...`.
    fn choice_decl(&self, mut parts: Pairs<Rule>, span: Span) -> ChoiceDecl {
        let name = self.ident(parts.next().unwrap());
        let variants = parts.map(|v| self.ident(v)).collect();
        ChoiceDecl {
            name,
            variants,
            span,
        }
    }

    /// `state|pre|post NAME = expr`.
    fn state_decl(&self, mut parts: Pairs<Rule>, span: Span) -> Result<StateDecl, Diagnostic> {
        let name = self.ident(parts.next().unwrap());
        let init = self.expr(parts.next().unwrap())?;
        Ok(StateDecl { name, init, span })
    }

    /// The statements of a block `level` statements deep (1: an `update` or `on_spike`).
    fn block(&self, p: Pair<Rule>, level: usize) -> Result<Vec<Stmt>, Diagnostic> {
        p.into_inner().map(|s| self.stmt(s, level)).collect()
    }

    /// A statement `level` deep: each block inside an `if` and each `else if` link adds one
    /// (an `else if` chain nests like brackets without writing them).
    fn stmt(&self, p: Pair<Rule>, level: usize) -> Result<Stmt, Diagnostic> {
        let span = self.span(&p);
        if level > depth::MAX_DEPTH {
            // The statement's first word: the whole chain below it would fill the screen.
            let word = p.as_str().find(char::is_whitespace).unwrap_or(1);
            let start = span.start as usize;
            let at = Span::new(self.file, start, start + word);
            return Err(depth::too_deep(at, "statements"));
        }
        let rule = p.as_rule();
        let mut parts = p.into_inner();
        match rule {
            Rule::if_stmt => {
                let cond = self.expr(parts.next().unwrap())?;
                let then = self.block(parts.next().unwrap(), level + 1)?;
                let otherwise = match parts.next() {
                    None => vec![],
                    Some(e) if e.as_rule() == Rule::block => self.block(e, level + 1)?,
                    Some(e) => vec![self.stmt(e, level + 1)?],
                };
                Ok(Stmt::If {
                    cond,
                    then,
                    otherwise,
                    span,
                })
            }
            Rule::let_stmt | Rule::assign_stmt | Rule::ode_stmt => {
                let name = self.ident(parts.next().unwrap());
                let value = self.expr(parts.next().unwrap())?;
                Ok(match rule {
                    Rule::let_stmt => Stmt::Let { name, value, span },
                    Rule::assign_stmt => Stmt::Assign { name, value, span },
                    _ => Stmt::Ode { name, value, span },
                })
            }
            r => unreachable!("statement {r:?}"),
        }
    }

    fn model(&self, p: Pair<Rule>) -> Result<ModelDef, Diagnostic> {
        let span = self.span(&p);
        let mut it = p.into_inner();
        let name = self.ident(it.next().unwrap());
        let mut m = ModelDef {
            name,
            inputs: vec![],
            outputs: vec![],
            bindings: vec![],
            train: None,
            span,
        };
        for item in it {
            let span = self.span(&item);
            let rule = item.as_rule();
            let mut parts = item.into_inner();
            match rule {
                Rule::input_stmt => {
                    let name = self.ident(parts.next().unwrap());
                    let shape = self.primary(parts.next().unwrap())?;
                    m.inputs.push(InputStmt { name, shape, span });
                }
                Rule::output_stmt => {
                    let kind = self.ident(parts.next().unwrap());
                    let target = self.expr(parts.next().unwrap())?;
                    let alias = parts.next().map(|a| self.ident(a));
                    m.outputs.push(OutputStmt {
                        kind,
                        target,
                        alias,
                        span,
                    });
                }
                Rule::binding => {
                    let name = self.ident(parts.next().unwrap());
                    let value = self.expr(parts.next().unwrap())?;
                    m.bindings.push(Binding { name, value, span });
                }
                Rule::train_block => {
                    let mut settings = Vec::new();
                    for b in parts {
                        let bspan = self.span(&b);
                        let mut bp = b.into_inner();
                        let name = self.ident(bp.next().unwrap());
                        let value = self.expr(bp.next().unwrap())?;
                        settings.push(Binding {
                            name,
                            value,
                            span: bspan,
                        });
                    }
                    m.train = Some(TrainBlock { settings, span });
                }
                r => unreachable!("model item {r:?}"),
            }
        }
        Ok(m)
    }

    fn expr(&self, p: Pair<Rule>) -> Result<Expr, Diagnostic> {
        Ok(self.expr_levels(p)?.0)
    }

    /// An expression and its depth, assembled by operator precedence without recursion (a
    /// chain of 10,000 operators is one loop, not 10,000 calls); only brackets recurse, and
    /// [`depth::check_brackets`] has bounded those. Precedence, loosest first: `||`, `&&`,
    /// `==` `!=`, comparisons, `+` `-`, `*` `/`, prefix `-` `!`, `^` (right-associative),
    /// then `.field`. Refuses a node deeper than [`depth::MAX_DEPTH`] as soon as it is built.
    fn expr_levels(&self, p: Pair<Rule>) -> Result<(Expr, usize), Diagnostic> {
        debug_assert_eq!(p.as_rule(), Rule::expr);
        let mut operands: Vec<(Expr, usize)> = Vec::new();
        let mut pending: Vec<Pending> = Vec::new();
        for part in p.into_inner() {
            match part.as_rule() {
                Rule::neg | Rule::not => {
                    let op = if part.as_rule() == Rule::neg {
                        UnOp::Neg
                    } else {
                        UnOp::Not
                    };
                    pending.push(Pending::Prefix(op, self.span(&part)));
                }
                Rule::field => {
                    let (base, levels) = operands.pop().expect("a field follows an operand");
                    let field = self.ident(part.into_inner().next().unwrap());
                    let span = base.span.to(field.span);
                    let base = Box::new(base);
                    operands.push(self.node(ExprKind::Field { base, field }, span, levels)?);
                }
                rule => match infix_op(rule) {
                    Some((op, bp)) => {
                        while let Some(top) = pending.last() {
                            let top_bp = top.binding_power();
                            // `^` groups to the right: an equal power waits.
                            if top_bp > bp || (top_bp == bp && op != BinOp::Pow) {
                                let top = pending.pop().unwrap();
                                self.reduce(top, &mut operands)?;
                            } else {
                                break;
                            }
                        }
                        pending.push(Pending::Infix(op, bp));
                    }
                    None => operands.push(self.primary_levels(part)?),
                },
            }
        }
        while let Some(top) = pending.pop() {
            self.reduce(top, &mut operands)?;
        }
        let out = operands.pop().expect("an expression has an operand");
        debug_assert!(operands.is_empty());
        Ok(out)
    }

    /// Apply a pending operator to the operands on top of the stack.
    fn reduce(&self, op: Pending, operands: &mut Vec<(Expr, usize)>) -> Result<(), Diagnostic> {
        let node = match op {
            Pending::Prefix(op, at) => {
                let (e, levels) = operands.pop().expect("a prefix has an operand");
                let span = at.to(e.span);
                self.node(
                    ExprKind::Unary {
                        op,
                        expr: Box::new(e),
                    },
                    span,
                    levels,
                )?
            }
            Pending::Infix(op, _) => {
                let (rhs, r) = operands.pop().expect("an infix has a right operand");
                let (lhs, l) = operands.pop().expect("an infix has a left operand");
                let span = lhs.span.to(rhs.span);
                let (lhs, rhs) = (Box::new(lhs), Box::new(rhs));
                self.node(ExprKind::Binary { op, lhs, rhs }, span, l.max(r))?
            }
        };
        operands.push(node);
        Ok(())
    }

    /// A node one level above its deepest operand (`below` levels), unless that is too deep.
    fn node(&self, kind: ExprKind, span: Span, below: usize) -> Result<(Expr, usize), Diagnostic> {
        let levels = below + 1;
        if levels > depth::MAX_DEPTH {
            return Err(depth::too_deep(span, "expression"));
        }
        Ok((Expr { kind, span }, levels))
    }

    fn primary(&self, p: Pair<Rule>) -> Result<Expr, Diagnostic> {
        Ok(self.primary_levels(p)?.0)
    }

    fn primary_levels(&self, p: Pair<Rule>) -> Result<(Expr, usize), Diagnostic> {
        let span = self.span(&p);
        let (kind, below) = match p.as_rule() {
            Rule::expr => return self.expr_levels(p),
            Rule::number => (ExprKind::Number(p.as_str().to_string()), 0),
            Rule::boolean => (ExprKind::Bool(p.as_str() == "true"), 0),
            Rule::string => (
                ExprKind::Str(p.into_inner().next().unwrap().as_str().to_string()),
                0,
            ),
            Rule::ident => (ExprKind::Ident(p.as_str().to_string()), 0),
            Rule::list => {
                let mut items = Vec::new();
                let mut below = 0;
                for e in p.into_inner() {
                    let (e, levels) = self.expr_levels(e)?;
                    below = below.max(levels);
                    items.push(e);
                }
                (ExprKind::List(items), below)
            }
            Rule::call => {
                let mut it = p.into_inner();
                let func = self.ident(it.next().unwrap());
                let mut args = Vec::new();
                let mut below = 0;
                for a in it {
                    let mut parts: Vec<Pair<Rule>> = a.into_inner().collect();
                    let (value, levels) = self.expr_levels(parts.pop().unwrap())?;
                    below = below.max(levels);
                    let name = parts.pop().map(|n| self.ident(n));
                    args.push(Arg { name, value });
                }
                (ExprKind::Call { func, args }, below)
            }
            r => unreachable!("primary {r:?}"),
        };
        self.node(kind, span, below)
    }
}

/// An operator waiting for its right operand while a chain is assembled.
enum Pending {
    Prefix(UnOp, Span),
    Infix(BinOp, u8),
}

/// How tightly prefix `-` and `!` bind: tighter than `*`, looser than `^` (`-x^2` is
/// `-(x^2)`).
const PREFIX_POWER: u8 = 7;

impl Pending {
    fn binding_power(&self) -> u8 {
        match self {
            Pending::Prefix(..) => PREFIX_POWER,
            Pending::Infix(_, bp) => *bp,
        }
    }
}

/// An infix operator's meaning and binding power (higher binds tighter).
fn infix_op(rule: Rule) -> Option<(BinOp, u8)> {
    Some(match rule {
        Rule::or => (BinOp::Or, 1),
        Rule::and => (BinOp::And, 2),
        Rule::eq => (BinOp::Eq, 3),
        Rule::ne => (BinOp::Ne, 3),
        Rule::ge => (BinOp::Ge, 4),
        Rule::le => (BinOp::Le, 4),
        Rule::gt => (BinOp::Gt, 4),
        Rule::lt => (BinOp::Lt, 4),
        Rule::add => (BinOp::Add, 5),
        Rule::sub => (BinOp::Sub, 5),
        Rule::mul => (BinOp::Mul, 6),
        Rule::div => (BinOp::Div, 6),
        Rule::pow => (BinOp::Pow, 8),
        _ => return None,
    })
}

fn dup_block(what: &str, span: Span) -> Diagnostic {
    Diagnostic::new(
        ErrorKind::Duplicate,
        format!("`{what}` is given twice in one neuron"),
    )
    .at(span, "second definition")
    .hint(format!("merge the two `{what}` sections into one"))
}
