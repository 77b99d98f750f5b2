//! Spyker's input stage in the language (issue 19): the `dog` / `log` / `gabor` filters and
//! `latency` coding, against Spyker 0.1.0's own vectors (tests/vectors/spyker/, see
//! docs/spyker.md): kernels bit for bit, filter outputs to 1e-6, rank codes bit for bit, on
//! the CPU and through the CUDA device on the host shim.

mod common;

use common::spyker::{compile, flat, vectors};

use serde_json::Value;
use snn_runtime::plan::{Init, OutputDecl, OutputKind};
use snn_runtime::Tensor;
use snnc::ir::kernel::Program;

/// Adds the value of filter node `name` (a static `[B, ...]` map) to the plan's outputs,
/// so that the test can read it (the language records spikes, counts and traces only).
fn expose(p: &mut Program, name: &str) {
    let buffer = p
        .plan
        .buffers
        .iter()
        .position(|b| b.name == name)
        .unwrap_or_else(|| panic!("no buffer `{name}`"));
    let features = p.plan.buffers[buffer].features;
    p.plan.outputs.push(OutputDecl {
        name: name.into(),
        kind: OutputKind::Counts,
        buffer,
        shape: vec![features],
    });
}

/// Runs `p` on `device` (`cpu`, `cuda-shim` or `cuda`); `None` when that device is not
/// there (no C++ compiler for the shim, no GPU).
fn run(
    p: &Program,
    device: &str,
    inputs: &[Tensor],
    t: usize,
    batch: usize,
) -> Option<Vec<Tensor>> {
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
    let out = l.session.run(inputs, t, batch).unwrap();
    Some(out.into_iter().map(|(_, t)| t).collect())
}

fn tensor(shape: Vec<usize>, data: Vec<f32>) -> Tensor {
    Tensor::new(shape, data).unwrap()
}

/// The model text of one filter on a `[1, 12, 12]` image, coded by `latency` so that the
/// model has an output.
fn filter_model(call: &str) -> String {
    format!(
        "model f {{\n  T = 15\n  input x: [1, 12, 12]\n  f = {call}\n  s = latency(f)\n  output spikes(s)\n}}\n"
    )
}

/// `|a - b| <= 1e-6 * max(1, |b|)` everywhere; zeros where `b` is 0 when `zeros`.
fn assert_close(what: &str, got: &[f32], want: &[f32], zeros: bool) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let mut worst = 0.0f32;
    for (i, (&a, &b)) in got.iter().zip(want).enumerate() {
        let err = (a - b).abs() / b.abs().max(1.0);
        worst = worst.max(err);
        assert!(err <= 1e-6, "{what}[{i}]: {a} vs Spyker's {b}");
        if zeros {
            assert_eq!(a == 0.0, b == 0.0, "{what}[{i}]: zero pattern ({a} vs {b})");
        }
    }
    println!("{what}: max relative difference to Spyker {worst:.2e}");
}

fn frozen_kernel(p: &Program) -> &[f32] {
    let w = p
        .plan
        .weights
        .iter()
        .find(|w| w.name == "f.kernel")
        .unwrap();
    match &w.init {
        Init::Frozen(v) => v,
        other => panic!("f.kernel is {other:?}, not frozen"),
    }
}

/// `(case name, call without threshold, call with it, kernel, output, thresholded)`.
struct FilterCase {
    name: String,
    call: String,
    thresholded_call: Option<String>,
    kernel: Vec<f32>,
    output: Vec<f32>,
    thresholded: Option<Vec<f32>>,
}

fn num_list(v: impl Iterator<Item = f64>) -> String {
    v.map(|x| format!("{x:?}")).collect::<Vec<_>>().join(", ")
}

