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
    let mut l = load(p, device)?;
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

/// A random cumulative 0/1 wave `[T, B, F]` (each neuron fires once at a random step or
/// never), from a small LCG so the test needs no RNG crate.
fn random_wave(t: usize, batch: usize, f: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    let mut next = || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (s >> 33) as usize
    };
    let mut out = vec![0.0f32; t * batch * f];
    for b in 0..batch {
        for i in 0..f {
            let first = next() % (t + 3); // >= t: never fires
            for step in first..t {
                out[(step * batch + b) * f + i] = 1.0;
            }
        }
    }
    out
}

/// The first step of `wave[.., b, i]` that is non-zero, `t` if none.
fn first(wave: &[f32], t: usize, batch: usize, f: usize, b: usize, i: usize) -> usize {
    (0..t)
        .find(|&s| wave[(s * batch + b) * f + i] != 0.0)
        .unwrap_or(t)
}

/// Spyker's STDP update of one synapse, written out here independently of the compiler.
fn spyker_update(w: f32, t_pre: usize, t_post: usize, a: (f64, f64), stabilize: bool) -> f32 {
    let (lo, hi) = (0.0f64, 1.0f64);
    let old = w as f64;
    let f = if stabilize {
        (old - lo) * (hi - old)
    } else {
        1.0
    };
    let rate = if t_pre <= t_post { a.0 } else { a.1 };
    (lo.max((old + rate * f).min(hi))) as f32
}

/// Without a gate every postsynaptic neuron that fired is an event, once per sample, in
/// sample then index order: a dense layer and a strided, padded convolution against the
/// rule computed here by hand, bit for bit, on both devices; then the learning switch and a
/// rule parameter changed at run time.
fn ungated_rules_match_a_reference(device: &str) {
    let (t, batch) = (7usize, 3usize);
    let a = (0.004f64, -0.003f64);
    // Dense 12 -> 5.
    let (n_in, n_out) = (12usize, 5usize);
    let src = format!(
        "model dense_rule {{
  T = {t}
  batch = {batch}
  input x: [T, {n_in}]
  input y: [T, {n_out}]
  h = dense(x, {n_out}, bias = false, post = y, synapse = spyker_stdp())
  n = FireOnce(h)
  output spikes(n)
}}"
    );
    let p = compile(&src);
    let x = random_wave(t, batch, n_in, 1);
    let y = random_wave(t, batch, n_out, 2);
    let w0: Vec<f32> = (0..n_in * n_out).map(|i| (i % 17) as f32 / 17.0).collect();
    let mut want = w0.clone();
    for b in 0..batch {
        for o in 0..n_out {
            let tp = first(&y, t, batch, n_out, b, o);
            if tp == t {
                continue;
            }
            for i in 0..n_in {
                let tq = first(&x, t, batch, n_in, b, i);
                want[o * n_in + i] = spyker_update(want[o * n_in + i], tq, tp, a, true);
            }
        }
    }
    let inputs = [
        Tensor::new(vec![t, batch, n_in], x).unwrap(),
        Tensor::new(vec![t, batch, n_out], y).unwrap(),
    ];
    let Some(mut l) = load(&p, device) else {
        return;
    };
    l.session.set_weight("h.weight", &w0).unwrap();
    l.session.learn(&inputs, t, batch).unwrap();
    l.session.sync_weights().unwrap();
    assert_bits(
        l.session.weight("h.weight").unwrap(),
        &want,
        &format!("{device} dense"),
    );
    // Switched off, the weights stay; with a_plus = 0 no weight goes up.
    l.session.set_weight("h.weight", &w0).unwrap();
    l.session.set_learning("h", false).unwrap();
    l.session.learn(&inputs, t, batch).unwrap();
    l.session.sync_weights().unwrap();
    assert_eq!(l.session.weight("h.weight").unwrap(), &w0[..]);
    l.session.set_learning("h", true).unwrap();
    l.session.set_rule_param("h", "a_plus", 0.0).unwrap();
    assert_eq!(l.session.rule_param("h", "a_plus").unwrap(), 0.0);
    l.session.learn(&inputs, t, batch).unwrap();
    l.session.sync_weights().unwrap();
    let after = l.session.weight("h.weight").unwrap();
    assert!(after.iter().zip(&w0).all(|(a, b)| a <= b));
    assert!(after.iter().zip(&w0).any(|(a, b)| a < b));
    let e = l.session.set_rule_param("h", "nope", 1.0).unwrap_err();
    assert!(e.to_string().contains("has no parameter `nope`"), "{e}");
    let e = l.session.set_learning("x", true).unwrap_err();
    assert!(
        e.to_string().contains("`x` is not a plastic projection"),
        "{e}"
    );

    // Conv 2x7x6 -> 3 maps, kernel 3x2, stride 2, padding 1.
    let (c_in, h, w, c_out, kh, kw, s, pad) = (2, 7, 6, 3, 3, 2, 2, 1);
    let (ho, wo) = ((h + 2 * pad - kh) / s + 1, (w + 2 * pad - kw) / s + 1);
    let src = format!(
        "model conv_rule {{
  T = {t}
  batch = {batch}
  input x: [T, {c_in}, {h}, {w}]
  input y: [T, {c_out}, {ho}, {wo}]
  c = conv2d(x, {c_out}, kernel = [{kh}, {kw}], stride = {s}, padding = {pad}, bias = false,
             post = y, synapse = spyker_stdp(stabilize = false))
  n = FireOnce(c)
  output spikes(n)
}}"
    );
    let p = compile(&src);
    let (fi, fo) = (c_in * h * w, c_out * ho * wo);
    let x = random_wave(t, batch, fi, 3);
    let y = random_wave(t, batch, fo, 4);
    let nw = c_out * c_in * kh * kw;
    let w0: Vec<f32> = (0..nw).map(|i| (i % 13) as f32 / 13.0).collect();
    let mut want = w0.clone();
    for b in 0..batch {
        for z in 0..c_out {
            for oy in 0..ho {
                for ox in 0..wo {
                    let tp = first(&y, t, batch, fo, b, (z * ho + oy) * wo + ox);
                    if tp == t {
                        continue;
                    }
                    for c in 0..c_in {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let (iy, ix) = (oy * s + ky, ox * s + kx);
                                let tq = if iy < pad || ix < pad || iy - pad >= h || ix - pad >= w {
                                    t
                                } else {
                                    first(&x, t, batch, fi, b, (c * h + iy - pad) * w + ix - pad)
                                };
                                let wi = ((z * c_in + c) * kh + ky) * kw + kx;
                                want[wi] = spyker_update(want[wi], tq, tp, a, false);
                            }
                        }
                    }
                }
            }
        }
    }
    let inputs = [
        Tensor::new(vec![t, batch, c_in, h, w], x).unwrap(),
        Tensor::new(vec![t, batch, c_out, ho, wo], y).unwrap(),
    ];
    let Some(mut l) = load(&p, device) else {
        return;
    };
    l.session.set_weight("c.weight", &w0).unwrap();
    l.session.learn(&inputs, t, batch).unwrap();
    l.session.sync_weights().unwrap();
    let got = l.session.weight("c.weight").unwrap();
    assert_bits(got, &want, &format!("{device} conv"));
    let changed = got.iter().zip(&w0).filter(|(a, b)| a != b).count();
    assert!(changed > nw / 2, "only {changed} of {nw} weights changed");
    println!("{device}: dense and conv (stride 2, padding 1) rules bit for bit; {changed} conv weights changed");
}

