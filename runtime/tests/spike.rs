//! The event-driven projection (`runtime/src/cpu/spike.rs`) against dense GEMM: random spike
//! matrices at rates 0, 0.05, 0.5 and 1 and odd sizes (partial 4-row tiles and 64-column
//! blocks), with and without bias and accumulation; non-binary inputs; bit-equality when the
//! sums are exact; the CPU device's transposed copy follows `set_weight`.

use snn_runtime::cpu::{ops, spike, CpuDevice};
use snn_runtime::device::prelude::*;
use snn_runtime::device::{GemmDesc, GemmDwDesc, Loc};
use snn_runtime::kernels::KernelTable;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32
    }
    fn spikes(&mut self, len: usize, rate: f32) -> Vec<f32> {
        (0..len)
            .map(|_| if self.next() < rate { 1.0 } else { 0.0 })
            .collect()
    }
    fn uniform(&mut self, len: usize) -> Vec<f32> {
        (0..len).map(|_| self.next() * 2.0 - 1.0).collect()
    }
}

const SIZES: [(usize, usize, usize); 5] = [
    (37, 53, 70),
    (8, 784, 130),
    (5, 3, 1),
    (64, 17, 64),
    (130, 100, 200),
];
const RATES: [f32; 4] = [0.0, 0.05, 0.5, 1.0];

/// `|a - b| <= 1e-6 * (magnitude of the terms summed)`: the summation orders differ.
fn close(a: &[f32], b: &[f32], scale: &[f32], what: &str) {
    assert_eq!(a.len(), b.len());
    for (i, ((x, y), s)) in a.iter().zip(b).zip(scale).enumerate() {
        assert!(
            (x - y).abs() <= 1e-6 * s.max(1e-30),
            "{what}: element {i}: {x} vs {y} (scale {s})"
        );
    }
}

#[test]
fn spike_dense_matches_dense_gemm() {
    let mut r = Rng(0x9e3779b97f4a7c15);
    for &(rows, k, n) in &SIZES {
        for &rate in &RATES {
            for (bias_on, accumulate) in
                [(false, false), (true, false), (true, true), (false, true)]
            {
                let x = r.spikes(rows * k, rate);
                let w = r.uniform(n * k);
                let bias = r.uniform(n);
                let y0 = r.uniform(rows * n);
                let wt = spike::transpose(&w, n, k);
                let b = bias_on.then_some(&bias[..]);
                let mut yd = y0.clone();
                let mut ys = y0.clone();
                ops::dense(&x, &w, b, &mut yd, rows, k, n, accumulate).unwrap();
                spike::spike_dense(&x, &wt, b, &mut ys, rows, k, n, accumulate).unwrap();
                // Magnitude of what was summed into each output.
                let scale: Vec<f32> = (0..rows * n)
                    .map(|e| {
                        let (row, o) = (e / n, e % n);
                        let mut s: f32 =
                            (0..k).map(|i| (x[row * k + i] * w[o * k + i]).abs()).sum();
                        if bias_on {
                            s += bias[o].abs();
                        }
                        if accumulate {
                            s += y0[e].abs();
                        }
                        s
                    })
                    .collect();
                close(
                    &ys,
                    &yd,
                    &scale,
                    &format!("rows {rows} k {k} n {n} rate {rate} bias {bias_on} acc {accumulate}"),
                );
            }
        }
    }
}

#[test]
fn spike_dense_dw_matches_dense_dw() {
    let mut r = Rng(12345);
    for &(rows, k, n) in &SIZES {
        for &rate in &RATES {
            let x = r.spikes(rows * k, rate);
            let dy = r.uniform(rows * n);
            let dw0 = r.uniform(n * k);
            let db0 = r.uniform(n);
            let (mut dwd, mut dws) = (dw0.clone(), dw0.clone());
            let (mut dbd, mut dbs) = (db0.clone(), db0.clone());
            ops::dense_dw(&x, &dy, &mut dwd, Some(&mut dbd), rows, k, n).unwrap();
            spike::spike_dense_dw(&x, &dy, &mut dws, Some(&mut dbs), rows, k, n).unwrap();
            let scale: Vec<f32> = (0..n * k)
                .map(|e| {
                    let (o, i) = (e / k, e % k);
                    dw0[e].abs()
                        + (0..rows)
                            .map(|row| (x[row * k + i] * dy[row * n + o]).abs())
                            .sum::<f32>()
                })
                .collect();
            let what = format!("rows {rows} k {k} n {n} rate {rate}");
            close(&dws, &dwd, &scale, &what);
            assert_eq!(dbs, dbd, "{what}: bias gradient (same code)");
        }
    }
}

