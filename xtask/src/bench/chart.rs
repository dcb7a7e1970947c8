//! `--svg FILE`: idle-poll cost against history size, library (solid) and raw baseline
//! (dashed) side by side, one colour per poll, history on a log axis.

use super::{err, BenchResult, Scaling};
use plotters::prelude::*;
use std::path::Path;

const COLOURS: [RGBColor; 3] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
];

/// Draws the chart into `path`.
pub fn draw(path: &Path, scaling: &[Scaling]) -> BenchResult<()> {
    let xs: Vec<f64> = scaling
        .iter()
        .flat_map(|s| s.histories.iter().map(|&h| h.max(1) as f64))
        .collect();
    let ys: Vec<f64> = scaling
        .iter()
        .flat_map(|s| s.library_us.iter().chain(&s.raw_us).copied())
        .filter(|y| y.is_finite())
        .collect();
    if xs.is_empty() || ys.is_empty() {
        return Err("no idle-poll figures to draw".into());
    }
    let x_min = xs.iter().copied().fold(f64::INFINITY, f64::min) / 1.5;
    let x_max = xs.iter().copied().fold(0.0, f64::max) * 1.5;
    let y_max = ys.iter().copied().fold(0.0, f64::max) * 1.25;

    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "sessionbus idle polls: cost vs history (solid: library, dashed: raw SQLite)",
            ("sans-serif", 20),
        )
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d((x_min..x_max).log_scale(), 0.0..y_max)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("finished messages in the session (log scale)")
        .y_desc("microseconds per poll")
        .x_label_formatter(&|x| format!("{:.0}", x))
        .y_label_formatter(&|y| format!("{:.0}", y))
        .draw()
        .map_err(err)?;
    for (i, s) in scaling.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let lib: Vec<(f64, f64)> = s
            .histories
            .iter()
            .zip(&s.library_us)
            .map(|(&h, &y)| (h.max(1) as f64, y))
            .collect();
        let raw: Vec<(f64, f64)> = s
            .histories
            .iter()
            .zip(&s.raw_us)
            .map(|(&h, &y)| (h.max(1) as f64, y))
            .collect();
        chart
            .draw_series(LineSeries::new(lib.clone(), colour.stroke_width(3)))
            .map_err(err)?
            .label(format!("{} (library)", s.label))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(3))
            });
        chart
            .draw_series(lib.iter().map(|&p| Circle::new(p, 4, colour.filled())))
            .map_err(err)?;
        chart
            .draw_series(DashedLineSeries::new(
                raw.clone(),
                8,
                5,
                colour.stroke_width(2),
            ))
            .map_err(err)?
            .label(format!("{} (raw baseline)", s.label))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 8, y)], colour.stroke_width(2))
            });
        chart
            .draw_series(
                raw.iter()
                    .map(|&p| Cross::new(p, 4, colour.stroke_width(2))),
            )
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}
