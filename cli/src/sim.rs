//! `demo`, `sim` and `bench sdrm3`: scheduler simulations, no cluster needed.

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use edgeplane_scheduler::{score, sim, xrbench, Catalog, Report, SimConfig, POLICIES};
use serde_json::json;

pub use crate::output::Format;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Semantics {
    /// Continuous time, any length, seeded, explicit cascade drops (default).
    Native,
    /// Exact XRBench artifact semantics (700 ms, its scheduler's event rules).
    Xrbench,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Simulated milliseconds per run.
    #[arg(long, default_value_t = 2000.0)]
    pub duration_ms: f64,
}

#[derive(Debug, Args)]
pub struct SimArgs {
    /// Scenario name from scenarios.toml; several comma-separated run as phases in turn.
    #[arg(long)]
    pub scenario: String,
    /// Hardware set-up name from hardware.toml (e.g. Dual_4K_WS_OS).
    #[arg(long)]
    pub hardware: String,
    /// Scheduling policy.
    #[arg(long, default_value = "sdrm3")]
    pub policy: String,
    /// Deadline semantics of the simulation.
    #[arg(long, value_enum, default_value_t = Semantics::Native)]
    pub semantics: Semantics,
    /// Simulated run length (native only; xrbench runs are 700 ms).
    #[arg(long, default_value_t = 2000.0)]
    pub duration_ms: f64,
    /// Seed for every random draw (reproducible runs).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// SDRM3 without its online weight tuner (and start-of-run profile forecast): the
    /// default weights throughout. The tuner is on by default.
    #[arg(long)]
    pub no_tune: bool,
    /// Accepted for scripts written when the tuner was opt-in; the tuner is on by default.
    #[arg(long, hide = true, conflicts_with = "no_tune")]
    pub tune: bool,
    /// Switch Supernet sub-networks with load.
    #[arg(long)]
    pub supernet: bool,
    /// SDRM3 with block-aware costs (each remaining layer at its best accelerator).
    #[arg(long)]
    pub layerwise: bool,
    /// Probability that a frame exits early (layer skip).
    #[arg(long, default_value_t = 0.0)]
    pub early_exit: f64,
    /// Output format: `table` for people, `json` for scripts.
    #[arg(long, short = 'o', visible_alias = "output", value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Output format: `table` for people, `json` for scripts.
    #[arg(long, short = 'o', visible_alias = "output", value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Seeds per cell.
    #[arg(long, default_value_t = 3)]
    pub seeds: u64,
    /// Simulated milliseconds per run.
    #[arg(long, default_value_t = 3000.0)]
    pub duration_ms: f64,
    /// Write a PNG of UXCost per cell and policy (uxcost.png) into this folder.
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
    /// Only these scenarios of the grid (comma-separated).
    #[arg(long)]
    pub scenario: Option<String>,
    /// Only these hardware set-ups of the grid (comma-separated).
    #[arg(long)]
    pub hardware: Option<String>,
    /// SDRM3 without its online weight tuner (default weights): the untuned figure.
    #[arg(long)]
    pub no_tune: bool,
}

/// The hardware set-ups of the benchmark: heterogeneous and homogeneous.
pub const BENCH_HARDWARE: &[&str] = &[
    "Dual_4K_WS_OS",
    "Quad_4K_WS_OS_WS_OS",
    "Dual_8K_WS_OS",
    "Dual_4K_WS_WS",
];
/// The usage scenarios (the probability-sweep variants are left out).
pub const BENCH_SCENARIOS: &[&str] = &[
    "AR_Assistant",
    "AR_gaming",
    "VR_gaming",
    "outdoor_activity_A",
    "outdoor_activity_B",
    "social_interactionA",
    "social_interactionB",
];

fn check_policy(p: &str) -> anyhow::Result<()> {
    if !POLICIES.contains(&p) {
        bail!("unknown --policy `{p}`; valid: {}", POLICIES.join(", "));
    }
    Ok(())
}

