//! SVG figures of local learning (`snnc train` with `local = [..]`): the convergence of each
//! stage's layer per epoch and R-STDP's decision accuracy (from `metrics.csv`, so a resumed
//! run plots every epoch), and a conv layer's learned filters as image tiles.

use plotters::prelude::*;
use snn_runtime::plan::ConvGeom;
use snnc::diag::DResult;

/// One row of a local run's `metrics.csv`.
#[derive(Clone, Debug, PartialEq)]
pub struct StageRow {
    pub epoch: f64,
    pub layer: String,
    pub convergence: f64,
    /// R-STDP's decisions that were right (NaN for an STDP stage).
    pub accuracy: f64,
}

/// The columns the curves need, by header name.
pub fn parse_metrics(csv: &str) -> Vec<StageRow> {
    let mut lines = csv.lines();
    let Some(header) = lines.next() else {
        return vec![];
    };
    let cols: Vec<&str> = header.split(',').collect();
    let col = |name: &str| cols.iter().position(|c| *c == name);
    let (Some(e), Some(l), Some(c), Some(a)) = (
        col("epoch"),
        col("layer"),
        col("convergence"),
        col("accuracy"),
    ) else {
        return vec![];
    };
    lines
        .filter_map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            let num = |i: usize| {
                f.get(i)
                    .and_then(|x| x.parse::<f64>().ok())
                    .unwrap_or(f64::NAN)
            };
            Some(StageRow {
                epoch: num(e),
                layer: f.get(l)?.to_string(),
                convergence: num(c),
                accuracy: num(a),
            })
            .filter(|r| r.epoch.is_finite())
        })
        .collect()
}

use crate::plot::{line_with_dots, plot_err};

const COLORS: [RGBColor; 6] = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];

