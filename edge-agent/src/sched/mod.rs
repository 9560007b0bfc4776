//! The scheduling cores: pure state machines with an explicit `now_ms` (a core never reads a
//! clock, so the same code runs in virtual and wall time), driven by [`crate::runtime`].
//!
//! The contract: the driver feeds one [`Input`] at a time to [`SchedulingCore::step`] and
//! carries out the [`Decisions`] it returns, in order. Any input may return actions; the
//! engine and GPU cores decide on [`Input::Tick`] only (the driver ticks once per round,
//! after every other input of the round), so a burst of events costs one decision.
//!
//! Implementations (built by [`crate::node`], the only place that picks one):
//! - [`engine::EngineCore`]: the scheduler crate's `Engine` with any of its policies (`sdrm3`
//!   by default, and every baseline) — the code `edgeplane sim` runs; also the CPU worker
//!   node's core (over the worker's measured profile).
//! - [`gpu::GpuCore`]: a GPU node, whose assignment's partitions are its slots.
//! - [`refuse::RefuseCore`]: a node with nothing to schedule on refuses every job, saying why.

pub mod engine;
pub mod gpu;
pub mod refuse;

use crate::exec::factory::PartitionSpec;
use crate::exec::{ExecError, ExecOutput};
use edgeplane_proto::agent::Assignment;

pub type JobId = u64;

/// What the core asks the runtime to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Run the next block of `job` on accelerator `acc` (index into the runtime's list).
    Dispatch {
        job: JobId,
        acc: usize,
        layers: u32,
        latency_ms: f64,
        energy_mj: f64,
        /// This block is the job's last: its completion completes the job.
        last: bool,
    },
    /// The job will not run (any more).
    Drop { job: JobId, reason: String },
    /// Run a batch of `jobs` (all of `model`) as one block on slot `acc` (a GPU partition):
    /// its completion completes every job of the batch.
    DispatchBatch {
        jobs: Vec<JobId>,
        acc: usize,
        model: String,
        batch: u32,
        latency_ms: f64,
        energy_mj: f64,
    },
    /// Start the worker of a new partition in slot `acc`; the core dispatches to it once the
    /// runtime reports it ready ([`Input::SlotReady`]).
    StartPartition { acc: usize, spec: PartitionSpec },
    /// The partition in slot `acc` was retired and is idle: stop its worker.
    StopPartition { acc: usize, spec: PartitionSpec },
}

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("unknown model {0:?}")]
    UnknownModel(String),
    #[error("model {model:?} cannot run on any accelerator of this node")]
    NoAccelerator { model: String },
    #[error(
        "model {model:?} has no GPU partition on this node (not assigned here, or not planned yet)"
    )]
    NoPartition { model: String },
}

/// What SDRM3's controllers are doing, for stats and metrics.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ControllerStatus {
    /// Whether the online tuner runs.
    pub tuning: bool,
    /// Gradient steps the tuner took so far (one per window it was not converged).
    pub tuner_steps: u64,
    /// The profile the current weights are (`Weights::PROFILE_NAMES`), or `tuned` once a
    /// gradient step moved them off every profile.
    pub profile: String,
    /// Profile comparisons made (start-of-run and assignment forecasts, restarts).
    pub profile_choices: u64,
    /// Whether the Supernet controller switches sub-network widths.
    pub supernet: bool,
    /// Mean Supernet accuracy of the completed jobs (share of the full network's; 1.0 when
    /// every job ran at full width or none completed).
    pub accuracy: f64,
}

