//! Generated code of bounded depth (issue 18): neuron updates at the front end's depth
//! limit (a 256-term flat sum, 254 nested levels of every operator) and a population fed by
//! 254 projections compile to Rust that rustc builds and that computes what the equations
//! say (checked against the same arithmetic written out here, in f32), and no generated
//! Rust or CUDA text, of these models or of any model in examples/ and tests/in, nests
//! parentheses deeper than the bound `passes::lower::split_deep` keeps.

mod common;

use snn_runtime::{Session, Tensor};
use snnc::ir::kernel::Program;
use snnc::passes::lower::MAX_DEPTH;
use snnc::{Compiler, Options};

/// The front end's limit: terms of a flat chain (one level per operator).
const N: usize = 256;

/// Projections summed into one population: the call around the sum counts as levels too.
const PROJECTIONS: usize = N - 2;

/// Levels of a nested expression in a neuron's update: the limit counts bracket levels too,
/// and the neuron's and the update's braces are two of them.
const NESTED: usize = N - 2;

/// Parentheses a printed expression of [`MAX_DEPTH`] levels may nest: an operation opens at
/// most three (`(1.0f32 / (1.0f32 + (-x).exp()))`, a sigmoid), a load two more, and the
/// statement around it a few.
const MAX_PARENS: usize = 3 * MAX_DEPTH + 8;

const BINARY: &[&str] = &[
    "+", "-", "*", "/", "^", "<", "<=", ">", ">=", "==", "!=", "&&", "||",
];

const T: usize = 3;
const B: usize = 2;
const F: usize = 4;

fn b2f(b: bool) -> f32 {
    if b {
        1.0
    } else {
        0.0
    }
}

fn apply(op: &str, a: f32, b: f32) -> f32 {
    match op {
        "+" => a + b,
        "-" => a - b,
        "*" => a * b,
        "/" => a / b,
        "^" => a.powf(b),
        "<" => b2f(a < b),
        "<=" => b2f(a <= b),
        ">" => b2f(a > b),
        ">=" => b2f(a >= b),
        "==" => b2f(a == b),
        "!=" => b2f(a != b),
        "&&" => b2f(a != 0.0 && b != 0.0),
        "||" => b2f(a != 0.0 || b != 0.0),
        _ => unreachable!("{op}"),
    }
}

/// The other operand of each operator: not an identity (`x * 1.0` could be simplified
/// away), and the values stay finite over 256 levels for currents in (0.2, 1.4).
fn operand(op: &str) -> f32 {
    match op {
        "+" | "-" => 0.5,
        "*" | "/" | "^" => 1.001,
        _ => 0.7,
    }
}

/// One neuron update under test: its text and its value from `(v, I)`, in f32 in the
/// order the equations write.
struct Case {
    name: String,
    update: String,
    value: Box<dyn Fn(f32, f32) -> f32>,
}

fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    // v + I + I + ... : N terms, the state carried from step to step.
    out.push(Case {
        name: "v + I + I ...".into(),
        update: format!("v = v{}", " + I".repeat(N - 1)),
        value: Box::new(|v, i| (1..N).fold(v, |s, _| s + i)),
    });
    for &op in BINARY {
        // (c op (c op (... I))): NESTED - 1 levels of brackets around I.
        let c = operand(op);
        let mut e = "I".to_string();
        for _ in 1..NESTED {
            e = format!("({c:?} {op} {e})");
        }
        out.push(Case {
            name: format!("({c:?} {op} (... I))"),
            update: format!("v = {e}"),
            value: Box::new(move |_, i| (1..NESTED).fold(i, |x, _| apply(op, c, x))),
        });
    }
    out.push(Case {
        name: "----I".into(),
        update: format!("v = {}I", "-".repeat(N - 1)),
        value: Box::new(|_, i| (1..N).fold(i, |x, _| -x)),
    });
    out.push(Case {
        name: "!!!!I".into(),
        update: format!("v = {}I", "!".repeat(N - 1)),
        value: Box::new(|_, i| (1..N).fold(i, |x, _| b2f(x == 0.0))),
    });
    out.push(Case {
        name: "tanh(tanh(... I))".into(),
        update: format!(
            "v = {}I{}",
            "tanh(".repeat(NESTED - 1),
            ")".repeat(NESTED - 1)
        ),
        value: Box::new(|_, i| (1..NESTED).fold(i, |x, _| x.tanh())),
    });
    out
}

