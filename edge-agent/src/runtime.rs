//! The real-time runtime: one task owns the scheduling core and drives it with wall-clock
//! `now` (ms since the runtime started). Jobs arrive from `Infer` calls and scenario
//! sources over a channel; executors (one per accelerator) report finished blocks back over
//! another. The core is called on every event and on a 1 ms tick (so infeasible frames are
//! dropped promptly even when nothing else happens); each call is timed, which gives the
//! scheduling overhead per decision that the agent reports.

use crate::core::{Action, CoreError, JobId, SchedulingCore};
use crate::discovery::Accelerator;
use crate::partition::WorkerFactory;
use crate::stats::Stats;
use edgeplane_proto::agent::Assignment;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc, oneshot};

/// How a job ended.
#[derive(Debug, Clone, PartialEq)]
pub struct JobOutcome {
    pub completed: bool,
    pub deadline_met: bool,
    pub latency_ms: f64,
    pub accelerator_id: String,
    pub energy_mj: f64,
    pub reason: String,
}

/// A job submitted to the runtime.
pub struct Request {
    pub model: String,
    pub deadline: Instant,
    pub arrival: Instant,
    pub reply: Option<oneshot::Sender<Result<JobOutcome, CoreError>>>,
    /// The job's tensors, for worker-backed executors (None: simulated, opaque payload).
    pub io: Option<Arc<crate::oip::JobIo>>,
    /// Its frame index when it comes from a frame stream (a scenario source); None for a
    /// request from outside any stream (`Infer`). See `SchedulingCore::release_frame`.
    pub frame: Option<u64>,
}

/// One block of work for an executor.
#[derive(Debug, Clone)]
pub struct Block {
    pub model: String,
    pub layers: u32,
    /// Modelled latency and energy (a real worker measures its own).
    pub latency_ms: f64,
    pub energy_mj: f64,
    /// Requests in the block: 1 on NPUs (a layer block of one frame); on a GPU partition the
    /// batch the scheduler formed (one inference call of `batch` inputs).
    pub batch: u32,
    /// The job's tensors (worker-backed executors fill in the result before completing).
    pub io: Option<Arc<crate::oip::JobIo>>,
}

/// Runs blocks on one accelerator. The simulated executor waits the modelled latency; a GPU
/// executor (a worker process under an MPS share) will implement the same trait, returning
/// the energy it measured.
pub trait Executor: Send + Sync {
    /// Start the block; `done` is called (from any thread) with the energy actually spent
    /// (mJ) when it finished. A callback rather than a future: the completion goes straight
    /// into the runtime's channel, without a task hop per block.
    fn run(&self, block: Block, done: Completion);
}

/// Called once when a block finished, with its energy in mJ.
pub type Completion = Box<dyn FnOnce(f64) + Send>;

/// Waits the modelled latency and accounts the modelled energy.
///
/// The wait is a `std::thread::sleep` on the accelerator's own thread, not a tokio timer: tokio's timer
/// wheel has 1 ms resolution and rounds up, which on 3 ms XRBench layers blocks made every
/// job ~30 % slower than modelled and cost the real-time run >10 deadline-met points against
/// the same core in virtual time. `nanosleep` is accurate to tens of µs; at most one thread
/// per accelerator is used.
///
/// Back-to-back blocks are timed on one timeline: when a block is dispatched less than
/// [`CONTIGUOUS`] after the previous one was due to finish, it starts at that due time, not
/// at "now". A real accelerator's queue runs layers back to back while the host decides; the
/// runtime's wake-up and decision latency (tens of µs per block) would otherwise add up over
/// a 40-layer model run one layer block at a time.
pub struct SimExecutor {
    due: Mutex<Option<Instant>>,
    /// The accelerator's own OS thread: waits out each block with `nanosleep`.
    tx: std::sync::mpsc::Sender<(Instant, f64, Completion)>,
}

impl Default for SimExecutor {
    fn default() -> Self {
        let (tx, rx) = std::sync::mpsc::channel::<(Instant, f64, Completion)>();
        // The thread ends when the executor (its sender) is dropped.
        std::thread::spawn(move || {
            while let Ok((until, energy_mj, done)) = rx.recv() {
                sleep_until_precise(until);
                done(energy_mj);
            }
        });
        SimExecutor {
            due: Mutex::new(None),
            tx,
        }
    }
}

