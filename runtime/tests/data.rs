//! Datasets: Yin-Yang against the reference generator's test vectors (../shared/DATASETS.md),
//! IDX parsing and its errors.

use sha2::{Digest, Sha256};
use snn_runtime::data::{idx, yinyang};

fn digest(raw: &[(f64, f64, u8)]) -> String {
    let mut h = Sha256::new();
    for &(x, y, l) in raw {
        h.update(x.to_le_bytes());
        h.update(y.to_le_bytes());
        h.update([l]);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
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
    let d = yinyang::standard("train").unwrap();
    assert_eq!((d.len(), d.features(), d.classes), (5000, 4, 3));
    assert_eq!(d.sample(0)[2], (1.0 - 0.680_307_538_587_779_7f64) as f32);
}

#[test]
fn idx_errors_name_the_file() {
    let dir = std::env::temp_dir().join(format!("snn-idx-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let e = idx::mnist(&dir, false).unwrap_err().to_string();
    assert!(
        e.contains("t10k-images-idx3-ubyte") && e.contains("fetch-data.sh"),
        "{e}"
    );
    // A label file with a wrong magic, then a truncated image file.
    std::fs::write(
        dir.join("t10k-images-idx3-ubyte"),
        [0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2, 1, 2, 3],
    )
    .unwrap();
    std::fs::write(
        dir.join("t10k-labels-idx1-ubyte"),
        [0, 0, 8, 1, 0, 0, 0, 2, 1, 2],
    )
    .unwrap();
    let e = idx::mnist(&dir, false).unwrap_err().to_string();
    assert!(
        e.contains("truncated") && e.contains("t10k-images-idx3-ubyte"),
        "{e}"
    );
    std::fs::write(
        dir.join("t10k-images-idx3-ubyte"),
        [0, 0, 8, 1, 0, 0, 0, 1, 5],
    )
    .unwrap();
    let e = idx::mnist(&dir, false).unwrap_err().to_string();
    assert!(e.contains("bad magic"), "{e}");
    std::fs::write(dir.join("t10k-images-idx3-ubyte"), [0x1f, 0x8b, 1, 2, 3]).unwrap();
    let e = idx::mnist(&dir, false).unwrap_err().to_string();
    assert!(e.contains("gzip"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
