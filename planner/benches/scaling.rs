//! Planning time for 100 / 1,000 / 10,000 nodes x 200 models (one GPU per node, three GPU kinds).
//! Prints the time of a fresh plan, of a re-plan after a node loss (with the current plan), and of
//! a hysteresis check that keeps the plan, plus the growth ratios measured in this run.
//! Run: `cargo bench -p edgeplane-planner --bench scaling`.

use edgeplane_gpu::GpuData;
use edgeplane_planner::{plan, Config, GpuSlot, Inputs, ModelDemand, Node};
use std::time::{Duration, Instant};

const KINDS: [(&str, u64); 3] = [
    ("Jetson-AGX-Xavier", 16384),
    ("V100", 16160),
    ("A100-80GB", 81920),
];
const PROFILES: [(&str, f64, u64); 3] = [
    ("resnet18", 45.0, 1770),
    ("resnet50", 108.0, 1820),
    ("vgg16", 142.0, 2920),
];

fn inputs(nodes: usize, models: usize) -> Inputs {
    // a small LCG: the same cluster on every run
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (x >> 33) as f64 / (1u64 << 31) as f64
    };
    Inputs {
        nodes: (0..nodes)
            .map(|i| {
                let (kind, mem) = KINDS[i % 3];
                Node {
                    id: format!("node-{i:05}"),
                    healthy: true,
                    gpus: vec![GpuSlot {
                        id: "gpu0".into(),
                        kind: kind.into(),
                        memory_mib: mem,
                    }],
                }
            })
            .collect(),
        models: (0..models)
            .map(|i| {
                let (profile, slo, mem) = PROFILES[i % 3];
                ModelDemand {
                    name: format!("model-{i:03}"),
                    profile: profile.into(),
                    slo_ms: slo * (1.0 + next()),
                    requested_rps: 10.0 + 290.0 * next(),
                    observed_peak_rps: None,
                    mem_mib: mem,
                    value: 0.5 + next(),
                }
            })
            .collect(),
    }
}

fn best_of<T>(n: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut out = None;
    for _ in 0..n {
        let t = Instant::now();
        let r = f();
        best = best.min(t.elapsed());
        out = Some(r);
    }
    (best, out.expect("n >= 1"))
}

fn main() {
    let data = GpuData::shipped().expect("shipped data");
    let cfg = Config::default();
    println!(
        "planner scaling: 200 models, one GPU per node (Xavier / V100 / A100 in turn); best of 5"
    );
    println!(
        "{:>7} {:>12} {:>16} {:>14} {:>11} {:>6}",
        "nodes", "fresh ms", "node-loss ms", "keep ms", "partitions", "shed"
    );
    let mut fresh_times = Vec::new();
    for nodes in [100usize, 1_000, 10_000] {
        let inp = inputs(nodes, 200);
        let (t_fresh, first) = best_of(5, || plan(&data, &inp, None, &cfg).expect("plan"));
        let mut lost = inp.clone();
        lost.nodes[0].healthy = false;
        let (t_loss, _) = best_of(5, || {
            plan(&data, &lost, Some(&first.plan), &cfg).expect("plan")
        });
        let (t_keep, kept) = best_of(5, || {
            plan(&data, &inp, Some(&first.plan), &cfg).expect("plan")
        });
        assert!(!kept.replanned);
        println!(
            "{nodes:>7} {:>12.2} {:>16.2} {:>14.3} {:>11} {:>6}",
            t_fresh.as_secs_f64() * 1e3,
            t_loss.as_secs_f64() * 1e3,
            t_keep.as_secs_f64() * 1e3,
            first.plan.partitions.len(),
            first.plan.shed.len()
        );
        fresh_times.push(t_fresh.as_secs_f64());
    }
    println!(
        "growth (fresh plan): 1,000 / 100 nodes = {:.2}x, 10,000 / 1,000 nodes = {:.2}x",
        fresh_times[1] / fresh_times[0],
        fresh_times[2] / fresh_times[1]
    );
}
