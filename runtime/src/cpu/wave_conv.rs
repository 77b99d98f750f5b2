//! The wave form of conv2d on the CPU ([`crate::op::conv::ConvWaveDesc`]): one first-spike
//! map per sample, each spiking input's weight column added into a per-step accumulator at
//! its first-spike time, a prefix sum over time; the dense conv of every step for a sample
//! that is not a cumulative 0/1 wave.

use super::conv::{check_conv, conv2d};
use super::matmul::check_len;
use super::*;
use crate::plan::ConvGeom;

/// The first-spike time of each of the `xi` inputs of sample `b` of `x` (`[t_len, batch,
/// xi]`), `t_len` for an input that never fires; `None` when the sample is not a cumulative
/// 0/1 wave (a value other than 0 and 1, or a 0 after a 1).
pub fn first_spike_map(
    x: &[f32],
    t_len: usize,
    batch: usize,
    xi: usize,
    b: usize,
) -> Option<Vec<u32>> {
    let never = t_len as u32;
    let mut fs = vec![never; xi];
    for t in 0..t_len {
        let row = &x[(t * batch + b) * xi..(t * batch + b + 1) * xi];
        for (f, &v) in fs.iter_mut().zip(row) {
            if v == 1.0 {
                if *f == never {
                    *f = t as u32;
                }
            } else if v != 0.0 || *f != never {
                return None;
            }
        }
    }
    Some(fs)
}

thread_local! {
    /// A thread's per-step accumulator (reused: a fresh one per task would be a fresh
    /// mapping, zeroed by the kernel, for the larger layers).
    static ACC: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `y` written from several rayon tasks at disjoint `(sample, output row)` positions.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: every task writes only the elements of its own (sample, output row); see below.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// Element `i` (a method, so that closures capture the whole `Sync` wrapper).
    ///
    /// # Safety
    /// `i` must be inside the output slice.
    unsafe fn at(self, i: usize) -> *mut f32 {
        self.0.add(i)
    }
}

/// Wave conv2d: `x` `[t_len, batch, c_in, h, w]`, `w` `[c_out, kk]`, `wt` its transpose
/// `[kk, c_out]` (tap `(c*kh + ky)*kw + kx`), `bias` `[c_out]`, `y` `[t_len, batch, c_out,
/// h_out, w_out]` (+)=. For a wave sample, output `(z, oy, ox)` at step `t` is
/// `prefix + bias`, where `acc[t']` sums (taps ascending) the weights of the taps whose input
/// first fires at `t'`, and `prefix = acc[t] + prefix(t - 1)`: the order of
/// `snn_wave_conv2d` in ops.cuh (bit-identical). Other samples run [`conv2d`] per step.
#[allow(clippy::too_many_arguments)]
pub fn wave_conv2d(
    x: &[f32],
    w: &[f32],
    wt: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    t_len: usize,
    batch: usize,
    g: &ConvGeom,
    accumulate: bool,
) -> Result<()> {
    check_conv(g)?;
    let xi = mul2(mul2(g.c_in, g.h)?, g.w)?;
    let p = mul2(g.h_out, g.w_out)?;
    let yi = mul2(g.c_out, p)?;
    let kk = mul2(mul2(g.c_in, g.kh)?, g.kw)?;
    let rows = mul2(t_len, batch)?;
    check_len("wave conv2d input", x.len(), mul2(rows, xi)?)?;
    check_len("wave conv2d output", y.len(), mul2(rows, yi)?)?;
    check_len("wave conv2d weight", w.len(), mul2(g.c_out, kk)?)?;
    check_len("wave conv2d weight", wt.len(), mul2(g.c_out, kk)?)?;
    if let Some(b) = bias {
        check_len("wave conv2d bias", b.len(), g.c_out)?;
    }
    if rows == 0 || xi == 0 || yi == 0 {
        return Ok(());
    }
    let maps: Vec<Option<Vec<u32>>> = (0..batch)
        .into_par_iter()
        .map(|b| first_spike_map(x, t_len, batch, xi, b))
        .collect();
    let (n, wo) = (g.c_out, g.w_out);
    let tasks: Vec<(usize, usize)> = (0..batch)
        .filter(|&b| maps[b].is_some())
        .flat_map(|b| (0..g.h_out).map(move |oy| (b, oy)))
        .collect();
    let out = OutPtr(y.as_mut_ptr());
    // One output row of one sample per task: the accumulator is `[t_len, w_out, c_out]`, so
    // a spiking input adds its weight column as one contiguous vector over the channels.
    let row = |acc: &mut Vec<f32>, b: usize, oy: usize| {
        let fs = maps[b].as_deref().expect("tasks only hold wave samples");
        let plane = wo * n;
        acc.clear();
        acc.resize(t_len * plane, 0.0f32);
        for ox in 0..wo {
            for c in 0..g.c_in {
                for ky in 0..g.kh {
                    let iy = (oy * g.stride + ky) as isize - g.pad as isize;
                    if iy < 0 || iy >= g.h as isize {
                        continue;
                    }
                    for kx in 0..g.kw {
                        let ix = (ox * g.stride + kx) as isize - g.pad as isize;
                        if ix < 0 || ix >= g.w as isize {
                            continue;
                        }
                        let tf = fs[(c * g.h + iy as usize) * g.w + ix as usize] as usize;
                        if tf >= t_len {
                            continue;
                        }
                        let tap = (c * g.kh + ky) * g.kw + kx;
                        let col = &wt[tap * n..(tap + 1) * n];
                        let a = &mut acc[tf * plane + ox * n..tf * plane + (ox + 1) * n];
                        for (a, &v) in a.iter_mut().zip(col) {
                            *a += v;
                        }
                    }
                }
            }
        }
        for t in 1..t_len {
            let (before, from) = acc.split_at_mut(t * plane);
            let prev = &before[(t - 1) * plane..];
            for (a, &v) in from[..plane].iter_mut().zip(prev) {
                *a += v;
            }
        }
        for t in 0..t_len {
            let base = (t * batch + b) * yi + oy * wo;
            let at = &acc[t * plane..(t + 1) * plane];
            for z in 0..n {
                let bz = bias.map(|bs| bs[z]);
                for ox in 0..wo {
                    let s = at[ox * n + z];
                    let v = match bz {
                        Some(bz) => s + bz,
                        None => s,
                    };
                    // SAFETY: in bounds (lengths checked above); only this task writes
                    // sample `b`'s output row `oy`.
                    unsafe {
                        let d = out.at(base + z * p + ox);
                        *d = if accumulate { *d + v } else { v };
                    }
                }
            }
        }
    };
    tasks
        .par_iter()
        .for_each(|&(b, oy)| ACC.with_borrow_mut(|acc| row(acc, b, oy)));
    for (b, map) in maps.iter().enumerate() {
        if map.is_some() {
            continue;
        }
        for t in 0..t_len {
            let (xo, yo) = ((t * batch + b) * xi, (t * batch + b) * yi);
            conv2d(
                &x[xo..xo + xi],
                w,
                bias,
                &mut y[yo..yo + yi],
                1,
                g,
                accumulate,
            )?;
        }
    }
    Ok(())
}
