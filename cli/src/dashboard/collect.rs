//! The dashboard's collector: polls the cluster's read RPCs (and nothing else) once per
//! interval and keeps the latest answers plus a bounded history (partitions per GPU, rates and
//! SLO attainment per model, counters per node) that the JSON views are drawn from.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use edgeplane_proto::admin::{self as api, admin_client::AdminClient};
use tonic::transport::Channel;
use tracing::{debug, warn};

use crate::conn::Conn;

/// The only calls the dashboard (and `top`) can make: reads. No write RPC of the Admin API
/// is reachable through this type, so nothing the page does can change the cluster.
pub struct ReadOnlyCluster {
    conn: Conn,
    /// A channel kept open between polls (one TLS handshake, not four a poll); dropped on any
    /// error or a slow answer, then the poll goes through `conn` (every member in turn) and a
    /// new channel is opened.
    cached: tokio::sync::Mutex<Option<AdminClient<Channel>>>,
}

/// One round of answers from the cluster.
#[derive(Debug, Clone, Default)]
pub struct Answers {
    pub cluster: api::ClusterStatusResponse,
    pub nodes: api::ListNodesResponse,
    pub placement: api::ShowPlacementResponse,
    pub models: api::ListModelsResponse,
}

/// How long a poll over the kept channel may take before the members are tried in turn.
const CACHED_POLL_LIMIT: Duration = Duration::from_secs(4);

impl ReadOnlyCluster {
    pub(crate) fn new(conn: Conn) -> Self {
        ReadOnlyCluster {
            conn,
            cached: tokio::sync::Mutex::new(None),
        }
    }

    /// ClusterStatus, ListNodes, ShowPlacement and ListModels, linearizable (ReadIndex: no log
    /// entry is written), so the live figures are the leader's; the four run concurrently.
    pub async fn read_all(&self) -> anyhow::Result<Answers> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.clone() {
            match tokio::time::timeout(CACHED_POLL_LIMIT, read_with(c)).await {
                Ok(Ok(a)) => return Ok(a),
                Ok(Err(s)) => debug!(code = ?s.code(), "dashboard: the kept channel failed"),
                Err(_) => debug!("dashboard: the kept channel answered too slowly"),
            }
            *cached = None;
        }
        let a = self.read_via_conn().await?;
        *cached = self.connect_any().await;
        Ok(a)
    }

    async fn read_via_conn(&self) -> anyhow::Result<Answers> {
        let rr = || api::ReadRequest { stale: false };
        let c = &self.conn;
        let (cluster, nodes, placement, models) = tokio::try_join!(
            c.call("cluster status", |mut c| async move {
                c.cluster_status(rr()).await
            }),
            c.call(
                "nodes list",
                |mut c| async move { c.list_nodes(rr()).await }
            ),
            c.call("placement show", |mut c| async move {
                c.show_placement(rr()).await
            }),
            c.call(
                "models list",
                |mut c| async move { c.list_models(rr()).await }
            ),
        )?;
        Ok(Answers {
            cluster,
            nodes,
            placement,
            models,
        })
    }

    /// A channel to the first member that accepts one.
    async fn connect_any(&self) -> Option<AdminClient<Channel>> {
        for addr in self.conn.endpoints() {
            let Ok(ep) = self.conn.tls().endpoint(addr) else {
                continue;
            };
            let ep = ep.connect_timeout(Duration::from_millis(500));
            if let Ok(ch) = ep.connect().await {
                return Some(AdminClient::new(ch));
            }
        }
        None
    }
}

/// The four reads over one channel.
async fn read_with(c: AdminClient<Channel>) -> Result<Answers, tonic::Status> {
    let rr = || api::ReadRequest { stale: false };
    let (mut a, mut b, mut d) = (c.clone(), c.clone(), c.clone());
    let mut e = c;
    let (cluster, nodes, placement, models) = tokio::try_join!(
        a.cluster_status(rr()),
        b.list_nodes(rr()),
        d.show_placement(rr()),
        e.list_models(rr()),
    )?;
    Ok(Answers {
        cluster: cluster.into_inner(),
        nodes: nodes.into_inner(),
        placement: placement.into_inner(),
        models: models.into_inner(),
    })
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// One partition of one GPU at one instant.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PartSample {
    pub share_pct: u32,
    pub models: Vec<String>,
}

/// A GPU's partitions at one instant.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GpuSample {
    pub t_unix_ms: u64,
    pub parts: Vec<PartSample>,
}

/// A model's figures at one instant.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelSample {
    pub t_unix_ms: u64,
    pub requested_rps: f64,
    pub observed_rps: f64,
    pub planned_rps: f64,
    pub deadline_met_pct: f64,
}

/// A node's report counters at one instant (rates are derived from two of them).
#[derive(Debug, Clone, Copy)]
pub struct NodeCounters {
    pub t_unix_ms: u64,
    pub met: u64,
    pub missed: u64,
}

