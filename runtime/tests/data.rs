//! Datasets: Yin-Yang against the reference generator's test vectors, MNIST / Fashion-MNIST
//! from the 100-sample subsets in `tests/data/` (made by scripts/make-data-subsets.py from
//! the files scripts/fetch-data.sh fetches), every IDX error path, NPY datasets, batching.

use sha2::{Digest, Sha256};
use snn_runtime::data::{idx, mnist, yinyang, Batcher, Dataset, ImageSequence};
use snn_runtime::io::npy::write_npy;
use snn_runtime::Tensor;
use std::io::Write;
use std::path::{Path, PathBuf};

fn hex(d: impl AsRef<[u8]>) -> String {
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn digest(raw: &[(f64, f64, u8)]) -> String {
    let mut h = Sha256::new();
    for &(x, y, l) in raw {
        h.update(x.to_le_bytes());
        h.update(y.to_le_bytes());
        h.update([l]);
    }
    hex(h.finalize())
}

/// `tests/data/<name>` at the repository root.
fn subset_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("tests")
        .join("data")
        .join(name)
}

/// A fresh empty directory for one test.
fn temp_dir(test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("snn-data-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// sha256 over the pixels turned back into bytes (`x * 255`, which is exact after rounding).
fn pixel_sha(d: &Dataset) -> (u64, String) {
    let bytes: Vec<u8> = d.x.iter().map(|&v| (v * 255.0).round() as u8).collect();
    let sum = bytes.iter().map(|&b| b as u64).sum();
    (sum, hex(Sha256::digest(&bytes)))
}

#[test]
fn yinyang_standard_splits_are_bit_exact() {
    let mut rng = yinyang::Mt19937::new(42);
    assert_eq!(
        [rng.next_u32(), rng.next_u32()],
        [1_608_637_542, 3_421_126_067]
    );
    for (seed, size, counts, sha) in [
        (
            42,
            5000,
            [1681, 1702, 1617],
            "a0c90f4fecff259315a24286ab2450b8593d69c78645a34c82097012f18f789e",
        ),
        (
            41,
            1000,
            [316, 336, 348],
            "247ba563d59ea19f33a868408d926c653d2dbe3ebbf13b590d4d062340a27b7b",
        ),
        (
            40,
            1000,
            [350, 316, 334],
            "529bca2166f727e07dc797e953693414ccc89b5055598b37e66b28300ba46ec2",
        ),
    ] {
        let (raw, draws) = yinyang::generate_raw(size, seed, 0.1, 0.5);
        let mut c = [0; 3];
        raw.iter().for_each(|r| c[r.2 as usize] += 1);
        assert_eq!(c, counts, "seed {seed}");
        assert_eq!(digest(&raw), sha, "seed {seed}");
        if seed == 42 {
            assert_eq!(draws, 33_729);
            assert_eq!(
                (raw[0].0, raw[0].1, raw[0].2),
                (0.680_307_538_587_779_7, 0.450_499_251_969_543, 2)
            );
        }
    }
}

#[test]
fn yinyang_datasets_have_the_reference_features_and_splits() {
    for (split, n, counts) in [
        ("train", 5000, [1681, 1702, 1617]),
        ("validation", 1000, [316, 336, 348]),
        ("test", 1000, [350, 316, 334]),
    ] {
        let d = yinyang::standard(split).unwrap();
        assert_eq!((d.len(), d.features(), d.classes), (n, 4, 3), "{split}");
        assert_eq!(d.shape, vec![4]);
        assert_eq!(d.class_counts(), counts.to_vec(), "{split}");
    }
    // Features [x, y, 1-x, 1-y]: computed in f64, then rounded to f32.
    let (raw, _) = yinyang::generate_raw(5000, 42, 0.1, 0.5);
    let d = yinyang::generate(5000, 42, 0.1, 0.5);
    for (i, &(x, y, l)) in raw.iter().enumerate() {
        let want = [x as f32, y as f32, (1.0 - x) as f32, (1.0 - y) as f32];
        assert_eq!(d.sample(i), &want, "sample {i}");
        assert_eq!(d.y[i], l as u32);
    }
    let e = yinyang::standard("valid").unwrap_err().to_string();
    assert!(e.contains("`valid`") && e.contains("validation"), "{e}");
}

#[test]
#[should_panic(expected = "r_small < r_big / 2")]
fn yinyang_refuses_radii_that_would_never_finish() {
    yinyang::generate(10, 1, 0.0, 0.5);
}

#[test]
fn mnist_subset_loads() {
    let dir = subset_dir("mnist-100");
    let d = mnist::load(&dir, false).unwrap();
    assert_eq!(
        (d.len(), d.shape.as_slice(), d.classes),
        (100, &[1, 28, 28][..], 10)
    );
    assert_eq!(d.y[..10], [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]);
    assert!(d.x.iter().all(|&v| (0.0..=1.0).contains(&v)));
    assert_eq!(
        pixel_sha(&d),
        (
            2_396_707,
            "8a004a2f81a80f4866259cbb77cf37af89315036b298b250b4d45c24aaa92048".to_string()
        )
    );
    let t = mnist::load(&dir, true).unwrap();
    assert_eq!(t.y[..10], [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]);
    assert_eq!(
        pixel_sha(&t),
        (
            2_530_887,
            "c8d7b3ac57a59fa463cbbcdc21a53485e2990f12ca46d0fef62dd86cadfd67a3".to_string()
        )
    );
    // The old entry point is the same loader.
    assert_eq!(idx::mnist(&dir, false).unwrap(), d);
}

#[test]
fn fashion_subset_loads() {
    let dir = subset_dir("fashion-100");
    let d = mnist::load(&dir, false).unwrap();
    assert_eq!((d.len(), d.features(), d.classes), (100, 784, 10));
    assert_eq!(d.y[..10], [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]);
    assert_eq!(
        pixel_sha(&d),
        (
            5_854_180,
            "d8c9b85550f6c8fa33478e27cb3fe70fd34b4cc96e6ab91b911853b51fb3d527".to_string()
        )
    );
    let t = mnist::load(&dir, true).unwrap();
    assert_eq!(t.y[..5], [9, 0, 0, 3, 0]);
    assert_eq!(
        pixel_sha(&t),
        (
            5_688_570,
            "9fd5e05238929f78618002dd971c29d7154e418c5e6c5159dcbc48bead93a90f".to_string()
        )
    );
}

/// Raw files, the sdist's dotted names, and gzip detected by content rather than name.
#[test]
fn idx_files_are_found_under_every_naming() {
    let want = mnist::load(&subset_dir("mnist-100"), false).unwrap();
    let src = subset_dir("mnist-100");
    let images = idx::read_bytes(&src.join("t10k-images-idx3-ubyte.gz")).unwrap();
    let labels = idx::read_bytes(&src.join("t10k-labels-idx1-ubyte.gz")).unwrap();
    let dir = temp_dir("naming");
    std::fs::write(dir.join("t10k-images.idx3-ubyte"), &images).unwrap();
    std::fs::write(dir.join("t10k-labels.idx1-ubyte"), &labels).unwrap();
    let d = mnist::load(&dir, false).unwrap();
    assert_eq!((d.x, d.y), (want.x.clone(), want.y.clone()));
    // Gzipped data under a name without .gz, raw data under a .gz name.
    std::fs::remove_file(dir.join("t10k-images.idx3-ubyte")).unwrap();
    std::fs::remove_file(dir.join("t10k-labels.idx1-ubyte")).unwrap();
    std::fs::write(dir.join("t10k-images-idx3-ubyte"), gz(&images)).unwrap();
    std::fs::write(dir.join("t10k-labels-idx1-ubyte.gz"), &labels).unwrap();
    let d = mnist::load(&dir, false).unwrap();
    assert_eq!((d.x, d.y), (want.x, want.y));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Every failure names the file (or the paths tried) and carries the fetch hint.
#[test]
fn idx_errors_name_the_file_and_carry_the_hint() {
    let hint = "run scripts/fetch-data.sh";
    // A directory that does not exist.
    let e = mnist::load(Path::new("no/such/dir"), false)
        .unwrap_err()
        .to_string();
    for want in [
        "no/such/dir/t10k-images-idx3-ubyte",
        "no/such/dir/t10k-images.idx3-ubyte.gz",
        "does not exist",
        "test images",
        "`data = ...`",
        hint,
    ] {
        assert!(e.contains(want), "missing `{want}` in: {e}");
    }

    let src = subset_dir("mnist-100");
    let images = idx::read_bytes(&src.join("t10k-images-idx3-ubyte.gz")).unwrap();
    let labels = idx::read_bytes(&src.join("t10k-labels-idx1-ubyte.gz")).unwrap();
    let dir = temp_dir("errors");
    let img = dir.join("t10k-images-idx3-ubyte.gz");
    let lab = dir.join("t10k-labels-idx1-ubyte.gz");
    let check = |what: &str, file: &Path, wants: &[&str]| {
        let e = mnist::load(&dir, false).unwrap_err().to_string();
        assert!(e.contains(&file.display().to_string()), "{what}: {e}");
        assert!(e.contains(hint), "{what}: {e}");
        for w in wants {
            assert!(e.contains(w), "{what}: missing `{w}` in: {e}");
        }
    };

    // The directory exists, the label file does not.
    std::fs::write(&img, gz(&images)).unwrap();
    check(
        "missing labels",
        &dir.join("t10k-labels-idx1-ubyte"),
        &["test labels", "t10k-labels.idx1-ubyte.gz", "`data = ...`"],
    );
    // Truncated image data (inside a valid gzip stream).
    std::fs::write(&lab, gz(&labels)).unwrap();
    std::fs::write(&img, gz(&images[..images.len() - 100])).unwrap();
    check("truncated", &img, &["truncated", "78400 bytes of data"]);
    // A truncated gzip stream, and bytes that are not gzip after the magic.
    let whole = gz(&images);
    std::fs::write(&img, &whole[..whole.len() / 2]).unwrap();
    check("cut gzip", &img, &["gzip"]);
    std::fs::write(&img, [0x1f, 0x8b, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]).unwrap();
    check("bad gzip", &img, &["bad gzip"]);
    // Bad magic: the label file where the images should be.
    std::fs::write(&img, gz(&labels)).unwrap();
    check("bad magic", &img, &["bad magic 0x00000801", "swapped"]);
    std::fs::write(&img, b"<html>not found</html>").unwrap();
    check("html", &img, &["bad magic"]);
    // 99 labels for 100 images.
    std::fs::write(&img, gz(&images)).unwrap();
    let mut short = labels[..8 + 99].to_vec();
    short[4..8].copy_from_slice(&99u32.to_be_bytes());
    std::fs::write(&lab, gz(&short)).unwrap();
    check(
        "count mismatch",
        &lab,
        &["99 labels", "100 images", "t10k-images-idx3-ubyte.gz"],
    );
    // A label that is not a digit class.
    let mut bad = labels.clone();
    bad[8 + 5] = 10;
    std::fs::write(&lab, gz(&bad)).unwrap();
    check("bad label", &lab, &["label 5 is 10"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A minimal `.npy` v1.0 file (for dtypes `write_npy` does not write).
fn npy_bytes(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
    let mut dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    let pad = (64 - (10 + dict.len() + 1) % 64) % 64;
    dict.push_str(&" ".repeat(pad));
    dict.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((dict.len() as u16).to_le_bytes());
    out.extend(dict.as_bytes());
    out.extend(data);
    out
}

#[test]
fn npy_datasets_take_integer_or_float_labels() {
    let dir = temp_dir("npy");
    let xp = dir.join("x.npy");
    let x = Tensor {
        shape: vec![3, 2, 2],
        data: (0..12).map(|v| v as f32).collect(),
    };
    write_npy(&xp, &x).unwrap();
    let yi = dir.join("y_int.npy");
    let ints: Vec<u8> = [2i64, 0, 1].iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(&yi, npy_bytes("<i8", "(3,)", &ints)).unwrap();
    let d = Dataset::from_npy(&xp, &yi).unwrap();
    assert_eq!(
        (d.len(), d.shape.as_slice(), d.classes),
        (3, &[2, 2][..], 3)
    );
    assert_eq!(
        (d.y.as_slice(), d.sample(2)),
        (&[2, 0, 1][..], &[8.0, 9.0, 10.0, 11.0][..])
    );
    let yf = dir.join("y_f.npy");
    write_npy(
        &yf,
        &Tensor {
            shape: vec![3, 1],
            data: vec![2.0, 0.0, 1.0],
        },
    )
    .unwrap();
    assert_eq!(Dataset::from_npy(&xp, &yf).unwrap(), d);
    // Errors: fractional label, wrong count, missing file.
    write_npy(
        &yf,
        &Tensor {
            shape: vec![3],
            data: vec![2.0, 0.5, 1.0],
        },
    )
    .unwrap();
    let e = Dataset::from_npy(&xp, &yf).unwrap_err().to_string();
    assert!(e.contains("y_f.npy") && e.contains("label 1 is 0.5"), "{e}");
    write_npy(
        &yf,
        &Tensor {
            shape: vec![2],
            data: vec![0.0, 1.0],
        },
    )
    .unwrap();
    let e = Dataset::from_npy(&xp, &yf).unwrap_err().to_string();
    assert!(e.contains("[3, 2, 2]") && e.contains("[2]"), "{e}");
    let e = Dataset::from_npy(&dir.join("nope.npy"), &yf)
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope.npy"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn batches_gather_real_images() {
    let d = mnist::load(&subset_dir("mnist-100"), false).unwrap();
    let b = Batcher {
        batch: 32,
        shuffle: true,
        seed: 1,
        drop_last: false,
    };
    let epoch: Vec<Vec<usize>> = b.iter(d.len(), 0).collect();
    assert_eq!(
        epoch.iter().map(Vec::len).collect::<Vec<_>>(),
        [32, 32, 32, 4]
    );
    let batch = d.batch(&epoch[0]);
    assert_eq!(batch.shape, vec![32, 1, 28, 28]);
    assert_eq!(batch.x.len(), 32 * 784);
    for (k, &i) in epoch[0].iter().enumerate() {
        assert_eq!(&batch.x[k * 784..(k + 1) * 784], d.sample(i));
        assert_eq!(batch.y[k], d.y[i]);
    }
    let (train, val) = d.split_off_validation(10, 5);
    assert_eq!((train.len(), val.len()), (90, 10));
    assert_eq!(train.class_counts().iter().sum::<usize>(), 90);
}

/// `mnist(.., sequence = rows | columns)`: each image as `T` steps, and batches of them
/// time-major as a `[T, 28]` input takes them. The values are the image's own, bit for bit.
#[test]
fn images_as_row_and_column_sequences() {
    let d = mnist::load(&subset_dir("mnist-100"), false).unwrap();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let rows = d.image_sequence(ImageSequence::Rows).unwrap();
    assert_eq!((rows.shape.as_slice(), rows.len()), (&[28, 28][..], 100));
    assert_eq!((rows.y.as_slice(), rows.classes), (d.y.as_slice(), 10));
    assert_eq!(rows.name, format!("{} (rows)", d.name));
    let cols = d.image_sequence(ImageSequence::Columns).unwrap();
    assert_eq!(cols.shape, vec![28, 28]);
    for i in [0, 7, 99] {
        let img = d.sample(i);
        for r in 0..28 {
            // Step r of the row sequence is row r of the image.
            assert_eq!(
                bits(&rows.sample(i)[r * 28..(r + 1) * 28]),
                bits(&img[r * 28..(r + 1) * 28])
            );
            for c in 0..28 {
                // Step c of the column sequence is column c, top to bottom.
                assert_eq!(
                    cols.sample(i)[c * 28 + r].to_bits(),
                    img[r * 28 + c].to_bits()
                );
            }
        }
    }
    // A batch is [T, B, 28]: step t of sample idx[b] at [t, b].
    let idx = [5, 0, 99, 5];
    let b = rows.sequence_batch(&idx);
    assert_eq!(b.shape, vec![28, 4, 28]);
    assert_eq!(b.y, vec![d.y[5], d.y[0], d.y[99], d.y[5]]);
    for t in 0..28 {
        for (k, &i) in idx.iter().enumerate() {
            let at = (t * idx.len() + k) * 28;
            assert_eq!(
                bits(&b.x[at..at + 28]),
                bits(&d.sample(i)[t * 28..(t + 1) * 28])
            );
        }
    }
    assert_eq!(rows.sequence_batch(&[]).x.len(), 0);
    // Only single-channel images cut into steps.
    let rgb = Dataset {
        name: "rgb".into(),
        x: vec![0.0; 12],
        y: vec![0],
        shape: vec![3, 2, 2],
        classes: 1,
    };
    let e = rgb
        .image_sequence(ImageSequence::Rows)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("[3, 2, 2]") && e.contains("sequence = rows"),
        "{e}"
    );
}

/// The full datasets, when scripts/fetch-data.sh has been run (skipped otherwise): sizes,
/// class balance, and that the checked-in subsets are their first 100 samples.
#[test]
fn full_datasets_when_fetched() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for (full, sub, train_counts) in [
        (
            "data/mnist",
            "mnist-100",
            vec![5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
        ),
        ("data/fashion-mnist", "fashion-100", vec![6000; 10]),
    ] {
        let dir = root.join(full);
        if !dir.is_dir() {
            eprintln!("skipped: {} not fetched", dir.display());
            continue;
        }
        let train = mnist::load(&dir, true).unwrap();
        let test = mnist::load(&dir, false).unwrap();
        assert_eq!((train.len(), test.len()), (60_000, 10_000));
        assert_eq!(train.class_counts(), train_counts, "{full}");
        for (d, is_train) in [(&train, true), (&test, false)] {
            let s = mnist::load(&subset_dir(sub), is_train).unwrap();
            let head = d.subset(0..100);
            assert_eq!((head.x, head.y), (s.x, s.y), "{full} vs {sub}");
        }
    }
}
