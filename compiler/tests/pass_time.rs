//! Every pass is polynomial in the size of its input: a neuron update made of a long chain
//! of one operator compiles (every pass for inference and for training, the dumps and the
//! Rust printer) within a generous time budget. A pass that walks a subexpression twice per level (as the
//! linearity analysis once did for `v = I ^ 1.0 ^ 1.0 ^ ...`) doubles its time per term and
//! never finishes at these lengths; a polynomial one takes milliseconds. The budgets are
//! about 100x what the slowest chain takes on a 2-core machine, not a tight timing.

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use snnc::{Compiler, Options};

/// Terms per chain: long enough that a doubling per term could never finish, short enough
/// to stay clear of the recursion depth limits (issue 18, item 1).
const TERMS: usize = 200;

/// Terms per chain when compiling for training: the front end's depth limit (256 levels)
/// less the neuron's and the update's braces, which count as bracket levels. The backward
/// step differentiates a large expression through a temporary per interior node
/// (`ir::adjoint`), so its gradient is linear in the chain; before, a nested quotient or
/// power of n terms had a gradient of about n^3 nodes (100 terms printed 240-600 MB of Rust).
const TRAIN_TERMS: usize = 254;

/// Bytes of generated Rust per term a training plan may print: linear (the slowest and
/// largest chains, nested powers `(v ^ (v ^ (... I)))`, print about 1.5 KB per term).
const TRAIN_BYTES_PER_TERM: usize = 4096;

/// Per model, for every pass, the dumps and the printer (the slowest chains took 25-80 ms
/// for inference and 0.1-0.2 s for training at 254 terms, dev profile, on a busy 2-core
/// machine).
const BUDGET: Duration = Duration::from_secs(10);
const TRAIN_BUDGET: Duration = Duration::from_secs(60);

/// The compiling thread's stack: deep parentheses recurse in the parser, and the depth
/// is not what this test checks.
const STACK: usize = 256 << 20;

const BINARY: &[&str] = &[
    "+", "-", "*", "/", "^", "<", "<=", ">", ">=", "==", "!=", "&&", "||",
];

const UNARY: &[&str] = &["-", "!"];

/// `a op b op c ...`, with the grammar's own associativity.
fn flat(first: &str, op: &str, rest: &str, terms: usize) -> String {
    let mut s = first.to_string();
    for _ in 1..terms {
        s += &format!(" {op} {rest}");
    }
    s
}

/// `((a op b) op b) ...` or `b op (b op (... op a))`.
fn nested(leaf: &str, op: &str, other: &str, left: bool, terms: usize) -> String {
    let mut s = leaf.to_string();
    for _ in 1..terms {
        s = if left {
            format!("({s} {op} {other})")
        } else {
            format!("({other} {op} {s})")
        };
    }
    s
}

/// The neuron updates under test (statements), each named for the failure message.
fn updates(n: usize) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = expressions(n)
        .into_iter()
        .map(|(shape, e)| (format!("v = {shape}"), format!("v = {e}")))
        .collect();
    // Statements that read the previous one twice: a form copied per read doubles.
    let lets: String = (1..n)
        .map(|i| format!("let a{i} = a{} + a{};\n", i - 1, i - 1))
        .collect();
    out.push((
        "let a1 = a0 + a0; let a2 = a1 + a1; ...".into(),
        format!("let a0 = v_threshold * v + I;\n{lets}v = a{}", n - 1),
    ));
    out.push((
        "v = v_threshold * v + I; v = v + v; ...".into(),
        format!("v = v_threshold * v + I\n{}", "v = v + v\n".repeat(n - 1)),
    ));
    out
}