/// A node's rates derived from the last two samples of its counters.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct NodeRates {
    /// Requests finished (met + missed) per second.
    pub finished_per_s: f64,
    /// Of those, the share that met its deadline, percent (0 when none finished).
    pub met_pct: f64,
}

/// A GPU: (node, accelerator id).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct GpuKey {
    pub node: String,
    pub accelerator: String,
}

/// Everything the views are drawn from.
#[derive(Debug, Default)]
pub struct Store {
    pub started_unix_ms: u64,
    pub updated_unix_ms: u64,
    /// The last error talking to the cluster (cleared by the next good round).
    pub error: Option<String>,
    pub latest: Option<Answers>,
    pub gpus: BTreeMap<GpuKey, VecDeque<GpuSample>>,
    pub models: BTreeMap<String, VecDeque<ModelSample>>,
    pub node_counters: BTreeMap<String, VecDeque<NodeCounters>>,
    /// When this dashboard first saw each plan change (by log index); `None` for changes
    /// already in the history when it started (their time is unknown).
    pub event_seen: BTreeMap<u64, Option<u64>>,
    pub window_ms: u64,
    /// Changes seen between two rounds: nodes joining, lost or back, leader changes.
    pub observed: VecDeque<Observed>,
}

/// What kind of change the dashboard saw between two rounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ObservedKind {
    NodeJoined,
    NodeStatus,
    NodeRemoved,
    LeaderChanged,
}

/// A change seen between two rounds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Observed {
    pub t_unix_ms: u64,
    pub kind: ObservedKind,
    pub text: String,
}

/// How many observed changes are kept.
const OBSERVED_KEPT: usize = 500;

pub type Shared = Arc<RwLock<Store>>;

impl Store {
    pub fn new(window: Duration) -> Self {
        Store {
            started_unix_ms: now_ms(),
            window_ms: window.as_millis() as u64,
            ..Default::default()
        }
    }

    /// Fold one round of answers in at time `t`.
    pub fn record(&mut self, a: Answers, t: u64) {
        let first = self.latest.is_none();
        for e in &a.placement.events {
            self.event_seen
                .entry(e.index)
                .or_insert(if first { None } else { Some(t) });
        }
        for n in &a.placement.nodes {
            let gpus: Vec<&str> = a
                .placement
                .gpus
                .iter()
                .filter(|g| g.node == n.node)
                .map(|g| g.accelerator_id.as_str())
                .collect();
            for acc in gpus {
                let parts = n
                    .partitions
                    .iter()
                    .filter(|p| p.accelerator_id == acc)
                    .map(|p| PartSample {
                        share_pct: p.share_pct,
                        models: p.models.clone(),
                    })
                    .collect();
                let key = GpuKey {
                    node: n.node.clone(),
                    accelerator: acc.to_string(),
                };
                self.gpus.entry(key).or_default().push_back(GpuSample {
                    t_unix_ms: t,
                    parts,
                });
            }
        }
        self.record_models(&a, t);
        if let Some(prev) = &self.latest {
            let seen = diff(prev, &a, t);
            self.observed.extend(seen);
            while self.observed.len() > OBSERVED_KEPT {
                self.observed.pop_front();
            }
        }
        for n in &a.nodes.nodes {
            let lr = n.last_report.unwrap_or_default();
            self.node_counters
                .entry(n.name.clone())
                .or_default()
                .push_back(NodeCounters {
                    t_unix_ms: t,
                    met: lr.deadlines_met,
                    missed: lr.deadlines_missed,
                });
        }
        self.trim(t);
        self.latest = Some(a);
        self.updated_unix_ms = t;
        self.error = None;
    }

    fn record_models(&mut self, a: &Answers, t: u64) {
        for m in &a.models.models {
            let load = a.placement.models.iter().find(|l| l.model == m.name);
            self.models
                .entry(m.name.clone())
                .or_default()
                .push_back(ModelSample {
                    t_unix_ms: t,
                    requested_rps: m.rate,
                    observed_rps: load.map_or(m.observed_rate, |l| l.observed_rps),
                    planned_rps: load.map_or(0.0, |l| l.planned_rps),
                    deadline_met_pct: m.deadline_met_pct,
                });
        }
    }

    fn trim(&mut self, t: u64) {
        let oldest = t.saturating_sub(self.window_ms);
        for q in self.gpus.values_mut() {
            while q.front().is_some_and(|s| s.t_unix_ms < oldest) {
                q.pop_front();
            }
        }
        for q in self.models.values_mut() {
            while q.front().is_some_and(|s| s.t_unix_ms < oldest) {
                q.pop_front();
            }
        }
        for q in self.node_counters.values_mut() {
            while q.len() > 2 {
                q.pop_front();
            }
        }
        self.gpus.retain(|_, q| !q.is_empty());
        self.models.retain(|_, q| !q.is_empty());
    }

