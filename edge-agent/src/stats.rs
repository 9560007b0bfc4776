//! Counters the agent reports. Totals are monotone (a lost report loses nothing: the next
//! carries the sum) and survive a restart through the data dir ([`Stats::counters`],
//! [`Stats::restore`]); latency quantiles are per report window.
//!
//! Memory is bounded however long the agent runs cut off or standalone: latencies go into
//! fixed-size HDR histograms (µs, 3 significant digits, 1 µs ..= 1 h), never into vectors.

use crate::store::{AccCounters, Counters, ModelCounters};
use std::collections::BTreeMap;

/// The workspace's one latency histogram (µs, fixed size).
pub use edgeplane_scheduler::latency::Latencies;

#[derive(Debug, Clone, Default)]
pub struct ModelStats {
    pub arrivals: u64,
    pub completions: u64,
    pub met: u64,
    pub missed: u64,
    pub drops: u64,
    /// Requests whose client went away (the `Infer` call was dropped) before they were sent
    /// to the executor: never run, not a drop. Since start (not persisted).
    pub cancelled: u64,
    /// Requests refused because the model is not assigned here (demand all the same: the
    /// coordinator counts them into the observed rate).
    pub refused: u64,
    pub energy_mj: f64,
    /// Latencies of completions in the current report window.
    pub window: Latencies,
    /// Latencies since start, for the end-of-scenario summary.
    pub all: Latencies,
}

#[derive(Debug, Clone, Default)]
pub struct AccStats {
    pub busy_ms: f64,
    pub energy_mj: f64,
}

/// What a report says about a GPU partition besides its busy time and energy.
#[derive(Debug, Clone, Default)]
pub struct PartitionMeta {
    pub accelerator_id: String,
    pub share_pct: u32,
    pub models: Vec<String>,
    pub ready: bool,
}

/// Of the `served` models, those that can run now: a model on a GPU partition is ready once
/// one of its partitions is; a model on no partition (fixed accelerators) is ready at once.
pub fn ready_models(
    served: &[String],
    partitions: &BTreeMap<String, PartitionMeta>,
) -> Vec<String> {
    let on = |ready: bool| -> std::collections::BTreeSet<&str> {
        partitions
            .values()
            .filter(|p| p.ready == ready)
            .flat_map(|p| p.models.iter().map(String::as_str))
            .collect()
    };
    let (up, waiting) = (on(true), on(false));
    served
        .iter()
        .filter(|m| up.contains(m.as_str()) || !waiting.contains(m.as_str()))
        .cloned()
        .collect()
}