fn report_json(r: &Report) -> serde_json::Value {
    json!({
        "overall_score": r.overall_score,
        "uxcost": r.uxcost,
        "energy_per_frame_mj": r.energy_per_frame_mj,
        "energy_mj": r.energy_mj,
        "miss_rate": r.miss_rate,
        "frames": r.frames,
        "dropped": r.dropped,
        "late": r.late,
        "mean_accuracy": r.mean_accuracy,
        "models": r.models.iter().map(|m| json!({
            "model": m.model, "frames": m.frames, "completed": m.completed, "dropped": m.dropped,
            "late": m.late, "rt_score": m.rt_score, "energy_score": m.energy_score,
            "qoe_score": m.qoe_score, "model_score": m.model_score, "energy_mj": m.energy_mj,
        })).collect::<Vec<_>>(),
    })
}

fn print_report(r: &Report) {
    println!(
        "{:<26} {:>6} {:>5} {:>7} {:>5} {:>6} {:>6} {:>6} {:>7} {:>10}",
        "model", "frames", "done", "dropped", "late", "RT", "EN", "QoE", "score", "energy mJ"
    );
    for m in &r.models {
        println!(
            "{:<26} {:>6} {:>5} {:>7} {:>5} {:>6.3} {:>6.3} {:>6.3} {:>7.3} {:>10.1}",
            m.model,
            m.frames,
            m.completed,
            m.dropped,
            m.late,
            m.rt_score,
            m.energy_score,
            m.qoe_score,
            m.model_score,
            m.energy_mj
        );
    }
    println!(
        "overall score {:.2}   UXCost {:.3} (Ē {:.2} mJ/frame × miss {:.3})   frames {}  dropped {}  late {}  energy {:.1} mJ  accuracy {:.3}",
        r.overall_score, r.uxcost, r.energy_per_frame_mj, r.miss_rate, r.frames, r.dropped, r.late, r.energy_mj, r.mean_accuracy
    );
}

