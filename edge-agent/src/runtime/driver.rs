//! The driver: one task owns the scheduling core, the jobs and the slots, and turns every
//! event into one [`Input`] for the core (the order is in [`super`]'s module doc).

use super::handle::{JobOutcome, Reply, Request};
use super::shared::Shared;
use crate::exec::factory::{PartitionSpec, WorkerFactory};
use crate::exec::{Block, ExecError, ExecOutput, Executor, InputTensor};
use crate::sched::{Action, Input, JobId, SchedulingCore};
use edgeplane_proto::agent::Assignment;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc, watch};

/// A block finished (from an executor's completion).
pub(super) struct Done {
    jobs: Vec<JobId>,
    acc: usize,
    /// Which worker of slot `acc` ran it (slots are reused by later partitions).
    generation: u64,
    last: bool,
    started: Instant,
    result: Result<ExecOutput, ExecError>,
}

/// A partition's worker is ready (or failed to start).
pub(super) struct Ready {
    acc: usize,
    generation: u64,
    result: Result<(), ExecError>,
}

/// One event of a round.
enum Event {
    Request(Request),
    Done(Done),
    Ready(Ready),
    /// A new assignment was published (it is handed to the core at the start of the round).
    Assignment,
    Tick,
}

/// What executes a slot's blocks: a fixed accelerator, or a partition's worker.
struct Slot {
    /// The accelerator or partition id reports use.
    id: String,
    executor: Arc<dyn Executor>,
    generation: u64,
}

/// A job between its release and its end.
struct Job {
    model: String,
    arrival: Instant,
    deadline: Instant,
    energy_mj: f64,
    acc: Option<usize>,
    reply: Option<Reply>,
    input: Option<Arc<InputTensor>>,
}

/// The channels the driver listens on.
pub(super) struct Inbox {
    pub requests: mpsc::Receiver<Request>,
    pub assignments: watch::Receiver<Option<Assignment>>,
    pub shutdown: broadcast::Receiver<()>,
    done: mpsc::UnboundedReceiver<Done>,
    ready: mpsc::UnboundedReceiver<Ready>,
}

pub(super) struct Driver {
    shared: Arc<Shared>,
    core: Box<dyn SchedulingCore>,
    factory: Arc<dyn WorkerFactory>,
    jobs: HashMap<JobId, Job>,
    slots: Vec<Option<Slot>>,
    generation: u64,
    applied_epoch: Option<u64>,
    done_tx: mpsc::UnboundedSender<Done>,
    ready_tx: mpsc::UnboundedSender<Ready>,
    /// Decisions of this round's inputs, carried out after its tick.
    actions: Vec<Action>,
}

impl Driver {
    /// A driver over the fixed accelerators' `executors` (slot i = accelerator i).
    pub fn new(
        shared: Arc<Shared>,
        core: Box<dyn SchedulingCore>,
        executors: Vec<Arc<dyn Executor>>,
        factory: Arc<dyn WorkerFactory>,
        requests: mpsc::Receiver<Request>,
        shutdown: broadcast::Receiver<()>,
    ) -> (Driver, Inbox) {
        let (done_tx, done) = mpsc::unbounded_channel();
        let (ready_tx, ready) = mpsc::unbounded_channel();
        let slots = executors
            .into_iter()
            .enumerate()
            .map(|(i, executor)| {
                let id = shared
                    .accelerators
                    .get(i)
                    .map_or_else(|| format!("acc{i}"), |a| a.id.clone());
                Some(Slot {
                    id,
                    executor,
                    generation: 0,
                })
            })
            .collect();
        let inbox = Inbox {
            requests,
            assignments: shared.assignments(),
            shutdown,
            done,
            ready,
        };
        let driver = Driver {
            shared,
            core,
            factory,
            jobs: HashMap::new(),
            slots,
            generation: 0,
            applied_epoch: None,
            done_tx,
            ready_tx,
            actions: Vec::new(),
        };
        (driver, inbox)
    }

    fn now_ms(&self) -> f64 {
        self.shared.ms(Instant::now())
    }

    /// The slot's report id when `generation` is its current worker.
    fn current(&self, acc: usize, generation: u64) -> Option<String> {
        match self.slots.get(acc) {
            Some(Some(s)) if s.generation == generation => Some(s.id.clone()),
            _ => None,
        }
    }

