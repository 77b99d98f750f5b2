//! The gradient harness of the gradient suites (tests/gradients.rs, psn_gradients.rs,
//! recurrent_gradients.rs, neuron_gradients.rs): the reference loss, central finite
//! differences (of a compiled session's weights, of any f32 value such as an input, or of
//! the parameters of an f64 re-implementation), and the comparison of compiled gradients
//! with a reference (a hand-written BPTT, SpikingJelly's autograd, another schedule), all
//! held to one tolerance rule, [`Tol`].
//!
//! A suite writes its model's loss (a closure that runs the session) and its reference;
//! this module does the perturbing, restoring, dividing and asserting.

use snn_runtime::Session;

/// The tolerance of one comparison of a compiled value `got` with a reference `want`:
/// `|got - want| <= bound`, where `bound` combines three terms, relative to `|want|`
/// (`rel`), to the largest magnitude `max` of the tensor compared (`of_max`: a floor for its
/// small elements) and absolute (`abs`), either as their sum ([`Tol::sum`]) or as the
/// largest of them ([`Tol::larger`]).
#[derive(Clone, Copy, Debug)]
pub struct Tol {
    pub rel: f64,
    pub of_max: f64,
    pub abs: f64,
    /// The largest term rather than the sum.
    pub larger: bool,
}

impl Tol {
    /// `rel * |want| + of_max * max + abs`.
    pub const fn sum(rel: f64, of_max: f64, abs: f64) -> Tol {
        Tol {
            rel,
            of_max,
            abs,
            larger: false,
        }
    }

    /// `max(rel * |want|, of_max * max, abs)`.
    pub const fn larger(rel: f64, of_max: f64, abs: f64) -> Tol {
        Tol {
            rel,
            of_max,
            abs,
            larger: true,
        }
    }

    pub fn bound(self, want: f64, max: f64) -> f64 {
        let terms = [self.rel * want.abs(), self.of_max * max, self.abs];
        if self.larger {
            terms.into_iter().fold(0.0, f64::max)
        } else {
            terms.into_iter().sum()
        }
    }

    pub fn holds(self, got: f64, want: f64, max: f64) -> bool {
        (got - want).abs() <= self.bound(want, max)
    }
}

/// Compiled f32 gradients against an f64 reference (a BPTT by hand, SpikingJelly's): 1e-4
/// relative, floored at 1e-6 of the largest reference value.
pub const REFERENCE: Tol = Tol::larger(1e-4, 1e-6, 0.0);

/// The largest magnitude in `v`.
pub fn max_abs(v: &[f64]) -> f64 {
    v.iter().fold(0.0, |m, x| m.max(x.abs()))
}

/// The largest magnitude in `v`.
pub fn max_abs_f32(v: &[f32]) -> f64 {
    v.iter().fold(0.0f64, |m, x| m.max(x.abs() as f64))
}

/// Asserts `tol` for every element of a compiled gradient against a reference (`max` is the
/// largest `|want|`); a failure names `what[j]` and the reference (`"hand-written BPTT"`).
pub fn assert_close(what: &str, got: &[f32], want: &[f64], tol: Tol, reference: &str) {
    assert_close_at(what, got, want, max_abs(want), tol, reference);
}

/// [`assert_close`] with the scale `max` given (e.g. the largest magnitude of both sides).
pub fn assert_close_at(what: &str, got: &[f32], want: &[f64], max: f64, tol: Tol, reference: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (j, (&a, &b)) in got.iter().zip(want).enumerate() {
        assert!(
            tol.holds(a as f64, b, max),
            "{what}[{j}]: compiled {a} vs {reference} {b}"
        );
    }
}

/// f32 values as f64.
pub fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// torch `cross_entropy(logits, labels)` (softmax, mean over the batch) and its gradient,
/// in f64, written out independently of `snn_runtime::train::loss`.
pub fn cross_entropy(logits: &[f64], labels: &[usize], c: usize) -> (f64, Vec<f64>) {
    let b = labels.len();
    let mut loss = 0.0;
    let mut g = vec![0.0; logits.len()];
    for (i, &y) in labels.iter().enumerate() {
        let row = &logits[i * c..(i + 1) * c];
        let mx = row.iter().cloned().fold(f64::MIN, f64::max);
        let z: f64 = row.iter().map(|v| (v - mx).exp()).sum();
        loss += -(row[y] - mx - z.ln());
        for j in 0..c {
            let p = (row[j] - mx).exp() / z;
            g[i * c + j] = (p - if j == y { 1.0 } else { 0.0 }) / b as f64;
        }
    }
    (loss / b as f64, g)
}

