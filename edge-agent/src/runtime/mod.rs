//! The real-time runtime: a driver over a pure scheduling core ([`crate::sched`]), in the
//! shape of raft-rs's `RawNode` over `Raft`: the core decides, the driver does what it says.
//!
//! One task ([`driver`]) owns the core, the jobs and the slots, with wall-clock `now` (ms since
//! [`Shared::start`]). It listens on: job requests ([`RuntimeHandle`]: `Infer` calls, scenario
//! frames), block completions (executors' [`crate::exec::Completion`]s), worker readiness
//! ([`crate::exec::factory::ReadyFn`]), assignments (a `watch` the link publishes to), its
//! tick timer and shutdown.
//!
//! # The driver contract: one round
//! A round starts when any of those fires (the tick when the core's
//! [`next_wakeup_ms`](crate::sched::SchedulingCore::next_wakeup_ms) is due, clamped to
//! 1..=50 ms; on events only when idle). In order:
//! 1. **Gather**: the event that woke it, then every completion, readiness and request already
//!    waiting (in that order), so a burst costs one decision, not one each.
//! 2. **Assignment** (when one was published, and on the first round): handed to the core
//!    first ([`Input::Assignment`](crate::sched::Input::Assignment), once per epoch), so the
//!    requests of this round already see the new partitions.
//! 3. **Inputs**, in gathered order: a request is counted as an arrival and released
//!    ([`Input::Release`](crate::sched::Input::Release); a refusal answers the caller at
//!    once); a completion of the slot's current worker is
//!    [`Input::BlockDone`](crate::sched::Input::BlockDone) with the executor's result, then
//!    accounted (busy time, energy shared over the block's jobs) and, on a job's last block,
//!    answered: completed (met or missed), or dropped with the executor's error; a readiness
//!    of the slot's current worker is [`Input::SlotReady`](crate::sched::Input::SlotReady).
//!    Completions and readiness of a replaced worker (an older generation) are ignored.
//! 4. **Tick**: [`Input::Tick`](crate::sched::Input::Tick), timed (the scheduling overhead
//!    the agent reports), and the next tick computed.
//! 5. **Carry out** every decision of the round, in order: dispatch blocks to the slots'
//!    executors, drop jobs (answered at once), start partitions' workers through the
//!    [`WorkerFactory`] (a new slot generation) and stop retired ones.
//!
//! On shutdown every job still waiting is answered ("agent shutting down").
//!
//! The [`Ledger`] owns the counters; [`Shared`] holds what the handlers and the link share.

mod driver;
pub mod handle;
pub mod ledger;
pub mod shared;

pub use handle::{JobOutcome, Request, RuntimeHandle};
pub use ledger::Ledger;
pub use shared::Shared;

use crate::exec::factory::{SimWorkerFactory, WorkerFactory};
use crate::exec::Executor;
use crate::sched::SchedulingCore;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

/// Start the driver over fixed accelerators (NPUs, a CPU worker); GPU partitions get
/// simulated workers that are ready at once. See [`start_with`].
pub fn start(
    shared: Arc<Shared>,
    core: Box<dyn SchedulingCore>,
    executors: Vec<Arc<dyn Executor>>,
    shutdown: broadcast::Receiver<()>,
) -> (RuntimeHandle, tokio::task::JoinHandle<()>) {
    let factory = Arc::new(SimWorkerFactory {
        start_time: Duration::ZERO,
    });
    start_with(shared, core, executors, factory, shutdown)
}

/// Start the driver task. `executors` serve the fixed accelerators (slot i = accelerator
/// i); partitions from the assignment get their workers from `factory`.
pub fn start_with(
    shared: Arc<Shared>,
    core: Box<dyn SchedulingCore>,
    executors: Vec<Arc<dyn Executor>>,
    factory: Arc<dyn WorkerFactory>,
    shutdown: broadcast::Receiver<()>,
) -> (RuntimeHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel::<Request>(4096);
    let handle = RuntimeHandle {
        tx,
        shared: shared.clone(),
    };
    let (driver, inbox) = driver::Driver::new(shared, core, executors, factory, rx, shutdown);
    (handle, tokio::spawn(driver.run(inbox)))
}

/// Test fixture shared by the runtime's tests: one CPU accelerator serving resnet18 at 5 ms
/// (batch 1) under the default policy.
#[cfg(test)]
pub(crate) mod fixture {
    use super::{Ledger, Shared};
    use crate::sched::SchedulingCore;
    use crate::stats::Stats;
    use std::sync::Arc;

    pub(crate) fn cpu_resnet18() -> (Box<dyn SchedulingCore>, Arc<Shared>) {
        let rows = std::collections::BTreeMap::from([(
            "resnet18".to_string(),
            std::collections::BTreeMap::from([(1u32, 5.0)]),
        )]);
        let profile = crate::exec::worker::Profile {
            device: "cpu".into(),
            part: "full".into(),
            resolution: 64,
            warmup: 0,
            reps: 0,
            rows,
            host: "test".into(),
            worker: String::new(),
        };
        let models = vec!["resnet18".to_string()];
        let core =
            crate::node::build_core(crate::sched::DEFAULT_POLICY, &profile, &models, 1).unwrap();
        let acc = crate::discovery::cpu_node();
        let ids = vec![acc.id.clone()];
        let shared = Arc::new(Shared::new(
            "t",
            vec![acc],
            Ledger::new(Stats::new(&ids)),
            None,
        ));
        (core, shared)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::Accelerator;
    use crate::exec::factory::fake::FakeFactory;
    use crate::exec::{Block, Completion, ExecError};
    use crate::stats::Stats;
    use edgeplane_proto::agent::Assignment;
    use edgeplane_proto::agent::Partition;
    use std::time::Instant;

    /// A worker that answers every job with an error (as a dying worker does).
    struct FailingExecutor;
    impl Executor for FailingExecutor {
        fn run(&self, _block: Block, done: Completion) {
            done(Err(ExecError::Unavailable("worker died".into())));
        }
    }

    #[tokio::test]
    async fn a_worker_error_is_a_failed_job_never_a_completed_one() {
        let (core, shared) = fixture::cpu_resnet18();
        let (tx, _) = broadcast::channel(1);
        let ex = Arc::new(FailingExecutor) as Arc<dyn Executor>;
        let (h, task) = start(shared.clone(), core, vec![ex], tx.subscribe());
        let o = h
            .infer_with("resnet18", Duration::from_secs(5), None)
            .await
            .unwrap();
        assert!(!o.completed && !o.deadline_met, "{o:?}");
        assert!(o.reason.contains("worker died"), "{o:?}");
        assert!(o.error.is_some(), "{o:?}");
        let counts = shared.ledger.read(|st| {
            let m = &st.models["resnet18"];
            (m.completions, m.met, m.drops)
        });
        assert_eq!(counts, (0, 0, 1));
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
        let core = crate::node::build("sdrm3", &accs, None).unwrap();
        let shared = Arc::new(Shared::new(
            "n",
            accs,
            Ledger::new(Stats::new(&[])),
            Some(assignment(1, 40)),
        ));
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
            r.map(|(id, ready): (String, crate::exec::factory::ReadyFn)| {
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
        shared.set_assignment(Some(assignment(2, 60)));
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
        let (rep, _) = shared.ledger.report(1, 2, 1.0);
        let p: Vec<_> = rep.accelerators.iter().filter(|a| a.partition).collect();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].id, second);
        assert!(p[0].ready && p[0].share_pct == 60 && p[0].busy_s > 0.0);
        let _ = stop_tx.send(());
        task.await.unwrap();
    }
}
