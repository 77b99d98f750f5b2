//! `snnc bench`: named workloads, each timed after a warm-up, repeated; the median and
//! the spread are reported as a table or as JSON lines. Issue 7 grows this list; today it
//! holds what the compiler's first milestone is measured by.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
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
        "copy",
        "CUDA only: device-to-device copy of a 1 GiB buffer, bytes read + written, each copy \
         timed by CUDA events (the GPU's bandwidth limit; skipped on cpu)",
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
        "psn-fwd",
        "PSN, MaskedPSN(k=4, lambda=1), SlidingPSN(k=4) and LIF (hard reset) forward, B=32, \
         N=4096, T in {8,32,64,128} (--neuron psn,masked,sliding,lif and --t pick a subset); \
         the schedule is the cost model's",
    ),
    (
        "psn-fwdbwd",
        "the psn-fwd populations, forward + backward (run, then Session::backward of a spike \
         gradient) with `input_grads = true`: the weights' and the input's gradients, like the \
         peer's `(run(x) * g).sum().backward()`",
    ),
    (
        "psn-schedule",
        "resetless LIF and SlidingPSN(k=4) at each T (or the `--neuron` list): the cost model's pick and the forward and \
         forward+backward times of both schedules (forced with `schedule = ...`)",
    ),
    (
        "kheradpisheh",
        "examples/kheradpisheh.snn (Spyker's Kheradpisheh net: DoG, latency T=15, conv1 2->32 + \
         k-WTA STDP, conv2 32->150 + k-WTA STDP, feature pass) on MNIST images (the \
         tests/data/mnist-100 subset, or $SNNC_MNIST), batch 64: inference, layer-1 STDP and \
         layer-2 STDP (Session::learn_step with only that layer learning: the forward pass as \
         far as that layer's rule reads), images/s",
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

/// The neurons and lengths of the PSN workloads (`--neuron`, `--t`).
#[derive(Clone, Debug, Default)]
pub struct PsnOpts {
    pub neurons: Vec<String>,
    pub ts: Vec<usize>,
}

const PSN_B: usize = 32;
const PSN_N: usize = 4096;

fn psn_pop(neuron: &str, input: &str, sched: Option<&str>) -> DResult<String> {
    let s = sched
        .map(|s| format!(", schedule = {s}"))
        .unwrap_or_default();
    Ok(match neuron {
        "psn" => format!("PSN({input}{s})"),
        "masked" => format!("MaskedPSN({input}, k = 4, lambda = 1.0{s})"),
        "sliding" => format!("SlidingPSN({input}, k = 4{s})"),
        "lif" => format!("LIF({input}, tau = 2.0{s})"),
        "lif-none" => format!("LIF({input}, tau = 2.0, reset = none{s})"),
        _ => {
            return Err(Diagnostic::new(
                ErrorKind::UnknownName,
                format!("unknown neuron `{neuron}` for the PSN workloads"),
            )
            .hint("neurons: psn, masked, sliding, lif, lif-none"))
        }
    })
}

/// The source of a PSN workload: forward, or forward + backward with the input's gradient
/// (`input_grads = true`) as well as the learnable weights'.
fn psn_src(neuron: &str, t: usize, train: bool, sched: Option<&str>) -> DResult<String> {
    Ok(if train {
        format!(
            "model p {{ T = {t}\n input x: [T, {PSN_N}]\n s = {}\n output spikes(s)\n train {{ loss = first_spike(s)\n input_grads = true }} }}",
            psn_pop(neuron, "x", sched)?
        )
    } else {
        format!(
            "model p {{ T = {t}\n input x: [T, {PSN_N}]\n s = {}\n output spikes(s) }}",
            psn_pop(neuron, "x", sched)?
        )
    })
}

/// The cost model's time form for population `s` of `src`.
fn picked(src: &str) -> DResult<&'static str> {
    let mut c = Compiler::new(Options::default());
    let parsed = c
        .parse_str("bench.snn", src)
        .map_err(|d| Diagnostic::new(d.kind, d.plain(&c.sources)))?;
    let dump = c.dump_after(&parsed, "schedule")?;
    Ok(if dump.contains("\n  s: parallel") {
        "parallel"
    } else {
        "sequential"
    })
}