#[derive(Debug, Default)]
pub struct Stats {
    /// GPU partitions (keyed by the partition id, which is also its `accelerators` entry).
    pub partitions: BTreeMap<String, PartitionMeta>,
    pub models: BTreeMap<String, ModelStats>,
    pub accelerators: Vec<(String, AccStats)>,
    /// Scheduler time spent in `step`, and the number of decisions it made.
    pub decision_ns: u128,
    pub decisions: u64,
    pub steps: u64,
    /// Uptime of the agent's earlier processes on this data dir (restored counters were
    /// reached at it); reports carry `uptime_base_s + this process's uptime`.
    pub uptime_base_s: f64,
    /// SDRM3's tuner and Supernet controller (None for other cores).
    pub controllers: Option<crate::sched::ControllerStatus>,
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
        s.window.record_ms(latency_ms);
        s.all.record_ms(latency_ms);
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
                let (p50_ms, p99_ms) = (s.window.quantile_ms(0.5), s.window.quantile_ms(0.99));
                s.window.clear();
                ModelReport {
                    model: name.clone(),
                    arrivals: s.arrivals,
                    completions: s.completions,
                    deadlines_met: s.met,
                    deadlines_missed: s.missed,
                    drops: s.drops,
                    p50_ms,
                    p99_ms,
                    energy_j: s.energy_mj / 1000.0,
                    refused: s.refused,
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
                .map(|(id, a)| {
                    let p = self.partitions.get(id);
                    AcceleratorReport {
                        id: id.clone(),
                        busy_s: a.busy_ms / 1000.0,
                        energy_j: a.energy_mj / 1000.0,
                        accelerator_id: p.map(|p| p.accelerator_id.clone()).unwrap_or_default(),
                        share_pct: p.map_or(0, |p| p.share_pct),
                        models: p.map(|p| p.models.clone()).unwrap_or_default(),
                        ready: p.is_some_and(|p| p.ready),
                        partition: p.is_some(),
                    }
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

    /// The monotone totals, for the data dir; `uptime_s` is the total uptime they were
    /// reached at (`uptime_base_s` + `process_uptime_s`).
    pub fn counters(&self, process_uptime_s: f64) -> Counters {
        Counters {
            uptime_s: self.uptime_base_s + process_uptime_s,
            models: self
                .models
                .iter()
                .map(|(n, s)| {
                    (
                        n.clone(),
                        ModelCounters {
                            arrivals: s.arrivals,
                            completions: s.completions,
                            met: s.met,
                            missed: s.missed,
                            drops: s.drops,
                            refused: s.refused,
                            energy_mj: s.energy_mj,
                        },
                    )
                })
                .collect(),
            accelerators: self
                .accelerators
                .iter()
                .map(|(id, a)| {
                    (
                        id.clone(),
                        AccCounters {
                            busy_ms: a.busy_ms,
                            energy_mj: a.energy_mj,
                        },
                    )
                })
                .collect(),
        }
    }

    /// Continue from counters an earlier process persisted (accelerators this node no
    /// longer has are dropped; models are kept, they may come back).
    pub fn restore(&mut self, c: &Counters) {
        self.uptime_base_s = c.uptime_s.max(0.0);
        for (name, m) in &c.models {
            let s = self.model(name);
            s.arrivals += m.arrivals;
            s.completions += m.completions;
            s.met += m.met;
            s.missed += m.missed;
            s.drops += m.drops;
            s.refused += m.refused;
            s.energy_mj += m.energy_mj;
        }
        for (id, a) in &mut self.accelerators {
            if let Some(p) = c.accelerators.get(id) {
                a.busy_ms += p.busy_ms;
                a.energy_mj += p.energy_mj;
            }
        }
    }

    /// Summary as JSON (end of a scenario run).
    pub fn summary_json(&mut self) -> serde_json::Value {
        use edgeplane_scheduler::summary::{ControllerSummary, ModelSummary, ScenarioSummary};
        let mut models = Vec::new();
        let (mut frames, mut met) = (0u64, 0u64);
        for (name, s) in self.models.iter_mut() {
            frames += s.arrivals;
            met += s.met;
            models.push(ModelSummary {
                model: name.clone(),
                arrivals: s.arrivals,
                completions: s.completions,
                deadlines_met: s.met,
                deadlines_missed: s.missed,
                drops: s.drops,
                energy_mj: s.energy_mj,
                p50_ms: s.all.quantile_ms(0.5),
                p99_ms: s.all.quantile_ms(0.99),
            });
        }
        let summary = ScenarioSummary {
            frames,
            deadlines_met: met,
            deadline_met_rate: if frames == 0 {
                0.0
            } else {
                met as f64 / frames as f64
            },
            decision_overhead_us: self.overhead_us(),
            decisions: self.decisions,
            steps: self.steps,
            sdrm3: self.controllers.as_ref().map(|c| ControllerSummary {
                tuning: c.tuning,
                tuner_steps: c.tuner_steps,
                profile: c.profile.clone(),
                profile_choices: c.profile_choices,
                supernet: c.supernet,
                accuracy: c.accuracy,
            }),
            models,
            ..ScenarioSummary::default()
        };
        // the caller adds scenario, policy, clock, accelerators and released
        serde_json::to_value(summary).expect("a summary of numbers and strings serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_is_ready_once_one_of_its_partitions_is() {
        let part = |models: &[&str], ready| PartitionMeta {
            accelerator_id: "gpu0".into(),
            share_pct: 50,
            models: models.iter().map(|m| m.to_string()).collect(),
            ready,
        };
        let served: Vec<String> = ["resnet18", "resnet50", "vgg16", "ES_RITNet"]
            .iter()
            .map(|m| m.to_string())
            .collect();
        let mut parts = BTreeMap::new();
        // resnet18 moving: its new partition starts while the old one still serves
        parts.insert("p-old".to_string(), part(&["resnet18"], true));
        parts.insert("p-new".to_string(), part(&["resnet18", "resnet50"], false));
        parts.insert("p-vgg".to_string(), part(&["vgg16"], true));
        assert_eq!(
            ready_models(&served, &parts),
            vec!["resnet18", "vgg16", "ES_RITNet"],
            "resnet50 waits for its worker; ES_RITNet is on no partition (an NPU)"
        );
        parts.get_mut("p-new").unwrap().ready = true;
        assert_eq!(ready_models(&served, &parts), served);
    }

    #[test]
    fn histogram_quantiles_within_the_precision() {
        let mut h = Latencies::default();
        assert_eq!(h.quantile_ms(0.5), 0.0);
        for i in 1..=100 {
            h.record_ms(f64::from(i));
        }
        assert!(
            (h.quantile_ms(0.5) - 50.0).abs() <= 0.05,
            "{}",
            h.quantile_ms(0.5)
        );
        assert!(
            (h.quantile_ms(0.99) - 99.0).abs() <= 0.1,
            "{}",
            h.quantile_ms(0.99)
        );
        // Out of range values saturate instead of failing or growing the histogram.
        h.record_ms(1e12);
        h.record_ms(-3.0);
        assert_eq!(h.len(), 102);
    }

    #[test]
    fn memory_is_bounded_however_many_completions() {
        let mut s = Stats::new(&["npu0".into()]);
        s.complete("m", 1.0, true, 0.0);
        let before = s.models["m"].all.buckets();
        for i in 0..200_000u32 {
            s.complete("m", f64::from(i % 5000) / 10.0, true, 0.0);
        }
        // The histogram's bucket array never grows (fixed bounds): same size after 200k.
        assert_eq!(s.models["m"].all.buckets(), before);
        assert_eq!(s.models["m"].all.len(), 200_001);
    }

    #[test]
    fn counters_survive_a_restart_without_double_counting() {
        let mut a = Stats::new(&["npu0".into()]);
        a.model("m").arrivals += 5;
        a.complete("m", 2.0, true, 500.0);
        a.accelerators[0].1.busy_ms = 40.0;
        let saved = a.counters(30.0);
        let mut b = Stats::new(&["npu0".into()]);
        b.restore(&saved);
        b.model("m").arrivals += 1;
        let r = b.report(1, 0, b.uptime_base_s + 1.0);
        assert_eq!(r.models[0].arrivals, 6);
        assert_eq!(r.models[0].deadlines_met, 1);
        assert!(
            (r.uptime_s - 31.0).abs() < 1e-9,
            "uptime continues: {}",
            r.uptime_s
        );
        assert!((r.accelerators[0].busy_s - 0.04).abs() < 1e-9);
    }

    #[test]
    fn report_totals_are_monotone_and_window_resets() {
        let mut s = Stats::new(&["npu0".into()]);
        s.model("m").arrivals += 2;
        s.complete("m", 3.0, true, 1000.0);
        let r1 = s.report(1, 7, 1.0);
        assert_eq!(r1.models[0].deadlines_met, 1);
        assert!(
            (r1.models[0].p50_ms - 3.0).abs() < 0.01,
            "{}",
            r1.models[0].p50_ms
        );
        assert_eq!(r1.models[0].energy_j, 1.0);
        let r2 = s.report(2, 7, 2.0);
        assert_eq!(r2.models[0].deadlines_met, 1, "totals persist");
        assert_eq!(r2.models[0].p50_ms, 0.0, "window reset");
    }
}
