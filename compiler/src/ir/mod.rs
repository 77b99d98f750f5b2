//! The intermediate representations: NetIR (`net`, with neuron equations in `eqn`, pass
//! decisions in `sched` and training settings in `train`), KernelIR (`kernel`, its names
//! from `names`), the expression tree they share (`expr`), and their text dumps (`dump`).
//! The bottom layer: nothing here names the syntax tree, the passes or the back ends
//! (`compiler/tests/layering.rs`).

pub mod adjoint;
pub mod arena;
pub mod cost;
pub mod dump;
pub mod eqn;
pub mod expr;
pub mod filter;
pub mod kernel;
pub mod linear;
pub mod names;
pub mod net;
pub mod sched;
pub mod synapse;
pub mod train;
