//! The one simplifier: constructors that apply the algebraic identities as they build, so
//! that derived expressions (linear coefficients, adjoints) stay readable in dumps and
//! cheap in kernels.

use super::{BinOp, Expr, Func, UnOp};

/// Which rewrites the constructors apply. Every stage folds `x + 0`, `0 + x`, `x - 0`,
/// `0 - x` (to `-x`), `x * 0`, `0 * x`, `x * 1`, `1 * x`, `0 / x`, `x / 1`, `--x`, `-c`
/// and the product of two constants; the flags add the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rules {
    /// Fold the sum, difference and quotient of two constants too.
    pub fold_constants: bool,
    /// Write signs once: `a + -b` as `a - b`, `a - -b` as `a + b`, `-(-x * y)` as `x * y`
    /// (`-x`, a negative constant and a product or quotient led by one count as negative).
    pub signs: bool,
}

impl Rules {
    /// The identities alone: the adjoint statements (their dumps and kernels are pinned in
    /// this form).
    pub const IDENTITIES: Rules = Rules {
        fold_constants: false,
        signs: false,
    };
    /// Everything: the linear analysis's coefficients.
    pub const ALL: Rules = Rules {
        fold_constants: true,
        signs: true,
    };

    /// `a op b`, simplified; operators without rules are built as they are.
    pub fn binary<L>(self, op: BinOp, a: Expr<L>, b: Expr<L>) -> Expr<L> {
        let consts = match (&a, &b) {
            (Expr::Const(x), Expr::Const(y)) => Some((*x, *y)),
            _ => None,
        };
        let fold = if self.fold_constants { consts } else { None };
        match op {
            BinOp::Add => match fold {
                _ if a.is_const(0.0) => b,
                _ if b.is_const(0.0) => a,
                Some((x, y)) => Expr::Const(x + y),
                None if self.signs && negative(&b) => Expr::bin(BinOp::Sub, a, self.neg(b)),
                None => Expr::bin(BinOp::Add, a, b),
            },
            BinOp::Sub => match fold {
                _ if b.is_const(0.0) => a,
                _ if a.is_const(0.0) => self.neg(b),
                Some((x, y)) => Expr::Const(x - y),
                None if self.signs && negative(&b) => Expr::bin(BinOp::Add, a, self.neg(b)),
                None => Expr::bin(BinOp::Sub, a, b),
            },
            BinOp::Mul => match consts {
                _ if a.is_const(0.0) || b.is_const(0.0) => Expr::Const(0.0),
                _ if a.is_const(1.0) => b,
                _ if b.is_const(1.0) => a,
                Some((x, y)) => Expr::Const(x * y),
                None => Expr::bin(BinOp::Mul, a, b),
            },
            BinOp::Div => match fold {
                _ if a.is_const(0.0) => Expr::Const(0.0),
                _ if b.is_const(1.0) => a,
                Some((x, y)) => Expr::Const(x / y),
                None => Expr::bin(BinOp::Div, a, b),
            },
            _ => Expr::bin(op, a, b),
        }
    }

    pub fn add<L>(self, a: Expr<L>, b: Expr<L>) -> Expr<L> {
        self.binary(BinOp::Add, a, b)
    }

    pub fn sub<L>(self, a: Expr<L>, b: Expr<L>) -> Expr<L> {
        self.binary(BinOp::Sub, a, b)
    }

    pub fn mul<L>(self, a: Expr<L>, b: Expr<L>) -> Expr<L> {
        self.binary(BinOp::Mul, a, b)
    }

    pub fn div<L>(self, a: Expr<L>, b: Expr<L>) -> Expr<L> {
        self.binary(BinOp::Div, a, b)
    }

    /// `-e`, simplified.
    pub fn neg<L>(self, e: Expr<L>) -> Expr<L> {
        match e {
            Expr::Const(c) => Expr::Const(-c),
            Expr::Unary(UnOp::Neg, x) => *x,
            Expr::Binary(op @ (BinOp::Mul | BinOp::Div), a, b) if self.signs && negative(&a) => {
                Expr::Binary(op, Box::new(self.neg(*a)), b)
            }
            e => Expr::unary(UnOp::Neg, e),
        }
    }

    /// `select(c, a, b)`, or `a` when both branches are the same.
    pub fn select<L: PartialEq>(self, c: Expr<L>, a: Expr<L>, b: Expr<L>) -> Expr<L> {
        if a == b {
            return a;
        }
        Expr::Call(Func::Select, vec![c, a, b])
    }
}

/// Written with a leading minus: `-x`, `-2.0`, `-1.0 / tau`.
fn negative<L>(e: &Expr<L>) -> bool {
    match e {
        Expr::Const(c) => c.is_sign_negative() && *c != 0.0,
        Expr::Unary(UnOp::Neg, _) => true,
        Expr::Binary(BinOp::Mul | BinOp::Div, a, _) => negative(a),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type E = Expr<&'static str>;

    fn x() -> E {
        Expr::Leaf("x")
    }

    #[test]
    fn the_rule_sets_differ_only_in_folding_and_signs() {
        for r in [Rules::IDENTITIES, Rules::ALL] {
            assert_eq!(r.add(Expr::Const(0.0), x()), x());
            assert_eq!(r.sub(x(), Expr::Const(0.0)), x());
            assert_eq!(r.sub(Expr::Const(0.0), x()), Expr::unary(UnOp::Neg, x()));
            assert_eq!(r.mul(x(), Expr::Const(0.0)), Expr::Const(0.0));
            assert_eq!(r.mul(Expr::Const(1.0), x()), x());
            assert_eq!(r.mul(E::Const(2.0), E::Const(3.0)), E::Const(6.0));
            assert_eq!(r.div(x(), Expr::Const(1.0)), x());
            assert_eq!(r.neg(r.neg(x())), x());
            assert_eq!(r.select(x(), E::Const(1.0), E::Const(1.0)), E::Const(1.0));
        }
        let (c2, c3): (E, E) = (Expr::Const(2.0), Expr::Const(3.0));
        assert_eq!(Rules::ALL.add(c2.clone(), c3.clone()), Expr::Const(5.0));
        assert_eq!(
            Rules::IDENTITIES.add(c2.clone(), c3.clone()),
            Expr::bin(BinOp::Add, c2.clone(), c3.clone())
        );
        let minus_x = Expr::unary(UnOp::Neg, x());
        assert_eq!(
            Rules::ALL.add(c2.clone(), minus_x.clone()),
            Expr::bin(BinOp::Sub, c2.clone(), x())
        );
        assert_eq!(
            Rules::IDENTITIES.add(c2.clone(), minus_x.clone()),
            Expr::bin(BinOp::Add, c2, minus_x.clone())
        );
        let prod = Expr::bin(BinOp::Mul, minus_x, Expr::Leaf("y"));
        assert_eq!(
            Rules::ALL.neg(prod),
            Expr::bin(BinOp::Mul, x(), Expr::Leaf("y"))
        );
    }
}
