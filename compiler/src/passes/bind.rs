//! One binder for the arguments of every call in a model: operations (`dense(x, 10)`),
//! neuron instances (`LIF(h, tau = 2.0)`), the calls of a `train { }` block
//! (`sgd(lr = 0.1)`), and for the model's own settings (`T = 25`).
//!
//! The rules are the same everywhere: positional arguments come before named ones, each
//! parameter is bound at most once (by position or by name), an unknown name is an error
//! with a did-you-mean. The second binding of a parameter is the error, with a note at the
//! first. Values are read with typed getters that check their range.

use crate::diag::{did_you_mean, DResult, Diagnostic, ErrorKind, Span};
use crate::front::ast::{Arg, Binding, Expr, ExprKind, Ident};

/// What a call accepts.
pub struct Signature<'s> {
    /// The callee as messages name it, e.g. `` `dense` `` or ``neuron model `LIF` ``.
    pub callee: String,
    /// What its parameters are called in messages: "argument" or "parameter".
    pub noun: &'static str,
    /// Every parameter, the positional ones first.
    pub params: &'s [&'s str],
    /// How many of `params` may be given by position.
    pub positional: usize,
    /// How to call it (the hint of every error), e.g. `usage: dense(input, out_features, ..)`.
    pub usage: Option<String>,
    /// Where the callee is defined and how the note says so (on unknown names), for
    /// user-defined callees, e.g. `(span, "model defined here")`.
    pub defined: Option<(Span, &'static str)>,
}

impl<'s> Signature<'s> {
    /// A built-in callee whose parameters are all positional or named.
    pub fn builtin(func: &str, params: &'s [&'s str]) -> Signature<'s> {
        Signature {
            callee: format!("`{func}`"),
            noun: "argument",
            params,
            positional: params.len(),
            usage: Some(format!("usage: {func}({})", params.join(", "))),
            defined: None,
        }
    }

    fn hint(&self) -> String {
        self.usage.clone().unwrap_or_else(|| {
            let named = &self.params[self.positional.min(self.params.len())..];
            format!("{} takes: {}", self.callee, named.join(", "))
        })
    }
}

/// One parameter's binding: its value and, when given by name, the name.
#[derive(Clone, Copy)]
struct Given<'a> {
    name: Option<&'a Ident>,
    value: &'a Expr,
}

impl Given<'_> {
    /// Where the binding is written: its name, or its value when positional.
    fn span(&self) -> Span {
        self.name.map_or(self.value.span, |n| n.span)
    }
}

/// A call's arguments bound to its parameters.
pub struct Bound<'a, 's> {
    sig: &'a Signature<'s>,
    /// The whole call (missing arguments are reported there).
    span: Span,
    slots: Vec<Option<Given<'a>>>,
}

fn twice(name: &str, verb: &str, second: Span, first: Span, hint: String) -> Diagnostic {
    Diagnostic::new(ErrorKind::Duplicate, format!("`{name}` is {verb} twice"))
        .at(second, format!("{verb} again here"))
        .note(first, format!("first {verb} here"))
        .hint(hint)
}

/// Binds `args` of a call spanning `span` to `sig`'s parameters.
pub fn call<'a, 's>(sig: &'a Signature<'s>, args: &'a [Arg], span: Span) -> DResult<Bound<'a, 's>> {
    let mut slots: Vec<Option<Given<'a>>> = vec![None; sig.params.len()];
    let mut first_named: Option<&Ident> = None;
    let mut position = 0;
    for a in args {
        let slot = match &a.name {
            None => {
                if let Some(n) = first_named {
                    return Err(Diagnostic::new(
                        ErrorKind::BadArgument,
                        "positional argument after a named one",
                    )
                    .at(a.value.span, "positional")
                    .note(n.span, "named argument before it")
                    .hint("put positional arguments first"));
                }
                if position >= sig.positional {
                    return Err(Diagnostic::new(
                        ErrorKind::BadArgument,
                        format!("too many arguments for {}", sig.callee),
                    )
                    .at(a.value.span, "extra argument")
                    .hint(sig.hint()));
                }
                position += 1;
                position - 1
            }
            Some(n) => {
                first_named.get_or_insert(n);
                match sig.params.iter().position(|p| *p == n.name) {
                    Some(i) => i,
                    None => return Err(unknown(sig, n)),
                }
            }
        };
        let given = Given {
            name: a.name.as_ref(),
            value: &a.value,
        };
        if let Some(first) = slots[slot] {
            return Err(twice(
                sig.params[slot],
                "given",
                given.span(),
                first.span(),
                format!("give each {} once; {}", sig.noun, sig.hint()),
            ));
        }
        slots[slot] = Some(given);
    }
    Ok(Bound { sig, span, slots })
}

