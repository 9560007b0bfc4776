//! Parity with the XRBench artifact (`--semantics xrbench`).
//!
//! Expected numbers come from outside this crate: the artifact's published sample
//! (VR_gaming on Single_4K_WS = 86.466141) and `tests/ref/xrbench_ref.py`, an independent
//! re-implementation written from the artifact's documented semantics
//! (`configs/xrbench/README.md` §3 and its `ScoringModule`) that calls the C library's own
//! `rand()` and `expf()` and rounds every operation to 32 bits. Cells are chosen with drops,
//! one per hardware family (Single, Dual, Quad) and scenario kind (deterministic,
//! stochastic). The scores are 32-bit floats computed in the same order, so they agree
//! exactly; the tolerance 1e-6 only absorbs the 9-decimal print of the reference.

use edgeplane_scheduler::{score, xrbench, Catalog};

fn parity(scenario: &str, hw: &str, seed: u32) -> edgeplane_scheduler::Report {
    let cat = Catalog::embedded();
    let run = xrbench::run(
        cat,
        cat.scenario(scenario).unwrap(),
        cat.hardware(hw).unwrap(),
        seed,
    )
    .unwrap();
    score::score(&run.model_names, &run.frames)
}

/// (model, logged frames, dropped frames, model score)
fn check(scenario: &str, hw: &str, seed: u32, overall: f64, models: &[(&str, u64, u64, f64)]) {
    let r = parity(scenario, hw, seed);
    assert!(
        (r.overall_score - overall).abs() < 1e-6,
        "{scenario} on {hw} seed {seed}: overall {} vs {overall}",
        r.overall_score
    );
    for &(name, logged, dropped, score) in models {
        let m = r.models.iter().find(|m| m.model == name).unwrap();
        assert_eq!(
            (m.frames, m.dropped),
            (logged, dropped),
            "{scenario} on {hw} seed {seed}: {name} logged/dropped"
        );
        assert!(
            (m.model_score - score).abs() < 1e-6,
            "{scenario} on {hw} seed {seed}: {name} score {} vs {score}",
            m.model_score
        );
        let qoe = 1.0 - dropped as f64 / logged as f64;
        assert!(
            (m.qoe_score - qoe).abs() < 1e-6,
            "{name}: QoE {} vs 1 − drop rate {qoe}",
            m.qoe_score
        );
    }
    let logged: u64 = models.iter().map(|m| m.1).sum();
    assert_eq!(r.frames, logged, "only logged frames count");
}

#[test]
fn parity_vr_gaming_single_4k_ws_matches_the_artifacts_published_sample() {
    // the artifact's shipped summary: 86.466141; ES RT 1.0, GE RT 1.0, HT RT 0.744
    let r = parity("VR_gaming", "Single_4K_WS", 1);
    assert!(
        (r.overall_score - 86.466141).abs() < 1e-6,
        "overall {}",
        r.overall_score
    );
    let m = &r.models;
    assert!((m[0].rt_score - 1.0).abs() < 1e-3);
    assert!((m[1].rt_score - 1.0).abs() < 1e-3);
    assert!(
        (m[2].rt_score - 0.744).abs() < 1e-3,
        "HT RT {}",
        m[2].rt_score
    );
    assert!((m[0].energy_score - 0.976).abs() < 1e-3);
    assert!((m[1].energy_score - 0.977).abs() < 1e-3);
    assert!((m[2].energy_score - 0.862).abs() < 1e-3);
    assert_eq!(r.dropped, 0);
}

#[test]
fn parity_single_deterministic_with_drops_ar_gaming() {
    // the case of the issue: HT drops 16 of its 30 logged frames; QoE 14/30, not 1.0
    check(
        "AR_gaming",
        "Single_4K_WS",
        1,
        20.224983215,
        &[
            ("DE_midas_v21_small", 20, 0, 0.459562361),
            ("HT_hand_graph_cnn_half", 30, 16, 0.147187144),
            ("PD_Plane_RCNN_Quarter", 9, 1, 0.0),
        ],
    );
}

