//! Per-step synapse rules (issue 19): the prelude's trace STDP (`synapse = stdp(..)`)
//! against SpikingJelly 2.0's `STDPLearner` (tests/vectors/spikingjelly_stdp/, made with
//! its make_vectors.py): a dense and a convolutional projection (stride 1 and 2, zero
//! padding), SpikingJelly's default `f(w) = w`, soft bounds, additive, and the SGD step
//! that applies the learner's `delta_w`. The batch's change is summed and added once, so
//! `learned - before` is SpikingJelly's `delta_w`, to `1e-6 * max(1, |delta_w|)` of the
//! exact value (the files' `delta_w_exact`). CPU and the CUDA device on the host shim.

mod common;

use serde_json::Value;
use snn_runtime::Tensor;

fn vectors(name: &str) -> Value {
    let path = common::root().join(format!("tests/vectors/spikingjelly_stdp/{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// `{"shape", "data"}` as (shape, f32 data).
fn tensor(v: &Value) -> (Vec<usize>, Vec<f32>) {
    let shape = (v["shape"].as_array().unwrap().iter())
        .map(|d| d.as_u64().unwrap() as usize)
        .collect();
    let data = (v["data"].as_array().unwrap().iter())
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    (shape, data)
}

fn input(v: &Value) -> Tensor {
    let (shape, data) = tensor(v);
    Tensor::new(shape, data).unwrap()
}

/// The rule's arguments for a case's `modulation`.
fn rule_args(case: &Value) -> String {
    let (tp, tq) = (
        case["tau_pre"].as_f64().unwrap(),
        case["tau_post"].as_f64().unwrap(),
    );
    let f = match case["modulation"].as_str().unwrap() {
        "identity" => "dependence = linear".to_string(),
        "soft_bound" => "dependence = soft".to_string(),
        "soft_bound_ltp" => "dependence = soft, a_pre = 0.01, a_post = 0.01".to_string(),
        "additive" => "dependence = additive, a_pre = 0.0105, a_post = 0.01".to_string(),
        other => panic!("modulation {other}"),
    };
    format!("stdp(tau_pre = {tp:?}, tau_post = {tq:?}, {f})")
}

/// Learns once on `device` and returns `after - before` per weight, in f64.
fn learned_change(
    src: &str,
    device: &str,
    weight: &[f32],
    inputs: &[Tensor],
    t: usize,
    batch: usize,
) -> Option<Vec<f64>> {
    if device == "cuda-shim" && snn_runtime::cuda::shim::find_cxx().is_none() {
        println!("SKIP cuda-shim: no C++ compiler");
        return None;
    }
    let p = common::spyker::compile(src);
    let mut l = snnc::session::load_device(&p, device, Some(&common::cache_dir()))
        .unwrap_or_else(|d| panic!("{device}: {}", d.message));
    l.session.set_weight("h.weight", weight).unwrap();
    l.session.learn(inputs, t, batch).unwrap();
    l.session.sync_weights().unwrap();
    let after = l.session.weight("h.weight").unwrap();
    Some(
        after
            .iter()
            .zip(weight)
            .map(|(a, b)| *a as f64 - *b as f64)
            .collect(),
    )
}

fn assert_close(got: &[f64], exact: &[f32], what: &str) {
    assert_eq!(got.len(), exact.len(), "{what}");
    let mut worst = 0.0f64;
    for (i, (g, e)) in got.iter().zip(exact).enumerate() {
        let e = *e as f64;
        let tol = 1e-6 * e.abs().max(1.0);
        assert!(
            (g - e).abs() <= tol,
            "{what}: weight {i} changed by {g}, SpikingJelly's exact delta_w {e}"
        );
        worst = worst.max((g - e).abs() / e.abs().max(1.0));
    }
    assert!(
        exact.iter().any(|e| e.abs() > 1e-3),
        "{what}: nothing to learn"
    );
    println!("{what}: worst |change - delta_w| / max(1, |delta_w|) = {worst:.2e}");
}

fn linear_matches_spikingjelly(device: &str) {
    let v = vectors("linear");
    let sh = &v["shapes"];
    let at = |k: &str| sh[k].as_u64().unwrap() as usize;
    let (t, batch, n_in, n_out) = (at("T"), at("B"), at("in"), at("out"));
    for (name, case) in v["cases"].as_object().unwrap() {
        // Traces that persist over two `step()` calls are SpikingJelly's; snnc's start
        // again with every sample.
        if name == "two_sequences" {
            continue;
        }
        let seq = &case["sequences"][0];
        let mut args = rule_args(case);
        let (_, w0) = tensor(&case["weight"]);
        let (_, mut want) = tensor(&seq["delta_w_exact"]);
        if name == "on_grad_sgd" {
            // SGD(lr) on grad = -scale * delta_w: the rule's rates are lr * scale.
            let a = seq["lr"].as_f64().unwrap() * seq["scale"].as_f64().unwrap();
            args = format!(
                "stdp(tau_pre = 4.0, tau_post = 3.0, dependence = linear, a_pre = {a:?}, a_post = {a:?})"
            );
            want.iter_mut().for_each(|d| *d = (*d as f64 * a) as f32);
        }
        let src = format!(
            "model sj {{
  T = {t}
  batch = {batch}
  input x: [T, {n_in}]
  input y: [T, {n_out}]
  h = dense(x, {n_out}, bias = false, post = y, synapse = {args})
  n = IF(h)
  output spikes(n)
}}"
        );
        let inputs = [input(&seq["in_spike"]), input(&seq["out_spike"])];
        let Some(got) = learned_change(&src, device, &w0, &inputs, t, batch) else {
            return;
        };
        assert_close(&got, &want, &format!("{device} linear {name}"));
    }
}

fn conv_matches_spikingjelly(device: &str) {
    let v = vectors("conv");
    let sh = &v["shapes"];
    let at = |k: &str| sh[k].as_u64().unwrap() as usize;
    let (t, batch, c_in, c_out, h, w, k) = (
        at("T"),
        at("B"),
        at("C_in"),
        at("C_out"),
        at("H"),
        at("W"),
        at("K"),
    );
    for (name, case) in v["cases"].as_object().unwrap() {
        let (stride, pad) = (
            case["stride"].as_u64().unwrap(),
            case["padding"].as_u64().unwrap(),
        );
        let (_, w0) = tensor(&case["weight"]);
        let (_, want) = tensor(&case["delta_w_exact"]);
        let out = input(&case["out_spike"]);
        let (ho, wo) = (out.shape[3], out.shape[4]);
        let src = format!(
            "model sj {{
  T = {t}
  batch = {batch}
  input x: [T, {c_in}, {h}, {w}]
  input y: [T, {c_out}, {ho}, {wo}]
  h = conv2d(x, {c_out}, kernel = {k}, stride = {stride}, padding = {pad}, bias = false,
             post = y, synapse = {})
  n = IF(h)
  output spikes(n)
}}",
            rule_args(case)
        );
        let inputs = [input(&case["in_spike"]), out];
        let Some(got) = learned_change(&src, device, &w0, &inputs, t, batch) else {
            return;
        };
        assert_close(&got, &want, &format!("{device} conv {name}"));
    }
}

