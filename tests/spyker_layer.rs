//! Spyker's layer stage in the language (issue 19): the fire-once IF layer (`conv2d` +
//! `FireOnce`) and point-wise lateral inhibition (`inhibit`), against Spyker 0.1.0's own
//! vectors (tests/vectors/spyker/, docs/spyker.md): potentials to 1e-6 relative, spikes and
//! inhibition bit for bit, on the CPU and through the CUDA device on the host shim.

mod common;

use common::spyker::{compile, dims, flat, vectors};

use snn_runtime::Tensor;
use snnc::ir::kernel::Program;

/// Spyker's `[B, T, ...]` as snnc's `[T, B, ...]` (and back: the swap is its own inverse
/// given the other order of the first two dimensions).
fn swap_bt(data: &[f32], first: usize, second: usize) -> Vec<f32> {
    let n = data.len() / (first * second);
    let mut out = vec![0.0; data.len()];
    for a in 0..first {
        for b in 0..second {
            out[(b * first + a) * n..(b * first + a + 1) * n]
                .copy_from_slice(&data[(a * second + b) * n..(a * second + b + 1) * n]);
        }
    }
    out
}

/// Runs `p` on `device` (`cpu`, `cuda-shim` or `cuda`) with `weights` set first; `None`
/// when that device is not there (no C++ compiler for the shim, no GPU).
fn run(
    p: &Program,
    device: &str,
    weights: &[(&str, &[f32])],
    input: Tensor,
    t: usize,
    batch: usize,
) -> Option<Vec<(String, Tensor)>> {
    if device == "cuda-shim" && snn_runtime::cuda::shim::find_cxx().is_none() {
        println!("SKIP cuda-shim: no C++ compiler");
        return None;
    }
    if device == "cuda" && !snn_runtime::cuda::driver_present() {
        println!("SKIP cuda: no CUDA device (libcuda.so not found)");
        return None;
    }
    let mut l = snnc::session::load_device(p, device, Some(&common::cache_dir()))
        .unwrap_or_else(|d| panic!("{device}: {}", d.message));
    for (name, data) in weights {
        l.session.set_weight(name, data).unwrap();
    }
    let out = l.session.run(&[input], t, batch).unwrap();
    Some(out.into_iter().map(|(d, t)| (d.name, t)).collect())
}

fn output<'a>(out: &'a [(String, Tensor)], name: &str) -> &'a [f32] {
    &out.iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no output `{name}`"))
        .1
        .data
}

/// `|a - b| <= 1e-6 * max(1, |b|)` everywhere.
fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let mut worst = 0.0f32;
    for (i, (&a, &b)) in got.iter().zip(want).enumerate() {
        let err = (a - b).abs() / b.abs().max(1.0);
        worst = worst.max(err);
        assert!(err <= 1e-6, "{what}[{i}]: {a} vs Spyker's {b}");
    }
    println!("{what}: max relative difference to Spyker {worst:.2e}");
}

fn assert_bits(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (&a, &b)) in got.iter().zip(want).enumerate() {
        assert_eq!(a.to_bits(), b.to_bits(), "{what}[{i}]: {a} vs Spyker's {b}");
    }
}

/// `conv_fire.json`'s layer: `Conv(2, 3, 5, pad=2)` on a `[2, 10, 10]` wave, fired at the
/// case's threshold; Spyker's `threshold` is the `Thresholded` neuron written here (its
/// potential, zeroed where `V <= th`), fed by the same conv.
fn conv_fire_model(threshold: f64) -> String {
    format!(
        "neuron Thresholded {{\n  param th = 0.0\n  state v = 0.0\n  update {{ v = (I > th) * I }}\n  spike v > th\n}}\n\
         model l {{\n  T = 6\n  input s: [T, 2, 10, 10]\n  c = conv2d(s, 3, kernel = 5, padding = 2, bias = false)\n  \
         n = FireOnce(c, v_threshold = {threshold:?})\n  z = Thresholded(c, th = {threshold:?})\n  \
         output spikes(n)\n  output trace(n.v)\n  output trace(z.v)\n}}\n"
    )
}

