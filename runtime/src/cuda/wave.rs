//! Spike-wave ops on the CUDA device: rank-order latency coding, point-wise lateral
//! inhibition, k-WTA and the infinite threshold (ops.cuh's `snn_rank_code`, `snn_inhibit`,
//! `snn_wta`, `snn_infinite`).

use super::*;
use crate::op::wave::{InfiniteDesc, InhibitDesc, RankCodeDesc, WaveOps, WtaDesc};

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
    fn inhibit(&mut self, d: &InhibitDesc) -> Result<()> {
        Self::distinct(d.x, d.y, "inhibit")?;
        let pixels = mul(d.batch, d.plane)?;
        let n = mul(d.t_len, mul(d.batch, mul(d.channels, d.plane)?)?)?;
        let x = self.slot_ptr(d.x, n, "inhibit")?;
        let y = self.slot_ptr(d.y, n, "inhibit")?;
        if d.t_len == 0 || d.channels == 0 {
            return Ok(());
        }
        // One thread per (b, pixel), looping over channels and steps.
        self.launch_ops(
            "snn_inhibit",
            pixels,
            &[
                x,
                y,
                pixels as u64,
                d.batch as u64,
                d.channels as u64,
                d.plane as u64,
                d.t_len as u64,
                d.threshold.to_bits() as u64,
            ],
        )
    }
    fn wta(&mut self, d: &WtaDesc) -> Result<()> {
        Self::distinct(d.x, d.y, "wta")?;
        let f = mul(d.channels, mul(d.height, d.width)?)?;
        let row = mul(d.batch, f)?;
        let x = self.slot_ptr(d.x, mul(d.t_len, row)?, "wta")?;
        let y = self.slot_ptr(d.y, row, "wta")?;
        // One thread per sample: it scores, selects and writes its row of `y`.
        self.launch_ops(
            "snn_wta",
            d.batch,
            &[
                x,
                y,
                d.batch as u64,
                d.channels as u64,
                d.height as u64,
                d.width as u64,
                d.t_len as u64,
                d.k as u64,
                d.radius as u64,
                d.threshold.to_bits() as u64,
                d.spikes as u64,
            ],
        )
    }
    fn infinite(&mut self, d: &InfiniteDesc) -> Result<()> {
        Self::distinct(d.x, d.y, "infinite")?;
        let row = mul(d.batch, d.features)?;
        let n = mul(d.t_len, row)?;
        let x = self.slot_ptr(d.x, n, "infinite")?;
        let y = self.slot_ptr(d.y, n, "infinite")?;
        if n == 0 {
            return Ok(());
        }
        self.launch_ops(
            "snn_infinite",
            n,
            &[x, y, n as u64, (n - row) as u64, d.value.to_bits() as u64],
        )
    }
}
