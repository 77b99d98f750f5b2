//! Losses on model outputs, with dLoss/d(output) for the backward pass.
//!
//! Layouts: counts `[B, C]` row-major; per-step tensors `[T, B, C]` row-major, time first.
//! Every loss is a mean over the batch (torch's default `reduction="mean"`) and is evaluated
//! in f64, then rounded to f32, so the value does not depend on summation order. Labels are
//! class indices; an out-of-range label panics, like torch's "Target out of bounds" error.

/// A loss value, its gradient and the number of correct predictions.
#[derive(Clone, Debug, PartialEq)]
pub struct LossOut {
    /// Mean over the batch.
    pub loss: f32,
    /// dLoss/dinput, same layout as the input.
    pub grad: Vec<f32>,
    /// Samples whose prediction ([`argmax`] of the logits or rates) equals the label.
    pub correct: usize,
}

/// How a `[T, B, C]` readout membrane becomes `[B, C]` logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduce {
    /// `mem.max(0)` (snnTorch `ce_max_membrane_loss`); the gradient goes to the step of the
    /// maximum, the first one on ties (`torch.max(dim)` returns the first maximal index).
    Max,
    /// `mem.mean(0)` (the SpikingJelly examples' readout); the gradient is spread as 1/T.
    Mean,
}

/// Index of the maximum, the first one on ties; a NaN counts as the maximum, like
/// `torch.argmax`. 0 for an empty slice.
pub fn argmax<T: PartialOrd>(v: &[T]) -> usize {
    let is_nan = |x: &T| x.partial_cmp(x).is_none();
    let mut best = 0;
    for i in 1..v.len() {
        if is_nan(&v[best]) {
            break;
        }
        if v[i] > v[best] || is_nan(&v[i]) {
            best = i;
        }
    }
    best
}

fn check_labels(labels: &[u32], b: usize, classes: usize) {
    assert_eq!(
        labels.len(),
        b,
        "{} labels for a batch of {b}",
        labels.len()
    );
    if let Some(&y) = labels.iter().find(|&&y| y as usize >= classes) {
        panic!("label {y} is out of bounds for {classes} classes");
    }
}

/// torch `F.cross_entropy(logits, labels)` on `[B, C]` f64 logits: the mean over the batch
/// of `logsumexp(row) - row[y]` (max-shifted), with dL/dlogits = `(softmax - onehot) / B`.
fn ce(logits: &[f64], labels: &[u32], b: usize, c: usize) -> (f64, Vec<f64>, usize) {
    check_labels(labels, b, c);
    let mut loss = 0.0;
    let mut g = vec![0.0; b * c];
    let mut correct = 0;
    for i in 0..b {
        let row = &logits[i * c..(i + 1) * c];
        let y = labels[i] as usize;
        let mx = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = row.iter().map(|v| (v - mx).exp()).sum();
        loss += z.ln() + mx - row[y];
        for (j, gj) in g[i * c..(i + 1) * c].iter_mut().enumerate() {
            let p = (row[j] - mx).exp() / z;
            *gj = (p - f64::from(u8::from(j == y))) / b as f64;
        }
        correct += usize::from(argmax(row) == y);
    }
    (loss / b as f64, g, correct)
}

fn to_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// Cross-entropy of softmax(spike counts): torch `F.cross_entropy(counts, labels)`, the
/// same as snnTorch `ce_count_loss` given the summed spikes.
pub fn cross_entropy_counts(counts: &[f32], labels: &[u32], b: usize, c: usize) -> LossOut {
    assert_eq!(counts.len(), b * c, "counts must be [B, C]");
    let logits: Vec<f64> = counts.iter().map(|&v| v as f64).collect();
    let (loss, g, correct) = ce(&logits, labels, b, c);
    LossOut {
        loss: loss as f32,
        grad: to_f32(&g),
        correct,
    }
}

/// Cross-entropy of softmax(max or mean over time of a `[T, B, C]` readout membrane); see
/// [`Reduce`] for where the gradient goes.
pub fn cross_entropy_membrane(
    trace: &[f32],
    labels: &[u32],
    t: usize,
    b: usize,
    c: usize,
    reduce: Reduce,
) -> LossOut {
    assert!(t > 0, "a membrane trace needs at least one step");
    assert_eq!(trace.len(), t * b * c, "the trace must be [T, B, C]");
    let bc = b * c;
    let mut logits = vec![0.0f64; bc];
    let mut at = vec![0usize; bc];
    for k in 0..bc {
        match reduce {
            Reduce::Max => {
                // As `argmax`: the first maximum, or the first NaN (torch propagates it).
                let mut best = 0;
                for s in 1..t {
                    let (v, w) = (trace[s * bc + k], trace[best * bc + k]);
                    if w.is_nan() {
                        break;
                    }
                    if v > w || v.is_nan() {
                        best = s;
                    }
                }
                at[k] = best;
                logits[k] = trace[best * bc + k] as f64;
            }
            Reduce::Mean => {
                logits[k] = (0..t).map(|s| trace[s * bc + k] as f64).sum::<f64>() / t as f64;
            }
        }
    }
    let (loss, g, correct) = ce(&logits, labels, b, c);
    let mut grad = vec![0.0f32; t * bc];
    for k in 0..bc {
        match reduce {
            Reduce::Max => grad[at[k] * bc + k] = g[k] as f32,
            Reduce::Mean => {
                for s in 0..t {
                    grad[s * bc + k] = (g[k] / t as f64) as f32;
                }
            }
        }
    }
    LossOut {
        loss: loss as f32,
        grad,
        correct,
    }
}

