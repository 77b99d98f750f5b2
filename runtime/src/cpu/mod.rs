//! The CPU device: host memory, GEMM/conv through the `gemm` crate, generated kernels
//! called through their C ABI on rayon threads. This file holds the device's memory (the
//! [`Memory`] trait); each other concern and op family implements its trait in a file of its
//! own (`dense.rs`, `conv.rs`, `pool.rs`, `time_mix.rs`, `filter.rs`, `wave.rs`, `plastic.rs`, `launch.rs`, `optim.rs`), with the
//! numerics on host slices beside it. [`ops`] gathers the slice-level functions for tests.

pub(crate) mod conv;
pub(crate) mod dense;
pub(crate) mod filter;
mod launch;
pub(crate) mod matmul;
pub mod ops;
mod optim;
mod plastic;
pub(crate) mod pool;
pub mod spike;
mod time_mix;
mod wave;
pub mod wave_conv;

use crate::device::{Loc, Memory};
use crate::error::{Result, RuntimeError};
use crate::kernels::KernelTable;
use crate::plan::WeightId;
use rayon::prelude::*;
use std::ops::Range;

/// Whether this CPU runs the AVX-512 code paths (`avx512f` with `fma`, the features they
/// are compiled for); the rest of the runtime is built for baseline x86-64.
pub(crate) fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}
/// Host copies (upload, download, zero) of at least this many elements are split into
/// pieces of `COPY_PIECE` run on the rayon threads: one core does not saturate the memory
/// bus, and pieces this size stay below glibc's non-temporal `memcpy` threshold, whose
/// streaming stores are slower than ordinary ones on the dev VM (BENCHMARKS.md,
/// "lif-fwdbwd profile").
const PAR_COPY: usize = 1 << 20;
const COPY_PIECE: usize = 1 << 16;

/// `dst.copy_from_slice(src)`, in parallel pieces when large.
fn copy(dst: &mut [f32], src: &[f32]) {
    if dst.len() < PAR_COPY || rayon::current_num_threads() < 2 {
        dst.copy_from_slice(src);
    } else {
        dst.par_chunks_mut(COPY_PIECE)
            .zip(src.par_chunks(COPY_PIECE))
            .for_each(|(d, s)| d.copy_from_slice(s));
    }
}

/// `dst.fill(0.0)`, in parallel pieces when large.
fn fill_zero(dst: &mut [f32]) {
    if dst.len() < PAR_COPY || rayon::current_num_threads() < 2 {
        dst.fill(0.0);
    } else {
        dst.par_chunks_mut(COPY_PIECE).for_each(|d| d.fill(0.0));
    }
}

/// Host-memory device.
pub struct CpuDevice {
    kernels: KernelTable,
    slots: Vec<Vec<f32>>,
    weights: Vec<Vec<f32>>,
    /// Weight gradients, same shapes as `weights` (allocated by `zero_grads`).
    grads: Vec<Vec<f32>>,
    params: Vec<f32>,
    /// Transposed copies (`[k, n]`) of the weights the event-driven GEMM reads, built on
    /// first use and dropped by `set_weight` (every weight change goes through it: loading,
    /// `set_all_weights` after an optimizer step).
    transposed: Vec<Option<Vec<f32>>>,
    /// Optimizer state per weight (`optim_step`): momentum or `exp_avg`, then `exp_avg_sq`.
    optim: Vec<[Vec<f32>; 2]>,
}

impl CpuDevice {
    pub fn new(kernels: KernelTable) -> CpuDevice {
        CpuDevice {
            kernels,
            slots: Vec::new(),
            weights: Vec::new(),
            grads: Vec::new(),
            params: Vec::new(),
            transposed: Vec::new(),
            optim: Vec::new(),
        }
    }

    pub fn kernels(&self) -> &KernelTable {
        &self.kernels
    }

    /// Current slot sizes in elements.
    pub fn slot_sizes(&self) -> Vec<usize> {
        self.slots.iter().map(|s| s.len()).collect()
    }
}