#[test]
fn parity_single_stochastic_with_drops_outdoor_activity_a_seed_2() {
    check(
        "outdoor_activity_A",
        "Single_4K_OS",
        2,
        50.680797577,
        &[
            ("KD_res8_narrow", 2, 0, 0.999924302),
            ("ASR_EM_24L", 2, 0, 0.672533154),
            ("OD_D2go_FasterRCNN", 19, 8, 0.169612467),
            ("SS_HRViT_b1", 6, 1, 0.185162172),
        ],
    );
}

#[test]
fn parity_dual_deterministic_with_drops_social_interaction_a() {
    check(
        "social_interactionA",
        "Dual_4K_WS_OS",
        1,
        19.118251801,
        &[
            ("ES_RITNet", 42, 14, 0.404354990),
            ("GE_FBNet_C", 41, 38, 0.001742173),
            ("DR_RGBd_200", 20, 0, 0.358632952),
            ("HT_hand_graph_cnn_half", 19, 0, 0.0),
        ],
    );
}

#[test]
fn parity_dual_stochastic_with_drops_ar_assistant_seeds_1_and_42() {
    check(
        "AR_Assistant",
        "Dual_4K_WS_OS",
        1,
        38.481563568,
        &[
            ("KD_res8_narrow", 2, 0, 0.999924242),
            ("OD_D2go_FasterRCNN", 7, 0, 0.924153864),
            ("DE_midas_v21_small", 19, 0, 0.0),
            ("PD_Plane_RCNN_Quarter", 9, 5, 0.0),
            ("SS_HRViT_b1", 6, 6, 0.0),
        ],
    );
    // seed 42 triggers ASR once (p = 0.5): a model that logs only under some seeds
    check(
        "AR_Assistant",
        "Dual_4K_WS_OS",
        42,
        41.316715240,
        &[
            ("KD_res8_narrow", 2, 0, 0.999924242),
            ("DE_midas_v21_small", 19, 2, 0.0),
            ("PD_Plane_RCNN_Quarter", 9, 4, 0.044271883),
            ("ASR_EM_24L", 1, 0, 0.664410233),
            ("SS_HRViT_b1", 6, 6, 0.0),
            ("OD_D2go_FasterRCNN", 6, 0, 0.770396650),
        ],
    );
}

#[test]
fn parity_quad_deterministic_with_drops_social_interaction_a() {
    check(
        "social_interactionA",
        "Quad_4K_WS_OS_WS_OS",
        1,
        23.052654266,
        &[
            ("ES_RITNet", 42, 0, 0.884135842),
            ("GE_FBNet_C", 41, 4, 0.0),
            ("HT_hand_graph_cnn_half", 20, 2, 0.037970297),
            ("DR_RGBd_200", 19, 0, 0.0),
        ],
    );
}

#[test]
fn parity_quad_stochastic_with_drops_ar_assistant() {
    check(
        "AR_Assistant",
        "Quad_4K_WS_OS_WS_OS",
        1,
        38.451976776,
        &[
            ("KD_res8_narrow", 2, 0, 0.999920368),
            ("OD_D2go_FasterRCNN", 7, 0, 0.922678530),
            ("DE_midas_v21_small", 18, 1, 0.0),
            ("PD_Plane_RCNN_Quarter", 9, 2, 0.0),
            ("SS_HRViT_b1", 6, 2, 0.0),
        ],
    );
}

#[test]
fn determinism_same_seed_same_parity_run() {
    // the code compared with itself: a determinism check, not parity
    let a = parity("AR_Assistant", "Dual_4K_WS_OS", 1);
    let b = parity("AR_Assistant", "Dual_4K_WS_OS", 1);
    assert_eq!(a, b);
}

#[test]
fn parity_runs_700_ms_with_floor_frames_and_leave_the_tail_unlogged() {
    // VR_gaming: ES and GE at 16 ms -> floor(700/16) = 43 frames released, HT at 22 ms -> 31.
    // The run ends at the last release (688 ms for ES/GE): ES frame 42 is released then
    // and still in flight, so 42 are logged; HT's last release is 660 ms and it logs 31.
    let r = parity("VR_gaming", "Single_4K_WS", 1);
    assert_eq!(r.models[0].frames, 42);
    assert_eq!(r.models[2].frames, 31);
    assert_eq!(r.dropped, 0);
}
