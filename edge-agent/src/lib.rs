//! The Edgeplane edge agent.
//!
//! - [`config`]: file → env → flags, validated once.
//! - [`discovery`]: accelerators from NVML (behind a trait, faked in tests) or simulated
//!   XRBench NPUs; no NVIDIA driver is a normal case (a CPU-only node).
//! - [`sched`]: the pure scheduling cores (explicit `now`, one input in, decisions out).
//! - [`runtime`]: the driver that feeds the core and carries out its decisions (its contract
//!   and order are in its module doc), the ledger of counters.
//! - [`exec`]: the executor contract, the simulated and Open Inference Protocol executors,
//!   the per-partition worker factories.
//! - [`api`]: the agent's `Inference` gRPC API; [`scenario`]: local frame sources.
//! - [`figures`]: every figure is checked (finite, positive) before it is stored or
//!   reported; [`profile_key`]: the identity a cached worker profile belongs to.
//! - [`node`]: the composition root (builds the core, executors and services for the
//!   accelerators found; the only place that tells accelerator kinds apart).
//! - [`link`]: register + session with the coordinator leader, reconnect with backoff;
//!   [`store`]: the locked data dir: the last assignment (served while cut off), the node
//!   name it belongs to, the counters (work done while cut off survives a restart).
//! - [`metrics`]: Prometheus metrics (`--metrics-addr`). The Inference port also serves
//!   `grpc.health.v1` and gRPC reflection.
#![forbid(unsafe_code)]

pub mod api;
pub mod catalog;
pub mod config;
pub mod discovery;
pub mod entry;
pub mod exec;
pub mod figures;
pub mod join;
pub mod link;
pub mod metrics;
pub mod node;
pub mod profile_key;
pub mod runtime;
pub mod scenario;
pub mod sched;
pub mod stats;
pub mod store;

pub use node::{advertise_addr, compare_virtual, infer_need, run, run_virtual};

/// Errors that stop the agent from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Discovery(#[from] discovery::DiscoveryError),
    #[error(transparent)]
    Persist(#[from] store::PersistError),
    #[error(transparent)]
    Catalog(#[from] catalog::CatalogError),
    #[error("policy: {0}")]
    Policy(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("inference server: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error(transparent)]
    Tls(#[from] edgeplane_tls::Error),
    #[error(transparent)]
    Worker(#[from] exec::worker::WorkerNodeError),
    #[error(transparent)]
    Join(#[from] join::JoinError),
}
