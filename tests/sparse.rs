//! Event-driven projections (`dense` and `conv2d` of spikes, `Op::Gemm(Gemm { sparse: true })`,
//! `Op::Conv2d(Conv2d { sparse: true })`) against dense GEMM and im2col on whole models: every model of examples/ and tests/in/ with `--sparse on` and
//! `--sparse off`, and the training models' gradients.
//!
//! Both forms compute the same sums in a different order. With weights on a dyadic grid
//! (multiples of 2^-8, small) and 0/1 spikes every partial sum is exact in f32, so the
//! order cannot matter and the outputs must be identical bit for bit, spikes and traces,
//! through every layer. With arbitrary weights the currents differ in the last bits, and a
//! membrane within one rounding of its threshold may spike in one form and not the other;
//! after that the two runs diverge legitimately, so that comparison is not made.
//! Weight gradients (whose `dy` is not on a grid) agree to 1e-5 relative to their largest
//! element.

mod common;

use snnc::Options;

fn dyadic_weights(s: &mut snn_runtime::Session) {
    for w in s.plan().weights.clone() {
        let q: Vec<f32> = s
            .weight(&w.name)
            .unwrap()
            .iter()
            .map(|x| (x * 4.0 * 256.0).round() / 256.0)
            .collect();
        s.set_weight(&w.name, &q).unwrap();
    }
}

fn opts(sparse: bool, train: bool) -> Options {
    Options {
        sparse: Some(sparse),
        train,
        ..Options::default()
    }
}

/// Projection ops of a plan (forward and backward): `(all, event-driven, event-driven
/// convolutions)`.
fn gemms(plan: &snn_runtime::plan::Plan) -> (usize, usize, usize) {
    use snn_runtime::plan::{Conv2d, Conv2dDw, Gemm, GemmDw, Op};
    fn walk(ops: &[Op], acc: &mut (usize, usize, usize)) {
        for op in ops {
            match op {
                Op::Gemm(Gemm { sparse, .. }) | Op::GemmDw(GemmDw { sparse, .. }) => {
                    acc.0 += 1;
                    acc.1 += *sparse as usize;
                }
                Op::Conv2d(Conv2d { sparse, .. }) | Op::Conv2dDw(Conv2dDw { sparse, .. }) => {
                    acc.0 += 1;
                    acc.1 += *sparse as usize;
                    acc.2 += *sparse as usize;
                }
                Op::StepLoop { body } | Op::ReverseStepLoop { body } => walk(body, acc),
                _ => {}
            }
        }
    }
    let mut acc = (0, 0, 0);
    walk(&plan.ops, &mut acc);
    if let Some(t) = &plan.train {
        walk(&t.backward, &mut acc);
    }
    acc
}

#[test]
fn sparse_on_and_off_agree_on_every_model() {
    let (mut event_driven, mut convs) = (0, 0);
    for path in common::model_files() {
        let mut outs = vec![];
        for sparse in [false, true] {
            let program = common::compile_file(&path, opts(sparse, false)).unwrap();
            let (_, n_sparse, n_conv) = gemms(&program.plan);
            if sparse {
                event_driven += n_sparse;
                convs += n_conv;
            } else {
                assert_eq!(n_sparse, 0, "{}: --sparse off", path.display());
            }
            let mut loaded = snnc::session::load(&program, Some(&common::cache_dir())).unwrap();
            let s = &mut loaded.session;
            let t = program.plan.t.min(20);
            let inputs = s.random_inputs(t, 3, 1234);
            dyadic_weights(s);
            outs.push(s.run(&inputs, t, 3).unwrap());
        }
        let (off, on) = (&outs[0], &outs[1]);
        assert_eq!(off.len(), on.len());
        for ((d, a), (_, b)) in off.iter().zip(on) {
            assert_eq!(a.shape, b.shape);
            assert!(
                a.data == b.data,
                "{}: output {} differs between --sparse off and on",
                path.display(),
                d.name
            );
        }
    }
    assert!(
        event_driven >= 10,
        "only {event_driven} event-driven projections"
    );
    // examples/conv.snn's second layer, tests/in/encoders_pooling.snn's conv of an encoder.
    assert!(convs >= 2, "only {convs} event-driven convolutions");
}

