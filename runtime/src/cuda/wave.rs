//! Spike-wave ops on the CUDA device: rank-order latency coding (ops.cuh's
//! `snn_rank_code`).

use super::*;
use crate::op::wave::{RankCodeDesc, WaveOps};

impl<G: Gpu> WaveOps for CudaDevice<G> {
    fn rank_code(&mut self, d: &RankCodeDesc) -> Result<()> {
        Self::distinct(d.x, d.y, "rank_code")?;
        let n = mul(d.batch, d.features)?;
        let x = self.slot_ptr(d.x, n, "rank_code")?;
        let y = self.slot_ptr(d.y, mul(d.t_len, n)?, "rank_code")?;
        if d.t_len == 0 {
            return Ok(());
        }
        self.launch_ops(
            "snn_rank_code",
            n,
            &[
                x,
                y,
                n as u64,
                d.features as u64,
                d.t_len as u64,
                d.sort as u64,
            ],
        )
    }
}
