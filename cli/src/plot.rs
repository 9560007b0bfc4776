//! Charts for `bench sdrm3 --out DIR`: UXCost per cell and policy as a PNG.
//!
//! Pure Rust end to end: plotters' bitmap backend and its `ab_glyph` text path with an openly
//! licensed font compiled in (DejaVu Sans, `configs/gpu/fonts/`), so no system font or font
//! development package is needed.

use crate::sim::Row;
use anyhow::{anyhow, Context};
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};
use std::path::Path;
use std::sync::Once;

static FONT: &[u8] = include_bytes!("../../configs/gpu/fonts/DejaVuSans.ttf");

fn ensure_font() -> anyhow::Result<()> {
    static ONCE: Once = Once::new();
    let mut res = Ok(());
    ONCE.call_once(|| {
        res = register_font("sans-serif", FontStyle::Normal, FONT)
            .map_err(|_| anyhow!("the embedded DejaVu Sans font does not parse"));
    });
    res
}

const COLORS: [RGBColor; 8] = [
    RGBColor(214, 39, 40),
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// A grouped bar chart, one group per (scenario, hardware) cell and one bar per policy:
/// UXCost normalised to the cell's `xrbench`, on a log scale (lower is better).
pub fn uxcost_png(path: &Path, rows: &[Row], policies: &[&str]) -> anyhow::Result<()> {
    ensure_font()?;
    let xi = policies.iter().position(|p| *p == "xrbench").unwrap_or(0);
    let vals: Vec<Vec<f64>> = rows
        .iter()
        .map(|r| {
            r.cells
                .iter()
                .map(|c| (c.ux / r.cells[xi].ux).max(1e-4))
                .collect()
        })
        .collect();
    let lo = vals.iter().flatten().cloned().fold(f64::INFINITY, f64::min);
    let hi = vals.iter().flatten().cloned().fold(0.0, f64::max);
    let (lo, hi) = if lo.is_finite() && hi > 0.0 {
        (lo / 1.5, hi * 1.5)
    } else {
        (0.01, 10.0)
    };
    let n = rows.len().max(1);
    let width = (160 + 60 * n as u32).max(900);
    let root = BitMapBackend::new(path, (width, 700)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "UXCost per cell and policy (÷ xrbench, log scale, lower is better)",
            ("sans-serif", 22),
        )
        .margin(15)
        .x_label_area_size(170)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..n as f64, (lo..hi).log_scale())
        .map_err(|e| anyhow!("{e}"))?;
    let labels: Vec<String> = rows
        .iter()
        .map(|r| format!("{} / {}", r.scenario, r.hardware))
        .collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            labels.get(i).cloned().unwrap_or_default()
        })
        .x_label_style(
            ("sans-serif", 11)
                .into_font()
                .transform(FontTransform::Rotate90),
        )
        .y_desc("UXCost / xrbench")
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    let k = policies.len() as f64;
    for (pi, p) in policies.iter().enumerate() {
        let color = COLORS[pi % COLORS.len()];
        chart
            .draw_series(vals.iter().enumerate().map(|(ci, v)| {
                let x0 = ci as f64 + 0.1 + 0.8 * pi as f64 / k;
                let x1 = x0 + 0.8 / k;
                Rectangle::new([(x0, lo), (x1, v[pi])], color.filled())
            }))
            .map_err(|e| anyhow!("{e}"))?
            .label(*p)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    root.present()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
