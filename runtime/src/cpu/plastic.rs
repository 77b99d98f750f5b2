//! Local learning on the CPU: the generated plasticity kernel over ranges of postsynaptic
//! maps in parallel (each map's synapses belong to one call; see [`crate::op::plastic`]).

use super::*;
use crate::op::plastic::{PlasticDesc, PlasticOps};
use crate::plan::KernelArgs;

impl PlasticOps for CpuDevice {
    fn plastic(&mut self, d: &PlasticDesc<'_>) -> Result<()> {
        let f = self.kernels.get(d.kernel).ok_or_else(|| {
            RuntimeError::Device(format!(
                "plasticity kernel {}: the kernel table has {} kernels",
                d.kernel,
                self.kernels.len()
            ))
        })?;
        let g = d.geom;
        let seq = |feat: usize| mul2(d.t_len, mul2(d.batch, feat)?);
        let mut ptrs: Vec<*mut f32> = Vec::with_capacity(5);
        let w = self
            .weights
            .get_mut(d.weight)
            .filter(|v| v.len() == g.synapses())
            .ok_or_else(|| {
                RuntimeError::Device(format!(
                    "plasticity: weight {} is not allocated with {} elements",
                    d.weight,
                    g.synapses()
                ))
            })?;
        ptrs.push(w.as_mut_ptr());
        for (loc, len, what) in [
            (Some(d.pre), seq(g.pre_features())?, "plasticity (pre)"),
            (Some(d.post), seq(g.post_features())?, "plasticity (post)"),
            (
                d.gate,
                mul2(d.batch, g.post_features())?,
                "plasticity (gate)",
            ),
            (d.reward, d.batch, "plasticity (reward)"),
        ] {
            match loc {
                Some(loc) => {
                    let r = range(&self.slots, loc, len, what)?;
                    // SAFETY: `range` checked that the slot holds `r`.
                    ptrs.push(unsafe { self.slots[loc.slot].as_mut_ptr().add(r.start) });
                }
                None => ptrs.push(std::ptr::null_mut()),
            }
        }
        for &st in d.states {
            let v = self
                .weights
                .get_mut(st)
                .filter(|v| v.len() == g.synapses())
                .ok_or_else(|| {
                    RuntimeError::Device(format!(
                        "plasticity: state weight {st} is not allocated with {} elements",
                        g.synapses()
                    ))
                })?;
            ptrs.push(v.as_mut_ptr());
        }
        // The event-driven GEMM's transposed copy of this weight is now stale.
        if let Some(t) = self.transposed.get_mut(d.weight) {
            *t = None;
        }
        let maps = g.maps();
        let threads = rayon::current_num_threads().max(1);
        let chunk = maps.div_ceil(threads).max(1);
        let shared = SharedPtrs(ptrs);
        let shared = &shared;
        let run = |lo: usize| {
            let args = KernelArgs {
                bufs: shared.0.as_ptr(),
                // The rule's parameters are f64 (module documentation).
                params: d.params.as_ptr() as *const f32,
                t_len: d.t_len,
                t_step: 0,
                batch: d.batch,
                features: maps,
                lo,
                hi: (lo + chunk).min(maps),
            };
            // SAFETY: the kernel follows the plasticity ABI; the pointers were checked
            // against the plan's sizes above, and maps `lo..hi` own disjoint weights.
            unsafe { f(&args) };
        };
        let starts: Vec<usize> = (0..maps).step_by(chunk).collect();
        starts.par_iter().for_each(|&lo| run(lo));
        Ok(())
    }
}

/// The kernel's argument pointers, shared by the threads (each writes its own maps).
struct SharedPtrs(Vec<*mut f32>);
// SAFETY: the threads write disjoint parts of the weight and only read the rest.
unsafe impl Sync for SharedPtrs {}
