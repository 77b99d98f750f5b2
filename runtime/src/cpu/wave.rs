//! Spike-wave ops on the CPU: rank-order latency coding and point-wise lateral inhibition
//! (see [`crate::op::wave`]).

use super::*;
use crate::op::wave::{first_spike_times, inhibit_keep, InhibitDesc, RankCodeDesc, WaveOps};

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
        let at = |t: usize, b: usize, ch: usize, p: usize| t * row + (b * c + ch) * k + p;
        let keep: Vec<usize> = (0..d.batch * k)
            .into_par_iter()
            .map(|i| {
                let (b, p) = (i / k, i % k);
                inhibit_keep(d.t_len, c, d.threshold, |t, ch| x[at(t, b, ch, p)])
            })
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
}