#[test]
fn training_gradients_agree_with_sparse_on_and_off() {
    let files = common::snn_files("tests/in/train");
    let (mut compared, mut convs) = (0, 0);
    for path in files {
        let mut results = vec![];
        for sparse in [false, true] {
            let program = common::compile_file(&path, opts(sparse, true)).unwrap();
            let mut loaded = snnc::session::load(&program, Some(&common::cache_dir())).unwrap();
            let s = &mut loaded.session;
            let t = program.plan.t.min(12);
            let b = 4;
            let inputs = s.random_inputs(t, b, 99);
            dyadic_weights(s);
            let out = s.run(&inputs, t, b).unwrap();
            let train = s.plan().train.clone().unwrap();
            let mut gs: Vec<Vec<f32>> = vec![];
            let mut idx = vec![train.loss.output];
            idx.extend(train.regularizers.iter().map(|r| r.output));
            for (j, &o) in idx.iter().enumerate() {
                let len = out[o].1.data.len();
                gs.push(
                    (0..len)
                        .map(|i| ((i * 37 + j * 11) % 23) as f32 / 23.0 - 0.5)
                        .collect(),
                );
            }
            let refs: Vec<&[f32]> = gs.iter().map(|g| g.as_slice()).collect();
            s.backward(&refs, t, b).unwrap();
            let outs: Vec<Vec<f32>> = out.into_iter().map(|(_, t)| t.data).collect();
            let (_, n_sparse, n_conv) = gemms(&program.plan);
            results.push((outs, s.grads().unwrap(), n_sparse, n_conv));
        }
        let (off, on) = (&results[0], &results[1]);
        assert_eq!(off.0, on.0, "{}: forward outputs", path.display());
        if on.2 > 0 {
            compared += 1;
        }
        convs += on.3;
        for (i, (a, b)) in off.1.iter().zip(&on.1).enumerate() {
            let max = a.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            for (x, y) in a.iter().zip(b) {
                assert!(
                    (x - y).abs() <= 1e-5 * max.max(1e-12),
                    "{}: gradient of weight {i}: {x} vs {y} (max {max})",
                    path.display()
                );
            }
        }
    }
    assert!(
        compared >= 3,
        "only {compared} training models had event-driven ops"
    );
    // tests/in/train/conv.snn: the conv of pooled spikes, forward and weight gradient.
    assert!(
        convs >= 2,
        "only {convs} event-driven conv ops in training plans"
    );
}

/// The cost model: a low `rate` makes a wide projection of spikes event-driven, a high one
/// keeps the dense GEMM, and `sparse = on | off` overrides it; all in the schedule dump.
#[test]
fn cost_model_and_layer_options() {
    let src = |args: &str| {
        format!(
            "model m {{ T = 25\n batch = 128\n input image: [784]\n x = bernoulli(image)\n \
             h1 = dense(x, 512{args})\n s1 = LIF(h1)\n output counts(s1) }}"
        )
    };
    let decide = |args: &str| {
        let p = common::compile_str(&src(args)).map_err(|e| e.1).unwrap();
        gemms(&p.plan).1 == 1
    };
    assert!(decide(", rate = 0.05"));
    assert!(!decide(", rate = 0.5"));
    assert!(
        !decide(""),
        "the default assumed rate (0.2) keeps the dense GEMM"
    );
    assert!(decide(", rate = 0.5, sparse = on"));
    assert!(!decide(", rate = 0.01, sparse = off"));
    let e = common::compile_str(&src(", sparse = maybe")).unwrap_err();
    assert_eq!(e.0.kind.code(), "E-bad-value");
    let e = common::compile_str(&src(", rate = 1.5")).unwrap_err();
    assert_eq!(e.0.kind.code(), "E-bad-value");
}

