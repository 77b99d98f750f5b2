//! Host training maths (`snn_runtime::train`): every loss against central finite
//! differences and against values pinned from plain Python (`math` only; numpy and torch
//! are not available), the optimizers against a plain-Python f32 replay of torch's
//! algorithms (script at the end of this file), clipping, schedules, and bit-exact resume.

use snn_runtime::train::loss::{self, Reduce};
use snn_runtime::train::optim::{clip_grad_norm, Algorithm, Optimizer};
use snn_runtime::train::schedule::{warmup_factor, LrSchedule};

/// Deterministic uniform values in `[lo, hi)` (xorshift64*).
fn rand_vec(n: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            let u = (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32;
            lo + (hi - lo) * u
        })
        .collect()
}

/// Central differences of `f` at `x`, dividing by the step actually taken in f32.
fn fd(x: &[f32], h: f32, f: impl Fn(&[f32]) -> f32) -> Vec<f64> {
    (0..x.len())
        .map(|i| {
            let mut a = x.to_vec();
            let mut b = x.to_vec();
            a[i] += h;
            b[i] -= h;
            (f(&a) as f64 - f(&b) as f64) / (a[i] as f64 - b[i] as f64)
        })
        .collect()
}

/// `|a - b| <= 1e-3 * |b|`, plus an absolute floor for the f32 rounding of the loss
/// divided by the finite-difference step.
fn assert_close(a: &[f32], b: &[f64], floor: f64) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (*x as f64 - y).abs() <= 1e-3 * y.abs() + floor,
            "[{i}] analytic {x} vs reference {y}"
        );
    }
}

