//! The planner's inputs from the replicated state: demands (models not pinned), nodes and
//! their plannable accelerators (pinned ones withheld), the committed plan, and the
//! conversions between the state's partitions and the wire's.

use std::collections::{BTreeMap, BTreeSet};

use edgeplane_gpu::GpuData;
use edgeplane_planner as planner;
use edgeplane_proto::raft as pb;

use crate::profiles::{measured_kind, profile_of};
use crate::state::{NodeStatus, Partition, State};

pub(super) fn to_pb(parts: &[Partition]) -> Vec<pb::Partition> {
    parts
        .iter()
        .map(|p| pb::Partition {
            accelerator_id: p.accelerator_id.clone(),
            share_pct: p.share_pct,
            models: p.models.clone(),
        })
        .collect()
}

pub(super) fn normalise(mut parts: Vec<Partition>) -> Vec<Partition> {
    for p in &mut parts {
        p.models.sort();
        p.models.dedup();
    }
    parts.sort_by(|a, b| {
        (&a.accelerator_id, a.share_pct, &a.models).cmp(&(
            &b.accelerator_id,
            b.share_pct,
            &b.models,
        ))
    });
    parts
}

/// The committed plan as the planner sees it (targets, the reference rates and nodes).
pub fn committed_plan(st: &State) -> Option<planner::Plan> {
    if st.plan_basis.is_empty() && st.plan_nodes.is_empty() {
        return None;
    }
    let mut partitions = Vec::new();
    for n in st.nodes.values() {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for p in &n.target {
            let base = format!(
                "{}/{}/{}%/{}",
                n.name,
                p.accelerator_id,
                p.share_pct,
                p.models.join("+")
            );
            let k = seen.entry(base.clone()).or_insert(0);
            *k += 1;
            partitions.push(planner::Partition {
                id: format!("{base}#{k}"),
                node: n.name.clone(),
                gpu: p.accelerator_id.clone(),
                share_pct: p.share_pct,
                tenants: p
                    .models
                    .iter()
                    .map(|m| planner::Assigned {
                        model: m.clone(),
                        rate_rps: 0.0,
                        max_batch: 0,
                    })
                    .collect(),
                mem_mib: 0,
                reason: String::new(),
            });
        }
    }
    Some(planner::Plan {
        partitions,
        basis_rps: st.plan_basis.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        shed: Vec::new(),
        nodes: st.plan_nodes.iter().cloned().collect(),
    })
}

/// The planner's inputs from the state and the observed rates.
/// A measured rate is demand whether or not the model is served anywhere: agents count the
/// requests they refuse for a model not assigned to them, and the hub adds them to the
/// arrivals. The planner plans on the larger of it and the deployed rate
/// ([`planner::basis_rps`]); without a measurement (a new leader), on the committed rate.
pub fn inputs(data: &GpuData, st: &State, peaks: &BTreeMap<String, f64>) -> planner::Inputs {
    let pinned_models: BTreeSet<&str> = st.pins.iter().map(|p| p.model.as_str()).collect();
    let pinned_accs: BTreeSet<(&str, &str)> = st
        .pins
        .iter()
        .map(|p| (p.node.as_str(), p.accelerator.as_str()))
        .collect();
    let models = st
        .models
        .values()
        .filter(|m| !pinned_models.contains(m.name.as_str()))
        .map(|m| {
            let profile = profile_of(data, &m.name);
            let mem = if m.memory_mb > 0 {
                m.memory_mb
            } else {
                data.profiles.model(&profile).map_or(0, |i| i.gpu_mem_mib)
            };
            planner::ModelDemand {
                name: m.name.clone(),
                profile,
                slo_ms: m.slo_ms,
                requested_rps: m.rate,
                // measured here, else the rate the committed plan used (a new leader resumes)
                observed_peak_rps: peaks
                    .get(&m.name)
                    .copied()
                    .or_else(|| st.plan_basis.get(&m.name).copied()),
                mem_mib: mem,
                value: 1.0,
            }
        })
        .collect();
    let nodes = st
        .nodes
        .values()
        .filter_map(|n| {
            // An accelerator with a measured profile plans on its own rows (see
            // `with_measured`); otherwise a GPU of the shipped table on the shipped rows.
            let kind_of = |a: &crate::state::Accelerator| {
                let mk = measured_kind(&n.name, &a.id);
                if !a.profile.is_empty() && data.profiles.gpu(&mk).is_ok() {
                    Some(mk)
                } else if a.kind == "gpu" && data.profiles.gpu(&a.name).is_ok() {
                    Some(a.name.clone())
                } else {
                    None
                }
            };
            let gpus: Vec<planner::GpuSlot> = n
                .accelerators
                .iter()
                .filter(|a| !pinned_accs.contains(&(n.name.as_str(), a.id.as_str())))
                .filter_map(|a| {
                    let kind = kind_of(a)?;
                    Some(planner::GpuSlot {
                        id: a.id.clone(),
                        memory_mib: if a.memory_mb > 0 {
                            a.memory_mb
                        } else {
                            data.profiles.gpu(&kind).map_or(1, |g| g.memory_mib.max(1))
                        },
                        kind,
                    })
                })
                .collect();
            (!gpus.is_empty()).then(|| planner::Node {
                id: n.name.clone(),
                healthy: n.status == NodeStatus::Ready,
                gpus,
            })
        })
        .collect();
    planner::Inputs { nodes, models }
}

/// The partitions a node's pins give it (one per pinned accelerator, 100 %).
pub(super) fn pin_partitions(st: &State, node: &str) -> Vec<Partition> {
    let mut by_acc: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in st.pins.iter().filter(|p| p.node == node) {
        by_acc
            .entry(p.accelerator.clone())
            .or_default()
            .push(p.model.clone());
    }
    by_acc
        .into_iter()
        .map(|(acc, models)| Partition {
            accelerator_id: acc,
            share_pct: 100,
            models,
        })
        .collect()
}
