//! Spike-wave ops on the CPU: rank-order latency coding, point-wise lateral inhibition,
//! k-WTA and the infinite threshold (see [`crate::op::wave`]).

use super::*;
use crate::op::wave::{
    first_spike_times, wta_scores, wta_select, wta_sentinel, InfiniteDesc, InhibitDesc,
    RankCodeDesc, WaveOps, WtaDesc,
};

impl WaveOps for CpuDevice {
    fn rank_code(&mut self, d: &RankCodeDesc) -> Result<()> {
        let f = d.features;
        let n = mul2(d.batch, f)?;
        let (x, y) = pair(&mut self.slots, d.x, n, d.y, mul2(d.t_len, n)?, "rank_code")?;
        if n == 0 || d.t_len == 0 {
            return Ok(());
        }
        let times: Vec<Vec<u32>> = x
            .par_chunks(f)
            .map(|s| first_spike_times(s, d.t_len, d.sort))
            .collect();
        for (t, row) in y.chunks_mut(n).enumerate() {
            for (sample, out) in times.iter().zip(row.chunks_mut(f)) {
                for (o, &ft) in out.iter_mut().zip(sample) {
                    *o = if ft as usize <= t { 1.0 } else { 0.0 };
                }
            }
        }
        Ok(())
    }
    fn inhibit(&mut self, d: &InhibitDesc) -> Result<()> {
        let (c, k) = (d.channels, d.plane);
        let row = mul2(d.batch, mul2(c, k)?)?;
        let n = mul2(d.t_len, row)?;
        let (x, y) = pair(&mut self.slots, d.x, n, d.y, n, "inhibit")?;
        if n == 0 {
            return Ok(());
        }
        // x[t][b][c][k]: the kept channel of every (b, k), then the masked copy.
        let keep: Vec<usize> = (0..d.batch)
            .into_par_iter()
            .flat_map_iter(|b| inhibit_keep_plane(x, row, b, c, k, d.t_len, d.threshold))
            .collect();
        y.par_chunks_mut(c * k).enumerate().for_each(|(tb, out)| {
            let b = tb % d.batch;
            let src = &x[tb * c * k..(tb + 1) * c * k];
            for ch in 0..c {
                for p in 0..k {
                    let m = if keep[b * k + p] == ch { 1.0 } else { 0.0 };
                    out[ch * k + p] = src[ch * k + p] * m;
                }
            }
        });
        Ok(())
    }
    fn wta(&mut self, d: &WtaDesc) -> Result<()> {
        let f = mul2(d.channels, mul2(d.height, d.width)?)?;
        let row = mul2(d.batch, f)?;
        let (x, y) = pair(&mut self.slots, d.x, mul2(d.t_len, row)?, d.y, row, "wta")?;
        if row == 0 {
            return Ok(());
        }
        // x[t][b][i]; one sample per task, its winners set to 1 in y[b].
        y.par_chunks_mut(f).enumerate().for_each(|(b, out)| {
            out.fill(0.0);
            if d.t_len == 0 {
                return;
            }
            let mut scores = wta_scores(d.t_len, f, d.threshold, d.spikes, |t| {
                &x[t * row + b * f..t * row + (b + 1) * f]
            });
            let geom = (d.channels, d.height, d.width);
            let sentinel = wta_sentinel(d.spikes);
            for w in wta_select(&mut scores, geom, d.k, d.radius, sentinel) {
                out[w] = 1.0;
            }
        });
        Ok(())
    }
    fn infinite(&mut self, d: &InfiniteDesc) -> Result<()> {
        let row = mul2(d.batch, d.features)?;
        let n = mul2(d.t_len, row)?;
        let (x, y) = pair(&mut self.slots, d.x, n, d.y, n, "infinite")?;
        if n == 0 {
            return Ok(());
        }
        let last = n - row;
        y[..last].fill(d.value);
        y[last..].copy_from_slice(&x[last..]);
        Ok(())
    }
}

/// [`crate::op::wave::inhibit_keep`] for every pixel of sample `b` of `x` (`[t_len, batch,
/// channels, plane]`, `row` = one step's length) at once: the same upward scan over the
/// channels with a strict `>`, the same count of steps above `threshold`, but each
/// channel's plane read contiguously (a pixel at a time strides over every channel).
fn inhibit_keep_plane(
    x: &[f32],
    row: usize,
    b: usize,
    channels: usize,
    plane: usize,
    t_len: usize,
    threshold: f32,
) -> Vec<usize> {
    let mut best = vec![0.0f32; plane];
    let mut count = vec![0usize; plane];
    let mut arg = vec![0u32; t_len * plane];
    for t in 0..t_len {
        let src = &x[t * row + b * channels * plane..t * row + (b + 1) * channels * plane];
        let at = &mut arg[t * plane..(t + 1) * plane];
        best.copy_from_slice(&src[..plane]);
        for ch in 1..channels {
            let vs = &src[ch * plane..(ch + 1) * plane];
            for ((bv, a), &v) in best.iter_mut().zip(at.iter_mut()).zip(vs) {
                if v > *bv {
                    *bv = v;
                    *a = ch as u32;
                }
            }
        }
        for (n, &bv) in count.iter_mut().zip(&best) {
            *n += (bv > threshold) as usize;
        }
    }
    (0..plane)
        .map(|p| arg[(t_len - count[p].max(1)) * plane + p] as usize)
        .collect()
}
