//! Gradients of the compiled backward pass: against SpikingJelly's BPTT reference
//! (tests/vectors/mlp_4_8_3_spikingjelly.json) and against central finite differences.

mod common;

use serde_json::Value;
use snnc::{Compiler, Options};

fn train_opts() -> Options {
    Options {
        train: true,
        ..Options::default()
    }
}

fn flat(v: &Value) -> Vec<f32> {
    match v {
        Value::Array(a) => a.iter().flat_map(flat).collect(),
        Value::Number(n) => vec![n.as_f64().unwrap() as f32],
        _ => panic!("not a tensor"),
    }
}

/// torch `cross_entropy(logits, labels)` (mean over the batch) and its gradient.
fn cross_entropy(logits: &[f32], labels: &[usize], c: usize) -> (f64, Vec<f32>) {
    let b = labels.len();
    let mut loss = 0.0;
    let mut g = vec![0.0f32; logits.len()];
    for (i, &y) in labels.iter().enumerate() {
        let row: Vec<f64> = logits[i * c..(i + 1) * c]
            .iter()
            .map(|&v| v as f64)
            .collect();
        let mx = row.iter().cloned().fold(f64::MIN, f64::max);
        let z: f64 = row.iter().map(|v| (v - mx).exp()).sum();
        loss += -(row[y] - mx - z.ln());
        for j in 0..c {
            let p = (row[j] - mx).exp() / z;
            g[i * c + j] = ((p - if j == y { 1.0 } else { 0.0 }) / b as f64) as f32;
        }
    }
    (loss / b as f64, g)
}

fn load(path: &str) -> snn_runtime::Session {
    let mut c = Compiler::new(train_opts());
    let parsed = c.parse_file(&common::root().join(path)).unwrap();
    let program = c
        .compile(&parsed)
        .unwrap_or_else(|d| panic!("{}", d.render(&c.sources, false)));
    snnc::session::load(&program, Some(&common::cache_dir()))
        .unwrap_or_else(|d| panic!("{}", d.render(&c.sources, false)))
        .session
}

#[test]
fn mlp_4_8_3_matches_spikingjelly_bptt() {
    let v: Value = serde_json::from_str(
        &std::fs::read_to_string(common::root().join("tests/vectors/mlp_4_8_3_spikingjelly.json"))
            .unwrap(),
    )
    .unwrap();
    let mut s = load("tests/in/train/mlp_4_8_3.snn");
    for (name, key) in [
        ("h1.weight", "W1"),
        ("h1.bias", "b1"),
        ("h2.weight", "W2"),
        ("h2.bias", "b2"),
    ] {
        s.set_weight(name, &flat(&v[key])).unwrap();
    }
    let x = snn_runtime::Tensor {
        shape: vec![5, 4],
        data: flat(&v["inputs"]),
    };
    let labels: Vec<usize> = flat(&v["labels"]).iter().map(|&l| l as usize).collect();
    let out = s.run(&[x], 20, 5).unwrap();
    let counts = &out.iter().find(|(o, _)| o.name == "s2.counts").unwrap().1;
    assert_eq!(counts.data, flat(&v["counts"]), "forward spike counts");
    let (loss, g) = cross_entropy(&counts.data, &labels, 3);
    let want_loss = v["loss"].as_f64().unwrap();
    assert!(
        (loss - want_loss).abs() < 1e-6,
        "loss {loss} vs {want_loss}"
    );
    s.backward(&[&g], 20, 5).unwrap();
    let grads = s.grads().unwrap();
    for (i, w) in s.plan().weights.clone().iter().enumerate() {
        let key = match w.name.as_str() {
            "h1.weight" => "W1",
            "h1.bias" => "b1",
            "h2.weight" => "W2",
            _ => "b2",
        };
        let want = flat(&v["grads"][key]);
        let scale = want.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        for (j, (a, b)) in grads[i].iter().zip(&want).enumerate() {
            assert!(
                (a - b).abs() <= 1e-4 * b.abs().max(1e-2 * scale),
                "{}[{j}]: {a} vs SpikingJelly {b}",
                w.name
            );
        }
        println!("{}: {:?}", w.name, &grads[i][..4.min(grads[i].len())]);
    }
}

