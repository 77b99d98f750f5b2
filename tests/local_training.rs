//! Local learning in `snnc train` (issue 19; `local = [layer(..), ..]` in the train block,
//! docs/training.md "Local learning"): Spyker's learning-rate schedule and R-STDP's adaptive
//! rates bit for bit against tests/vectors/spyker/schedule.json and rstdp.json
//! `rate_scaling`; a CI-sized greedy, layer-wise run of a small Kheradpisheh-like network
//! with an R-STDP decision layer through the CLI (metrics rows, the convergence measure
//! falling, the rates in effect); a stopped and resumed run equal to a straight one; the
//! located errors of bad schedules.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::spyker::vectors;
use snn_runtime::train::local::{RateGrowth, RstdpRates};
use snnc::diag::ErrorKind;
use snnc::{Compiler, Options};

/// A Python `float.hex()` string as the f64 it names.
fn from_hex(s: &str) -> f64 {
    let (sign, rest) = match s.strip_prefix('-') {
        Some(r) => (-1.0, r),
        None => (1.0, s),
    };
    let rest = rest.strip_prefix("0x").expect("0x");
    let (mant, exp) = rest.split_once('p').expect("p");
    let (int, frac) = mant.split_once('.').unwrap_or((mant, ""));
    let digits = u64::from_str_radix(&format!("{int}{frac}"), 16).unwrap();
    let exp: i32 = exp.parse().unwrap();
    sign * digits as f64 * 2f64.powi(exp - 4 * frac.len() as i32)
}

fn bits_eq(got: f64, want: f64, what: &str) {
    assert_eq!(
        got.to_bits(),
        want.to_bits(),
        "{what}: {got:e} vs Spyker {want:e}"
    );
}

/// Both tables of schedule.json (Kheradpisheh / Mozafari: x2 per >500 images, cap 0.15;
/// Rezghi: x1.5 per 2000 images, cap 1.5): the rates in effect from each image index, in
/// f64 bit for bit, as `RateGrowth::after_batch` gives them batch after batch.
#[test]
fn rate_growth_matches_spykers_schedule_bit_for_bit() {
    let v = vectors("schedule");
    for (name, table) in v["tables"].as_object().unwrap() {
        let n = |k: &str| table[k].as_f64().unwrap();
        let batch = n("batch") as usize;
        let growth = RateGrowth {
            factor: n("mult"),
            every: n("every") as usize,
            cap: n("limit"),
        };
        let start = &table["start"];
        let mut rates = (start[0].as_f64().unwrap(), start[1].as_f64().unwrap());
        let mut count = 0;
        let mut got = vec![(0usize, rates)];
        for first in (0..n("images") as usize).step_by(batch) {
            if growth.after_batch(&mut count, batch, &mut rates) {
                got.push((first + batch, rates));
            }
        }
        let rows = table["rows"].as_array().unwrap();
        assert!(got.len() >= rows.len(), "{name}: {} changes", got.len());
        for (row, (from, (pos, neg))) in rows.iter().zip(&got) {
            assert_eq!(
                row["from_image"].as_u64().unwrap() as usize,
                *from,
                "{name}"
            );
            let hex = &row["hex"];
            bits_eq(*pos, from_hex(hex[0].as_str().unwrap()), name);
            bits_eq(*neg, from_hex(hex[1].as_str().unwrap()), name);
        }
        // At the cap the rates stay.
        let last = got[rows.len() - 1].1;
        assert!(got[rows.len()..].iter().all(|(_, r)| *r == last), "{name}");
        println!("{name}: {} rate changes bit for bit", rows.len());
    }
}

