//! `edgeplane bench partition`: the adaptive spatial-temporal GPU partitioning experiment in
//! virtual time, under five modes, with a table or JSON, PNG figures and CSV time series.

use anyhow::{bail, Context};
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use edgeplane_gpu::sim::{self, PlanPolicy, Scenario, SimResult};
use edgeplane_gpu::{policies, report, scenarios, GpuData};
use edgeplane_planner::sim_policy::Adaptive;
use plotters::prelude::*;
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The font every figure uses (DejaVu Sans, Bitstream Vera licence, configs/gpu/fonts): compiled in
/// so the PNGs need no system font library.

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Variant {
    /// ResNet18, ResNet50, VGG16 at 50 req/s from t = 0, 50, 100 s on one GPU, 500 s.
    Seed,
    /// Ramps, a burst, a model that leaves, more models, three GPUs of two kinds.
    Dynamic,
    /// Churn at constant load: the seed's three models at a constant `--rate` each on
    /// `--gpus` GPUs of kind `--gpu`, 3600 s; reports layout changes per model per hour.
    Steady,
}

pub use crate::output::Format;

#[derive(Debug, clap::Args)]
pub struct PartitionArgs {
    /// GPU profile of the seed variant (Jetson-AGX-Xavier, A100-80GB, V100, Jetson-Nano).
    #[arg(long, default_value = "Jetson-AGX-Xavier")]
    pub gpu: String,
    /// Experiment: the seed workload, or its dynamic variant.
    #[arg(long, value_enum, default_value_t = Variant::Seed)]
    pub variant: Variant,
    /// Output format: `table` for people, `json` for scripts.
    #[arg(long, short = 'o', visible_alias = "output", value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Folder for the PNGs and CSVs (default: ./partition-<variant>-<gpu>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Seed of the Poisson arrivals (the same arrivals in every mode).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Length of the experiment in virtual seconds (default 500 seed, 600 dynamic).
    #[arg(long)]
    pub duration_s: Option<f64>,
    /// Rate of each model in the seed and steady variants, req/s (sensitivity runs).
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// GPUs of the steady variant (each its own node, all of kind `--gpu`).
    #[arg(long, default_value_t = 1)]
    pub gpus: usize,
    /// An operator-measured profile table (TOML); its rows win over the shipped ones.
    #[arg(long)]
    pub measured: Option<PathBuf>,
    /// `--live`: the same experiment on a real cluster (see `partition_live`).
    #[command(flatten)]
    pub live: crate::partition_live::LiveArgs,
}

/// One row of the JSON output, exactly the keys.
#[derive(Debug, Serialize)]
pub struct Row {
    pub mode: String,
    pub model: String,
    pub slo_attainment: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub goodput: f64,
    pub reconfigurations: u32,
    pub energy_j: f64,
}

#[derive(Debug, Serialize)]
struct Output {
    results: Vec<Row>,
}

/// The five modes, in the order they are reported.
pub const MODES: [&str; 5] = [
    "default_mps",
    "time_slicing",
    "equal_split",
    "gpulet",
    "adaptive",
];

fn policy(mode: &str) -> Box<dyn PlanPolicy> {
    match mode {
        "default_mps" => Box::new(policies::default_mps()),
        "time_slicing" => Box::new(policies::time_slicing()),
        "equal_split" => Box::new(policies::equal_split()),
        "gpulet" => Box::new(policies::Gpulet::new()),
        _ => Box::new(Adaptive::default()),
    }
}

