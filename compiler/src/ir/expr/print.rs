//! The one printer: a [`Syntax`] spells the parts (leaves, constants, operators, calls) and
//! [`print()`] walks the tree and decides the parentheses.

use super::{BinOp, Expr, Func, Node, UnOp};

/// Where [`print()`] puts parentheses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parens {
    /// Only where precedence needs them (`a - (b + c)`, `-(a * b)`); operators are
    /// left-associative except `^`.
    Minimal,
    /// Around every binary operation (`((a + b) * c)`) and every unary operand (`-(a)`).
    Full,
    /// None: each spelling delimits itself (`(a + b)`, `powf(a, b)` in generated code).
    Spelled,
}

/// How one syntax (an IR dump, Rust, CUDA C) spells an expression's parts.
pub trait Syntax<L> {
    type Out;
    fn parens(&self) -> Parens;
    fn constant(&self, c: f32) -> Self::Out;
    fn leaf(&self, l: &L) -> Self::Out;
    fn unary(&self, op: UnOp, x: Self::Out) -> Self::Out;
    fn binary(&self, op: BinOp, a: Self::Out, b: Self::Out) -> Self::Out;
    fn call(&self, f: Func, args: Vec<Self::Out>) -> Self::Out;
    /// `x` in parentheses (not asked for under [`Parens::Spelled`]).
    fn group(&self, x: Self::Out) -> Self::Out;
}

/// `e` in syntax `s`.
pub fn print<L, S: Syntax<L>>(s: &S, e: &Expr<L>) -> S::Out {
    let parens = s.parens();
    let group = |(x, p): (S::Out, u8), min: u8| if p < min { s.group(x) } else { x };
    let printed = e.fold(&mut |n: Node<'_, L, (S::Out, u8)>| match n {
        Node::Const(c) => (s.constant(c), ATOM),
        Node::Leaf(l) => (s.leaf(l), ATOM),
        Node::Call(f, args) => (s.call(f, args.into_iter().map(|a| a.0).collect()), ATOM),
        Node::Unary(op, x) => match parens {
            Parens::Minimal => (s.unary(op, group(x, UNARY)), UNARY),
            Parens::Full => (s.unary(op, s.group(x.0)), UNARY),
            Parens::Spelled => (s.unary(op, x.0), UNARY),
        },
        Node::Binary(op, a, b) => {
            let p = precedence(op);
            match parens {
                Parens::Minimal => {
                    // Left-associative: the right operand needs parentheses at equal
                    // precedence (the left one for `^`).
                    let (lp, rp) = if op == BinOp::Pow {
                        (p + 1, p)
                    } else {
                        (p, p + 1)
                    };
                    (s.binary(op, group(a, lp), group(b, rp)), p)
                }
                Parens::Full => (s.group(s.binary(op, a.0, b.0)), p),
                Parens::Spelled => (s.binary(op, a.0, b.0), p),
            }
        }
    });
    printed.0
}

const UNARY: u8 = 7;
const ATOM: u8 = 9;

fn precedence(op: BinOp) -> u8 {
    match op {
        BinOp::Or => 1,
        BinOp::And => 2,
        BinOp::Eq | BinOp::Ne => 3,
        BinOp::Ge | BinOp::Le | BinOp::Gt | BinOp::Lt => 4,
        BinOp::Add | BinOp::Sub => 5,
        BinOp::Mul | BinOp::Div => 6,
        BinOp::Pow => 8,
    }
}

/// The IR dumps' syntax: the language's own operators and function names, constants as
/// Rust's `{:?}` writes them, and `leaf` for the names of one stage.
pub struct Text<F> {
    pub parens: Parens,
    pub leaf: F,
}

impl<L, F: Fn(&L) -> String> Syntax<L> for Text<F> {
    type Out = String;
    fn parens(&self) -> Parens {
        self.parens
    }
    fn constant(&self, c: f32) -> String {
        format!("{c:?}")
    }
    fn leaf(&self, l: &L) -> String {
        (self.leaf)(l)
    }
    fn unary(&self, op: UnOp, x: String) -> String {
        let o = if op == UnOp::Neg { "-" } else { "!" };
        format!("{o}{x}")
    }
    fn binary(&self, op: BinOp, a: String, b: String) -> String {
        format!("{a} {} {b}", op.symbol())
    }
    fn call(&self, f: Func, args: Vec<String>) -> String {
        format!("{}({})", f.name(), args.join(", "))
    }
    fn group(&self, x: String) -> String {
        format!("({x})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show(parens: Parens, e: &Expr<&str>) -> String {
        let t = Text {
            parens,
            leaf: |l: &&str| l.to_string(),
        };
        print(&t, e)
    }

    #[test]
    fn minimal_parentheses_follow_precedence_and_associativity() {
        let (a, b, c) = (Expr::Leaf("a"), Expr::Leaf("b"), Expr::Leaf("c"));
        let sum = Expr::bin(BinOp::Add, b.clone(), c.clone());
        let e = Expr::bin(BinOp::Sub, a.clone(), sum.clone());
        assert_eq!(show(Parens::Minimal, &e), "a - (b + c)");
        assert_eq!(show(Parens::Full, &e), "(a - (b + c))");
        let e = Expr::bin(BinOp::Sub, sum.clone(), a.clone());
        assert_eq!(show(Parens::Minimal, &e), "b + c - a");
        let pow = Expr::bin(BinOp::Pow, Expr::bin(BinOp::Pow, a.clone(), b.clone()), c);
        assert_eq!(show(Parens::Minimal, &pow), "(a ^ b) ^ c");
        let neg = Expr::unary(UnOp::Neg, sum);
        assert_eq!(show(Parens::Minimal, &neg), "-(b + c)");
        let neg = Expr::unary(UnOp::Neg, a.clone());
        assert_eq!(show(Parens::Minimal, &neg), "-a");
        assert_eq!(show(Parens::Full, &neg), "-(a)");
        let call = Expr::Call(Func::Max, vec![a, Expr::Const(-1.0)]);
        assert_eq!(show(Parens::Full, &call), "max(a, -1.0)");
    }
}
