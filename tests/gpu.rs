//! The CUDA device against the CPU, on a GPU when there is one and always on the host shim
//! (`--device cuda-shim`: the same device code, `runtime/src/cuda/mod.rs`, over host memory,
//! the generated CUDA C built by the system C++ compiler, and a reference SGEMM with
//! cuBLAS's argument checks).
//!
//! - Forward: every model in examples/ and tests/in/, with the same weights (scaled x4 so
//!   every layer spikes, as in tests/equivalence.rs) and inputs, in the default
//!   (layer-by-layer) and the step-by-step plan. Spikes and counts must be identical, traces
//!   equal to 1e-5 relative (cuBLAS sums in another order than the CPU GEMM).
//! - Backward: every training plan (tests/in/train/ and the examples with a `train` block):
//!   forward outputs as above, then the weight gradients of a fixed loss gradient within
//!   1e-5 (host shim) or 1e-4 (GPU) of the largest of their tensor.
//!
//! Without a CUDA driver or device the GPU tests print `SKIP: ...` and pass; without a C++
//! compiler the shim tests do. The NVRTC compile and register/spill check, which needs no
//! GPU, is tests/nvrtc.rs.
//!
//! `SNNC_GPU_REFS=DIR`: CPU outputs and gradients are read from `DIR` when present, else
//! computed and written there. This runs the comparison on a GPU machine that has no Rust
//! toolchain to build the CPU kernels: record locally, carry DIR along.

mod common;

use std::path::{Path, PathBuf};

use snn_runtime::cuda::Op;
use snn_runtime::io::npy;
use snn_runtime::plan::OutputKind;
use snn_runtime::Tensor;
use snnc::Options;

const BATCH: usize = 3;
const SEED: u64 = 1234;

struct Case {
    inputs: Vec<Tensor>,
    t: usize,
}

fn variants() -> Vec<(&'static str, Options)> {
    vec![
        ("default", Options::default()),
        (
            "steps",
            Options {
                force_steps: true,
                ..Options::default()
            },
        ),
    ]
}

fn ref_path(dir: &Path, model: &str, variant: &str, output: &str) -> PathBuf {
    dir.join(format!("{model}.{variant}.{output}.npy"))
}

/// CPU outputs of one model and plan variant (from `refs` when recorded there).
fn cpu_outputs(
    program: &snnc::ir::kernel::Program,
    model: &str,
    variant: &str,
    refs: Option<&Path>,
) -> (Case, Vec<(String, Tensor)>) {
    let names: Vec<String> = program
        .plan
        .outputs
        .iter()
        .map(|o| o.name.clone())
        .collect();
    let t = program.plan.t.min(20);
    if let Some(dir) = refs {
        let paths: Vec<PathBuf> = names
            .iter()
            .map(|n| ref_path(dir, model, variant, n))
            .collect();
        let in_path = dir.join(format!("{model}.{variant}.inputs"));
        if paths.iter().all(|p| p.is_file()) && in_path.is_dir() {
            let outs = names
                .iter()
                .zip(&paths)
                .map(|(n, p)| (n.clone(), npy::read_npy(p).unwrap()))
                .collect();
            let inputs = (0..program.plan.inputs.len())
                .map(|i| npy::read_npy(in_path.join(format!("{i}.npy"))).unwrap())
                .collect();
            return (Case { inputs, t }, outs);
        }
    }
    let mut loaded = snnc::session::load(program, Some(&common::cache_dir())).unwrap();
    let s = &mut loaded.session;
    let inputs = s.random_inputs(t, BATCH, SEED);
    common::scale_weights(s);
    let outs: Vec<(String, Tensor)> = s
        .run(&inputs, t, BATCH)
        .unwrap()
        .into_iter()
        .map(|(d, t)| (d.name, t))
        .collect();
    if let Some(dir) = refs {
        let in_path = dir.join(format!("{model}.{variant}.inputs"));
        std::fs::create_dir_all(&in_path).unwrap();
        for (i, x) in inputs.iter().enumerate() {
            npy::write_npy(in_path.join(format!("{i}.npy")), x).unwrap();
        }
        for (n, x) in &outs {
            npy::write_npy(ref_path(dir, model, variant, n), x).unwrap();
        }
    }
    (Case { inputs, t }, outs)
}

fn is_unavailable(msg: &str) -> bool {
    msg.contains("no CUDA driver")
        || msg.contains("no CUDA device")
        || msg.contains("no NVRTC library")
        || msg.contains("no cuBLAS library")
        || msg.contains("no C++ compiler")
        // The GPU machines run the carried test binary without a Rust toolchain.
        || msg.contains("cannot run `rustc`")
}

/// The GPU tests' refs directory (`SNNC_GPU_REFS`), created; `None` when unset.
fn gpu_refs() -> Option<PathBuf> {
    let refs = std::env::var_os("SNNC_GPU_REFS").map(PathBuf::from);
    if let Some(d) = &refs {
        std::fs::create_dir_all(d).unwrap();
    }
    refs
}

/// Whether the host shim can run (a C++ compiler); prints the SKIP line when not.
fn shim_available(test: &str) -> bool {
    if snn_runtime::cuda::shim::find_cxx().is_none() {
        println!("SKIP {test}: no C++ compiler for the CUDA host shim (install g++ or set CXX)");
        return false;
    }
    true
}

/// Loads `program` on `device`; `None` (with the reason) when that device is not there.
fn load_on(
    program: &snnc::ir::kernel::Program,
    device: &str,
    what: &str,
) -> Result<snnc::session::DeviceLoaded, String> {
    match snnc::session::load_device(program, device, Some(&common::cache_dir())) {
        Ok(l) => Ok(l),
        Err(d) if is_unavailable(&d.message) => Err(d.message),
        Err(d) => panic!("{what} on {device}: {}", d.message),
    }
}

