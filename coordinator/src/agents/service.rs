//! The `Agent` gRPC service: `Register` (shared token, node certificate, or a per-node join
//! token with a CSR) and `Session` (one stream per agent: assignments pushed down, reports
//! up). A follower answers a session with a `Redirect` to the leader and closes it.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use edgeplane_proto::agent as api;
use edgeplane_proto::agent::agent_server::Agent;
use edgeplane_proto::raft as pb;
use edgeplane_proto::raft::command::Kind;
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::checks::{check_profiles, check_report, check_report_epoch};
use super::hub::AgentHub;
use crate::node::Handle;
use crate::state::NodeStatus;

/// The `Agent` gRPC service.
pub struct AgentService {
    pub(crate) handle: Handle,
    pub(crate) hub: Arc<AgentHub>,
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
        let stream = |rx| -> Response<SessionStream> {
            Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
        };
        if !self.handle.leadership().borrow().is_leader {
            let _ = tx.send(Ok(redirect(&self.handle))).await;
            return Ok(stream(rx));
        }
        let hello = self.open_session(caller, cert, &mut inbound).await?;
        let task = Session {
            handle: self.handle.clone(),
            hub: self.hub.clone(),
            name: hello.name,
            sent_epoch: hello.assignment_epoch,
            sent_any: false,
            cert_hex: cert.map(|h| crate::state::hex(&h)).unwrap_or_default(),
            tx,
        };
        tokio::spawn(task.run(inbound));
        Ok(stream(rx))
    }
}

impl AgentService {
    /// The session's first message, a `Hello`, checked (token, name, certificate, node
    /// registered); the node's lease is renewed.
    async fn open_session(
        &self,
        caller: Option<edgeplane_tls::Caller>,
        cert: Option<[u8; 32]>,
        inbound: &mut Streaming<api::AgentMessage>,
    ) -> Result<api::Hello, Status> {
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
        Ok(hello)
    }
}

/// One open agent session on the leader.
struct Session {
    handle: Handle,
    hub: Arc<AgentHub>,
    name: String,
    /// The epoch of the last assignment the agent holds (told or sent).
    sent_epoch: u64,
    sent_any: bool,
    /// The certificate the session was opened with (hex; empty without TLS).
    cert_hex: String,
    tx: mpsc::Sender<Result<api::CoordinatorMessage, Status>>,
}

/// What ends a session's loop.
struct Closed;

impl Session {
    /// Until the agent leaves, this member stops leading, or the node is removed: push
    /// assignments as their epoch changes, acknowledge reports.
    async fn run(mut self, mut inbound: Streaming<api::AgentMessage>) {
        let mut leadership = self.handle.leadership();
        let current = self
            .handle
            .stale_state()
            .nodes
            .get(&self.name)
            .map_or(0, |n| n.assignment_epoch);
        let mut epoch_rx = self.hub.watch_epoch(&self.name, current);
        let mut state_rx = self.handle.state_changes();
        loop {
            if self.push_assignment().await.is_err() {
                break;
            }
            let step = tokio::select! {
                r = epoch_rx.changed() => r.map_err(|_| Closed),
                r = state_rx.changed() => match r {
                    Err(_) => Err(Closed),
                    Ok(()) => self.check_revoked().await,
                },
                r = leadership.changed() => {
                    if r.is_err() || !leadership.borrow_and_update().is_leader {
                        let _ = self.tx.send(Ok(redirect(&self.handle))).await;
                        Err(Closed)
                    } else {
                        Ok(())
                    }
                }
                msg = inbound.next() => match msg {
                    None | Some(Err(_)) => Err(Closed),
                    Some(Ok(api::AgentMessage { body: Some(api::agent_message::Body::Report(r)) })) => {
                        self.acknowledge(r).await
                    }
                    Some(Ok(_)) => Ok(()),
                },
            };
            if step.is_err() {
                break;
            }
        }
        drop(epoch_rx);
        self.hub.unwatch_epoch(&self.name);
        tracing::info!(node = %self.name, "agent session closed");
    }

    /// Push the node's assignment when it is newer than what the agent holds (and once at
    /// session start, so an agent that lost its file is told).
    async fn push_assignment(&mut self) -> Result<(), Closed> {
        let st = self.handle.stale_state();
        let Some(node) = st.nodes.get(&self.name) else {
            return Ok(());
        };
        let due = node.assignment_epoch > self.sent_epoch
            || (!self.sent_any
                && node.assignment_epoch >= self.sent_epoch
                && node.assignment_epoch > 0);
        if !due {
            return Ok(());
        }
        let msg = api::CoordinatorMessage {
            body: Some(api::coordinator_message::Body::Assignment(assignment_of(
                node,
            ))),
        };
        self.tx.send(Ok(msg)).await.map_err(|_| Closed)?;
        self.sent_epoch = node.assignment_epoch;
        self.sent_any = true;
        Ok(())
    }

    /// Close the session of a node removed (or moved to another certificate).
    async fn check_revoked(&self) -> Result<(), Closed> {
        let Some(why) = session_revoked(&self.handle.stale_state(), &self.name, &self.cert_hex)
        else {
            return Ok(());
        };
        tracing::warn!(node = %self.name, reason = why, "closing the session of a removed or revoked node");
        let _ = self
            .tx
            .send(Err(Status::permission_denied(format!(
                "node {:?}: {why}; the session is closed",
                self.name
            ))))
            .await;
        Err(Closed)
    }

    /// Record an accepted report (a refused one still renews the lease) and acknowledge it.
    async fn acknowledge(&self, r: api::Report) -> Result<(), Closed> {
        let current = self
            .handle
            .stale_state()
            .nodes
            .get(&self.name)
            .map_or(0, |n| n.assignment_epoch);
        let verdict =
            check_report_epoch(r.assignment_epoch, current).and_then(|()| check_report(&r));
        let ack = match verdict {
            Ok(()) => {
                self.hub.record(&self.name, &r);
                api::ReportAck {
                    seq: r.seq,
                    accepted: true,
                    reason: String::new(),
                }
            }
            Err(reason) => {
                // Still alive: a rejected report renews the lease but changes no figure.
                self.hub.renew(&self.name);
                tracing::debug!(node = %self.name, %reason, "report rejected");
                api::ReportAck {
                    seq: r.seq,
                    accepted: false,
                    reason,
                }
            }
        };
        let msg = api::CoordinatorMessage {
            body: Some(api::coordinator_message::Body::Ack(ack)),
        };
        self.tx.send(Ok(msg)).await.map_err(|_| Closed)
    }
}
