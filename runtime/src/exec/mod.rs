//! Running a plan: [`validate()`] checks it once and returns a [`ValidPlan`]; the
//! [`interp`]reter walks a valid plan's ops on a device; a [`Session`] owns both, the
//! device, the weights and the parameters.

pub mod footprint;
pub mod interp;
mod session;
pub mod validate;

pub use footprint::Footprint;
pub use session::Session;
pub use validate::{validate, PlanInfo, ValidPlan};
