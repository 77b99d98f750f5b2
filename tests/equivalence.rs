//! Differential tests: every model in examples/ and tests/in/ gives identical outputs
//! (bit for bit) whichever plan the compiler makes: fused or unfused kernels, layer-by-layer
//! or step-by-step schedule, merged or separate launches, with or without memory reuse.

mod common;

use snn_runtime::Tensor;
use snnc::Options;

fn run(path: &std::path::Path, opts: Options, batch: usize) -> Vec<(String, Tensor)> {
    let program = common::compile_file(path, opts).unwrap();
    let mut loaded = snnc::session::load(&program, Some(&common::cache_dir())).unwrap();
    let s = &mut loaded.session;
    let t = program.plan.t.min(20);
    let inputs = s.random_inputs(t, batch, 1234);
    common::scale_weights(s);
    s.run(&inputs, t, batch)
        .unwrap()
        .into_iter()
        .map(|(d, t)| (d.name, t))
        .collect()
}

#[test]
fn all_plans_agree_on_every_model() {
    let variants = [
        (
            "unfused",
            Options {
                fuse: false,
                ..Options::default()
            },
        ),
        (
            "step-by-step",
            Options {
                force_steps: true,
                ..Options::default()
            },
        ),
        (
            "unfused step-by-step",
            Options {
                fuse: false,
                force_steps: true,
                ..Options::default()
            },
        ),
        (
            "no merge",
            Options {
                merge: false,
                ..Options::default()
            },
        ),
        (
            "no memory reuse",
            Options {
                reuse_memory: false,
                ..Options::default()
            },
        ),
    ];
    let mut spiking_outputs = 0;
    for path in common::model_files() {
        let base = run(&path, Options::default(), 3);
        for (_, t) in &base {
            if t.data.iter().any(|&x| x != 0.0) {
                spiking_outputs += 1;
            }
        }
        for (name, opts) in variants.clone() {
            let other = run(&path, opts.clone(), 3);
            assert_eq!(base.len(), other.len());
            for ((n1, a), (_, b)) in base.iter().zip(&other) {
                assert_eq!(a.shape, b.shape, "{}: {n1} ({name})", path.display());
                let diff = a
                    .data
                    .iter()
                    .zip(&b.data)
                    .filter(|(x, y)| x.to_bits() != y.to_bits())
                    .count();
                // Spikes and counts are identical in every plan. Membrane traces too, except
                // that a step-by-step GEMM over B rows may sum in another order than one over
                // T*B rows: there they agree to 1e-5 relative.
                let is_trace =
                    !(n1.ends_with(".spikes") || n1.ends_with(".counts") || n1 == "conv_spikes");
                if opts.force_steps && is_trace {
                    for (x, y) in a.data.iter().zip(&b.data) {
                        assert!(
                            (x - y).abs() <= 1e-5 * x.abs().max(1.0),
                            "{}: {n1} ({name}): {x} vs {y}",
                            path.display()
                        );
                    }
                } else {
                    assert_eq!(
                        diff,
                        0,
                        "{}: output {n1} differs in {diff} values ({name} vs fused)",
                        path.display()
                    );
                }
            }
        }
    }
    // The comparison means something only if the outputs are not all zero.
    assert!(
        spiking_outputs > 10,
        "only {spiking_outputs} outputs had non-zero values"
    );
}

#[test]
fn changing_a_parameter_needs_no_recompile() {
    let path = common::root().join("examples/mlp.snn");
    let program = common::compile_file(&path, Options::default()).unwrap();
    let mut loaded = snnc::session::load(&program, Some(&common::cache_dir())).unwrap();
    let s = &mut loaded.session;
    let x = s.random_inputs(10, 2, 5);
    let before = s.run(&x, 10, 2).unwrap();
    s.set_param("s1.v_threshold", 0.25).unwrap();
    let after = s.run(&x, 10, 2).unwrap();
    let rate = |o: &[(snn_runtime::plan::OutputDecl, Tensor)]| o[1].1.data.iter().sum::<f32>();
    assert!(
        rate(&after) > rate(&before) * 1.5,
        "lower threshold -> more spikes: {} vs {}",
        rate(&after),
        rate(&before)
    );
    // The same program, hence the same cached library: nothing was rebuilt.
    let again = snnc::session::load(&program, Some(&common::cache_dir())).unwrap();
    assert!(again.lib.cached);
    assert!(
        s.set_param("s1.tau", -1.0).is_err(),
        "tau must stay positive"
    );
}