#[test]
fn trace_stdp_matches_spikingjelly_on_cpu() {
    linear_matches_spikingjelly("cpu");
    conv_matches_spikingjelly("cpu");
}

#[test]
fn trace_stdp_matches_spikingjelly_through_the_cuda_host_shim() {
    linear_matches_spikingjelly("cuda-shim");
    conv_matches_spikingjelly("cuda-shim");
}

/// tests/in/trace_stdp.snn (the prelude's `stdp` on a convolution, a user-written rule
/// with two presynaptic traces on a dense layer) learns the same weights, bit for bit, on
/// the CPU and on the CUDA device through the host shim, from the same random batch.
#[test]
fn per_step_rules_learn_the_same_weights_on_cpu_and_cuda_shim() {
    if snn_runtime::cuda::shim::find_cxx().is_none() {
        println!("SKIP cuda-shim: no C++ compiler");
        return;
    }
    let src = std::fs::read_to_string(common::root().join("tests/in/trace_stdp.snn")).unwrap();
    let p = common::spyker::compile(&src);
    let (t, batch) = (p.plan.t, p.plan.batch);
    let mut learned = Vec::new();
    for device in ["cpu", "cuda-shim"] {
        let mut l = snnc::session::load_device(&p, device, Some(&common::cache_dir()))
            .unwrap_or_else(|d| panic!("{device}: {}", d.message));
        let s = &mut l.session;
        // Weights that make both layers fire.
        for name in ["c.weight", "d.weight"] {
            let n = s.weight(name).unwrap().len();
            let w: Vec<f32> = (0..n)
                .map(|i| 0.2 + (i * 37 % 101) as f32 / 101.0)
                .collect();
            s.set_weight(name, &w).unwrap();
        }
        let img: Vec<f32> = (0..batch * 144)
            .map(|i| (i * 53 % 97) as f32 / 97.0)
            .collect();
        let inputs = [Tensor::new(vec![batch, 1, 12, 12], img).unwrap()];
        let before: Vec<Vec<f32>> = s.weights().to_vec();
        s.learn(&inputs, t, batch).unwrap();
        s.sync_weights().unwrap();
        for (name, i) in [("c.weight", 0), ("d.weight", 1)] {
            let w = s.weight(name).unwrap();
            let moved = w.iter().zip(&before[i]).filter(|(a, b)| a != b).count();
            assert!(
                moved > w.len() / 4,
                "{device}: only {moved} of {name} moved"
            );
        }
        learned.push(s.weights().to_vec());
    }
    for (a, b) in learned[0].iter().zip(&learned[1]) {
        assert!(
            a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()),
            "CPU and shim learned different weights"
        );
    }
}

