//! The `snnc` command line: exit codes (0 ok, 1 user error, 2 usage), diagnostics with
//! file:line:col, a caret and a hint, and `run` writing outputs that round-trip.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn snnc_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir.join(format!("snnc{}", std::env::consts::EXE_SUFFIX));
    // Always (once per test binary) ask cargo: a stale binary from an older checkout would
    // test old code. A no-op build takes well under a second.
    static BUILD: std::sync::Once = std::sync::Once::new();
    BUILD.call_once(|| {
        let profile = if dir.ends_with("release") {
            vec!["--release"]
        } else {
            vec![]
        };
        let ok = Command::new(env!("CARGO"))
            .args(["build", "-q", "-p", "snnc", "--bin", "snnc"])
            .args(profile)
            .current_dir(common::root())
            .status()
            .unwrap();
        assert!(ok.success(), "building snnc failed");
    });
    bin
}

fn snnc(args: &[&str]) -> Output {
    snnc_in(&common::root(), args)
}

/// `snnc` run in `dir` (relative paths, the default `runs/<model>`, resolve there).
fn snnc_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(snnc_bin())
        .args(args)
        .current_dir(dir)
        .env("SNNC_CACHE_DIR", common::cache_dir())
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

/// An empty folder under the system's temporary directory, one per checkout (so two
/// checkouts' test runs do not share it), never inside the checkout.
fn scratch(name: &str) -> PathBuf {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    common::root().hash(&mut h);
    let d = std::env::temp_dir()
        .join(format!("snnc-cli-test-{:016x}", h.finish()))
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn check_ok_and_error_exit_codes() {
    let o = snnc(&["check", "examples/mlp.snn"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("ok: model `mlp`"));

    let d = scratch("check");
    let bad = d.join("bad.snn");
    std::fs::write(&bad, "model m {\n  T = 4\n  input x: [3]\n  s = LIF(dense(x, 2), tau = -2.0)\n  output counts(s)\n}\n").unwrap();
    let o = snnc(&["check", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(err.contains("bad.snn:4:30"), "{err}");
    assert!(
        err.contains("s = LIF(dense(x, 2), tau = -2.0)"),
        "source line shown: {err}"
    );
    assert!(err.contains("bad value"), "label under the caret: {err}");
    assert!(
        err.contains("Help: choose a value with tau > 0"),
        "hint: {err}"
    );
    assert!(!err.contains("panicked"));

    let o = snnc(&["check", "no/such/file.snn"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("cannot open `no/such/file.snn`: no such file"));

    let o = snnc(&["check", "--no-such-flag"]);
    assert_eq!(o.status.code(), Some(2));
    let o = snnc(&["frobnicate"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn ir_lists_and_prints_passes() {
    let o = snnc(&["ir", "--list-passes"]);
    assert_eq!(o.status.code(), Some(0));
    let list = text(&o.stdout);
    for p in [
        "parse",
        "resolve",
        "shapes",
        "neurons",
        "recurrence",
        "schedule",
        "fuse",
        "memory",
        "lower",
        "rust",
    ] {
        assert!(
            list.lines().any(|l| l.starts_with(p)),
            "{p} missing from\n{list}"
        );
    }
    let o = snnc(&["ir", "examples/recurrent.snn", "--after", "schedule"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(text(&o.stdout)
        .contains("stage 1: steps {h_rec, hid}  -- recurrent cycle {h_rec, hid}: step by step"));
    let o = snnc(&["ir", "examples/mlp.snn"]);
    assert!(
        text(&o.stdout).contains("kernel snn_k1_s1  // LIF population `s1`: charge + fire + reset")
    );
    let o = snnc(&["ir", "examples/mlp.snn", "--after", "bogus"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("unknown pass `bogus`"));
}

#[test]
fn compile_writes_ir_and_rust() {
    let d = scratch("compile");
    let o = snnc(&[
        "compile",
        "examples/conv.snn",
        "-o",
        d.to_str().unwrap(),
        "--build",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let ir = std::fs::read_to_string(d.join("convnet.ir.txt")).unwrap();
    assert!(
        ir.contains("conv2d c1 = image [1x28x28] * c1.weight [3x3, stride 1, pad 1] -> [8x28x28]")
    );
    let rs = std::fs::read_to_string(d.join("convnet.kernels.rs")).unwrap();
    assert!(rs.contains("pub unsafe extern \"C\" fn snn_k0_s1(a: *const SnnArgs)"));
    assert!(text(&o.stderr).contains("kernels "), "build reported");

    let o = snnc(&[
        "compile",
        "examples/mlp.snn",
        "-o",
        d.to_str().unwrap(),
        "--emit",
        "cuda",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let cu = std::fs::read_to_string(d.join("mlp.cu")).unwrap();
    assert!(
        cu.contains("#include \"snn_prelude.cuh\"")
            && cu.contains("extern \"C\" __global__ void snn_k1_s1(")
    );
    assert!(d.join("snn_prelude.cuh").is_file());
    let manifest = std::fs::read_to_string(d.join("mlp.launch.txt")).unwrap();
    assert!(manifest.contains("launch snn_k1_s1 (Seq)"), "{manifest}");
    let o = snnc(&[
        "compile",
        "examples/mlp.snn",
        "-o",
        d.to_str().unwrap(),
        "--emit",
        "ptx",
    ]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn run_saves_outputs_that_round_trip() {
    let d = scratch("run");
    let out1 = d.join("out1");
    let w = d.join("w.safetensors");
    let o = snnc(&[
        "run",
        "examples/mlp.snn",
        "--batch",
        "3",
        "--steps",
        "6",
        "-o",
        out1.to_str().unwrap(),
        "--save-weights",
        w.to_str().unwrap(),
        "--set",
        "s1.v_threshold=0.05",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let stdout = text(&o.stdout);
    assert!(stdout.contains("s2.counts [3, 10]"), "{stdout}");
    let counts = snn_runtime::io::npy::read_npy(out1.join("s2.counts.npy")).unwrap();
    assert_eq!(counts.shape, vec![3, 10]);
    let spikes = snn_runtime::io::npy::read_npy(out1.join("s1.spikes.npy")).unwrap();
    assert_eq!(spikes.shape, vec![6, 3, 500]);
    assert!(spikes.data.iter().all(|&x| x == 0.0 || x == 1.0));
    assert!(
        spikes.data.contains(&1.0),
        "the low threshold makes s1 spike"
    );

    // Save an input, run again from files: the same spikes.
    let x = d.join("x.npy");
    let s = {
        let program = common::compile_file(
            &common::root().join("examples/mlp.snn"),
            snnc::Options::default(),
        )
        .unwrap();
        let loaded = snnc::session::load(&program, Some(&common::cache_dir())).unwrap();
        loaded.session.random_inputs(6, 3, 1)
    };
    snn_runtime::io::npy::write_npy(&x, &s[0]).unwrap();
    let out2 = d.join("out2");
    let o = snnc(&[
        "run",
        "examples/mlp.snn",
        "--steps",
        "6",
        "--input",
        x.to_str().unwrap(),
        "--weights",
        w.to_str().unwrap(),
        "-o",
        out2.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    // The weights file also carries the parameters (s1.v_threshold = 0.05).
    let again = snn_runtime::io::npy::read_npy(out2.join("s1.spikes.npy")).unwrap();
    assert_eq!(again.data, spikes.data);
}

#[test]
fn run_reports_bad_files_without_panicking() {
    let d = scratch("badfiles");
    let w = d.join("corrupt.safetensors");
    std::fs::write(&w, b"garbage").unwrap();
    let o = snnc(&["run", "examples/mlp.snn", "--weights", w.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(
        err.contains("corrupt.safetensors") && err.contains("error[E-weights]"),
        "{err}"
    );

    let x = d.join("x.npy");
    snn_runtime::io::npy::write_npy(&x, &snn_runtime::Tensor::zeros(&[2, 7])).unwrap();
    let o = snnc(&["run", "examples/mlp.snn", "--input", x.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(
        err.contains("image") && err.contains("[2, 784]") && err.contains("[2, 7]"),
        "{err}"
    );

    let o = snnc(&["run", "examples/mlp.snn", "--set", "s1.tau=-3"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("s1.tau"));
}

#[test]
fn cuda_requests_fail_with_one_clear_line() {
    if snn_runtime::cuda::driver_present() {
        println!("SKIP: a CUDA driver is present (tests/gpu.rs covers --device cuda here)");
        return;
    }
    let o = snnc(&["run", "examples/mlp.snn", "--device", "cuda"]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(err.contains("no CUDA driver (libcuda.so) found"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!err.contains("panicked"));

    // The GPU's bandwidth limit needs only the driver: the same one line.
    let o = snnc(&["bench", "copy", "--device", "cuda", "--repeat", "1"]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(err.contains("no CUDA driver (libcuda.so) found"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// `--device cuda-shim` without a usable C++ compiler, or with one that fails on the
/// kernels, is one clear line and exit code 1, never a panic; a misspelt device names the
/// choices.
#[test]
fn cuda_shim_requests_fail_with_one_clear_line() {
    let run = |cxx: &str| {
        Command::new(snnc_bin())
            .args(["run", "examples/mlp.snn", "--device", "cuda-shim"])
            .current_dir(common::root())
            .env(
                "SNNC_CACHE_DIR",
                scratch(&format!("shim-cxx-{}", cxx.len())),
            )
            .env("NO_COLOR", "1")
            .env("CXX", cxx)
            .output()
            .unwrap()
    };
    let o = run("/nonexistent/c++");
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(
        err.contains("no C++ compiler for the CUDA host shim"),
        "{err}"
    );
    assert!(err.contains("install g++ or set CXX"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // `true --version` succeeds, so it is taken for a compiler, and then writes no library.
    let o = run("true");
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains("wrote no shim library"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // A correctness device, not a timing one.
    let o = snnc(&["bench", "mlp-infer", "--device", "cuda-shim"]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(err.contains("not for timing"), "{err}");
    let o = snnc(&["run", "examples/mlp.snn", "--device", "cuda_shim"]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(err.contains("unknown device `cuda_shim`"), "{err}");
    assert!(err.contains("cuda-shim"), "{err}");
}

/// `copy` is listed and is the GPU's workload: on the CPU it is skipped with a line, and the
/// rest still runs.
#[test]
fn bench_copy_is_listed_and_cuda_only() {
    let o = snnc(&["bench", "--list"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).lines().any(|l| l.starts_with("copy ")),
        "{}",
        text(&o.stdout)
    );
    let o = snnc(&["bench", "copy", "triad", "--repeat", "1"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(
        out.contains("copy         (CUDA-only workload, skipped on cpu)"),
        "{out}"
    );
    assert!(out.contains("GB/s"), "{out}");
}

/// The CI training run: a few seconds of Yin-Yang whose loss falls and whose accuracy
/// beats chance (33%) by a wide margin; eval reproduces it from the saved weights, and
/// `--resume` continues from the checkpoint.
#[test]
fn train_eval_and_resume_yinyang() {
    let d = scratch("train");
    let out = d.to_str().unwrap();
    let o = snnc(&[
        "train",
        "examples/yinyang.snn",
        "--epochs",
        "4",
        "-q",
        "-o",
        out,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let stdout = text(&o.stdout);
    let acc: f64 = stdout
        .split("test accuracy: ")
        .nth(1)
        .and_then(|s| s.split('%').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no accuracy in {stdout}"));
    assert!(acc > 70.0, "test accuracy {acc}% after 4 epochs");
    let csv = std::fs::read_to_string(d.join("metrics.csv")).unwrap();
    let losses: Vec<f64> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(2).unwrap().parse().unwrap())
        .collect();
    assert_eq!(losses.len(), 4);
    assert!(losses[3] < 0.8 * losses[0], "loss did not fall: {losses:?}");
    // Learning curves: a dot per epoch for train and validation, in both panels.
    let curves = std::fs::read_to_string(d.join("training.svg")).unwrap();
    assert_eq!(curves.matches("<circle").count(), 2 * 2 * 4);
    // The raster of test sample 0: one dot per spike of the hidden LIF population.
    let raster = std::fs::read_to_string(d.join("raster.svg")).unwrap();
    let n: usize = raster
        .split("s1 (")
        .nth(1)
        .and_then(|s| s.split(" spikes, 120 neurons x 20 steps)").next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no s1 raster caption in raster.svg"));
    assert!(n > 0);
    assert_eq!(raster.matches("<circle").count(), n);

    let w = d.join("weights.safetensors");
    let o = snnc(&[
        "eval",
        "examples/yinyang.snn",
        "--weights",
        w.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains(&format!("test accuracy: {acc:.2}%")),
        "{} vs {acc}",
        text(&o.stdout)
    );

    let ck = d.join("checkpoint.safetensors");
    let o = snnc(&[
        "train",
        "examples/yinyang.snn",
        "--epochs",
        "5",
        "-q",
        "-o",
        out,
        "--resume",
        ck.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("resuming after epoch 4"),
        "{}",
        text(&o.stderr)
    );
    let csv = std::fs::read_to_string(d.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 5, "{csv}");
    let curves = std::fs::read_to_string(d.join("training.svg")).unwrap();
    assert_eq!(
        curves.matches("<circle").count(),
        2 * 2 * 5,
        "resumed curves plot every epoch"
    );
}

/// examples/smnist_psn.snn (row-by-row digits, two sliding-PSN layers) trained on the
/// checked-in 100-image MNIST subset fed row by row: the loss falls, the network fits its
/// training images and beats chance (10%) on the 100 test images by a wide margin (54% when
/// written); `eval` feeds the test images the same way. About a second of training.
#[test]
fn train_row_by_row_digits_with_sliding_psn() {
    let d = scratch("train-smnist");
    let out = d.to_str().unwrap();
    let o = snnc(&[
        "train",
        "examples/smnist_psn.snn",
        "--set",
        "data=mnist(\"tests/data/mnist-100\", sequence = rows)",
        "--set",
        "validation=0",
        "--batch",
        "10",
        "--epochs",
        "20",
        "-q",
        "-o",
        out,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("tests/data/mnist-100 train (rows) (100 train"),
        "{}",
        text(&o.stderr)
    );
    let stdout = text(&o.stdout);
    let acc = fitted_the_mnist_subset(&stdout, &d);
    // The raster: one dot per spike of both PSN layers over the 28 rows.
    let raster = std::fs::read_to_string(d.join("raster.svg")).unwrap();
    assert!(raster.contains("256 neurons x 28 steps"), "raster caption");

    let w = d.join("weights.safetensors");
    let o = snnc(&[
        "eval",
        "examples/smnist_psn.snn",
        "--set",
        "data=mnist(\"tests/data/mnist-100\", sequence = rows)",
        "--weights",
        w.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains(&format!("test accuracy: {acc:.2}%")),
        "{} vs {acc}",
        text(&o.stdout)
    );
}

/// A Bernoulli-encoded 784-128-10 LIF MLP (the encoders' Philox stream feeds every training
/// step) trained on the checked-in 100-image MNIST subset: the loss falls, the network fits
/// its training images and beats chance (10%) on the 100 test images by a wide margin (70%
/// when written; 72% with the earlier one-call-per-neuron stream). Under a second.
#[test]
fn train_a_bernoulli_encoded_mlp() {
    let d = scratch("train-bernoulli");
    let model = d.join("bern.snn");
    std::fs::write(
        &model,
        "model bern {\n  T = 10\n  seed = 1\n  input image: [784]\n  \
         x = bernoulli(image, seed = 7)\n  h1 = dense(x, 128)\n  s1 = LIF(h1, tau = 2.0)\n  \
         h2 = dense(s1, 10)\n  out = LI(h2, tau = 2.0)\n  output trace(out.v)\n  train {\n    \
         data = mnist(\"tests/data/mnist-100\")\n    loss = cross_entropy(mean(out.v))\n    \
         optimizer = adam(lr = 0.002)\n    epochs = 20\n    batch = 10\n    validation = 0\n  }\n}\n",
    )
    .unwrap();
    train_on_the_mnist_subset(&d, &model);
}

/// `snnc train` feeds image-shaped inputs (`input image: [1, 28, 28]`) to a conv net: the
/// batch tensor takes the input's declared shape, `[B, 1, 28, 28]`, where it used to be
/// `[B, 784]` and fail the shape check. conv (stride 2) -> LIF -> max pool -> dense -> LI on
/// the 100-image MNIST subset: fitted, 71% on the test images when written. About a second.
#[test]
fn train_a_conv_net_on_image_inputs() {
    let d = scratch("train-conv");
    let model = d.join("cnn.snn");
    std::fs::write(&model, mnist_cnn(20, 0)).unwrap();
    train_on_the_mnist_subset(&d, &model);
}

/// A conv net on the 100-image MNIST subset, as `.snn` text: conv (stride 2) -> LIF -> max
/// pool -> dense -> LI, Adam, batch 10, `epochs` epochs, `validation` held-out images.
fn mnist_cnn(epochs: usize, validation: usize) -> String {
    format!(
        "model cnn {{\n  T = 6\n  seed = 1\n  input image: [1, 28, 28]\n  \
         c1 = conv2d(image, 8, kernel = 5, stride = 2, padding = 2, init_gain = 3.0)\n  \
         s1 = LIF(c1, tau = 2.0)\n  p1 = maxpool2d(s1, 2)\n  f = flatten(p1)\n  \
         h = dense(f, 10, init_gain = 4.0)\n  out = LI(h, tau = 2.0)\n  output trace(out.v)\n  \
         train {{\n    data = mnist(\"tests/data/mnist-100\")\n    \
         loss = cross_entropy(mean(out.v))\n    optimizer = adam(lr = 0.005)\n    \
         epochs = {epochs}\n    batch = 10\n    validation = {validation}\n  }}\n}}\n"
    )
}

/// `snnc train MODEL -q -o DIR` (a model whose `train { }` block reads the MNIST subset)
/// succeeds and [`fitted_the_mnist_subset`].
fn train_on_the_mnist_subset(d: &Path, model: &Path) {
    let o = snnc(&[
        "train",
        model.to_str().unwrap(),
        "-q",
        "-o",
        d.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    fitted_the_mnist_subset(&text(&o.stdout), d);
}

/// A 20-epoch run on the 100-image MNIST subset (`snnc train -o dir`): the loss fell at
/// least 5x, the training images are fitted (> 90%), and the test accuracy printed on stdout
/// is above 40% (chance: 10%). Returns that accuracy.
fn fitted_the_mnist_subset(stdout: &str, d: &Path) -> f64 {
    let acc: f64 = stdout
        .split("test accuracy: ")
        .nth(1)
        .and_then(|s| s.split('%').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no accuracy in {stdout}"));
    let csv = std::fs::read_to_string(d.join("metrics.csv")).unwrap();
    let col = |i: usize| -> Vec<f64> {
        csv.lines()
            .skip(1)
            .map(|l| l.split(',').nth(i).unwrap().parse().unwrap())
            .collect()
    };
    let (losses, train_acc) = (col(2), col(3));
    assert_eq!(losses.len(), 20);
    assert!(
        losses[19] < 0.2 * losses[0],
        "loss did not fall: {losses:?}"
    );
    assert!(
        *train_acc.last().unwrap() > 0.9,
        "training images not fitted: {train_acc:?}"
    );
    assert!(acc > 40.0, "test accuracy {acc}% (chance: 10%)");
    acc
}

#[test]
fn train_errors_point_at_the_cause() {
    // No train block.
    let o = snnc(&["train", "examples/mlp.snn"]);
    assert_eq!(o.status.code(), Some(1));
    let e = text(&o.stderr);
    assert!(
        e.contains("has no `train { ... }` block") && e.contains("mlp.snn:"),
        "{e}"
    );
    // A misspelt setting from the command line.
    let o = snnc(&[
        "train",
        "examples/yinyang.snn",
        "--set",
        "los=cross_entropy(counts(s1))",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let e = text(&o.stderr);
    assert!(
        e.contains("unknown training setting `los`") && e.contains("did you mean `loss`"),
        "{e}"
    );
    // Missing data files.
    let o = snnc(&[
        "train",
        "examples/mnist.snn",
        "--set",
        "data=mnist(\"no/such/dir\")",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let e = text(&o.stderr);
    assert!(
        e.contains("no/such/dir") && e.contains("fetch-data.sh"),
        "{e}"
    );
    // Nesterov without momentum (torch refuses it too).
    let o = snnc(&[
        "train",
        "examples/yinyang.snn",
        "--set",
        "optimizer=sgd(nesterov = true)",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let e = text(&o.stderr);
    assert!(e.contains("`nesterov = true` needs a momentum > 0"), "{e}");
    // Three Yin-Yang classes into a two-neuron readout: an error, not a panic.
    let d = scratch("train-errors");
    let two = d.join("two.snn");
    let src = std::fs::read_to_string(common::root().join("examples/yinyang.snn"))
        .unwrap()
        .replace("h2 = dense(s1, 3)", "h2 = dense(s1, 2)");
    std::fs::write(&two, src).unwrap();
    let o = snnc(&["train", two.to_str().unwrap(), "--epochs", "1"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    let e = text(&o.stderr);
    assert!(
        e.contains("has label 2") && e.contains("with 2 classes"),
        "{e}"
    );
    // A loss on a population that does not exist.
    let o = snnc(&[
        "train",
        "examples/yinyang.snn",
        "--set",
        "loss=cross_entropy(counts(s9))",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let e = text(&o.stderr);
    assert!(e.contains("`s9`") && e.contains("did you mean `s1`"), "{e}");
}

/// `snnc run` calibrates projections of spikes left to the cost model on its inputs, says
/// what it measured and chose, and recompiles when a form changes; `--no-calibrate` and
/// `snnc ir` keep the assumed rate.
#[test]
fn run_calibrates_projections_of_spikes() {
    let d = scratch("calibrate");
    let model = d.join("cal.snn");
    std::fs::write(
        &model,
        "model cal { T = 25\n batch = 64\n input image: [300]\n \
         x = bernoulli(image, gain = 0.1, seed = 3)\n h1 = dense(x, 256, init_gain = 6.0)\n \
         s1 = LIF(h1, tau = 2.0)\n output counts(s1) }\n",
    )
    .unwrap();
    let m = model.to_str().unwrap();
    let o = snnc(&["run", m]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(
        err.contains("calibration on 64 samples x 25 steps: h1 input rate 0.0")
            && err.contains("-> event-driven (dense ~")
            && err.contains("(recompiled)"),
        "{err}"
    );
    let o = snnc(&["run", m, "--no-calibrate"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(!text(&o.stderr).contains("calibration"));
    let o = snnc(&["run", m, "--sparse", "off"]);
    assert!(!text(&o.stderr).contains("calibration"));
    let o = snnc(&["ir", m, "--after", "schedule"]);
    assert!(text(&o.stdout).contains("  h1: dense  -- cheaper on the CPU; rate 0.2 (assumed)"));
}

/// Rows of a `metrics.csv` written by `snnc train`: (train loss, train accuracy, validation
/// loss, validation accuracy) per epoch.
fn metrics(dir: &Path) -> Vec<[f64; 4]> {
    let text = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    let mut lines = text.lines();
    let head: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| head.iter().position(|h| *h == name).unwrap();
    let cols = [
        col("train_loss"),
        col("train_acc"),
        col("val_loss"),
        col("val_acc"),
    ];
    lines
        .map(|l| {
            let f: Vec<f64> = l
                .split(',')
                .map(|v| v.parse().unwrap_or(f64::NAN))
                .collect();
            cols.map(|c| f[c])
        })
        .collect()
}

/// `snnc train --device cuda-shim` (the CUDA device with the host standing in for the GPU:
/// its weight uploads, gradient buffers and downloads, cuBLAS calls and every kernel of the
/// training plan) follows the CPU run epoch by epoch: Yin-Yang (dense layers, Adam, a
/// validation split) and a conv net on the MNIST subset (conv, max pooling, flatten). Losses
/// agree to 1e-4 relative, accuracies to one sample in a thousand: the two devices sum
/// GEMMs in another order, so their weights drift apart by rounding, not more.
#[test]
fn training_on_the_cuda_device_through_the_host_shim_follows_the_cpu() {
    if snn_runtime::cuda::shim::find_cxx().is_none() {
        println!("SKIP: no C++ compiler for the CUDA host shim (install g++ or set CXX)");
        return;
    }
    let d = scratch("train-cuda-shim");
    let cnn = d.join("cnn.snn");
    std::fs::write(&cnn, mnist_cnn(4, 20)).unwrap();
    let runs: [(&str, &Path, &[&str]); 2] = [
        (
            "yinyang",
            Path::new("examples/yinyang.snn"),
            &["--epochs", "3", "--limit", "600"],
        ),
        ("cnn", &cnn, &[]),
    ];
    for (name, model, extra) in runs {
        let mut rows = Vec::new();
        for device in ["cpu", "cuda-shim"] {
            let out = d.join(format!("{name}-{device}"));
            let mut args = vec![
                "train",
                model.to_str().unwrap(),
                "-q",
                "--device",
                device,
                "-o",
                out.to_str().unwrap(),
            ];
            args.extend_from_slice(extra);
            let o = snnc(&args);
            assert_eq!(
                o.status.code(),
                Some(0),
                "{name} on {device}: {}",
                text(&o.stderr)
            );
            rows.push(metrics(&out));
        }
        let (cpu, shim) = (&rows[0], &rows[1]);
        assert!(cpu.len() >= 3, "{name}: {} epochs", cpu.len());
        assert_eq!(cpu.len(), shim.len(), "{name}");
        for (e, (a, b)) in cpu.iter().zip(shim).enumerate() {
            for (i, what) in ["train loss", "train accuracy", "val loss", "val accuracy"]
                .iter()
                .enumerate()
            {
                let tol = if i % 2 == 0 { 1e-4 * a[i].abs() } else { 1e-3 };
                assert!(
                    (a[i] - b[i]).abs() <= tol,
                    "{name}, epoch {}: {what} {} on the CPU, {} on cuda-shim",
                    e + 1,
                    a[i],
                    b[i]
                );
            }
        }
        // The runs learned something (so agreement is not two flat lines).
        assert!(
            cpu.last().unwrap()[0] < 0.9 * cpu[0][0],
            "{name}: loss {:?}",
            cpu
        );
        println!("{name}: {} epochs agree: {cpu:?} vs {shim:?}", cpu.len());
    }
}

/// A fresh directory under the system's temporary directory (never the checkout).
fn temp_scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("snnc-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Issue 18: `snnc check` and `snnc run` agree on a sum with a repeated operand: both
/// refuse it at its location (no internal "two arguments share slot").
#[test]
fn check_and_run_refuse_a_repeated_operand_alike() {
    let d = temp_scratch("repeat");
    let f = d.join("hh.snn");
    std::fs::write(
        &f,
        "model m {\n  T = 4\n  input x: [3]\n  h = dense(x, 2)\n  s = LIF(h + h)\n  output counts(s)\n}\n",
    )
    .unwrap();
    for cmd in ["check", "run"] {
        let o = snnc(&[cmd, f.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(1), "{cmd}");
        let e = text(&o.stderr);
        assert!(
            e.contains("`h` appears more than once in the input sum of `s`")
                && e.contains("hh.snn:5:15")
                && !e.contains("share slot"),
            "{cmd}: {e}"
        );
    }
    let _ = std::fs::remove_dir_all(&d);
}

/// Issue 18, item 1: a 10,000-term sum and 10,000 nested brackets are refused at the source
/// by every command that compiles, with the limit and the place (they once overflowed the
/// stack in `check` or in code generation).
#[test]
fn check_compile_and_ir_refuse_expressions_past_the_depth_limit() {
    let d = temp_scratch("deep");
    let sum = d.join("sum.snn");
    let terms = " + 1.0".repeat(10_000);
    std::fs::write(
        &sum,
        format!("model m {{\n  T = 4\n  input x: [3]\n  h = dense(x, 2)\n  s = LIF(h, tau = 2.0{terms})\n  output counts(s)\n}}\n"),
    )
    .unwrap();
    let parens = d.join("parens.snn");
    let (open, close) = ("(".repeat(10_000), ")".repeat(10_000));
    std::fs::write(
        &parens,
        format!("model m {{\n  T = 4\n  input x: [3]\n  h = dense({open}x{close}, 2)\n}}\n"),
    )
    .unwrap();
    let out = d.join("out");
    for (file, msg, at) in [
        (
            &sum,
            "expression nested too deeply: more than 256 levels",
            "sum.snn:5:20",
        ),
        (
            &parens,
            "brackets nested too deeply: more than 256 levels",
            "parens.snn:4:267",
        ),
    ] {
        let f = file.to_str().unwrap();
        for args in [
            vec!["check", f],
            vec!["ir", f],
            vec!["compile", f, "-o", out.to_str().unwrap()],
        ] {
            let o = snnc(&args);
            let e = text(&o.stderr);
            assert_eq!(o.status.code(), Some(1), "{args:?}: {e}");
            assert!(
                e.contains(msg) && e.contains(at) && e.contains("Help"),
                "{args:?}: {e}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&d);
}

/// Issue 18: source files that are not plain UTF-8 text.
#[test]
fn byte_order_mark_and_invalid_utf8() {
    let d = temp_scratch("utf8");
    let mlp = std::fs::read(common::root().join("examples/mlp.snn")).unwrap();
    let bom = d.join("bom.snn");
    std::fs::write(&bom, [b"\xef\xbb\xbf".as_slice(), &mlp].concat()).unwrap();
    let o = snnc(&["check", bom.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));

    let bad = d.join("bad.snn");
    std::fs::write(&bad, b"model m {\n  T = 4\n  input x: [3] \xff\n}\n").unwrap();
    let o = snnc(&["check", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let e = text(&o.stderr);
    assert!(
        e.contains("is not valid UTF-8 (byte 0xff)") && e.contains("bad.snn:3:16"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&d);
}

/// Issue 18: settings of a command that leave nothing to run name the setting, and no
/// diagnostic of a generated model (bench) panics.
#[test]
fn empty_runs_name_the_setting() {
    let o = snnc(&["bench", "psn-fwd", "--t", "0"]);
    assert_eq!(o.status.code(), Some(1));
    let e = text(&o.stderr);
    assert!(
        e.contains("`--t 0`: a PSN sequence length must be at least 1 time step")
            && !e.contains("internal compiler error"),
        "{e}"
    );
    let o = snnc(&["bench", "lif-fwd", "--repeat", "0"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("`--repeat 0`"));
    for cmd in [
        &["train", "examples/yinyang.snn", "--limit", "0"][..],
        &[
            "eval",
            "examples/yinyang.snn",
            "--weights",
            "w.safetensors",
            "--limit",
            "0",
        ],
    ] {
        let o = snnc(cmd);
        assert_eq!(o.status.code(), Some(2));
        let e = text(&o.stderr);
        assert!(
            e.contains("'0' for '--limit") && e.contains("at least 1 sample"),
            "{e}"
        );
    }

    let d = temp_scratch("empty");
    let x = d.join("x.npy");
    snn_runtime::io::npy::write_npy(&x, &snn_runtime::Tensor::zeros(&[0, 784])).unwrap();
    let o = snnc(&["run", "examples/mlp.snn", "--input", x.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let e = text(&o.stderr);
    assert!(e.contains("x.npy` holds 0 samples"), "{e}");

    // A training set from .npy files: 5 samples, then none.
    let (fx, fy) = (d.join("fx.npy"), d.join("fy.npy"));
    let model = |validation: usize| {
        format!(
            "model m {{\n  T = 4\n  input x: [2]\n  s = LI(dense(x, 2))\n  output trace(s.v)\n  train {{\n    data = npy(x = \"{}\", y = \"{}\")\n    loss = cross_entropy(max(s.v))\n    epochs = 1\n    validation = {validation}\n  }}\n}}\n",
            fx.display(),
            fy.display()
        )
    };
    let m = d.join("m.snn");
    std::fs::write(&m, model(600)).unwrap();
    let out = d.join("run");
    let train = || {
        snnc(&[
            "train",
            m.to_str().unwrap(),
            "-q",
            "-o",
            out.to_str().unwrap(),
        ])
    };
    snn_runtime::io::npy::write_npy(&fx, &snn_runtime::Tensor::zeros(&[5, 2])).unwrap();
    snn_runtime::io::npy::write_npy(&fy, &snn_runtime::Tensor::zeros(&[5])).unwrap();
    let o = train();
    assert_eq!(o.status.code(), Some(1));
    let e = text(&o.stderr);
    assert!(
        e.contains("validation = 600 but the training set has 5 samples"),
        "{e}"
    );
    snn_runtime::io::npy::write_npy(&fx, &snn_runtime::Tensor::zeros(&[0, 2])).unwrap();
    snn_runtime::io::npy::write_npy(&fy, &snn_runtime::Tensor::zeros(&[0])).unwrap();
    std::fs::write(&m, model(0)).unwrap();
    let o = train();
    assert_eq!(o.status.code(), Some(1));
    let e = text(&o.stderr);
    assert!(e.contains("fx.npy") && e.contains("holds 0 samples"), "{e}");
    let _ = std::fs::remove_dir_all(&d);
}

/// Every file in `dir` (names sorted) with its bytes.
fn files_of(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    v.sort();
    v
}

/// A second `snnc train` into the default folder keeps the first run's files byte for byte
/// and writes a numbered folder; `--epochs 0` and a finished `--resume` list only what they
/// wrote (the raster), and the resumed run's other files stay as they were.
#[test]
fn a_second_training_never_replaces_the_first() {
    let d = scratch("train-twice");
    std::fs::copy(
        common::root().join("examples/yinyang.snn"),
        d.join("yinyang.snn"),
    )
    .unwrap();
    let quick = [
        "train",
        "yinyang.snn",
        "--epochs",
        "1",
        "--limit",
        "200",
        "-q",
    ];
    let o = snnc_in(&d, &quick);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let first = d.join("runs/yinyang");
    let before = files_of(&first);
    let names: Vec<&str> = before.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "checkpoint.safetensors",
            "metrics.csv",
            "raster.svg",
            "training.svg",
            "weights.safetensors"
        ]
    );

    let o = snnc_in(&d, &quick);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let e = text(&o.stderr);
    assert!(
        e.contains("writing to runs/yinyang-2 (runs/yinyang holds an earlier run)")
            && e.contains("metrics: runs/yinyang-2/metrics.csv"),
        "{e}"
    );
    assert!(files_of(&first) == before, "the first run's files changed");
    assert_eq!(files_of(&d.join("runs/yinyang-2")).len(), 5);

    // No epochs: nothing trained, so no weights, checkpoint or metrics to list. (On the
    // command line a later flag wins over an earlier `--set` of the same setting.)
    let o = snnc_in(
        &d,
        &[
            "train",
            "yinyang.snn",
            "--set",
            "epochs=5",
            "--epochs",
            "0",
            "-q",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let e = text(&o.stderr);
    assert!(
        !e.contains("weights:") && !e.contains("checkpoint:") && !e.contains("metrics:"),
        "{e}"
    );
    assert!(e.contains("plots: runs/yinyang-3/raster.svg"), "{e}");
    let third: Vec<String> = files_of(&d.join("runs/yinyang-3"))
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(third, ["raster.svg"]);

    // A resume with no epochs left writes on in its folder, and only the raster.
    let o = snnc_in(
        &d,
        &[
            "train",
            "yinyang.snn",
            "--epochs",
            "1",
            "-q",
            "--resume",
            "runs/yinyang/checkpoint.safetensors",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let e = text(&o.stderr);
    assert!(
        !e.contains("metrics:") && e.contains("plots: runs/yinyang/raster.svg"),
        "{e}"
    );
    let kept = |v: Vec<(String, Vec<u8>)>| -> Vec<(String, Vec<u8>)> {
        v.into_iter().filter(|(n, _)| n != "raster.svg").collect()
    };
    assert!(kept(files_of(&first)) == kept(before));
    assert!(!d.join("runs/yinyang-4").exists());
}

/// A run killed after writing epoch 3's metrics row but before its checkpoint resumes from
/// epoch 2 and trains epoch 3 again: `metrics.csv` has one row per epoch, the new one.
#[test]
fn a_resumed_run_has_one_metrics_row_per_epoch() {
    let d = scratch("train-killed");
    let run = d.join("run");
    let out = run.to_str().unwrap();
    let quick = |epochs: &'static str| {
        [
            "train",
            "examples/yinyang.snn",
            "--epochs",
            epochs,
            "--limit",
            "200",
            "-q",
            "-o",
            out,
        ]
    };
    let o = snnc(&quick("2"));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    // What the killed epoch 3 left behind.
    let csv = run.join("metrics.csv");
    let mut text_before = std::fs::read_to_string(&csv).unwrap();
    text_before.push_str("3,0.01,9,0,9,0,0,0\n");
    std::fs::write(&csv, text_before).unwrap();

    let ck = run.join("checkpoint.safetensors");
    let mut args = quick("3").to_vec();
    args.extend(["--resume", ck.to_str().unwrap()]);
    let o = snnc(&args);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("resuming after epoch 2"));
    let csv = std::fs::read_to_string(&csv).unwrap();
    let epochs: Vec<&str> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(epochs, ["1", "2", "3"], "{csv}");
    assert!(
        metrics(&run)[2][0] < 9.0,
        "the killed epoch's row was kept: {csv}"
    );
}

/// The README's main command (`snnc train examples/yinyang.snn`) writes into `runs/yinyang/`,
/// which git ignores and nothing committed lives in: it leaves `git status` clean.
#[test]
fn the_default_run_folder_is_ignored_by_git() {
    let root = common::root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(readme.contains("cargo run --release -p snnc -- train examples/yinyang.snn   #"));
    let git = |args: &[&str]| Command::new("git").args(args).current_dir(&root).output();
    match git(&["rev-parse", "--is-inside-work-tree"]) {
        Ok(o) if o.status.success() => {}
        _ => {
            println!("SKIP: not a git checkout (or no git)");
            return;
        }
    }
    let o = git(&["check-ignore", "-q", "runs/yinyang/metrics.csv"]).unwrap();
    assert!(o.status.success(), "runs/ is not ignored by git");
    let o = git(&["ls-files", "runs"]).unwrap();
    assert_eq!(text(&o.stdout), "", "committed files under runs/");
}

/// The kernel cache checks itself (issue 18): a truncated, emptied or manifest-less cached
/// library is rebuilt with one line saying so, never loaded (that was a SIGBUS); the outputs
/// stay the same. Temporary build directories of dead processes are removed, live ones kept.
#[test]
fn corrupt_cached_kernels_are_rebuilt_and_stale_builds_removed() {
    let d = scratch("kernel-cache");
    let cache = d.join("cache");
    let run = |out: &Path| {
        Command::new(snnc_bin())
            .args(["run", "examples/mlp.snn", "--steps", "4", "-o"])
            .arg(out)
            .current_dir(common::root())
            .env("SNNC_CACHE_DIR", &cache)
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    };
    let counts = |out: &Path| {
        snn_runtime::io::npy::read_npy(out.join("s2.counts.npy"))
            .unwrap()
            .data
    };
    let o = run(&d.join("out0"));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(!text(&o.stderr).contains("corrupt"), "{}", text(&o.stderr));
    let expected = counts(&d.join("out0"));

    let lib_name = format!(
        "{}snnkernels{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    );
    let entries: Vec<PathBuf> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join(&lib_name).is_file())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let entry = &entries[0];
    let lib = entry.join(&lib_name);
    let manifest = entry.join("manifest.txt");
    let size = std::fs::metadata(&lib).unwrap().len();
    assert!(manifest.is_file(), "a published entry has its manifest");

    let half = size / 2;
    let corruptions = [
        ("half", format!("(size {half}, expected {size})")),
        ("empty", format!("(size 0, expected {size})")),
        ("no-manifest", format!("(size {size}, no manifest)")),
    ];
    for (name, why) in corruptions {
        match name {
            "half" => {
                let f = std::fs::OpenOptions::new().write(true).open(&lib).unwrap();
                f.set_len(half).unwrap();
            }
            "empty" => std::fs::write(&lib, b"").unwrap(),
            _ => std::fs::remove_file(&manifest).unwrap(),
        }
        let out = d.join(name);
        let o = run(&out);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(0), "{name}: {err}");
        let said: Vec<&str> = err.lines().filter(|l| l.contains("corrupt")).collect();
        assert_eq!(said.len(), 1, "{name}: {err}");
        assert!(
            said[0].starts_with("snnc: cached kernels in ")
                && said[0].ends_with(&format!("were corrupt {why}; rebuilding")),
            "{name}: {err}"
        );
        assert_eq!(counts(&out), expected, "{name}");
        // Rebuilt and published again with its manifest: the next run uses it silently.
        assert_eq!(std::fs::metadata(&lib).unwrap().len(), size, "{name}");
        assert!(manifest.is_file(), "{name}");
        let o = run(&d.join(format!("{name}-again")));
        assert!(!text(&o.stderr).contains("corrupt"), "{}", text(&o.stderr));
    }

    // Stale temporary build directories: a dead PID's is removed, a live one's (this test
    // process's) is kept. Liveness is read from /proc on Linux (elsewhere by age).
    if cfg!(target_os = "linux") {
        let key = entry.file_name().unwrap().to_str().unwrap();
        let dead = cache.join(format!("{key}.tmp-999999"));
        let live = cache.join(format!("{key}.tmp-{}-0", std::process::id()));
        assert!(!Path::new("/proc/999999").exists(), "PID 999999 is alive");
        for dir in [&dead, &live] {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(dir.join("kernels.rs"), "// half-built").unwrap();
        }
        let o = run(&d.join("sweep"));
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
        assert!(!dead.exists(), "the dead build's directory is removed");
        assert!(live.join("kernels.rs").is_file(), "a live build's is kept");
    }
}

/// `snnc` with `SNN_MAX_MEMORY` set to `max` (or removed, for the default budget).
fn snnc_budget(args: &[&str], max: Option<&str>) -> Output {
    let mut cmd = Command::new(snnc_bin());
    cmd.args(args)
        .current_dir(common::root())
        .env("SNNC_CACHE_DIR", common::cache_dir())
        .env("NO_COLOR", "1");
    match max {
        Some(m) => cmd.env("SNN_MAX_MEMORY", m),
        None => cmd.env_remove("SNN_MAX_MEMORY"),
    };
    cmd.output().unwrap()
}

/// Issue 18: a gigantic layer, input, convolution or batch is refused before anything is
/// allocated: the error says what the model needs for which T and batch, the budget, and
/// points at the layer that needs the most; `snnc check` warns instead. No case panics or
/// dies by a signal (the aborts were `memory allocation of N bytes failed`).
#[test]
fn gigantic_models_are_refused_before_allocating() {
    let d = temp_scratch("membudget");
    let model = |name: &str, body: &str| -> String {
        let p = d.join(format!("{name}.snn"));
        std::fs::write(
            &p,
            format!("model big {{\n  T = 8\n  batch = 32\n{body}  output counts(s)\n}}\n"),
        )
        .unwrap();
        p.to_str().unwrap().to_string()
    };
    let dense = model(
        "dense",
        "  input x: [1000]\n  h = dense(x, 10000000000)\n  s = LIF(h)\n",
    );
    let conv = model(
        "conv",
        "  input x: [1, 28, 28]\n  c = conv2d(x, 1000000000, kernel = 3, padding = 1)\n  s = LIF(c)\n",
    );
    let input = model(
        "input",
        "  input x: [100000, 100000, 100000]\n  h = dense(flatten(x), 10)\n  s = LIF(h)\n",
    );
    let mlp = common::root().join("examples/mlp.snn");
    let mlp = mlp.to_str().unwrap();
    // (arguments, location, message, label)
    let cases: [(Vec<&str>, &str, &str, &str); 4] = [
        (
            vec![&dense],
            "dense.snn:5:3",
            "the model needs 94.2 TB for T=8, batch=32 (budget 1.0 GB: --max-memory)",
            "layer `h` (dense, 10000000000 outputs) needs 81.4 TB",
        ),
        (
            vec![&conv],
            "conv.snn:6:3",
            "the model needs 1.1 PB for T=8, batch=32 (budget 1.0 GB: --max-memory)",
            "layer `s` (LIF [1000000000, 28, 28]) needs 1.0 PB",
        ),
        (
            vec![&input],
            "input.snn:4:3",
            "the model needs 336.0 PB for T=8, batch=32 (budget 1.0 GB: --max-memory)",
            "layer `x` (input [100000, 100000, 100000]) needs 256.0 PB",
        ),
        (
            vec![mlp, "--batch", "1000000000"],
            "mlp.snn:12:3",
            "the model needs 236.8 TB for T=25, batch=1000000000 (budget 1.0 GB: --max-memory)",
            "layer `s1` (LIF [500]) needs 100.0 TB",
        ),
    ];
    for (args, loc, msg, label) in &cases {
        let run: Vec<&str> = ["run", "--max-memory", "1G"]
            .iter()
            .copied()
            .chain(args.iter().copied())
            .collect();
        let o = snnc_budget(&run, None);
        let e = text(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{run:?}: {e}");
        assert!(e.starts_with("[E-memory] Error: "), "{run:?}: {e}");
        for want in [
            *loc,
            *msg,
            *label,
            "Help: lower --batch or --steps, shrink the layer, or raise --max-memory",
        ] {
            assert!(e.contains(want), "{run:?} lacks `{want}`: {e}");
        }
        // `check` estimates the model's default T and batch and warns; it still passes.
        if !args.contains(&"--batch") {
            let o = snnc_budget(&["check", "--max-memory", "1G", args[0]], None);
            let e = text(&o.stderr);
            assert_eq!(o.status.code(), Some(0), "{e}");
            assert!(
                e.contains(&format!(
                    "warning: inference: {}",
                    msg.replace(" (budget ", ", over the memory budget (")
                )),
                "{e}"
            );
        }
    }

    // An element count past 64 bits: the same E-memory error, located at the input, from
    // `check` and `run` alike.
    let overflow = model(
        "overflow",
        "  input x: [100000000, 100000000, 100000000, 100000000]\n  h = dense(flatten(x), 10)\n  s = LIF(h)\n",
    );
    for cmd in ["check", "run"] {
        let o = snnc_budget(&[cmd, &overflow], None);
        let e = text(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{cmd}: {e}");
        assert!(
            e.contains("overflow.snn:4:3")
                && e.contains("[E-memory] Error: `x` is too large: each sample has 100000000 x 100000000 x 100000000 x 100000000 elements, more than 64 bits count"),
            "{cmd}: {e}"
        );
    }

    // `train` sizes the training step (gradients, optimizer state, backward buffers).
    let runs = d.join("runs");
    let o = snnc_budget(
        &[
            "train",
            "--max-memory",
            "100K",
            "examples/yinyang.snn",
            "--out",
            runs.to_str().unwrap(),
        ],
        None,
    );
    let e = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{e}");
    for want in [
        "[E-memory] Error: the model needs 1.0 MB to train for T=20, batch=32 (budget 100.0 kB: --max-memory)",
        "yinyang.snn:12:3",
        "layer `s1` (LIF [120]) needs 952.3 kB",
        "Help: lower the batch (the train block's `batch`, or --batch)",
    ] {
        assert!(e.contains(want), "train lacks `{want}`: {e}");
    }
    assert!(!runs.exists(), "nothing written before the refusal");

    // The default budget is a share of physical memory; SNN_MAX_MEMORY replaces it and
    // --max-memory replaces both.
    let o = snnc_budget(&["run", &dense], None);
    let e = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.contains("% of ") && e.contains("physical memory)"), "{e}");
    let o = snnc_budget(&["run", &dense], Some("2G"));
    assert!(
        text(&o.stderr).contains("(budget 2.0 GB: SNN_MAX_MEMORY)"),
        "{}",
        text(&o.stderr)
    );
    let o = snnc_budget(&["run", "--max-memory", "512M", &dense], Some("2G"));
    assert!(
        text(&o.stderr).contains("(budget 512.0 MB: --max-memory)"),
        "{}",
        text(&o.stderr)
    );
    let o = snnc_budget(&["run", "--max-memory", "lots", &dense], None);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("`lots` is not a size"),
        "{}",
        text(&o.stderr)
    );
    let _ = std::fs::remove_dir_all(&d);
}

/// Issue 18: `snnc check` prints the memory estimate for inference (and training, for a
/// model with a `train { }` block) at the model's or the given T and batch.
#[test]
fn check_reports_the_memory_estimate() {
    let o = snnc_budget(&["check", "examples/mlp.snn"], None);
    let e = text(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{e}");
    assert!(
        e.contains("memory: inference 7.0 MB for T=25, batch=16 (largest: layer `h1`"),
        "{e}"
    );
    assert!(
        e.contains("memory budget: ") && !e.contains("warning"),
        "{e}"
    );
    let o = snnc_budget(
        &[
            "check",
            "examples/mlp.snn",
            "--steps",
            "50",
            "--batch",
            "32",
        ],
        None,
    );
    assert!(
        text(&o.stderr).contains("memory: inference 18.1 MB for T=50, batch=32"),
        "{}",
        text(&o.stderr)
    );
    let o = snnc_budget(&["check", "examples/yinyang.snn"], None);
    let e = text(&o.stderr);
    assert!(
        e.contains("memory: inference 385.0 kB for T=20, batch=32")
            && e.contains("memory: training 1.0 MB for T=20, batch=32"),
        "{e}"
    );
}