fn unknown(sig: &Signature, n: &Ident) -> Diagnostic {
    let d = Diagnostic::new(
        ErrorKind::UnknownName,
        format!("{} has no {} `{}`", sig.callee, sig.noun, n.name),
    )
    .at(n.span, format!("unknown {}", sig.noun));
    let d = match sig.defined {
        Some((at, label)) => d.note(at, label),
        None => d,
    };
    match did_you_mean(&n.name, sig.params.iter().copied()) {
        Some(s) => match &sig.usage {
            Some(u) => d.hint(format!("did you mean `{s}`? {u}")),
            None => d.hint(format!("did you mean `{s}`?")),
        },
        None => d.hint(sig.hint()),
    }
}

/// Binds settings written `name = value` (a model's `T`, `dt`, ...), each at most once;
/// the bindings whose names are not in `names` are left to the caller.
pub fn settings<'a>(bindings: &'a [Binding], names: &[&str]) -> DResult<Vec<Option<&'a Binding>>> {
    let mut slots: Vec<Option<&Binding>> = vec![None; names.len()];
    for b in bindings {
        let Some(i) = names.iter().position(|n| *n == b.name.name) else {
            continue;
        };
        if let Some(first) = slots[i] {
            return Err(twice(
                names[i],
                "set",
                b.name.span,
                first.name.span,
                format!("set `{}` once: remove one of the two", names[i]),
            ));
        }
        slots[i] = Some(b);
    }
    Ok(slots)
}

/// The range a number must lie in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Range {
    /// Any finite number.
    Any,
    NonNegative,
    Positive,
}

impl<'a> Bound<'a, '_> {
    fn index(&self, name: &str) -> usize {
        self.sig
            .params
            .iter()
            .position(|p| *p == name)
            .unwrap_or_else(|| panic!("`{name}` is not a parameter of {}", self.sig.callee))
    }

    /// The value bound to `name`, if any.
    pub fn get(&self, name: &str) -> Option<&'a Expr> {
        self.slots[self.index(name)].map(|g| g.value)
    }

    /// Whether `name` was bound by position (not by name).
    pub fn by_position(&self, name: &str) -> bool {
        self.slots[self.index(name)].is_some_and(|g| g.name.is_none())
    }

    /// The value of a parameter that must be given; `what` describes it.
    pub fn required(&self, name: &str, what: &str) -> DResult<&'a Expr> {
        self.get(name).ok_or_else(|| {
            let at = self.index(name);
            let place = if at < self.sig.positional {
                format!(" as argument {}", at + 1)
            } else {
                format!(" (`{name} = ...`)")
            };
            Diagnostic::new(
                ErrorKind::BadArgument,
                format!("{} needs {what}{place}", self.sig.callee),
            )
            .at(self.span, "missing argument")
            .hint(self.sig.hint())
        })
    }

    pub fn bad_value(&self, e: &Expr, msg: String) -> Diagnostic {
        Diagnostic::new(ErrorKind::BadValue, msg)
            .at(e.span, "invalid value")
            .hint(self.sig.hint())
    }

    /// A required whole number `>= min`; `what` describes it.
    pub fn required_usize(&self, name: &str, what: &str, min: usize) -> DResult<usize> {
        let e = self.required(name, what)?;
        whole(e).filter(|v| *v >= min).ok_or_else(|| {
            self.bad_value(
                e,
                format!(
                    "{what} of {} must be {}",
                    self.sig.callee,
                    whole_rule(e, min)
                ),
            )
        })
    }

    pub fn usize(&self, name: &str, default: usize, min: usize) -> DResult<usize> {
        self.read(name, default, |e| read_usize(e, name, min))
    }

    pub fn f32(&self, name: &str, default: f32, range: Range) -> DResult<f32> {
        self.read(name, default, |e| read_f32(e, name, range))
    }

    pub fn bool(&self, name: &str, default: bool) -> DResult<bool> {
        self.read(name, default, |e| read_bool(e, name))
    }

    pub fn string(&self, name: &str) -> DResult<Option<String>> {
        self.read(name, None, |e| match &e.kind {
            ExprKind::Str(s) => Ok(Some(s.clone())),
            _ => Err(format!("`{name}` must be a string")),
        })
    }

    /// `name`'s value read by `read` (its error is the message), `default` without one.
    fn read<T>(
        &self,
        name: &str,
        default: T,
        read: impl FnOnce(&Expr) -> Result<T, String>,
    ) -> DResult<T> {
        match self.get(name) {
            None => Ok(default),
            Some(e) => read(e).map_err(|msg| self.bad_value(e, msg)),
        }
    }
}

