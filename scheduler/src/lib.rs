//! The Edgeplane scheduling core: pure, synchronous, no I/O beyond parsing the data it is given.
//!
//! - [`accel`]: the accelerator-kind / cost-model seam (NPU tables and GPU shares).
//! - [`catalog`]: XRBench scenarios, hardware and per-layer costs (embedded).
//! - [`xrbench`]: the artifact's exact simulator semantics (parity mode).
//! - [`engine`]: the online engine that both the native simulator and the agent's real-time
//!   runtime drive; policies see only `now` and the state.
//! - [`policy`]: `sdrm3` and the baselines behind one trait.
//! - [`sim`]: the native discrete-event simulator (virtual time, seeded).
//! - [`score`]: XRBench score and UXCost.
//! - [`latency`]: the workspace's percentile implementation (an HDR histogram).
#![forbid(unsafe_code)]

pub mod accel;
pub mod catalog;
pub mod catalog_builder;
pub mod engine;
pub mod error;
pub mod glibc_rand;
pub mod latency;
pub mod policy;
pub mod score;
pub mod sim;
pub mod summary;
pub mod tuner;
pub mod xrbench;

pub use accel::{AccelKind, CoRunner, Cost, CostModel};
pub use catalog::{AccSpec, Catalog, Hardware, ModelCost, Scenario, ScenarioModel};
pub use engine::{Action, DropReason, Engine, EngineModel, Job, JobId};
pub use error::Error;
pub use policy::{by_name as policy_by_name, Pick, Policy, Weights, POLICIES};
pub use score::{FrameRecord, ModelReport, Report};
pub use sim::{SimConfig, SimResult};
