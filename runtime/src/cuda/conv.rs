//! Convolutions on the CUDA device: im2col + strided-batched cuBLAS GEMMs in chunks that fit
//! the scratch buffer, col2im for the input gradient, and the event-driven kernels.

use super::*;
use crate::device::Loc;
use crate::op::conv::{ConvDesc, ConvDwDesc, ConvDxDesc, ConvOps, ConvWaveDesc};

impl<G: Gpu> CudaDevice<G> {
    /// The im2col/col2im scratch buffer, at least `need` elements; its device address.
    pub(super) fn scratch(&mut self, need: usize, what: &str) -> Result<u64> {
        let b = grown(&mut self.gpu, &mut self.scratch, need, what)?;
        Ok(self.gpu.addr(&b.mem))
    }
}

impl<G: Gpu> ConvOps for CudaDevice<G> {
    fn conv2d(&mut self, d: &ConvDesc) -> Result<()> {
        let g = &d.geom;
        crate::cpu::conv::check_conv(g)?;
        Self::distinct(d.x, d.y, "conv2d")?;
        let xi = mul(mul(g.c_in, g.h)?, g.w)?;
        let p = mul(g.h_out, g.w_out)?;
        let yi = mul(g.c_out, p)?;
        let kk = mul(mul(g.c_in, g.kh)?, g.kw)?;
        let x = self.slot_ptr(d.x, mul(d.images, xi)?, "conv2d")?;
        let y = self.slot_ptr(d.y, mul(d.images, yi)?, "conv2d")?;
        let w = self.weight_ptr(d.w, mul(g.c_out, kk)?, "conv2d")?;
        let bias = match d.bias {
            Some(b) => Some(self.weight_ptr(b, g.c_out, "conv2d bias")?),
            None => None,
        };
        if d.images == 0 || yi == 0 || xi == 0 {
            return Ok(());
        }
        let col_len = mul(kk, p)?;
        let read_dst = match bias {
            Some(b) => {
                self.bias(y, b, d.images * yi, p, g.c_out, d.accumulate)?;
                true
            }
            None => d.accumulate,
        };
        if d.sparse {
            let n = d.images * yi;
            return self.launch_ops(
                "snn_spike_conv2d",
                n,
                &conv_args(&[x, w, y, n as u64], g, &[g.c_out as u64, read_dst as u64]),
            );
        }
        let beta = if read_dst { 1.0 } else { 0.0 };
        let direct = g.kh == 1 && g.kw == 1 && g.stride == 1 && g.pad == 0;
        // Per image, row-major y[c_out, p] = W[c_out, kk] @ col[kk, p], i.e. column-major
        // C(p x c_out) = (col as p x kk) * (W as kk x c_out).
        if direct {
            return self.sgemm(
                (false, false),
                p,
                g.c_out,
                kk,
                x,
                p,
                col_len,
                w,
                kk,
                0,
                beta,
                y,
                p,
                yi,
                d.images,
                "conv2d",
            );
        }
        let chunk = (SCRATCH_MAX / col_len.max(1)).clamp(1, d.images);
        let col = self.scratch(mul(chunk, col_len)?, "conv2d im2col scratch")?;
        let mut img = 0;
        while img < d.images {
            let m = chunk.min(d.images - img);
            let xs = x + 4 * (img * xi) as u64;
            let ys = y + 4 * (img * yi) as u64;
            let n = m * col_len;
            self.launch_ops("snn_im2col", n, &conv_args(&[xs, col, n as u64], g, &[]))?;
            self.sgemm(
                (false, false),
                p,
                g.c_out,
                kk,
                col,
                p,
                col_len,
                w,
                kk,
                0,
                beta,
                ys,
                p,
                yi,
                m,
                "conv2d",
            )?;
            img += m;
        }
        Ok(())
    }

