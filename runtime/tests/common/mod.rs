//! Shared helpers for the runtime's integration tests.
#![allow(dead_code)]

use snn_runtime::plan::*;
use snn_runtime::rng;
use std::path::PathBuf;

/// Deterministic values in `[lo, hi)` (Philox stream `id`).
pub fn rand_vec(n: usize, id: u32, lo: f32, hi: f32) -> Vec<f32> {
    let mut v = vec![0.0; n];
    rng::fill_uniform01(&mut v, 1234, id, 7);
    v.iter_mut().for_each(|x| *x = lo + (hi - lo) * *x);
    v
}

/// Deterministic multiples of `step` in `[lo, lo + levels * step)`: exact in f32 sums.
pub fn quant_vec(n: usize, id: u32, lo: f32, step: f32, levels: u32) -> Vec<f32> {
    rand_vec(n, id, 0.0, 1.0)
        .into_iter()
        .map(|u| lo + step * ((u * levels as f32) as u32).min(levels - 1) as f32)
        .collect()
}

pub fn assert_close(got: &[f32], want: &[f64], rel: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs();
        assert!(
            err <= rel * w.abs().max(1.0),
            "{what}: element {i}: got {g}, want {w} (err {err})"
        );
    }
}

/// A fresh temporary directory for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("snn-runtime-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn buf(name: &str, extent: Extent, features: usize, slot: usize) -> BufferDecl {
    BufferDecl {
        name: name.into(),
        extent,
        features,
        slot,
    }
}

pub fn weight(name: &str, shape: &[usize]) -> WeightDecl {
    WeightDecl {
        name: name.into(),
        shape: shape.to_vec(),
        init: Init::UniformFanIn {
            fan_in: shape[1..].iter().product::<usize>().max(1),
            gain: 1.0,
        },
    }
}

/// An empty plan skeleton.
pub fn plan(name: &str) -> Plan {
    Plan {
        name: name.into(),
        t: 4,
        batch: 2,
        seed: 7,
        buffers: vec![],
        slots: 0,
        weights: vec![],
        params: vec![],
        inputs: vec![],
        outputs: vec![],
        kernels: vec![],
        ops: vec![],
        train: None,
        learn: vec![],
    }
}

/// Sets `plan.slots` to one past the largest slot used.
pub fn fix_slots(p: &mut Plan) {
    p.slots = p.buffers.iter().map(|b| b.slot + 1).max().unwrap_or(0);
}

// ---------------------------------------------------------------------------------------
// Naive references (f64).

/// `y[r, j] = sum_i x[r, i] w[j, i] + b[j]`.
pub fn naive_dense(
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    rows: usize,
    k: usize,
    n: usize,
) -> Vec<f64> {
    let mut y = vec![0.0; rows * n];
    for r in 0..rows {
        for j in 0..n {
            let mut s = b.map_or(0.0, |b| b[j] as f64);
            for i in 0..k {
                s += x[r * k + i] as f64 * w[j * k + i] as f64;
            }
            y[r * n + j] = s;
        }
    }
    y
}

pub fn naive_conv(
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    images: usize,
    g: &ConvGeom,
) -> Vec<f64> {
    let mut y = vec![0.0; images * g.c_out * g.h_out * g.w_out];
    for im in 0..images {
        for co in 0..g.c_out {
            for oy in 0..g.h_out {
                for ox in 0..g.w_out {
                    let mut s = b.map_or(0.0, |b| b[co] as f64);
                    for ci in 0..g.c_in {
                        for i in 0..g.kh {
                            for j in 0..g.kw {
                                let iy = (oy * g.stride + i) as isize - g.pad as isize;
                                let ix = (ox * g.stride + j) as isize - g.pad as isize;
                                if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                                    continue;
                                }
                                let xv =
                                    x[((im * g.c_in + ci) * g.h + iy as usize) * g.w + ix as usize];
                                let wv = w[((co * g.c_in + ci) * g.kh + i) * g.kw + j];
                                s += xv as f64 * wv as f64;
                            }
                        }
                    }
                    y[((im * g.c_out + co) * g.h_out + oy) * g.w_out + ox] = s;
                }
            }
        }
    }
    y
}

pub fn naive_pool(x: &[f32], images: usize, kind: PoolKind, g: &PoolGeom) -> Vec<f64> {
    let mut y = vec![0.0; images * g.c * g.h_out * g.w_out];
    for p in 0..images * g.c {
        for oy in 0..g.h_out {
            for ox in 0..g.w_out {
                let mut m = f64::NEG_INFINITY;
                let mut s = 0.0;
                for i in 0..g.k {
                    for j in 0..g.k {
                        let iy = (oy * g.stride + i) as isize - g.pad[0] as isize;
                        let ix = (ox * g.stride + j) as isize - g.pad[1] as isize;
                        if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                            continue; // padding: -inf for max, 0 for avg
                        }
                        let v = x[(p * g.h + iy as usize) * g.w + ix as usize] as f64;
                        m = m.max(v);
                        s += v;
                    }
                }
                y[(p * g.h_out + oy) * g.w_out + ox] = match kind {
                    PoolKind::Max => m,
                    PoolKind::Avg => s / (g.k * g.k) as f64,
                };
            }
        }
    }
    y
}

#[allow(clippy::too_many_arguments)]
pub fn conv_geom(
    c_in: usize,
    h: usize,
    w: usize,
    c_out: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    pad: usize,
) -> ConvGeom {
    ConvGeom {
        c_in,
        h,
        w,
        c_out,
        kh,
        kw,
        stride,
        pad,
        h_out: (h + 2 * pad - kh) / stride + 1,
        w_out: (w + 2 * pad - kw) / stride + 1,
    }
}

pub fn pool_geom(c: usize, h: usize, w: usize, k: usize, stride: usize, pad: usize) -> PoolGeom {
    pool_geom_sides(c, h, w, k, stride, [pad; 4])
}

/// A pool geometry with padding (top, left, bottom, right).
pub fn pool_geom_sides(
    c: usize,
    h: usize,
    w: usize,
    k: usize,
    stride: usize,
    pad: [usize; 4],
) -> PoolGeom {
    PoolGeom {
        c,
        h,
        w,
        k,
        stride,
        pad,
        h_out: (h + pad[0] + pad[2] - k) / stride + 1,
        w_out: (w + pad[1] + pad[3] - k) / stride + 1,
    }
}