/// Spikes and counts bit for bit, traces to `tol` relative; pushes a line per mismatch
/// and returns the largest relative difference.
fn compare_outputs(
    what: &str,
    decl: &snn_runtime::plan::OutputDecl,
    cpu: &Tensor,
    dev: &Tensor,
    tol: f64,
    failures: &mut Vec<String>,
) -> f64 {
    assert_eq!(dev.shape, cpu.shape, "{what}: {}", decl.name);
    let exact = decl.kind != OutputKind::Trace;
    let mut bad = 0usize;
    let mut worst = 0.0f64;
    for (x, y) in cpu.data.iter().zip(&dev.data) {
        let rel = ((x - y).abs() / x.abs().max(1.0)) as f64;
        worst = worst.max(rel);
        let ok = if exact {
            x.to_bits() == y.to_bits()
        } else {
            rel <= tol
        };
        if !ok {
            bad += 1;
        }
    }
    if bad > 0 {
        failures.push(format!(
            "{what}: {} differs in {bad} of {} values (max rel {worst:.3e})",
            decl.name,
            cpu.data.len()
        ));
    }
    worst
}

/// Every model's forward outputs on `device` against the CPU's (or `refs`).
fn forward_matches_cpu_on_every_model(device: &str, refs: Option<&Path>) {
    let mut skip: Option<String> = None;
    let mut failures: Vec<String> = Vec::new();
    let mut compared = 0;
    let mut nonzero = 0;
    let mut max_rel = 0.0f64;
    for path in common::model_files() {
        let model = path.file_stem().unwrap().to_string_lossy().into_owned();
        for (variant, opts) in variants() {
            let program = common::compile_file(&path, opts).unwrap();
            let (case, cpu) = cpu_outputs(&program, &model, variant, refs);
            if skip.is_some() {
                continue;
            }
            let what = format!("{model} ({variant})");
            let mut loaded = match load_on(&program, device, &what) {
                Ok(l) => l,
                Err(why) => {
                    skip = Some(why);
                    continue;
                }
            };
            let s = &mut loaded.session;
            common::scale_weights(s);
            let dev = s
                .run(&case.inputs, case.t, BATCH)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(dev.len(), cpu.len());
            let mut line = format!("{what} on {}:", loaded.kernels);
            for ((decl, g), (name, c)) in dev.iter().zip(&cpu) {
                assert_eq!(&decl.name, name);
                compared += 1;
                if c.data.iter().any(|&x| x != 0.0) {
                    nonzero += 1;
                }
                let worst = compare_outputs(&what, decl, c, g, 1e-5, &mut failures);
                max_rel = max_rel.max(worst);
                line.push_str(&format!(" {name} max rel {worst:.2e}"));
            }
            println!("{line}");
        }
    }
    if let Some(why) = skip {
        println!("SKIP: no {device} device ({why})");
        return;
    }
    println!(
        "{device}: compared {compared} outputs ({nonzero} non-zero), max relative difference {max_rel:.3e}"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(nonzero > 10, "only {nonzero} outputs had non-zero values");
}

#[test]
fn cuda_matches_cpu_on_every_model() {
    let refs = gpu_refs();
    if !snn_runtime::cuda::driver_present() && refs.is_none() {
        println!("SKIP: no CUDA device (libcuda.so not found)");
        return;
    }
    forward_matches_cpu_on_every_model("cuda", refs.as_deref());
}

#[test]
fn cuda_device_on_the_host_shim_matches_cpu_on_every_model() {
    if shim_available("cuda_device_on_the_host_shim_matches_cpu_on_every_model") {
        forward_matches_cpu_on_every_model("cuda-shim", None);
        reached_every_kernel(&[
            "snn_im2col",
            "snn_bias",
            "snn_pool2d",
            "snn_transpose",
            "snn_spike_gemm",
            "snn_spike_conv2d",
            "snn_first_spike_map",
            "snn_wave_conv2d",
            "snn_filter_out",
            "snn_rank_code",
            "snn_inhibit",
            "snn_wta",
            "snn_infinite",
        ]);
    }
}

/// Asserts that this thread's shim launches reached each of `ops` (ops.cuh's kernels).
fn reached_every_kernel(ops: &[&str]) {
    let counts = snn_runtime::cuda::shim::op_launches();
    println!("library kernel launches through the shim: {counts:?}");
    for &op in ops {
        let n = counts
            .iter()
            .find(|(o, _)| o.symbol() == op)
            .map_or(0, |c| c.1);
        assert!(n > 0, "no model reached {op} through the shim");
    }
}

/// The training plans: tests/in/train/ and the examples with a `train` block.
fn training_models() -> Vec<PathBuf> {
    let mut files = common::snn_files("tests/in/train");
    for p in common::model_files() {
        if p.starts_with(common::root().join("examples"))
            && std::fs::read_to_string(&p).unwrap().contains("train {")
        {
            files.push(p);
        }
    }
    files
}

/// A fixed gradient for the loss and each regulariser of a training plan.
fn fixed_loss_grads(plan: &snn_runtime::plan::Plan, t: usize, batch: usize) -> Vec<Vec<f32>> {
    let tp = plan.train.as_ref().unwrap();
    std::iter::once(tp.loss.grad)
        .chain(tp.regularizers.iter().map(|r| r.grad))
        .map(|buf| {
            let d = &plan.buffers[buf];
            let rows = match d.extent {
                snn_runtime::plan::Extent::Seq => t * batch,
                _ => batch,
            };
            (0..rows * d.features)
                .map(|i| ((i * 13 % 7) as f32 - 2.0) * 0.05)
                .collect()
        })
        .collect()
}

/// What the CPU computed for one training plan: inputs, weights, outputs, gradients.
struct Trained {
    t: usize,
    inputs: Vec<Tensor>,
    weights: Vec<Vec<f32>>,
    outputs: Vec<Tensor>,
    grads: Vec<Vec<f32>>,
}

fn as_tensor(v: &[f32]) -> Tensor {
    Tensor::new(vec![v.len()], v.to_vec()).unwrap()
}

/// The CPU's forward and backward of a training plan (read from `refs`/`name` when recorded
/// there, else computed and, with `refs`, recorded).
fn cpu_backward(program: &snnc::ir::kernel::Program, name: &str, refs: Option<&Path>) -> Trained {
    let plan = &program.plan;
    let dir = refs.map(|r| r.join(name));
    let file = |kind: &str, i: usize| dir.as_ref().unwrap().join(format!("{kind}{i}.npy"));
    let count = [
        ("in", plan.inputs.len()),
        ("w", plan.weights.len()),
        ("out", plan.outputs.len()),
        ("g", plan.weights.len()),
    ];
    let t = plan.t.min(20);
    if dir.is_some()
        && count
            .iter()
            .all(|(k, n)| (0..*n).all(|i| file(k, i).is_file()))
    {
        let read = |k: &str, n: usize| -> Vec<Tensor> {
            (0..n).map(|i| npy::read_npy(file(k, i)).unwrap()).collect()
        };
        return Trained {
            t,
            inputs: read("in", plan.inputs.len()),
            weights: read("w", plan.weights.len())
                .into_iter()
                .map(|x| x.data)
                .collect(),
            outputs: read("out", plan.outputs.len()),
            grads: read("g", plan.weights.len())
                .into_iter()
                .map(|x| x.data)
                .collect(),
        };
    }
    let mut cpu = snnc::session::load(program, Some(&common::cache_dir()))
        .unwrap_or_else(|d| panic!("{name}: {}", d.message))
        .session;
    for w in &plan.weights {
        // Larger dense weights, so that the layers spike; learned parameters as they are.
        let k = if w.name.ends_with(".weight") {
            3.0
        } else {
            1.0
        };
        let v: Vec<f32> = cpu.weight(&w.name).unwrap().iter().map(|x| x * k).collect();
        cpu.set_weight(&w.name, &v).unwrap();
    }
    let inputs = cpu.random_inputs(t, BATCH, 99);
    let outputs: Vec<Tensor> = cpu
        .run(&inputs, t, BATCH)
        .unwrap()
        .into_iter()
        .map(|(_, x)| x)
        .collect();
    let lg = fixed_loss_grads(plan, t, BATCH);
    let lr: Vec<&[f32]> = lg.iter().map(|g| g.as_slice()).collect();
    cpu.backward(&lr, t, BATCH).unwrap();
    let r = Trained {
        t,
        inputs,
        weights: cpu.weights().to_vec(),
        outputs,
        grads: cpu.grads().unwrap(),
    };
    if let Some(d) = &dir {
        std::fs::create_dir_all(d).unwrap();
        let write = |k: &str, xs: Vec<Tensor>| {
            for (i, x) in xs.iter().enumerate() {
                npy::write_npy(file(k, i), x).unwrap();
            }
        };
        write("in", r.inputs.clone());
        write("w", r.weights.iter().map(|w| as_tensor(w)).collect());
        write("out", r.outputs.clone());
        write("g", r.grads.iter().map(|g| as_tensor(g)).collect());
    }
    r
}

/// Every training plan's forward outputs and weight gradients on `device` against the
/// CPU's; gradients within `tol` of the largest of their tensor.
fn backward_matches_cpu_on_training_plans(device: &str, refs: Option<&Path>, tol: f32) {
    let mut skip: Option<String> = None;
    let mut failures: Vec<String> = Vec::new();
    let mut tensors = 0;
    // Dense as compiled, then every projection of spikes event-driven.
    let train_variants = [
        ("train", common::train_opts()),
        (
            "train-sparse",
            Options {
                sparse: Some(true),
                ..common::train_opts()
            },
        ),
    ];
    for (path, (variant, opts)) in training_models()
        .iter()
        .flat_map(|p| train_variants.iter().map(move |v| (p, v)))
    {
        let model = path.file_stem().unwrap().to_string_lossy().into_owned();
        let what = format!("{model} ({variant})");
        let program = common::compile_file(path, opts.clone()).unwrap();
        let plan = &program.plan;
        // Without the device, still record the references (SNNC_GPU_REFS).
        let cpu = cpu_backward(&program, &format!("{model}.{variant}"), refs);
        if skip.is_some() {
            continue;
        }
        let mut loaded = match load_on(&program, device, &what) {
            Ok(l) => l,
            Err(why) => {
                skip = Some(why);
                continue;
            }
        };
        let s = &mut loaded.session;
        s.set_all_weights(cpu.weights.clone()).unwrap();
        let outs = s
            .run(&cpu.inputs, cpu.t, BATCH)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        for ((decl, d), c) in outs.iter().zip(&cpu.outputs) {
            compare_outputs(&what, decl, c, d, 1e-5, &mut failures);
        }
        let lg = fixed_loss_grads(plan, cpu.t, BATCH);
        let lr: Vec<&[f32]> = lg.iter().map(|g| g.as_slice()).collect();
        s.backward(&lr, cpu.t, BATCH)
            .unwrap_or_else(|e| panic!("{what}: backward: {e}"));
        let grads = s.grads().unwrap();
        let mut line = format!("{what} on {}:", loaded.kernels);
        for (w, (x, y)) in plan.weights.iter().zip(cpu.grads.iter().zip(&grads)) {
            assert!(
                x.iter().any(|v| *v != 0.0),
                "{what}: the CPU gradient of `{}` is zero: nothing is compared",
                w.name
            );
            let scale = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let worst = x.iter().zip(y).fold(0.0f32, |m, (p, q)| {
                // A NaN on either side sticks (f32::max would drop it).
                let d = (p - q).abs();
                if d.is_nan() || d > m {
                    d
                } else {
                    m
                }
            }) / scale;
            if worst.is_nan() || worst > tol {
                failures.push(format!(
                    "{what}: gradient of `{}` differs by {worst:.3e} of its largest value",
                    w.name
                ));
            }
            line.push_str(&format!(" {} {worst:.1e}", w.name));
            tensors += 1;
        }
        println!("{line}");
    }
    if let Some(why) = skip {
        println!("SKIP: no {device} device ({why})");
        return;
    }
    println!("{device}: {tensors} weight gradients compared");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn cuda_backward_matches_cpu_on_training_plans() {
    let refs = gpu_refs();
    if !snn_runtime::cuda::driver_present() && refs.is_none() {
        println!("SKIP: no CUDA device (libcuda.so not found)");
        return;
    }
    backward_matches_cpu_on_training_plans("cuda", refs.as_deref(), 1e-4);
}

#[test]
fn cuda_device_on_the_host_shim_backward_matches_cpu_on_training_plans() {
    if shim_available("cuda_device_on_the_host_shim_backward_matches_cpu_on_training_plans") {
        backward_matches_cpu_on_training_plans("cuda-shim", None, 1e-5);
        reached_every_kernel(&[
            "snn_bias_grad",
            "snn_col2im",
            "snn_conv_bias_grad",
            "snn_pool2d_dx",
            "snn_spike_gemm_dw",
            "snn_spike_conv2d_dw",
            "snn_to_channel_major",
        ]);
    }
}

/// Transfers through the page-locked staging buffers (`PINNED_MIN` floats and up) and the
/// direct ones: every upload comes back bit for bit, also when a staging buffer is reused
/// before the copy out of it ran (two uploads of one length in a row, then downloads), and
/// when more lengths than buffers kept evict the oldest; weights too.
#[test]
fn transfers_round_trip_through_pinned_staging() {
    use snn_runtime::cuda::{CudaDevice, PINNED_MIN};
    use snn_runtime::device::prelude::*;
    use snn_runtime::device::Loc;
    if !snn_runtime::cuda::driver_present() {
        println!("SKIP: no CUDA device (libcuda.so not found)");
        return;
    }
    let mut d = match CudaDevice::new(0, "", &[], vec![]) {
        Ok(d) => d,
        Err(e) if is_unavailable(&e.to_string()) => {
            println!("SKIP: no CUDA device ({e})");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let big = PINNED_MIN * 4 + 3;
    // Lengths below and above the threshold, and more staged lengths than are kept.
    let lens: Vec<usize> = [1, PINNED_MIN - 1, PINNED_MIN, big]
        .into_iter()
        .chain((0..10).map(|i| PINNED_MIN + 1000 * i))
        .collect();
    d.alloc_slots(&vec![big * 2; lens.len()]).unwrap();
    let data = |seed: usize, len: usize| -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 2654435761 + seed * 97) % 1_000_003) as f32 * 0.5 - 7.0)
            .collect()
    };
    for round in 0..2 {
        for (slot, &len) in lens.iter().enumerate() {
            // Same length twice in a row: the second waits for the first copy to finish.
            d.upload(Loc::new(slot, 0), &data(slot + round, len))
                .unwrap();
            d.upload(Loc::new(slot, len), &data(slot + round + 100, len))
                .unwrap();
        }
        for (slot, &len) in lens.iter().enumerate() {
            let mut a = vec![0.0f32; len];
            let mut b = vec![0.0f32; len];
            d.download(Loc::new(slot, 0), &mut a).unwrap();
            d.download(Loc::new(slot, len), &mut b).unwrap();
            assert!(
                a == data(slot + round, len),
                "slot {slot} ({len} floats), first copy"
            );
            assert!(
                b == data(slot + round + 100, len),
                "slot {slot} ({len} floats), second"
            );
        }
    }
    // Weights take the same paths (set_weight, then get_weight), long and short.
    for (id, len) in [(0, big), (1, 5), (2, PINNED_MIN)] {
        let w = data(id + 7, len);
        d.set_weight(id, &w).unwrap();
        let mut back = vec![0.0f32; len];
        d.get_weight(id, &mut back).unwrap();
        assert!(back == w, "weight {id} ({len} floats)");
    }
    println!(
        "round trips of {} lengths through pinned and direct copies",
        lens.len()
    );
}

