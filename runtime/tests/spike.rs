//! The event-driven projection (`runtime/src/cpu/spike.rs`) against dense GEMM: random spike
//! matrices at rates 0, 0.05, 0.5 and 1 and odd sizes (partial 4-row tiles and 64-column
//! blocks), with and without bias and accumulation; non-binary inputs; bit-equality when the
//! sums are exact; the CPU device's transposed copy follows `set_weight`.

use snn_runtime::cpu::{ops, spike, CpuDevice};
use snn_runtime::device::{Device, GemmDesc, GemmDwDesc, Loc};
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
