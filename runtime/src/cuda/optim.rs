//! Optimizer updates on the CUDA device (ops.cuh's `snn_sgd`, `snn_adam`, `snn_sq_sum`).

use super::*;
use crate::device::{check_optim_state, Optimizer};
use crate::train::optim::Update;

impl<G: Gpu> CudaDevice<G> {
    /// `start` plus the squares of gradients `ids`, tensor after tensor: `snn_sq_sum`'s
    /// f64 partials of every tensor into one scratch buffer, one download, the partials
    /// added in order on the host.
    fn grad_sq_sums(&mut self, ids: &[WeightId], start: f64) -> Result<f64> {
        let mut jobs = Vec::with_capacity(ids.len());
        let mut total = 0;
        for &id in ids {
            let len = held_len(&self.grads, id).ok_or_else(|| {
                RuntimeError::Device(format!("grad_sq_sum: gradient {id} was never computed"))
            })?;
            let g = self.grad_ptr(id, len, "grad_sq_sum")?;
            let parts = len.min(SQ_PARTS);
            jobs.push((g, len, parts, total));
            total += parts;
        }
        if total == 0 {
            return Ok(start);
        }
        let b = grown(
            &mut self.gpu,
            &mut self.sq_scratch,
            2 * total,
            "grad_sq_sum partials",
        )?;
        let base = self.gpu.addr(&b.mem);
        for &(g, len, parts, at) in &jobs {
            let partial = base + 8 * at as u64;
            self.launch_ops("snn_sq_sum", parts, &[g, partial, len as u64, parts as u64])?;
        }
        let mut words = vec![0.0f32; 2 * total];
        let buf = self.sq_scratch.as_ref().expect("made above");
        self.gpu
            .dtoh(&buf.mem, 0, &mut words, "grad_sq_sum partials")?;
        // Little-endian f64s, two floats each (the GPU's and the host's byte order).
        Ok(words.chunks_exact(2).fold(start, |acc, w| {
            acc + f64::from_bits(w[0].to_bits() as u64 | (w[1].to_bits() as u64) << 32)
        }))
    }
}

impl<G: Gpu> Optimizer for CudaDevice<G> {
    fn grad_sq_sum(&mut self, id: WeightId, start: f64) -> Result<f64> {
        self.grad_sq_sums(&[id], start)
    }

    fn grad_sq_total(&mut self, n: usize) -> Result<f64> {
        let ids: Vec<WeightId> = (0..n).collect();
        self.grad_sq_sums(&ids, 0.0)
    }

    fn optim_step(&mut self, id: WeightId, u: &Update, grad_scale: Option<f32>) -> Result<()> {
        let len = held_len(&self.weights, id).ok_or_else(|| {
            RuntimeError::Device(format!("optim_step: weight {id} was never set"))
        })?;
        let p = self.weight_ptr(id, len, "optim_step")?;
        let g = self.grad_ptr(id, len, "optim_step")?;
        if self.optim.len() <= id {
            self.optim.resize_with(id + 1, Default::default);
        }
        let mut state = [0u64; 2];
        for (k, st) in state.iter_mut().enumerate().take(u.state_buffers()) {
            if !matches!(&self.optim[id][k], Some(b) if b.len == len) {
                let b = self.alloc(len, &format!("optimizer state of weight {id}"))?;
                self.optim[id][k] = Some(b);
            }
            *st = self
                .gpu
                .addr(&self.optim[id][k].as_ref().expect("made above").mem);
        }
        if let Some(t) = self.transposed.get_mut(id) {
            *t = None;
        }
        let f = |x: f32| x.to_bits() as u64;
        let scale = grad_scale.map_or(0, f);
        let scaled = (grad_scale.is_some() as u64) << 4;
        match *u {
            Update::Sgd {
                neg_lr,
                wd,
                momentum,
                nesterov,
                first,
                use_wd,
                use_momentum,
            } => {
                let flags = use_wd as u64
                    | (use_momentum as u64) << 1
                    | (nesterov as u64) << 2
                    | (first as u64) << 3
                    | scaled;
                // Without momentum the buffer is never read: any valid address will do.
                let buf = if use_momentum { state[0] } else { p };
                self.launch_ops(
                    "snn_sgd",
                    len,
                    &[
                        p,
                        g,
                        buf,
                        len as u64,
                        f(neg_lr),
                        f(wd),
                        f(momentum),
                        scale,
                        flags,
                    ],
                )
            }
            Update::Adam {
                neg_step_size,
                bc2_sqrt,
                decay,
                wd,
                w,
                small,
                one_minus_w,
                beta2,
                one_minus_b2,
                eps,
                use_wd,
                decoupled,
                first,
            } => {
                let flags = use_wd as u64
                    | (decoupled as u64) << 1
                    | (small as u64) << 2
                    | (first as u64) << 3
                    | scaled;
                self.launch_ops(
                    "snn_adam",
                    len,
                    &[
                        p,
                        g,
                        state[0],
                        state[1],
                        len as u64,
                        f(neg_step_size),
                        f(bc2_sqrt),
                        f(decay),
                        f(wd),
                        f(w),
                        f(one_minus_w),
                        f(beta2),
                        f(one_minus_b2),
                        f(eps),
                        scale,
                        flags,
                    ],
                )
            }
        }
    }

    fn get_optim_state(&mut self, id: WeightId, k: usize, out: &mut [f32]) -> Result<bool> {
        match self
            .optim
            .get(id)
            .and_then(|s| s.get(k))
            .and_then(|b| b.as_ref())
        {
            Some(b) if b.len == out.len() => {
                self.gpu.dtoh(&b.mem, 0, out, "optimizer state")?;
                Ok(true)
            }
            Some(b) => Err(RuntimeError::Device(format!(
                "optimizer state {k} of weight {id} has {} elements, {} requested",
                b.len,
                out.len()
            ))),
            None => Ok(false),
        }
    }

    fn set_optim_state(&mut self, id: WeightId, k: usize, data: &[f32]) -> Result<()> {
        let n = held_len(&self.weights, id).unwrap_or(0);
        check_optim_state(id, k, n, data.len())?;
        if self.optim.len() <= id {
            self.optim.resize_with(id + 1, Default::default);
        }
        if !matches!(&self.optim[id][k], Some(b) if b.len == n) {
            let b = self.alloc(n, &format!("optimizer state of weight {id}"))?;
            self.optim[id][k] = Some(b);
        }
        let b = self.optim[id][k].as_mut().expect("made above");
        self.gpu.htod(data, &mut b.mem, 0, "optimizer state")
    }
}