/// Inputs other than 0/1 are multiplied by their value (the op is correct for any input).
#[test]
fn non_binary_inputs_are_weighted() {
    let mut r = Rng(7);
    let (rows, k, n) = (9, 40, 70);
    let x: Vec<f32> = (0..rows * k)
        .map(|_| match (r.next() * 4.0) as u32 {
            0 => 0.0,
            1 => 0.5,
            2 => -2.0,
            _ => 0.0,
        })
        .collect();
    let w = r.uniform(n * k);
    let dy = r.uniform(rows * n);
    let wt = spike::transpose(&w, n, k);
    let (mut yd, mut ys) = (vec![0.0; rows * n], vec![0.0; rows * n]);
    ops::dense(&x, &w, None, &mut yd, rows, k, n, false).unwrap();
    spike::spike_dense(&x, &wt, None, &mut ys, rows, k, n, false).unwrap();
    let scale = vec![k as f32 * 2.0; rows * n];
    close(&ys, &yd, &scale, "forward");
    let (mut gd, mut gs) = (vec![0.0; n * k], vec![0.0; n * k]);
    ops::dense_dw(&x, &dy, &mut gd, None, rows, k, n).unwrap();
    spike::spike_dense_dw(&x, &dy, &mut gs, None, rows, k, n).unwrap();
    let scale = vec![rows as f32 * 2.0; n * k];
    close(&gs, &gd, &scale, "weight gradient");
}

/// Weights on a dyadic grid make every partial sum exact: then the order does not matter
/// and the event-driven result equals the dense one bit for bit.
#[test]
fn exact_sums_are_bit_identical() {
    let mut r = Rng(99);
    for &(rows, k, n) in &SIZES {
        for &rate in &RATES {
            let x = r.spikes(rows * k, rate);
            let w: Vec<f32> = r
                .uniform(n * k)
                .iter()
                .map(|v| (v * 256.0).round() / 256.0)
                .collect();
            let bias: Vec<f32> = r
                .uniform(n)
                .iter()
                .map(|v| (v * 64.0).round() / 64.0)
                .collect();
            let wt = spike::transpose(&w, n, k);
            let (mut yd, mut ys) = (vec![0.0; rows * n], vec![0.0; rows * n]);
            ops::dense(&x, &w, Some(&bias), &mut yd, rows, k, n, false).unwrap();
            spike::spike_dense(&x, &wt, Some(&bias), &mut ys, rows, k, n, false).unwrap();
            assert_eq!(ys, yd, "rows {rows} k {k} n {n} rate {rate}");
        }
    }
}

/// The CPU device keeps a transposed copy for the event-driven GEMM; `set_weight` (weight
/// loading, an optimizer step) must drop it.
#[test]
fn cpu_device_refreshes_the_transposed_weight() {
    let (rows, k, n) = (6, 20, 70);
    let mut r = Rng(3);
    let x = r.spikes(rows * k, 0.3);
    let mut dev = CpuDevice::new(KernelTable::empty());
    dev.alloc_slots(&[rows * k, rows * n, rows * n]).unwrap();
    dev.upload(Loc::new(0, 0), &x).unwrap();
    for round in 0..3 {
        let w: Vec<f32> = r
            .uniform(n * k)
            .iter()
            .map(|v| (v * 128.0).round() / 128.0)
            .collect();
        dev.set_weight(0, &w).unwrap();
        for (slot, sparse) in [(1, false), (2, true)] {
            dev.gemm(&GemmDesc {
                rows,
                k,
                n,
                x: Loc::new(0, 0),
                y: Loc::new(slot, 0),
                w: 0,
                bias: None,
                accumulate: false,
                sparse,
            })
            .unwrap();
        }
        let (mut yd, mut ys) = (vec![0.0; rows * n], vec![0.0; rows * n]);
        dev.download(Loc::new(1, 0), &mut yd).unwrap();
        dev.download(Loc::new(2, 0), &mut ys).unwrap();
        assert_eq!(ys, yd, "round {round}");
        // The weight gradient through the device, both forms.
        let mut grads = vec![];
        for sparse in [false, true] {
            dev.zero_grads().unwrap();
            dev.gemm_dw(&GemmDwDesc {
                rows,
                k,
                n,
                x: Loc::new(0, 0),
                dy: Loc::new(1, 0),
                w: 0,
                bias: None,
                sparse,
            })
            .unwrap();
            let mut g = vec![0.0; n * k];
            dev.get_grad(0, &mut g).unwrap();
            grads.push(g);
        }
        let scale: Vec<f32> = vec![rows as f32 * 40.0; n * k];
        close(&grads[1], &grads[0], &scale, "device weight gradient");
    }
}

