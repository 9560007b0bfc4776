//! Hysteresis: whether a round keeps the current plan, and when it does not, why (a
//! [`Trigger`]) and how much of it an incremental re-plan may keep.

use crate::demand::{basis_rps, planned_rps};
use crate::pack::{GpuKey, Reserved};
use crate::{Config, Decision, Inputs, Partition, Plan};
use std::collections::{BTreeMap, BTreeSet};

/// Why a plan was replaced (hysteresis fired). Structured, so that callers that know more
/// than the planner sees (the coordinator knows an operator's pins) can say it better without
/// parsing the text; `Display` is the text the planner's decisions carry.
#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    NodeLost(String),
    NodeJoined(String),
    ModelRemoved(String),
    ModelDeployed(String),
    /// The rate rose more than `band` req/s (the larger of its confidence band and the planned
    /// capacity's headroom) over the planned rate `old`.
    RateRose {
        model: String,
        now: f64,
        old: f64,
        band: f64,
    },
    /// The rate fell more than `band` req/s under the planned rate `old`.
    RateFell {
        model: String,
        now: f64,
        old: f64,
        band: f64,
    },
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Trigger::NodeLost(n) => write!(f, "node {n} lost"),
            Trigger::NodeJoined(n) => write!(f, "node {n} joined"),
            Trigger::ModelRemoved(m) => write!(f, "model {m} removed"),
            Trigger::ModelDeployed(m) => write!(f, "model {m} deployed"),
            Trigger::RateRose {
                model,
                now,
                old,
                band,
            } => write!(
                f,
                "{model}: rate {now:.1} req/s rose more than {band:.1} req/s (its confidence band and planned capacity) over {old:.1}"
            ),
            Trigger::RateFell {
                model,
                now,
                old,
                band,
            } => write!(
                f,
                "{model}: rate {now:.1} req/s fell more than {band:.1} req/s (its confidence band) under {old:.1}"
            ),
        }
    }
}

/// Why the current plan must be replaced, or None to keep it (hysteresis).
pub fn replan_trigger(inputs: &Inputs, current: &Plan, cfg: &Config) -> Option<Trigger> {
    let healthy: BTreeSet<String> = inputs
        .nodes
        .iter()
        .filter(|n| n.healthy)
        .map(|n| n.id.clone())
        .collect();
    if let Some(lost) = current.nodes.difference(&healthy).next() {
        return Some(Trigger::NodeLost(lost.clone()));
    }
    if let Some(new) = healthy.difference(&current.nodes).next() {
        return Some(Trigger::NodeJoined(new.clone()));
    }
    let names: BTreeSet<&String> = inputs.models.iter().map(|m| &m.name).collect();
    if let Some(gone) = current.basis_rps.keys().find(|k| !names.contains(k)) {
        return Some(Trigger::ModelRemoved(gone.clone()));
    }
    for m in &inputs.models {
        let now = basis_rps(m);
        match current.basis_rps.get(&m.name) {
            None => return Some(Trigger::ModelDeployed(m.name.clone())),
            Some(&old) => {
                let band = cfg.band.half_width(old);
                // a rise the planned capacity still carries needs no new layout: re-plan
                // once it is beyond both the band and the capacity
                let capacity = planned_rps(old, cfg);
                if now > old + band && now > capacity {
                    return Some(Trigger::RateRose {
                        model: m.name.clone(),
                        now,
                        old,
                        band: band.max(capacity - old),
                    });
                }
                if now < old - band {
                    return Some(Trigger::RateFell {
                        model: m.name.clone(),
                        now,
                        old,
                        band,
                    });
                }
            }
        }
    }
    None
}

/// The decision of a round that keeps the plan.
pub(crate) fn kept(cfg: &Config) -> Decision {
    Decision::plan(format!(
        "kept: every rate within its confidence band around its planned rate (z = {}, at least {} req/s and {:.0} %), same models and nodes",
        cfg.band.z,
        cfg.band.floor_rps,
        cfg.band.floor_frac * 100.0
    ))
}