    fn feed(
        &mut self,
        now_ms: f64,
        input: Input<'_>,
    ) -> Option<Result<JobId, crate::sched::CoreError>> {
        let d = self.core.step(now_ms, input);
        self.actions.extend(d.actions);
        d.released
    }

    /// A new assignment: handed to the core once per epoch.
    pub fn on_assignment(&mut self) {
        let epoch = self.shared.epoch();
        if self.applied_epoch == Some(epoch) {
            return;
        }
        self.applied_epoch = Some(epoch);
        if let Some(a) = self.shared.assignment() {
            let now = self.now_ms();
            self.feed(now, Input::Assignment(&a));
        }
    }

    pub fn on_release(&mut self, req: Request) {
        let now = self.now_ms();
        let deadline_ms = self.shared.ms(req.deadline);
        self.shared.ledger.arrival(&req.model);
        let released = self.feed(
            now,
            Input::Release {
                model: &req.model,
                frame: req.frame,
                deadline_ms,
            },
        );
        match released {
            Some(Ok(id)) => {
                self.jobs.insert(
                    id,
                    Job {
                        model: req.model,
                        arrival: req.arrival,
                        deadline: req.deadline,
                        energy_mj: 0.0,
                        acc: None,
                        reply: req.reply,
                        input: req.input,
                    },
                );
            }
            other => {
                let e = other.and_then(Result::err).unwrap_or_else(|| {
                    crate::sched::CoreError::NoAccelerator {
                        model: req.model.clone(),
                    }
                });
                self.shared.ledger.dropped(&req.model, 0.0);
                if let Some(r) = req.reply {
                    let _ = r.send(Err(e));
                }
            }
        }
    }

    pub fn on_slot_ready(&mut self, r: Ready) {
        let Some(id) = self.current(r.acc, r.generation) else {
            return;
        };
        if r.result.is_ok() {
            self.shared.ledger.partition_ready(&id);
        }
        let now = self.now_ms();
        self.feed(
            now,
            Input::SlotReady {
                acc: r.acc,
                result: r.result,
            },
        );
    }

    pub fn on_block_done(&mut self, d: Done) {
        let now_i = Instant::now();
        let slot_id = self.current(d.acc, d.generation);
        if slot_id.is_some() {
            let now = self.shared.ms(now_i);
            self.feed(
                now,
                Input::BlockDone {
                    acc: d.acc,
                    result: &d.result,
                },
            );
        }
        let energy = d.result.as_ref().map_or(0.0, |o| o.energy_mj);
        // a skipped block (no job left to run) booked nothing
        if let Some(id) = slot_id.as_ref().filter(|_| !d.jobs.is_empty()) {
            let busy = now_i.duration_since(d.started).as_secs_f64() * 1000.0;
            self.shared.ledger.block(id, busy, energy);
        }
        let share = energy / d.jobs.len().max(1) as f64;
        for job in &d.jobs {
            if let Some(j) = self.jobs.get_mut(job) {
                j.energy_mj += share;
            }
            if d.last {
                if let Some(j) = self.jobs.remove(job) {
                    let id = slot_id.clone().unwrap_or_default();
                    self.finish(j, now_i, id, d.result.clone());
                }
            }
        }
    }

    /// A job's last block finished: completed, or (the executor failed) dropped.
    fn finish(
        &self,
        j: Job,
        now: Instant,
        accelerator_id: String,
        r: Result<ExecOutput, ExecError>,
    ) {
        let latency_ms = now.duration_since(j.arrival).as_secs_f64() * 1000.0;
        let outcome = match r {
            // The worker call was cut at the job's deadline (its timeout is the time left):
            // a drop like any other deadline drop, not a worker failure.
            Err(ExecError::TimedOut(why)) if now >= j.deadline => {
                self.shared.ledger.dropped(&j.model, j.energy_mj);
                JobOutcome {
                    latency_ms,
                    accelerator_id,
                    energy_mj: j.energy_mj,
                    reason: format!("deadline passed during the worker call: {why}"),
                    ..JobOutcome::default()
                }
            }
            // The worker answered with an error (it died, refused the tensor): counted as a
            // drop, never as completed or met; the client gets the worker's error.
            Err(e) => {
                self.shared.ledger.dropped(&j.model, j.energy_mj);
                JobOutcome {
                    latency_ms,
                    accelerator_id,
                    energy_mj: j.energy_mj,
                    reason: format!("worker error: {e}"),
                    error: Some(e),
                    ..JobOutcome::default()
                }
            }
            Ok(out) => {
                let met = now <= j.deadline;
                self.shared
                    .ledger
                    .completed(&j.model, latency_ms, met, j.energy_mj);
                JobOutcome {
                    completed: true,
                    deadline_met: met,
                    latency_ms,
                    accelerator_id,
                    energy_mj: j.energy_mj,
                    output: out.worker,
                    ..JobOutcome::default()
                }
            }
        };
        if let Some(r) = j.reply {
            let _ = r.send(Ok(outcome));
        }
    }

