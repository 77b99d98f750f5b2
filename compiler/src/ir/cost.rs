//! The cost model's targets (a roofline per machine) and how its estimates are printed:
//! `passes::schedule` decides with them, the IR dump shows them.

use super::sched::Cost;

/// A target for the cost model: a roofline plus a fixed cost per library call or launch.
#[derive(Clone, Copy, Debug)]
pub struct Machine {
    pub name: &'static str,
    /// Sustained f32 FLOP/s of a GEMM.
    pub flops: f64,
    /// Memory bandwidth, bytes/s.
    pub bandwidth: f64,
    /// Seconds per op (thread-pool dispatch, a launch).
    pub op_overhead: f64,
    /// Multiply-adds per second of a large dense GEMM (a projection).
    pub gemm_macs: f64,
    /// Multiply-adds per second of the event-driven projection's inner kernel (on the union
    /// of the non-zeros of 4 rows, see `runtime/src/cpu/spike.rs`).
    pub event_macs: f64,
    /// Seconds per input element the event-driven projection scans for non-zeros.
    pub event_scan: f64,
    /// Multiply-adds per second of a convolution as im2col + GEMM (small GEMMs: `c_out`
    /// rows, far from the large-GEMM peak).
    pub conv_macs: f64,
    /// Adds per second of the event-driven convolution's scatter (`c_out`-wide row adds into
    /// an accumulator in cache, see `runtime/src/cpu/spike.rs`).
    pub scatter_adds: f64,
    /// Seconds per input cell of the event-driven convolution's fixed work (the scan for
    /// non-zeros, the accumulator's transposes in and out).
    pub scatter_scan: f64,
}

/// The CPU back end: a few AVX2 cores (the numbers matter only relative to each other).
pub const CPU: Machine = Machine {
    name: "CPU",
    flops: 50e9,
    bandwidth: 10e9,
    op_overhead: 5e-6,
    // Measured on the idle 2-vCPU dev VM (AVX-512) with `cargo run --release -p snn-runtime
    // --example spike_gemm` at 3200 x 784 -> 512 (BENCHMARKS.md, 2026-11-23): dense GEMM
    // 165-174 G MAC/s; event-driven 1.8 ms at rate 0 (the scan of 2.5M inputs) and 12.7 ms
    // at rate 1 (100 G MAC/s on the union).
    gemm_macs: 170e9,
    event_macs: 100e9,
    event_scan: 0.7e-9,
    // `cargo run --release -p snn-runtime --example spike_conv` (512 images 8x14x14 -> 16,
    // 3x3, pad 1: the second layer of examples/conv.snn at batch 64), one thread, minimum
    // of 11 runs, under load (BENCHMARKS.md, 2026-11-23): im2col + GEMM 6.1-6.4 ms at any
    // rate (18.5 G MAC/s); event-driven 1.6 ms at rate 0, then about 17 ms per unit of rate
    // between 5% and 50% (6.8 G adds/s). Doubled for the two threads.
    conv_macs: 37e9,
    scatter_adds: 13.6e9,
    scatter_scan: 1.4e-9,
};

impl Machine {
    pub fn cost(&self, flops: f64, bytes: f64, ops: f64) -> Cost {
        Cost {
            flops,
            bytes,
            ops,
            seconds: (flops / self.flops).max(bytes / self.bandwidth) + ops * self.op_overhead,
        }
    }
}

/// `1.5 k`, `20.0 M`: for dumps.
pub fn si(v: f64) -> String {
    let (d, p) = if v >= 1e9 {
        (1e9, "G")
    } else if v >= 1e6 {
        (1e6, "M")
    } else if v >= 1e3 {
        (1e3, "k")
    } else {
        (1.0, "")
    };
    format!("{:.1} {p}", v / d)
}

/// `12.3 us`.
pub fn duration(s: f64) -> String {
    if s >= 1e-3 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{:.1} us", s * 1e6)
    }
}
