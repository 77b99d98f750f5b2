//! The output step of Spyker's filters on the CPU (see [`crate::op::filter`]).

use super::*;
use crate::op::filter::{FilterDesc, FilterOps, FilterStep};

/// Spyker's `threshold`: values `<= thr` become 0.
fn cut(v: f32, thr: Option<f32>) -> f32 {
    match thr {
        Some(t) if v <= t => 0.0,
        _ => v,
    }
}

/// One image: `x` `[groups * raw, plane]` -> `y` `[groups * out, plane]`.
pub fn filter_image(x: &[f32], y: &mut [f32], d: &FilterDesc) {
    let (n, p) = (d.n, d.plane);
    let raw = d.step.raw_channels(n) * p;
    let out = d.step.out_channels(n) * p;
    for g in 0..d.groups {
        let (xg, yg) = (&x[g * raw..(g + 1) * raw], &mut y[g * out..(g + 1) * out]);
        match d.step {
            FilterStep::Plain => {
                for (o, &v) in yg.iter_mut().zip(xg) {
                    *o = cut(v, d.threshold);
                }
            }
            FilterStep::Dog | FilterStep::Log => {
                let (g1, g2) = xg.split_at(n * p);
                for j in 0..n * p {
                    let dv = g1[j] - g2[j];
                    yg[j] = cut(dv.max(0.0), d.threshold);
                    if d.step == FilterStep::Log {
                        yg[n * p + j] = cut((-dv).max(0.0), d.threshold);
                    }
                }
            }
        }
    }
}

impl FilterOps for CpuDevice {
    fn filter_out(&mut self, d: &FilterDesc) -> Result<()> {
        let (fx, fy) = d.features()?;
        let (x, y) = pair(
            &mut self.slots,
            d.x,
            mul2(d.images, fx)?,
            d.y,
            mul2(d.images, fy)?,
            "filter_out",
        )?;
        if fx == 0 || fy == 0 {
            return Ok(());
        }
        x.par_chunks(fx)
            .zip(y.par_chunks_mut(fy))
            .for_each(|(xi, yi)| filter_image(xi, yi, d));
        Ok(())
    }
}