/// Gap under which a block continues the previous block's timeline (see [`SimExecutor`]).
pub const CONTIGUOUS: Duration = Duration::from_micros(500);

impl Executor for SimExecutor {
    fn run(&self, block: Block, done: Completion) {
        let now = Instant::now();
        let mut due = self.due.lock().expect("executor lock");
        let start = match *due {
            Some(prev) if prev <= now && now - prev < CONTIGUOUS => prev,
            _ => now,
        };
        let until = start + Duration::from_secs_f64(block.latency_ms.max(0.0) / 1000.0);
        *due = Some(until);
        drop(due);
        if until <= now {
            // Catching up on the timeline: the block would already have finished back to
            // back behind the previous one. Complete it here, without the round trip through
            // the accelerator's thread: two thread wake-ups per block (tens of µs on a busy
            // 2-core box) were more than many XRBench layers take, and over HT's 224
            // one-layer blocks they added ~5 ms per frame.
            done(block.energy_mj);
            return;
        }
        if let Err(std::sync::mpsc::SendError((_, e, done))) =
            self.tx.send((until, block.energy_mj, done))
        {
            done(e); // executor thread gone: finish at once rather than hang the job
        }
    }
}

/// Sleep the calling (non-async) thread until `until`, to within tens of µs.
pub fn sleep_until_precise(until: Instant) {
    loop {
        let now = Instant::now();
        if now >= until {
            return;
        }
        std::thread::sleep(until - now);
    }
}

/// State shared between the runtime task, the gRPC services and the coordinator link.
pub struct Shared {
    pub name: String,
    pub accelerators: Vec<Accelerator>,
    pub stats: Mutex<Stats>,
    pub start: Instant,
    /// The assignment served now (None = never assigned: serve every catalogue model).
    pub assignment: RwLock<Option<Assignment>>,
    pub connected: RwLock<Option<String>>,
}

impl Shared {
    pub fn epoch(&self) -> u64 {
        self.assignment
            .read()
            .expect("assignment lock")
            .as_ref()
            .map_or(0, |a| a.epoch)
    }

    /// Models served now: the assignment's, or every catalogue model before any assignment.
    pub fn served_models(&self) -> Option<BTreeSet<String>> {
        self.assignment
            .read()
            .expect("assignment lock")
            .as_ref()
            .map(|a| {
                a.partitions
                    .iter()
                    .flat_map(|p| p.models.iter().cloned())
                    .collect()
            })
    }

    pub fn serves(&self, model: &str) -> bool {
        self.served_models().is_none_or(|m| m.contains(model))
    }
}

/// Cheap handle to submit jobs.
#[derive(Clone)]
pub struct RuntimeHandle {
    tx: mpsc::Sender<Request>,
    pub shared: Arc<Shared>,
}

impl RuntimeHandle {
    /// Submit a job and wait for its outcome.
    pub async fn infer(
        &self,
        model: &str,
        relative_deadline: Duration,
    ) -> Result<JobOutcome, CoreError> {
        self.infer_with(model, relative_deadline, None).await
    }

    /// Submit a job carrying tensors (`io`) and wait for its outcome; a worker-backed
    /// executor leaves the output (or the worker's error) in `io.result`.
    pub async fn infer_with(
        &self,
        model: &str,
        relative_deadline: Duration,
        io: Option<Arc<crate::oip::JobIo>>,
    ) -> Result<JobOutcome, CoreError> {
        let (tx, rx) = oneshot::channel();
        let now = Instant::now();
        let req = Request {
            model: model.into(),
            arrival: now,
            deadline: now + relative_deadline,
            reply: Some(tx),
            io,
            frame: None,
        };
        let shutting = || JobOutcome {
            completed: false,
            deadline_met: false,
            latency_ms: 0.0,
            accelerator_id: String::new(),
            energy_mj: 0.0,
            reason: "agent shutting down".into(),
        };
        if self.tx.send(req).await.is_err() {
            return Ok(shutting());
        }
        rx.await.unwrap_or_else(|_| Ok(shutting()))
    }