/// A calibration run counts, per projection, the non-zero inputs its GEMM reads: on a
/// Bernoulli encoder of a 0/1 image (deterministic: `p = 1` always spikes, `p = 0` never)
/// that is the image's ones over `T*B*k`, and on a projection of a LIF population with
/// `delay = 1` the population's spikes of steps `0..T-1`.
#[test]
fn calibration_measures_the_input_rate_of_each_projection() {
    let src = "model cnt { T = 4\n batch = 3\n input image: [6]\n x = bernoulli(image)\n \
               h1 = dense(x, 5, init_gain = 4.0)\n s1 = LIF(h1, tau = 2.0)\n \
               h2 = dense(s1, 4, delay = 1)\n s2 = LIF(h2)\n \
               output spikes(x)\n output spikes(s1)\n output counts(s2) }";
    let mut c = snnc::Compiler::new(Options::default());
    let parsed = c.parse_str("cnt.snn", src).unwrap();
    assert_eq!(
        snnc::session::calibration_targets(&c, &parsed).unwrap(),
        ["h1", "h2"]
    );
    let program = c.compile(&parsed).unwrap();
    let mut loaded = snnc::session::load(&program, Some(&common::cache_dir())).unwrap();
    let s = &mut loaded.session;
    #[rustfmt::skip]
    let image = snn_runtime::Tensor {
        shape: vec![3, 6],
        data: vec![
            1.0, 0.0, 0.0, 0.0, 0.0, 0.0,
            1.0, 1.0, 0.0, 1.0, 0.0, 0.0,
            0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
        ],
    };
    let (t, b) = (4, 3);
    let counts = s
        .projection_input_rates(std::slice::from_ref(&image), t, b)
        .unwrap();
    let outs = s.run(std::slice::from_ref(&image), t, b).unwrap();
    // The encoder's spikes are the image at every step: 4 ones of 18, over 4 steps.
    let x = &outs[0].1.data;
    for step in 0..t {
        assert_eq!(&x[step * 18..(step + 1) * 18], &image.data[..]);
    }
    let s1 = &outs[1].1.data;
    let s1_early = s1[..(t - 1) * b * 5].iter().filter(|&&v| v != 0.0).count() as u64;
    assert!(s1_early > 0, "the LIF layer spikes: {s1:?}");
    assert_eq!(
        counts,
        [
            ("h1.weight".to_string(), 16, 4 * 3 * 6),
            ("h2.weight".to_string(), s1_early, 3 * 3 * 5),
        ]
    );

    let cal = snnc::session::calibrate(&mut c, &parsed, s, &[image], t, b)
        .unwrap()
        .expect("two projections to calibrate");
    assert_eq!(cal.calibration.samples, 3);
    assert_eq!(cal.calibration.steps, 4);
    assert_eq!(cal.calibration.rates["h1"], 16.0 / 72.0);
    assert_eq!(cal.calibration.rates["h2"], s1_early as f64 / 45.0);
    assert!(!cal.changed, "tiny layers stay dense: {}", cal.summary());
    let dump = c.dump_after(&parsed, "schedule").unwrap();
    assert!(
        dump.contains("  h1: dense  -- cheaper on the CPU; rate 0.2222 (measured on a calibration batch of 3 samples x 4 steps)"),
        "{dump}"
    );
}