/// The `[k, n]` transposed copy of weight `id` (`w`, `[n, k]`) that the event-driven kernels
/// read, made on first use; `set_weight` drops it.
pub(crate) fn transposed<'a>(
    cache: &'a mut Vec<Option<Vec<f32>>>,
    id: WeightId,
    w: &[f32],
    n: usize,
    k: usize,
) -> &'a [f32] {
    if cache.len() <= id {
        cache.resize_with(id + 1, || None);
    }
    cache[id].get_or_insert_with(|| spike::transpose(w, n, k))
}

impl std::fmt::Debug for CpuDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuDevice")
            .field("kernels", &self.kernels)
            .field("slots", &self.slot_sizes())
            .finish()
    }
}

pub(crate) fn range(slots: &[Vec<f32>], loc: Loc, len: usize, what: &str) -> Result<Range<usize>> {
    let slot = slots
        .get(loc.slot)
        .ok_or_else(|| RuntimeError::Device(format!("{what}: slot {} does not exist", loc.slot)))?;
    let end = loc.offset.checked_add(len).filter(|&e| e <= slot.len());
    match end {
        Some(end) => Ok(loc.offset..end),
        None => Err(RuntimeError::Device(format!(
            "{what}: elements {}..{} are outside slot {} ({} elements)",
            loc.offset,
            loc.offset.saturating_add(len),
            loc.slot,
            slot.len()
        ))),
    }
}

/// `(&slots[a][ra], &mut slots[b][rb])` for distinct slots.
pub(crate) fn pair<'a>(
    slots: &'a mut [Vec<f32>],
    a: Loc,
    alen: usize,
    b: Loc,
    blen: usize,
    what: &str,
) -> Result<(&'a [f32], &'a mut [f32])> {
    let ra = range(slots, a, alen, what)?;
    let rb = range(slots, b, blen, what)?;
    if a.slot == b.slot {
        return Err(RuntimeError::Device(format!(
            "{what}: input and output share slot {}",
            a.slot
        )));
    }
    let (x, y) = if a.slot < b.slot {
        let (lo, hi) = slots.split_at_mut(b.slot);
        (&lo[a.slot], &mut hi[0])
    } else {
        let (lo, hi) = slots.split_at_mut(a.slot);
        (&hi[0], &mut lo[b.slot])
    };
    Ok((&x[ra], &mut y[rb]))
}

/// Copies a whole weight-sized host buffer into `out`.
/// A weight the device holds, or an error naming the operation and the weight's role.
pub(crate) fn held<'a>(
    weights: &'a [Vec<f32>],
    id: WeightId,
    op: &str,
    role: &str,
) -> Result<&'a [f32]> {
    weights
        .get(id)
        .map(Vec::as_slice)
        .ok_or_else(|| RuntimeError::Device(format!("{op}: {role} {id} was never set")))
}

pub(crate) fn copy_out(
    src: Option<&Vec<f32>>,
    what: &str,
    absent: &str,
    out: &mut [f32],
) -> Result<()> {
    let src = src.ok_or_else(|| RuntimeError::Device(format!("{what} {absent}")))?;
    if src.len() != out.len() {
        return Err(RuntimeError::Device(format!(
            "{what} has {} elements, {} requested",
            src.len(),
            out.len()
        )));
    }
    out.copy_from_slice(src);
    Ok(())
}

pub(crate) fn mul2(a: usize, b: usize) -> Result<usize> {
    a.checked_mul(b)
        .ok_or_else(|| RuntimeError::Device("operation size overflows".into()))
}

/// The gradients of a weight and of its bias, both mutable.
pub(crate) fn grad_pair<'a>(
    grads: &'a mut [Vec<f32>],
    w: WeightId,
    bias: Option<WeightId>,
    what: &str,
) -> Result<(&'a mut Vec<f32>, Option<&'a mut Vec<f32>>)> {
    let n = grads.len();
    if w >= n || bias.is_some_and(|b| b >= n) {
        return Err(RuntimeError::Device(format!(
            "{what}: gradients are not allocated (zero_grads first)"
        )));
    }
    Ok(match bias {
        Some(b) if b != w => {
            if w < b {
                let (lo, hi) = grads.split_at_mut(b);
                (&mut lo[w], Some(&mut hi[0]))
            } else {
                let (lo, hi) = grads.split_at_mut(w);
                (&mut hi[0], Some(&mut lo[b]))
            }
        }
        Some(_) => {
            return Err(RuntimeError::Device(format!(
                "{what}: weight and bias are the same tensor"
            )))
        }
        None => (&mut grads[w], None),
    })
}

