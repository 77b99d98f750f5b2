//! Weights files (safetensors): the checkpoint format, readable by PyTorch.
//!
//! `save` writes `f32` tensors atomically with `{"format": "pt"}` metadata; `load` reads
//! `F32`, `F64`, `F16` and `BF16` tensors as `f32` and refuses other element types by name.

use super::{bf16_to_f32, f16_to_f32, read_file, write_atomic};
use crate::error::{Result, RuntimeError};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::Path;

const KIND: &str = "weights file";
const SUPPORTED: &str = "F32, F64, F16, BF16";

/// A named tensor read from a weights file: `(name, shape, data)`.
pub type NamedTensor = (String, Vec<usize>, Vec<f32>);

/// Writes `(name, shape, data)` tensors as an `f32` safetensors file, atomically.
pub fn save(path: impl AsRef<Path>, weights: &[(String, Vec<usize>, &[f32])]) -> Result<()> {
    let path = path.as_ref();
    let mut seen = HashSet::new();
    let mut bytes: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::with_capacity(weights.len());
    for (name, shape, data) in weights {
        if !seen.insert(name.as_str()) {
            return Err(RuntimeError::DuplicateTensor {
                path: path.to_path_buf(),
                name: name.clone(),
            });
        }
        let n = crate::tensor::numel(shape)?;
        if n != data.len() {
            return Err(RuntimeError::InvalidArgument(format!(
                "cannot write weights file `{}`: tensor `{name}` has shape {} ({n} elements) but {} values",
                path.display(),
                crate::error::fmt_shape(shape),
                data.len()
            )));
        }
        let b: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
        bytes.push((name.clone(), shape.clone(), b));
    }
    let mut views = Vec::with_capacity(bytes.len());
    for (name, shape, b) in &bytes {
        let view = TensorView::new(Dtype::F32, shape.clone(), b).map_err(|e| {
            RuntimeError::InvalidArgument(format!(
                "cannot write weights file `{}`: tensor `{name}`: {e}",
                path.display()
            ))
        })?;
        views.push((name.as_str(), view));
    }
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    let buf = safetensors::serialize(views, Some(meta)).map_err(|e| {
        RuntimeError::InvalidArgument(format!(
            "cannot write weights file `{}`: {e}",
            path.display()
        ))
    })?;
    write_atomic(path, |w| w.write_all(&buf))
}

/// Reads every tensor of a safetensors file as `f32`, sorted by name.
pub fn load(path: impl AsRef<Path>) -> Result<Vec<NamedTensor>> {
    let path = path.as_ref();
    let bytes = read_file(path)?;
    parse(&bytes, path)
}

/// Parses safetensors bytes; `path` only names the source in errors.
pub fn parse(bytes: &[u8], path: &Path) -> Result<Vec<NamedTensor>> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| {
        let hint = if bytes.len() < 8 {
            format!(" (the file is only {} bytes long)", bytes.len())
        } else {
            String::new()
        };
        RuntimeError::format(
            path,
            KIND,
            format!("{e}{hint} (hint: is it a safetensors file, complete and not truncated?)"),
        )
    })?;
    let mut out = Vec::with_capacity(st.len());
    for (name, view) in st.iter() {
        let data = view.data();
        let shape = view.shape().to_vec();
        let values: Vec<f32> = match view.dtype() {
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F64 => data
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
                .collect(),
            Dtype::F16 => data
                .chunks_exact(2)
                .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
            Dtype::BF16 => data
                .chunks_exact(2)
                .map(|c| bf16_to_f32(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
            other => {
                return Err(RuntimeError::UnsupportedDtype {
                    path: path.to_path_buf(),
                    tensor: Some(name.to_string()),
                    dtype: format!("{other:?}"),
                    supported: SUPPORTED,
                })
            }
        };
        // A shape past 64 bits cannot match the values read (no wrap, no panic).
        let n = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        if n != Some(values.len()) {
            return Err(RuntimeError::format(
                path,
                KIND,
                format!(
                    "tensor `{name}` of shape {} has {} values",
                    crate::error::fmt_shape(&shape),
                    values.len()
                ),
            ));
        }
        out.push((name.to_string(), shape, values));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}
