//! The CPU's library operations on host slices, gathered from the op-family files for
//! tests and benchmarks: each checks its slice lengths against the shapes and returns an
//! error instead of panicking.

pub use super::conv::{conv2d, conv2d_dw, conv2d_dx};
pub use super::dense::{dense, dense_dw, dense_dx};
pub use super::pool::{pool2d, pool2d_dx};
pub use super::time_mix::{time_mix, time_mix_dw, SPARSE_ROW};