    /// Decide, then carry out this round's decisions; returns when to tick next.
    pub fn on_tick(&mut self) -> Instant {
        let t0 = Instant::now();
        let d = self.core.step(self.shared.ms(t0), Input::Tick);
        let spent = t0.elapsed().as_nanos();
        self.shared
            .ledger
            .round(self.core.controllers(), spent, d.actions.len());
        // next tick: the core's next drop, at least every 50 ms, at most every millisecond
        let now_i = Instant::now();
        let now = self.shared.ms(now_i);
        let next_ms = self
            .core
            .next_wakeup_ms(now)
            .map_or(50.0, |t| (t - now).clamp(1.0, 50.0));
        let mut actions = std::mem::take(&mut self.actions);
        actions.extend(d.actions);
        for a in actions {
            self.carry_out(a);
        }
        now_i + Duration::from_secs_f64(next_ms / 1000.0)
    }

    fn carry_out(&mut self, a: Action) {
        match a {
            Action::Dispatch {
                job,
                acc,
                layers,
                latency_ms,
                energy_mj,
                last,
            } => {
                let Some((jobs, deadline)) = self.screen(acc, vec![job]) else {
                    return;
                };
                let Some(j) = self.jobs.get_mut(&job) else {
                    return;
                };
                j.acc = Some(acc);
                let block = Block {
                    model: j.model.clone(),
                    layers,
                    latency_ms,
                    energy_mj,
                    batch: 1,
                    input: j.input.clone(),
                    deadline,
                };
                self.run_block(acc, block, jobs, last);
            }
            Action::DispatchBatch {
                jobs,
                acc,
                model,
                batch: _,
                latency_ms,
                energy_mj,
            } => {
                let Some((jobs, deadline)) = self.screen(acc, jobs) else {
                    return;
                };
                for id in &jobs {
                    if let Some(j) = self.jobs.get_mut(id) {
                        j.acc = Some(acc);
                    }
                }
                let block = Block {
                    model,
                    layers: 1,
                    latency_ms,
                    energy_mj,
                    batch: jobs.len() as u32,
                    // simulated GPU partitions compute nothing: no tensors
                    input: None,
                    deadline,
                };
                self.run_block(acc, block, jobs, true);
            }
            Action::StartPartition { acc, spec } => self.start_partition(acc, spec),
            Action::StopPartition { acc, spec } => {
                if let Some(slot) = self.slots.get_mut(acc) {
                    *slot = None;
                }
                self.factory.stop(&spec);
                self.shared.ledger.partition_stopped(&spec.id);
            }
            Action::Drop { job, reason } => self.drop_job(job, reason),
        }
    }

    /// Of a block's `jobs` about to be dispatched on `acc`, those still worth running, with
    /// their earliest deadline. Not sent: a job whose client went away (its reply is closed:
    /// the `Infer` call was dropped), counted as cancelled; a client's job whose deadline
    /// passed before its first block, dropped (answered, counted as a drop). None when no job
    /// is left: the slot is handed back to the core at once (an empty [`Done`]).
    fn screen(&mut self, acc: usize, jobs: Vec<JobId>) -> Option<(Vec<JobId>, Option<Instant>)> {
        let now = Instant::now();
        let mut live = Vec::with_capacity(jobs.len());
        for id in jobs {
            let Some(j) = self.jobs.get(&id) else {
                continue;
            };
            if j.reply.as_ref().is_some_and(|r| r.is_closed()) {
                let j = self.jobs.remove(&id).expect("job present");
                self.shared.ledger.cancelled(&j.model);
                tracing::debug!(job = id, model = %j.model, "cancelled: the client went away");
            } else if j.reply.is_some() && j.acc.is_none() && now >= j.deadline {
                self.drop_job(id, "deadline passed before dispatch".into());
            } else {
                live.push(id);
            }
        }
        if live.is_empty() {
            self.skip_block(acc);
            return None;
        }
        let deadline = live
            .iter()
            .filter_map(|id| self.jobs.get(id))
            .map(|j| j.deadline)
            .min();
        Some((live, deadline))
    }

