//! One planning round, pure given the state, the observed peaks and which models each node
//! reports ready: the planner's plan, then per node the target and (through
//! [`planner::reconcile`]) the effective assignment, and the words that explain it.
//! Commits nothing; [`super::leader`] commits what it returns.

use std::collections::{BTreeMap, BTreeSet};

use edgeplane_gpu::GpuData;
use edgeplane_planner as planner;
use edgeplane_planner::reconcile::{self, Slice};
use edgeplane_proto::raft as pb;

use super::inputs::{committed_plan, inputs, normalise, pin_partitions, to_pb};
use crate::live::{DecisionSubject, PlanDecision, PlanPreview};
use crate::profiles::{profile_label, with_measured};
use crate::state::{Node, NodeStatus, Partition, State};

/// Who reports which models ready (`ready(node)`).
pub type Ready<'a> = &'a dyn Fn(&str) -> BTreeSet<String>;

/// One planning round: pure given the state, the observed peaks and which models each node
/// reports ready. Commits nothing.
pub fn round(
    data: &GpuData,
    st: &State,
    peaks: &BTreeMap<String, f64>,
    ready: Ready<'_>,
    cfg: &planner::Config,
) -> Result<PlanPreview, String> {
    let data = with_measured(data, st);
    let data = data.as_ref();
    let inputs = inputs(data, st, peaks);
    let current = committed_plan(st);
    let out = planner::plan(data, &inputs, current.as_ref(), cfg).map_err(|e| e.to_string())?;
    let mut decisions = profile_decisions(data, st);
    decisions.extend(out.decisions.iter().map(|d| PlanDecision {
        subject: DecisionSubject::Planner(d.subject.clone()),
        reason: d.reason.clone(),
    }));
    let steps = if out.replanned {
        steps(current.as_ref(), &out.plan, &inputs)
    } else {
        Vec::new()
    };
    let trigger = out
        .decisions
        .iter()
        .find(|d| d.subject == planner::Subject::Plan)
        .map(|d| d.reason.clone())
        .unwrap_or_else(|| "first plan".into());
    let trigger = explain_pinned(st, out.trigger.as_ref(), trigger);
    let target = targets(st, out.replanned.then_some(&out.plan));
    let homes = homes(st, &target);
    let mut changes = Vec::new();
    for n in st.nodes.values() {
        let why = |kept: &[String]| commit_reason(n, kept, out.replanned, &trigger);
        if let Some(c) = node_change(st, n, &target, &homes, ready, why) {
            decisions.push(PlanDecision {
                subject: DecisionSubject::Node(n.name.clone()),
                reason: c.reason.clone(),
            });
            changes.push(c);
        }
    }
    let plan = if out.replanned {
        out.plan.clone()
    } else {
        current.clone().unwrap_or_default()
    };
    Ok(PlanPreview {
        replanned: out.replanned,
        decisions,
        steps,
        changes,
        basis_rps: plan.basis_rps.clone(),
        plan_nodes: plan.nodes.iter().cloned().collect(),
        shed: plan
            .shed
            .iter()
            .map(|s| format!("{}: {}", s.model, s.reason))
            .collect(),
        plan,
        reason: trigger,
    })
}

/// Which profile each plannable accelerator of a ready node is planned with (measured
/// rows win).
fn profile_decisions(data: &GpuData, st: &State) -> Vec<PlanDecision> {
    st.nodes
        .values()
        .filter(|n| n.status == NodeStatus::Ready)
        .flat_map(|n| {
            n.accelerators.iter().filter_map(move |a| {
                let label = profile_label(data, a)?;
                Some(PlanDecision {
                    subject: DecisionSubject::Profile {
                        node: n.name.clone(),
                        accelerator: a.id.clone(),
                    },
                    reason: label,
                })
            })
        })
        .collect()
}

/// The make-before-break steps from the committed plan to `next`, batches left out (a
/// batch change alone restarts no partition).
fn steps(
    current: Option<&planner::Plan>,
    next: &planner::Plan,
    inputs: &planner::Inputs,
) -> Vec<planner::Step> {
    let mut next = next.clone();
    for p in &mut next.partitions {
        for t in &mut p.tenants {
            t.max_batch = 0;
        }
    }
    planner::diff(current, &next, inputs)
}

/// The planner's target per node without pinned models (pins are added per node): the new
/// plan's partitions, or (no re-plan) the targets the state records.
fn targets(st: &State, replanned: Option<&planner::Plan>) -> BTreeMap<String, Vec<Partition>> {
    let mut target: BTreeMap<String, Vec<Partition>> = BTreeMap::new();
    match replanned {
        Some(plan) => {
            for p in &plan.partitions {
                target.entry(p.node.clone()).or_default().push(Partition {
                    accelerator_id: p.gpu.clone(),
                    share_pct: p.share_pct,
                    models: p.tenants.iter().map(|t| t.model.clone()).collect(),
                });
            }
        }
        None => {
            for n in st.nodes.values() {
                if !n.target.is_empty() {
                    target.insert(n.name.clone(), n.target.clone());
                }
            }
        }
    }
    // a stale target may still hold a model pinned since
    let pinned: BTreeSet<&str> = st.pins.iter().map(|p| p.model.as_str()).collect();
    for parts in target.values_mut() {
        for p in parts.iter_mut() {
            p.models.retain(|m| !pinned.contains(m.as_str()));
        }
        parts.retain(|p| !p.models.is_empty());
    }
    target
}

