//! Numerical checks against reference vectors from SpikingJelly and snnTorch (copied from
//! ../shared/vectors into tests/vectors; see its README for the conventions). Every case is
//! compiled from .snn text through the whole pipeline and run by the generated Rust kernels,
//! in the fused, unfused and step-by-step plans.

mod common;

use serde_json::Value;
use snn_runtime::Tensor;
use snnc::{Compiler, Options};

fn load(name: &str) -> Value {
    let path = common::root().join("tests/vectors").join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// `[T][N]` JSON -> flat f32 (exact: values were printed from f32).
fn mat(v: &Value) -> (usize, usize, Vec<f32>) {
    let rows = v.as_array().unwrap();
    let n = rows[0].as_array().unwrap().len();
    let data = rows
        .iter()
        .flat_map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
        })
        .collect();
    (rows.len(), n, data)
}

fn plans() -> Vec<(&'static str, Options)> {
    vec![
        ("fused", Options::default()),
        (
            "unfused",
            Options {
                fuse: false,
                ..Options::default()
            },
        ),
        (
            "step-by-step",
            Options {
                force_steps: true,
                ..Options::default()
            },
        ),
    ]
}

/// Run `population` (a call like `LIF(x, tau = 2.0)`) on input `x` `[T][N]` and return the
/// spikes and the trace of `state`.
fn simulate(population: &str, state: &str, x: &Value, opts: Options) -> (Vec<f32>, Vec<f32>) {
    let (t, n, data) = mat(x);
    let src = format!(
        "model ref {{\n  T = {t}\n  batch = 1\n  input x: [T, {n}]\n  s = {population}\n  output spikes(s)\n  output trace(s.{state})\n}}\n"
    );
    let mut c = Compiler::new(opts);
    let parsed = c
        .parse_str("ref.snn", &src)
        .unwrap_or_else(|d| panic!("{}", d.render(&c.sources, false)));
    let program = c
        .compile(&parsed)
        .unwrap_or_else(|d| panic!("{}", d.render(&c.sources, false)));
    let mut loaded = snnc::session::load(&program, Some(&common::cache_dir())).unwrap();
    let input = Tensor::new(vec![t, 1, n], data).unwrap();
    let out = loaded.session.run(&[input], t, 1).unwrap();
    (out[0].1.data.clone(), out[1].1.data.clone())
}

fn assert_close(what: &str, got: &[f32], want: &[f32], n: usize) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut exact = 0;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let tol = 1e-5 * w.abs().max(1e-1);
        assert!(
            (g - w).abs() <= tol,
            "{what}: t={} n={}: got {g}, want {w}",
            i / n,
            i % n
        );
        exact += usize::from(g.to_bits() == w.to_bits() || (g == 0.0 && w == 0.0));
    }
    // Same operation order in f32: the match is bit for bit, edge columns included.
    assert_eq!(
        exact,
        want.len(),
        "{what}: {} of {} values differ in the last bits",
        want.len() - exact,
        want.len()
    );
}

#[test]
fn spikingjelly_lif() {
    let v = load("lif_spikingjelly.json");
    let cases = v["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 10);
    for case in cases {
        let cfg = case["config"].as_str().unwrap();
        let input = case["input"].as_str().unwrap();
        let soft = case["v_reset"].is_null();
        let v_reset = case["v_reset"].as_f64().unwrap_or(0.0);
        let pop = format!(
            "LIF(x, tau = {:?}, v_threshold = {:?}, v_reset = {v_reset:?}, decay_input = {}, reset = {})",
            case["tau"].as_f64().unwrap(),
            case["v_threshold"].as_f64().unwrap(),
            case["decay_input"].as_bool().unwrap(),
            if soft { "soft" } else { "hard" }
        );
        let (_, n, _) = mat(&case["x"]);
        let (_, _, want_s) = mat(&case["spike"]);
        let (_, _, want_v) = mat(&case["v"]);
        for (plan, opts) in plans() {
            let (s, tr) = simulate(&pop, "v", &case["x"], opts);
            let what = format!("SJ LIF {cfg}/{input} ({plan})");
            assert_eq!(s, want_s, "{what}: spikes");
            assert_close(&what, &tr, &want_v, n);
        }
    }
}

#[test]
fn spikingjelly_if() {
    let v = load("if_spikingjelly.json");
    let cases = v["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 4);
    for case in cases {
        let soft = case["v_reset"].is_null();
        let pop = format!(
            "IF(x, v_threshold = {:?}, v_reset = 0.0, reset = {})",
            case["v_threshold"].as_f64().unwrap(),
            if soft { "soft" } else { "hard" }
        );
        let (_, n, _) = mat(&case["x"]);
        let (_, _, want_s) = mat(&case["spike"]);
        let (_, _, want_v) = mat(&case["v"]);
        for (plan, opts) in plans() {
            let (s, tr) = simulate(&pop, "v", &case["x"], opts);
            let what = format!("SJ IF soft={soft}/{} ({plan})", case["input"]);
            assert_eq!(s, want_s, "{what}: spikes");
            assert_close(&what, &tr, &want_v, n);
        }
    }
}

#[test]
fn snntorch_leaky() {
    let v = load("lif_snntorch.json");
    let cases = v["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 8);
    for case in cases {
        let mech = case["reset_mechanism"].as_str().unwrap();
        let delay = case["reset_delay"].as_bool().unwrap();
        let pop = format!(
            "Leaky(x, beta = {:?}, threshold = {:?}, reset_mechanism = {mech}, reset_delay = {delay})",
            case["beta"].as_f64().unwrap(),
            case["threshold"].as_f64().unwrap()
        );
        let (_, n, _) = mat(&case["x"]);
        let (_, _, want_s) = mat(&case["spike"]);
        let (_, _, want_m) = mat(&case["mem"]);
        for (plan, opts) in plans() {
            let (s, tr) = simulate(&pop, "mem", &case["x"], opts);
            let what = format!(
                "snnTorch Leaky {mech} delay={delay}/{} ({plan})",
                case["input"]
            );
            assert_eq!(s, want_s, "{what}: spikes");
            assert_close(&what, &tr, &want_m, n);
        }
    }
}
