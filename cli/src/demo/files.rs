//! The demo's files: the CSVs of every series and the two pictures (latency, partitions).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use plotters::coord::Shift;
use plotters::prelude::*;

use super::live::{Live, Sample};
use super::virtual_time::GpuRun;
use super::GPU_NODE;
use crate::plot::ensure_font;

/// Where the files went.
pub(super) struct Files {
    pub latency_png: PathBuf,
    pub partitions_png: PathBuf,
    pub csvs: Vec<PathBuf>,
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

pub(super) fn write_outputs(out: &Path, live: &Live, gpu: &GpuRun) -> anyhow::Result<Files> {
    let mut csvs = Vec::new();
    // live probe latency
    let mut s = String::from("t_s,model,latency_ms,answered,completed,deadline_met,reason\n");
    for x in &live.probe {
        let _ = writeln!(
            s,
            "{:.3},{},{:.3},{},{},{},\"{}\"",
            x.t_s,
            live.probe_model,
            x.latency_ms,
            x.answered,
            x.ok,
            x.met,
            x.error.replace('"', "'")
        );
    }
    csvs.push(write(out, "live_probe_latency.csv", &s)?);
    if let Some(g) = &live.gpu_live {
        let mut s =
            String::from("t_s,model,latency_ms,answered,completed,deadline_met,energy_mj,reason\n");
        for m in &g.models {
            for x in m.samples.lock().expect("samples").iter() {
                let _ = writeln!(
                    s,
                    "{:.3},{},{:.3},{},{},{},{:.3},\"{}\"",
                    x.t_s,
                    m.name,
                    x.latency_ms,
                    x.answered,
                    x.ok,
                    x.met,
                    x.energy_mj,
                    x.error.replace('"', "'")
                );
            }
        }
        csvs.push(write(out, "live_gpu_latency.csv", &s)?);
    }
    let mut s = String::from("t_s,model,observed_rate,deadline_met_pct,energy_j\n");
    for p in &live.polls {
        let _ = writeln!(
            s,
            "{:.1},{},{:.2},{:.2},{:.4}",
            p.t_s, p.model, p.observed_rate, p.deadline_met_pct, p.energy_j
        );
    }
    csvs.push(write(out, "live_models.csv", &s)?);
    let mut s = String::from("t_s,node,epoch,accelerator,share_pct,models\n");
    for p in &live.placement {
        let _ = writeln!(
            s,
            "{:.1},{},{},{},{},{}",
            p.t_s,
            p.node,
            p.epoch,
            p.accelerator,
            p.share_pct,
            p.models.join("+")
        );
    }
    csvs.push(write(out, "live_placement.csv", &s)?);
    let mut s = String::from("mode,t_s,model,latency_ms\n");
    for r in std::iter::once(&gpu.adaptive).chain(&gpu.baselines) {
        for m in &r.models {
            for (t, l) in &m.samples {
                let _ = writeln!(s, "{},{t:.3},{},{l:.3}", r.mode, m.model);
            }
        }
    }
    csvs.push(write(out, "gpu_latency.csv", &s)?);
    let mut s = String::from("t_s,gpu,share_pct,models\n");
    for l in &gpu.adaptive.layouts {
        for (g, share, models) in &l.partitions {
            let _ = writeln!(
                s,
                "{:.3},gpu{g},{:.0},{}",
                l.t_s,
                share * 100.0,
                models.join("+")
            );
        }
    }
    csvs.push(write(out, "gpu_partitions.csv", &s)?);
    let mut s = String::from("t_s,source,reason\n");
    for c in &gpu.changes {
        let _ = writeln!(
            s,
            "{:.1},planner (gpu box),\"{}\"",
            c.t_s,
            c.reason.replace('"', "'")
        );
    }
    for e in &live.events {
        let _ = writeln!(s, "{:.1},live,\"{}\"", e.t_s, e.text.replace('"', "'"));
    }
    csvs.push(write(out, "events.csv", &s)?);
    let latency_png = out.join("latency.png");
    draw_latency(&latency_png, live, gpu)?;
    let partitions_png = out.join("partitions.png");
    draw_partitions(&partitions_png, live, gpu)?;
    Ok(Files {
        latency_png,
        partitions_png,
        csvs,
    })
}

fn write(out: &Path, name: &str, text: &str) -> anyhow::Result<PathBuf> {
    let p = out.join(name);
    std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
    Ok(p)
}

/// Seed models take the first three (the same in every panel); the XR probe the fifth.
const COLORS: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
];