/// Every derivative rule (tanh, sigmoid, exp, sqrt, abs, pow, log, min, max, clamp, select,
/// division, two coupled states) against central finite differences of the compiled
/// forward pass.
#[test]
fn smooth_model_matches_finite_differences() {
    let mut s = load("tests/in/train/smooth_fd.snn");
    let (t, b, c) = (5, 3, 3);
    let x = snn_runtime::Tensor {
        shape: vec![t, b, 4],
        data: (0..t * b * 4)
            .map(|i| ((i * 37 % 23) as f32 / 23.0 - 0.5) * 1.5)
            .collect(),
    };
    let labels = [0usize, 2, 1];
    // loss = CE(mean over time of s.y)
    let loss_of = |s: &mut snn_runtime::Session| -> (f64, Vec<f32>) {
        let out = s.run(std::slice::from_ref(&x), t, b).unwrap();
        let tr = &out[0].1.data;
        let mut logits = vec![0.0f32; b * c];
        for k in 0..b * c {
            logits[k] = (0..t).map(|st| tr[st * b * c + k]).sum::<f32>() / t as f32;
        }
        let (l, g) = cross_entropy(&logits, &labels, c);
        let mut gt = vec![0.0f32; t * b * c];
        for st in 0..t {
            for k in 0..b * c {
                gt[st * b * c + k] = g[k] / t as f32;
            }
        }
        (l, gt)
    };
    let (_, g) = loss_of(&mut s);
    s.backward(&[&g], t, b).unwrap();
    let grads = s.grads().unwrap();
    let mut checked = 0;
    for (wi, decl) in s.plan().weights.clone().iter().enumerate() {
        let base = s.weight(&decl.name).unwrap().to_vec();
        for j in 0..base.len() {
            // The forward pass is f32: a smaller step drowns in rounding, a larger one
            // crosses the kinks of min/max/abs/clamp/select.
            let h = 3e-3f32;
            let mut w = base.clone();
            w[j] = base[j] + h;
            s.set_weight(&decl.name, &w).unwrap();
            let (lp, _) = loss_of(&mut s);
            w[j] = base[j] - h;
            s.set_weight(&decl.name, &w).unwrap();
            let (lm, _) = loss_of(&mut s);
            s.set_weight(&decl.name, &base).unwrap();
            let fd = (lp - lm) / (2.0 * h as f64);
            let an = grads[wi][j] as f64;
            assert!(
                (an - fd).abs() <= 2e-3 * fd.abs() + 5e-5,
                "{}[{j}]: backward {an} vs finite difference {fd}",
                decl.name
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 3 * 4 + 3);
}

/// BPSTA's spatial (dS/du = 1/u for a neuron that fired, 0 otherwise) and temporal (the
/// error re-enters a fired neuron through its spike with weight 0.2) adjustments, against
/// the recursion of ../shared/SEEDS.md computed by hand for one neuron over 4 steps.
#[test]
fn bpsta_adjustments_match_the_hand_computed_recursion() {
    let mut s = load("tests/in/train/bpsta.snn");
    s.set_weight("h.weight", &[1.0]).unwrap();
    let xs = [0.3f32, 0.4, 0.2, 0.6];
    let x = snn_runtime::Tensor {
        shape: vec![4, 1, 1],
        data: xs.to_vec(),
    };
    let out = s.run(&[x], 4, 1).unwrap();
    // u = 0.3, 0.67 (fires), 0.2, 0.78 (fires)
    assert_eq!(out[0].1.data, vec![2.0]);
    // dL/dcounts = 1: every step's spike gets error 1.
    s.backward(&[&[1.0]], 4, 1).unwrap();
    let g = s.grads().unwrap()[0][0] as f64;
    let u = [0.3f64, 0.67, 0.2, 0.78];
    let fired = [false, true, false, true];
    let mut g_u_next = 0.0;
    let mut g_x = [0.0f64; 4];
    for t in (0..4).rev() {
        let g_tilde = 0.9 * g_u_next; // g_ũ[t] = d * g_u[t+1]
        let g_s = 1.0 + 0.2 * g_tilde;
        let g_u = if fired[t] { g_s / u[t] } else { g_tilde };
        g_x[t] = g_u;
        g_u_next = g_u;
    }
    let want: f64 = g_x.iter().zip(xs).map(|(g, x)| g * x as f64).sum();
    assert!(
        (g - want).abs() < 1e-5 * want.abs(),
        "dW = {g}, hand-computed {want}"
    );
}
