//! Launches of the generated kernels through their C ABI on rayon threads.
//!
//! A launch splits each group's `B * F` index space into chunks aligned to 64 indices (a few
//! per thread, so uneven chunks balance out); all groups of one launch share one parallel
//! region. Small launches run as a single chunk on the calling thread, where threading would
//! cost more than it saves.

use super::*;
use crate::device::{Kernels, LaunchDesc};
use crate::error::{Result, RuntimeError};
use crate::plan::{KernelArgs, LaunchTime};
use rayon::prelude::*;

/// Launches with fewer neuron-steps than this run as one chunk on the calling thread.
const SMALL_WORK: usize = 1 << 14;
/// Chunks per thread for a large launch.
const CHUNKS_PER_THREAD: usize = 4;
/// Chunk boundaries are multiples of this many indices.
const CHUNK_ALIGN: usize = 64;

/// Raw pointers shared by the threads of one launch.
struct LaunchShared {
    bufs: Vec<Vec<*mut f32>>,
    params: Vec<*const f32>,
}
// SAFETY: the pointers address slot, weight and gradient memory owned by the device, which
// outlives the launch; the kernels write disjoint index ranges of the slots (the kernel ABI
// contract), read weights only, and add into gradients with atomic operations.
unsafe impl Sync for LaunchShared {}

impl Kernels for CpuDevice {
    fn num_kernels(&self) -> usize {
        self.kernels.len()
    }

    fn launch(&mut self, d: &LaunchDesc<'_>) -> Result<()> {
        let f = self.kernels.get(d.kernel).ok_or_else(|| {
            RuntimeError::Device(format!(
                "launch of kernel {}: the kernel table has {} kernels",
                d.kernel,
                self.kernels.len()
            ))
        })?;
        let mut shared = LaunchShared {
            bufs: Vec::with_capacity(d.groups.len()),
            params: Vec::with_capacity(d.groups.len()),
        };
        let mut sizes = Vec::with_capacity(d.groups.len());
        for g in d.groups {
            if g.params > self.params.len() {
                return Err(RuntimeError::Device(format!(
                    "launch: parameter offset {} is beyond the {} parameters",
                    g.params,
                    self.params.len()
                )));
            }
            let n = mul2(d.batch, g.features)?;
            let mut ptrs = Vec::with_capacity(g.slots.len() + g.weights.len());
            for &s in &g.slots {
                range(&self.slots, Loc::new(s, 0), n, "launch")?;
                ptrs.push(self.slots[s].as_mut_ptr());
            }
            for w in &g.weights {
                let (store, what) = if w.grad {
                    (&mut self.grads, "gradient")
                } else {
                    (&mut self.weights, "weight")
                };
                let v = store
                    .get_mut(w.id)
                    .filter(|v| v.len() == w.len)
                    .ok_or_else(|| {
                        RuntimeError::Device(format!(
                            "launch: {what} {} is not allocated with {} elements{}",
                            w.id,
                            w.len,
                            if w.grad { " (zero_grads first)" } else { "" }
                        ))
                    })?;
                // Read-only for a weight; the kernel adds into a gradient atomically.
                ptrs.push(v.as_mut_ptr());
            }
            shared.bufs.push(ptrs);
            // SAFETY: g.params <= params.len() (one past the end at most).
            shared
                .params
                .push(unsafe { self.params.as_ptr().add(g.params) });
            sizes.push(n);
        }

        let threads = rayon::current_num_threads().max(1);
        let steps = match d.time {
            LaunchTime::Seq => d.t_len.max(1),
            LaunchTime::Step => 1,
        };
        let mut tasks: Vec<(usize, usize, usize)> = Vec::new();
        for (gi, &n) in sizes.iter().enumerate() {
            if n == 0 {
                continue;
            }
            if threads == 1 || n.saturating_mul(steps) < SMALL_WORK {
                tasks.push((gi, 0, n));
                continue;
            }
            let chunk = n
                .div_ceil(threads * CHUNKS_PER_THREAD)
                .next_multiple_of(CHUNK_ALIGN)
                .max(CHUNK_ALIGN);
            let mut lo = 0;
            while lo < n {
                let hi = (lo + chunk).min(n);
                tasks.push((gi, lo, hi));
                lo = hi;
            }
        }

        // Capture the whole (Sync) struct, not its fields.
        let shared = &shared;
        let run = |&(gi, lo, hi): &(usize, usize, usize)| {
            let args = KernelArgs {
                bufs: shared.bufs[gi].as_ptr(),
                params: shared.params[gi],
                t_len: d.t_len,
                t_step: d.t_step,
                batch: d.batch,
                features: d.groups[gi].features,
                lo,
                hi,
            };
            // SAFETY: the kernel follows the KernelArgs ABI; its buffers are the slots the
            // plan assigned, sized by the executor for (t_len, batch).
            unsafe { f(&args) };
        };
        if tasks.len() <= 1 {
            tasks.iter().for_each(run);
        } else {
            tasks.par_iter().for_each(run);
        }
        Ok(())
    }
}