/// A gate on a per-step rule lets through only the postsynaptic events of the neurons it
/// selects (`on_step` and `on_pre` run for every pair): a gate of ones learns exactly what
/// no gate does, a gate of zeros leaves only the depression of `on_pre` (every weight goes
/// down or stays), and a gate of one neuron potentiates that neuron's row only. CPU and shim.
fn gated_per_step(device: &str) {
    if device == "cuda-shim" && snn_runtime::cuda::shim::find_cxx().is_none() {
        println!("SKIP cuda-shim: no C++ compiler");
        return;
    }
    let v = vectors("linear");
    let case = &v["cases"]["tau2"];
    let seq = &case["sequences"][0];
    let (t, batch, n_in, n_out) = (8usize, 3usize, 6usize, 4usize);
    let (_, w0) = tensor(&case["weight"]);
    let model = |gate: bool| {
        format!(
            "model g {{
  T = {t}
  batch = {batch}
  input x: [T, {n_in}]
  input y: [T, {n_out}]
  input g: [{n_out}]
  h = dense(x, {n_out}, bias = false, post = y, synapse = stdp(){})
  n = IF(h)
  output spikes(n)
}}",
            if gate { ", gate = g" } else { "" }
        )
    };
    let learn = |src: &str, gate: Vec<f32>| {
        let p = common::spyker::compile(src);
        let mut l = snnc::session::load_device(&p, device, Some(&common::cache_dir())).unwrap();
        l.session.set_weight("h.weight", &w0).unwrap();
        let inputs = [
            input(&seq["in_spike"]),
            input(&seq["out_spike"]),
            Tensor::new(vec![batch, n_out], gate).unwrap(),
        ];
        l.session.learn(&inputs, t, batch).unwrap();
        l.session.sync_weights().unwrap();
        l.session.weight("h.weight").unwrap().to_vec()
    };
    let ones = vec![1.0f32; batch * n_out];
    let free = learn(&model(false), ones.clone());
    assert_eq!(learn(&model(true), ones), free, "{device}: a gate of ones");
    let none = learn(&model(true), vec![0.0; batch * n_out]);
    assert!(
        none.iter().zip(&w0).all(|(a, b)| a <= b),
        "{device}: only depression"
    );
    assert!(
        none.iter().zip(&w0).any(|(a, b)| a < b),
        "{device}: nothing depressed"
    );
    let mut first = vec![0.0f32; batch * n_out];
    (0..batch).for_each(|b| first[b * n_out] = 1.0);
    let one = learn(&model(true), first);
    for o in 0..n_out {
        let row = |w: &[f32]| w[o * n_in..(o + 1) * n_in].to_vec();
        let want = if o == 0 { row(&free) } else { row(&none) };
        assert_eq!(row(&one), want, "{device}: row {o}");
    }
}

#[test]
fn a_gate_selects_the_postsynaptic_events_of_a_per_step_rule() {
    gated_per_step("cpu");
    gated_per_step("cuda-shim");
}
