use std::collections::{BTreeMap, BTreeSet};

use edgeplane_planner as planner;
use edgeplane_proto::raft as pb;

use super::*;
use crate::live::PlanPreview;
use crate::profiles::*;
use crate::state::State;
use edgeplane_proto::raft::command::Kind;

fn cmd(kind: Kind) -> pb::Command {
    pb::Command {
        client_id: 0,
        seq: 0,
        kind: Some(kind),
    }
}

fn register_acc(st: &mut State, name: &str, acc: pb::Accelerator, index: u64) {
    st.apply(
        &cmd(Kind::RegisterNode(pb::RegisterNode {
            name: name.into(),
            accelerators: vec![acc],
            agent_addr: "127.0.0.1:1".into(),
            ..Default::default()
        })),
        index,
    );
}

fn register(st: &mut State, name: &str, gpu: &str, index: u64) {
    let acc = pb::Accelerator {
        id: "gpu0".into(),
        kind: "gpu".into(),
        name: gpu.into(),
        simulated: true,
        ..Default::default()
    };
    register_acc(st, name, acc, index);
}

fn deploy(st: &mut State, name: &str, rate: f64, index: u64) {
    st.apply(
        &cmd(Kind::DeployModel(pb::DeployModel {
            name: name.into(),
            slo_ms: 100.0,
            rate,
            memory_mb: 0,
        })),
        index,
    );
}

fn commit(st: &mut State, p: &PlanPreview, index: u64) -> pb::ApplyResult {
    st.apply(
        &cmd(Kind::CommitPlan(pb::CommitPlan {
            nodes: p.changes.clone(),
            basis_rps: p.basis_rps.clone().into_iter().collect(),
            plan_nodes: p.plan_nodes.clone(),
            reason: p.reason.clone(),
            shed: p.shed.clone(),
        })),
        index,
    )
    .result
}

fn all_ready(st: &State) -> impl Fn(&str) -> BTreeSet<String> + '_ {
    move |n: &str| {
        st.nodes
            .get(n)
            .map(|n| n.models().into_iter().collect())
            .unwrap_or_default()
    }
}

/// One round on `st` with no observed rates, nothing reported ready, default tunables.
fn plan_now(st: &State) -> PlanPreview {
    let none = |_: &str| BTreeSet::new();
    round(
        gpu_data().unwrap(),
        st,
        &BTreeMap::new(),
        &none,
        &planner::Config::default(),
    )
    .unwrap()
}

fn setup() -> State {
    let mut st = State::default();
    register(&mut st, "a", "Jetson-AGX-Xavier", 1);
    deploy(&mut st, "resnet18", 50.0, 2);
    deploy(&mut st, "resnet50", 50.0, 3);
    st
}

fn register_measured(st: &mut State, name: &str, ms_b1: f64, index: u64) {
    let ms: Vec<f64> = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]
        .iter()
        .map(|b| ms_b1 * b)
        .collect();
    let acc = pb::Accelerator {
        id: "cpu0".into(),
        kind: "cpu".into(),
        name: "host CPU".into(),
        memory_mb: 8192,
        profile: vec![pb::ProfileRow {
            model: "resnet18".into(),
            ms,
        }],
        profile_source: "cpu on test".into(),
        ..Default::default()
    };
    register_acc(st, name, acc, index);
}

#[test]
fn measured_profiles_make_a_cpu_plannable_and_are_named_in_the_decisions() {
    let data = gpu_data().unwrap();
    let mut st = State::default();
    register_measured(&mut st, "cpu-box", 5.0, 1);
    deploy(&mut st, "resnet18", 20.0, 2);
    let none = |_: &str| BTreeSet::new();
    let cfg = planner::Config::default();
    let p = round(data, &st, &BTreeMap::new(), &none, &cfg).unwrap();
    assert!(
        p.decisions.iter().any(
            |d| d.to_string() == "profile cpu-box/cpu0: measured (cpu on test)"
                && d.subject
                    == crate::live::DecisionSubject::Profile {
                        node: "cpu-box".into(),
                        accelerator: "cpu0".into()
                    }
        ),
        "{:?}",
        p.decisions
    );
    assert_eq!(
        commit(&mut st, &p, 10).code(),
        pb::ResultCode::Ok,
        "{:?}",
        p.decisions
    );
    assert_eq!(st.nodes["cpu-box"].models(), vec!["resnet18"]);
    // Too slow a CPU for the SLO (100 ms): the measured rows say so, the model is shed
    // rather than planned on numbers the box does not have.
    let mut slow = State::default();
    register_measured(&mut slow, "slow-box", 80.0, 1);
    deploy(&mut slow, "resnet18", 20.0, 2);
    let p = round(data, &slow, &BTreeMap::new(), &none, &cfg).unwrap();
    assert!(
        p.changes.iter().all(|c| c.partitions.is_empty()),
        "{:?}",
        p.changes
    );
    assert!(!p.shed.is_empty(), "{:?}", p.decisions);
    // A node without a profile and without a GPU of the table is not plannable at all.
    let mut bare = State::default();
    st_register_cpu_without_profile(&mut bare);
    deploy(&mut bare, "resnet18", 20.0, 2);
    let p = round(data, &bare, &BTreeMap::new(), &none, &cfg).unwrap();
    assert!(p.changes.is_empty(), "{:?}", p.changes);
}

