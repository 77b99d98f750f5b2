//! Kernel bodies of bounded depth: every subexpression that reaches [`MAX_DEPTH`] levels
//! becomes a kernel local of its own, set just before the statement that reads it, so the
//! printed Rust and CUDA never nest deeper than the bound. rustc and NVRTC recurse over
//! expression trees and crash on deep ones (issue 18: a 1,500-term current sum); deep
//! trees come from the user's expressions (up to the front end's limit) and from what the
//! compiler builds itself (the sum of many projections' currents, adjoint terms).
//!
//! Ordinary models stay far below the bound, so their kernels are unchanged. The walk is
//! iterative: a compiler-built sum may be deeper than any source expression.

use crate::ir::expr::{BinOp, Expr, Func, UnOp};
use crate::ir::kernel::{Carried, KExpr, KLeaf, KStmt, KVar, Kernel};

/// The deepest expression tree (in nodes, a leaf is 1) a kernel statement keeps.
pub const MAX_DEPTH: usize = 32;

/// Splits every statement of `k`'s body and every carried value's initial value deeper
/// than [`MAX_DEPTH`].
pub fn split_deep(k: &mut Kernel) {
    if k.body.iter().any(|s| deeper(stmt_expr(s))) {
        split_body(k);
    }
    if k.carried.iter().any(|c| deeper(&c.init)) {
        split_inits(k);
    }
}

fn split_body(k: &mut Kernel) {
    let body = std::mem::take(&mut k.body);
    for s in body {
        let hoist = |k: &mut Kernel, e: KExpr| {
            k.locals.push("deep".into());
            let v = KVar::Local(k.locals.len() - 1);
            k.body.push(KStmt::Set(v, e));
            Expr::Leaf(KLeaf::Var(v))
        };
        let s = match s {
            KStmt::Set(v, e) if deeper(&e) => KStmt::Set(v, split(e, &mut |e| hoist(k, e))),
            KStmt::Store(a, e) if deeper(&e) => KStmt::Store(a, split(e, &mut |e| hoist(k, e))),
            s => s,
        };
        k.body.push(s);
    }
}

/// A deep initial value (parameters, weights and constants only) is split into carried
/// values of its own, placed just before the value that reads them: an initial value may
/// read the carried values before it, which the back ends compute first. The carried values
/// after them are renumbered in the body.
fn split_inits(k: &mut Kernel) {
    let old = std::mem::take(&mut k.carried);
    let mut renumber = Vec::with_capacity(old.len());
    for mut c in old {
        if deeper(&c.init) {
            // The parts, numbered from 0 until their place is known.
            let mut parts: Vec<KExpr> = Vec::new();
            let root = split(c.init, &mut |e| {
                parts.push(e);
                Expr::Leaf(KLeaf::Var(KVar::Local(parts.len() - 1)))
            });
            let base = k.carried.len();
            // Initial values read no locals: every `Local` here is a part.
            let place = |e: &KExpr| {
                e.map_leaves(&mut |l| match l {
                    KLeaf::Var(KVar::Local(n)) => Expr::Leaf(KLeaf::Var(KVar::Carried(base + n))),
                    l => Expr::Leaf(*l),
                })
            };
            for part in &parts {
                k.carried.push(Carried {
                    name: "deep".into(),
                    init: place(part),
                    buf: None,
                    init_at_t0: false,
                    store: false,
                    grad: None,
                });
            }
            c.init = place(&root);
        }
        renumber.push(k.carried.len());
        k.carried.push(c);
    }
    let at = |l: &KLeaf| match l {
        KLeaf::Var(KVar::Carried(i)) => Expr::Leaf(KLeaf::Var(KVar::Carried(renumber[*i]))),
        l => Expr::Leaf(*l),
    };
    for s in &mut k.body {
        *s = match &*s {
            KStmt::Set(KVar::Carried(i), e) => {
                KStmt::Set(KVar::Carried(renumber[*i]), e.map_leaves(&mut |l| at(l)))
            }
            KStmt::Set(v, e) => KStmt::Set(*v, e.map_leaves(&mut |l| at(l))),
            KStmt::Store(a, e) => KStmt::Store(*a, e.map_leaves(&mut |l| at(l))),
        };
    }
}

