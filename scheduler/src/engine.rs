//! The online scheduling engine: the state that both the native simulator (virtual time) and
//! the edge agent's real-time runtime (wall time) drive, so the two agree by construction.
//!
//! A driver calls [`Engine::release`] when a frame or request arrives, [`Engine::step`] at
//! every event to get drops and dispatches, and [`Engine::block_done`] when an accelerator
//! finished the block of layers it was given. Time is always passed in (milliseconds since
//! the driver's epoch): policies never read a clock.

use crate::catalog::{AccSpec, Catalog, ModelCost};
use crate::error::Error;
use crate::policy::{Pick, Policy};
use std::collections::{BTreeSet, HashMap, VecDeque};

/// Identifies a job (one frame of one model, or one request) within an engine.
pub type JobId = u64;

/// Off-chip traffic cost of moving a boundary activation between accelerators.
/// XRBench models no DRAM energy; we charge a write plus a read of the activation at the
/// sub-accelerator's off-chip bandwidth (bytes per cycle at 1 GHz) and 160 pJ per byte
/// (≈ 20 pJ/bit LPDDR access), in the artifact's "mJ" (nJ / 1e6).
pub const DRAM_NJ_PER_BYTE: f64 = 0.16;

/// A model the engine serves.
#[derive(Debug, Clone)]
pub struct EngineModel {
    pub name: String,
    pub cost_model: String,
    /// Period (or SLO) in ms: the deadline a frame gets relative to its release, and the
    /// urgency/fairness normaliser.
    pub period_ms: f64,
    /// Upstream model index (cascade: frame i waits for upstream frame i).
    pub upstream: Option<usize>,
}

/// Why a job was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum DropReason {
    /// It cannot make its deadline even on the fastest accelerator (proactive drop).
    Infeasible,
    /// Its deadline passed while it waited.
    Expired,
    /// The same frame of its upstream model was dropped.
    Cascade,
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DropReason::Infeasible => "infeasible: cannot meet its deadline on any accelerator",
            DropReason::Expired => "expired: deadline passed while queued",
            DropReason::Cascade => "cascade: the upstream frame was dropped",
        })
    }
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Run layers `from..to` of `job` on `acc`; it takes `latency_ms` and costs `energy_mj`
    /// (migration included when `migrated`).
    Dispatch {
        job: JobId,
        acc: usize,
        from: usize,
        to: usize,
        latency_ms: f64,
        energy_mj: f64,
        migrated: bool,
    },
    /// The job is dropped (its executed energy is wasted).
    Drop {
        job: JobId,
        reason: DropReason,
        energy_mj: f64,
    },
    /// The job completed at `done_ms`.
    Complete {
        job: JobId,
        done_ms: f64,
        late: bool,
        energy_mj: f64,
    },
}

/// Frames from this number up are requests from outside any frame stream (an `Infer` call):
/// they wait for no upstream frame, satisfy or fail no downstream one, and make no frame of
/// their model stale. A scenario's frame i of a model and frame i of its upstream are the
/// same frame of the stream; an ad-hoc request of the upstream model is neither. (Sharing one
/// counter, 1,201 `Infer` requests of ES_RITNet pushed its frame numbers past GE_FBNet_C's,
/// and GE's frames waited for ES frames long forgotten: 2.6 % met in the demo.)
pub const REQUEST_FRAMES: u64 = 1 << 62;

/// Whether `frame` is an outside request (see [`REQUEST_FRAMES`]).
pub fn is_request_frame(frame: u64) -> bool {
    frame >= REQUEST_FRAMES
}

/// One job's state, visible to policies.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: JobId,
    pub model: usize,
    pub frame: u64,
    pub release_ms: f64,
    pub deadline_ms: f64,
    pub next_layer: usize,
    pub end_layer: usize,
    pub last_acc: Option<usize>,
    pub energy_mj: f64,
    pub running: bool,
    /// Sub-network width (1.0 = full); cost scales with width².
    pub width: f64,
}

