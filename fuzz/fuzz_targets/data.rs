//! The `.npy`, safetensors, IDX and embedded-plan readers (and the plan validator).
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| snn_runtime::fuzzing::data(bytes));
