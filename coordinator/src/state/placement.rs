//! Placement: operator pins, the planner's per-node commits and whole plans, and the
//! plan-event history.

use edgeplane_proto::raft as pb;
use serde::{Deserialize, Serialize};

use super::{check_name, CommandError, State};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Partition {
    pub accelerator_id: String,
    pub share_pct: u32,
    pub models: Vec<String>,
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pin {
    pub node: String,
    pub model: String,
    pub accelerator: String,
}

pub(super) fn check_commit(c: &pb::CommitPlacement, prefix: &str) -> Result<(), CommandError> {
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

pub(super) fn validate_pin(node: &str, model: &str) -> Result<(), CommandError> {
    check_name("node", node)?;
    check_name("model", model)
}

pub(super) fn validate_plan(p: &pb::CommitPlan) -> Result<(), CommandError> {
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
    Ok(())
}

impl State {
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

    /// The accelerator a pin lands on: the named one (which must exist), or none named.
    fn pin_accelerator(node: &super::Node, p: &pb::PinPlacement) -> Result<String, CommandError> {
        if p.accelerator.is_empty() {
            // No accelerator named: on a node without GPUs the pin is node-wide (""),
            // and the agent's scheduler runs the model on any of its accelerators. It
            // used to mean the node's first accelerator, which on a two-NPU XR box
            // halved what the pinned models could use once assignments restricted
            // models to their partitions' accelerators. A GPU partition needs a
            // concrete GPU: there it is still the first accelerator.
            if node.accelerators.iter().any(|a| a.kind == "gpu") {
                return Ok(node
                    .accelerators
                    .first()
                    .map(|a| a.id.clone())
                    .unwrap_or_default());
            }
            return Ok(String::new());
        }
        if !node.accelerators.iter().any(|a| a.id == p.accelerator) {
            return Err(CommandError::invalid(
                "accelerator",
                format!("node {:?} has no accelerator {:?}", p.node, p.accelerator),
            ));
        }
        Ok(p.accelerator.clone())
    }

    pub(super) fn apply_pin(
        &mut self,
        p: &pb::PinPlacement,
        index: u64,
    ) -> Result<u64, CommandError> {
        if !self.models.contains_key(&p.model) {
            return Err(CommandError::invalid(
                "model",
                format!("model {:?} is not deployed", p.model),
            ));
        }
        let node = self.nodes.get_mut(&p.node).ok_or_else(|| {
            CommandError::invalid("node", format!("node {:?} is not registered", p.node))
        })?;
        let acc = Self::pin_accelerator(node, p)?;
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

    pub(super) fn apply_unpin(
        &mut self,
        p: &pb::UnpinPlacement,
        index: u64,
    ) -> Result<u64, CommandError> {
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

    pub(super) fn apply_commit(
        &mut self,
        c: &pb::CommitPlacement,
        index: u64,
    ) -> Result<u64, CommandError> {
        self.check_node_commit(c, "", false)?;
        Ok(self.commit_node(c, index, &c.reason))
    }

    /// Every check (models deployed, nodes registered, every epoch as expected) before the
    /// first write: the plan applies whole or not at all.
    pub(super) fn apply_plan(
        &mut self,
        p: &pb::CommitPlan,
        index: u64,
    ) -> Result<u64, CommandError> {
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
}