/// The expressions under test, each named for the failure message.
fn expressions(n: usize) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for op in BINARY {
        let shapes = [
            ("I op 1.0 op 1.0 ...", flat("I", op, "1.0", n)),
            (
                "1.0 op 1.0 ... op I",
                format!("{} {op} I", flat("1.0", op, "1.0", n - 1)),
            ),
            ("v op I op v op I ...", flat("v", op, "I", n)),
            ("((I op 1.0) op 1.0) ...", nested("I", op, "1.0", true, n)),
            ("1.0 op (1.0 op (... I))", nested("I", op, "1.0", false, n)),
            ("(v op (v op (... I)))", nested("I", op, "v", false, n)),
        ];
        for (shape, e) in shapes {
            out.push((shape.replace("op", op), e));
        }
    }
    for op in UNARY {
        let prefix = op.repeat(n);
        out.push((format!("{op}{op}{op}... I"), format!("{prefix}I")));
        out.push((format!("{op}{op}... v + I"), format!("{prefix}v + I")));
        let mut e = "I".to_string();
        for _ in 0..n {
            e = format!("{op}({e})");
        }
        out.push((format!("{op}({op}(... I))"), e));
    }
    out
}

fn source(update: &str) -> String {
    format!(
        "neuron N {{
  param v_threshold = 1.0
  state v = 0.0
  update {{ {update} }}
  spike v >= v_threshold
  on_spike {{ v = 0.0 }}
}}
neuron R {{
  param v_threshold = 1.0
  state v = 0.0
  update {{ {update} }}
  spike v >= v_threshold
}}
model m {{
  T = 4
  batch = 1
  input x: [T, 3]
  h = dense(x, 3)
  s = N(h)
  r = R(dense(s, 3))
  output counts(r)
  output trace(s.v)
  train {{ loss = cross_entropy(counts(r)) }}
}}
"
    )
}

/// Parse, then every pass, the dumps (the schedule's shows the linearity proof or its
/// reason) and the Rust printer; returns the size of the generated Rust.
fn compile_everything(src: &str, train: bool) -> Result<usize, String> {
    let mut c = Compiler::new(Options {
        train,
        ..Options::default()
    });
    let parsed = c.parse_str("chain.snn", src).map_err(|d| d.to_string())?;
    let mut rust = 0;
    for pass in ["schedule", "memory", "rust"] {
        rust = c
            .dump_after(&parsed, pass)
            .map_err(|d| d.to_string())?
            .len();
    }
    Ok(rust)
}

/// Compiles every chain of `n` terms, each under the budget; returns the slowest.
fn check_all(n: usize, train: bool) -> (Duration, String) {
    let (mode, budget) = if train {
        ("training", TRAIN_BUDGET)
    } else {
        ("inference", BUDGET)
    };
    let mut slowest = (Duration::ZERO, String::new());
    for (shape, update) in updates(n) {
        let src = source(&update);
        let (tx, rx) = mpsc::channel();
        let t0 = Instant::now();
        thread::Builder::new()
            .stack_size(STACK)
            .spawn(move || {
                let _ = tx.send(compile_everything(&src, train));
            })
            .unwrap();
        // An exponential pass never returns: leave its thread behind and fail.
        match rx.recv_timeout(budget) {
            Ok(Ok(rust)) => {
                let most = TRAIN_BYTES_PER_TERM * n;
                assert!(
                    !train || rust <= most,
                    "`{shape}` ({n} terms, {mode}) prints {rust} bytes of Rust (at most {most})"
                );
            }
            Ok(Err(e)) => panic!("`{shape}` ({n} terms, {mode}) does not compile:\n{e}"),
            Err(_) => panic!("`{shape}` ({n} terms, {mode}) took over {budget:?}"),
        }
        let took = t0.elapsed();
        if took > slowest.0 {
            slowest = (took, shape);
        }
    }
    eprintln!(
        "slowest {mode} chain of {n} terms: `{}` in {:?}",
        slowest.1, slowest.0
    );
    slowest
}

#[test]
fn long_chains_of_every_operator_compile_in_polynomial_time() {
    check_all(TERMS, false);
}

#[test]
fn long_chains_of_every_operator_compile_for_training_in_polynomial_time() {
    check_all(TRAIN_TERMS, true);
}
