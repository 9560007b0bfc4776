//! The per-partition worker seam: an assignment's GPU partitions become the runtime's
//! accelerators, and each partition is served by one worker (on a real GPU: one process under
//! an MPS cap, `CUDA_MPS_ACTIVE_THREAD_PERCENTAGE = share_pct`).
//!
//! The runtime asks a [`WorkerFactory`] to [`start`](WorkerFactory::start) a worker when the
//! plan creates a partition (a resize is a new partition: an MPS cap is fixed for the life of a
//! process) and gets back the worker's [`Executor`] at once; the worker calls its
//! [`ReadyFn`] when it can serve (model loaded, warmed up) — only then does the scheduler
//! dispatch to it, and only then is the partition it replaces retired (make-before-break).
//! [`stop`](WorkerFactory::stop) ends it once the scheduler retired it and its last block
//! finished.
//!
//! [`SimWorkerFactory`] is the simulated GPU: a [`SimExecutor`] that waits each block's modelled
//! latency, ready after the configured worker start time. [`OipWorkerFactory`] serves a
//! partition with a worker process over the Open Inference Protocol: the CPU worker node is one
//! such partition at 100 % ([`full_device`]), started through this same seam.

use super::oip::{OipExecutor, WorkerHandle};
use super::sim::SimExecutor;
use super::{ExecError, Executor};
use std::sync::Arc;
use std::time::Duration;

/// One partition of a GPU, as the assignment gives it to this node.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionSpec {
    /// Unique for the life of the agent process: `gpu0/40%/resnet18+vgg16#3`.
    pub id: String,
    /// The node's GPU (`gpu0`).
    pub accelerator_id: String,
    /// GPU profile name (`Jetson-AGX-Xavier`), when the GPU is in the profile table.
    pub gpu_profile: Option<String>,
    /// MPS cap, percent of the GPU's SMs (1..=100).
    pub share_pct: u32,
    /// Models the partition serves (time-shared when more than one).
    pub models: Vec<String>,
}

/// Called once by a worker: `Ok(())` when it is ready to serve, `Err(why)` when it could not
/// start (the partition is then never used and the scheduler keeps the old one).
pub type ReadyFn = Box<dyn FnOnce(Result<(), ExecError>) + Send>;

/// The whole of one accelerator as a partition (a fixed accelerator: an NPU, the CPU).
pub fn full_device(accelerator_id: &str, models: &[String]) -> PartitionSpec {
    PartitionSpec {
        id: accelerator_id.to_string(),
        accelerator_id: accelerator_id.to_string(),
        gpu_profile: None,
        share_pct: 100,
        models: models.to_vec(),
    }
}

/// Starts and stops the worker of each partition.
pub trait WorkerFactory: Send + Sync {
    /// Start the worker for `spec`; return its executor at once and call `ready` when it can
    /// serve. Must not block.
    fn start(&self, spec: &PartitionSpec, ready: ReadyFn) -> Arc<dyn Executor>;
    /// The partition was retired and its last block finished: end the worker.
    fn stop(&self, _spec: &PartitionSpec) {}
}

/// Simulated partitions: each worker is a [`SimExecutor`] (the modelled latency), ready after
/// `start_time` (the worker start time: process start, model load, warm-up).
#[derive(Debug, Clone)]
pub struct SimWorkerFactory {
    pub start_time: Duration,
}

impl WorkerFactory for SimWorkerFactory {
    fn start(&self, spec: &PartitionSpec, ready: ReadyFn) -> Arc<dyn Executor> {
        let delay = self.start_time;
        let id = spec.id.clone();
        std::thread::spawn(move || {
            std::thread::sleep(delay);
            tracing::info!(partition = %id, start_ms = delay.as_millis() as u64, "simulated worker ready");
            ready(Ok(()));
        });
        Arc::new(SimExecutor::default())
    }
}

/// Partitions served by a worker that is already running (the CPU worker node: its worker
/// is started, and its profile measured, before the scheduling core is built). Ready at once.
#[derive(Debug)]
pub struct OipWorkerFactory {
    pub worker: Arc<WorkerHandle>,
}

