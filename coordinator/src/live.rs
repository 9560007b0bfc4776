//! The seam between the leader's memory and the services that show it: live figures
//! (`nodes list`, `models list`), GPU partitions as agents report them, and what the
//! planner would do now. The Admin service reads it through [`LiveStats`]; the agent hub
//! and the placement loop implement it. A leaf module: it imports only the state, so
//! admin, agents, placement and server never import each other through it.

use std::collections::BTreeMap;

use edgeplane_planner as planner;
use edgeplane_proto::raft as pb;

use crate::state::State;

/// Live node figures (totals since the node joined), from the leader's memory.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeLiveStats {
    pub deadlines_met: u64,
    pub deadlines_missed: u64,
    pub energy_j: f64,
}

/// Live model figures aggregated from agent reports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelLiveStats {
    /// Observed request rate, requests/s.
    pub rate: f64,
    /// Share of deadlines met, percent.
    pub deadline_met_pct: f64,
    pub energy_j: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PartitionLive {
    pub id: String,
    pub accelerator_id: String,
    pub share_pct: u32,
    pub models: Vec<String>,
    pub ready: bool,
    /// Busy share of the last report window, 0..1.
    pub utilisation: f64,
    pub busy_s: f64,
    pub energy_j: f64,
}

/// What one line of a round's "why" is about.
#[derive(Debug, Clone, PartialEq)]
pub enum DecisionSubject {
    /// The profile an accelerator of a ready node is planned with.
    Profile { node: String, accelerator: String },
    /// The planner's own decisions: the plan as a whole, or one model.
    Planner(planner::Subject),
    /// Why one node's assignment is committed.
    Node(String),
}

/// One line of a round's "why".
#[derive(Debug, Clone, PartialEq)]
pub struct PlanDecision {
    pub subject: DecisionSubject,
    pub reason: String,
}

/// `profile NODE/ACC: REASON`, `plan: REASON`, `MODEL: REASON`, `NODE: REASON`.
impl std::fmt::Display for PlanDecision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.subject {
            DecisionSubject::Profile { node, accelerator } => {
                write!(f, "profile {node}/{accelerator}: {}", self.reason)
            }
            DecisionSubject::Planner(s) => write!(f, "{s}: {}", self.reason),
            DecisionSubject::Node(n) => write!(f, "{n}: {}", self.reason),
        }
    }
}

/// What one planning round would do (a dry run's answer; the leader loop commits it).
#[derive(Debug, Clone, Default)]
pub struct PlanPreview {
    pub replanned: bool,
    pub decisions: Vec<PlanDecision>,
    /// Make-before-break steps (batches left out: a batch change alone moves nothing).
    pub steps: Vec<planner::Step>,
    /// The plan the round ends with (the new one, or the committed one kept).
    pub plan: planner::Plan,
    /// node → its new effective partitions and target, only nodes that change.
    pub changes: Vec<pb::CommitPlacement>,
    pub basis_rps: BTreeMap<String, f64>,
    pub plan_nodes: Vec<String>,
    pub shed: Vec<String>,
    /// Why this round commits (the re-plan trigger or the make-before-break progress).
    pub reason: String,
}

impl PlanPreview {
    /// Whether committing this round would change the replicated state.
    pub fn changes_state(&self, st: &State) -> bool {
        let basis: BTreeMap<String, f64> =
            st.plan_basis.iter().map(|(k, v)| (k.clone(), *v)).collect();
        let nodes: std::collections::BTreeSet<String> = st.plan_nodes.iter().cloned().collect();
        !self.changes.is_empty()
            || (self.replanned
                && (basis != self.basis_rps || nodes != self.plan_nodes.iter().cloned().collect()))
    }
}

/// Seam for the agent side: leader-memory statistics merged into `nodes list` and
/// `models list`. Implementations must be cheap (called once per listed item).
pub trait LiveStats: Send + Sync + 'static {
    fn node(&self, name: &str) -> Option<NodeLiveStats>;
    fn model(&self, name: &str) -> Option<ModelLiveStats>;
    /// What the planner would do now over `st` (dry run; commits nothing).
    fn plan_preview(&self, _st: &State) -> Result<PlanPreview, String> {
        Err("this coordinator runs no planner".into())
    }
    /// The GPU partitions `node` reported last.
    fn partitions(&self, _node: &str) -> Vec<PartitionLive> {
        Vec::new()
    }
    /// The rate the planner plans each model on now (observed peak).
    fn planned_rates(&self) -> BTreeMap<String, f64> {
        Default::default()
    }
}
