//! The scheduling core of a GPU node: the assignment's partitions are its accelerators.
//!
//! - Each partition (GPU, MPS share, models) is a slot served by one worker (see
//!   [`crate::exec::factory`]). A model runs only on the partitions that list it; a partition with
//!   several models time-shares them (earliest head deadline first).
//! - Costs come from the GPU share model (`edgeplane_gpu::cost::GpuShareCost`): the profile's
//!   latency for (batch, share), slowed by gpulet's interference factor for the batches running
//!   on the other partitions of the same GPU at that moment; energy is the board's dynamic power
//!   for that share over that time.
//! - Batching: a partition takes up to the profiled largest batch of one model, as long as the
//!   batch still finishes before the earliest deadline in it.
//! - Make-before-break: a new assignment starts the partitions it adds (not ready until the
//!   worker says so) and keeps every partition it drops serving until each of its models has a
//!   ready partition in the new layout (or is no longer assigned here); then the old partition
//!   is retired once its last batch finished.
//! - Drops: a queued request whose deadline passed, or that cannot finish before it even at
//!   batch 1 on the fastest ready partition of its model, is dropped.

use super::{Action, CoreError, Decisions, Input, JobId, SchedulingCore};
use crate::exec::factory::PartitionSpec;
use crate::exec::ExecError;
use edgeplane_gpu::cost::GpuShareCost;
use edgeplane_gpu::GpuData;
use edgeplane_proto::agent::Assignment;
use edgeplane_scheduler::{CoRunner, CostModel};
use std::collections::{BTreeMap, VecDeque};

pub use crate::catalog::gpu_data;

/// The profile model a deployed model runs (`resnet50@cam1` -> `resnet50`).
pub fn profile_of(data: &GpuData, name: &str) -> String {
    if data.profiles.model(name).is_ok() {
        return name.to_string();
    }
    name.split(['@', '.']).next().unwrap_or(name).to_string()
}

/// Default relative deadline of a model served on GPUs: its profile SLO (100 ms without one).
pub fn default_deadline_ms(model: &str) -> Option<f64> {
    let data = gpu_data().ok()?;
    let p = profile_of(data, model);
    let info = data.profiles.model(&p).ok()?;
    Some(info.slo_ms.unwrap_or(100.0))
}

#[derive(Debug)]
struct Slot {
    spec: PartitionSpec,
    gpu_profile: String,
    ready: bool,
    failed: bool,
    /// Replaced by a new assignment: serves until its models are covered, then retires.
    leaving: bool,
    /// A stop was emitted; the slot is gone once its last batch finished.
    stopped: bool,
    /// Running batch: (model profile, batch, jobs).
    busy: Option<(String, u32, Vec<JobId>)>,
}

#[derive(Debug)]
struct Queued {
    id: JobId,
    deadline_ms: f64,
}

/// The GPU node's scheduling core.
pub struct GpuCore {
    data: &'static GpuData,
    /// Node GPU id -> profile name.
    gpus: BTreeMap<String, String>,
    slots: Vec<Option<Slot>>,
    queues: BTreeMap<String, VecDeque<Queued>>,
    next_id: JobId,
    next_part: u64,
    pending: Vec<Action>,
}

impl GpuCore {
    /// A core over the node's GPUs (id, profile name).
    pub fn new(gpus: Vec<(String, String)>) -> Result<GpuCore, String> {
        let data = gpu_data()?;
        for (id, p) in &gpus {
            data.profiles
                .gpu(p)
                .map_err(|e| format!("accelerator {id}: {e}"))?;
        }
        Ok(GpuCore {
            data,
            gpus: gpus.into_iter().collect(),
            slots: Vec::new(),
            queues: BTreeMap::new(),
            next_id: 1,
            next_part: 1,
            pending: Vec::new(),
        })
    }

