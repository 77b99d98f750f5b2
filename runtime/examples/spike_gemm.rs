//! Microbenchmark of the event-driven projection against dense GEMM (the numbers behind
//! the compiler's cost model, `compiler/src/passes/sparse.rs`):
//! `cargo run --release -p snn-runtime --example spike_gemm [ROWS K N]`.
use snn_runtime::cpu::{ops, spike};
use std::time::Instant;

fn median(mut f: impl FnMut()) -> f64 {
    f();
    let mut v: Vec<f64> = (0..15)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let a: Vec<usize> = std::env::args()
        .skip(1)
        .map(|s| s.parse().unwrap())
        .collect();
    let (rows, k, n) = if a.len() == 3 {
        (a[0], a[1], a[2])
    } else {
        (3200, 784, 512)
    };
    let mut s = 12345u64;
    let mut rnd = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32
    };
    let w: Vec<f32> = (0..n * k).map(|_| rnd() - 0.5).collect();
    let wt = spike::transpose(&w, n, k);
    let dy: Vec<f32> = (0..rows * n).map(|_| rnd() - 0.5).collect();
    let mut y = vec![0.0f32; rows * n];
    let mut dw = vec![0.0f32; n * k];
    let macs = (rows * n * k) as f64;
    println!(
        "rows {rows} k {k} n {n}, {} threads",
        rayon::current_num_threads()
    );
    let t_tr = median(|| drop(std::hint::black_box(spike::transpose(&w, n, k))));
    println!("transpose: {t_tr:.3} ms");
    for rate in [0.0f32, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0] {
        let x: Vec<f32> = (0..rows * k)
            .map(|_| if rnd() < rate { 1.0 } else { 0.0 })
            .collect();
        let td = median(|| ops::dense(&x, &w, None, &mut y, rows, k, n, false).unwrap());
        let ts = median(|| spike::spike_dense(&x, &wt, None, &mut y, rows, k, n, false).unwrap());
        let tdw = median(|| ops::dense_dw(&x, &dy, &mut dw, None, rows, k, n).unwrap());
        let tsw = median(|| spike::spike_dense_dw(&x, &dy, &mut dw, None, rows, k, n).unwrap());
        let adds = macs * rate as f64;
        println!(
            "rate {rate:.2}: fwd dense {td:.2} ms ({:.1} GMAC/s) spike {ts:.2} ms ({:.1} Gadd/s); \
             dw dense {tdw:.2} ms spike {tsw:.2} ms ({:.1} Gadd/s)",
            macs / td / 1e6,
            adds / ts / 1e6,
            adds / tsw / 1e6
        );
    }
}