/// Every case as one non-spiking population reading the input, each with its trace.
fn cases_model(cases: &[Case]) -> String {
    let mut s = String::new();
    for (k, c) in cases.iter().enumerate() {
        s += &format!(
            "neuron D{k} {{\n  state v = 0.0\n  update {{ {} }}\n}}\n",
            c.update
        );
    }
    s += &format!("model deep {{\n  T = {T}\n  batch = {B}\n  input x: [T, {F}]\n");
    for k in 0..cases.len() {
        s += &format!("  p{k} = D{k}(x)\n  output trace(p{k}.v)\n");
    }
    s + "}\n"
}

/// The largest nesting of `(` in `text`.
fn max_parens(text: &str) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    for c in text.chars() {
        match c {
            '(' => {
                depth += 1;
                max = max.max(depth);
            }
            ')' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

fn assert_shallow(what: &str, p: &Program) {
    let rust = snnc::back::rust::print_program(p);
    let cuda = snnc::back::cuda::print_program(p);
    for (lang, text) in [("Rust", rust), ("CUDA", cuda)] {
        let d = max_parens(&text);
        assert!(
            d <= MAX_PARENS,
            "{what}: the generated {lang} nests {d} parentheses (bound {MAX_PARENS})"
        );
    }
}

/// A state whose initial value is a 256-term sum of a parameter, on both schedules (the
/// initial value is computed before the time loop, or at the first step).
#[test]
fn a_deep_initial_value_builds_and_starts_where_it_says() {
    let src = format!(
        "neuron D {{\n  param p = 0.001\n  state v = p{}\n  update {{ v = v + I }}\n}}\n\
         model init {{\n  T = {T}\n  batch = {B}\n  input x: [T, {F}]\n  s = D(x)\n  \
         output trace(s.v)\n}}\n",
        " + p".repeat(N - 1)
    );
    let v0 = (1..N).fold(0.001f32, |s, _| s + 0.001);
    for force_steps in [false, true] {
        let opts = Options {
            force_steps,
            ..Options::default()
        };
        let p = compile_with("init.snn", src.clone(), opts);
        assert_shallow("init.snn", &p);
        let mut s = load(&format!("init{}", force_steps as u8), &p);
        let x = input(F);
        let out = s.run(std::slice::from_ref(&x), T, B).unwrap();
        for n in 0..B * F {
            let mut v = v0;
            for t in 0..T {
                v += x.data[t * B * F + n];
                let got = out[0].1.data[t * B * F + n];
                assert!(
                    close(got, v),
                    "steps {force_steps}, t {t}, neuron {n}: {got} vs {v}"
                );
            }
        }
    }
}

/// Compiles `src` on a thread with room for the recursive passes (the front end's limit,
/// not this test, bounds their depth), then prints and builds it with a fresh kernel cache.
fn compile(name: &str, src: String) -> Program {
    compile_with(name, src, Options::default())
}

fn compile_with(name: &str, src: String, opts: Options) -> Program {
    let name = name.to_string();
    std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(move || {
            let mut c = Compiler::new(opts);
            let parsed = c
                .parse_str(&name, &src)
                .unwrap_or_else(|d| panic!("{}", d.render(&c.sources, false)));
            c.compile(&parsed)
                .unwrap_or_else(|d| panic!("{}", d.render(&c.sources, false)))
        })
        .unwrap()
        .join()
        .unwrap()
}

/// Loads `p` with its kernels built by rustc into a temporary cache (removed after).
fn load(name: &str, p: &Program) -> Session {
    let cache = std::env::temp_dir().join(format!("snnc-deep-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    let loaded =
        snnc::session::load(p, Some(&cache)).unwrap_or_else(|d| panic!("{name}: {}", d.message));
    let _ = std::fs::remove_dir_all(&cache);
    loaded.session
}

/// Currents in (0.2, 1.4), `[T, B, width]`.
fn input(width: usize) -> Tensor {
    Tensor {
        shape: vec![T, B, width],
        data: (0..T * B * width)
            .map(|i| 0.2 + (i * 7 % 13) as f32 * 0.1)
            .collect(),
    }
}

fn close(got: f32, want: f32) -> bool {
    got == want || (got - want).abs() <= 1e-5 * want.abs().max(1.0)
}

#[test]
fn updates_at_the_depth_limit_build_and_compute_their_equations() {
    let cases = cases();
    let p = compile("deep.snn", cases_model(&cases));
    assert_shallow("deep.snn", &p);
    let mut s = load("updates", &p);
    let x = input(F);
    let out = s.run(std::slice::from_ref(&x), T, B).unwrap();
    assert_eq!(out.len(), cases.len());
    for (c, (_, trace)) in cases.iter().zip(&out) {
        for n in 0..B * F {
            let mut v = 0.0f32;
            for t in 0..T {
                v = (c.value)(v, x.data[t * B * F + n]);
                let got = trace.data[t * B * F + n];
                assert!(
                    close(got, v),
                    "`{}` at t {t}, neuron {n}: {got} vs {v}",
                    c.name
                );
            }
        }
    }
}

/// `LI(d0 + d1 + ... )`: the compiler's own sum of the projections' currents, as deep as
/// the source's chain of names.
#[test]
fn a_population_fed_by_254_projections_builds_and_sums_them() {
    let mut src = format!("model fan {{\n  T = {T}\n  batch = {B}\n  input x: [T, 1]\n");
    for k in 0..PROJECTIONS {
        src += &format!("  d{k} = dense(x, {F})\n");
    }
    let sum: Vec<String> = (0..PROJECTIONS).map(|k| format!("d{k}")).collect();
    src += &format!(
        "  s = LI({}, tau = 2.0)\n  output trace(s.v)\n}}\n",
        sum.join(" + ")
    );
    let p = compile("fan.snn", src);
    assert_shallow("fan.snn", &p);
    let mut s = load("fan", &p);
    // Projection k: weight (k + 1) / 1024 to every output (exact in f32), bias k / 4096.
    let w = |k: usize| (k + 1) as f32 / 1024.0;
    let bias = |k: usize| k as f32 / 4096.0;
    for k in 0..PROJECTIONS {
        s.set_weight(&format!("d{k}.weight"), &[w(k); F]).unwrap();
        s.set_weight(&format!("d{k}.bias"), &[bias(k); F]).unwrap();
    }
    let x = input(1);
    let out = s.run(std::slice::from_ref(&x), T, B).unwrap();
    let trace = &out[0].1;
    // LI with tau = 2: v = v + (I - v) / 2, the current summed left to right.
    let eqs = "v + (I - v) / 2.0";
    for b in 0..B {
        let mut v = 0.0f32;
        for t in 0..T {
            let xi = x.data[t * B + b];
            let i = (0..PROJECTIONS).fold(0.0f32, |acc, k| {
                let d = xi * w(k) + bias(k);
                if k == 0 {
                    d
                } else {
                    acc + d
                }
            });
            v = v + (i - (v - 0.0)) / 2.0;
            for f in 0..F {
                let got = trace.data[(t * B + b) * F + f];
                assert!(close(got, v), "{eqs} at t {t}, sample {b}: {got} vs {v}");
            }
        }
    }
}

/// The backward kernels of the same updates (their adjoints and recomputed forward values)
/// print within the bound too; those of the nested quotient and power build and run.
#[test]
fn training_plans_at_the_depth_limit_print_within_the_bound() {
    for c in cases() {
        let src = format!(
            "neuron N {{\n  param v_threshold = 1.0\n  state v = 0.0\n  update {{ {} }}\n  \
             spike v >= v_threshold\n  on_spike {{ v = 0.0 }}\n}}\n\
             model m {{\n  T = {T}\n  batch = {B}\n  input x: [T, 3]\n  s = N(dense(x, 3))\n  \
             output counts(s)\n  train {{ loss = cross_entropy(counts(s)) }}\n}}\n",
            c.update
        );
        let opts = Options {
            train: true,
            ..Options::default()
        };
        let p = compile_with(&c.name, src, opts);
        assert_shallow(&c.name, &p);
        // The backward kernels of the nested quotient and power build and run too.
        if c.name.contains(" / ") || c.name.contains(" ^ ") {
            let mut s = load("train", &p);
            let out = s.run(&[input(3)], T, B).unwrap();
            let (_, g) = common::grad::cross_entropy_f32(&out[0].1.data, &[0, 1], 3);
            s.backward(&[&g], T, B).unwrap();
            let names: Vec<String> = s.plan().weights.iter().map(|w| w.name.clone()).collect();
            for (w, g) in names.iter().zip(s.grads().unwrap()) {
                assert!(g.iter().all(|v| v.is_finite()), "{}: {w}: {g:?}", c.name);
            }
        }
    }
}

/// Every model the snapshots cover, and the training models, stay within the bound (far
/// below it, so the split leaves them unchanged: the snapshots pin that).
#[test]
fn every_model_prints_within_the_bound() {
    let train_models = common::snn_files("tests/in/train");
    for path in common::model_files().into_iter().chain(train_models) {
        for train in [false, true] {
            let opts = Options {
                train,
                ..Options::default()
            };
            // Models that do not train (no train block) are refused with `train`.
            if let Ok(p) = common::compile_file(&path, opts) {
                assert_shallow(&path.display().to_string(), &p);
            }
        }
    }
}
