//! The arguments of Spyker's filter layers (`dog`, `log`, `gabor`): read, checked and
//! turned into a [`FilterBank`] for `resolve`.
//!
//! Lists are flat lists of numbers, grouped by position (`sigmas = [std1, std2, std1, std2,
//! ...]` for DoG, five numbers per Gabor filter): the binder reads scalars and lists of
//! scalars, the way `kernel = [h, w]` is read, so a flat list needs nothing new in the
//! grammar or the binder, and a wrong count is one located error.

use crate::diag::{DResult, Diagnostic, ErrorKind};
use crate::front::ast::{Expr, ExprKind};
use crate::ir::filter::{FilterBank, Gabor};
use crate::passes::bind::{whole, Bound, Range};

/// A filter layer's checked arguments.
pub struct FilterArgs {
    pub bank: FilterBank,
    pub size: usize,
    pub pad: usize,
    pub threshold: Option<f32>,
}

fn bad(a: &Bound, e: &Expr, msg: String) -> Diagnostic {
    a.bad_value(e, msg)
}

/// The numbers of list argument `name` (each finite), or a located error.
fn numbers<'e>(a: &Bound<'e, '_>, name: &str, what: &str) -> DResult<(Vec<f64>, &'e Expr)> {
    let e = a.required(name, what)?;
    let ExprKind::List(items) = &e.kind else {
        return Err(bad(
            a,
            e,
            format!("`{name}` must be a list of numbers `[..]`"),
        ));
    };
    let mut out = Vec::new();
    for it in items {
        match it.as_number().filter(|v| v.is_finite()) {
            Some(v) => out.push(v),
            None => {
                return Err(bad(
                    a,
                    it,
                    format!("every element of `{name}` must be a number"),
                ))
            }
        }
    }
    if out.is_empty() {
        return Err(bad(a, e, format!("`{name}` must not be empty")));
    }
    Ok((out, e))
}

/// Reads `dog` / `log` / `gabor` arguments (`op` is the layer's name).
pub fn read(op: &str, a: &Bound) -> DResult<FilterArgs> {
    let size_e = a.required("size", "the window size")?;
    let size = whole(size_e)
        .filter(|s| s % 2 == 1)
        .ok_or_else(|| {
            bad(
                a,
                size_e,
                format!("`size` of `{op}` must be an odd window size (1, 3, 5, 7, ...): Spyker's windows are 2 s + 1 wide"),
            )
        })?;
    let bank = match op {
        "dog" => {
            let (v, e) = numbers(a, "sigmas", "the standard deviations")?;
            if v.len() % 2 != 0 {
                return Err(bad(
                    a,
                    e,
                    format!(
                        "`sigmas` of `dog` holds pairs (std1, std2), one per output channel, but has {} numbers",
                        v.len()
                    ),
                ));
            }
            positive(a, e, &v, "sigmas")?;
            FilterBank::Dog {
                pairs: v.chunks(2).map(|p| (p[0], p[1])).collect(),
            }
        }
        "log" => {
            let (v, e) = numbers(a, "sigmas", "the standard deviations")?;
            positive(a, e, &v, "sigmas")?;
            FilterBank::Log { stds: v }
        }
        _ => {
            let (v, e) = numbers(a, "filters", "the filters")?;
            if v.len() % 5 != 0 {
                return Err(bad(
                    a,
                    e,
                    format!(
                        "`filters` of `gabor` holds five numbers per filter (sigma, theta in degrees, gamma, lambda, psi), but has {}",
                        v.len()
                    ),
                ));
            }
            let filters: Vec<Gabor> = v
                .chunks(5)
                .map(|f| Gabor {
                    sigma: f[0],
                    theta: f[1],
                    gamma: f[2],
                    lambda: f[3],
                    psi: f[4],
                })
                .collect();
            for (i, g) in filters.iter().enumerate() {
                if g.sigma <= 0.0 || g.lambda <= 0.0 {
                    return Err(bad(
                        a,
                        e,
                        format!("gabor filter {i}: sigma and lambda must be > 0"),
                    ));
                }
            }
            FilterBank::Gabor { filters }
        }
    };
    // A kernel whose sum is 0 (a Gabor filter can have one) cannot be normalised.
    if !bank.kernels((size - 1) / 2).iter().all(|v| v.is_finite()) {
        let at = a.get("filters").or(a.get("sigmas")).unwrap_or(size_e);
        return Err(bad(
            a,
            at,
            format!("a `{op}` kernel sums to 0 (or overflows) and cannot be normalised by its sum"),
        ));
    }
    Ok(FilterArgs {
        pad: pad(a, size)?,
        threshold: match a.get("threshold") {
            None => None,
            Some(e) => Some(
                crate::passes::bind::read_f32(e, "threshold", Range::Any)
                    .map_err(|m| bad(a, e, m))?,
            ),
        },
        bank,
        size,
    })
}

fn positive(a: &Bound, e: &Expr, v: &[f64], name: &str) -> DResult<()> {
    if v.iter().any(|&s| s <= 0.0) {
        return Err(bad(a, e, format!("every element of `{name}` must be > 0")));
    }
    Ok(())
}

/// `pad = p`, `[vertical, horizontal]` or Spyker's `[top, left, bottom, right]`; default
/// "same" (`(size - 1) / 2`). The conv op pads every side alike, so the sides must agree.
fn pad(a: &Bound, size: usize) -> DResult<usize> {
    let Some(e) = a.get("pad") else {
        return Ok((size - 1) / 2);
    };
    let rule = "`pad` must be a whole number >= 0, `[vertical, horizontal]` or `[top, left, bottom, right]` (Spyker's order)";
    let sides: Vec<usize> = match &e.kind {
        ExprKind::List(items) if items.len() == 2 || items.len() == 4 => items
            .iter()
            .map(whole)
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad(a, e, rule.into()))?,
        _ => vec![whole(e).ok_or_else(|| bad(a, e, rule.into()))?],
    };
    if sides.iter().any(|&p| p != sides[0]) {
        return Err(Diagnostic::new(
            ErrorKind::BadValue,
            "asymmetric filter padding is not supported: every side must be padded alike",
        )
        .at(e.span, "sides differ")
        .hint("Spyker's examples pad symmetrically, e.g. `pad = 3` for a 7x7 window"));
    }
    Ok(sides[0])
}
