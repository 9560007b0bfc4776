//! Counters the agent reports. Totals are monotone since process start (a lost report loses
//! nothing: the next carries the sum); latency samples are per report window.

use std::collections::BTreeMap;

#[derive(Debug, Clone, Default)]
pub struct ModelStats {
    pub arrivals: u64,
    pub completions: u64,
    pub met: u64,
    pub missed: u64,
    pub drops: u64,
    pub energy_mj: f64,
    /// Latencies (ms) of completions in the current window.
    pub window_latencies: Vec<f64>,
    /// Every latency since start, for the end-of-scenario summary (bounded).
    pub all_latencies: Vec<f64>,
}

#[derive(Debug, Clone, Default)]
pub struct AccStats {
    pub busy_ms: f64,
    pub energy_mj: f64,
}

#[derive(Debug, Default)]
pub struct Stats {
    pub models: BTreeMap<String, ModelStats>,
    pub accelerators: Vec<(String, AccStats)>,
    /// Scheduler time spent in `step`, and the number of decisions it made.
    pub decision_ns: u128,
    pub decisions: u64,
    pub steps: u64,
}

const MAX_SAMPLES: usize = 1_000_000;

/// The q-quantile (0..=1) of `v` by nearest rank; 0 when empty.
pub fn quantile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

impl Stats {
    pub fn new(acc_ids: &[String]) -> Self {
        Stats {
            accelerators: acc_ids
                .iter()
                .map(|id| (id.clone(), AccStats::default()))
                .collect(),
            ..Default::default()
        }
    }

    pub fn model(&mut self, m: &str) -> &mut ModelStats {
        self.models.entry(m.to_string()).or_default()
    }

    pub fn complete(&mut self, m: &str, latency_ms: f64, met: bool, energy_mj: f64) {
        let s = self.model(m);
        s.completions += 1;
        if met {
            s.met += 1;
        } else {
            s.missed += 1;
        }
        s.energy_mj += energy_mj;
        s.window_latencies.push(latency_ms);
        if s.all_latencies.len() < MAX_SAMPLES {
            s.all_latencies.push(latency_ms);
        }
    }

    /// Build a report and start a new latency window.
    pub fn report(
        &mut self,
        seq: u64,
        epoch: u64,
        uptime_s: f64,
    ) -> edgeplane_proto::agent::Report {
        use edgeplane_proto::agent::{AcceleratorReport, ModelReport, Report};
        let models = self
            .models
            .iter_mut()
            .map(|(name, s)| {
                let mut w = std::mem::take(&mut s.window_latencies);
                ModelReport {
                    model: name.clone(),
                    arrivals: s.arrivals,
                    completions: s.completions,
                    deadlines_met: s.met,
                    deadlines_missed: s.missed,
                    drops: s.drops,
                    p50_ms: quantile(&mut w, 0.5),
                    p99_ms: quantile(&mut w, 0.99),
                    energy_j: s.energy_mj / 1000.0,
                }
            })
            .collect();
        Report {
            seq,
            assignment_epoch: epoch,
            uptime_s,
            models,
            accelerators: self
                .accelerators
                .iter()
                .map(|(id, a)| AcceleratorReport {
                    id: id.clone(),
                    busy_s: a.busy_ms / 1000.0,
                    energy_j: a.energy_mj / 1000.0,
                })
                .collect(),
            decision_overhead_us: self.overhead_us(),
        }
    }

    /// Mean scheduler time per decision, µs.
    pub fn overhead_us(&self) -> f64 {
        if self.decisions == 0 {
            0.0
        } else {
            self.decision_ns as f64 / self.decisions as f64 / 1000.0
        }
    }

    /// Summary as JSON (end of a scenario run).
    pub fn summary_json(&mut self) -> serde_json::Value {
        let mut per_model = Vec::new();
        let (mut frames, mut met) = (0u64, 0u64);
        for (name, s) in self.models.iter_mut() {
            frames += s.arrivals;
            met += s.met;
            per_model.push(serde_json::json!({
                "model": name,
                "arrivals": s.arrivals,
                "completions": s.completions,
                "deadlines_met": s.met,
                "deadlines_missed": s.missed,
                "drops": s.drops,
                "energy_mj": s.energy_mj,
                "p50_ms": quantile(&mut s.all_latencies, 0.5),
                "p99_ms": quantile(&mut s.all_latencies, 0.99),
            }));
        }
        serde_json::json!({
            "frames": frames,
            "deadlines_met": met,
            "deadline_met_rate": if frames == 0 { 0.0 } else { met as f64 / frames as f64 },
            "decision_overhead_us": self.overhead_us(),
            "decisions": self.decisions,
            "steps": self.steps,
            "models": per_model,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_by_nearest_rank() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&mut v, 0.5), 50.0);
        assert_eq!(quantile(&mut v, 0.99), 99.0);
        assert_eq!(quantile(&mut [], 0.5), 0.0);
    }

    #[test]
    fn report_totals_are_monotone_and_window_resets() {
        let mut s = Stats::new(&["npu0".into()]);
        s.model("m").arrivals += 2;
        s.complete("m", 3.0, true, 1000.0);
        let r1 = s.report(1, 7, 1.0);
        assert_eq!(r1.models[0].deadlines_met, 1);
        assert_eq!(r1.models[0].p50_ms, 3.0);
        assert_eq!(r1.models[0].energy_j, 1.0);
        let r2 = s.report(2, 7, 2.0);
        assert_eq!(r2.models[0].deadlines_met, 1, "totals persist");
        assert_eq!(r2.models[0].p50_ms, 0.0, "window reset");
    }
}
