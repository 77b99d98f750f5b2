//! IDX files (MNIST, Fashion-MNIST), raw or gzipped (detected by the gzip magic bytes).

use std::io::Read;
use std::path::{Path, PathBuf};

use super::Dataset;
use crate::error::{Result, RuntimeError};

fn data_err(path: &Path, message: impl Into<String>) -> RuntimeError {
    RuntimeError::Data {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// The file's bytes, gunzipped when they start with the gzip magic.
pub fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| RuntimeError::Io {
        path: path.to_path_buf(),
        action: "read",
        source: e,
    })?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| data_err(path, format!("bad gzip data: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// An IDX file of unsigned bytes: `(dims, data)`; `magic` is 0x0801 (labels) or 0x0803
/// (images).
pub fn parse(bytes: &[u8], path: &Path, magic: u32) -> Result<(Vec<usize>, Vec<u8>)> {
    if bytes.len() < 4 {
        return Err(data_err(path, "truncated: no IDX header"));
    }
    let m = u32::from_be_bytes(bytes[0..4].try_into().expect("4 bytes"));
    if m != magic {
        return Err(data_err(
            path,
            format!(
                "bad magic 0x{m:08x}, expected 0x{magic:08x} (not an IDX {} file)",
                if magic == 0x801 { "label" } else { "image" }
            ),
        ));
    }
    let nd = (magic & 0xff) as usize;
    let head = 4 + 4 * nd;
    if bytes.len() < head {
        return Err(data_err(path, "truncated IDX header"));
    }
    let dims: Vec<usize> = (0..nd)
        .map(|i| {
            u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().expect("4 bytes")) as usize
        })
        .collect();
    let n: usize = dims.iter().product();
    if bytes.len() != head + n {
        return Err(data_err(
            path,
            format!(
                "truncated or padded: header says {dims:?} ({n} bytes of data), file has {}",
                bytes.len() - head
            ),
        ));
    }
    Ok((dims, bytes[head..].to_vec()))
}

/// The first existing of the usual names for `stem` (`train-images-idx3-ubyte` etc.).
fn find(dir: &Path, stem: &str) -> Result<PathBuf> {
    let dotted = stem.replacen("-idx", ".idx", 1);
    let tried: Vec<PathBuf> = [
        stem.to_string(),
        format!("{stem}.gz"),
        dotted.clone(),
        format!("{dotted}.gz"),
    ]
    .iter()
    .map(|n| dir.join(n))
    .collect();
    tried.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        data_err(
            dir,
            format!(
                "no {stem} file (tried {})",
                tried
                    .iter()
                    .map(|p| p
                        .file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    })
}

/// MNIST-format images and labels from `dir`: pixels scaled to [0, 1], shape `[1, 28, 28]`.
pub fn mnist(dir: &Path, train: bool) -> Result<Dataset> {
    let split = if train { "train" } else { "t10k" };
    let ip = find(dir, &format!("{split}-images-idx3-ubyte"))?;
    let lp = find(dir, &format!("{split}-labels-idx1-ubyte"))?;
    let (idims, pixels) = parse(&read_bytes(&ip)?, &ip, 0x803)?;
    let (ldims, labels) = parse(&read_bytes(&lp)?, &lp, 0x801)?;
    if idims[0] != ldims[0] {
        return Err(data_err(
            &lp,
            format!(
                "{} labels for {} images in `{}`",
                ldims[0],
                idims[0],
                ip.display()
            ),
        ));
    }
    if let Some(&bad) = labels.iter().find(|&&l| l > 9) {
        return Err(data_err(
            &lp,
            format!("label {bad} is not a digit class 0..9"),
        ));
    }
    Ok(Dataset {
        name: format!("{} {}", dir.display(), if train { "train" } else { "test" }),
        x: pixels.iter().map(|&p| p as f32 / 255.0).collect(),
        y: labels.iter().map(|&l| l as u32).collect(),
        shape: vec![1, idims[1], idims[2]],
        classes: 10,
    })
}