/// rstdp.json `rate_scaling`: after each chunk of 1024 decisions, reward = base * wrong /
/// total and punish = base * correct / total (silent samples in the total only), from the
/// base rates each time; fed in the example's batches of 64.
#[test]
fn rstdp_rates_match_spykers_scaling_bit_for_bit() {
    let v = &vectors("rstdp")["rate_scaling"];
    let chunk = v["chunk"].as_u64().unwrap() as usize;
    let base: Vec<f64> = (v["base"].as_array().unwrap().iter())
        .map(|x| x.as_f64().unwrap())
        .collect();
    let mut r = RstdpRates::new([base[0], base[1], base[2], base[3]], chunk);
    for (i, c) in v["chunks"].as_array().unwrap().iter().enumerate() {
        let n = |k: &str| c[k].as_u64().unwrap() as usize;
        // The chunk's decisions in batches of 64: right ones first, then wrong, then silent.
        let mut left = [n("correct"), n("wrong"), n("silent")];
        let mut rates = None;
        for _ in 0..chunk / 64 {
            let mut take = [0usize; 3];
            let mut room = 64;
            for (t, l) in take.iter_mut().zip(left.iter_mut()) {
                *t = (*l).min(room);
                *l -= *t;
                room -= *t;
            }
            assert!(rates.is_none(), "chunk {i} closed early");
            rates = r.after_batch(take[0], take[1], take[2]);
        }
        let rates = rates.unwrap_or_else(|| panic!("chunk {i} did not close"));
        for (k, hex) in c["hex"].as_array().unwrap().iter().enumerate() {
            bits_eq(
                rates[k],
                from_hex(hex.as_str().unwrap()),
                &format!("chunk {i} rate {k}"),
            );
        }
    }
}

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

