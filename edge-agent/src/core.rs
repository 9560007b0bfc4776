//! The scheduling core the runtime drives, behind a trait shaped like the scheduler crate's
//! online engine (`release` / `step` / `block_done`, all with an explicit `now_ms`: the core
//! never reads a clock, so the same code runs in virtual and wall time).
//!
//! Two implementations:
//! - [`crate::engine_core::EngineCore`]: the scheduler crate's `Engine` with any of its
//!   policies (`sdrm3` by default, and every baseline) — the code `edgeplane sim` runs.
//! - [`DeadlineCore`] (`edf-whole`): whole-model, non-preemptive earliest-deadline-first with
//!   proactive drop. The agent's own, small fallback: it also serves nodes without cost tables
//!   (a CPU-only node), where it refuses every model clearly.

use crate::catalog::{Catalog, Cost};
use crate::discovery::Accelerator;
use std::collections::BTreeMap;

pub type JobId = u64;

/// What the core asks the runtime to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Run the next block of `job` on accelerator `acc` (index into the runtime's list).
    Dispatch {
        job: JobId,
        acc: usize,
        layers: u32,
        latency_ms: f64,
        energy_mj: f64,
        /// This block is the job's last: its completion completes the job.
        last: bool,
    },
    /// The job will not run (any more).
    Drop { job: JobId, reason: String },
}

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("unknown model {0:?}")]
    UnknownModel(String),
    #[error("model {model:?} cannot run on any accelerator of this node")]
    NoAccelerator { model: String },
}

/// A real-time multi-model scheduling core.
pub trait SchedulingCore: Send {
    /// A new job (frame) of `model`, due at `deadline_ms` (absolute, runtime clock).
    fn release(&mut self, now_ms: f64, model: &str, deadline_ms: f64) -> Result<JobId, CoreError>;
    /// Decide; called on every event (release, block done, tick).
    fn step(&mut self, now_ms: f64) -> Vec<Action>;
    /// Accelerator `acc` finished the block it was given.
    fn block_done(&mut self, now_ms: f64, acc: usize);
}

pub const DEFAULT_POLICY: &str = "sdrm3";
/// The agent's own whole-model EDF (see [`DeadlineCore`]).
pub const WHOLE_EDF: &str = "edf-whole";

/// Policies this agent can run: the scheduler crate's, plus [`WHOLE_EDF`].
pub fn policies() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = edgeplane_scheduler::policy::POLICIES.to_vec();
    v.push(WHOLE_EDF);
    v
}

pub fn check_policy(name: &str) -> Result<(), String> {
    let all = policies();
    if all.contains(&name) {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a policy; valid: {}",
            all.join(", ")
        ))
    }
}

/// Build the core for `policy` over `accelerators` (and the scenario's cascades, if any).
pub fn build(
    policy: &str,
    accelerators: &[Accelerator],
    scenario: Option<&str>,
) -> Result<Box<dyn SchedulingCore>, String> {
    build_with(policy, accelerators, scenario, false, false)
}

/// [`build`], optionally with SDRM3's online tuner and Supernet controller switched on.
pub fn build_with(
    policy: &str,
    accelerators: &[Accelerator],
    scenario: Option<&str>,
    tune: bool,
    supernet: bool,
) -> Result<Box<dyn SchedulingCore>, String> {
    check_policy(policy)?;
    let simulated = accelerators.iter().any(|a| a.sim.is_some());
    if policy != WHOLE_EDF && simulated {
        let mut core = crate::engine_core::EngineCore::new(policy, accelerators, scenario)?;
        if tune {
            core.enable_tuner();
        }
        if supernet {
            core.enable_supernet();
        }
        return Ok(Box::new(core));
    }
    if policy != WHOLE_EDF {
        tracing::warn!(
            policy,
            "no accelerator with cost tables on this node: using the whole-model EDF core, which refuses every model"
        );
    }
    let cat = Catalog::get().map_err(|e| e.to_string())?;
    let mut costs: BTreeMap<String, Vec<Option<Cost>>> = BTreeMap::new();
    for m in cat.model_names() {
        let row: Vec<Option<Cost>> = accelerators
            .iter()
            .map(|a| a.sim.as_ref().and_then(|s| cat.cost(m, s)))
            .collect();
        costs.insert(m.to_string(), row);
    }
    Ok(Box::new(DeadlineCore::new(costs, accelerators.len())))
}

#[derive(Debug)]
struct Job {
    id: JobId,
    model: String,
    deadline_ms: f64,
}

/// Whole-model non-preemptive EDF with proactive drop (see the module doc).
pub struct DeadlineCore {
    /// model → cost per accelerator (None = cannot run there).
    costs: BTreeMap<String, Vec<Option<Cost>>>,
    busy: Vec<bool>,
    queue: Vec<Job>,
    next_id: JobId,
}