    /// A dispatched block that runs nothing: its completion (no jobs, no energy) frees the
    /// slot in the core next round.
    fn skip_block(&self, acc: usize) {
        let Some(Some(slot)) = self.slots.get(acc) else {
            return;
        };
        let _ = self.done_tx.send(Done {
            jobs: Vec::new(),
            acc,
            generation: slot.generation,
            last: true,
            started: Instant::now(),
            result: Ok(ExecOutput::default()),
        });
    }

    fn run_block(&self, acc: usize, block: Block, jobs: Vec<JobId>, last: bool) {
        let Some(Some(slot)) = self.slots.get(acc) else {
            return;
        };
        let done_tx = self.done_tx.clone();
        let started = Instant::now();
        let generation = slot.generation;
        slot.executor.run(
            block,
            Box::new(move |result| {
                let _ = done_tx.send(Done {
                    jobs,
                    acc,
                    generation,
                    last,
                    started,
                    result,
                });
            }),
        );
    }

    fn start_partition(&mut self, acc: usize, spec: PartitionSpec) {
        self.generation += 1;
        let generation = self.generation;
        let tx = self.ready_tx.clone();
        let executor = self.factory.start(
            &spec,
            Box::new(move |result| {
                let _ = tx.send(Ready {
                    acc,
                    generation,
                    result,
                });
            }),
        );
        if self.slots.len() <= acc {
            self.slots.resize_with(acc + 1, || None);
        }
        self.slots[acc] = Some(Slot {
            id: spec.id.clone(),
            executor,
            generation,
        });
        self.shared.ledger.partition_started(&spec);
    }

    fn drop_job(&mut self, job: JobId, reason: String) {
        let Some(j) = self.jobs.remove(&job) else {
            return;
        };
        self.shared.ledger.dropped(&j.model, j.energy_mj);
        tracing::debug!(job, model = %j.model, %reason, "dropped");
        if let Some(r) = j.reply {
            let accelerator_id = j
                .acc
                .and_then(|a| self.slots.get(a).and_then(|s| s.as_ref()))
                .map(|s| s.id.clone())
                .unwrap_or_default();
            let _ = r.send(Ok(JobOutcome {
                latency_ms: Instant::now().duration_since(j.arrival).as_secs_f64() * 1000.0,
                accelerator_id,
                energy_mj: j.energy_mj,
                reason,
                ..JobOutcome::default()
            }));
        }
    }

    fn handle(&mut self, ev: Event) {
        match ev {
            Event::Request(r) => self.on_release(r),
            Event::Done(d) => self.on_block_done(d),
            Event::Ready(r) => self.on_slot_ready(r),
            Event::Assignment | Event::Tick => {}
        }
    }

    /// Shutdown: answer everyone still waiting.
    fn shut_down(self) {
        for (_, j) in self.jobs {
            if let Some(r) = j.reply {
                let _ = r.send(Ok(JobOutcome::shutting_down()));
            }
        }
    }