/// Accelerator state.
#[derive(Debug, Clone)]
pub struct AccState {
    pub spec: AccSpec,
    pub busy: Option<JobId>,
    pub busy_ms: f64,
    pub energy_mj: f64,
}

/// The online engine.
pub struct Engine {
    models: Vec<EngineModel>,
    costs: Vec<Vec<ModelCost>>, // [model][acc]
    /// Per-layer best latency / energy over accelerators, as suffix sums: [model][layer].
    /// A layer-block scheduler can run each block where it is cheapest, so this is the
    /// best case of a job's remaining work (migration ignored: a lower bound).
    best_suffix: Vec<(Vec<f64>, Vec<f64>)>,
    accs: Vec<AccState>,
    jobs: HashMap<JobId, Job>,
    order: Vec<JobId>, // jobs in release order (ready or waiting), for deterministic iteration
    /// The pending jobs by (model, frame, id): the downstream lookups of the drop rule and of
    /// cascades ([`Engine::waiting_job`]) in O(log n) instead of a scan of every job.
    by_frame: BTreeSet<(usize, u64, JobId)>,
    next_id: JobId,
    policy: Box<dyn Policy>,
    /// Last W outcomes per model (true = missed/dropped), for fairness.
    history: Vec<VecDeque<bool>>,
    /// Newest frame released per model (staleness).
    newest: Vec<Option<u64>>,
    /// Completed / dropped frames of models that have downstreams.
    upstream_done: HashMap<(usize, u64), bool>,
    downstreams: Vec<Vec<usize>>,
    /// Whether a model currently releases frames (phases switch models on and off); load
    /// counts only active models.
    active: Vec<bool>,
    /// Probability that a frame of each model is generated (cascade triggers), for SDRM3's
    /// expected cascade cost; 1 unless the driver says otherwise.
    trigger: Vec<f64>,
    widths: Vec<f64>,
    /// Accelerators each model may run on (bit a = accelerator a): an assignment of models
    /// to accelerators or GPU partitions restricts every policy through it.
    allowed: Vec<u64>,
    allowed_epoch: u64,
    step_seq: u64,
    /// Smallest block dispatched, in ms of modelled latency (0 = exactly the policy's B
    /// layers). See [`Engine::set_min_block_ms`].
    min_block_ms: f64,
}

/// Fairness window (frames).
pub const FAIR_W: usize = 10;

/// Per-layer best latency / energy over the accelerators in `mask`, as suffix sums.
fn best_suffix(row: &[ModelCost], mask: u64) -> (Vec<f64>, Vec<f64>) {
    let n = row[0].layers();
    let (mut lat, mut en) = (vec![0.0; n + 1], vec![0.0; n + 1]);
    let allowed = || {
        row.iter()
            .enumerate()
            .filter(move |(a, _)| mask & (1 << a) != 0)
            .map(|(_, c)| c)
    };
    for l in (0..n).rev() {
        let bl = allowed()
            .map(|c| c.lat_ms(l, l + 1))
            .fold(f64::INFINITY, f64::min);
        let be = allowed()
            .map(|c| c.energy_mj(l, l + 1))
            .fold(f64::INFINITY, f64::min);
        lat[l] = lat[l + 1] + bl;
        en[l] = en[l + 1] + be;
    }
    (lat, en)
}

