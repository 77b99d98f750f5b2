//! The one depth limit (issue 18, item 1): anything nested deeper than
//! `snnc::front::depth::MAX_DEPTH` levels — long flat chains of every operator, nested
//! brackets, unary chains, calls, field accesses, lists, `else if` links, nested `if`s — is
//! refused by the front end with a located error before any recursive pass runs, quickly
//! and without overflowing the stack; anything at the limit goes through every pass, the
//! dumps and both printers on an ordinary thread's stack.

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use snnc::diag::ErrorKind;
use snnc::front::depth::MAX_DEPTH;
use snnc::{Compiler, Options};

/// Far beyond the limit: the length the reproductions used.
const HUGE: usize = 10_000;

/// A thread stack smaller than a test thread's or a main thread's default (2 MiB, 8 MiB):
/// whatever the limit admits must fit in it, in the dev profile.
const SMALL_STACK: usize = 2 << 20;

/// Refusing is a linear scan; compiling at the limit takes well under a second here.
const BUDGET: Duration = Duration::from_secs(10);

const BINARY: &[&str] = &[
    "+", "-", "*", "/", "^", "<", "<=", ">", ">=", "==", "!=", "&&", "||",
];

/// A model whose neuron's update is `update` and whose layer width is `width`.
fn source(update: &str, width: &str) -> String {
    format!(
        "neuron N {{
  param v_threshold = 1.0
  flag f = true
  state v = 0.0
  update {{ {update} }}
  spike v >= v_threshold
  on_spike {{ v = 0.0 }}
}}
model m {{
  T = 4
  batch = 1
  input x: [T, 3]
  h = dense(x, {width})
  s = N(h)
  output counts(s)
  train {{ loss = cross_entropy(counts(s)) }}
}}
"
    )
}

fn update(u: &str) -> String {
    source(u, "3")
}

/// Sources that nest `n` levels, each named for the failure message. Line 5 holds the
/// update, line 13 the layer.
fn nested_sources(n: usize) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for op in BINARY {
        out.push((
            format!("I {op} 1.0 {op} 1.0 ..."),
            update(&format!("v = I{}", format!(" {op} 1.0").repeat(n - 1))),
        ));
        let mut e = "I".to_string();
        for _ in 1..n {
            e = format!("(1.0 {op} {e})");
        }
        out.push((format!("(1.0 {op} (... I))"), update(&format!("v = {e}"))));
    }
    out.push((
        "----I".into(),
        update(&format!("v = {}I", "-".repeat(n - 1))),
    ));
    out.push((
        "!!!!I".into(),
        update(&format!("v = {}I", "!".repeat(n - 1))),
    ));
    out.push((
        "exp(exp(... I))".into(),
        update(&format!(
            "v = {}I{}",
            "exp(".repeat(n - 1),
            ")".repeat(n - 1)
        )),
    ));
    out.push((
        "((((I))))".into(),
        update(&format!("v = {}I{}", "(".repeat(n), ")".repeat(n))),
    ));
    out.push((
        "if f { if f { ... } }".into(),
        update(&format!(
            "{}v = I{}",
            "if f { ".repeat(n - 1),
            " }".repeat(n - 1)
        )),
    ));
    out.push((
        "if f {} else if f {} ...".into(),
        update(&format!(
            "if f {{ v = I }}{}",
            " else if f { v = 1.0 }".repeat(n - 1)
        )),
    ));
    out.push((
        "dense(x, 1 + 1 + ...)".into(),
        source("v = I", &format!("1{}", " + 1".repeat(n - 1))),
    ));
    out
}

/// Run `f` on a thread with a [`SMALL_STACK`] under [`BUDGET`]: a stack overflow aborts the
/// test binary, a slow pass fails it.
fn bounded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let t0 = Instant::now();
    thread::Builder::new()
        .stack_size(SMALL_STACK)
        .spawn(move || {
            let _ = tx.send(f());
        })
        .unwrap();
    let out = rx
        .recv_timeout(BUDGET)
        .unwrap_or_else(|_| panic!("`{what}` took over {BUDGET:?}"));
    assert!(t0.elapsed() < BUDGET, "`{what}` took {:?}", t0.elapsed());
    out
}

/// Parse `src`; the error's message, kind and `file:line:col`, if any.
fn parse_error(src: &str) -> Option<(String, ErrorKind, String)> {
    let mut c = Compiler::new(Options::default());
    match c.parse_str("deep.snn", src) {
        Ok(_) => None,
        Err(d) => {
            let at = d.span.map(|s| c.sources.location(s)).unwrap_or_default();
            assert!(d.hint.is_some(), "`{}` has no hint", d.message);
            Some((d.message.clone(), d.kind, at))
        }
    }
}

