//! Dense projections on the CUDA device: cuBLAS GEMMs, the event-driven kernels of ops.cuh
//! for spike inputs, and the bias kernels.

use super::*;
use crate::op::dense::{DenseOps, GemmDesc, GemmDwDesc, GemmDxDesc};

impl<G: Gpu> CudaDevice<G> {
    /// The event-driven form of [`Device::gemm`] (`d.sparse`): the bias as for a dense
    /// GEMM, then `snn_spike_gemm` on the weight's transposed copy.
    fn spike_gemm(&mut self, d: &GemmDesc) -> Result<()> {
        Self::distinct(d.x, d.y, "gemm")?;
        let x = self.slot_ptr(d.x, mul(d.rows, d.k)?, "gemm")?;
        let y = self.slot_ptr(d.y, mul(d.rows, d.n)?, "gemm")?;
        let len = mul(d.n, d.k)?;
        let w = self.weight_ptr(d.w, len, "gemm")?;
        let bias = match d.bias {
            Some(b) => Some(self.weight_ptr(b, d.n, "gemm bias")?),
            None => None,
        };
        if d.rows == 0 || d.n == 0 {
            return Ok(());
        }
        if self.transposed.len() <= d.w {
            self.transposed.resize_with(d.w + 1, || None);
        }
        if !matches!(&self.transposed[d.w], Some(b) if b.len == len) {
            let t = self.alloc(len, &format!("transposed weight {}", d.w))?;
            let wt = self.gpu.addr(&t.mem);
            self.transposed[d.w] = Some(t);
            self.launch_ops("snn_transpose", len, &[w, wt, d.n as u64, d.k as u64])?;
        }
        let wt = self
            .gpu
            .addr(&self.transposed[d.w].as_ref().expect("made above").mem);
        let read_dst = match bias {
            Some(b) => {
                self.bias(y, b, d.rows * d.n, 1, d.n, d.accumulate)?;
                true
            }
            None => d.accumulate,
        };
        self.launch_ops(
            "snn_spike_gemm",
            d.rows * d.n,
            &[
                x,
                wt,
                y,
                d.rows as u64,
                d.k as u64,
                d.n as u64,
                read_dst as u64,
            ],
        )
    }

    pub(super) fn bias(
        &mut self,
        y: u64,
        b: u64,
        n: usize,
        inner: usize,
        channels: usize,
        acc: bool,
    ) -> Result<()> {
        self.launch_ops(
            "snn_bias",
            n,
            &[y, b, n as u64, inner as u64, channels as u64, acc as u64],
        )
    }
}

impl<G: Gpu> DenseOps for CudaDevice<G> {
    fn gemm(&mut self, d: &GemmDesc) -> Result<()> {
        if d.sparse {
            return self.spike_gemm(d);
        }
        Self::distinct(d.x, d.y, "gemm")?;
        let x = self.slot_ptr(d.x, mul(d.rows, d.k)?, "gemm")?;
        let y = self.slot_ptr(d.y, mul(d.rows, d.n)?, "gemm")?;
        let w = self.weight_ptr(d.w, mul(d.n, d.k)?, "gemm")?;
        let bias = match d.bias {
            Some(b) => Some(self.weight_ptr(b, d.n, "gemm bias")?),
            None => None,
        };
        if d.rows == 0 || d.n == 0 {
            return Ok(());
        }
        let read_dst = match bias {
            Some(b) => {
                self.bias(y, b, d.rows * d.n, 1, d.n, d.accumulate)?;
                true
            }
            None => d.accumulate,
        };
        if d.k == 0 {
            if !read_dst {
                self.zero(d.y, d.rows * d.n)?;
            }
            return Ok(());
        }
        // Row-major y[rows, n] = x[rows, k] @ W[n, k]^T is, read column-major,
        // C(n x rows) = A^T * B with A = W seen as (k x n, lda k), B = x as (k x rows, ldb k).
        self.sgemm(
            (true, false),
            d.n,
            d.rows,
            d.k,
            w,
            d.k,
            0,
            x,
            d.k,
            0,
            if read_dst { 1.0 } else { 0.0 },
            y,
            d.n,
            0,
            1,
            "gemm",
        )
    }

    fn gemm_dx(&mut self, d: &GemmDxDesc) -> Result<()> {
        Self::distinct(d.dy, d.dx, "gemm_dx")?;
        let dy = self.slot_ptr(d.dy, mul(d.rows, d.n)?, "gemm_dx")?;
        let dx = self.slot_ptr(d.dx, mul(d.rows, d.k)?, "gemm_dx")?;
        let w = self.weight_ptr(d.w, mul(d.n, d.k)?, "gemm_dx")?;
        if d.rows == 0 || d.k == 0 {
            return Ok(());
        }
        if d.n == 0 {
            if !d.accumulate {
                self.zero(d.dx, d.rows * d.k)?;
            }
            return Ok(());
        }
        // Row-major dx[rows, k] = dy[rows, n] @ W[n, k] is, column-major,
        // C(k x rows) = A(k x n) * B(n x rows) with A = W (lda k) and B = dy (ldb n).
        self.sgemm(
            (false, false),
            d.k,
            d.rows,
            d.n,
            w,
            d.k,
            0,
            dy,
            d.n,
            0,
            if d.accumulate { 1.0 } else { 0.0 },
            dx,
            d.k,
            0,
            1,
            "gemm_dx",
        )
    }

    fn gemm_dw(&mut self, d: &GemmDwDesc) -> Result<()> {
        let x = self.slot_ptr(d.x, mul(d.rows, d.k)?, "gemm_dw")?;
        let dy = self.slot_ptr(d.dy, mul(d.rows, d.n)?, "gemm_dw")?;
        let dw = self.grad_ptr(d.w, mul(d.n, d.k)?, "gemm_dw")?;
        let db = match d.bias {
            Some(b) => Some(self.grad_ptr(b, d.n, "gemm_dw bias")?),
            None => None,
        };
        if d.rows == 0 || d.n == 0 {
            return Ok(());
        }
        if let Some(db) = db {
            self.launch_ops("snn_bias_grad", d.n, &[db, dy, d.rows as u64, d.n as u64])?;
        }
        if d.k == 0 {
            return Ok(());
        }
        if d.sparse {
            return self.launch_ops(
                "snn_spike_gemm_dw",
                d.n * d.k,
                &[x, dy, dw, d.rows as u64, d.k as u64, d.n as u64],
            );
        }
        // Row-major dW[n, k] += dy^T @ x is, column-major, C(k x n) += A(k x rows) * B^T
        // with A = x (lda k) and B = dy seen as (n x rows, ldb n).
        self.sgemm(
            (false, true),
            d.k,
            d.n,
            d.rows,
            x,
            d.k,
            0,
            dy,
            d.n,
            0,
            1.0,
            dw,
            d.k,
            0,
            1,
            "gemm_dw",
        )
    }
}