pub fn sim(a: SimArgs) -> anyhow::Result<()> {
    let cat = Catalog::embedded();
    check_policy(&a.policy)?;
    let phases: Vec<String> = a
        .scenario
        .split(',')
        .map(|s| s.trim().to_string())
        .collect();
    for p in &phases {
        cat.scenario(p).context("--scenario")?;
    }
    let hw = cat.hardware(&a.hardware).context("--hardware")?;
    let (report, semantics, extra) = match a.semantics {
        Semantics::Xrbench => {
            if a.policy != "xrbench" {
                bail!("--semantics xrbench reproduces the artifact's own scheduler: use --policy xrbench (or --semantics native)");
            }
            if phases.len() != 1 {
                bail!("--semantics xrbench takes a single --scenario");
            }
            let seed = u32::try_from(a.seed)
                .context("--seed must fit in 32 bits for xrbench semantics")?;
            let run = xrbench::run(cat, cat.scenario(&phases[0])?, hw, seed)?;
            (
                score::score(&run.model_names, &run.frames),
                "xrbench",
                json!({}),
            )
        }
        Semantics::Native => {
            if !(a.early_exit >= 0.0 && a.early_exit <= 1.0) {
                bail!(
                    "--early-exit must be a probability in [0, 1], got {}",
                    a.early_exit
                );
            }
            let cfg = SimConfig {
                phases: phases.clone(),
                hardware: a.hardware.clone(),
                policy: a.policy.clone(),
                duration_ms: a.duration_ms,
                seed: a.seed,
                early_exit_prob: a.early_exit,
                tune: !a.no_tune,
                supernet: a.supernet,
                weights: None,
                sdrm3_layerwise: a.layerwise,
            };
            let r = sim::run(cat, &cfg)?;
            let extra = json!({
                "tuned": cfg.tune && a.policy == "sdrm3",
                "profile_choices": r.profile_choices,
                "tuner_steps_to_converge": r.tuner_steps_to_converge,
                "tuner_log": r.tuner_log,
                "width_switches": r.width_switches,
                "decisions": r.decisions,
            });
            (r.report, "native", extra)
        }
    };
    match a.format {
        Format::Json => {
            let mut v = report_json(&report);
            let o = v.as_object_mut().unwrap();
            o.insert("scenario".into(), json!(a.scenario));
            o.insert("hardware".into(), json!(a.hardware));
            o.insert("policy".into(), json!(a.policy));
            o.insert("semantics".into(), json!(semantics));
            for (k, val) in extra.as_object().unwrap() {
                o.insert(k.clone(), val.clone());
            }
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Format::Table => {
            println!(
                "{} on {} with {} ({} semantics)",
                a.scenario, a.hardware, a.policy, semantics
            );
            print_report(&report);
            if let Some(p) = extra.get("profile_choices").and_then(|l| l.as_array()) {
                if !p.is_empty() {
                    let names: Vec<&str> = p.iter().filter_map(|x| x.as_str()).collect();
                    println!(
                        "tuner start profiles (forecast, then each restart): {}",
                        names.join(", ")
                    );
                }
            }
            if let Some(steps) = extra.get("tuner_log").and_then(|l| l.as_array()) {
                for s in steps {
                    println!(
                        "tuner step {}: t={:.0} ms UXCost {:.3} (+δ {:.3}, −δ {:.3}) → {:.3} {} eta {:.3} converged {}",
                        s["step"], s["time_ms"].as_f64().unwrap_or(0.0), s["cost"].as_f64().unwrap_or(0.0),
                        s["cost_plus"].as_f64().unwrap_or(0.0), s["cost_minus"].as_f64().unwrap_or(0.0),
                        s["cost_new"].as_f64().unwrap_or(0.0),
                        if s["accepted"].as_bool().unwrap_or(false) { "kept" } else { "rejected" },
                        s["eta"].as_f64().unwrap_or(0.0), s["converged"]
                    );
                }
            }
        }
    }
    Ok(())
}

/// One bench cell: a policy's mean UXCost, miss rate, energy and accuracy over seeds.
pub struct Cell {
    pub ux: f64,
    pub miss: f64,
    pub energy: f64,
    pub accuracy: f64,
    pub steps: Option<f64>,
}

/// The name of the extra row: SDRM3 with Supernet switching (not compared: it trades
/// accuracy for UXCost, so it is shown beside its mean accuracy).
pub const SUPERNET_ROW: &str = "sdrm3+supernet";

/// What one bench cell runs: a scenario on a hardware set-up, a policy, seeds and length.
struct CellSpec<'a> {
    sc: &'a str,
    hw: &'a str,
    policy: &'a str,
    seeds: u64,
    duration_ms: f64,
    tune: bool,
}

fn run_cell(cat: &Catalog, c: &CellSpec<'_>) -> anyhow::Result<Cell> {
    let (sc, hw, p, seeds, dur) = (c.sc, c.hw, c.policy, c.seeds, c.duration_ms);
    let supernet = p == SUPERNET_ROW;
    let policy = if supernet { "sdrm3" } else { p };
    let (mut ux, mut miss, mut energy, mut acc, mut steps) = (0.0, 0.0, 0.0, 0.0, Vec::new());
    for seed in 1..=seeds {
        let mut cfg = SimConfig::new(sc, hw, policy);
        cfg.duration_ms = dur;
        cfg.seed = seed;
        cfg.tune = policy == "sdrm3" && c.tune;
        cfg.supernet = supernet;
        let r = sim::run(cat, &cfg)?;
        ux += r.report.uxcost;
        miss += r.report.miss_rate;
        energy += r.report.energy_mj;
        acc += r.report.mean_accuracy;
        if let Some(s) = r.tuner_steps_to_converge {
            steps.push(s as f64);
        }
    }
    let n = seeds as f64;
    Ok(Cell {
        ux: ux / n,
        miss: miss / n,
        energy: energy / n,
        accuracy: acc / n,
        steps: if steps.is_empty() {
            None
        } else {
            Some(steps.iter().sum::<f64>() / steps.len() as f64)
        },
    })
}

fn geomean(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    (v.iter().map(|x| x.ln()).sum::<f64>() / v.len() as f64).exp()
}

