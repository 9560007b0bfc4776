//! The ledger: the one owner of the agent's [`Stats`]. The driver records into it (one method
//! per kind of event); the link, the metrics, the Status handler and scenario summaries read
//! it through the methods below. No other code takes the lock.

use crate::exec::factory::PartitionSpec;
use crate::figures::{amount_or_zero, Figure};
use crate::sched::ControllerStatus;
use crate::stats::{AccStats, PartitionMeta, Stats};
use crate::store::Counters;
use std::sync::{Mutex, MutexGuard};

#[derive(Debug, Default)]
pub struct Ledger(Mutex<Stats>);

impl Ledger {
    pub fn new(stats: Stats) -> Ledger {
        Ledger(Mutex::new(stats))
    }

    fn lock(&self) -> MutexGuard<'_, Stats> {
        self.0.lock().expect("ledger lock")
    }

    /// A read of the stats (metrics exposition, tests).
    pub fn read<R>(&self, f: impl FnOnce(&Stats) -> R) -> R {
        f(&self.lock())
    }

    pub fn arrival(&self, model: &str) {
        self.lock().model(model).arrivals += 1;
    }

    /// A request for a model not assigned here (demand all the same).
    pub fn refused(&self, model: &str) {
        self.lock().model(model).refused += 1;
    }

    /// A job that did not complete, with the energy it spent.
    pub fn dropped(&self, model: &str, energy_mj: f64) {
        let energy_mj = amount_or_zero(Figure::EnergyMj, energy_mj);
        let mut st = self.lock();
        let m = st.model(model);
        m.drops += 1;
        m.energy_mj += energy_mj;
    }

    /// A job whose client went away before it was sent to the executor (never ran).
    pub fn cancelled(&self, model: &str) {
        self.lock().model(model).cancelled += 1;
    }

    /// A completed job. Figures are checked first: a NaN, infinite or negative one is counted
    /// as 0 (with a warning), so no counter ever holds NaN (serialised as `null`).
    pub fn completed(&self, model: &str, latency_ms: f64, met: bool, energy_mj: f64) {
        let latency_ms = amount_or_zero(Figure::LatencyMs, latency_ms);
        let energy_mj = amount_or_zero(Figure::EnergyMj, energy_mj);
        self.lock().complete(model, latency_ms, met, energy_mj);
    }

    /// A block finished on accelerator (or partition) `id`.
    pub fn block(&self, id: &str, busy_ms: f64, energy_mj: f64) {
        let busy_ms = amount_or_zero(Figure::LatencyMs, busy_ms);
        let energy_mj = amount_or_zero(Figure::EnergyMj, energy_mj);
        let mut st = self.lock();
        if let Some((_, a)) = st.accelerators.iter_mut().find(|(x, _)| x == id) {
            a.busy_ms += busy_ms;
            a.energy_mj += energy_mj;
        }
    }

    /// One decision round: the controllers' state, the time the core took and its actions.
    pub fn round(&self, controllers: Option<ControllerStatus>, spent_ns: u128, actions: usize) {
        let mut st = self.lock();
        st.controllers = controllers;
        st.steps += 1;
        if actions > 0 {
            st.decision_ns += spent_ns;
            st.decisions += actions as u64;
        }
    }

    pub fn partition_started(&self, spec: &PartitionSpec) {
        let mut st = self.lock();
        st.accelerators.push((spec.id.clone(), AccStats::default()));
        st.partitions.insert(
            spec.id.clone(),
            PartitionMeta {
                accelerator_id: spec.accelerator_id.clone(),
                share_pct: spec.share_pct,
                models: spec.models.clone(),
                ready: false,
            },
        );
    }

    pub fn partition_ready(&self, id: &str) {
        if let Some(p) = self.lock().partitions.get_mut(id) {
            p.ready = true;
        }
    }

    pub fn partition_stopped(&self, id: &str) {
        let mut st = self.lock();
        st.accelerators.retain(|(x, _)| x != id);
        st.partitions.remove(id);
    }

    /// A report to the coordinator (starts a new latency window) and the counters to persist
    /// with it, taken together.
    pub fn report(
        &self,
        seq: u64,
        epoch: u64,
        process_uptime_s: f64,
    ) -> (edgeplane_proto::agent::Report, Counters) {
        let mut st = self.lock();
        let uptime = st.uptime_base_s + process_uptime_s;
        let counters = st.counters(process_uptime_s);
        (st.report(seq, epoch, uptime), counters)
    }

    pub fn counters(&self, process_uptime_s: f64) -> Counters {
        self.lock().counters(process_uptime_s)
    }

    pub fn summary_json(&self) -> serde_json::Value {
        self.lock().summary_json()
    }

    /// Of the `served` models, those that can run now ([`crate::stats::ready_models`]).
    pub fn ready_models(&self, served: &[String]) -> Vec<String> {
        crate::stats::ready_models(served, &self.lock().partitions)
    }

    /// Jobs not yet ended of the `released` a source submitted (not arrived, or arrived and
    /// neither completed nor dropped).
    pub fn pending(&self, released: u64) -> u64 {
        let st = self.lock();
        let ended: u64 = st
            .models
            .values()
            .map(|m| m.completions + m.drops + m.cancelled)
            .sum();
        let arrived: u64 = st.models.values().map(|m| m.arrivals).sum();
        arrived.saturating_sub(ended) + released.saturating_sub(arrived)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nan_figures_are_refused_and_persisted_counters_hold_no_null() {
        let l = Ledger::new(Stats::new(&["cpu0".to_string()]));
        l.arrival("m");
        l.completed("m", f64::NAN, true, f64::NAN);
        l.arrival("m");
        l.completed("m", 4.0, true, 2.0);
        l.block("cpu0", f64::INFINITY, f64::NAN);
        l.block("cpu0", 4.0, 2.0);
        l.arrival("m");
        l.dropped("m", -1.0);
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::DataDir::open(dir.path()).unwrap();
        store.save_counters(&l.counters(1.0)).unwrap();
        let mut seen = 0;
        for e in std::fs::read_dir(dir.path()).unwrap() {
            let p = e.unwrap().path();
            if p.is_file() {
                let t = std::fs::read_to_string(&p).unwrap_or_default();
                assert!(
                    !t.contains("null") && !t.contains("NaN"),
                    "{}: {t}",
                    p.display()
                );
                seen += 1;
            }
        }
        assert!(seen > 0, "counters.json was written");
        // hand count: energy 0 (NaN refused) + 2 + 0 (negative refused) = 2 mJ
        let (energy, busy) = l.read(|s| {
            (
                s.models.values().map(|m| m.energy_mj).sum::<f64>(),
                s.accelerators[0].1.busy_ms,
            )
        });
        assert_eq!(energy, 2.0);
        assert_eq!(busy, 4.0);
    }
}
