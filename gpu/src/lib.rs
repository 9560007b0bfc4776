//! The GPU share model: latency profiles by batch and MPS share ([`profiles`]), gpulet's interference
//! model ([`interference`]), board power ([`energy`]), the batch/time-sharing capacity rules the
//! planners share ([`capacity`]), and a virtual-time simulator of one or more GPUs split into
//! partitions ([`sim`]) with the comparison modes ([`policies`]).
//!
//! Everything is pure: the data files are compiled in with `include_str!` from `configs/gpu/`.

pub mod capacity;
pub mod cost;
pub mod energy;
pub mod interference;
pub mod policies;
pub mod profiles;
pub mod report;
pub mod scenarios;
pub mod sim;

pub use energy::{Energy, PowerModel};
pub use interference::{Interference, Load};
pub use profiles::Profiles;

/// Errors of the GPU share model.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("cannot parse shipped data: {0}")]
    Parse(String),
    #[error("unknown GPU `{0}`; known: {1}")]
    UnknownGpu(String, String),
    #[error("unknown model `{0}`")]
    UnknownModel(String),
    #[error("no latency curve for model `{model}` on GPU `{gpu}`")]
    NoCurve { gpu: String, model: String },
    #[error("out of the profiled range: {0}")]
    OutOfRange(String),
    #[error("measured profile row {row}: field `{field}`: {msg}")]
    Measured {
        row: usize,
        field: String,
        msg: String,
    },
    #[error("scenario: {0}")]
    Scenario(String),
}

/// The shipped data, parsed once: what every simulator and planner needs.
#[derive(Debug, Clone)]
pub struct GpuData {
    pub profiles: Profiles,
    pub interference: Interference,
    pub energy: Energy,
}

impl GpuData {
    pub fn shipped() -> Result<Self, GpuError> {
        Ok(GpuData {
            profiles: Profiles::shipped()?,
            interference: Interference::shipped()?,
            energy: Energy::shipped()?,
        })
    }
}
