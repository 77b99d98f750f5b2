//! Local learning on the CUDA device: the generated plasticity kernel, one thread per
//! postsynaptic map (each walks the batch in order; see [`crate::op::plastic`]). The
//! rule's f64 parameters travel as pairs of f32 words holding their bits.

use super::*;
use crate::op::plastic::{PlasticDesc, PlasticOps};

impl<G: Gpu> PlasticOps for CudaDevice<G> {
    fn plastic(&mut self, d: &PlasticDesc<'_>) -> Result<()> {
        if d.kernel >= self.gpu.num_generated() {
            return Err(RuntimeError::Device(format!(
                "plasticity kernel {}: the module has {} kernels",
                d.kernel,
                self.gpu.num_generated()
            )));
        }
        let g = d.geom;
        let what = "plasticity";
        let seq = |feat: usize| mul(d.t_len, mul(d.batch, feat)?);
        let w = self.weight_ptr(d.weight, g.synapses(), what)?;
        let pre = self.slot_ptr(d.pre, seq(g.pre_features())?, what)?;
        let post = self.slot_ptr(d.post, seq(g.post_features())?, what)?;
        let gate = match d.gate {
            Some(l) => self.slot_ptr(l, mul(d.batch, g.post_features())?, what)?,
            None => 0,
        };
        let reward = match d.reward {
            Some(l) => self.slot_ptr(l, d.batch, what)?,
            None => 0,
        };
        let mut states = Vec::with_capacity(d.states.len());
        for &st in d.states {
            states.push(self.weight_ptr(st, g.synapses(), what)?);
        }
        // The f64 parameters' bits as f32 words (little-endian, as the GPU reads them).
        let words: Vec<f32> = d
            .params
            .iter()
            .flat_map(|p| {
                let b = p.to_bits();
                [f32::from_bits(b as u32), f32::from_bits((b >> 32) as u32)]
            })
            .collect();
        let params = if words.is_empty() {
            0
        } else {
            let buf = grown(&mut self.gpu, &mut self.mix_scratch, words.len(), what)?;
            self.gpu.htod(&words, &mut buf.mem, 0, "rule parameters")?;
            self.gpu.addr(&buf.mem)
        };
        if let Some(t) = self.transposed.get_mut(d.weight) {
            *t = None;
        }
        let maps = g.maps();
        if maps == 0 {
            return Ok(());
        }
        let mut args = vec![w, pre, post, gate, reward];
        args.extend(states);
        args.extend([
            params,
            d.t_len as u64,
            0,
            d.batch as u64,
            maps as u64,
            0,
            maps as u64,
        ]);
        let cfg = grid(maps, what)?;
        self.gpu
            .launch(Kernel::Generated(d.kernel), cfg, &args, "plasticity kernel")
    }
}
