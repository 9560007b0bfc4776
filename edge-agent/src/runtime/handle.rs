//! The driver's front door: [`RuntimeHandle`] submits jobs (an `Infer` call, a scenario frame)
//! and returns each one's [`JobOutcome`].

use super::shared::Shared;
use crate::exec::{ExecError, InputTensor, WorkerOutput};
use crate::sched::CoreError;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JobOutcome {
    pub completed: bool,
    pub deadline_met: bool,
    pub latency_ms: f64,
    pub accelerator_id: String,
    pub energy_mj: f64,
    pub reason: String,
    /// What the worker returned (worker-backed executors; None when simulated).
    pub output: Option<WorkerOutput>,
    /// The executor's error, when the job failed on it (then `completed` is false).
    pub error: Option<ExecError>,
}

impl JobOutcome {
    pub(super) fn shutting_down() -> JobOutcome {
        JobOutcome {
            reason: "agent shutting down".into(),
            ..JobOutcome::default()
        }
    }
}

/// Where a job's outcome goes.
pub type Reply = oneshot::Sender<Result<JobOutcome, CoreError>>;

/// A job submitted to the driver.
pub struct Request {
    pub model: String,
    pub deadline: Instant,
    pub arrival: Instant,
    pub reply: Option<Reply>,
    /// The job's input tensor, for worker-backed executors.
    pub input: Option<Arc<InputTensor>>,
    /// Its frame index when it comes from a frame stream (a scenario source); None for a
    /// request from outside any stream (`Infer`).
    pub frame: Option<u64>,
}

/// Cheap handle to submit jobs.
#[derive(Clone)]
pub struct RuntimeHandle {
    pub(super) tx: mpsc::Sender<Request>,
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

    /// Submit a job carrying an input tensor and wait for its outcome (with the worker's
    /// output or error in it).
    pub async fn infer_with(
        &self,
        model: &str,
        relative_deadline: Duration,
        input: Option<Arc<InputTensor>>,
    ) -> Result<JobOutcome, CoreError> {
        let (tx, rx) = oneshot::channel();
        let now = Instant::now();
        let req = Request {
            model: model.into(),
            arrival: now,
            deadline: now + relative_deadline,
            reply: Some(tx),
            input,
            frame: None,
        };
        if self.tx.send(req).await.is_err() {
            return Ok(JobOutcome::shutting_down());
        }
        rx.await.unwrap_or_else(|_| Ok(JobOutcome::shutting_down()))
    }

    /// Submit frame `frame` of a scenario source's stream of `model` without waiting.
    pub fn submit(&self, model: &str, frame: u64, arrival: Instant, deadline: Instant) -> bool {
        self.tx
            .try_send(Request {
                model: model.into(),
                arrival,
                deadline,
                reply: None,
                input: None,
                frame: Some(frame),
            })
            .is_ok()
    }
}