fn st_register_cpu_without_profile(st: &mut State) {
    let acc = pb::Accelerator {
        id: "cpu0".into(),
        kind: "cpu".into(),
        name: "host CPU".into(),
        ..Default::default()
    };
    register_acc(st, "bare", acc, 1);
}

#[test]
fn a_reported_profile_is_validated_with_the_field_named() {
    use edgeplane_proto::agent as ag;
    let acc = |rows: Vec<ag::ProfileRow>| ag::Accelerator {
        id: "cpu0".into(),
        kind: "cpu".into(),
        profile: rows,
        ..Default::default()
    };
    let row = |m: &str, ms: Vec<f64>| ag::ProfileRow {
        model: m.into(),
        ms,
    };
    assert!(check_profile(&acc(vec![])).is_ok());
    assert!(check_profile(&acc(vec![row("resnet18", vec![1., 2., 4., 8., 16., 32.])])).is_ok());
    let e = check_profile(&acc(vec![row("nope", vec![1., 2., 4., 8., 16., 32.])])).unwrap_err();
    assert!(e.contains("model") && e.contains("nope"), "{e}");
    let e = check_profile(&acc(vec![row("resnet18", vec![1., 2.])])).unwrap_err();
    assert!(e.contains("ms"), "{e}");
    let e = check_profile(&acc(vec![row(
        "resnet18",
        vec![1., f64::NAN, 4., 8., 16., 32.],
    )]))
    .unwrap_err();
    assert!(e.contains("ms"), "{e}");
    let many = (0..=MAX_PROFILE_ROWS)
        .map(|_| row("resnet18", vec![1., 2., 4., 8., 16., 32.]))
        .collect();
    assert!(check_profile(&acc(many)).unwrap_err().contains("at most"));
}

#[test]
fn first_round_places_every_model_and_a_second_keeps_it() {
    let data = gpu_data().unwrap();
    let mut st = setup();
    let p = plan_now(&st);
    assert!(p.replanned);
    assert_eq!(p.changes.len(), 1, "{:?}", p.decisions);
    assert_eq!(commit(&mut st, &p, 10).code(), pb::ResultCode::Ok);
    let a = &st.nodes["a"];
    assert_eq!(a.models(), vec!["resnet18", "resnet50"]);
    assert_eq!(a.assignment_epoch, 10);
    assert_eq!(st.events.len(), 1);
    // same inputs, rates within the band: nothing to commit (hysteresis)
    let mut peaks = BTreeMap::new();
    peaks.insert("resnet18".to_string(), 51.0);
    peaks.insert("resnet50".to_string(), 47.0);
    let p2 = round(
        data,
        &st,
        &peaks,
        &all_ready(&st),
        &planner::Config::default(),
    )
    .unwrap();
    assert!(!p2.replanned);
    assert!(!p2.changes_state(&st), "{:?}", p2.changes);
}

#[test]
fn hysteresis_no_churn_under_rate_noise() {
    let data = gpu_data().unwrap();
    let mut st = setup();
    let p = plan_now(&st);
    commit(&mut st, &p, 10);
    // Poisson-like noise of +-4 % around the requested 50 req/s, 200 rounds: no commit
    let mut x: u64 = 12345;
    let mut commits = 0;
    for _ in 0..200 {
        let mut peaks = BTreeMap::new();
        for m in ["resnet18", "resnet50"] {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let u = (x >> 33) as f64 / (1u64 << 31) as f64; // 0..1
            peaks.insert(m.to_string(), 50.0 * (0.96 + 0.08 * u));
        }
        let p = round(
            data,
            &st,
            &peaks,
            &all_ready(&st),
            &planner::Config::default(),
        )
        .unwrap();
        if p.changes_state(&st) {
            commits += 1;
        }
    }
    assert_eq!(commits, 0);
    // a real rise (+30 %) re-plans
    let mut peaks = BTreeMap::new();
    peaks.insert("resnet18".to_string(), 65.0);
    let p = round(
        data,
        &st,
        &peaks,
        &all_ready(&st),
        &planner::Config::default(),
    )
    .unwrap();
    assert!(p.replanned);
    assert!(p.reason.contains("rose"), "{}", p.reason);
}