fn load(p: &Program, device: &str) -> Option<snnc::session::DeviceLoaded> {
    if device == "cuda-shim" && snn_runtime::cuda::shim::find_cxx().is_none() {
        println!("SKIP cuda-shim: no C++ compiler");
        return None;
    }
    Some(
        snnc::session::load_device(p, device, Some(&common::cache_dir()))
            .unwrap_or_else(|d| panic!("{device}: {}", d.message)),
    )
}

#[test]
fn ungated_rules_match_a_reference_on_cpu() {
    ungated_rules_match_a_reference("cpu");
}

#[test]
fn ungated_rules_match_a_reference_through_the_cuda_host_shim() {
    ungated_rules_match_a_reference("cuda-shim");
}

/// `[B, C, H, W]` first-spike times (`T` = never) as a `[T, B, C, H, W]` cumulative wave.
fn scatter(first: &[f32], batch: usize, t: usize) -> Vec<f32> {
    let n = first.len() / batch;
    let mut out = vec![0.0f32; t * first.len()];
    for s in 0..t {
        for (i, &f) in first.iter().enumerate() {
            if (f as usize) <= s {
                out[(s * batch + i / n) * n + i % n] = 1.0;
            }
        }
    }
    out
}

/// A `[T, B, F]` wave's first-spike times `[B, F]` (`T` = never).
fn gather(wave: &[f32], batch: usize, t: usize) -> Vec<f32> {
    let f = wave.len() / (t * batch);
    (0..batch * f)
        .map(|i| first(wave, t, batch, f, i / f, i % f) as f32)
        .collect()
}

