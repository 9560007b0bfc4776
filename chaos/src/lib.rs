//! The history-checked fault suite for the Edgeplane coordinator.
//!
//! A run drives a concurrent workload (unique writes and linearizable reads on a few model
//! records, through random members) while a fault schedule kills, pauses and partitions
//! replicas; every operation is recorded ([`history`]) and afterwards checked: the history
//! is linearizable per key ([`checker`]), no acknowledged write is lost, revisions never go
//! backwards, at most one leader per term, replicas end identical ([`checks`]).
//!
//! Layers: [`checker`] and [`checks`] are pure (no I/O, tested on hand-made histories);
//! [`workload`] and [`run`] talk Admin gRPC; [`procs`] owns replica processes when the
//! suite starts its own cluster.

pub mod checker;
pub mod checks;
pub mod history;
pub mod ports;
pub mod procs;
pub mod run;
pub mod workload;

pub use checker::{check_history, CheckConfig, CheckReport, Violation};
pub use history::{Clock, History, Op, OpKind, Outcome, Value};
pub use ports::reserve_port;
pub use procs::{LocalCluster, ReplicaOpts};
pub use run::{run_scenario, FaultKind, ScenarioConfig, ScenarioReport, Target};
pub use workload::{Counters, WorkloadConfig};

/// Errors of the suite itself (not findings: those are in [`ScenarioReport`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("replica process: {0}")]
    Process(String),
    #[error("invalid configuration `{field}`: {why}")]
    Config { field: &'static str, why: String },
    #[error("endpoint {addr:?}: {why}")]
    Endpoint { addr: String, why: String },
    #[error("cluster: {0}")]
    Cluster(String),
    #[error("fault {0} needs replica processes this run does not own (use --local)")]
    NeedsProcesses(&'static str),
}
