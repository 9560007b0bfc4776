//! The demo's gRPC calls: Admin reads and writes retried across members, the agents' Status,
//! and the probe load (the demo's own Infer requests).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use edgeplane_proto::admin::{self as api, admin_client::AdminClient};
use edgeplane_proto::agent::{inference_client::InferenceClient, InferRequest, StatusRequest};
use tonic::transport::Channel;

use crate::gpu_box::Links;

/// The demo's Admin calls answer within 2 s.
pub(super) const ADMIN_TIMEOUT: Duration = Duration::from_secs(2);

pub(super) async fn admin(net: &Links, addr: &str) -> Option<AdminClient<Channel>> {
    net.admin(addr, ADMIN_TIMEOUT).await
}

pub(super) async fn status_of(net: &Links, addr: &str) -> Option<api::ClusterStatusResponse> {
    let mut c = admin(net, addr).await?;
    tokio::time::timeout(
        Duration::from_millis(500),
        c.cluster_status(api::ReadRequest { stale: true }),
    )
    .await
    .ok()?
    .ok()
    .map(|r| r.into_inner())
}

/// A coordinator leader: its raft id, client address and term.
#[derive(Debug, Clone)]
pub(super) struct Leader {
    pub id: u64,
    pub addr: String,
    pub term: u64,
}

/// The current leader, asking `ask` in turn (a leader other than `not`).
/// `clients[i]` is replica `i + 1`'s client address (the demo numbers them so).
pub(super) async fn find_leader(
    net: &Links,
    clients: &[String],
    ask: &[String],
    not: u64,
) -> Option<Leader> {
    for a in ask {
        if let Some(s) = status_of(net, a).await {
            if s.leader_id != 0 && s.leader_id != not {
                if let Some(addr) = clients.get((s.leader_id as usize).wrapping_sub(1)) {
                    return Some(Leader {
                        id: s.leader_id,
                        addr: addr.clone(),
                        term: s.term,
                    });
                }
            }
        }
    }
    None
}

/// A write through `addrs` (any member: followers forward), retried until `limit`.
pub(super) async fn deploy(
    net: &Links,
    addrs: &[String],
    name: &str,
    slo_ms: f64,
    rate: f64,
    limit: Duration,
) -> anyhow::Result<u64> {
    let deadline = Instant::now() + limit;
    let mut last = String::from("no member reachable");
    loop {
        for a in addrs {
            if let Some(mut c) = admin(net, a).await {
                let req = api::DeployModelRequest {
                    meta: None,
                    name: name.into(),
                    slo_ms,
                    rate,
                    memory_mb: 0,
                };
                match tokio::time::timeout(Duration::from_secs(2), c.deploy_model(req)).await {
                    Ok(Ok(r)) => return Ok(r.into_inner().index),
                    Ok(Err(s)) => last = format!("{a}: {}", s.message()),
                    Err(_) => last = format!("{a}: no answer in 2 s"),
                }
            }
        }
        if Instant::now() > deadline {
            bail!("deploying {name}: {last}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub(super) async fn pin(
    net: &Links,
    addrs: &[String],
    node: &str,
    model: &str,
    limit: Duration,
) -> anyhow::Result<u64> {
    let deadline = Instant::now() + limit;
    let mut last = String::from("no member reachable");
    loop {
        for a in addrs {
            if let Some(mut c) = admin(net, a).await {
                let req = api::SetPlacementRequest {
                    meta: None,
                    node: node.into(),
                    model: model.into(),
                    accelerator: String::new(),
                };
                match c.set_placement(req).await {
                    Ok(r) => return Ok(r.into_inner().epoch),
                    Err(s) => last = format!("{a}: {}", s.message()),
                }
            }
        }
        if Instant::now() > deadline {
            bail!("pinning {model} to {node}: {last}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(super) async fn agent_status(
    net: &Links,
    addr: &str,
) -> Option<edgeplane_proto::agent::StatusResponse> {
    net.infer(addr, ADMIN_TIMEOUT)
        .await?
        .status(StatusRequest {})
        .await
        .ok()
        .map(|r| r.into_inner())
}

// ---------------------------------------------------------------------------------------------
// Progress and events

/// One of the demo's Infer requests and its answer.
#[derive(Debug, Clone)]
pub(super) struct Sample {
    /// When it was sent, s since the load started.
    pub t_s: f64,
    pub latency_ms: f64,
    /// The agent answered (completed or dropped by its scheduler); false = the RPC failed.
    pub answered: bool,
    pub ok: bool,
    pub met: bool,
    pub energy_mj: f64,
    pub error: String,
}

/// An open-loop Infer load on one model of one agent.
pub(super) struct Probe {
    pub agent: String,
    pub model: String,
    /// Requests/s.
    pub rate: f64,
    /// The request's deadline (0: the agent's own for the model).
    pub deadline_ms: f64,
    /// The load's start (`Sample::t_s` counts from it).
    pub t0: Instant,
    /// Stop sending at this instant (or when `stop` says so).
    pub until: Option<Instant>,
}

impl Probe {
    /// Send `rate` requests/s until `until` or `stop`, each answer into `samples`.
    pub(super) fn start(
        self,
        net: &Links,
        stop: tokio::sync::watch::Receiver<bool>,
        samples: Arc<Mutex<Vec<Sample>>>,
    ) -> tokio::task::JoinHandle<()> {
        let ep = net.infer_endpoint(&self.agent, ADMIN_TIMEOUT);
        tokio::spawn(async move {
            let Ok(ep) = ep else { return };
            let ch = ep.connect_lazy();
            let period = Duration::from_secs_f64(1.0 / self.rate);
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut inflight = tokio::task::JoinSet::new();
            loop {
                tick.tick().await;
                if *stop.borrow() || self.until.is_some_and(|u| Instant::now() >= u) {
                    break;
                }
                let c = InferenceClient::new(ch.clone());
                let (m, s) = (self.model.clone(), samples.clone());
                let (deadline_ms, t0) = (self.deadline_ms, self.t0);
                inflight.spawn(async move {
                    let sample = infer_once(c, m, deadline_ms, t0).await;
                    s.lock().expect("samples").push(sample);
                });
                while inflight.try_join_next().is_some() {}
            }
            while inflight.join_next().await.is_some() {}
        })
    }
}

async fn infer_once(
    mut c: InferenceClient<Channel>,
    model: String,
    deadline_ms: f64,
    t0: Instant,
) -> Sample {
    let sent = Instant::now();
    let r = c
        .infer(InferRequest {
            model,
            deadline_ms,
            ..Default::default()
        })
        .await;
    let t_s = sent.duration_since(t0).as_secs_f64();
    match r {
        Ok(r) => {
            let r = r.into_inner();
            Sample {
                t_s,
                answered: true,
                latency_ms: r.latency_ms,
                ok: r.outcome == edgeplane_proto::agent::Outcome::Completed as i32,
                met: r.deadline_met,
                energy_mj: r.energy_mj,
                error: r.reason,
            }
        }
        Err(e) => Sample {
            t_s,
            answered: false,
            latency_ms: sent.elapsed().as_secs_f64() * 1000.0,
            ok: false,
            met: false,
            energy_mj: 0.0,
            error: format!("{:?}: {}", e.code(), e.message()),
        },
    }
}