    fn conv2d_wave(&mut self, d: &ConvWaveDesc) -> Result<()> {
        let g = &d.geom;
        crate::cpu::conv::check_conv(g)?;
        Self::distinct(d.x, d.y, "wave conv2d")?;
        let xi = mul(mul(g.c_in, g.h)?, g.w)?;
        let p = mul(g.h_out, g.w_out)?;
        let yi = mul(g.c_out, p)?;
        let kk = mul(mul(g.c_in, g.kh)?, g.kw)?;
        let rows = mul(d.t_len, d.batch)?;
        let x = self.slot_ptr(d.x, mul(rows, xi)?, "wave conv2d")?;
        let y = self.slot_ptr(d.y, mul(rows, yi)?, "wave conv2d")?;
        let w = self.weight_ptr(d.w, mul(g.c_out, kk)?, "wave conv2d")?;
        let bias = match d.bias {
            Some(b) => Some(self.weight_ptr(b, g.c_out, "wave conv2d bias")?),
            None => None,
        };
        if rows == 0 || xi == 0 || yi == 0 {
            return Ok(());
        }
        // Scratch: the per-sample "not a wave" flags, then the first-spike map
        // `[batch, xi]`. The dense fallback below reuses the scratch for im2col, after the
        // flags have been read back.
        let (nx, ny) = (mul(d.batch, xi)?, mul(d.batch, yi)?);
        let need = d.batch.checked_add(nx).ok_or_else(|| {
            crate::error::RuntimeError::Device("wave conv2d: size overflows".into())
        })?;
        let bad = self.scratch(need, "wave conv2d first-spike map")?;
        let fs = bad + 4 * d.batch as u64;
        let buf = self.scratch.as_mut().expect("allocated by scratch()");
        self.gpu
            .zero(&mut buf.mem, 0, d.batch, "wave conv2d flags")?;
        self.launch_ops(
            "snn_first_spike_map",
            nx,
            &[x, fs, bad, nx as u64, xi as u64, d.t_len as u64],
        )?;
        self.launch_ops(
            "snn_wave_conv2d",
            ny,
            &conv_args(
                &[fs, bad, w, bias.unwrap_or(w), y, ny as u64],
                g,
                &[
                    g.c_out as u64,
                    d.t_len as u64,
                    bias.is_some() as u64,
                    d.accumulate as u64,
                ],
            ),
        )?;
        let mut flags = vec![0.0f32; d.batch];
        let buf = self.scratch.as_ref().expect("allocated by scratch()");
        self.gpu
            .dtoh(&buf.mem, 0, &mut flags, "wave conv2d flags")?;
        for (b, _) in flags.iter().enumerate().filter(|(_, &f)| f != 0.0) {
            for t in 0..d.t_len {
                let row = t * d.batch + b;
                self.conv2d(&ConvDesc {
                    images: 1,
                    x: Loc::new(d.x.slot, d.x.offset + row * xi),
                    y: Loc::new(d.y.slot, d.y.offset + row * yi),
                    w: d.w,
                    bias: d.bias,
                    geom: *g,
                    accumulate: d.accumulate,
                    sparse: false,
                })?;
            }
        }
        Ok(())
    }

    fn conv2d_dx(&mut self, d: &ConvDxDesc) -> Result<()> {
        let g = &d.geom;
        crate::cpu::conv::check_conv(g)?;
        Self::distinct(d.dy, d.dx, "conv2d_dx")?;
        let xi = mul(mul(g.c_in, g.h)?, g.w)?;
        let p = mul(g.h_out, g.w_out)?;
        let yi = mul(g.c_out, p)?;
        let kk = mul(mul(g.c_in, g.kh)?, g.kw)?;
        let dy = self.slot_ptr(d.dy, mul(d.images, yi)?, "conv2d_dx")?;
        let dx = self.slot_ptr(d.dx, mul(d.images, xi)?, "conv2d_dx")?;
        let w = self.weight_ptr(d.w, mul(g.c_out, kk)?, "conv2d_dx")?;
        if d.images == 0 || xi == 0 {
            return Ok(());
        }
        let col_len = mul(kk, p)?;
        // Per image, row-major col[kk, p] = W^T @ dy[c_out, p], i.e. column-major
        // C(p x kk) = (dy as p x c_out) * (W as kk x c_out)^T.
        let direct = g.kh == 1 && g.kw == 1 && g.stride == 1 && g.pad == 0;
        if direct {
            return self.sgemm(
                (false, true),
                p,
                kk,
                g.c_out,
                dy,
                p,
                yi,
                w,
                kk,
                0,
                if d.accumulate { 1.0 } else { 0.0 },
                dx,
                p,
                xi,
                d.images,
                "conv2d_dx",
            );
        }
        let chunk = (SCRATCH_MAX / col_len.max(1)).clamp(1, d.images);
        let col = self.scratch(mul(chunk, col_len)?, "conv2d_dx col2im scratch")?;
        let mut img = 0;
        while img < d.images {
            let m = chunk.min(d.images - img);
            let dys = dy + 4 * (img * yi) as u64;
            let dxs = dx + 4 * (img * xi) as u64;
            self.sgemm(
                (false, true),
                p,
                kk,
                g.c_out,
                dys,
                p,
                yi,
                w,
                kk,
                0,
                0.0,
                col,
                p,
                col_len,
                m,
                "conv2d_dx",
            )?;
            let n = m * xi;
            self.launch_ops(
                "snn_col2im",
                n,
                &conv_args(&[col, dxs, n as u64], g, &[d.accumulate as u64]),
            )?;
            img += m;
        }
        Ok(())
    }