fn filter_cases() -> (Vec<FilterCase>, Vec<Value>) {
    let mut cases = Vec::new();
    let dog = vectors("dog");
    for c in dog["cases"].as_array().unwrap() {
        let sigmas = num_list(
            c["filters"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|f| [f["std1"].as_f64().unwrap(), f["std2"].as_f64().unwrap()]),
        );
        let size = 2 * c["size"].as_u64().unwrap() + 1;
        let pad = c["pad"].as_u64().unwrap();
        let call = format!("dog(x, size = {size}, sigmas = [{sigmas}], pad = {pad}");
        cases.push(FilterCase {
            name: format!("dog {}", c["name"].as_str().unwrap()),
            call: format!("{call})"),
            thresholded_call: Some(format!(
                "{call}, threshold = {:?})",
                c["threshold"].as_f64().unwrap()
            )),
            kernel: flat(&c["kernel"]),
            output: flat(&c["output"]),
            thresholded: Some(flat(&c["thresholded"])),
        });
    }
    let log = vectors("log");
    let stds = num_list(
        log["stds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap()),
    );
    let call = format!(
        "log(x, size = {}, sigmas = [{stds}], pad = {}",
        2 * log["size"].as_u64().unwrap() + 1,
        log["pad"].as_u64().unwrap()
    );
    cases.push(FilterCase {
        name: "log".into(),
        call: format!("{call})"),
        thresholded_call: Some(format!(
            "{call}, threshold = {:?})",
            log["threshold"].as_f64().unwrap()
        )),
        kernel: flat(&log["kernel"]),
        output: flat(&log["output"]),
        thresholded: Some(flat(&log["thresholded"])),
    });
    let gabor = vectors("gabor");
    let filters = num_list(gabor["filters"].as_array().unwrap().iter().flat_map(|f| {
        ["sigma", "theta_degrees", "gamma", "lambda", "psi"].map(|k| f[k].as_f64().unwrap())
    }));
    cases.push(FilterCase {
        name: "gabor".into(),
        call: format!(
            "gabor(x, size = {}, filters = [{filters}], pad = {})",
            2 * gabor["size"].as_u64().unwrap() + 1,
            gabor["pad"].as_u64().unwrap()
        ),
        // Spyker's `threshold` on the Gabor output (no vector of its own: applied here).
        thresholded_call: Some(format!(
            "gabor(x, size = {}, filters = [{filters}], pad = {}, threshold = 0.05)",
            2 * gabor["size"].as_u64().unwrap() + 1,
            gabor["pad"].as_u64().unwrap()
        )),
        kernel: flat(&gabor["kernel"]),
        output: flat(&gabor["output"]),
        thresholded: Some(
            flat(&gabor["output"])
                .into_iter()
                .map(|v| if v <= 0.05f32 { 0.0 } else { v })
                .collect(),
        ),
    });
    (cases, vec![dog, log, gabor])
}

fn images(file: &Value) -> Tensor {
    tensor(vec![2, 1, 12, 12], flat(&file["images"]))
}

#[test]
fn filter_kernels_are_spykers_bit_for_bit() {
    let (cases, _) = filter_cases();
    for c in cases {
        let p = compile(&filter_model(&c.call));
        let k = frozen_kernel(&p);
        assert_eq!(k.len(), c.kernel.len(), "{}", c.name);
        for (i, (a, b)) in k.iter().zip(&c.kernel).enumerate() {
            assert_eq!(
                a.to_bits(),
                b.to_bits(),
                "{} kernel[{i}]: {a} vs {b}",
                c.name
            );
        }
    }
}

/// The filter outputs (and thresholded outputs) on `device` against Spyker's.
fn filter_outputs_match_spyker(device: &str) {
    let (cases, files) = filter_cases();
    let file_of = |name: &str| match name {
        n if n.starts_with("dog") => &files[0],
        "log" => &files[1],
        _ => &files[2],
    };
    for c in cases {
        let x = images(file_of(&c.name));
        let calls = [(&c.call, &c.output, false)].into_iter().chain(
            c.thresholded_call
                .iter()
                .zip(&c.thresholded)
                .map(|(a, b)| (a, b, true)),
        );
        for (call, want, zeros) in calls {
            let mut p = compile(&filter_model(call));
            expose(&mut p, "f");
            let Some(out) = run(&p, device, std::slice::from_ref(&x), 15, 2) else {
                return;
            };
            assert_close(
                &format!("{} {call} on {device}", c.name),
                &out[1].data,
                want,
                zeros,
            );
        }
    }
}

#[test]
fn filter_outputs_match_spyker_on_cpu() {
    filter_outputs_match_spyker("cpu");
}

#[test]
fn filter_outputs_match_spyker_through_the_cuda_host_shim() {
    filter_outputs_match_spyker("cuda-shim");
}

/// First-spike times of a `[T, B, F]` wave, per `(b, i)`: the first `t` at 1, else `T`.
fn first_spikes(wave: &[f32], t: usize, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (0..t).find(|&s| wave[s * n + i] != 0.0).unwrap_or(t) as f32)
        .collect()
}