/// Whether a trigger allows an incremental re-plan (a rate change, a deploy or a removal; a
/// node coming or going re-plans everything).
pub(crate) fn incremental(t: &Trigger) -> bool {
    matches!(
        t,
        Trigger::RateRose { .. }
            | Trigger::RateFell { .. }
            | Trigger::ModelDeployed(_)
            | Trigger::ModelRemoved(_)
    )
}

/// What an incremental re-plan plans again and what it keeps.
pub(crate) struct Scope<'p> {
    /// The models planned again.
    pub changed: BTreeSet<String>,
    /// The partitions kept as they are.
    pub kept: Vec<&'p Partition>,
    /// Share and memory the kept partitions take per GPU.
    pub reserved: Reserved,
}

/// The models whose demand left its band (or that were deployed, shed or unplaced), closed over
/// partition neighbours (a partition holding a changed or removed model is re-planned whole);
/// every other partition is kept. None when nothing can be kept.
pub(crate) fn scope<'p>(inputs: &Inputs, cur: &'p Plan, cfg: &Config) -> Option<Scope<'p>> {
    let names: BTreeSet<&str> = inputs.models.iter().map(|m| m.name.as_str()).collect();
    let mut changed: BTreeSet<String> = inputs
        .models
        .iter()
        .filter(|m| {
            cur.basis_rps
                .get(&m.name)
                .is_none_or(|&old| cfg.band.significant(basis_rps(m), old))
        })
        .map(|m| m.name.clone())
        .collect();
    // shed or unplaced before (a committed plan read back from a store may not carry its shed
    // list): offered the free share again
    changed.extend(cur.shed.iter().map(|s| s.model.clone()));
    let placed: BTreeSet<&str> = cur
        .partitions
        .iter()
        .flat_map(|p| p.tenants.iter().map(|t| t.model.as_str()))
        .collect();
    changed.extend(
        inputs
            .models
            .iter()
            .filter(|m| !placed.contains(m.name.as_str()))
            .map(|m| m.name.clone()),
    );
    close_over_partitions(&mut changed, cur, &names);
    let kept: Vec<&Partition> = cur
        .partitions
        .iter()
        .filter(|p| {
            p.tenants
                .iter()
                .all(|t| names.contains(t.model.as_str()) && !changed.contains(&t.model))
        })
        .collect();
    if kept.is_empty() {
        return None;
    }
    let reserved = reserve(inputs, &kept);
    Some(Scope {
        changed,
        kept,
        reserved,
    })
}

/// Add every deployed neighbour of a changed or removed model until nothing changes.
fn close_over_partitions(changed: &mut BTreeSet<String>, cur: &Plan, names: &BTreeSet<&str>) {
    loop {
        let before = changed.len();
        for p in &cur.partitions {
            let touched = p
                .tenants
                .iter()
                .any(|t| changed.contains(&t.model) || !names.contains(t.model.as_str()));
            if touched {
                changed.extend(
                    p.tenants
                        .iter()
                        .filter(|t| names.contains(t.model.as_str()))
                        .map(|t| t.model.clone()),
                );
            }
        }
        if changed.len() == before {
            break;
        }
    }
}

/// Share and memory the kept partitions take per GPU.
fn reserve(inputs: &Inputs, kept: &[&Partition]) -> Reserved {
    let mem: BTreeMap<&str, u64> = inputs
        .models
        .iter()
        .map(|m| (m.name.as_str(), m.mem_mib))
        .collect();
    let mut reserved = Reserved::new();
    for p in kept {
        let key = GpuKey {
            node: p.node.clone(),
            gpu: p.gpu.clone(),
        };
        let e = reserved.entry(key).or_default();
        e.pct += p.share_pct;
        e.mem += p
            .tenants
            .iter()
            .map(|t| mem.get(t.model.as_str()).copied().unwrap_or(0))
            .sum::<u64>();
    }
    reserved
}
