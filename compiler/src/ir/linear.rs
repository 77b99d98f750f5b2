//! Linearity analysis: does a population's step have the form
//!
//! ```text
//! state[t] = A state[t-1] + b I[t] + c        (A, b, c built from parameters only)
//! ```
//!
//! with no reset? Then the states over all T steps are a linear function of the inputs,
//! `state_i[t] = sum_(j <= t) K_i[t - j] I[j] + Z_i[t]`, with `K_i[n] = (A^n b)_i` (the
//! impulse response) and `Z_i[t] = (A^(t+1) s0 + sum_(n <= t) A^n c)_i` (the free
//! response), and the parallel schedule may compute them as matrix products over the time
//! axis. The spike condition and the `let` temporaries may be anything: they only read the
//! states, they do not feed back (that is what the absent reset guarantees).
//!
//! The proof is symbolic: every assignment of the update is rewritten, in statement order,
//! as an affine combination of the states at the start of the step and the input, with
//! coefficients that are expressions of parameters and constants. An expression that is not
//! of that form (a product of two states, `exp(v)`, a comparison of the state) makes the
//! model non-linear, with the offending sub-expression as the reason.

use std::fmt;

use super::eqn::{EExpr, EqLeaf, NeuronEqs, Var};
use super::expr::{BinOp, Node, Rules, UnOp};

/// The affine step of a linear population.
#[derive(Clone, Debug, PartialEq)]
pub struct LinearStep {
    /// `a[i][k]`: the weight of state `k` (at the start of the step) in state `i`'s new value.
    pub a: Vec<Vec<EExpr>>,
    /// The weight of the input current in each state's new value.
    pub b: Vec<EExpr>,
    /// The constant term of each state's new value.
    pub c: Vec<EExpr>,
}

impl LinearStep {
    /// Whether any state reads a state of the previous step: then the parallel schedule needs
    /// a product with the impulse response. Otherwise every step is elementwise (a PSN's
    /// `h = I`).
    pub fn recurrent(&self) -> bool {
        self.a.iter().flatten().any(|e| !is_zero(e))
    }
}

/// Why a population cannot take the parallel schedule, or its linear step.
pub fn analyse(eqs: &NeuronEqs) -> Result<LinearStep, String> {
    if let Some(r) = eqs.reset.first() {
        return Err(format!(
            "`{}` is reset on a spike (`{} = S ? {} : {}`): the spikes feed back into the state",
            eqs.var_name(r.target),
            eqs.var_name(r.target),
            eqs.show(&r.value),
            eqs.var_name(r.target)
        ));
    }
    let n = eqs.states.len();
    let mut cur: Vec<Aff> = (0..n).map(|i| Aff::state(n, i)).collect();
    let mut locals: Vec<Option<Result<Aff, String>>> = vec![None; eqs.locals.len()];
    for a in &eqs.update {
        let v = Aff::of(eqs, &a.value, &cur, &locals);
        match a.target {
            Var::State(i) => {
                let f = v.map_err(|why| {
                    format!(
                        "the update `{} = {}` is not linear in the state and the input: {why}",
                        eqs.states[i].name,
                        eqs.show(&a.value)
                    )
                })?;
                if f.nodes() > MAX_NODES {
                    return Err(format!(
                        "the update `{} = {}` is too large to prove linear: {}",
                        eqs.states[i].name,
                        eqs.show(&a.value),
                        too_large()
                    ));
                }
                cur[i] = f;
            }
            Var::Local(i) => {
                locals[i] = Some(v.and_then(|f| {
                    if f.nodes() > MAX_NODES {
                        Err(format!("the proof gives up: {}", too_large()))
                    } else {
                        Ok(f)
                    }
                }))
            }
        }
    }
    // The time products are built from fixed coefficients: a learned one would need their
    // gradient (and a per-neuron one a response per neuron).
    let mut learned = None;
    for f in &cur {
        for e in f.st.iter().chain([&f.inp, &f.k]) {
            e.visit_params(&mut |i| {
                if eqs.params[i].learned() {
                    learned.get_or_insert(i);
                }
            });
        }
    }
    if let Some(i) = learned {
        return Err(format!(
            "its step reads the learned parameter `{}`, and the parallel schedule's time \
             products are built from fixed parameters",
            eqs.params[i].name
        ));
    }
    Ok(LinearStep {
        a: cur.iter().map(|f| f.st.clone()).collect(),
        b: cur.iter().map(|f| f.inp.clone()).collect(),
        c: cur.into_iter().map(|f| f.k).collect(),
    })
}

