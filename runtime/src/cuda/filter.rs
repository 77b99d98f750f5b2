//! The output step of Spyker's filters on the CUDA device (ops.cuh's `snn_filter_out`).

use super::*;
use crate::op::filter::{FilterDesc, FilterOps};

impl<G: Gpu> FilterOps for CudaDevice<G> {
    fn filter_out(&mut self, d: &FilterDesc) -> Result<()> {
        Self::distinct(d.x, d.y, "filter_out")?;
        let (fx, fy) = d.features()?;
        let x = self.slot_ptr(d.x, mul(d.images, fx)?, "filter_out")?;
        let y = self.slot_ptr(d.y, mul(d.images, fy)?, "filter_out")?;
        let n = mul(d.images, fy)?;
        self.launch_ops(
            "snn_filter_out",
            n,
            &[
                x,
                y,
                n as u64,
                d.n as u64,
                d.plane as u64,
                d.step.code(),
                d.threshold.is_some() as u64,
                d.threshold.unwrap_or(0.0).to_bits() as u64,
            ],
        )
    }
}