fn fire_once_matches_spyker(device: &str) -> Option<()> {
    let v = vectors("conv_fire");
    let t = v["T"].as_u64().unwrap() as usize;
    let wave_dims = dims(&v["wave"]);
    let batch = wave_dims[0];
    let input = Tensor::new(
        [t, batch]
            .into_iter()
            .chain(wave_dims[2..].iter().copied())
            .collect(),
        swap_bt(&flat(&v["wave"]), batch, t),
    )
    .unwrap();
    for c in v["cases"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        let threshold = c["threshold"].as_f64().unwrap();
        let p = compile(&conv_fire_model(threshold));
        let kernel = flat(&c["kernel"]);
        let out = run(
            &p,
            device,
            &[("c.weight", &kernel)],
            input.clone(),
            t,
            batch,
        )?;
        let what = |x: &str| format!("conv_fire {name} {x} on {device}");
        let potential = swap_bt(output(&out, "n.v"), t, batch);
        if name == "dyadic" {
            assert_bits(&what("potential"), &potential, &flat(&c["potential"]));
        } else {
            assert_close(&what("potential"), &potential, &flat(&c["potential"]));
        }
        let spikes = swap_bt(output(&out, "n.spikes"), t, batch);
        assert_bits(&what("spikes"), &spikes, &flat(&c["spikes"]));
        let thresholded = swap_bt(output(&out, "z.v"), t, batch);
        if name == "dyadic" {
            assert_bits(&what("threshold"), &thresholded, &flat(&c["thresholded"]));
        } else {
            assert_close(&what("threshold"), &thresholded, &flat(&c["thresholded"]));
        }
        // The strict `>`: the dyadic threshold equals some potentials, which stay silent.
        let equal = c["equal_to_threshold"].as_u64().unwrap();
        let th = threshold as f32;
        let at = potential.iter().filter(|&&x| x == th).count() as u64;
        assert_eq!(at, equal, "{}", what("potentials equal to the threshold"));
    }
    Some(())
}

#[test]
fn fire_once_matches_spyker_conv_fire_on_cpu() {
    fire_once_matches_spyker("cpu").unwrap();
}

#[test]
fn fire_once_matches_spyker_conv_fire_through_the_cuda_host_shim() {
    fire_once_matches_spyker("cuda-shim");
}

/// `inhibit(v, threshold)` of a `[T, C, H, W]` input, read back through a `FireOnce`
/// population whose potential is its input (`trace(n.v)`).
fn inhibit_model(t: usize, dims: &[usize], threshold: f32) -> Program {
    compile(&format!(
        "model i {{\n  T = {t}\n  input v: [T, {}, {}, {}]\n  h = inhibit(v, threshold = {threshold:?})\n  \
         n = FireOnce(h)\n  output trace(n.v)\n}}\n",
        dims[0], dims[1], dims[2]
    ))
}

fn inhibit_matches_spyker(device: &str) -> Option<()> {
    let v = vectors("inhibit");
    let t = v["T"].as_u64().unwrap() as usize;
    let raw_threshold = v["raw_threshold"].as_f64().unwrap() as f32;
    for (input, want, threshold) in [
        ("potential", "output", 0.0),
        ("wave", "wave_output", 0.0),
        ("raw", "raw_output", raw_threshold),
    ] {
        let d = dims(&v[input]);
        let batch = d[0];
        let p = inhibit_model(t, &d[2..], threshold);
        let x = Tensor::new(
            [t, batch]
                .into_iter()
                .chain(d[2..].iter().copied())
                .collect(),
            swap_bt(&flat(&v[input]), batch, t),
        )
        .unwrap();
        let out = run(&p, device, &[], x, t, batch)?;
        let got = swap_bt(output(&out, "n.v"), t, batch);
        assert_bits(
            &format!("inhibit {input} on {device}"),
            &got,
            &flat(&v[want]),
        );
    }
    Some(())
}

#[test]
fn inhibit_matches_spyker_on_cpu() {
    inhibit_matches_spyker("cpu").unwrap();
}

#[test]
fn inhibit_matches_spyker_through_the_cuda_host_shim() {
    inhibit_matches_spyker("cuda-shim");
}

#[test]
fn fire_once_and_inhibit_match_spyker_on_a_gpu() {
    fire_once_matches_spyker("cuda");
    inhibit_matches_spyker("cuda");
}