/// [`cross_entropy`] of f32 logits, its gradient rounded to f32 (what `Session::backward`
/// takes).
pub fn cross_entropy_f32(logits: &[f32], labels: &[usize], c: usize) -> (f64, Vec<f32>) {
    let (loss, g) = cross_entropy(&f64s(logits), labels, c);
    (loss, g.iter().map(|&v| v as f32).collect())
}

/// The central difference quotient of a loss in one f32 value at `base`:
/// `(L(base + h) - L(base - h))` over the step f32 actually took. `loss_at(v)` sets the
/// value to `v` and returns the loss; the caller restores `base`.
pub fn central_difference(base: f32, h: f32, mut loss_at: impl FnMut(f32) -> f64) -> f64 {
    let (up, down) = (base + h, base - h);
    let lp = loss_at(up);
    let lm = loss_at(down);
    (lp - lm) / (up as f64 - down as f64)
}

/// The central difference quotient `(L(p + h e_i) - L(p - h e_i)) / 2h` of a loss of f64
/// parameters.
pub fn central_difference_f64(p: &[f64], i: usize, h: f64, loss: impl Fn(&[f64]) -> f64) -> f64 {
    let mut q = p.to_vec();
    q[i] = p[i] + h;
    let lp = loss(&q);
    q[i] = p[i] - h;
    let lm = loss(&q);
    (lp - lm) / (2.0 * h)
}

/// Every parameter of an f64 re-implementation: the compiled gradient `grads[i]` against
/// the central difference of `loss` at `p` (step `h`), under `tol` (`max` = 0: the
/// differences come one at a time). `name(i)` names parameter `i` in a failure.
pub fn check_f64_params(
    grads: &[f32],
    p: &[f64],
    h: f64,
    tol: Tol,
    name: impl Fn(usize) -> String,
    loss: impl Fn(&[f64]) -> f64,
) {
    assert_eq!(grads.len(), p.len(), "one gradient per parameter");
    for (i, &g) in grads.iter().enumerate() {
        let fd = central_difference_f64(p, i, h, &loss);
        let an = g as f64;
        assert!(
            tol.holds(an, fd, 0.0),
            "{}: backward {an} vs finite difference {fd}",
            name(i)
        );
    }
}

/// One element of a weight checked by [`check_weights`].
#[derive(Clone, Copy, Debug)]
pub struct Checked {
    /// Index into the plan's weights.
    pub weight: usize,
    pub element: usize,
    /// The compiled gradient.
    pub backward: f64,
    /// The central difference that passed (at the last step tried).
    pub fd: f64,
    /// The largest compiled gradient magnitude of the weight.
    pub max: f64,
}

/// Every element of every weight of `s`: the compiled gradient `grads[w][j]` (from
/// `Session::grads`, plan order) against the central difference of `loss` (which runs the
/// session) at step `steps[0]`, under `tol` (`max` = the weight's largest compiled gradient
/// magnitude: the differences come one at a time). An element that fails is tried again at
/// the next steps: a step that crosses a kink (which cell wins a max pooling window) gives a
/// wrong quotient, a smaller one does not, while a wrong gradient is wrong at every step.
/// The weights are restored; `what` prefixes a failure. Returns what was checked.
pub fn check_weights(
    s: &mut Session,
    grads: &[Vec<f32>],
    steps: &[f32],
    tol: Tol,
    what: &str,
    mut loss: impl FnMut(&mut Session) -> f64,
) -> Vec<Checked> {
    let decls = s.plan().weights.clone();
    assert_eq!(grads.len(), decls.len(), "{what}: one gradient per weight");
    let mut checked = Vec::new();
    for (wi, decl) in decls.iter().enumerate() {
        let base = s.weight(&decl.name).unwrap().to_vec();
        let max = max_abs_f32(&grads[wi]);
        for j in 0..base.len() {
            let an = grads[wi][j] as f64;
            let mut fd = f64::NAN;
            for &h in steps {
                let mut w = base.clone();
                fd = central_difference(base[j], h, |v| {
                    w[j] = v;
                    s.set_weight(&decl.name, &w).unwrap();
                    loss(s)
                });
                s.set_weight(&decl.name, &base).unwrap();
                if tol.holds(an, fd, max) {
                    break;
                }
            }
            assert!(
                tol.holds(an, fd, max),
                "{what}{}[{j}]: backward {an} vs finite difference {fd}",
                decl.name
            );
            checked.push(Checked {
                weight: wi,
                element: j,
                backward: an,
                fd,
                max,
            });
        }
    }
    checked
}
