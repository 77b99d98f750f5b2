//! `snnc bench`: named workloads, each timed after a warm-up, repeated; the median and
//! the spread are reported as a table or as JSON lines. Issue 7 grows this list; today it
//! holds what the compiler's first milestone is measured by.

use std::time::Instant;

use rayon::prelude::*;
use snnc::diag::{DResult, Diagnostic, ErrorKind};
use snnc::{Compiler, Options};

pub const WORKLOADS: &[(&str, &str)] = &[
    (
        "triad",
        "STREAM triad a = b + s*c on 3 x 16M f32 (the machine's bandwidth limit)",
    ),
    (
        "gemm-peak",
        "dense f32 GEMM 2048 x 2048 x 2048 through the runtime's `gemm` path (the machine's \
         GEMM limit)",
    ),
    (
        "lif-fwd",
        "fused LIF forward, [T=64, B=32, N=4096], tau=2, hard reset, decay_input",
    ),
    (
        "lif-fwdbwd",
        "fused LIF forward + backward (dLoss/d(input) for loss = sum(S * G), ATan surrogate), \
         [T=64, B=32, N=4096]",
    ),
    (
        "mlp-infer",
        "784-512-10 LIF MLP, T=25, batch 128, Bernoulli input, one forward pass",
    ),
    (
        "mlp-train",
        "784-512-10 LIF MLP, T=25, batch 128, Bernoulli input: one training step (forward, \
         CE on counts, BPTT backward, Adam)",
    ),
    (
        "conv-infer",
        "examples/conv.snn (1x28x28, conv8-LIF-maxpool-conv16-LIF-avgpool-dense10-LIF, T=8) at batch 64, \
         one forward pass",
    ),
    (
        "compile",
        "snnc compile (parse .. lower + Rust printing) of every example",
    ),
    (
        "build",
        "CPU kernel build of examples/mlp.snn: cold (rustc -O into an empty cache) and cached \
         (load the cached library)",
    ),
];

struct Stats {
    median: f64,
    min: f64,
    max: f64,
}

