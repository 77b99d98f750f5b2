//! Host-side training maths: losses with their gradients, optimizers, learning-rate
//! schedules. The device runs forward and backward kernels; these run between them on
//! small tensors (outputs `[B, C]` or `[T, B, C]`, and the weights).

pub mod loss;
pub mod optim;
pub mod schedule;
