//! The dashboard's JSON views, one per endpoint (documented in README, "A live view"). Each is
//! drawn from the collector's [`Store`]; `nodes` and `placement` carry exactly the objects of
//! `nodes list --format json` and `placement show --history --format json`.

use serde_json::{json, Value};

use super::collect::{GpuKey, Store};
use crate::cmd::models::model_json;
use crate::cmd::nodes::node_json;
use crate::cmd::placement::show_json;

/// Fields every view carries: when the data was read, and the last error if the cluster did
/// not answer (the data is then the last good round's).
fn meta(s: &Store) -> Value {
    json!({"updated_unix_ms": s.updated_unix_ms, "started_unix_ms": s.started_unix_ms,
           "error": s.error, "window_s": s.window_ms / 1000})
}

fn with_meta(s: &Store, key: &str, v: Value) -> Value {
    let mut m = meta(s);
    m[key] = v;
    m
}

/// `/api/cluster`: leader, term, indexes, members with reachability.
pub fn cluster(s: &Store) -> Value {
    let Some(a) = &s.latest else {
        return with_meta(s, "cluster", Value::Null);
    };
    let r = &a.cluster;
    let members: Vec<_> = r
        .members
        .iter()
        .map(|m| {
            json!({"id": m.id, "peer_addr": m.peer_addr, "client_addr": m.client_addr,
                   "role": m.role, "reachable": m.reachable})
        })
        .collect();
    with_meta(
        s,
        "cluster",
        json!({"leader_id": r.leader_id, "term": r.term, "commit_index": r.commit_index,
               "applied_index": r.applied_index, "answered_by": r.id, "members": members}),
    )
}

/// `/api/nodes`: `nodes list --format json` per node, plus `rates` (derived by the dashboard
/// from two consecutive reports) and `profile_source` per accelerator.
pub fn nodes(s: &Store) -> Value {
    let Some(a) = &s.latest else {
        return with_meta(s, "nodes", json!([]));
    };
    let v: Vec<_> = a
        .nodes
        .nodes
        .iter()
        .map(|n| {
            let mut v = node_json(n, a.nodes.live_figures_unknown);
            v["rates"] = json!(s.node_rates(&n.name));
            v["profile_source"] = json!(n
                .accelerators
                .iter()
                .map(|x| profile_source(&x.profile))
                .collect::<Vec<_>>());
            v
        })
        .collect();
    with_meta(s, "nodes", json!(v))
}

/// `measured` / `shipped` / `none` from an accelerator's profile field (`measured: ...`,
/// `shipped (GPU name)`, or empty).
pub fn profile_source(profile: &str) -> &'static str {
    if profile.starts_with("measured") {
        "measured"
    } else if profile.starts_with("shipped") {
        "shipped"
    } else {
        "none"
    }
}

/// `/api/placement`: `placement show --history --format json`.
pub fn placement(s: &Store) -> Value {
    let v = s
        .latest
        .as_ref()
        .map_or(Value::Null, |a| show_json(&a.placement, true));
    with_meta(s, "placement", v)
}

/// `/api/partitions`: per GPU its partitions over the window, and the plan changes of its
/// node inside the window (with their reasons).
pub fn partitions(s: &Store) -> Value {
    let events = s.latest.as_ref().map(|a| &a.placement.events);
    let gpus: Vec<_> = s
        .gpus
        .iter()
        .map(|(GpuKey { node, accelerator }, q)| {
            let name = s
                .latest
                .as_ref()
                .and_then(|a| {
                    a.placement
                        .gpus
                        .iter()
                        .find(|g| &g.node == node && &g.accelerator_id == accelerator)
                })
                .map_or(String::new(), |g| g.name.clone());
            let changes: Vec<_> = events
                .into_iter()
                .flatten()
                .filter(|e| &e.node == node)
                .filter_map(|e| {
                    let t = s.event_seen.get(&e.index).copied().flatten()?;
                    Some(json!({"t_unix_ms": t, "index": e.index, "epoch": e.epoch,
                                "reason": e.reason, "partitions": e.partitions}))
                })
                .collect();
            json!({"node": node, "accelerator": accelerator, "name": name,
                   "samples": q, "changes": changes})
        })
        .collect();
    with_meta(s, "gpus", json!(gpus))
}

/// Where a model runs now: (node, accelerator, share) of every partition that holds it.
fn placed(s: &Store, model: &str) -> Vec<Value> {
    let Some(a) = &s.latest else { return vec![] };
    a.placement
        .nodes
        .iter()
        .flat_map(|n| {
            n.partitions
                .iter()
                .filter(|p| p.models.iter().any(|m| m == model))
                .map(|p| {
                    json!({"node": n.node, "accelerator": p.accelerator_id,
                           "share_pct": p.share_pct})
                })
        })
        .collect()
}

