use edgeplane_gpu::GpuData;
use edgeplane_planner::{plan, Config, GpuSlot, Inputs, ModelDemand, Node, Step};

pub fn model(name: &str, profile: &str, slo: f64, rps: f64) -> ModelDemand {
    let mem = match profile {
        "resnet18" => 1770,
        "resnet50" => 1820,
        _ => 2920,
    };
    ModelDemand {
        name: name.into(),
        profile: profile.into(),
        slo_ms: slo,
        requested_rps: rps,
        observed_peak_rps: None,
        mem_mib: mem,
        value: 1.0,
    }
}

pub fn node(id: &str, kinds: &[&str]) -> Node {
    Node {
        id: id.into(),
        healthy: true,
        gpus: kinds
            .iter()
            .enumerate()
            .map(|(i, k)| GpuSlot {
                id: format!("gpu{i}"),
                kind: k.to_string(),
                memory_mib: 16384,
            })
            .collect(),
    }
}

#[test]
fn every_decision_has_a_reason_and_the_first_plan_starts_everything() {
    let data = GpuData::shipped().unwrap();
    let inputs = Inputs {
        nodes: vec![node("edge-1", &["Jetson-AGX-Xavier"])],
        models: vec![
            model("resnet18", "resnet18", 45.0, 50.0),
            model("resnet50", "resnet50", 108.0, 50.0),
            model("vgg16", "vgg16", 142.0, 50.0),
        ],
    };
    let out = plan(&data, &inputs, None, &Config::default()).unwrap();
    assert!(out.replanned && out.plan.shed.is_empty());
    for p in &out.plan.partitions {
        assert!(!p.reason.is_empty());
    }
    for m in ["resnet18", "resnet50", "vgg16"] {
        assert!(out.decisions.iter().any(
            |d| d.subject == edgeplane_planner::Subject::model(m) && d.reason.contains("req/s")
        ));
    }
    let starts = out
        .steps
        .iter()
        .filter(|s| matches!(s, Step::Start { .. }))
        .count();
    assert_eq!(starts, out.plan.partitions.len());
    // planned on requested x 1.2 = 60 req/s each
    assert!(out
        .decisions
        .iter()
        .any(|d| d.reason.contains("planned on 60.0 req/s")));
}

#[test]
fn over_demand_sheds_the_least_value_per_share_and_says_which() {
    let data = GpuData::shipped().unwrap();
    // a Jetson Nano (one SM): vgg16 b1 takes 85.1 ms at full share, so 24 req/s of vgg16 alone
    // need more than the GPU; the vgg16 deployment, worth less per request, is shed
    let mut cheap = model("vgg-cheap", "vgg16", 400.0, 20.0);
    cheap.value = 0.1;
    let inputs = Inputs {
        nodes: vec![node("nano", &["Jetson-Nano"])],
        models: vec![model("r18", "resnet18", 45.0, 20.0), cheap],
    };
    let out = plan(&data, &inputs, None, &Config::default()).unwrap();
    let shed: Vec<&str> = out.plan.shed.iter().map(|s| s.model.as_str()).collect();
    assert_eq!(shed, vec!["vgg-cheap"], "{:#?}", out.decisions);
    assert!(out.plan.shed[0].reason.contains("shed"));
    assert!(out
        .plan
        .partitions
        .iter()
        .all(|p| p.tenants.iter().all(|t| t.model == "r18")));
}

#[test]
fn make_before_break_orders_start_wait_move_stop() {
    let data = GpuData::shipped().unwrap();
    let mut inputs = Inputs {
        nodes: vec![node("edge-1", &["Jetson-AGX-Xavier"])],
        models: vec![model("vgg16", "vgg16", 142.0, 30.0)],
    };
    let first = plan(&data, &inputs, None, &Config::default()).unwrap();
    inputs.models[0].observed_peak_rps = Some(120.0);
    let second = plan(&data, &inputs, Some(&first.plan), &Config::default()).unwrap();
    assert!(second.replanned);
    let pos = |f: &dyn Fn(&Step) -> bool| second.steps.iter().position(f);
    let start = pos(&|s| matches!(s, Step::Start { .. })).expect("a start");
    let wait = pos(&|s| matches!(s, Step::WaitReady { .. })).expect("a wait");
    let mv = pos(&|s| matches!(s, Step::MoveTraffic { .. })).expect("a move");
    let last_start = second
        .steps
        .iter()
        .rposition(|s| matches!(s, Step::Start { .. }))
        .unwrap();
    let last_wait = second
        .steps
        .iter()
        .rposition(|s| matches!(s, Step::WaitReady { .. }))
        .unwrap();
    assert!(start < wait && last_start < wait && last_wait < mv);
    if let Some(stop) = pos(&|s| matches!(s, Step::Stop { .. })) {
        assert!(stop > mv, "{:#?}", second.steps);
    }
    assert!(second.decisions[0].reason.contains("rose"));
}