pub fn bench_partition(a: PartitionArgs) -> anyhow::Result<()> {
    let mut data = GpuData::shipped().context("loading the shipped GPU data")?;
    if let Some(path) = &a.measured {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading --measured {}", path.display()))?;
        let n = data
            .profiles
            .apply_measured(&text)
            .with_context(|| format!("--measured {}", path.display()))?;
        eprintln!(
            "measured profile: {n} row(s) from {} replace shipped rows",
            path.display()
        );
    }
    if !(a.rate > 0.0 && a.rate.is_finite()) {
        bail!("--rate must be a positive number of requests/s");
    }
    if let Some(d) = a.duration_s {
        if d.is_nan() || d < 1.0 {
            bail!("--duration-s must be at least 1 (virtual seconds)");
        }
    }
    let sc: Scenario = match a.variant {
        Variant::Seed => {
            let mut sc = scenarios::seed(
                &data.profiles,
                &a.gpu,
                a.seed,
                a.duration_s.unwrap_or(500.0),
            )
            .context("--gpu")?;
            for m in &mut sc.models {
                m.requested_rps = a.rate;
                for s in &mut m.schedule {
                    s.rps = a.rate;
                }
            }
            sc
        }
        Variant::Dynamic => {
            scenarios::dynamic(&data.profiles, a.seed, a.duration_s.unwrap_or(600.0))?
        }
        Variant::Steady => scenarios::steady(
            &data.profiles,
            &a.gpu,
            a.gpus,
            a.rate,
            a.seed,
            a.duration_s.unwrap_or(3600.0),
        )
        .context("--gpu / --gpus")?,
    };
    let variant = match a.variant {
        Variant::Seed => "seed",
        Variant::Dynamic => "dynamic",
        Variant::Steady => "steady",
    };
    let out = a.out.clone().unwrap_or_else(|| match a.variant {
        Variant::Seed => PathBuf::from(format!("partition-seed-{}", a.gpu)),
        Variant::Dynamic => PathBuf::from("partition-dynamic"),
        Variant::Steady => PathBuf::from(format!("partition-steady-{}-{}", a.gpu, a.rate)),
    });
    std::fs::create_dir_all(&out).with_context(|| format!("creating --out {}", out.display()))?;

    let bar = indicatif::ProgressBar::new((MODES.len() * 100) as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut results = Vec::new();
    let mut replans = std::collections::BTreeMap::new();
    for (i, mode) in MODES.iter().enumerate() {
        bar.set_message(mode.to_string());
        let mut p = policy(mode);
        let base = (i * 100) as u64;
        let r = sim::run(&data, &sc, p.as_mut(), &mut |f| {
            bar.set_position(base + (f * 100.0) as u64)
        })?;
        replans.insert(mode.to_string(), p.replans());
        results.push(r);
    }
    bar.finish_and_clear();

    let rows: Vec<Row> = results
        .iter()
        .flat_map(|r| {
            r.models.iter().map(|m| Row {
                mode: r.mode.clone(),
                model: m.model.clone(),
                slo_attainment: m.slo_attainment(),
                p50_ms: m.p50_ms,
                p99_ms: m.p99_ms,
                goodput: m.goodput_rps,
                reconfigurations: m.reconfigurations,
                energy_j: m.energy_j,
            })
        })
        .collect();

    write_csv(&out, &sc, &results)?;
    draw_latency(&out.join("latency.png"), &sc, &results)?;
    if let Some(ad) = results.iter().find(|r| r.mode == "adaptive") {
        draw_shares(&out.join("shares.png"), &sc, ad)?;
    }
    let summary = write_summary(&out, &sc, &results, &replans, variant)?;

    match a.format {
        Format::Json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&Output { results: rows })?
            );
        }
        Format::Table => {
            println!(
                "bench partition --variant {variant}{}: {} s virtual time, seed {}, worker start {} s",
                if a.variant == Variant::Seed { format!(" --gpu {}", a.gpu) } else { String::new() },
                sc.duration_s,
                sc.seed,
                sc.worker_start_s
            );
            if sc.gpus.iter().any(|g| g.kind.starts_with("Jetson")) {
                println!("note: Jetson share rows are derived (trt_power rule); MPS on Jetson is not verified: a model of a small edge GPU");
            }
            let mut t = Table::new();
            t.load_preset(UTF8_FULL_CONDENSED);
            t.set_header(vec![
                "mode",
                "model",
                "SLO attainment",
                "p50 ms",
                "p99 ms",
                "goodput req/s",
                "reconfigs",
                "energy J",
            ]);
            for r in &rows {
                t.add_row(vec![
                    r.mode.clone(),
                    r.model.clone(),
                    format!("{:.3} %", 100.0 * r.slo_attainment),
                    format!("{:.1}", r.p50_ms),
                    format!("{:.1}", r.p99_ms),
                    format!("{:.1}", r.goodput),
                    r.reconfigurations.to_string(),
                    format!("{:.0}", r.energy_j),
                ]);
            }
            println!("{t}");
            for line in summary {
                println!("{line}");
            }
            println!(
                "wrote {}/latency.png, shares.png, timeseries.csv, shares.csv, summary.json",
                out.display()
            );
        }
    }
    Ok(())
}

