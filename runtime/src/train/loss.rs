//! Losses on model outputs and dLoss/d(output). Layouts: counts `[B, C]`, per-step
//! tensors `[T, B, C]` (time first). Every loss is a mean over the batch (torch's default
//! reduction) and is computed in f64.

/// A loss value, its gradient (same layout as the input) and the number of samples whose
/// prediction (argmax, first on ties) equals the label.
#[derive(Clone, Debug, PartialEq)]
pub struct LossOut {
    pub loss: f32,
    pub grad: Vec<f32>,
    pub correct: usize,
}

/// How a readout membrane over time becomes a logit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduce {
    Max,
    Mean,
}

/// Index of the first maximum.
pub fn argmax(v: &[f64]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// torch `F.cross_entropy(logits, labels)` on `[B, C]` logits: value and dL/dlogits.
fn ce(logits: &[f64], labels: &[u32], b: usize, c: usize) -> (f64, Vec<f64>, usize) {
    let mut loss = 0.0;
    let mut g = vec![0.0; b * c];
    let mut correct = 0;
    for i in 0..b {
        let row = &logits[i * c..(i + 1) * c];
        let y = labels[i] as usize;
        let mx = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = row.iter().map(|v| (v - mx).exp()).sum();
        loss += z.ln() + mx - row[y];
        for j in 0..c {
            let p = (row[j] - mx).exp() / z;
            g[i * c + j] = (p - if j == y { 1.0 } else { 0.0 }) / b as f64;
        }
        correct += usize::from(argmax(row) == y);
    }
    (loss / b as f64, g, correct)
}

/// Cross-entropy of softmax(spike counts).
pub fn cross_entropy_counts(counts: &[f32], labels: &[u32], b: usize, c: usize) -> LossOut {
    let logits: Vec<f64> = counts.iter().map(|&v| v as f64).collect();
    let (loss, g, correct) = ce(&logits, labels, b, c);
    LossOut {
        loss: loss as f32,
        grad: g.iter().map(|&v| v as f32).collect(),
        correct,
    }
}

/// Cross-entropy of softmax(max or mean over time of a `[T, B, C]` readout membrane). The
/// max's gradient goes to the step of the (first) maximum.
pub fn cross_entropy_membrane(
    trace: &[f32],
    labels: &[u32],
    t: usize,
    b: usize,
    c: usize,
    reduce: Reduce,
) -> LossOut {
    let bc = b * c;
    let mut logits = vec![0.0f64; bc];
    let mut at = vec![0usize; bc];
    for k in 0..bc {
        match reduce {
            Reduce::Max => {
                let mut best = f64::NEG_INFINITY;
                for s in 0..t {
                    let v = trace[s * bc + k] as f64;
                    if v > best {
                        best = v;
                        at[k] = s;
                    }
                }
                logits[k] = best;
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

/// Mean squared error of spike rates against targets (torch `MSELoss`, mean): the rate of
/// class `k` is the mean over its `groups` neurons of counts / T (BPSTA votes with 10
/// neurons per class); the target is `on` for the label, `off` otherwise. `c` counts
/// neurons (`classes * groups`).
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
    let classes = c / groups.max(1);
    let n = (b * classes) as f64;
    let mut loss = 0.0;
    let mut grad = vec![0.0f32; b * c];
    let mut correct = 0;
    for i in 0..b {
        let mut rates = vec![0.0f64; classes];
        for (k, r) in rates.iter_mut().enumerate() {
            let s: f64 = (0..groups)
                .map(|g| counts[i * c + k * groups + g] as f64)
                .sum();
            *r = s / (groups * t) as f64;
        }
        for (k, &r) in rates.iter().enumerate() {
            let target = if k == labels[i] as usize { on } else { off } as f64;
            loss += (r - target) * (r - target) / n;
            let d = 2.0 * (r - target) / n / (groups * t) as f64;
            for g in 0..groups {
                grad[i * c + k * groups + g] = d as f32;
            }
        }
        correct += usize::from(argmax(&rates) == labels[i] as usize);
    }
    LossOut {
        loss: loss as f32,
        grad,
        correct,
    }
}

/// Cross-entropy over negative first-spike times of a `[T, B, C]` spike output
/// (snnTorch's `ce_temporal_loss`): a neuron that never fires has time `T`. The gradient
/// reaches the spike at the first-spike step: d(time)/d(spike) = -(T - t) there, the
/// sensitivity of `sum_t (1 - cumulative spikes)` (a later first spike raises the time).
pub fn first_spike_time(spikes: &[f32], labels: &[u32], t: usize, b: usize, c: usize) -> LossOut {
    let bc = b * c;
    let mut first = vec![t; bc];
    for k in 0..bc {
        if let Some(s) = (0..t).find(|&s| spikes[s * bc + k] != 0.0) {
            first[k] = s;
        }
    }
    let logits: Vec<f64> = first.iter().map(|&s| -(s as f64)).collect();
    let (loss, g, correct) = ce(&logits, labels, b, c);
    let mut grad = vec![0.0f32; t * bc];
    for k in 0..bc {
        // logit = -time; time = sum_s (1 - min(1, cumsum spikes)): a spike at step s
        // lowers the time by (T - s) while no earlier spike exists.
        let s = first[k].min(t.saturating_sub(1));
        grad[s * bc + k] = (g[k] * (t - s) as f64) as f32;
    }
    LossOut {
        loss: loss as f32,
        grad,
        correct,
    }
}

/// `lambda * mean over B, N of (counts / T - target)^2` on a `[B, N]` count output: a
/// spike-rate regulariser for hidden layers. Returns the value and dL/dcounts.
pub fn spike_rate_reg(
    counts: &[f32],
    t: usize,
    b: usize,
    n: usize,
    lambda: f32,
    target: f32,
) -> (f32, Vec<f32>) {
    let m = (b * n) as f64;
    let mut loss = 0.0;
    let grad = counts
        .iter()
        .map(|&c| {
            let d = c as f64 / t as f64 - target as f64;
            loss += d * d / m;
            (lambda as f64 * 2.0 * d / m / t as f64) as f32
        })
        .collect();
    ((lambda as f64 * loss) as f32, grad)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Central differences of `f` at `x` in f64.
    fn fd(x: &[f32], f: impl Fn(&[f32]) -> f32) -> Vec<f64> {
        (0..x.len())
            .map(|i| {
                let h = 1e-2f32;
                let mut a = x.to_vec();
                let mut b = x.to_vec();
                a[i] += h;
                b[i] -= h;
                (f(&a) as f64 - f(&b) as f64) / (2.0 * h as f64)
            })
            .collect()
    }

    fn close(a: &[f32], b: &[f64]) {
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (*x as f64 - y).abs() < 1e-3 * (1.0 + y.abs()),
                "[{i}] {x} vs {y}"
            );
        }
    }

    #[test]
    fn cross_entropy_matches_hand_value_and_finite_differences() {
        // softmax([1, 2, 0]) for label 1: -log(e^2 / (e + e^2 + 1)) = 0.40760596
        let o = cross_entropy_counts(&[1.0, 2.0, 0.0], &[1], 1, 3);
        assert!((o.loss - 0.407_605_96).abs() < 1e-6);
        assert_eq!(o.correct, 1);
        let x = [0.3, 1.5, -0.2, 2.0, 0.1, 0.7];
        let o = cross_entropy_counts(&x, &[2, 0], 2, 3);
        close(
            &o.grad,
            &fd(&x, |v| cross_entropy_counts(v, &[2, 0], 2, 3).loss),
        );
    }

    #[test]
    fn membrane_losses_match_finite_differences() {
        let x: Vec<f32> = (0..2 * 2 * 3)
            .map(|i| ((i * 7 % 5) as f32) * 0.37 - 0.5)
            .collect();
        for r in [Reduce::Max, Reduce::Mean] {
            let o = cross_entropy_membrane(&x, &[1, 2], 2, 2, 3, r);
            close(
                &o.grad,
                &fd(&x, |v| cross_entropy_membrane(v, &[1, 2], 2, 2, 3, r).loss),
            );
        }
    }

    #[test]
    fn mse_and_rate_regulariser_match_finite_differences() {
        let x = [3.0, 1.0, 0.0, 2.0, 5.0, 1.0, 4.0, 0.0];
        let o = mse_counts(&x, &[1, 0], 5, 2, 4, 0.8, 0.1, 2);
        close(
            &o.grad,
            &fd(&x, |v| mse_counts(v, &[1, 0], 5, 2, 4, 0.8, 0.1, 2).loss),
        );
        let (_, g) = spike_rate_reg(&x, 5, 2, 4, 0.3, 0.2);
        close(&g, &fd(&x, |v| spike_rate_reg(v, 5, 2, 4, 0.3, 0.2).0));
    }
}