impl WorkerFactory for OipWorkerFactory {
    fn start(&self, _spec: &PartitionSpec, ready: ReadyFn) -> Arc<dyn Executor> {
        let ex = Arc::new(OipExecutor::new(self.worker.clone()));
        ready(Ok(()));
        ex
    }
    fn stop(&self, _spec: &PartitionSpec) {
        self.worker.stop();
    }
}

/// A fake worker and factory for tests: the test decides when each worker is ready.
#[cfg(test)]
pub(crate) mod fake {
    use super::*;
    use crate::exec::{Block, Completion, ExecOutput};
    use std::sync::Mutex;

    /// A fake worker: records what it ran; the test decides when it is ready.
    #[derive(Default)]
    pub(crate) struct FakeWorker {
        pub ran: Mutex<Vec<(String, u32)>>,
    }
    impl Executor for FakeWorker {
        fn run(&self, block: Block, done: Completion) {
            self.ran
                .lock()
                .unwrap()
                .push((block.model.clone(), block.batch));
            done(Ok(ExecOutput {
                energy_mj: block.energy_mj,
                worker: None,
            }));
        }
    }

    #[derive(Default)]
    pub(crate) struct FakeFactory {
        pub started: Mutex<Vec<(PartitionSpec, Arc<FakeWorker>)>>,
        pub ready: Mutex<Vec<(String, ReadyFn)>>,
        pub stopped: Mutex<Vec<String>>,
    }
    impl WorkerFactory for FakeFactory {
        fn start(&self, spec: &PartitionSpec, ready: ReadyFn) -> Arc<dyn Executor> {
            let w = Arc::new(FakeWorker::default());
            self.started.lock().unwrap().push((spec.clone(), w.clone()));
            self.ready.lock().unwrap().push((spec.id.clone(), ready));
            w
        }
        fn stop(&self, spec: &PartitionSpec) {
            self.stopped.lock().unwrap().push(spec.id.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::*;
    use super::*;
    use crate::exec::Block;

    #[test]
    fn fake_worker_runs_blocks_and_reports_ready_when_told() {
        let f = FakeFactory::default();
        let spec = PartitionSpec {
            id: "gpu0/40%/resnet18#1".into(),
            accelerator_id: "gpu0".into(),
            gpu_profile: Some("Jetson-AGX-Xavier".into()),
            share_pct: 40,
            models: vec!["resnet18".into()],
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let ex = f.start(
            &spec,
            Box::new(move |r| {
                tx.send(r).unwrap();
            }),
        );
        assert!(
            rx.try_recv().is_err(),
            "not ready before the worker says so"
        );
        let (id, ready) = f.ready.lock().unwrap().pop().unwrap();
        assert_eq!(id, spec.id);
        ready(Ok(()));
        assert_eq!(rx.recv().unwrap(), Ok(()));
        let (etx, erx) = std::sync::mpsc::channel();
        ex.run(
            Block {
                model: "resnet18".into(),
                layers: 1,
                latency_ms: 3.0,
                energy_mj: 7.0,
                batch: 4,
                input: None,
                deadline: None,
            },
            Box::new(move |e| etx.send(e).unwrap()),
        );
        assert_eq!(erx.recv().unwrap().unwrap().energy_mj, 7.0);
        assert_eq!(
            f.started.lock().unwrap()[0].1.ran.lock().unwrap()[0],
            ("resnet18".to_string(), 4)
        );
        f.stop(&spec);
        assert_eq!(*f.stopped.lock().unwrap(), vec![spec.id.clone()]);
    }

    #[test]
    fn simulated_worker_is_ready_after_its_start_time() {
        let f = SimWorkerFactory {
            start_time: Duration::from_millis(30),
        };
        let spec = PartitionSpec {
            id: "p".into(),
            accelerator_id: "gpu0".into(),
            gpu_profile: None,
            share_pct: 100,
            models: vec![],
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let t0 = std::time::Instant::now();
        let _ex = f.start(&spec, Box::new(move |r| tx.send(r).unwrap()));
        assert_eq!(rx.recv().unwrap(), Ok(()));
        assert!(t0.elapsed() >= Duration::from_millis(30));
    }
}
