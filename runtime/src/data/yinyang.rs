//! The Yin-Yang dataset (Kriener, Göltz, Petrovici), generated bit-exactly as the reference
//! generator does with numpy's legacy `RandomState(seed)`: MT19937 with Knuth seeding,
//! 53-bit doubles from two draws, rejection sampling of a point per drawn target class.
//! Features are `[x, y, 1 - x, 1 - y]`; labels are the reference's numbers: 1 where its
//! `is_yin` test holds, 2 in the two dots, 0 elsewhere. (Its class-name list, yin/yang/dot,
//! does not match that order, so only the numbers are used.)

use super::Dataset;
use crate::error::{Result, RuntimeError};

/// MT19937 (32-bit Mersenne Twister) as numpy's legacy `RandomState` seeds and tempers it.
pub struct Mt19937 {
    mt: [u32; 624],
    i: usize,
}

impl Mt19937 {
    pub fn new(seed: u32) -> Mt19937 {
        let mut mt = [0u32; 624];
        mt[0] = seed;
        for i in 1..624 {
            mt[i] = 1_812_433_253u32
                .wrapping_mul(mt[i - 1] ^ (mt[i - 1] >> 30))
                .wrapping_add(i as u32);
        }
        Mt19937 { mt, i: 624 }
    }
    pub fn next_u32(&mut self) -> u32 {
        if self.i >= 624 {
            for k in 0..624 {
                let y = (self.mt[k] & 0x8000_0000) | (self.mt[(k + 1) % 624] & 0x7fff_ffff);
                let mut v = self.mt[(k + 397) % 624] ^ (y >> 1);
                if y & 1 != 0 {
                    v ^= 0x9908_b0df;
                }
                self.mt[k] = v;
            }
            self.i = 0;
        }
        let mut y = self.mt[self.i];
        self.i += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }
    /// numpy `random_sample()`: 53 random bits from two draws.
    pub fn next_f64(&mut self) -> f64 {
        let a = (self.next_u32() >> 5) as f64;
        let b = (self.next_u32() >> 6) as f64;
        (a * 67_108_864.0 + b) / 9_007_199_254_740_992.0
    }
}

fn dist(x: f64, y: f64, cx: f64, cy: f64) -> f64 {
    ((x - cx) * (x - cx) + (y - cy) * (y - cy)).sqrt()
}

/// The reference's label of a point inside the big circle.
fn which_class(x: f64, y: f64, r_small: f64, r_big: f64) -> u32 {
    let d_right = dist(x, y, 1.5 * r_big, r_big);
    let d_left = dist(x, y, 0.5 * r_big, r_big);
    let criterion1 = d_right <= r_small;
    let criterion2 = d_left > r_small && d_left <= 0.5 * r_big;
    let criterion3 = y > r_big && d_right > 0.5 * r_big;
    let is_yin = criterion1 || criterion2 || criterion3;
    let is_circles = d_right < r_small || d_left < r_small;
    if is_circles {
        2
    } else if is_yin {
        1
    } else {
        0
    }
}

/// `(x, y, label)` for `size` samples, exactly as the reference computes them in f64; also
/// returns the number of (x, y) draws (33,729 for the standard training split).
///
/// # Panics
/// Unless `r_big > 0` and `0 < r_small < r_big / 2` (otherwise some class has no area and
/// the rejection sampling would never finish).
pub fn generate_raw(
    size: usize,
    seed: u32,
    r_small: f64,
    r_big: f64,
) -> (Vec<(f64, f64, u8)>, usize) {
    assert!(
        r_big > 0.0 && r_big.is_finite() && r_small > 0.0 && r_small < 0.5 * r_big,
        "Yin-Yang radii need r_big > 0 and 0 < r_small < r_big / 2 (got r_small = {r_small}, r_big = {r_big})"
    );
    let mut rng = Mt19937::new(seed);
    let mut out = Vec::with_capacity(size);
    let mut draws = 0;
    for _ in 0..size {
        let goal = loop {
            let v = rng.next_u32() & 3;
            if v != 3 {
                break v;
            }
        };
        loop {
            let x = rng.next_f64() * 2.0 * r_big;
            let y = rng.next_f64() * 2.0 * r_big;
            draws += 1;
            if dist(x, y, r_big, r_big) > r_big {
                continue;
            }
            let c = which_class(x, y, r_small, r_big);
            if c == goal {
                out.push((x, y, c as u8));
                break;
            }
        }
    }
    (out, draws)
}

/// `size` samples with features `[x, y, 1 - x, 1 - y]` (computed in f64, stored as f32) and
/// labels 0, 1, 2. Panics on radii [`generate_raw`] refuses.
pub fn generate(size: usize, seed: u32, r_small: f64, r_big: f64) -> Dataset {
    let (raw, _) = generate_raw(size, seed, r_small, r_big);
    let mut x = Vec::with_capacity(size * 4);
    for &(a, b, _) in &raw {
        x.extend_from_slice(&[a as f32, b as f32, (1.0 - a) as f32, (1.0 - b) as f32]);
    }
    Dataset {
        name: format!("yinyang(size={size}, seed={seed})"),
        x,
        y: raw.iter().map(|r| r.2 as u32).collect(),
        shape: vec![4],
        classes: 3,
    }
}

/// The standard splits: train 5000 (seed 42), validation 1000 (41), test 1000 (40).
pub fn standard(split: &str) -> Result<Dataset> {
    let (size, seed) = match split {
        "train" => (5000, 42),
        "validation" => (1000, 41),
        "test" => (1000, 40),
        other => {
            return Err(RuntimeError::InvalidArgument(format!(
                "unknown Yin-Yang split `{other}` (train, validation, test)"
            )))
        }
    };
    let mut d = generate(size, seed, 0.1, 0.5);
    d.name = format!("yinyang {split}");
    Ok(d)
}
