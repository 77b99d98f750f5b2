//! `snnc features` and `snnc readout` (issue 19's accuracy harness): the exported features
//! are exactly a direct `Session::run` reduced over time; the readout (the project's own
//! trainer on a generated `dense` model) separates what is separable and beats chance on
//! MNIST features of a fixed random conv net; bad input gives located errors; and
//! `scripts/score_features.py` (scikit-learn's LinearSVC) scores the same files.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use snn_runtime::data::{mnist, Dataset};
use snn_runtime::io::npy::read_npy;
use snn_runtime::plan::OutputKind;
use snn_runtime::Tensor;
use snnc::readout::{self, ReadoutOptimizer, ReadoutOptions};
use snnc::Options;

/// Kheradpisheh's network at toy size (docs/spyker.md "Composition"): DoG, latency, conv +
/// fire-once, pool, conv + fire-once, pool; `q` passes the pooled wave on as spikes (a pool
/// is not a population, so it has no spikes output of its own). Thresholds low enough that a
/// random network fires.
const MODEL: &str = "model kh_toy {
  T = 15
  batch = 16
  input img: [1, 28, 28]
  f = dog(img, size = 7, sigmas = [1.0, 2.0, 2.0, 1.0], threshold = 0.01)
  s = latency(f)
  c = conv2d(s, 4, kernel = 5, padding = 2, bias = false)
  n = FireOnce(c, v_threshold = 0.5)
  p = maxpool2d(n, 2, padding = 1)
  c2 = conv2d(p, 6, kernel = 3, padding = 1, bias = false)
  n2 = FireOnce(c2, v_threshold = 0.2)
  p2 = maxpool2d(n2, 3, padding = 1)
  q = FireOnce(p2)
  output spikes(q)
  output counts(n)
}
";
const SEED: u64 = 7;

fn snnc_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
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
    dir.join(format!("snnc{}", std::env::consts::EXE_SUFFIX))
}