fn e<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing: {e}")
}

/// Two panels: the live probe's latency on the XR agent (leader kill marked), and the GPU
/// box's per-model latency through the planner (virtual time), log scale.
fn draw_latency(path: &Path, live: &Live, gpu: &GpuRun) -> anyhow::Result<()> {
    ensure_font()?;
    let root = BitMapBackend::new(path, (1200, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let (top, bottom) = root.split_vertically(450);
    draw_live_latency(&top, live)?;
    draw_virtual_latency(&bottom, gpu)?;
    root.present()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The live probe's latency on the XR agent (and the GPU box's), the leader kill marked.
fn draw_live_latency(top: &Area<'_>, live: &Live) -> anyhow::Result<()> {
    let tmax = live.load_s.max(1.0);
    // Every live series: the XR probe, then the GPU box's models when it ran live.
    let mut series: Vec<(String, RGBColor, Vec<Sample>)> = vec![(
        format!("{} (XR agent)", live.probe_model),
        COLORS[4],
        live.probe.clone(),
    )];
    if let Some(g) = &live.gpu_live {
        for (i, m) in g.models.iter().enumerate() {
            series.push((
                format!("{} (GPU box)", m.name),
                COLORS[i % 4],
                m.samples.lock().expect("samples").clone(),
            ));
        }
    }
    let lmax = series
        .iter()
        .flat_map(|(_, _, v)| v.iter().filter(|s| s.ok).map(|s| s.latency_ms))
        .fold(1.0f64, f64::max)
        * 1.5;
    let mut ch = ChartBuilder::on(top)
        .caption(
            format!(
                "live: Infer latency (leader SIGKILLed at {:.1} s)",
                live.failover.killed_at_s
            ),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..tmax, (0.1f64..lmax).log_scale())
        .map_err(e)?;
    ch.configure_mesh()
        .x_desc("s since load started")
        .y_desc("latency ms (log)")
        .draw()
        .map_err(e)?;
    for (name, c, v) in &series {
        let c = *c;
        ch.draw_series(
            v.iter()
                .filter(|s| s.ok)
                .map(move |s| Circle::new((s.t_s, s.latency_ms.max(0.1)), 2, c.filled())),
        )
        .map_err(e)?
        .label(name.clone())
        .legend(move |(x, y)| Circle::new((x, y), 3, c.filled()));
    }
    let k = live.failover.killed_at_s;
    ch.draw_series(LineSeries::new(
        [(k, 0.1), (k, lmax)],
        BLACK.stroke_width(2),
    ))
    .map_err(e)?
    .label("leader SIGKILLed")
    .legend(|(x, y)| PathElement::new([(x, y), (x + 15, y)], BLACK));
    ch.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(e)?;
    Ok(())
}

/// The GPU box's per-model latency through the planner (virtual time), SLOs as lines.
fn draw_virtual_latency(bottom: &Area<'_>, gpu: &GpuRun) -> anyhow::Result<()> {
    let gmax = gpu
        .adaptive
        .models
        .iter()
        .flat_map(|m| m.samples.iter().map(|s| s.1 as f64))
        .chain(gpu.slo_ms.iter().map(|x| x.slo_ms))
        .fold(1.0f64, f64::max)
        * 1.3;
    let mut ch = ChartBuilder::on(bottom)
        .caption(
            format!(
                "GPU box ({}, virtual time): latency per model through the planner",
                gpu.gpu
            ),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..gpu.duration_s, (0.5f64..gmax).log_scale())
        .map_err(e)?;
    ch.configure_mesh()
        .x_desc("virtual s")
        .y_desc("latency ms (log)")
        .draw()
        .map_err(e)?;
    for (i, m) in gpu.adaptive.models.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        // every 10th sample keeps the picture light
        ch.draw_series(
            m.samples
                .iter()
                .step_by(10)
                .map(move |(t, l)| Circle::new((*t as f64, (*l as f64).max(0.5)), 1, c.filled())),
        )
        .map_err(e)?
        .label(m.model.clone())
        .legend(move |(x, y)| Circle::new((x, y), 3, c.filled()));
        if let Some(slo) = gpu.slo_ms.iter().find(|x| x.model == m.model) {
            ch.draw_series(LineSeries::new(
                [(0.0, slo.slo_ms), (gpu.duration_s, slo.slo_ms)],
                c.stroke_width(1),
            ))
            .map_err(e)?;
        }
    }
    ch.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(e)?;
    Ok(())
}

/// A serving layout at a time: (share %, models) per partition.
type Snapshot = (f64, Vec<(f64, Vec<String>)>);

/// The GPU share of each model over time (stacked): live from `placement show` polls of the
/// GPU box when it ran live (top), and the planner's layouts in virtual time.
fn draw_partitions(path: &Path, live: &Live, gpu: &GpuRun) -> anyhow::Result<()> {
    ensure_font()?;
    let models: Vec<String> = gpu.slo_ms.iter().map(|x| x.model.clone()).collect();
    let virt: Vec<Snapshot> = gpu
        .adaptive
        .layouts
        .iter()
        .map(|l| {
            (
                l.t_s,
                l.partitions
                    .iter()
                    .map(|p| (p.1 * 100.0, p.2.clone()))
                    .collect(),
            )
        })
        .collect();
    let mut live_snaps: Vec<Snapshot> = Vec::new();
    for p in live.placement.iter().filter(|p| p.node == GPU_NODE) {
        if live_snaps.last().is_none_or(|s| s.0 != p.t_s) {
            live_snaps.push((p.t_s, Vec::new()));
        }
        if let Some(s) = live_snaps.last_mut() {
            s.1.push((p.share_pct as f64, p.models.clone()));
        }
    }
    let height = if live_snaps.is_empty() { 500 } else { 1000 };
    let root = BitMapBackend::new(path, (1200, height)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    if live_snaps.is_empty() {
        draw_shares(
            &root,
            &format!(
                "GPU box ({}, virtual time): MPS share per model, planned by the planner",
                gpu.gpu
            ),
            "virtual s",
            gpu.duration_s,
            &models,
            &virt,
        )?;
    } else {
        let (top, bottom) = root.split_vertically(500);
        draw_shares(
            &top,
            &format!(
                "live: gpu-box's partitions ({}), polled from `placement show` twice a second",
                gpu.gpu
            ),
            "s since load started",
            live.load_s.max(1.0),
            &models,
            &live_snaps,
        )?;
        draw_shares(
            &bottom,
            &format!(
                "virtual time: the same workload over {} s, planned by the same planner",
                gpu.duration_s
            ),
            "virtual s",
            gpu.duration_s,
            &models,
            &virt,
        )?;
    }
    root.present()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn draw_shares(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    title: &str,
    x_desc: &str,
    tmax: f64,
    models: &[String],
    snaps: &[Snapshot],
) -> anyhow::Result<()> {
    let mut ch = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..tmax, 0.0..100.0)
        .map_err(e)?;
    ch.configure_mesh()
        .x_desc(x_desc)
        .y_desc("GPU share %")
        .draw()
        .map_err(e)?;
    for (li, (t0, parts)) in snaps.iter().enumerate() {
        let t1 = snaps.get(li + 1).map_or(tmax, |n| n.0);
        let mut base = 0.0;
        for (mi, m) in models.iter().enumerate() {
            let share: f64 = parts
                .iter()
                .filter(|p| p.1.iter().any(|x| x == m))
                .map(|p| p.0 / p.1.len().max(1) as f64)
                .sum();
            if share > 0.0 {
                ch.draw_series(std::iter::once(Rectangle::new(
                    [(*t0, base), (t1, (base + share).min(100.0))],
                    COLORS[mi % COLORS.len()].mix(0.7).filled(),
                )))
                .map_err(e)?;
                base += share;
            }
        }
    }
    for (mi, m) in models.iter().enumerate() {
        let c = COLORS[mi % COLORS.len()];
        ch.draw_series(std::iter::empty::<Rectangle<(f64, f64)>>())
            .map_err(e)?
            .label(m.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], c.filled()));
    }
    ch.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(e)?;
    Ok(())
}