/// Mean squared error of firing rates against targets: torch `F.mse_loss(rate, target)`
/// (mean over B and classes), as SpikingJelly's examples and BPSTA train.
///
/// `rate[b, k] = mean over the `groups` neurons `k*groups .. (k+1)*groups` of counts / T`
/// (SpikingJelly `VotingLayer`; BPSTA votes with 10 neurons per class, `groups = 1` is the
/// plain loss), so `c = classes * groups`. The target is `on` for the label and `off`
/// elsewhere (BPSTA: one-hot, 1 and 0). The prediction is the argmax of the class rates.
///
/// snnTorch's `mse_count_loss` differs: it compares counts with `int(T * rate)` targets and
/// divides by T, not T², so its value is T times this one for integral targets.
#[allow(clippy::too_many_arguments)]
pub fn mse_counts(
    counts: &[f32],
    labels: &[u32],
    t: usize,
    b: usize,
    c: usize,
    on: f32,
    off: f32,
    groups: usize,
) -> LossOut {
    assert!(
        groups >= 1 && c / groups * groups == c,
        "{c} output neurons do not split into groups of {groups}"
    );
    assert_eq!(counts.len(), b * c, "counts must be [B, C]");
    let classes = c / groups;
    check_labels(labels, b, classes);
    let n = (b * classes) as f64;
    let per = (groups * t) as f64;
    let (on, off) = (on as f64, off as f64);
    let mut loss = 0.0;
    let mut grad = vec![0.0f32; b * c];
    let mut correct = 0;
    for i in 0..b {
        let row = &counts[i * c..(i + 1) * c];
        let rates: Vec<f64> = row
            .chunks(groups)
            .map(|g| g.iter().map(|&x| x as f64).sum::<f64>() / per)
            .collect();
        for (k, &r) in rates.iter().enumerate() {
            let d = r - if k == labels[i] as usize { on } else { off };
            loss += d * d;
            let dc = (2.0 * d / n / per) as f32;
            grad[i * c + k * groups..i * c + (k + 1) * groups].fill(dc);
        }
        correct += usize::from(argmax(&rates) == labels[i] as usize);
    }
    LossOut {
        loss: (loss / n) as f32,
        grad,
        correct,
    }
}

/// snnTorch `ce_temporal_loss()` (default `inverse="negate"`) on a `[T, B, C]` 0/1 spike
/// output: cross-entropy of the logits `-time[b, c]`.
///
/// `time` is snnTorch's `SpikeTime.FirstSpike`: the step of the first nonzero spike, and
/// `T - 1` for a neuron that never fires (snnTorch places a "shadow spike" at the final
/// step, so silence ties with a spike at the last step). Its backward is the sign
/// estimator `d time / d spikes[s, b, c] = -1` at `s = time[b, c]` and 0 elsewhere, so
/// `dL/dspikes[time, b, c] = -dL/dtime = dL/dlogit = (softmax - onehot)[b, c] / B`.
/// The prediction is the earliest neuron (first index on ties).
pub fn first_spike_time(spikes: &[f32], labels: &[u32], t: usize, b: usize, c: usize) -> LossOut {
    assert!(t > 0, "a spike train needs at least one step");
    assert_eq!(spikes.len(), t * b * c, "spikes must be [T, B, C]");
    let bc = b * c;
    let first: Vec<usize> = (0..bc)
        .map(|k| (0..t).find(|&s| spikes[s * bc + k] != 0.0).unwrap_or(t - 1))
        .collect();
    let logits: Vec<f64> = first.iter().map(|&s| -(s as f64)).collect();
    let (loss, g, correct) = ce(&logits, labels, b, c);
    let mut grad = vec![0.0f32; t * bc];
    for k in 0..bc {
        grad[first[k] * bc + k] = g[k] as f32;
    }
    LossOut {
        loss: loss as f32,
        grad,
        correct,
    }
}

/// Spike-rate regulariser for a hidden layer's `[B, N]` counts over `t` steps:
/// `lambda * mean over B, N of (counts / T - target)^2`, and its gradient
/// `2 * lambda * (counts / T - target) / (B * N * T)`. Added to the task loss, it keeps
/// the layer near `target` spikes per step (0 for plain sparsity pressure).
pub fn spike_rate_reg(
    counts: &[f32],
    t: usize,
    b: usize,
    n: usize,
    lambda: f32,
    target: f32,
) -> (f32, Vec<f32>) {
    assert_eq!(counts.len(), b * n, "counts must be [B, N]");
    let m = (b * n) as f64;
    let (t, lambda, target) = (t as f64, lambda as f64, target as f64);
    let mut sum = 0.0;
    let grad = counts
        .iter()
        .map(|&c| {
            let d = c as f64 / t - target;
            sum += d * d;
            (lambda * 2.0 * d / m / t) as f32
        })
        .collect();
    ((lambda * sum / m) as f32, grad)
}