impl DeadlineCore {
    pub fn new(costs: BTreeMap<String, Vec<Option<Cost>>>, n_acc: usize) -> Self {
        DeadlineCore {
            costs,
            busy: vec![false; n_acc],
            queue: Vec::new(),
            next_id: 1,
        }
    }
}

impl SchedulingCore for DeadlineCore {
    fn release(&mut self, _now_ms: f64, model: &str, deadline_ms: f64) -> Result<JobId, CoreError> {
        let row = self
            .costs
            .get(model)
            .ok_or_else(|| CoreError::UnknownModel(model.into()))?;
        if row.iter().all(Option::is_none) {
            return Err(CoreError::NoAccelerator {
                model: model.into(),
            });
        }
        let id = self.next_id;
        self.next_id += 1;
        self.queue.push(Job {
            id,
            model: model.into(),
            deadline_ms,
        });
        Ok(id)
    }

    fn step(&mut self, now_ms: f64) -> Vec<Action> {
        let mut actions = Vec::new();
        // Proactive drop: a frame that misses its deadline even on the fastest accelerator
        // only wastes energy and delays others.
        let costs = &self.costs;
        self.queue.retain(|j| {
            let best = costs[&j.model]
                .iter()
                .flatten()
                .map(|c| c.latency_ms)
                .fold(f64::INFINITY, f64::min);
            if now_ms + best > j.deadline_ms {
                actions.push(Action::Drop {
                    job: j.id,
                    reason: "infeasible: cannot finish before its deadline".into(),
                });
                false
            } else {
                true
            }
        });
        // Earliest deadline first; ties by release order.
        self.queue.sort_by(|a, b| {
            a.deadline_ms
                .total_cmp(&b.deadline_ms)
                .then(a.id.cmp(&b.id))
        });
        let mut i = 0;
        while i < self.queue.len() && self.busy.iter().any(|b| !b) {
            let job = &self.queue[i];
            // The idle accelerator that makes the deadline at the lowest energy; if none
            // makes it now, wait (a busy fast accelerator may still free up in time).
            let pick = self.costs[&job.model]
                .iter()
                .enumerate()
                .filter(|(a, c)| !self.busy[*a] && c.is_some())
                .map(|(a, c)| (a, c.expect("filtered")))
                .filter(|(_, c)| now_ms + c.latency_ms <= job.deadline_ms)
                .min_by(|x, y| x.1.energy_mj.total_cmp(&y.1.energy_mj).then(x.0.cmp(&y.0)));
            match pick {
                Some((acc, c)) => {
                    self.busy[acc] = true;
                    actions.push(Action::Dispatch {
                        job: job.id,
                        acc,
                        layers: c.layers,
                        latency_ms: c.latency_ms,
                        energy_mj: c.energy_mj,
                        last: true,
                    });
                    self.queue.remove(i);
                }
                None => i += 1,
            }
        }
        actions
    }

    fn block_done(&mut self, _now_ms: f64, acc: usize) {
        if let Some(b) = self.busy.get_mut(acc) {
            *b = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn core() -> DeadlineCore {
        let c = |l: f64, e: f64| {
            Some(Cost {
                latency_ms: l,
                energy_mj: e,
                layers: 3,
            })
        };
        let mut costs = BTreeMap::new();
        costs.insert("a".to_string(), vec![c(2.0, 10.0), c(4.0, 5.0)]);
        costs.insert("b".to_string(), vec![c(8.0, 10.0), None]);
        DeadlineCore::new(costs, 2)
    }

    #[test]
    fn earliest_deadline_first_and_cheapest_feasible_accelerator() {
        let mut k = core();
        let late = k.release(0.0, "a", 50.0).unwrap();
        let early = k.release(0.0, "a", 10.0).unwrap();
        let acts = k.step(0.0);
        // `early` goes first, to the lower-energy accelerator 1 (4 ms still makes 10 ms).
        assert!(matches!(acts[0], Action::Dispatch { job, acc: 1, .. } if job == early));
        assert!(matches!(acts[1], Action::Dispatch { job, acc: 0, .. } if job == late));
    }

    #[test]
    fn infeasible_job_is_dropped_not_run() {
        let mut k = core();
        let j = k.release(0.0, "b", 5.0).unwrap();
        let acts = k.step(0.0);
        assert!(matches!(&acts[..], [Action::Drop { job, .. }] if *job == j));
        assert!(matches!(
            k.release(0.0, "zzz", 5.0),
            Err(CoreError::UnknownModel(_))
        ));
    }

    #[test]
    fn waits_for_busy_accelerator_then_runs() {
        let mut k = core();
        k.release(0.0, "b", 100.0).unwrap();
        k.release(0.0, "b", 100.0).unwrap();
        assert_eq!(k.step(0.0).len(), 1, "only accelerator 0 runs b");
        assert!(k.step(1.0).is_empty());
        k.block_done(8.0, 0);
        assert_eq!(k.step(8.0).len(), 1);
    }
}
