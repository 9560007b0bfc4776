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
        assert!(out
            .decisions
            .iter()
            .any(|d| d.subject == m && d.reason.contains("req/s")));
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