fn time<F: FnMut() -> DResult<()>>(warmup: usize, repeat: usize, mut f: F) -> DResult<Stats> {
    for _ in 0..warmup {
        f()?;
    }
    let mut ts = Vec::with_capacity(repeat);
    for _ in 0..repeat.max(1) {
        let t0 = Instant::now();
        f()?;
        ts.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    ts.sort_by(|a, b| a.total_cmp(b));
    Ok(Stats {
        median: ts[ts.len() / 2],
        min: ts[0],
        max: ts[ts.len() - 1],
    })
}

fn report(json: bool, name: &str, s: &Stats, unit: &str, value: f64, extra: &str) {
    if json {
        say!(
            "{{\"workload\":\"{name}\",\"median_ms\":{:.4},\"min_ms\":{:.4},\"max_ms\":{:.4},\"{unit}\":{value:.4e}{extra}}}",
            s.median,
            s.min,
            s.max
        );
    } else {
        say!(
            "{name:<12} {:>9.3} ms  [{:>8.3} .. {:>8.3}]  {value:.3e} {unit}{}",
            s.median,
            s.min,
            s.max,
            extra.replace(['"', ','], " ")
        );
    }
}

fn load(src: &str, device: &str, train: bool) -> DResult<snnc::session::DeviceLoaded> {
    let mut c = Compiler::new(Options {
        train,
        ..Options::default()
    });
    let parsed = c
        .parse_str("bench.snn", src)
        .map_err(|d| Diagnostic::new(d.kind, d.plain(&c.sources)))?;
    let program = c.compile(&parsed)?;
    snnc::session::load_device(&program, device, None)
}

pub fn bench(names: &[String], repeat: usize, json: bool, device: &str) -> DResult<()> {
    let all: Vec<String> = WORKLOADS.iter().map(|(n, _)| n.to_string()).collect();
    let names = if names.is_empty() {
        all.clone()
    } else {
        names.to_vec()
    };
    for n in &names {
        if !all.contains(n) {
            return Err(
                Diagnostic::new(ErrorKind::UnknownName, format!("unknown workload `{n}`"))
                    .hint(format!("workloads: {}", all.join(", "))),
            );
        }
    }
    if !json {
        say!(
            "workload     median        [min .. max]         throughput   ({} threads)",
            rayon::current_num_threads()
        );
    }
    let mut triad_gbs = None;
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    for name in &names {
        match name.as_str() {
            "triad" | "gemm-peak" | "compile" | "build" if device != "cpu" => {
                if !json {
                    say!("{name:<12} (CPU-only workload, skipped on {device})");
                }
            }
            "triad" => {
                let n = 16 << 20;
                let b = vec![1.0f32; n];
                let c = vec![2.0f32; n];
                let mut a = vec![0.0f32; n];
                let s = time(2, repeat, || {
                    a.par_chunks_mut(1 << 16)
                        .zip(b.par_chunks(1 << 16).zip(c.par_chunks(1 << 16)))
                        .for_each(|(a, (b, c))| {
                            for i in 0..a.len() {
                                a[i] = b[i] + 3.0 * c[i];
                            }
                        });
                    Ok(())
                })?;
                // STREAM counts 3 arrays (2 reads + 1 write).
                let gbs = 3.0 * n as f64 * 4.0 / (s.median * 1e-3) / 1e9;
                triad_gbs = Some(gbs);
                report(json, name, &s, "GB/s", gbs, "");
            }
            "gemm-peak" => {
                let n = 2048;
                let a: Vec<f32> = (0..n * n).map(|i| (i % 7) as f32 * 0.1).collect();
                let w: Vec<f32> = (0..n * n).map(|i| (i % 5) as f32 * 0.1).collect();
                let mut y = vec![0.0f32; n * n];
                let s = time(1, repeat.min(10), || {
                    snn_runtime::cpu::ops::dense(&a, &w, None, &mut y, n, n, n, false)
                        .map_err(snnc::session::runtime_diag)
                })?;
                let gflops = 2.0 * (n * n * n) as f64 / (s.median * 1e-3) / 1e9;
                report(json, name, &s, "GFLOP/s", gflops, "");
            }
            "lif-fwd" => {
                let (t, b, n) = (64, 32, 4096);
                let mut l = load(&format!(
                    "model lif {{ T = {t}\n input x: [T, {n}]\n s = LIF(x, tau = 2.0, v_threshold = 1.0, v_reset = 0.0)\n output counts(s) }}"
                ), device, false)?;
                let x = l.session.random_inputs(t, b, 7);
                let x: Vec<_> = x
                    .into_iter()
                    .map(|mut x| {
                        x.data.iter_mut().for_each(|v| *v *= 2.5);
                        x
                    })
                    .collect();
                l.session
                    .run(&x, t, b)
                    .map_err(snnc::session::runtime_diag)?;
                let s = time(3, repeat, || {
                    l.session.rerun(t, b).map_err(snnc::session::runtime_diag)
                })?;
                let steps = (t * b * n) as f64;
                // Minimum traffic of a fused kernel: currents read once, spikes written once.
                let gbs = 2.0 * steps * 4.0 / (s.median * 1e-3) / 1e9;
                let frac = triad_gbs
                    .map(|tr| format!(",\"GB/s\":{gbs:.2},\"of_triad\":{:.2}", gbs / tr))
                    .unwrap_or_else(|| format!(",\"GB/s\":{gbs:.2}"));
                report(
                    json,
                    name,
                    &s,
                    "neuron-steps/s",
                    steps / (s.median * 1e-3),
                    &frac,
                );
            }
            "lif-fwdbwd" => {
                // ../shared/peers/lif_multistep.py's `fwdbwd`: forward, then the gradient of
                // sum(S * G) with respect to the input currents.
                let (t, b, n) = (64, 32, 4096);
                let mut l = load(&format!(
                    "model lif {{ T = {t}\n input x: [T, {n}]\n s = LIF(x, tau = 2.0, v_threshold = 1.0, v_reset = 0.0)\n output spikes(s)\n train {{ loss = first_spike(s)\n surrogate = atan(alpha = 2.0)\n input_grads = true }} }}"
                ), device, true)?;
                let mut x = l.session.random_inputs(t, b, 7);
                x.iter_mut()
                    .for_each(|x| x.data.iter_mut().for_each(|v| *v *= 2.5));
                let g: Vec<f32> = l.session.random_inputs(t, b, 8)[0]
                    .data
                    .iter()
                    .map(|v| v - 0.5)
                    .collect();
                l.session
                    .run(&x, t, b)
                    .map_err(snnc::session::runtime_diag)?;
                let s = time(3, repeat, || {
                    l.session.rerun(t, b).map_err(snnc::session::runtime_diag)?;
                    l.session
                        .backward(&[&g], t, b)
                        .map_err(snnc::session::runtime_diag)
                })?;
                let steps = (t * b * n) as f64;
                report(
                    json,
                    name,
                    &s,
                    "neuron-steps/s",
                    steps / (s.median * 1e-3),
                    "",
                );
            }
            "mlp-infer" => {
                let (t, b) = (25, 128);
                let mut l = load(&format!(
                    "model mlp {{ T = {t}\n input image: [784]\n x = bernoulli(image)\n h1 = dense(x, 512, init_gain = 3.0)\n s1 = LIF(h1, tau = 2.0)\n h2 = dense(s1, 10, init_gain = 3.0)\n s2 = LIF(h2, tau = 2.0)\n output counts(s2) }}"
                ), device, false)?;
                let x = l.session.random_inputs(t, b, 7);
                l.session
                    .run(&x, t, b)
                    .map_err(snnc::session::runtime_diag)?;
                let s = time(3, repeat, || {
                    l.session.rerun(t, b).map_err(snnc::session::runtime_diag)
                })?;
                report(
                    json,
                    name,
                    &s,
                    "samples/s",
                    b as f64 / (s.median * 1e-3),
                    "",
                );
            }
            "mlp-train" => {
                // The workload of ../shared/peers/mlp_forward.py's `train` column.
                let (t, b) = (25, 128);
                let mut l = load(&format!(
                    "model mlp {{ T = {t}\n input image: [784]\n x = bernoulli(image)\n h1 = dense(x, 512, init_gain = 3.0)\n s1 = LIF(h1, tau = 2.0)\n h2 = dense(s1, 10, init_gain = 3.0)\n s2 = LIF(h2, tau = 2.0)\n output counts(s2)\n train {{ loss = cross_entropy(counts(s2))\n surrogate = atan(alpha = 2.0)\n optimizer = adam(lr = 0.001) }} }}"
                ), device, true)?;
                let x = l.session.random_inputs(t, b, 7);
                let labels: Vec<u32> = (0..b as u32).map(|i| (i * 7 + 3) % 10).collect();
                let settings = l
                    .session
                    .plan()
                    .train
                    .as_ref()
                    .expect("training plan")
                    .settings
                    .clone();
                let mut trainer = snn_runtime::train::Trainer::new(&settings);
                let s = time(3, repeat, || {
                    trainer
                        .step(&mut l.session, &x, &labels, t, 1e-3)
                        .map(drop)
                        .map_err(snnc::session::runtime_diag)
                })?;
                report(
                    json,
                    name,
                    &s,
                    "samples/s",
                    b as f64 / (s.median * 1e-3),
                    "",
                );
            }
            "conv-infer" => {
                let b = 64;
                let path = examples.join("conv.snn");
                let src = std::fs::read_to_string(&path).map_err(|e| {
                    Diagnostic::new(
                        ErrorKind::Io,
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                let mut l = load(&src, device, false)?;
                let t = l.session.plan().t;
                let x = l.session.random_inputs(t, b, 7);
                l.session
                    .run(&x, t, b)
                    .map_err(snnc::session::runtime_diag)?;
                let s = time(2, repeat, || {
                    l.session.rerun(t, b).map_err(snnc::session::runtime_diag)
                })?;
                report(
                    json,
                    name,
                    &s,
                    "samples/s",
                    b as f64 / (s.median * 1e-3),
                    "",
                );
            }
            "build" => {
                let mut c = Compiler::new(Options::default());
                let parsed = c.parse_file(&examples.join("mlp.snn"))?;
                let program = c.compile(&parsed)?;
                let scratch =
                    std::env::temp_dir().join(format!("snnc-bench-build-{}", std::process::id()));
                let mut round = 0;
                // Cold: a fresh, empty cache directory each time (rustc -O builds the cdylib).
                let cold = time(0, repeat.min(3), || {
                    round += 1;
                    let dir = scratch.join(format!("cold{round}"));
                    let l = snnc::session::load(&program, Some(&dir))?;
                    debug_assert!(!l.lib.cached);
                    Ok(())
                });
                // Cached: the library of the last cold build, loaded again.
                let warm_dir = scratch.join(format!("cold{round}"));
                let cached = cold.and_then(|cold| {
                    report(json, "build:cold", &cold, "per-s", 1e3 / cold.median, "");
                    time(1, repeat, || {
                        let l = snnc::session::load(&program, Some(&warm_dir))?;
                        debug_assert!(l.lib.cached);
                        Ok(())
                    })
                });
                let _ = std::fs::remove_dir_all(&scratch);
                let cached = cached?;
                report(
                    json,
                    "build:cached",
                    &cached,
                    "per-s",
                    1e3 / cached.median,
                    "",
                );
            }
            "compile" => {
                let root = &examples;
                let mut files: Vec<_> = std::fs::read_dir(root)
                    .map_err(|e| {
                        Diagnostic::new(
                            ErrorKind::Io,
                            format!("cannot read {}: {e}", root.display()),
                        )
                    })?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|e| e == "snn"))
                    .collect();
                files.sort();
                for f in files {
                    let s = time(3, repeat, || {
                        let mut c = Compiler::new(Options::default());
                        let parsed = c.parse_file(&f)?;
                        let p = c.compile(&parsed)?;
                        std::hint::black_box(snnc::back::rust::print_program(&p));
                        Ok(())
                    })?;
                    let label = format!("compile:{}", f.file_stem().unwrap().to_string_lossy());
                    report(json, &label, &s, "per-s", 1e3 / s.median, "");
                }
            }
            _ => unreachable!(),
        }
    }
    Ok(())
}