/// The host shim's GPU itself: its SGEMM against a plain row-major product in every
/// transpose combination (batched, strided, beta 0 and 1, the C it must not read when
/// beta is 0 holding NaN), and the errors a GPU would hide or raise: a leading dimension
/// cuBLAS rejects, a matrix that reaches past its allocation, a launch with the wrong
/// number of arguments.
#[test]
fn host_shim_gpu_computes_sgemm_and_rejects_bad_arguments() {
    use snn_runtime::cuda::{Gpu, Kernel, Launch, Sgemm, ShimGpu};
    let Some(cxx) = snn_runtime::cuda::shim::find_cxx() else {
        println!("SKIP host_shim_gpu: no C++ compiler (install g++ or set CXX)");
        return;
    };
    let dir = common::cache_dir().join("shim");
    let mut gpu = ShimGpu::build(&cxx, &dir, "", &[], &[]).unwrap();
    let vals = |n: usize, seed: usize| -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7919 + seed * 104_729) % 1009) as f32 / 504.5 - 1.0)
            .collect()
    };
    let (m, n, k, batch) = (5, 4, 3, 2);
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        for beta in [0.0f32, 1.0] {
            // Column-major op(A) is m x k: stored k x m (ld k + 1) when transposed, else
            // m x k (ld m + 2); padding in the leading dimensions and between batches.
            let (ra, ca) = if ta { (k, m) } else { (m, k) };
            let (rb, cb) = if tb { (n, k) } else { (k, n) };
            let (lda, ldb, ldc) = (ra + 2, rb + 1, m + 3);
            let (sa, sb, sc) = (lda * ca + 5, ldb * cb + 2, ldc * n + 1);
            let a = vals(sa * batch, 1);
            let b = vals(sb * batch, 2);
            let mut c0 = vals(sc * batch, 3);
            if beta == 0.0 {
                c0.iter_mut().for_each(|x| *x = f32::NAN);
            }
            let mut ma = gpu.alloc_zeros(a.len()).unwrap();
            let mut mb = gpu.alloc_zeros(b.len()).unwrap();
            let mut mc = gpu.alloc_zeros(c0.len()).unwrap();
            gpu.htod(&a, &mut ma, 0, "a").unwrap();
            gpu.htod(&b, &mut mb, 0, "b").unwrap();
            gpu.htod(&c0, &mut mc, 0, "c").unwrap();
            let g = Sgemm {
                trans_a: ta,
                trans_b: tb,
                m,
                n,
                k,
                a: gpu.addr(&ma),
                lda,
                stride_a: sa,
                b: gpu.addr(&mb),
                ldb,
                stride_b: sb,
                beta,
                c: gpu.addr(&mc),
                ldc,
                stride_c: sc,
                batch,
            };
            gpu.sgemm(&g, "test").unwrap();
            let mut c = vec![0.0f32; c0.len()];
            gpu.dtoh(&mc, 0, &mut c, "c").unwrap();
            for bi in 0..batch {
                for i in 0..m {
                    for j in 0..n {
                        let at = |r: usize, q: usize| a[bi * sa + r + q * lda];
                        let bt = |r: usize, q: usize| b[bi * sb + r + q * ldb];
                        let dot: f64 = (0..k)
                            .map(|l| {
                                let x = if ta { at(l, i) } else { at(i, l) };
                                let y = if tb { bt(j, l) } else { bt(l, j) };
                                x as f64 * y as f64
                            })
                            .sum();
                        let idx = bi * sc + i + j * ldc;
                        let want = if beta == 0.0 {
                            dot
                        } else {
                            dot + c0[idx] as f64
                        };
                        assert!(
                            (c[idx] as f64 - want).abs() < 1e-6,
                            "trans ({ta}, {tb}) beta {beta}: C[{bi}][{i}, {j}] = {}, want {want}",
                            c[idx]
                        );
                    }
                }
                // Padding rows of C are left alone.
                for j in 0..n {
                    for i in m..ldc {
                        let idx = bi * sc + i + j * ldc;
                        if idx < c.len() {
                            assert!(c[idx].to_bits() == c0[idx].to_bits(), "padding written");
                        }
                    }
                }
            }
            // A leading dimension cuBLAS rejects.
            let e = gpu
                .sgemm(&Sgemm { lda: ra - 1, ..g }, "bad lda")
                .unwrap_err();
            assert!(e.to_string().contains("CUBLAS_STATUS_INVALID_VALUE"), "{e}");
            // One batch too many: C reaches past its allocation.
            let e = gpu
                .sgemm(
                    &Sgemm {
                        batch: batch + 1,
                        ..g
                    },
                    "overrun",
                )
                .unwrap_err();
            assert!(e.to_string().contains("not inside one allocation"), "{e}");
        }
    }
    // A library kernel with a word missing.
    let e = gpu
        .launch(
            Kernel::Op(Op::named("snn_transpose").unwrap()),
            Launch {
                blocks: 1,
                threads: 32,
            },
            &[0, 0, 1],
            "transpose",
        )
        .unwrap_err();
    assert!(e.to_string().contains("do not match"), "{e}");
    let e = gpu
        .launch(
            Kernel::Generated(0),
            Launch {
                blocks: 1,
                threads: 1,
            },
            &[],
            "none",
        )
        .unwrap_err();
    assert!(e.to_string().contains("has 0 kernels"), "{e}");
}

