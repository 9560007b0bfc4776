//! The replicated state machine.
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

/// A command refused by validation or by the current state. Deterministic: the same
/// command on the same state gives the same error on every replica.
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
pub enum CommandError {
    #[error("invalid argument `{field}`: {reason}")]
    InvalidArgument { field: String, reason: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// A join token refused (unknown, wrong secret, revoked, expired, used, other node).
    #[error("{0}")]
    PermissionDenied(String),
}

impl CommandError {
    pub(crate) fn invalid(field: &str, reason: impl Into<String>) -> Self {
        CommandError::InvalidArgument {
            field: field.to_string(),
            reason: reason.into(),
        }
    }
    /// gRPC status code number.
    pub fn code(&self) -> u32 {
        match self {
            CommandError::InvalidArgument { .. } => 3,
            CommandError::NotFound(_) => 5,
            CommandError::FailedPrecondition(_) => 9,
            CommandError::PermissionDenied(_) => 7,
        }
    }
    /// Rebuild from an [`pb::ApplyResult`] with a non-zero code.
    pub fn from_result(r: &pb::ApplyResult) -> Self {
        match r.code {
            3 => {
                // message is "invalid argument `field`: reason"
                let field = r.message.split('`').nth(1).unwrap_or("unknown").to_string();
                let reason = r
                    .message
                    .split_once(": ")
                    .map(|(_, b)| b.to_string())
                    .unwrap_or_else(|| r.message.clone());
                CommandError::InvalidArgument { field, reason }
            }
            5 => CommandError::NotFound(r.message.clone()),
            7 => CommandError::PermissionDenied(r.message.clone()),
            _ => CommandError::FailedPrecondition(r.message.clone()),
        }
    }
}

/// Node health as the replicated state sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeStatus {
    Ready,
    Lost,
    Draining,
}

impl NodeStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            NodeStatus::Ready => "ready",
            NodeStatus::Lost => "lost",
            NodeStatus::Draining => "draining",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Accelerator {
    pub id: String,
    pub kind: String,
    pub name: String,
    pub memory_mb: u64,
    pub mig_capable: bool,
    pub sm_count: u32,
    pub simulated: bool,
    /// Measured L(model, batch) reported by the agent (empty: none); the planner prefers it.
    #[serde(default)]
    pub profile: Vec<ProfileRow>,
    #[serde(default)]
    pub profile_source: String,
}

/// One measured profile row: ms per batch of the shipped table's batches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileRow {
    pub model: String,
    pub ms: Vec<f64>,
}