/// `/api/models`: per model requested / observed / planned rate, SLO attainment, energy,
/// where it runs, whether it is shed and why, and its figures over the window.
pub fn models(s: &Store) -> Value {
    let Some(a) = &s.latest else {
        return with_meta(s, "models", json!([]));
    };
    let v: Vec<_> = a
        .models
        .models
        .iter()
        .map(|m| {
            let load = a.placement.models.iter().find(|l| l.model == m.name);
            let prefix = format!("{}: ", m.name);
            let shed = a
                .placement
                .shed
                .iter()
                .find_map(|x| x.strip_prefix(&prefix).map(str::to_string));
            let mut v = model_json(m);
            v["live_figures_unknown"] = json!(a.models.live_figures_unknown);
            v["requested_rps"] = json!(m.rate);
            v["observed_rps"] = json!(load.map_or(m.observed_rate, |l| l.observed_rps));
            v["planned_rps"] = json!(load.map_or(0.0, |l| l.planned_rps));
            v["pinned"] = json!(load.is_some_and(|l| l.pinned));
            v["placement"] = json!(placed(s, &m.name));
            v["shed"] = json!(shed);
            v["history"] = json!(s.models.get(&m.name));
            v
        })
        .collect();
    with_meta(s, "models", json!(v))
}

/// `/api/events`: every plan change, oldest first, with when this dashboard first saw it, and
/// `observed`: node joins, status changes (lost, back) and leader changes seen between rounds.
pub fn events(s: &Store) -> Value {
    let v: Vec<_> = s
        .latest
        .as_ref()
        .map(|a| a.placement.events.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|e| {
            json!({"index": e.index, "node": e.node, "epoch": e.epoch, "reason": e.reason,
                   "partitions": e.partitions,
                   "seen_unix_ms": s.event_seen.get(&e.index).copied().flatten()})
        })
        .collect();
    let mut m = with_meta(s, "events", json!(v));
    m["observed"] = json!(s.observed);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::collect::Answers;
    use edgeplane_proto::admin as pb;

    fn part(acc: &str, share: u32, models: &[&str]) -> pb::Partition {
        pb::Partition {
            accelerator_id: acc.into(),
            share_pct: share,
            models: models.iter().map(|m| m.to_string()).collect(),
        }
    }

    /// Two models on one GPU (30 % + 70 %), a third shed, one plan change seen live.
    fn store() -> Store {
        let mut a = Answers::default();
        for (name, rate) in [("a", 10.0), ("b", 20.0), ("c", 5.0)] {
            a.models.models.push(pb::ModelInfo {
                name: name.into(),
                slo_ms: 50.0,
                rate,
                deadline_met_pct: 99.0,
                ..Default::default()
            });
        }
        a.placement.nodes.push(pb::NodePlacement {
            node: "g1".into(),
            partitions: vec![part("gpu0", 30, &["a"]), part("gpu0", 70, &["b"])],
            ..Default::default()
        });
        a.placement.gpus.push(pb::GpuLoad {
            node: "g1".into(),
            accelerator_id: "gpu0".into(),
            name: "A100".into(),
            ..Default::default()
        });
        a.placement.models.push(pb::ModelLoad {
            model: "b".into(),
            requested_rps: 20.0,
            observed_rps: 18.0,
            planned_rps: 24.0,
            pinned: true,
        });
        a.placement.shed.push("c: no GPU has room".into());
        let mut s = Store::new(std::time::Duration::from_secs(60));
        s.record(a.clone(), 1_000);
        a.placement.events.push(pb::PlanEvent {
            index: 7,
            node: "g1".into(),
            epoch: 3,
            reason: "re-plan: model b deployed".into(),
            partitions: "gpu0 30% [a]; gpu0 70% [b]".into(),
        });
        s.record(a, 2_000);
        s
    }

    #[test]
    fn the_models_view_joins_rates_placement_and_shed() {
        let v = models(&store());
        let m = v["models"].as_array().unwrap();
        assert_eq!(m.len(), 3);
        let b = &m[1];
        assert_eq!(b["name"], "b");
        assert_eq!(b["requested_rps"], 20.0);
        assert_eq!(b["observed_rps"], 18.0);
        assert_eq!(b["planned_rps"], 24.0);
        assert_eq!(b["pinned"], true);
        assert_eq!(
            b["placement"],
            json!([{"node": "g1", "accelerator": "gpu0", "share_pct": 70}])
        );
        assert_eq!(b["shed"], Value::Null);
        assert_eq!(b["history"].as_array().unwrap().len(), 2);
        assert_eq!(m[2]["shed"], "no GPU has room");
        assert_eq!(m[2]["placement"], json!([]));
    }

    #[test]
    fn the_partitions_view_marks_only_changes_seen_live() {
        let v = partitions(&store());
        let g = &v["gpus"][0];
        assert_eq!(
            (g["node"].as_str(), g["name"].as_str()),
            (Some("g1"), Some("A100"))
        );
        assert_eq!(g["samples"].as_array().unwrap().len(), 2);
        assert_eq!(
            g["samples"][1]["parts"],
            json!([{"share_pct": 30, "models": ["a"]}, {"share_pct": 70, "models": ["b"]}])
        );
        // index 7 appeared at the second poll (t = 2000): marked at that time.
        assert_eq!(g["changes"][0]["t_unix_ms"], 2_000);
        assert_eq!(g["changes"][0]["reason"], "re-plan: model b deployed");
        let e = events(&store());
        assert_eq!(e["events"][0]["seen_unix_ms"], 2_000);
        assert_eq!(v["error"], Value::Null);
    }

    #[test]
    fn profile_sources() {
        assert_eq!(profile_source("measured: 12 rows, 2026-01-01"), "measured");
        assert_eq!(profile_source("shipped (Jetson-AGX-Xavier)"), "shipped");
        assert_eq!(profile_source(""), "none");
    }
}
