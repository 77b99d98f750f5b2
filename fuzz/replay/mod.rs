//! The stable-Rust side of fuzzing, shared by `compiler/tests/fuzz_replay.rs` and
//! `runtime/tests/fuzz_replay.rs` (each includes this file with `#[path]`): replay every
//! file of a target's corpus and saved regressions, and a bounded random-mutation run over
//! the same seeds with a seeded PRNG (no nightly, no libFuzzer, no new dependency).
//!
//! A failing input is written under the system temp directory and named in the panic
//! message, so it can be copied into `fuzz/regressions/<target>/` as it is.

use std::path::{Path, PathBuf};

/// `fuzz/` of this checkout.
pub fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// Every file of `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/`, sorted by path.
pub fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for dir in ["corpus", "regressions"] {
        let dir = fuzz_dir().join(dir).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_file() {
                let bytes = std::fs::read(&path).unwrap();
                out.push((path, bytes));
            }
        }
    }
    out.sort();
    out
}

/// Runs `body` on `bytes`; a panic fails the test naming a file that holds the input.
pub fn run_one(target: &str, what: &str, bytes: &[u8], body: fn(&[u8])) {
    let result = std::panic::catch_unwind(|| body(bytes));
    if let Err(e) = result {
        let msg = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        let dir = std::env::temp_dir().join(format!("snn-fuzz-failures-{target}"));
        let _ = std::fs::create_dir_all(&dir);
        let file = dir.join(format!("{:016x}", hash(bytes)));
        let _ = std::fs::write(&file, bytes);
        panic!(
            "the `{target}` target panicked on {what} (input saved to {}): {msg}",
            file.display()
        );
    }
}

fn hash(bytes: &[u8]) -> u64 {
    // FNV-1a: a stable name for a failing input.
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// SplitMix64: a small seeded PRNG, so every run mutates the same way.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Boundary values that break size arithmetic in headers.
const INTERESTING: [u64; 8] = [
    0,
    1,
    0x7f,
    0xff,
    0x7fff_ffff,
    0xffff_ffff,
    0x7fff_ffff_ffff_ffff,
    u64::MAX,
];

/// A random span `start..end` of `v` (possibly empty).
fn span(rng: &mut Rng, len: usize) -> (usize, usize) {
    let start = rng.below(len + 1);
    let end = start + rng.below(len - start + 1).min(64);
    (start, end)
}

/// One to four random mutations of `input`, some splicing in bytes or lines of `other`:
/// byte flips, inserts and deletes, boundary integers over header fields, spans repeated
/// many times (deep nesting, long sums), and lines or spans taken from another seed.
pub fn mutate(rng: &mut Rng, input: &[u8], other: &[u8], max_len: usize) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(8) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 => {
                let i = rng.below(v.len() + 1);
                let b = if rng.below(2) == 0 {
                    // A byte the grammar cares about.
                    b"(){}[]<>=+-*/,:;.\"'0123456789e\n \x00\xff"[rng.below(34)]
                } else {
                    rng.next() as u8
                };
                v.insert(i, b);
            }
            2 => {
                let (s, e) = span(rng, v.len());
                v.drain(s..e);
            }
            3 if v.len() >= 8 => {
                let i = rng.below(v.len() - 7);
                let x = INTERESTING[rng.below(INTERESTING.len())];
                let w = [1, 2, 4, 8][rng.below(4)];
                let bytes = if rng.below(2) == 0 {
                    x.to_le_bytes()
                } else {
                    x.to_be_bytes()
                };
                v[i..i + w].copy_from_slice(&bytes[..w]);
            }
            4 => {
                let (s, e) = span(rng, v.len());
                let times = [2, 10, 100, 1000][rng.below(4)];
                let piece = v[s..e].to_vec();
                let at = rng.below(v.len() + 1);
                let rep: Vec<u8> = piece
                    .iter()
                    .copied()
                    .cycle()
                    .take(piece.len() * times)
                    .collect();
                v.splice(at..at, rep);
            }
            5 => {
                let lines: Vec<&[u8]> = other.split(|&b| b == b'\n').collect();
                let line = lines[rng.below(lines.len())];
                let mut at = rng.below(v.len() + 1);
                while at > 0 && v[at - 1] != b'\n' {
                    at -= 1;
                }
                let mut piece = line.to_vec();
                piece.push(b'\n');
                v.splice(at..at, piece);
            }
            6 => {
                let (s, e) = span(rng, other.len());
                let at = rng.below(v.len() + 1);
                v.splice(at..at, other[s..e].iter().copied());
            }
            _ if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = rng.next() as u8;
            }
            _ => {}
        }
    }
    v.truncate(max_len);
    v
}

/// Replays every corpus and regression file of `target`; returns how many ran.
pub fn replay(target: &str, body: fn(&[u8])) -> usize {
    let inputs = inputs(target);
    for (path, bytes) in &inputs {
        run_one(target, &path.display().to_string(), bytes, body);
    }
    inputs.len()
}

/// `iterations` mutants of the corpus, from a fixed seed.
pub fn mutate_run(target: &str, body: fn(&[u8]), seed: u64, iterations: usize, max_len: usize) {
    let seeds: Vec<Vec<u8>> = inputs(target).into_iter().map(|(_, b)| b).collect();
    assert!(!seeds.is_empty(), "fuzz/corpus/{target}/ is empty");
    let mut rng = Rng::new(seed);
    for i in 0..iterations {
        let a = &seeds[rng.below(seeds.len())];
        let b = &seeds[rng.below(seeds.len())];
        let input = mutate(&mut rng, a, b, max_len);
        run_one(target, &format!("mutant {i} of seed {seed}"), &input, body);
    }
}
