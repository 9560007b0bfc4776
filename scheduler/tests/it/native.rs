//! The native simulator: determinism, dynamics, tuner, Supernet.

use edgeplane_scheduler::{sim, Catalog, SimConfig};

fn run(
    sc: &str,
    hw: &str,
    p: &str,
    f: impl FnOnce(&mut SimConfig),
) -> edgeplane_scheduler::SimResult {
    let mut c = SimConfig::new(sc, hw, p);
    c.duration_ms = 1000.0;
    f(&mut c);
    sim::run(Catalog::embedded(), &c).unwrap()
}

#[test]
fn same_seed_same_result_other_seed_other_draws() {
    let a = run("AR_Assistant", "Dual_4K_WS_OS", "sdrm3", |c| c.seed = 7);
    let b = run("AR_Assistant", "Dual_4K_WS_OS", "sdrm3", |c| c.seed = 7);
    assert_eq!(a.report, b.report);
    let c = run("AR_Assistant", "Dual_4K_WS_OS", "sdrm3", |c| c.seed = 8);
    assert_ne!(a.report.frames, 0);
    assert_ne!(
        (a.report.frames, a.report.dropped, a.report.late),
        (c.report.frames, c.report.dropped, c.report.late),
        "the cascade probability draws depend on the seed"
    );
}

#[test]
fn every_released_frame_ends_completed_or_dropped() {
    for p in edgeplane_scheduler::POLICIES {
        let r = run("social_interactionA", "Dual_4K_WS_OS", p, |_| {});
        for f in &r.frames {
            assert!(
                f.dropped ^ f.done_ms.is_some(),
                "{p}: frame {f:?} neither completed nor dropped"
            );
        }
    }
}

#[test]
fn sdrm3_beats_latency_greedy_on_an_overloaded_heterogeneous_system() {
    let s = run("social_interactionA", "Dual_4K_WS_OS", "sdrm3", |_| {});
    let x = run("social_interactionA", "Dual_4K_WS_OS", "xrbench", |_| {});
    assert!(
        s.report.uxcost < x.report.uxcost,
        "{} vs {}",
        s.report.uxcost,
        x.report.uxcost
    );
}

#[test]
fn early_exits_cut_energy() {
    let full = run("VR_gaming", "Dual_4K_WS_OS", "edf", |_| {});
    let skip = run("VR_gaming", "Dual_4K_WS_OS", "edf", |c| {
        c.early_exit_prob = 0.5
    });
    assert!(skip.report.energy_mj < full.report.energy_mj);
}

#[test]
fn phases_switch_models_and_restart_the_tuner() {
    let r = run(
        "social_interactionA,AR_gaming",
        "Dual_4K_WS_OS",
        "sdrm3",
        |c| {
            c.duration_ms = 3000.0;
            c.tune = true;
        },
    );
    let names = &r.model_names;
    let first_phase_only: Vec<usize> = (0..names.len())
        .filter(|&m| {
            r.frames
                .iter()
                .filter(|f| f.model == m)
                .all(|f| f.release_ms < 1500.0)
        })
        .collect();
    assert!(
        !first_phase_only.is_empty(),
        "some models only run in the first phase"
    );
    assert!(!r.tuner_log.is_empty(), "the tuner logged steps");
    // step numbering restarts at the phase change
    let restarts = r
        .tuner_log
        .windows(2)
        .filter(|w| w[1].step <= w[0].step)
        .count();
    assert!(
        restarts >= 1,
        "{:?}",
        r.tuner_log
            .iter()
            .map(|s| (s.step, s.time_ms))
            .collect::<Vec<_>>()
    );
}

#[test]
fn tuner_converges_within_five_steps() {
    let r = run("AR_gaming", "Dual_4K_WS_OS", "sdrm3", |c| {
        c.duration_ms = 4000.0;
        c.tune = true;
    });
    let steps = r.tuner_steps_to_converge.expect("converged");
    assert!(steps <= 5, "converged after {steps} steps");
}

#[test]
fn supernet_steps_down_under_overload() {
    let r = run("social_interactionA", "Dual_4K_WS_OS", "sdrm3", |c| {
        c.duration_ms = 3000.0;
        c.supernet = true;
    });
    assert!(r.width_switches > 0);
    assert!(r.report.mean_accuracy < 1.0 && r.report.mean_accuracy >= 0.93);
    let plain = run("social_interactionA", "Dual_4K_WS_OS", "sdrm3", |c| {
        c.duration_ms = 3000.0
    });
    assert!(
        r.report.miss_rate < plain.report.miss_rate,
        "{} vs {}",
        r.report.miss_rate,
        plain.report.miss_rate
    );
}

#[test]
fn bad_inputs_name_the_field() {
    let cat = Catalog::embedded();
    let mut c = SimConfig::new("VR_gaming", "Nope", "sdrm3");
    let e = sim::run(cat, &c).err().unwrap().to_string();
    assert!(e.contains("hardware") && e.contains("Dual_4K_WS_OS"), "{e}");
    c.hardware = "Dual_4K_WS_OS".into();
    c.duration_ms = -1.0;
    assert!(sim::run(cat, &c)
        .err()
        .unwrap()
        .to_string()
        .contains("duration_ms"));
}
