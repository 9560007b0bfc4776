//! `demo`, `sim` and `bench sdrm3`: scheduler simulations, no cluster needed.

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use edgeplane_scheduler::{score, sim, xrbench, Catalog, Report, SimConfig, POLICIES};
use serde_json::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

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
    #[arg(long, value_enum, default_value_t = Semantics::Native)]
    pub semantics: Semantics,
    /// Simulated run length (native only; xrbench runs are 700 ms).
    #[arg(long, default_value_t = 2000.0)]
    pub duration_ms: f64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Run SDRM3's online weight tuner.
    #[arg(long)]
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
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Seeds per cell.
    #[arg(long, default_value_t = 3)]
    pub seeds: u64,
    /// Simulated milliseconds per run.
    #[arg(long, default_value_t = 3000.0)]
    pub duration_ms: f64,
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
                tune: a.tune,
                supernet: a.supernet,
                weights: None,
                sdrm3_layerwise: a.layerwise,
            };
            let r = sim::run(cat, &cfg)?;
            let extra = json!({
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
            if let Some(steps) = extra.get("tuner_log").and_then(|l| l.as_array()) {
                for s in steps {
                    println!(
                        "tuner step {}: t={:.0} ms UXCost+ {:.3} UXCost- {:.3} eta {:.3} converged {}",
                        s["step"], s["time_ms"].as_f64().unwrap_or(0.0), s["cost_plus"].as_f64().unwrap_or(0.0),
                        s["cost_minus"].as_f64().unwrap_or(0.0), s["eta"].as_f64().unwrap_or(0.0), s["converged"]
                    );
                }
            }
        }
    }
    Ok(())
}

/// One bench cell: a policy's mean UXCost, miss rate and energy over seeds.
struct Cell {
    ux: f64,
    miss: f64,
    energy: f64,
    steps: Option<usize>,
}

fn run_cell(
    cat: &Catalog,
    sc: &str,
    hw: &str,
    p: &str,
    seeds: u64,
    dur: f64,
) -> anyhow::Result<Cell> {
    let (mut ux, mut miss, mut energy, mut steps) = (0.0, 0.0, 0.0, Vec::new());
    for seed in 1..=seeds {
        let mut cfg = SimConfig::new(sc, hw, p);
        cfg.duration_ms = dur;
        cfg.seed = seed;
        cfg.tune = p == "sdrm3";
        let r = sim::run(cat, &cfg)?;
        ux += r.report.uxcost;
        miss += r.report.miss_rate;
        energy += r.report.energy_mj;
        if let Some(s) = r.tuner_steps_to_converge {
            steps.push(s);
        }
    }
    let n = seeds as f64;
    Ok(Cell {
        ux: ux / n,
        miss: miss / n,
        energy: energy / n,
        steps: if steps.is_empty() {
            None
        } else {
            Some(steps.iter().sum::<usize>() / steps.len())
        },
    })
}

fn geomean(v: &[f64]) -> f64 {
    (v.iter().map(|x| x.ln()).sum::<f64>() / v.len().max(1) as f64).exp()
}

