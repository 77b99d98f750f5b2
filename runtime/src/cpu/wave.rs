//! Spike-wave ops on the CPU: rank-order latency coding (see [`crate::op::wave`]).

use super::*;
use crate::op::wave::{first_spike_times, RankCodeDesc, WaveOps};

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
}
