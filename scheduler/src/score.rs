//! Scoring: the XRBench score (RT, energy, QoE per model and overall) and UXCost (DESIGN §3.3).
//!
//! The XRBench score is computed exactly as the artifact's `ScoringModule::ComputeScore`
//! does (`configs/xrbench/README.md` §3), so that parity runs match it to the last float bit:
//! - only *logged* frames count (completed or dropped; work in flight at the end of a run is
//!   not logged, so it is neither in the numerator nor in the divisor);
//! - RT = 1 / (1 + expf(k · (done − deadline))) in 32-bit floats, EN = (E_max − E) / E_max;
//! - model score = Σ_completed RT·EN / logged frames × QoE, with QoE = 1 − drop rate
//!   (both factors: a dropped frame adds nothing to the sum *and* lowers QoE);
//! - overall = 100 × mean of the model scores over the models that logged a frame, summed in
//!   the order in which models first logged a frame (float addition is not associative).
//!
//! A Supernet sub-network's accuracy multiplies its frame's RT·EN (1.0 for full networks, so
//! parity runs are unaffected).

use serde::Serialize;

/// XRBench real-time score steepness (per ms).
pub const RT_K: f64 = 15.0;
/// XRBench energy-score normaliser, in the artifact's "mJ".
pub const E_MAX_MJ: f64 = 1500.0;

/// What happened to one released frame.
#[derive(Debug, Clone, Serialize)]
pub struct FrameRecord {
    pub model: usize,
    pub frame: u64,
    pub release_ms: f64,
    pub deadline_ms: f64,
    /// Completion time, if it completed.
    pub done_ms: Option<f64>,
    pub dropped: bool,
    /// Energy actually executed for this frame (also for a dropped frame: wasted work).
    pub energy_mj: f64,
    /// Accuracy of the (sub-)network that served it (1.0 = full network).
    pub accuracy: f64,
    /// E*(frame): the energy this very frame needs on its most energy-efficient allowed
    /// accelerator (its own width and exit layer), charged when it is dropped (DESIGN §3.3).
    pub e_star_mj: f64,
}

/// Per-model scores and counts.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ModelReport {
    pub model: String,
    /// Logged frames (completed + dropped).
    pub frames: u64,
    pub completed: u64,
    pub dropped: u64,
    pub late: u64,
    /// Mean RT score of the completed frames.
    pub rt_score: f64,
    /// Mean energy score of the completed frames.
    pub energy_score: f64,
    /// XRBench's QoE ("UX") score: 1 − drop rate (1 − 0 when nothing was dropped).
    pub qoe_score: f64,
    /// Mean accuracy of the completed frames (Supernet; 1.0 = full networks).
    pub accuracy: f64,
    /// Σ_completed RT·EN·accuracy / frames × QoE.
    pub model_score: f64,
    pub energy_mj: f64,
}

/// The scores of one run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub overall_score: f64,
    pub uxcost: f64,
    /// Ē: mean energy per frame, dropped frames charged their E* (DESIGN §3.3).
    pub energy_per_frame_mj: f64,
    /// Total executed energy.
    pub energy_mj: f64,
    pub miss_rate: f64,
    pub frames: u64,
    pub dropped: u64,
    pub late: u64,
    pub mean_accuracy: f64,
    pub models: Vec<ModelReport>,
}

#[derive(Default, Clone)]
struct ModelAcc {
    frames: u64,
    dropped: u64,
    completed: u64,
    late: u64,
    /// Σ RT·EN(·accuracy) in f32, in log order, as the artifact accumulates it.
    sum: f32,
    rt: f64,
    en: f64,
    acc: f64,
    energy: f64,
}

