//! The real-time runtime: one task owns the scheduling core and drives it with wall-clock
//! `now` (ms since the runtime started). Jobs arrive from `Infer` calls and scenario
//! sources over a channel; executors (one per accelerator) report finished blocks back over
//! another. The core is called on every event and on a 1 ms tick (so infeasible frames are
//! dropped promptly even when nothing else happens); each call is timed, which gives the
//! scheduling overhead per decision that the agent reports.

use crate::core::{Action, CoreError, JobId, SchedulingCore};
use crate::discovery::Accelerator;
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
}

/// One block of work for an executor.
#[derive(Debug, Clone)]
pub struct Block {
    pub model: String,
    pub layers: u32,
    pub latency_ms: f64,
    pub energy_mj: f64,
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
        let (tx, rx) = oneshot::channel();
        let now = Instant::now();
        let req = Request {
            model: model.into(),
            arrival: now,
            deadline: now + relative_deadline,
            reply: Some(tx),
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

    /// Submit a job without waiting (scenario sources).
    pub fn submit(&self, model: &str, arrival: Instant, deadline: Instant) -> bool {
        self.tx
            .try_send(Request {
                model: model.into(),
                arrival,
                deadline,
                reply: None,
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
}

enum Ev {
    Req(Request),
    Done(Done),
    Tick,
}

struct Done {
    job: JobId,
    acc: usize,
    last: bool,
    energy_mj: f64,
    started: Instant,
}

/// Start the runtime task.
pub fn start(
    shared: Arc<Shared>,
    mut core: Box<dyn SchedulingCore>,
    executors: Vec<Arc<dyn Executor>>,
    mut shutdown: broadcast::Receiver<()>,
) -> (RuntimeHandle, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Request>(4096);
    let handle = RuntimeHandle {
        tx,
        shared: shared.clone(),
    };
    let task = tokio::spawn(async move {
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
        let mut jobs: HashMap<JobId, Running> = HashMap::new();
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let ms = |t: Instant| t.saturating_duration_since(shared.start).as_secs_f64() * 1000.0;
        loop {
            // Wait for one event, then take every other event already there, so a burst of
            // completions and arrivals costs one scheduling step, not one each.
            let first = tokio::select! {
                _ = shutdown.recv() => break,
                Some(req) = rx.recv() => Ev::Req(req),
                Some(d) = done_rx.recv() => Ev::Done(d),
                _ = tick.tick() => Ev::Tick,
            };
            let mut events = vec![first];
            while let Ok(d) = done_rx.try_recv() {
                events.push(Ev::Done(d));
            }
            while let Ok(r) = rx.try_recv() {
                events.push(Ev::Req(r));
            }
            for ev in events {
                match ev {
                    Ev::Tick => {}
                    Ev::Req(req) => {
                        let now = ms(Instant::now());
                        let deadline = ms(req.deadline);
                        shared
                            .stats
                            .lock()
                            .expect("stats")
                            .model(&req.model)
                            .arrivals += 1;
                        match core.release(now, &req.model, deadline) {
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
                        core.block_done(ms(now_i), d.acc);
                        let mut st = shared.stats.lock().expect("stats");
                        if let Some((_, a)) = st.accelerators.get_mut(d.acc) {
                            a.busy_ms += now_i.duration_since(d.started).as_secs_f64() * 1000.0;
                            a.energy_mj += d.energy_mj;
                        }
                        if let Some(j) = jobs.get_mut(&d.job) {
                            j.energy_mj += d.energy_mj;
                        }
                        if d.last {
                            if let Some(j) = jobs.remove(&d.job) {
                                let latency_ms =
                                    now_i.duration_since(j.arrival).as_secs_f64() * 1000.0;
                                let met = now_i <= j.deadline;
                                st.complete(&j.model, latency_ms, met, j.energy_mj);
                                if let Some(r) = j.reply {
                                    let _ = r.send(Ok(JobOutcome {
                                        completed: true,
                                        deadline_met: met,
                                        latency_ms,
                                        accelerator_id: shared.accelerators[d.acc].id.clone(),
                                        energy_mj: j.energy_mj,
                                        reason: String::new(),
                                    }));
                                }
                            }
                        }
                    }
                }
            }
            let t0 = Instant::now();
            let actions = core.step(ms(t0));
            let spent = t0.elapsed().as_nanos();
            {
                let mut st = shared.stats.lock().expect("stats");
                st.steps += 1;
                if !actions.is_empty() {
                    st.decision_ns += spent;
                    st.decisions += actions.len() as u64;
                }
            }
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
                        j.acc = Some(acc);
                        let block = Block {
                            model: j.model.clone(),
                            layers,
                            latency_ms,
                            energy_mj,
                        };
                        let done_tx = done_tx.clone();
                        let started = Instant::now();
                        executors[acc].run(
                            block,
                            Box::new(move |energy_mj| {
                                let _ = done_tx.send(Done {
                                    job,
                                    acc,
                                    last,
                                    energy_mj,
                                    started,
                                });
                            }),
                        );
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
                                        .map(|a| shared.accelerators[a].id.clone())
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
