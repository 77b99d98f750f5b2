//! Mixing over time rows on the CUDA device: the host-built matrix uploaded, then one cuBLAS
//! GEMM.

use super::*;
use crate::op::time_mix::{TimeMixDesc, TimeMixDwDesc, TimeMixOps};

impl<G: Gpu> CudaDevice<G> {
    /// `conv2d_dw`'s channel-major copies of columns and output gradients, at least
    /// `need` elements; its device address.
    pub(super) fn perm_scratch(&mut self, need: usize) -> Result<u64> {
        let what = "conv2d_dw channel-major scratch";
        let b = grown(&mut self.gpu, &mut self.perm_scratch, need, what)?;
        Ok(self.gpu.addr(&b.mem))
    }
}

impl<G: Gpu> TimeMixOps for CudaDevice<G> {
    fn time_mix(&mut self, d: &TimeMixDesc<'_>) -> Result<()> {
        Self::distinct(d.x, d.y, "time_mix")?;
        let x = self.slot_ptr(d.x, mul(d.rows_in, d.cols)?, "time_mix")?;
        let y = self.slot_ptr(d.y, mul(d.rows_out, d.cols)?, "time_mix")?;
        let na = mul(d.rows_out, d.rows_in)?;
        if d.a.len() != na || d.bias.is_some_and(|b| b.len() != d.rows_out) {
            return Err(RuntimeError::Device(format!(
                "time_mix: the matrix has {} elements (needs {na}) or the bias is not [{}]",
                d.a.len(),
                d.rows_out
            )));
        }
        if d.rows_out == 0 || d.cols == 0 {
            return Ok(());
        }
        // The matrix, then the bias, in one scratch buffer (stream order keeps an earlier
        // mix's GEMM ahead of this upload).
        let mut host = d.a.to_vec();
        host.extend(d.bias.unwrap_or(&[]));
        let what = "time_mix matrix";
        let buf = grown(&mut self.gpu, &mut self.mix_scratch, host.len(), what)?;
        self.gpu.htod(&host, &mut buf.mem, 0, "time_mix matrix")?;
        let a = self.gpu.addr(&buf.mem);
        let read_dst = match d.bias {
            Some(_) => {
                let b = a + 4 * na as u64;
                self.bias(y, b, d.rows_out * d.cols, d.cols, d.rows_out, d.accumulate)?;
                true
            }
            None => d.accumulate,
        };
        if d.rows_in == 0 {
            if !read_dst {
                self.zero(d.y, d.rows_out * d.cols)?;
            }
            return Ok(());
        }
        // Row-major y[ro, cols] = a[ro, ri] @ x[ri, cols] is, read column-major,
        // C(cols x ro) = X(cols x ri, ld cols) * A'(ri x ro, ld ri).
        self.sgemm(
            (false, false),
            d.cols,
            d.rows_out,
            d.rows_in,
            x,
            d.cols,
            0,
            a,
            d.rows_in,
            0,
            if read_dst { 1.0 } else { 0.0 },
            y,
            d.cols,
            0,
            1,
            "time_mix",
        )
    }

    fn time_mix_dw(
        &mut self,
        d: &TimeMixDwDesc,
        g: &mut [f32],
        sums: Option<&mut [f32]>,
    ) -> Result<()> {
        let dy = self.slot_ptr(d.dy, mul(d.rows_out, d.cols)?, "time_mix_dw")?;
        let x = self.slot_ptr(d.x, mul(d.rows_in, d.cols)?, "time_mix_dw")?;
        let ng = mul(d.rows_out, d.rows_in)?;
        if g.len() != ng || sums.as_ref().is_some_and(|s| s.len() != d.rows_out) {
            return Err(RuntimeError::Device(format!(
                "time_mix_dw: {} products (needs {ng}) or row sums not [{}]",
                g.len(),
                d.rows_out
            )));
        }
        g.fill(0.0);
        if d.rows_out == 0 || d.cols == 0 {
            if let Some(s) = sums {
                s.fill(0.0);
            }
            return Ok(());
        }
        // Scratch: the products, the row sums, then `cols` ones (the band is computed in
        // full: the caller reads only its diagonals).
        let len = ng + d.rows_out + d.cols;
        let ones = vec![1.0f32; d.cols];
        let what = "time_mix_dw scratch";
        let buf = grown(&mut self.gpu, &mut self.dw_scratch, len, what)?;
        self.gpu
            .htod(&ones, &mut buf.mem, ng + d.rows_out, "time_mix_dw ones")?;
        let base = self.gpu.addr(&buf.mem);
        let (gp, sp, op) = (
            base,
            base + 4 * ng as u64,
            base + 4 * (ng + d.rows_out) as u64,
        );
        if d.rows_in > 0 {
            // Row-major g[ro, ri] = dy[ro, cols] @ x[ri, cols]^T is, column-major,
            // C(ri x ro) = X^T (X: cols x ri, ld cols) * DY (cols x ro, ld cols).
            self.sgemm(
                (true, false),
                d.rows_in,
                d.rows_out,
                d.cols,
                x,
                d.cols,
                0,
                dy,
                d.cols,
                0,
                0.0,
                gp,
                d.rows_in,
                0,
                1,
                "time_mix_dw",
            )?;
        }
        // sums(1 x ro) = ones^T (cols x 1) * DY (cols x ro).
        self.sgemm(
            (true, false),
            1,
            d.rows_out,
            d.cols,
            op,
            d.cols,
            0,
            dy,
            d.cols,
            0,
            0.0,
            sp,
            1,
            0,
            1,
            "time_mix_dw sums",
        )?;
        let buf = self.dw_scratch.as_ref().unwrap();
        self.gpu.dtoh(&buf.mem, 0, g, "time_mix_dw")?;
        if let Some(s) = sums {
            self.gpu.dtoh(&buf.mem, ng, s, "time_mix_dw sums")?;
        }
        Ok(())
    }
}