#[test]
fn pins_win_over_the_planner() {
    let mut st = setup();
    register(&mut st, "b", "Jetson-AGX-Xavier", 4);
    st.apply(
        &cmd(Kind::PinPlacement(pb::PinPlacement {
            node: "b".into(),
            model: "resnet50".into(),
            accelerator: "gpu0".into(),
        })),
        5,
    );
    let p = plan_now(&st);
    commit(&mut st, &p, 10);
    // resnet50 only where it is pinned, at 100 %; the planner placed resnet18 on a
    assert_eq!(st.nodes["b"].models(), vec!["resnet50"]);
    assert_eq!(st.nodes["b"].partitions[0].share_pct, 100);
    assert_eq!(st.nodes["a"].models(), vec!["resnet18"]);
}

#[test]
fn a_move_keeps_the_old_partition_until_the_new_home_is_ready() {
    let data = gpu_data().unwrap();
    let mut st = setup();
    register(&mut st, "b", "Jetson-AGX-Xavier", 4);
    let p = plan_now(&st);
    commit(&mut st, &p, 10);
    // pin resnet18 (wherever it is) onto the other node's GPU: it must move
    let (from, to) = if st.nodes["a"].models().contains(&"resnet18".to_string()) {
        ("a", "b")
    } else {
        ("b", "a")
    };
    st.apply(
        &cmd(Kind::PinPlacement(pb::PinPlacement {
            node: to.into(),
            model: "resnet18".into(),
            accelerator: "gpu0".into(),
        })),
        11,
    );
    // the pin already put resnet18 on `to`; `to` does not report it ready yet
    let p = plan_now(&st);
    assert!(
        p.reason.contains("pinned by an operator") && !p.reason.contains("lost"),
        "neither the model nor the node went away, a pin took them from the planner: {}",
        p.reason
    );
    commit(&mut st, &p, 12);
    assert!(
        st.nodes[from].models().contains(&"resnet18".to_string()),
        "old partition kept while the new one is not ready: {:?}",
        st.nodes[from].partitions
    );
    assert!(!st.nodes[from]
        .target
        .iter()
        .any(|p| p.models.contains(&"resnet18".to_string())));
    // now `to` reports it ready: the next round retires the old partition
    let p = round(
        data,
        &st,
        &BTreeMap::new(),
        &all_ready(&st),
        &planner::Config::default(),
    )
    .unwrap();
    assert_eq!(commit(&mut st, &p, 13).code(), pb::ResultCode::Ok);
    assert!(!st.nodes[from].models().contains(&"resnet18".to_string()));
    assert!(st
        .events
        .iter()
        .any(|e| e.reason.contains("make-before-break")));
}

#[test]
fn a_deployed_model_is_planned_at_least_at_its_deployed_rate() {
    let data = gpu_data().unwrap();
    let mut st = setup(); // resnet18 and resnet50 deployed at 50 req/s
    let none = |_: &str| BTreeSet::new();
    let p = plan_now(&st);
    commit(&mut st, &p, 10);
    assert_eq!(st.plan_basis.get("resnet18"), Some(&50.0));
    // idle (a measured 0), served or not: demand = max(50 deployed, 0 observed) = 50, the
    // committed basis, so nothing re-plans and the model keeps its partitions
    let mut peaks = BTreeMap::new();
    peaks.insert("resnet18".to_string(), 0.0);
    for ready in [&none as &dyn Fn(&str) -> BTreeSet<String>, &all_ready(&st)] {
        let p = round(data, &st, &peaks, ready, &planner::Config::default()).unwrap();
        assert!(!p.replanned, "{:?}", p.decisions);
        assert!(!p.changes_state(&st), "{:?}", p.changes);
    }
    // a measured rate above the deployed one is demand, also for a model served nowhere
    // (its refused requests are counted): 80 > 50 x 1.05 re-plans on 80
    peaks.insert("resnet18".to_string(), 80.0);
    let p = round(data, &st, &peaks, &none, &planner::Config::default()).unwrap();
    assert!(p.replanned && p.reason.contains("rose"), "{}", p.reason);
    assert_eq!(p.basis_rps.get("resnet18"), Some(&80.0));
    assert_eq!(p.basis_rps.get("resnet50"), Some(&50.0));
    // a stale committed 0 (a plan made before this rule) is no floor: the next round
    // plans on the deployed 50 again
    st.plan_basis.insert("resnet18".to_string(), 0.0);
    let p = round(
        data,
        &st,
        &BTreeMap::new(),
        &none,
        &planner::Config::default(),
    )
    .unwrap();
    assert!(p.replanned, "{:?}", p.decisions);
    assert_eq!(p.basis_rps.get("resnet18"), Some(&50.0));
}

