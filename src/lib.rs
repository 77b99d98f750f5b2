//! `snn`: the facade crate. Users depend on this one crate; it re-exports the runtime
//! (buffers, CPU device, plan executor, weight IO) and, once issue 6 lands, the `snn!`
//! macros.
pub use snn_runtime as runtime;
pub use snn_runtime::*;