#[test]
fn a_rise_inside_the_planned_capacity_keeps_the_plan() {
    let data = GpuData::shipped().unwrap();
    let cfg = Config::default();
    let mut inputs = Inputs {
        nodes: vec![node("edge-1", &["A100-80GB"])],
        models: vec![model("r18", "resnet18", 45.0, 50.0)],
    };
    let first = plan(&data, &inputs, None, &cfg).unwrap();
    // planned at 50: band 4 sqrt(50 / 30) = 5.16 req/s, capacity max(50 x 1.2, 55.16) = 60
    for (observed, replans) in [(58.0, false), (45.0, false), (44.0, true), (61.0, true)] {
        inputs.models[0].observed_peak_rps = Some(observed);
        // a fall is floored at the deployed rate: deploy at the observed rate to test it
        inputs.models[0].requested_rps = observed.min(50.0);
        let out = plan(&data, &inputs, Some(&first.plan), &cfg).unwrap();
        assert_eq!(out.replanned, replans, "{observed}: {:?}", out.decisions);
    }
}

#[test]
fn a_rate_change_re_plans_only_that_model_and_keeps_the_others_partitions() {
    let data = GpuData::shipped().unwrap();
    let cfg = Config::default();
    let mut inputs = Inputs {
        nodes: vec![
            node("edge-1", &["A100-80GB"]),
            node("edge-2", &["A100-80GB"]),
        ],
        models: vec![
            model("r18", "resnet18", 45.0, 50.0),
            model("r50", "resnet50", 108.0, 50.0),
            model("vgg", "vgg16", 142.0, 20.0),
        ],
    };
    let first = plan(&data, &inputs, None, &cfg).unwrap();
    let of = |p: &edgeplane_planner::Plan, m: &str| -> Vec<String> {
        p.partitions
            .iter()
            .filter(|x| x.tenants.iter().any(|t| t.model == m))
            .map(|x| x.id.clone())
            .collect()
    };
    // vgg's demand triples: it is re-planned; whatever does not share a partition with it
    // keeps its partitions exactly (same ids: no worker restarts), and its reference rate
    inputs.models[2].observed_peak_rps = Some(60.0);
    let second = plan(&data, &inputs, Some(&first.plan), &cfg).unwrap();
    assert!(second.replanned);
    assert!(
        second
            .decisions
            .iter()
            .any(|d| d.reason.starts_with("incremental: re-planned")),
        "{:?}",
        second.decisions
    );
    let vgg_parts: Vec<&edgeplane_planner::Partition> = first
        .plan
        .partitions
        .iter()
        .filter(|x| x.tenants.iter().any(|t| t.model == "vgg"))
        .collect();
    let mut kept = 0;
    for m in ["r18", "r50"] {
        let shares_with_vgg = vgg_parts
            .iter()
            .any(|x| x.tenants.iter().any(|t| t.model == m));
        if !shares_with_vgg {
            assert_eq!(of(&first.plan, m), of(&second.plan, m), "{m}");
            assert_eq!(second.plan.basis_rps[m], 50.0);
            kept += 1;
        }
    }
    assert!(kept > 0, "{:#?}", first.plan.partitions);
    assert_eq!(second.plan.basis_rps["vgg"], 60.0);
    // the GPUs are not over-committed by the kept + new partitions
    for n in ["edge-1", "edge-2"] {
        assert!(second.plan.used_pct(n, "gpu0") <= 100);
    }
}
