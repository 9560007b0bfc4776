//! The leader side of the edge agents: the `Agent` gRPC service (register with the join
//! token, one session per agent), leases and rate aggregation in leader memory.
//!
//! Only decisions go through Raft (node registered, node lost, assignments); heartbeats and
//! reports stay in the leader's memory. Consequences, by design:
//! - a follower answers a session with a `Redirect` to the leader and closes it;
//! - a new leader knows no lease: it grants every node in the replicated state a fresh grace
//!   period of one lease timeout when it takes over, so a failover never evicts everyone;
//! - live figures (`nodes list` / `models list` rate, deadline-met %, energy) are served by
//!   the leader; a follower answers zeros until it leads.
//!
//! Lease timings come from the environment (`EDGEPLANE_COORDINATOR_AGENT_LEASE_MS`, default
//! 10000: a node not heard from for that long is marked lost) so that tests can shorten them
//! without touching the replica's own configuration.

use crate::admin::{LiveStats, ModelLiveStats, NodeLiveStats};
use crate::node::Handle;
use crate::server::Extensions;
use crate::state::NodeStatus;
use edgeplane_proto::agent as api;
use edgeplane_proto::agent::agent_server::{Agent, AgentServer};
use edgeplane_proto::raft as pb;
use edgeplane_proto::raft::command::Kind;
use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

/// Lease settings.
#[derive(Debug, Clone, Copy)]
pub struct LeaseConfig {
    /// Agents report (and so renew) this often.
    pub renew: Duration,
    /// A node not heard from for this long is marked lost.
    pub timeout: Duration,
}

impl LeaseConfig {
    /// Defaults (2 s / 10 s) overridden by `EDGEPLANE_COORDINATOR_AGENT_RENEW_MS` and
    /// `EDGEPLANE_COORDINATOR_AGENT_LEASE_MS`; malformed values fall back to the default
    /// with a warning.
    pub fn from_env() -> Self {
        let get = |k: &str, d: u64| match std::env::var(k) {
            Ok(v) => match v.parse::<u64>() {
                Ok(n) if n > 0 => n,
                _ => {
                    tracing::warn!(var = k, value = %v, default = d, "bad value, using default");
                    d
                }
            },
            Err(_) => d,
        };
        LeaseConfig {
            renew: Duration::from_millis(get("EDGEPLANE_COORDINATOR_AGENT_RENEW_MS", 2000)),
            timeout: Duration::from_millis(get("EDGEPLANE_COORDINATOR_AGENT_LEASE_MS", 10_000)),
        }
    }
}

#[derive(Debug, Default, Clone)]
struct NodeLive {
    met: u64,
    missed: u64,
    energy_j: f64,
    /// Totals of earlier agent processes (an agent's counters restart with it; `nodes list`
    /// shows totals since the node joined), and the last report's raw totals and uptime.
    base: (u64, u64, f64),
    raw: (u64, u64, f64),
    uptime_s: f64,
    /// model → (uptime_s, arrivals, met, missed, energy_j, rate) from the last report.
    models: BTreeMap<String, (f64, u64, u64, u64, f64, f64)>,
    /// Models whose rate is measured over a whole rate window: until then the planner must
    /// not take a partial window for a rate (a model that just started looks idle).
    rate_known: std::collections::BTreeSet<String>,
    /// model → (uptime_s, arrivals) samples spanning the rate window.
    history: BTreeMap<String, std::collections::VecDeque<(f64, u64)>>,
    /// GPU partitions from the last report: id → (uptime_s, busy_s, utilisation 0..1, report).
    partitions: BTreeMap<String, (f64, f64, f64, api::AcceleratorReport)>,
}

/// A GPU partition as its agent last reported it (leader memory).
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

#[derive(Default)]
struct Inner {
    leases: HashMap<String, Instant>,
    live: HashMap<String, NodeLive>,
}

/// Leader memory for agents. Shared by the gRPC service, the lease task and the Admin
/// service (as [`LiveStats`]).
pub struct AgentHub {
    inner: Mutex<Inner>,
    /// node → the node's assignment epoch, for the node's open sessions. One task diffs each
    /// published state against the previous one and wakes only the sessions whose node
    /// changed, so an idle session costs nothing (10,000 sessions polling every 100 ms cost
    /// the leader its election heartbeats).
    epochs: Mutex<HashMap<String, watch::Sender<u64>>>,
    pub lease: LeaseConfig,
    /// Observed rates are measured over this window (`EDGEPLANE_COORDINATOR_RATE_WINDOW_MS`,
    /// default 5000).
    pub rate_window: Duration,
}

impl AgentHub {
    pub fn new(lease: LeaseConfig) -> Arc<Self> {
        Arc::new(AgentHub {
            inner: Mutex::new(Inner::default()),
            epochs: Mutex::new(HashMap::new()),
            lease,
            rate_window: Duration::from_millis(
                std::env::var("EDGEPLANE_COORDINATOR_RATE_WINDOW_MS")
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
                    .filter(|v| *v > 0)
                    .unwrap_or(5000),
            ),
        })
    }

    /// A receiver that changes whenever `node`'s assignment epoch changes.
    fn watch_epoch(&self, node: &str, current: u64) -> watch::Receiver<u64> {
        let mut g = self.epochs.lock().expect("epochs lock");
        g.entry(node.to_string())
            .or_insert_with(|| watch::channel(current).0)
            .subscribe()
    }