    fn serving(&self, model: &str) -> impl Iterator<Item = (usize, &Slot)> + '_ {
        let model = model.to_string();
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| (i, s)))
            .filter(move |(_, s)| !s.stopped && !s.failed && s.spec.models.contains(&model))
    }

    fn cost(&self, slot: usize, model: &str, batch: u32) -> (f64, f64) {
        let s = self.slots[slot].as_ref().expect("slot");
        let prof = profile_of(self.data, model);
        let co: Vec<(String, u32, f64)> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != slot)
            .filter_map(|(_, o)| o.as_ref())
            .filter(|o| o.spec.accelerator_id == s.spec.accelerator_id)
            .filter_map(|o| {
                o.busy
                    .as_ref()
                    .map(|(m, b, _)| (m.clone(), *b, o.spec.share_pct as f64 / 100.0))
            })
            .collect();
        let co_runners: Vec<CoRunner<'_>> = co
            .iter()
            .map(|(m, b, sh)| CoRunner {
                model: m,
                batch: *b,
                share: *sh,
            })
            .collect();
        let c = GpuShareCost {
            data: self.data,
            gpu: s.gpu_profile.clone(),
            model: prof,
            share: s.spec.share_pct as f64 / 100.0,
        };
        match c.cost(0, 1, batch.max(1), &co_runners) {
            Ok(c) => (c.latency_ms, c.energy_mj),
            Err(_) => (f64::INFINITY, 0.0),
        }
    }

    /// Partitions whose models all have a ready home in the new layout stop.
    fn retire_covered(&mut self) {
        for i in 0..self.slots.len() {
            let Some(s) = self.slots[i].as_ref() else {
                continue;
            };
            if !s.leaving || s.stopped {
                continue;
            }
            let covered = s.spec.models.iter().all(|m| {
                let assigned = self
                    .slots
                    .iter()
                    .flatten()
                    .any(|o| !o.leaving && !o.failed && o.spec.models.contains(m));
                // every new partition of the model is up (not just one: the old one's
                // capacity is needed until the whole new layout serves)
                let mut new = self
                    .slots
                    .iter()
                    .flatten()
                    .filter(|o| !o.leaving && !o.failed && o.spec.models.contains(m))
                    .peekable();
                let ready = new.peek().is_some() && new.all(|o| o.ready);
                !assigned || ready
            });
            if covered {
                let s = self.slots[i].as_mut().expect("slot");
                s.stopped = true;
                tracing::info!(partition = %s.spec.id, "partition retired (its models are served by the new layout)");
            }
        }
        // a stopped slot whose batch finished is gone
        for i in 0..self.slots.len() {
            if self.slots[i]
                .as_ref()
                .is_some_and(|s| s.stopped && s.busy.is_none())
            {
                let s = self.slots[i].take().expect("slot");
                self.pending.push(Action::StopPartition {
                    acc: i,
                    spec: s.spec,
                });
            }
        }
    }

    fn drop_job(&mut self, model: &str, idx: usize, reason: &str, out: &mut Vec<Action>) {
        if let Some(q) = self.queues.get_mut(model) {
            if let Some(j) = q.remove(idx) {
                out.push(Action::Drop {
                    job: j.id,
                    reason: reason.to_string(),
                });
            }
        }
    }
}

fn key(a: &str, share: u32, models: &[String]) -> (String, u32, Vec<String>) {
    let mut m = models.to_vec();
    m.sort();
    m.dedup();
    (a.to_string(), share, m)
}

/// The inputs one by one (what [`SchedulingCore::step`] dispatches to).
impl GpuCore {
    pub fn release(
        &mut self,
        _now_ms: f64,
        model: &str,
        deadline_ms: f64,
    ) -> Result<JobId, CoreError> {
        if self.serving(model).next().is_none() {
            return Err(CoreError::NoPartition {
                model: model.to_string(),
            });
        }
        let id = self.next_id;
        self.next_id += 1;
        let q = self.queues.entry(model.to_string()).or_default();
        // deadline order (requests of one model mostly arrive in deadline order)
        let pos = q
            .iter()
            .rposition(|j| j.deadline_ms <= deadline_ms)
            .map_or(0, |p| p + 1);
        q.insert(pos, Queued { id, deadline_ms });
        Ok(id)
    }

    pub fn decide(&mut self, now_ms: f64) -> Vec<Action> {
        self.retire_covered();
        let mut out = std::mem::take(&mut self.pending);
        // drops: expired, or infeasible at batch 1 on the fastest ready partition
        let models: Vec<String> = self.queues.keys().cloned().collect();
        for m in &models {
            let best = self
                .serving(m)
                .filter(|(_, s)| s.ready)
                .map(|(i, _)| i)
                .collect::<Vec<_>>()
                .into_iter()
                .map(|i| self.cost(i, m, 1).0)
                .fold(f64::INFINITY, f64::min);
            let has_home = self.serving(m).next().is_some();
            let mut idx = 0;
            while idx < self.queues[m].len() {
                let d = self.queues[m][idx].deadline_ms;
                let reason = if !has_home {
                    Some("no partition serves this model any more (re-planned away)")
                } else if now_ms > d {
                    Some("expired: deadline passed while queued")
                } else if best.is_finite() && now_ms + best > d {
                    Some("infeasible: cannot finish before its deadline on any ready partition")
                } else {
                    None
                };
                match reason {
                    Some(r) => self.drop_job(m, idx, r, &mut out),
                    None => idx += 1,
                }
            }
        }
        // dispatch: every ready, idle partition takes a batch of its most urgent model
        let max_b = self.data.profiles.max_batch();
        for i in 0..self.slots.len() {
            let Some(s) = self.slots[i].as_ref() else {
                continue;
            };
            if !s.ready || s.busy.is_some() || s.stopped {
                continue;
            }
            let pick = s
                .spec
                .models
                .iter()
                .filter_map(|m| {
                    self.queues
                        .get(m)
                        .and_then(|q| q.front())
                        .map(|j| (j.deadline_ms, m.clone()))
                })
                .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let Some((head_deadline, model)) = pick else {
                continue;
            };
            let queued = self.queues[&model].len() as u32;
            let mut b = queued.min(max_b).max(1);
            let (mut lat, mut en) = self.cost(i, &model, b);
            while b > 1 && now_ms + lat > head_deadline {
                b -= 1;
                (lat, en) = self.cost(i, &model, b);
            }
            if !lat.is_finite() {
                continue;
            }
            let q = self.queues.get_mut(&model).expect("picked");
            let jobs: Vec<JobId> = q.drain(..b as usize).map(|j| j.id).collect();
            let s = self.slots[i].as_mut().expect("slot");
            s.busy = Some((profile_of(self.data, &model), b, jobs.clone()));
            out.push(Action::DispatchBatch {
                jobs,
                acc: i,
                model,
                batch: b,
                latency_ms: lat,
                energy_mj: en,
            });
        }
        out
    }

