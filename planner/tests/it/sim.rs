//! The adaptive mode in the GPU simulator runs this planner: make-before-break leaves no gap.

use edgeplane_gpu::{scenarios, sim, GpuData};
use edgeplane_planner::sim_policy::Adaptive;
use edgeplane_planner::Step;

#[test]
fn adaptive_reconfigures_without_a_serving_gap() {
    let data = GpuData::shipped().unwrap();
    // resnet50 is deployed at 40 s and vgg16 at 90 s: the layout changes while resnet18 serves
    let sc = scenarios::seed(&data.profiles, "Jetson-AGX-Xavier", 5, 150.0).unwrap();
    let mut policy = Adaptive::default();
    let r = sim::run(&data, &sc, &mut policy, &mut |_| {}).unwrap();
    let r18 = &r.models[0];
    assert!(r18.reconfigurations >= 1, "resnet18 was never moved");
    for m in &r.models {
        assert_eq!(m.serving_gap_s, 0.0, "{}: gap", m.model);
        assert_eq!(m.refused, 0, "{}: refused", m.model);
        assert!(
            m.slo_attainment() >= 0.999,
            "{}: {}",
            m.model,
            m.slo_attainment()
        );
    }
    // every re-plan the simulator applied came with make-before-break steps and reasons
    assert!(policy.history.len() >= 2);
    for (_, out) in &policy.history[1..] {
        let first_move = out
            .steps
            .iter()
            .position(|s| matches!(s, Step::MoveTraffic { .. }));
        let last_wait = out
            .steps
            .iter()
            .rposition(|s| matches!(s, Step::WaitReady { .. }));
        if let (Some(m), Some(w)) = (first_move, last_wait) {
            assert!(w < m);
        }
        assert!(!out.decisions.is_empty());
    }
}