impl From<&pb::Accelerator> for Accelerator {
    fn from(a: &pb::Accelerator) -> Self {
        Accelerator {
            id: a.id.clone(),
            kind: a.kind.clone(),
            name: a.name.clone(),
            memory_mb: a.memory_mb,
            mig_capable: a.mig_capable,
            sm_count: a.sm_count,
            simulated: a.simulated,
            profile: a
                .profile
                .iter()
                .map(|r| ProfileRow {
                    model: r.model.clone(),
                    ms: r.ms.clone(),
                })
                .collect(),
            profile_source: a.profile_source.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Partition {
    pub accelerator_id: String,
    pub share_pct: u32,
    pub models: Vec<String>,
}

/// A registered edge node with its current assignment (placement plan).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    pub accelerators: Vec<Accelerator>,
    pub agent_addr: String,
    pub status: NodeStatus,
    /// Fencing token of the node's assignment: the log index of the last change of
    /// `partitions` (0 before the first), so strictly increasing for the cluster's life.
    pub assignment_epoch: u64,
    pub partitions: Vec<Partition>,
    /// The planner's target for the node: equal to `partitions` except while a move is made
    /// before it is broken (old partitions kept until the new home reports ready).
    #[serde(default)]
    pub target: Vec<Partition>,
    /// SHA-256 (hex) of the certificate the node last registered with; empty without TLS.
    /// Removing the node revokes it.
    #[serde(default)]
    pub cert_sha256: String,
    /// notBefore (unix seconds) of that certificate: the binding moves only to a certificate
    /// at least as new, and the one it leaves is revoked at once.
    #[serde(default)]
    pub cert_not_before: u64,
}

/// A node certificate revoked by `nodes remove` (its SHA-256, hex) and the node it named.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedCert {
    pub sha256: String,
    pub node: String,
}

/// Revoked certificates kept (the oldest are forgotten first; node certificates expire after
/// a year anyway).
pub const MAX_REVOKED_CERTS: usize = 10_000;

/// Lower-case hex of a digest (token secret hashes, certificate fingerprints).
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One plan change (a node's assignment committed by the planner), kept in the replicated
/// state so every member shows the same history and it survives a leader change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanEvent {
    pub index: u64,
    pub node: String,
    pub epoch: u64,
    pub reason: String,
    pub partitions: String,
}

/// Plan events kept (oldest dropped first).
pub const MAX_PLAN_EVENTS: usize = 256;

/// `gpu0 40% [resnet18, vgg16]; gpu1 ...` (empty: `none`).
pub fn describe_partitions(parts: &[Partition]) -> String {
    if parts.is_empty() {
        return "none".into();
    }
    parts
        .iter()
        .map(|p| {
            format!(
                "{} {}% [{}]",
                p.accelerator_id,
                p.share_pct,
                p.models.join(", ")
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn partitions_from_pb(parts: &[pb::Partition]) -> Vec<Partition> {
    parts
        .iter()
        .map(|p| Partition {
            accelerator_id: p.accelerator_id.clone(),
            share_pct: p.share_pct,
            models: p.models.clone(),
        })
        .collect()
}

impl Node {
    /// All models assigned to the node, sorted, without duplicates.
    pub fn models(&self) -> Vec<String> {
        let mut m: Vec<String> = self
            .partitions
            .iter()
            .flat_map(|p| p.models.iter().cloned())
            .collect();
        m.sort();
        m.dedup();
        m
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    pub name: String,
    pub slo_ms: f64,
    /// Requested rate, requests/s.
    pub rate: f64,
    pub memory_mb: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pin {
    pub node: String,
    pub model: String,
    pub accelerator: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub id: u64,
    pub peer_addr: String,
    pub client_addr: String,
    pub learner: bool,
}

impl From<&pb::Member> for Member {
    fn from(m: &pb::Member) -> Self {
        Member {
            id: m.id,
            peer_addr: m.peer_addr.clone(),
            client_addr: m.client_addr.clone(),
            learner: m.learner,
        }
    }
}

/// Per-client record for at-most-once application of retried writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub seq: u64,
    pub result: StoredResult,
    /// Log index of the last write, used to evict the oldest sessions deterministically.
    pub last_index: u64,
}

/// Serializable mirror of [`pb::ApplyResult`].
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StoredResult {
    pub code: u32,
    pub message: String,
    pub index: u64,
    pub epoch: u64,
}

impl From<&StoredResult> for pb::ApplyResult {
    fn from(r: &StoredResult) -> Self {
        pb::ApplyResult {
            code: r.code,
            message: r.message.clone(),
            index: r.index,
            epoch: r.epoch,
        }
    }
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
    /// Per-node join tokens by id (only the hash of each secret; see [`crate::tokens`]).
    #[serde(default)]
    pub tokens: OrdMap<String, crate::tokens::TokenRecord>,
    /// Certificates of removed nodes, oldest first (at most [`MAX_REVOKED_CERTS`]).
    #[serde(default)]
    pub revoked_certs: Vector<RevokedCert>,
    /// (last write index, client id) of every session: the eviction order.
    #[serde(skip)]
    session_order: OrdSet<(u64, u64)>,
    /// Index of the last applied entry (set by the raft loop).
    pub applied_index: u64,
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
    match kind {
        Kind::RegisterNode(r) => {
            check_name("name", &r.name)?;
            check_node_size(r)?;
            let mut ids = std::collections::BTreeSet::new();
            for (i, a) in r.accelerators.iter().enumerate() {
                if a.id.trim().is_empty() {
                    return Err(CommandError::invalid(
                        &format!("accelerators[{i}].id"),
                        "must not be empty",
                    ));
                }
                if !ids.insert(&a.id) {
                    return Err(CommandError::invalid(
                        &format!("accelerators[{i}].id"),
                        format!("duplicate accelerator id {:?}", a.id),
                    ));
                }
            }
            if !r.agent_addr.is_empty() {
                check_addr("agent_addr", &r.agent_addr)?;
            }
            if !(r.cert_sha256.is_empty() || r.cert_sha256.len() == 32) {
                return Err(CommandError::invalid(
                    "cert_sha256",
                    format!(
                        "must be empty or a SHA-256 digest (32 bytes), got {} bytes",
                        r.cert_sha256.len()
                    ),
                ));
            }
        }
        Kind::SetNodeStatus(s) => {
            check_name("name", &s.name)?;
            if status_from_pb(s.status).is_none() {
                return Err(CommandError::invalid(
                    "status",
                    "must be ready, lost or draining",
                ));
            }
        }
        Kind::RemoveNode(r) => check_name("name", &r.name)?,
        Kind::DeployModel(d) => {
            check_name("name", &d.name)?;
            if !d.slo_ms.is_finite() || d.slo_ms <= 0.0 {
                return Err(CommandError::invalid(
                    "slo_ms",
                    format!("must be a finite number > 0, got {}", d.slo_ms),
                ));
            }
            if !d.rate.is_finite() || d.rate < 0.0 {
                return Err(CommandError::invalid(
                    "rate",
                    format!("must be a finite number >= 0, got {}", d.rate),
                ));
            }
        }
        Kind::RemoveModel(r) => check_name("name", &r.name)?,
        Kind::PinPlacement(p) => {
            check_name("node", &p.node)?;
            check_name("model", &p.model)?;
        }
        Kind::UnpinPlacement(p) => {
            check_name("node", &p.node)?;
            check_name("model", &p.model)?;
        }
        Kind::CommitPlacement(c) => check_commit(c, "")?,
        Kind::CommitPlan(p) => {
            let mut seen = std::collections::BTreeSet::new();
            for (i, c) in p.nodes.iter().enumerate() {
                check_commit(c, &format!("nodes[{i}]."))?;
                if !seen.insert(&c.node) {
                    return Err(CommandError::invalid(
                        &format!("nodes[{i}].node"),
                        format!("node {:?} appears twice in one plan", c.node),
                    ));
                }
            }
            for (m, r) in &p.basis_rps {
                check_name("basis_rps", m)?;
                if !(r.is_finite() && *r >= 0.0) {
                    return Err(CommandError::invalid(
                        "basis_rps",
                        format!("rate of {m:?} must be a finite number >= 0, got {r}"),
                    ));
                }
            }
            for (i, n) in p.plan_nodes.iter().enumerate() {
                check_name(&format!("plan_nodes[{i}]"), n)?;
            }
        }
        Kind::AddMember(a) => {
            let m = a
                .member
                .as_ref()
                .ok_or_else(|| CommandError::invalid("member", "missing"))?;
            check_member(m)?;
        }
        Kind::RemoveMember(r) => {
            if r.id == 0 {
                return Err(CommandError::invalid("id", "must be > 0"));
            }
        }
        Kind::UpdateMember(u) => {
            let m = u
                .member
                .as_ref()
                .ok_or_else(|| CommandError::invalid("member", "missing"))?;
            check_member(m)?;
        }
        Kind::CreateToken(c) => crate::tokens::validate_create(c)?,
        Kind::RevokeToken(r) => crate::tokens::check_id("id", &r.id)?,
        Kind::JoinNode(j) => {
            crate::tokens::check_id("token_id", &j.token_id)?;
            crate::tokens::check_hash("secret_sha256", &j.secret_sha256)?;
            let r = j
                .node
                .as_ref()
                .ok_or_else(|| CommandError::invalid("node", "missing"))?;
            validate(&pb::Command {
                client_id: 0,
                seq: 0,
                kind: Some(Kind::RegisterNode(r.clone())),
            })?;
        }
        Kind::ExpireNodes(e) => {
            if e.names.is_empty() {
                return Err(CommandError::invalid(
                    "names",
                    "must name at least one node",
                ));
            }
            for (i, n) in e.names.iter().enumerate() {
                check_name(&format!("names[{i}]"), n)?;
            }
        }
    }
    Ok(())
}

fn check_commit(c: &pb::CommitPlacement, prefix: &str) -> Result<(), CommandError> {
    check_name(&format!("{prefix}node"), &c.node)?;
    for (what, parts) in [("partitions", &c.partitions), ("target", &c.target)] {
        for (i, p) in parts.iter().enumerate() {
            if p.share_pct == 0 || p.share_pct > 100 {
                return Err(CommandError::invalid(
                    &format!("{prefix}{what}[{i}].share_pct"),
                    format!("must be in 1..=100, got {}", p.share_pct),
                ));
            }
            for m in &p.models {
                check_name(&format!("{prefix}{what}[{i}].models"), m)?;
            }
        }
    }
    Ok(())
}

fn check_member(m: &pb::Member) -> Result<(), CommandError> {
    if m.id == 0 {
        return Err(CommandError::invalid("id", "must be > 0"));
    }
    check_addr("peer_addr", &m.peer_addr)?;
    check_addr("client_addr", &m.client_addr)
}

/// Most accelerators one node may register (a large box has 8 to 16).
pub const MAX_ACCELERATORS: usize = 64;
/// Longest accelerator id, kind, name or profile source, in bytes.
pub const MAX_FIELD: usize = 256;
/// Most profile rows per accelerator.
pub const MAX_PROFILE_ROWS: usize = 64;

/// Hard bounds on one registration: a node certificate must not be able to grow the
/// replicated state (and every replica's log) by megabytes per entry.
fn check_node_size(r: &pb::RegisterNode) -> Result<(), CommandError> {
    if r.accelerators.len() > MAX_ACCELERATORS {
        return Err(CommandError::invalid(
            "accelerators",
            format!(
                "{} accelerators; a node registers at most {MAX_ACCELERATORS}",
                r.accelerators.len()
            ),
        ));
    }
    for (i, a) in r.accelerators.iter().enumerate() {
        for (f, v) in [
            ("id", &a.id),
            ("kind", &a.kind),
            ("name", &a.name),
            ("profile_source", &a.profile_source),
        ] {
            if v.len() > MAX_FIELD {
                return Err(CommandError::invalid(
                    &format!("accelerators[{i}].{f}"),
                    format!("{} bytes; at most {MAX_FIELD}", v.len()),
                ));
            }
        }
        if a.profile.len() > MAX_PROFILE_ROWS {
            return Err(CommandError::invalid(
                &format!("accelerators[{i}].profile"),
                format!("{} rows; at most {MAX_PROFILE_ROWS}", a.profile.len()),
            ));
        }
    }
    Ok(())
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

fn status_from_pb(s: i32) -> Option<NodeStatus> {
    match pb::NodeStatus::try_from(s).ok()? {
        pb::NodeStatus::Ready => Some(NodeStatus::Ready),
        pb::NodeStatus::Lost => Some(NodeStatus::Lost),
        pb::NodeStatus::Draining => Some(NodeStatus::Draining),
        pb::NodeStatus::Unspecified => None,
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
        if cmd.client_id != 0 {
            if let Some(s) = self.sessions.get(&cmd.client_id) {
                if cmd.seq == s.seq {
                    return Applied {
                        result: (&s.result).into(),
                        duplicate: true,
                    };
                }
                if cmd.seq < s.seq {
                    return Applied {
                        result: pb::ApplyResult {
                            code: 9,
                            message: format!(
                                "sequence {} of client {} is older than its last write {}",
                                cmd.seq, cmd.client_id, s.seq
                            ),
                            index,
                            epoch: 0,
                        },
                        duplicate: true,
                    };
                }
            }
        }
        let outcome = validate(cmd).and_then(|()| {
            // Apply on a copy of the touched parts only when valid: apply_kind checks
            // everything before mutating, so a failure leaves the state unchanged.
            self.apply_kind(cmd.kind.as_ref().expect("validated"), index)
        });
        let result = match outcome {
            Ok(epoch) => StoredResult {
                code: 0,
                message: String::new(),
                index,
                epoch,
            },
            Err(e) => StoredResult {
                code: e.code(),
                message: e.to_string(),
                index,
                epoch: 0,
            },
        };
        if cmd.client_id != 0 {
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
        Applied {
            result: (&result).into(),
            duplicate: false,
        }
    }

    fn check_node_commit(
        &self,
        c: &pb::CommitPlacement,
        prefix: &str,
        always_cas: bool,
    ) -> Result<(), CommandError> {
        for (i, part) in c.partitions.iter().chain(&c.target).enumerate() {
            for m in &part.models {
                if !self.models.contains_key(m) {
                    return Err(CommandError::invalid(
                        &format!("{prefix}partitions[{i}].models"),
                        format!("model {m:?} is not deployed"),
                    ));
                }
            }
        }
        let node = self.nodes.get(&c.node).ok_or_else(|| {
            CommandError::invalid(
                &format!("{prefix}node"),
                format!("node {:?} is not registered", c.node),
            )
        })?;
        if (always_cas || c.expected_epoch != 0) && c.expected_epoch != node.assignment_epoch {
            return Err(CommandError::FailedPrecondition(format!(
                "stale epoch: node {:?} is at epoch {}, expected {}",
                c.node, node.assignment_epoch, c.expected_epoch
            )));
        }
        Ok(())
    }

    /// Write a checked node commit: new partitions and target, epoch = `index`, an event.
    fn commit_node(&mut self, c: &pb::CommitPlacement, index: u64, reason: &str) -> u64 {
        let node = self.nodes.get_mut(&c.node).expect("checked");
        node.partitions = partitions_from_pb(&c.partitions);
        node.target = if c.target.is_empty() {
            node.partitions.clone()
        } else {
            partitions_from_pb(&c.target)
        };
        node.assignment_epoch = index;
        let ev = PlanEvent {
            index,
            node: c.node.clone(),
            epoch: index,
            reason: reason.to_string(),
            partitions: describe_partitions(&node.partitions),
        };
        self.push_event(ev);
        index
    }

    fn push_event(&mut self, ev: PlanEvent) {
        self.events.push_back(ev);
        while self.events.len() > MAX_PLAN_EVENTS {
            self.events.pop_front();
        }
    }

    /// Insert or update a node (status ready, unless an operator drains it). Returns the
    /// node's assignment epoch.
    fn register_node(&mut self, r: &pb::RegisterNode) -> u64 {
        let accelerators: Vec<Accelerator> = r.accelerators.iter().map(Into::into).collect();
        if !self.nodes.contains_key(&r.name) {
            self.nodes.insert(
                r.name.clone(),
                Node {
                    name: r.name.clone(),
                    accelerators: Vec::new(),
                    agent_addr: String::new(),
                    status: NodeStatus::Ready,
                    assignment_epoch: 0,
                    partitions: Vec::new(),
                    target: Vec::new(),
                    cert_sha256: String::new(),
                    cert_not_before: 0,
                },
            );
        }
        let node = self.nodes.get_mut(&r.name).expect("just inserted");
        node.accelerators = accelerators;
        node.agent_addr = r.agent_addr.clone();
        let mut left = None;
        if !r.cert_sha256.is_empty() {
            let new = hex(&r.cert_sha256);
            if !node.cert_sha256.is_empty() && node.cert_sha256 != new {
                left = Some(std::mem::take(&mut node.cert_sha256));
            }
            node.cert_sha256 = new;
            node.cert_not_before = r.cert_not_before_unix;
        }
        // An operator's drain outlives the agent reconnecting.
        if node.status != NodeStatus::Draining {
            node.status = NodeStatus::Ready;
        }
        let epoch = node.assignment_epoch;
        // The certificate the node moved away from stops working (every certificate ever
        // bound to the name is revoked by the time the node is removed).
        if let Some(old) = left {
            self.revoke(old, &r.name);
        }
        epoch
    }

    fn revoke(&mut self, sha256: String, node: &str) {
        self.revoked_certs.push_back(RevokedCert {
            sha256,
            node: node.to_string(),
        });
        while self.revoked_certs.len() > MAX_REVOKED_CERTS {
            self.revoked_certs.pop_front();
        }
    }

    /// A node bound to a certificate moves only to one at least as new: an older
    /// certificate of the name (one an earlier binding left) cannot take it back.
    fn check_not_older(&self, r: &pb::RegisterNode) -> Result<(), CommandError> {
        let Some(n) = self.nodes.get(&r.name) else {
            return Ok(());
        };
        if r.cert_sha256.is_empty()
            || n.cert_sha256.is_empty()
            || n.cert_sha256 == hex(&r.cert_sha256)
        {
            return Ok(());
        }
        if r.cert_not_before_unix < n.cert_not_before {
            return Err(CommandError::PermissionDenied(format!(
                "certificate: node {:?} is bound to a newer certificate (notBefore {} s) than \
                 this one (notBefore {} s); an older certificate cannot take the name back",
                r.name, n.cert_not_before, r.cert_not_before_unix
            )));
        }
        Ok(())
    }

    /// Refuse a registration with a certificate revoked by `nodes remove`.
    fn check_not_revoked(&self, r: &pb::RegisterNode) -> Result<(), CommandError> {
        if r.cert_sha256.is_empty() {
            return Ok(());
        }
        let h = hex(&r.cert_sha256);
        match self.revoked_certs.iter().find(|c| c.sha256 == h) {
            Some(c) => Err(CommandError::PermissionDenied(format!(
                "certificate: this certificate of node {:?} was revoked when the node was \
                 removed or moved to a newer certificate; join again with a new token (`edgeplane tokens create --node {}`) \
                 and an empty data dir",
                c.node, r.name
            ))),
            None => Ok(()),
        }
    }

    /// Whether a certificate (SHA-256) was revoked by `nodes remove`.
    pub fn is_revoked(&self, cert_sha256: &[u8]) -> bool {
        let h = hex(cert_sha256);
        self.revoked_certs.iter().any(|c| c.sha256 == h)
    }

    /// Check, then mutate. Returns the affected node's assignment epoch (0 if none).
    /// Every check happens before the first mutation.
    fn apply_kind(&mut self, kind: &Kind, index: u64) -> Result<u64, CommandError> {
        match kind {
            Kind::RegisterNode(r) => {
                self.check_not_revoked(r)?;
                self.check_not_older(r)?;
                Ok(self.register_node(r))
            }
            Kind::CreateToken(c) => crate::tokens::apply_create(self, c).map(|()| 0),
            Kind::RevokeToken(r) => crate::tokens::apply_revoke(self, r).map(|()| 0),
            Kind::JoinNode(j) => {
                let r = j.node.as_ref().expect("validated");
                self.check_not_revoked(r)?;
                crate::tokens::check_join(self, j)?;
                if self.nodes.contains_key(&r.name) {
                    return Err(CommandError::FailedPrecondition(format!(
                        "name: node {:?} is already registered, and a joined name belongs to its \
                         certificate; to give the name to a new agent, remove the node first \
                         (`edgeplane nodes remove {}`)",
                        r.name, r.name
                    )));
                }
                crate::tokens::mark_used(self, j);
                Ok(self.register_node(r))
            }
            Kind::SetNodeStatus(s) => {
                let status = status_from_pb(s.status).expect("validated");
                let node = self.nodes.get_mut(&s.name).ok_or_else(|| {
                    CommandError::NotFound(format!("node {:?} not found", s.name))
                })?;
                node.status = status;
                Ok(node.assignment_epoch)
            }
            Kind::RemoveNode(r) => {
                let Some(gone) = self.nodes.remove(&r.name) else {
                    return Err(CommandError::NotFound(format!(
                        "node {:?} not found",
                        r.name
                    )));
                };
                // Its certificate stops working here: the agent behind it, or anyone who
                // copied its key, cannot register the name (or another) again.
                if !gone.cert_sha256.is_empty() {
                    self.revoke(gone.cert_sha256, &r.name);
                }
                self.pins.retain(|p| p.node != r.name);
                Ok(0)
            }
            Kind::DeployModel(d) => {
                self.models.insert(
                    d.name.clone(),
                    Model {
                        name: d.name.clone(),
                        slo_ms: d.slo_ms,
                        rate: d.rate,
                        memory_mb: d.memory_mb,
                    },
                );
                Ok(0)
            }
            Kind::RemoveModel(r) => {
                if self.models.remove(&r.name).is_none() {
                    return Err(CommandError::NotFound(format!(
                        "model {:?} not found",
                        r.name
                    )));
                }
                self.pins.retain(|p| p.model != r.name);
                let holding: Vec<String> = self
                    .nodes
                    .values()
                    .filter(|n| n.partitions.iter().any(|p| p.models.contains(&r.name)))
                    .map(|n| n.name.clone())
                    .collect();
                for name in holding {
                    let node = self.nodes.get_mut(&name).expect("listed");
                    for p in &mut node.partitions {
                        p.models.retain(|m| m != &r.name);
                    }
                    node.assignment_epoch = index;
                }
                Ok(0)
            }
            Kind::PinPlacement(p) => {
                if !self.models.contains_key(&p.model) {
                    return Err(CommandError::invalid(
                        "model",
                        format!("model {:?} is not deployed", p.model),
                    ));
                }
                let node = self.nodes.get_mut(&p.node).ok_or_else(|| {
                    CommandError::invalid("node", format!("node {:?} is not registered", p.node))
                })?;
                let acc = if p.accelerator.is_empty() {
                    // No accelerator named: on a node without GPUs the pin is node-wide (""),
                    // and the agent's scheduler runs the model on any of its accelerators. It
                    // used to mean the node's first accelerator, which on a two-NPU XR box
                    // halved what the pinned models could use once assignments restricted
                    // models to their partitions' accelerators. A GPU partition needs a
                    // concrete GPU: there it is still the first accelerator.
                    if node.accelerators.iter().any(|a| a.kind == "gpu") {
                        node.accelerators
                            .first()
                            .map(|a| a.id.clone())
                            .unwrap_or_default()
                    } else {
                        String::new()
                    }
                } else {
                    if !node.accelerators.iter().any(|a| a.id == p.accelerator) {
                        return Err(CommandError::invalid(
                            "accelerator",
                            format!("node {:?} has no accelerator {:?}", p.node, p.accelerator),
                        ));
                    }
                    p.accelerator.clone()
                };
                for part in &mut node.partitions {
                    part.models.retain(|m| m != &p.model);
                }
                match node.partitions.iter_mut().find(|x| x.accelerator_id == acc) {
                    Some(part) => part.models.push(p.model.clone()),
                    None => node.partitions.push(Partition {
                        accelerator_id: acc.clone(),
                        share_pct: 100,
                        models: vec![p.model.clone()],
                    }),
                }
                node.partitions.retain(|x| !x.models.is_empty());
                node.assignment_epoch = index;
                let epoch = node.assignment_epoch;
                self.pins
                    .retain(|x| !(x.node == p.node && x.model == p.model));
                self.pins.push_back(Pin {
                    node: p.node.clone(),
                    model: p.model.clone(),
                    accelerator: acc,
                });
                Ok(epoch)
            }
            Kind::UnpinPlacement(p) => {
                let node = self.nodes.get_mut(&p.node).ok_or_else(|| {
                    CommandError::invalid("node", format!("node {:?} is not registered", p.node))
                })?;
                for part in &mut node.partitions {
                    part.models.retain(|m| m != &p.model);
                }
                node.partitions.retain(|x| !x.models.is_empty());
                node.assignment_epoch = index;
                let epoch = node.assignment_epoch;
                self.pins
                    .retain(|x| !(x.node == p.node && x.model == p.model));
                Ok(epoch)
            }
            Kind::CommitPlacement(c) => {
                self.check_node_commit(c, "", false)?;
                Ok(self.commit_node(c, index, &c.reason))
            }
            Kind::CommitPlan(p) => {
                // every check (models deployed, nodes registered, every epoch as expected)
                // before the first write: the plan applies whole or not at all
                for (i, c) in p.nodes.iter().enumerate() {
                    self.check_node_commit(c, &format!("nodes[{i}]."), true)?;
                }
                for c in &p.nodes {
                    let why = if c.reason.is_empty() {
                        &p.reason
                    } else {
                        &c.reason
                    };
                    self.commit_node(c, index, why);
                }
                self.plan_basis = p.basis_rps.iter().map(|(k, v)| (k.clone(), *v)).collect();
                self.plan_nodes = p.plan_nodes.iter().cloned().collect();
                // A model the plan leaves unplaced is an event of its own (no node may change
                // for it), so `events` always says why a deployed model is served nowhere.
                let new_shed: Vec<&String> = p
                    .shed
                    .iter()
                    .filter(|s| !self.plan_shed.contains(*s))
                    .collect();
                for s in new_shed {
                    self.push_event(PlanEvent {
                        index,
                        node: String::new(),
                        epoch: 0,
                        reason: format!("not placed: {s}"),
                        partitions: describe_partitions(&[]),
                    });
                }
                self.plan_shed = p.shed.iter().cloned().collect();
                Ok(0)
            }
            Kind::AddMember(a) => {
                let m = a.member.as_ref().expect("validated");
                if let Some(old) = self.members.get(&m.id) {
                    if old.learner == m.learner {
                        return Err(CommandError::FailedPrecondition(format!(
                            "member {} already exists",
                            m.id
                        )));
                    }
                }
                self.members.insert(m.id, m.into());
                self.removed_members.remove(&m.id);
                Ok(0)
            }
            Kind::RemoveMember(r) => {
                if self.members.remove(&r.id).is_none() {
                    return Err(CommandError::invalid(
                        "id",
                        format!("unknown member {}", r.id),
                    ));
                }
                self.removed_members.insert(r.id);
                Ok(0)
            }
            Kind::UpdateMember(u) => {
                let m = u.member.as_ref().expect("validated");
                let Some(old) = self.members.get_mut(&m.id) else {
                    return Err(CommandError::invalid(
                        "id",
                        format!("unknown member {}", m.id),
                    ));
                };
                old.peer_addr = m.peer_addr.clone();
                old.client_addr = m.client_addr.clone();
                Ok(0)
            }
            Kind::ExpireNodes(e) => {
                // Only nodes still ready: one that re-registered or was removed since the
                // leader decided is left as it is.
                for name in &e.names {
                    if let Some(n) = self.nodes.get_mut(name) {
                        if n.status == NodeStatus::Ready {
                            n.status = NodeStatus::Lost;
                        }
                    }
                }
                Ok(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy(name: &str, slo: f64, rate: f64) -> pb::Command {
        pb::Command {
            client_id: 7,
            seq: 1,
            kind: Some(Kind::DeployModel(pb::DeployModel {
                name: name.into(),
                slo_ms: slo,
                rate,
                memory_mb: 100,
            })),
        }
    }

    #[test]
    fn bad_input_names_the_field_and_writes_nothing() {
        let mut s = State::default();
        for (cmd, field) in [
            (deploy("", 10.0, 1.0), "name"),
            (deploy("m", 0.0, 1.0), "slo_ms"),
            (deploy("m", -1.0, 1.0), "slo_ms"),
            (deploy("m", 10.0, f64::NAN), "rate"),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, (mut c, f))| {
            c.seq = i as u64 + 1;
            (c, f)
        }) {
            let before = s.models.clone();
            let err = validate(&cmd).unwrap_err();
            assert!(
                matches!(&err, CommandError::InvalidArgument { field: f, .. } if f == field),
                "{err}"
            );
            let a = s.apply(&cmd, 5);
            assert_eq!(a.result.code, 3);
            assert!(a.result.message.contains(field));
            assert_eq!(s.models, before);
        }
    }

    #[test]
    fn retried_write_applies_once() {
        let mut s = State::default();
        let mut cmd = pb::Command {
            client_id: 9,
            seq: 1,
            kind: Some(Kind::RegisterNode(pb::RegisterNode {
                name: "n".into(),
                accelerators: vec![pb::Accelerator {
                    id: "gpu0".into(),
                    ..Default::default()
                }],
                agent_addr: "127.0.0.1:1".into(),
                cert_sha256: Vec::new(),
                cert_not_before_unix: 0,
            })),
        };
        s.apply(&cmd, 2);
        s.apply(&deploy("m", 10.0, 1.0), 3);
        cmd.seq = 2;
        cmd.kind = Some(Kind::PinPlacement(pb::PinPlacement {
            node: "n".into(),
            model: "m".into(),
            accelerator: String::new(),
        }));
        let first = s.apply(&cmd, 4);
        assert_eq!(
            first.result.epoch, 4,
            "the epoch is the log index of the change"
        );
        let again = s.apply(&cmd, 5);
        assert!(again.duplicate);
        assert_eq!(again.result, first.result);
        assert_eq!(s.nodes["n"].assignment_epoch, 4);
    }

    fn register(name: &str, client_id: u64) -> pb::Command {
        pb::Command {
            client_id,
            seq: 1,
            kind: Some(Kind::RegisterNode(pb::RegisterNode {
                name: name.into(),
                accelerators: vec![pb::Accelerator {
                    id: "gpu0".into(),
                    ..Default::default()
                }],
                agent_addr: "127.0.0.1:1".into(),
                cert_sha256: Vec::new(),
                cert_not_before_unix: 0,
            })),
        }
    }

    fn pin(node: &str, model: &str, client_id: u64) -> pb::Command {
        pb::Command {
            client_id,
            seq: 1,
            kind: Some(Kind::PinPlacement(pb::PinPlacement {
                node: node.into(),
                model: model.into(),
                accelerator: String::new(),
            })),
        }
    }

    #[test]
    fn a_pin_without_an_accelerator_is_node_wide_unless_the_node_has_gpus() {
        let mut s = State::default();
        s.apply(&deploy("m", 10.0, 1.0), 2);
        let node = |name: &str, kinds: &[(&str, &str)], client_id| pb::Command {
            client_id,
            seq: 1,
            kind: Some(Kind::RegisterNode(pb::RegisterNode {
                name: name.into(),
                accelerators: kinds
                    .iter()
                    .map(|(id, kind)| pb::Accelerator {
                        id: id.to_string(),
                        kind: kind.to_string(),
                        ..Default::default()
                    })
                    .collect(),
                agent_addr: "127.0.0.1:1".into(),
                cert_sha256: Vec::new(),
                cert_not_before_unix: 0,
            })),
        };
        s.apply(
            &node("xr", &[("npu0", "npu-ws"), ("npu1", "npu-os")], 30),
            3,
        );
        s.apply(&node("box", &[("cpu0", "cpu"), ("gpu0", "gpu")], 31), 4);
        assert_eq!(s.apply(&pin("xr", "m", 32), 5).result.code, 0);
        assert_eq!(s.apply(&pin("box", "m", 33), 6).result.code, 0);
        let accs = |n: &str| -> Vec<String> {
            s.nodes[n]
                .partitions
                .iter()
                .map(|p| p.accelerator_id.clone())
                .collect()
        };
        assert_eq!(accs("xr"), vec![""], "both NPUs stay usable");
        assert_eq!(
            accs("box"),
            vec!["cpu0"],
            "a GPU node keeps the first accelerator"
        );
    }

    #[test]
    fn removing_a_node_revokes_its_certificate() {
        let mut s = State::default();
        let reg = |cert: u8| pb::Command {
            kind: Some(Kind::RegisterNode(pb::RegisterNode {
                name: "edge-1".into(),
                agent_addr: "127.0.0.1:1".into(),
                cert_sha256: if cert == 0 {
                    Vec::new()
                } else {
                    vec![cert; 32]
                },
                ..Default::default()
            })),
            ..Default::default()
        };
        assert_eq!(s.apply(&reg(1), 2).result.code, 0);
        assert_eq!(s.nodes["edge-1"].cert_sha256, "01".repeat(32));
        let remove = pb::Command {
            kind: Some(Kind::RemoveNode(pb::RemoveNode {
                name: "edge-1".into(),
            })),
            ..Default::default()
        };
        assert_eq!(s.apply(&remove, 3).result.code, 0);
        assert!(s.is_revoked(&[1; 32]));
        // The removed node's certificate cannot register it (or any name) again, and the
        // refusal says how to bring the box back.
        let before = s.encode();
        let r = s.apply(&reg(1), 4).result;
        assert_eq!(r.code, 7, "{}", r.message);
        assert!(
            r.message.contains("revoked") && r.message.contains("tokens create --node edge-1"),
            "{}",
            r.message
        );
        assert_eq!(before, s.encode(), "a refused registration wrote something");
        // A new certificate (a new join) registers the name; plaintext registrations are
        // not bound to a certificate and are unaffected.
        assert_eq!(s.apply(&reg(2), 5).result.code, 0);
        assert_eq!(s.nodes["edge-1"].cert_sha256, "02".repeat(32));
        assert_eq!(s.apply(&reg(0), 6).result.code, 0);
        assert_eq!(s.nodes["edge-1"].cert_sha256, "02".repeat(32));
        // The list is bounded, oldest forgotten first.
        for i in 0..MAX_REVOKED_CERTS + 5 {
            s.revoked_certs.push_back(RevokedCert {
                sha256: format!("{i:064x}"),
                node: "x".into(),
            });
        }
        assert_eq!(s.apply(&remove, 7).result.code, 0);
        assert_eq!(s.revoked_certs.len(), MAX_REVOKED_CERTS);
        assert!(s.is_revoked(&[2; 32]), "the newest revocation is kept");
    }

    /// Issue 22, finding 3: a registration cannot carry megabytes (before: eight 3.3 MB
    /// registrations grew the replicated state to 8.6 MB).
    #[test]
    fn registrations_are_bounded_in_accelerators_and_string_lengths() {
        let acc = |i: usize| pb::Accelerator {
            id: format!("gpu{i}"),
            kind: "gpu".into(),
            ..Default::default()
        };
        let reg = |accelerators: Vec<pb::Accelerator>| pb::Command {
            kind: Some(Kind::RegisterNode(pb::RegisterNode {
                name: "edge-1".into(),
                accelerators,
                ..Default::default()
            })),
            ..Default::default()
        };
        assert!(validate(&reg((0..MAX_ACCELERATORS).map(acc).collect())).is_ok());
        let e = validate(&reg((0..=MAX_ACCELERATORS).map(acc).collect())).unwrap_err();
        assert!(
            e.to_string().contains("accelerators") && e.to_string().contains("64"),
            "{e}"
        );
        let mut long = acc(0);
        long.name = "x".repeat(MAX_FIELD + 1);
        let e = validate(&reg(vec![long])).unwrap_err().to_string();
        assert!(e.contains("accelerators[0].name"), "{e}");
        let mut rows = acc(0);
        rows.profile = vec![pb::ProfileRow::default(); MAX_PROFILE_ROWS + 1];
        let e = validate(&reg(vec![rows])).unwrap_err().to_string();
        assert!(e.contains("accelerators[0].profile"), "{e}");
    }

    /// Issue 22, finding 2: a second certificate for the node re-registers it; removing the
    /// node must revoke the first one too (before, only the last bound one was revoked and the
    /// original joined certificate registered again).
    #[test]
    fn every_certificate_bound_to_a_node_is_revoked_and_older_ones_cannot_rebind() {
        let mut s = State::default();
        let reg = |cert: u8, not_before: u64| pb::Command {
            kind: Some(Kind::RegisterNode(pb::RegisterNode {
                name: "edge-1".into(),
                agent_addr: "127.0.0.1:1".into(),
                cert_sha256: vec![cert; 32],
                cert_not_before_unix: not_before,
                ..Default::default()
            })),
            ..Default::default()
        };
        let remove = pb::Command {
            kind: Some(Kind::RemoveNode(pb::RemoveNode {
                name: "edge-1".into(),
            })),
            ..Default::default()
        };
        // The joined certificate (A, notBefore 100), then `certs issue node` (B, 200).
        assert_eq!(s.apply(&reg(0xa, 100), 2).result.code, 0);
        assert_eq!(s.apply(&reg(0xb, 200), 3).result.code, 0);
        assert_eq!(s.nodes["edge-1"].cert_sha256, "0b".repeat(32));
        assert!(s.is_revoked(&[0xa; 32]), "moving to B revoked A at once");
        let r = s.apply(&reg(0xa, 100), 4).result;
        assert_eq!(r.code, 7, "A registers again: {}", r.message);
        assert_eq!(s.apply(&remove, 5).result.code, 0);
        for c in [0xa, 0xb] {
            assert!(s.is_revoked(&[c; 32]), "{c:x} revoked after nodes remove");
            let before = s.encode();
            assert_eq!(s.apply(&reg(c, 300), 6).result.code, 7);
            assert_eq!(before, s.encode(), "a refused registration wrote something");
        }
        // Bound to D (notBefore 500): an older certificate C (400) cannot take the name.
        assert_eq!(s.apply(&reg(0xd, 500), 7).result.code, 0);
        let before = s.encode();
        let r = s.apply(&reg(0xc, 400), 8).result;
        assert_eq!(r.code, 7, "{}", r.message);
        assert!(r.message.contains("newer certificate"), "{}", r.message);
        assert_eq!(before, s.encode());
        assert!(!s.is_revoked(&[0xd; 32]), "the refusal left D bound");
    }

    #[test]
    fn epochs_keep_increasing_when_a_node_is_removed_and_registered_again() {
        let mut s = State::default();
        s.apply(&deploy("m", 10.0, 1.0), 2);
        s.apply(&register("n", 20), 3);
        let mut epochs = vec![s.apply(&pin("n", "m", 21), 4).result.epoch];
        epochs.push(s.apply(&pin("n", "m", 22), 9).result.epoch);
        let rm = pb::Command {
            client_id: 23,
            seq: 1,
            kind: Some(Kind::RemoveNode(pb::RemoveNode { name: "n".into() })),
        };
        assert_eq!(s.apply(&rm, 10).result.code, 0);
        s.apply(&register("n", 24), 11);
        epochs.push(s.apply(&pin("n", "m", 25), 12).result.epoch);
        // Hand-derived: the indexes of the three pins.
        assert_eq!(epochs, vec![4, 9, 12]);
        // A snapshot round trip (restore) keeps them.
        let back = State::decode(&s.encode()).unwrap();
        assert_eq!(back.nodes["n"].assignment_epoch, 12);
    }

    #[test]
    fn expire_nodes_marks_only_ready_nodes_lost_and_names_bad_fields() {
        let mut s = State::default();
        for (i, n) in ["a", "b", "c"].iter().enumerate() {
            s.apply(&register(n, 30 + i as u64), 2 + i as u64);
        }
        let drain = pb::Command {
            client_id: 40,
            seq: 1,
            kind: Some(Kind::SetNodeStatus(pb::SetNodeStatus {
                name: "c".into(),
                status: pb::NodeStatus::Draining as i32,
            })),
        };
        s.apply(&drain, 5);
        let expire = |names: &[&str]| pb::Command {
            client_id: 41,
            seq: 1,
            kind: Some(Kind::ExpireNodes(pb::ExpireNodes {
                names: names.iter().map(|n| n.to_string()).collect(),
            })),
        };
        // "gone" was never registered: skipped, the rest still applies (one entry for all)
        assert_eq!(s.apply(&expire(&["a", "c", "gone"]), 6).result.code, 0);
        assert_eq!(s.nodes["a"].status, NodeStatus::Lost);
        assert_eq!(s.nodes["b"].status, NodeStatus::Ready);
        assert_eq!(
            s.nodes["c"].status,
            NodeStatus::Draining,
            "only ready nodes expire"
        );
        let e = validate(&expire(&[])).unwrap_err();
        assert!(e.to_string().contains("names"), "{e}");
        let e = validate(&expire(&["ok", " "])).unwrap_err();
        assert!(e.to_string().contains("names[1]"), "{e}");
    }

    #[test]
    fn a_drained_node_stays_draining_when_its_agent_registers_again() {
        let mut s = State::default();
        s.apply(&register("d", 50), 2);
        let drain = pb::Command {
            client_id: 51,
            seq: 1,
            kind: Some(Kind::SetNodeStatus(pb::SetNodeStatus {
                name: "d".into(),
                status: pb::NodeStatus::Draining as i32,
            })),
        };
        s.apply(&drain, 3);
        s.apply(&register("d", 52), 4);
        assert_eq!(s.nodes["d"].status, NodeStatus::Draining);
        let undo = pb::Command {
            client_id: 53,
            seq: 1,
            kind: Some(Kind::SetNodeStatus(pb::SetNodeStatus {
                name: "d".into(),
                status: pb::NodeStatus::Ready as i32,
            })),
        };
        s.apply(&undo, 5);
        assert_eq!(s.nodes["d"].status, NodeStatus::Ready);
    }

    #[test]
    fn sessions_are_evicted_oldest_write_first() {
        let mut s = State::default();
        for i in 0..(MAX_SESSIONS as u64 + 3) {
            let mut c = deploy("m", 10.0, 1.0);
            c.client_id = 1000 + i;
            s.apply(&c, 10 + i);
        }
        // MAX + 3 clients evicted 1000, 1001, 1002. Client 1000 writes again (a new
        // session, the newest), which evicts the next oldest, 1003.
        let mut c = deploy("m", 10.0, 1.0);
        c.client_id = 1000;
        c.seq = 2;
        s.apply(&c, 50_000);
        assert_eq!(s.sessions.len(), MAX_SESSIONS);
        assert!(s.sessions.contains_key(&1000));
        for gone in 1001..=1003u64 {
            assert!(!s.sessions.contains_key(&gone), "client {gone} kept");
        }
        assert!(s.sessions.contains_key(&1004));
        // The eviction index is rebuilt from a snapshot.
        let mut back = State::decode(&s.encode()).unwrap();
        let mut c = deploy("m", 10.0, 1.0);
        c.client_id = 99;
        back.apply(&c, 50_001);
        assert!(!back.sessions.contains_key(&1004));
        assert!(back.sessions.contains_key(&1005));
    }

    #[test]
    fn snapshot_roundtrip() {
        let mut s = State::default();
        s.apply(&deploy("m", 10.0, 2.5), 2);
        let back = State::decode(&s.encode()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn addresses() {
        assert!(check_addr("a", "127.0.0.1:7101").is_ok());
        assert!(check_addr("a", "localhost:1").is_ok());
        assert!(check_addr("a", "127.0.0.1").is_err());
        assert!(check_addr("a", ":80").is_err());
        assert!(check_addr("a", "h:0").is_err());
        assert!(check_addr("a", "h:99999").is_err());
    }
}