    pub fn block_done(&mut self, _now_ms: f64, acc: usize) {
        if let Some(Some(s)) = self.slots.get_mut(acc) {
            s.busy = None;
        }
    }

    pub fn assign(&mut self, _now_ms: f64, a: &Assignment) {
        // wanted partitions, with multiplicity
        let mut wanted: Vec<(String, u32, Vec<String>)> = Vec::new();
        for p in &a.partitions {
            let acc = if p.accelerator_id.is_empty() {
                match self.gpus.keys().next() {
                    Some(g) => g.clone(),
                    None => continue,
                }
            } else {
                p.accelerator_id.clone()
            };
            if !self.gpus.contains_key(&acc) {
                tracing::warn!(accelerator = %acc, "assignment names a GPU this node does not have; partition ignored");
                continue;
            }
            if p.models.is_empty() {
                continue;
            }
            wanted.push(key(&acc, p.share_pct.clamp(1, 100), &p.models));
        }
        // keep the live partitions that match, in order
        let mut kept = vec![false; self.slots.len()];
        let mut to_start = Vec::new();
        for w in wanted {
            let found = self.slots.iter().enumerate().position(|(i, s)| {
                !kept[i]
                    && s.as_ref().is_some_and(|s| {
                        !s.stopped
                            && !s.failed
                            && key(&s.spec.accelerator_id, s.spec.share_pct, &s.spec.models) == w
                    })
            });
            match found {
                Some(i) => {
                    kept[i] = true;
                    if let Some(s) = self.slots[i].as_mut() {
                        s.leaving = false;
                    }
                }
                None => to_start.push(w),
            }
        }
        for (i, k) in kept.iter().enumerate() {
            if !k {
                if let Some(s) = self.slots[i].as_mut() {
                    if !s.leaving {
                        tracing::info!(partition = %s.spec.id, "partition leaves the plan: serving until its replacement is ready");
                    }
                    s.leaving = true;
                }
            }
        }
        for (acc, share, models) in to_start {
            let n = self.next_part;
            self.next_part += 1;
            let spec = PartitionSpec {
                id: format!("{acc}/{share}%/{}#{n}", models.join("+")),
                accelerator_id: acc.clone(),
                gpu_profile: self.gpus.get(&acc).cloned(),
                share_pct: share,
                models,
            };
            let slot = Slot {
                gpu_profile: self.gpus[&acc].clone(),
                spec: spec.clone(),
                ready: false,
                failed: false,
                leaving: false,
                stopped: false,
                busy: None,
            };
            let idx = match self.slots.iter().position(Option::is_none) {
                Some(i) => {
                    self.slots[i] = Some(slot);
                    i
                }
                None => {
                    self.slots.push(Some(slot));
                    self.slots.len() - 1
                }
            };
            tracing::info!(partition = %spec.id, "starting partition");
            self.pending.push(Action::StartPartition { acc: idx, spec });
        }
    }

    pub fn slot_ready(&mut self, _now_ms: f64, acc: usize, result: Result<(), ExecError>) {
        if let Some(Some(s)) = self.slots.get_mut(acc) {
            match result {
                Ok(()) => s.ready = true,
                Err(e) => {
                    tracing::error!(partition = %s.spec.id, error = %e, "worker failed to start");
                    s.failed = true;
                    s.stopped = true;
                }
            }
        }
    }

