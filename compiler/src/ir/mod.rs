//! The intermediate representations: NetIR (`net`, with neuron equations in `eqn` and pass
//! decisions in `sched`), KernelIR (`kernel`), the expression tree they share (`expr`), and
//! their text dumps (`dump`).

pub mod adjoint;
pub mod arena;
pub mod dump;
pub mod eqn;
pub mod expr;
pub mod kernel;
pub mod linear;
pub mod net;
pub mod sched;