fn snnc(args: &[&str]) -> Output {
    Command::new(snnc_bin())
        .args(args)
        .current_dir(common::root())
        .env("SNNC_CACHE_DIR", common::cache_dir())
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

/// An empty folder under the system's temporary directory, one per checkout.
fn scratch(name: &str) -> PathBuf {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    common::root().hash(&mut h);
    let d = std::env::temp_dir()
        .join(format!("snnc-features-test-{:016x}", h.finish()))
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn mnist_dir() -> PathBuf {
    common::root().join("tests/data/mnist-100")
}

/// The model file and its seeded weights in `dir`.
fn model_and_weights(dir: &Path) -> (PathBuf, PathBuf) {
    let model = dir.join("kh_toy.snn");
    std::fs::write(&model, MODEL).unwrap();
    let mut s = common::session_from_str("kh_toy.snn", MODEL, Options::default());
    s.init_weights(SEED).unwrap();
    let weights = dir.join("weights.safetensors");
    s.save_weights(&weights).unwrap();
    (model, weights)
}

/// `snnc features` on mnist-100, checked: exit 0 and the four files.
fn export(dir: &Path, extra: &[&str]) -> PathBuf {
    let (model, weights) = model_and_weights(dir);
    let out = dir.join("features");
    let data = format!("mnist({})", mnist_dir().display());
    let mut args = vec![
        "features",
        model.to_str().unwrap(),
        "--weights",
        weights.to_str().unwrap(),
        "--data",
        &data,
        "--out",
        out.to_str().unwrap(),
        "--no-calibrate",
        "-q",
    ];
    args.extend_from_slice(extra);
    let o = snnc(&args);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("images/s"), "{}", text(&o.stdout));
    out
}

/// What `snnc features` must write for the first `n` images of `d`: one `Session::run` per
/// batch of `batch`, output `name` summed over time (`[T, B, F]` spikes) or taken as it is
/// (`[B, F]` counts), then spike-any if asked.
fn direct(d: &Dataset, n: usize, batch: usize, name: &str, any: bool) -> Tensor {
    let mut s = common::session_from_str("kh_toy.snn", MODEL, Options::default());
    s.init_weights(SEED).unwrap();
    let mut data = vec![];
    let mut f = 0;
    for start in (0..n).step_by(batch) {
        let b = batch.min(n - start);
        let mut x = vec![];
        for i in start..start + b {
            x.extend_from_slice(d.sample(i));
        }
        let x = Tensor {
            shape: vec![b, 1, 28, 28],
            data: x,
        };
        let outs = s.run(&[x], 15, b).unwrap();
        let (decl, out) = outs.iter().find(|(o, _)| o.name == name).unwrap();
        f = decl.shape.iter().product();
        let mut acc = vec![0.0f32; b * f];
        if decl.kind == OutputKind::Counts {
            acc.copy_from_slice(&out.data);
        } else {
            assert_eq!(out.shape[..2], [15, b]);
            for step in out.data.chunks(b * f) {
                for (a, v) in acc.iter_mut().zip(step) {
                    *a += v;
                }
            }
        }
        if any {
            acc.iter_mut().for_each(|v| *v = f32::from(*v > 0.0));
        }
        data.extend(acc);
    }
    Tensor {
        shape: vec![n, f],
        data,
    }
}

fn labels(d: &Dataset, n: usize) -> Tensor {
    Tensor {
        shape: vec![n],
        data: d.y[..n].iter().map(|&y| y as f32).collect(),
    }
}

#[test]
fn features_equal_a_direct_run_reduced_over_time() {
    let train = mnist::load(&mnist_dir(), true).unwrap();
    let test = mnist::load(&mnist_dir(), false).unwrap();
    // Spike counts of the first output; 37 and 21 images: a last batch of 5.
    let dir = scratch("counts");
    let out = export(&dir, &["--train", "37", "--test", "21", "--batch", "16"]);
    let read = |f: &str| read_npy(out.join(f)).unwrap();
    let want = direct(&train, 37, 16, "q.spikes", false);
    assert_eq!(read("train_features.npy"), want);
    assert_eq!(read("train_labels.npy"), labels(&train, 37));
    assert_eq!(
        read("test_features.npy"),
        direct(&test, 21, 16, "q.spikes", false)
    );
    assert_eq!(read("test_labels.npy"), labels(&test, 21));
    assert_eq!(want.shape, [37, 6 * 5 * 5]);
    // Fire-once waves are cumulative: counts up to T, and some but not all features fire.
    assert!(want.data.iter().all(|&v| (0.0..=15.0).contains(&v)));
    assert!(want.data.iter().any(|&v| v > 1.0));
    assert!(want.data.contains(&0.0));

    // Spike-any of a counts output chosen by population, another batch size.
    let dir = scratch("any");
    let out = export(
        &dir,
        &[
            "--train", "20", "--test", "9", "--batch", "8", "--output", "n", "--any",
        ],
    );
    let got = read_npy(out.join("train_features.npy")).unwrap();
    assert_eq!(got, direct(&train, 20, 8, "n.counts", true));
    assert_eq!(got.shape, [20, 4 * 28 * 28]);
    assert!(got.data.iter().all(|&v| v == 0.0 || v == 1.0));
    assert_eq!(
        read_npy(out.join("test_features.npy")).unwrap(),
        direct(&test, 9, 8, "n.counts", true)
    );
}

/// A deterministic generator for the synthetic sets (SplitMix64).
struct Rng(u64);
impl Rng {
    fn uniform(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// `n` samples of `classes` linearly separable clusters in `f` dimensions: class `k` is
/// feature `k` at 3 to 4 plus uniform noise in [0, 1) everywhere.
fn separable(n: usize, classes: usize, f: usize, rng: &mut Rng) -> Dataset {
    let (mut x, mut y) = (vec![], vec![]);
    for i in 0..n {
        let k = i % classes;
        for j in 0..f {
            x.push(rng.uniform() + if j == k { 3.0 } else { 0.0 });
        }
        y.push(k as u32);
    }
    Dataset {
        name: "separable".into(),
        x,
        y,
        shape: vec![f],
        classes,
    }
}

fn opts() -> ReadoutOptions {
    ReadoutOptions {
        cache: Some(common::cache_dir()),
        ..ReadoutOptions::default()
    }
}

#[test]
fn readout_separates_a_separable_set() {
    let mut rng = Rng(1);
    let train = separable(300, 5, 12, &mut rng);
    let test = separable(200, 5, 12, &mut rng);
    let mut losses = vec![];
    let r = readout::train(&train, &test, &opts(), |_, loss, _| losses.push(loss)).unwrap();
    assert_eq!((r.features, r.classes), (12, 5));
    assert_eq!(losses.len(), 30);
    assert!(losses[29] < losses[0] / 4.0, "{losses:?}");
    assert_eq!((r.train_accuracy, r.test_accuracy), (1.0, 1.0), "{r:?}");
    // Deterministic: the same seed gives the same numbers.
    let again = readout::train(&train, &test, &opts(), |_, _, _| {}).unwrap();
    assert_eq!((again.loss, again.test_accuracy), (r.loss, r.test_accuracy));
    // Standardised features, and Adam, learn too.
    for o in [
        ReadoutOptions {
            standardize: true,
            ..opts()
        },
        ReadoutOptions {
            optimizer: ReadoutOptimizer::Adam,
            lr: 1e-2,
            ..opts()
        },
    ] {
        let r = readout::train(&train, &test, &o, |_, _, _| {}).unwrap();
        assert!(r.test_accuracy >= 0.99, "{o:?}: {r:?}");
    }
}

#[test]
fn readout_of_random_conv_features_beats_chance() {
    let dir = scratch("readout");
    let out = export(&dir, &["--any"]);
    let (train, test) = readout::load_dir(&out).unwrap();
    assert_eq!((train.len(), test.len(), train.features()), (100, 100, 150));
    let r = readout::train(&train, &test, &opts(), |_, _, _| {}).unwrap();
    // 10 classes (chance 10%); measured 72% on the 100 test images.
    assert!(r.test_accuracy >= 0.45, "{r:?}");
    assert!(r.train_accuracy >= 0.9, "{r:?}");
    // The command prints the same numbers.
    let o = snnc(&["readout", out.to_str().unwrap(), "-q"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let line = format!(
        "train accuracy {:.2}%, test accuracy {:.2}%",
        100.0 * r.train_accuracy,
        100.0 * r.test_accuracy
    );
    assert!(text(&o.stdout).contains(&line), "{}", text(&o.stdout));

    // scikit-learn's LinearSVC with the Spyker harness's settings, where installed.
    let Some(py) = python_with_sklearn() else {
        eprintln!("skipped scripts/score_features.py: no python with scikit-learn");
        return;
    };
    let script = common::root().join("scripts/score_features.py");
    let o = Command::new(py)
        .arg(&script)
        .arg(&out)
        .arg("--json")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_str(text(&o.stdout).trim()).unwrap();
    assert_eq!(v["C"], 2.4);
    assert_eq!(
        (v["train"].as_u64(), v["feature_dim"].as_u64()),
        (Some(100), Some(150))
    );
    let acc = v["accuracy"].as_f64().unwrap();
    assert!(acc >= 0.4, "LinearSVC test accuracy {acc}");
}

/// `$SNNC_SCORE_PYTHON`, the Spyker venv of the peer harness, or `python3`: the first that
/// imports scikit-learn.
fn python_with_sklearn() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::env::var_os("SNNC_SCORE_PYTHON")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    candidates.push("/work/.venvs/spyker/bin/python".into());
    candidates.push("python3".into());
    candidates.into_iter().find(|p| {
        Command::new(p)
            .args(["-c", "import numpy, sklearn.svm"])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

#[test]
fn cli_errors_are_located() {
    let dir = scratch("errors");
    let (model, _) = model_and_weights(&dir);
    let m = model.to_str().unwrap();
    let data = format!("mnist({})", mnist_dir().display());
    let out = dir.join("out");
    let o_ = out.to_str().unwrap();
    let run_with = |data: &str, extra: &[&str]| {
        let mut a = vec!["features", m, "--data", data, "--out", o_, "-q"];
        a.extend_from_slice(extra);
        let o = snnc(&a);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o.stdout));
        text(&o.stderr)
    };
    let run = |extra: &[&str]| run_with(&data, extra);
    // No such output: at the model's outputs, with the names and a suggestion.
    let e = run(&["--output", "q.spike"]);
    assert!(e.contains("model `kh_toy` has no output `q.spike`"), "{e}");
    assert!(e.contains("kh_toy.snn:14:3"), "{e}");
    assert!(e.contains("`q.spikes`, `n.counts`"), "{e}");
    assert!(e.contains("did you mean `--output q.spikes`?"), "{e}");
    // A missing weights file.
    let e = run(&["--weights", "/nonexistent/w.safetensors"]);
    assert!(
        e.contains("weights file `/nonexistent/w.safetensors` not found"),
        "{e}"
    );
    // Weights of another model: the runtime's message names the tensors.
    let other = dir.join("other.safetensors");
    let mut s = common::session_from_str(
        "o.snn",
        "model o {\n  T = 2\n  input x: [3]\n  s = LIF(dense(x, 2))\n  output counts(s)\n}\n",
        Options::default(),
    );
    s.init_weights(1).unwrap();
    s.save_weights(&other).unwrap();
    let e = run(&["--weights", other.to_str().unwrap()]);
    assert!(e.contains("E-weights"), "{e}");
    // Not a dataset, and a folder without MNIST.
    let e = run_with("cifar(x)", &[]);
    assert!(e.contains("--data `cifar(x)` is not a dataset"), "{e}");
    let e = run_with("mnist(/nonexistent)", &[]);
    assert!(
        e.contains("E-missing-file") && e.contains("/nonexistent"),
        "{e}"
    );
    // An input that does not take an image: at the input.
    let small = dir.join("small.snn");
    std::fs::write(
        &small,
        MODEL.replace("input img: [1, 28, 28]", "input img: [1, 14, 14]"),
    )
    .unwrap();
    let o = snnc(&[
        "features",
        small.to_str().unwrap(),
        "--data",
        &data,
        "--out",
        o_,
        "-q",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let e = text(&o.stderr);
    assert!(e.contains("small.snn:4:3"), "{e}");
    assert!(e.contains("gives 784 values per image"), "{e}");
    assert!(!out.join("train_features.npy").exists());
    // `snnc readout` of a folder without features.
    let o = snnc(&["readout", dir.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let e = text(&o.stderr);
    assert!(
        e.contains("train_features.npy") && e.contains("snnc features"),
        "{e}"
    );
}

/// The CI-sized STDP run: `examples/kheradpisheh.snn` trained layer by layer by
/// `snnc train` on the 100-image MNIST subset (one epoch per layer, Spyker's N(0.8, 0.05)
/// start), its features exported by `snnc features --any` and scored by the linear readout:
/// far above chance (10 classes; measured 56% with two and four epochs).
#[test]
fn stdp_trained_kheradpisheh_features_beat_chance() {
    let dir = scratch("kheradpisheh");
    let run = dir.join("run");
    let data = format!("data=mnist(\"{}\")", mnist_dir().display());
    let local = "local=[layer(c1, epochs = 1, init = normal(0.8, 0.05)), \
                 layer(c2, epochs = 1, init = normal(0.8, 0.05))]";
    let o = snnc(&[
        "train",
        "examples/kheradpisheh.snn",
        "--set",
        &data,
        "--set",
        "batch=10",
        "--set",
        local,
        "-o",
        run.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let out = dir.join("features");
    let weights = run.join("weights.safetensors");
    let data = format!("mnist({})", mnist_dir().display());
    let o = snnc(&[
        "features",
        "examples/kheradpisheh.snn",
        "--weights",
        weights.to_str().unwrap(),
        "--data",
        &data,
        "--any",
        "--out",
        out.to_str().unwrap(),
        "--no-calibrate",
        "-q",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let (train, test) = readout::load_dir(&out).unwrap();
    assert_eq!(
        train.features(),
        150 * 9 * 9,
        "Kheradpisheh's 12150 features"
    );
    let r = readout::train(&train, &test, &opts(), |_, _, _| {}).unwrap();
    println!("STDP-trained Kheradpisheh features: {r:?}");
    assert!(r.test_accuracy >= 0.3, "{r:?}");
}