/// Median time of a PSN workload: forward (`rerun`) or forward + backward.
fn psn_time(src: &str, t: usize, train: bool, repeat: usize, device: &str) -> DResult<Stats> {
    let mut l = load(src, device, train, None)?;
    let x: Vec<_> = l
        .session
        .random_inputs(t, PSN_B, 7)
        .into_iter()
        .map(|mut x| {
            x.data.iter_mut().for_each(|v| *v *= 2.5);
            x
        })
        .collect();
    l.session
        .run(&x, t, PSN_B)
        .map_err(snnc::session::runtime_diag)?;
    if !train {
        return time(2, repeat, || {
            l.session
                .rerun(t, PSN_B)
                .map_err(snnc::session::runtime_diag)
        });
    }
    let g: Vec<f32> = (0..t * PSN_B * PSN_N)
        .map(|i| ((i * 2654435761usize) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    time(2, repeat, || {
        l.session
            .rerun(t, PSN_B)
            .map_err(snnc::session::runtime_diag)?;
        l.session
            .backward(&[&g], t, PSN_B)
            .map_err(snnc::session::runtime_diag)
    })
}

struct Stats {
    median: f64,
    min: f64,
    max: f64,
}

impl Stats {
    /// Median, min and max of times in ms (at least one).
    fn of(mut ts: Vec<f64>) -> Stats {
        ts.sort_by(|a, b| a.total_cmp(b));
        Stats {
            median: ts[ts.len() / 2],
            min: ts[0],
            max: ts[ts.len() - 1],
        }
    }
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
    Ok(Stats::of(ts))
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

/// `--stream-stores`: every workload compiled with [`Options::stream_stores`].
static STREAM_STORES: AtomicBool = AtomicBool::new(false);
/// `--prefetch-steps`: every workload compiled with [`Options::prefetch_steps`].
static PREFETCH_STEPS: AtomicU32 = AtomicU32::new(0);

/// The options `--stream-stores` and `--prefetch-steps` set, for every workload.
fn codegen(train: bool, sparse: Option<bool>) -> Options {
    let d = Options::default();
    let steps = PREFETCH_STEPS.load(Ordering::Relaxed);
    Options {
        train,
        sparse,
        stream_stores: STREAM_STORES.load(Ordering::Relaxed),
        prefetch_steps: if steps == 0 { d.prefetch_steps } else { steps },
        ..d
    }
}

fn load(
    src: &str,
    device: &str,
    train: bool,
    sparse: Option<bool>,
) -> DResult<snnc::session::DeviceLoaded> {
    let mut c = Compiler::new(codegen(train, sparse));
    let parsed = c
        .parse_str("bench.snn", src)
        .map_err(|d| Diagnostic::new(d.kind, d.plain(&c.sources)))?;
    let program = c.compile(&parsed)?;
    snnc::session::load_device(&program, device, None)
}

/// [`load`], then (with `calibrate`, under `--sparse auto`) a calibration run on the
/// workload's inputs (`random_inputs(t, b, seed)`): projections of spikes left to the cost
/// model get their measured input rate, and the program is recompiled if a form changes.
/// Also returns the calibration, for the report.
#[allow(clippy::too_many_arguments)]
fn load_calibrated(
    src: &str,
    device: &str,
    train: bool,
    sparse: Option<bool>,
    calibrate: bool,
    t: usize,
    b: usize,
    seed: u64,
) -> DResult<(
    snnc::session::DeviceLoaded,
    Option<snnc::session::Calibrated>,
)> {
    let mut c = Compiler::new(codegen(train, sparse));
    let parsed = c
        .parse_str("bench.snn", src)
        .map_err(|d| Diagnostic::new(d.kind, d.plain(&c.sources)))?;
    let program = c.compile(&parsed)?;
    let mut l = snnc::session::load_device(&program, device, None)?;
    let cal = if calibrate {
        let x = l.session.random_inputs(t, b, seed);
        snnc::session::calibrate_loaded(&mut c, &parsed, &mut l, device, &x, t, b)?
    } else {
        None
    };
    Ok((l, cal))
}

/// The calibration as JSON fields: `"calibrated":"h1 0.5021 dense; h2 0.09926 dense"`.
fn calibration_json(cal: &Option<snnc::session::Calibrated>) -> String {
    match cal {
        None => String::new(),
        Some(c) => {
            let parts: Vec<String> = c
                .choices
                .iter()
                .map(|(n, ch)| {
                    format!(
                        "{n} {:.4} {}",
                        ch.rate,
                        if ch.sparse { "event-driven" } else { "dense" }
                    )
                })
                .collect();
            format!(",\"calibrated\":\"{}\"", parts.join("; "))
        }
    }
}

/// The examples (`conv-infer`, `compile`, `build`): those under `$SNNC_REPO_ROOT` when set,
/// else those of the checkout snnc was built in, else `examples/` in the current directory (a
/// binary carried to another machine and run from a copy of the repository, as
/// scripts/gpu-session.sh does), the order tests/common's `root()` uses.
fn examples_dir() -> std::path::PathBuf {
    if let Some(dir) = std::env::var_os("SNNC_REPO_ROOT") {
        return std::path::PathBuf::from(dir).join("examples");
    }
    let built = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    if built.is_dir() {
        built
    } else {
        std::path::PathBuf::from("examples")
    }
}

#[allow(clippy::too_many_arguments)]
pub fn bench(
    names: &[String],
    repeat: usize,
    json: bool,
    device: &str,
    psn: &PsnOpts,
    sparse: Option<bool>,
    calibrate: bool,
    stream_stores: bool,
    prefetch_steps: Option<u32>,
) -> DResult<()> {
    if snnc::session::parse_device(device)? == snnc::session::DeviceKind::CudaShim {
        // One host thread walking every GPU thread: its times say nothing about either device.
        return Err(Diagnostic::new(
            ErrorKind::BadArgument,
            "`--device cuda-shim` checks the CUDA path on the host; it is not for timing",
        )
        .hint("benchmark with --device cpu, or --device cuda on a GPU"));
    }
    if repeat == 0 {
        return Err(Diagnostic::new(
            ErrorKind::BadArgument,
            "`--repeat 0`: a workload needs at least 1 repetition",
        )
        .hint("e.g. --repeat 20 (the default)"));
    }
    if let Some(t) = psn.ts.iter().find(|&&t| t == 0) {
        return Err(Diagnostic::new(
            ErrorKind::BadArgument,
            format!("`--t {t}`: a PSN sequence length must be at least 1 time step"),
        )
        .hint("e.g. --t 8,32 (default 8,32,64,128)"));
    }
    STREAM_STORES.store(stream_stores, Ordering::Relaxed);
    PREFETCH_STEPS.store(prefetch_steps.unwrap_or(0), Ordering::Relaxed);
    let ts: Vec<usize> = if psn.ts.is_empty() {
        vec![8, 32, 64, 128]
    } else {
        psn.ts.clone()
    };
    let neurons: Vec<String> = if psn.neurons.is_empty() {
        ["psn", "masked", "sliding", "lif"]
            .map(String::from)
            .to_vec()
    } else {
        psn.neurons.clone()
    };
    let all: Vec<String> = WORKLOADS.iter().map(|(n, _)| n.to_string()).collect();
    let mut names = if names.is_empty() {
        all.clone()
    } else {
        names.to_vec()
    };
    // The bandwidth limits first, so that the workloads after them can print their fraction
    // (`of_triad` on the CPU, `of_copy` on CUDA) whatever order they were named in.
    names.sort_by_key(|n| !matches!(n.as_str(), "triad" | "copy"));
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
    // The device's bandwidth limit when it was measured: ("of_triad", GB/s) on the CPU,
    // ("of_copy", GB/s) on CUDA.
    let mut limit: Option<(&str, f64)> = None;
    let examples = examples_dir();
    for name in &names {
        match name.as_str() {
            "triad" | "gemm-peak" | "compile" | "build" if device != "cpu" => {
                if !json {
                    say!("{name:<12} (CPU-only workload, skipped on {device})");
                }
            }
            "copy" if device == "cpu" => {
                if !json {
                    say!("{name:<12} (CUDA-only workload, skipped on cpu)");
                }
            }
            "copy" => {
                let ordinal = match snnc::session::parse_device(device)? {
                    snnc::session::DeviceKind::Cuda(n) => n,
                    _ => 0,
                };
                let c = snn_runtime::cuda::copy_bandwidth(ordinal, 1 << 30, 3, repeat)
                    .map_err(snnc::session::cuda_diag)?;
                let s = Stats::of(c.ms);
                // Every byte is read once and written once.
                let gbs = 2.0 * c.bytes as f64 / (s.median * 1e-3) / 1e9;
                limit = Some(("of_copy", gbs));
                report(
                    json,
                    name,
                    &s,
                    "GB/s",
                    gbs,
                    &format!(",\"bytes\":{}", c.bytes),
                );
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
                limit = Some(("of_triad", gbs));
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
                ), device, false, sparse)?;
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
                let frac = limit
                    .map(|(of, l)| format!(",\"GB/s\":{gbs:.2},\"{of}\":{:.2}", gbs / l))
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
                ), device, true, None)?;
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
                let (mut l, cal) = load_calibrated(&format!(
                    "model mlp {{ T = {t}\n input image: [784]\n x = bernoulli(image)\n h1 = dense(x, 512, init_gain = 3.0)\n s1 = LIF(h1, tau = 2.0)\n h2 = dense(s1, 10, init_gain = 3.0)\n s2 = LIF(h2, tau = 2.0)\n output counts(s2) }}"
                ), device, false, sparse, calibrate, t, b, 7)?;
                let x = l.session.random_inputs(t, b, 7);
                l.session
                    .run(&x, t, b)
                    .map_err(snnc::session::runtime_diag)?;
                let s = time(3, repeat, || {
                    l.session.rerun(t, b).map_err(snnc::session::runtime_diag)
                })?;
                // The spike rates of the same network on the same inputs (same seeds), from a
                // copy that also outputs the spikes: what decides the event-driven form.
                let mut r = load(&format!(
                    "model mlp {{ T = {t}\n input image: [784]\n x = bernoulli(image)\n h1 = dense(x, 512, init_gain = 3.0)\n s1 = LIF(h1, tau = 2.0)\n h2 = dense(s1, 10, init_gain = 3.0)\n s2 = LIF(h2, tau = 2.0)\n output counts(s2)\n output spikes(x)\n output spikes(s1)\n output spikes(s2) }}"
                ), device, false, Some(false))?;
                let outs = r
                    .session
                    .run(&x, t, b)
                    .map_err(snnc::session::runtime_diag)?;
                let mean = |i: usize| {
                    let d = &outs[i].1.data;
                    d.iter().map(|&v| v as f64).sum::<f64>() / d.len().max(1) as f64
                };
                let rates = format!(
                    ",\"rate_x\":{:.4},\"rate_s1\":{:.4},\"rate_s2\":{:.4}{}",
                    mean(1),
                    mean(2),
                    mean(3),
                    calibration_json(&cal)
                );
                report(
                    json,
                    name,
                    &s,
                    "samples/s",
                    b as f64 / (s.median * 1e-3),
                    &rates,
                );
            }
            "mlp-train" => {
                // The workload of ../shared/peers/mlp_forward.py's `train` column.
                let (t, b) = (25, 128);
                let (mut l, cal) = load_calibrated(&format!(
                    "model mlp {{ T = {t}\n input image: [784]\n x = bernoulli(image)\n h1 = dense(x, 512, init_gain = 3.0)\n s1 = LIF(h1, tau = 2.0)\n h2 = dense(s1, 10, init_gain = 3.0)\n s2 = LIF(h2, tau = 2.0)\n output counts(s2)\n train {{ loss = cross_entropy(counts(s2))\n surrogate = atan(alpha = 2.0)\n optimizer = adam(lr = 0.001) }} }}"
                ), device, true, sparse, calibrate, t, b, 7)?;
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
                    &calibration_json(&cal),
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
                // The model's T; the calibration decides the conv of pooled spikes (c2).
                let t = {
                    let mut c = Compiler::new(Options::default());
                    let parsed = c.parse_file(&path)?;
                    c.compile(&parsed)?.plan.t
                };
                let (mut l, cal) =
                    load_calibrated(&src, device, false, sparse, calibrate, t, b, 7)?;
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
                    &calibration_json(&cal),
                );
            }
            "kheradpisheh" => {
                let b = 64;
                let path = examples.join("kheradpisheh.snn");
                let src = std::fs::read_to_string(&path).map_err(|e| {
                    Diagnostic::new(
                        ErrorKind::Io,
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                let mut l = load(&src, device, false, sparse)?;
                let t = l.session.plan().t;
                let dir = std::env::var_os("SNNC_MNIST")
                    .map(std::path::PathBuf::from)
                    .unwrap_or_else(|| examples.join("../tests/data/mnist-100"));
                let data = snn_runtime::data::mnist::load(&dir, true)
                    .map_err(snnc::session::runtime_diag)?;
                let idx: Vec<usize> = (0..b).map(|i| i % data.len()).collect();
                let batch = data.batch(&idx);
                let x = vec![snn_runtime::Tensor::new(batch.shape, batch.x)
                    .map_err(snnc::session::runtime_diag)?];
                let rt = snnc::session::runtime_diag;
                for (stage, learn) in [
                    ("infer", [false, false]),
                    ("stdp1", [true, false]),
                    ("stdp2", [false, true]),
                ] {
                    l.session.set_learning("c1", learn[0]).map_err(rt)?;
                    l.session.set_learning("c2", learn[1]).map_err(rt)?;
                    let any = learn.iter().any(|&on| on);
                    let s = time(1, repeat, || {
                        if any {
                            l.session.learn_step(&x, t, b).map_err(rt)
                        } else {
                            l.session.run(&x, t, b).map(|_| ()).map_err(rt)
                        }
                    })?;
                    report(
                        json,
                        &format!("{name}-{stage}"),
                        &s,
                        "images/s",
                        b as f64 / (s.median * 1e-3),
                        "",
                    );
                }
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
            "psn-fwd" | "psn-fwdbwd" => {
                let train = name == "psn-fwdbwd";
                for &t in &ts {
                    for neuron in &neurons {
                        let src = psn_src(neuron, t, train, None)?;
                        let form = picked(&src)?;
                        let s = psn_time(&src, t, train, repeat, device)?;
                        let extra = format!(
                            ",\"neuron\":\"{neuron}\",\"T\":{t},\"B\":{PSN_B},\"N\":{PSN_N},\"schedule\":\"{form}\""
                        );
                        let steps = (t * PSN_B * PSN_N) as f64;
                        report(
                            json,
                            name,
                            &s,
                            "neuron-steps/s",
                            steps / (s.median * 1e-3),
                            &extra,
                        );
                    }
                }
            }
            "psn-schedule" => {
                for &t in &ts {
                    let pair = ["lif-none", "sliding"].map(String::from);
                    for neuron in if psn.neurons.is_empty() {
                        &pair[..]
                    } else {
                        &psn.neurons[..]
                    } {
                        let neuron = neuron.as_str();
                        // The pick for inference and for training (a train block may change it).
                        let form = picked(&psn_src(neuron, t, false, None)?)?;
                        let form_train = picked(&psn_src(neuron, t, true, None)?)?;
                        let mut ms = Vec::new();
                        for train in [false, true] {
                            for sched in ["parallel", "sequential"] {
                                let src = psn_src(neuron, t, train, Some(sched))?;
                                ms.push(psn_time(&src, t, train, repeat, device)?.median);
                            }
                        }
                        let (fwd, both) = ((ms[0], ms[1]), (ms[2], ms[3]));
                        let of_best = |form: &str, (p, q): (f64, f64)| {
                            (if form == "parallel" { p } else { q }) / p.min(q)
                        };
                        let line = format!(
                            "{{\"workload\":\"psn-schedule\",\"neuron\":\"{neuron}\",\"T\":{t},\"B\":{PSN_B},\"N\":{PSN_N},\"picked\":\"{form}\",\"picked_train\":\"{form_train}\",\"fwd_parallel_ms\":{:.3},\"fwd_sequential_ms\":{:.3},\"fwdbwd_parallel_ms\":{:.3},\"fwdbwd_sequential_ms\":{:.3},\"fwd_picked_over_best\":{:.3},\"fwdbwd_picked_over_best\":{:.3}}}",
                            fwd.0,
                            fwd.1,
                            both.0,
                            both.1,
                            of_best(form, fwd),
                            of_best(form_train, both)
                        );
                        if json {
                            say!("{line}");
                        } else {
                            say!(
                                "psn-schedule {neuron:<8} T={t:<4} picked {form:<10} fwd par {:.3} / seq {:.3} ms; training picked {form_train:<10} fwd+bwd par {:.3} / seq {:.3} ms",
                                fwd.0, fwd.1, both.0, both.1
                            );
                        }
                    }
                }
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