/// Where each model will live (targets and pins), for make-before-break.
fn homes(st: &State, target: &BTreeMap<String, Vec<Partition>>) -> reconcile::Homes {
    let mut home = reconcile::Homes::new();
    for (node, parts) in target {
        for p in parts {
            for m in &p.models {
                home.entry(m.clone()).or_default().insert(node.clone());
            }
        }
    }
    for p in st.pins.iter() {
        home.entry(p.model.clone())
            .or_default()
            .insert(p.node.clone());
    }
    home
}

fn to_slices(parts: &[Partition]) -> Vec<Slice> {
    parts
        .iter()
        .map(|p| Slice {
            accelerator_id: p.accelerator_id.clone(),
            share_pct: p.share_pct,
            models: p.models.clone(),
        })
        .collect()
}

fn from_slices(parts: Vec<Slice>) -> Vec<Partition> {
    parts
        .into_iter()
        .map(|p| Partition {
            accelerator_id: p.accelerator_id,
            share_pct: p.share_pct,
            models: p.models,
        })
        .collect()
}

/// `gpu0 40% [a, b] kept until a ready on the new node`
fn kept_text(k: &reconcile::Kept) -> String {
    format!(
        "{} {}% [{}] kept until {} ready on the new node",
        k.slice.accelerator_id,
        k.slice.share_pct,
        k.slice.models.join(", "),
        k.waiting.join(", ")
    )
}

/// Why node `n` changes: what make-before-break keeps, the re-plan, its health, or the
/// retirement of old partitions.
fn commit_reason(n: &Node, kept: &[String], replanned: bool, trigger: &str) -> String {
    if !kept.is_empty() {
        format!("{trigger}; make-before-break: {}", kept.join("; "))
    } else if replanned {
        trigger.to_string()
    } else if n.status != NodeStatus::Ready {
        format!("node {} is {}", n.name, n.status.as_str())
    } else {
        "make-before-break: the new partitions are ready, old ones retired".into()
    }
}

/// The commit node `n` needs (None: it already runs its effective assignment and records
/// its target).
fn node_change(
    st: &State,
    n: &Node,
    target: &BTreeMap<String, Vec<Partition>>,
    homes: &reconcile::Homes,
    ready: Ready<'_>,
    why: impl Fn(&[String]) -> String,
) -> Option<pb::CommitPlacement> {
    let mut tgt = target.get(&n.name).cloned().unwrap_or_default();
    tgt.extend(pin_partitions(st, &n.name));
    let tgt = normalise(tgt);
    let deployed: BTreeSet<String> = st.models.keys().cloned().collect();
    let current = to_slices(&n.partitions);
    let r = reconcile::reconcile(
        reconcile::NodeView {
            name: &n.name,
            ready: n.status == NodeStatus::Ready,
            current: &current,
        },
        &to_slices(&tgt),
        &deployed,
        homes,
        ready,
    );
    let kept: Vec<String> = r.kept.iter().map(kept_text).collect();
    let eff = normalise(from_slices(r.effective));
    let cur = normalise(n.partitions.clone());
    // The recorded target is compared without pinned models: a pin is applied by its own
    // command, and recording it again in the target would bump the node's epoch once
    // after every pin (an agent would see a second assignment for nothing).
    let pinned: BTreeSet<&str> = st.pins.iter().map(|p| p.model.as_str()).collect();
    let strip = |v: &[Partition]| {
        normalise(
            v.iter()
                .cloned()
                .map(|mut p| {
                    p.models.retain(|m| !pinned.contains(m.as_str()));
                    p
                })
                .filter(|p| !p.models.is_empty())
                .collect(),
        )
    };
    if eff == cur && strip(&tgt) == strip(&n.target) {
        return None;
    }
    let reason = why(&kept);
    Some(pb::CommitPlacement {
        node: n.name.clone(),
        partitions: to_pb(&eff),
        expected_epoch: n.assignment_epoch,
        reason,
        target: to_pb(&tgt),
    })
}

/// The pure planner sees only what it plans: a model an operator pinned looks "removed" to
/// it, and a node whose accelerators are all pinned looks "lost". Say what happened instead,
/// from the planner's structured trigger (`text` is its rendering, kept otherwise).
fn explain_pinned(st: &State, trigger: Option<&planner::Trigger>, text: String) -> String {
    match trigger {
        Some(planner::Trigger::ModelRemoved(m))
            if st.models.contains_key(m) && st.pins.iter().any(|p| &p.model == m) =>
        {
            format!(
                "re-plan: model {m} pinned by an operator (its pin places it now, not the planner)"
            )
        }
        Some(planner::Trigger::NodeLost(n))
            if st
                .nodes
                .get(n)
                .is_some_and(|x| x.status == NodeStatus::Ready)
                && st.pins.iter().any(|p| &p.node == n) =>
        {
            format!(
                "re-plan: node {n}'s accelerators pinned by an operator (the planner no longer places models there)"
            )
        }
        _ => text,
    }
}