/// The most expression nodes the coefficients of one affine form may hold. Each read of a
/// state or `let` copies its form, so forms read twice per statement (`let a2 = a1 + a1`)
/// double per statement: the bound keeps the proof, and the kernels built from it,
/// polynomial in the size of the model. Real steps need tens of nodes.
const MAX_NODES: usize = 10_000;

fn too_large() -> String {
    format!(
        "its coefficients grow past {MAX_NODES} expression nodes (a state or `let` read \
         repeatedly doubles them)"
    )
}

/// `sum_k st[k] * state_k + inp * I + k`.
#[derive(Clone, Debug, PartialEq)]
struct Aff {
    st: Vec<EExpr>,
    inp: EExpr,
    k: EExpr,
}

fn zero() -> EExpr {
    EExpr::Const(0.0)
}

pub fn is_zero(e: &EExpr) -> bool {
    e.is_const(0.0)
}

fn nodes(e: &EExpr) -> usize {
    e.fold(&mut |n| match n {
        Node::Const(_) | Node::Leaf(_) => 1,
        Node::Unary(_, x) => 1 + x,
        Node::Binary(_, x, y) => 1 + x + y,
        Node::Call(_, args) => 1 + args.iter().sum::<usize>(),
    })
}

/// The coefficients stay readable in dumps and cheap in kernels: every rule applies.
const R: Rules = Rules::ALL;

impl Aff {
    fn constant(n: usize, k: EExpr) -> Aff {
        Aff {
            st: vec![zero(); n],
            inp: zero(),
            k,
        }
    }
    fn state(n: usize, i: usize) -> Aff {
        let mut a = Aff::constant(n, zero());
        a.st[i] = EExpr::Const(1.0);
        a
    }
    /// The expression nodes of all its coefficients.
    fn nodes(&self) -> usize {
        self.st.iter().chain([&self.inp, &self.k]).map(nodes).sum()
    }
    fn is_constant(&self) -> bool {
        is_zero(&self.inp) && self.st.iter().all(is_zero)
    }
    fn map(self, f: impl Fn(EExpr) -> EExpr) -> Aff {
        Aff {
            st: self.st.into_iter().map(&f).collect(),
            inp: f(self.inp),
            k: f(self.k),
        }
    }
    fn zip(self, o: Aff, f: impl Fn(EExpr, EExpr) -> EExpr) -> Aff {
        Aff {
            st: self
                .st
                .into_iter()
                .zip(o.st)
                .map(|(a, b)| f(a, b))
                .collect(),
            inp: f(self.inp, o.inp),
            k: f(self.k, o.k),
        }
    }