    /// Submit frame `frame` of a scenario source's stream of `model` without waiting.
    pub fn submit(&self, model: &str, frame: u64, arrival: Instant, deadline: Instant) -> bool {
        self.tx
            .try_send(Request {
                model: model.into(),
                arrival,
                deadline,
                reply: None,
                io: None,
                frame: Some(frame),
            })
            .is_ok()
    }
}

struct Running {
    model: String,
    arrival: Instant,
    deadline: Instant,
    energy_mj: f64,
    acc: Option<usize>,
    reply: Option<oneshot::Sender<Result<JobOutcome, CoreError>>>,
    io: Option<Arc<crate::oip::JobIo>>,
}

enum Ev {
    Req(Request),
    Done(Done),
    Ready(usize, u64, Result<(), String>),
    Tick,
}

/// A slot's (id, executor, worker generation).
type SlotWorker = (String, Arc<dyn Executor>, u64);

struct Done {
    jobs: Vec<JobId>,
    acc: usize,
    /// Which worker of slot `acc` ran it (slots are reused by later partitions).
    generation: u64,
    last: bool,
    energy_mj: f64,
    started: Instant,
}

/// Start the runtime task over fixed accelerators (NPUs); GPU partitions get simulated
/// workers that are ready at once. See [`start_with`].
pub fn start(
    shared: Arc<Shared>,
    core: Box<dyn SchedulingCore>,
    executors: Vec<Arc<dyn Executor>>,
    shutdown: broadcast::Receiver<()>,
) -> (RuntimeHandle, tokio::task::JoinHandle<()>) {
    let factory = Arc::new(crate::partition::SimWorkerFactory {
        start_time: Duration::ZERO,
    });
    start_with(shared, core, executors, factory, shutdown)
}