/// One input to a core.
#[derive(Debug)]
pub enum Input<'a> {
    /// A new job (frame) of `model`, due at `deadline_ms` (absolute, driver clock). `frame`:
    /// its index in a frame stream (a scenario source: frame i of a model and frame i of its
    /// upstream are the same frame, so cascades line up); None for a request from outside any
    /// stream (`Infer`). Answered in [`Decisions::released`].
    Release {
        model: &'a str,
        frame: Option<u64>,
        deadline_ms: f64,
    },
    /// Slot `acc` finished the block it was given, with the executor's result.
    BlockDone {
        acc: usize,
        result: &'a Result<ExecOutput, ExecError>,
    },
    /// The worker of slot `acc` is ready (or failed to start).
    SlotReady {
        acc: usize,
        result: Result<(), ExecError>,
    },
    /// A new assignment from the coordinator. Cores whose accelerators are fixed restrict
    /// models to them; the GPU core turns its partitions into slots (start/stop actions).
    Assignment(&'a Assignment),
    /// Decide: dispatch, drop, start and stop partitions.
    Tick,
}

/// What a core asks of the driver after one input.
#[derive(Debug, Default)]
pub struct Decisions {
    /// For [`Input::Release`]: the new job's id, or why it is refused.
    pub released: Option<Result<JobId, CoreError>>,
    /// To carry out in order.
    pub actions: Vec<Action>,
}

impl Decisions {
    pub fn released(r: Result<JobId, CoreError>) -> Decisions {
        Decisions {
            released: Some(r),
            actions: Vec::new(),
        }
    }
    pub fn actions(actions: Vec<Action>) -> Decisions {
        Decisions {
            released: None,
            actions,
        }
    }
}

/// A real-time multi-model scheduling core.
pub trait SchedulingCore: Send {
    /// Take one input at `now_ms`; return what to do.
    fn step(&mut self, now_ms: f64, input: Input<'_>) -> Decisions;
    /// Smallest block dispatched, in ms of modelled latency (layer-block cores; others
    /// ignore it). Configuration, set before the first input.
    fn set_min_block_ms(&mut self, _ms: f64) {}
    /// SDRM3's controllers (None for cores without them).
    fn controllers(&self) -> Option<ControllerStatus> {
        None
    }
    /// When the core next needs a [`Input::Tick`] without any event (a queued job becomes
    /// infeasible or expires), in driver ms; `None` = only on events. The default asks for a
    /// tick every millisecond (cores that do not know their next deadline).
    fn next_wakeup_ms(&self, now_ms: f64) -> Option<f64> {
        Some(now_ms + 1.0)
    }
}

impl dyn SchedulingCore + '_ {
    /// [`Input::Release`] of a request from outside any stream.
    pub fn release(
        &mut self,
        now_ms: f64,
        model: &str,
        deadline_ms: f64,
    ) -> Result<JobId, CoreError> {
        self.release_frame(now_ms, model, None, deadline_ms)
    }
    /// [`Input::Release`]; a core that answers no release is a bug in the core.
    pub fn release_frame(
        &mut self,
        now_ms: f64,
        model: &str,
        frame: Option<u64>,
        deadline_ms: f64,
    ) -> Result<JobId, CoreError> {
        let d = self.step(
            now_ms,
            Input::Release {
                model,
                frame,
                deadline_ms,
            },
        );
        d.released.unwrap_or_else(|| {
            Err(CoreError::NoAccelerator {
                model: model.to_string(),
            })
        })
    }
    /// [`Input::Tick`]: the actions.
    pub fn tick(&mut self, now_ms: f64) -> Vec<Action> {
        self.step(now_ms, Input::Tick).actions
    }
}

pub use crate::config::DEFAULT_POLICY;

/// Policies this agent can run: the scheduler crate's.
pub fn policies() -> Vec<&'static str> {
    edgeplane_scheduler::policy::POLICIES.to_vec()
}

/// `Err` names the valid policies.
pub fn check_policy(name: &str) -> Result<(), String> {
    let all = policies();
    if all.contains(&name) {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a policy; valid: {}",
            all.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_policies_are_refused_with_the_valid_ones() {
        let e = check_policy("edf-whole").unwrap_err();
        assert!(e.contains("sdrm3") && e.contains("edf"), "{e}");
    }
}
