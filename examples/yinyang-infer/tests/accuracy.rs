//! The macro-built network on the checked-in trained weights gives exactly what
//! `snnc eval examples/yinyang.snn --weights examples/yinyang-infer/yinyang.safetensors`
//! printed: 98.20% test accuracy, 250.0 hidden spikes per sample.
use std::path::PathBuf;

fn weights() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("yinyang.safetensors")
}

#[test]
fn trained_checkpoint_classifies_the_test_set() {
    let (acc, spikes) = yinyang_infer::evaluate(&weights()).unwrap();
    assert_eq!((acc * 1000.0).round() as u32, 982, "accuracy {acc}");
    assert!((spikes - 250.0).abs() < 0.05, "{spikes} spikes per sample");
}

#[test]
fn missing_weights_are_an_error_naming_the_file() {
    let e = yinyang_infer::evaluate(&weights().with_file_name("nope.safetensors")).unwrap_err();
    assert!(e.to_string().contains("nope.safetensors"), "{e}");
}