fn labels(n: usize, classes: usize, seed: u64) -> Vec<u32> {
    rand_vec(n, seed, 0.0, classes as f32)
        .iter()
        .map(|&v| (v as u32).min(classes as u32 - 1))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Losses: pinned values (plain Python, `math` only, f64).

#[test]
fn cross_entropy_counts_pinned() {
    // logsumexp(row) - row[y], mean over the batch; grad (softmax - onehot) / B.
    let o = loss::cross_entropy_counts(&[1.0, 2.0, 0.0, 3.0, 0.0, 1.0], &[1, 2], 2, 3);
    assert!((o.loss - 1.288_726).abs() < 1e-6, "{}", o.loss);
    let want = [
        0.122_364_235_527_398_82,
        -0.167_379_522_112_589_1,
        0.045_015_286_585_190_23,
        0.421_897_367_240_669_8,
        0.021_005_033_067_033_03,
        -0.442_902_400_307_702_7,
    ];
    assert_close(&o.grad, &want, 1e-7);
    assert_eq!(o.correct, 1); // row 0 predicts 1 (right), row 1 predicts 0 (wrong)
}

#[test]
fn cross_entropy_membrane_pinned() {
    // T=3, B=1, C=2; class 0 peaks at 2.0 on steps 1 and 2 (tie: step 1), class 1 at 1.5
    // on step 2.
    let trace = [0.5, -1.0, 2.0, 0.3, 2.0, 1.5];
    let o = loss::cross_entropy_membrane(&trace, &[1], 3, 1, 2, Reduce::Max);
    assert!((o.loss - 0.974_077).abs() < 1e-6, "{}", o.loss);
    let p = 0.622_459_331_201_854_6;
    assert_close(&o.grad, &[0.0, 0.0, p, 0.0, 0.0, -p], 1e-7);
    assert_eq!(o.correct, 0);
    // Mean over time: logits (1.5, 0.2667); grad spread as 1/T.
    let o = loss::cross_entropy_membrane(&trace, &[1], 3, 1, 2, Reduce::Mean);
    assert!((o.loss - 1.488_998_2).abs() < 1e-6, "{}", o.loss);
    let q = 0.774_401_453_014_278_5 / 3.0;
    assert_close(&o.grad, &[q, -q, q, -q, q, -q], 1e-7);
}

#[test]
fn mse_counts_pinned() {
    // groups = 1, T = 5, on 0.8 / off 0.1: mean over B*C of (count/T - target)^2.
    let o = loss::mse_counts(
        &[3.0, 1.0, 0.0, 2.0, 5.0, 1.0],
        &[1, 0],
        5,
        2,
        3,
        0.8,
        0.1,
        1,
    );
    assert!((o.loss - 0.266_666_67).abs() < 1e-6, "{}", o.loss);
    let want = [
        0.033_333_333_333_333_33,
        -0.04,
        -0.006_666_666_666_666_666,
        -0.026_666_666_666_666_665,
        0.06,
        0.006_666_666_666_666_666,
    ];
    assert_close(&o.grad, &want, 1e-8);
    assert_eq!(o.correct, 0); // rates (0.6, 0.2, 0) -> 0 (label 1); (0.4, 1, 0.2) -> 1 (label 0)
                              // BPSTA voting: 2 classes x 2 neurons, T = 4, one-hot targets. Class rates are
                              // (0.75, 0.125) and (0.125, 0.75): loss = (0.0625 + 0.015625) / 2; d/dcount = (r-t)/16.
    let counts = [4.0, 2.0, 1.0, 0.0, 0.0, 1.0, 3.0, 3.0];
    let o = loss::mse_counts(&counts, &[0, 1], 4, 2, 4, 1.0, 0.0, 2);
    assert_eq!(o.loss, 0.039_062_5);
    let (a, b) = (-0.25 / 16.0, 0.125 / 16.0);
    assert_eq!(o.grad, [a, a, b, b, b, b, a, a]);
    assert_eq!(o.correct, 2);
}

#[test]
fn first_spike_time_pinned() {
    // T=4, B=2, C=3. Sample 0: first spikes at steps 1, never (-> T-1 = 3), 0 (and again
    // at 2). Sample 1: steps 2, 2, never (-> 3). Logits = -time; labels 0, 0.
    #[rustfmt::skip]
    let spikes = [
        // t = 0
        0.0, 0.0, 1.0,   0.0, 0.0, 0.0,
        // t = 1
        1.0, 0.0, 0.0,   0.0, 0.0, 0.0,
        // t = 2
        1.0, 0.0, 1.0,   1.0, 1.0, 0.0,
        // t = 3
        0.0, 0.0, 0.0,   0.0, 0.0, 0.0,
    ];
    let o = loss::first_spike_time(&spikes, &[0, 0], 4, 2, 3);
    // CE([-1, -3, 0] -> 0) and CE([-2, -2, -3] -> 0), mean (plain Python, f64).
    assert!((o.loss - 1.105_503_5).abs() < 1e-6, "{}", o.loss);
    let g = [
        -0.370_251_769_828_790_5,
        0.017_559_513_479_669_86,
        0.352_692_256_349_120_55,
        -0.288_840_600_874_240_9,
        0.211_159_399_125_759_1,
        0.077_681_201_748_481_81,
    ];
    // snnTorch FirstSpike backward: -dL/dtime = dL/dlogit at the first-spike step only,
    // the silent neurons' at the last step.
    #[rustfmt::skip]
    let want = [
        0.0, 0.0, g[2],   0.0, 0.0, 0.0,
        g[0], 0.0, 0.0,   0.0, 0.0, 0.0,
        0.0, 0.0, 0.0,    g[3], g[4], 0.0,
        0.0, g[1], 0.0,   0.0, 0.0, g[5],
    ];
    assert_close(&o.grad, &want, 1e-7);
    // Sample 0 predicts neuron 2 (wrong); sample 1 ties 0 and 1 and takes the first (right).
    assert_eq!(o.correct, 1);
}

#[test]
fn spike_rate_reg_pinned() {
    // 0.5 * mean((2/5 - 0.2)^2, (0 - 0.2)^2, (1 - 0.2)^2) = 0.12; grad d / 15.
    let (l, g) = loss::spike_rate_reg(&[2.0, 0.0, 5.0], 5, 1, 3, 0.5, 0.2);
    assert!((l - 0.12).abs() < 1e-7, "{l}");
    assert_close(&g, &[0.2 / 15.0, -0.2 / 15.0, 0.8 / 15.0], 1e-8);
}

#[test]
fn argmax_takes_the_first_maximum_and_nan() {
    assert_eq!(loss::argmax(&[1.0f32, 3.0, 3.0, 2.0]), 1);
    assert_eq!(loss::argmax(&[0.0f64, 0.0]), 0);
    assert_eq!(loss::argmax(&[1.0f32, f32::NAN, 5.0, f32::NAN]), 1);
    assert_eq!(loss::argmax::<f32>(&[]), 0);
}

// ---------------------------------------------------------------------------------------
// Losses: central finite differences on random cases.

#[test]
fn cross_entropy_gradients_match_finite_differences() {
    let (b, c) = (3, 5);
    let y = labels(b, c, 7);
    let x = rand_vec(b * c, 1, -2.0, 3.0);
    let o = loss::cross_entropy_counts(&x, &y, b, c);
    assert_close(
        &o.grad,
        &fd(&x, 1e-2, |v| loss::cross_entropy_counts(v, &y, b, c).loss),
        2e-5,
    );
    // Large logits stay finite (max-shifted log-softmax).
    let big: Vec<f32> = x.iter().map(|v| v * 1e4).collect();
    let o = loss::cross_entropy_counts(&big, &y, b, c);
    assert!(o.loss.is_finite() && o.grad.iter().all(|g| g.is_finite()));
}

#[test]
fn membrane_gradients_match_finite_differences() {
    let (t, b, c) = (4, 2, 3);
    let y = labels(b, c, 3);
    // Distinct values on a 0.1 grid, so a 1e-2 step never crosses a tie of the max.
    let mut x: Vec<f32> = (0..t * b * c)
        .map(|i| ((i * 7) % 24) as f32 * 0.1 - 1.0)
        .collect();
    x.rotate_left(5);
    for r in [Reduce::Max, Reduce::Mean] {
        let o = loss::cross_entropy_membrane(&x, &y, t, b, c, r);
        let num = fd(&x, 1e-2, |v| {
            loss::cross_entropy_membrane(v, &y, t, b, c, r).loss
        });
        assert_close(&o.grad, &num, 2e-5);
    }
}

#[test]
fn mse_and_regulariser_gradients_match_finite_differences() {
    let (t, b, classes, groups) = (6, 3, 4, 3);
    let c = classes * groups;
    let y = labels(b, classes, 11);
    let x = rand_vec(b * c, 5, 0.0, t as f32);
    let o = loss::mse_counts(&x, &y, t, b, c, 0.9, 0.05, groups);
    let num = fd(&x, 1e-2, |v| {
        loss::mse_counts(v, &y, t, b, c, 0.9, 0.05, groups).loss
    });
    assert_close(&o.grad, &num, 2e-5);
    let (_, g) = loss::spike_rate_reg(&x, t, b, c, 0.3, 0.2);
    let num = fd(&x, 1e-2, |v| loss::spike_rate_reg(v, t, b, c, 0.3, 0.2).0);
    assert_close(&g, &num, 2e-5);
}

#[test]
fn first_spike_time_is_cross_entropy_of_negated_times() {
    // The spike-time map is piecewise constant, so the gradient is snnTorch's sign
    // estimator: the value equals CE(-times) and the gradient is CE's logit gradient
    // (itself checked by finite differences above) placed at each first-spike step.
    let (t, b, c) = (5, 4, 3);
    let y = labels(b, c, 2);
    let spikes: Vec<f32> = rand_vec(t * b * c, 9, 0.0, 1.0)
        .iter()
        .map(|&u| f32::from(u8::from(u < 0.25)))
        .collect();
    let times: Vec<usize> = (0..b * c)
        .map(|k| {
            (0..t)
                .find(|&s| spikes[s * b * c + k] == 1.0)
                .unwrap_or(t - 1)
        })
        .collect();
    let logits: Vec<f32> = times.iter().map(|&s| -(s as f32)).collect();
    let reference = loss::cross_entropy_counts(&logits, &y, b, c);
    let o = loss::first_spike_time(&spikes, &y, t, b, c);
    assert_eq!(o.loss, reference.loss);
    assert_eq!(o.correct, reference.correct);
    for s in 0..t {
        for (k, &time) in times.iter().enumerate() {
            let want = if time == s { reference.grad[k] } else { 0.0 };
            assert_eq!(o.grad[s * b * c + k], want, "step {s}, neuron {k}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Losses: central differences in f64 of each loss's formula written out again here, so
// the comparison is not limited by the f32 loss value (the tests above use 1e-3).

/// Central differences of `f` at `x` in f64.
fn fd64(x: &[f64], f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    (0..x.len())
        .map(|i| {
            let h = 1e-5 * x[i].abs().max(1.0);
            let (mut a, mut b) = (x.to_vec(), x.to_vec());
            a[i] += h;
            b[i] -= h;
            (f(&a) - f(&b)) / (2.0 * h)
        })
        .collect()
}

/// `|a - b| <= 1e-6 |b| + 1e-9`: the loss gradients are f64 rounded to f32.
fn assert_close64(what: &str, a: &[f32], b: &[f64]) {
    assert_eq!(a.len(), b.len(), "{what}");
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x as f64 - y).abs() <= 1e-6 * y.abs() + 1e-9,
            "{what}[{i}]: analytic {x} vs f64 central difference {y}"
        );
    }
}

/// `mean over rows of log(sum_j exp(row_j)) - row[y]` (rows of `c`).
fn ce64(logits: &[f64], y: &[u32], c: usize) -> f64 {
    let rows = logits.len() / c;
    (0..rows)
        .map(|b| {
            let row = &logits[b * c..(b + 1) * c];
            row.iter().map(|v| v.exp()).sum::<f64>().ln() - row[y[b] as usize]
        })
        .sum::<f64>()
        / rows as f64
}

fn widen(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

#[test]
fn every_loss_matches_f64_central_differences_of_its_formula() {
    let (t, b, c) = (5, 3, 4);
    let y = labels(b, c, 21);

    // cross_entropy(counts(P))
    let x = rand_vec(b * c, 4, 0.0, 6.0);
    let f = |v: &[f64]| ce64(v, &y, c);
    let o = loss::cross_entropy_counts(&x, &y, b, c);
    assert!((o.loss as f64 - f(&widen(&x))).abs() < 1e-6);
    assert_close64("ce counts", &o.grad, &fd64(&widen(&x), f));

    // cross_entropy(max(P.v)) and cross_entropy(mean(P.v)) of a [T, B, C] membrane. The
    // values are distinct (a random draw), so the step of each maximum is unique.
    let m = rand_vec(t * b * c, 6, -1.0, 2.0);
    let reduce = |v: &[f64], r: Reduce| -> Vec<f64> {
        (0..b * c)
            .map(|k| {
                let col = (0..t).map(|s| v[s * b * c + k]);
                match r {
                    Reduce::Max => col.fold(f64::NEG_INFINITY, f64::max),
                    Reduce::Mean => col.sum::<f64>() / t as f64,
                }
            })
            .collect()
    };
    for r in [Reduce::Max, Reduce::Mean] {
        let f = |v: &[f64]| ce64(&reduce(v, r), &y, c);
        let o = loss::cross_entropy_membrane(&m, &y, t, b, c, r);
        assert!((o.loss as f64 - f(&widen(&m))).abs() < 1e-6);
        assert_close64(&format!("ce {r:?}"), &o.grad, &fd64(&widen(&m), f));
    }

    // mse(counts(P), on, off, groups): mean over B and classes of (group rate - target)^2.
    for groups in [1, 2] {
        let n = c * groups;
        let x = rand_vec(b * n, 8 + groups as u64, 0.0, t as f32);
        let f = |v: &[f64]| {
            let mut sum = 0.0;
            for i in 0..b {
                for k in 0..c {
                    let g = &v[i * n + k * groups..i * n + (k + 1) * groups];
                    let rate = g.iter().sum::<f64>() / (groups * t) as f64;
                    let target = if k == y[i] as usize { 0.9 } else { 0.05 };
                    sum += (rate - target).powi(2);
                }
            }
            sum / (b * c) as f64
        };
        let o = loss::mse_counts(&x, &y, t, b, n, 0.9, 0.05, groups);
        assert!((o.loss as f64 - f(&widen(&x))).abs() < 1e-6);
        assert_close64(
            &format!("mse groups={groups}"),
            &o.grad,
            &fd64(&widen(&x), f),
        );
    }

    // rate(P, lambda, target): lambda * mean over B, N of (counts / T - target)^2.
    let x = rand_vec(b * c, 12, 0.0, t as f32);
    let f = |v: &[f64]| {
        0.3 * v.iter().map(|&n| (n / t as f64 - 0.2).powi(2)).sum::<f64>() / v.len() as f64
    };
    let (l, g) = loss::spike_rate_reg(&x, t, b, c, 0.3, 0.2);
    assert!((l as f64 - f(&widen(&x))).abs() < 1e-7);
    assert_close64("rate", &g, &fd64(&widen(&x), f));

    // first_spike(P): CE of minus the first-spike steps. Its gradient, at each first
    // spike, is -dL/dtime (snnTorch's sign estimator); dL/dtime from differences of the
    // loss as a function of real-valued times.
    let spikes: Vec<f32> = rand_vec(t * b * c, 14, 0.0, 1.0)
        .iter()
        .map(|&u| f32::from(u8::from(u < 0.2)))
        .collect();
    let times: Vec<f64> = (0..b * c)
        .map(|k| {
            (0..t)
                .find(|&s| spikes[s * b * c + k] == 1.0)
                .unwrap_or(t - 1) as f64
        })
        .collect();
    let f = |tm: &[f64]| ce64(&tm.iter().map(|x| -x).collect::<Vec<_>>(), &y, c);
    let d_time = fd64(&times, f);
    let o = loss::first_spike_time(&spikes, &y, t, b, c);
    assert!((o.loss as f64 - f(&times)).abs() < 1e-6);
    let mut want = vec![0.0; t * b * c];
    for k in 0..b * c {
        want[times[k] as usize * b * c + k] = -d_time[k];
    }
    assert_close64("first spike", &o.grad, &want);
    assert!(
        times.iter().any(|&s| s < (t - 1) as f64),
        "some neuron spikes early"
    );
}

// ---------------------------------------------------------------------------------------
// Optimizers: 3 steps on p = [1, -2] with gradients G (below), bit patterns from the
// Python replay at the end of this file.

const G: [[f32; 2]; 3] = [[0.3, -1.7], [-0.45, 2.1], [0.9, 0.15]];

fn run3(mut o: Optimizer, lr: f32) -> [u32; 2] {
    let mut p = vec![vec![1.0f32, -2.0]];
    for g in G {
        o.step(&mut p, &[g.to_vec()], lr);
    }
    [p[0][0].to_bits(), p[0][1].to_bits()]
}

#[test]
fn sgd_matches_torch() {
    // Plain: 1 - 0.1 * (0.3 - 0.45 + 0.9) = 0.925.
    assert_eq!(
        run3(Optimizer::default_sgd(), 0.1),
        [0x3f6ccccd, 0xc003851f]
    );
    assert_eq!(
        run3(Optimizer::sgd(0.9, false, 0.01), 0.1),
        [0x3f689e30, 0xbff8a4ac]
    );
    assert_eq!(
        run3(Optimizer::sgd(0.9, true, 0.01), 0.1),
        [0x3f57031c, 0xbfffbae6]
    );
}

#[test]
fn adam_matches_torch() {
    assert_eq!(
        run3(Optimizer::default_adam(), 0.01),
        [0x3f7cecab, 0xbfff1f19]
    );
    let o = Optimizer::adam((0.8, 0.99), 1e-3, 0.1);
    assert_eq!(run3(o, 0.01), [0x3f7c01b6, 0xbffef323]);
}

#[test]
fn adamw_matches_torch() {
    assert_eq!(
        run3(Optimizer::default_adamw(), 0.01),
        [0x3f7cd91f, 0xbfff0b7f]
    );
    // beta1 = 0.5 takes torch lerp's large-weight branch.
    let o = Optimizer::adamw((0.5, 0.9), 1e-8, 0.5);
    assert_eq!(run3(o, 0.05), [0x3f5ed1d0, 0xbfebc0d0]);
}

#[test]
fn adam_first_step_moves_each_weight_by_lr() {
    // Bias correction makes the first update lr * g / (|g| + eps) ~ lr * sign(g).
    let mut p = vec![vec![1.0f32, -2.0]];
    let mut o = Optimizer::default_adam();
    o.step(&mut p, &[vec![0.5, -3.0]], 0.1);
    assert!(
        (p[0][0] - 0.9).abs() < 1e-6 && (p[0][1] + 1.9).abs() < 1e-6,
        "{p:?}"
    );
    assert_eq!(o.steps(), 1);
    assert!(matches!(o.algorithm(), Algorithm::Adam { eps, .. } if eps == 1e-8));
}

/// Parameters and gradients of a small "model": three tensors of different sizes.
fn model() -> Vec<Vec<f32>> {
    vec![
        rand_vec(5, 1, -1.0, 1.0),
        rand_vec(3, 2, -1.0, 1.0),
        vec![0.25],
    ]
}

fn grads(k: usize) -> Vec<Vec<f32>> {
    model()
        .iter()
        .enumerate()
        .map(|(i, p)| rand_vec(p.len(), 100 + 10 * k as u64 + i as u64, -2.0, 2.0))
        .collect()
}

#[test]
fn resume_from_saved_state_is_bit_exact() {
    let lr = |k: usize| {
        LrSchedule::Cosine {
            t_max: 7,
            eta_min: 1e-4,
        }
        .lr_at(0.05, k)
    };
    for make in [
        || Optimizer::sgd(0.9, true, 1e-3),
        || Optimizer::sgd(0.0, false, 0.0),
        || Optimizer::adam((0.9, 0.999), 1e-8, 1e-2),
        Optimizer::default_adamw,
    ] {
        let (n, k) = (7, 3);
        let mut straight = model();
        let mut o = make();
        for s in 0..n {
            o.step(&mut straight, &grads(s), lr(s));
        }
        let mut resumed = model();
        let mut first = make();
        for s in 0..k {
            first.step(&mut resumed, &grads(s), lr(s));
        }
        let saved = first.state();
        let mut second = make();
        second.load_state(saved.clone()).unwrap();
        assert_eq!(second, first);
        assert_eq!(second.state(), saved);
        for s in k..n {
            second.step(&mut resumed, &grads(s), lr(s));
        }
        let bits =
            |v: &Vec<Vec<f32>>| -> Vec<u32> { v.iter().flatten().map(|x| x.to_bits()).collect() };
        assert_eq!(bits(&straight), bits(&resumed), "{:?}", o.algorithm());
        assert_eq!(o, second);
        assert_eq!(second.steps(), n as u64);
    }
}

#[test]
fn state_layout_and_step_encoding() {
    let mut o = Optimizer::default_adam();
    let mut p = model();
    o.step(&mut p, &grads(0), 1e-3);
    let names: Vec<String> = o.state().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "step.0",
            "exp_avg.0",
            "exp_avg_sq.0",
            "step.1",
            "exp_avg.1",
            "exp_avg_sq.1",
            "step.2",
            "exp_avg.2",
            "exp_avg_sq.2"
        ]
    );
    // A step count past f32's exact integers survives the round trip.
    let mut st = o.state();
    st[0].1 = vec![5.0, 3.0]; // 3 * 2^24 + 5
    o.load_state(st).unwrap();
    assert_eq!(o.steps(), 3 * (1 << 24) + 5);
    // SGD without momentum keeps only the step counts; with momentum, the buffers.
    let mut s = Optimizer::default_sgd();
    s.step(&mut p, &grads(0), 0.1);
    assert!(s.state().iter().all(|(n, _)| n.starts_with("step.")));
    let mut s = Optimizer::sgd(0.5, false, 0.0);
    s.step(&mut p, &grads(0), 0.1);
    assert_eq!(s.state()[1].0, "momentum_buffer.0");
    assert_eq!(s.state()[1].1, grads(0)[0]); // torch: the first buffer is the gradient
}

#[test]
fn load_state_rejects_foreign_or_broken_state() {
    let mut adam = Optimizer::default_adam();
    let mut p = model();
    adam.step(&mut p, &grads(0), 1e-3);
    let good = adam.state();
    let before = adam.clone();
    type State = Vec<(String, Vec<f32>)>;
    let cases: Vec<(State, &str)> = vec![
        (vec![("bogus.0".into(), vec![1.0])], "unknown entry"),
        (vec![("step".into(), vec![1.0, 0.0])], "unknown entry"),
        (
            vec![("momentum_buffer.0".into(), vec![1.0])],
            "does not belong to Adam",
        ),
        (good[..2].to_vec(), "incomplete"),
        (good[1..3].to_vec(), "no `step.0`"),
        (vec![("step.0".into(), vec![1.5, 0.0])], "not a step count"),
        (vec![("step.0".into(), vec![1.0])], "not a step count"),
        ([good.clone(), good[..1].to_vec()].concat(), "appears twice"),
    ];
    for (state, msg) in cases {
        let e = adam.load_state(state).unwrap_err().to_string();
        assert!(e.contains(msg), "`{e}` should mention `{msg}`");
        assert_eq!(adam, before, "a failed load leaves the state alone");
    }
    let mut sgd = Optimizer::sgd(0.9, false, 0.0);
    let e = sgd.load_state(good).unwrap_err().to_string();
    assert!(e.contains("does not belong to SGD"), "{e}");
}

#[test]
#[should_panic(expected = "a checkpoint of another model?")]
fn loaded_state_of_the_wrong_size_panics_at_the_next_step() {
    let mut o = Optimizer::default_adam();
    let mut p = model();
    o.step(&mut p, &grads(0), 1e-3);
    let mut st = o.state();
    st[1].1.push(0.0);
    st[2].1.push(0.0);
    o.load_state(st).unwrap();
    o.step(&mut p, &grads(1), 1e-3);
}

// ---------------------------------------------------------------------------------------
// Clipping.

#[test]
fn clip_grad_norm_matches_torch() {
    // Norm 5 > 1: coef = 1 / (5 + 1e-6) in f32 = 0x3e4cccca (Python replay below).
    let mut g = vec![vec![3.0f32], vec![4.0]];
    assert_eq!(clip_grad_norm(&mut g, 1.0), 5.0);
    assert_eq!(
        [g[0][0].to_bits(), g[1][0].to_bits()],
        [0x3f199998, 0x3f4cccca]
    );
    // Below the limit: untouched, norm still returned.
    let mut g = vec![vec![3.0f32, 0.0], vec![-4.0]];
    assert_eq!(clip_grad_norm(&mut g, 10.0), 5.0);
    assert_eq!(g, [vec![3.0, 0.0], vec![-4.0]]);
    // Exactly at the limit: coef = 5 / (5 + 1e-6) < 1 scales by a hair, as torch does.
    let mut g = vec![vec![3.0f32, 4.0]];
    clip_grad_norm(&mut g, 5.0);
    assert!(g[0][0] < 3.0 && g[0][0] > 2.999_99);
    // Non-finite gradients: torch's clamp passes the NaN coefficient on to every gradient.
    let mut g = vec![vec![f32::NAN, 1.0], vec![2.0]];
    assert!(clip_grad_norm(&mut g, 1.0).is_nan());
    assert!(g.iter().flatten().all(|x| x.is_nan()));
    let mut g = vec![vec![f32::INFINITY, 1.0]];
    assert_eq!(clip_grad_norm(&mut g, 1.0), f32::INFINITY);
    assert!(g[0][0].is_nan() && g[0][1] == 0.0);
    // No gradients: norm 0, nothing to do.
    assert_eq!(clip_grad_norm(&mut [], 1.0), 0.0);
}

// ---------------------------------------------------------------------------------------
// Schedules (reference: Python `base * gamma ** (e // s)` and
// `eta_min + (base - eta_min) * (1 + math.cos(math.pi * e / t_max)) / 2`, printed below).

fn near(a: f32, b: f64) -> bool {
    (a as f64 - b).abs() <= 1e-6 * b.abs()
}

#[test]
fn step_lr_closed_form() {
    let s = LrSchedule::Step {
        step_size: 3,
        gamma: 0.1,
    };
    let want = [0.1, 0.1, 0.1, 0.01, 0.01, 0.01, 0.001]; // Python adds ~2e-18 to each
    for (e, w) in want.iter().enumerate() {
        assert!(
            near(s.lr_at(0.1, e), *w),
            "epoch {e}: {} vs {w}",
            s.lr_at(0.1, e)
        );
    }
    assert_eq!(LrSchedule::Constant.lr_at(0.3, 99), 0.3);
}

#[test]
fn cosine_lr_closed_form() {
    let s = LrSchedule::Cosine {
        t_max: 10,
        eta_min: 1e-4,
    };
    let want = [
        (0, 0.1),
        (1, 0.097_555_272_988_942_93),
        (5, 0.050_05),
        (9, 0.002_544_727_011_057_081),
        (10, 0.000_1),
        (15, 0.050_05),
    ];
    for (e, w) in want {
        assert!(
            near(s.lr_at(0.1, e), w),
            "epoch {e}: {} vs {w}",
            s.lr_at(0.1, e)
        );
    }
}

#[test]
fn linear_warmup() {
    // torch LinearLR(start_factor = 1/4, total_iters = 3): 1/4, 2/4, 3/4, then 1.
    let f: Vec<f64> = (0..6).map(|e| warmup_factor(e, 3)).collect();
    for (a, b) in f.iter().zip([0.25, 0.5, 0.75, 1.0, 1.0, 1.0]) {
        assert!((a - b).abs() < 1e-15, "{f:?}");
    }
    assert_eq!(warmup_factor(0, 0), 1.0);
    let s = LrSchedule::Cosine {
        t_max: 10,
        eta_min: 0.0,
    };
    assert!(near(
        s.lr_at_warmup(0.1, 1, 3),
        0.5 * 0.097_552_825_814_757_69
    ));
    assert_eq!(s.lr_at_warmup(0.1, 4, 3), s.lr_at(0.1, 4));
}

// The optimizer and clipping references, plain Python 3 (f32 emulated by rounding every
// operation through `struct`, exact for + - * / sqrt on f32 operands; scalars in f64 as
// torch's Python floats). Prints the bit patterns pinned above.
//
//     import math, struct
//     def f(x): return struct.unpack('<f', struct.pack('<f', x))[0]
//     def bits(x): return '0x%08x' % struct.unpack('<I', struct.pack('<f', x))[0]
//     P0 = [1.0, -2.0]; G = [[0.3, -1.7], [-0.45, 2.1], [0.9, 0.15]]
//     def sgd(lr, mom, wd, nesterov):
//         p = [f(x) for x in P0]; buf = None
//         for g in G:
//             g = [f(x) for x in g]
//             if wd != 0: g = [f(gi + f(f(wd) * pi)) for gi, pi in zip(g, p)]
//             if mom != 0:
//                 buf = list(g) if buf is None else [f(f(b * f(mom)) + gi) for b, gi in zip(buf, g)]
//                 g = [f(gi + f(f(mom) * b)) for gi, b in zip(g, buf)] if nesterov else buf
//             p = [f(pi + f(f(-lr) * gi)) for pi, gi in zip(p, g)]
//         return p
//     def adam(lr, b1, b2, eps, wd, decoupled):
//         p = [f(x) for x in P0]; m = [0.0, 0.0]; v = [0.0, 0.0]; step = 0
//         for g in G:
//             g = [f(x) for x in g]; step += 1
//             if wd != 0:
//                 if decoupled: p = [f(pi * f(1 - lr * wd)) for pi in p]
//                 else: g = [f(gi + f(f(wd) * pi)) for gi, pi in zip(g, p)]
//             w = f(1 - b1)
//             if abs(w) < 0.5: m = [f(mi + f(w * f(gi - mi))) for mi, gi in zip(m, g)]
//             else: m = [f(gi - f(f(gi - mi) * f(1 - w))) for mi, gi in zip(m, g)]
//             v = [f(f(vi * f(b2)) + f(f(f(1 - b2) * gi) * gi)) for vi, gi in zip(v, g)]
//             bc1 = 1 - b1 ** step; bc2 = 1 - b2 ** step
//             step_size = lr / bc1; bc2s = math.sqrt(bc2)
//             d = [f(f(f(math.sqrt(vi)) / f(bc2s)) + f(eps)) for vi in v]
//             p = [f(pi + f(f(f(-step_size) * mi) / di)) for pi, mi, di in zip(p, m, d)]
//         return p
//     print([bits(x) for x in sgd(0.1, 0.0, 0.0, False)])   # and the other cases above
//     print([bits(x) for x in adam(0.01, 0.9, 0.999, 1e-8, 0.0, False)])
//     coef = f(f(1.0) / f(f(5.0) + f(1e-6)))
//     print(bits(coef), bits(f(3 * coef)), bits(f(4 * coef)))
//
// A textbook f64 Adam/SGD (no f32 rounding) agrees with every pinned value to ~1e-7.
