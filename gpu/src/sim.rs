//! A virtual-time simulator of GPUs split into partitions (MPS workers).
//!
//! - Arrivals: Poisson per model, piecewise-constant rates, seeded per model (the same arrivals in
//!   every mode for the same seed).
//! - A partition is one worker with an MPS share (or uncapped, for default MPS) serving one or more
//!   models; it runs one batch at a time (dynamic batching: up to the layout's max batch of whatever
//!   is queued), picking the model with the earliest deadline (time sharing inside a partition).
//! - Co-runners: a running batch progresses at 1 / (L(batch, share) x alpha), alpha from gpulet's model
//!   over the batches running at the same moment on the same GPU. Whenever a batch starts or ends on a
//!   GPU every running batch there is re-timed (progress kept, rate recomputed), so interference is
//!   not fixed at dispatch. Uncapped workers (default MPS) get share 1/k while k batches run.
//! - Time slicing: one batch per GPU at a time, on the full GPU, latency / 0.953.
//! - Reconfiguration is make-before-break: new workers start (`worker_start_s`) while the old layout
//!   serves; traffic moves when all are ready; old workers drain their queues and stop.
//! - Energy: P = P_idle + (P_max - P_idle) x min(1, sum of running shares), integrated per GPU.
//!
//! Plans come from a [`PlanPolicy`]: the static modes and gpulet live in [`crate::policies`], the
//! adaptive planner in the `edgeplane-planner` crate.

use crate::{GpuData, GpuError, Load};
use edgeplane_scheduler::latency::Latencies;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cmp::Ordering;
use std::collections::{BTreeSet, BinaryHeap, VecDeque};

/// A constant-rate stretch of a model's traffic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Segment {
    pub from_s: f64,
    pub to_s: f64,
    pub rps: f64,
}

/// One model of a scenario.
#[derive(Debug, Clone)]
pub struct SimModel {
    /// Deployment name (unique in a scenario).
    pub name: String,
    /// Profile model (`resnet18`, `resnet50`, `vgg16`, ...).
    pub profile: String,
    pub slo_ms: f64,
    /// Rate the operator declared at deployment (the planner's input before rates are observed).
    pub requested_rps: f64,
    /// Deployed (known to the planner) from this time until `undeploy_s`.
    pub deploy_s: f64,
    pub undeploy_s: Option<f64>,
    /// Traffic.
    pub schedule: Vec<Segment>,
    /// Value per request for shedding decisions (1 = default).
    pub value: f64,
}

/// One GPU of a scenario.
#[derive(Debug, Clone)]
pub struct SimGpu {
    pub node: String,
    /// Profile name (e.g. `Jetson-AGX-Xavier`).
    pub kind: String,
}

/// A whole experiment.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub gpus: Vec<SimGpu>,
    pub models: Vec<SimModel>,
    pub duration_s: f64,
    pub seed: u64,
    /// Start time of a new worker process (make-before-break window).
    pub worker_start_s: f64,
}

/// One model's place in a partition.
#[derive(Debug, Clone, PartialEq)]
pub struct Tenant {
    pub model: usize,
    /// Routing weight (planned rate); traffic is split across a model's partitions by weight.
    pub weight: f64,
    /// Largest batch dispatched.
    pub max_batch: u32,
}

/// A partition in a layout.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionSpec {
    pub gpu: usize,
    /// MPS share; `None` = uncapped (default MPS).
    pub share: Option<f64>,
    pub tenants: Vec<Tenant>,
}

/// What a policy asks the GPUs to run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Layout {
    pub partitions: Vec<PartitionSpec>,
    /// Deployed models the policy decided not to serve (their requests are refused).
    pub shed: Vec<usize>,
}

/// What a policy sees when asked to plan.
#[derive(Debug)]
pub struct PlanView<'a> {
    pub now_s: f64,
    pub data: &'a GpuData,
    pub scenario: &'a Scenario,
    pub deployed: &'a [bool],
    /// Highest 1-s arrival rate over the policy's window; `None` until a full window was observed.
    pub observed_peak_rps: &'a [Option<f64>],
    /// Arrivals per model per virtual second; the seconds before `floor(now_s)` are complete
    /// (a policy with its own rate estimator reads the ones it has not seen yet).
    pub arrivals_per_s: &'a [Vec<u32>],
    /// The layout serving now (or being brought up).
    pub current: &'a Layout,
}

