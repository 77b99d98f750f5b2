//! `cargo run --release -p yinyang-infer [-- WEIGHTS]`: test accuracy of the trained network.
use std::path::PathBuf;

fn main() {
    let weights = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("yinyang.safetensors"));
    match yinyang_infer::evaluate(&weights) {
        Ok((acc, spikes)) => println!(
            "test accuracy: {:.2}% (1000 samples, {spikes:.1} spikes per sample)",
            acc * 100.0
        ),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
