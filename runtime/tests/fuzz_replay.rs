//! The `data` fuzz target on stable Rust: every file of `fuzz/corpus/data/` and
//! `fuzz/regressions/data/` through `snn_runtime::fuzzing::data` (exactly what cargo-fuzz
//! ran), then a bounded run of seeded random mutations of them (docs/testing.md, "Fuzzing").

#[path = "../../fuzz/replay/mod.rs"]
mod replay;

#[test]
fn corpus_and_regressions() {
    let n = replay::replay("data", snn_runtime::fuzzing::data);
    assert!(n > 0, "fuzz/corpus/data/ is empty");
}

/// Sized to take a few seconds in the dev profile on the 2-core CI machine.
#[test]
fn random_mutations() {
    replay::mutate_run(
        "data",
        snn_runtime::fuzzing::data,
        0x5eed_0002,
        60_000,
        64 << 10,
    );
}
