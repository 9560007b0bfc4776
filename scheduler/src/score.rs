//! Scoring: the XRBench score (RT, energy, QoE per model and overall) and UXCost (DESIGN §3.3).

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
}

/// Per-model scores and counts.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ModelReport {
    pub model: String,
    pub frames: u64,
    pub completed: u64,
    pub dropped: u64,
    pub late: u64,
    pub rt_score: f64,
    pub energy_score: f64,
    pub qoe_score: f64,
    pub model_score: f64,
    pub energy_mj: f64,
}

/// The scores of one run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub overall_score: f64,
    pub uxcost: f64,
    /// Ē: mean energy per frame, dropped frames charged E* (DESIGN §3.3).
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

/// Score a run. `e_star[m]` is model m's whole-model energy on its most energy-efficient
/// accelerator: a dropped frame is charged that much on top of what it already wasted, so
/// dropping never looks cheaper than serving.
pub fn score(names: &[String], e_star: &[f64], frames: &[FrameRecord]) -> Report {
    let mut models = Vec::new();
    for (m, name) in names.iter().enumerate() {
        let fr: Vec<&FrameRecord> = frames.iter().filter(|f| f.model == m).collect();
        let n = fr.len() as u64;
        let dropped = fr.iter().filter(|f| f.dropped).count() as u64;
        let done: Vec<&&FrameRecord> = fr.iter().filter(|f| f.done_ms.is_some()).collect();
        let late = done
            .iter()
            .filter(|f| f.done_ms.unwrap() > f.deadline_ms + 1e-9)
            .count() as u64;
        let (mut rt, mut en, mut qoe, mut prod) = (0.0, 0.0, 0.0, 0.0);
        for f in &done {
            let r = rt_score(f.done_ms.unwrap(), f.deadline_ms);
            let e = energy_score(f.energy_mj);
            rt += r;
            en += e;
            qoe += f.accuracy;
            prod += r * e * f.accuracy;
        }
        let c = done.len().max(1) as f64;
        let drop_rate = if n == 0 {
            0.0
        } else {
            dropped as f64 / n as f64
        };
        models.push(ModelReport {
            model: name.clone(),
            frames: n,
            completed: done.len() as u64,
            dropped,
            late,
            rt_score: rt / c,
            energy_score: en / c,
            qoe_score: if done.is_empty() { 0.0 } else { qoe / c },
            model_score: prod / c * (1.0 - drop_rate),
            energy_mj: fr.iter().map(|f| f.energy_mj).sum(),
        });
    }
    let scored: Vec<&ModelReport> = models.iter().filter(|m| m.frames > 0).collect();
    let overall =
        100.0 * scored.iter().map(|m| m.model_score).sum::<f64>() / scored.len().max(1) as f64;
    let (n, dropped, late) = (
        frames.len() as u64,
        models.iter().map(|m| m.dropped).sum::<u64>(),
        models.iter().map(|m| m.late).sum::<u64>(),
    );
    let executed: f64 = frames.iter().map(|f| f.energy_mj).sum();
    let charged: f64 = frames
        .iter()
        .filter(|f| f.dropped)
        .map(|f| e_star[f.model])
        .sum();
    let (ebar, miss, ux) = uxcost(n, dropped, late, executed, charged);
    let acc: f64 = frames
        .iter()
        .filter(|f| f.done_ms.is_some())
        .map(|f| f.accuracy)
        .sum();
    let done = frames.iter().filter(|f| f.done_ms.is_some()).count();
    Report {
        overall_score: overall,
        uxcost: ux,
        energy_per_frame_mj: ebar,
        energy_mj: executed,
        miss_rate: miss,
        frames: n,
        dropped,
        late,
        mean_accuracy: if done == 0 { 0.0 } else { acc / done as f64 },
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

/// RT = 1 / (1 + exp(k (t_done − deadline))), times in ms.
pub fn rt_score(done_ms: f64, deadline_ms: f64) -> f64 {
    1.0 / (1.0 + (RT_K * (done_ms - deadline_ms)).exp())
}

/// EN = (E_max − E) / E_max.
pub fn energy_score(e_mj: f64) -> f64 {
    (E_MAX_MJ - e_mj) / E_MAX_MJ
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
        }
    }

    #[test]
    fn uxcost_hand_computed() {
        // 4 frames: 2 on time (10 mJ each), 1 late (10 mJ), 1 dropped after wasting 4 mJ, E* = 8.
        let frames = vec![
            fr(0, 10.0, Some(5.0), false, 10.0),
            fr(0, 20.0, Some(15.0), false, 10.0),
            fr(0, 30.0, Some(31.0), false, 10.0),
            fr(0, 40.0, None, true, 4.0),
        ];
        let r = score(&["m".into()], &[8.0], &frames);
        // Ē = (34 + 8) / 4 = 10.5; Miss = 2/4; UXCost = 5.25
        assert!((r.energy_per_frame_mj - 10.5).abs() < 1e-12);
        assert!((r.miss_rate - 0.5).abs() < 1e-12);
        assert!((r.uxcost - 5.25).abs() < 1e-12);
        assert_eq!((r.dropped, r.late, r.frames), (1, 1, 4));
        // model score: mean over 3 completed of RT·EN, × (1 − 1/4)
        let expect: f64 = [(5.0, 10.0), (15.0, 20.0), (31.0, 30.0)]
            .iter()
            .map(|&(d, dl)| rt_score(d, dl) * energy_score(10.0))
            .sum::<f64>()
            / 3.0
            * 0.75;
        assert!((r.models[0].model_score - expect).abs() < 1e-12);
        assert!((r.overall_score - 100.0 * expect).abs() < 1e-9);
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
        let a = score(&["m".into()], &[8.0], &served);
        let b = score(&["m".into()], &[8.0], &dropped);
        assert!((a.uxcost - 8.0 / 20.0).abs() < 1e-12, "ε = 1/(2N)");
        assert!(b.uxcost > 10.0 * a.uxcost, "{} vs {}", b.uxcost, a.uxcost);
        assert_eq!(b.overall_score, 0.0);
    }

    #[test]
    fn rt_score_is_half_at_deadline() {
        assert!((rt_score(10.0, 10.0) - 0.5).abs() < 1e-12);
        assert!(rt_score(0.0, 10.0) > 0.999);
    }
}