    /// Forget `node`'s epoch watch once no session holds it any more.
    fn unwatch_epoch(&self, node: &str) {
        let mut g = self.epochs.lock().expect("epochs lock");
        if g.get(node).is_some_and(|tx| tx.receiver_count() == 0) {
            g.remove(node);
        }
    }

    fn renew(&self, node: &str) {
        self.inner
            .lock()
            .expect("agent hub lock")
            .leases
            .insert(node.to_string(), Instant::now());
    }

    /// Observed request rate per model (requests/s), summed over nodes: the planner's input.
    /// Only measured rates (a model first seen in this report has none yet).
    pub fn rates(&self) -> BTreeMap<String, f64> {
        let g = self.inner.lock().expect("agent hub lock");
        let mut out = BTreeMap::new();
        let now = Instant::now();
        for (node, n) in &g.live {
            // a node not heard from for two report periods (killed, cut off) no longer
            // carries its traffic: its last rate must not add to the rate of the node that
            // took its models over
            if g.leases
                .get(node)
                .is_some_and(|t| now.duration_since(*t) > 2 * self.lease.renew)
            {
                continue;
            }
            for (m, v) in &n.models {
                if n.rate_known.contains(m) {
                    *out.entry(m.clone()).or_insert(0.0) += v.5;
                }
            }
        }
        out
    }

