//! Host-side training maths: losses with their gradients, optimizers, learning-rate
//! schedules. The device runs forward and backward kernels; these run between them on
//! small tensors (outputs `[B, C]` or `[T, B, C]`, and the weights), all on f32 slices.
//! Each item cites the PyTorch / snnTorch / SpikingJelly definition it reproduces.

pub mod local;
pub mod local_checkpoint;
pub mod loss;
pub mod optim;
pub mod schedule;
pub mod trainer;

pub use trainer::{loss_and_grads, StepStats, Trainer};

/// An f32 hyperparameter as the f64 a Python user would have written: through its
/// shortest decimal form, so `0.999f32` becomes `0.999`, not `0.99900001287...`. torch
/// computes bias corrections and schedules with Python floats, and the difference shows
/// (e.g. `1 - 0.999f32 as f64` is off by 1.3e-5 relative).
pub(crate) fn widen(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(x as f64)
}