/// A cell is saturated when every policy's UXCost is within 1 % of every other's: no
/// scheduler can matter there.
pub fn saturated(uxs: &[f64]) -> bool {
    let lo = uxs.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = uxs.iter().cloned().fold(0.0, f64::max);
    hi <= lo * 1.01
}

/// One row of the bench: a (scenario, hardware) cell, one entry per policy in POLICIES
/// order, then the SDRM3+Supernet row.
pub struct Row {
    pub scenario: String,
    pub hardware: String,
    pub cells: Vec<Cell>,
    pub supernet: Cell,
}

impl Row {
    /// SDRM3's UXCost over the best baseline's (per-cell best).
    pub fn vs_best(&self) -> f64 {
        let best = self.cells[1..]
            .iter()
            .map(|x| x.ux)
            .fold(f64::INFINITY, f64::min);
        self.cells[0].ux / best
    }
    pub fn saturated(&self) -> bool {
        saturated(&self.cells.iter().map(|c| c.ux).collect::<Vec<_>>())
    }
}

fn filter_list<'a>(
    all: &[&'a str],
    only: &Option<String>,
    what: &str,
) -> anyhow::Result<Vec<&'a str>> {
    let Some(only) = only else {
        return Ok(all.to_vec());
    };
    let mut v = Vec::new();
    for name in only.split(',').map(str::trim) {
        match all.iter().find(|x| **x == name) {
            Some(x) => v.push(*x),
            None => bail!(
                "--{what} `{name}` is not in the bench grid; valid: {}",
                all.join(", ")
            ),
        }
    }
    Ok(v)
}