/// Spyker's layer-2 input while it trains, `inhibit` of a pooled spike wave: here the
/// spikes of a population that re-fires `inhibit.json`'s wave, inhibited like potentials
/// (the earliest spike wins, ties to the lowest channel).
#[test]
fn inhibit_of_a_spike_population_matches_spyker_wave() {
    let v = vectors("inhibit");
    let t = v["T"].as_u64().unwrap() as usize;
    let d = dims(&v["wave"]);
    let batch = d[0];
    let p = compile(&format!(
        "model i {{\n  T = {t}\n  input v: [T, {}, {}, {}]\n  w = FireOnce(v, v_threshold = 0.5)\n  \
         h = inhibit(w)\n  n = FireOnce(h)\n  output trace(n.v)\n}}\n",
        d[2], d[3], d[4]
    ));
    let x = Tensor::new(
        [t, batch]
            .into_iter()
            .chain(d[2..].iter().copied())
            .collect(),
        swap_bt(&flat(&v["wave"]), batch, t),
    )
    .unwrap();
    for device in ["cpu", "cuda-shim"] {
        let Some(out) = run(&p, device, &[], x.clone(), t, batch) else {
            continue;
        };
        let got = swap_bt(output(&out, "n.v"), t, batch);
        assert_bits(
            &format!("inhibit of spikes on {device}"),
            &got,
            &flat(&v["wave_output"]),
        );
    }
}

/// `pool.json`: Spyker's max pool of a cumulative wave is `maxpool2d` (the earliest spike in
/// the window). Spyker pads with silent cells, snnc's padded cells never win: the same on a
/// wave of zeros and ones. Every case, with Spyker's own spelling of the padding: one
/// number, `[vertical, horizontal]` (`(0, 2)`) or `[top, left, bottom, right]`
/// (`(1, 0, 0, 1)`).
#[test]
fn maxpool_of_a_wave_matches_spyker_pool() {
    let v = vectors("pool");
    let d = dims(&v["wave"]);
    let (batch, t) = (d[0], d[1]);
    let mut checked = 0;
    for case in v["cases"].as_array().unwrap() {
        let pad = &case["pad"];
        let (k, s) = (
            case["kernel"].as_u64().unwrap(),
            case["stride"].as_u64().unwrap(),
        );
        let p = compile(&format!(
            "model p {{\n  T = {t}\n  input w: [T, {}, {}, {}]\n  \
             m = maxpool2d(w, kernel = {k}, stride = {s}, padding = {pad})\n  \
             n = FireOnce(m, v_threshold = 0.5)\n  output spikes(n)\n}}\n",
            d[2], d[3], d[4]
        ));
        // The plan as `snn!` embeds it keeps the padding of every side.
        let bytes = snn_runtime::plan::encode(&p.plan).unwrap();
        assert_eq!(snn_runtime::plan::decode(&bytes).unwrap(), p.plan);
        let x = seq_input(&v["wave"]);
        for device in ["cpu", "cuda-shim"] {
            let Some(out) = run(&p, device, &[], x.clone(), t, batch) else {
                continue;
            };
            let got = swap_bt(output(&out, "n.spikes"), t, batch);
            assert_bits(
                &format!("pool k={k} s={s} pad={pad} on {device}"),
                &got,
                &flat(&case["output"]),
            );
        }
        checked += 1;
    }
    assert_eq!(checked, 6, "every case of pool.json");
}

/// The static map of `wta` winners Spyker lists: 1.0 at each `(z, y, x)` of a sample's
/// list, 0.0 elsewhere, `[B, C, H, W]` flat.
fn winner_map(winners: &serde_json::Value, (c, h, w): (usize, usize, usize)) -> Vec<f32> {
    let samples = winners.as_array().unwrap();
    let mut map = vec![0.0; samples.len() * c * h * w];
    for (b, list) in samples.iter().enumerate() {
        for wn in list.as_array().unwrap() {
            let at = |k: &str| wn[k].as_u64().unwrap() as usize;
            map[((b * c + at("z")) * h + at("y")) * w + at("x")] = 1.0;
        }
    }
    map
}

/// `wta(..)` of the input `v` (`[T, C, H, W]`; `spikes`: re-fired by a `FireOnce`
/// population first, so that the wave is a spike population's), read back through a
/// `FireOnce` population whose potential is the static map at every step: its step 0.
fn wta_map(device: &str, x: &Tensor, call: &str, spikes: bool) -> Option<Vec<f32>> {
    let (t, batch, d) = (x.shape[0], x.shape[1], &x.shape[2..]);
    let src = if spikes { "s" } else { "v" };
    let p = compile(&format!(
        "model w {{\n  T = {t}\n  input v: [T, {}, {}, {}]\n  s = FireOnce(v, v_threshold = 0.5)\n  \
         w = wta({src}{call})\n  n = FireOnce(w)\n  output trace(n.v)\n  output spikes(s)\n}}\n",
        d[0], d[1], d[2]
    ));
    let out = run(&p, device, &[], x.clone(), t, batch)?;
    Some(output(&out, "n.v")[..batch * d.iter().product::<usize>()].to_vec())
}