/// Mode totals and, for the seed variant, the overlap window 100-400 s; returns printable lines.
fn write_summary(
    out: &Path,
    sc: &Scenario,
    results: &[SimResult],
    replans: &std::collections::BTreeMap<String, Option<usize>>,
    variant: &str,
) -> anyhow::Result<Vec<String>> {
    let mut lines = Vec::new();
    let mut js = serde_json::Map::new();
    let mut totals = serde_json::Map::new();
    let mut gp = std::collections::BTreeMap::new();
    let hours = sc.duration_s / 3600.0;
    for r in results {
        let goodput: f64 = r.models.iter().map(|m| m.goodput_rps).sum();
        let reconf: u32 = r.models.iter().map(|m| m.reconfigurations).sum();
        let per_model_hour = reconf as f64 / r.models.len().max(1) as f64 / hours.max(1e-9);
        let gap: f64 = r.models.iter().map(|m| m.serving_gap_s).sum();
        let refused: u64 = r.models.iter().map(|m| m.refused).sum();
        gp.insert(r.mode.clone(), goodput);
        totals.insert(
            r.mode.clone(),
            serde_json::json!({"goodput": goodput, "energy_j": r.energy_j, "serving_gap_s": gap, "refused": refused,
                "reconfigurations": reconf, "reconfigurations_per_model_per_hour": per_model_hour}),
        );
        lines.push(format!(
            "{:13} total goodput {goodput:7.1} req/s  energy {:8.0} J  refused {refused:6}  serving gap {gap:.2} s  reconfigurations {reconf} ({per_model_hour:.2} per model per hour)",
            r.mode, r.energy_j
        ));
        if let Some(Some(n)) = replans.get(&r.mode) {
            let per = *n as f64 / r.models.len().max(1) as f64 / hours.max(1e-9);
            lines.push(format!(
                "{:13} re-plans after the first plan: {n} ({per:.2} per model per hour)",
                r.mode
            ));
            if let Some(serde_json::Value::Object(t)) = totals.get_mut(&r.mode) {
                t.insert("replans".into(), serde_json::json!(n));
                t.insert("replans_per_model_per_hour".into(), serde_json::json!(per));
            }
        }
    }
    if let (Some(a), Some(g)) = (gp.get("adaptive"), gp.get("gpulet")) {
        lines.push(format!(
            "adaptive / gpulet goodput within SLO: {:.3}x",
            a / g.max(1e-9)
        ));
    }
    js.insert("totals".into(), serde_json::Value::Object(totals));
    if variant == "seed" && sc.duration_s >= 400.0 {
        let mut w = Vec::new();
        lines.push("overlap window 100-400 s (all three models running):".into());
        for r in results {
            for (mi, m) in r.models.iter().enumerate() {
                let slo = sc.models[mi].slo_ms;
                let x = report::window(m, slo, 100.0, 400.0);
                lines.push(format!(
                    "  {:13} {:9} SLO {:.3} %  refused {:5}  p99 {:7.1} ms  10-s p99 range {:.1}-{:.1} ms (SLO {slo} ms)",
                    r.mode,
                    m.model,
                    100.0 * x.slo_attainment,
                    x.refused,
                    x.p99_ms,
                    x.p99_10s_min_ms,
                    x.p99_10s_max_ms
                ));
                w.push(serde_json::json!({"mode": r.mode, "model": m.model, "slo_attainment": x.slo_attainment,
                    "refused": x.refused, "p99_ms": x.p99_ms, "p99_10s_min_ms": x.p99_10s_min_ms, "p99_10s_max_ms": x.p99_10s_max_ms}));
            }
        }
        js.insert("overlap_100_400".into(), serde_json::Value::Array(w));
    }
    std::fs::write(
        out.join("summary.json"),
        serde_json::to_string_pretty(&serde_json::Value::Object(js))?,
    )?;
    Ok(lines)
}

fn write_csv(out: &Path, sc: &Scenario, results: &[SimResult]) -> anyhow::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(out.join("timeseries.csv"))?);
    writeln!(
        f,
        "mode,model,t_s,completed,within_slo,p50_ms,p99_ms,max_ms"
    )?;
    for r in results {
        for (mi, m) in r.models.iter().enumerate() {
            for b in report::bins(m, sc.models[mi].slo_ms, 1.0, sc.duration_s) {
                writeln!(
                    f,
                    "{},{},{},{},{},{:.3},{:.3},{:.3}",
                    r.mode, m.model, b.t_s, b.completed, b.within_slo, b.p50_ms, b.p99_ms, b.max_ms
                )?;
            }
        }
    }
    f.flush()?;
    let mut f = std::io::BufWriter::new(std::fs::File::create(out.join("shares.csv"))?);
    writeln!(f, "mode,t_s,gpu,share,models")?;
    for r in results {
        for l in &r.layouts {
            for (g, s, ms) in &l.partitions {
                writeln!(f, "{},{:.3},{},{:.3},{}", r.mode, l.t_s, g, s, ms.join("+"))?;
            }
        }
    }
    f.flush()?;
    Ok(())
}

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