pub fn bench(a: BenchArgs) -> anyhow::Result<()> {
    let cat = Catalog::embedded();
    if a.seeds == 0 {
        bail!("--seeds must be at least 1");
    }
    if !(a.duration_ms.is_finite() && a.duration_ms > 0.0) {
        bail!("--duration-ms must be > 0, got {}", a.duration_ms);
    }
    let scenarios = filter_list(BENCH_SCENARIOS, &a.scenario, "scenario")?;
    let hardware = filter_list(BENCH_HARDWARE, &a.hardware, "hardware")?;
    if let Some(dir) = &a.out {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("--out {}: cannot create the folder", dir.display()))?;
    }
    let per_row = POLICIES.len() + 1;
    let cells_n = (scenarios.len() * hardware.len() * per_row) as u64;
    let bar = indicatif::ProgressBar::new(cells_n);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} cells {elapsed_precise} eta {eta} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let start = std::time::Instant::now();
    let mut rows = Vec::new();
    for sc in &scenarios {
        for hw in &hardware {
            let mut cells = Vec::new();
            for p in POLICIES {
                bar.set_message(format!("{sc} {hw} {p}"));
                let spec = CellSpec {
                    sc,
                    hw,
                    policy: p,
                    seeds: a.seeds,
                    duration_ms: a.duration_ms,
                    tune: !a.no_tune,
                };
                cells.push(run_cell(cat, &spec)?);
                bar.inc(1);
            }
            bar.set_message(format!("{sc} {hw} {SUPERNET_ROW}"));
            let spec = CellSpec {
                sc,
                hw,
                policy: SUPERNET_ROW,
                seeds: a.seeds,
                duration_ms: a.duration_ms,
                tune: !a.no_tune,
            };
            let supernet = run_cell(cat, &spec)?;
            bar.inc(1);
            rows.push(Row {
                scenario: sc.to_string(),
                hardware: hw.to_string(),
                cells,
                supernet,
            });
        }
    }
    bar.finish_and_clear();
    let elapsed = start.elapsed().as_secs_f64();
    let xi = POLICIES.iter().position(|p| *p == "xrbench").unwrap_or(1);
    // sdrm3 is POLICIES[0]
    let per_baseline: Vec<(String, f64)> = POLICIES
        .iter()
        .enumerate()
        .skip(1)
        .map(|(bi, b)| {
            let ratios: Vec<f64> = rows
                .iter()
                .map(|r| r.cells[0].ux / r.cells[bi].ux)
                .collect();
            (b.to_string(), 1.0 - geomean(&ratios))
        })
        .collect();
    let vs_best = 1.0 - geomean(&rows.iter().map(Row::vs_best).collect::<Vec<_>>());
    let unsat: Vec<f64> = rows
        .iter()
        .filter(|r| !r.saturated())
        .map(Row::vs_best)
        .collect();
    let vs_best_unsat = 1.0 - geomean(&unsat);
    let n_sat = rows.len() - unsat.len();
    let steps: Vec<f64> = rows.iter().filter_map(|r| r.cells[0].steps).collect();
    let mean_of = |f: &dyn Fn(&Row) -> f64| rows.iter().map(f).sum::<f64>() / rows.len() as f64;
    let mut png = None;
    if let Some(dir) = &a.out {
        let path = dir.join("uxcost.png");
        crate::plot::uxcost_png(&path, &rows, POLICIES)?;
        png = Some(path);
    }

    if a.format == Format::Json {
        let per_policy = |f: &dyn Fn(&Cell) -> f64, r: &Row| {
            POLICIES
                .iter()
                .zip(&r.cells)
                .map(|(p, x)| (p.to_string(), json!(f(x))))
                .chain(std::iter::once((
                    SUPERNET_ROW.to_string(),
                    json!(f(&r.supernet)),
                )))
                .collect::<serde_json::Map<_, _>>()
        };
        let v = json!({
            "seeds": a.seeds,
            "duration_ms": a.duration_ms,
            "sdrm3_tuner": !a.no_tune,
            "elapsed_s": elapsed,
            "policies": POLICIES,
            "extra_row": SUPERNET_ROW,
            "cells": rows.iter().map(|r| json!({
                "scenario": r.scenario, "hardware": r.hardware,
                "saturated": r.saturated(),
                "sdrm3_vs_best_baseline": r.vs_best(),
                "uxcost": per_policy(&|c| c.ux, r),
                "uxcost_vs_xrbench": per_policy(&|c| c.ux / r.cells[xi].ux, r),
                "miss_rate": per_policy(&|c| c.miss, r),
                "energy_mj": per_policy(&|c| c.energy, r),
                "mean_accuracy": per_policy(&|c| c.accuracy, r),
                "sdrm3_tuner_steps": r.cells[0].steps,
            })).collect::<Vec<_>>(),
            "sdrm3_geomean_uxcost_reduction": per_baseline.iter().map(|(b, r)| (b.clone(), json!(r))).collect::<serde_json::Map<_,_>>(),
            "sdrm3_geomean_uxcost_reduction_vs_best_baseline": vs_best,
            "saturated_cells": n_sat,
            "sdrm3_geomean_uxcost_reduction_vs_best_baseline_unsaturated": vs_best_unsat,
            "sdrm3_tuner_steps_mean": if steps.is_empty() { None } else { Some(steps.iter().sum::<f64>() / steps.len() as f64) },
            "png": png.as_ref().map(|p| p.display().to_string()),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "UXCost normalised to xrbench (lower is better); native semantics, {} seeds × {} ms per cell; sdrm3 {}",
        a.seeds,
        a.duration_ms,
        if a.no_tune { "without its tuner (--no-tune)" } else { "with its tuner (default)" }
    );
    println!("all policies without Supernet; `{SUPERNET_ROW}` (accuracy beside it) is not compared; sat = every policy within 1 %");
    print!("{:<20} {:<20}", "scenario", "hardware");
    for p in POLICIES {
        print!(" {p:>9}");
    }
    println!(
        " {:>9} {:>7} {:>14} {:>4} {:>6}",
        "vs best", "", SUPERNET_ROW, "sat", "steps"
    );
    for r in &rows {
        print!("{:<20} {:<20}", r.scenario, r.hardware);
        for x in &r.cells {
            print!(" {:>9.3}", x.ux / r.cells[xi].ux);
        }
        println!(
            " {:>9.3} {:>7} {:>6.3} (acc {:.3}) {:>4} {:>6}",
            r.vs_best(),
            "",
            r.supernet.ux / r.cells[xi].ux,
            r.supernet.accuracy,
            if r.saturated() { "yes" } else { "" },
            r.cells[0]
                .steps
                .map(|s| format!("{s:.1}"))
                .unwrap_or("-".into())
        );
    }
    println!();
    println!(
        "{:<15} {:>10} {:>12} {:>28}",
        "policy", "miss rate", "energy mJ", "sdrm3 UXCost reduction"
    );
    for (pi, p) in POLICIES.iter().enumerate() {
        let red = if pi == 0 {
            "-".to_string()
        } else {
            format!("{:.1} %", 100.0 * per_baseline[pi - 1].1)
        };
        println!(
            "{:<15} {:>10.3} {:>12.0} {:>28}",
            p,
            mean_of(&|r| r.cells[pi].miss),
            mean_of(&|r| r.cells[pi].energy),
            red
        );
    }
    println!(
        "{:<15} {:>10.3} {:>12.0} {:>28}",
        SUPERNET_ROW,
        mean_of(&|r| r.supernet.miss),
        mean_of(&|r| r.supernet.energy),
        format!("(accuracy {:.3})", mean_of(&|r| r.supernet.accuracy))
    );
    println!(
        "sdrm3 vs the best baseline of each cell: geomean UXCost reduction {:.1} % over {} cells; {:.1} % over the {} unsaturated cells",
        100.0 * vs_best,
        rows.len(),
        100.0 * vs_best_unsat,
        unsat.len()
    );
    if !steps.is_empty() {
        println!(
            "tuner: converged in {} of {} cells, mean {:.1} steps",
            steps.len(),
            rows.len(),
            steps.iter().sum::<f64>() / steps.len() as f64
        );
    }
    if let Some(p) = png {
        println!("chart: {}", p.display());
    }
    println!("({} runs in {:.1} s)", rows.len() * per_row, elapsed);
    Ok(())
}

pub fn demo(a: DemoArgs) -> anyhow::Result<()> {
    let cat = Catalog::embedded();
    println!("Edgeplane demo: SDRM3 against six baselines on XRBench workloads (simulated NPUs)\n");
    let run = xrbench::run(
        cat,
        cat.scenario("VR_gaming")?,
        cat.hardware("Single_4K_WS")?,
        1,
    )?;
    let r = score::score(&run.model_names, &run.frames);
    println!(
        "XRBench parity: VR_gaming on Single_4K_WS scores {:.2} (artifact: 86.47)\n",
        r.overall_score
    );
    for (sc, hw) in [
        ("VR_gaming", "Dual_4K_WS_OS"),
        ("social_interactionA", "Dual_4K_WS_OS"),
        ("AR_Assistant", "Quad_4K_WS_OS_WS_OS"),
    ] {
        println!("{sc} on {hw}, {} ms simulated:", a.duration_ms);
        println!(
            "  {:<9} {:>9} {:>10} {:>9} {:>8} {:>6} {:>11}",
            "policy", "UXCost", "vs xrbench", "miss", "dropped", "late", "XRB score"
        );
        let mut rows = Vec::new();
        for p in POLICIES {
            let mut cfg = SimConfig::new(sc, hw, p);
            cfg.duration_ms = a.duration_ms;
            cfg.tune = *p == "sdrm3";
            rows.push((p, sim::run(cat, &cfg)?.report));
        }
        let base = rows
            .iter()
            .find(|(p, _)| **p == "xrbench")
            .map(|(_, r)| r.uxcost)
            .unwrap_or(1.0);
        for (p, r) in rows {
            println!(
                "  {:<9} {:>9.3} {:>10.3} {:>9.3} {:>8} {:>6} {:>11.1}",
                p,
                r.uxcost,
                r.uxcost / base,
                r.miss_rate,
                r.dropped,
                r.late,
                r.overall_score
            );
        }
        println!();
    }
    println!("Try: edgeplane sim --scenario VR_gaming --hardware Dual_4K_WS_OS --policy sdrm3 --format json");
    println!("     edgeplane bench sdrm3");
    Ok(())
}