// ------------------------------------------------------------------ event-driven conv2d

use snn_runtime::device::{ConvDesc, ConvDwDesc};
use snn_runtime::plan::ConvGeom;

/// `(c_in, h, w, c_out, kh, kw, stride, pad)`: odd sizes, strides, padding wider than the
/// kernel's reach, a 1x1 kernel, more output channels than one 16-lane vector.
const GEOMS: [[usize; 8]; 6] = [
    [8, 14, 14, 16, 3, 3, 1, 1],
    [3, 9, 7, 5, 3, 2, 2, 1],
    [2, 8, 8, 37, 5, 5, 1, 2],
    [4, 6, 6, 8, 1, 1, 1, 0],
    [1, 11, 13, 3, 4, 3, 3, 0],
    [5, 7, 7, 20, 3, 3, 2, 2],
];

fn geom([c_in, h, w, c_out, kh, kw, s, pad]: [usize; 8]) -> ConvGeom {
    ConvGeom {
        c_in,
        h,
        w,
        c_out,
        kh,
        kw,
        stride: s,
        pad,
        h_out: (h + 2 * pad - kh) / s + 1,
        w_out: (w + 2 * pad - kw) / s + 1,
    }
}

/// The input cell that tap `(c, ki, kj)` of output `(oy, ox)` reads, if inside the image.
fn cell(g: &ConvGeom, c: usize, ki: usize, kj: usize, oy: usize, ox: usize) -> Option<usize> {
    let iy = (oy * g.stride + ki)
        .checked_sub(g.pad)
        .filter(|&v| v < g.h)?;
    let ix = (ox * g.stride + kj)
        .checked_sub(g.pad)
        .filter(|&v| v < g.w)?;
    Some((c * g.h + iy) * g.w + ix)
}

/// Direct convolution in f64 (the reference) and the magnitude of what each output sums.
fn conv_ref(x: &[f32], w: &[f32], g: &ConvGeom, images: usize) -> (Vec<f64>, Vec<f32>) {
    let (xi, p, kk) = (g.c_in * g.h * g.w, g.h_out * g.w_out, g.c_in * g.kh * g.kw);
    let mut y = vec![0.0f64; images * g.c_out * p];
    let mut s = vec![0.0f32; images * g.c_out * p];
    for img in 0..images {
        for o in 0..g.c_out {
            for q in 0..p {
                let e = (img * g.c_out + o) * p + q;
                for c in 0..g.c_in {
                    for ki in 0..g.kh {
                        for kj in 0..g.kw {
                            if let Some(i) = cell(g, c, ki, kj, q / g.w_out, q % g.w_out) {
                                let wv = w[o * kk + (c * g.kh + ki) * g.kw + kj];
                                y[e] += x[img * xi + i] as f64 * wv as f64;
                                s[e] += (x[img * xi + i] * wv).abs();
                            }
                        }
                    }
                }
            }
        }
    }
    (y, s)
}

