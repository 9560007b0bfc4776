//! Each policy's defining behaviour, on a real engine with the XRBench cost tables.

use edgeplane_scheduler::policy::{by_name, Sdrm3};
use edgeplane_scheduler::{Action, Catalog, DropReason, Engine, EngineModel};

fn models(names: &[(&str, f64, Option<usize>)]) -> Vec<EngineModel> {
    names
        .iter()
        .map(|(n, p, up)| EngineModel {
            name: n.to_string(),
            cost_model: n.to_string(),
            period_ms: *p,
            upstream: *up,
        })
        .collect()
}

fn engine(policy: &str, ms: Vec<EngineModel>, hw: &str) -> Engine {
    let cat = Catalog::embedded();
    Engine::new(
        cat,
        &cat.hardware(hw).unwrap().accelerators,
        ms,
        by_name(policy).unwrap(),
    )
    .unwrap()
}

fn dispatches(acts: &[Action]) -> Vec<(u64, usize, usize, usize)> {
    acts.iter()
        .filter_map(|a| match a {
            Action::Dispatch {
                job, acc, from, to, ..
            } => Some((*job, *acc, *from, *to)),
            _ => None,
        })
        .collect()
}

#[test]
fn edf_runs_the_earliest_deadline_first() {
    let mut e = engine(
        "edf",
        models(&[
            ("ES_RITNet", 16.0, None),
            ("HT_hand_graph_cnn_half", 22.0, None),
        ]),
        "Single_4K_WS",
    );
    let late = e.release(0.0, 0, 0, 50.0, None);
    let early = e.release(0.0, 1, 0, 20.0, None);
    let d = dispatches(&e.step(0.0));
    assert_eq!(d.len(), 1, "one accelerator");
    assert_eq!(d[0].0, early);
    assert_ne!(d[0].0, late);
    assert_eq!(d[0].3 - d[0].2, 1, "edf dispatches one layer block");
}

#[test]
fn fcfs_runs_in_arrival_order_whole_model() {
    let mut e = engine(
        "fcfs",
        models(&[
            ("ES_RITNet", 16.0, None),
            ("HT_hand_graph_cnn_half", 22.0, None),
        ]),
        "Single_4K_WS",
    );
    let first = e.release(0.0, 1, 0, 100.0, None);
    let _second = e.release(0.0, 0, 0, 5.0, None);
    let d = dispatches(&e.step(0.0));
    assert_eq!(d[0].0, first);
    assert_eq!(d[0].2, 0);
    assert_eq!(d[0].3, e.layers(1), "whole model, no preemption");
}

#[test]
fn sdrm3_drops_an_infeasible_frame_and_its_cascade() {
    // ES -> GE cascade; ES frame 0 cannot finish within 0.1 ms on any accelerator
    let mut e = engine(
        "sdrm3",
        models(&[("ES_RITNet", 16.0, None), ("GE_FBNet_C", 16.0, Some(0))]),
        "Dual_4K_WS_OS",
    );
    let es = e.release(0.0, 0, 0, 0.1, None);
    let ge = e.release(0.0, 1, 0, 16.0, None);
    let acts = e.step(0.0);
    assert!(
        acts.contains(&Action::Drop {
            job: es,
            reason: DropReason::Infeasible,
            energy_mj: 0.0
        }),
        "{acts:?}"
    );
    assert!(
        acts.contains(&Action::Drop {
            job: ge,
            reason: DropReason::Cascade,
            energy_mj: 0.0
        }),
        "{acts:?}"
    );
    assert_eq!(e.pending(), 0);
    // a feasible frame is not dropped
    let ok = e.release(1.0, 0, 1, 17.0, None);
    let acts = e.step(1.0);
    assert!(dispatches(&acts).iter().any(|d| d.0 == ok));
}

#[test]
fn sdrm3_preempts_only_at_block_boundaries() {
    let mut e = engine(
        "sdrm3",
        models(&[
            ("HT_hand_graph_cnn_half", 100.0, None),
            ("ES_RITNet", 16.0, None),
        ]),
        "Single_4K_WS",
    );
    let slow = e.release(0.0, 0, 0, 100.0, None);
    let d = dispatches(&e.step(0.0));
    assert_eq!(d, vec![(slow, 0, 0, 1)], "one layer at a time");
    // an urgent job arrives while the accelerator is busy: nothing is dispatched until the block ends
    let urgent = e.release(0.01, 1, 0, 3.0, None);
    assert!(
        dispatches(&e.step(0.01)).is_empty(),
        "no preemption inside a block"
    );
    assert!(
        e.block_done(0.05, 0).is_none(),
        "the slow job is not finished"
    );
    let d = dispatches(&e.step(0.05));
    assert_eq!(
        d[0].0, urgent,
        "at the boundary the urgent job takes the accelerator"
    );
}

#[test]
fn migration_costs_the_boundary_activation() {
    let mut e = engine(
        "edf",
        models(&[("HT_hand_graph_cnn_half", 100.0, None)]),
        "Dual_4K_WS_OS",
    );
    let id = e.release(0.0, 0, 0, 100.0, None);
    let d = dispatches(&e.step(0.0));
    let first_acc = d[0].1;
    e.block_done(0.1, first_acc);
    let j = e.job(id).unwrap().clone();
    let other = 1 - first_acc;
    let (lat_move, en_move, migrated) = e.block_cost(&j, other, 1, 2);
    assert!(migrated);
    let mut stay = j.clone();
    stay.last_acc = Some(other);
    let (lat_stay, en_stay, m2) = e.block_cost(&stay, other, 1, 2);
    assert!(!m2);
    assert!(lat_move > lat_stay && en_move > en_stay);
}

