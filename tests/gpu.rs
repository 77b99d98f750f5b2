//! CUDA device against the CPU: every model in examples/ and tests/in/, with the same
//! weights (scaled x4 so every layer spikes, as in tests/equivalence.rs) and inputs, in the
//! default (layer-by-layer) and the step-by-step plan. Spikes and counts must be identical,
//! traces equal to 1e-5 relative (cuBLAS sums in another order than the CPU GEMM).
//!
//! Without a CUDA driver or device the test prints `SKIP: ...` and passes. The NVRTC
//! compile and register/spill check, which needs no GPU, is tests/nvrtc.rs.
//!
//! `SNNC_GPU_REFS=DIR`: CPU outputs are read from `DIR/<model>.<variant>.<output>.npy` when
//! present, else computed and written there. This runs the comparison on a GPU machine that
//! has no Rust toolchain to build the CPU kernels: record locally, carry DIR along.

mod common;

use std::path::{Path, PathBuf};

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
}

#[test]
fn cuda_matches_cpu_on_every_model() {
    let refs = std::env::var_os("SNNC_GPU_REFS").map(PathBuf::from);
    if let Some(d) = &refs {
        std::fs::create_dir_all(d).unwrap();
    }
    if !snn_runtime::cuda::driver_present() && refs.is_none() {
        println!("SKIP: no CUDA device (libcuda.so not found)");
        return;
    }
    let mut skip: Option<String> = None;
    let mut failures: Vec<String> = Vec::new();
    let mut compared = 0;
    let mut nonzero = 0;
    let mut max_rel = 0.0f64;
    for path in common::model_files() {
        let model = path.file_stem().unwrap().to_string_lossy().into_owned();
        for (variant, opts) in variants() {
            let program = common::compile_file(&path, opts).unwrap();
            let (case, cpu) = cpu_outputs(&program, &model, variant, refs.as_deref());
            if skip.is_some() {
                continue;
            }
            let mut loaded = match snnc::session::load_device(&program, "cuda", None) {
                Ok(l) => l,
                Err(d) if is_unavailable(&d.message) => {
                    skip = Some(d.message.clone());
                    continue;
                }
                Err(d) => panic!("{model} ({variant}): {}", d.message),
            };
            let s = &mut loaded.session;
            common::scale_weights(s);
            let gpu = s
                .run(&case.inputs, case.t, BATCH)
                .unwrap_or_else(|e| panic!("{model} ({variant}): {e}"));
            assert_eq!(gpu.len(), cpu.len());
            let mut line = format!("{model} ({variant}, {}):", loaded.kernels);
            for ((decl, g), (name, c)) in gpu.iter().zip(&cpu) {
                assert_eq!(&decl.name, name);
                assert_eq!(g.shape, c.shape, "{model} ({variant}): {name}");
                compared += 1;
                if c.data.iter().any(|&x| x != 0.0) {
                    nonzero += 1;
                }
                let exact = decl.kind != OutputKind::Trace;
                let mut bad = 0usize;
                let mut worst = 0.0f64;
                for (x, y) in c.data.iter().zip(&g.data) {
                    let rel = ((x - y).abs() / x.abs().max(1.0)) as f64;
                    worst = worst.max(rel);
                    let ok = if exact {
                        x.to_bits() == y.to_bits()
                    } else {
                        rel <= 1e-5
                    };
                    if !ok {
                        bad += 1;
                    }
                }
                max_rel = max_rel.max(worst);
                line.push_str(&format!(" {name} max rel {worst:.2e}"));
                if bad > 0 {
                    failures.push(format!(
                        "{model} ({variant}): {name} differs in {bad} of {} values (max rel {worst:.3e})",
                        c.data.len()
                    ));
                }
            }
            println!("{line}");
        }
    }
    if let Some(why) = skip {
        println!("SKIP: no CUDA device ({why})");
        return;
    }
    println!(
        "compared {compared} outputs ({nonzero} non-zero), max relative difference {max_rel:.3e}"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(nonzero > 10, "only {nonzero} outputs had non-zero values");
}

/// Transfers through the page-locked staging buffers (`PINNED_MIN` floats and up) and the
/// direct ones: every upload comes back bit for bit, also when a staging buffer is reused
/// before the copy out of it ran (two uploads of one length in a row, then downloads), and
/// when more lengths than buffers kept evict the oldest; weights too.
#[test]
fn transfers_round_trip_through_pinned_staging() {
    use snn_runtime::cuda::{CudaDevice, PINNED_MIN};
    use snn_runtime::device::{Device, Loc};
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