    /// The loop: one round per wake-up (see the order in [`super`]).
    pub async fn run(mut self, mut inbox: Inbox) {
        let mut wake = Instant::now();
        let mut first_round = true;
        loop {
            let first = tokio::select! {
                _ = inbox.shutdown.recv() => break,
                Some(req) = inbox.requests.recv() => Event::Request(req),
                Some(d) = inbox.done.recv() => Event::Done(d),
                Some(r) = inbox.ready.recv() => Event::Ready(r),
                Ok(()) = inbox.assignments.changed() => Event::Assignment,
                _ = tokio::time::sleep_until(wake.into()) => Event::Tick,
            };
            // `changed()` above marks the assignment seen; a change since is still unseen
            let assigned = matches!(first, Event::Assignment)
                || inbox.assignments.has_changed().unwrap_or(false);
            let mut events = vec![first];
            while let Ok(d) = inbox.done.try_recv() {
                events.push(Event::Done(d));
            }
            while let Ok(r) = inbox.ready.try_recv() {
                events.push(Event::Ready(r));
            }
            while let Ok(r) = inbox.requests.try_recv() {
                events.push(Event::Request(r));
            }
            if first_round || assigned {
                inbox.assignments.borrow_and_update();
                first_round = false;
                self.on_assignment();
            }
            for ev in events {
                self.handle(ev);
            }
            wake = self.on_tick();
        }
        self.shut_down();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::factory::SimWorkerFactory;
    use crate::exec::Completion;
    use std::sync::Mutex;
    use tokio::sync::oneshot;

    /// Counts the blocks it is handed; never completes them (the test frees the slot).
    #[derive(Default)]
    struct Counting(Mutex<Vec<Block>>);
    impl Executor for Counting {
        fn run(&self, block: Block, _done: Completion) {
            self.0.lock().unwrap().push(block);
        }
    }

    fn driver(ex: Arc<Counting>) -> (Driver, Inbox, Arc<Shared>) {
        let (core, shared) = crate::runtime::fixture::cpu_resnet18();
        let (_req_tx, requests) = mpsc::channel(1);
        let (_stop, shutdown) = broadcast::channel(1);
        let factory = Arc::new(SimWorkerFactory {
            start_time: Duration::ZERO,
        });
        let (d, inbox) = Driver::new(
            shared.clone(),
            core,
            vec![ex as Arc<dyn Executor>],
            factory,
            requests,
            shutdown,
        );
        (d, inbox, shared)
    }

    fn request(reply: Reply) -> Request {
        let now = Instant::now();
        Request {
            model: "resnet18".into(),
            arrival: now,
            deadline: now + Duration::from_secs(5),
            reply: Some(reply),
            input: None,
            frame: None,
        }
    }

    /// (drops, cancelled) of resnet18.
    fn counts(shared: &Shared) -> (u64, u64) {
        shared.ledger.read(|st| {
            let m = &st.models["resnet18"];
            (m.drops, m.cancelled)
        })
    }

    /// The skipped block's empty completion frees the slot for the next job.
    fn free_slot(d: &mut Driver, inbox: &mut Inbox) {
        let done = inbox.done.try_recv().expect("an empty completion");
        assert!(done.jobs.is_empty());
        d.on_block_done(done);
    }

    #[tokio::test]
    async fn a_gone_client_or_a_passed_deadline_never_reaches_the_executor() {
        let ex = Arc::new(Counting::default());
        let (mut d, mut inbox, shared) = driver(ex.clone());
        d.on_assignment();

        // 1. the client dropped its Infer call before the dispatch: cancelled, not run
        let (tx, rx) = oneshot::channel();
        d.on_release(request(tx));
        drop(rx);
        d.on_tick();
        assert_eq!(ex.0.lock().unwrap().len(), 0);
        assert_eq!(counts(&shared), (0, 1));
        free_slot(&mut d, &mut inbox);

        // 2. its deadline passed before the dispatch (the core still thought it feasible):
        // dropped and answered, not run
        let (tx, mut rx) = oneshot::channel();
        d.on_release(request(tx));
        let past = Instant::now();
        d.jobs.values_mut().for_each(|j| j.deadline = past);
        d.on_tick();
        assert_eq!(ex.0.lock().unwrap().len(), 0);
        assert_eq!(counts(&shared), (1, 1));
        let o = rx.try_recv().expect("answered").expect("an outcome");
        assert!(
            !o.completed && o.reason == "deadline passed before dispatch",
            "{o:?}"
        );
        free_slot(&mut d, &mut inbox);

        // 3. a live request runs, carrying its deadline (the worker call's timeout)
        let (tx, mut rx) = oneshot::channel();
        let req = request(tx);
        let deadline = req.deadline;
        d.on_release(req);
        d.on_tick();
        assert_eq!(ex.0.lock().unwrap().len(), 1);
        assert_eq!(ex.0.lock().unwrap()[0].deadline, Some(deadline));
        assert_eq!(counts(&shared), (1, 1));

        // 4. the worker call is cut at that deadline: a drop, answered without an error
        let id = *d.jobs.keys().next().expect("the running job");
        let past = Instant::now();
        d.jobs.values_mut().for_each(|j| j.deadline = past);
        d.on_block_done(Done {
            jobs: vec![id],
            acc: 0,
            generation: 0,
            last: true,
            started: past,
            result: Err(ExecError::TimedOut("cut".into())),
        });
        assert_eq!(counts(&shared), (2, 1));
        let o = rx.try_recv().expect("answered").expect("an outcome");
        assert!(!o.completed && o.error.is_none(), "{o:?}");
        assert_eq!(o.reason, "deadline passed during the worker call: cut");
    }
}
