//! The macro path (`snn!`, `include_snn!`): a model compiled into this crate at build time
//! gives the same plan and the same outputs, bit for bit, as the CLI path (snnc compiles,
//! builds a cdylib, the runtime loads it). The whole file builds under `#![deny(warnings)]`,
//! so the generated code must be warning-free, user names that are Rust keywords included.
#![deny(warnings)]

mod common;

use snn::Tensor;
use snnc::Options;

/// examples/mlp.snn, inline.
mod inline {
    snn::snn! {
        // A 784-500-10 LIF MLP for MNIST-sized inputs, rate-coded with Bernoulli spikes.
        model mlp {
          T = 25
          batch = 16
          seed = 1

          input image: [784]                    // pixel intensities in [0, 1]
          x  = bernoulli(image, seed = 7)       // rate coding: P(spike) = pixel, every step

          h1 = dense(x, 500, init_gain = 3.0)
          s1 = LIF(h1, tau = 2.0, v_threshold = 1.0)
          h2 = dense(s1, 10, init_gain = 3.0)
          s2 = LIF(h2, tau = 2.0)

          output counts(s2)
          output spikes(s1)
          output trace(s2.v)
        }
    }
}

// Several networks in one crate: the kernels are not exported, so nothing collides.
snn::include_snn!("examples/mlp.snn");
snn::include_snn!("examples/mlp.snn" as mlp_again);
snn::include_snn!("examples/conv.snn" as conv);
snn::include_snn!("examples/recurrent.snn" as recurrent);
snn::include_snn!("examples/alif.snn" as alif);
snn::include_snn!("tests/in/hygiene.snn" as hygiene);
snn::include_snn!("tests/in/delay_feedforward.snn" as delay_feedforward);
snn::include_snn!("tests/in/encoders_pooling.snn" as encoders_pooling);
snn::include_snn!("tests/in/loop_to_earlier.snn" as loop_to_earlier);
snn::include_snn!("tests/in/merged_populations.snn" as merged_populations);
snn::include_snn!("tests/in/recurrent_inline.snn" as recurrent_inline);
// A model with a `train { }` block: compiled for training, its Network has `train_step`.
snn::include_snn!("tests/in/train/mlp_4_8_3.snn" as mlp483);
// Conv and pooling layers on the gradient path: Conv2dDx/Conv2dDw/Pool2dDx in the plan.
snn::include_snn!("tests/in/train/conv.snn" as convtrain);
// Training through a recurrent cycle: the backward ops hold a reverse step loop.
snn::include_snn!("tests/in/train/recurrent.snn" as recurrent_train);
snn::include_snn!("tests/in/learnable.snn" as learnable);
snn::include_snn!("tests/in/psn.snn" as psn);
// Sliding PSNs trained on MNIST fed row by row: the data settings travel in the plan.
snn::include_snn!("examples/smnist_psn.snn" as smnist_psn);

// A model and populations named with Rust keywords.
snn::snn! {
    model type {
        T = 3
        batch = 2
        input fn: [4]
        impl = dense(fn, 3)
        match = LIF(impl, tau = 2.0)
        output counts(match)
        output trace(match.v) as self
    }
}

fn cli_outputs(
    path: &str,
    t: usize,
    batch: usize,
    weights: Option<&std::path::Path>,
) -> Vec<(String, Tensor)> {
    let program = common::compile_file(&common::root().join(path), Options::default()).unwrap();
    let mut loaded = snnc::session::load(&program, Some(&common::cache_dir())).unwrap();
    let s = &mut loaded.session;
    if let Some(w) = weights {
        s.load_weights(w).unwrap();
    }
    let inputs = s.random_inputs(t, batch, 1234);
    s.run(&inputs, t, batch)
        .unwrap()
        .into_iter()
        .map(|(d, t)| (d.name, t))
        .collect()
}

fn same(a: &[(String, Tensor)], b: &[(String, Tensor)], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: output count");
    for ((na, ta), (nb, tb)) in a.iter().zip(b) {
        assert_eq!(na, nb, "{what}");
        assert_eq!(ta.shape, tb.shape, "{what}: {na}");
        let bits = |t: &Tensor| t.data.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert!(bits(ta) == bits(tb), "{what}: output `{na}` differs");
    }
}