/// The positive control of `scripts/shim-memcheck.sh`: a library kernel launched over more
/// elements than its buffers hold. Run under the sanitizer (the script) it must abort with
/// a heap-buffer-overflow report; without it, it must not be run (it would write past a
/// buffer), hence `#[ignore]`.
#[test]
#[ignore]
fn shim_memcheck_control_overflows_a_buffer() {
    use snn_runtime::cuda::{Gpu, Kernel, Launch, ShimGpu};
    assert!(
        std::env::var_os("SNNC_SHIM_SANITIZE").is_some(),
        "run through scripts/shim-memcheck.sh"
    );
    let cxx = snn_runtime::cuda::shim::find_cxx().expect("a C++ compiler");
    let mut gpu = ShimGpu::build(&cxx, &common::cache_dir().join("shim"), "", &[], &[]).unwrap();
    let w = gpu.alloc_zeros(12).unwrap();
    let wt = gpu.alloc_zeros(12).unwrap();
    // snn_transpose(w, wt, n, k) touches n * k = 16 elements of buffers of 12.
    let args = [gpu.addr(&w), gpu.addr(&wt), 4, 4];
    let cfg = Launch {
        blocks: 1,
        threads: 16,
    };
    gpu.launch(
        Kernel::Op(Op::named("snn_transpose").unwrap()),
        cfg,
        &args,
        "overflow",
    )
    .unwrap();
    println!("no overflow reported: the sanitizer is not active");
}