fn stmt_expr(s: &KStmt) -> &KExpr {
    match s {
        KStmt::Set(_, e) | KStmt::Store(_, e) => e,
    }
}

/// Whether `e` is deeper than [`MAX_DEPTH`] (an explicit stack: `e` may be deeper than the
/// thread's stack allows recursion for).
fn deeper(e: &KExpr) -> bool {
    let mut stack = vec![(e, 1usize)];
    while let Some((e, d)) = stack.pop() {
        if d > MAX_DEPTH {
            return true;
        }
        match e {
            Expr::Const(_) | Expr::Leaf(_) => {}
            Expr::Unary(_, x) => stack.push((x, d + 1)),
            Expr::Binary(_, a, b) => {
                stack.push((a, d + 1));
                stack.push((b, d + 1));
            }
            Expr::Call(_, args) => stack.extend(args.iter().map(|a| (a, d + 1))),
        }
    }
    false
}

/// What is left to do in the post-order walk of [`split`].
enum Work {
    Visit(KExpr),
    Unary(UnOp),
    Binary(BinOp),
    Call(Func, usize),
}

/// `e` with each subtree that reaches [`MAX_DEPTH`] (other than `e` itself) replaced by
/// what `hoist` makes of it (a variable set to it), innermost first; returns what is left of
/// `e` (at most [`MAX_DEPTH`] deep). Operands are rebuilt left to right, so the parts come
/// in the order a recursive walk would make them.
fn split(e: KExpr, hoist: &mut impl FnMut(KExpr) -> KExpr) -> KExpr {
    let mut work = vec![Work::Visit(e)];
    // Rebuilt operands and their depths.
    let mut done: Vec<(KExpr, usize)> = Vec::new();
    while let Some(w) = work.pop() {
        let (node, depth) = match w {
            Work::Visit(Expr::Unary(op, x)) => {
                work.push(Work::Unary(op));
                work.push(Work::Visit(*x));
                continue;
            }
            Work::Visit(Expr::Binary(op, a, b)) => {
                work.push(Work::Binary(op));
                work.push(Work::Visit(*b));
                work.push(Work::Visit(*a));
                continue;
            }
            Work::Visit(Expr::Call(f, args)) => {
                work.push(Work::Call(f, args.len()));
                work.extend(args.into_iter().rev().map(Work::Visit));
                continue;
            }
            Work::Visit(leaf) => (leaf, 1),
            Work::Unary(op) => {
                let (x, d) = done.pop().expect("an operand");
                (Expr::unary(op, x), d + 1)
            }
            Work::Binary(op) => {
                let (b, db) = done.pop().expect("an operand");
                let (a, da) = done.pop().expect("an operand");
                (Expr::bin(op, a, b), da.max(db) + 1)
            }
            Work::Call(f, n) => {
                let args = done.split_off(done.len() - n);
                let d = args.iter().map(|(_, d)| *d).max().unwrap_or(0) + 1;
                (Expr::Call(f, args.into_iter().map(|(a, _)| a).collect()), d)
            }
        };
        // The root stays the statement's own expression.
        if depth >= MAX_DEPTH && !work.is_empty() {
            done.push((hoist(node), 1));
        } else {
            done.push((node, depth));
        }
    }
    let (e, _) = done.pop().expect("the root");
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::expr::Node;
    use snn_runtime::plan::LaunchTime;

    fn kernel(body: Vec<KStmt>) -> Kernel {
        Kernel {
            symbol: "k".into(),
            doc: String::new(),
            args: vec![],
            params: vec!["p".into()],
            weights: vec![],
            time: LaunchTime::Seq,
            reverse: false,
            carried: vec![],
            locals: vec!["x".into()],
            body,
            prefetch: 1,
        }
    }

    fn depth(e: &KExpr) -> usize {
        e.fold(&mut |n: Node<'_, KLeaf, usize>| match n {
            Node::Const(_) | Node::Leaf(_) => 1,
            Node::Unary(_, x) => x + 1,
            Node::Binary(_, a, b) => a.max(b) + 1,
            Node::Call(_, a) => a.into_iter().max().unwrap_or(0) + 1,
        })
    }

    /// Evaluates the body in order; locals start at zero, `p` is 0.5.
    fn run(k: &Kernel) -> Vec<f64> {
        let mut vals = vec![0.0f64; k.locals.len()];
        for s in &k.body {
            let KStmt::Set(KVar::Local(i), e) = s else {
                panic!("only local sets")
            };
            vals[*i] = e
                .eval(|l| match l {
                    KLeaf::Var(KVar::Local(j)) => Some(vals[*j]),
                    KLeaf::Param(0) => Some(0.5),
                    _ => None,
                })
                .unwrap();
        }
        vals
    }

    fn x() -> KExpr {
        Expr::Leaf(KLeaf::Var(KVar::Local(0)))
    }
    fn p() -> KExpr {
        Expr::Leaf(KLeaf::Param(0))
    }

    #[test]
    fn shallow_bodies_are_unchanged() {
        let mut e = p();
        for _ in 1..MAX_DEPTH {
            e = Expr::bin(BinOp::Add, e, Expr::Const(1.0));
        }
        assert_eq!(depth(&e), MAX_DEPTH);
        let mut k = kernel(vec![KStmt::Set(KVar::Local(0), e)]);
        let before = k.clone();
        split_deep(&mut k);
        assert_eq!(k, before);
    }

    /// Flat sums, nested calls and unary chains of every length keep their value, and no
    /// statement is deeper than the bound. (On a thread with room for the recursion of the
    /// reference's evaluation, cloning and dropping of the deep trees.)
    #[test]
    fn deep_statements_are_split_into_locals_of_the_same_value() {
        std::thread::Builder::new()
            .stack_size(256 << 20)
            .spawn(split_every_shape)
            .unwrap()
            .join()
            .unwrap();
    }

    fn split_every_shape() {
        for n in [MAX_DEPTH, MAX_DEPTH + 1, 3 * MAX_DEPTH, 10_000] {
            let shapes: Vec<KExpr> = vec![
                (1..n).fold(p(), |e, _| Expr::bin(BinOp::Add, e, p())),
                (1..n).fold(p(), |e, i| Expr::bin(BinOp::Sub, Expr::Const(i as f32), e)),
                (1..n).fold(p(), |e, _| {
                    Expr::Call(Func::Select, vec![p(), Expr::unary(UnOp::Neg, e), p()])
                }),
                (1..n).fold(p(), |e, i| {
                    let y = Expr::bin(BinOp::Mul, x(), Expr::Const(i as f32));
                    Expr::Call(Func::Max, vec![Expr::bin(BinOp::Div, e, p()), y])
                }),
            ];
            for e in shapes {
                let deep = depth(&e) > MAX_DEPTH;
                let mut k = kernel(vec![
                    KStmt::Set(KVar::Local(0), Expr::Const(0.25)),
                    KStmt::Set(KVar::Local(0), e),
                ]);
                let want = run(&k)[0];
                split_deep(&mut k);
                assert_eq!(run(&k)[0], want, "{n} levels");
                for s in &k.body {
                    assert!(
                        depth(stmt_expr(s)) <= MAX_DEPTH,
                        "{n} levels: a statement of {}",
                        depth(stmt_expr(s))
                    );
                }
                assert_eq!(k.locals.len() > 1, deep, "{n} levels");
            }
        }
    }
}
