//! Synapse models (issue 19): Spyker's simplified STDP and R-STDP written in the language
//! (`synapse = spyker_stdp(..)`, `synapse = rstdp(..)`, the prelude's rules) against
//! Spyker 0.1.0's own updates (tests/vectors/spyker/stdp.json, rstdp.json; docs/spyker.md):
//! every weight bit for bit, winners applied in sample order, on the CPU and through the
//! CUDA device on the host shim.

mod common;

use common::spyker::{compile, dims, flat, vectors};

use serde_json::Value;
use snn_runtime::Tensor;
use snnc::ir::kernel::Program;

/// Spyker's `[B, T, ...]` as snnc's `[T, B, ...]`.
fn swap_bt(data: &[f32], batch: usize, t: usize) -> Vec<f32> {
    let n = data.len() / (batch * t);
    let mut out = vec![0.0; data.len()];
    for b in 0..batch {
        for s in 0..t {
            out[(s * batch + b) * n..(s * batch + b + 1) * n]
                .copy_from_slice(&data[(b * t + s) * n..(b * t + s + 1) * n]);
        }
    }
    out
}

/// A `[T, B, ..]` input from Spyker's `[B, T, ..]` list.
fn wave(v: &Value) -> Tensor {
    let d = dims(v);
    let (batch, t) = (d[0], d[1]);
    let shape = [t, batch]
        .into_iter()
        .chain(d[2..].iter().copied())
        .collect();
    Tensor::new(shape, swap_bt(&flat(v), batch, t)).unwrap()
}

/// The gate of a case's winners: `[B, C, H, W]`, 1 at each applied winner (`c >= 0`).
fn gate(winners: &Value, c: usize, h: usize, w: usize) -> Tensor {
    let per_sample = winners.as_array().unwrap();
    let mut g = vec![0.0f32; per_sample.len() * c * h * w];
    for (b, list) in per_sample.iter().enumerate() {
        for win in list.as_array().unwrap() {
            if win["c"].as_i64().unwrap() < 0 {
                continue;
            }
            let at = |k: &str| win[k].as_u64().unwrap() as usize;
            g[((b * c + at("z")) * h + at("y")) * w + at("x")] = 1.0;
        }
    }
    Tensor::new(vec![per_sample.len(), c, h, w], g).unwrap()
}

/// Learns once on `device` from `kernel` with `inputs` and returns the weight `c.weight`;
/// `None` when the device is not there.
fn learn(
    p: &Program,
    device: &str,
    kernel: &[f32],
    inputs: &[Tensor],
    t: usize,
    batch: usize,
) -> Option<Vec<f32>> {
    if device == "cuda-shim" && snn_runtime::cuda::shim::find_cxx().is_none() {
        println!("SKIP cuda-shim: no C++ compiler");
        return None;
    }
    let mut l = snnc::session::load_device(p, device, Some(&common::cache_dir()))
        .unwrap_or_else(|d| panic!("{device}: {}", d.message));
    l.session.set_weight("c.weight", kernel).unwrap();
    l.session.learn(inputs, t, batch).unwrap();
    l.session.sync_weights().unwrap();
    Some(l.session.weight("c.weight").unwrap().to_vec())
}

fn assert_bits(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let diff: Vec<usize> = (0..got.len())
        .filter(|&i| got[i].to_bits() != want[i].to_bits())
        .collect();
    assert!(
        diff.is_empty(),
        "{what}: {} of {} weights differ, first at {}: {} vs Spyker {}",
        diff.len(),
        got.len(),
        diff[0],
        got[diff[0]],
        want[diff[0]]
    );
}