fn snnc_in(dir: &Path, args: &[&str]) -> Output {
    let o = Command::new(snnc_bin())
        .args(args)
        .current_dir(dir)
        .env("SNNC_CACHE_DIR", common::cache_dir())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "snnc {args:?}:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// An empty folder under the system's temporary directory, one per checkout.
fn scratch(name: &str) -> PathBuf {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    common::root().hash(&mut h);
    let d = std::env::temp_dir()
        .join(format!("snnc-local-test-{:016x}", h.finish()))
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Kheradpisheh's two STDP layers at toy size (4 and 8 maps) and Mozafari's R-STDP
/// decision layer (20 maps, 2 per class) on MNIST's first 100 images.
const MODEL: &str = r#"model kh_small {
  T = 15
  batch = 10
  input img: [1, 28, 28]
  input r: [1]
  f = dog(img, size = 7, sigmas = [1.0, 2.0, 2.0, 1.0], threshold = 0.01)
  s = latency(f, sort = true)
  c1 = conv2d(s, 4, kernel = 5, padding = 2, bias = false, post = n1,
              synapse = spyker_stdp(), gate = wta(h1, k = 5, radius = 2, threshold = 10.0))
  h1 = inhibit(c1, threshold = 10.0)
  n1 = FireOnce(h1, v_threshold = 10.0)
  s1 = FireOnce(c1, v_threshold = 10.0)
  a = inhibit(maxpool2d(s1, 2, padding = 1))
  c2 = conv2d(a, 8, kernel = 3, padding = 1, bias = false, post = n2,
              synapse = spyker_stdp(), gate = wta(h2, k = 8, radius = 1, threshold = 1.0))
  h2 = inhibit(c2, threshold = 1.0)
  n2 = FireOnce(h2, v_threshold = 1.0)
  s2 = FireOnce(c2, v_threshold = 1.0)
  c3 = conv2d(maxpool2d(s2, 3), 20, kernel = 5, bias = false, reward = r, gate = g3,
              synapse = rstdp())
  d3 = infinite(c3)
  g3 = wta(d3, k = 1)
  o3 = FireOnce(d3)
  output spikes(o3)
  train {
    data = mnist("DATA")
    batch = 10
    local = SCHEDULE
  }
}
"#;

/// The schedule's stages with these epochs (0 leaves a stage and those after it out).
fn schedule(c1: usize, c2: usize, c3: usize) -> String {
    let stages = [
        format!("layer(c1, epochs = {c1}, grow = 2.0, every = 50, cap = 0.15)"),
        format!("layer(c2, epochs = {c2})"),
        format!("layer(c3, epochs = {c3}, decision = g3, classes = 10, chunk = 50)"),
    ];
    let n = [c1, c2, c3].iter().take_while(|&&e| e > 0).count();
    format!("[{}]", stages[..n].join(", "))
}

fn write_model(dir: &Path) -> PathBuf {
    let data = common::root().join("tests/data/mnist-100");
    let path = dir.join("kh_small.snn");
    let src = MODEL
        .replace("DATA", data.to_str().unwrap())
        .replace("SCHEDULE", &schedule(3, 2, 2));
    std::fs::write(&path, src).unwrap();
    path
}

/// `metrics.csv` as rows of named fields.
fn metrics(path: &Path) -> Vec<std::collections::HashMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let head: Vec<&str> = lines.next().unwrap().split(',').collect();
    lines
        .map(|l| {
            head.iter()
                .zip(l.split(','))
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

fn num(row: &std::collections::HashMap<String, String>, k: &str) -> f64 {
    row[k]
        .parse()
        .unwrap_or_else(|_| panic!("`{k}` = `{}`", row[k]))
}

/// Three stages, greedy and layer-wise: layer 1 with the rate growth, layer 2 at its base
/// rates, layer 3 by R-STDP. A row per epoch; each STDP layer's convergence falls from
/// about 0.25 (N(0.5, 0.02) weights) toward 0 while it learns, and stays while frozen; the
/// rates in effect are the schedule's, bit for bit.
#[test]
fn greedy_layer_wise_training_through_the_cli() {
    let d = scratch("train");
    let model = write_model(&d);
    let o = snnc_in(&d, &["train", model.to_str().unwrap(), "-o", "out", "-q"]);
    let out = d.join("out");
    for f in [
        "weights.safetensors",
        "checkpoint.safetensors",
        "training.svg",
        "filters-c1.svg",
        "filters-c2.svg",
        "filters-c3.svg",
    ] {
        assert!(out.join(f).is_file(), "{f}");
    }
    let tiles = std::fs::read_to_string(out.join("filters-c2.svg")).unwrap();
    assert_eq!(tiles.matches("<title>").count(), 8, "one tile per c2 map");
    let rows = metrics(&out.join("metrics.csv"));
    let layers: Vec<&str> = rows.iter().map(|r| r["layer"].as_str()).collect();
    assert_eq!(layers, ["c1", "c1", "c1", "c2", "c2", "c3", "c3"]);
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(num(r, "epoch") as usize, i + 1);
        let stage_epoch = num(r, "stage_epoch") as usize;
        assert_eq!(num(r, "images") as usize, 100 * stage_epoch, "row {i}");
    }
    let conv = |layer: &str| -> Vec<f64> {
        (rows.iter())
            .filter(|r| r["layer"] == layer)
            .map(|r| num(r, "convergence"))
            .collect()
    };
    for layer in ["c1", "c2"] {
        let c = conv(layer);
        assert!(
            c[0] < 0.25 && c[0] > 0.2,
            "{layer}: C starts near 0.25: {c:?}"
        );
        assert!(c.windows(2).all(|w| w[1] < w[0]), "{layer}: C falls: {c:?}");
    }
    let c1 = conv("c1");
    assert!(
        c1[2] < 0.05,
        "layer 1 converges with the growing rates: {c1:?}"
    );
    // The rates in effect after each epoch: 10 batches of 10 per epoch, x2 when the count
    // passes 50 images (remainder kept), a_plus capped at 0.15.
    let growth = RateGrowth {
        factor: 2.0,
        every: 50,
        cap: 0.15,
    };
    let (mut count, mut rates) = (0, (0.004, -0.003));
    for r in rows.iter().filter(|r| r["layer"] == "c1") {
        for _ in 0..10 {
            growth.after_batch(&mut count, 10, &mut rates);
        }
        bits_eq(num(r, "plus"), rates.0, "a_plus");
        bits_eq(num(r, "minus"), rates.1, "a_minus");
    }
    for r in rows.iter().filter(|r| r["layer"] == "c2") {
        assert_eq!((num(r, "plus"), num(r, "minus")), (0.004, -0.003));
        assert!(r["accuracy"].is_empty());
    }
    for r in rows.iter().filter(|r| r["layer"] == "c3") {
        let (acc, silent) = (num(r, "accuracy"), num(r, "silent"));
        assert!((0.0..=1.0).contains(&acc) && (0.0..=1.0).contains(&silent));
        // Rewards scale with the errors and punishments with the hits of the last chunk:
        // both within the base rates, the pairs in the base ratio.
        let (rp, rm, pp, pm) = (
            num(r, "plus"),
            num(r, "minus"),
            num(r, "punish_plus"),
            num(r, "punish_minus"),
        );
        assert!((0.0..=0.004).contains(&rp) && (-0.004..=0.0).contains(&pp));
        assert!((rm / rp + 0.75).abs() < 1e-12 && (pm / pp + 0.125).abs() < 1e-12);
    }
    // Each epoch prints every plastic layer's convergence: layer 1's stays at its last
    // value once its stage is over (frozen), layer 3's does not move before its stage.
    let err = String::from_utf8_lossy(&o.stderr);
    let printed = |layer: &str| -> Vec<String> {
        (err.lines())
            .filter(|l| l.starts_with("stage "))
            .map(|l| {
                let c = l.split("C = ").nth(1).expect("the convergence");
                let at = c.find(&format!("{layer} ")).expect("the layer's C") + layer.len() + 1;
                c[at..].split([',', ' ']).next().unwrap().to_string()
            })
            .collect()
    };
    let c1 = printed("c1");
    assert_eq!(c1.len(), 7);
    assert!(c1[2..].iter().all(|c| *c == c1[2]), "c1 frozen: {c1:?}");
    let c3 = printed("c3");
    assert!(c3[..5].iter().all(|c| *c == c3[0]), "c3 waits: {c3:?}");
}

/// A run stopped mid-stage (layer 1 after one epoch), resumed into a schedule that stops in
/// the R-STDP stage, and resumed again to the end, ends with the same weights, bit for bit,
/// and the same metrics (but the seconds) as the straight run: the checkpoint carries the
/// stage, the epoch, the rate growth's count, the open R-STDP chunk and every rule
/// parameter in f64.
#[test]
fn resumed_runs_match_a_straight_run() {
    let d = scratch("resume");
    let model = write_model(&d);
    let m = model.to_str().unwrap();
    snnc_in(&d, &["train", m, "-o", "straight", "-q"]);
    let set = |s: String| format!("local={s}");
    snnc_in(
        &d,
        &[
            "train",
            m,
            "-o",
            "stopped",
            "-q",
            "--set",
            &set(schedule(1, 0, 0)),
        ],
    );
    let ck = "stopped/checkpoint.safetensors";
    snnc_in(
        &d,
        &[
            "train",
            m,
            "--resume",
            ck,
            "-q",
            "--set",
            &set(schedule(3, 2, 1)),
        ],
    );
    let o = snnc_in(&d, &["train", m, "--resume", ck, "-q"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("resuming stage 3 (c3) after epoch 1"), "{err}");
    let read = |run: &str| {
        snn_runtime::io::weights::load(d.join(run).join("weights.safetensors")).unwrap()
    };
    let (a, b) = (read("straight"), read("stopped"));
    assert_eq!(a.len(), b.len());
    for ((na, _, wa), (nb, _, wb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        let same = wa.iter().zip(wb).all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(same, "`{na}` differs after the resumed run");
    }
    let strip = |run: &str| -> Vec<String> {
        metrics(&d.join(run).join("metrics.csv"))
            .into_iter()
            .map(|mut r| {
                r.remove("seconds");
                let mut v: Vec<_> = r.into_iter().collect();
                v.sort();
                format!("{v:?}")
            })
            .collect()
    };
    assert_eq!(strip("straight"), strip("stopped"));
}

/// Compile with `train` on or off; the error's kind, `file:line:col` and message.
fn error_of(src: &str, train: bool) -> (ErrorKind, String, String) {
    let mut c = Compiler::new(Options {
        train,
        ..Options::default()
    });
    let parsed = c.parse_str("test.snn", src).unwrap();
    let Err(d) = c.compile(&parsed) else {
        panic!("expected an error for:\n{src}")
    };
    assert!(d.hint.is_some(), "`{}` has no hint", d.message);
    let at = d.span.map(|s| c.sources.location(s)).unwrap_or_default();
    (d.kind, at, d.message)
}

fn with_schedule(local: &str) -> String {
    MODEL
        .replace("DATA", "data/mnist")
        .replace("SCHEDULE", local)
}

#[test]
fn bad_schedules_are_located_errors() {
    let cases: [(&str, ErrorKind, &str, &str); 9] = [
        (
            "[layer(c9, epochs = 2)]",
            ErrorKind::UnknownName,
            "test.snn:28:20",
            "unknown layer `c9` in `local`",
        ),
        (
            "[layer(f, epochs = 2)]",
            ErrorKind::BadValue,
            "test.snn:28:20",
            "`f` has no `synapse = ...`",
        ),
        (
            "[layer(c3, epochs = 2, decision = d3)]",
            ErrorKind::BadValue,
            "test.snn:28:47",
            "`d3` is not a `wta(..)` gate",
        ),
        (
            "[layer(c3, epochs = 2)]",
            ErrorKind::BadValue,
            "test.snn:28:14",
            "its stage needs the decision",
        ),
        (
            "[layer(c1, decision = g3)]",
            ErrorKind::BadValue,
            "test.snn:28:35",
            "`g3` is not the gate of `c1`",
        ),
        (
            "[layer(c3, decision = g3, classes = 30)]",
            ErrorKind::BadValue,
            "test.snn:28:35",
            "`g3` has 20 maps for 30 classes",
        ),
        (
            "[layer(c1), layer(c1)]",
            ErrorKind::Duplicate,
            "test.snn:28:31",
            "layer `c1` has two stages",
        ),
        (
            "[layer(c1, grow = 2.0)]",
            ErrorKind::BadValue,
            "test.snn:28:31",
            "needs `grow` (the factor) and `every`",
        ),
        (
            "[layer(c3, decision = g3, grow = 2.0, every = 10)]",
            ErrorKind::BadValue,
            "test.snn:28:35",
            "it has no `grow`",
        ),
    ];
    for (local, kind, at, msg) in cases {
        let (k, a, m) = error_of(&with_schedule(local), false);
        assert_eq!((k, a.as_str()), (kind, at), "{local}: {m}");
        assert!(m.contains(msg), "{local}: `{m}` lacks `{msg}`");
    }
    // A loss and a local schedule in one block.
    let both = with_schedule("[layer(c1)]").replace(
        "    batch = 10\n",
        "    batch = 10\n    loss = cross_entropy(counts(o3))\n",
    );
    let (k, a, m) = error_of(&both, false);
    assert_eq!(
        (k, a.as_str()),
        (ErrorKind::BadValue, "test.snn:28:5"),
        "{m}"
    );
    assert!(
        m.contains("`loss` is a setting of gradient training"),
        "{m}"
    );
    // Gradient training of plastic projections, and of a local block, is refused.
    let gradient = with_schedule("[layer(c1)]").replace(
        "    local = [layer(c1)]\n",
        "    loss = cross_entropy(counts(o3))\n",
    );
    let (k, a, m) = error_of(&gradient, true);
    assert_eq!(
        (k, a.as_str()),
        (ErrorKind::BadValue, "test.snn:9:25"),
        "{m}"
    );
    assert!(
        m.contains("gradient training of a model with plastic projections"),
        "{m}"
    );
    let (_, a, m) = error_of(&with_schedule("[layer(c1)]"), true);
    assert_eq!(a, "test.snn:28:14", "{m}");
    assert!(m.contains("learns by local rules"), "{m}");
}

/// The same schedule on the CUDA device through the host shim (`Session::learn_rewarded`'s
/// download of the gate and upload of the rewards included) gives the CPU's weights and
/// metrics, bit for bit.
#[test]
fn the_cuda_host_shim_learns_as_the_cpu_does() {
    if snn_runtime::cuda::shim::find_cxx().is_none() {
        println!("SKIP cuda-shim: no C++ compiler");
        return;
    }
    let d = scratch("shim");
    let model = write_model(&d);
    let m = model.to_str().unwrap();
    let short = format!("local={}", schedule(1, 1, 1));
    snnc_in(&d, &["train", m, "-o", "cpu", "-q", "--set", &short]);
    let args = [
        "train",
        m,
        "-o",
        "shim",
        "-q",
        "--set",
        &short,
        "--device",
        "cuda-shim",
    ];
    snnc_in(&d, &args);
    let read = |f: &str| std::fs::read(d.join(f)).unwrap();
    assert!(read("cpu/weights.safetensors") == read("shim/weights.safetensors"));
    let rows = |run: &str| -> Vec<String> {
        let text = String::from_utf8(read(&format!("{run}/metrics.csv"))).unwrap();
        // All but the seconds.
        text.lines()
            .map(|l| l.rsplit_once(',').unwrap().0.to_string())
            .collect()
    };
    assert_eq!(rows("cpu"), rows("shim"));
}