#[test]
fn xrbench_policy_is_whole_model_and_latency_greedy() {
    let mut e = engine(
        "xrbench",
        models(&[("ES_RITNet", 16.0, None)]),
        "Dual_4K_WS_OS",
    );
    let id = e.release(0.0, 0, 0, 16.0, None);
    let d = dispatches(&e.step(0.0));
    let j = e.job(id).unwrap();
    let fastest = (0..2).min_by(|&a, &b| {
        let mut p = j.clone();
        p.next_layer = 0;
        e.remaining(&p, a)
            .0
            .partial_cmp(&e.remaining(&p, b).0)
            .unwrap()
    });
    assert_eq!(d, vec![(id, fastest.unwrap(), 0, e.layers(0))]);
}

#[test]
fn prema_herald_planaria_serve_a_simple_load() {
    for p in ["prema", "herald", "planaria"] {
        let mut e = engine(p, models(&[("ES_RITNet", 16.0, None)]), "Dual_4K_WS_OS");
        let id = e.release(0.0, 0, 0, 16.0, None);
        let mut now = 0.0;
        let mut done = false;
        for _ in 0..1000 {
            let acts = e.step(now);
            let d = dispatches(&acts);
            let Some(&(_, acc, _, _)) = d.first() else {
                break;
            };
            let lat = match acts
                .iter()
                .find(|a| matches!(a, Action::Dispatch { .. }))
                .unwrap()
            {
                Action::Dispatch { latency_ms, .. } => *latency_ms,
                _ => unreachable!(),
            };
            now += lat;
            if let Some(Action::Complete { job, late, .. }) = e.block_done(now, acc) {
                assert_eq!(job, id);
                assert!(!late, "{p}: an idle system meets the deadline");
                done = true;
                break;
            }
        }
        assert!(done, "{p} completed the job");
    }
}

#[test]
fn planaria_prefers_the_smallest_array_that_meets_the_deadline() {
    // Dual_4K_BigLittle has a 3072-PE and a 1024-PE accelerator
    let cat = Catalog::embedded();
    let hw = cat
        .hardware_names()
        .into_iter()
        .find(|h| h.starts_with("Dual_4K_BigLittle_WS_WS"))
        .unwrap();
    let mut e = engine("planaria", models(&[("KD_res8_narrow", 333.0, None)]), &hw);
    e.release(0.0, 0, 0, 333.0, None);
    let d = dispatches(&e.step(0.0));
    let accs = e.accelerators();
    let smallest = (0..accs.len()).min_by_key(|&a| accs[a].spec.pes).unwrap();
    assert_eq!(d[0].1, smallest);
}

#[test]
fn sdrm3_weights_default_to_the_design() {
    let s = Sdrm3::default();
    assert_eq!(s.weights.to_vec(), [1.0, 0.5, 0.5, 0.25, 0.25, 0.5, 0.0]);
    assert_eq!(s.block, 1);
}

#[test]
fn unknown_policy_lists_the_valid_ones() {
    let err = by_name("round-robin").err().unwrap().to_string();
    assert!(err.contains("sdrm3") && err.contains("planaria"), "{err}");
}

#[test]
fn layerwise_sdrm3_meets_a_cascade_that_no_single_accelerator_can() {
    // social_interactionB on Quad_4K: ES then GE within 16.7 ms; neither model's whole-model
    // latency on one accelerator fits behind ES, but running each GE layer where it is fastest does.
    let cat = Catalog::embedded();
    let mut c =
        edgeplane_scheduler::SimConfig::new("social_interactionB", "Quad_4K_WS_OS_WS_OS", "sdrm3");
    c.duration_ms = 1000.0;
    let literal = edgeplane_scheduler::sim::run(cat, &c).unwrap().report;
    c.sdrm3_layerwise = true;
    let layerwise = edgeplane_scheduler::sim::run(cat, &c).unwrap().report;
    assert!(layerwise.miss_rate < 0.05, "{}", layerwise.miss_rate);
    assert!(literal.miss_rate > 0.2, "{}", literal.miss_rate);
}

#[test]
fn every_policy_obeys_the_accelerators_a_model_is_assigned_to() {
    for p in edgeplane_scheduler::POLICIES {
        let mut e = engine(p, models(&[("ES_RITNet", 16.0, None)]), "Dual_4K_WS_OS");
        let id = e.release(0.0, 0, 0, 16.0, None);
        let fastest = {
            let j = e.job(id).unwrap();
            (0..2)
                .min_by(|&a, &b| {
                    e.remaining(j, a)
                        .0
                        .partial_cmp(&e.remaining(j, b).0)
                        .unwrap()
                })
                .unwrap()
        };
        let other = 1 - fastest;
        e.set_allowed(0, &[other]).unwrap();
        let d = dispatches(&e.step(0.0));
        assert_eq!(d.len(), 1, "{p}");
        assert_eq!(
            d[0].1, other,
            "{p} ran on an accelerator the model is not assigned to"
        );
    }
    let mut e = engine(
        "sdrm3",
        models(&[("ES_RITNet", 16.0, None)]),
        "Dual_4K_WS_OS",
    );
    assert!(e
        .set_allowed(0, &[])
        .unwrap_err()
        .to_string()
        .contains("accelerators"));
    assert!(e
        .set_allowed(0, &[7])
        .unwrap_err()
        .to_string()
        .contains("does not exist"));
}
