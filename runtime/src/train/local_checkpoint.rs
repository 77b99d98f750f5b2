//! The checkpoint of a local-learning run (`snnc train` with `local = [..]`): the weights
//! under their plan names (f32, as `Session::save_weights` writes them, so the file also
//! loads as a weights file), every plastic layer's rule parameters as **f64** tensors
//! (`local.params.LAYER`, in the rule's order: the adaptive rates must resume bit for bit),
//! and where the run stands (`local.state`). Written atomically.

use crate::error::{Result, RuntimeError};
use crate::Session;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

/// Where a local-learning run stands after an epoch.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LocalState {
    /// The stage (index into the schedule) and the epochs of it completed.
    pub stage: usize,
    pub epoch: usize,
    /// Images the stage has trained on.
    pub images: u64,
    /// The learning-rate growth's count ([`super::local::RateGrowth::after_batch`]).
    pub growth_count: usize,
    /// R-STDP's open chunk: correct, wrong and all decisions
    /// ([`super::local::RstdpRates`]).
    pub chunk: [usize; 3],
}

const STATE: &str = "local.state";
const PARAMS: &str = "local.params.";

fn bad(path: &Path, msg: String) -> RuntimeError {
    RuntimeError::InvalidArgument(format!("checkpoint `{}`: {msg}", path.display()))
}

/// Writes the session's weights (synced first), its rule parameters and `state`.
pub fn save(s: &mut Session, state: &LocalState, path: &Path) -> Result<()> {
    s.sync_weights()?;
    let plan = s.plan();
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = vec![];
    for (d, w) in plan.weights.iter().zip(s.weights()) {
        if d.frozen() {
            continue;
        }
        let bytes = w.iter().flat_map(|x| x.to_le_bytes()).collect();
        tensors.push((d.name.clone(), Dtype::F32, d.shape.clone(), bytes));
    }
    let f64s = |v: &[f64]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    for l in &plan.learn {
        let values: Vec<f64> = (l.params.iter())
            .map(|p| s.rule_param(&l.name, &p.name))
            .collect::<Result<_>>()?;
        tensors.push((
            format!("{PARAMS}{}", l.name),
            Dtype::F64,
            vec![values.len()],
            f64s(&values),
        ));
    }
    let st = [
        state.stage,
        state.epoch,
        state.images as usize,
        state.growth_count,
        state.chunk[0],
        state.chunk[1],
        state.chunk[2],
    ]
    .map(|v| v as f64);
    tensors.push((STATE.into(), Dtype::F64, vec![st.len()], f64s(&st)));
    let mut views = Vec::with_capacity(tensors.len());
    for (name, dtype, shape, bytes) in &tensors {
        let view = TensorView::new(*dtype, shape.clone(), bytes)
            .map_err(|e| bad(path, format!("tensor `{name}`: {e}")))?;
        views.push((name.as_str(), view));
    }
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    let buf = safetensors::serialize(views, Some(meta)).map_err(|e| bad(path, e.to_string()))?;
    crate::io::write_atomic(path, |w| w.write_all(&buf))
}

/// Restores the weights and rule parameters of [`save`]'s file into `s`; returns the state.
/// Nothing changes on error.
pub fn load(s: &mut Session, path: &Path) -> Result<LocalState> {
    let bytes = crate::io::read_file(path)?;
    let not_ours = || {
        bad(
            path,
            "not a local-learning checkpoint of this model (resume from the \
             checkpoint.safetensors that `snnc train` wrote for it)"
                .into(),
        )
    };
    let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(path, e.to_string()))?;
    let read_f64 = |name: &str| -> Result<Vec<f64>> {
        let v = st.tensor(name).map_err(|_| not_ours())?;
        if v.dtype() != Dtype::F64 {
            return Err(not_ours());
        }
        Ok((v.data().chunks_exact(8))
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect())
    };
    let state = read_f64(STATE)?;
    let [stage, epoch, images, growth_count, c0, c1, c2] = state[..] else {
        return Err(not_ours());
    };
    let mut weights = s.weights().to_vec();
    for (i, d) in s.plan().weights.iter().enumerate() {
        if d.frozen() {
            continue;
        }
        let v = st.tensor(&d.name).map_err(|_| not_ours())?;
        if v.dtype() != Dtype::F32 || v.data().len() != 4 * weights[i].len() {
            return Err(bad(
                path,
                format!("tensor `{}` does not match this model's weight", d.name),
            ));
        }
        weights[i] = (v.data().chunks_exact(4))
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
    }
    let mut params = vec![];
    for l in &s.plan().learn {
        let v = read_f64(&format!("{PARAMS}{}", l.name))?;
        if v.len() != l.params.len() {
            return Err(not_ours());
        }
        params.push((l.name.clone(), l.params.clone(), v));
    }
    s.set_all_weights(weights)?;
    for (layer, decls, values) in params {
        for (p, v) in decls.iter().zip(values) {
            s.set_rule_param(&layer, &p.name, v)?;
        }
    }
    Ok(LocalState {
        stage: stage as usize,
        epoch: epoch as usize,
        images: images as u64,
        growth_count: growth_count as usize,
        chunk: [c0 as usize, c1 as usize, c2 as usize],
    })
}