/// The bench-like layer of tests/in/sparse.snn without its `rate =`: the cost model keeps
/// the dense GEMM at the assumed 0.2; the calibration batch measures about 5%, which flips
/// it to event-driven (the forward GEMM and, in training, the weight gradient). The
/// recompiled session gives the same outputs bit for bit (dyadic weights), and a given
/// `rate =` or `sparse = off` is never recalibrated.
#[test]
fn a_low_measured_rate_flips_a_projection_to_event_driven() {
    let src = |h1: &str, train: &str| {
        format!(
            "model cal {{ T = 25\n batch = 64\n input image: [300]\n \
             x = bernoulli(image, gain = 0.1, seed = 3)\n h1 = dense(x, 256{h1}, init_gain = 6.0)\n \
             s1 = LIF(h1, tau = 2.0)\n h2 = dense(s1, 10, sparse = off)\n out = LI(h2, tau = 4.0)\n \
             output counts(s1)\n output trace(out.v){train} }}"
        )
    };
    let (t, b) = (25, 64);
    let mut c = snnc::Compiler::new(Options::default());
    let parsed = c.parse_str("cal.snn", &src("", "")).unwrap();
    let program = c.compile(&parsed).unwrap();
    assert_eq!(
        gemms(&program.plan),
        (2, 0, 0),
        "the assumed rate keeps both dense"
    );
    let mut loaded = snnc::session::load(&program, Some(&common::cache_dir())).unwrap();
    let s = &mut loaded.session;
    dyadic_weights(s);
    let inputs = s.random_inputs(t, b, 9);
    let dense_out = s.run(&inputs, t, b).unwrap();

    let cal = snnc::session::calibrate(&mut c, &parsed, s, &inputs, t, b)
        .unwrap()
        .expect("h1 is left to the cost model");
    assert!(cal.changed);
    assert_eq!(
        cal.calibration.rates.keys().collect::<Vec<_>>(),
        ["h1"],
        "h2 is `sparse = off`"
    );
    let p = cal.calibration.rates["h1"];
    assert!((0.04..0.06).contains(&p), "rate {p}");
    let (name, ch) = &cal.choices[0];
    assert_eq!(name, "h1");
    assert!(ch.sparse && ch.event_s < ch.dense_s);
    assert!(
        cal.summary().contains("h1 input rate 0.0"),
        "{}",
        cal.summary()
    );
    let dump = c.dump_after(&parsed, "schedule").unwrap();
    let line = dump.lines().find(|l| l.starts_with("  h1:")).unwrap();
    assert!(
        line.starts_with("  h1: event-driven  -- cheaper on the CPU; rate 0.0")
            && line.contains(" (measured on a calibration batch of 64 samples x 25 steps): "),
        "{line}"
    );

    let program = c.compile(&parsed).unwrap();
    assert_eq!(gemms(&program.plan), (2, 1, 0));
    let cache = common::cache_dir();
    let mut re = snnc::session::reload(&program, s, "cpu", Some(&cache)).unwrap();
    assert_eq!(re.session.weights(), s.weights());
    assert_eq!(
        re.session.param_array(),
        s.param_array(),
        "seeds copied as bits"
    );
    let event_out = re.session.run(&inputs, t, b).unwrap();
    for ((d, a), (_, e)) in dense_out.iter().zip(&event_out) {
        assert_eq!(a.data, e.data, "{}", d.name);
    }

    // Training: the same decision for the forward GEMM and the weight gradient.
    let train = "\n train { loss = cross_entropy(max(out.v))\n surrogate = atan(alpha = 2.0) }";
    let mut c = snnc::Compiler::new(Options {
        train: true,
        ..Options::default()
    });
    let parsed = c.parse_str("cal.snn", &src("", train)).unwrap();
    let program = c.compile(&parsed).unwrap();
    assert_eq!(gemms(&program.plan), (4, 0, 0));
    let mut loaded = snnc::session::load(&program, Some(&cache)).unwrap();
    let cal = snnc::session::calibrate(&mut c, &parsed, &mut loaded.session, &inputs, t, b)
        .unwrap()
        .unwrap();
    assert!(cal.changed);
    let program = c.compile(&parsed).unwrap();
    assert_eq!(gemms(&program.plan), (4, 2, 0), "Gemm and GemmDw of h1");

    // A given rate is the user's word: nothing to calibrate.
    let mut c = snnc::Compiler::new(Options::default());
    let parsed = c.parse_str("cal.snn", &src(", rate = 0.3", "")).unwrap();
    let program = c.compile(&parsed).unwrap();
    let mut loaded = snnc::session::load(&program, Some(&cache)).unwrap();
    assert!(
        snnc::session::calibrate(&mut c, &parsed, &mut loaded.session, &inputs, t, b)
            .unwrap()
            .is_none()
    );
    assert!(c
        .dump_after(&parsed, "schedule")
        .unwrap()
        .contains("  h1: dense  -- cheaper on the CPU; rate 0.3 (`rate =`)"));
}