impl Engine {
    /// An engine for `models` on `accs`, scheduling with `policy`.
    pub fn new(
        cat: &Catalog,
        accs: &[AccSpec],
        models: Vec<EngineModel>,
        policy: Box<dyn Policy>,
    ) -> Result<Engine, Error> {
        if accs.is_empty() || accs.len() > 64 {
            return Err(Error::Invalid {
                field: "accelerators",
                why: format!("1 to 64 accelerators are supported, got {}", accs.len()),
            });
        }
        let mut costs = Vec::new();
        for m in &models {
            if !(m.period_ms.is_finite() && m.period_ms > 0.0) {
                return Err(Error::Invalid {
                    field: "period_ms",
                    why: format!(
                        "model {} has period {}; it must be > 0",
                        m.name, m.period_ms
                    ),
                });
            }
            let mut row = Vec::new();
            for a in accs {
                row.push(cat.cost(&m.cost_model, a)?.clone());
            }
            costs.push(row);
        }
        let all = u64::MAX >> (64 - accs.len());
        let best_suffix = costs.iter().map(|row| best_suffix(row, all)).collect();
        let mut downstreams = vec![Vec::new(); models.len()];
        for (i, m) in models.iter().enumerate() {
            if let Some(u) = m.upstream {
                downstreams[u].push(i);
            }
        }
        Ok(Engine {
            active: vec![true; models.len()],
            trigger: vec![1.0; models.len()],
            widths: vec![1.0; models.len()],
            allowed: vec![u64::MAX >> (64 - accs.len()); models.len()],
            allowed_epoch: 0,
            history: vec![VecDeque::new(); models.len()],
            newest: vec![None; models.len()],
            costs,
            best_suffix,
            accs: accs
                .iter()
                .map(|s| AccState {
                    spec: s.clone(),
                    busy: None,
                    busy_ms: 0.0,
                    energy_mj: 0.0,
                })
                .collect(),
            jobs: HashMap::new(),
            order: Vec::new(),
            by_frame: BTreeSet::new(),
            next_id: 1,
            policy,
            upstream_done: HashMap::new(),
            downstreams,
            models,
            step_seq: 0,
            min_block_ms: 0.0,
        })
    }

