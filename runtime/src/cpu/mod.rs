//! The CPU device: host memory, GEMM/conv through the `gemm` crate, generated kernels
//! called through their C ABI on rayon threads.
//!
//! Kernel launches split each group's `B * F` index space into chunks aligned to 64 indices
//! (a few per thread, so uneven chunks balance out); all groups of one launch share one
//! parallel region. Small launches run as a single chunk on the calling thread, where
//! threading would cost more than it saves.

pub mod ops;
pub mod spike;

use crate::device::{
    ConvDesc, ConvDwDesc, ConvDxDesc, Device, GemmDesc, GemmDwDesc, GemmDxDesc, LaunchDesc, Loc,
    PoolDesc, PoolDxDesc, TimeMixDesc, TimeMixDwDesc,
};
use crate::error::{Result, RuntimeError};
use crate::kernels::KernelTable;
use crate::plan::{KernelArgs, LaunchTime, WeightId};
use crate::train::optim::Update;
use rayon::prelude::*;
use std::ops::Range;

/// Launches with fewer neuron-steps than this run as one chunk on the calling thread.
const SMALL_WORK: usize = 1 << 14;
/// Chunks per thread for a large launch.
const CHUNKS_PER_THREAD: usize = 4;
/// Chunk boundaries are multiples of this many indices.
const CHUNK_ALIGN: usize = 64;
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

impl CpuDevice {
    /// The event-driven form of [`Device::gemm`] (`d.sparse`), on the transposed weight.
    fn spike_gemm(&mut self, d: &GemmDesc) -> Result<()> {
        let w = held(&self.weights, d.w, "gemm", "weight")?;
        if w.len() != mul(d.n, d.k)? {
            return Err(RuntimeError::Device(format!(
                "gemm: weight {} has {} elements, the operation needs {}",
                d.w,
                w.len(),
                d.n * d.k
            )));
        }
        let wt = transposed(&mut self.transposed, d.w, w, d.n, d.k);
        let bias = d
            .bias
            .map(|b| held(&self.weights, b, "gemm", "bias"))
            .transpose()?;
        let (x, y) = pair(
            &mut self.slots,
            d.x,
            mul(d.rows, d.k)?,
            d.y,
            mul(d.rows, d.n)?,
            "gemm",
        )?;
        spike::spike_dense(x, wt, bias, y, d.rows, d.k, d.n, d.accumulate)
    }
}

/// The `[k, n]` transposed copy of weight `id` (`w`, `[n, k]`) that the event-driven kernels
/// read, made on first use; `set_weight` drops it.
fn transposed<'a>(
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

fn range(slots: &[Vec<f32>], loc: Loc, len: usize, what: &str) -> Result<Range<usize>> {
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
fn pair<'a>(
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
fn held<'a>(weights: &'a [Vec<f32>], id: WeightId, op: &str, role: &str) -> Result<&'a [f32]> {
    weights
        .get(id)
        .map(Vec::as_slice)
        .ok_or_else(|| RuntimeError::Device(format!("{op}: {role} {id} was never set")))
}