/// Score a run. Only logged frames (completed or dropped) count; a record that is neither is
/// work still in flight and is left out, as the artifact leaves it out.
pub fn score(names: &[String], frames: &[FrameRecord]) -> Report {
    let mut per = vec![ModelAcc::default(); names.len()];
    let mut first_logged: Vec<usize> = Vec::new();
    let (mut executed, mut charged, mut logged) = (0.0f64, 0.0f64, 0u64);
    for f in frames {
        if !(f.dropped || f.done_ms.is_some()) {
            continue;
        }
        let a = &mut per[f.model];
        if a.frames == 0 {
            first_logged.push(f.model);
        }
        a.frames += 1;
        a.energy += f.energy_mj;
        logged += 1;
        executed += f.energy_mj;
        if f.dropped {
            a.dropped += 1;
            charged += f.e_star_mj;
            continue;
        }
        let done = f.done_ms.unwrap_or(f.deadline_ms);
        a.completed += 1;
        if done > f.deadline_ms + 1e-9 {
            a.late += 1;
        }
        let r = rt_score_f32(done, f.deadline_ms);
        let e = energy_score_f32(f.energy_mj);
        a.sum += r * e * f.accuracy as f32;
        a.rt += r as f64;
        a.en += e as f64;
        a.acc += f.accuracy;
    }
    let model_score = |a: &ModelAcc| -> f32 {
        if a.frames == 0 {
            return 0.0;
        }
        let drop_rate = a.dropped as f32 / a.frames as f32;
        (a.sum / a.frames as f32) * (1.0 - drop_rate)
    };
    let mut overall = 0f32;
    for &m in &first_logged {
        overall += model_score(&per[m]);
    }
    if !first_logged.is_empty() {
        overall /= first_logged.len() as f32;
    }
    overall *= 100.0;
    let models: Vec<ModelReport> = names
        .iter()
        .zip(&per)
        .map(|(name, a)| {
            let c = a.completed.max(1) as f64;
            ModelReport {
                model: name.clone(),
                frames: a.frames,
                completed: a.completed,
                dropped: a.dropped,
                late: a.late,
                rt_score: a.rt / c,
                energy_score: a.en / c,
                qoe_score: if a.frames == 0 {
                    0.0
                } else {
                    (1.0 - a.dropped as f32 / a.frames as f32) as f64
                },
                accuracy: if a.completed == 0 { 0.0 } else { a.acc / c },
                model_score: model_score(a) as f64,
                energy_mj: a.energy,
            }
        })
        .collect();
    let dropped = per.iter().map(|a| a.dropped).sum::<u64>();
    let late = per.iter().map(|a| a.late).sum::<u64>();
    let completed = per.iter().map(|a| a.completed).sum::<u64>();
    let (ebar, miss, ux) = uxcost(logged, dropped, late, executed, charged);
    Report {
        overall_score: overall as f64,
        uxcost: ux,
        energy_per_frame_mj: ebar,
        energy_mj: executed,
        miss_rate: miss,
        frames: logged,
        dropped,
        late,
        mean_accuracy: if completed == 0 {
            0.0
        } else {
            per.iter().map(|a| a.acc).sum::<f64>() / completed as f64
        },
        models,
    }
}

/// UXCost = Ē × max(Miss, ε), ε = 1/(2N). Returns (Ē, Miss, UXCost).
pub fn uxcost(
    n: u64,
    dropped: u64,
    late: u64,
    executed_mj: f64,
    dropped_charge_mj: f64,
) -> (f64, f64, f64) {
    if n == 0 {
        return (0.0, 0.0, 0.0);
    }
    let nf = n as f64;
    let ebar = (executed_mj + dropped_charge_mj) / nf;
    let miss = (dropped + late) as f64 / nf;
    (ebar, miss, ebar * miss.max(1.0 / (2.0 * nf)))
}

/// RT = 1 / (1 + exp(k (t_done − deadline))), times in ms (f64, for analyses).
pub fn rt_score(done_ms: f64, deadline_ms: f64) -> f64 {
    1.0 / (1.0 + (RT_K * (done_ms - deadline_ms)).exp())
}

/// RT as the artifact computes it: `1 / (1 + expf(k · delay))` with `delay = done − deadline`,
/// every operand a 32-bit float (`f32::exp` is the C library's `expf` on Linux).
pub fn rt_score_f32(done_ms: f64, deadline_ms: f64) -> f32 {
    let delay = done_ms as f32 - deadline_ms as f32;
    1.0f32 / (1.0f32 + (RT_K as f32 * delay).exp())
}

/// EN = (E_max − E) / E_max.
pub fn energy_score(e_mj: f64) -> f64 {
    (E_MAX_MJ - e_mj) / E_MAX_MJ
}