/// Start the runtime task. `executors` serve the fixed accelerators (slot i = accelerator
/// i); GPU partitions from the assignment get their workers from `factory` (one per
/// partition, with its start time).
pub fn start_with(
    shared: Arc<Shared>,
    mut core: Box<dyn SchedulingCore>,
    executors: Vec<Arc<dyn Executor>>,
    factory: Arc<dyn WorkerFactory>,
    mut shutdown: broadcast::Receiver<()>,
) -> (RuntimeHandle, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Request>(4096);
    let handle = RuntimeHandle {
        tx,
        shared: shared.clone(),
    };
    let task = tokio::spawn(async move {
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
        let (ready_tx, mut ready_rx) =
            mpsc::unbounded_channel::<(usize, u64, Result<(), String>)>();
        let mut jobs: HashMap<JobId, Running> = HashMap::new();
        // slot -> (id, executor, worker generation, partition spec for GPU slots)
        let mut slots: Vec<Option<SlotWorker>> = executors
            .into_iter()
            .enumerate()
            .map(|(i, e)| {
                let id = shared
                    .accelerators
                    .get(i)
                    .map(|a| a.id.clone())
                    .unwrap_or_else(|| format!("acc{i}"));
                Some((id, e, 0))
            })
            .collect();
        let mut generation: u64 = 0;
        let mut applied_epoch: Option<u64> = None;
        let ms = |t: Instant| t.saturating_duration_since(shared.start).as_secs_f64() * 1000.0;
        // The core says when it next needs a step without an event (its next drop); cores
        // that cannot tell get one every millisecond. The assignment is also checked then.
        let mut wake = Instant::now();
        loop {
            // Wait for one event, then take every other event already there, so a burst of
            // completions and arrivals costs one scheduling step, not one each.
            let first = tokio::select! {
                _ = shutdown.recv() => break,
                Some(req) = rx.recv() => Ev::Req(req),
                Some(d) = done_rx.recv() => Ev::Done(d),
                Some((a, g, r)) = ready_rx.recv() => Ev::Ready(a, g, r),
                _ = tokio::time::sleep_until(wake.into()) => Ev::Tick,
            };
            let mut events = vec![first];
            while let Ok(d) = done_rx.try_recv() {
                events.push(Ev::Done(d));
            }
            while let Ok((a, g, r)) = ready_rx.try_recv() {
                events.push(Ev::Ready(a, g, r));
            }
            while let Ok(r) = rx.try_recv() {
                events.push(Ev::Req(r));
            }
            // A new assignment (the link applied it): hand it to the core first, so the
            // requests of this round already see the new partitions.
            let epoch = shared.epoch();
            if applied_epoch != Some(epoch) {
                applied_epoch = Some(epoch);
                let a = shared.assignment.read().expect("assignment lock").clone();
                if let Some(a) = a {
                    core.assign(ms(Instant::now()), &a);
                }
            }
            for ev in events {
                match ev {
                    Ev::Tick => {}
                    Ev::Ready(acc, g, r) => {
                        let current = slots
                            .get(acc)
                            .and_then(|s| s.as_ref())
                            .is_some_and(|s| s.2 == g);
                        if current {
                            if let (Ok(()), Some(Some((id, ..)))) = (&r, slots.get(acc)) {
                                let mut st = shared.stats.lock().expect("stats");
                                if let Some(p) = st.partitions.get_mut(id) {
                                    p.ready = true;
                                }
                            }
                            core.slot_ready(ms(Instant::now()), acc, r);
                        }
                    }
                    Ev::Req(req) => {
                        let now = ms(Instant::now());
                        let deadline = ms(req.deadline);
                        shared
                            .stats
                            .lock()
                            .expect("stats")
                            .model(&req.model)
                            .arrivals += 1;
                        let released = match req.frame {
                            Some(f) => core.release_frame(now, &req.model, f, deadline),
                            None => core.release(now, &req.model, deadline),
                        };
                        match released {
                            Ok(id) => {
                                jobs.insert(
                                    id,
                                    Running {
                                        model: req.model,
                                        arrival: req.arrival,
                                        deadline: req.deadline,
                                        energy_mj: 0.0,
                                        acc: None,
                                        reply: req.reply,
                                        io: req.io,
                                    },
                                );
                            }
                            Err(e) => {
                                shared.stats.lock().expect("stats").model(&req.model).drops += 1;
                                if let Some(r) = req.reply {
                                    let _ = r.send(Err(e));
                                }
                            }
                        }
                    }
                    Ev::Done(d) => {
                        let now_i = Instant::now();
                        let slot_id = match slots.get(d.acc) {
                            Some(Some((id, _, g))) if *g == d.generation => Some(id.clone()),
                            _ => None,
                        };
                        if slot_id.is_some() {
                            core.block_done(ms(now_i), d.acc);
                        }
                        let mut st = shared.stats.lock().expect("stats");
                        if let Some(id) = &slot_id {
                            if let Some((_, a)) = st.accelerators.iter_mut().find(|(x, _)| x == id)
                            {
                                a.busy_ms += now_i.duration_since(d.started).as_secs_f64() * 1000.0;
                                a.energy_mj += d.energy_mj;
                            }
                        }
                        let share = d.energy_mj / d.jobs.len().max(1) as f64;
                        for job in &d.jobs {
                            if let Some(j) = jobs.get_mut(job) {
                                j.energy_mj += share;
                            }
                            if d.last {
                                if let Some(j) = jobs.remove(job) {
                                    let latency_ms =
                                        now_i.duration_since(j.arrival).as_secs_f64() * 1000.0;
                                    // The worker answered with an error (it died, refused the
                                    // tensor): the job did not complete. Counted as a drop, never
                                    // as completed or met; the client gets the worker's status.
                                    let worker_error = j.io.as_ref().and_then(|io| {
                                        io.result
                                            .lock()
                                            .expect("io lock")
                                            .as_ref()
                                            .and_then(|r| r.as_ref().err())
                                            .map(|s| s.message().to_string())
                                    });
                                    if let Some(why) = worker_error {
                                        let m = st.model(&j.model);
                                        m.drops += 1;
                                        m.energy_mj += j.energy_mj;
                                        if let Some(r) = j.reply {
                                            let _ = r.send(Ok(JobOutcome {
                                                completed: false,
                                                deadline_met: false,
                                                latency_ms,
                                                accelerator_id: slot_id.clone().unwrap_or_default(),
                                                energy_mj: j.energy_mj,
                                                reason: format!("worker error: {why}"),
                                            }));
                                        }
                                        continue;
                                    }
                                    let met = now_i <= j.deadline;
                                    st.complete(&j.model, latency_ms, met, j.energy_mj);
                                    if let Some(r) = j.reply {
                                        let _ = r.send(Ok(JobOutcome {
                                            completed: true,
                                            deadline_met: met,
                                            latency_ms,
                                            accelerator_id: slot_id.clone().unwrap_or_default(),
                                            energy_mj: j.energy_mj,
                                            reason: String::new(),
                                        }));
                                    }
                                }
                            }
                        }
                    }
                }
            }
            let t0 = Instant::now();
            let actions = core.step(ms(t0));
            let spent = t0.elapsed().as_nanos();
            let controllers = core.controllers();
            {
                let mut st = shared.stats.lock().expect("stats");
                st.controllers = controllers;
                st.steps += 1;
                if !actions.is_empty() {
                    st.decision_ns += spent;
                    st.decisions += actions.len() as u64;
                }
            }
            // next wake-up: the core's next drop, at least every 50 ms (a new assignment
            // the link applied is picked up then), at most every millisecond
            let now_i = Instant::now();
            let next_ms = core
                .next_wakeup_ms(ms(now_i))
                .map_or(50.0, |t| (t - ms(now_i)).clamp(1.0, 50.0));
            wake = now_i + Duration::from_secs_f64(next_ms / 1000.0);
            for a in actions {
                match a {
                    Action::Dispatch {
                        job,
                        acc,
                        layers,
                        latency_ms,
                        energy_mj,
                        last,
                    } => {
                        let Some(j) = jobs.get_mut(&job) else {
                            continue;
                        };
                        let Some(Some((_, ex, g))) = slots.get(acc) else {
                            continue;
                        };
                        j.acc = Some(acc);
                        let block = Block {
                            model: j.model.clone(),
                            layers,
                            latency_ms,
                            energy_mj,
                            batch: 1,
                            io: j.io.clone(),
                        };
                        let done_tx = done_tx.clone();
                        let started = Instant::now();
                        let generation = *g;
                        ex.run(
                            block,
                            Box::new(move |energy_mj| {
                                let _ = done_tx.send(Done {
                                    jobs: vec![job],
                                    acc,
                                    generation,
                                    last,
                                    energy_mj,
                                    started,
                                });
                            }),
                        );
                    }
                    Action::DispatchBatch {
                        jobs: batch_jobs,
                        acc,
                        model,
                        batch,
                        latency_ms,
                        energy_mj,
                    } => {
                        let Some(Some((_, ex, g))) = slots.get(acc) else {
                            continue;
                        };
                        for id in &batch_jobs {
                            if let Some(j) = jobs.get_mut(id) {
                                j.acc = Some(acc);
                            }
                        }
                        let done_tx = done_tx.clone();
                        let started = Instant::now();
                        let generation = *g;
                        ex.run(
                            Block {
                                model,
                                layers: 1,
                                latency_ms,
                                energy_mj,
                                batch,
                                // simulated GPU partitions compute nothing: no tensors
                                io: None,
                            },
                            Box::new(move |energy_mj| {
                                let _ = done_tx.send(Done {
                                    jobs: batch_jobs,
                                    acc,
                                    generation,
                                    last: true,
                                    energy_mj,
                                    started,
                                });
                            }),
                        );
                    }
                    Action::StartPartition { acc, spec } => {
                        generation += 1;
                        let g = generation;
                        let tx = ready_tx.clone();
                        let ex = factory.start(
                            &spec,
                            Box::new(move |r| {
                                let _ = tx.send((acc, g, r));
                            }),
                        );
                        if slots.len() <= acc {
                            slots.resize_with(acc + 1, || None);
                        }
                        slots[acc] = Some((spec.id.clone(), ex, g));
                        let mut st = shared.stats.lock().expect("stats");
                        st.accelerators
                            .push((spec.id.clone(), crate::stats::AccStats::default()));
                        st.partitions.insert(
                            spec.id.clone(),
                            crate::stats::PartitionMeta {
                                accelerator_id: spec.accelerator_id.clone(),
                                share_pct: spec.share_pct,
                                models: spec.models.clone(),
                                ready: false,
                            },
                        );
                    }
                    Action::StopPartition { acc, spec } => {
                        if let Some(slot) = slots.get_mut(acc) {
                            *slot = None;
                        }
                        factory.stop(&spec);
                        let mut st = shared.stats.lock().expect("stats");
                        st.accelerators.retain(|(id, _)| id != &spec.id);
                        st.partitions.remove(&spec.id);
                    }
                    Action::Drop { job, reason } => {
                        if let Some(j) = jobs.remove(&job) {
                            let now_i = Instant::now();
                            let mut st = shared.stats.lock().expect("stats");
                            let m = st.model(&j.model);
                            m.drops += 1;
                            m.energy_mj += j.energy_mj;
                            drop(st);
                            tracing::debug!(job, model = %j.model, %reason, "dropped");
                            if let Some(r) = j.reply {
                                let _ = r.send(Ok(JobOutcome {
                                    completed: false,
                                    deadline_met: false,
                                    latency_ms: now_i.duration_since(j.arrival).as_secs_f64()
                                        * 1000.0,
                                    accelerator_id: j
                                        .acc
                                        .and_then(|a| {
                                            slots
                                                .get(a)
                                                .and_then(|s| s.as_ref())
                                                .map(|s| s.0.clone())
                                        })
                                        .unwrap_or_default(),
                                    energy_mj: j.energy_mj,
                                    reason,
                                }));
                            }
                        }
                    }
                }
            }
        }
        // Shutdown: answer everyone still waiting.
        for (_, j) in jobs.drain() {
            if let Some(r) = j.reply {
                let _ = r.send(Ok(JobOutcome {
                    completed: false,
                    deadline_met: false,
                    latency_ms: 0.0,
                    accelerator_id: String::new(),
                    energy_mj: 0.0,
                    reason: "agent shutting down".into(),
                }));
            }
        }
    });
    (handle, task)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::fake::FakeFactory;
    use edgeplane_proto::agent::Partition;

    /// A worker that answers every job with an error (as a dying worker does).
    struct FailingExecutor;
    impl Executor for FailingExecutor {
        fn run(&self, block: Block, done: Completion) {
            if let Some(io) = &block.io {
                *io.result.lock().unwrap() = Some(Err(tonic::Status::unavailable("worker died")));
            }
            done(0.0);
        }
    }

    #[tokio::test]
    async fn a_worker_error_is_a_failed_job_never_a_completed_one() {
        let mut rows = std::collections::BTreeMap::new();
        rows.insert(
            "resnet18".to_string(),
            std::collections::BTreeMap::from([(1u32, 5.0)]),
        );
        let profile = crate::worker_node::Profile {
            device: "cpu".into(),
            part: "full".into(),
            resolution: 64,
            warmup: 0,
            reps: 0,
            rows,
            host: "test".into(),
        };
        let models = vec!["resnet18".to_string()];
        let core =
            crate::worker_node::build_core(crate::core::DEFAULT_POLICY, &profile, &models, 1)
                .unwrap();
        let acc = crate::discovery::cpu_node();
        let ids = vec![acc.id.clone()];
        let shared = Arc::new(Shared {
            name: "t".into(),
            accelerators: vec![acc],
            stats: Mutex::new(crate::stats::Stats::new(&ids)),
            start: Instant::now(),
            assignment: RwLock::new(None),
            connected: RwLock::new(None),
        });
        let (tx, _) = broadcast::channel(1);
        let ex = Arc::new(FailingExecutor) as Arc<dyn Executor>;
        let (h, task) = start(shared.clone(), core, vec![ex], tx.subscribe());
        let io = Arc::new(crate::oip::JobIo::default());
        let o = h
            .infer_with("resnet18", Duration::from_secs(5), Some(io.clone()))
            .await
            .unwrap();
        assert!(!o.completed && !o.deadline_met, "{o:?}");
        assert!(o.reason.contains("worker died"), "{o:?}");
        {
            let mut st = shared.stats.lock().unwrap();
            let m = st.model("resnet18");
            assert_eq!((m.completions, m.met, m.drops), (0, 0, 1));
        }
        let _ = tx.send(());
        let _ = task.await;
    }

    fn gpu() -> Accelerator {
        crate::discovery::Discover::discover(&crate::discovery::SimGpuDiscovery {
            profiles: vec!["Jetson-AGX-Xavier".into()],
        })
        .unwrap()
        .remove(0)
    }

    fn assignment(epoch: u64, share: u32) -> Assignment {
        Assignment {
            epoch,
            partitions: vec![Partition {
                accelerator_id: "gpu0".into(),
                share_pct: share,
                models: vec!["resnet18".into()],
            }],
        }
    }

    /// A move (a resize: a new partition, a new worker) under a steady stream of requests:
    /// none is refused for lack of a partition, the old worker serves until the new one is
    /// ready, then it is stopped.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn make_before_break_refuses_no_request_during_a_move() {
        let accs = vec![gpu()];
        let core = crate::core::build("sdrm3", &accs, None).unwrap();
        let shared = Arc::new(Shared {
            name: "n".into(),
            accelerators: accs,
            stats: Mutex::new(Stats::new(&[])),
            start: Instant::now(),
            assignment: RwLock::new(Some(assignment(1, 40))),
            connected: RwLock::new(None),
        });
        let factory = Arc::new(FakeFactory::default());
        let (stop_tx, _) = broadcast::channel(1);
        let (rt, task) = start_with(
            shared.clone(),
            core,
            Vec::new(),
            factory.clone(),
            stop_tx.subscribe(),
        );
        let ready_next = |f: &FakeFactory| {
            let r = f.ready.lock().unwrap().pop();
            r.map(|(id, ready)| {
                ready(Ok(()));
                id
            })
        };
        // the first worker starts; ready when the test says so
        let deadline = Instant::now() + Duration::from_secs(5);
        let first = loop {
            if let Some(id) = ready_next(&factory) {
                break id;
            }
            assert!(Instant::now() < deadline, "first worker never started");
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let serve = |n: usize| {
            let rt = rt.clone();
            async move {
                let mut out = Vec::new();
                for _ in 0..n {
                    out.push(rt.infer("resnet18", Duration::from_millis(500)).await);
                }
                out
            }
        };
        for r in serve(5).await {
            assert!(r.unwrap().completed);
        }
        // the plan resizes the partition: a new worker starts, not ready yet
        *shared.assignment.write().unwrap() = Some(assignment(2, 60));
        let deadline = Instant::now() + Duration::from_secs(5);
        while factory.started.lock().unwrap().len() < 2 {
            // requests keep flowing meanwhile, every one served by the old partition
            for r in serve(1).await {
                let o = r.expect("no refusal during the move");
                assert!(o.completed, "{o:?}");
                assert_eq!(o.accelerator_id, first);
            }
            assert!(Instant::now() < deadline, "the new worker never started");
        }
        for r in serve(5).await {
            let o = r.expect("no refusal while the new worker starts");
            assert_eq!(
                o.accelerator_id, first,
                "the old partition serves until the new one is ready"
            );
        }
        assert!(
            factory.stopped.lock().unwrap().is_empty(),
            "the old worker still runs"
        );
        let second = ready_next(&factory).expect("second worker");
        let deadline = Instant::now() + Duration::from_secs(5);
        while factory.stopped.lock().unwrap().is_empty() {
            for r in serve(1).await {
                assert!(r.expect("no refusal at the switch").completed);
            }
            assert!(
                Instant::now() < deadline,
                "the old worker was never stopped"
            );
        }
        assert_eq!(*factory.stopped.lock().unwrap(), vec![first.clone()]);
        for r in serve(3).await {
            assert_eq!(r.unwrap().accelerator_id, second);
        }
        // the reports carry the partition with its readiness
        let rep = shared.stats.lock().unwrap().report(1, 2, 1.0);
        let p: Vec<_> = rep.accelerators.iter().filter(|a| a.partition).collect();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].id, second);
        assert!(p[0].ready && p[0].share_pct == 60 && p[0].busy_s > 0.0);
        let _ = stop_tx.send(());
        task.await.unwrap();
    }
}
