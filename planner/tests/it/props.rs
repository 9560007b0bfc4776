use crate::rules::model;
use edgeplane_gpu::capacity::{self, Tenant};
use edgeplane_gpu::{GpuData, Load};
use edgeplane_planner::{plan, Config, GpuSlot, Inputs, ModelDemand, Node, Plan, Step};
use proptest::prelude::*;
use std::collections::BTreeSet;
use std::sync::OnceLock;

fn data() -> &'static GpuData {
    static D: OnceLock<GpuData> = OnceLock::new();
    D.get_or_init(|| GpuData::shipped().unwrap())
}

const KINDS: [&str; 3] = ["Jetson-AGX-Xavier", "V100", "A100-80GB"];
const PROFILES: [(&str, f64); 3] = [("resnet18", 45.0), ("resnet50", 108.0), ("vgg16", 142.0)];

fn cluster() -> impl Strategy<Value = Inputs> {
    let nodes = prop::collection::vec(
        (
            prop::collection::vec((0usize..3, 4096u64..32768), 1..3),
            any::<bool>(),
        ),
        1..5,
    );
    let models = prop::collection::vec((0usize..3, 0.8f64..2.0, 0.0f64..250.0, 0.2f64..3.0), 1..10);
    (nodes, models).prop_map(|(nodes, models)| Inputs {
        nodes: nodes
            .into_iter()
            .enumerate()
            .map(|(i, (gpus, _))| Node {
                id: format!("n{i}"),
                healthy: true,
                gpus: gpus
                    .into_iter()
                    .enumerate()
                    .map(|(j, (k, mem))| GpuSlot {
                        id: format!("gpu{j}"),
                        kind: KINDS[k].into(),
                        memory_mib: mem,
                    })
                    .collect(),
            })
            .collect(),
        models: models
            .into_iter()
            .enumerate()
            .map(|(i, (p, slo_x, rps, value))| {
                let (profile, slo) = PROFILES[p];
                ModelDemand {
                    value,
                    ..model(&format!("m{i}"), profile, slo * slo_x, rps)
                }
            })
            .collect(),
    })
}

fn kind_of<'a>(inputs: &'a Inputs, node: &str, gpu: &str) -> &'a GpuSlot {
    inputs
        .nodes
        .iter()
        .find(|n| n.id == node)
        .and_then(|n| n.gpus.iter().find(|g| g.id == gpu))
        .expect("partition on a known gpu")
}

