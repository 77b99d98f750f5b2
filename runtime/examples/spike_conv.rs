//! Microbenchmark of the event-driven conv2d against im2col + GEMM (the numbers behind the
//! compiler's cost model, `conv_macs` and `scatter_adds` in compiler/src/passes/schedule.rs):
//! `cargo run --release -p snn-runtime --example spike_conv [IMAGES C_IN H W C_OUT K STRIDE PAD]`.
//! The default is the second layer of examples/conv.snn at batch 64, T = 8.
use snn_runtime::cpu::{ops, spike};
use snn_runtime::plan::ConvGeom;
use std::time::Instant;

fn best(mut f: impl FnMut()) -> f64 {
    f();
    let mut v: Vec<f64> = (0..11)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    // The minimum: robust to a busy machine (other processes only add time).
    v[0]
}

fn main() {
    let a: Vec<usize> = std::env::args()
        .skip(1)
        .map(|s| s.parse().unwrap())
        .collect();
    let [images, c_in, h, w, c_out, k, stride, pad] = if a.len() == 8 {
        [a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]
    } else {
        [512, 8, 14, 14, 16, 3, 1, 1]
    };
    let g = ConvGeom {
        c_in,
        h,
        w,
        c_out,
        kh: k,
        kw: k,
        stride,
        pad,
        h_out: (h + 2 * pad - k) / stride + 1,
        w_out: (w + 2 * pad - k) / stride + 1,
    };
    let mut s = 12345u64;
    let mut rnd = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32
    };
    let (xi, p, kk) = (c_in * h * w, g.h_out * g.w_out, c_in * k * k);
    let wgt: Vec<f32> = (0..c_out * kk).map(|_| rnd() - 0.5).collect();
    let wt = spike::transpose(&wgt, c_out, kk);
    let dy: Vec<f32> = (0..images * c_out * p).map(|_| rnd() - 0.5).collect();
    let mut y = vec![0.0f32; images * c_out * p];
    let mut dw = vec![0.0f32; c_out * kk];
    let macs = (images * c_out * p * kk) as f64;
    println!(
        "{images} images, {g:?}, {} threads",
        rayon::current_num_threads()
    );
    for rate in [0.0f32, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0] {
        let x: Vec<f32> = (0..images * xi)
            .map(|_| if rnd() < rate { 1.0 } else { 0.0 })
            .collect();
        let td = best(|| ops::conv2d(&x, &wgt, None, &mut y, images, &g, false).unwrap());
        let ts = best(|| spike::spike_conv2d(&x, &wt, None, &mut y, images, &g, false).unwrap());
        let tdw = best(|| ops::conv2d_dw(&x, &dy, &mut dw, None, images, &g).unwrap());
        let tsw = best(|| spike::spike_conv2d_dw(&x, &dy, &mut dw, None, images, &g).unwrap());
        let adds = macs * rate as f64;
        println!(
            "rate {rate:.2}: fwd im2col {td:.2} ms ({:.1} GMAC/s) event {ts:.2} ms ({:.1} Gadd/s); \
             dw im2col {tdw:.2} ms event {tsw:.2} ms ({:.1} Gadd/s)",
            macs / td / 1e6,
            adds / ts / 1e6,
            adds / tsw / 1e6
        );
    }
}