/// A partitioning mode.
pub trait PlanPolicy {
    fn name(&self) -> &str;
    /// One batch per GPU at a time (time slicing) instead of MPS co-running.
    fn time_sliced(&self) -> bool {
        false
    }
    /// How often [`PlanPolicy::plan`] is called, s.
    fn interval_s(&self) -> f64;
    /// Window of the observed peak rate, s.
    fn window_s(&self) -> f64 {
        10.0
    }
    /// The peak is taken over averages of this many seconds.
    fn rate_bucket_s(&self) -> f64 {
        1.0
    }
    /// A new layout, or None to keep the current one.
    fn plan(&mut self, view: &PlanView<'_>) -> Result<Option<Layout>, GpuError>;
    /// Re-plans after the first plan (a re-plan may keep the layout), where the policy counts
    /// them.
    fn replans(&self) -> Option<usize> {
        None
    }
}

/// Per-model outcome.
#[derive(Debug, Clone, Default)]
pub struct ModelResult {
    pub model: String,
    pub arrived: u64,
    pub completed: u64,
    pub within_slo: u64,
    /// Requests refused (shed, or no partition at the end).
    pub refused: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Requests/s completed within SLO over the model's traffic time.
    pub goodput_rps: f64,
    pub reconfigurations: u32,
    pub energy_j: f64,
    /// Seconds during which the model had traffic queued and no serving partition.
    pub serving_gap_s: f64,
    /// (completion time s, latency ms) of every completed request.
    pub samples: Vec<(f32, f32)>,
    /// Arrival time (s) of every refused request.
    pub refused_at: Vec<f32>,
}

impl ModelResult {
    /// Fraction of requests (arrived and decided) completed within SLO.
    pub fn slo_attainment(&self) -> f64 {
        if self.arrived == 0 {
            1.0
        } else {
            self.within_slo as f64 / self.arrived as f64
        }
    }
}

/// A snapshot of the serving layout, recorded each time it changes.
#[derive(Debug, Clone)]
pub struct LayoutSnapshot {
    pub t_s: f64,
    /// (gpu, share, model names) per serving partition.
    pub partitions: Vec<(usize, f64, Vec<String>)>,
}

/// Outcome of a run.
#[derive(Debug, Clone)]
pub struct SimResult {
    pub mode: String,
    pub models: Vec<ModelResult>,
    pub layouts: Vec<LayoutSnapshot>,
    pub energy_j: f64,
}

#[derive(Debug, Clone, Copy)]
struct Req {
    model: usize,
    arrival_ms: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PState {
    Starting,
    Serving,
    Draining,
    Stopped,
}

#[derive(Debug)]
struct Run {
    model: usize,
    reqs: Vec<Req>,
    progress: f64,
    rate_per_ms: f64,
    eff_share: f64,
}

#[derive(Debug)]
struct Part {
    spec: PartitionSpec,
    state: PState,
    queues: Vec<VecDeque<Req>>,
    run: Option<Run>,
    gen: u64,
}

impl Part {
    fn queued(&self) -> usize {
        self.queues.iter().map(|q| q.len()).sum()
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Ev {
    Arrival(usize),
    Done(usize, u64),
    Ready,
    Tick,
}

#[derive(Debug, PartialEq)]
struct Event {
    t: f64,
    seq: u64,
    ev: Ev,
}
impl Eq for Event {}
impl Ord for Event {
    fn cmp(&self, o: &Self) -> Ordering {
        o.t.total_cmp(&self.t).then(o.seq.cmp(&self.seq))
    }
}
impl PartialOrd for Event {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

struct GpuState {
    last_ms: f64,
    rr: usize,
    energy_j: f64,
}

struct Transition {
    new_parts: Vec<usize>,
    layout: Layout,
}

/// Progress callback: fraction of virtual time done.
pub type Progress<'a> = &'a mut dyn FnMut(f64);

/// Run `scenario` under `policy`.
pub fn run(
    data: &GpuData,
    scenario: &Scenario,
    policy: &mut dyn PlanPolicy,
    progress: Progress<'_>,
) -> Result<SimResult, GpuError> {
    Sim::new(data, scenario, policy)?.run(progress)
}

struct Sim<'a> {
    data: &'a GpuData,
    sc: &'a Scenario,
    policy: &'a mut dyn PlanPolicy,
    parts: Vec<Part>,
    gpus: Vec<GpuState>,
    heap: BinaryHeap<Event>,
    seq: u64,
    now: f64,
    arrival_rng: Vec<ChaCha8Rng>,
    route_rng: ChaCha8Rng,
    layout: Layout,
    routing: Vec<Vec<(usize, f64)>>,
    pending: Vec<VecDeque<Req>>,
    transition: Option<Transition>,
    buckets: Vec<Vec<u32>>,
    res: Vec<ModelResult>,
    lat: Vec<Latencies>,
    busy_ms: Vec<Vec<f64>>,
    gap_since: Vec<Option<f64>>,
    layouts: Vec<LayoutSnapshot>,
    first_layout: bool,
}

fn rate_at(m: &SimModel, t_s: f64) -> (f64, f64) {
    // (rate now, end of this stretch)
    for s in &m.schedule {
        if t_s >= s.from_s && t_s < s.to_s {
            return (s.rps, s.to_s);
        }
    }
    let next = m
        .schedule
        .iter()
        .filter(|s| s.from_s > t_s)
        .map(|s| s.from_s)
        .fold(f64::INFINITY, f64::min);
    (0.0, next)
}

impl<'a> Sim<'a> {
    fn new(
        data: &'a GpuData,
        sc: &'a Scenario,
        policy: &'a mut dyn PlanPolicy,
    ) -> Result<Self, GpuError> {
        if sc.gpus.is_empty()
            || sc.models.is_empty()
            || sc.duration_s.is_nan()
            || sc.duration_s <= 0.0
        {
            return Err(GpuError::Scenario(
                "needs at least one GPU, one model and a positive duration".into(),
            ));
        }
        for g in &sc.gpus {
            data.profiles.gpu(&g.kind)?;
            data.energy.gpu(&g.kind)?;
            for m in &sc.models {
                data.profiles.curve(&g.kind, &m.profile)?;
            }
        }
        let n = sc.models.len();
        Ok(Sim {
            data,
            sc,
            policy,
            parts: Vec::new(),
            gpus: sc
                .gpus
                .iter()
                .map(|_| GpuState {
                    last_ms: 0.0,
                    rr: 0,
                    energy_j: 0.0,
                })
                .collect(),
            heap: BinaryHeap::new(),
            seq: 0,
            now: 0.0,
            arrival_rng: (0..n)
                .map(|i| {
                    ChaCha8Rng::seed_from_u64(
                        sc.seed ^ (0x9E37_79B9_7F4A_7C15u64.wrapping_mul(i as u64 + 1)),
                    )
                })
                .collect(),
            route_rng: ChaCha8Rng::seed_from_u64(sc.seed.wrapping_add(7)),
            layout: Layout::default(),
            routing: vec![Vec::new(); n],
            pending: vec![VecDeque::new(); n],
            transition: None,
            buckets: vec![vec![0; sc.duration_s.ceil() as usize + 1]; n],
            res: sc
                .models
                .iter()
                .map(|m| ModelResult {
                    model: m.name.clone(),
                    ..Default::default()
                })
                .collect(),
            lat: vec![Latencies::default(); n],
            busy_ms: vec![vec![0.0; n]; sc.gpus.len()],
            gap_since: vec![None; n],
            layouts: Vec::new(),
            first_layout: true,
        })
    }

    fn push(&mut self, t: f64, ev: Ev) {
        self.seq += 1;
        self.heap.push(Event {
            t,
            seq: self.seq,
            ev,
        });
    }

    fn next_arrival(&mut self, m: usize, from_ms: f64) {
        let model = &self.sc.models[m];
        let mut t_s = from_ms / 1000.0;
        loop {
            if t_s >= self.sc.duration_s {
                return;
            }
            let (rate, end) = rate_at(model, t_s);
            if rate <= 0.0 {
                if !end.is_finite() {
                    return;
                }
                t_s = end;
                continue;
            }
            let u: f64 = self.arrival_rng[m].gen_range(f64::MIN_POSITIVE..1.0);
            let dt = -u.ln() / rate;
            if t_s + dt < end {
                let t = (t_s + dt) * 1000.0;
                self.push(t, Ev::Arrival(m));
                return;
            }
            // memoryless: restart at the stretch boundary
            t_s = end;
        }
    }

    fn deployed(&self, t_s: f64) -> Vec<bool> {
        self.sc
            .models
            .iter()
            .map(|m| t_s >= m.deploy_s && m.undeploy_s.is_none_or(|u| t_s < u))
            .collect()
    }

    fn run(mut self, progress: Progress<'_>) -> Result<SimResult, GpuError> {
        for m in 0..self.sc.models.len() {
            self.next_arrival(m, 0.0);
        }
        self.push(0.0, Ev::Tick);
        let end_ms = self.sc.duration_s * 1000.0;
        let mut last_report = 0.0;
        while let Some(e) = self.heap.pop() {
            if e.t > end_ms {
                break;
            }
            self.now = e.t;
            if self.now - last_report > end_ms / 100.0 {
                last_report = self.now;
                progress(self.now / end_ms);
            }
            match e.ev {
                Ev::Arrival(m) => {
                    self.arrive(m);
                    self.next_arrival(m, e.t);
                }
                Ev::Done(p, gen) => self.done(p, gen)?,
                Ev::Ready => self.ready()?,
                Ev::Tick => {
                    self.tick()?;
                    let next = self.now + self.policy.interval_s() * 1000.0;
                    self.push(next, Ev::Tick);
                }
            }
        }
        self.now = end_ms;
        for g in 0..self.gpus.len() {
            self.retime(g)?;
        }
        progress(1.0);
        Ok(self.finish())
    }

    fn tick(&mut self) -> Result<(), GpuError> {
        if self.transition.is_some() {
            return Ok(());
        }
        let now_s = self.now / 1000.0;
        let deployed = self.deployed(now_s);
        let window = self.policy.window_s().max(1.0) as usize;
        let bucket = (self.policy.rate_bucket_s().max(1.0) as usize).min(window);
        let sec = now_s.floor() as usize;
        let peaks: Vec<Option<f64>> = (0..self.sc.models.len())
            .map(|m| {
                let first = self.sc.models[m]
                    .schedule
                    .iter()
                    .map(|s| s.from_s)
                    .fold(f64::INFINITY, f64::min);
                if sec < window || (first.is_finite() && now_s < first + window as f64) {
                    return None;
                }
                let w = &self.buckets[m][sec - window..sec];
                let peak = w
                    .rchunks(bucket)
                    .map(|c| c.iter().map(|&x| x as f64).sum::<f64>() / c.len() as f64)
                    .fold(0.0, f64::max);
                Some(peak)
            })
            .collect();
        let view = PlanView {
            now_s,
            data: self.data,
            scenario: self.sc,
            deployed: &deployed,
            observed_peak_rps: &peaks,
            arrivals_per_s: &self.buckets,
            current: &self.layout,
        };
        let Some(new) = self.policy.plan(&view)? else {
            return Ok(());
        };
        if new == self.layout {
            return Ok(());
        }
        self.apply(new)
    }

    fn apply(&mut self, new: Layout) -> Result<(), GpuError> {
        for p in &new.partitions {
            if p.gpu >= self.gpus.len() || p.share.is_some_and(|s| !(s > 0.0 && s <= 1.0)) {
                return Err(GpuError::Scenario(format!(
                    "policy produced a bad partition {p:?}"
                )));
            }
        }
        let mut used = BTreeSet::new();
        let mut new_parts = Vec::new();
        let mut starting = false;
        for spec in &new.partitions {
            let reuse = self.parts.iter().enumerate().position(|(i, p)| {
                !used.contains(&i)
                    && matches!(p.state, PState::Serving)
                    && same_shape(&p.spec, spec)
            });
            match reuse {
                Some(i) => {
                    used.insert(i);
                    self.parts[i].spec = spec.clone();
                    new_parts.push(i);
                }
                None => {
                    let i = self.parts.len();
                    let ready = self.first_layout;
                    self.parts.push(Part {
                        spec: spec.clone(),
                        state: if ready {
                            PState::Serving
                        } else {
                            PState::Starting
                        },
                        queues: vec![VecDeque::new(); self.sc.models.len()],
                        run: None,
                        gen: 0,
                    });
                    used.insert(i);
                    new_parts.push(i);
                    starting |= !ready;
                }
            }
        }
        self.first_layout = false;
        self.transition = Some(Transition {
            new_parts,
            layout: new,
        });
        if starting {
            let t = self.now + self.sc.worker_start_s * 1000.0;
            self.push(t, Ev::Ready);
            Ok(())
        } else {
            self.ready()
        }
    }

    /// All new workers are up: move traffic, retire the old ones (they drain their queues).
    fn ready(&mut self) -> Result<(), GpuError> {
        let Some(tr) = self.transition.take() else {
            return Ok(());
        };
        let n = self.sc.models.len();
        let old_sets: Vec<BTreeSet<usize>> = (0..n)
            .map(|m| self.routing[m].iter().map(|(p, _)| *p).collect())
            .collect();
        let keep: BTreeSet<usize> = tr.new_parts.iter().copied().collect();
        for &i in &tr.new_parts {
            self.parts[i].state = PState::Serving;
        }
        let mut touched = BTreeSet::new();
        for i in 0..self.parts.len() {
            if !keep.contains(&i) && self.parts[i].state == PState::Serving {
                self.parts[i].state = PState::Draining;
                touched.insert(self.parts[i].spec.gpu);
                self.maybe_stop(i);
            }
        }
        let mut routing = vec![Vec::new(); n];
        for &i in &tr.new_parts {
            for t in &self.parts[i].spec.tenants {
                routing[t.model].push((i, t.weight.max(1e-9)));
            }
            touched.insert(self.parts[i].spec.gpu);
        }
        for m in 0..n {
            let new_set: BTreeSet<usize> = routing[m].iter().map(|(p, _)| *p).collect();
            if !old_sets[m].is_empty() && new_set != old_sets[m] && !new_set.is_empty() {
                self.res[m].reconfigurations += 1;
            }
        }
        self.routing = routing;
        self.layout = tr.layout;
        self.layouts.push(LayoutSnapshot {
            t_s: self.now / 1000.0,
            partitions: tr
                .new_parts
                .iter()
                .map(|&i| {
                    let p = &self.parts[i].spec;
                    (
                        p.gpu,
                        p.share.unwrap_or(1.0),
                        p.tenants
                            .iter()
                            .map(|t| self.sc.models[t.model].name.clone())
                            .collect(),
                    )
                })
                .collect(),
        });
        for m in 0..n {
            let reqs: Vec<Req> = self.pending[m].drain(..).collect();
            for r in reqs {
                self.route(r);
            }
            if !self.routing[m].is_empty() {
                if let Some(since) = self.gap_since[m].take() {
                    self.res[m].serving_gap_s += (self.now - since) / 1000.0;
                }
            }
        }
        for g in touched {
            self.dispatch(g)?;
        }
        Ok(())
    }

    fn arrive(&mut self, m: usize) {
        let sec = (self.now / 1000.0) as usize;
        if let Some(b) = self.buckets[m].get_mut(sec) {
            *b += 1;
        }
        self.res[m].arrived += 1;
        let r = Req {
            model: m,
            arrival_ms: self.now,
        };
        if let Some(g) = self.route(r) {
            // dispatch errors are impossible for validated scenarios; surface as refusals otherwise
            if self.dispatch(g).is_err() {
                self.res[m].refused += 1;
            }
        }
    }

    /// Queue a request on one of its model's partitions; returns the GPU to dispatch on.
    fn route(&mut self, r: Req) -> Option<usize> {
        let m = r.model;
        if self.routing[m].is_empty() {
            if self.layout.shed.contains(&m) {
                self.res[m].refused += 1;
                self.res[m].refused_at.push((self.now / 1000.0) as f32);
            } else {
                self.gap_since[m].get_or_insert(self.now);
                self.pending[m].push_back(r);
            }
            return None;
        }
        let total: f64 = self.routing[m].iter().map(|(_, w)| w).sum();
        let mut x = self.route_rng.gen_range(0.0..total);
        let mut pick = self.routing[m][0].0;
        for &(p, w) in &self.routing[m] {
            if x < w {
                pick = p;
                break;
            }
            x -= w;
        }
        self.parts[pick].queues[m].push_back(r);
        Some(self.parts[pick].spec.gpu)
    }

    fn maybe_stop(&mut self, i: usize) {
        let p = &mut self.parts[i];
        if p.state == PState::Draining && p.run.is_none() && p.queued() == 0 {
            p.state = PState::Stopped;
        }
    }

    fn dispatch(&mut self, g: usize) -> Result<(), GpuError> {
        let ts = self.policy.time_sliced();
        let ids: Vec<usize> = (0..self.parts.len())
            .filter(|&i| self.parts[i].spec.gpu == g)
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        let mut started = false;
        let k = ids.len();
        let start = self.gpus[g].rr % k;
        for off in 0..k {
            if ts && (started || ids.iter().any(|&i| self.parts[i].run.is_some())) {
                break;
            }
            let i = ids[(start + off) % k];
            let p = &self.parts[i];
            if p.run.is_some()
                || !matches!(p.state, PState::Serving | PState::Draining)
                || p.queued() == 0
            {
                continue;
            }
            // earliest deadline among this worker's models
            let m = (0..p.queues.len())
                .filter(|&m| !p.queues[m].is_empty())
                .min_by(|&a, &b| {
                    let da = p.queues[a][0].arrival_ms + self.sc.models[a].slo_ms;
                    let db = p.queues[b][0].arrival_ms + self.sc.models[b].slo_ms;
                    da.total_cmp(&db)
                })
                .expect("queued > 0");
            let maxb = p
                .spec
                .tenants
                .iter()
                .find(|t| t.model == m)
                .map(|t| t.max_batch)
                .unwrap_or(1)
                .clamp(1, self.data.profiles.max_batch());
            let p = &mut self.parts[i];
            let n = (maxb as usize).min(p.queues[m].len());
            let reqs: Vec<Req> = p.queues[m].drain(..n).collect();
            self.retime(g)?; // account time before the set of runs changes
            self.parts[i].run = Some(Run {
                model: m,
                reqs,
                progress: 0.0,
                rate_per_ms: 0.0,
                eff_share: 0.0,
            });
            started = true;
            self.gpus[g].rr = (start + off + 1) % k;
        }
        if started {
            self.retime(g)?;
        }
        Ok(())
    }

    /// Advance every run on GPU `g` to now, integrate energy, recompute rates and completions.
    fn retime(&mut self, g: usize) -> Result<(), GpuError> {
        let dt = self.now - self.gpus[g].last_ms;
        let kind = self.sc.gpus[g].kind.clone();
        let pm = self.data.energy.gpu(&kind)?;
        let ts = self.policy.time_sliced();
        let ids: Vec<usize> = (0..self.parts.len())
            .filter(|&i| self.parts[i].spec.gpu == g && self.parts[i].run.is_some())
            .collect();
        // 1. progress and energy over [last, now] with the old rates
        if dt > 0.0 {
            let sum: f64 = ids
                .iter()
                .map(|&i| self.parts[i].run.as_ref().map_or(0.0, |r| r.eff_share))
                .sum();
            let u = sum.min(1.0);
            self.gpus[g].energy_j += pm.energy_j(u, dt / 1000.0);
            for &i in &ids {
                let r = self.parts[i].run.as_mut().expect("running");
                r.progress += dt * r.rate_per_ms;
                if sum > 0.0 {
                    let dyn_j = (pm.max_w - pm.idle_w) * u * (r.eff_share / sum) * dt / 1000.0;
                    self.res[r.model].energy_j += dyn_j;
                }
                self.busy_ms[g][r.model] += dt;
            }
        }
        self.gpus[g].last_ms = self.now;
        // 2. new rates with the current co-runners
        let k = ids.len().max(1) as f64;
        let loads: Vec<(usize, String, f64, f64)> = ids
            .iter()
            .map(|&i| {
                let p = &self.parts[i];
                let r = p.run.as_ref().expect("running");
                (
                    i,
                    self.sc.models[r.model].profile.clone(),
                    r.reqs.len() as f64,
                    p.spec.share.unwrap_or(1.0),
                )
            })
            .collect();
        for (idx, &i) in ids.iter().enumerate() {
            let eff = if ts {
                1.0
            } else {
                self.parts[i].spec.share.unwrap_or(1.0 / k)
            };
            let (_, ref name, batch, share_a) = loads[idx];
            let mut l = self.data.profiles.latency_ms(&kind, name, batch, eff)?;
            if ts {
                l /= self.data.interference.time_slice_factor;
            }
            let me = Load {
                model: name,
                batch,
                share: share_a,
            };
            let others: Vec<Load<'_>> = loads
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != idx)
                .map(|(_, (_, n, b, s))| Load {
                    model: n,
                    batch: *b,
                    share: *s,
                })
                .collect();
            let alpha = self.data.interference.alpha(me, &others);
            let rate = 1.0 / (l * alpha);
            let p = &mut self.parts[i];
            p.gen += 1;
            let gen = p.gen;
            let r = p.run.as_mut().expect("running");
            r.rate_per_ms = rate;
            r.eff_share = eff;
            let left = ((1.0 - r.progress).max(0.0)) / rate;
            let t = self.now + left;
            self.push(t, Ev::Done(i, gen));
        }
        Ok(())
    }

    fn done(&mut self, i: usize, gen: u64) -> Result<(), GpuError> {
        if self.parts[i].gen != gen || self.parts[i].run.is_none() {
            return Ok(());
        }
        let g = self.parts[i].spec.gpu;
        self.retime(g)?;
        let run = self.parts[i].run.take().expect("running");
        let slo = self.sc.models[run.model].slo_ms;
        for r in &run.reqs {
            let lat = self.now - r.arrival_ms;
            let res = &mut self.res[run.model];
            res.completed += 1;
            if lat <= slo {
                res.within_slo += 1;
            }
            res.samples.push(((self.now / 1000.0) as f32, lat as f32));
            self.lat[run.model].record_ms(lat);
        }
        self.maybe_stop(i);
        self.retime(g)?;
        self.dispatch(g)
    }

    fn finish(mut self) -> SimResult {
        // idle power: split over the models by their busy time on that GPU
        let total_e: f64 = self.gpus.iter().map(|g| g.energy_j).sum();
        for (g, st) in self.gpus.iter().enumerate() {
            let pm = self
                .data
                .energy
                .gpu(&self.sc.gpus[g].kind)
                .expect("validated");
            let idle = pm.idle_w * self.sc.duration_s;
            let _ = st;
            let busy: f64 = self.busy_ms[g].iter().sum();
            if busy > 0.0 {
                for m in 0..self.sc.models.len() {
                    self.res[m].energy_j += idle * self.busy_ms[g][m] / busy;
                }
            }
        }
        for m in 0..self.sc.models.len() {
            // requests still queued at the end that already missed their SLO count as misses;
            // the others are not decided and leave the denominator
            let slo = self.sc.models[m].slo_ms;
            let mut undecided = 0u64;
            let mut waiting: Vec<Req> = self.pending[m].iter().copied().collect();
            for p in &self.parts {
                waiting.extend(p.queues[m].iter().copied());
                if let Some(r) = &p.run {
                    if r.model == m {
                        waiting.extend(r.reqs.iter().copied());
                    }
                }
            }
            for r in waiting {
                if self.now - r.arrival_ms <= slo {
                    undecided += 1;
                }
            }
            if let Some(since) = self.gap_since[m] {
                self.res[m].serving_gap_s += (self.now - since) / 1000.0;
            }
            let res = &mut self.res[m];
            res.arrived -= undecided;
            res.p50_ms = self.lat[m].quantile_ms(0.50);
            res.p99_ms = self.lat[m].quantile_ms(0.99);
            let active: f64 = self.sc.models[m]
                .schedule
                .iter()
                .map(|s| (s.to_s.min(self.sc.duration_s) - s.from_s).max(0.0))
                .sum();
            res.goodput_rps = if active > 0.0 {
                res.within_slo as f64 / active
            } else {
                0.0
            };
        }
        SimResult {
            mode: self.policy.name().to_string(),
            models: self.res,
            layouts: self.layouts,
            energy_j: total_e,
        }
    }
}

fn same_shape(a: &PartitionSpec, b: &PartitionSpec) -> bool {
    let key = |p: &PartitionSpec| {
        let mut v: Vec<(usize, u32)> = p.tenants.iter().map(|t| (t.model, t.max_batch)).collect();
        v.sort();
        v
    };
    a.gpu == b.gpu
        && match (a.share, b.share) {
            (Some(x), Some(y)) => (x - y).abs() < 1e-9,
            (None, None) => true,
            _ => false,
        }
        && key(a) == key(b)
}