fn latency_model(dims: &[usize], sort: bool) -> Program {
    let d = dims
        .iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    compile(&format!(
        "model c {{\n  T = 15\n  input x: [{d}]\n  s = latency(x, sort = {sort})\n  output spikes(s)\n}}\n"
    ))
}

/// `code.json` on `device`: the waves and first-spike maps bit for bit, and the edges.
fn latency_matches_spyker(device: &str) -> Option<()> {
    let v = vectors("code");
    let t = v["T"].as_u64().unwrap() as usize;
    let x = flat(&v["input"]);
    let n = x.len() / 2;
    for c in v["cases"].as_array().unwrap() {
        let sort = c["sort"].as_bool().unwrap();
        let p = latency_model(&[2, 12, 12], sort);
        let out = run(&p, device, &[tensor(vec![2, 2, 12, 12], x.clone())], t, 2)?;
        let wave = &out[0].data;
        // Spyker's wave is [B, T, C, H, W]; snnc's [T, B, C, H, W].
        let want = flat(&c["wave"]);
        for b in 0..2 {
            for s in 0..t {
                let got = &wave[(s * 2 + b) * n..(s * 2 + b + 1) * n];
                let exp = &want[(b * t + s) * n..(b * t + s + 1) * n];
                assert_eq!(got, exp, "sort = {sort}: sample {b}, step {s} on {device}");
            }
        }
        assert_eq!(
            first_spikes(wave, t, 2 * n),
            flat(&c["first_spike"]),
            "sort = {sort}"
        );
    }
    for e in v["edges"].as_array().unwrap() {
        let sort = e["sort"].as_bool().unwrap();
        let x = flat(&e["input"]);
        let dims: Vec<usize> = match e["name"].as_str().unwrap() {
            "all_equal" => vec![2, 3, 3],
            _ => vec![x.len()],
        };
        let p = latency_model(&dims, sort);
        let mut shape = vec![1];
        shape.extend(&dims);
        let out = run(&p, device, &[tensor(shape, x.clone())], t, 1)?;
        assert_eq!(
            first_spikes(&out[0].data, t, x.len()),
            flat(&e["first_spike"]),
            "edge {} (sort = {sort}) on {device}",
            e["name"]
        );
    }
    Some(())
}

#[test]
fn latency_matches_spyker_code_on_cpu() {
    latency_matches_spyker("cpu").unwrap();
}

#[test]
fn latency_matches_spyker_code_through_the_cuda_host_shim() {
    latency_matches_spyker("cuda-shim");
}

#[test]
fn filters_and_latency_match_spyker_on_a_gpu() {
    filter_outputs_match_spyker("cuda");
    latency_matches_spyker("cuda");
}

/// Ties straddling a bin: snnc's documented rule (lower index first), the same on both
/// devices; and the first-spike-time arithmetic of the CPU and the shim agree bit for bit
/// on random maps.
#[test]
fn latency_ties_go_to_the_lower_index_on_both_devices() {
    // Six equal values over T = 4 bins, after one larger value: ranks 1..=6 of 7 above 0.
    let x = vec![0.0, 0.5, 0.5, 0.9, 0.5, 0.5, 0.5, 0.5];
    let p = latency_model(&[8], true);
    for device in ["cpu", "cuda-shim"] {
        let Some(out) = run(&p, device, &[tensor(vec![1, 8], x.clone())], 4, 1) else {
            continue;
        };
        // end = 4 + 1e-5, n = 7, scale = end / 7: rank r fires at trunc(r * scale).
        let scale = (4.0f32 + 1e-5) / 7.0;
        let rank = [7, 1, 2, 0, 3, 4, 5, 6];
        let want: Vec<f32> = rank
            .iter()
            .map(|&r: &i32| {
                if r >= 7 {
                    4.0
                } else {
                    (r as f32 * scale).trunc()
                }
            })
            .collect();
        assert_eq!(first_spikes(&out[0].data, 4, 8), want, "{device}");
    }
}

