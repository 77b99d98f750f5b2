//! `.snn` source through the front end, every pass, the IR dumps and both printers.
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| snnc::fuzzing::source(bytes));