/// EN as the artifact computes it: the logged energy is a float widened to double, the
/// quotient is taken in double and stored as a float.
pub fn energy_score_f32(e_mj: f64) -> f32 {
    let e = e_mj as f32 as f64;
    let max = E_MAX_MJ as f32 as f64;
    ((max - e) / max) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fr(model: usize, deadline: f64, done: Option<f64>, dropped: bool, e: f64) -> FrameRecord {
        FrameRecord {
            model,
            frame: 0,
            release_ms: 0.0,
            deadline_ms: deadline,
            done_ms: done,
            dropped,
            energy_mj: e,
            accuracy: 1.0,
            e_star_mj: 8.0,
        }
    }

    #[test]
    fn uxcost_hand_computed_late_served_frames_are_misses() {
        // 4 frames: 2 on time (10 mJ each), 1 served late (10 mJ), 1 dropped after wasting
        // 4 mJ whose own E* is 8.
        let frames = vec![
            fr(0, 10.0, Some(5.0), false, 10.0),
            fr(0, 20.0, Some(15.0), false, 10.0),
            fr(0, 30.0, Some(31.0), false, 10.0),
            fr(0, 40.0, None, true, 4.0),
        ];
        let r = score(&["m".into()], &frames);
        // Ē = (34 + 8) / 4 = 10.5; Miss = (1 dropped + 1 late) / 4; UXCost = 5.25
        assert!((r.energy_per_frame_mj - 10.5).abs() < 1e-12);
        assert!((r.miss_rate - 0.5).abs() < 1e-12);
        assert!((r.uxcost - 5.25).abs() < 1e-12);
        assert_eq!((r.dropped, r.late, r.frames), (1, 1, 4));
    }

    #[test]
    fn a_dropped_frame_is_charged_its_own_e_star() {
        // an early-exit frame (own E* 3 mJ) and a full frame (own E* 8 mJ) dropped
        let mut a = fr(0, 10.0, None, true, 0.0);
        a.e_star_mj = 3.0;
        let b = fr(0, 20.0, None, true, 1.0);
        let r = score(&["m".into()], &[a, b]);
        // Ē = (1 + 3 + 8) / 2 = 6
        assert!((r.energy_per_frame_mj - 6.0).abs() < 1e-12);
        assert!((r.uxcost - 6.0).abs() < 1e-12);
    }

    #[test]
    fn xrbench_score_with_drops_hand_computed() {
        // Model A logs 4 frames: one done 11 ms early (RT = 1/(1+expf(-165)) = 1 exactly in
        // f32), one done exactly at its deadline (RT = 1/2), both 300 mJ (EN = 1200/1500 =
        // 0.8), and two dropped; a fifth frame is still in flight at the end and is not
        // logged. Model B logs 2 frames done early at 0 mJ (RT·EN = 1).
        // A: Σ RT·EN = 0.8 + 0.4 = 1.2; ÷ 4 logged frames = 0.3; × QoE (1 − 2/4) = 0.15.
        // B: 2 / 2 × 1 = 1. Overall = 100 × (0.15 + 1) / 2 = 57.5.
        let frames = vec![
            fr(0, 16.0, Some(5.0), false, 300.0),
            fr(1, 16.0, Some(1.0), false, 0.0),
            fr(0, 32.0, Some(32.0), false, 300.0),
            fr(0, 48.0, None, true, 0.0),
            fr(0, 64.0, None, true, 0.0),
            fr(1, 32.0, Some(17.0), false, 0.0),
            fr(0, 80.0, None, false, 0.0),
        ];
        let r = score(&["A".into(), "B".into()], &frames);
        let a = &r.models[0];
        assert_eq!((a.frames, a.completed, a.dropped), (4, 2, 2));
        assert!((a.qoe_score - 0.5).abs() < 1e-6, "QoE {}", a.qoe_score);
        assert!((a.model_score - 0.15).abs() < 1e-6, "A {}", a.model_score);
        assert!((r.models[1].model_score - 1.0).abs() < 1e-6);
        assert!((r.models[1].qoe_score - 1.0).abs() < 1e-6);
        // f32 resolution at 57.5 is 3.8e-6
        assert!((r.overall_score - 57.5).abs() < 1e-5, "{}", r.overall_score);
        assert_eq!(r.frames, 6, "the in-flight frame is not logged");
    }

    #[test]
    fn a_model_that_drops_everything_scores_zero_and_still_counts() {
        let frames = vec![
            fr(0, 16.0, Some(1.0), false, 0.0),
            fr(1, 16.0, None, true, 0.0),
        ];
        let r = score(&["A".into(), "B".into()], &frames);
        assert_eq!(r.models[1].qoe_score, 0.0);
        assert!((r.overall_score - 50.0).abs() < 1e-5, "{}", r.overall_score);
    }

    #[test]
    fn perfect_run_uses_epsilon_and_dropping_everything_is_far_worse() {
        let served: Vec<_> = (0..10)
            .map(|i| {
                fr(
                    0,
                    10.0 * (i + 1) as f64,
                    Some(10.0 * i as f64 + 1.0),
                    false,
                    8.0,
                )
            })
            .collect();
        let dropped: Vec<_> = (0..10)
            .map(|i| fr(0, 10.0 * (i + 1) as f64, None, true, 0.0))
            .collect();
        let a = score(&["m".into()], &served);
        let b = score(&["m".into()], &dropped);
        assert!((a.uxcost - 8.0 / 20.0).abs() < 1e-12, "ε = 1/(2N)");
        assert!(b.uxcost > 10.0 * a.uxcost, "{} vs {}", b.uxcost, a.uxcost);
        assert_eq!(b.overall_score, 0.0);
    }

    #[test]
    fn rt_score_in_f32_matches_the_closed_form() {
        // delay 0.125 ms (exact in f32): 1 / (1 + e^1.875) = 0.132964240197829…
        assert!((rt_score_f32(10.125, 10.0) as f64 - 0.132_964_240_197_829).abs() < 1e-7);
        assert_eq!(rt_score_f32(10.0, 10.0), 0.5);
        assert_eq!(rt_score_f32(0.0, 10.0), 1.0);
        assert!((rt_score(10.0, 10.0) - 0.5).abs() < 1e-12);
        // EN: 1200 / 1500
        assert!((energy_score_f32(300.0) as f64 - 0.8).abs() < 1e-7);
    }
}