/// Convergence `C_l` (left) and R-STDP's decision accuracy in % (right) per epoch, one
/// line per stage.
pub fn curves(rows: &[StageRow], title: &str) -> DResult<String> {
    let mut layers: Vec<&str> = vec![];
    for r in rows {
        if !layers.contains(&r.layer.as_str()) {
            layers.push(&r.layer);
        }
    }
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 400)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let root = root.titled(title, ("sans-serif", 20)).map_err(plot_err)?;
        let panels = root.split_evenly((1, 2));
        let last = rows.iter().map(|r| r.epoch).fold(1.0, f64::max);
        type Pick = fn(&StageRow) -> f64;
        let sets: [(&str, Pick, (f64, f64)); 2] = [
            (
                "convergence C_l = mean w(1 - w)",
                |r| r.convergence,
                (0.0, 0.26),
            ),
            ("decisions right (%)", |r| 100.0 * r.accuracy, (0.0, 100.0)),
        ];
        for (area, (name, pick, (lo, hi))) in panels.iter().zip(sets) {
            let mut chart = ChartBuilder::on(area)
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(56)
                .build_cartesian_2d(1.0f64.min(last)..last.max(2.0), lo..hi)
                .map_err(plot_err)?;
            chart
                .configure_mesh()
                .x_desc("epoch")
                .y_desc(name)
                .draw()
                .map_err(plot_err)?;
            for (i, layer) in layers.iter().enumerate() {
                let color = COLORS[i % COLORS.len()];
                let pts: Vec<(f64, f64)> = rows
                    .iter()
                    .filter(|r| r.layer == *layer)
                    .map(|r| (r.epoch, pick(r)))
                    .filter(|p| p.1.is_finite())
                    .collect();
                if pts.is_empty() {
                    continue;
                }
                line_with_dots(&mut chart, pts, layer, color)?;
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

/// Pixels per kernel cell of a tile.
const CELL: usize = 8;
/// Gap between tiles, and tiles per row.
const GAP: usize = 4;
const PER_ROW: usize = 16;

/// The filters of a conv layer (`weights` `[c_out, c_in, kh, kw]`) as grey tiles, one per
/// output map: each cell is the kernel's mean over its input channels, black at the
/// layer's smallest value and white at its largest (the tile's title gives the range).
pub fn filters(layer: &str, weights: &[f32], g: ConvGeom) -> DResult<String> {
    let cells = g.kh * g.kw;
    if weights.len() != g.c_out * g.c_in * cells {
        return Err(plot_err(format!(
            "`{layer}` has {} weights, its geometry {}",
            weights.len(),
            g.c_out * g.c_in * cells
        )));
    }
    let mean: Vec<f64> = (0..g.c_out * cells)
        .map(|i| {
            let (z, k) = (i / cells, i % cells);
            (0..g.c_in)
                .map(|c| weights[(z * g.c_in + c) * cells + k] as f64)
                .sum::<f64>()
                / g.c_in.max(1) as f64
        })
        .collect();
    let lo = mean.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = mean.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let range = if hi > lo { hi - lo } else { 1.0 };
    let (tw, th) = (g.kw * CELL, g.kh * CELL);
    let cols = g.c_out.clamp(1, PER_ROW);
    let rows = g.c_out.div_ceil(PER_ROW).max(1);
    let top = 24;
    let width = GAP + cols * (tw + GAP);
    let height = top + GAP + rows * (th + GAP);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\">\n<rect width=\"{width}\" height=\"{height}\" \
         fill=\"#808080\"/>\n<text x=\"{GAP}\" y=\"16\" font-family=\"sans-serif\" \
         font-size=\"12\">{layer}: {} filters {}x{} (mean of {} input channels), black {lo:.3} \
         to white {hi:.3}</text>\n",
        g.c_out, g.kh, g.kw, g.c_in
    );
    for z in 0..g.c_out {
        let (x0, y0) = (
            GAP + (z % PER_ROW) * (tw + GAP),
            top + GAP + (z / PER_ROW) * (th + GAP),
        );
        svg.push_str(&format!("<g><title>{layer} map {z}</title>\n"));
        for k in 0..cells {
            let v = ((mean[z * cells + k] - lo) / range * 255.0).round() as u8;
            svg.push_str(&format!(
                "<rect x=\"{}\" y=\"{}\" width=\"{CELL}\" height=\"{CELL}\" \
                 fill=\"rgb({v},{v},{v})\"/>\n",
                x0 + (k % g.kw) * CELL,
                y0 + (k / g.kw) * CELL
            ));
        }
        svg.push_str("</g>\n");
    }
    svg.push_str("</svg>\n");
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_read_by_header_name() {
        let csv = "epoch,stage,layer,stage_epoch,images,convergence,plus,minus,punish_plus,\
                   punish_minus,accuracy,silent,seconds\n\
                   1,1,c1,1,100,0.2,0.004,-0.003,,,,,0.1\n2,2,c3,1,100,0.1,0.004,-0.003,-0.004,0.0005,0.5,0.1,0.1\n";
        let rows = parse_metrics(csv);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].layer, "c1");
        assert!(rows[0].accuracy.is_nan());
        assert_eq!((rows[1].convergence, rows[1].accuracy), (0.1, 0.5));
        let svg = curves(&rows, "demo").unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("c3"));
    }

    #[test]
    fn one_tile_per_map_one_cell_per_kernel_position() {
        let g = ConvGeom {
            c_in: 2,
            h: 5,
            w: 5,
            c_out: 3,
            h_out: 5,
            w_out: 5,
            kh: 2,
            kw: 3,
            stride: 1,
            pad: 1,
        };
        let w: Vec<f32> = (0..3 * 2 * 6).map(|i| i as f32 / 36.0).collect();
        let svg = filters("c1", &w, g).unwrap();
        assert_eq!(svg.matches("<title>").count(), 3);
        // The background, then 6 cells per map.
        assert_eq!(svg.matches("<rect").count(), 1 + 3 * 6);
        assert!(svg.contains("fill=\"rgb(0,0,0)\"") && svg.contains("fill=\"rgb(255,255,255)\""));
    }
}
