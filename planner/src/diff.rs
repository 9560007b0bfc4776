//! Make-before-break steps from the current plan to the next one: start and wait for every new
//! partition, move each model whose partitions changed, then stop the partitions no longer
//! planned. Linear in the partitions of both plans.

use crate::{Inputs, Partition, Plan};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// A make-before-break step.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    Start {
        partition: String,
        reason: String,
    },
    WaitReady {
        partition: String,
        reason: String,
    },
    MoveTraffic {
        model: String,
        from: Vec<String>,
        to: Vec<String>,
        reason: String,
    },
    Stop {
        partition: String,
        reason: String,
    },
}

/// What makes two partitions the same worker: node, GPU, share and (model, batch) tenants.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Shape {
    node: String,
    gpu: String,
    share_pct: u32,
    tenants: String,
}

fn shape(p: &Partition) -> Shape {
    let mut t: Vec<(&str, u32)> = p
        .tenants
        .iter()
        .map(|t| (t.model.as_str(), t.max_batch))
        .collect();
    t.sort();
    Shape {
        node: p.node.clone(),
        gpu: p.gpu.clone(),
        share_pct: p.share_pct,
        tenants: format!("{t:?}"),
    }
}

/// Each model's partition ids in plan order.
fn ids_by_model(pl: &Plan) -> BTreeMap<&str, Vec<String>> {
    let mut out: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for p in &pl.partitions {
        let models: BTreeSet<&str> = p.tenants.iter().map(|t| t.model.as_str()).collect();
        for m in models {
            out.entry(m).or_default().push(p.id.clone());
        }
    }
    out
}

/// Make-before-break steps from `current` to `next`: start and wait for every new partition, move
/// each model whose partitions changed, then stop the partitions no longer planned.
pub fn diff(current: Option<&Plan>, next: &Plan, inputs: &Inputs) -> Vec<Step> {
    let empty = Plan::default();
    let cur = current.unwrap_or(&empty);
    let old_shapes: BTreeSet<Shape> = cur.partitions.iter().map(shape).collect();
    let new_shapes: BTreeSet<Shape> = next.partitions.iter().map(shape).collect();
    let lost: BTreeSet<&str> = inputs
        .nodes
        .iter()
        .filter(|n| !n.healthy)
        .map(|n| n.id.as_str())
        .collect();
    let started: Vec<&Partition> = next
        .partitions
        .iter()
        .filter(|p| !old_shapes.contains(&shape(p)))
        .collect();
    let mut steps: Vec<Step> = started
        .iter()
        .map(|p| Step::Start {
            partition: p.id.clone(),
            reason: p.reason.clone(),
        })
        .collect();
    steps.extend(started.iter().map(|p| Step::WaitReady {
        partition: p.id.clone(),
        reason: "make-before-break: the old partitions serve until this worker is ready".into(),
    }));
    steps.extend(moves(cur, next));
    for p in &cur.partitions {
        if !new_shapes.contains(&shape(p)) {
            let reason = if lost.contains(p.node.as_str()) || !next.nodes.contains(&p.node) {
                format!("node {} lost", p.node)
            } else {
                "replaced by the new layout (traffic already moved)".to_string()
            };
            steps.push(Step::Stop {
                partition: p.id.clone(),
                reason,
            });
        }
    }
    steps
}

/// A traffic move for every model whose partitions differ, by model name.
fn moves(cur: &Plan, next: &Plan) -> Vec<Step> {
    let (old, new) = (ids_by_model(cur), ids_by_model(next));
    let models: BTreeSet<&str> = old.keys().chain(new.keys()).copied().collect();
    let none = Vec::new();
    let mut steps = Vec::new();
    for m in models {
        let from = old.get(m).unwrap_or(&none);
        let to = new.get(m).unwrap_or(&none);
        if from != to {
            let reason = if to.is_empty() {
                "no partition in the new plan (shed or removed)".to_string()
            } else {
                "new layout ready".to_string()
            };
            steps.push(Step::MoveTraffic {
                model: m.to_string(),
                from: from.clone(),
                to: to.clone(),
                reason,
            });
        }
    }
    steps
}
