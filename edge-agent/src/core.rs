//! The scheduling core the runtime drives, behind a trait shaped like the scheduler crate's
//! online engine (`release` / `step` / `block_done`, all with an explicit `now_ms`: the core
//! never reads a clock, so the same code runs in virtual and wall time).
//!
//! Implementations:
//! - [`crate::engine_core::EngineCore`]: the scheduler crate's `Engine` with any of its
//!   policies (`sdrm3` by default, and every baseline) — the code `edgeplane sim` runs; also
//!   the CPU worker node's core (over the worker's measured profile).
//! - [`crate::gpu_core::GpuCore`]: a GPU node, whose assignment's partitions are its slots.
//! - [`RefuseCore`]: a node with nothing to schedule on refuses every job, saying why.

use crate::discovery::Accelerator;

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
    /// runtime reports it ready ([`SchedulingCore::slot_ready`]).
    StartPartition {
        acc: usize,
        spec: crate::partition::PartitionSpec,
    },
    /// The partition in slot `acc` was retired and is idle: stop its worker.
    StopPartition {
        acc: usize,
        spec: crate::partition::PartitionSpec,
    },
}

/// A live partition slot, for reports.
#[derive(Debug, Clone, PartialEq)]
pub struct SlotInfo {
    pub acc: usize,
    pub spec: crate::partition::PartitionSpec,
    pub ready: bool,
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

/// A real-time multi-model scheduling core.
pub trait SchedulingCore: Send {
    /// A new job (frame) of `model`, due at `deadline_ms` (absolute, runtime clock).
    fn release(&mut self, now_ms: f64, model: &str, deadline_ms: f64) -> Result<JobId, CoreError>;
    /// Frame `frame` of a frame stream of `model` (a scenario source): frame i of a model
    /// and frame i of its upstream are the same frame, so cascades line up. `release` is
    /// for requests from outside any stream (`Infer`). Cores without cascades treat both
    /// alike.
    fn release_frame(
        &mut self,
        now_ms: f64,
        model: &str,
        _frame: u64,
        deadline_ms: f64,
    ) -> Result<JobId, CoreError> {
        self.release(now_ms, model, deadline_ms)
    }
    /// Decide; called on every event (release, block done, tick).
    fn step(&mut self, now_ms: f64) -> Vec<Action>;
    /// Accelerator `acc` finished the block it was given.
    fn block_done(&mut self, now_ms: f64, acc: usize);
    /// A new assignment from the coordinator. Cores whose accelerators are fixed (NPUs)
    /// ignore it; the GPU core turns its partitions into slots (start/stop actions).
    fn assign(&mut self, _now_ms: f64, _a: &edgeplane_proto::agent::Assignment) {}
    /// The worker of slot `acc` is ready (or failed to start).
    fn slot_ready(&mut self, _now_ms: f64, _acc: usize, _result: Result<(), String>) {}
    /// Smallest block dispatched, in ms of modelled latency (layer-block cores; others
    /// ignore it).
    fn set_min_block_ms(&mut self, _ms: f64) {}
    /// Live partition slots (empty for fixed accelerators).
    fn slots(&self) -> Vec<SlotInfo> {
        Vec::new()
    }
    /// SDRM3's controllers (None for cores without them).
    fn controllers(&self) -> Option<ControllerStatus> {
        None
    }
    /// When the core next needs a `step` without any event (a queued job becomes infeasible
    /// or expires), in runtime ms; `None` = only on events. The default asks for a step every
    /// millisecond (cores that do not know their next deadline).
    fn next_wakeup_ms(&self, now_ms: f64) -> Option<f64> {
        Some(now_ms + 1.0)
    }
}

pub const DEFAULT_POLICY: &str = "sdrm3";

/// Policies this agent can run: the scheduler crate's.
pub fn policies() -> Vec<&'static str> {
    edgeplane_scheduler::policy::POLICIES.to_vec()
}

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

/// Build the core for `policy` over `accelerators` (and the scenario's cascades, if any).
pub fn build(
    policy: &str,
    accelerators: &[Accelerator],
    scenario: Option<&str>,
) -> Result<Box<dyn SchedulingCore>, String> {
    build_with(policy, accelerators, scenario, false, false)
}

/// [`build`], optionally with SDRM3's online tuner and Supernet controller switched on.
pub fn build_with(
    policy: &str,
    accelerators: &[Accelerator],
    scenario: Option<&str>,
    tune: bool,
    supernet: bool,
) -> Result<Box<dyn SchedulingCore>, String> {
    check_policy(policy)?;
    let gpus: Vec<(String, String)> = accelerators
        .iter()
        .filter_map(|a| a.gpu_profile.as_ref().map(|p| (a.id.clone(), p.clone())))
        .collect();
    if !gpus.is_empty() {
        // GPUs in the profile table: the assignment's partitions are the accelerators
        return Ok(Box::new(crate::gpu_core::GpuCore::new(gpus)?));
    }
    if accelerators.iter().any(|a| a.sim.is_some()) {
        let mut core = crate::engine_core::EngineCore::new(policy, accelerators, scenario)?;
        if tune {
            core.enable_tuner();
        }
        if supernet {
            core.enable_supernet();
        }
        return Ok(Box::new(core));
    }
    tracing::warn!(
        policy,
        "no accelerator this agent can schedule on (no simulated NPU, no GPU of the profile table, no CPU worker): every request will be refused"
    );
    Ok(Box::new(RefuseCore))
}

/// The core of a node with nothing it can schedule on: no simulated NPU with cost tables, no
/// GPU of the shipped profile table, no CPU worker (`--accelerators cpu`). Every job is
/// refused at once with the reason, so a client learns why instead of waiting out a deadline.
#[derive(Debug, Default)]
pub struct RefuseCore;

impl SchedulingCore for RefuseCore {
    fn release(
        &mut self,
        _now_ms: f64,
        model: &str,
        _deadline_ms: f64,
    ) -> Result<JobId, CoreError> {
        Err(CoreError::NoAccelerator {
            model: model.to_string(),
        })
    }
    fn step(&mut self, _now_ms: f64) -> Vec<Action> {
        Vec::new()
    }
    fn block_done(&mut self, _now_ms: f64, _acc: usize) {}
    fn next_wakeup_ms(&self, _now_ms: f64) -> Option<f64> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_without_anything_to_schedule_on_refuses_every_model_with_the_reason() {
        let cpu = crate::discovery::cpu_node();
        let mut core = build(DEFAULT_POLICY, &[cpu], None).unwrap();
        let e = core.release(0.0, "resnet18", 10.0).unwrap_err();
        assert!(
            e.to_string().contains("cannot run on any accelerator"),
            "{e}"
        );
        assert!(core.step(0.0).is_empty());
        assert_eq!(core.next_wakeup_ms(0.0), None);
    }

    #[test]
    fn unknown_policies_are_refused_with_the_valid_ones() {
        let e = check_policy("edf-whole").unwrap_err();
        assert!(e.contains("sdrm3") && e.contains("edf"), "{e}");
    }
}