/// The devices the optimizer tests run on: the CPU (when rustc can build its kernels), the
/// host shim when there is a C++ compiler, a GPU when there is one (`SKIP` lines for the
/// others).
fn optimizer_devices(program: &snnc::ir::kernel::Program) -> Vec<&'static str> {
    let mut out = Vec::new();
    for d in ["cpu", "cuda-shim", "cuda"] {
        match load_on(program, d, "optimizer devices") {
            Ok(_) => out.push(d),
            Err(why) => println!("SKIP {d}: {why}"),
        }
    }
    out
}

/// Optimizer steps where the weights live (`Session::apply_updates`: `snn_sgd`,
/// `snn_adam`, `snn_sq_sum` on the CUDA device) against the host optimizer
/// (`Optimizer::step` on downloaded weights and gradients, `clip_grad_norm`): SGD with
/// Nesterov momentum and weight decay, plain SGD, Adam with L2 decay, AdamW; with gradient
/// clipping active and without; three steps on a dense net and on PSNs (whose matrices the
/// executor reads on the host, so the device path must refresh them). Weights, momentum and
/// moments are bit-identical on the CPU and through the host shim; on a GPU within 1e-6 (its
/// f64 norm sums in another order).
#[test]
fn optimizer_steps_on_the_device_match_the_host_optimizer() {
    use snn_runtime::train::optim::{clip_coef, clip_grad_norm, Optimizer};
    type Make = fn() -> Optimizer;
    let optimizers: [(&str, Make); 4] = [
        ("sgd nesterov", || Optimizer::sgd(0.9, true, 1e-3)),
        ("sgd", || Optimizer::sgd(0.0, false, 0.0)),
        ("adam", || Optimizer::adam((0.9, 0.999), 1e-8, 1e-2)),
        ("adamw", Optimizer::default_adamw),
    ];
    let bits = |v: &[Vec<f32>]| -> Vec<u32> { v.iter().flatten().map(|x| x.to_bits()).collect() };
    let (mut checked, mut shim_ran) = (0, false);
    for file in ["tests/in/train/mlp_4_8_3.snn", "tests/in/train/psn.snn"] {
        let path = common::root().join(file);
        let program = common::compile_file(&path, common::train_opts()).unwrap();
        let (t, b) = (program.plan.t, 3);
        for device in optimizer_devices(&program) {
            shim_ran |= device == "cuda-shim";
            for (name, make) in optimizers {
                for clip in [None, Some(0.05f32)] {
                    let what = format!("{file} on {device}, {name}, clip {clip:?}");
                    let mut s = load_on(&program, device, &what).unwrap().session;
                    let inputs = s.random_inputs(t, b, 5);
                    let lg = fixed_loss_grads(&program.plan, t, b);
                    let lr: Vec<&[f32]> = lg.iter().map(|g| g.as_slice()).collect();
                    let (mut host, mut dev) = (make(), make());
                    for step in 0..3 {
                        s.run(&inputs, t, b).unwrap();
                        s.backward(&lr, t, b).unwrap();
                        // The host optimizer on copies of the weights and gradients.
                        let mut g = s.grads().unwrap();
                        let mut w = s.weights().to_vec();
                        let norm = clip.map(|max| (max, clip_grad_norm(&mut g, max)));
                        host.step(&mut w, &g, 0.05);
                        // The same step on the device.
                        let scale = match clip {
                            Some(max) => {
                                let n = s.grad_norm().unwrap();
                                let (_, hn) = norm.unwrap();
                                assert!((n - hn).abs() <= 1e-6 * hn, "{what}: norm {n} vs {hn}");
                                if device != "cuda" {
                                    assert_eq!(n.to_bits(), hn.to_bits(), "{what}: norm");
                                }
                                clip_coef(max, n)
                            }
                            None => None,
                        };
                        if let Some((max, hn)) = norm {
                            assert!(hn > max, "{what}: clipping was not active (norm {hn})");
                        }
                        let ups: Vec<_> = (0..w.len()).map(|i| dev.next_update(i, 0.05)).collect();
                        s.apply_updates(&ups, scale).unwrap();
                        assert!(s.weights_stale());
                        s.sync_weights().unwrap();
                        if device == "cuda" {
                            for (x, y) in s.weights().iter().flatten().zip(w.iter().flatten()) {
                                assert!((x - y).abs() <= 1e-6 * y.abs().max(1e-3), "{what}");
                            }
                        } else {
                            assert_eq!(bits(s.weights()), bits(&w), "{what}: step {step}");
                            for i in 0..w.len() {
                                let (b0, b1) = s.optim_state(i).unwrap();
                                let (h0, h1) = host.buffers(i).unwrap();
                                assert_eq!(bits(&[b0]), bits(&[h0.to_vec()]), "{what}: state");
                                assert_eq!(bits(&[b1]), bits(&[h1.to_vec()]), "{what}: state");
                            }
                        }
                        // The device path keeps the weights the executor reads on the host.
                        s.set_all_weights(w).unwrap();
                    }
                    checked += 1;
                }
            }
        }
    }
    println!("{checked} optimizer runs of 3 steps matched");
    if shim_ran {
        reached_every_kernel(&["snn_sgd", "snn_adam", "snn_sq_sum"]);
    }
}