/// `e` as a whole number `>= min`; the error message names it `name`.
pub fn read_usize(e: &Expr, name: &str, min: usize) -> Result<usize, String> {
    whole(e)
        .filter(|v| *v >= min)
        .ok_or_else(|| format!("`{name}` must be {}", whole_rule(e, min)))
}

/// `e` as a finite number in `range`; the error message names it `name`.
pub fn read_f32(e: &Expr, name: &str, range: Range) -> Result<f32, String> {
    let v = e.as_f32().filter(|v| v.is_finite());
    match (v, range) {
        (Some(v), Range::Any) => Ok(v),
        (Some(v), Range::NonNegative) if v >= 0.0 => Ok(v),
        (Some(v), Range::Positive) if v > 0.0 => Ok(v),
        (_, Range::Any) => Err(format!("`{name}` must be a number")),
        (_, Range::NonNegative) => Err(format!("`{name}` must be a non-negative number")),
        (_, Range::Positive) => Err(format!("`{name}` must be a number > 0")),
    }
}

/// `e` as `true` or `false`; the error message names it `name`.
pub fn read_bool(e: &Expr, name: &str) -> Result<bool, String> {
    match e.kind {
        ExprKind::Bool(b) => Ok(b),
        _ => Err(format!("`{name}` must be true or false")),
    }
}

/// The largest whole number a literal may give (larger ones are beyond any real use and
/// beyond exact `f64`-to-`usize` conversion).
pub const WHOLE_MAX: usize = 999_999_999_999;

/// A whole-number literal `>= 0`.
pub fn whole(e: &Expr) -> Option<usize> {
    let v = e.as_number()?;
    (v >= 0.0 && v.fract() == 0.0 && v <= WHOLE_MAX as f64).then_some(v as usize)
}

/// Whether `e` is a whole number too large for [`whole`], so that a message can name the limit.
pub fn too_large(e: &Expr) -> bool {
    e.as_number()
        .is_some_and(|v| v.fract() == 0.0 && v > WHOLE_MAX as f64)
}

/// The rule a whole number `>= min` breaks: its range when it is too large.
pub fn whole_rule(e: &Expr, min: usize) -> String {
    format!("a whole number {}", whole_bounds(e, min))
}

/// `>= min`, or `between min and WHOLE_MAX` when `e` is too large.
pub fn whole_bounds(e: &Expr, min: usize) -> String {
    if too_large(e) {
        format!("between {min} and {WHOLE_MAX}")
    } else {
        format!(">= {min}")
    }
}