#[test]
fn an_idle_model_deployed_at_zero_is_not_placed_with_a_reason_in_the_events() {
    let mut st = setup();
    deploy(&mut st, "vgg16", 0.0, 4);
    let p = plan_now(&st);
    assert_eq!(
        commit(&mut st, &p, 10).code(),
        pb::ResultCode::Ok,
        "{:?}",
        p.decisions
    );
    assert!(!st.nodes["a"].models().contains(&"vgg16".to_string()));
    let ev: Vec<&str> = st
        .events
        .iter()
        .filter(|e| e.node.is_empty())
        .map(|e| e.reason.as_str())
        .collect();
    assert_eq!(ev.len(), 1, "{:?}", st.events);
    assert!(ev[0].starts_with("not placed: vgg16: idle"), "{ev:?}");
    // the same shed again is no new event; its first requests (refused, counted) place it
    let data = gpu_data().unwrap();
    let mut peaks = BTreeMap::new();
    peaks.insert("vgg16".to_string(), 5.0);
    let p = round(
        data,
        &st,
        &peaks,
        &all_ready(&st),
        &planner::Config::default(),
    )
    .unwrap();
    assert!(p.replanned, "{:?}", p.decisions);
    assert_eq!(commit(&mut st, &p, 11).code(), pb::ResultCode::Ok);
    assert!(st.nodes["a"].models().contains(&"vgg16".to_string()));
    assert_eq!(st.events.iter().filter(|e| e.node.is_empty()).count(), 1);
}

#[test]
fn a_stale_epoch_refuses_the_whole_plan() {
    let mut st = setup();
    let p = plan_now(&st);
    // the node's assignment changes after the round was planned
    st.apply(
        &cmd(Kind::PinPlacement(pb::PinPlacement {
            node: "a".into(),
            model: "resnet50".into(),
            accelerator: "gpu0".into(),
        })),
        9,
    );
    let before = st.nodes["a"].clone();
    let r = commit(&mut st, &p, 10);
    assert_eq!(
        r.code(),
        pb::ResultCode::FailedPrecondition,
        "{}",
        r.message
    );
    assert!(r.message.contains("stale epoch"), "{}", r.message);
    assert_eq!(st.nodes["a"], before);
    assert!(st.plan_basis.is_empty(), "nothing of the plan applied");
}

#[test]
fn a_new_leader_resumes_from_the_committed_plan() {
    let data = gpu_data().unwrap();
    let mut st = setup();
    let mut peaks = BTreeMap::new();
    peaks.insert("resnet18".to_string(), 80.0);
    peaks.insert("resnet50".to_string(), 30.0);
    let none = |_: &str| BTreeSet::new();
    let p = round(data, &st, &peaks, &none, &planner::Config::default()).unwrap();
    commit(&mut st, &p, 10);
    // a new leader has no rate yet: it plans on the committed basis, not the requested
    // 50 req/s, so it keeps the plan
    let p = round(
        data,
        &st,
        &BTreeMap::new(),
        &all_ready(&st),
        &planner::Config::default(),
    )
    .unwrap();
    assert!(!p.replanned, "{:?}", p.decisions);
    assert!(!p.changes_state(&st));
}

#[test]
fn a_lost_node_is_emptied_and_its_models_placed_elsewhere() {
    let mut st = setup();
    register(&mut st, "b", "Jetson-AGX-Xavier", 4);
    let p = plan_now(&st);
    commit(&mut st, &p, 10);
    let lost = if st.nodes["a"].models().is_empty() {
        "b"
    } else {
        "a"
    };
    st.apply(
        &cmd(Kind::ExpireNodes(pb::ExpireNodes {
            names: vec![lost.into()],
        })),
        11,
    );
    let p = plan_now(&st);
    assert!(p.reason.contains("lost"), "{}", p.reason);
    commit(&mut st, &p, 12);
    assert!(st.nodes[lost].partitions.is_empty());
    let other = if lost == "a" { "b" } else { "a" };
    assert_eq!(st.nodes[other].models(), vec!["resnet18", "resnet50"]);
}
