//! Pooling on the CUDA device (ops.cuh's pooling kernels).

use super::*;
use crate::op::pool::{PoolDesc, PoolDxDesc, PoolOps};

impl<G: Gpu> PoolOps for CudaDevice<G> {
    fn pool2d(&mut self, d: &PoolDesc) -> Result<()> {
        let g = &d.geom;
        crate::cpu::pool::check_pool(g)?;
        Self::distinct(d.x, d.y, "pool2d")?;
        let pin = mul(g.h, g.w)?;
        let pout = mul(g.h_out, g.w_out)?;
        let planes = mul(d.images, g.c)?;
        let x = self.slot_ptr(d.x, mul(planes, pin)?, "pool2d")?;
        let y = self.slot_ptr(d.y, mul(planes, pout)?, "pool2d")?;
        if planes == 0 || pout == 0 || pin == 0 {
            return Ok(());
        }
        let n = planes * pout;
        let kind = pool_code(d.kind);
        self.launch_ops(
            "snn_pool2d",
            n,
            &[
                x,
                y,
                n as u64,
                g.h as u64,
                g.w as u64,
                g.k as u64,
                g.stride as u64,
                g.pad[0] as u64,
                g.pad[1] as u64,
                g.h_out as u64,
                g.w_out as u64,
                kind,
            ],
        )
    }

    fn pool2d_dx(&mut self, d: &PoolDxDesc) -> Result<()> {
        let g = &d.geom;
        crate::cpu::pool::check_pool(g)?;
        Self::distinct(d.x, d.dx, "pool2d_dx")?;
        Self::distinct(d.dy, d.dx, "pool2d_dx")?;
        let pin = mul(g.h, g.w)?;
        let pout = mul(g.h_out, g.w_out)?;
        let planes = mul(d.images, g.c)?;
        let x = self.slot_ptr(d.x, mul(planes, pin)?, "pool2d_dx")?;
        let dy = self.slot_ptr(d.dy, mul(planes, pout)?, "pool2d_dx")?;
        let dx = self.slot_ptr(d.dx, mul(planes, pin)?, "pool2d_dx")?;
        if planes == 0 || pout == 0 || pin == 0 {
            return Ok(());
        }
        let n = planes * pin;
        let kind = pool_code(d.kind);
        self.launch_ops(
            "snn_pool2d_dx",
            n,
            &[
                x,
                dy,
                dx,
                n as u64,
                g.h as u64,
                g.w as u64,
                g.k as u64,
                g.stride as u64,
                g.pad[0] as u64,
                g.pad[1] as u64,
                g.h_out as u64,
                g.w_out as u64,
                kind,
                d.accumulate as u64,
            ],
        )
    }
}
