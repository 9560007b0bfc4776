//! The executor contract: what runs a block of work on one accelerator or partition, and
//! what comes back. Nothing here knows gRPC status codes or the scheduling core.
//!
//! - [`Executor::run`] starts a [`Block`] and calls its [`Completion`] exactly once, from any
//!   thread, with `Ok(`[`ExecOutput`]`)` (the energy spent, and a worker's output tensor) or a
//!   typed [`ExecError`]. The result travels one way: executor → driver → the job's reply.
//! - [`sim`]: the simulated executor (waits the modelled latency).
//! - [`oip`]: the Open Inference Protocol executor (a real worker process) and its handle.
//! - [`factory`]: [`factory::WorkerFactory`], which starts the worker of each partition: the
//!   simulated GPU partitions, and the CPU worker as one 100 % partition.
//! - [`worker`]: the CPU worker node's measured profile; [`energy`]: RAPL.

pub mod energy;
pub mod factory;
pub mod oip;
pub mod sim;
pub mod worker;

use std::sync::Arc;

/// A validated input tensor: FP32 little-endian bytes, row-major.
#[derive(Debug, Clone)]
pub struct InputTensor {
    pub shape: Vec<i64>,
    pub data: Vec<u8>,
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
    /// The job's input tensor, for worker-backed executors (None: simulated, or a job without
    /// a tensor, which a worker runs on a zero input).
    pub input: Option<Arc<InputTensor>>,
    /// The earliest absolute deadline of the block's jobs (None: no deadline to pass on). A
    /// worker-backed executor sends the time left to it as the request's timeout.
    pub deadline: Option<std::time::Instant>,
}

/// What a worker returned for one job.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerOutput {
    pub shape: Vec<i64>,
    pub datatype: String,
    pub data: Vec<u8>,
    /// The worker's forward pass alone.
    pub exec_ms: f64,
    /// Dispatch decision -> the worker's handler has the request.
    pub overhead_ms: f64,
    pub energy_source: energy::Source,
}

/// A finished block.
#[derive(Debug, Clone, Default)]
pub struct ExecOutput {
    /// Energy actually spent (mJ): measured, or the block's modelled figure.
    pub energy_mj: f64,
    /// A worker's output (None for simulated executors).
    pub worker: Option<WorkerOutput>,
}

/// Why a block did not run to completion. The kind is what callers decide on; the text is
/// for people.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExecError {
    /// The worker is not there or failed during the request (died, restarting, stopped).
    #[error("{0}")]
    Unavailable(String),
    /// The worker refused the input.
    #[error("{0}")]
    InvalidInput(String),
    /// The worker does not serve the model.
    #[error("{0}")]
    NotServed(String),
    /// No answer within the request timeout.
    #[error("{0}")]
    TimedOut(String),
    /// The worker answered, but not with an output.
    #[error("{0}")]
    Internal(String),
    /// The worker of a partition could not start.
    #[error("{0}")]
    StartFailed(String),
}

impl ExecError {
    /// From a worker's gRPC status, by its code (the message is kept as the text).
    pub fn from_status(s: &tonic::Status) -> ExecError {
        let m = s.message().to_string();
        match s.code() {
            tonic::Code::InvalidArgument => ExecError::InvalidInput(m),
            tonic::Code::NotFound => ExecError::NotServed(m),
            tonic::Code::DeadlineExceeded => ExecError::TimedOut(m),
            tonic::Code::Internal => ExecError::Internal(m),
            _ => ExecError::Unavailable(m),
        }
    }
}

/// Called once when a block finished.
pub type Completion = Box<dyn FnOnce(Result<ExecOutput, ExecError>) + Send>;

/// Runs blocks on one accelerator or partition.
pub trait Executor: Send + Sync {
    /// Start the block; `done` is called (from any thread) when it finished. A callback
    /// rather than a future: the completion goes straight into the driver's channel,
    /// without a task hop per block.
    fn run(&self, block: Block, done: Completion);
}
