//! Back ends. Each one only prints KernelIR; none decides anything.

pub mod cuda;
pub mod cuda_plastic;
pub mod rust;
pub mod rust_plastic;
