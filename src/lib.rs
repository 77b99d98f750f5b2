//! `snn`: the facade crate. Users depend on this one crate; it re-exports the runtime
//! (buffers, CPU device, plan executor, weight IO) and the `snn!` / `include_snn!` macros,
//! which compile a `.snn` model into the user's crate at build time.
pub use snn_macros::{include_snn, snn};
pub use snn_runtime as runtime;
pub use snn_runtime::*;

/// The README's Rust example compiles and runs (`cargo test --doc -p snn`).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeExample;
