//! Back ends. Each one only prints KernelIR; none decides anything.

pub mod cuda;
pub mod plan_tokens;
pub mod rust;
