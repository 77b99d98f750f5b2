//! Gradients of the compiled backward pass: against SpikingJelly's BPTT reference
//! (tests/vectors/mlp_4_8_3_spikingjelly.json) and against central finite differences.

mod common;

use serde_json::Value;
use snnc::{Compiler, Options};

use common::grad::{self, Tol};
use common::train_opts;

fn flat(v: &Value) -> Vec<f32> {
    match v {
        Value::Array(a) => a.iter().flat_map(flat).collect(),
        Value::Number(n) => vec![n.as_f64().unwrap() as f32],
        _ => panic!("not a tensor"),
    }
}

fn load(path: &str) -> snn_runtime::Session {
    common::session_from_file(path, train_opts())
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
    let (loss, g) = grad::cross_entropy_f32(&counts.data, &labels, 3);
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
        let want = grad::f64s(&flat(&v["grads"][key]));
        grad::assert_close(&w.name, &grads[i], &want, grad::REFERENCE, "SpikingJelly");
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
        let (l, g) = grad::cross_entropy_f32(&logits, &labels, c);
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
    // The forward pass is f32: a smaller step drowns in rounding, a larger one crosses the
    // kinks of min/max/abs/clamp/select.
    let checked = grad::check_weights(
        &mut s,
        &grads,
        &[3e-3],
        Tol::sum(2e-3, 0.0, 5e-5),
        "",
        |s| loss_of(s).0,
    );
    assert_eq!(checked.len(), 3 * 4 + 3);
}

