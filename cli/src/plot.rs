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
use std::sync::OnceLock;

static FONT: &[u8] = include_bytes!("../../configs/gpu/fonts/DejaVuSans.ttf");

/// Registers the compiled-in font once; every chart of the CLI (`bench sdrm3`, `bench
/// partition`) calls this before drawing text.
pub(crate) fn ensure_font() -> anyhow::Result<()> {
    static OK: OnceLock<bool> = OnceLock::new();
    if *OK.get_or_init(|| register_font("sans-serif", FontStyle::Normal, FONT).is_ok()) {
        Ok(())
    } else {
        Err(anyhow!("the embedded DejaVu Sans font does not parse"))
    }
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

/// `social_interactionA` -> `SIA`: the capitals and the first letter of each part.
fn short_scenario(s: &str) -> String {
    s.split('_')
        .map(|p| {
            let mut c = p.chars();
            let first = c.next().map(|x| x.to_ascii_uppercase());
            first
                .into_iter()
                .chain(c.filter(|x| x.is_ascii_uppercase()))
                .collect::<String>()
        })
        .collect()
}

/// `Quad_4K_WS_OS_WS_OS` -> `Q4:WOWO`.
fn short_hardware(h: &str) -> String {
    let mut parts = h.split('_');
    let size = parts.next().and_then(|p| p.chars().next()).unwrap_or('?');
    let pes = parts
        .next()
        .map(|p| p.trim_end_matches('K').to_string())
        .unwrap_or_default();
    let flows: String = parts.filter_map(|p| p.chars().next()).collect();
    format!("{size}{pes}:{flows}")
}

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
    let width = (160 + 80 * n as u32).max(900);
    let root = BitMapBackend::new(path, (width, 700)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "UXCost per cell and policy (÷ xrbench, log scale, lower is better)",
            ("sans-serif", 22),
        )
        .margin(15)
        .x_label_area_size(60)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.5f64..n as f64 - 0.5, (lo..hi).log_scale())
        .map_err(|e| anyhow!("{e}"))?;
    let labels: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                short_scenario(&r.scenario),
                short_hardware(&r.hardware)
            )
        })
        .collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n + 1)
        .x_label_formatter(&|x| {
            // one label per group, at its centre (integer x)
            if (x - x.round()).abs() > 1e-6 || *x < 0.0 {
                return String::new();
            }
            labels.get(x.round() as usize).cloned().unwrap_or_default()
        })
        .x_label_style(("sans-serif", 11))
        .x_desc("cell: scenario initials, hardware (D/Q = Dual/Quad, 4/8 = K PEs, W/O = WS/OS accelerators)")
        .y_desc("UXCost / xrbench")
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    let k = policies.len() as f64;
    for (pi, p) in policies.iter().enumerate() {
        let color = COLORS[pi % COLORS.len()];
        chart
            .draw_series(vals.iter().enumerate().map(|(ci, v)| {
                let x0 = ci as f64 - 0.4 + 0.8 * pi as f64 / k;
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