/// Macro path outputs for the session of a generated network.
fn macro_outputs(
    s: &mut snn::Session,
    t: usize,
    batch: usize,
    weights: Option<&std::path::Path>,
) -> Vec<(String, Tensor)> {
    if let Some(w) = weights {
        s.load_weights(w).unwrap();
    }
    let inputs = s.random_inputs(t, batch, 1234);
    s.run(&inputs, t, batch)
        .unwrap()
        .into_iter()
        .map(|(d, t)| (d.name, t))
        .collect()
}

fn scaled_weights(s: &mut snn::Session, name: &str) -> std::path::PathBuf {
    common::scale_weights(s);
    let dir = common::root().join("target").join("snn-macro-test");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.safetensors"));
    s.save_weights(&path).unwrap();
    path
}

#[test]
fn inline_file_and_cli_agree_on_mlp() {
    let program =
        common::compile_file(&common::root().join("examples/mlp.snn"), Options::default()).unwrap();
    assert_eq!(inline::mlp::plan().unwrap(), &program.plan);
    assert_eq!(mlp::plan().unwrap(), &program.plan);
    assert_eq!(mlp::OUTPUTS, ["s2.counts", "s1.spikes", "s2.v"]);
    assert_eq!(mlp::INPUTS, ["image"]);

    let (t, batch) = (10, 3);
    let mut a = inline::mlp::Network::new().unwrap();
    let w = scaled_weights(a.session_mut(), "mlp");
    a.load_weights(&w).unwrap();
    let inputs = a.session().random_inputs(t, batch, 1234);
    let outs = a.forward(&inputs, t, batch).unwrap();
    assert_eq!(outs.s2_counts.shape, vec![batch, 10]);
    assert_eq!(outs.s1_spikes.shape, vec![t, batch, 500]);
    assert!(outs.s1_spikes.sum() > 0.0, "the scaled net spikes");
    assert!(outs.get("s2.v").is_some() && outs.get("nope").is_none());
    let inline_outs: Vec<(String, Tensor)> = outs
        .into_vec()
        .into_iter()
        .map(|(n, t)| (n.to_string(), t))
        .collect();

    let mut b = mlp::Network::new().unwrap();
    let file_outs = macro_outputs(b.session_mut(), t, batch, Some(&w));
    let mut c = mlp_again::Network::new().unwrap();
    let again_outs = macro_outputs(c.session_mut(), t, batch, Some(&w));
    let cli = cli_outputs("examples/mlp.snn", t, batch, Some(&w));
    same(&inline_outs, &cli, "snn! vs CLI");
    same(&file_outs, &cli, "include_snn! vs CLI");
    same(&again_outs, &cli, "include_snn! as vs CLI");
}

#[test]
fn include_snn_matches_cli_on_every_model() {
    let mut nets: Vec<(&str, snn::Session)> = vec![
        (
            "examples/conv.snn",
            conv::Network::new().unwrap().into_session(),
        ),
        (
            "examples/recurrent.snn",
            recurrent::Network::new().unwrap().into_session(),
        ),
        (
            "examples/alif.snn",
            alif::Network::new().unwrap().into_session(),
        ),
        (
            "tests/in/hygiene.snn",
            hygiene::Network::new().unwrap().into_session(),
        ),
        (
            "tests/in/delay_feedforward.snn",
            delay_feedforward::Network::new().unwrap().into_session(),
        ),
        (
            "tests/in/encoders_pooling.snn",
            encoders_pooling::Network::new().unwrap().into_session(),
        ),
        (
            "tests/in/loop_to_earlier.snn",
            loop_to_earlier::Network::new().unwrap().into_session(),
        ),
        (
            "tests/in/merged_populations.snn",
            merged_populations::Network::new().unwrap().into_session(),
        ),
        (
            "tests/in/recurrent_inline.snn",
            recurrent_inline::Network::new().unwrap().into_session(),
        ),
        (
            "tests/in/learnable.snn",
            learnable::Network::new().unwrap().into_session(),
        ),
        (
            "tests/in/psn.snn",
            psn::Network::new().unwrap().into_session(),
        ),
    ];
    for (path, s) in &mut nets {
        let program =
            common::compile_file(&common::root().join(&path[..]), Options::default()).unwrap();
        assert_eq!(s.plan(), &program.plan, "{path}: plan");
        let t = program.plan.t.min(12);
        let name = std::path::Path::new(path)
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let w = scaled_weights(s, &name);
        let ours = macro_outputs(s, t, 2, None);
        let cli = cli_outputs(path, t, 2, Some(&w));
        same(&ours, &cli, path);
    }
}