    /// `e` as an affine form of the states at the start of the step and the input, given
    /// the current forms of the states (`cur`, after the assignments so far) and locals.
    fn of(
        eqs: &NeuronEqs,
        e: &EExpr,
        cur: &[Aff],
        locals: &[Option<Result<Aff, String>>],
    ) -> Result<Aff, String> {
        let n = cur.len();
        let of = |x: &EExpr| Aff::of(eqs, x, cur, locals);
        let nonlinear = || format!("`{}`", eqs.show(e));
        Ok(match e {
            EExpr::Const(_) | EExpr::Leaf(EqLeaf::Param(_) | EqLeaf::Dt) => {
                Aff::constant(n, e.clone())
            }
            EExpr::Leaf(EqLeaf::State(i)) => cur[*i].clone(),
            EExpr::Leaf(EqLeaf::Local(i)) => match &locals[*i] {
                Some(Ok(a)) => a.clone(),
                // The innermost temporary names the cause; each outer one of a chain of
                // `let`s would lengthen the message by one.
                Some(Err(why)) if why.contains(" (through `") => return Err(why.clone()),
                Some(Err(why)) => return Err(format!("{why} (through `{}`)", eqs.locals[*i])),
                None => return Err(format!("`{}` is read before it is set", eqs.locals[*i])),
            },
            EExpr::Leaf(EqLeaf::Current) => {
                let mut a = Aff::constant(n, zero());
                a.inp = EExpr::Const(1.0);
                a
            }
            EExpr::Unary(UnOp::Neg, x) => of(x)?.map(|e| R.neg(e)),
            EExpr::Binary(BinOp::Add, x, y) => of(x)?.zip(of(y)?, |a, b| R.add(a, b)),
            EExpr::Binary(BinOp::Sub, x, y) => of(x)?.zip(of(y)?, |a, b| R.sub(a, b)),
            EExpr::Binary(BinOp::Mul, x, y) => {
                let (fx, fy) = (of(x)?, of(y)?);
                if fx.is_constant() {
                    let s = fx.k;
                    fy.map(|c| R.mul(s.clone(), c))
                } else if fy.is_constant() {
                    let s = fy.k;
                    fx.map(|c| R.mul(c, s.clone()))
                } else {
                    return Err(nonlinear());
                }
            }
            EExpr::Binary(BinOp::Div, x, y) => {
                let (fx, fy) = (of(x)?, of(y)?);
                if !fy.is_constant() {
                    return Err(nonlinear());
                }
                let d = fy.k;
                fx.map(|c| R.div(c, d.clone()))
            }
            // Anything else is linear only when it does not depend on state or input.
            EExpr::Unary(..) | EExpr::Binary(..) | EExpr::Call(..) => {
                // A constant: rebuilt from the constant parts (locals substituted).
                let mut dep = false;
                let rebuilt = e.try_map_operands(|x| -> Result<EExpr, String> {
                    let f = of(x)?;
                    dep |= !f.is_constant();
                    Ok(f.k)
                })?;
                if dep {
                    return Err(nonlinear());
                }
                Aff::constant(n, rebuilt)
            }
        })
    }
}

/// The step in a readable form: `v = (1.0 - 1.0 / tau) * v + 1.0 / tau * I + v_reset / tau`.
pub struct ShowLinear<'a>(pub &'a NeuronEqs, pub &'a LinearStep);

