//! Datasets for training: Yin-Yang (generated, bit-exact with the reference generator),
//! MNIST / Fashion-MNIST IDX files, NPY arrays; seeded batching.
//!
//! Everything here is deterministic given its seeds, so a training run can be repeated (or
//! resumed) exactly: shuffles use [`shuffle`] (Fisher-Yates driven by SplitMix64), never an
//! OS-seeded generator.

pub mod idx;
pub mod mnist;
pub mod yinyang;

use std::ops::Range;
use std::path::Path;

use crate::error::{Result, RuntimeError};
use crate::io::npy;
pub use crate::plan::ImageSequence;

/// How NPY dataset files are named in errors (a user's own files: no fetch hint).
const KIND: &str = "dataset file";

/// Samples `x` (`len * features`, row-major) with integer labels `y`.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// Shown in logs, e.g. `yinyang train` or `data/mnist test`.
    pub name: String,
    /// `len() * features()` values, sample after sample.
    pub x: Vec<f32>,
    /// One label per sample, each below `classes`.
    pub y: Vec<u32>,
    /// Per-sample shape, e.g. `[4]` or `[1, 28, 28]`.
    pub shape: Vec<usize>,
    pub classes: usize,
}

/// Gathered samples: `x` has shape `[B, ...dataset shape]` (row-major), `y` `B` labels.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub x: Vec<f32>,
    pub y: Vec<u32>,
    /// `[B, ...per-sample shape]`.
    pub shape: Vec<usize>,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.y.len()
    }
    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }
    /// Values per sample (the product of `shape`).
    pub fn features(&self) -> usize {
        self.shape.iter().product()
    }
    /// Sample `i`'s features. Panics if `i >= len()`.
    pub fn sample(&self, i: usize) -> &[f32] {
        let f = self.features();
        &self.x[i * f..(i + 1) * f]
    }
    /// How many samples each class has (`classes` entries).
    pub fn class_counts(&self) -> Vec<usize> {
        let mut c = vec![0; self.classes];
        for &l in &self.y {
            if let Some(n) = c.get_mut(l as usize) {
                *n += 1;
            }
        }
        c
    }
    /// Samples `r` as a new dataset. Panics if `r` reaches past `len()`.
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
    /// Samples `idx` (in that order, repeats allowed) as a new dataset. Panics on an index
    /// `>= len()`.
    pub fn select(&self, idx: &[usize]) -> Dataset {
        self.gather(idx, self.name.clone())
    }
    fn gather(&self, idx: &[usize], name: String) -> Dataset {
        let Batch { x, y, .. } = self.batch(idx);
        Dataset {
            name,
            x,
            y,
            shape: self.shape.clone(),
            classes: self.classes,
        }
    }
    /// Copies samples `idx` into one `[B, ...shape]` buffer with their labels, ready to be
    /// fed as a static input. Panics on an index `>= len()`.
    pub fn batch(&self, idx: &[usize]) -> Batch {
        let mut x = Vec::with_capacity(idx.len() * self.features());
        for &i in idx {
            x.extend_from_slice(self.sample(i));
        }
        let mut shape = Vec::with_capacity(self.shape.len() + 1);
        shape.push(idx.len());
        shape.extend_from_slice(&self.shape);
        Batch {
            x,
            y: idx.iter().map(|&i| self.y[i]).collect(),
            shape,
        }
    }
    /// The images (per-sample shape `[H, W]`, or `[1, H, W]` as MNIST's) as sequences of
    /// shape `[T, F]`: [`ImageSequence::Rows`] gives `H` steps of a row's `W` pixels (the
    /// image's values in their stored order), [`ImageSequence::Columns`] `W` steps of a
    /// column's `H` pixels, top to bottom. Values are copied, never changed. Fails on samples
    /// that are not single-channel images.
    pub fn image_sequence(&self, order: ImageSequence) -> Result<Dataset> {
        let (h, w) = match self.shape.as_slice() {
            [h, w] | [1, h, w] => (*h, *w),
            other => {
                return Err(RuntimeError::InvalidArgument(format!(
                    "dataset `{}` has samples of shape {}, not single-channel images \
                     [H, W] or [1, H, W]: `sequence = {}` cannot cut them into steps",
                    self.name,
                    crate::error::fmt_shape(other),
                    order.name()
                )))
            }
        };
        let (x, shape) = match order {
            ImageSequence::Rows => (self.x.clone(), vec![h, w]),
            ImageSequence::Columns => {
                let mut x = Vec::with_capacity(self.x.len());
                for img in self.x.chunks_exact(h * w) {
                    for c in 0..w {
                        x.extend((0..h).map(|r| img[r * w + c]));
                    }
                }
                (x, vec![w, h])
            }
        };
        Ok(Dataset {
            name: format!("{} ({})", self.name, order.name()),
            x,
            y: self.y.clone(),
            shape,
            classes: self.classes,
        })
    }
    /// Samples `idx` of a sequence dataset (per-sample shape `[T, ...]`) time-major, as a
    /// per-step input wants them: shape `[T, B, ...]`, where `[t, b]` is step `t` of sample
    /// `idx[b]`. Panics on an index `>= len()` or a dataset without a time axis.
    pub fn sequence_batch(&self, idx: &[usize]) -> Batch {
        let t = self.shape[0];
        let step = self.features() / t.max(1);
        let mut x = Vec::with_capacity(idx.len() * self.features());
        for s in 0..t {
            for &i in idx {
                x.extend_from_slice(&self.sample(i)[s * step..(s + 1) * step]);
            }
        }
        let mut shape = vec![t, idx.len()];
        shape.extend_from_slice(&self.shape[1..]);
        Batch {
            x,
            y: idx.iter().map(|&i| self.y[i]).collect(),
            shape,
        }
    }
    /// Holds out `n` samples, chosen by a seeded shuffle, as a validation set:
    /// `(rest, validation)`, each in the original order. With `n == 0` the validation set is
    /// empty; `n` is capped at `len()`.
    pub fn split_off_validation(&self, n: usize, seed: u64) -> (Dataset, Dataset) {
        let n = n.min(self.len());
        let mut idx: Vec<usize> = (0..self.len()).collect();
        // A fixed offset keeps the split independent of the batch order for the same seed.
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
    /// another (`[N]` or `[N, 1]`, integer or float holding whole numbers). `classes` is
    /// one more than the largest label.
    pub fn from_npy(x_path: &Path, y_path: &Path) -> Result<Dataset> {
        let x = npy::read_npy(x_path)?;
        let y = npy::read_npy(y_path)?;
        let y_ok = matches!(y.shape.as_slice(), [_] | [_, 1]);
        if x.shape.is_empty() || !y_ok || x.shape[0] != y.shape[0] {
            return Err(RuntimeError::format(
                x_path,
                KIND,
                format!(
                    "features {} and labels {} (`{}`) do not match: need [N, ...] and [N]",
                    crate::error::fmt_shape(&x.shape),
                    crate::error::fmt_shape(&y.shape),
                    y_path.display()
                ),
            ));
        }
        if x.shape[0] == 0 {
            return Err(RuntimeError::format(
                x_path,
                KIND,
                "the .npy file holds 0 samples; a dataset needs at least 1",
            ));
        }
        let mut labels = Vec::with_capacity(y.data.len());
        for (i, &v) in y.data.iter().enumerate() {
            // f32 holds every integer up to 2^24 exactly; class indices are far below.
            if !(0.0..=1e6).contains(&v) || v.fract() != 0.0 {
                return Err(RuntimeError::format(
                    y_path,
                    KIND,
                    format!("label {i} is {v}, which is not a class index"),
                ));
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

/// SplitMix64 (Steele, Lea, Flood 2014, with Vigna's constants): a small, well-mixed
/// generator for shuffling. Not for model randomness, which uses Philox ([`crate::rng`]).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n`: Lemire's multiply-shift on the top 32 bits (bias below 2^-32 for
    /// `n < 2^32`; larger `n` use all 64 bits).
    fn below(&mut self, n: usize) -> usize {
        let n = n as u64;
        if n <= 1 << 32 {
            (((self.next() >> 32) * n) >> 32) as usize
        } else {
            ((self.next() as u128 * n as u128) >> 64) as usize
        }
    }
}

/// Fisher-Yates (from the last element down, `j = below(i + 1)`) driven by SplitMix64
/// seeded with `seed`. The same seed always gives the same permutation.
pub fn shuffle(v: &mut [usize], seed: u64) {
    let mut r = SplitMix(seed);
    for i in (1..v.len()).rev() {
        let j = r.below(i + 1);
        v.swap(i, j);
    }
}

/// Index batches for one epoch: shuffled (seed and epoch mixed, so every epoch differs and
/// every run with the same seed repeats), the last one short unless `drop_last`.
#[derive(Clone, Copy, Debug)]
pub struct Batcher {
    /// Samples per batch (0 is treated as 1).
    pub batch: usize,
    pub shuffle: bool,
    pub seed: u64,
    /// Leave out a last batch shorter than `batch`.
    pub drop_last: bool,
}

impl Batcher {
    /// The shuffle seed of `epoch`: `seed * 0x2545F4914F6CDD1D + epoch * 0x9E3779B9`
    /// (wrapping), so that epoch `e` of seed `s` is a fixed, documented permutation.
    pub fn epoch_seed(&self, epoch: u64) -> u64 {
        self.seed
            .wrapping_mul(0x2545_f491_4f6c_dd1d)
            .wrapping_add(epoch.wrapping_mul(0x9e37_79b9))
    }
    /// The batches of `epoch` over `n` samples, as an iterator.
    pub fn iter(&self, n: usize, epoch: u64) -> Batches {
        let mut order: Vec<usize> = (0..n).collect();
        if self.shuffle {
            shuffle(&mut order, self.epoch_seed(epoch));
        }
        Batches {
            order,
            batch: self.batch.max(1),
            drop_last: self.drop_last,
            pos: 0,
        }
    }
    /// The batches of `epoch` over `n` samples.
    pub fn epoch(&self, n: usize, epoch: u64) -> Vec<Vec<usize>> {
        self.iter(n, epoch).collect()
    }
    /// How many batches an epoch over `n` samples has.
    pub fn batches_per_epoch(&self, n: usize) -> usize {
        let b = self.batch.max(1);
        if self.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }
}

/// One epoch's batches of sample indices (see [`Batcher::iter`]).
#[derive(Clone, Debug)]
pub struct Batches {
    order: Vec<usize>,
    batch: usize,
    drop_last: bool,
    pos: usize,
}

impl Batches {
    /// The epoch's whole sample order.
    pub fn order(&self) -> &[usize] {
        &self.order
    }
}

impl Iterator for Batches {
    type Item = Vec<usize>;
    fn next(&mut self) -> Option<Vec<usize>> {
        let rest = self.order.len() - self.pos;
        if rest == 0 || (self.drop_last && rest < self.batch) {
            return None;
        }
        let end = self.pos + rest.min(self.batch);
        let b = self.order[self.pos..end].to_vec();
        self.pos = end;
        Some(b)
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        let rest = self.order.len() - self.pos;
        let n = if self.drop_last {
            rest / self.batch
        } else {
            rest.div_ceil(self.batch)
        };
        (n, Some(n))
    }
}

impl ExactSizeIterator for Batches {}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy(n: usize) -> Dataset {
        Dataset {
            name: "toy".into(),
            x: (0..n * 2).map(|v| v as f32).collect(),
            y: (0..n as u32).map(|i| i % 3).collect(),
            shape: vec![2],
            classes: 3,
        }
    }

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
        assert_ne!(e0, Batcher { seed: 4, ..b }.epoch(50, 0));
        assert_eq!(e0.len(), 8);
        assert_eq!(b.iter(50, 0).len(), 8);
        assert_eq!(b.batches_per_epoch(50), 8);
        let d = Batcher {
            drop_last: true,
            ..b
        };
        assert_eq!(d.epoch(50, 0).len(), 7);
        assert_eq!((d.iter(50, 0).len(), d.batches_per_epoch(50)), (7, 7));
        assert!(d.epoch(50, 0).iter().all(|c| c.len() == 7));
        // Unshuffled: in order.
        let plain = Batcher {
            shuffle: false,
            batch: 4,
            ..b
        };
        assert_eq!(plain.epoch(6, 9), vec![vec![0, 1, 2, 3], vec![4, 5]]);
        assert!(plain.epoch(0, 0).is_empty());
    }

    /// Pins the documented shuffle (SplitMix64 + Fisher-Yates): a change here silently
    /// changes every training run's batch order.
    #[test]
    fn shuffle_is_pinned() {
        let mut v: Vec<usize> = (0..10).collect();
        shuffle(&mut v, 0);
        let mut w: Vec<usize> = (0..10).collect();
        shuffle(&mut w, 0);
        assert_eq!(v, w);
        let mut r = SplitMix(0);
        // SplitMix64's published first output for seed 0.
        assert_eq!(r.next(), 0xe220_a839_7b1d_cdaf);
        let mut sorted = v.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        assert_ne!(v, sorted);
    }

    #[test]
    fn subset_select_batch_and_validation_split() {
        let d = toy(10);
        assert_eq!((d.len(), d.features()), (10, 2));
        assert_eq!(d.sample(3), &[6.0, 7.0]);
        assert_eq!(d.class_counts(), vec![4, 3, 3]);
        let s = d.subset(2..4);
        assert_eq!(
            (s.x.as_slice(), s.y.as_slice()),
            (&[4.0, 5.0, 6.0, 7.0][..], &[2, 0][..])
        );
        let s = d.select(&[9, 0, 9]);
        assert_eq!(s.y, vec![0, 0, 0]);
        assert_eq!(s.x, vec![18.0, 19.0, 0.0, 1.0, 18.0, 19.0]);
        let b = d.batch(&[1, 5]);
        assert_eq!(b.shape, vec![2, 2]);
        assert_eq!(b.x, vec![2.0, 3.0, 10.0, 11.0]);
        assert_eq!(b.y, vec![1, 2]);
        let (rest, val) = d.split_off_validation(3, 7);
        assert_eq!((rest.len(), val.len()), (7, 3));
        let mut ys: Vec<f32> = rest.x.iter().chain(&val.x).copied().collect();
        ys.sort_by(f32::total_cmp);
        assert_eq!(ys, d.x);
        assert_eq!(d.split_off_validation(3, 7), (rest, val));
        assert_eq!(d.split_off_validation(0, 7).1.len(), 0);
        assert_eq!(d.split_off_validation(99, 7).0.len(), 0);
    }
}