/// `Trainer::save_checkpoint` after two steps on the device, then `load_checkpoint` into a
/// fresh session and trainer and two more steps, ends where four steps in a row end: the
/// weights and the optimizer state (momentum, Adam's moments) leave the device and come
/// back exactly.
#[test]
fn training_resumes_from_a_checkpoint_of_device_state() {
    use snn_runtime::train::Trainer;
    let path = common::root().join("tests/in/train/mlp_4_8_3.snn");
    let program = common::compile_file(&path, common::train_opts()).unwrap();
    let settings = program.plan.train.as_ref().unwrap().settings.clone();
    let (t, b) = (program.plan.t, 4);
    let labels = [0u32, 1, 2, 1];
    let dir = common::root().join("target").join("device-checkpoint-test");
    std::fs::create_dir_all(&dir).unwrap();
    for device in optimizer_devices(&program) {
        let new = || load_on(&program, device, device).unwrap().session;
        let mut straight = new();
        let inputs = straight.random_inputs(t, b, 9);
        let mut tr = Trainer::new(&settings);
        for _ in 0..4 {
            tr.step(&mut straight, &inputs, &labels, t, 0.02).unwrap();
        }
        straight.sync_weights().unwrap();

        let mut first = new();
        let mut tr = Trainer::new(&settings);
        for _ in 0..2 {
            tr.step(&mut first, &inputs, &labels, t, 0.02).unwrap();
        }
        let ck = dir.join(format!("{device}.safetensors"));
        tr.save_checkpoint(&mut first, 2, &ck).unwrap();
        let mut resumed = new();
        let mut tr = Trainer::new(&settings);
        assert_eq!(tr.load_checkpoint(&mut resumed, &ck).unwrap(), 2);
        for _ in 0..2 {
            tr.step(&mut resumed, &inputs, &labels, t, 0.02).unwrap();
        }
        resumed.sync_weights().unwrap();
        for (x, y) in straight
            .weights()
            .iter()
            .flatten()
            .zip(resumed.weights().iter().flatten())
        {
            // Exact, except on a GPU, whose atomics may sum a gradient in another order.
            let tol = if device == "cuda" {
                1e-6 * x.abs().max(1e-3)
            } else {
                0.0
            };
            assert!(
                (x - y).abs() <= tol,
                "{device}: resumed weights differ: {x} vs {y}"
            );
        }
        assert_ne!(
            straight.weights(),
            new().weights(),
            "{device}: training changed nothing"
        );
        println!("{device}: 2 + 2 steps through a checkpoint = 4 steps");
    }
}

