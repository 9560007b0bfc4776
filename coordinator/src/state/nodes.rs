//! Nodes: registration (with certificate binding and revocation), status, removal and
//! expiry of lost nodes.

use edgeplane_proto::raft as pb;
use serde::{Deserialize, Serialize};

use super::placement::Partition;
use super::{check_addr, check_name, hex, CommandError, State};

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

pub(super) fn validate_register(r: &pb::RegisterNode) -> Result<(), CommandError> {
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
    Ok(())
}

pub(super) fn validate_status(s: &pb::SetNodeStatus) -> Result<(), CommandError> {
    check_name("name", &s.name)?;
    if status_from_pb(s.status).is_none() {
        return Err(CommandError::invalid(
            "status",
            "must be ready, lost or draining",
        ));
    }
    Ok(())
}

pub(super) fn validate_expire(e: &pb::ExpireNodes) -> Result<(), CommandError> {
    if e.names.is_empty() {
        return Err(CommandError::invalid(
            "names",
            "must name at least one node",
        ));
    }
    for (i, n) in e.names.iter().enumerate() {
        check_name(&format!("names[{i}]"), n)?;
    }
    Ok(())
}

fn status_from_pb(s: i32) -> Option<NodeStatus> {
    match pb::NodeStatus::try_from(s).ok()? {
        pb::NodeStatus::Ready => Some(NodeStatus::Ready),
        pb::NodeStatus::Lost => Some(NodeStatus::Lost),
        pb::NodeStatus::Draining => Some(NodeStatus::Draining),
        pb::NodeStatus::Unspecified => None,
    }
}

impl State {
    pub(super) fn apply_register(&mut self, r: &pb::RegisterNode) -> Result<u64, CommandError> {
        self.check_not_revoked(r)?;
        self.check_not_older(r)?;
        Ok(self.register_node(r))
    }

    pub(super) fn apply_join(&mut self, j: &pb::JoinNode) -> Result<u64, CommandError> {
        let r = j.node.as_ref().expect("validated");
        self.check_not_revoked(r)?;
        super::tokens::check_join(self, j)?;
        if self.nodes.contains_key(&r.name) {
            return Err(CommandError::FailedPrecondition(format!(
                "name: node {:?} is already registered, and a joined name belongs to its \
                 certificate; to give the name to a new agent, remove the node first \
                 (`edgeplane nodes remove {}`)",
                r.name, r.name
            )));
        }
        super::tokens::mark_used(self, j);
        Ok(self.register_node(r))
    }

    pub(super) fn apply_set_status(&mut self, s: &pb::SetNodeStatus) -> Result<u64, CommandError> {
        let status = status_from_pb(s.status).expect("validated");
        let node = self
            .nodes
            .get_mut(&s.name)
            .ok_or_else(|| CommandError::NotFound(format!("node {:?} not found", s.name)))?;
        node.status = status;
        Ok(node.assignment_epoch)
    }

    pub(super) fn apply_remove_node(&mut self, r: &pb::RemoveNode) -> Result<u64, CommandError> {
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

    /// Only nodes still ready: one that re-registered or was removed since the leader
    /// decided is left as it is.
    pub(super) fn apply_expire(&mut self, e: &pb::ExpireNodes) -> Result<u64, CommandError> {
        for name in &e.names {
            if let Some(n) = self.nodes.get_mut(name) {
                if n.status == NodeStatus::Ready {
                    n.status = NodeStatus::Lost;
                }
            }
        }
        Ok(0)
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
}