    pub fn next_wakeup(&self, _now_ms: f64) -> Option<f64> {
        // the earliest moment a queued request must be dropped (infeasible at batch 1 on its
        // fastest ready partition, or expired); arrivals, completions and readiness are events
        self.queues
            .iter()
            .filter_map(|(m, q)| {
                let head = q.front()?;
                let best = self
                    .serving(m)
                    .filter(|(_, s)| s.ready)
                    .map(|(i, _)| self.cost(i, m, 1).0)
                    .fold(f64::INFINITY, f64::min);
                Some(if best.is_finite() {
                    head.deadline_ms - best
                } else {
                    head.deadline_ms
                })
            })
            .min_by(f64::total_cmp)
    }
}

impl SchedulingCore for GpuCore {
    fn step(&mut self, now_ms: f64, input: Input<'_>) -> Decisions {
        match input {
            Input::Release {
                model, deadline_ms, ..
            } => Decisions::released(self.release(now_ms, model, deadline_ms)),
            Input::BlockDone { acc, .. } => {
                self.block_done(now_ms, acc);
                Decisions::default()
            }
            Input::SlotReady { acc, result } => {
                self.slot_ready(now_ms, acc, result);
                Decisions::default()
            }
            Input::Assignment(a) => {
                self.assign(now_ms, a);
                Decisions::default()
            }
            Input::Tick => Decisions::actions(self.decide(now_ms)),
        }
    }
    fn next_wakeup_ms(&self, now_ms: f64) -> Option<f64> {
        self.next_wakeup(now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgeplane_proto::agent::Partition;

    fn assignment(epoch: u64, parts: &[(u32, &[&str])]) -> Assignment {
        Assignment {
            epoch,
            partitions: parts
                .iter()
                .map(|(s, m)| Partition {
                    accelerator_id: "gpu0".into(),
                    share_pct: *s,
                    models: m.iter().map(|x| x.to_string()).collect(),
                })
                .collect(),
        }
    }

    fn starts(a: &[Action]) -> Vec<usize> {
        a.iter()
            .filter_map(|x| match x {
                Action::StartPartition { acc, .. } => Some(*acc),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn models_run_only_on_their_partitions_in_batches() {
        let mut c = GpuCore::new(vec![("gpu0".into(), "Jetson-AGX-Xavier".into())]).unwrap();
        assert!(matches!(
            c.release(0.0, "resnet18", 45.0),
            Err(CoreError::NoPartition { .. })
        ));
        c.assign(
            0.0,
            &assignment(1, &[(40, &["resnet18"]), (60, &["vgg16"])]),
        );
        let a = c.decide(0.0);
        assert_eq!(starts(&a), vec![0, 1]);
        // queued while the workers start; nothing dispatched before ready
        for _ in 0..4 {
            c.release(0.0, "resnet18", 45.0).unwrap();
        }
        assert!(c
            .decide(1.0)
            .iter()
            .all(|x| !matches!(x, Action::DispatchBatch { .. })));
        c.slot_ready(1.0, 0, Ok(()));
        c.slot_ready(1.0, 1, Ok(()));
        let a = c.decide(2.0);
        let d: Vec<_> = a
            .iter()
            .filter_map(|x| match x {
                Action::DispatchBatch {
                    acc, batch, jobs, ..
                } => Some((*acc, *batch, jobs.len())),
                _ => None,
            })
            .collect();
        assert_eq!(
            d,
            vec![(0, 4, 4)],
            "resnet18 only on its 40 % partition, one batch of 4"
        );
        assert!(
            c.release(2.0, "resnet50", 100.0).is_err(),
            "not assigned here"
        );
    }

    #[test]
    fn resize_is_make_before_break() {
        let mut c = GpuCore::new(vec![("gpu0".into(), "Jetson-AGX-Xavier".into())]).unwrap();
        c.assign(0.0, &assignment(1, &[(40, &["resnet18"])]));
        c.decide(0.0);
        c.slot_ready(0.0, 0, Ok(()));
        // resize: 40 % -> 60 % is a new partition
        c.assign(1.0, &assignment(2, &[(60, &["resnet18"])]));
        let a = c.decide(1.0);
        assert_eq!(starts(&a), vec![1]);
        assert!(!a.iter().any(|x| matches!(x, Action::StopPartition { .. })));
        // while the new worker starts, requests are still accepted and served by the old one
        c.release(1.0, "resnet18", 45.0).unwrap();
        let a = c.decide(1.5);
        assert!(a
            .iter()
            .any(|x| matches!(x, Action::DispatchBatch { acc: 0, .. })));
        c.slot_ready(2.0, 1, Ok(()));
        // the old one is busy: it retires after its batch
        assert!(!c
            .decide(2.0)
            .iter()
            .any(|x| matches!(x, Action::StopPartition { .. })));
        c.block_done(3.0, 0);
        let a = c.decide(3.0);
        assert!(a
            .iter()
            .any(|x| matches!(x, Action::StopPartition { acc: 0, .. })));
        let s: Vec<&Slot> = c.slots.iter().flatten().collect();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].spec.share_pct, 60);
        assert!(s[0].ready && !s[0].stopped);
    }
}