#[test]
fn a_seed_set_at_run_time_equals_the_same_seed_in_the_file() {
    let src = |seed: u32| {
        format!("model m {{\n  T = 8\n  input x: [64]\n  sp = bernoulli(x, seed = {seed})\n  output spikes(sp)\n}}\n")
    };
    let run = |text: String, set: Option<f32>| {
        let program = common::compile_str(&text).unwrap();
        let mut l = snnc::session::load(&program, Some(&common::cache_dir())).unwrap();
        if let Some(v) = set {
            l.session.set_param("sp.seed", v).unwrap();
        }
        let x = vec![Tensor::full(&[2, 64], 0.5)];
        l.session.run(&x, 8, 2).unwrap().remove(0).1.data
    };
    let a = run(src(5), None);
    let b = run(src(77), Some(5.0));
    let c = run(src(77), None);
    assert_eq!(a, b);
    assert_ne!(a, c, "different seeds draw different spikes");
    let rate = a.iter().sum::<f32>() / a.len() as f32;
    assert!((rate - 0.5).abs() < 0.08, "Bernoulli(0.5) rate {rate}");
}

/// The encoders draw the documented stream (`snn_uniform` in kernels/rust/prelude.rs): spike
/// `[t, idx]` of `bernoulli(x, seed = s)` is `u < x[idx]` with `u` word `idx % 4` of
/// Philox4x32-10 at counter `(idx / 4 lo, idx / 4 hi, t, 0)` and key `(s, 0x5EED5EED)`, top 24
/// bits. Checked on every element with the runtime's Philox, with the T loop inside the
/// kernel and step by step, on 5 x 1001 neurons: several launch chunks, each walked in
/// 1024-neuron blocks (64 Philox calls at a time), 16-neuron blocks (one call per 4) and
/// single neurons.
#[test]
fn encoders_draw_the_documented_stream() {
    use snn_runtime::rng;
    const SEED: u32 = 123_456;
    let (t, b, f) = (6, 5, 1001);
    let src = format!(
        "model m {{\n  T = {t}\n  input x: [{f}]\n  sp = bernoulli(x, seed = {SEED})\n  output spikes(sp)\n}}\n"
    );
    let mut x = vec![0.0f32; b * f];
    rng::fill_uniform01(&mut x, 99, 0, rng::stream::INPUTS);
    for opts in [
        Options::default(),
        Options {
            force_steps: true,
            ..Options::default()
        },
    ] {
        let steps = opts.force_steps;
        let mut s = common::session_from_str("enc.snn", &src, opts);
        assert_eq!(s.param("sp.seed").unwrap().to_bits(), SEED);
        let x = Tensor::new(vec![b, f], x.clone()).unwrap();
        let out = s.run(std::slice::from_ref(&x), t, b).unwrap().remove(0).1;
        assert_eq!(out.shape, [t, b, f]);
        for ti in 0..t {
            for idx in 0..b * f {
                let q = (idx / 4) as u64;
                let r = rng::philox4x32_10(
                    [q as u32, (q >> 32) as u32, ti as u32, 0],
                    [SEED, 0x5EED_5EED],
                );
                let u = rng::uniform01(r[idx % 4]);
                let want = if u < x.data[idx] { 1.0 } else { 0.0 };
                assert_eq!(
                    out.data[ti * b * f + idx],
                    want,
                    "t {ti} idx {idx} (step by step: {steps})"
                );
            }
        }
    }
}

/// For every resetless model the parallel schedule (products over the time axis: a
/// sliding PSN's band, a recurrence's T x T decay matrix) and the sequential one (step after
/// step) give the same outputs: spikes identical, traces to 1e-5 relative. The input is the
/// sum of a per-step and a static current; T = 1, 7 and 40.
#[test]
fn parallel_and_sequential_schedules_agree() {
    // Two coupled states with non-zero initial values: the free response matters.
    const FILTER: &str = "neuron Filter2 {\n  param tau_s = 5.0 where tau_s > 0\n  param tau_m = 3.0 where tau_m > 0\n  param v_threshold = 0.3\n  state i = 0.2\n  state v = -0.1\n  update {\n    i = i - i / tau_s + I\n    v = v + (i - v) / tau_m\n  }\n  spike v >= v_threshold\n}\n";
    let pops = [
        ("LIF", ", tau = 2.0, reset = none", Some("v")),
        (
            "LIF",
            ", tau = 3.0, reset = none, decay_input = false, v_reset = -0.5",
            Some("v"),
        ),
        ("LI", ", tau = 4.0, v_rest = 0.25", None),
        ("IF", ", reset = none, v_threshold = 2.0", Some("v")),
        ("Leaky", ", beta = 0.8, reset_mechanism = none", Some("mem")),
        ("Filter2", "", Some("v")),
        ("SlidingPSN", ", k = 3, exp_init = false", Some("h")),
    ];
    let mut spikes = 0.0;
    for (model, args, state) in pops {
        for t in [1, 7, 40] {
            let src = |form: &str| {
                let outs = match state {
                    Some(s) => format!("output spikes(s)\n  output trace(s.{s})"),
                    None => "output trace(s.v)".into(),
                };
                format!("{FILTER}model m {{\n  T = {t}\n  batch = 3\n  seed = 2\n  input x: [T, 5]\n  input c: [5]\n  a = dense(x, 12, init_gain = 2.0)\n  b = dense(c, 12)\n  s = {model}(a + b{args}, schedule = {form})\n  {outs}\n}}\n")
            };
            let run = |form: &str| {
                let program = common::compile_str(&src(form))
                    .unwrap_or_else(|(d, at)| panic!("{at}: {}", d.message));
                let mut l = snnc::session::load(&program, Some(&common::cache_dir())).unwrap();
                let s = &mut l.session;
                let inputs = s.random_inputs(t, 3, 77);
                common::scale_weights(s);
                let outs = s.run(&inputs, t, 3).unwrap();
                let dump = snnc::ir::dump::program(&program);
                (outs, dump)
            };
            let (par, dump) = run("parallel");
            assert!(
                dump.contains("time_mix"),
                "{model}: the parallel plan mixes over time"
            );
            let (seq, _) = run("sequential");
            for ((o, a), (_, b)) in par.iter().zip(&seq) {
                let what = format!("{model}{args} at T = {t}: {}", o.name);
                if o.name.ends_with(".spikes") {
                    assert_eq!(a.data, b.data, "{what}");
                    spikes += a.data.iter().sum::<f32>();
                } else {
                    for (x, y) in a.data.iter().zip(&b.data) {
                        assert!(
                            (x - y).abs() <= 1e-5 * x.abs().max(1.0),
                            "{what}: {x} vs {y}"
                        );
                    }
                }
            }
        }
    }
    assert!(
        spikes > 100.0,
        "only {spikes} spikes: the comparison means little"
    );
}