#[test]
fn frozen_kernels_are_neither_saved_nor_required_nor_trained() {
    let p = compile(&filter_model(
        "dog(x, size = 7, sigmas = [1.0, 2.0, 2.0, 1.0], threshold = 0.01)",
    ));
    let mut l = snnc::session::load(&p, Some(&common::cache_dir())).unwrap();
    let before = l.session.weight("f.kernel").unwrap().to_vec();
    let dir = std::env::temp_dir().join(format!("snnc-spyker-input-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("w.safetensors");
    l.session.save_weights(&path).unwrap();
    let saved = snn_runtime::io::weights::load(&path).unwrap();
    assert!(
        saved.iter().all(|(n, _, _)| n != "f.kernel"),
        "a frozen kernel was saved"
    );
    // A file without it loads, and the kernel stays the compiler's.
    l.session.load_weights(&path).unwrap();
    assert_eq!(l.session.weight("f.kernel").unwrap(), &before[..]);
    std::fs::remove_dir_all(&dir).ok();
}

/// Training a network behind a filter: the filter's kernel gets no gradient op and the
/// layers after it train as usual.
#[test]
fn a_filter_is_frozen_when_training() {
    let src = "model t {\n  T = 6\n  input x: [1, 12, 12]\n  f = dog(x, size = 5, sigmas = [1.0, 2.0], threshold = 0.01)\n  s = latency(f)\n  h = LIF(flatten(conv2d(s, 2, kernel = 3)), tau = 2.0)\n  o = LIF(dense(h, 3), tau = 2.0)\n  output counts(o)\n  train {\n    loss = cross_entropy(counts(o))\n  }\n}\n";
    let mut c = snnc::Compiler::new(common::train_opts());
    let parsed = c.parse_str("t.snn", src).unwrap();
    let p = c
        .compile(&parsed)
        .unwrap_or_else(|d| panic!("{}", d.message));
    let kernel = p
        .plan
        .weights
        .iter()
        .position(|w| w.name == "f.kernel")
        .unwrap();
    assert!(p.plan.weights[kernel].frozen());
    let backward = format!("{:?}", p.plan.train.as_ref().unwrap().backward);
    assert!(
        backward.contains("Conv2dDw"),
        "the conv after the filter trains"
    );
    for op in &p.plan.train.as_ref().unwrap().backward {
        if let snn_runtime::plan::Op::Conv2dDw(d) = op {
            assert_ne!(d.w, kernel, "a gradient op for the frozen kernel");
        }
    }
}

/// Several input channels: each is filtered on its own and its channels come together
/// (Spyker views `[B, C, H, W]` as `[B * C, 1, H, W]`): a 2-channel image made of the two
/// vector images gives, per channel, that image's Spyker output.
#[test]
fn each_input_channel_is_filtered_on_its_own() {
    let (cases, files) = filter_cases();
    for c in cases
        .iter()
        .filter(|c| c.name == "dog kheradpisheh" || c.name == "log")
    {
        let file = if c.name == "log" {
            &files[1]
        } else {
            &files[0]
        };
        let src = filter_model(&c.call).replace("[1, 12, 12]", "[2, 12, 12]");
        let mut p = compile(&src);
        expose(&mut p, "f");
        // One sample whose two channels are the vectors' two images.
        let x = tensor(vec![1, 2, 12, 12], flat(&file["images"]));
        for device in ["cpu", "cuda-shim"] {
            let Some(out) = run(&p, device, std::slice::from_ref(&x), 15, 1) else {
                continue;
            };
            assert_close(
                &format!("{} with 2 channels on {device}", c.name),
                &out[1].data,
                &c.output,
                false,
            );
        }
    }
}
