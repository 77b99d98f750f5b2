//! A bound on how deeply decoded step loops nest. The decoder recurses once per nested
//! [`Op::StepLoop`] / [`Op::ReverseStepLoop`]; without a bound, a corrupt embedded plan a few
//! kilobytes long overflows the stack (fuzzing found one) instead of being an error.

use std::cell::Cell;

use serde::{Deserialize, Deserializer};

use super::Op;

/// Deepest nesting of step loops a decoded plan may have. The compiler emits one level (a
/// loop's body holds no loop); this leaves room and still decodes on a 2 MiB thread.
pub const MAX_LOOP_DEPTH: usize = 32;

thread_local! {
    static DEPTH: Cell<usize> = const { Cell::new(0) };
    /// Whether the last refusal was ours: postcard replaces a custom error's text with a
    /// generic one, so the decoder asks here for the real reason.
    static REFUSED: Cell<bool> = const { Cell::new(false) };
}

/// Why decoding failed, when it was this bound (and clears it for the next decode).
pub(super) fn take_refusal() -> Option<String> {
    REFUSED
        .with(|r| r.replace(false))
        .then(|| format!("step loops nested more than {MAX_LOOP_DEPTH} deep"))
}

/// Restores the depth when a body is done, also when decoding it failed or panicked.
struct Level;

impl Drop for Level {
    fn drop(&mut self) {
        DEPTH.with(|d| d.set(d.get() - 1));
    }
}

/// `deserialize_with` for a loop's body: one level deeper, refused past [`MAX_LOOP_DEPTH`].
pub(super) fn body<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Op>, D::Error> {
    let depth = DEPTH.with(|c| c.get()) + 1;
    if depth > MAX_LOOP_DEPTH {
        REFUSED.with(|r| r.set(true));
        return Err(serde::de::Error::custom("step loops nested too deep"));
    }
    DEPTH.with(|c| c.set(depth));
    let _level = Level;
    Vec::<Op>::deserialize(d)
}
