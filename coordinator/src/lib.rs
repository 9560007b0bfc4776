//! The Edgeplane coordinator: a Raft-replicated control plane.
//!
//! # Layers
//! - [`storage`]: the durable Raft log ([`storage::LogBackend`] trait, sled implementation with
//!   explicit fsync) and [`storage::RaftStore`], the `raft::Storage` over it.
//! - [`state`]: the replicated state machine (nodes, models, placements, members, client
//!   sessions for at-most-once writes), applied deterministically.
//! - [`node`]: [`Handle`], the way everything else talks to the local replica (client API
//!   and retry policy); [`raft_loop`]: the Raft loop (one thread per replica: Ready handling,
//!   apply, conf changes, snapshots) with [`reads`] (ReadIndex bookkeeping); [`error`]: the
//!   errors callers see ("not applied" vs "outcome unknown").
//! - `inbox`: the seams between them (the loop's inbox, the `inbox::Outbox` the loop sends
//!   through, the `inbox::LeaderClient` followers forward through), so that the loop, the
//!   transport and forwarding never import each other.
//! - [`transport`]: gRPC peer transport with reconnect/backoff and fault injection;
//!   [`forward`]: follower → leader forwarding of writes.
//! - [`admin`]: the operator `Admin` gRPC service; [`server`]: process assembly.
//! - The agent side: [`agents`] (service, hub, leases, notify), [`placement`] (the leader's
//!   planner loop), over the leaf seam [`live`] and [`profiles`]; [`wiring`] composes them
//!   into [`Extensions`] (the binary calls [`wiring::agent_extensions`]).
//!
//! # Seam for the agent side
//! Everything an agent service needs goes through a cheap-to-clone [`Handle`]:
//! - `handle.propose(cmd: edgeplane_proto::raft::Command).await -> Result<ApplyResult, node::Error>`:
//!   replicate a command and wait until applied (followers forward it to the leader).
//!   Agent-side commands: `Kind::RegisterNode {name, accelerators, agent_addr}`,
//!   `Kind::SetNodeStatus {name, status}`, `Kind::RemoveNode`, and placement commands
//!   `Kind::PinPlacement` / `Kind::UnpinPlacement` / `Kind::CommitPlacement {node,
//!   partitions, expected_epoch}` which bump the node's `assignment_epoch` (returned in
//!   `ApplyResult::epoch`). Set `client_id`/`seq` for retry-safe writes (0 = no dedup).
//! - `handle.read(linearizable: bool).await -> Result<Arc<state::State>, node::Error>`:
//!   ReadIndex read (or the local state when `false`); `handle.stale_state()` is the sync
//!   local variant.
//! - `handle.leadership() -> tokio::sync::watch::Receiver<node::Leadership>`
//!   (`leader_id`, `term`, `is_leader`): start/stop leader-only work (leases, rate aggregation,
//!   grace periods after failover) on changes.
//! - `Coordinator::exit_reason().await` (or `handle.exit_reason()`): the replica was removed
//!   from the cluster, or its storage failed; a binary must then end (non-zero on failure).
//! - `handle.leader_client_addr() -> Option<String>` and `handle.members()` for redirecting
//!   agents; `handle.join_token() -> Option<&str>` is the `--join-token` value.
//! - Mounting a gRPC service on `--client-addr`: push a [`server::ServiceInstaller`] into
//!   [`server::Extensions::services`] (or add it next to `AdminServer` in `server.rs`'s
//!   `ClientServer::serve`, the one place services are mounted).
//! - Live stats for `nodes list` / `models list`: set [`server::Extensions::live_stats`] to an
//!   `Arc<dyn live::LiveStats>`; the Admin service calls it per node/model (zeros if unset).
//!
//! The binary's wiring is [`wiring::agent_extensions`]: an [`agents::AgentHub`] (leader
//! memory), a [`placement::Planner`] over it (also the Admin service's `LiveStats`), and a
//! service installer that spawns the lease loop, the planner loop and the epoch notifier
//! and mounts `AgentServer`.
#![forbid(unsafe_code)]

pub mod admin;
pub mod agents;
#[cfg(test)]
mod apply_props;
pub mod auth;
pub mod config;
pub mod entry;
pub mod error;
pub mod forward;
pub mod grpc_ops;
pub mod inbox;
#[cfg(test)]
mod input_props;
pub mod live;
pub mod logging;
pub mod metrics;
pub mod node;
pub mod placement;
pub mod plan_api;
pub mod profiles;
pub mod raft_loop;
pub mod reads;
pub mod restore;
pub mod server;
pub mod state;
pub mod storage;
pub mod transport;
pub mod wiring;

pub use config::{Config, Flags};
pub use live::{LiveStats, ModelLiveStats, NodeLiveStats};
pub use node::{Error, ExitReason, Handle, Leadership};
pub use server::{Coordinator, Extensions};
