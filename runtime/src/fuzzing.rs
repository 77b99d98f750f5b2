//! The body of the `data` fuzz target (`fuzz/fuzz_targets/data.rs`), kept here so that the
//! stable replay test (`runtime/tests/fuzz_replay.rs`) runs exactly what was fuzzed.
//!
//! Every reader of untrusted bytes sees every input: each rejects a foreign format by its
//! first bytes, so one target covers them all at little cost (and the corpus holds the real
//! files, without a selector byte). An error is a fine outcome; a panic, an abort, a hang or
//! an allocation far beyond the input is a finding. What a reader accepts is checked against
//! the invariant its callers rely on (data length = product of the shape).

use std::path::Path;

use crate::data::idx;
use crate::io::{npy, weights};
use crate::plan;

/// Runs `bytes` through the `.npy`, safetensors (weights and training checkpoints), IDX
/// (raw or gzipped, images and labels) and embedded-plan readers, and the plan validator.
pub fn data(bytes: &[u8]) {
    let path = Path::new("fuzz-input");
    match npy::parse_npy(bytes, path) {
        Ok(t) => assert_eq!(t.data.len(), t.shape.iter().product::<usize>()),
        Err(e) => drop(e.to_string()),
    }
    match weights::parse(bytes, path) {
        Ok(tensors) => {
            for (name, shape, data) in tensors {
                assert_eq!(data.len(), shape.iter().product::<usize>(), "{name}");
            }
        }
        Err(e) => drop(e.to_string()),
    }
    match idx::gunzip_if_gzip(bytes.to_vec(), path) {
        Ok(raw) => {
            for magic in [idx::IMAGES_MAGIC, idx::LABELS_MAGIC] {
                match idx::parse(&raw, path, magic) {
                    Ok((dims, data)) => {
                        assert_eq!(data.len(), dims.iter().product::<usize>())
                    }
                    Err(e) => drop(e.to_string()),
                }
            }
        }
        Err(e) => drop(e.to_string()),
    }
    match plan::decode(bytes) {
        Ok(plan) => {
            let kernels = plan.kernels.len();
            if let Err(e) = crate::exec::validate(plan, kernels) {
                drop(e.to_string());
            }
        }
        Err(e) => drop(e.to_string()),
    }
}
