//! Gradients of the PSN family and of the parallel schedule: the backward of `Op::TimeMix`
//! (`A^T dY` for the input, `dY X^T` reduced per matrix kind for the weights) and of the
//! elementwise kernel after it. Against SpikingJelly's autograd
//! (tests/vectors/psn_spikingjelly.json), against central finite differences of smooth
//! stand-ins, and `schedule = parallel` against `schedule = sequential` for every resetless
//! model.

mod common;

use common::grad::{self, Tol};
use serde_json::Value;
use snn_runtime::plan::Extent;

fn load_src(src: &str) -> snn_runtime::Session {
    common::session_from_str("psn_grad.snn", src, common::train_opts())
}

fn flat(v: &Value) -> Vec<f32> {
    match v {
        Value::Array(a) => a.iter().flat_map(flat).collect(),
        Value::Number(n) => vec![n.as_f64().unwrap() as f32],
        _ => panic!("not a tensor"),
    }
}

/// Deterministic values in `[-scale, scale)`.
fn pattern(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// The loss gradient buffer's length for `(t, batch)`.
fn loss_grad_len(s: &snn_runtime::Session, t: usize, b: usize) -> usize {
    let p = s.plan();
    let d = &p.buffers[p.train.as_ref().unwrap().loss.grad];
    match d.extent {
        Extent::Seq => t * b * d.features,
        _ => b * d.features,
    }
}

// ------------------------------------------------------------------ SpikingJelly

/// PSN, masked PSN (k = 2, lambda 1 and 0.5) and sliding PSN (k = 3): the weight and bias
/// gradients of `L = sum spike * grad_output` (ATan surrogate, alpha 2) against
/// SpikingJelly's autograd. The loss `first_spike(s)` reads the spikes, and
/// `Session::backward` takes `grad_output` as its gradient.
#[test]
fn psn_family_gradients_match_spikingjelly() {
    let v: Value = serde_json::from_str(
        &std::fs::read_to_string(common::root().join("tests/vectors/psn_spikingjelly.json"))
            .unwrap(),
    )
    .unwrap();
    let (t, n) = (
        v["T"].as_u64().unwrap() as usize,
        v["N"].as_u64().unwrap() as usize,
    );
    for case in v["cases"].as_array().unwrap() {
        let kind = case["kind"].as_str().unwrap();
        let pop = match kind {
            "PSN" => "PSN(x)".to_string(),
            "SlidingPSN" => format!("SlidingPSN(x, k = {}, exp_init = false)", case["k"]),
            _ => format!(
                "MaskedPSN(x, k = {}, lambda = {:?})",
                case["k"],
                case["lambda"].as_f64().unwrap() as f32
            ),
        };
        let src = format!(
            "model ref {{\n  T = {t}\n  batch = 1\n  input x: [T, {n}]\n  s = {pop}\n  output spikes(s)\n  train {{ loss = first_spike(s) }}\n}}\n"
        );
        let mut s = load_src(&src);
        s.set_weight("s.weight", &flat(&case["weight"])).unwrap();
        s.set_weight("s.bias", &flat(&case["bias"])).unwrap();
        let x = snn_runtime::Tensor {
            shape: vec![t, 1, n],
            data: flat(&case["x"]),
        };
        let out = s.run(&[x], t, 1).unwrap();
        assert_eq!(out[0].1.data, flat(&case["spike"]), "{kind}: spikes");
        s.backward(&[&flat(&case["grad_output"])], t, 1).unwrap();
        let grads = s.grads().unwrap();
        let names: Vec<String> = s.plan().weights.iter().map(|w| w.name.clone()).collect();
        for (name, want) in [("s.weight", "grad_weight"), ("s.bias", "grad_bias")] {
            let i = names.iter().position(|w| w == name).unwrap();
            let want = grad::f64s(&flat(&case[want]));
            // 1e-5 of the largest (at least 1e-6).
            let tol = Tol::larger(0.0, 1e-5, 1e-11);
            grad::assert_close(
                &format!("{kind} {name}"),
                &grads[i],
                &want,
                tol,
                "SpikingJelly",
            );
        }
    }
}

// ------------------------------------------------------------------ finite differences

/// Smooth stand-ins of the PSN family (`h = I`, no spike: the loss is smooth) and of a leaky state after
/// a sliding mix, with a dense layer before them: every weight's gradient (the dense layer's
/// through `A^T dY`, the mix's weight and bias) against central finite differences of the
/// compiled forward pass (loss: cross-entropy of the mean over time).
#[test]
fn psn_family_matches_finite_differences() {
    let neurons = "
neuron SPSN { mix full  state h = 0.0  update { h = I } }
neuron SMasked {
  const k = 2 where k >= 1
  param lambda = 0.5 where lambda >= 0 && lambda <= 1
  mix masked(k, lambda)
  state h = 0.0
  update { h = I }
}
neuron SSliding {
  const k = 3 where k >= 1
  flag exp_init = false
  mix sliding(k, exp_init)
  state h = 0.0
  update { h = I }
}
neuron SLeakySliding {
  const k = 3 where k >= 1
  flag exp_init = false
  mix sliding(k, exp_init)
  state h = 0.0
  update { h = h * 0.5 + I }
}
";
    let cases = [
        ("SPSN(d)", "h"),
        ("SMasked(d, k = 2, lambda = 0.5)", "h"),
        ("SMasked(d, k = 2, lambda = 1.0)", "h"),
        ("SSliding(d, k = 3, schedule = parallel)", "h"),
        ("SSliding(d, k = 3, schedule = sequential)", "h"),
        ("SLeakySliding(d, k = 3, schedule = parallel)", "h"),
        ("SLeakySliding(d, k = 3, schedule = sequential)", "h"),
        ("LI(d, tau = 2.0, schedule = parallel)", "v"),
    ];
    let (t, b, c) = (5usize, 3usize, 3usize);
    for (pop, state) in cases {
        let src = format!(
            "{neurons}\nmodel fd {{\n  T = {t}\n  batch = {b}\n  seed = 7\n  input xs: [T, 4]\n  d = dense(xs, {c}, init_gain = 2.0)\n  s = {pop}\n  output trace(s.{state})\n  train {{ loss = cross_entropy(mean(s.{state})) }}\n}}\n"
        );
        let mut s = load_src(&src);
        // Random mix weights (not the exp_init / constant ones).
        for w in s.plan().weights.clone() {
            if w.name.starts_with("s.") {
                let n = w.shape.iter().product();
                s.set_weight(&w.name, &pattern(n, 3, 0.6)).unwrap();
            }
        }
        let x = snn_runtime::Tensor {
            shape: vec![t, b, 4],
            data: pattern(t * b * 4, 11, 1.0),
        };
        let labels = [0usize, 2, 1];
        let loss_of = |s: &mut snn_runtime::Session| -> (f64, Vec<f32>) {
            let out = s.run(std::slice::from_ref(&x), t, b).unwrap();
            let tr = &out[0].1.data;
            let logits: Vec<f64> = (0..b * c)
                .map(|k| (0..t).map(|st| tr[st * b * c + k] as f64).sum::<f64>() / t as f64)
                .collect();
            let (l, g) = grad::cross_entropy(&logits, &labels, c);
            let gt = (0..t * b * c)
                .map(|i| (g[i % (b * c)] / t as f64) as f32)
                .collect();
            (l, gt)
        };
        let (_, g) = loss_of(&mut s);
        s.backward(&[&g], t, b).unwrap();
        let grads = s.grads().unwrap();
        let tol = Tol::sum(3e-3, 0.0, 5e-5);
        let what = format!("{pop}: ");
        let checked = grad::check_weights(&mut s, &grads, &[2e-3], tol, &what, |s| loss_of(s).0);
        assert!(
            checked.len() >= 15,
            "{pop}: {} weights checked",
            checked.len()
        );
    }
}

// ------------------------------------------------------------------ parallel = sequential

/// For every resetless model, `schedule = parallel` and `schedule = sequential` give the
/// same weight gradients (1e-5 relative to the largest), with the same weights and the same
/// loss gradient: LIF and IF without reset, Leaky without reset, an LI readout, a CUBA-style
/// two-state filter, a sliding PSN, and a leaky state after a sliding mix.
#[test]
fn parallel_and_sequential_gradients_agree() {
    let neurons = "
neuron Filter2 {
  param a = 0.8
  param b = 0.6
  state i = 0.0
  state v = 0.0
  update {
    i = i * a + I
    v = v * b + i * 0.5
  }
  spike v >= 0.5
}
neuron LeakySliding {
  const k = 3 where k >= 1
  flag exp_init = false
  mix sliding(k, exp_init)
  state h = 0.0
  update { h = h * 0.5 + I }
  spike h >= 0.2
}
";
    let cases = [
        ("LIF(d, tau = 2.0, reset = none", "counts(s)"),
        ("IF(d, reset = none", "counts(s)"),
        ("Leaky(d, beta = 0.9, reset_mechanism = none", "counts(s)"),
        ("LI(d, tau = 4.0", "max(s.v)"),
        ("Filter2(d", "counts(s)"),
        ("SlidingPSN(d, k = 3", "counts(s)"),
        ("LeakySliding(d, k = 3", "counts(s)"),
    ];
    let (t, b, f) = (12usize, 3usize, 6usize);
    for (pop, loss) in cases {
        let out = if loss.starts_with("max") {
            "trace(s.v)"
        } else {
            "counts(s)"
        };
        let mut grads = Vec::new();
        for sched in ["parallel", "sequential"] {
            let src = format!(
                "{neurons}\nmodel eq {{\n  T = {t}\n  batch = {b}\n  seed = 3\n  input xs: [T, 5]\n  d = dense(xs, {f}, init_gain = 3.0)\n  s = {pop}, schedule = {sched})\n  output {out}\n  train {{ loss = cross_entropy({loss}) }}\n}}\n"
            );
            let mut s = load_src(&src);
            let x = snn_runtime::Tensor {
                shape: vec![t, b, 5],
                data: pattern(t * b * 5, 5, 1.0),
            };
            s.run(&[x], t, b).unwrap();
            let g = pattern(loss_grad_len(&s, t, b), 9, 1.0);
            s.backward(&[&g], t, b).unwrap();
            grads.push(s.grads().unwrap());
        }
        let (p, q) = (&grads[0], &grads[1]);
        assert_eq!(p.len(), q.len(), "{pop}");
        for (wi, (a, c)) in p.iter().zip(q).enumerate() {
            let scale = grad::max_abs_f32(a).max(grad::max_abs_f32(c));
            assert!(scale > 0.0, "{pop}: weight {wi} has no gradient");
            let what = format!("{pop}: weight {wi} (parallel; scale {scale})");
            let tol = Tol::sum(0.0, 1e-5, 0.0);
            grad::assert_close_at(&what, a, &grad::f64s(c), scale, tol, "sequential");
        }
    }
}
