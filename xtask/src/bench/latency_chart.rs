//! The end-to-end latency chart: p50 and p99 against the number of sessions busy at once, with
//! change notification (lines) and with both sides polling (crosses).

use super::latency::LatencyRun;
use super::{err, BenchResult};
use plotters::prelude::*;
use std::path::{Path, PathBuf};

/// Where the latency chart goes when only `--svg FILE` was given: `FILE`'s stem +
/// `-latency.svg` beside it.
pub fn beside(svg: &Path) -> PathBuf {
    let stem = svg
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "bench".into());
    svg.with_file_name(format!("{stem}-latency.svg"))
}

/// Draws the chart into `path`.
pub fn draw(path: &Path, runs: &[LatencyRun]) -> BenchResult<()> {
    let pts = |mode: &str, p99: bool| -> Vec<(f64, f64)> {
        let mut v: Vec<(f64, f64)> = runs
            .iter()
            .filter(|r| r.mode == mode && r.samples > 0)
            .map(|r| {
                (
                    r.sessions.max(1) as f64,
                    if p99 { r.p99_ms } else { r.p50_ms }.max(0.01),
                )
            })
            .collect();
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        v
    };
    let all: Vec<(f64, f64)> = ["inotify", "polling"]
        .iter()
        .flat_map(|m| pts(m, false).into_iter().chain(pts(m, true)))
        .collect();
    if all.is_empty() {
        return Err("no latency figures to draw".into());
    }
    let x_max = all.iter().map(|p| p.0).fold(1.0, f64::max) * 1.5;
    let y_min = all.iter().map(|p| p.1).fold(f64::INFINITY, f64::min) / 2.0;
    let y_max = all.iter().map(|p| p.1).fold(0.0, f64::max) * 2.0;

    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "sessionbus end-to-end latency vs sessions busy at once",
            ("sans-serif", 20),
        )
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d((0.7..x_max).log_scale(), (y_min..y_max).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("sessions, one message each per wave (log scale)")
        .y_desc("milliseconds, host write to delivery (log scale)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.1}"))
        .draw()
        .map_err(err)?;
    let series = [
        (
            "inotify",
            false,
            RGBColor(31, 119, 180),
            "change notification p50",
        ),
        (
            "inotify",
            true,
            RGBColor(214, 39, 40),
            "change notification p99",
        ),
        ("polling", false, RGBColor(44, 160, 44), "polling p50"),
        ("polling", true, RGBColor(148, 103, 189), "polling p99"),
    ];
    for (mode, p99, colour, label) in series {
        let p = pts(mode, p99);
        if p.is_empty() {
            continue;
        }
        chart
            .draw_series(LineSeries::new(p.clone(), colour.stroke_width(3)))
            .map_err(err)?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(3))
            });
        chart
            .draw_series(p.iter().map(|&q| Cross::new(q, 5, colour.stroke_width(2))))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}
