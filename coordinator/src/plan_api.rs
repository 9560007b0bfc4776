//! A planning round in the Admin API's typed messages (`PlanPlacementResponse`): the
//! decisions, the make-before-break steps and the plan, field by field from the planner's
//! types (no text to parse on the other side).

use edgeplane_planner as planner;
use edgeplane_proto::admin as api;

use crate::live::{DecisionSubject, PlanDecision, PlanPreview};

/// The answer to a dry run of `p` (nothing is committed).
pub fn response(p: &PlanPreview) -> api::PlanPlacementResponse {
    api::PlanPlacementResponse {
        replanned: p.replanned,
        committed: false,
        decisions: p.decisions.iter().map(decision).collect(),
        steps: p.steps.iter().map(step).collect(),
        plan: Some(plan(&p.plan)),
    }
}

fn decision(d: &PlanDecision) -> api::Decision {
    use api::decision::Subject as S;
    let mut out = api::Decision {
        reason: d.reason.clone(),
        ..Default::default()
    };
    match &d.subject {
        DecisionSubject::Profile { node, accelerator } => {
            out.set_subject(S::Profile);
            out.node = node.clone();
            out.accelerator = accelerator.clone();
        }
        DecisionSubject::Planner(planner::Subject::Plan) => out.set_subject(S::Plan),
        DecisionSubject::Planner(planner::Subject::Model(m)) => {
            out.set_subject(S::Model);
            out.model = m.clone();
        }
        DecisionSubject::Node(n) => {
            out.set_subject(S::Node);
            out.node = n.clone();
        }
    }
    out
}

fn step(s: &planner::Step) -> api::PlanStep {
    use api::plan_step::Action as A;
    let on = |action: A, partition: &str, reason: &str| api::PlanStep {
        action: action as i32,
        partition: partition.to_string(),
        reason: reason.to_string(),
        ..Default::default()
    };
    match s {
        planner::Step::Start { partition, reason } => on(A::Start, partition, reason),
        planner::Step::WaitReady { partition, reason } => on(A::WaitReady, partition, reason),
        planner::Step::Stop { partition, reason } => on(A::Stop, partition, reason),
        planner::Step::MoveTraffic {
            model,
            from,
            to,
            reason,
        } => api::PlanStep {
            action: A::MoveTraffic as i32,
            model: model.clone(),
            from: from.clone(),
            to: to.clone(),
            reason: reason.clone(),
            ..Default::default()
        },
    }
}

fn plan(p: &planner::Plan) -> api::Plan {
    api::Plan {
        partitions: p
            .partitions
            .iter()
            .map(|x| api::PlannedPartition {
                id: x.id.clone(),
                node: x.node.clone(),
                gpu: x.gpu.clone(),
                share_pct: x.share_pct,
                tenants: x
                    .tenants
                    .iter()
                    .map(|t| api::PlannedTenant {
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
            .map(|s| api::ShedModel {
                model: s.model.clone(),
                reason: s.reason.clone(),
            })
            .collect(),
        nodes: p.nodes.iter().cloned().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_and_steps_keep_their_kind() {
        let p = PlanPreview {
            replanned: true,
            decisions: vec![
                PlanDecision {
                    subject: DecisionSubject::Profile {
                        node: "n".into(),
                        accelerator: "gpu0".into(),
                    },
                    reason: "shipped".into(),
                },
                PlanDecision {
                    subject: DecisionSubject::Planner(planner::Subject::Plan),
                    reason: "re-plan: model m deployed".into(),
                },
                PlanDecision {
                    subject: DecisionSubject::Planner(planner::Subject::model("m")),
                    reason: "2 req/s".into(),
                },
                PlanDecision {
                    subject: DecisionSubject::Node("n".into()),
                    reason: "first plan".into(),
                },
            ],
            steps: vec![
                planner::Step::Start {
                    partition: "p1".into(),
                    reason: "new".into(),
                },
                planner::Step::MoveTraffic {
                    model: "m".into(),
                    from: vec!["p0".into()],
                    to: vec!["p1".into()],
                    reason: "moved".into(),
                },
            ],
            ..Default::default()
        };
        let r = response(&p);
        use api::decision::Subject as S;
        let d = &r.decisions;
        assert_eq!(
            (
                d[0].subject(),
                d[0].node.as_str(),
                d[0].accelerator.as_str()
            ),
            (S::Profile, "n", "gpu0")
        );
        assert_eq!(d[1].subject(), S::Plan);
        assert_eq!((d[2].subject(), d[2].model.as_str()), (S::Model, "m"));
        assert_eq!((d[3].subject(), d[3].node.as_str()), (S::Node, "n"));
        use api::plan_step::Action as A;
        assert_eq!(
            (r.steps[0].action(), r.steps[0].partition.as_str()),
            (A::Start, "p1")
        );
        assert_eq!(r.steps[1].action(), A::MoveTraffic);
        assert_eq!(
            (r.steps[1].from.clone(), r.steps[1].to.clone()),
            (vec!["p0".to_string()], vec!["p1".to_string()])
        );
        assert!(!r.committed);
        assert!(r.plan.is_some());
    }
}