/// Every case of stdp.json: the stabilizer on and off, bounds [0.2, 0.8] with large rates,
/// real `convwta` winners and hand-made ones (a border winner, a skipped `c = -1`, a
/// winner that never fired, the same map in two samples).
fn stdp_matches_spyker(device: &str) {
    let v = vectors("stdp");
    let t = v["T"].as_u64().unwrap() as usize;
    let pad = v["pad"].as_u64().unwrap();
    let (x, y) = (wave(&v["wave"]), wave(&v["spikes"]));
    let (wd, sd) = (dims(&v["wave"]), dims(&v["spikes"]));
    let (batch, c_in, c_out, h, w) = (wd[0], wd[2], sd[2], sd[3], sd[4]);
    let kd = dims(&v["kernel_before"]);
    let before = flat(&v["kernel_before"]);
    for case in v["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let cfg = &case["configs"][0];
        let src = format!(
            "model stdp_case {{
  T = {t}
  batch = {batch}
  input x: [T, {c_in}, {h}, {w}]
  input y: [T, {c_out}, {h}, {w}]
  input g: [{c_out}, {h}, {w}]
  c = conv2d(x, {c_out}, kernel = {k}, padding = {pad}, bias = false, post = y, gate = g,
             synapse = spyker_stdp(a_plus = {p}, a_minus = {n}, lower = {lo}, upper = {hi}, stabilize = {st}))
  n = FireOnce(c, v_threshold = 15.0)
  output spikes(n)
}}",
            k = kd[2],
            p = cfg["positive"],
            n = cfg["negative"],
            lo = cfg["lower"],
            hi = cfg["upper"],
            st = cfg["stabilize"],
        );
        let p = compile(&src);
        let g = gate(&case["winners"], c_out, h, w);
        let Some(after) = learn(&p, device, &before, &[x.clone(), y.clone(), g], t, batch) else {
            return;
        };
        let want = flat(&case["kernel_after"]);
        assert_bits(&after, &want, &format!("{device} {name}"));
        let changed = (0..after.len()).filter(|&i| after[i] != before[i]).count();
        assert_eq!(changed as u64, case["changed"].as_u64().unwrap(), "{name}");
        println!("{device} {name}: {changed} weights changed, all bit for bit");
    }
}

#[test]
fn spyker_stdp_matches_spyker_bit_for_bit_on_cpu() {
    stdp_matches_spyker("cpu");
}

#[test]
fn spyker_stdp_matches_spyker_bit_for_bit_through_the_cuda_host_shim() {
    stdp_matches_spyker("cuda-shim");
}

/// R-STDP: the reward pair where the decision was right, the punish pair where it was
/// wrong (`reward` = +1 / -1 per sample), nothing for the silent sample; `t_post = T - 1`.
fn rstdp_matches_spyker(device: &str) {
    let v = vectors("rstdp");
    let t = v["T"].as_u64().unwrap() as usize;
    let pad = v["pad"].as_u64().unwrap();
    let (x, y) = (wave(&v["wave"]), wave(&v["spikes"]));
    let (wd, sd) = (dims(&v["wave"]), dims(&v["spikes"]));
    let (batch, c_in, c_out) = (wd[0], wd[2], sd[2]);
    let (hi, wi, h, w) = (wd[3], wd[4], sd[3], sd[4]);
    let kd = dims(&v["kernel_before"]);
    let before = flat(&v["kernel_before"]);
    let (reward, punish) = (&v["configs"][0], &v["configs"][1]);
    let src = format!(
        "model rstdp_case {{
  T = {t}
  batch = {batch}
  input x: [T, {c_in}, {hi}, {wi}]
  input y: [T, {c_out}, {h}, {w}]
  input g: [{c_out}, {h}, {w}]
  input r: [1]
  c = conv2d(x, {c_out}, kernel = {k}, padding = {pad}, bias = false, post = y, gate = g, reward = r,
             synapse = rstdp(reward_plus = {rp}, reward_minus = {rm}, punish_plus = {pp}, punish_minus = {pm},
                             lower = {lo}, upper = {up}))
  n = FireOnce(c)
  output spikes(n)
}}",
        k = kd[2],
        rp = reward["positive"],
        rm = reward["negative"],
        pp = punish["positive"],
        pm = punish["negative"],
        lo = reward["lower"],
        up = reward["upper"],
    );
    let p = compile(&src);
    for case in v["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let g = gate(&case["winners"], c_out, h, w);
        // Spyker's config index: 0 rewards, 1 punishes; a silent sample has no winner.
        let r: Vec<f32> = (case["winners"].as_array().unwrap().iter())
            .map(|list| match list.as_array().unwrap().first() {
                Some(win) if win["c"].as_i64() == Some(0) => 1.0,
                Some(_) => -1.0,
                None => 0.0,
            })
            .collect();
        let r = Tensor::new(vec![batch, 1], r).unwrap();
        let Some(after) = learn(&p, device, &before, &[x.clone(), y.clone(), g, r], t, batch)
        else {
            return;
        };
        assert_bits(
            &after,
            &flat(&case["kernel_after"]),
            &format!("{device} {name}"),
        );
        let changed = (0..after.len()).filter(|&i| after[i] != before[i]).count();
        assert_eq!(changed as u64, case["changed"].as_u64().unwrap(), "{name}");
        println!("{device} {name}: {changed} weights changed, all bit for bit");
    }
}

#[test]
fn rstdp_matches_spyker_bit_for_bit_on_cpu() {
    rstdp_matches_spyker("cpu");
}

#[test]
fn rstdp_matches_spyker_bit_for_bit_through_the_cuda_host_shim() {
    rstdp_matches_spyker("cuda-shim");
}