/// A neuron update of 40 nested quotients and powers of the membrane and the input current
/// (about 200 nodes): the backward step differentiates it through a forward temporary per
/// interior node (`ir::adjoint`, above its size threshold) instead of as one tree; the
/// weight and learned-parameter gradients against central finite differences.
#[test]
fn a_long_nested_update_matches_finite_differences() {
    // One expression, nested 40 levels: divisions and powers of x (the membrane) and I.
    let mut e = "I".to_string();
    for k in 0..40 {
        e = if k % 2 == 0 {
            format!("(({e} + x) / (1.5 + I * I * a))")
        } else {
            format!("((0.6 + x * x * 0.1 + {e} * 0.3) ^ 1.5)")
        };
    }
    let src = format!(
        "neuron Deep {{\n  param a = learn(0.7)\n  state x = 0.1\n  update {{\n    x = 0.5 * x + 0.3 * {e}\n  }}\n}}\nmodel deep_fd {{\n  T = 4\n  batch = 3\n  input xs: [T, 4]\n  h = dense(xs, 3)\n  s = Deep(h)\n  output trace(s.x)\n  train {{ loss = cross_entropy(mean(s.x)) }}\n}}\n"
    );
    // The new path is the one under test: the update's temporaries are in the backward step.
    let mut c = Compiler::new(train_opts());
    let parsed = c.parse_str("deep_fd.snn", &src).unwrap();
    let dump = c.dump_after(&parsed, "autodiff").unwrap();
    assert!(dump.contains("x.1.t1 = "), "{dump}");
    let mut s = load_src(&src, true);
    let (t, b, c) = (4, 3, 3);
    let x = snn_runtime::Tensor {
        shape: vec![t, b, 4],
        data: (0..t * b * 4)
            .map(|i| ((i * 37 % 23) as f32 / 23.0 - 0.5) * 1.5)
            .collect(),
    };
    let labels = [0usize, 2, 1];
    let loss_of = |s: &mut snn_runtime::Session| -> (f64, Vec<f32>) {
        let out = s.run(std::slice::from_ref(&x), t, b).unwrap();
        let tr = &out[0].1.data;
        let logits: Vec<f32> = (0..b * c)
            .map(|k| (0..t).map(|st| tr[st * b * c + k]).sum::<f32>() / t as f32)
            .collect();
        let (l, g) = grad::cross_entropy_f32(&logits, &labels, c);
        (
            l,
            (0..t * b * c).map(|i| g[i % (b * c)] / t as f32).collect(),
        )
    };
    let (_, g) = loss_of(&mut s);
    s.backward(&[&g], t, b).unwrap();
    let grads = s.grads().unwrap();
    let checked = grad::check_weights(
        &mut s,
        &grads,
        &[3e-3, 1e-2],
        Tol::sum(2e-3, 0.0, 5e-5),
        "deep_fd",
        |s| loss_of(s).0,
    );
    // dense weight (3 x 4), bias (3), the learned `a`.
    assert_eq!(checked.len(), 3 * 4 + 3 + 1);
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

// ------------------------------------------------------------ learnable neuron parameters

fn load_src(src: &str, train: bool) -> snn_runtime::Session {
    let opts = Options {
        train,
        ..Options::default()
    };
    common::session_from_str("learn.snn", src, opts)
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// A smooth stand-in for PLIF (no spike, so the loss is differentiable everywhere): the
/// leak `sigmoid(w)` with a learned shared `w`, and a learned gain per neuron. The compiled
/// gradients of both, of the dense layer before them, against central finite differences of
/// an f64 re-implementation of the forward pass (which must agree with the compiled forward
/// pass first): 1e-4 relative.
#[test]
fn learned_parameters_match_finite_differences_in_f64() {
    let src = "neuron SmoothPLIF {\n  param w = learn(0.3)\n  param g = 1.0\n  state v = 0.0\n  state y = 0.0\n  update {\n    v = v + (I - v) * sigmoid(w)\n    y = tanh(g * v)\n  }\n}\nmodel smooth_plif {\n  T = 6\n  batch = 3\n  input x: [T, 4]\n  h = dense(x, 3, init_gain = 2.0)\n  s = SmoothPLIF(h, g = learn(1.5, per_neuron = true))\n  output trace(s.y)\n  train { loss = cross_entropy(mean(s.y)) }\n}\n";
    let mut s = load_src(src, true);
    let names: Vec<String> = s.plan().weights.iter().map(|w| w.name.clone()).collect();
    assert_eq!(names, ["h.weight", "h.bias", "s.w", "s.g"]);
    s.set_weight("s.w", &[0.4]).unwrap();
    s.set_weight("s.g", &[1.5, 0.7, -1.1]).unwrap();
    let (t, b, n, k) = (6, 3, 3, 4);
    let x: Vec<f32> = (0..t * b * k)
        .map(|i| ((i * 29 % 17) as f32 / 17.0 - 0.4) * 2.0)
        .collect();
    let labels = [2usize, 0, 1];

    // The reference: everything in f64. p = [W (n*k), bias (n), w, g (n)].
    let forward = |p: &[f64]| -> (f64, Vec<f64>) {
        let (wm, bias, w, g) = (
            &p[..n * k],
            &p[n * k..n * k + n],
            p[n * k + n],
            &p[n * k + n + 1..],
        );
        let mut v = vec![0.0; b * n];
        let mut ys = vec![0.0; t * b * n];
        let mut mean = vec![0.0; b * n];
        for st in 0..t {
            for bi in 0..b {
                for j in 0..n {
                    let mut cur = bias[j];
                    for q in 0..k {
                        cur += wm[j * k + q] * x[(st * b + bi) * k + q] as f64;
                    }
                    let vi = &mut v[bi * n + j];
                    *vi += (cur - *vi) * sigmoid(w);
                    let y = (g[j] * *vi).tanh();
                    ys[(st * b + bi) * n + j] = y;
                    mean[bi * n + j] += y / t as f64;
                }
            }
        }
        let mut loss = 0.0;
        for (bi, &lab) in labels.iter().enumerate() {
            let row = &mean[bi * n..(bi + 1) * n];
            let mx = row.iter().cloned().fold(f64::MIN, f64::max);
            let z: f64 = row.iter().map(|r| (r - mx).exp()).sum();
            loss -= row[lab] - mx - z.ln();
        }
        (loss / b as f64, ys)
    };
    let mut p: Vec<f64> = Vec::new();
    for name in &names {
        p.extend(s.weight(name).unwrap().iter().map(|&v| v as f64));
    }

    let xt = snn_runtime::Tensor {
        shape: vec![t, b, k],
        data: x.clone(),
    };
    let out = s.run(std::slice::from_ref(&xt), t, b).unwrap();
    let (_, ys) = forward(&p);
    for (a, r) in out[0].1.data.iter().zip(&ys) {
        assert!(
            (*a as f64 - r).abs() < 1e-5,
            "forward: compiled {a} vs f64 {r}"
        );
    }
    // dL/dy[t] = dL/dmean / T
    let mut mean = vec![0.0f32; b * n];
    for row in out[0].1.data.chunks(b * n) {
        for (m, y) in mean.iter_mut().zip(row) {
            *m += y / t as f32;
        }
    }
    let (_, g) = grad::cross_entropy_f32(&mean, &labels, n);
    let gy: Vec<f32> = (0..t * b * n).map(|i| g[i % (b * n)] / t as f32).collect();
    s.backward(&[&gy], t, b).unwrap();
    let grads: Vec<f32> = s.grads().unwrap().concat();

    grad::check_f64_params(
        &grads,
        &p,
        1e-5,
        Tol::sum(1e-4, 0.0, 1e-7),
        |i| {
            let kind = if i < n * k + n { "dense" } else { "learned" };
            format!("parameter {i} ({kind})")
        },
        |q| forward(q).0,
    );
    // The learned ones are not negligible.
    assert!(
        grads[n * k + n].abs() > 1e-3,
        "dL/dw = {}",
        grads[n * k + n]
    );
}

/// tests/in/train/plif.snn (PLIF with a learned shared w; LIF with a learned shared tau and
/// a learned threshold per neuron; ATan surrogate; cross-entropy on spike counts) against a
/// BPTT written out by hand in f64 (SpikingJelly's recursion, `detach_reset = False`):
/// every gradient to 1e-4 relative.
#[test]
fn plif_network_matches_a_hand_written_bptt() {
    let mut s = load("tests/in/train/plif.snn");
    let (t, b, ni, n1, n2) = (8, 4, 4, 6, 3);
    // Weights that make both layers fire; thresholds and tau away from their defaults.
    let w1: Vec<f32> = (0..n1 * ni)
        .map(|i| ((i * 7 % 11) as f32 / 11.0 - 0.3) * 2.5)
        .collect();
    let b1: Vec<f32> = (0..n1).map(|i| 0.1 * i as f32 - 0.2).collect();
    let w2: Vec<f32> = (0..n2 * n1)
        .map(|i| ((i * 5 % 13) as f32 / 13.0 - 0.35) * 2.0)
        .collect();
    let b2: Vec<f32> = vec![0.3, 0.2, 0.45];
    s.set_weight("h1.weight", &w1).unwrap();
    s.set_weight("h1.bias", &b1).unwrap();
    s.set_weight("h2.weight", &w2).unwrap();
    s.set_weight("h2.bias", &b2).unwrap();
    s.set_weight("s1.w", &[0.2]).unwrap();
    s.set_weight("s2.tau", &[1.7]).unwrap();
    s.set_weight("s2.v_threshold", &[0.6, 0.8, 0.7]).unwrap();
    let x: Vec<f32> = (0..b * ni)
        .map(|i| (i * 3 % 7) as f32 / 7.0 + 0.2)
        .collect();
    let labels = [0usize, 2, 1, 2];
    let out = s
        .run(
            &[snn_runtime::Tensor {
                shape: vec![b, ni],
                data: x.clone(),
            }],
            t,
            b,
        )
        .unwrap();
    let counts = out[0].1.data.clone();
    let (_, gc) = grad::cross_entropy_f32(&counts, &labels, n2);
    s.backward(&[&gc], t, b).unwrap();
    let grads = s.grads().unwrap();
    let names: Vec<String> = s.plan().weights.iter().map(|w| w.name.clone()).collect();
    let grad = |name: &str| grads[names.iter().position(|n| n == name).unwrap()].clone();

    // The reference. Forward in f64, keeping what the backward reads.
    let f = |v: &[f32]| v.iter().map(|&a| a as f64).collect::<Vec<f64>>();
    let (w1, b1, w2, b2, x) = (f(&w1), f(&b1), f(&w2), f(&b2), f(&x));
    let k = sigmoid(0.2f32 as f64);
    let tau = 1.7f32 as f64;
    let thr = f(&[0.6, 0.8, 0.7]);
    let sg = |u: f64| 1.0 / (1.0 + (std::f64::consts::PI * u).powi(2)); // ATan, alpha = 2
    let mut margin = f64::MAX; // how far any membrane lands from its threshold
    let mut h1 = vec![0.0; b * n1];
    for bi in 0..b {
        for j in 0..n1 {
            h1[bi * n1 + j] = b1[j]
                + (0..ni)
                    .map(|q| w1[j * ni + q] * x[bi * ni + q])
                    .sum::<f64>();
        }
    }
    let (mut v0a, mut v1a, mut s1) = (
        vec![0.0; t * b * n1],
        vec![0.0; t * b * n1],
        vec![0.0; t * b * n1],
    );
    let mut v = vec![0.0; b * n1];
    for st in 0..t {
        for q in 0..b * n1 {
            let i = st * b * n1 + q;
            v0a[i] = v[q];
            let v1 = v[q] + (h1[q] - v[q]) * k;
            margin = margin.min((v1 - 1.0).abs());
            v1a[i] = v1;
            s1[i] = if v1 >= 1.0 { 1.0 } else { 0.0 };
            v[q] = if s1[i] == 1.0 { 0.0 } else { v1 };
        }
    }
    let mut h2 = vec![0.0; t * b * n2];
    for r in 0..t * b {
        for j in 0..n2 {
            h2[r * n2 + j] = b2[j]
                + (0..n1)
                    .map(|q| w2[j * n1 + q] * s1[r * n1 + q])
                    .sum::<f64>();
        }
    }
    let (mut v0b, mut v1b, mut s2) = (
        vec![0.0; t * b * n2],
        vec![0.0; t * b * n2],
        vec![0.0; t * b * n2],
    );
    let mut v = vec![0.0; b * n2];
    let mut cnt = vec![0.0; b * n2];
    for st in 0..t {
        for q in 0..b * n2 {
            let i = st * b * n2 + q;
            v0b[i] = v[q];
            let v1 = v[q] + (h2[i] - v[q]) / tau;
            margin = margin.min((v1 - thr[q % n2]).abs());
            v1b[i] = v1;
            s2[i] = if v1 >= thr[q % n2] { 1.0 } else { 0.0 };
            cnt[q] += s2[i];
            v[q] = if s2[i] == 1.0 { 0.0 } else { v1 };
        }
    }
    assert_eq!(f(&counts), cnt, "forward spike counts");
    assert!(
        margin > 1e-3,
        "a membrane lands {margin} from its threshold"
    );
    assert!(cnt.iter().sum::<f64>() > 0.0 && s1.iter().sum::<f64>() > 0.0);

    // Backward of s2: reverse time, per neuron.
    let (mut g_tau, mut g_thr) = (0.0, vec![0.0; n2]);
    let mut g_h2 = vec![0.0; t * b * n2];
    let mut gv = vec![0.0; b * n2];
    for st in (0..t).rev() {
        for q in 0..b * n2 {
            let i = st * b * n2 + q;
            let (v0, v1, sp) = (v0b[i], v1b[i], s2[i]);
            let g_s = gc[q] as f64 + gv[q] * (0.0 - v1);
            let sgv = sg(v1 - thr[q % n2]);
            let g_v1 = if sp == 1.0 { 0.0 } else { gv[q] } + g_s * sgv;
            g_h2[i] = g_v1 / tau;
            g_tau += -g_v1 * (h2[i] - v0) / (tau * tau);
            g_thr[q % n2] += -g_s * sgv;
            gv[q] = g_v1 * (1.0 - 1.0 / tau);
        }
    }
    // Dense h2: dW2 = sum dy^T s1, db2 = sum dy, ds1 = dy W2.
    let (mut g_w2, mut g_b2, mut g_s1) = (vec![0.0; n2 * n1], vec![0.0; n2], vec![0.0; t * b * n1]);
    for r in 0..t * b {
        for j in 0..n2 {
            let dy = g_h2[r * n2 + j];
            g_b2[j] += dy;
            for q in 0..n1 {
                g_w2[j * n1 + q] += dy * s1[r * n1 + q];
                g_s1[r * n1 + q] += dy * w2[j * n1 + q];
            }
        }
    }
    // Backward of s1 (PLIF): the current is static, so its gradient sums over time.
    let mut g_w = 0.0;
    let mut g_h1 = vec![0.0; b * n1];
    let mut gv = vec![0.0; b * n1];
    for st in (0..t).rev() {
        for q in 0..b * n1 {
            let i = st * b * n1 + q;
            let (v0, v1, sp) = (v0a[i], v1a[i], s1[i]);
            let g_s = g_s1[i] + gv[q] * (0.0 - v1);
            let g_v1 = if sp == 1.0 { 0.0 } else { gv[q] } + g_s * sg(v1 - 1.0);
            g_h1[q] += g_v1 * k;
            g_w += g_v1 * (h1[q] - v0) * k * (1.0 - k);
            gv[q] = g_v1 * (1.0 - k);
        }
    }
    let (mut g_w1, mut g_b1) = (vec![0.0; n1 * ni], vec![0.0; n1]);
    for bi in 0..b {
        for j in 0..n1 {
            let dy = g_h1[bi * n1 + j];
            g_b1[j] += dy;
            for q in 0..ni {
                g_w1[j * ni + q] += dy * x[bi * ni + q];
            }
        }
    }

    let want: [(&str, Vec<f64>); 7] = [
        ("h1.weight", g_w1),
        ("h1.bias", g_b1),
        ("s1.w", vec![g_w]),
        ("h2.weight", g_w2),
        ("h2.bias", g_b2),
        ("s2.tau", vec![g_tau]),
        ("s2.v_threshold", g_thr),
    ];
    for (name, want) in want {
        let got = grad(name);
        assert!(
            grad::max_abs(&want) > 1e-4,
            "{name}: the reference gradient vanishes"
        );
        grad::assert_close(name, &got, &want, grad::REFERENCE, "hand-written BPTT");
        println!("{name}: {:?}", &got[..got.len().min(3)]);
    }
}

/// SpikingJelly's ParametricLIFNode (decay_input, hard reset to 0, threshold 1) on one
/// neuron and four steps, computed by hand: init_tau = 2 gives w = -ln(2 - 1) = 0, so
/// 1/tau = sigmoid(0) = 0.5, and v = v + (x - v) / 2. With dL/dcount = 1 and the ATan
/// surrogate, the BPTT recursion gives dL/dw = 0.456416... (reference values in comments).
#[test]
fn plif_follows_spikingjelly_parametric_lif() {
    let src = "model plif1 {\n  T = 4\n  batch = 1\n  input x: [T, 1]\n  s = PLIF(x)\n  output trace(s.v)\n  train {\n    loss = cross_entropy(counts(s))\n    surrogate = atan(alpha = 2.0)\n  }\n}\n";
    let mut s = load_src(src, true);
    assert_eq!(s.weight("s.w").unwrap(), &[0.0]);
    let xs = [1.5f32, 0.6, 1.4, 0.2];
    let out = s
        .run(
            &[snn_runtime::Tensor {
                shape: vec![4, 1, 1],
                data: xs.to_vec(),
            }],
            4,
            1,
        )
        .unwrap();
    // v after each step: 0.75, 0.675, 1.0375 fires and resets to 0, then 0.1.
    let v = &out[0].1.data;
    for (a, b) in v.iter().zip([0.75f32, 0.675, 0.0, 0.1]) {
        assert!((a - b).abs() < 1e-6, "v {v:?}");
    }
    assert_eq!(out[1].0.name, "s.counts");
    assert_eq!(out[1].1.data, vec![1.0]);
    s.backward(&[&[1.0]], 4, 1).unwrap();
    let g = s.grads().unwrap()[0][0] as f64;
    // t=3: v0=0, v1=0.1, no spike: g_S = 1, sg = 1/(1 + (pi*(0.1-1))^2) = 0.11120...,
    //      g_v1 = 0.11120, dw += g_v1 * (0.2 - 0) * 0.25; g_v0 = g_v1 / 2.
    // t=2: v1=1.0375 fired: g_S = 1 + g_v.out * (0 - 1.0375), g_v1 = g_S * sg(0.0375), ...
    let (k, thr) = (0.5f64, 1.0f64);
    let sg = |u: f64| 1.0 / (1.0 + (std::f64::consts::PI * u).powi(2));
    let (v0, v1, fired) = (
        [0.0, 0.75, 0.675, 0.0],
        [0.75, 0.675, 1.0375, 0.1],
        [false, false, true, false],
    );
    let (mut gv, mut want) = (0.0f64, 0.0f64);
    for t in (0..4).rev() {
        let g_s = 1.0 + gv * (0.0 - v1[t]);
        let g_v1 = if fired[t] { 0.0 } else { gv } + g_s * sg(v1[t] - thr);
        want += g_v1 * (xs[t] as f64 - v0[t]) * k * (1.0 - k);
        gv = g_v1 * (1.0 - k);
    }
    assert!((want - 0.456_416_449_599).abs() < 1e-9, "{want}");
    assert!(
        (g - want).abs() < 1e-5 * want,
        "dL/dw = {g}, by hand {want}"
    );
    // init_tau = 4: w = -ln(3), in f64 and rounded once (as torch.as_tensor does).
    let s4 = load_src(&src.replace("PLIF(x)", "PLIF(x, init_tau = 4.0)"), false);
    assert_eq!(s4.weight("s.w").unwrap(), &[-(3.0f64.ln()) as f32]);
}

/// A learned parameter is a weight in an inference plan too: a file saved while training
/// loads into the inference session, and the forward passes agree.
#[test]
fn learned_parameters_are_weights_in_inference_plans() {
    let mut tr = load("tests/in/train/plif.snn");
    tr.set_weight("s1.w", &[0.7]).unwrap();
    tr.set_weight("s2.tau", &[2.5]).unwrap();
    tr.set_weight("s2.v_threshold", &[0.5, 0.9, 0.6]).unwrap();
    let dir = common::root().join("target").join("learn-weights-test");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("plif.safetensors");
    tr.save_weights(&path).unwrap();

    let program = common::compile_file(
        &common::root().join("tests/in/train/plif.snn"),
        Options::default(),
    )
    .unwrap();
    assert!(program.plan.train.is_none());
    let mut inf = snnc::session::load(&program, Some(&common::cache_dir()))
        .unwrap()
        .session;
    assert_eq!(inf.weight("s1.w").unwrap(), &[-(2.0f64.ln()) as f32]);
    inf.load_weights(&path).unwrap();
    assert_eq!(inf.weight("s1.w").unwrap(), &[0.7]);
    assert_eq!(inf.weight("s2.v_threshold").unwrap(), &[0.5, 0.9, 0.6]);
    assert!(inf.param("s1.w").is_none() && inf.param("s1.init_tau").is_none());
    let e = inf.set_param("s2.tau", 3.0).unwrap_err().to_string();
    assert!(
        e.contains("`s2.tau` is a weight") && e.contains("set_weight"),
        "{e}"
    );
    // Larger dense weights, so that both layers fire.
    for name in ["h1.weight", "h1.bias", "h2.weight", "h2.bias"] {
        let w: Vec<f32> = tr.weight(name).unwrap().iter().map(|v| v * 4.0).collect();
        tr.set_weight(name, &w).unwrap();
        inf.set_weight(name, &w).unwrap();
    }
    let x = tr.random_inputs(8, 4, 5);
    let a = tr.run(&x, 8, 4).unwrap();
    let b = inf.run(&x, 8, 4).unwrap();
    assert_eq!(a[0].1.data, b[0].1.data);
    assert!(a[0].1.data.iter().sum::<f32>() > 0.0);
}

/// Adam on tests/in/train/plif.snn: the loss falls and the learned time constants and
/// thresholds move.
#[test]
fn training_moves_the_learned_time_constants() {
    use snn_runtime::train::optim::Optimizer;
    let mut s = load("tests/in/train/plif.snn");
    let (t, b) = (8, 12);
    let x = s.random_inputs(t, b, 11);
    let labels: Vec<usize> = (0..b).map(|i| i % 3).collect();
    // Inputs that carry the label, so that there is something to learn.
    let mut x0 = x[0].clone();
    for (i, &l) in labels.iter().enumerate() {
        x0.data[i * 4 + l] += 1.0;
    }
    let names: Vec<String> = s.plan().weights.iter().map(|w| w.name.clone()).collect();
    let at = |n: &str| names.iter().position(|m| m == n).unwrap();
    let start: Vec<Vec<f32>> = s.weights().to_vec();
    let mut opt = Optimizer::adam((0.9, 0.999), 1e-8, 0.0);
    let mut losses = Vec::new();
    for _ in 0..60 {
        let out = s.run(std::slice::from_ref(&x0), t, b).unwrap();
        let (loss, g) = grad::cross_entropy_f32(&out[0].1.data, &labels, 3);
        losses.push(loss);
        s.backward(&[&g], t, b).unwrap();
        let grads = s.grads().unwrap();
        let mut w = s.weights().to_vec();
        opt.step(&mut w, &grads, 0.05);
        s.set_all_weights(w).unwrap();
    }
    let end = s.weights().to_vec();
    println!("loss {:.4} -> {:.4}", losses[0], losses[losses.len() - 1]);
    for n in ["s1.w", "s2.tau", "s2.v_threshold"] {
        println!("{n}: {:?} -> {:?}", start[at(n)], end[at(n)]);
        let moved = start[at(n)]
            .iter()
            .zip(&end[at(n)])
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(moved > 1e-2, "{n} did not move: {:?}", end[at(n)]);
    }
    let last: f64 = losses[losses.len() - 5..].iter().sum::<f64>() / 5.0;
    assert!(last < 0.7 * losses[0], "loss {} -> {last}", losses[0]);
}

/// `input_grads = true`: dLoss/d(input) against central finite differences, for an input
/// read by a dense layer (the transposed GEMM writes it), by a population directly (its
/// reverse-time kernel writes it), and a static `[B, F]` input (summed over the steps).
#[test]
fn input_gradients_match_finite_differences() {
    let text =
        std::fs::read_to_string(common::root().join("tests/in/train/smooth_fd.snn")).unwrap();
    let neuron = &text[..text.find("model smooth_fd").unwrap()];
    let (t, b, c) = (5, 3, 3);
    let cases = [
        (
            "input xs: [T, 4]\n  h = dense(xs, 3)\n  s = Smooth(h)",
            true,
            4,
        ),
        ("input xs: [T, 3]\n  s = Smooth(xs)", true, 3),
        (
            "input xs: [4]\n  h = dense(xs, 3)\n  s = Smooth(h)",
            false,
            4,
        ),
    ];
    for (body, seq, f) in cases {
        let src = format!(
            "{neuron}model m {{\n  T = {t}\n  batch = {b}\n  {body}\n  output trace(s.y)\n  train {{\n    loss = cross_entropy(mean(s.y))\n    input_grads = true\n  }}\n}}\n"
        );
        let mut s = load_src(&src, true);
        let shape = if seq { vec![t, b, f] } else { vec![b, f] };
        let n: usize = shape.iter().product();
        let mut x = snn_runtime::Tensor {
            shape,
            data: (0..n)
                .map(|i| ((i * 37 % 23) as f32 / 23.0 - 0.5) * 1.5)
                .collect(),
        };
        let labels = [0usize, 2, 1];
        let loss_of = |s: &mut snn_runtime::Session, x: &snn_runtime::Tensor| -> (f64, Vec<f32>) {
            let out = s.run(std::slice::from_ref(x), t, b).unwrap();
            let tr = &out[0].1.data;
            let logits: Vec<f32> = (0..b * c)
                .map(|k| (0..t).map(|st| tr[st * b * c + k]).sum::<f32>() / t as f32)
                .collect();
            let (l, g) = grad::cross_entropy_f32(&logits, &labels, c);
            (
                l,
                (0..t * b * c).map(|i| g[i % (b * c)] / t as f32).collect(),
            )
        };
        let (_, g) = loss_of(&mut s, &x);
        s.backward(&[&g], t, b).unwrap();
        let dx = s.input_grad("xs", t, b).unwrap();
        assert_eq!(dx.shape, x.shape, "{body}");
        let tol = Tol::sum(2e-3, 0.0, 5e-5);
        for j in 0..n {
            let base = x.data[j];
            let fd = grad::central_difference(base, 3e-3, |v| {
                x.data[j] = v;
                loss_of(&mut s, &x).0
            });
            x.data[j] = base;
            let an = dx.data[j] as f64;
            assert!(
                tol.holds(an, fd, 0.0),
                "{body}: d/dxs[{j}]: backward {an} vs finite difference {fd}"
            );
        }
    }
}

/// Without `input_grads`, asking for one is an error naming the fix; with it, an input that
/// only feeds a spike encoder is a diagnostic at compile time.
#[test]
fn input_gradients_need_the_setting_and_a_differentiable_path() {
    let src = "model m {\n  T = 3\n  input x: [T, 2]\n  s = LIF(dense(x, 2))\n  output counts(s)\n  train { loss = cross_entropy(counts(s)) }\n}\n";
    let mut s = load_src(src, true);
    s.run(&s.random_inputs(3, 2, 1), 3, 2).unwrap();
    let e = s.input_grad("x", 3, 2).unwrap_err().to_string();
    assert!(e.contains("input_grads = true"), "{e}");
    let enc = "model m {\n  T = 3\n  input x: [2]\n  s = LIF(dense(bernoulli(x), 2))\n  output counts(s)\n  train {\n    loss = cross_entropy(counts(s))\n    input_grads = true\n  }\n}\n";
    let mut c = Compiler::new(train_opts());
    let parsed = c.parse_str("enc.snn", enc).unwrap();
    let d = c.compile(&parsed).unwrap_err();
    assert!(
        d.message.contains("no input feeds a differentiable layer"),
        "{}",
        d.message
    );
    assert!(d.hint.unwrap().contains("encoders"));
}

// ------------------------------------------------------------------ conv2d and pooling

/// A smooth stand-in of a conv net (no spikes, so the loss is differentiable almost
/// everywhere): conv (stride 2, padding 1) -> smooth neuron -> average pooling with padding
/// -> conv with a non-square kernel -> smooth neuron -> max pooling -> dense -> smooth
/// readout, on a time-varying non-square input. Every weight and bias gradient against
/// central finite differences of the compiled forward pass.
const SMOOTH_CONV: &str = "neuron Soft {\n  state x = 0.0\n  update {\n    x = x + (tanh(I) - x) / 2.0\n  }\n}\nmodel smooth_conv {\n  T = 4\n  batch = 2\n  input xs: [T, 2, 7, 6]\n  c1 = conv2d(xs, 3, kernel = 3, stride = 2, padding = 1, init_gain = 2.0)\n  s1 = Soft(c1)\n  p1 = avgpool2d(s1, 2, stride = 1, padding = 1)\n  c2 = conv2d(p1, 2, kernel = [2, 3], padding = 1, init_gain = 2.0)\n  s2 = Soft(c2)\n  p2 = maxpool2d(s2, 2, stride = 2)\n  f = flatten(p2)\n  h = dense(f, 3, init_gain = 2.0)\n  s = Soft(h)\n  output trace(s.x)\n  train { loss = cross_entropy(mean(s.x)) }\n}\n";

#[test]
fn conv_and_pooling_match_finite_differences() {
    let mut s = load_src(SMOOTH_CONV, true);
    let (t, b, c) = (4, 2, 3);
    let x = snn_runtime::Tensor {
        shape: vec![t, b, 2, 7, 6],
        data: (0..t * b * 84)
            .map(|i| ((i * 37 % 23) as f32 / 23.0 - 0.5) * 2.0)
            .collect(),
    };
    let labels = [2usize, 0];
    let loss_of = |s: &mut snn_runtime::Session| -> (f64, Vec<f32>) {
        let out = s.run(std::slice::from_ref(&x), t, b).unwrap();
        let tr = &out[0].1.data;
        let mut logits = vec![0.0f32; b * c];
        for k in 0..b * c {
            logits[k] = (0..t).map(|st| tr[st * b * c + k]).sum::<f32>() / t as f32;
        }
        let (l, g) = grad::cross_entropy_f32(&logits, &labels, c);
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
    for (decl, g) in s.plan().weights.iter().zip(&grads) {
        assert!(grad::max_abs_f32(g) > 0.0, "{}: zero gradient", decl.name);
    }
    // A step of 1e-3 that moves some window's maximum to another cell crosses a kink of max
    // pooling: 3e-4 then (see check_weights).
    let tol = Tol::sum(2e-2, 2e-3, 2e-5);
    let checked = grad::check_weights(&mut s, &grads, &[1e-3, 3e-4], tol, "", |s| loss_of(s).0);
    let worst = checked
        .iter()
        .map(|c| (c.backward - c.fd).abs() / (c.fd.abs() + 1e-3 * c.max))
        .fold(0.0f64, f64::max);
    println!(
        "checked {} weights, worst relative error {worst:.2e}",
        checked.len()
    );
    // c1 3x2x3x3 + 3, c2 2x3x2x3 + 2, h 3x12 + 3
    assert_eq!(checked.len(), 54 + 3 + 36 + 2 + 36 + 3);
}

/// The spiking conv net of tests/in/train/conv.snn (conv -> LIF -> max pool -> conv ->
/// LIF -> average pool -> dense -> LIF) learns a tiny labelled set with Adam: the loss
/// falls.
#[test]
fn conv_network_loss_falls() {
    use snn_runtime::train::optim::Optimizer;
    let mut s = load("tests/in/train/conv.snn");
    let (t, b) = (6, 6);
    let labels: Vec<usize> = (0..b).map(|i| i % 3).collect();
    // Images whose bright region depends on the label (rows 0-2, 3-5 or 6-8).
    let mut data = vec![0.0f32; b * 2 * 9 * 8];
    for (i, &l) in labels.iter().enumerate() {
        for ch in 0..2 {
            for y in 0..9 {
                for xx in 0..8 {
                    let on = y / 3 == l;
                    let noise = ((i * 31 + ch * 7 + y * 5 + xx * 3) % 11) as f32 / 22.0;
                    data[((i * 2 + ch) * 9 + y) * 8 + xx] = if on { 1.0 } else { 0.1 } + noise;
                }
            }
        }
    }
    let x = snn_runtime::Tensor {
        shape: vec![b, 2, 9, 8],
        data,
    };
    let mut opt = Optimizer::adam((0.9, 0.999), 1e-8, 0.0);
    let mut losses = Vec::new();
    for _ in 0..40 {
        let out = s.run(std::slice::from_ref(&x), t, b).unwrap();
        let (loss, g) = grad::cross_entropy_f32(&out[0].1.data, &labels, 3);
        losses.push(loss);
        s.backward(&[&g], t, b).unwrap();
        let grads = s.grads().unwrap();
        let mut w = s.weights().to_vec();
        opt.step(&mut w, &grads, 0.02);
        s.set_all_weights(w).unwrap();
    }
    println!("loss {:.4} -> {:.4}", losses[0], losses[losses.len() - 1]);
    let last: f64 = losses[losses.len() - 5..].iter().sum::<f64>() / 5.0;
    assert!(
        last < 0.6 * losses[0],
        "loss {} -> {last}: {losses:?}",
        losses[0]
    );
}