pub fn bench(a: BenchArgs) -> anyhow::Result<()> {
    let cat = Catalog::embedded();
    if a.seeds == 0 {
        bail!("--seeds must be at least 1");
    }
    let cells_n = (BENCH_SCENARIOS.len() * BENCH_HARDWARE.len() * POLICIES.len()) as u64;
    let bar = indicatif::ProgressBar::new(cells_n);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} cells {elapsed_precise} eta {eta} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let start = std::time::Instant::now();
    // rows[(scenario, hw)] = cells per policy (POLICIES order)
    let mut rows = Vec::new();
    for sc in BENCH_SCENARIOS {
        for hw in BENCH_HARDWARE {
            let mut cells = Vec::new();
            for p in POLICIES {
                bar.set_message(format!("{sc} {hw} {p}"));
                cells.push(run_cell(cat, sc, hw, p, a.seeds, a.duration_ms)?);
                bar.inc(1);
            }
            rows.push((sc, hw, cells));
        }
    }
    bar.finish_and_clear();
    let elapsed = start.elapsed().as_secs_f64();
    let xi = POLICIES.iter().position(|p| *p == "xrbench").unwrap();
    // sdrm3 is POLICIES[0]
    let mut per_baseline = Vec::new();
    for (bi, b) in POLICIES.iter().enumerate().skip(1) {
        let ratios: Vec<f64> = rows.iter().map(|(_, _, c)| c[0].ux / c[bi].ux).collect();
        per_baseline.push((b.to_string(), 1.0 - geomean(&ratios)));
    }
    let best_ratios: Vec<f64> = rows
        .iter()
        .map(|(_, _, c)| c[0].ux / c[1..].iter().map(|x| x.ux).fold(f64::INFINITY, f64::min))
        .collect();
    let vs_best = 1.0 - geomean(&best_ratios);
    let steps: Vec<usize> = rows.iter().filter_map(|(_, _, c)| c[0].steps).collect();
    let mean_of = |pi: usize, f: &dyn Fn(&Cell) -> f64| {
        rows.iter().map(|(_, _, c)| f(&c[pi])).sum::<f64>() / rows.len() as f64
    };

    if a.format == Format::Json {
        let v = json!({
            "seeds": a.seeds,
            "duration_ms": a.duration_ms,
            "elapsed_s": elapsed,
            "policies": POLICIES,
            "cells": rows.iter().map(|(sc, hw, c)| json!({
                "scenario": sc, "hardware": hw,
                "uxcost": POLICIES.iter().zip(c).map(|(p, x)| (p.to_string(), json!(x.ux))).collect::<serde_json::Map<_,_>>(),
                "uxcost_vs_xrbench": POLICIES.iter().zip(c).map(|(p, x)| (p.to_string(), json!(x.ux / c[xi].ux))).collect::<serde_json::Map<_,_>>(),
                "miss_rate": POLICIES.iter().zip(c).map(|(p, x)| (p.to_string(), json!(x.miss))).collect::<serde_json::Map<_,_>>(),
                "energy_mj": POLICIES.iter().zip(c).map(|(p, x)| (p.to_string(), json!(x.energy))).collect::<serde_json::Map<_,_>>(),
                "sdrm3_tuner_steps": c[0].steps,
            })).collect::<Vec<_>>(),
            "sdrm3_geomean_uxcost_reduction": per_baseline.iter().map(|(b, r)| (b.clone(), json!(r))).collect::<serde_json::Map<_,_>>(),
            "sdrm3_geomean_uxcost_reduction_vs_best_baseline": vs_best,
            "sdrm3_tuner_steps_mean": if steps.is_empty() { None } else { Some(steps.iter().sum::<usize>() as f64 / steps.len() as f64) },
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("UXCost normalised to xrbench (lower is better); native semantics, {} seeds × {} ms per cell", a.seeds, a.duration_ms);
    print!("{:<20} {:<20}", "scenario", "hardware");
    for p in POLICIES {
        print!(" {p:>9}");
    }
    println!(" {:>6}", "steps");
    for (sc, hw, c) in &rows {
        print!("{sc:<20} {hw:<20}");
        for x in c {
            print!(" {:>9.3}", x.ux / c[xi].ux);
        }
        println!(
            " {:>6}",
            c[0].steps.map(|s| s.to_string()).unwrap_or("-".into())
        );
    }
    println!();
    println!(
        "{:<10} {:>10} {:>12} {:>28}",
        "policy", "miss rate", "energy mJ", "sdrm3 UXCost reduction"
    );
    for (pi, p) in POLICIES.iter().enumerate() {
        let red = if pi == 0 {
            "-".to_string()
        } else {
            format!("{:.1} %", 100.0 * per_baseline[pi - 1].1)
        };
        println!(
            "{:<10} {:>10.3} {:>12.0} {:>28}",
            p,
            mean_of(pi, &|c| c.miss),
            mean_of(pi, &|c| c.energy),
            red
        );
    }
    println!(
        "sdrm3 vs the best baseline of each cell: geomean UXCost reduction {:.1} %",
        100.0 * vs_best
    );
    if !steps.is_empty() {
        println!(
            "tuner: converged in {} of {} cells, mean {:.1} steps",
            steps.len(),
            rows.len(),
            steps.iter().sum::<usize>() as f64 / steps.len() as f64
        );
    }
    println!(
        "({} cells in {:.1} s)",
        rows.len() * POLICIES.len(),
        elapsed
    );
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
