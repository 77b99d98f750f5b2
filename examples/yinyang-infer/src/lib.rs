//! A user's crate: the Yin-Yang network of `examples/yinyang.snn`, compiled into this crate at
//! build time by `include_snn!`, classifying the Yin-Yang test set with weights that
//! `snnc train examples/yinyang.snn` wrote (`yinyang.safetensors`, checked in beside this
//! crate's manifest). No snnc binary, no rustc at run time: the kernels are in this crate.

use std::path::Path;

// Path relative to this crate's manifest; cargo rebuilds the crate when the file changes.
snn::include_snn!("../yinyang.snn");

/// Accuracy of the trained network on the standard Yin-Yang test split (1000 samples), and
/// the mean number of hidden-layer spikes per sample.
pub fn evaluate(weights: &Path) -> snn::Result<(f64, f64)> {
    let mut net = yinyang::Network::new()?;
    net.load_weights(weights)?;
    let test = snn::data::yinyang::standard("test")?;
    let (t, batch) = (yinyang::T, 100);
    let (mut correct, mut spikes) = (0usize, 0.0f64);
    for start in (0..test.len()).step_by(batch) {
        let idx: Vec<usize> = (start..(start + batch).min(test.len())).collect();
        let b = idx.len();
        let x = snn::Tensor {
            shape: vec![b, 4],
            data: idx.iter().flat_map(|&i| test.sample(i).to_vec()).collect(),
        };
        let out = net.forward(&[x], t, b)?;
        // The class score is the readout membrane's maximum over time (the model's loss).
        let v = &out.out_v.data; // [T, B, 3]
        for (j, &i) in idx.iter().enumerate() {
            let score = |c: usize| {
                (0..t)
                    .map(|s| v[(s * b + j) * 3 + c])
                    .fold(f32::MIN, f32::max)
            };
            let pred = (0..3)
                .max_by(|&a, &c| score(a).total_cmp(&score(c)))
                .unwrap_or(0);
            correct += usize::from(pred as u32 == test.y[i]);
        }
        spikes += out.s1_counts.data.iter().map(|&c| c as f64).sum::<f64>();
    }
    let n = test.len() as f64;
    Ok((correct as f64 / n, spikes / n))
}