/// Kheradpisheh's two learning layers as Spyker's example composes them, at toy size
/// (layers.json): layer 1 learns from `wta(inhibit(conv1), k = 5, radius = 2)`, then layer
/// 2 learns from the inhibited pooled wave of the *updated* layer 1 (a second forward
/// pass), each with the other layer frozen. Kernels, spikes and the pooled wave bit for bit.
fn kheradpisheh_layers_match_spyker(device: &str) {
    let v = vectors("layers");
    let t = v["T"].as_u64().unwrap() as usize;
    let batch = dims(&v["input_first_spike"])[0];
    let src = format!(
        "model k_layers {{
  T = {t}
  batch = {batch}
  input x: [T, 2, 12, 12]
  c1 = conv2d(x, 4, kernel = 5, padding = 2, bias = false, post = n1,
              synapse = spyker_stdp(), gate = wta(h1, k = 5, radius = 2, threshold = 10.0))
  h1 = inhibit(c1, threshold = 10.0)
  n1 = FireOnce(h1, v_threshold = 10.0)
  s1 = FireOnce(c1, v_threshold = 10.0)
  p1 = maxpool2d(s1, 2, padding = 1)
  a = inhibit(p1)
  c2 = conv2d(a, 6, kernel = 2, padding = 1, bias = false,
              synapse = spyker_stdp(), gate = wta(h2, k = 8, radius = 1, threshold = 1.0))
  h2 = inhibit(c2, threshold = 1.0)
  n2 = FireOnce(h2, v_threshold = 1.0)
  pa = FireOnce(a, v_threshold = 0.5)
  output spikes(n1)
  output spikes(pa)
  output spikes(n2)
}}"
    );
    let p = compile(&src);
    let Some(mut l) = load(&p, device) else {
        return;
    };
    let s = &mut l.session;
    s.set_weight("c1.weight", &flat(&v["conv1_kernel"]))
        .unwrap();
    s.set_weight("c2.weight", &flat(&v["conv2_kernel"]))
        .unwrap();
    let x = scatter(&flat(&v["input_first_spike"]), batch, t);
    let x = [Tensor::new(vec![t, batch, 2, 12, 12], x).unwrap()];
    let out = |o: &[(snn_runtime::plan::OutputDecl, Tensor)], name: &str| {
        let data = &o.iter().find(|(d, _)| d.name == name).unwrap().1.data;
        gather(data, batch, t)
    };
    // Layer 1.
    s.set_learning("c2", false).unwrap();
    let o = s.learn(&x, t, batch).unwrap();
    assert_bits(
        &out(&o, "n1.spikes"),
        &flat(&v["conv1_out_first_spike"]),
        "conv1 spikes",
    );
    s.sync_weights().unwrap();
    let c1 = s.weight("c1.weight").unwrap().to_vec();
    assert_bits(
        &c1,
        &flat(&v["conv1_kernel_after"]),
        &format!("{device} conv1 kernel"),
    );
    assert_eq!(
        s.weight("c2.weight").unwrap(),
        &flat(&v["conv2_kernel"])[..]
    );
    // Layer 2, through the updated layer 1.
    s.set_learning("c1", false).unwrap();
    s.set_learning("c2", true).unwrap();
    let o = s.learn(&x, t, batch).unwrap();
    assert_bits(
        &out(&o, "pa.spikes"),
        &flat(&v["pooled_inhibited_first_spike"]),
        "inhibited pooled wave",
    );
    assert_bits(
        &out(&o, "n2.spikes"),
        &flat(&v["conv2_out_first_spike"]),
        "conv2 spikes",
    );
    s.sync_weights().unwrap();
    assert_eq!(s.weight("c1.weight").unwrap(), &c1[..], "layer 1 frozen");
    let c2 = s.weight("c2.weight").unwrap();
    assert_bits(
        c2,
        &flat(&v["conv2_kernel_after"]),
        &format!("{device} conv2 kernel"),
    );
    println!("{device}: Kheradpisheh layer 1 and layer 2 steps bit for bit");

    // `learn_step` runs the forward pass only as far as the enabled rules read (layer 1's
    // step stops before layer 2) and learns the same kernels.
    let layer1 = &p.plan.learn[0];
    assert!(layer1.forward_ops < p.plan.learn[1].forward_ops);
    s.set_weight("c1.weight", &flat(&v["conv1_kernel"]))
        .unwrap();
    s.set_weight("c2.weight", &flat(&v["conv2_kernel"]))
        .unwrap();
    s.set_learning("c1", true).unwrap();
    s.set_learning("c2", false).unwrap();
    s.learn_step(&x, t, batch).unwrap();
    s.set_learning("c1", false).unwrap();
    s.set_learning("c2", true).unwrap();
    s.learn_step(&x, t, batch).unwrap();
    s.sync_weights().unwrap();
    assert_bits(
        s.weight("c1.weight").unwrap(),
        &flat(&v["conv1_kernel_after"]),
        "learn_step conv1",
    );
    assert_bits(
        s.weight("c2.weight").unwrap(),
        &flat(&v["conv2_kernel_after"]),
        "learn_step conv2",
    );
}

#[test]
fn kheradpisheh_layers_match_spyker_on_cpu() {
    kheradpisheh_layers_match_spyker("cpu");
}

