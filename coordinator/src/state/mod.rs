//! The replicated state machine.
//!
//! One file per command group: [`nodes`] (register, join, status, remove, expire),
//! [`models`] (deploy, remove), [`placement`] (pins, commits, plans, plan events),
//! [`members`] (the member list) and [`tokens`] (join tokens); [`result`] holds the typed
//! results. This file holds the state itself, the client sessions (at-most-once retries),
//! [`prepare`] (the leader's clock put into a command before it is proposed), [`validate`]
//! and [`State::apply`], whose `apply_kind` only dispatches to the groups.
//!
//! Commands are `edgeplane.raft.v1.Command` protobuf messages carried in Raft entries. `apply`
//! is a pure, deterministic function of (state, command, log index): every replica applying
//! the same log reaches the same state. Validation runs twice: before proposing (cheap early
//! rejection with the field named) and again in `apply` (so a command validated against a
//! stale view can never write bad data); a rejected command changes nothing except the
//! client's cached result.
//!
//! Why persistent maps (`imbl`): the loop publishes a copy of the state after every applied
//! batch and prechecks every proposal against a scratch copy; with persistent maps a copy
//! is O(1) and a write costs O(log n), so neither grows with the number of nodes, models or
//! client sessions. Sessions are evicted through an index ordered by last write, not by a
//! scan.
//!
//! Placement epochs are the log index of the entry that changed the node's assignment:
//! strictly increasing for the life of the cluster (a node removed and registered again
//! never goes back to a lower epoch; restores of a snapshot keep them).

use imbl::{OrdMap, OrdSet, Vector};

use edgeplane_proto::raft::{self as pb, command::Kind};
use serde::{Deserialize, Serialize};

pub mod members;
pub mod models;
pub mod nodes;
pub mod placement;
pub mod result;
pub mod tokens;

pub use members::Member;
pub use models::Model;
pub use nodes::{
    Accelerator, Node, NodeStatus, ProfileRow, RevokedCert, MAX_ACCELERATORS, MAX_FIELD,
    MAX_PROFILE_ROWS, MAX_REVOKED_CERTS,
};
pub use placement::{describe_partitions, Partition, Pin, PlanEvent, MAX_PLAN_EVENTS};
pub use result::{CommandError, StoredResult};

/// Lower-case hex of a digest (token secret hashes, certificate fingerprints).
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Per-client record for at-most-once application of retried writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub seq: u64,
    pub result: StoredResult,
    /// Log index of the last write, used to evict the oldest sessions deterministically.
    pub last_index: u64,
}

/// Sessions kept at most; beyond it the least recently written client is forgotten.
pub const MAX_SESSIONS: usize = 10_000;

/// The whole replicated state. Ordered maps keep iteration (and snapshots) deterministic.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub nodes: OrdMap<String, Node>,
    pub models: OrdMap<String, Model>,
    pub pins: Vector<Pin>,
    pub members: OrdMap<u64, Member>,
    pub sessions: OrdMap<u64, Session>,
    /// Members removed from the cluster: their peer messages are refused (so a removed
    /// replica learns it was removed and exits) until they are added again.
    #[serde(default)]
    pub removed_members: OrdSet<u64>,
    /// The planner's reference: the rate each model was planned on (hysteresis), the healthy
    /// nodes it was planned with, and the models it could not serve. Written by `CommitPlan`.
    #[serde(default)]
    pub plan_basis: OrdMap<String, f64>,
    #[serde(default)]
    pub plan_nodes: OrdSet<String>,
    #[serde(default)]
    pub plan_shed: Vector<String>,
    /// Plan changes, oldest first (at most [`MAX_PLAN_EVENTS`]).
    #[serde(default)]
    pub events: Vector<PlanEvent>,
    /// Per-node join tokens by id (only the hash of each secret; see [`tokens`]).
    #[serde(default)]
    pub tokens: OrdMap<String, crate::state::tokens::TokenRecord>,
    /// Certificates of removed nodes, oldest first (at most [`MAX_REVOKED_CERTS`]).
    #[serde(default)]
    pub revoked_certs: Vector<RevokedCert>,
    /// (last write index, client id) of every session: the eviction order.
    #[serde(skip)]
    session_order: OrdSet<(u64, u64)>,
    /// Index of the last applied entry (set by the raft loop).
    pub applied_index: u64,
}