    pub fn models(&self) -> &[EngineModel] {
        &self.models
    }
    pub fn model_index(&self, name: &str) -> Option<usize> {
        self.models.iter().position(|m| m.name == name)
    }
    pub fn accelerators(&self) -> &[AccState] {
        &self.accs
    }
    pub fn policy_mut(&mut self) -> &mut dyn Policy {
        self.policy.as_mut()
    }
    /// The policy's current weights (SDRM3's; None for the others).
    pub fn policy_weights(&self) -> Option<crate::policy::Weights> {
        self.policy.weights()
    }
    pub fn policy_name(&self) -> &'static str {
        self.policy.name()
    }
    /// Jobs not yet finished (queued or running).
    pub fn pending(&self) -> usize {
        self.jobs.len()
    }
    pub fn job(&self, id: JobId) -> Option<&Job> {
        self.jobs.get(&id)
    }
    /// Grow each dispatched block by whole layers until its modelled latency reaches `ms`
    /// (or the job's last layer). A real-time host pays a fixed cost per dispatch (wake-up,
    /// decision, hand-off: tens of µs); XRBench models have many layers far shorter than that
    /// (HT_hand_graph_cnn_half: 224 layers, most under 20 µs), so one-layer blocks spend more
    /// time deciding than computing. Preemption and migration still happen at block
    /// boundaries, now at least `ms` apart. 0 (the default, the simulator's) keeps B layers.
    pub fn set_min_block_ms(&mut self, ms: f64) {
        self.min_block_ms = if ms.is_finite() { ms.max(0.0) } else { 0.0 };
    }

    /// Restrict `model` to the accelerators `accs` (an assignment). Applies to every policy
    /// from the next decision; work already dispatched finishes where it is.
    pub fn set_allowed(&mut self, model: usize, accs: &[usize]) -> Result<(), Error> {
        if model >= self.models.len() {
            return Err(Error::Invalid {
                field: "model",
                why: format!("index {model} out of range (have {})", self.models.len()),
            });
        }
        if accs.is_empty() {
            return Err(Error::Invalid {
                field: "accelerators",
                why: format!(
                    "model {} needs at least one accelerator",
                    self.models[model].name
                ),
            });
        }
        let mut mask = 0u64;
        for &a in accs {
            if a >= self.accs.len() {
                return Err(Error::Invalid {
                    field: "accelerators",
                    why: format!(
                        "accelerator {a} does not exist (have 0..{})",
                        self.accs.len()
                    ),
                });
            }
            mask |= 1 << a;
        }
        self.allowed[model] = mask;
        self.best_suffix[model] = best_suffix(&self.costs[model], mask);
        self.allowed_epoch += 1;
        Ok(())
    }
    /// May `model` run on `acc`?
    pub fn allowed(&self, model: usize, acc: usize) -> bool {
        self.allowed[model] & (1 << acc) != 0
    }
    /// Changes whenever an allowed set changes (policies with precomputed maps rebuild).
    pub fn allowed_epoch(&self) -> u64 {
        self.allowed_epoch
    }

    /// Set a model's Supernet width (applies to jobs released afterwards).
    pub fn set_width(&mut self, model: usize, width: f64) {
        self.widths[model] = width;
    }
    pub fn width(&self, model: usize) -> f64 {
        self.widths[model]
    }
    pub fn layers(&self, model: usize) -> usize {
        self.costs[model][0].layers()
    }

    /// A new job: frame `frame` of `model`, due at `deadline_ms`. `end_layer` < layers models
    /// an early exit (layer-level dynamicity).
    pub fn release(
        &mut self,
        now: f64,
        model: usize,
        frame: u64,
        deadline_ms: f64,
        end_layer: Option<usize>,
    ) -> JobId {
        let id = self.next_id;
        self.next_id += 1;
        let layers = self.layers(model);
        self.jobs.insert(
            id,
            Job {
                id,
                model,
                frame,
                release_ms: now,
                deadline_ms,
                next_layer: 0,
                end_layer: end_layer.unwrap_or(layers).clamp(1, layers),
                last_acc: None,
                energy_mj: 0.0,
                running: false,
                width: self.widths[model],
            },
        );
        self.order.push(id);
        self.by_frame.insert((model, frame, id));
        if !is_request_frame(frame) && self.newest[model].is_none_or(|f| f < frame) {
            self.newest[model] = Some(frame);
        }
        id
    }

    /// Latency and energy of layers `from..to` of `job` on `acc`, with migration cost.
    pub fn block_cost(&self, job: &Job, acc: usize, from: usize, to: usize) -> (f64, f64, bool) {
        let c = &self.costs[job.model][acc];
        let s = job.width * job.width;
        // through the cost-model seam (one frame, an NPU has no co-runners); the bounds are the
        // job's own layers, so the table lookup cannot fail
        let base = crate::accel::CostModel::cost(c, from, to, 1, &[]).unwrap_or(crate::Cost {
            latency_ms: c.lat_ms(from, to),
            energy_mj: c.energy_mj(from, to),
        });
        let mut lat = base.latency_ms * s;
        let mut en = base.energy_mj * s;
        let migrated = from > 0 && job.last_acc.is_some_and(|a| a != acc);
        if migrated {
            let bytes = c.layer_out_bytes[from - 1] * job.width;
            lat += 2.0 * bytes / self.accs[acc].spec.offchip_bw as f64 / 1e6;
            en += 2.0 * bytes * DRAM_NJ_PER_BYTE / 1e6;
        }
        (lat, en, migrated)
    }
    /// Remaining latency/energy of `job` on `acc` (migration included).
    pub fn remaining(&self, job: &Job, acc: usize) -> (f64, f64) {
        let (l, e, _) = self.block_cost(job, acc, job.next_layer, job.end_layer);
        (l, e)
    }
    /// L*(j), E*(j): minimum remaining latency / energy over accelerators.
    pub fn best_remaining(&self, job: &Job) -> (f64, f64) {
        let mut best = (f64::INFINITY, f64::INFINITY);
        for a in (0..self.accs.len()).filter(|&a| self.allowed(job.model, a)) {
            let (l, e) = self.remaining(job, a);
            best.0 = best.0.min(l);
            best.1 = best.1.min(e);
        }
        best
    }
    /// Best-case remaining latency / energy of layers `from..end` of `job` when every layer
    /// may run on its best accelerator (no migration cost): what a layer-block scheduler can
    /// at best achieve.
    pub fn layerwise_best(&self, job: &Job, from: usize) -> (f64, f64) {
        let (l, e) = &self.best_suffix[job.model];
        let s = job.width * job.width;
        (
            (l[from] - l[job.end_layer]) * s,
            (e[from] - e[job.end_layer]) * s,
        )
    }

    /// A full-width job of `model` covering layers `from..to`, for cost queries that are not
    /// about a released job (planning, demand estimates).
    pub fn probe(&self, model: usize, from: usize, to: usize) -> Job {
        Job {
            id: 0,
            model,
            frame: 0,
            release_ms: 0.0,
            deadline_ms: 0.0,
            next_layer: from,
            end_layer: to,
            last_acc: None,
            energy_mj: 0.0,
            running: false,
            width: 1.0,
        }
    }

    /// A model's share of the machine: best whole-model latency per period.
    pub fn demand(&self, model: usize) -> f64 {
        self.best_remaining(&self.probe(model, 0, self.layers(model)))
            .0
            / self.period(model)
    }

    /// E* of a whole frame of `model` (full width): its most energy-efficient allowed
    /// accelerator.
    pub fn whole_energy_star(&self, model: usize) -> f64 {
        self.best_remaining(&self.probe(model, 0, self.layers(model)))
            .1
    }
    /// Mark `model` as active or not (a phase switched it on or off): load and the shortest
    /// period count active models only.
    pub fn set_active(&mut self, model: usize, active: bool) {
        self.active[model] = active;
    }
    pub fn is_active(&self, model: usize) -> bool {
        self.active[model]
    }
    /// Set the probability that a frame of `model` is generated (its cascade trigger).
    pub fn set_trigger_probability(&mut self, model: usize, p: f64) {
        self.trigger[model] = if p.is_nan() { 1.0 } else { p.clamp(0.0, 1.0) };
    }
    pub fn trigger_probability(&self, model: usize) -> f64 {
        self.trigger[model]
    }
    /// The models that take `model`'s output (cascade).
    pub fn downstreams(&self, model: usize) -> impl Iterator<Item = usize> + '_ {
        self.downstreams[model].iter().copied()
    }
    /// The unfinished job of frame `frame` of `model`, if released and pending.
    pub fn waiting_job(&self, model: usize, frame: u64) -> Option<&Job> {
        self.frame_jobs(model, frame).next()
    }
    /// The pending jobs of frame `frame` of `model`, in release order (index lookup).
    fn frame_jobs(&self, model: usize, frame: u64) -> impl Iterator<Item = &Job> + '_ {
        self.by_frame
            .range((model, frame, 0)..=(model, frame, JobId::MAX))
            .filter_map(|(_, _, id)| self.jobs.get(id))
    }
    /// [`Engine::waiting_job`] as a scan of every pending job (the reference the index is
    /// tested against).
    #[cfg(test)]
    pub(crate) fn waiting_job_scan(&self, model: usize, frame: u64) -> Option<&Job> {
        self.order
            .iter()
            .filter_map(|id| self.jobs.get(id))
            .find(|j| j.model == model && j.frame == frame)
    }
    /// Whether frame `frame` of `model` (or a later one) has been released.
    pub fn released(&self, model: usize, frame: u64) -> bool {
        self.newest[model].is_some_and(|f| f >= frame)
    }
    /// Share of the model's last W frames that missed.
    pub fn fairness(&self, model: usize) -> f64 {
        let h = &self.history[model];
        if h.is_empty() {
            0.0
        } else {
            h.iter().filter(|&&x| x).count() as f64 / h.len() as f64
        }
    }
    /// Whether a newer frame of the same model is already released.
    pub fn stale(&self, job: &Job) -> bool {
        !is_request_frame(job.frame) && self.newest[job.model].is_some_and(|f| f > job.frame)
    }
    pub fn period(&self, model: usize) -> f64 {
        self.models[model].period_ms
    }
    /// Shortest period among the active models (all models if none is active).
    pub fn shortest_period(&self) -> f64 {
        let act = self
            .models
            .iter()
            .zip(&self.active)
            .filter(|(_, a)| **a)
            .map(|(m, _)| m.period_ms)
            .fold(f64::INFINITY, f64::min);
        if act.is_finite() {
            act
        } else {
            self.models
                .iter()
                .map(|m| m.period_ms)
                .fold(f64::INFINITY, f64::min)
        }
    }
    /// Ready jobs: not running, cascade satisfied.
    pub fn ready_jobs(&self) -> impl Iterator<Item = &Job> {
        self.order.iter().filter_map(move |id| {
            let j = self.jobs.get(id)?;
            if j.running {
                return None;
            }
            if let Some(u) = self.models[j.model].upstream {
                if !is_request_frame(j.frame)
                    && self.upstream_done.get(&(u, j.frame)) != Some(&true)
                {
                    return None;
                }
            }
            Some(j)
        })
    }
    pub fn idle_accs(&self) -> impl Iterator<Item = usize> + '_ {
        self.accs
            .iter()
            .enumerate()
            .filter(|(_, a)| a.busy.is_none())
            .map(|(i, _)| i)
    }
    /// Idle accelerators `job` may run on.
    pub fn idle_accs_for<'a>(&'a self, job: &'a Job) -> impl Iterator<Item = usize> + 'a {
        self.idle_accs()
            .filter(move |&a| self.allowed(job.model, a))
    }
    /// Load ρ = Σ_ready L*(j) / (|A| · shortest period), capped at 1, where A is the set of
    /// accelerators that some active model may run on and the period is the shortest among
    /// active models (models of an inactive phase and accelerators nobody may use do not
    /// dilute it).
    pub fn load(&self) -> f64 {
        let (work, capacity) = self.load_parts();
        (work / capacity).min(1.0)
    }
    /// The two terms of ρ: Σ_ready L*(j) (ms of work) and |A| · shortest period (ms of
    /// capacity), for callers that need the load without one job.
    pub fn load_parts(&self) -> (f64, f64) {
        let s: f64 = self.ready_jobs().map(|j| self.best_remaining(j).0).sum();
        (s, self.load_parts_capacity())
    }
    /// The capacity term of ρ alone: |A| · shortest period (ms), for policies that keep the
    /// work term themselves.
    pub fn load_parts_capacity(&self) -> f64 {
        let mask = self
            .allowed
            .iter()
            .zip(&self.active)
            .filter(|(_, a)| **a)
            .fold(0u64, |m, (x, _)| m | x);
        let n = if mask == 0 {
            self.accs.len()
        } else {
            mask.count_ones() as usize
        };
        n as f64 * self.shortest_period()
    }
    /// A counter that changes at every `step` (policies keep per-step state with it).
    pub fn step_seq(&self) -> u64 {
        self.step_seq
    }

    fn finish(&mut self, id: JobId, missed: bool) -> Option<Job> {
        let j = self.jobs.remove(&id)?;
        // ids are handed out in release order, so `order` is sorted
        if let Ok(i) = self.order.binary_search(&id) {
            self.order.remove(i);
        }
        self.by_frame.remove(&(j.model, j.frame, id));
        let h = &mut self.history[j.model];
        h.push_back(missed);
        if h.len() > FAIR_W {
            h.pop_front();
        }
        Some(j)
    }

    /// Drop a job and, recursively, the same frame of its downstream models.
    pub fn drop_job(&mut self, id: JobId, reason: DropReason, out: &mut Vec<Action>) {
        let Some(j) = self.finish(id, true) else {
            return;
        };
        out.push(Action::Drop {
            job: id,
            reason,
            energy_mj: j.energy_mj,
        });
        if !self.downstreams[j.model].is_empty() && !is_request_frame(j.frame) {
            self.upstream_done.insert((j.model, j.frame), false);
            self.cascade_drop(j.model, j.frame, out);
        }
    }

    fn cascade_drop(&mut self, model: usize, frame: u64, out: &mut Vec<Action>) {
        // the downstream frames through the index, dropped in release order as a scan would
        let mut victims: Vec<JobId> = self.downstreams[model]
            .iter()
            .flat_map(|&d| self.frame_jobs(d, frame))
            .filter(|j| !j.running)
            .map(|j| j.id)
            .collect();
        victims.sort_unstable();
        victims.dedup();
        for v in victims {
            self.drop_job(v, DropReason::Cascade, out);
        }
    }

    /// Tell the engine that the upstream frame was never generated (so waiting downstream
    /// frames are dropped).
    pub fn upstream_missing(&mut self, model: usize, frame: u64, out: &mut Vec<Action>) {
        self.upstream_done.insert((model, frame), false);
        self.cascade_drop(model, frame, out);
    }
    /// Is frame `frame` of `model` known dropped/missing (for downstream releases)?
    pub fn upstream_failed(&self, model: usize, frame: u64) -> bool {
        self.upstream_done.get(&(model, frame)) == Some(&false)
    }

    /// The accelerator finished its block. Returns the completion if the job is done.
    pub fn block_done(&mut self, now: f64, acc: usize) -> Option<Action> {
        let id = self.accs[acc].busy.take()?;
        let j = self.jobs.get_mut(&id)?;
        j.running = false;
        if j.next_layer < j.end_layer {
            return None;
        }
        let late = now > j.deadline_ms + 1e-9;
        let (model, frame) = (j.model, j.frame);
        let j = self.finish(id, late)?;
        if !self.downstreams[model].is_empty() && !is_request_frame(frame) {
            self.upstream_done.insert((model, frame), true);
            // keep the map small: forget frames far behind
            if frame > 64 {
                self.upstream_done
                    .retain(|(m, f), _| *m != model || *f + 64 > frame);
            }
        }
        Some(Action::Complete {
            job: id,
            done_ms: now,
            late,
            energy_mj: j.energy_mj,
        })
    }

    /// Ask the policy for its next pick at `now` without applying it (one scheduling
    /// decision; used by benchmarks and for introspection).
    pub fn next_pick(&mut self, now: f64) -> Option<Pick> {
        // a decision of its own: policies' per-step caches must not outlive it
        self.step_seq += 1;
        let mut policy = std::mem::replace(&mut self.policy, Box::new(crate::policy::Noop));
        let p = policy.pick(now, self);
        self.policy = policy;
        p
    }

    /// Make decisions at `now`: drops, then dispatches while an idle accelerator and a ready
    /// job exist and the policy picks one.
    pub fn step(&mut self, now: f64) -> Vec<Action> {
        self.step_seq += 1;
        let mut out = Vec::new();
        // One expiry rule for every policy and for all work that is not running, started
        // (preempted) or not: a job whose deadline has passed is dropped. Without it a
        // layer-block policy that starts every job at once would keep hopeless, already-late
        // jobs runnable forever (and EDF would run them first).
        let expired: Vec<JobId> = self
            .order
            .iter()
            .filter(|id| {
                let j = &self.jobs[id];
                !j.running && now > j.deadline_ms
            })
            .copied()
            .collect();
        for id in expired {
            self.drop_job(id, DropReason::Expired, &mut out);
        }
        let mut policy = std::mem::replace(&mut self.policy, Box::new(crate::policy::Noop));
        for (id, reason) in policy.drops(now, self) {
            self.drop_job(id, reason, &mut out);
        }
        while self.idle_accs().next().is_some() {
            let Some(Pick { job, acc, layers }) = policy.pick(now, self) else {
                break;
            };
            let Some(j) = self.jobs.get(&job) else { break };
            if j.running || self.accs[acc].busy.is_some() || !self.allowed(j.model, acc) {
                break; // a policy bug must not corrupt state
            }
            let from = j.next_layer;
            let mut to = (from + layers.max(1)).min(j.end_layer);
            if self.min_block_ms > 0.0 {
                while to < j.end_layer && self.block_cost(j, acc, from, to).0 < self.min_block_ms {
                    to += 1;
                }
            }
            let (lat, en, migrated) = self.block_cost(j, acc, from, to);
            let j = self.jobs.get_mut(&job).unwrap();
            j.next_layer = to;
            j.last_acc = Some(acc);
            j.energy_mj += en;
            j.running = true;
            let a = &mut self.accs[acc];
            a.busy = Some(job);
            a.busy_ms += lat;
            a.energy_mj += en;
            out.push(Action::Dispatch {
                job,
                acc,
                from,
                to,
                latency_ms: lat,
                energy_mj: en,
                migrated,
            });
        }
        self.policy = policy;
        out
    }
}
