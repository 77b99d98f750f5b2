//! Datasets for training: Yin-Yang (generated, bit-exact with the reference generator),
//! MNIST / Fashion-MNIST IDX files, NPY arrays; seeded batching.

pub mod idx;
pub mod yinyang;

use std::ops::Range;
use std::path::Path;

use crate::error::{Result, RuntimeError};
use crate::io::npy;

/// Samples `x` (`len * features`, row-major) with integer labels `y`.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    pub name: String,
    pub x: Vec<f32>,
    pub y: Vec<u32>,
    /// Per-sample shape, e.g. `[4]` or `[1, 28, 28]`.
    pub shape: Vec<usize>,
    pub classes: usize,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.y.len()
    }
    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }
    pub fn features(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn sample(&self, i: usize) -> &[f32] {
        let f = self.features();
        &self.x[i * f..(i + 1) * f]
    }
    /// Samples `r` as a new dataset.
    pub fn subset(&self, r: Range<usize>) -> Dataset {
        let f = self.features();
        Dataset {
            name: self.name.clone(),
            x: self.x[r.start * f..r.end * f].to_vec(),
            y: self.y[r].to_vec(),
            shape: self.shape.clone(),
            classes: self.classes,
        }
    }
    fn gather(&self, idx: &[usize], name: String) -> Dataset {
        let mut x = Vec::with_capacity(idx.len() * self.features());
        for &i in idx {
            x.extend_from_slice(self.sample(i));
        }
        Dataset {
            name,
            x,
            y: idx.iter().map(|&i| self.y[i]).collect(),
            shape: self.shape.clone(),
            classes: self.classes,
        }
    }
    /// Holds out `n` samples, chosen by a seeded shuffle, as a validation set:
    /// `(rest, validation)`. With `n == 0` the validation set is empty.
    pub fn split_off_validation(&self, n: usize, seed: u64) -> (Dataset, Dataset) {
        let n = n.min(self.len());
        let mut idx: Vec<usize> = (0..self.len()).collect();
        shuffle(&mut idx, seed ^ 0x05ee_d0f7_a11d);
        let (val, rest) = idx.split_at(n);
        let mut rest = rest.to_vec();
        let mut val = val.to_vec();
        rest.sort_unstable();
        val.sort_unstable();
        (
            self.gather(&rest, self.name.clone()),
            self.gather(&val, format!("{} (validation)", self.name)),
        )
    }
    /// Features from one NPY file (`[N, ...]`, any float or integer type) and labels from
    /// another (`[N]`, integer or float holding whole numbers).
    pub fn from_npy(x_path: &Path, y_path: &Path) -> Result<Dataset> {
        let x = npy::read_npy(x_path)?;
        let y = npy::read_npy(y_path)?;
        if x.shape.is_empty() || y.shape.len() != 1 || x.shape[0] != y.shape[0] {
            return Err(RuntimeError::Data {
                path: x_path.to_path_buf(),
                message: format!(
                    "features {:?} and labels {:?} do not match: need [N, ...] and [N]",
                    x.shape, y.shape
                ),
            });
        }
        let mut labels = Vec::with_capacity(y.data.len());
        for &v in &y.data {
            if v < 0.0 || v.fract() != 0.0 || v > 1e6 {
                return Err(RuntimeError::Data {
                    path: y_path.to_path_buf(),
                    message: format!("label {v} is not a class index"),
                });
            }
            labels.push(v as u32);
        }
        let classes = labels.iter().max().map_or(0, |&m| m as usize + 1);
        Ok(Dataset {
            name: x_path.display().to_string(),
            x: x.data,
            y: labels,
            shape: x.shape[1..].to_vec(),
            classes,
        })
    }
}

/// SplitMix64: a small, well-mixed generator for shuffling (not for model randomness,
/// which uses Philox).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (Lemire's multiply-shift; the bias is below 2^-32 for n < 2^32).
    fn below(&mut self, n: usize) -> usize {
        (((self.next() >> 32) * n as u64) >> 32) as usize
    }
}

/// Fisher-Yates with SplitMix64 seeded by `seed`.
pub fn shuffle(v: &mut [usize], seed: u64) {
    let mut r = SplitMix(seed);
    for i in (1..v.len()).rev() {
        let j = r.below(i + 1);
        v.swap(i, j);
    }
}

/// Index batches for one epoch: shuffled (seed and epoch mixed, so every epoch differs
/// and every run with the same seed repeats), the last one short unless `drop_last`.
#[derive(Clone, Copy, Debug)]
pub struct Batcher {
    pub batch: usize,
    pub shuffle: bool,
    pub seed: u64,
    pub drop_last: bool,
}

impl Batcher {
    pub fn epoch(&self, n: usize, epoch: u64) -> Vec<Vec<usize>> {
        let mut idx: Vec<usize> = (0..n).collect();
        if self.shuffle {
            shuffle(
                &mut idx,
                self.seed
                    .wrapping_mul(0x2545_f491_4f6c_dd1d)
                    .wrapping_add(epoch.wrapping_mul(0x9e37_79b9)),
            );
        }
        idx.chunks(self.batch.max(1))
            .filter(|c| !self.drop_last || c.len() == self.batch)
            .map(|c| c.to_vec())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_cover_every_sample_once_and_repeat_with_the_seed() {
        let b = Batcher {
            batch: 7,
            shuffle: true,
            seed: 3,
            drop_last: false,
        };
        let e0 = b.epoch(50, 0);
        let mut all: Vec<usize> = e0.iter().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..50).collect::<Vec<_>>());
        assert_eq!(e0, b.epoch(50, 0));
        assert_ne!(e0, b.epoch(50, 1));
        assert_eq!(e0.len(), 8);
        assert_eq!(
            Batcher {
                drop_last: true,
                ..b
            }
            .epoch(50, 0)
            .len(),
            7
        );
    }
}