impl fmt::Display for ShowLinear<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (eqs, l) = (self.0, self.1);
        for i in 0..l.a.len() {
            if i > 0 {
                write!(f, "; ")?;
            }
            write!(f, "{} = ", eqs.states[i].name)?;
            let mut terms: Vec<String> = Vec::new();
            let term = |c: &EExpr, name: &str| {
                let p = eqs.show(c).to_string();
                match c {
                    EExpr::Const(v) if *v == 1.0 => name.to_string(),
                    EExpr::Binary(BinOp::Add | BinOp::Sub, ..) => format!("({p}) * {name}"),
                    _ => format!("{p} * {name}"),
                }
            };
            for (k, c) in l.a[i].iter().enumerate() {
                if !is_zero(c) {
                    terms.push(term(c, &eqs.states[k].name));
                }
            }
            if !is_zero(&l.b[i]) {
                terms.push(term(&l.b[i], "I"));
            }
            if !is_zero(&l.c[i]) {
                terms.push(eqs.show(&l.c[i]).to_string());
            }
            if terms.is_empty() {
                write!(f, "0.0")?;
            } else {
                write!(f, "{}", terms.join(" + "))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::net::NodeKind;

    fn eqs_of(pop: &str) -> NeuronEqs {
        let src = format!(
            "model m {{ T = 4\n input x: [T, 3]\n s = {pop}\n output trace(s.{}) }}",
            if pop.starts_with("Leaky") {
                "mem"
            } else if pop.contains("PSN") {
                "h"
            } else {
                "v"
            }
        );
        let mut c = crate::Compiler::default();
        let parsed = c.parse_str("t.snn", &src).unwrap();
        let m = c.module_until(&parsed, "neurons").unwrap();
        let h = m.node_by_name("s").unwrap();
        match &m.nodes[h].kind {
            NodeKind::Population { eqs: Some(e), .. } => (**e).clone(),
            _ => panic!(),
        }
    }

    /// The equations of neuron model `N` with this update, no reset.
    fn eqs_of_update(update: &str) -> NeuronEqs {
        let src = format!(
            "neuron N {{\n param g = 0.5\n state v = 0.0\n update {{ {update} }}\n \
             spike v >= 1.0\n}}\nmodel m {{ T = 4\n input x: [T, 3]\n s = N(x)\n \
             output spikes(s) }}"
        );
        let mut c = crate::Compiler::default();
        let parsed = c.parse_str("t.snn", &src).unwrap();
        let m = c.module_until(&parsed, "neurons").unwrap();
        let h = m.node_by_name("s").unwrap();
        match &m.nodes[h].kind {
            NodeKind::Population { eqs: Some(e), .. } => (**e).clone(),
            _ => panic!(),
        }
    }

    fn show(pop: &str) -> Result<String, String> {
        let eqs = eqs_of(pop);
        analyse(&eqs).map(|l| ShowLinear(&eqs, &l).to_string())
    }

    #[test]
    fn resetless_models_are_linear() {
        assert_eq!(
            show("LIF(x, reset = none)").unwrap(),
            "v = (1.0 - 1.0 / tau) * v + 1.0 / tau * I + v_reset / tau"
        );
        assert_eq!(
            show("LIF(x, reset = none, decay_input = false)").unwrap(),
            "v = (1.0 - 1.0 / tau) * v + I + v_reset / tau"
        );
        assert_eq!(
            show("LI(x)").unwrap(),
            "v = (1.0 - 1.0 / tau) * v + 1.0 / tau * I + v_rest / tau"
        );
        assert_eq!(show("IF(x, reset = none)").unwrap(), "v = v + I");
        // The comparison `r = mem > threshold` is computed but never feeds the state.
        assert_eq!(
            show("Leaky(x, reset_mechanism = none)").unwrap(),
            "mem = beta * mem + I"
        );
        assert_eq!(show("PSN(x)").unwrap(), "h = I");
        assert_eq!(show("SlidingPSN(x, k = 3)").unwrap(), "h = I");
        let psn = eqs_of("PSN(x)");
        assert!(!analyse(&psn).unwrap().recurrent());
        assert!(analyse(&eqs_of("LI(x)")).unwrap().recurrent());
    }

    #[test]
    fn forms_read_twice_per_statement_stay_bounded() {
        // Each statement doubles the coefficients: 2^200 nodes without the bound.
        let lets: String = (1..=200)
            .map(|i| format!("let a{i} = a{} + a{};\n", i - 1, i - 1))
            .collect();
        let eqs = eqs_of_update(&format!("let a0 = g * I + v;\n{lets} v = a200"));
        let e = analyse(&eqs).unwrap_err();
        assert!(
            e.starts_with("the update `v = a200` is not linear in the state and the input: the proof gives up: its coefficients grow past 10000 expression nodes"),
            "{e}"
        );
        // The innermost temporary past the bound, not all 200.
        assert_eq!(e.matches("(through").count(), 1, "{e}");
        let doubled = "v = v + v\n".repeat(200);
        let e = analyse(&eqs_of_update(&format!("v = g * v + I\n{doubled}"))).unwrap_err();
        assert!(
            e.starts_with(
                "the update `v = v + v` is too large to prove linear: its coefficients grow past"
            ),
            "{e}"
        );
        // Below the bound the proof goes through.
        let lets: String = (1..=4)
            .map(|i| format!("let a{i} = a{} + a{};\n", i - 1, i - 1))
            .collect();
        let eqs = eqs_of_update(&format!("let a0 = g * I;\n{lets} v = a4"));
        assert_eq!(
            ShowLinear(&eqs, &analyse(&eqs).unwrap()).to_string(),
            "v = (g + g + (g + g) + (g + g + (g + g)) + (g + g + (g + g) + (g + g + (g + g)))) * I"
        );
    }

    #[test]
    fn resets_and_nonlinear_updates_are_not() {
        let e = show("LIF(x)").unwrap_err();
        assert!(
            e.contains("`v` is reset on a spike (`v = S ? v_reset : v`)"),
            "{e}"
        );
        let e = show("Leaky(x)").unwrap_err();
        assert!(e.contains("not linear"), "{e}");
        assert!(e.contains("`mem > threshold` (through `r`)"), "{e}");
        let e = show("CUBALIF(x)").unwrap_err();
        assert!(e.contains("reset"), "{e}");
    }
}