impl Memory for CpuDevice {
    fn name(&self) -> String {
        format!("cpu ({} threads)", rayon::current_num_threads())
    }

    fn alloc_slots(&mut self, sizes: &[usize]) -> Result<()> {
        self.slots.truncate(sizes.len());
        self.slots.resize_with(sizes.len(), Vec::new);
        for (i, (slot, &size)) in self.slots.iter_mut().zip(sizes).enumerate() {
            if slot.len() == size {
                continue;
            }
            let mut v: Vec<f32> = Vec::new();
            v.try_reserve_exact(size).map_err(|_| {
                RuntimeError::Device(format!(
                    "out of memory allocating slot {i} ({} MiB); hint: reduce T or the batch size",
                    size.saturating_mul(4) >> 20
                ))
            })?;
            v.resize(size, 0.0);
            *slot = v;
        }
        Ok(())
    }

    fn set_weight(&mut self, id: WeightId, data: &[f32]) -> Result<()> {
        if self.weights.len() <= id {
            self.weights.resize_with(id + 1, Vec::new);
        }
        let w = &mut self.weights[id];
        w.clear();
        w.extend_from_slice(data);
        if let Some(t) = self.transposed.get_mut(id) {
            *t = None;
        }
        Ok(())
    }

    fn get_weight(&mut self, id: WeightId, out: &mut [f32]) -> Result<()> {
        copy_out(
            self.weights.get(id),
            &format!("weight {id}"),
            "was never set",
            out,
        )
    }

    fn set_params(&mut self, params: &[f32]) -> Result<()> {
        self.params.clear();
        self.params.extend_from_slice(params);
        Ok(())
    }

    fn upload(&mut self, dst: Loc, data: &[f32]) -> Result<()> {
        let r = range(&self.slots, dst, data.len(), "upload")?;
        copy(&mut self.slots[dst.slot][r], data);
        Ok(())
    }

    fn download(&mut self, src: Loc, out: &mut [f32]) -> Result<()> {
        let r = range(&self.slots, src, out.len(), "download")?;
        copy(out, &self.slots[src.slot][r]);
        Ok(())
    }

    fn zero(&mut self, dst: Loc, len: usize) -> Result<()> {
        let r = range(&self.slots, dst, len, "zero")?;
        fill_zero(&mut self.slots[dst.slot][r]);
        Ok(())
    }

    fn count_nonzero(&mut self, src: Loc, len: usize) -> Result<usize> {
        let r = range(&self.slots, src, len, "count_nonzero")?;
        Ok(self.slots[src.slot][r]
            .iter()
            .filter(|&&v| v != 0.0)
            .count())
    }

    fn add_grad(&mut self, id: WeightId, data: &[f32]) -> Result<()> {
        let g = self.grads.get_mut(id).ok_or_else(|| {
            RuntimeError::Device(format!(
                "add_grad: gradient {id} is not allocated (zero_grads first)"
            ))
        })?;
        if g.len() != data.len() {
            return Err(RuntimeError::Device(format!(
                "add_grad: gradient {id} has {} elements, {} given",
                g.len(),
                data.len()
            )));
        }
        g.iter_mut().zip(data).for_each(|(o, &v)| *o += v);
        Ok(())
    }

    fn zero_grads(&mut self) -> Result<()> {
        self.grads.resize_with(self.weights.len(), Vec::new);
        for (g, w) in self.grads.iter_mut().zip(&self.weights) {
            g.clear();
            g.resize(w.len(), 0.0);
        }
        Ok(())
    }

    fn get_grad(&mut self, id: WeightId, out: &mut [f32]) -> Result<()> {
        copy_out(
            self.grads.get(id),
            &format!("gradient {id}"),
            "was never computed",
            out,
        )
    }

    fn sync(&mut self) -> Result<()> {
        Ok(())
    }
}
