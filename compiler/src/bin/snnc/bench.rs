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
        "lif-fwd",
        "fused LIF forward, [T=64, B=32, N=4096], tau=2, hard reset, decay_input",
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
        "compile",
        "snnc compile (parse .. lower + Rust printing) of every example",
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

fn load(
    src: &str,
    device: &str,
    train: bool,
    sparse: Option<bool>,
) -> DResult<snnc::session::DeviceLoaded> {
    let mut c = Compiler::new(Options {
        train,
        sparse,
        ..Options::default()
    });
    let parsed = c
        .parse_str("bench.snn", src)
        .map_err(|d| Diagnostic::new(d.kind, d.plain(&c.sources)))?;
    let program = c.compile(&parsed)?;
    snnc::session::load_device(&program, device, None)
}

pub fn bench(
    names: &[String],
    repeat: usize,
    json: bool,
    device: &str,
    sparse: Option<bool>,
) -> DResult<()> {
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
    for name in &names {
        match name.as_str() {
            "triad" | "compile" if device != "cpu" => {
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
            "mlp-infer" => {
                let (t, b) = (25, 128);
                let mut l = load(&format!(
                    "model mlp {{ T = {t}\n input image: [784]\n x = bernoulli(image)\n h1 = dense(x, 512, init_gain = 3.0)\n s1 = LIF(h1, tau = 2.0)\n h2 = dense(s1, 10, init_gain = 3.0)\n s2 = LIF(h2, tau = 2.0)\n output counts(s2) }}"
                ), device, false, sparse)?;
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
                    ",\"rate_x\":{:.4},\"rate_s1\":{:.4},\"rate_s2\":{:.4}",
                    mean(1),
                    mean(2),
                    mean(3)
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
                let mut l = load(&format!(
                    "model mlp {{ T = {t}\n input image: [784]\n x = bernoulli(image)\n h1 = dense(x, 512, init_gain = 3.0)\n s1 = LIF(h1, tau = 2.0)\n h2 = dense(s1, 10, init_gain = 3.0)\n s2 = LIF(h2, tau = 2.0)\n output counts(s2)\n train {{ loss = cross_entropy(counts(s2))\n surrogate = atan(alpha = 2.0)\n optimizer = adam(lr = 0.001) }} }}"
                ), device, true, sparse)?;
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
            "compile" => {
                let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
                let mut files: Vec<_> = std::fs::read_dir(&root)
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