/// `[B, T, ...]` JSON as the `[T, B, ...]` tensor snnc reads.
fn seq_input(v: &serde_json::Value) -> Tensor {
    let d = dims(v);
    let (batch, t) = (d[0], d[1]);
    Tensor::new(
        [t, batch]
            .into_iter()
            .chain(d[2..].iter().copied())
            .collect(),
        swap_bt(&flat(v), batch, t),
    )
    .unwrap()
}

fn wta_matches_spyker(device: &str) -> Option<()> {
    let v = vectors("wta");
    let mut checked = 0;
    for (input, cases, spikes) in [
        ("potential", "cases", false),
        ("raw", "raw_cases", false),
        ("wave", "wave_cases", true),
    ] {
        let x = seq_input(&v[input]);
        let d = dims(&v[input]);
        for case in v[cases].as_array().unwrap() {
            let (r, k) = (
                case["radius"].as_u64().unwrap(),
                case["count"].as_u64().unwrap(),
            );
            let threshold = case.get("threshold").map_or(0.0, |t| t.as_f64().unwrap());
            let call = format!(", k = {k}, radius = {r}, threshold = {threshold:?}");
            let got = wta_map(device, &x, &call, spikes)?;
            let want = winner_map(&case["winners"], (d[2], d[3], d[4]));
            assert_bits(&format!("wta {input} r={r} k={k} on {device}"), &got, &want);
            checked += 1;
        }
    }
    assert_eq!(checked, 8, "every case of wta.json");
    Some(())
}

#[test]
fn wta_matches_spyker_on_cpu() {
    wta_matches_spyker("cpu").unwrap();
}

#[test]
fn wta_matches_spyker_through_the_cuda_host_shim() {
    wta_matches_spyker("cuda-shim");
}

/// `infinite.json`: the dyadic `Conv(3, 20, 3, pad=1)` of a wave, `infinite` of it (every
/// step but the last 0), `fire` of that and the decision `wta(., k = 1, radius = 0)`
/// (sample 2 is silent: no winner).
fn infinite_matches_spyker(device: &str) -> Option<()> {
    let v = vectors("infinite");
    let x = seq_input(&v["wave"]);
    let (t, batch, d) = (x.shape[0], x.shape[1], dims(&v["output"]));
    let p = compile(&format!(
        "model i {{\n  T = {t}\n  input s: [T, {}, {}, {}]\n  \
         c = conv2d(s, {}, kernel = 3, padding = 1, bias = false)\n  i = infinite(c)\n  \
         n = FireOnce(i)\n  d = wta(i, k = 1, radius = 0)\n  m = FireOnce(d)\n  \
         output trace(n.v)\n  output spikes(n)\n  output trace(m.v)\n}}\n",
        x.shape[2], x.shape[3], x.shape[4], d[2]
    ));
    let out = run(
        &p,
        device,
        &[("c.weight", &flat(&v["kernel"]))],
        x,
        t,
        batch,
    )?;
    let what = |x: &str| format!("infinite {x} on {device}");
    let got = swap_bt(output(&out, "n.v"), t, batch);
    assert_bits(&what("output"), &got, &flat(&v["output"]));
    let spikes = swap_bt(output(&out, "n.spikes"), t, batch);
    assert_bits(&what("spikes"), &spikes, &flat(&v["spikes"]));
    let map = &output(&out, "m.v")[..batch * d[2] * d[3] * d[4]];
    let want = winner_map(&v["winners"], (d[2], d[3], d[4]));
    assert_bits(&what("decision"), map, &want);
    Some(())
}

#[test]
fn infinite_matches_spyker_on_cpu() {
    infinite_matches_spyker("cpu").unwrap();
}

#[test]
fn infinite_matches_spyker_through_the_cuda_host_shim() {
    infinite_matches_spyker("cuda-shim");
}

#[test]
fn wta_and_infinite_match_spyker_on_a_gpu() {
    wta_matches_spyker("cuda");
    infinite_matches_spyker("cuda");
}