/// The shim's reverse launch order (`SNNC_SHIM_ORDER=reverse`, run by
/// `scripts/shim-memcheck.sh`) really reverses it: an in-place transpose, whose threads
/// read what other threads of the launch write (a race on a GPU), comes out different in
/// the two orders, while a kernel without such a dependency does not.
#[test]
fn host_shim_reverse_order_exposes_order_dependent_kernels() {
    use snn_runtime::cuda::{Gpu, Kernel, Launch, ShimGpu};
    let Some(cxx) = snn_runtime::cuda::shim::find_cxx() else {
        println!("SKIP host_shim_reverse_order: no C++ compiler (install g++ or set CXX)");
        return;
    };
    let dir = common::cache_dir().join("shim");
    let (n, k) = (3u64, 5u64);
    let w: Vec<f32> = (0..n * k).map(|i| i as f32).collect();
    let run = |reverse: bool, in_place: bool| -> Vec<f32> {
        let mut gpu = ShimGpu::build_in_order(&cxx, &dir, "", &[], &[], reverse).unwrap();
        let mut a = gpu.alloc_zeros(w.len()).unwrap();
        let b = gpu.alloc_zeros(w.len()).unwrap();
        gpu.htod(&w, &mut a, 0, "w").unwrap();
        let dst = if in_place { gpu.addr(&a) } else { gpu.addr(&b) };
        let cfg = Launch {
            blocks: 1,
            threads: 32,
        };
        gpu.launch(
            Kernel::Op(Op::named("snn_transpose").unwrap()),
            cfg,
            &[gpu.addr(&a), dst, n, k],
            "t",
        )
        .unwrap();
        let mut out = vec![0.0; w.len()];
        gpu.dtoh(if in_place { &a } else { &b }, 0, &mut out, "out")
            .unwrap();
        out
    };
    assert_eq!(
        run(false, false),
        run(true, false),
        "out of place: order-free"
    );
    assert_ne!(
        run(false, true),
        run(true, true),
        "in place: the orders must differ"
    );
}

/// `Trainer::step` (the optimizer on the device, the host copy left stale between steps)
/// against the host path it replaced (download the gradients, clip and step on the host,
/// upload all weights) for three steps in a row without a sync in between: bit-identical on
/// the CPU and the shim. On PSN plans this checks that the time-mixing weights the executor
/// reads on the host are refreshed after every device step (`host_read`).
#[test]
fn trainer_steps_on_the_device_match_the_host_path_without_syncing() {
    use snn_runtime::train::{loss_and_grads, optim, Trainer};
    for file in ["tests/in/train/psn.snn", "tests/in/train/mlp_4_8_3.snn"] {
        let path = common::root().join(file);
        let program = common::compile_file(&path, common::train_opts()).unwrap();
        let mut settings = program.plan.train.as_ref().unwrap().settings.clone();
        settings.clip = Some(0.5);
        let (t, b) = (program.plan.t, 3);
        let labels = [2u32, 0, 1];
        for device in optimizer_devices(&program) {
            if device == "cuda" {
                continue;
            }
            let what = format!("{file} on {device}");
            let mut dev = load_on(&program, device, &what).unwrap().session;
            let mut host = load_on(&program, device, &what).unwrap().session;
            let inputs = dev.random_inputs(t, b, 21);
            let mut tr = Trainer::new(&settings);
            let mut reference = Trainer::new(&settings);
            for step in 0..3 {
                let a = tr.step(&mut dev, &inputs, &labels, t, 0.05).unwrap();
                // The host path, as Trainer::step did before the device optimizer.
                let outs = host.run(&inputs, t, b).unwrap();
                let (stats, lg) = loss_and_grads(host.plan(), &outs, &labels, t).unwrap();
                let lr: Vec<&[f32]> = lg.iter().map(|g| g.as_slice()).collect();
                host.backward(&lr, t, b).unwrap();
                let mut g = host.grads().unwrap();
                optim::clip_grad_norm(&mut g, 0.5);
                let mut w = host.weights().to_vec();
                reference.optimizer.step(&mut w, &g, 0.05);
                host.set_all_weights(w).unwrap();
                assert_eq!(a, stats, "{what}: step {step} stats");
            }
            dev.sync_weights().unwrap();
            let bits =
                |v: &[Vec<f32>]| -> Vec<u32> { v.iter().flatten().map(|x| x.to_bits()).collect() };
            assert_eq!(bits(dev.weights()), bits(host.weights()), "{what}: weights");
            println!("{what}: 3 trainer steps equal the host path");
        }
    }
}