/// Max pooling of spikes gives spikes (0 or 1), so a projection after it is a projection of
/// spikes (here event-driven at the given rate); average pooling does not.
#[test]
fn max_pooled_spikes_are_spikes() {
    let dump = |pool: &str| {
        let src = format!(
            "model m {{ T = 25\n batch = 128\n input image: [1, 56, 56]\n x = bernoulli(image)\n \
             p = {pool}(x, 2)\n f = flatten(p)\n h = dense(f, 512, rate = 0.05)\n s = LIF(h)\n \
             output counts(s) }}"
        );
        let mut c = snnc::Compiler::new(Options::default());
        let parsed = c.parse_str("m.snn", &src).unwrap();
        c.dump_after(&parsed, "schedule").unwrap()
    };
    let line = |d: &str| {
        d.lines()
            .find(|l| l.trim_start().starts_with("h: "))
            .unwrap_or_else(|| panic!("no projection line for h in\n{d}"))
            .to_string()
    };
    let max = line(&dump("maxpool2d"));
    assert!(max.contains("h: event-driven"), "{max}");
    assert!(!max.contains("not spikes"), "{max}");
    // Averages are not spikes: the projection is not a candidate (no line in the section).
    let avg = dump("avgpool2d");
    assert!(
        !avg.lines().any(|l| l.trim_start().starts_with("h: ")),
        "{avg}"
    );
}

/// A `conv2d` of spikes: the calibration run counts the cells its convolution reads (a
/// Bernoulli encoder of a 0/1 image: the image's ones), the cost model weighs im2col + GEMM
/// against the scatter, `rate =` and `sparse =` work as on `dense`, and the plan dump marks
/// the event-driven forward and weight gradient.
#[test]
fn conv_of_spikes_is_calibrated_and_chosen_by_the_cost_model() {
    let src = |conv_args: &str| {
        format!(
            "model cv {{ T = 4\n batch = 2\n input image: [2, 12, 12]\n x = bernoulli(image)\n \
             c = conv2d(x, 32, kernel = 3, padding = 1{conv_args})\n s = LIF(c, tau = 2.0)\n \
             f = flatten(s)\n h = dense(f, 3, sparse = off)\n out = LIF(h)\n output counts(out)\n \
             train {{\n loss = cross_entropy(counts(out))\n optimizer = adam(lr = 0.01)\n }} }}"
        )
    };
    // The image: 29 ones of 288 cells (about 10%), the same in both samples.
    let mut data = vec![0.0f32; 2 * 288];
    for (i, v) in data.iter_mut().enumerate() {
        if (i % 288) % 10 == 3 {
            *v = 1.0;
        }
    }
    let ones = data[..288].iter().filter(|&&v| v != 0.0).count() as u64;
    let image = snn_runtime::Tensor {
        shape: vec![2, 2, 12, 12],
        data,
    };
    let mut c = snnc::Compiler::new(Options::default());
    let parsed = c.parse_str("cv.snn", &src("")).unwrap();
    assert_eq!(
        snnc::session::calibration_targets(&c, &parsed).unwrap(),
        ["c"]
    );
    let program = c.compile(&parsed).unwrap();
    let mut loaded = snnc::session::load(&program, Some(&common::cache_dir())).unwrap();
    let s = &mut loaded.session;
    let counts = s
        .projection_input_rates(std::slice::from_ref(&image), 4, 2)
        .unwrap();
    assert_eq!(
        counts,
        [
            ("c.weight".to_string(), 4 * 2 * ones, 4 * 2 * 288),
            ("h.weight".to_string(), counts[1].1, counts[1].2),
        ]
    );
    let cal = snnc::session::calibrate(&mut c, &parsed, s, &[image], 4, 2)
        .unwrap()
        .expect("the conv to calibrate");
    assert_eq!(cal.calibration.rates["c"], ones as f64 / 288.0);
    let dump = c.dump_after(&parsed, "schedule").unwrap();
    let line = dump.lines().find(|l| l.starts_with("  c: ")).unwrap();
    assert!(
        line.starts_with("  c: event-driven  -- cheaper on the CPU; rate 0.1007 (measured"),
        "{line}"
    );
    assert!(line.contains("im2col + GEMM ~"), "{line}");

    // Layer options, and the plan: the forward conv and its weight gradient.
    let decide = |args: &str| {
        let mut c = snnc::Compiler::new(Options {
            train: true,
            ..Options::default()
        });
        let parsed = c.parse_str("cv.snn", &src(args)).unwrap();
        let program = c.compile(&parsed).unwrap();
        let (_, _, convs) = gemms(&program.plan);
        let plan = c.dump_after(&parsed, "lower").unwrap();
        (convs, plan)
    };
    let (convs, plan) = decide(", rate = 0.02");
    assert_eq!(convs, 2, "forward and weight gradient");
    assert!(plan.contains("(all T)  event-driven"), "{plan}");
    assert_eq!(decide(", rate = 0.9").0, 0);
    assert_eq!(decide(", rate = 0.9, sparse = on").0, 2);
    assert_eq!(decide(", rate = 0.01, sparse = off").0, 0);
}