fn perr<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing: {e:?}")
}

/// Per-second p99 latency of every model, one panel per mode (like the seed's Fig. 2).
fn draw_latency(path: &Path, sc: &Scenario, results: &[SimResult]) -> anyhow::Result<()> {
    crate::plot::ensure_font()?;
    let h = 260 * results.len() as u32;
    let root = BitMapBackend::new(path, (1200, h)).into_drawing_area();
    root.fill(&WHITE).map_err(perr)?;
    let panels = root.split_evenly((results.len(), 1));
    let max_slo = sc.models.iter().map(|m| m.slo_ms).fold(0.0, f64::max);
    let ymax = max_slo * 2.0;
    for (panel, r) in panels.iter().zip(results) {
        let mut chart = ChartBuilder::on(panel)
            .caption(
                format!(
                    "{}: per-second p99 latency (ms), clipped at {ymax:.0}",
                    r.mode
                ),
                ("sans-serif", 18),
            )
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..sc.duration_s, 0f64..ymax)
            .map_err(perr)?;
        chart
            .configure_mesh()
            .x_desc("time (s)")
            .label_style(("sans-serif", 12))
            .draw()
            .map_err(perr)?;
        for (mi, m) in r.models.iter().enumerate() {
            let c = PALETTE[mi % PALETTE.len()];
            let slo = sc.models[mi].slo_ms;
            let pts: Vec<(f64, f64)> = report::bins(m, slo, 1.0, sc.duration_s)
                .into_iter()
                .filter(|b| b.completed > 0)
                .map(|b| (b.t_s, b.p99_ms.min(ymax)))
                .collect();
            chart
                .draw_series(LineSeries::new(pts, c.stroke_width(1)))
                .map_err(perr)?
                .label(format!("{} (SLO {slo:.0} ms)", m.model))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(2))
                });
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(0.0, slo), (sc.duration_s, slo)],
                    6,
                    4,
                    c.mix(0.6).stroke_width(1),
                ))
                .map_err(perr)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 12))
            .draw()
            .map_err(perr)?;
    }
    root.present().map_err(perr)?;
    Ok(())
}

/// Share of each GPU held by each model over time under `adaptive` (a time-shared partition's
/// share is split evenly among its models), one panel per GPU.
fn draw_shares(path: &Path, sc: &Scenario, r: &SimResult) -> anyhow::Result<()> {
    crate::plot::ensure_font()?;
    let ng = sc.gpus.len();
    let root = BitMapBackend::new(path, (1200, 300 * ng as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(perr)?;
    let panels = root.split_evenly((ng, 1));
    for (g, panel) in panels.iter().enumerate() {
        let mut chart = ChartBuilder::on(panel)
            .caption(
                format!(
                    "adaptive: MPS share per model on GPU {g} ({}, {})",
                    sc.gpus[g].node, sc.gpus[g].kind
                ),
                ("sans-serif", 18),
            )
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..sc.duration_s, 0f64..1.05f64)
            .map_err(perr)?;
        chart
            .configure_mesh()
            .x_desc("time (s)")
            .y_desc("share")
            .label_style(("sans-serif", 12))
            .draw()
            .map_err(perr)?;
        for (mi, m) in sc.models.iter().enumerate() {
            let c = PALETTE[mi % PALETTE.len()];
            let mut pts = Vec::new();
            let mut prev: Option<f64> = None;
            for l in &r.layouts {
                let s: f64 = l
                    .partitions
                    .iter()
                    .filter(|(pg, _, ms)| *pg == g && ms.contains(&m.name))
                    .map(|(_, s, ms)| s / ms.len() as f64)
                    .sum();
                if let Some(p) = prev {
                    pts.push((l.t_s, p));
                }
                pts.push((l.t_s, s));
                prev = Some(s);
            }
            if let Some(p) = prev {
                pts.push((sc.duration_s, p));
            }
            if pts.iter().all(|p| p.1 == 0.0) {
                continue;
            }
            chart
                .draw_series(LineSeries::new(pts, c.stroke_width(2)))
                .map_err(perr)?
                .label(m.name.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 12))
            .draw()
            .map_err(perr)?;
    }
    root.present().map_err(perr)?;
    Ok(())
}
