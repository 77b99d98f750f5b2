//! Optimizer updates of the CPU device's weights, in place.

use super::*;
use crate::device::Optimizer;
use crate::error::{Result, RuntimeError};
use crate::plan::WeightId;
use crate::train::optim::Update;

impl Optimizer for CpuDevice {
    fn grad_sq_sum(&mut self, id: WeightId, start: f64) -> Result<f64> {
        let g = self.grads.get(id).ok_or_else(|| {
            RuntimeError::Device(format!("grad_sq_sum: gradient {id} was never computed"))
        })?;
        Ok(g.iter().fold(start, |acc, &x| acc + x as f64 * x as f64))
    }

    fn optim_step(&mut self, id: WeightId, u: &Update, grad_scale: Option<f32>) -> Result<()> {
        let (Some(w), Some(g)) = (self.weights.get_mut(id), self.grads.get(id)) else {
            return Err(RuntimeError::Device(format!(
                "optim_step: weight {id} or its gradient does not exist (zero_grads first)"
            )));
        };
        if g.len() != w.len() {
            return Err(RuntimeError::Device(format!(
                "optim_step: gradient {id} has {} elements, the weight {}",
                g.len(),
                w.len()
            )));
        }
        if self.optim.len() <= id {
            self.optim.resize_with(id + 1, Default::default);
        }
        let [s0, s1] = &mut self.optim[id];
        for s in [&mut *s0, &mut *s1].into_iter().take(u.state_buffers()) {
            if s.len() != w.len() {
                *s = vec![0.0; w.len()];
            }
        }
        u.apply(w, g, grad_scale, s0, s1);
        if let Some(t) = self.transposed.get_mut(id) {
            *t = None;
        }
        Ok(())
    }

    fn get_optim_state(&mut self, id: WeightId, k: usize, out: &mut [f32]) -> Result<bool> {
        match self.optim.get(id).map(|s| &s[k.min(1)]) {
            Some(s) if !s.is_empty() => {
                copy_out(
                    Some(s),
                    &format!("optimizer state {k} of weight {id}"),
                    "",
                    out,
                )?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn set_optim_state(&mut self, id: WeightId, k: usize, data: &[f32]) -> Result<()> {
        let n = self.weights.get(id).map_or(0, |w| w.len());
        crate::device::check_optim_state(id, k, n, data.len())?;
        if self.optim.len() <= id {
            self.optim.resize_with(id + 1, Default::default);
        }
        self.optim[id][k] = data.to_vec();
        Ok(())
    }
}
