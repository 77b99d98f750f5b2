//! The text dump of a parsed file (`snnc ir FILE --after parse`): the syntax tree printed
//! back as source, one item per line, expressions fully parenthesised.

use std::fmt::Write;

use super::ast::{self, Expr, ExprKind};

pub fn expr(e: &Expr) -> String {
    match &e.kind {
        ExprKind::Number(s) => s.clone(),
        ExprKind::Bool(b) => b.to_string(),
        ExprKind::Str(s) => format!("{s:?}"),
        ExprKind::Ident(s) => s.clone(),
        ExprKind::List(items) => format!(
            "[{}]",
            items.iter().map(expr).collect::<Vec<_>>().join(", ")
        ),
        ExprKind::Call { func, args } => {
            let a: Vec<String> = args
                .iter()
                .map(|a| match &a.name {
                    Some(n) => format!("{} = {}", n.name, expr(&a.value)),
                    None => expr(&a.value),
                })
                .collect();
            format!("{}({})", func.name, a.join(", "))
        }
        ExprKind::Field { base, field } => format!("{}.{}", expr(base), field.name),
        ExprKind::Unary { op, expr: x } => format!(
            "{}{}",
            if *op == ast::UnOp::Neg { "-" } else { "!" },
            expr(x)
        ),
        ExprKind::Binary { op, lhs, rhs } => {
            format!("({} {} {})", expr(lhs), op.symbol(), expr(rhs))
        }
    }
}

fn stmts(out: &mut String, s: &[ast::Stmt], indent: usize) {
    let pad = " ".repeat(indent);
    for st in s {
        match st {
            ast::Stmt::If {
                cond,
                then,
                otherwise,
                ..
            } => {
                let _ = writeln!(out, "{pad}if {} {{", expr(cond));
                stmts(out, then, indent + 2);
                if !otherwise.is_empty() {
                    let _ = writeln!(out, "{pad}}} else {{");
                    stmts(out, otherwise, indent + 2);
                }
                let _ = writeln!(out, "{pad}}}");
            }
            ast::Stmt::Let { name, value, .. } => {
                let _ = writeln!(out, "{pad}let {} = {}", name.name, expr(value));
            }
            ast::Stmt::Assign { name, value, .. } => {
                let _ = writeln!(out, "{pad}{} = {}", name.name, expr(value));
            }
            ast::Stmt::Ode { name, value, .. } => {
                let _ = writeln!(out, "{pad}{}' = {}", name.name, expr(value));
            }
        }
    }
}

/// The syntax tree of one file, re-printed in canonical form.
pub fn ast_file(f: &ast::File) -> String {
    let mut out = String::new();
    for i in &f.includes {
        let _ = writeln!(out, "include {:?}", i.path);
    }
    for n in &f.neurons {
        let _ = writeln!(out, "neuron {} {{", n.name.name);
        for p in &n.params {
            let chk = p
                .check
                .as_ref()
                .map(|c| format!(" where {}", expr(c)))
                .unwrap_or_default();
            let _ = writeln!(out, "  param {} = {}{chk}", p.name.name, expr(&p.default));
        }
        for p in &n.consts {
            let chk = p
                .check
                .as_ref()
                .map(|c| format!(" where {}", expr(c)))
                .unwrap_or_default();
            let _ = writeln!(out, "  const {} = {}{chk}", p.name.name, expr(&p.default));
        }
        for fl in &n.flags {
            let _ = writeln!(out, "  flag {} = {}", fl.name.name, fl.default);
        }
        for c in &n.choices {
            let v: Vec<&str> = c.variants.iter().map(|v| v.name.as_str()).collect();
            let _ = writeln!(out, "  choice {} = {}", c.name.name, v.join(" | "));
        }
        for s in &n.states {
            let _ = writeln!(out, "  state {} = {}", s.name.name, expr(&s.init));
        }
        if let Some(c) = &n.current {
            let _ = writeln!(out, "  current {}", c.name);
        }
        if let Some(mx) = &n.mix {
            let args: Vec<&str> = mx.args.iter().map(|a| a.name.as_str()).collect();
            if args.is_empty() {
                let _ = writeln!(out, "  mix {}", mx.kind.name);
            } else {
                let _ = writeln!(out, "  mix {}({})", mx.kind.name, args.join(", "));
            }
        }
        let _ = writeln!(out, "  update {{");
        stmts(&mut out, &n.update, 4);
        let _ = writeln!(out, "  }}");
        if let Some(s) = &n.spike {
            let _ = writeln!(out, "  spike {}", expr(s));
        }
        if !n.on_spike.is_empty() {
            let _ = writeln!(out, "  on_spike {{");
            stmts(&mut out, &n.on_spike, 4);
            let _ = writeln!(out, "  }}");
        }
        let _ = writeln!(out, "}}");
    }
    for r in &f.synapses {
        let _ = writeln!(out, "synapse {} {{", r.name.name);
        for p in &r.params {
            let chk = p
                .check
                .as_ref()
                .map(|c| format!(" where {}", expr(c)))
                .unwrap_or_default();
            let _ = writeln!(out, "  param {} = {}{chk}", p.name.name, expr(&p.default));
        }
        for fl in &r.flags {
            let _ = writeln!(out, "  flag {} = {}", fl.name.name, fl.default);
        }
        for c in &r.choices {
            let v: Vec<&str> = c.variants.iter().map(|v| v.name.as_str()).collect();
            let _ = writeln!(out, "  choice {} = {}", c.name.name, v.join(" | "));
        }
        for (word, states) in [("pre", &r.pre_states), ("post", &r.post_states)] {
            for st in states {
                let _ = writeln!(out, "  {word} {} = {}", st.name.name, expr(&st.init));
            }
        }
        for (word, at, body) in [
            ("on_step", r.on_step_span, &r.on_step),
            ("on_pre", r.on_pre_span, &r.on_pre),
            ("on_post", r.on_post_span, &r.on_post),
        ] {
            if at.is_some() {
                let _ = writeln!(out, "  {word} {{");
                stmts(&mut out, body, 4);
                let _ = writeln!(out, "  }}");
            }
        }
        let _ = writeln!(out, "}}");
    }
    for m in &f.models {
        let _ = writeln!(out, "model {} {{", m.name.name);
        for i in &m.inputs {
            let _ = writeln!(out, "  input {}: {}", i.name.name, expr(&i.shape));
        }
        for b in &m.bindings {
            let _ = writeln!(out, "  {} = {}", b.name.name, expr(&b.value));
        }
        for o in &m.outputs {
            let alias = o
                .alias
                .as_ref()
                .map(|a| format!(" as {}", a.name))
                .unwrap_or_default();
            let _ = writeln!(out, "  output {}({}){alias}", o.kind.name, expr(&o.target));
        }
        let _ = writeln!(out, "}}");
    }
    out
}