/// With `Options::stream_stores`, outputs a forward kernel writes once per step are marked
/// `stream` in KernelIR (without it, none is), and a launch whose `[T, B, F]` arguments exceed 32 MiB (`SNN_STREAM_MIN_BYTES` in the generated
/// Rust) stores them with non-temporal stores, whole 64-byte lines only. Streamed and direct
/// stores give the same bits: every sample of a large batch (streamed: spikes, trace and
/// saved membrane; then the backward's input gradient from them) equals the same sample run
/// alone (a small launch). T and F are odd, so the rows of a block start at every alignment
/// and end anywhere in a line.
#[test]
fn streamed_outputs_equal_direct_stores() {
    let (t, batch, f) = (61, 35, 4099);
    let src = format!(
        "model big {{\n  T = {t}\n  input x: [T, {f}]\n  s = LIF(x, tau = 2.0)\n  output spikes(s)\n  output trace(s.v)\n  train {{\n    loss = first_spike(s)\n    input_grads = true\n  }}\n}}\n"
    );
    let compile = |stream_stores: bool| {
        let mut c = snnc::Compiler::new(Options {
            stream_stores,
            ..common::train_opts()
        });
        let parsed = c.parse_str("big.snn", &src).unwrap();
        let program = c.compile(&parsed).unwrap();
        let streamed: Vec<String> = program
            .kernels
            .iter()
            .flat_map(|k| k.args.iter().filter(|a| a.stream).map(|a| a.name.clone()))
            .collect();
        (program, streamed)
    };
    assert!(compile(false).1.is_empty());
    let (program, streamed) = compile(true);
    assert_eq!(streamed, ["spikes", "trace_v", "save_v"]);
    // The forward launch (4 tensors) is far over the threshold.
    assert!(4 * t * batch * f * 4 > 32 << 20);

    let mut s = snnc::session::load(&program, Some(&common::cache_dir()))
        .unwrap()
        .session;
    let mut x = s.random_inputs(t, batch, 11).remove(0);
    x.data.iter_mut().for_each(|v| *v *= 2.5);
    let mut g = s.random_inputs(t, batch, 12).remove(0);
    g.data.iter_mut().for_each(|v| *v -= 0.5);
    let run = |s: &mut snn_runtime::Session, x: &Tensor, g: &[f32], b: usize| {
        let mut outs: Vec<Vec<f32>> = s
            .run(std::slice::from_ref(x), t, b)
            .unwrap()
            .into_iter()
            .map(|(_, o)| o.data)
            .collect();
        s.backward(&[g], t, b).unwrap();
        outs.push(s.input_grad("x", t, b).unwrap().data);
        outs
    };
    let all = run(&mut s, &x, &g.data, batch);
    // Sample `b` of a `[T, B, F]` tensor.
    let sample = |d: &[f32], b: usize| -> Vec<f32> {
        (0..t)
            .flat_map(|ti| d[(ti * batch + b) * f..][..f].to_vec())
            .collect()
    };
    let mut spikes = 0.0;
    for b in [0, 17, batch - 1] {
        let xb = Tensor::new(vec![t, 1, f], sample(&x.data, b)).unwrap();
        let one = run(&mut s, &xb, &sample(&g.data, b), 1);
        for (i, (big, small)) in all.iter().zip(&one).enumerate() {
            assert!(
                sample(big, b) == *small,
                "output {i} of sample {b}: the large (streamed) launch differs"
            );
        }
        spikes += one[0].iter().sum::<f32>();
    }
    assert!(spikes > 1000.0, "only {spikes} spikes");
}