/// The event-driven conv2d equals the im2col + GEMM one and a direct f64 reference, at
/// rates 0 to 1, with and without bias and accumulation.
#[test]
fn spike_conv2d_matches_conv2d() {
    let mut r = Rng(0xC0FFEE);
    for &[c_in, h, w, c_out, kh, kw, s, pad] in &GEOMS {
        let g = geom([c_in, h, w, c_out, kh, kw, s, pad]);
        let images = 5;
        let (xi, yi, kk) = (c_in * h * w, c_out * g.h_out * g.w_out, c_in * kh * kw);
        for &rate in &RATES {
            for (bias_on, accumulate) in
                [(false, false), (true, false), (true, true), (false, true)]
            {
                let x = r.spikes(images * xi, rate);
                let wgt = r.uniform(c_out * kk);
                let bias = r.uniform(c_out);
                let y0 = r.uniform(images * yi);
                let wt = spike::transpose(&wgt, c_out, kk);
                let b = bias_on.then_some(&bias[..]);
                let (mut yd, mut ys) = (y0.clone(), y0.clone());
                ops::conv2d(&x, &wgt, b, &mut yd, images, &g, accumulate).unwrap();
                spike::spike_conv2d(&x, &wt, b, &mut ys, images, &g, accumulate).unwrap();
                let (want, mut scale) = conv_ref(&x, &wgt, &g, images);
                let p = g.h_out * g.w_out;
                let want: Vec<f32> = want
                    .iter()
                    .enumerate()
                    .map(|(e, &v)| {
                        let o = (e / p) % c_out;
                        let mut v = v;
                        if bias_on {
                            v += bias[o] as f64;
                            scale[e] += bias[o].abs();
                        }
                        if accumulate {
                            v += y0[e] as f64;
                            scale[e] += y0[e].abs();
                        }
                        v as f32
                    })
                    .collect();
                let what = format!("{g:?} rate {rate} bias {bias_on} acc {accumulate}");
                close(
                    &ys,
                    &want,
                    &scale,
                    &format!("{what}: event-driven vs reference"),
                );
                close(&yd, &want, &scale, &format!("{what}: im2col vs reference"));
            }
        }
    }
}

/// Dyadic weights make every sum exact: the two forms agree bit for bit, forward and
/// weight gradient (with spike-valued output gradients, also exact).
#[test]
fn spike_conv2d_exact_sums_are_bit_identical() {
    let mut r = Rng(4242);
    let dyadic =
        |v: Vec<f32>, q: f32| -> Vec<f32> { v.iter().map(|x| (x * q).round() / q).collect() };
    for &[c_in, h, w, c_out, kh, kw, s, pad] in &GEOMS {
        let g = geom([c_in, h, w, c_out, kh, kw, s, pad]);
        let images = 3;
        let (xi, yi, kk) = (c_in * h * w, c_out * g.h_out * g.w_out, c_in * kh * kw);
        for &rate in &RATES {
            let x = r.spikes(images * xi, rate);
            let wgt = dyadic(r.uniform(c_out * kk), 256.0);
            let bias = dyadic(r.uniform(c_out), 64.0);
            let wt = spike::transpose(&wgt, c_out, kk);
            let (mut yd, mut ys) = (vec![0.0; images * yi], vec![0.0; images * yi]);
            ops::conv2d(&x, &wgt, Some(&bias), &mut yd, images, &g, false).unwrap();
            spike::spike_conv2d(&x, &wt, Some(&bias), &mut ys, images, &g, false).unwrap();
            let what = format!("{g:?} rate {rate}");
            assert_eq!(ys, yd, "{what}: forward");
            let dy = dyadic(r.uniform(images * yi), 16.0);
            let (mut gd, mut gs) = (vec![0.5; c_out * kk], vec![0.5; c_out * kk]);
            let (mut bd, mut bs) = (vec![0.25; c_out], vec![0.25; c_out]);
            ops::conv2d_dw(&x, &dy, &mut gd, Some(&mut bd), images, &g).unwrap();
            spike::spike_conv2d_dw(&x, &dy, &mut gs, Some(&mut bs), images, &g).unwrap();
            assert_eq!(gs, gd, "{what}: weight gradient");
            assert_eq!(bs, bd, "{what}: bias gradient");
        }
    }
}

