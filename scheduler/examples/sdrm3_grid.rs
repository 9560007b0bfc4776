//! SDRM3 against the best baseline of each run on the grid of issue 25: 5 scenarios × 2
//! hardware set-ups × 2 seeds × 5 s (native semantics), every policy on the same frames.
//! Each (scenario, hardware, seed) run is a cell: SDRM3's UXCost over the lowest baseline
//! UXCost of that run; the figure is 1 − geomean of those ratios, for SDRM3 as it runs by
//! default (tuner with its start-of-run forecast) and with `--no-tune` (default weights).
//!
//! `cargo run --release -p edgeplane-scheduler --example sdrm3_grid [-- --duration-ms 5000]`

use edgeplane_scheduler::{sim, Catalog, SimConfig, POLICIES};

const SCENARIOS: [&str; 5] = [
    "AR_Assistant",
    "AR_gaming",
    "VR_gaming",
    "outdoor_activity_A",
    "social_interactionA",
];
const HARDWARE: [&str; 2] = ["Dual_4K_WS_OS", "Quad_4K_WS_OS_WS_OS"];

fn uxcost(sc: &str, hw: &str, policy: &str, seed: u64, ms: f64, tune: bool) -> f64 {
    let mut c = SimConfig::new(sc, hw, policy);
    c.duration_ms = ms;
    c.seed = seed;
    c.tune = tune;
    sim::run(Catalog::embedded(), &c)
        .expect("grid names are in the catalogue")
        .report
        .uxcost
}

fn geomean_reduction(r: &[f64]) -> f64 {
    1.0 - (r.iter().map(|x| x.ln()).sum::<f64>() / r.len() as f64).exp()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let ms = args
        .iter()
        .position(|a| a == "--duration-ms")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(5000.0);
    println!(
        "{:<20} {:<20} {:>4} {:>9} {:>10} {:>8} {:>8}",
        "scenario", "hardware", "seed", "best", "UXCost", "sdrm3", "no-tune"
    );
    let (mut tuned, mut plain) = (Vec::new(), Vec::new());
    for sc in SCENARIOS {
        for hw in HARDWARE {
            for seed in 1..=2 {
                let (best, best_ux) = POLICIES[1..]
                    .iter()
                    .map(|p| (*p, uxcost(sc, hw, p, seed, ms, false)))
                    .min_by(|a, b| a.1.total_cmp(&b.1))
                    .expect("baselines");
                let t = uxcost(sc, hw, "sdrm3", seed, ms, true) / best_ux;
                let u = uxcost(sc, hw, "sdrm3", seed, ms, false) / best_ux;
                println!("{sc:<20} {hw:<20} {seed:>4} {best:>9} {best_ux:>10.3} {t:>8.3} {u:>8.3}");
                tuned.push(t);
                plain.push(u);
            }
        }
    }
    println!(
        "SDRM3 vs the best baseline of each run, geomean UXCost reduction over {} runs of {ms} ms: {:.1} % (default: tuner on), {:.1} % (--no-tune)",
        tuned.len(),
        100.0 * geomean_reduction(&tuned),
        100.0 * geomean_reduction(&plain)
    );
}
