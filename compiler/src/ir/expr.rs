//! The one expression tree of every stage: neuron equations ([`crate::ir::eqn::EExpr`]),
//! adjoints ([`crate::ir::adjoint::GExpr`]) and kernel bodies ([`crate::ir::kernel::KExpr`])
//! share its operators and differ only in their leaves (what a name refers to at that stage).
//!
//! Every walk goes through [`Expr::fold`]; the visitors, the leaf maps that carry an
//! expression from one stage to the next, the evaluator, the printer ([`print()`]) and the
//! simplifying constructors ([`Rules`]) are written once here for every leaf type.
//! Comparisons yield 1.0 or 0.0; all arithmetic is f32 in the written order.

mod print;
mod simplify;

pub use print::{print, Parens, Syntax, Text};
pub use simplify::Rules;

#[derive(Clone, Debug, PartialEq)]
pub enum Expr<L> {
    Const(f32),
    /// What the stage's names refer to (a state, a kernel argument, an adjoint, ...).
    Leaf(L),
    Unary(UnOp, Box<Expr<L>>),
    Binary(BinOp, Box<Expr<L>>, Box<Expr<L>>),
    Call(Func, Vec<Expr<L>>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnOp {
    Neg,
    Not,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Or,
    And,
    Eq,
    Ne,
    Ge,
    Le,
    Gt,
    Lt,
    Add,
    Sub,
    Mul,
    Div,
    Pow,
}

impl BinOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Or => "||",
            BinOp::And => "&&",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Ge => ">=",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Lt => "<",
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Pow => "^",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Func {
    Exp,
    Log,
    Sqrt,
    Abs,
    Tanh,
    Floor,
    Sigmoid,
    /// Heaviside with `step(0) = 1`.
    Step,
    Min,
    Max,
    /// `select(c, a, b)`: `a` where `c != 0`, else `b`.
    Select,
    Clamp,
}

impl Func {
    pub fn from_name(name: &str) -> Option<(Func, usize)> {
        Some(match name {
            "exp" => (Func::Exp, 1),
            "log" => (Func::Log, 1),
            "sqrt" => (Func::Sqrt, 1),
            "abs" => (Func::Abs, 1),
            "tanh" => (Func::Tanh, 1),
            "floor" => (Func::Floor, 1),
            "sigmoid" => (Func::Sigmoid, 1),
            "step" => (Func::Step, 1),
            "min" => (Func::Min, 2),
            "max" => (Func::Max, 2),
            "select" => (Func::Select, 3),
            "clamp" => (Func::Clamp, 3),
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            Func::Exp => "exp",
            Func::Log => "log",
            Func::Sqrt => "sqrt",
            Func::Abs => "abs",
            Func::Tanh => "tanh",
            Func::Floor => "floor",
            Func::Sigmoid => "sigmoid",
            Func::Step => "step",
            Func::Min => "min",
            Func::Max => "max",
            Func::Select => "select",
            Func::Clamp => "clamp",
        }
    }
    pub const NAMES: &'static [&'static str] = &[
        "exp", "log", "sqrt", "abs", "tanh", "floor", "sigmoid", "step", "min", "max", "select",
        "clamp",
    ];
}

/// One node of an [`Expr`] as [`Expr::fold`] hands it over: its operands already folded.
pub enum Node<'a, L, T> {
    Const(f32),
    Leaf(&'a L),
    Unary(UnOp, T),
    Binary(BinOp, T, T),
    Call(Func, Vec<T>),
}

impl<L> Expr<L> {
    pub fn bin(op: BinOp, a: Expr<L>, b: Expr<L>) -> Expr<L> {
        Expr::Binary(op, Box::new(a), Box::new(b))
    }

    pub fn unary(op: UnOp, x: Expr<L>) -> Expr<L> {
        Expr::Unary(op, Box::new(x))
    }

    /// The constant `c` exactly (`0.0` also matches `-0.0`).
    pub fn is_const(&self, c: f32) -> bool {
        matches!(self, Expr::Const(v) if *v == c)
    }

    /// The one walker: bottom-up, operands left to right, each node given the results of
    /// its operands. Every other walk over the tree is a fold, so that making it iterative
    /// (for long flat sums) is a change here alone.
    pub fn fold<'a, T>(&'a self, f: &mut impl FnMut(Node<'a, L, T>) -> T) -> T {
        let node = match self {
            Expr::Const(c) => Node::Const(*c),
            Expr::Leaf(l) => Node::Leaf(l),
            Expr::Unary(op, x) => Node::Unary(*op, x.fold(f)),
            Expr::Binary(op, a, b) => {
                let a = a.fold(f);
                Node::Binary(*op, a, b.fold(f))
            }
            Expr::Call(func, args) => Node::Call(*func, args.iter().map(|a| a.fold(f)).collect()),
        };
        f(node)
    }

    /// Visit every leaf, left to right.
    pub fn visit_leaves(&self, f: &mut impl FnMut(&L)) {
        self.fold(&mut |n| {
            if let Node::Leaf(l) = n {
                f(l)
            }
        })
    }

    /// Whether some leaf satisfies `p` (asked of every leaf, left to right).
    pub fn any_leaf(&self, mut p: impl FnMut(&L) -> bool) -> bool {
        self.fold(&mut |n| match n {
            Node::Const(_) => false,
            Node::Leaf(l) => p(l),
            Node::Unary(_, x) => x,
            Node::Binary(_, a, b) => a || b,
            Node::Call(_, args) => args.contains(&true),
        })
    }

    /// Whether every leaf satisfies `p` (asked of every leaf, left to right).
    pub fn all_leaves(&self, mut p: impl FnMut(&L) -> bool) -> bool {
        !self.any_leaf(|l| !p(l))
    }

    /// The same expression with each leaf replaced by an expression of another stage.
    pub fn map_leaves<M>(&self, f: &mut impl FnMut(&L) -> Expr<M>) -> Expr<M> {
        self.fold(&mut |n| match n {
            Node::Leaf(l) => f(l),
            n => Expr::rebuild(n),
        })
    }

    /// [`Expr::map_leaves`] where a leaf may have no counterpart: the first error, left to
    /// right.
    pub fn try_map_leaves<M, E>(
        &self,
        f: &mut impl FnMut(&L) -> Result<Expr<M>, E>,
    ) -> Result<Expr<M>, E> {
        self.fold(&mut |n| {
            Ok(match n {
                Node::Const(c) => Expr::Const(c),
                Node::Leaf(l) => f(l)?,
                Node::Unary(op, x) => Expr::unary(op, x?),
                Node::Binary(op, a, b) => Expr::bin(op, a?, b?),
                Node::Call(func, args) => {
                    Expr::Call(func, args.into_iter().collect::<Result<_, _>>()?)
                }
            })
        })
    }

    /// The same operator over new operands, `f` of each operand left to right (one level:
    /// `f` decides whether to go deeper); a constant or a leaf is returned as it is.
    pub fn try_map_operands<E>(
        &self,
        mut f: impl FnMut(&Expr<L>) -> Result<Expr<L>, E>,
    ) -> Result<Expr<L>, E>
    where
        L: Clone,
    {
        Ok(match self {
            Expr::Const(_) | Expr::Leaf(_) => self.clone(),
            Expr::Unary(op, x) => Expr::unary(*op, f(x)?),
            Expr::Binary(op, a, b) => Expr::bin(*op, f(a)?, f(b)?),
            Expr::Call(func, args) => {
                Expr::Call(*func, args.iter().map(f).collect::<Result<_, _>>()?)
            }
        })
    }

    /// The value in f64 when every leaf has one (`leaf` returns `None` otherwise), with the
    /// operators' f32 semantics: comparisons and logic give 1.0 or 0.0.
    pub fn eval(&self, leaf: impl Fn(&L) -> Option<f64>) -> Option<f64> {
        let b = |v: bool| if v { 1.0 } else { 0.0 };
        self.fold(&mut |n: Node<'_, L, Option<f64>>| {
            Some(match n {
                Node::Const(v) => v as f64,
                Node::Leaf(l) => leaf(l)?,
                Node::Unary(UnOp::Neg, x) => -x?,
                Node::Unary(UnOp::Not, x) => b(x? == 0.0),
                Node::Binary(op, x, y) => {
                    let (x, y) = (x?, y?);
                    match op {
                        BinOp::Add => x + y,
                        BinOp::Sub => x - y,
                        BinOp::Mul => x * y,
                        BinOp::Div => x / y,
                        BinOp::Pow => x.powf(y),
                        BinOp::Lt => b(x < y),
                        BinOp::Le => b(x <= y),
                        BinOp::Gt => b(x > y),
                        BinOp::Ge => b(x >= y),
                        BinOp::Eq => b(x == y),
                        BinOp::Ne => b(x != y),
                        BinOp::And => b(x != 0.0 && y != 0.0),
                        BinOp::Or => b(x != 0.0 || y != 0.0),
                    }
                }
                Node::Call(f, args) => {
                    let a: Vec<f64> = args.into_iter().collect::<Option<_>>()?;
                    match f {
                        Func::Exp => a[0].exp(),
                        Func::Log => a[0].ln(),
                        Func::Sqrt => a[0].sqrt(),
                        Func::Abs => a[0].abs(),
                        Func::Tanh => a[0].tanh(),
                        Func::Floor => a[0].floor(),
                        Func::Sigmoid => 1.0 / (1.0 + (-a[0]).exp()),
                        Func::Step => b(a[0] >= 0.0),
                        Func::Min => a[0].min(a[1]),
                        Func::Max => a[0].max(a[1]),
                        Func::Select => {
                            if a[0] != 0.0 {
                                a[1]
                            } else {
                                a[2]
                            }
                        }
                        Func::Clamp => a[0].max(a[1]).min(a[2]),
                    }
                }
            })
        })
    }

    /// An operator node of already built operands; a leaf has no operands to rebuild from.
    fn rebuild<M>(n: Node<'_, M, Expr<L>>) -> Expr<L> {
        match n {
            Node::Const(c) => Expr::Const(c),
            Node::Unary(op, x) => Expr::unary(op, x),
            Node::Binary(op, a, b) => Expr::bin(op, a, b),
            Node::Call(func, args) => Expr::Call(func, args),
            Node::Leaf(_) => unreachable!("leaves are mapped by the caller"),
        }
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
    fn one_walker_serves_visits_maps_and_evaluation() {
        // exp(x) * 2.0 - -y
        let e = Expr::bin(
            BinOp::Sub,
            Expr::bin(
                BinOp::Mul,
                Expr::Call(Func::Exp, vec![x()]),
                Expr::Const(2.0),
            ),
            Expr::unary(UnOp::Neg, Expr::Leaf("y")),
        );
        let mut seen = Vec::new();
        e.visit_leaves(&mut |l| seen.push(*l));
        assert_eq!(seen, ["x", "y"]);
        assert!(e.any_leaf(|l| *l == "y") && !e.any_leaf(|l| *l == "z"));
        let m: Expr<usize> = e.map_leaves(&mut |l| Expr::Leaf(l.len()));
        assert!(m.any_leaf(|l| *l == 1));
        let r: Result<Expr<()>, &str> = e.try_map_leaves(&mut |l| match *l {
            "x" => Ok(Expr::Const(0.0)),
            other => Err(other),
        });
        assert_eq!(r, Err("y"));
        let v = e.eval(|l| Some(if *l == "x" { 0.0 } else { 3.0 }));
        assert_eq!(v, Some(5.0));
        assert_eq!(e.eval(|l| (*l == "x").then_some(0.0)), None);
    }
}