fn placed(p: &Plan) -> BTreeSet<String> {
    p.partitions
        .iter()
        .flat_map(|x| x.tenants.iter().map(|t| t.model.clone()))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn never_over_commits_share_or_memory(inputs in cluster()) {
        let out = plan(data(), &inputs, None, &Config::default()).unwrap();
        for n in &inputs.nodes {
            for g in &n.gpus {
                let parts: Vec<_> = out.plan.partitions.iter()
                    .filter(|p| p.node == n.id && p.gpu == g.id).collect();
                let share: u32 = parts.iter().map(|p| p.share_pct).sum();
                let mem: u64 = parts.iter().map(|p| p.mem_mib).sum();
                prop_assert!(share <= 100, "{} {}: {share} %", n.id, g.id);
                prop_assert!(mem <= g.memory_mib, "{} {}: {mem} MiB", n.id, g.id);
            }
        }
    }

    #[test]
    fn every_placed_model_meets_its_slo_under_the_model(inputs in cluster()) {
        let d = data();
        let out = plan(d, &inputs, None, &Config::default()).unwrap();
        for p in &out.plan.partitions {
            let kind = &kind_of(&inputs, &p.node, &p.gpu).kind;
            let s = p.share_pct as f64 / 100.0;
            let tenants: Vec<Tenant> = p.tenants.iter().map(|t| {
                let m = inputs.models.iter().find(|m| m.name == t.model).unwrap();
                Tenant { model: &m.profile, rate_rps: t.rate_rps, slo_ms: m.slo_ms }
            }).collect();
            // the worst neighbour filling the rest of the GPU, 10 % margin, round-robin rule
            let alpha = tenants.iter().map(|t| d.interference.worst_alpha(
                Load { model: t.model, batch: 1.0, share: s }, 1.0 - s)).fold(1.0, f64::max);
            let ok = capacity::time_share(&d.profiles, kind, s, &tenants, alpha * 1.1).unwrap();
            prop_assert!(ok.is_some(), "{} misses an SLO: {:?}", p.id, p.tenants);
        }
        // and the planned rates cover the demand x 1.2 of every model that is not shed
        let shed: BTreeSet<&str> = out.plan.shed.iter().map(|s| s.model.as_str()).collect();
        for m in &inputs.models {
            if shed.contains(m.name.as_str()) || m.requested_rps == 0.0 { continue; }
            let planned: f64 = out.plan.partitions.iter().flat_map(|p| &p.tenants)
                .filter(|t| t.model == m.name).map(|t| t.rate_rps).sum();
            // a model is served whole or shed: never below its rate (that would overload it);
            // the 1.2 headroom may be dropped when only it does not fit, and the plan says so
            let no_headroom = out.decisions.iter()
                .any(|x| x.subject == edgeplane_planner::Subject::model(&m.name) && x.reason.contains("served without headroom"));
            // headroom: x 1.2, or the upper edge of the rate's confidence band where wider
            let band = Config::default().band.half_width(m.requested_rps);
            let with_headroom = (m.requested_rps * 1.2).max(m.requested_rps + band);
            let need = if no_headroom { m.requested_rps } else { with_headroom };
            prop_assert!(planned >= need - 1e-6,
                "{}: {planned} < {need}", m.name);
        }
    }

    #[test]
    fn deterministic_for_the_same_input(inputs in cluster()) {
        let a = plan(data(), &inputs, None, &Config::default()).unwrap();
        let b = plan(data(), &inputs, None, &Config::default()).unwrap();
        prop_assert_eq!(a, b);
    }

    #[test]
    fn no_replan_under_noise_within_the_band(inputs in cluster(), noise in prop::collection::vec(0.905f64..1.045, 10)) {
        let first = plan(data(), &inputs, None, &Config::default()).unwrap();
        let mut noisy = inputs.clone();
        for (m, x) in noisy.models.iter_mut().zip(&noise) {
            m.observed_peak_rps = Some(m.requested_rps * x);
        }
        let second = plan(data(), &noisy, Some(&first.plan), &Config::default()).unwrap();
        prop_assert!(!second.replanned);
        prop_assert!(second.steps.is_empty());
        prop_assert_eq!(&second.plan, &first.plan);
    }

    #[test]
    fn node_loss_replaces_what_still_fits(inputs in cluster(), lost in 0usize..4) {
        prop_assume!(inputs.nodes.len() >= 2);
        let lost = lost % inputs.nodes.len();
        let cfg = Config { lend_spare: false, ..Config::default() };
        let first = plan(data(), &inputs, None, &cfg).unwrap();
        let mut after = inputs.clone();
        after.nodes[lost].healthy = false;
        let lost_id = after.nodes[lost].id.clone();
        let second = plan(data(), &after, Some(&first.plan), &cfg).unwrap();
        prop_assert!(second.replanned);
        prop_assert!(second.plan.partitions.iter().all(|p| p.node != lost_id));
        for p in first.plan.partitions.iter().filter(|p| p.node == lost_id) {
            let stopped = second.steps.iter().any(|s| matches!(s, Step::Stop { partition, reason } if *partition == p.id && reason.contains("lost")));
            prop_assert!(stopped, "{} not stopped", p.id);
        }
        // with ample room left (the survivors have at least twice the share and memory the first
        // plan used, of every GPU kind), every model placed before is placed after
        let ample = KINDS.iter().all(|k| {
            let used: u64 = first.plan.partitions.iter()
                .filter(|p| kind_of(&inputs, &p.node, &p.gpu).kind == *k)
                .map(|p| p.share_pct as u64).sum();
            let mem: u64 = first.plan.partitions.iter()
                .filter(|p| kind_of(&inputs, &p.node, &p.gpu).kind == *k)
                .map(|p| p.mem_mib).sum();
            let gpus: Vec<&GpuSlot> = after.nodes.iter().filter(|n| n.healthy)
                .flat_map(|n| n.gpus.iter()).filter(|g| g.kind == *k).collect();
            let room: u64 = gpus.len() as u64 * 100;
            let min_mem = gpus.iter().map(|g| g.memory_mib).min().unwrap_or(0);
            used == 0 || (room >= 2 * used && min_mem >= 2 * mem)
        });
        if ample {
            let before = placed(&first.plan);
            let now = placed(&second.plan);
            prop_assert!(before.is_subset(&now), "lost {:?}", before.difference(&now).collect::<Vec<_>>());
        }
    }
}
