//! The leader side of the edge agents. Only decisions go through Raft (node registered,
//! node lost, assignments); heartbeats and reports stay in the leader's memory.
//!
//! - [`service`]: the `Agent` gRPC service (register, one session per agent; a follower
//!   redirects to the leader);
//! - [`hub`]: [`AgentHub`], the leader memory (leases, live figures, observed rates);
//! - [`leases`]: the lease loop (a new leader grants every node a fresh lease, so a
//!   failover never evicts everyone; an expired lease marks the node lost);
//! - [`notify`]: wakes the sessions whose node's assignment epoch changed;
//! - [`checks`]: checks of registrations' profiles and of reports.
//!
//! Live figures (`nodes list` / `models list` rate, deadline-met %, energy) are served by
//! the leader; a follower answers zeros until it leads. Timings come from
//! [`crate::config::AgentsConfig`].

pub mod checks;
pub mod hub;
pub mod leases;
pub mod notify;
pub mod service;

pub use checks::{check_report, check_report_epoch, MAX_REPORT_MODELS};
pub use hub::AgentHub;
pub use leases::LeaseConfig;
pub use service::AgentService;
