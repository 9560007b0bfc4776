//! The ledger: the one owner of the agent's [`Stats`]. The driver records into it (one method
//! per kind of event); the link, the metrics, the Status handler and scenario summaries read
//! it through the methods below. No other code takes the lock.

use crate::exec::factory::PartitionSpec;
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
        let mut st = self.lock();
        let m = st.model(model);
        m.drops += 1;
        m.energy_mj += energy_mj;
    }

    pub fn completed(&self, model: &str, latency_ms: f64, met: bool, energy_mj: f64) {
        self.lock().complete(model, latency_ms, met, energy_mj);
    }

    /// A block finished on accelerator (or partition) `id`.
    pub fn block(&self, id: &str, busy_ms: f64, energy_mj: f64) {
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
        let ended: u64 = st.models.values().map(|m| m.completions + m.drops).sum();
        let arrived: u64 = st.models.values().map(|m| m.arrivals).sum();
        arrived.saturating_sub(ended) + released.saturating_sub(arrived)
    }
}