/// `sparse = wave` on a conv of a model input (not a wave by construction): the same
/// potentials as `sparse = off` on cumulative 0/1 waves, and on an input whose second sample
/// is not one (that sample takes the dense fallback). With dyadic weights every partial sum
/// is exact, so the two agree bit for bit.
#[test]
fn sparse_wave_matches_dense_on_waves_and_on_other_inputs() {
    use snn_runtime::plan::Op;
    let src = |mode: &str| {
        format!(
            "model m {{\n  T = 6\n  batch = 3\n  input x: [T, 2, 7, 7]\n  c = conv2d(x, 4, kernel = 3, stride = 2, padding = 1, sparse = {mode})\n  n = FireOnce(c, v_threshold = 0.5)\n  output trace(n.v)\n}}\n"
        )
    };
    let mut wave = common::session_from_str("wave.snn", &src("wave"), Options::default());
    let mut dense = common::session_from_str("dense.snn", &src("off"), Options::default());
    let waves_in = |p: &snn_runtime::plan::Plan| {
        p.ops
            .iter()
            .filter(|o| matches!(o, Op::Conv2d(c) if c.wave))
            .count()
    };
    assert_eq!(waves_in(wave.plan()), 1);
    assert_eq!(waves_in(dense.plan()), 0);
    dyadic_weights(&mut wave);
    let names: Vec<String> = wave.plan().weights.iter().map(|w| w.name.clone()).collect();
    for n in &names {
        let w = wave.weight(n).unwrap().to_vec();
        dense.set_weight(n, &w).unwrap();
    }
    let (t, b, f) = (6, 3, 2 * 7 * 7);
    let mut x = vec![0.0f32; t * b * f];
    for i in 0..b * f {
        let first = (i * 7 + i / 5) % (t + 2); // t or more: never
        for s in first..t {
            x[s * b * f + i] = 1.0;
        }
    }
    let run = |s: &mut snn_runtime::Session, x: &[f32]| {
        let x = snn_runtime::Tensor::new(vec![t, b, 2, 7, 7], x.to_vec()).unwrap();
        s.run(&[x], t, b).unwrap()[0].1.data.clone()
    };
    let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
    assert_eq!(bits(run(&mut wave, &x)), bits(run(&mut dense, &x)), "waves");
    // Sample 1: a 1 followed by a 0, and a 0.5.
    x[f + 3] = 1.0;
    x[(t - 1) * b * f + f + 3] = 0.0;
    x[2 * b * f + f + 10] = 0.5;
    assert_eq!(
        bits(run(&mut wave, &x)),
        bits(run(&mut dense, &x)),
        "not waves"
    );
}