/// Two threads building the same shim library in the same fresh folder at once both load it
/// (their temporaries were named by the PID alone, so one renamed the other's away and the
/// second reported that the compiler "wrote no shim library"), and nothing temporary stays.
#[test]
fn concurrent_shim_builds_of_one_model_both_load() {
    use snn_runtime::cuda::ShimGpu;
    let Some(cxx) = snn_runtime::cuda::shim::find_cxx() else {
        println!("SKIP concurrent_shim_builds: no C++ compiler (install g++ or set CXX)");
        return;
    };
    let dir = std::env::temp_dir().join(format!("snnc-concurrent-shim-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let builds: Vec<_> = (0..2)
        .map(|_| {
            let (cxx, dir) = (cxx.clone(), dir.clone());
            std::thread::spawn(move || {
                ShimGpu::build(&cxx, &dir, "", &[], &[]).map(|g| g.library().to_path_buf())
            })
        })
        .collect();
    let libraries: Vec<_> = builds
        .into_iter()
        .map(|b| b.join().unwrap().unwrap())
        .collect();
    assert_eq!(libraries[0], libraries[1]);
    // The folder and the shim's source folder in it.
    let mut left: Vec<String> = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        left.push(e.file_name().to_string_lossy().into_owned());
        if e.path().is_dir() {
            for f in std::fs::read_dir(e.path()).unwrap().flatten() {
                left.push(f.file_name().to_string_lossy().into_owned());
            }
        }
    }
    assert!(
        left.iter().all(|n| !n.contains(".tmp-")),
        "temporaries left: {left:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The plastic weights of `s` set as Spyker initialises them, about N(0.8, 0.05) (a fixed
/// pattern), so every layer fires and every rule has work.
fn spyker_like_weights(s: &mut snn_runtime::Session) {
    let names: Vec<String> = (s.plan().learn.iter())
        .map(|l| s.plan().weights[l.weight].name.clone())
        .collect();
    for name in names {
        let n = s.weight(&name).unwrap().len();
        let w: Vec<f32> = (0..n)
            .map(|i| 0.8 + 0.05 * ((i as f32) * 0.618).sin())
            .collect();
        s.set_weight(&name, &w).unwrap();
    }
}

/// The learned weights of one `Session::learn` of every plastic model (examples/ and
/// tests/in: Spyker's STDP with k-WTA gates, R-STDP, trace STDP, a user-written rule) on
/// random inputs, CPU (or the recorded references) vs `device`, bit for bit: the rules'
/// f64 arithmetic has no contraction on either side (NVRTC `--fmad=false`). A weight may
/// differ only where a forward spike did (a potential on the threshold, summed in another
/// order on the GPU): at most 0.5% of the weights.
fn learning_matches_cpu_on_plastic_models(device: &str, refs: Option<&Path>) {
    let batch = 2;
    let mut compared = 0;
    for path in common::model_files() {
        let model = path.file_stem().unwrap().to_string_lossy().into_owned();
        let program = common::compile_file(&path, Options::default()).unwrap();
        if program.plan.learn.is_empty() {
            continue;
        }
        let t = program.plan.t.min(20);
        let names: Vec<String> = (program.plan.learn.iter())
            .map(|l| program.plan.weights[l.weight].name.clone())
            .collect();
        let ref_of = |dir: &Path, n: &str| dir.join(format!("{model}.learn.{n}.npy"));
        let in_dir = refs.map(|d| d.join(format!("{model}.learn.inputs")));
        let recorded = refs.is_some_and(|d| names.iter().all(|n| ref_of(d, n).is_file()))
            && in_dir.as_ref().is_some_and(|d| d.is_dir());
        let (inputs, cpu): (Vec<Tensor>, Vec<Vec<f32>>) = if recorded {
            let (d, i) = (refs.unwrap(), in_dir.as_ref().unwrap());
            let inputs = (0..program.plan.inputs.len())
                .map(|k| npy::read_npy(i.join(format!("{k}.npy"))).unwrap())
                .collect();
            let w = names
                .iter()
                .map(|n| npy::read_npy(ref_of(d, n)).unwrap().data)
                .collect();
            (inputs, w)
        } else {
            let mut l = snnc::session::load(&program, Some(&common::cache_dir())).unwrap();
            let s = &mut l.session;
            spyker_like_weights(s);
            let inputs = s.random_inputs(t, batch, SEED);
            s.learn(&inputs, t, batch).unwrap();
            s.sync_weights().unwrap();
            let w: Vec<Vec<f32>> = names
                .iter()
                .map(|n| s.weight(n).unwrap().to_vec())
                .collect();
            if let (Some(d), Some(i)) = (refs, &in_dir) {
                std::fs::create_dir_all(i).unwrap();
                for (k, x) in inputs.iter().enumerate() {
                    npy::write_npy(i.join(format!("{k}.npy")), x).unwrap();
                }
                for (n, v) in names.iter().zip(&w) {
                    let x = Tensor::new(vec![v.len()], v.clone()).unwrap();
                    npy::write_npy(ref_of(d, n), &x).unwrap();
                }
            }
            (inputs, w)
        };
        let mut l = match load_on(&program, device, &model) {
            Ok(l) => l,
            Err(why) => {
                println!("SKIP: no {device} device ({why})");
                return;
            }
        };
        let s = &mut l.session;
        spyker_like_weights(s);
        s.learn(&inputs, t, batch)
            .unwrap_or_else(|e| panic!("{model} on {device}: {e}"));
        s.sync_weights().unwrap();
        for (n, want) in names.iter().zip(&cpu) {
            let got = s.weight(n).unwrap();
            let differ = got
                .iter()
                .zip(want)
                .filter(|(a, b)| a.to_bits() != b.to_bits())
                .count();
            let moved = (want.iter().enumerate())
                .filter(|&(i, &x)| x != 0.8 + 0.05 * ((i as f32) * 0.618).sin())
                .count();
            println!("{model} {n} on {device}: {differ} of {} weights differ from the CPU's ({moved} moved)", want.len());
            assert!(moved > 0, "{model} {n}: the rule changed nothing");
            assert!(
                differ * 200 <= want.len(),
                "{model} {n} on {device}: {differ} of {} weights differ",
                want.len()
            );
            compared += 1;
        }
    }
    assert!(compared >= 6, "only {compared} plastic weights compared");
}

#[test]
fn cuda_learning_matches_cpu_on_every_plastic_model() {
    let refs = gpu_refs();
    if !snn_runtime::cuda::driver_present() && refs.is_none() {
        println!("SKIP: no CUDA device (libcuda.so not found)");
        return;
    }
    learning_matches_cpu_on_plastic_models("cuda", refs.as_deref());
}

#[test]
fn cuda_device_on_the_host_shim_learning_matches_cpu_on_every_plastic_model() {
    if shim_available("cuda_device_on_the_host_shim_learning_matches_cpu_on_every_plastic_model") {
        learning_matches_cpu_on_plastic_models("cuda-shim", None);
    }
}