    fn conv2d_dw(&mut self, d: &ConvDwDesc) -> Result<()> {
        let g = &d.geom;
        crate::cpu::conv::check_conv(g)?;
        let xi = mul(mul(g.c_in, g.h)?, g.w)?;
        let p = mul(g.h_out, g.w_out)?;
        let yi = mul(g.c_out, p)?;
        let kk = mul(mul(g.c_in, g.kh)?, g.kw)?;
        let x = self.slot_ptr(d.x, mul(d.images, xi)?, "conv2d_dw")?;
        let dy = self.slot_ptr(d.dy, mul(d.images, yi)?, "conv2d_dw")?;
        let dw = self.grad_ptr(d.w, mul(g.c_out, kk)?, "conv2d_dw")?;
        let db = match d.bias {
            Some(b) if b == d.w => {
                return Err(RuntimeError::Device(
                    "conv2d_dw: weight and bias are the same tensor".into(),
                ))
            }
            Some(b) => Some(self.grad_ptr(b, g.c_out, "conv2d_dw bias")?),
            None => None,
        };
        if d.images == 0 || yi == 0 {
            return Ok(());
        }
        if let Some(db) = db {
            self.launch_ops(
                "snn_conv_bias_grad",
                g.c_out,
                &[db, dy, d.images as u64, g.c_out as u64, p as u64],
            )?;
        }
        if d.sparse {
            let n = g.c_out * kk;
            return self.launch_ops(
                "snn_spike_conv2d_dw",
                n,
                &conv_args(
                    &[x, dy, dw, n as u64, d.images as u64],
                    g,
                    &[g.c_out as u64],
                ),
            );
        }
        // One GEMM per chunk of m images, not one per image: the chunk's columns (im2col,
        // or x itself for a 1x1 stride-1 conv) and its dy go channel-major, [kk, m*p] and
        // [c_out, m*p], so row-major dW[c_out, kk] += dy' @ col'^T sums over images and
        // positions at once (K = m*p). Column-major: C(kk x c_out) += (col' as (m*p) x
        // kk)^T * (dy' as (m*p) x c_out).
        let direct = g.kh == 1 && g.kw == 1 && g.stride == 1 && g.pad == 0;
        let col_len = mul(kk, p)?;
        let per_image = col_len + yi + if direct { 0 } else { col_len };
        let chunk = (SCRATCH_MAX / per_image.max(1)).clamp(1, d.images);
        let col = if direct {
            0
        } else {
            self.scratch(mul(chunk, col_len)?, "conv2d_dw im2col scratch")?
        };
        let perm = self.perm_scratch(mul(chunk, col_len + yi)?)?;
        let mut img = 0;
        while img < d.images {
            let m = chunk.min(d.images - img);
            let xs = x + 4 * (img * xi) as u64;
            let src = if direct {
                xs
            } else {
                let n = m * col_len;
                self.launch_ops("snn_im2col", n, &conv_args(&[xs, col, n as u64], g, &[]))?;
                col
            };
            let (col_t, dy_t) = (perm, perm + 4 * (m * col_len) as u64);
            let mp = m * p;
            self.launch_ops(
                "snn_to_channel_major",
                m * col_len,
                &[src, col_t, m as u64, kk as u64, p as u64],
            )?;
            self.launch_ops(
                "snn_to_channel_major",
                m * yi,
                &[
                    dy + 4 * (img * yi) as u64,
                    dy_t,
                    m as u64,
                    g.c_out as u64,
                    p as u64,
                ],
            )?;
            self.sgemm(
                (true, false),
                kk,
                g.c_out,
                mp,
                col_t,
                mp,
                0,
                dy_t,
                mp,
                0,
                1.0,
                dw,
                kk,
                0,
                1,
                "conv2d_dw",
            )?;
            img += m;
        }
        Ok(())
    }
}