/// The leader's part of a command, before it is proposed: put its clock (`now`, Unix
/// milliseconds) into the token commands, so `apply` stays a pure function of the entry
/// and every replica decides the same. Other commands are left as they are.
pub fn prepare(cmd: &mut pb::Command, now_unix_ms: u64) {
    tokens::stamp(cmd, now_unix_ms);
}

/// Validate a command's fields without looking at the state.
pub fn validate(cmd: &pb::Command) -> Result<(), CommandError> {
    let Some(kind) = &cmd.kind else {
        return Err(CommandError::invalid("kind", "command has no kind"));
    };
    if cmd.client_id != 0 && cmd.seq == 0 {
        return Err(CommandError::invalid(
            "seq",
            "must be > 0 when client_id is set",
        ));
    }
    validate_kind(kind)
}

fn validate_kind(kind: &Kind) -> Result<(), CommandError> {
    match kind {
        Kind::RegisterNode(r) => nodes::validate_register(r),
        Kind::SetNodeStatus(s) => nodes::validate_status(s),
        Kind::RemoveNode(r) => check_name("name", &r.name),
        Kind::ExpireNodes(e) => nodes::validate_expire(e),
        Kind::DeployModel(d) => models::validate_deploy(d),
        Kind::RemoveModel(r) => check_name("name", &r.name),
        Kind::PinPlacement(p) => placement::validate_pin(&p.node, &p.model),
        Kind::UnpinPlacement(p) => placement::validate_pin(&p.node, &p.model),
        Kind::CommitPlacement(c) => placement::check_commit(c, ""),
        Kind::CommitPlan(p) => placement::validate_plan(p),
        Kind::AddMember(a) => members::validate_member(a.member.as_ref()),
        Kind::UpdateMember(u) => members::validate_member(u.member.as_ref()),
        Kind::RemoveMember(r) if r.id == 0 => Err(CommandError::invalid("id", "must be > 0")),
        Kind::RemoveMember(_) => Ok(()),
        Kind::CreateToken(c) => tokens::validate_create(c),
        Kind::RevokeToken(r) => tokens::check_id("id", &r.id),
        Kind::JoinNode(j) => {
            tokens::check_id("token_id", &j.token_id)?;
            tokens::check_hash("secret_sha256", &j.secret_sha256)?;
            let r = j
                .node
                .as_ref()
                .ok_or_else(|| CommandError::invalid("node", "missing"))?;
            nodes::validate_register(r)
        }
    }
}

fn check_name(field: &str, name: &str) -> Result<(), CommandError> {
    if name.trim().is_empty() {
        return Err(CommandError::invalid(field, "must not be empty"));
    }
    if name.len() > 253 {
        return Err(CommandError::invalid(field, "longer than 253 bytes"));
    }
    if name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(CommandError::invalid(
            field,
            "must not contain whitespace or control characters",
        ));
    }
    Ok(())
}

/// `host:port` where port is a number; host non-empty. Not resolved (apply stays pure).
pub fn check_addr(field: &str, addr: &str) -> Result<(), CommandError> {
    let bad =
        || CommandError::invalid(field, format!("malformed address {addr:?}, want host:port"));
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err(bad());
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(bad()),
    }
}

/// Outcome of applying one entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub result: pb::ApplyResult,
    /// True when this was a retry answered from the session cache.
    pub duplicate: bool,
}

impl State {
    /// Decode snapshot data.
    pub fn decode(data: &[u8]) -> Result<State, serde_json::Error> {
        if data.is_empty() {
            return Ok(State::default());
        }
        let mut s: State = serde_json::from_slice(data)?;
        s.session_order = s
            .sessions
            .iter()
            .map(|(id, x)| (x.last_index, *id))
            .collect();
        Ok(s)
    }