/// The event-driven weight gradient against a direct f64 sum, non-dyadic values, and
/// non-binary inputs (weighted by their value).
#[test]
fn spike_conv2d_dw_matches_reference() {
    let mut r = Rng(77);
    for &[c_in, h, w, c_out, kh, kw, s, pad] in &GEOMS {
        let g = geom([c_in, h, w, c_out, kh, kw, s, pad]);
        let images = 4;
        let (xi, p, kk) = (c_in * h * w, g.h_out * g.w_out, c_in * kh * kw);
        for &rate in &RATES {
            let mut x = r.spikes(images * xi, rate);
            for (i, v) in x.iter_mut().enumerate() {
                if i % 7 == 3 && *v != 0.0 {
                    *v = -0.75;
                }
            }
            let dy = r.uniform(images * c_out * p);
            let dw0 = r.uniform(c_out * kk);
            let mut dws = dw0.clone();
            spike::spike_conv2d_dw(&x, &dy, &mut dws, None, images, &g).unwrap();
            let mut want = vec![0.0f64; c_out * kk];
            let mut scale = vec![0.0f32; c_out * kk];
            for (e, (wv, sv)) in want.iter_mut().zip(scale.iter_mut()).enumerate() {
                let (o, rr) = (e / kk, e % kk);
                let (c, ki, kj) = (rr / (kh * kw), (rr / kw) % kh, rr % kw);
                *wv = dw0[e] as f64;
                *sv = dw0[e].abs();
                for img in 0..images {
                    for q in 0..p {
                        if let Some(i) = cell(&g, c, ki, kj, q / g.w_out, q % g.w_out) {
                            let t = x[img * xi + i] * dy[(img * c_out + o) * p + q];
                            *wv += t as f64;
                            *sv += t.abs();
                        }
                    }
                }
            }
            let want: Vec<f32> = want.iter().map(|&v| v as f32).collect();
            close(&dws, &want, &scale, &format!("{g:?} rate {rate}"));
        }
    }
}

/// Through the CPU device: `sparse` picks the event-driven conv, on a transposed copy of the
/// weight that `set_weight` refreshes; both forms and both weight gradients agree.
#[test]
fn cpu_device_runs_the_event_driven_conv() {
    let g = geom([4, 10, 10, 16, 3, 3, 1, 1]);
    let images = 6;
    let (xi, yi, kk) = (4 * 100, 16 * g.h_out * g.w_out, 4 * 9);
    let mut r = Rng(5);
    let x = r.spikes(images * xi, 0.15);
    let mut dev = CpuDevice::new(KernelTable::empty());
    dev.alloc_slots(&[images * xi, images * yi, images * yi])
        .unwrap();
    dev.upload(Loc::new(0, 0), &x).unwrap();
    for round in 0..2 {
        let w: Vec<f32> = r
            .uniform(16 * kk)
            .iter()
            .map(|v| (v * 128.0).round() / 128.0)
            .collect();
        dev.set_weight(0, &w).unwrap();
        dev.set_weight(1, &[0.5; 16]).unwrap();
        for (slot, sparse) in [(1, false), (2, true)] {
            dev.conv2d(&ConvDesc {
                images,
                x: Loc::new(0, 0),
                y: Loc::new(slot, 0),
                w: 0,
                bias: Some(1),
                geom: g,
                accumulate: false,
                sparse,
            })
            .unwrap();
        }
        let (mut yd, mut ys) = (vec![0.0; images * yi], vec![0.0; images * yi]);
        dev.download(Loc::new(1, 0), &mut yd).unwrap();
        dev.download(Loc::new(2, 0), &mut ys).unwrap();
        assert_eq!(ys, yd, "round {round}: forward");
        let mut grads = vec![];
        for sparse in [false, true] {
            dev.zero_grads().unwrap();
            dev.conv2d_dw(&ConvDwDesc {
                images,
                x: Loc::new(0, 0),
                dy: Loc::new(1, 0),
                w: 0,
                bias: Some(1),
                geom: g,
                sparse,
            })
            .unwrap();
            let (mut gw, mut gb) = (vec![0.0; 16 * kk], vec![0.0; 16]);
            dev.get_grad(0, &mut gw).unwrap();
            dev.get_grad(1, &mut gb).unwrap();
            grads.push((gw, gb));
        }
        let scale = vec![images as f32 * 100.0 * 40.0; 16 * kk];
        close(
            &grads[1].0,
            &grads[0].0,
            &scale,
            &format!("round {round}: weight gradient"),
        );
        assert_eq!(grads[1].1, grads[0].1, "round {round}: bias gradient");
    }
}