    /// A node's rates over its last two samples.
    pub fn node_rates(&self, node: &str) -> NodeRates {
        let Some(q) = self.node_counters.get(node) else {
            return NodeRates::default();
        };
        let (Some(a), Some(b)) = (q.front(), q.back()) else {
            return NodeRates::default();
        };
        let dt = b.t_unix_ms.saturating_sub(a.t_unix_ms) as f64 / 1e3;
        let met = b.met.saturating_sub(a.met) as f64;
        let missed = b.missed.saturating_sub(a.missed) as f64;
        if dt <= 0.0 {
            return NodeRates::default();
        }
        NodeRates {
            finished_per_s: (met + missed) / dt,
            met_pct: if met + missed > 0.0 {
                100.0 * met / (met + missed)
            } else {
                0.0
            },
        }
    }
}

/// Nodes that joined, changed status or went away, and leader changes, from `a` to `b`.
fn diff(a: &Answers, b: &Answers, t: u64) -> Vec<Observed> {
    let mut out = Vec::new();
    let mut push = |kind, text: String| {
        out.push(Observed {
            t_unix_ms: t,
            kind,
            text,
        })
    };
    for n in &b.nodes.nodes {
        match a.nodes.nodes.iter().find(|o| o.name == n.name) {
            None => push(
                ObservedKind::NodeJoined,
                format!("node {} joined ({})", n.name, n.status),
            ),
            Some(o) if o.status != n.status => push(
                ObservedKind::NodeStatus,
                format!("node {}: {} -> {}", n.name, o.status, n.status),
            ),
            Some(_) => {}
        }
    }
    for o in &a.nodes.nodes {
        if !b.nodes.nodes.iter().any(|n| n.name == o.name) {
            push(
                ObservedKind::NodeRemoved,
                format!("node {} removed", o.name),
            );
        }
    }
    let (x, y) = (&a.cluster, &b.cluster);
    if x.leader_id != y.leader_id && y.leader_id != 0 {
        push(
            ObservedKind::LeaderChanged,
            format!(
                "leader {} -> {} (term {})",
                x.leader_id, y.leader_id, y.term
            ),
        );
    }
    out
}

/// Poll the cluster every `every` until the task is dropped.
pub async fn run(cluster: ReadOnlyCluster, store: Shared, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match cluster.read_all().await {
            Ok(a) => {
                debug!(nodes = a.nodes.nodes.len(), "dashboard poll");
                store.write().expect("store lock").record(a, now_ms());
            }
            Err(e) => {
                warn!(error = %format!("{e:#}"), "dashboard: the cluster did not answer");
                store.write().expect("store lock").error = Some(format!("{e:#}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answers(met: u64, missed: u64, share: u32) -> Answers {
        let mut a = Answers::default();
        a.nodes.nodes.push(api::NodeInfo {
            name: "g".into(),
            last_report: Some(api::LastReport {
                deadlines_met: met,
                deadlines_missed: missed,
                energy_j: 0.0,
            }),
            ..Default::default()
        });
        a.placement.nodes.push(api::NodePlacement {
            node: "g".into(),
            partitions: vec![api::Partition {
                accelerator_id: "gpu0".into(),
                share_pct: share,
                models: vec!["m".into()],
            }],
            ..Default::default()
        });
        a.placement.gpus.push(api::GpuLoad {
            node: "g".into(),
            accelerator_id: "gpu0".into(),
            ..Default::default()
        });
        a
    }

    #[test]
    fn node_rates_come_from_the_last_two_reports() {
        let mut s = Store::new(Duration::from_secs(60));
        s.record(answers(100, 0, 100), 10_000);
        s.record(answers(190, 10, 100), 12_000);
        // (90 + 10) finished in 2 s = 50/s, 90 of 100 met.
        let r = s.node_rates("g");
        assert!((r.finished_per_s - 50.0).abs() < 1e-9, "{r:?}");
        assert!((r.met_pct - 90.0).abs() < 1e-9, "{r:?}");
    }

    #[test]
    fn history_is_bounded_by_the_window_and_events_get_a_time_once() {
        let mut s = Store::new(Duration::from_secs(10));
        let mut a = answers(0, 0, 100);
        a.placement.events.push(api::PlanEvent {
            index: 5,
            ..Default::default()
        });
        s.record(a.clone(), 1_000);
        a.placement.events.push(api::PlanEvent {
            index: 9,
            ..Default::default()
        });
        s.record(a.clone(), 2_000);
        s.record(answers(0, 0, 60), 12_500);
        let key = GpuKey {
            node: "g".into(),
            accelerator: "gpu0".into(),
        };
        let q = &s.gpus[&key];
        // 1_000 is older than 12_500 - 10_000: dropped; 2_000 too.
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].parts[0].share_pct, 60);
        assert_eq!(s.event_seen[&5], None, "in the history before the start");
        assert_eq!(s.event_seen[&9], Some(2_000));
    }
}