/// Every pass for inference or for training, the dumps and both printers.
fn compile_everything(src: &str, train: bool) -> Result<(), String> {
    let mut c = Compiler::new(Options {
        train,
        ..Options::default()
    });
    let parsed = c.parse_str("deep.snn", src).map_err(|d| d.to_string())?;
    for pass in ["parse", "schedule", "memory", "lower", "rust"] {
        c.dump_after(&parsed, pass).map_err(|d| d.to_string())?;
    }
    let program = c.compile(&parsed).map_err(|d| d.to_string())?;
    snnc::back::cuda::print_program(&program);
    Ok(())
}

/// Compile every source nested as deep as the limit admits; the slowest time.
fn compile_at_the_limit(train: bool) -> Duration {
    // Brackets count the neuron's and the update's braces: two levels fewer inside.
    let n = MAX_DEPTH - 2;
    let mut slowest = (Duration::ZERO, String::new());
    for (shape, src) in nested_sources(n) {
        if shape.starts_with("dense(") {
            continue; // A layer's width is a literal: refused for another reason.
        }
        let what = shape.clone();
        let t0 = Instant::now();
        if let Err(e) = bounded(&shape, move || compile_everything(&src, train)) {
            panic!("`{what}` ({n} levels, train: {train}) does not compile:\n{e}");
        }
        if t0.elapsed() > slowest.0 {
            slowest = (t0.elapsed(), shape);
        }
    }
    eprintln!(
        "slowest at {n} levels (train: {train}): `{}` in {:?}",
        slowest.1, slowest.0
    );
    slowest.0
}

#[test]
fn far_too_deep_is_refused_at_the_source_with_the_limit() {
    for (shape, src) in nested_sources(HUGE) {
        let (msg, kind, at) = bounded(&shape, move || parse_error(&src))
            .unwrap_or_else(|| panic!("`{shape}` ({HUGE} levels) was accepted"));
        assert_eq!(kind, ErrorKind::Syntax, "`{shape}`: {msg}");
        assert!(
            msg.contains("nested too deeply: more than 256 levels"),
            "`{shape}`: {msg}"
        );
        assert!(at.starts_with("deep.snn:"), "`{shape}` at `{at}`");
    }
}

#[test]
fn the_error_points_at_the_first_level_past_the_limit() {
    // A flat sum: the node that reaches level 257 starts at the sum's first term.
    let src = update(&format!("v = I{}", " + 1.0".repeat(HUGE)));
    let (msg, _, at) = parse_error(&src).unwrap();
    assert_eq!(msg, "expression nested too deeply: more than 256 levels");
    assert_eq!(at, "deep.snn:5:16");
    // Brackets: the 257th opening one (the neuron and its update are levels 1 and 2).
    let src = update(&format!("v = {}I{}", "(".repeat(HUGE), ")".repeat(HUGE)));
    let (msg, _, at) = parse_error(&src).unwrap();
    assert_eq!(msg, "brackets nested too deeply: more than 256 levels");
    assert_eq!(at, format!("deep.snn:5:{}", 16 + MAX_DEPTH - 2));
    // An `else if` chain: the first `if` is level 1, link k level k + 1 and the statements
    // in its block level k + 2, so the assignment in link 255 is the first past the limit.
    let link = " else if f { v = 1.0 }";
    let src = update(&format!("if f {{ v = I }}{}", link.repeat(HUGE)));
    let (msg, _, at) = parse_error(&src).unwrap();
    assert_eq!(msg, "statements nested too deeply: more than 256 levels");
    let first_if = "  update { ".len() + 1;
    let col =
        first_if + "if f { v = I }".len() + (MAX_DEPTH - 2) * link.len() + " else if f { ".len();
    assert_eq!(at, format!("deep.snn:5:{col}"));
}

#[test]
fn one_level_past_the_limit_is_refused_and_the_limit_is_accepted() {
    let at_limit = update(&format!("v = I{}", " + 1.0".repeat(MAX_DEPTH - 1)));
    assert_eq!(parse_error(&at_limit), None);
    let past = update(&format!("v = I{}", " + 1.0".repeat(MAX_DEPTH)));
    assert!(parse_error(&past).is_some());
    let at_limit = update(&format!("v = {}I", "-".repeat(MAX_DEPTH - 1)));
    assert_eq!(parse_error(&at_limit), None);
    let past = update(&format!("v = {}I", "-".repeat(MAX_DEPTH)));
    assert!(parse_error(&past).is_some());
}

#[test]
fn everything_the_limit_admits_compiles_on_a_small_stack() {
    compile_at_the_limit(false);
}

#[test]
fn everything_the_limit_admits_compiles_for_training_on_a_small_stack() {
    compile_at_the_limit(true);
}
