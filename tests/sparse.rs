//! Event-driven projections (`dense` of spikes, `Op::Gemm { sparse: true }`) against dense
//! GEMM on whole models: every model of examples/ and tests/in/ with `--sparse on` and
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

fn gemms(plan: &snn_runtime::plan::Plan) -> (usize, usize) {
    use snn_runtime::plan::Op;
    fn walk(ops: &[Op], acc: &mut (usize, usize)) {
        for op in ops {
            match op {
                Op::Gemm { sparse, .. } | Op::GemmDw { sparse, .. } => {
                    acc.0 += 1;
                    acc.1 += *sparse as usize;
                }
                Op::StepLoop { body } => walk(body, acc),
                _ => {}
            }
        }
    }
    let mut acc = (0, 0);
    walk(&plan.ops, &mut acc);
    if let Some(t) = &plan.train {
        walk(&t.backward, &mut acc);
    }
    acc
}

#[test]
fn sparse_on_and_off_agree_on_every_model() {
    let mut event_driven = 0;
    for path in common::model_files() {
        let mut outs = vec![];
        for sparse in [false, true] {
            let program = common::compile_file(&path, opts(sparse, false)).unwrap();
            let (_, n_sparse) = gemms(&program.plan);
            if sparse {
                event_driven += n_sparse;
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
}

#[test]
fn training_gradients_agree_with_sparse_on_and_off() {
    let dir = common::root().join("tests/in/train");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "snn"))
        .collect();
    files.sort();
    let mut compared = 0;
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
            results.push((outs, s.grads().unwrap(), gemms(&program.plan).1));
        }
        let (off, on) = (&results[0], &results[1]);
        assert_eq!(off.0, on.0, "{}: forward outputs", path.display());
        if on.2 > 0 {
            compared += 1;
        }
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
