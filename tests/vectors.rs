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

// ------------------------------------------------------------------ the PSN family

/// A flat list of the numbers in a (possibly nested) JSON array, or one number.
fn flat(v: &Value) -> Vec<f32> {
    match v {
        Value::Array(items) => items.iter().flat_map(flat).collect(),
        x => vec![x.as_f64().unwrap() as f32],
    }
}

/// Compile a one-population model `s = {population}` over `x: [T, n]` that outputs the
/// spikes and the trace of `h`.
fn psn_model(population: &str, t: usize, n: usize, opts: Options) -> snnc::session::Loaded {
    let src = format!(
        "model ref {{\n  T = {t}\n  batch = 1\n  input x: [T, {n}]\n  s = {population}\n  output spikes(s)\n  output trace(s.h)\n}}\n"
    );
    let mut c = Compiler::new(opts);
    let parsed = c
        .parse_str("ref.snn", &src)
        .unwrap_or_else(|d| panic!("{}", d.render(&c.sources, false)));
    let program = c
        .compile(&parsed)
        .unwrap_or_else(|d| panic!("{}", d.render(&c.sources, false)));
    snnc::session::load(&program, Some(&common::cache_dir())).unwrap()
}

/// Write `s.weight` and `s.bias` (in the plan's shapes) to a safetensors file and load it:
/// the PSN family's weights load like dense weights.
fn load_psn_weights(s: &mut snn_runtime::Session, tag: &str, weight: &[f32], bias: &[f32]) {
    let shape = |name: &str| {
        s.plan()
            .weights
            .iter()
            .find(|w| w.name == name)
            .unwrap()
            .shape
            .clone()
    };
    let dir = common::cache_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("psn-{tag}-{}.safetensors", std::process::id()));
    snn_runtime::io::weights::save(
        &path,
        &[
            ("s.weight".into(), shape("s.weight"), weight),
            ("s.bias".into(), shape("s.bias"), bias),
        ],
    )
    .unwrap();
    s.load_weights(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
}

