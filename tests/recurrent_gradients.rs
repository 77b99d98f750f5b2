//! Training through recurrent cycles (BPTT): the reverse step loop of a recurrent stage
//! against central finite differences of an f64 re-implementation (a smooth stand-in, so the
//! loss is differentiable), against a BPTT written by hand in f64 (spiking LIF, ATan
//! surrogate, learned `tau`), with delays 1 and 2; and a short training run.

#![allow(clippy::needless_range_loop)]

mod common;

use common::grad::{self, cross_entropy, Tol};

fn load_src(src: &str) -> snn_runtime::Session {
    common::session_from_str("rec.snn", src, common::train_opts())
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// `y[r, j] = bias[j] + sum_q w[j, q] x[r, q]` over `rows` rows.
fn dense(x: &[f64], w: &[f64], bias: Option<&[f64]>, rows: usize, k: usize, n: usize) -> Vec<f64> {
    let mut y = vec![0.0; rows * n];
    for r in 0..rows {
        for j in 0..n {
            y[r * n + j] = bias.map_or(0.0, |b| b[j])
                + (0..k).map(|q| w[j * k + q] * x[r * k + q]).sum::<f64>();
        }
    }
    y
}

/// A smooth stand-in of a recurrent layer: `y = tanh(v)` is its value (first state), fed
/// back through `r` with a delay; the leak `sigmoid(w)` is learned. Readout: LI, loss on
/// its mean trace. The compiled gradients of every weight (the cycle's and the learned `w`
/// included) against central finite differences of an f64 forward pass.
fn smooth_cycle(delay: usize) {
    let src = format!(
        "neuron SmoothRec {{\n  param w = learn(0.3)\n  state y = 0.0\n  state v = 0.0\n  update {{\n    v = v + (I - v) * sigmoid(w)\n    y = tanh(v)\n  }}\n}}\nmodel smooth_rec {{\n  T = 6\n  batch = 3\n  input x: [T, 3]\n  f = dense(x, 4, init_gain = 2.0)\n  r = dense(s, 4, bias = false, delay = {delay}, init_gain = 2.0)\n  s = SmoothRec(f + r)\n  h = dense(s, 2, init_gain = 2.0)\n  out = LI(h, tau = 2.0)\n  output trace(out.v)\n  train {{ loss = cross_entropy(mean(out.v)) }}\n}}\n"
    );
    let mut s = load_src(&src);
    let names: Vec<String> = s.plan().weights.iter().map(|w| w.name.clone()).collect();
    assert_eq!(
        names,
        ["f.weight", "f.bias", "r.weight", "s.w", "h.weight", "h.bias"]
    );
    let (t, b, ni, n, c) = (6, 3, 3, 4, 2);
    let x: Vec<f32> = (0..t * b * ni)
        .map(|i| ((i * 29 % 17) as f32 / 17.0 - 0.4) * 2.0)
        .collect();
    let xd: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let labels = [1usize, 0, 1];
    let mut p: Vec<f64> = Vec::new();
    let mut at = vec![0];
    for name in &names {
        p.extend(s.weight(name).unwrap().iter().map(|&v| v as f64));
        at.push(p.len());
    }
    // p = [f.weight, f.bias, r.weight, s.w, h.weight, h.bias]
    let forward = |p: &[f64]| -> (f64, Vec<f64>) {
        let part = |i: usize| &p[at[i]..at[i + 1]];
        let fo = dense(&xd, part(0), Some(part(1)), t * b, ni, n);
        let (wr, k) = (part(2), sigmoid(part(3)[0]));
        let mut ys = vec![0.0; t * b * n];
        let mut v = vec![0.0; b * n];
        for st in 0..t {
            let rec = if st >= delay {
                dense(
                    &ys[(st - delay) * b * n..(st - delay + 1) * b * n],
                    wr,
                    None,
                    b,
                    n,
                    n,
                )
            } else {
                vec![0.0; b * n]
            };
            for q in 0..b * n {
                let cur = fo[st * b * n + q] + rec[q];
                v[q] += (cur - v[q]) * k;
                ys[st * b * n + q] = v[q].tanh();
            }
        }
        let h = dense(&ys, part(4), Some(part(5)), t * b, n, c);
        let mut o = vec![0.0; b * c];
        let mut trace = vec![0.0; t * b * c];
        let mut mean = vec![0.0; b * c];
        for st in 0..t {
            for q in 0..b * c {
                o[q] += (h[st * b * c + q] - o[q]) / 2.0;
                trace[st * b * c + q] = o[q];
                mean[q] += o[q] / t as f64;
            }
        }
        (cross_entropy(&mean, &labels, c).0, trace)
    };
    let xt = snn_runtime::Tensor {
        shape: vec![t, b, ni],
        data: x.clone(),
    };
    let out = s.run(std::slice::from_ref(&xt), t, b).unwrap();
    let (_, trace) = forward(&p);
    for (a, r) in out[0].1.data.iter().zip(&trace) {
        assert!(
            (*a as f64 - r).abs() < 1e-5,
            "forward: compiled {a} vs f64 {r}"
        );
    }
    let mut mean = vec![0.0; b * c];
    for row in out[0].1.data.chunks(b * c) {
        for (m, y) in mean.iter_mut().zip(row) {
            *m += *y as f64 / t as f64;
        }
    }
    let (_, g) = cross_entropy(&mean, &labels, c);
    let gy: Vec<f32> = (0..t * b * c)
        .map(|i| (g[i % (b * c)] / t as f64) as f32)
        .collect();
    s.backward(&[&gy], t, b).unwrap();
    let grads: Vec<f32> = s.grads().unwrap().concat();
    grad::check_f64_params(
        &grads,
        &p,
        1e-5,
        Tol::sum(1e-4, 0.0, 1e-7),
        |i| {
            let which = &names[at.iter().rposition(|&a| a <= i).unwrap()];
            format!("delay {delay}, parameter {i} ({which})")
        },
        |q| forward(q).0,
    );
    // The recurrent weights and the learned leak matter.
    let rw = &grads[at[2]..at[3]];
    assert!(rw.iter().any(|g| g.abs() > 1e-3), "dL/dr.weight = {rw:?}");
    assert!(grads[at[3]].abs() > 1e-3, "dL/ds.w = {}", grads[at[3]]);
}

#[test]
fn smooth_cycle_with_delay_1_matches_finite_differences() {
    smooth_cycle(1);
}

#[test]
fn smooth_cycle_with_delay_2_matches_finite_differences() {
    smooth_cycle(2);
}

/// tests/in/train/recurrent.snn (a LIF layer with soft reset and a learned `tau` that reads
/// its own spikes `delay` steps late, a LIF readout, cross-entropy on spike counts, ATan
/// surrogate) against BPTT written out by hand in f64: every gradient to 1e-4 relative.
fn lif_cycle(delay: usize) {
    let src = std::fs::read_to_string(common::root().join("tests/in/train/recurrent.snn"))
        .unwrap()
        .replace("delay = 1", &format!("delay = {delay}"));
    let mut s = load_src(&src);
    let (t, b, ni, n, c) = (8, 4, 3, 4, 2);
    let wf: Vec<f32> = (0..n * ni)
        .map(|i| ((i * 7 % 11) as f32 / 11.0 - 0.25) * 2.0)
        .collect();
    let bf: Vec<f32> = vec![0.3, 0.1, 0.4, 0.2];
    let wr: Vec<f32> = (0..n * n)
        .map(|i| ((i * 5 % 9) as f32 / 9.0 - 0.45) * 1.5)
        .collect();
    let wh: Vec<f32> = (0..c * n)
        .map(|i| ((i * 3 % 7) as f32 / 7.0 - 0.2) * 2.0)
        .collect();
    let bh: Vec<f32> = vec![0.25, 0.35];
    let tau = 1.8f32;
    s.set_weight("f.weight", &wf).unwrap();
    s.set_weight("f.bias", &bf).unwrap();
    s.set_weight("r.weight", &wr).unwrap();
    s.set_weight("s.tau", &[tau]).unwrap();
    s.set_weight("h.weight", &wh).unwrap();
    s.set_weight("h.bias", &bh).unwrap();
    let x: Vec<f32> = (0..t * b * ni)
        .map(|i| (i * 13 % 10) as f32 / 10.0 + 0.05)
        .collect();
    let labels = [0usize, 1, 1, 0];
    let out = s
        .run(
            &[snn_runtime::Tensor {
                shape: vec![t, b, ni],
                data: x.clone(),
            }],
            t,
            b,
        )
        .unwrap();
    let counts: Vec<f64> = out[0].1.data.iter().map(|&v| v as f64).collect();
    let (_, gc) = cross_entropy(&counts, &labels, c);
    let gc32: Vec<f32> = gc.iter().map(|&v| v as f32).collect();
    s.backward(&[&gc32], t, b).unwrap();
    let grads = s.grads().unwrap();
    let names: Vec<String> = s.plan().weights.iter().map(|w| w.name.clone()).collect();
    let grad = |name: &str| grads[names.iter().position(|n| n == name).unwrap()].clone();

    // Forward in f64, keeping what the backward reads.
    let f = |v: &[f32]| v.iter().map(|&a| a as f64).collect::<Vec<f64>>();
    let (wf, bf, wr, wh, bh, x) = (f(&wf), f(&bf), f(&wr), f(&wh), f(&bh), f(&x));
    let tau = tau as f64;
    let sg = |u: f64| 1.0 / (1.0 + (std::f64::consts::PI * u).powi(2)); // ATan, alpha = 2
    let mut margin = f64::MAX;
    let fo = dense(&x, &wf, Some(&bf), t * b, ni, n);
    let bn = b * n;
    let (mut cur, mut v0a, mut v1a, mut sp) = (
        vec![0.0; t * bn],
        vec![0.0; t * bn],
        vec![0.0; t * bn],
        vec![0.0; t * bn],
    );
    let mut v = vec![0.0; bn];
    for st in 0..t {
        let rec = if st >= delay {
            dense(
                &sp[(st - delay) * bn..(st - delay + 1) * bn],
                &wr,
                None,
                b,
                n,
                n,
            )
        } else {
            vec![0.0; bn]
        };
        for q in 0..bn {
            let i = st * bn + q;
            cur[i] = fo[i] + rec[q];
            v0a[i] = v[q];
            let v1 = v[q] + (cur[i] - v[q]) / tau;
            margin = margin.min((v1 - 1.0).abs());
            v1a[i] = v1;
            sp[i] = if v1 >= 1.0 { 1.0 } else { 0.0 };
            v[q] = v1 - sp[i];
        }
    }
    let h = dense(&sp, &wh, Some(&bh), t * b, n, c);
    let bc = b * c;
    let (mut v0b, mut v1b, mut so) = (vec![0.0; t * bc], vec![0.0; t * bc], vec![0.0; t * bc]);
    let mut v = vec![0.0; bc];
    let mut cnt = vec![0.0; bc];
    for st in 0..t {
        for q in 0..bc {
            let i = st * bc + q;
            v0b[i] = v[q];
            let v1 = v[q] + (h[i] - v[q]) / 2.0;
            margin = margin.min((v1 - 1.0).abs());
            v1b[i] = v1;
            so[i] = if v1 >= 1.0 { 1.0 } else { 0.0 };
            cnt[q] += so[i];
            v[q] = if so[i] == 1.0 { 0.0 } else { v1 };
        }
    }
    assert_eq!(counts, cnt, "forward spike counts (delay {delay})");
    assert!(
        margin > 1e-3,
        "a membrane lands {margin} from its threshold"
    );
    assert!(cnt.iter().sum::<f64>() > 0.0 && sp.iter().sum::<f64>() > 0.0);

    // Readout: hard reset to 0, tau 2.
    let mut g_h = vec![0.0; t * bc];
    let mut gv = vec![0.0; bc];
    for st in (0..t).rev() {
        for q in 0..bc {
            let i = st * bc + q;
            let g_s = gc[q] + gv[q] * (0.0 - v1b[i]);
            let g_v1 = if so[i] == 1.0 { 0.0 } else { gv[q] } + g_s * sg(v1b[i] - 1.0);
            g_h[i] = g_v1 / 2.0;
            gv[q] = g_v1 * 0.5;
            let _ = v0b[i];
        }
    }
    let (mut g_wh, mut g_bh) = (vec![0.0; c * n], vec![0.0; c]);
    let mut g_sp = vec![0.0; t * bn];
    for r in 0..t * b {
        for j in 0..c {
            let dy = g_h[r * c + j];
            g_bh[j] += dy;
            for q in 0..n {
                g_wh[j * n + q] += dy * sp[r * n + q];
                g_sp[r * n + q] += dy * wh[j * n + q];
            }
        }
    }
    // The cycle, in reverse time: the spike gradient at t is complete once the steps after
    // t have sent theirs back through `r`.
    let mut g_tau = 0.0;
    let mut g_cur = vec![0.0; t * bn];
    let mut g_wr = vec![0.0; n * n];
    let mut gv = vec![0.0; bn];
    for st in (0..t).rev() {
        for q in 0..bn {
            let i = st * bn + q;
            // soft reset: v2 = v1 - S (threshold 1)
            let g_s = g_sp[i] - gv[q];
            let g_v1 = gv[q] + g_s * sg(v1a[i] - 1.0);
            g_cur[i] = g_v1 / tau;
            g_tau += -g_v1 * (cur[i] - v0a[i]) / (tau * tau);
            gv[q] = g_v1 * (1.0 - 1.0 / tau);
        }
        if st >= delay {
            let src = (st - delay) * bn;
            for bi in 0..b {
                for j in 0..n {
                    let dy = g_cur[st * bn + bi * n + j];
                    for q in 0..n {
                        g_wr[j * n + q] += dy * sp[src + bi * n + q];
                        g_sp[src + bi * n + q] += dy * wr[j * n + q];
                    }
                }
            }
        }
    }
    let (mut g_wf, mut g_bf) = (vec![0.0; n * ni], vec![0.0; n]);
    for r in 0..t * b {
        for j in 0..n {
            let dy = g_cur[r * n + j];
            g_bf[j] += dy;
            for q in 0..ni {
                g_wf[j * ni + q] += dy * x[r * ni + q];
            }
        }
    }
    let want: [(&str, Vec<f64>); 6] = [
        ("f.weight", g_wf),
        ("f.bias", g_bf),
        ("r.weight", g_wr),
        ("s.tau", vec![g_tau]),
        ("h.weight", g_wh),
        ("h.bias", g_bh),
    ];
    for (name, want) in want {
        let got = grad(name);
        assert!(
            grad::max_abs(&want) > 1e-4,
            "{name}: the reference gradient vanishes"
        );
        let what = format!("delay {delay}, {name}");
        grad::assert_close(&what, &got, &want, grad::REFERENCE, "hand-written BPTT");
        println!("delay {delay}, {name}: {:?}", &got[..got.len().min(3)]);
    }
}

#[test]
fn lif_cycle_with_delay_1_matches_a_hand_written_bptt() {
    lif_cycle(1);
}

#[test]
fn lif_cycle_with_delay_2_matches_a_hand_written_bptt() {
    lif_cycle(2);
}

/// Adam on tests/in/train/recurrent.snn with inputs that carry the label early: the loss
/// falls and the recurrent weights and the learned `tau` move.
#[test]
fn training_through_a_recurrent_cycle_lowers_the_loss() {
    use snn_runtime::train::optim::Optimizer;
    let src = std::fs::read_to_string(common::root().join("tests/in/train/recurrent.snn")).unwrap();
    let mut s = load_src(&src);
    let (t, b, ni) = (8, 12, 3);
    let labels: Vec<usize> = (0..b).map(|i| i % 2).collect();
    let mut x = s.random_inputs(t, b, 5).remove(0);
    for v in x.data.iter_mut() {
        *v *= 0.3;
    }
    // The label shows only in the first two steps: later steps must remember it.
    for st in 0..2 {
        for (i, &l) in labels.iter().enumerate() {
            x.data[(st * b + i) * ni + l] += 1.5;
        }
    }
    let names: Vec<String> = s.plan().weights.iter().map(|w| w.name.clone()).collect();
    let at = |n: &str| names.iter().position(|m| m == n).unwrap();
    let start = s.weights().to_vec();
    let mut opt = Optimizer::adam((0.9, 0.999), 1e-8, 0.0);
    let mut losses = Vec::new();
    for _ in 0..60 {
        let out = s.run(std::slice::from_ref(&x), t, b).unwrap();
        let counts: Vec<f64> = out[0].1.data.iter().map(|&v| v as f64).collect();
        let (loss, g) = cross_entropy(&counts, &labels, 2);
        losses.push(loss);
        let g: Vec<f32> = g.iter().map(|&v| v as f32).collect();
        s.backward(&[&g], t, b).unwrap();
        let grads = s.grads().unwrap();
        let mut w = s.weights().to_vec();
        opt.step(&mut w, &grads, 0.05);
        s.set_all_weights(w).unwrap();
    }
    let end = s.weights().to_vec();
    println!("loss {:.4} -> {:.4}", losses[0], losses[losses.len() - 1]);
    for n in ["r.weight", "s.tau"] {
        let moved = start[at(n)]
            .iter()
            .zip(&end[at(n)])
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(moved > 1e-2, "{n} did not move: {:?}", end[at(n)]);
    }
    let last: f64 = losses[losses.len() - 5..].iter().sum::<f64>() / 5.0;
    assert!(last < 0.7 * losses[0], "loss {} -> {last}", losses[0]);
}