    /// Encode for a snapshot.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("state serializes")
    }

    /// Checks against the current state that the raft loop runs before proposing (same
    /// rules as in apply, so a proposal that passes is very likely to apply).
    pub fn precheck(&self, cmd: &pb::Command) -> Result<(), CommandError> {
        validate(cmd)?;
        // O(1): the maps are shared until the scratch copy writes to them.
        let mut scratch = self.clone();
        scratch
            .apply_kind(cmd.kind.as_ref().expect("validated"), 0)
            .map(|_| ())
    }

    /// Apply one command at log `index`. Deterministic.
    pub fn apply(&mut self, cmd: &pb::Command, index: u64) -> Applied {
        if let Some(cached) = self.cached(cmd, index) {
            return cached;
        }
        let outcome = validate(cmd).and_then(|()| {
            // apply_kind checks everything before mutating, so a failure leaves the state
            // unchanged.
            self.apply_kind(cmd.kind.as_ref().expect("validated"), index)
        });
        let result = StoredResult::of(&outcome, index);
        if cmd.client_id != 0 {
            self.remember(cmd, &result, index);
        }
        Applied {
            result: (&result).into(),
            duplicate: false,
        }
    }

    /// The answer to a retried (or older) write of a known client, from its session.
    fn cached(&self, cmd: &pb::Command, index: u64) -> Option<Applied> {
        if cmd.client_id == 0 {
            return None;
        }
        let s = self.sessions.get(&cmd.client_id)?;
        if cmd.seq == s.seq {
            return Some(Applied {
                result: (&s.result).into(),
                duplicate: true,
            });
        }
        if cmd.seq < s.seq {
            let e = CommandError::FailedPrecondition(format!(
                "sequence {} of client {} is older than its last write {}",
                cmd.seq, cmd.client_id, s.seq
            ));
            return Some(Applied {
                result: (&StoredResult::of(&Err(e), index)).into(),
                duplicate: true,
            });
        }
        None
    }

    /// Record the client's last write (evicting the least recently written sessions).
    fn remember(&mut self, cmd: &pb::Command, result: &StoredResult, index: u64) {
        let old = self.sessions.insert(
            cmd.client_id,
            Session {
                seq: cmd.seq,
                result: result.clone(),
                last_index: index,
            },
        );
        if let Some(old) = old {
            self.session_order.remove(&(old.last_index, cmd.client_id));
        }
        self.session_order.insert((index, cmd.client_id));
        while self.sessions.len() > MAX_SESSIONS {
            match self.session_order.remove_min() {
                Some((_, id)) => {
                    self.sessions.remove(&id);
                }
                None => break,
            }
        }
    }

    /// Check, then mutate. Returns the affected node's assignment epoch (0 if none).
    /// Every check happens before the first mutation.
    fn apply_kind(&mut self, kind: &Kind, index: u64) -> Result<u64, CommandError> {
        match kind {
            Kind::RegisterNode(r) => self.apply_register(r),
            Kind::JoinNode(j) => self.apply_join(j),
            Kind::SetNodeStatus(s) => self.apply_set_status(s),
            Kind::RemoveNode(r) => self.apply_remove_node(r),
            Kind::ExpireNodes(e) => self.apply_expire(e),
            Kind::DeployModel(d) => self.apply_deploy(d),
            Kind::RemoveModel(r) => self.apply_remove_model(r, index),
            Kind::PinPlacement(p) => self.apply_pin(p, index),
            Kind::UnpinPlacement(p) => self.apply_unpin(p, index),
            Kind::CommitPlacement(c) => self.apply_commit(c, index),
            Kind::CommitPlan(p) => self.apply_plan(p, index),
            Kind::AddMember(a) => self.apply_add_member(a),
            Kind::RemoveMember(r) => self.apply_remove_member(r),
            Kind::UpdateMember(u) => self.apply_update_member(u),
            Kind::CreateToken(c) => tokens::apply_create(self, c).map(|()| 0),
            Kind::RevokeToken(r) => tokens::apply_revoke(self, r).map(|()| 0),
        }
    }
}

#[cfg(test)]
mod tests;