/// PSN, masked PSN (k = 2, lambda 1 and 0.5) and sliding PSN (k = 3) against SpikingJelly:
/// the weights loaded from a safetensors file, in every plan. Inputs and weights are dyadic,
/// so `h` is exact in any summation order: spikes and `h` match bit for bit.
#[test]
fn spikingjelly_psn() {
    let v = load("psn_spikingjelly.json");
    let cases = v["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 4);
    for case in cases {
        let kind = case["kind"].as_str().unwrap();
        let pop = match kind {
            "PSN" => "PSN(x)".to_string(),
            "SlidingPSN" => format!("SlidingPSN(x, k = {}, exp_init = false)", case["k"]),
            _ => format!(
                "MaskedPSN(x, k = {}, lambda = {:?})",
                case["k"],
                case["lambda"].as_f64().unwrap()
            ),
        };
        let (t, n, x) = mat(&case["x"]);
        let (_, _, want_s) = mat(&case["spike"]);
        let (_, _, want_h) = mat(&case["h"]);
        for (plan, opts) in plans() {
            let mut l = psn_model(&pop, t, n, opts);
            let s = &mut l.session;
            load_psn_weights(s, kind, &flat(&case["weight"]), &flat(&case["bias"]));
            let out = s
                .run(&[Tensor::new(vec![t, 1, n], x.clone()).unwrap()], t, 1)
                .unwrap();
            let what = format!("SJ {kind} ({plan})");
            assert_eq!(out[0].1.data, want_s, "{what}: spikes");
            assert_close(&what, &out[1].1.data, &want_h, n);
        }
    }
}

/// The initial weights follow SpikingJelly: PSN `U(-1/sqrt(T), 1/sqrt(T))` `[T, T]` and a
/// bias of -1 `[T, 1]`; sliding PSN with `exp_init` `(1/4, 1/2, 1)` for k = 3 and a scalar
/// bias of -1.
#[test]
fn psn_family_initialisation() {
    let v = load("psn_spikingjelly.json");
    let l = psn_model("PSN(x)", 8, 4, Options::default());
    let s = &l.session;
    let w = s.weight("s.weight").unwrap();
    assert_eq!(w.len(), 64);
    let bound = 1.0 / 8f32.sqrt();
    assert!(w.iter().all(|x| x.abs() <= bound), "{w:?}");
    assert!(
        w.iter().any(|x| x.abs() > bound / 2.0),
        "spread over the range"
    );
    assert_eq!(s.weight("s.bias").unwrap(), &[-1.0; 8]);
    let shapes: Vec<(String, Vec<usize>)> = s
        .plan()
        .weights
        .iter()
        .map(|w| (w.name.clone(), w.shape.clone()))
        .collect();
    assert_eq!(
        shapes,
        [
            ("s.weight".into(), vec![8, 8]),
            ("s.bias".into(), vec![8, 1])
        ]
    );

    let l = psn_model("SlidingPSN(x, k = 3)", 8, 4, Options::default());
    let s = &l.session;
    assert_eq!(
        s.weight("s.weight").unwrap(),
        flat(&v["default_sliding_exp_init_k3"]).as_slice()
    );
    assert_eq!(s.weight("s.bias").unwrap(), &[-1.0]);
    assert_eq!(s.plan().weights[1].shape, Vec::<usize>::new());
    let l = psn_model(
        "SlidingPSN(x, k = 4, exp_init = false)",
        8,
        4,
        Options::default(),
    );
    let w = l.session.weight("s.weight").unwrap();
    assert!(
        w.iter().all(|x| x.abs() <= 0.5) && w.iter().any(|&x| x != 0.0),
        "{w:?}"
    );
    let l = psn_model(
        "MaskedPSN(x, k = 3, lambda = 0.25)",
        8,
        4,
        Options::default(),
    );
    assert_eq!(l.session.param("s.lambda"), Some(0.25));
}

/// A sliding PSN has no T-shaped weight: the T = 8 weights of SpikingJelly's case run at
/// T = 16 and T = 32, on the parallel (one banded product) and the step-by-step schedules.
/// The first 8 steps repeat the reference exactly (the mix is causal); the rest match
/// `h[t] = sum_(m < k) w[k-1-m] x[t-m] + b` evaluated here.
#[test]
fn sliding_psn_runs_at_any_length() {
    let v = load("psn_spikingjelly.json");
    let case = &v["cases"].as_array().unwrap()[3];
    assert_eq!(case["kind"], "SlidingPSN");
    let (t0, n, x0) = mat(&case["x"]);
    let (_, _, h0) = mat(&case["h"]);
    let w = flat(&case["weight"]);
    let b = case["bias"].as_f64().unwrap() as f32;
    let k = w.len();
    for t in [16, 32] {
        // The reference input, then dyadic values (exact products and sums).
        let mut x = x0.clone();
        for i in t0 * n..t * n {
            x.push(((i * 37 % 512) as f32 - 256.0) / 128.0);
        }
        let mut want_h = vec![0.0f32; t * n];
        for s in 0..t {
            for j in 0..n {
                let mut acc = b as f64;
                for m in 0..k.min(s + 1) {
                    acc += w[k - 1 - m] as f64 * x[(s - m) * n + j] as f64;
                }
                want_h[s * n + j] = acc as f32;
            }
        }
        assert_eq!(&want_h[..t0 * n], &h0[..], "the reference formula");
        let want_s: Vec<f32> = want_h.iter().map(|&h| f32::from(h >= 0.0)).collect();
        for (plan, opts) in plans() {
            // Compiled for T = 8 (as the reference), run at T.
            let mut l = psn_model("SlidingPSN(x, k = 3, exp_init = false)", t0, n, opts);
            let s = &mut l.session;
            load_psn_weights(s, "sliding", &w, &[b]);
            let out = s
                .run(&[Tensor::new(vec![t, 1, n], x.clone()).unwrap()], t, 1)
                .unwrap();
            let what = format!("SlidingPSN at T = {t} ({plan})");
            assert_eq!(out[1].1.data, want_h, "{what}: h");
            assert_eq!(out[0].1.data, want_s, "{what}: spikes");
        }
    }
    // A PSN's weight is [T, T]: another T is an error, not a wrong answer.
    let mut l = psn_model("PSN(x)", t0, n, Options::default());
    let err = l
        .session
        .run(&[Tensor::zeros(&[16, 1, n])], 16, 1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("runs only at T = 8, not T = 16"), "{err}");
}
