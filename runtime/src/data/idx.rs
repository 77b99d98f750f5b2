//! IDX files (LeCun's MNIST format, also Fashion-MNIST), raw or gzipped.
//!
//! Gzip is detected by the magic bytes `1f 8b`, not by the file name, because datasets are
//! often stored decompressed under a `.gz` name or the reverse. Only unsigned-byte IDX files
//! are read (type code 0x08): images (magic `0x00000803`, `[N, rows, cols]`) and labels
//! (magic `0x00000801`, `[N]`). Every problem is a [`RuntimeError`] naming the file.

use std::io::Read;
use std::path::Path;

use crate::error::{Result, RuntimeError};

/// Magic of an unsigned-byte IDX file with 3 dimensions (images).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic of an unsigned-byte IDX file with 1 dimension (labels).
pub const LABELS_MAGIC: u32 = 0x0000_0801;

pub(crate) fn data_err(path: &Path, message: impl Into<String>) -> RuntimeError {
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
    gunzip_if_gzip(raw, path)
}

/// `raw` gunzipped when it starts with the gzip magic, else unchanged; `path` only names
/// the source in errors.
pub fn gunzip_if_gzip(raw: Vec<u8>, path: &Path) -> Result<Vec<u8>> {
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        // Multi-member streams (concatenated .gz files) are valid gzip too.
        flate2::read::MultiGzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| {
                data_err(
                    path,
                    format!("bad gzip data (corrupt or truncated download?): {e}"),
                )
            })?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn describe(magic: u32) -> &'static str {
    match magic {
        IMAGES_MAGIC => "IDX image file",
        LABELS_MAGIC => "IDX label file",
        _ => "IDX file",
    }
}

/// Parses an unsigned-byte IDX file whose magic must be `magic` (`IMAGES_MAGIC` or
/// `LABELS_MAGIC`): `(dims, data)`. `path` only names the source in errors.
pub fn parse(bytes: &[u8], path: &Path, magic: u32) -> Result<(Vec<usize>, Vec<u8>)> {
    if bytes.len() < 4 {
        return Err(data_err(
            path,
            format!(
                "truncated: {} bytes, too short for an IDX header",
                bytes.len()
            ),
        ));
    }
    let m = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if m != magic {
        let mut msg = format!(
            "bad magic 0x{m:08x}, expected 0x{magic:08x} (not an {})",
            describe(magic)
        );
        if matches!(m, IMAGES_MAGIC | LABELS_MAGIC) {
            msg.push_str(&format!(
                "; it is an {}: are the image and label files swapped?",
                describe(m)
            ));
        }
        return Err(data_err(path, msg));
    }
    let nd = (magic & 0xff) as usize;
    let head = 4 + 4 * nd;
    if bytes.len() < head {
        return Err(data_err(
            path,
            format!(
                "truncated: {} bytes, the IDX header needs {head}",
                bytes.len()
            ),
        ));
    }
    let dims: Vec<usize> = bytes[4..head]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let n = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| data_err(path, format!("the header's dimensions {dims:?} overflow")))?;
    let have = bytes.len() - head;
    if have != n {
        return Err(data_err(
            path,
            format!(
                "{}: the header says {dims:?} ({n} bytes of data), the file has {have}",
                if have < n {
                    "truncated"
                } else {
                    "trailing bytes"
                }
            ),
        ));
    }
    Ok((dims, bytes[head..].to_vec()))
}

/// Reads (and gunzips) an IDX file and parses it: `(dims, data)`.
pub fn read(path: &Path, magic: u32) -> Result<(Vec<usize>, Vec<u8>)> {
    parse(&read_bytes(path)?, path, magic)
}

/// MNIST-format images and labels from `dir`; the same as [`super::mnist::load`], kept
/// under this name for existing callers.
pub fn mnist(dir: &Path, train: bool) -> Result<super::Dataset> {
    super::mnist::load(dir, train)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        let p = Path::new("x-idx1-ubyte");
        let (d, v) = parse(&[0, 0, 8, 1, 0, 0, 0, 2, 7, 9], p, LABELS_MAGIC).unwrap();
        assert_eq!((d, v), (vec![2], vec![7, 9]));
        let (d, v) = parse(
            &[0, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 5, 6],
            p,
            IMAGES_MAGIC,
        )
        .unwrap();
        assert_eq!((d, v), (vec![1, 1, 2], vec![5, 6]));
        for (bytes, want) in [
            (&[0u8, 0, 8][..], "too short"),
            (&[0, 0, 8, 1, 0, 0][..], "header needs 8"),
            (&[0, 0, 8, 1, 0, 0, 0, 3, 1][..], "truncated"),
            (&[0, 0, 8, 1, 0, 0, 0, 1, 1, 2][..], "trailing bytes"),
            (&[0, 0, 8, 3, 0, 0, 0, 1][..], "swapped"),
            (&[0, 0, 9, 1, 0, 0, 0, 1, 1][..], "bad magic 0x00000901"),
        ] {
            let e = parse(bytes, p, LABELS_MAGIC).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains("x-idx1-ubyte"), "{e}");
        }
        let huge = [
            0, 0, 8, 3, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        ];
        let e = parse(&huge, p, IMAGES_MAGIC).unwrap_err().to_string();
        assert!(e.contains("truncated") || e.contains("overflow"), "{e}");
    }
}
