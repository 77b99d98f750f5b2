//! Launches of the generated kernels on the CUDA device.

use super::*;
use crate::device::{Kernels, LaunchDesc};

impl<G: Gpu> Kernels for CudaDevice<G> {
    fn num_kernels(&self) -> usize {
        self.gpu.num_generated()
    }

    fn launch(&mut self, d: &LaunchDesc<'_>) -> Result<()> {
        if d.kernel >= self.gpu.num_generated() {
            return Err(RuntimeError::Device(format!(
                "launch of kernel {}: the module has {} kernels",
                d.kernel,
                self.gpu.num_generated()
            )));
        }
        let params = self
            .params
            .as_ref()
            .ok_or_else(|| RuntimeError::Device("launch: parameters were never set".into()))?;
        let params_base = self.gpu.addr(&params.mem);
        for g in d.groups {
            if g.params > params.len {
                return Err(RuntimeError::Device(format!(
                    "launch: parameter offset {} is beyond the {} parameters",
                    g.params, params.len
                )));
            }
            let n = mul(d.batch, g.features)?;
            let mut args: Vec<u64> = Vec::with_capacity(g.slots.len() + g.weights.len() + 7);
            for &s in &g.slots {
                args.push(self.slot_ptr(Loc::new(s, 0), n, "launch")?);
            }
            for w in &g.weights {
                args.push(if w.grad {
                    self.grad_ptr(w.id, w.len, "launch")?
                } else {
                    self.weight_ptr(w.id, w.len, "launch")?
                });
            }
            args.push(params_base + 4 * g.params as u64);
            args.extend([
                d.t_len as u64,
                d.t_step as u64,
                d.batch as u64,
                g.features as u64,
                0,
                n as u64,
            ]);
            if n == 0 {
                continue;
            }
            // Generated kernels take one pointer per buffer, one per weight, the parameter
            // pointer and six u64 (compiler/src/back/cuda.rs); every buffer holds B * F
            // elements and every weight the elements it is read at (checked above); threads
            // write only their own index, and add into gradients with atomicAdd.
            let cfg = grid(n, "launch")?;
            self.gpu
                .launch(Kernel::Generated(d.kernel), cfg, &args, "generated kernel")?;
        }
        Ok(())
    }
}
