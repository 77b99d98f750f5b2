//! The one depth limit of the language (issue 18): every pass below the front end walks
//! expressions and statements recursively, and the generated kernels nest as deep as the
//! source does, so the front end refuses anything nested deeper than [`MAX_DEPTH`] before
//! any of them runs. Depth is counted as the compiler's trees see it: each operator of a
//! flat chain `a + b + c` is one level (the tree is `(a + b) + c`), as are brackets, unary
//! operators, calls, field accesses and `else if` links.
//!
//! Two checks share the limit. [`check_brackets`] scans the raw text before pest parses it
//! (pest recurses once per bracket); the AST builder counts the levels of every expression
//! as it assembles it without recursion (`parse::Builder::expr`) and of every statement.

use crate::diag::{Diagnostic, ErrorKind, FileId, Span};

/// Levels of nesting an expression or a statement may have. Far above what a neuron model
/// or a layer needs; low enough that every recursive pass, the autodiff and rustc/NVRTC on
/// the generated code stay within an ordinary thread's stack.
pub const MAX_DEPTH: usize = 256;

/// The error for something nested deeper than [`MAX_DEPTH`]; `what` names it ("expression",
/// "brackets", "statements").
pub fn too_deep(span: Span, what: &str) -> Diagnostic {
    Diagnostic::new(
        ErrorKind::Syntax,
        format!("{what} nested too deeply: more than {MAX_DEPTH} levels"),
    )
    .at(span, format!("level {} starts here", MAX_DEPTH + 1))
    .hint(match what {
        "statements" => format!(
            "each block inside an `if` and each `else if` counts as one level; write at most \
             {MAX_DEPTH} levels, e.g. as a sequence of `if`s instead of one chain"
        ),
        _ => format!(
            "each operator of a chain like `a + b + c` counts as one level; split long or \
             deep expressions into named parts (`let` temporaries in a neuron's update, \
             separate bindings in a model), each at most {MAX_DEPTH} levels deep"
        ),
    })
}

/// Refuse brackets (`(`, `[`, `{`) nested deeper than [`MAX_DEPTH`], outside comments and
/// strings, before the parser recurses into them. Unbalanced brackets are left to the parser.
pub fn check_brackets(file: FileId, text: &str) -> Result<(), Diagnostic> {
    let b = text.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => match text[i + 2..].find("*/") {
                Some(close) => i += 2 + close + 1,
                // The parser reports the unterminated comment.
                None => return Ok(()),
            },
            b'(' | b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(too_deep(Span::new(file, i, i + 1), "brackets"));
                }
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    Ok(())
}