    /// The GPU partitions `node` reported last (empty when unknown).
    pub fn partitions(&self, node: &str) -> Vec<PartitionLive> {
        let g = self.inner.lock().expect("agent hub lock");
        g.live
            .get(node)
            .map(|n| {
                n.partitions
                    .values()
                    .map(|(_, _, util, a)| PartitionLive {
                        id: a.id.clone(),
                        accelerator_id: a.accelerator_id.clone(),
                        share_pct: a.share_pct,
                        models: a.models.clone(),
                        ready: a.ready,
                        utilisation: *util,
                        busy_s: a.busy_s,
                        energy_j: a.energy_j,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Models `node` serves on a ready partition, per its last report.
    pub fn ready_models(&self, node: &str) -> std::collections::BTreeSet<String> {
        self.partitions(node)
            .into_iter()
            .filter(|p| p.ready)
            .flat_map(|p| p.models)
            .collect()
    }

    /// Record an accepted report.
    fn record(&self, node: &str, r: &api::Report) {
        let mut g = self.inner.lock().expect("agent hub lock");
        g.leases.insert(node.to_string(), Instant::now());
        let live = g.live.entry(node.to_string()).or_default();
        if r.uptime_s < live.uptime_s {
            // A new agent process: the rates of the old one are not this one's traffic
            // (a restarted node must not add its pre-crash rates to the nodes that took
            // its models over).
            live.models.clear();
            live.history.clear();
            live.rate_known.clear();
        }
        let (mut met, mut missed, mut energy) = (0, 0, 0.0);
        for m in &r.models {
            met += m.deadlines_met;
            missed += m.deadlines_missed;
            energy += m.energy_j;
            // The rate over the last `rate_window` seconds of this agent process (a report
            // window alone is too short: 10 Poisson arrivals swing by a third).
            // Demand counts the requests refused because the model is not assigned there:
            // a model served nowhere still has its traffic measured.
            let window = self.rate_window.as_secs_f64();
            let demand = m.arrivals.saturating_add(m.refused);
            let h = live.history.entry(m.model.clone()).or_default();
            if h.back().is_some_and(|&(t, a)| r.uptime_s < t || demand < a) {
                h.clear(); // the agent restarted: its counters start over
            }
            h.push_back((r.uptime_s, demand));
            while h.len() > 2 && r.uptime_s - h[1].0 >= window {
                h.pop_front();
            }
            let (t0, a0) = h[0];
            let rate = if r.uptime_s > t0 {
                if r.uptime_s - t0 >= 0.8 * window {
                    live.rate_known.insert(m.model.clone());
                }
                (demand - a0) as f64 / (r.uptime_s - t0)
            } else {
                live.models.get(&m.model).map_or(0.0, |v| v.5)
            };
            live.models.insert(
                m.model.clone(),
                (
                    r.uptime_s,
                    m.arrivals,
                    m.deadlines_met,
                    m.deadlines_missed,
                    m.energy_j,
                    rate,
                ),
            );
        }
        let mut parts = BTreeMap::new();
        for a in r.accelerators.iter().filter(|a| a.partition) {
            let util = match live.partitions.get(&a.id) {
                Some(&(t0, b0, ..)) if r.uptime_s > t0 && a.busy_s >= b0 => {
                    ((a.busy_s - b0) / (r.uptime_s - t0)).clamp(0.0, 1.0)
                }
                Some(&(_, _, u, _)) => u,
                None => 0.0,
            };
            parts.insert(a.id.clone(), (r.uptime_s, a.busy_s, util, a.clone()));
        }
        live.partitions = parts;
        if r.uptime_s < live.uptime_s {
            // The agent restarted: carry what its previous process had reported.
            live.base.0 += live.raw.0;
            live.base.1 += live.raw.1;
            live.base.2 += live.raw.2;
        }
        live.raw = (met, missed, energy);
        live.uptime_s = r.uptime_s;
        live.met = live.base.0 + met;
        live.missed = live.base.1 + missed;
        live.energy_j = live.base.2 + energy;
    }

    /// Build the extensions a replica needs for the agent side: the `Agent` service and the
    /// live stats for the Admin service.
    pub fn extensions(self: &Arc<Self>) -> Extensions {
        let hub = self.clone();
        let planner = crate::planner_loop::Planner::new(
            self.clone(),
            crate::planner_loop::PlannerConfig::from_env(),
        );
        let mut ext = Extensions {
            live_stats: Some(planner.clone() as Arc<dyn LiveStats>),
            ..Default::default()
        };
        ext.services.push(Box::new(move |handle: &Handle, routes| {
            tokio::spawn(lease_loop(handle.clone(), hub.clone()));
            tokio::spawn(crate::planner_loop::run(handle.clone(), planner.clone()));
            tokio::spawn(epoch_notifier(handle.clone(), hub.clone()));
            routes.add_service(AgentServer::new(AgentService {
                handle: handle.clone(),
                hub,
            }));
        }));
        ext
    }
}

impl LiveStats for AgentHub {
    fn node(&self, name: &str) -> Option<NodeLiveStats> {
        let g = self.inner.lock().expect("agent hub lock");
        g.live.get(name).map(|n| NodeLiveStats {
            deadlines_met: n.met,
            deadlines_missed: n.missed,
            energy_j: n.energy_j,
        })
    }

    fn model(&self, name: &str) -> Option<ModelLiveStats> {
        let g = self.inner.lock().expect("agent hub lock");
        let mut found = false;
        let (mut rate, mut met, mut missed, mut energy) = (0.0, 0u64, 0u64, 0.0);
        for n in g.live.values() {
            if let Some(v) = n.models.get(name) {
                found = true;
                rate += v.5;
                met += v.2;
                missed += v.3;
                energy += v.4;
            }
        }
        found.then(|| ModelLiveStats {
            rate,
            deadline_met_pct: if met + missed == 0 {
                0.0
            } else {
                100.0 * met as f64 / (met + missed) as f64
            },
            energy_j: energy,
        })
    }
}

/// Leader-only: fresh grace on taking over; mark nodes lost when their lease expires.
/// Wakes the sessions of nodes whose assignment epoch changed: diffs each newly published
/// node map against the previous one (persistent maps: shared subtrees are skipped, so the
/// cost follows the change, not the number of nodes).
async fn epoch_notifier(handle: Handle, hub: Arc<AgentHub>) {
    let mut changes = handle.state_changes();
    let mut prev = handle.stale_state();
    while changes.changed().await.is_ok() {
        let cur = handle.stale_state();
        if !prev.nodes.ptr_eq(&cur.nodes) {
            let g = hub.epochs.lock().expect("epochs lock");
            if !g.is_empty() {
                for d in prev.nodes.diff(&cur.nodes) {
                    let (name, node) = match d {
                        imbl::ordmap::DiffItem::Add(k, v) => (k, v),
                        imbl::ordmap::DiffItem::Update { new, .. } => new,
                        imbl::ordmap::DiffItem::Remove(..) => continue,
                    };
                    if let Some(tx) = g.get(name) {
                        tx.send_if_modified(|e| {
                            let changed = *e != node.assignment_epoch;
                            *e = node.assignment_epoch;
                            changed
                        });
                    }
                }
            }
        }
        prev = cur;
    }
}

async fn lease_loop(handle: Handle, hub: Arc<AgentHub>) {
    let mut leadership = handle.leadership();
    let mut was_leader = false;
    let period = (hub.lease.timeout / 10).clamp(Duration::from_millis(50), Duration::from_secs(1));
    loop {
        let is_leader = leadership.borrow_and_update().is_leader;
        if is_leader && !was_leader {
            // New leader: everyone known gets a full lease from now (no mass eviction).
            let st = handle.stale_state();
            let now = Instant::now();
            let mut g = hub.inner.lock().expect("agent hub lock");
            g.leases.clear();
            for name in st.nodes.keys() {
                g.leases.insert(name.clone(), now);
            }
            tracing::info!(
                nodes = st.nodes.len(),
                "leader: granted every agent a fresh lease"
            );
        } else if !is_leader && was_leader {
            let mut g = hub.inner.lock().expect("agent hub lock");
            g.leases.clear();
            g.live.clear();
        }
        was_leader = is_leader;
        if is_leader {
            let st = handle.stale_state();
            let expired: Vec<String> = {
                let mut g = hub.inner.lock().expect("agent hub lock");
                let now = Instant::now();
                st.nodes
                    .values()
                    .filter(|n| n.status == NodeStatus::Ready)
                    .filter(|n| {
                        let seen = *g.leases.entry(n.name.clone()).or_insert(now);
                        now.duration_since(seen) > hub.lease.timeout
                    })
                    .map(|n| n.name.clone())
                    .collect()
            };
            if !expired.is_empty() {
                // One entry for every node that expired in this period: a mass expiry
                // (a rack losing power) is one proposal and one fsync, not one per node.
                tracing::warn!(count = expired.len(), first = %expired[0], timeout = ?hub.lease.timeout, "leases expired: marking nodes lost");
                let cmd = pb::Command {
                    client_id: 0,
                    seq: 0,
                    kind: Some(Kind::ExpireNodes(pb::ExpireNodes {
                        names: expired.clone(),
                    })),
                };
                if let Err(e) = handle.propose(cmd).await {
                    tracing::warn!(count = expired.len(), error = %e, "could not mark nodes lost; retrying next period");
                }
            }
        }
        tokio::select! {
            r = leadership.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(period) => {}
        }
    }
}

/// The `Agent` gRPC service.
pub struct AgentService {
    handle: Handle,
    hub: Arc<AgentHub>,
}

/// The shared bootstrap token (`--join-token` of the coordinator), compared in constant
/// time. Checked when the agent presents one, and always on an `--insecure` cluster (where
/// it is the only authentication); an agent with a node certificate needs none.
fn check_token(handle: &Handle, token: &str) -> Result<(), Status> {
    match handle.join_token() {
        None => Err(Status::unauthenticated(
            "join_token: this cluster was started without a shared --join-token; agents \
             authenticate by node certificate, or join with a per-node token \
             (`edgeplane tokens create`) and no certificate",
        )),
        Some(t) if edgeplane_tls::token::secrets_equal(t, token) => Ok(()),
        Some(_) => Err(Status::permission_denied(
            "join_token: refused (wrong token)",
        )),
    }
}

/// Measured profiles an agent registers with are validated and bounded.
fn check_profiles(r: &api::RegisterRequest) -> Result<(), Status> {
    for (i, a) in r.accelerators.iter().enumerate() {
        crate::planner_loop::check_profile(a).map_err(|msg| {
            Status::invalid_argument(format!("accelerators[{i}] ({}).profile: {msg}", a.id))
        })?;
    }
    Ok(())
}

fn accelerators_of(r: &api::RegisterRequest) -> Vec<pb::Accelerator> {
    r.accelerators
        .iter()
        .map(|a| pb::Accelerator {
            id: a.id.clone(),
            kind: a.kind.clone(),
            name: a.name.clone(),
            memory_mb: a.memory_mb,
            mig_capable: a.mig_capable,
            sm_count: a.sm_count,
            simulated: a.simulated,
            profile: a
                .profile
                .iter()
                .map(|r| pb::ProfileRow {
                    model: r.model.clone(),
                    ms: r.ms.clone(),
                })
                .collect(),
            profile_source: a.profile_source.clone(),
        })
        .collect()
}

/// Longest CSR accepted in a join.
const MAX_CSR: usize = 16 * 1024;

fn assignment_of(node: &crate::state::Node) -> api::Assignment {
    api::Assignment {
        epoch: node.assignment_epoch,
        partitions: node
            .partitions
            .iter()
            .map(|p| api::Partition {
                accelerator_id: p.accelerator_id.clone(),
                share_pct: p.share_pct,
                models: p.models.clone(),
            })
            .collect(),
    }
}

/// A report's values must be finite and non-negative; otherwise it is refused whole.
/// Most models one report may carry (an agent serves a handful; the leader keeps what it is
/// told in memory).
pub const MAX_REPORT_MODELS: usize = 256;

/// A report's epoch against the node's current one: older is stale, newer cannot exist (an
/// agent learns epochs from the leader).
pub fn check_report_epoch(reported: u64, current: u64) -> Result<(), String> {
    if reported < current {
        Err(format!(
            "stale epoch: report made under epoch {reported}, node is at {current}"
        ))
    } else if reported > current {
        Err(format!(
            "assignment_epoch: {reported} is ahead of the node's epoch {current}; an agent \
             reports under an epoch the leader gave it"
        ))
    } else {
        Ok(())
    }
}

pub fn check_report(r: &api::Report) -> Result<(), String> {
    if r.models.len() > MAX_REPORT_MODELS {
        return Err(format!(
            "models: {} in one report; at most {MAX_REPORT_MODELS}",
            r.models.len()
        ));
    }
    let bad = |f: &str, v: f64| -> Result<(), String> {
        if v.is_finite() && v >= 0.0 {
            Ok(())
        } else {
            Err(format!(
                "{f}: must be a finite non-negative number, got {v}"
            ))
        }
    };
    bad("uptime_s", r.uptime_s)?;
    bad("decision_overhead_us", r.decision_overhead_us)?;
    for m in &r.models {
        if m.model.is_empty() || m.model.len() > 253 {
            return Err("models.model: must be 1 to 253 bytes".into());
        }
        bad("models.p50_ms", m.p50_ms)?;
        bad("models.p99_ms", m.p99_ms)?;
        bad("models.energy_j", m.energy_j)?;
    }
    for a in &r.accelerators {
        bad("accelerators.busy_s", a.busy_s)?;
        bad("accelerators.energy_j", a.energy_j)?;
    }
    Ok(())
}

type SessionStream = Pin<Box<dyn Stream<Item = Result<api::CoordinatorMessage, Status>> + Send>>;

/// The fingerprint a registration is bound to: the caller's certificate when it is a node
/// certificate. An admin acting for a node (tools, benchmarks) binds nothing, so removing
/// such a node never revokes an admin's certificate.
fn node_cert(caller: Option<&edgeplane_tls::Caller>, ext: &tonic::Extensions) -> Option<[u8; 32]> {
    match caller {
        Some(edgeplane_tls::Caller::Cert(id))
            if matches!(id.principal, edgeplane_tls::Principal::Node(_)) =>
        {
            edgeplane_tls::peer_cert_sha256(ext)
        }
        _ => None,
    }
}

/// Why an open session must end now: the node was removed, or its binding moved away from
/// the session's certificate (`cert_hex`, empty without TLS). Cheap: a map lookup.
fn session_revoked(st: &crate::state::State, name: &str, cert_hex: &str) -> Option<&'static str> {
    match st.nodes.get(name) {
        None => Some("the node was removed"),
        Some(n) if !cert_hex.is_empty() && n.cert_sha256 != cert_hex => {
            Some("the node's certificate was revoked (it moved to a newer certificate)")
        }
        Some(_) => None,
    }
}

/// The refusal of a certificate that `nodes remove` revoked.
fn revoked(name: &str) -> Status {
    Status::permission_denied(format!(
        "certificate: this certificate of node {name:?} was revoked when the node was removed or moved to a newer \
         certificate; join again with a new token (`edgeplane tokens create --node {name}`) and an empty \
         data dir"
    ))
}

fn redirect(handle: &Handle) -> api::CoordinatorMessage {
    let l = *handle.leadership().borrow();
    api::CoordinatorMessage {
        body: Some(api::coordinator_message::Body::Redirect(api::Redirect {
            leader_id: l.leader_id,
            leader_addr: handle.leader_client_addr().unwrap_or_default(),
        })),
    }
}

impl AgentService {
    /// The join's token checked against a linearizable read of the state (a token just
    /// created on the leader is seen by a follower too).
    async fn precheck_token(
        &self,
        token: &edgeplane_tls::JoinToken,
        name: &str,
    ) -> Result<(), Status> {
        let st = self.handle.read(true).await.map_err(|e| e.to_status())?;
        let j = pb::JoinNode {
            token_id: token.id.clone(),
            secret_sha256: token.secret_hash().to_vec(),
            now_unix_ms: crate::state::tokens::now_unix_ms(),
            node: Some(pb::RegisterNode {
                name: name.to_string(),
                ..Default::default()
            }),
        };
        crate::state::tokens::check_join(&st, &j)
            .map_err(|e| crate::node::Error::from(e).to_status())
    }

    /// The join of a new agent: a per-node token and a CSR, from a client without a
    /// certificate (or a member forwarding one). The member that holds the CA key signs;
    /// one without it forwards the join to the leader. The certificate is signed first (a
    /// bad CSR must not use the token up) and handed out only once the token was marked
    /// used and the node registered, in one Raft entry.
    async fn join(
        &self,
        caller: Option<edgeplane_tls::Caller>,
        remote_ip: Option<std::net::IpAddr>,
        r: api::RegisterRequest,
    ) -> Result<api::RegisterResponse, Status> {
        use edgeplane_tls::{Caller, Principal};
        let source_ip = match &caller {
            Some(Caller::Anonymous) => remote_ip,
            Some(Caller::Cert(id)) if matches!(id.principal, Principal::Member(_)) => {
                r.joined_from_ip.parse().ok()
            }
            Some(Caller::Insecure) => {
                return Err(Status::failed_precondition(
                    "csr: joining with a CSR needs TLS; this coordinator runs with --insecure",
                ))
            }
            Some(Caller::Cert(id)) => {
                return Err(Status::invalid_argument(format!(
                    "csr: the caller already holds a certificate ({id}); a CSR join is for an \
                     agent without one"
                )))
            }
            None => return Err(Status::unauthenticated("agent: no caller identity")),
        };
        let token = edgeplane_tls::JoinToken::parse(&r.join_token).map_err(|e| {
            Status::invalid_argument(format!(
                "{e}; an agent without a certificate joins with a per-node token"
            ))
        })?;
        edgeplane_tls::identity::valid_name("name", &r.name).map_err(Status::invalid_argument)?;
        crate::state::check_addr("agent_addr", &r.agent_addr)
            .map_err(|e| crate::node::Error::from(e).to_status())?;
        // The token first: an anonymous caller without a valid token never gets its CSR
        // parsed or signed. (The check that counts runs again when the join applies.)
        self.precheck_token(&token, &r.name).await?;
        if r.csr.len() > MAX_CSR {
            return Err(Status::invalid_argument(format!(
                "csr: larger than {MAX_CSR} bytes"
            )));
        }
        check_profiles(&r)?;
        let Some(ca) = self.handle.signing_ca() else {
            return self.forward_join(source_ip, r).await;
        };
        // Host names in the certificate: loopback, plus the agent's advertised IP when it
        // is the address the join came from (an agent cannot claim another host's address).
        let mut hosts = edgeplane_tls::certs::default_hosts();
        if let Some((host, _)) = r.agent_addr.rsplit_once(':') {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            match (host.parse::<std::net::IpAddr>(), source_ip) {
                (Ok(ip), Some(src)) if ip == src && !hosts.contains(&ip.to_string()) => {
                    hosts.push(ip.to_string())
                }
                _ => {}
            }
        }
        let spec = edgeplane_tls::LeafSpec {
            identity: edgeplane_tls::Identity {
                principal: Principal::Node(r.name.clone()),
                role: None,
            },
            hosts,
            validity: edgeplane_tls::Validity::for_duration(edgeplane_tls::certs::LEAF_VALIDITY),
        };
        let certificate = ca
            .sign_csr(&r.csr, &spec)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let cmd = pb::Command {
            client_id: 0,
            seq: 0,
            kind: Some(Kind::JoinNode(pb::JoinNode {
                token_id: token.id.clone(),
                secret_sha256: token.secret_hash().to_vec(),
                now_unix_ms: 0,
                node: Some(pb::RegisterNode {
                    name: r.name.clone(),
                    accelerators: accelerators_of(&r),
                    agent_addr: r.agent_addr.clone(),
                    // bound to the certificate it is about to receive
                    cert_sha256: edgeplane_tls::pem_cert_sha256(&certificate)
                        .map(|h| h.to_vec())
                        .unwrap_or_default(),
                    cert_not_before_unix: edgeplane_tls::pem_cert_not_before(&certificate)
                        .unwrap_or_default(),
                }),
            })),
        };
        if self.handle.leadership().borrow().is_leader {
            self.hub.renew(&r.name);
        }
        let applied = match self.handle.propose(cmd).await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(node = %r.name, token = %token.id, from = %source_ip.map_or_else(|| "unknown".to_string(), |ip| ip.to_string()), error = %e, "join refused");
                return Err(e.to_status());
            }
        };
        if self.handle.leadership().borrow().is_leader {
            self.hub.renew(&r.name);
        }
        tracing::info!(target: "audit", node = %r.name, token = %token.id, from = %source_ip.map_or_else(|| "unknown".to_string(), |ip| ip.to_string()), index = applied.index, "agent joined with a token: node certificate issued");
        let l = *self.handle.leadership().borrow();
        Ok(api::RegisterResponse {
            leader_id: l.leader_id,
            leader_addr: self.handle.leader_client_addr().unwrap_or_default(),
            members: self
                .handle
                .members()
                .into_iter()
                .map(|m| m.client_addr)
                .filter(|a| !a.is_empty())
                .collect(),
            assignment_epoch: applied.epoch,
            lease_renew_s: self.hub.lease.renew.as_secs_f64(),
            certificate,
        })
    }

    /// A member without the CA key hands the join to the leader (over mutual TLS with its
    /// member certificate), passing on where the agent connected from.
    async fn forward_join(
        &self,
        source_ip: Option<std::net::IpAddr>,
        mut r: api::RegisterRequest,
    ) -> Result<api::RegisterResponse, Status> {
        if self.handle.leadership().borrow().is_leader {
            return Err(Status::failed_precondition(format!(
                "csr: the leader (member {}) holds no CA key, so it cannot sign a node \
                 certificate: start the members with --tls-ca-key (see README, Securing a \
                 cluster)",
                self.handle.id()
            )));
        }
        let wait = self.handle.request_timeout();
        let addr = self
            .handle
            .wait_leader_client_addr(wait)
            .await
            .ok_or_else(|| {
                crate::Error::NotApplied("no leader known to sign the join".into()).to_status()
            })?;
        let ep = self
            .handle
            .client_tls()
            .endpoint(&addr)
            .map_err(|e| Status::unavailable(format!("leader {addr}: {e}")))?
            .connect_timeout(Duration::from_millis(500))
            .timeout(wait);
        let ch = ep
            .connect()
            .await
            .map_err(|e| Status::unavailable(format!("leader {addr}: {e}")))?;
        r.joined_from_ip = source_ip.map(|ip| ip.to_string()).unwrap_or_default();
        tracing::info!(node = %r.name, leader = %addr, "no CA key here: forwarding the join to the leader");
        let resp = edgeplane_proto::agent::agent_client::AgentClient::new(ch)
            .register(r)
            .await?;
        Ok(resp.into_inner())
    }
}

#[tonic::async_trait]
impl Agent for AgentService {
    async fn register(
        &self,
        request: Request<api::RegisterRequest>,
    ) -> Result<Response<api::RegisterResponse>, Status> {
        let caller = edgeplane_tls::Caller::of(&request).cloned();
        let cert = node_cert(caller.as_ref(), request.extensions());
        let not_before = cert
            .and_then(|_| edgeplane_tls::peer_cert_not_before(request.extensions()))
            .unwrap_or_default();
        let remote_ip = request.remote_addr().map(|a| a.ip());
        let r = request.into_inner();
        if !r.csr.is_empty() {
            return self.join(caller, remote_ip, r).await.map(Response::new);
        }
        if matches!(caller, Some(edgeplane_tls::Caller::Anonymous)) {
            return Err(crate::auth::check_node_name(caller.as_ref(), &r.name)
                .expect_err("anonymous callers are refused"));
        }
        if matches!(caller, Some(edgeplane_tls::Caller::Insecure)) || !r.join_token.is_empty() {
            check_token(&self.handle, &r.join_token)?;
        }
        crate::auth::check_node_name(caller.as_ref(), &r.name)?;
        crate::state::check_addr("agent_addr", &r.agent_addr)
            .map_err(|e| crate::node::Error::from(e).to_status())?;
        check_profiles(&r)?;
        let accelerators = accelerators_of(&r);
        // Write only what changed: a reconnect of a ready, unchanged node costs no Raft entry.
        let st = self.handle.read(true).await.map_err(|e| e.to_status())?;
        // The same check runs when the registration applies; this one saves the entry.
        if cert.is_some_and(|h| st.is_revoked(&h)) {
            return Err(revoked(&r.name));
        }
        let cert_hex = cert.map(|h| crate::state::hex(&h)).unwrap_or_default();
        let unchanged = st.nodes.get(&r.name).is_some_and(|n| {
            (n.status == NodeStatus::Ready || n.status == NodeStatus::Draining)
                && (cert_hex.is_empty() || n.cert_sha256 == cert_hex)
                && n.agent_addr == r.agent_addr
                && n.accelerators.len() == accelerators.len()
                && n.accelerators
                    .iter()
                    .zip(&accelerators)
                    .all(|(x, y)| *x == crate::state::Accelerator::from(y))
        });
        if !unchanged {
            // a fresh lease before the node turns ready again, so the lease loop never sees a
            // returning node as ready with its old, expired lease (a lost/ready flap)
            if self.handle.leadership().borrow().is_leader {
                self.hub.renew(&r.name);
            }
            let cmd = pb::Command {
                client_id: 0,
                seq: 0,
                kind: Some(Kind::RegisterNode(pb::RegisterNode {
                    name: r.name.clone(),
                    accelerators,
                    agent_addr: r.agent_addr.clone(),
                    cert_sha256: cert.map(|h| h.to_vec()).unwrap_or_default(),
                    cert_not_before_unix: not_before,
                })),
            };
            self.handle.propose(cmd).await.map_err(|e| e.to_status())?;
            tracing::info!(node = %r.name, addr = %r.agent_addr, "agent registered");
        }
        if self.handle.leadership().borrow().is_leader {
            self.hub.renew(&r.name);
        }
        let st = self.handle.stale_state();
        let l = *self.handle.leadership().borrow();
        Ok(Response::new(api::RegisterResponse {
            leader_id: l.leader_id,
            leader_addr: self.handle.leader_client_addr().unwrap_or_default(),
            members: self
                .handle
                .members()
                .into_iter()
                .map(|m| m.client_addr)
                .filter(|a| !a.is_empty())
                .collect(),
            assignment_epoch: st.nodes.get(&r.name).map_or(0, |n| n.assignment_epoch),
            lease_renew_s: self.hub.lease.renew.as_secs_f64(),
            certificate: String::new(),
        }))
    }

    type SessionStream = SessionStream;

    async fn session(
        &self,
        request: Request<Streaming<api::AgentMessage>>,
    ) -> Result<Response<SessionStream>, Status> {
        let caller = edgeplane_tls::Caller::of(&request).cloned();
        let cert = node_cert(caller.as_ref(), request.extensions());
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel::<Result<api::CoordinatorMessage, Status>>(16);
        if !self.handle.leadership().borrow().is_leader {
            let _ = tx.send(Ok(redirect(&self.handle))).await;
            return Ok(Response::new(Box::pin(
                tokio_stream::wrappers::ReceiverStream::new(rx),
            )));
        }
        let hello = match inbound.next().await {
            Some(Ok(api::AgentMessage {
                body: Some(api::agent_message::Body::Hello(h)),
            })) => h,
            Some(Err(s)) => return Err(s),
            _ => return Err(Status::invalid_argument("first message: must be a Hello")),
        };
        if matches!(caller, Some(edgeplane_tls::Caller::Insecure)) || !hello.join_token.is_empty() {
            check_token(&self.handle, &hello.join_token)?;
        }
        crate::auth::check_node_name(caller.as_ref(), &hello.name)?;
        if cert.is_some_and(|h| self.handle.stale_state().is_revoked(&h)) {
            return Err(revoked(&hello.name));
        }
        if !self.handle.stale_state().nodes.contains_key(&hello.name) {
            return Err(Status::failed_precondition(format!(
                "node {:?} is not registered: call Register first",
                hello.name
            )));
        }
        self.hub.renew(&hello.name);
        tracing::info!(node = %hello.name, epoch = hello.assignment_epoch, "agent session open");
        let handle = self.handle.clone();
        let hub = self.hub.clone();
        tokio::spawn(async move {
            let name = hello.name;
            let mut sent_epoch = hello.assignment_epoch;
            let mut sent_any = false;
            let mut leadership = handle.leadership();
            let current = handle
                .stale_state()
                .nodes
                .get(&name)
                .map_or(0, |n| n.assignment_epoch);
            let mut epoch_rx = hub.watch_epoch(&name, current);
            let mut state_rx = handle.state_changes();
            let cert_hex = cert.map(|h| crate::state::hex(&h)).unwrap_or_default();
            loop {
                // Push the node's assignment when it is newer than what the agent holds
                // (and once at session start, so an agent that lost its file is told).
                let st = handle.stale_state();
                if let Some(node) = st.nodes.get(&name) {
                    if node.assignment_epoch > sent_epoch
                        || (!sent_any
                            && node.assignment_epoch >= sent_epoch
                            && node.assignment_epoch > 0)
                    {
                        let msg = api::CoordinatorMessage {
                            body: Some(api::coordinator_message::Body::Assignment(assignment_of(
                                node,
                            ))),
                        };
                        if tx.send(Ok(msg)).await.is_err() {
                            break;
                        }
                        sent_epoch = node.assignment_epoch;
                        sent_any = true;
                    }
                }
                tokio::select! {
                    r = epoch_rx.changed() => if r.is_err() { break },
                    r = state_rx.changed() => {
                        if r.is_err() { break }
                        if let Some(why) = session_revoked(&handle.stale_state(), &name, &cert_hex) {
                            tracing::warn!(node = %name, reason = why, "closing the session of a removed or revoked node");
                            let _ = tx.send(Err(Status::permission_denied(format!(
                                "node {name:?}: {why}; the session is closed"
                            )))).await;
                            break;
                        }
                    }
                    r = leadership.changed() => {
                        if r.is_err() || !leadership.borrow_and_update().is_leader {
                            let _ = tx.send(Ok(redirect(&handle))).await;
                            break;
                        }
                    }
                    msg = inbound.next() => match msg {
                        None | Some(Err(_)) => break,
                        Some(Ok(api::AgentMessage { body: Some(api::agent_message::Body::Report(r)) })) => {
                            let current = handle.stale_state().nodes.get(&name).map_or(0, |n| n.assignment_epoch);
                            let verdict = check_report_epoch(r.assignment_epoch, current)
                                .and_then(|()| check_report(&r));
                            let ack = match verdict {
                                Ok(()) => {
                                    hub.record(&name, &r);
                                    api::ReportAck { seq: r.seq, accepted: true, reason: String::new() }
                                }
                                Err(reason) => {
                                    // Still alive: a rejected report renews the lease but
                                    // changes no figure.
                                    hub.renew(&name);
                                    tracing::debug!(node = %name, %reason, "report rejected");
                                    api::ReportAck { seq: r.seq, accepted: false, reason }
                                }
                            };
                            let msg = api::CoordinatorMessage { body: Some(api::coordinator_message::Body::Ack(ack)) };
                            if tx.send(Ok(msg)).await.is_err() { break; }
                        }
                        Some(Ok(_)) => {}
                    },
                }
            }
            drop(epoch_rx);
            hub.unwatch_epoch(&name);
            tracing::info!(node = %name, "agent session closed");
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(uptime: f64, arrivals: u64) -> api::Report {
        api::Report {
            seq: 1,
            assignment_epoch: 0,
            uptime_s: uptime,
            models: vec![api::ModelReport {
                model: "m".into(),
                arrivals,
                completions: arrivals,
                deadlines_met: arrivals,
                deadlines_missed: 0,
                drops: 0,
                p50_ms: 1.0,
                p99_ms: 2.0,
                energy_j: 0.5,
                refused: 0,
            }],
            accelerators: vec![],
            decision_overhead_us: 1.0,
        }
    }

    #[test]
    fn rates_from_consecutive_reports() {
        let mut hub = AgentHub::new(LeaseConfig {
            renew: Duration::from_secs(2),
            timeout: Duration::from_secs(10),
        });
        Arc::get_mut(&mut hub).unwrap().rate_window = Duration::from_secs(1);
        hub.record("a", &report(1.0, 10));
        hub.record("a", &report(2.0, 60));
        hub.record("b", &report(5.0, 0));
        hub.record("b", &report(7.0, 20));
        assert_eq!(hub.rates()["m"], 50.0 + 10.0);
        let m = hub.model("m").unwrap();
        assert_eq!(m.deadline_met_pct, 100.0);
        assert_eq!(hub.node("a").unwrap().deadlines_met, 60);
        // Agent "a" restarts: its counters start over, the node's totals do not.
        hub.record("a", &report(0.5, 4));
        assert_eq!(hub.node("a").unwrap().deadlines_met, 64);
        assert!(hub.model("other").is_none());
    }

    #[test]
    fn refused_requests_count_into_the_observed_rate() {
        let mut hub = AgentHub::new(LeaseConfig {
            renew: Duration::from_secs(2),
            timeout: Duration::from_secs(10),
        });
        Arc::get_mut(&mut hub).unwrap().rate_window = Duration::from_secs(1);
        // node "a" serves m: 10 arrivals in 1 s; node "b" does not: it refuses 30 in 1 s
        hub.record("a", &report(1.0, 0));
        hub.record("a", &report(2.0, 10));
        let mut r = report(1.0, 0);
        r.models[0].refused = 5;
        hub.record("b", &r);
        r = report(2.0, 0);
        r.models[0].refused = 35;
        hub.record("b", &r);
        assert_eq!(hub.rates()["m"], 10.0 + 30.0);
    }

    #[test]
    fn rates_are_measured_over_the_window_and_unknown_before_it_is_full() {
        let hub = AgentHub::new(LeaseConfig {
            renew: Duration::from_secs(2),
            timeout: Duration::from_secs(10),
        });
        assert_eq!(hub.rate_window, Duration::from_secs(5));
        // reports every 0.2 s, 50 req/s but bursty within the window (0 or 20 per report)
        let mut arrivals = 0;
        for i in 1..=15 {
            arrivals += if i % 2 == 0 { 20 } else { 0 };
            hub.record("a", &report(i as f64 * 0.2, arrivals));
        }
        assert!(hub.rates().is_empty(), "3 s seen, window 5 s: no rate yet");
        for i in 16..=40 {
            arrivals += if i % 2 == 0 { 20 } else { 0 };
            hub.record("a", &report(i as f64 * 0.2, arrivals));
        }
        let r = hub.rates()["m"];
        // 13 bursts of 20 in the last 5 s: 52 req/s (the window edge cuts a burst)
        assert!((r - 52.0).abs() < 1e-9, "{r}");
    }

    #[test]
    fn nan_in_a_report_is_refused_naming_the_field() {
        let mut r = report(1.0, 1);
        r.models[0].p99_ms = f64::NAN;
        assert!(check_report(&r).unwrap_err().contains("models.p99_ms"));
        assert!(check_report(&report(1.0, 1)).is_ok());
    }
}