fn copy_out(src: Option<&Vec<f32>>, what: &str, absent: &str, out: &mut [f32]) -> Result<()> {
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

fn mul(a: usize, b: usize) -> Result<usize> {
    a.checked_mul(b)
        .ok_or_else(|| RuntimeError::Device("operation size overflows".into()))
}

/// The gradients of a weight and of its bias, both mutable.
fn grad_pair<'a>(
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

/// Raw pointers shared by the threads of one launch.
struct LaunchShared {
    bufs: Vec<Vec<*mut f32>>,
    params: Vec<*const f32>,
}
// SAFETY: the pointers address slot, weight and gradient memory owned by the device, which
// outlives the launch; the kernels write disjoint index ranges of the slots (the kernel ABI
// contract), read weights only, and add into gradients with atomic operations.
unsafe impl Sync for LaunchShared {}

impl Device for CpuDevice {
    fn name(&self) -> String {
        format!("cpu ({} threads)", rayon::current_num_threads())
    }

    fn num_kernels(&self) -> usize {
        self.kernels.len()
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

    fn gemm(&mut self, d: &GemmDesc) -> Result<()> {
        if d.sparse {
            return self.spike_gemm(d);
        }
        let w = held(&self.weights, d.w, "gemm", "weight")?;
        let bias = d
            .bias
            .map(|b| held(&self.weights, b, "gemm", "bias"))
            .transpose()?;
        let (x, y) = pair(
            &mut self.slots,
            d.x,
            mul(d.rows, d.k)?,
            d.y,
            mul(d.rows, d.n)?,
            "gemm",
        )?;
        ops::dense(x, w, bias, y, d.rows, d.k, d.n, d.accumulate)
    }

    fn time_mix(&mut self, d: &TimeMixDesc<'_>) -> Result<()> {
        let (x, y) = pair(
            &mut self.slots,
            d.x,
            mul(d.rows_in, d.cols)?,
            d.y,
            mul(d.rows_out, d.cols)?,
            "time_mix",
        )?;
        ops::time_mix(
            d.a,
            d.bias,
            x,
            y,
            d.rows_out,
            d.rows_in,
            d.cols,
            d.accumulate,
        )
    }

    fn gemm_dx(&mut self, d: &GemmDxDesc) -> Result<()> {
        let w = held(&self.weights, d.w, "gemm_dx", "weight")?;
        let (dy, dx) = pair(
            &mut self.slots,
            d.dy,
            mul(d.rows, d.n)?,
            d.dx,
            mul(d.rows, d.k)?,
            "gemm_dx",
        )?;
        ops::dense_dx(dy, w, dx, d.rows, d.k, d.n, d.accumulate)
    }

    fn gemm_dw(&mut self, d: &GemmDwDesc) -> Result<()> {
        let rx = range(&self.slots, d.x, mul(d.rows, d.k)?, "gemm_dw input")?;
        let rdy = range(
            &self.slots,
            d.dy,
            mul(d.rows, d.n)?,
            "gemm_dw output gradient",
        )?;
        if self.grads.len() < self.weights.len() {
            return Err(RuntimeError::Device(
                "gemm_dw: gradients are not allocated (zero_grads first)".into(),
            ));
        }
        let (dw, db) = grad_pair(&mut self.grads, d.w, d.bias, "gemm_dw")?;
        let x = &self.slots[d.x.slot][rx];
        let dy = &self.slots[d.dy.slot][rdy];
        let db = db.map(|v| v.as_mut_slice());
        if d.sparse {
            spike::spike_dense_dw(x, dy, dw, db, d.rows, d.k, d.n)
        } else {
            ops::dense_dw(x, dy, dw, db, d.rows, d.k, d.n)
        }
    }

    fn time_mix_dw(
        &mut self,
        d: &TimeMixDwDesc,
        g: &mut [f32],
        sums: Option<&mut [f32]>,
    ) -> Result<()> {
        let rdy = range(
            &self.slots,
            d.dy,
            mul(d.rows_out, d.cols)?,
            "time_mix_dw dy",
        )?;
        let rx = range(&self.slots, d.x, mul(d.rows_in, d.cols)?, "time_mix_dw x")?;
        let dy = &self.slots[d.dy.slot][rdy];
        let x = &self.slots[d.x.slot][rx];
        ops::time_mix_dw(dy, x, g, sums, d.rows_out, d.rows_in, d.cols, d.band)
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

    fn conv2d(&mut self, d: &ConvDesc) -> Result<()> {
        let g = &d.geom;
        let w = held(&self.weights, d.w, "conv2d", "weight")?;
        let bias = d
            .bias
            .map(|b| held(&self.weights, b, "conv2d", "bias"))
            .transpose()?;
        let xi = mul(mul(g.c_in, g.h)?, g.w)?;
        let yi = mul(mul(g.c_out, g.h_out)?, g.w_out)?;
        let kk = mul(mul(g.c_in, g.kh)?, g.kw)?;
        let (x, y) = pair(
            &mut self.slots,
            d.x,
            mul(d.images, xi)?,
            d.y,
            mul(d.images, yi)?,
            "conv2d",
        )?;
        if d.sparse && w.len() == mul(g.c_out, kk)? {
            let wt = transposed(&mut self.transposed, d.w, w, g.c_out, kk);
            return spike::spike_conv2d(x, wt, bias, y, d.images, g, d.accumulate);
        }
        ops::conv2d(x, w, bias, y, d.images, g, d.accumulate)
    }

    fn pool2d(&mut self, d: &PoolDesc) -> Result<()> {
        let g = &d.geom;
        let xi = mul(mul(g.c, g.h)?, g.w)?;
        let yi = mul(mul(g.c, g.h_out)?, g.w_out)?;
        let (x, y) = pair(
            &mut self.slots,
            d.x,
            mul(d.images, xi)?,
            d.y,
            mul(d.images, yi)?,
            "pool2d",
        )?;
        ops::pool2d(x, y, d.images, d.kind, g)
    }

    fn conv2d_dx(&mut self, d: &ConvDxDesc) -> Result<()> {
        let g = &d.geom;
        let w = held(&self.weights, d.w, "conv2d_dx", "weight")?;
        let xi = mul(mul(g.c_in, g.h)?, g.w)?;
        let yi = mul(mul(g.c_out, g.h_out)?, g.w_out)?;
        let (dy, dx) = pair(
            &mut self.slots,
            d.dy,
            mul(d.images, yi)?,
            d.dx,
            mul(d.images, xi)?,
            "conv2d_dx",
        )?;
        ops::conv2d_dx(dy, w, dx, d.images, g, d.accumulate)
    }

    fn conv2d_dw(&mut self, d: &ConvDwDesc) -> Result<()> {
        let g = &d.geom;
        let xi = mul(mul(g.c_in, g.h)?, g.w)?;
        let yi = mul(mul(g.c_out, g.h_out)?, g.w_out)?;
        let rx = range(&self.slots, d.x, mul(d.images, xi)?, "conv2d_dw input")?;
        let rdy = range(
            &self.slots,
            d.dy,
            mul(d.images, yi)?,
            "conv2d_dw output gradient",
        )?;
        if self.grads.len() < self.weights.len() {
            return Err(RuntimeError::Device(
                "conv2d_dw: gradients are not allocated (zero_grads first)".into(),
            ));
        }
        let (dw, db) = grad_pair(&mut self.grads, d.w, d.bias, "conv2d_dw")?;
        let x = &self.slots[d.x.slot][rx];
        let dy = &self.slots[d.dy.slot][rdy];
        let db = db.map(|v| v.as_mut_slice());
        if d.sparse {
            spike::spike_conv2d_dw(x, dy, dw, db, d.images, g)
        } else {
            ops::conv2d_dw(x, dy, dw, db, d.images, g)
        }
    }

    fn pool2d_dx(&mut self, d: &PoolDxDesc) -> Result<()> {
        let g = &d.geom;
        let xi = mul(mul(g.c, g.h)?, g.w)?;
        let yi = mul(mul(g.c, g.h_out)?, g.w_out)?;
        let rx = range(&self.slots, d.x, mul(d.images, xi)?, "pool2d_dx input")?;
        let rdy = range(
            &self.slots,
            d.dy,
            mul(d.images, yi)?,
            "pool2d_dx output gradient",
        )?;
        let rdx = range(
            &self.slots,
            d.dx,
            mul(d.images, xi)?,
            "pool2d_dx input gradient",
        )?;
        if d.dx.slot == d.x.slot || d.dx.slot == d.dy.slot {
            return Err(RuntimeError::Device(format!(
                "pool2d_dx: the input gradient shares slot {} with an input",
                d.dx.slot
            )));
        }
        // Take the written slot out, so the two read slots stay borrowable.
        let mut dxs = std::mem::take(&mut self.slots[d.dx.slot]);
        let r = ops::pool2d_dx(
            &self.slots[d.x.slot][rx],
            &self.slots[d.dy.slot][rdy],
            &mut dxs[rdx],
            d.images,
            d.kind,
            g,
            d.accumulate,
        );
        self.slots[d.dx.slot] = dxs;
        r
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
            let n = mul(d.batch, g.features)?;
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

    fn sync(&mut self) -> Result<()> {
        Ok(())
    }
}