#[test]
fn kheradpisheh_layers_match_spyker_through_the_cuda_host_shim() {
    kheradpisheh_layers_match_spyker("cuda-shim");
}

/// `weights = c`: a projection reads another's weight (Kheradpisheh's feature pass reuses
/// layer 2's learned kernel on un-inhibited input), before and after the owner learns; the
/// plan has one weight for both.
#[test]
fn a_projection_can_use_another_projections_weight() {
    let src = "model tied {
  T = 6
  batch = 2
  input x: [T, 2, 6, 6]
  input y: [T, 3, 6, 6]
  c = conv2d(x, 3, kernel = 3, padding = 1, bias = false, post = y, synapse = spyker_stdp())
  n = FireOnce(c, v_threshold = 1.5)
  f = conv2d(x, 3, kernel = 3, padding = 1, bias = false, weights = c)
  m = FireOnce(f, v_threshold = 1.5)
  output spikes(n)
  output spikes(m)
}";
    let p = compile(src);
    assert_eq!(p.plan.weights.len(), 1, "one weight for both projections");
    let Some(mut l) = load(&p, "cpu") else {
        return;
    };
    let (t, batch) = (6, 2);
    let x = random_wave(t, batch, 72, 5);
    let y = random_wave(t, batch, 108, 6);
    let inputs = [
        Tensor::new(vec![t, batch, 2, 6, 6], x).unwrap(),
        Tensor::new(vec![t, batch, 3, 6, 6], y).unwrap(),
    ];
    let w0: Vec<f32> = (0..54).map(|i| 0.2 + (i % 7) as f32 / 10.0).collect();
    l.session.set_weight("c.weight", &w0).unwrap();
    for round in 0..2 {
        let out = l.session.learn(&inputs, t, batch).unwrap();
        let (n, m) = (&out[0].1.data, &out[1].1.data);
        assert_eq!(
            n, m,
            "round {round}: the tied layer reads the owner's weight"
        );
        assert!(n.iter().any(|&s| s != 0.0), "round {round}: nothing fired");
    }
    l.session.sync_weights().unwrap();
    assert_ne!(
        l.session.weight("c.weight").unwrap(),
        &w0[..],
        "the rule learned"
    );
}

/// Per-synapse state (`state count = 0.0`): a plan weight `h.count` of the weight's shape,
/// read and written by the rule at each event, kept between batches. A rule whose steps
/// shrink with the number of updates a synapse has had, against a reference written here;
/// CPU and the host shim, two batches.
fn synapse_state_persists(device: &str) {
    let (t, batch, n_in, n_out) = (5usize, 3usize, 7usize, 4usize);
    let src = format!(
        "synapse counted {{
  param a = 0.01
  state count = 0.0
  on_post {{
    w = w + a / (1.0 + count)
    count = count + 1.0
  }}
}}
model m {{
  T = {t}
  batch = {batch}
  input x: [T, {n_in}]
  input y: [T, {n_out}]
  h = dense(x, {n_out}, bias = false, post = y, synapse = counted())
  n = FireOnce(h)
  output spikes(n)
}}"
    );
    let p = compile(&src);
    let names: Vec<&str> = p.plan.weights.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, ["h.weight", "h.count"]);
    let Some(mut l) = load(&p, device) else {
        return;
    };
    let w0 = vec![0.5f32; n_in * n_out];
    l.session.set_weight("h.weight", &w0).unwrap();
    let (mut want_w, mut want_c) = (w0.clone(), vec![0.0f32; n_in * n_out]);
    for round in 0..2u64 {
        let x = random_wave(t, batch, n_in, 10 + round);
        let y = random_wave(t, batch, n_out, 20 + round);
        for b in 0..batch {
            for o in 0..n_out {
                if first(&y, t, batch, n_out, b, o) == t {
                    continue;
                }
                for i in 0..n_in {
                    let k = o * n_in + i;
                    want_w[k] = (want_w[k] as f64 + 0.01 / (1.0 + want_c[k] as f64)) as f32;
                    want_c[k] += 1.0;
                }
            }
        }
        let inputs = [
            Tensor::new(vec![t, batch, n_in], x).unwrap(),
            Tensor::new(vec![t, batch, n_out], y).unwrap(),
        ];
        l.session.learn(&inputs, t, batch).unwrap();
        l.session.sync_weights().unwrap();
        let what = format!("{device} round {round}");
        assert_bits(l.session.weight("h.weight").unwrap(), &want_w, &what);
        assert_bits(l.session.weight("h.count").unwrap(), &want_c, &what);
    }
    assert!(want_c.iter().any(|&c| c >= 3.0), "too few events to test");
}

#[test]
fn synapse_state_persists_on_cpu() {
    synapse_state_persists("cpu");
}

#[test]
fn synapse_state_persists_through_the_cuda_host_shim() {
    synapse_state_persists("cuda-shim");
}