#[test]
fn keyword_names() {
    assert_eq!(r#type::NAME, "type");
    assert_eq!(r#type::OUTPUTS, ["match.counts", "self"]);
    let mut net = r#type::Network::new().unwrap();
    let x = Tensor::full(&[2, 4], 1.0);
    let outs = net.forward(&[x], 3, 2).unwrap();
    assert_eq!(outs.match_counts.shape, vec![2, 3]);
    assert_eq!(outs.self_.shape, vec![3, 2, 3]);
}

/// Errors in `snn!` are compile errors on the offending token, with the hint; in
/// `include_snn!` on the path. (tests/ui/*.stderr; `TRYBUILD=overwrite` to update.)
#[test]
fn ui_errors() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}

/// What the macros do at build time (parse, passes, print the kernels, encode the plan as
/// bytes) takes milliseconds, for the largest models here too (the conv net compiled for
/// training). `cargo test --test macro expansion -- --nocapture` prints it.
#[test]
fn expansion_time() {
    for (path, opts) in [
        ("examples/mlp.snn", Options::default()),
        ("examples/conv.snn", Options::default()),
        ("tests/in/train/conv.snn", common::train_opts()),
        ("examples/smnist_psn.snn", common::train_opts()),
    ] {
        let start = std::time::Instant::now();
        let n = 20;
        let (mut len, mut plan_len) = (0, 0);
        for _ in 0..n {
            let program = common::compile_file(&common::root().join(path), opts.clone()).unwrap();
            let kernels =
                snnc::back::rust::print_module(&program, &quote::quote!(::snn::plan::KernelArgs));
            let plan = snn_runtime::plan::encode(&program.plan).unwrap();
            plan_len = plan.len();
            let plan = proc_macro2::Literal::byte_string(&plan);
            let cuda = snnc::back::cuda::print_program(&program);
            len = kernels.to_string().len() + plan.to_string().len() + cuda.len();
        }
        let ms = start.elapsed().as_secs_f64() * 1e3 / n as f64;
        println!(
            "{path}: compile + print {ms:.2} ms ({len} bytes of tokens, plan {plan_len} bytes)"
        );
        assert!(ms < 2000.0, "{path}: {ms} ms");
    }
}

/// `train_step` of a macro-built network takes the same steps, bit for bit, as the runtime's
/// `Trainer` on the plan snnc compiles from the same file (the path `snnc train` takes).
#[test]
fn train_step_matches_the_library_trainer() {
    let (t, b) = (20, 5);
    let x = Tensor {
        shape: vec![b, 4],
        data: (0..b * 4).map(|i| (i * 7 % 11) as f32 / 5.0).collect(),
    };
    let labels = [0u32, 1, 2, 0, 1];
    let mut net = mlp483::Network::new().unwrap();
    let program = common::compile_file(
        &common::root().join("tests/in/train/mlp_4_8_3.snn"),
        Options {
            train: true,
            ..Options::default()
        },
    )
    .unwrap();
    let mut s = snnc::session::load(&program, Some(&common::cache_dir()))
        .unwrap()
        .session;
    assert_eq!(mlp483::plan().unwrap(), s.plan());
    let mut trainer = snn::train::Trainer::new(&program.plan.train.as_ref().unwrap().settings);
    let first = net.session().weights().to_vec();
    for step in 0..3 {
        let lr = net.lr(step);
        let a = net
            .train_step(std::slice::from_ref(&x), &labels, t, lr)
            .unwrap();
        let b_ = trainer
            .step(&mut s, std::slice::from_ref(&x), &labels, t, lr)
            .unwrap();
        assert_eq!(a, b_, "step {step}");
        // The steps ran on the device: both host copies are stale until synced.
        assert!(net.session().weights_stale() && s.weights_stale());
        net.session_mut().sync_weights().unwrap();
        s.sync_weights().unwrap();
        assert_eq!(
            net.session().weights(),
            s.weights(),
            "weights after step {step}"
        );
    }
    assert_ne!(
        net.session().weights(),
        &first[..],
        "the steps changed the weights"
    );
}

/// examples/smnist_psn.snn through `include_snn!`: the training plan, its data settings
/// (`mnist("data/mnist", sequence = rows)`) included, equals the CLI's.
#[test]
fn smnist_psn_train_plan_matches_the_cli() {
    let program = common::compile_file(
        &common::root().join("examples/smnist_psn.snn"),
        Options {
            train: true,
            ..Options::default()
        },
    )
    .unwrap();
    assert_eq!(smnist_psn::plan().unwrap(), &program.plan);
    assert_eq!(
        program.plan.train.as_ref().unwrap().settings.data,
        Some(snn_runtime::plan::DataDecl::Mnist {
            dir: "data/mnist".into(),
            sequence: Some(snn_runtime::plan::ImageSequence::Rows),
        })
    );
}

/// The backward ops of conv and pooling layers survive the embedding (`plan::encode`): the
/// embedded training plan equals the CLI's, and `train_step` matches the library trainer bit for bit.
#[test]
fn conv_train_plan_and_step_match_the_cli() {
    let program = common::compile_file(
        &common::root().join("tests/in/train/conv.snn"),
        Options {
            train: true,
            ..Options::default()
        },
    )
    .unwrap();
    assert_eq!(convtrain::plan().unwrap(), &program.plan);
    let backward = &program.plan.train.as_ref().unwrap().backward;
    for kind in ["Conv2dDx", "Conv2dDw", "Pool2dDx"] {
        assert!(
            backward
                .iter()
                .any(|op| format!("{op:?}").starts_with(kind)),
            "no {kind} in the backward ops"
        );
    }
    let mut net = convtrain::Network::new().unwrap();
    let mut s = snnc::session::load(&program, Some(&common::cache_dir()))
        .unwrap()
        .session;
    let (t, b) = (convtrain::T, 4);
    let x = s.random_inputs(t, b, 17);
    let labels = [0u32, 1, 2, 1];
    let mut trainer = snn::train::Trainer::new(&program.plan.train.as_ref().unwrap().settings);
    for step in 0..2 {
        let lr = net.lr(step);
        let a = net.train_step(&x, &labels, t, lr).unwrap();
        let b_ = trainer.step(&mut s, &x, &labels, t, lr).unwrap();
        assert_eq!(a, b_, "step {step}");
        // The steps ran on the device: both host copies are stale until synced.
        assert!(net.session().weights_stale() && s.weights_stale());
        net.session_mut().sync_weights().unwrap();
        s.sync_weights().unwrap();
        assert_eq!(
            net.session().weights(),
            s.weights(),
            "weights after step {step}"
        );
    }
}

/// `new_cuda` compiles the embedded CUDA source with NVRTC; without a driver or GPU it is an
/// error naming the cause (never a panic), with one it computes what the CPU computes.
#[test]
fn new_cuda_errs_cleanly_or_matches_the_cpu() {
    assert!(mlp::CUDA_SOURCE.contains("extern \"C\" __global__"));
    match mlp::Network::new_cuda(0) {
        Err(e) => {
            let msg = e.to_string();
            println!("SKIP: {msg}");
            assert!(msg.contains("CUDA") || msg.contains("NVRTC"), "{msg}");
        }
        Ok(mut gpu) => {
            let mut cpu = mlp::Network::new().unwrap();
            let x = cpu.session().random_inputs(mlp::T, 4, 3);
            let a = cpu.forward(&x, mlp::T, 4).unwrap();
            let g = gpu.forward(&x, mlp::T, 4).unwrap();
            assert_eq!(a.s2_counts.data, g.s2_counts.data, "counts on the GPU");
        }
    }
}

/// `new_cuda_shim` runs the embedded CUDA source through the CUDA device on the host (no
/// GPU needed): the MLP's counts equal the CPU's, and two training steps of the conv net
/// (conv, pooling, Adam on the device) give the CPU's losses and weights to float rounding.
#[test]
fn new_cuda_shim_matches_the_cpu() {
    if snn_runtime::cuda::shim::find_cxx().is_none() {
        println!("SKIP: no C++ compiler for the CUDA host shim");
        return;
    }
    let dir = common::cache_dir().join("shim");
    let mut cpu = mlp::Network::new().unwrap();
    let mut shim = mlp::Network::new_cuda_shim(&dir).unwrap();
    let x = cpu.session().random_inputs(mlp::T, 4, 3);
    let a = cpu.forward(&x, mlp::T, 4).unwrap();
    let b = shim.forward(&x, mlp::T, 4).unwrap();
    assert_eq!(a.s2_counts.data, b.s2_counts.data, "counts on cuda-shim");
    assert!(
        a.s2_counts.data.iter().any(|&c| c > 0.0),
        "no spikes to compare"
    );

    let mut cpu = convtrain::Network::new().unwrap();
    let mut shim = convtrain::Network::new_cuda_shim(&dir).unwrap();
    let (t, b) = (convtrain::T, 4);
    let x = cpu.session().random_inputs(t, b, 17);
    let labels = [0u32, 1, 2, 1];
    for step in 0..2 {
        let lr = cpu.lr(step);
        let p = cpu.train_step(&x, &labels, t, lr).unwrap();
        let q = shim.train_step(&x, &labels, t, lr).unwrap();
        assert!(
            (p.loss - q.loss).abs() <= 1e-5 * p.loss.abs(),
            "step {step}: loss {} vs {}",
            p.loss,
            q.loss
        );
        assert_eq!(p.correct, q.correct, "step {step}");
    }
    for net in [&mut cpu, &mut shim] {
        net.session_mut().sync_weights().unwrap();
    }
    for (w, (p, q)) in cpu
        .session()
        .weights()
        .iter()
        .zip(shim.session().weights())
        .enumerate()
    {
        for (x, y) in p.iter().zip(q) {
            assert!(
                (x - y).abs() <= 1e-5 * x.abs().max(1.0),
                "weight {w}: {x} vs {y}"
            );
        }
    }
}

/// A training plan with a reverse step loop (BPTT through a recurrent cycle): the embedded
/// plan equals the CLI's, and `train_step` takes the library trainer's steps bit for bit.
#[test]
fn recurrent_training_plan_through_the_macro() {
    let program = common::compile_file(
        &common::root().join("tests/in/train/recurrent.snn"),
        Options {
            train: true,
            ..Options::default()
        },
    )
    .unwrap();
    let mut s = snnc::session::load(&program, Some(&common::cache_dir()))
        .unwrap()
        .session;
    assert_eq!(recurrent_train::plan().unwrap(), s.plan());
    assert!(s
        .plan()
        .train
        .as_ref()
        .unwrap()
        .backward
        .iter()
        .any(|op| matches!(op, snn::plan::Op::ReverseStepLoop { .. })));
    let mut net = recurrent_train::Network::new().unwrap();
    let (t, b) = (8, 4);
    let x = net.session().random_inputs(t, b, 7);
    let labels = [0u32, 1, 1, 0];
    let mut trainer = snn::train::Trainer::new(&program.plan.train.as_ref().unwrap().settings);
    for step in 0..3 {
        let lr = net.lr(step);
        let a = net.train_step(&x, &labels, t, lr).unwrap();
        let b_ = trainer.step(&mut s, &x, &labels, t, lr).unwrap();
        assert_eq!(a, b_, "step {step}");
        // The steps ran on the device: both host copies are stale until synced.
        assert!(net.session().weights_stale() && s.weights_stale());
        net.session_mut().sync_weights().unwrap();
        s.sync_weights().unwrap();
        assert_eq!(
            net.session().weights(),
            s.weights(),
            "weights after step {step}"
        );
    }
}
