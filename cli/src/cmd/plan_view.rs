//! `placement plan --dry-run`: the typed `PlanPlacementResponse` in words (the table
//! output) and as serde structs (`--format json`).

use edgeplane_proto::admin as api;
use serde::Serialize;
use std::collections::BTreeMap;

/// `plan: REASON`, `MODEL: REASON`, `NODE: REASON`, `profile NODE/ACC: REASON`.
pub(crate) fn decision_text(d: &api::Decision) -> String {
    use api::decision::Subject as S;
    match d.subject() {
        S::Plan => format!("plan: {}", d.reason),
        S::Model => format!("{}: {}", d.model, d.reason),
        S::Node => format!("{}: {}", d.node, d.reason),
        S::Profile => format!("profile {}/{}: {}", d.node, d.accelerator, d.reason),
        S::Unspecified => d.reason.clone(),
    }
}

/// One make-before-break step in words.
pub(crate) fn step_text(s: &api::PlanStep) -> String {
    use api::plan_step::Action as A;
    match s.action() {
        A::Start => format!("start {}: {}", s.partition, s.reason),
        A::WaitReady => format!("wait until {} is ready: {}", s.partition, s.reason),
        A::MoveTraffic => format!(
            "move {} from [{}] to [{}]: {}",
            s.model,
            s.from.join(", "),
            s.to.join(", "),
            s.reason
        ),
        A::Stop => format!("stop {}: {}", s.partition, s.reason),
        A::Unspecified => s.reason.clone(),
    }
}

#[derive(Serialize)]
pub(crate) struct DryRunJson {
    replanned: bool,
    committed: bool,
    decisions: Vec<DecisionJson>,
    steps: Vec<StepJson>,
    plan: Option<PlanJson>,
}

#[derive(Serialize)]
struct DecisionJson {
    /// `plan`, `model`, `node`, `profile`.
    subject: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    model: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    node: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    accelerator: String,
    reason: String,
}

#[derive(Serialize)]
struct StepJson {
    /// `start`, `wait_ready`, `move_traffic`, `stop`.
    step: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    partition: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    model: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    from: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    to: Vec<String>,
    reason: String,
}

#[derive(Serialize)]
struct PlanJson {
    partitions: Vec<PartitionJson>,
    basis_rps: BTreeMap<String, f64>,
    shed: Vec<ShedJson>,
    nodes: Vec<String>,
}

#[derive(Serialize)]
struct PartitionJson {
    id: String,
    node: String,
    gpu: String,
    share_pct: u32,
    tenants: Vec<TenantJson>,
    mem_mib: u64,
    reason: String,
}

#[derive(Serialize)]
struct TenantJson {
    model: String,
    rate_rps: f64,
    max_batch: u32,
}

#[derive(Serialize)]
struct ShedJson {
    model: String,
    reason: String,
}

impl From<&api::PlanPlacementResponse> for DryRunJson {
    fn from(r: &api::PlanPlacementResponse) -> Self {
        DryRunJson {
            replanned: r.replanned,
            committed: r.committed,
            decisions: r.decisions.iter().map(decision_json).collect(),
            steps: r.steps.iter().map(step_json).collect(),
            plan: r.plan.as_ref().map(plan_json),
        }
    }
}

fn decision_json(d: &api::Decision) -> DecisionJson {
    use api::decision::Subject as S;
    DecisionJson {
        subject: match d.subject() {
            S::Plan => "plan",
            S::Model => "model",
            S::Node => "node",
            S::Profile => "profile",
            S::Unspecified => "unspecified",
        },
        model: d.model.clone(),
        node: d.node.clone(),
        accelerator: d.accelerator.clone(),
        reason: d.reason.clone(),
    }
}

fn step_json(s: &api::PlanStep) -> StepJson {
    use api::plan_step::Action as A;
    StepJson {
        step: match s.action() {
            A::Start => "start",
            A::WaitReady => "wait_ready",
            A::MoveTraffic => "move_traffic",
            A::Stop => "stop",
            A::Unspecified => "unspecified",
        },
        partition: s.partition.clone(),
        model: s.model.clone(),
        from: s.from.clone(),
        to: s.to.clone(),
        reason: s.reason.clone(),
    }
}

fn plan_json(p: &api::Plan) -> PlanJson {
    PlanJson {
        partitions: p
            .partitions
            .iter()
            .map(|x| PartitionJson {
                id: x.id.clone(),
                node: x.node.clone(),
                gpu: x.gpu.clone(),
                share_pct: x.share_pct,
                tenants: x
                    .tenants
                    .iter()
                    .map(|t| TenantJson {
                        model: t.model.clone(),
                        rate_rps: t.rate_rps,
                        max_batch: t.max_batch,
                    })
                    .collect(),
                mem_mib: x.mem_mib,
                reason: x.reason.clone(),
            })
            .collect(),
        basis_rps: p.basis_rps.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        shed: p
            .shed
            .iter()
            .map(|s| ShedJson {
                model: s.model.clone(),
                reason: s.reason.clone(),
            })
            .collect(),
        nodes: p.nodes.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_per_subject_and_action() {
        let d = |subject: api::decision::Subject, model: &str, node: &str, acc: &str| {
            let mut x = api::Decision {
                model: model.into(),
                node: node.into(),
                accelerator: acc.into(),
                reason: "why".into(),
                ..Default::default()
            };
            x.set_subject(subject);
            decision_text(&x)
        };
        use api::decision::Subject as S;
        assert_eq!(d(S::Plan, "", "", ""), "plan: why");
        assert_eq!(d(S::Model, "m", "", ""), "m: why");
        assert_eq!(d(S::Node, "", "n", ""), "n: why");
        assert_eq!(d(S::Profile, "", "n", "gpu0"), "profile n/gpu0: why");
        let mut s = api::PlanStep {
            model: "m".into(),
            from: vec!["a".into(), "b".into()],
            to: vec!["c".into()],
            reason: "why".into(),
            ..Default::default()
        };
        s.set_action(api::plan_step::Action::MoveTraffic);
        assert_eq!(step_text(&s), "move m from [a, b] to [c]: why");
        let j = serde_json::to_value(step_json(&s)).unwrap();
        assert_eq!(j["step"], "move_traffic");
        assert!(j.get("partition").is_none());
    }
}
