//! SVG figures written by `snnc train`: the learning curves (from `metrics.csv`, so a
//! resumed run plots every epoch) and a spike raster of one test sample.

use plotters::prelude::*;
use snnc::diag::{DResult, Diagnostic, ErrorKind};

/// One row of `metrics.csv`.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochRow {
    pub epoch: f64,
    pub train_loss: f64,
    pub train_acc: f64,
    pub val_loss: f64,
    pub val_acc: f64,
}

/// Parses the columns the curves need from `metrics.csv` (header names, any order).
pub fn parse_metrics(csv: &str) -> Vec<EpochRow> {
    let mut lines = csv.lines();
    let Some(header) = lines.next() else {
        return vec![];
    };
    let cols: Vec<&str> = header.split(',').collect();
    let col = |name: &str| cols.iter().position(|c| *c == name);
    let (Some(e), Some(tl), Some(ta), Some(vl), Some(va)) = (
        col("epoch"),
        col("train_loss"),
        col("train_acc"),
        col("val_loss"),
        col("val_acc"),
    ) else {
        return vec![];
    };
    lines
        .filter_map(|l| {
            let f: Vec<f64> = l
                .split(',')
                .map(|x| x.parse().unwrap_or(f64::NAN))
                .collect();
            let get = |i: usize| f.get(i).copied().unwrap_or(f64::NAN);
            Some(EpochRow {
                epoch: get(e),
                train_loss: get(tl),
                train_acc: get(ta),
                val_loss: get(vl),
                val_acc: get(va),
            })
            .filter(|r| r.epoch.is_finite())
        })
        .collect()
}

pub(crate) fn plot_err<E: std::fmt::Display>(e: E) -> Diagnostic {
    Diagnostic::new(ErrorKind::Io, format!("cannot draw the figure: {e}"))
}

/// One labelled curve: a line through `pts` with a dot at each, and its legend entry.
pub(crate) fn line_with_dots<DB: DrawingBackend>(
    chart: &mut ChartContext<
        '_,
        DB,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
    pts: Vec<(f64, f64)>,
    label: &str,
    color: RGBColor,
) -> DResult<()> {
    chart
        .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
        .map_err(plot_err)?
        .label(label)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    chart
        .draw_series(pts.into_iter().map(|p| Circle::new(p, 2, color.filled())))
        .map_err(plot_err)?;
    Ok(())
}

/// Range of the finite values, padded so a flat curve still gets an axis.
fn span(vals: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = vals
        .filter(|v| v.is_finite())
        .fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
    if lo > hi {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(1e-3);
    (lo - pad, hi + pad)
}

/// Loss (left) and accuracy in % (right) per epoch, training and validation.
pub fn learning_curves(rows: &[EpochRow], title: &str) -> DResult<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 400)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let root = root.titled(title, ("sans-serif", 20)).map_err(plot_err)?;
        let panels = root.split_evenly((1, 2));
        let last = rows.iter().map(|r| r.epoch).fold(1.0, f64::max);
        let x = 1.0f64.min(last)..last.max(2.0);
        type Pick = fn(&EpochRow) -> f64;
        let sets: [(&str, Pick, Pick); 2] = [
            ("loss", |r| r.train_loss, |r| r.val_loss),
            (
                "accuracy (%)",
                |r| 100.0 * r.train_acc,
                |r| 100.0 * r.val_acc,
            ),
        ];
        for (area, (name, train, val)) in panels.iter().zip(sets) {
            let (lo, hi) = span(rows.iter().flat_map(|r| [train(r), val(r)]));
            let mut chart = ChartBuilder::on(area)
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(56)
                .build_cartesian_2d(x.clone(), lo..hi)
                .map_err(plot_err)?;
            chart
                .configure_mesh()
                .x_desc("epoch")
                .y_desc(name)
                .draw()
                .map_err(plot_err)?;
            for (label, pick, color) in [("train", train, BLUE), ("validation", val, RED)] {
                let pts: Vec<(f64, f64)> = rows
                    .iter()
                    .map(|r| (r.epoch, pick(r)))
                    .filter(|p| p.1.is_finite())
                    .collect();
                line_with_dots(&mut chart, pts, label, color)?;
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(plot_err)?;
        }
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

/// One population's spikes for one sample: `spikes[t * n + i]` is neuron `i` at step `t`.
pub struct RasterLayer {
    pub name: String,
    pub t: usize,
    pub n: usize,
    pub spikes: Vec<f32>,
}

/// A raster per population, stacked top to bottom: a dot at (step, neuron) per spike.
pub fn raster(layers: &[RasterLayer], title: &str) -> DResult<String> {
    let mut svg = String::new();
    {
        let h = 40 + 240 * layers.len().max(1) as u32;
        let root = SVGBackend::with_string(&mut svg, (800, h)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let root = root.titled(title, ("sans-serif", 20)).map_err(plot_err)?;
        let panels = root.split_evenly((layers.len().max(1), 1));
        for (area, l) in panels.iter().zip(layers) {
            let mut chart = ChartBuilder::on(area)
                .margin(10)
                .caption(
                    format!(
                        "{} ({} spikes, {} neurons x {} steps)",
                        l.name,
                        l.spikes.iter().filter(|&&s| s != 0.0).count(),
                        l.n,
                        l.t
                    ),
                    ("sans-serif", 15),
                )
                .x_label_area_size(32)
                .y_label_area_size(50)
                .build_cartesian_2d(-0.5f64..l.t as f64 - 0.5, -0.5f64..l.n as f64 - 0.5)
                .map_err(plot_err)?;
            chart
                .configure_mesh()
                .disable_mesh()
                .x_label_formatter(&|v| format!("{v:.0}"))
                .y_label_formatter(&|v| format!("{v:.0}"))
                .x_desc("time step")
                .y_desc("neuron")
                .draw()
                .map_err(plot_err)?;
            let dots = (0..l.t).flat_map(|t| {
                (0..l.n)
                    .filter(move |&i| l.spikes[t * l.n + i] != 0.0)
                    .map(move |i| Circle::new((t as f64, i as f64), 1, BLACK.filled()))
            });
            chart.draw_series(dots).map_err(plot_err)?;
        }
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CSV: &str = "epoch,lr,train_loss,train_acc,val_loss,val_acc,seconds,spikes_per_sample\n\
                       1,0.01,1.0,0.5,1.1,0.45,0.1,3\n2,0.01,0.5,0.75,0.6,0.7,0.1,3\n";

    #[test]
    fn metrics_rows_are_read_by_header_name() {
        let rows = parse_metrics(CSV);
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[1],
            EpochRow {
                epoch: 2.0,
                train_loss: 0.5,
                train_acc: 0.75,
                val_loss: 0.6,
                val_acc: 0.7
            }
        );
        assert!(parse_metrics("a,b\n1,2\n").is_empty());
    }

    #[test]
    fn curves_and_raster_are_svg_with_one_dot_per_spike() {
        let svg = learning_curves(&parse_metrics(CSV), "demo").unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("validation") && svg.contains("epoch"));
        let layer = RasterLayer {
            name: "s1".into(),
            t: 3,
            n: 2,
            spikes: vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0],
        };
        let svg = raster(&[layer], "sample 0").unwrap();
        assert_eq!(svg.matches("<circle").count(), 4);
        assert!(svg.contains("s1 (4 spikes, 2 neurons x 3 steps)"));
    }
}
