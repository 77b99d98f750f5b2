//! The `source` fuzz target on stable Rust: every file of `fuzz/corpus/source/` and
//! `fuzz/regressions/source/` through `snnc::fuzzing::source` (exactly what cargo-fuzz ran),
//! then a bounded run of seeded random mutations of them (docs/testing.md, "Fuzzing").

#[path = "../../fuzz/replay/mod.rs"]
mod replay;

#[test]
fn corpus_and_regressions() {
    let n = replay::replay("source", snnc::fuzzing::source);
    assert!(n > 0, "fuzz/corpus/source/ is empty");
}

/// Sized to take a few seconds in the dev profile on the 2-core CI machine.
#[test]
fn random_mutations() {
    replay::mutate_run("source", snnc::fuzzing::source, 0x5eed_0001, 1500, 16 << 10);
}
