//! The intermediate representations: NetIR (`net`, with neuron equations in `eqn` and pass
//! decisions in `sched`), KernelIR (`kernel`), and their text dumps (`dump`).

pub mod adjoint;
pub mod arena;
pub mod cost;
pub mod dump;
pub mod eqn;
pub mod kernel;
pub mod linear;
pub mod names;
pub mod net;
pub mod op;
pub mod sched;
pub mod train;
