//! The agent's link to the coordinator cluster: register, then one bidirectional session
//! with the leader (reports up every interval, assignments down). Any failure (member
//! down, redirect, leader change, stream refused) ends the session; the agent then tries
//! the next member after a jittered exponential backoff from a seeded RNG, and keeps
//! serving its last assignment meanwhile. Reports carry totals since start, so nothing
//! done while cut off is lost: the first report after reconnecting carries it.
//!
//! A silent partition (no RST, no FIN: a cable pulled, a NAT entry dropped) is noticed
//! within `session_timeout`, not at the TCP timeout: HTTP/2 keepalive pings every third of
//! it, and an ack watchdog ends the session when a report sent that long ago is still
//! unacknowledged. Sends to the session never wait (a full send queue skips a report; the
//! next carries the totals), and shutdown ends every phase of a session at once.
//! The report interval is the configured one, or the lease renewal interval the coordinator
//! answered at registration when that is shorter (the lease is obeyed).

use crate::runtime::Shared;
use crate::store::AssignmentStore;
use edgeplane_proto::agent::agent_client::AgentClient;
use edgeplane_proto::agent::{
    agent_message, coordinator_message, AgentMessage, Assignment, Hello, RegisterRequest,
};
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::StreamExt;

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("{addr} refused the join token: {message}")]
    Refused { addr: String, message: String },
    #[error("{addr}: {status}")]
    Rpc { addr: String, status: tonic::Status },
    #[error("redirected to the leader at {0}")]
    Redirect(String),
    #[error("{addr} closed the session")]
    Closed { addr: String },
    #[error("{addr}: report {seq} unacknowledged after {waited:?}: the link is presumed dead")]
    AckTimeout {
        addr: String,
        seq: u64,
        waited: Duration,
    },
    #[error("shutting down")]
    Shutdown,
}

pub struct Link {
    pub shared: Arc<Shared>,
    pub store: Arc<AssignmentStore>,
    pub coordinators: Vec<String>,
    /// The shared bootstrap token, if any (empty for an agent with a certificate).
    pub join_token: edgeplane_tls::Secret,
    /// Mutual TLS to the coordinators with this node's certificate (or plaintext).
    pub tls: edgeplane_tls::ClientTls,
    pub agent_addr: String,
    pub report_interval: Duration,
    pub max_backoff: Duration,
    pub seed: u64,
    /// Ack watchdog and HTTP/2 keepalive timeout (pings every third of it).
    pub session_timeout: Duration,
}

/// The report interval to use: the configured one, shortened to the coordinator's lease
/// renewal interval when that is shorter (0 or nonsense from the coordinator is ignored).
pub fn effective_interval(configured: Duration, lease_renew_s: f64) -> Duration {
    if lease_renew_s.is_finite() && lease_renew_s > 0.0 {
        let lease = Duration::from_secs_f64(lease_renew_s).max(Duration::from_millis(10));
        configured.min(lease)
    } else {
        configured
    }
}

/// Apply an assignment pushed by the coordinator: newer epochs replace (and are persisted
/// before they are served), older ones are ignored — a deposed leader's late push must not
/// roll the node back.
pub fn apply_assignment(shared: &Shared, store: &AssignmentStore, a: Assignment) -> bool {
    let held = shared.epoch();
    let fresh = shared.assignment().is_none();
    if a.epoch < held || (a.epoch == held && !fresh) {
        if a.epoch < held {
            tracing::warn!(
                held,
                got = a.epoch,
                "ignoring an assignment older than the one held"
            );
        }
        return false;
    }
    if let Err(e) = store.save(&a) {
        tracing::error!(error = %e, "cannot persist the assignment; not applying it");
        return false;
    }
    tracing::info!(
        epoch = a.epoch,
        partitions = a.partitions.len(),
        "assignment applied"
    );
    shared.set_assignment(Some(a));
    true
}

/// At the first registration of this agent process: when the coordinator's epoch for the
/// node is newer than the persisted plan, that plan was replaced while the node was away (a
/// lost node's models were re-placed elsewhere), so it is not served any more, not even until
/// the session pushes the new one. (A running agent that only reconnects keeps serving: the
/// push follows at once.)
pub fn drop_stale_plan(shared: &Shared, epoch: u64) {
    shared.modify_assignment(|g| drop_stale(g, epoch));
}

fn drop_stale(g: &mut Option<Assignment>, epoch: u64) {
    if let Some(a) = g.as_mut() {
        if a.epoch < epoch && !a.partitions.is_empty() {
            tracing::warn!(
                held = a.epoch,
                coordinator = epoch,
                "the persisted assignment is stale: serving nothing until the new one arrives"
            );
            a.partitions.clear();
        }
    }
}

/// Adopt the epoch the coordinator holds for this node at registration. Why: if the node's
/// record was removed and created again (or the cluster restored from an older backup),
/// the coordinator's epoch is below the one held here, and every new assignment would be
/// ignored as "older than the one held". The plan served stays until the coordinator
/// pushes one; only its epoch label changes.
pub fn adopt_epoch(shared: &Shared, store: &AssignmentStore, epoch: u64) {
    shared.modify_assignment(|g| {
        let Some(a) = g.as_mut() else { return };
        if a.epoch > epoch {
            tracing::warn!(
                held = a.epoch,
                coordinator = epoch,
                "the coordinator's epoch for this node is lower: adopting it"
            );
            a.epoch = epoch;
            if let Err(e) = store.save(a) {
                tracing::error!(error = %e, "cannot persist the adopted epoch");
            }
        }
    });
}

impl Link {
    pub async fn run(self, mut shutdown: broadcast::Receiver<()>) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(
            self.seed
                ^ self
                    .shared
                    .name
                    .bytes()
                    .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b.into())),
        );
        let base = Duration::from_millis(100);
        let mut backoff = base;
        let mut next = 0usize;
        let mut redirect: Option<String> = None;
        let mut refused_logged = false;
        let mut seq = 0u64;
        loop {
            let addr = redirect.take().unwrap_or_else(|| {
                let a = self.coordinators[next % self.coordinators.len()].clone();
                next += 1;
                a
            });
            let started = Instant::now();
            // Shutdown ends any phase at once: connect, register, open, or a blocked send.
            let res = tokio::select! {
                r = self.session(&addr, &mut seq) => r,
                _ = shutdown.recv() => Err(LinkError::Shutdown),
            };
            *self.shared.connected.write().expect("connected lock") = None;
            match res {
                Err(LinkError::Shutdown) => return,
                Err(LinkError::Redirect(leader)) => {
                    tracing::info!(from = %addr, to = %leader, "following redirect to the leader");
                    if !leader.is_empty() && leader != addr {
                        redirect = Some(leader);
                        continue;
                    }
                }
                Err(e @ LinkError::Refused { .. }) => {
                    if !refused_logged {
                        // The reason says what to fix: the token, the certificate's name, or a
                        // certificate revoked by `nodes remove`. Retried with backoff.
                        tracing::error!(error = %e, "registration refused; retrying");
                        refused_logged = true;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "coordinator session ended"),
                Ok(()) => {}
            }
            // A session that lived a while resets the backoff.
            if started.elapsed() > Duration::from_secs(5) {
                backoff = base;
            }
            let jitter = rng.gen_range(0.5..1.0);
            let wait = backoff.mul_f64(jitter);
            backoff = (backoff * 2).min(self.max_backoff);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.recv() => return,
            }
        }
    }

    async fn session(&self, addr: &str, seq: &mut u64) -> Result<(), LinkError> {
        let endpoint = self
            .tls
            .endpoint(addr)
            .map_err(|e| LinkError::Connect {
                addr: addr.into(),
                reason: e.to_string(),
            })?
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_keep_alive_interval((self.session_timeout / 3).max(Duration::from_millis(100)))
            .keep_alive_timeout(self.session_timeout)
            .keep_alive_while_idle(true);
        let channel = endpoint.connect().await.map_err(|e| LinkError::Connect {
            addr: addr.into(),
            reason: e.to_string(),
        })?;
        let mut client = AgentClient::new(channel);
        let reg = client
            .register(RegisterRequest {
                name: self.shared.name.clone(),
                join_token: self.join_token.expose().to_string(),
                agent_addr: self.agent_addr.clone(),
                accelerators: self
                    .shared
                    .accelerators
                    .iter()
                    .map(|a| a.to_proto())
                    .collect(),
                assignment_epoch: self.shared.epoch(),
                csr: String::new(),
                joined_from_ip: String::new(),
            })
            .await
            .map_err(|status| match status.code() {
                tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => {
                    LinkError::Refused {
                        addr: addr.into(),
                        message: status.message().to_string(),
                    }
                }
                _ => LinkError::Rpc {
                    addr: addr.into(),
                    status,
                },
            })?
            .into_inner();
        let interval = effective_interval(self.report_interval, reg.lease_renew_s);
        if interval < self.report_interval {
            tracing::info!(configured = ?self.report_interval, lease_renew_s = reg.lease_renew_s,
                "the coordinator's lease renewal is shorter than the report interval: reporting every {interval:?}");
        }
        tracing::info!(%addr, leader = %reg.leader_addr, epoch = reg.assignment_epoch, ?interval, "registered");
        if *seq == 0 {
            drop_stale_plan(&self.shared, reg.assignment_epoch);
        }
        adopt_epoch(&self.shared, &self.store, reg.assignment_epoch);

        let (tx, rx) = mpsc::channel::<AgentMessage>(16);
        tx.try_send(AgentMessage {
            body: Some(agent_message::Body::Hello(Hello {
                name: self.shared.name.clone(),
                join_token: self.join_token.expose().to_string(),
                assignment_epoch: self.shared.epoch(),
            })),
        })
        .map_err(|_| LinkError::Closed { addr: addr.into() })?;
        let mut inbound = client
            .session(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .map_err(|status| LinkError::Rpc {
                addr: addr.into(),
                status,
            })?
            .into_inner();
        *self.shared.connected.write().expect("connected lock") = Some(addr.to_string());
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Reports sent and not yet acknowledged: (seq, sent at). The oldest one decides.
        let mut unacked: std::collections::VecDeque<(u64, Instant)> = Default::default();
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    if let Some(&(s, at)) = unacked.front() {
                        if at.elapsed() >= self.session_timeout {
                            return Err(LinkError::AckTimeout { addr: addr.into(), seq: s, waited: at.elapsed() });
                        }
                    }
                    *seq += 1;
                    let report = {
                        let epoch = self.shared.epoch();
                        let (r, counters) = self.shared.ledger.report(
                            *seq,
                            epoch,
                            self.shared.start.elapsed().as_secs_f64(),
                        );
                        // Persist before sending: the coordinator never sees totals (or an
                        // uptime) above what a restarted agent would continue from.
                        if let Err(e) = self.store.save_counters(&counters) {
                            tracing::warn!(error = %e, "cannot persist the counters");
                        }
                        r
                    };
                    match tx.try_send(AgentMessage { body: Some(agent_message::Body::Report(report)) }) {
                        Ok(()) => {
                            unacked.push_back((*seq, Instant::now()));
                            if unacked.len() > 64 {
                                unacked.pop_front();
                            }
                        }
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            // The transport is not draining: skip this report (totals carry
                            // over); the watchdog decides whether the link is dead.
                            tracing::debug!(seq = *seq, "session send queue full: report skipped");
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => {
                            return Err(LinkError::Closed { addr: addr.into() });
                        }
                    }
                }
                msg = inbound.next() => match msg {
                    None => return Err(LinkError::Closed { addr: addr.into() }),
                    Some(Err(status)) => return Err(LinkError::Rpc { addr: addr.into(), status }),
                    Some(Ok(m)) => match m.body {
                        Some(coordinator_message::Body::Assignment(a)) => {
                            apply_assignment(&self.shared, &self.store, a);
                        }
                        Some(coordinator_message::Body::Redirect(r)) => {
                            return Err(LinkError::Redirect(r.leader_addr));
                        }
                        Some(coordinator_message::Body::Ack(ack)) => {
                            // Acks come in order: this one covers every earlier report.
                            while unacked.front().is_some_and(|(s, _)| *s <= ack.seq) {
                                unacked.pop_front();
                            }
                            if !ack.accepted {
                                tracing::warn!(seq = ack.seq, reason = %ack.reason, "report rejected");
                            }
                        }
                        None => {}
                    },
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Shared;
    use edgeplane_proto::agent::Partition;

    fn shared() -> Shared {
        Shared::new("t", vec![], Default::default(), None)
    }

    fn assignment(epoch: u64, model: &str) -> Assignment {
        Assignment {
            epoch,
            partitions: vec![Partition {
                accelerator_id: "npu0".into(),
                share_pct: 100,
                models: vec![model.into()],
            }],
        }
    }

    #[test]
    fn newer_assignments_apply_and_persist_older_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let store = AssignmentStore::open(dir.path()).unwrap();
        let sh = shared();
        assert!(apply_assignment(&sh, &store, assignment(2, "a")));
        assert_eq!(sh.epoch(), 2);
        assert!(sh.serves("a") && !sh.serves("b"));
        // A deposed leader's late push with an older epoch must not roll the node back.
        assert!(!apply_assignment(&sh, &store, assignment(1, "b")));
        assert!(!apply_assignment(&sh, &store, assignment(2, "b")));
        assert!(sh.serves("a"));
        assert!(apply_assignment(&sh, &store, assignment(3, "b")));
        assert_eq!(
            store.load().unwrap().unwrap().epoch,
            3,
            "persisted before served"
        );
    }

    #[test]
    fn a_stale_plan_is_not_served_after_rejoining() {
        let dir = tempfile::tempdir().unwrap();
        let store = AssignmentStore::open(dir.path()).unwrap();
        let sh = shared();
        assert!(apply_assignment(&sh, &store, assignment(4, "a")));
        // the coordinator re-placed this node's models while it was away (epoch 9)
        drop_stale_plan(&sh, 9);
        adopt_epoch(&sh, &store, 9);
        assert_eq!(sh.served_models(), Some(Default::default()));
        // the new assignment still applies
        assert!(apply_assignment(&sh, &store, assignment(9, "b")));
        assert!(sh.serves("b") && !sh.serves("a"));
    }

    #[test]
    fn the_lease_renewal_interval_is_obeyed() {
        let one_s = Duration::from_secs(1);
        assert_eq!(effective_interval(one_s, 0.25), Duration::from_millis(250));
        assert_eq!(
            effective_interval(one_s, 5.0),
            one_s,
            "a longer lease keeps the interval"
        );
        assert_eq!(effective_interval(one_s, 0.0), one_s, "unknown lease");
        assert_eq!(effective_interval(one_s, f64::NAN), one_s);
        assert_eq!(
            effective_interval(one_s, 1e-9),
            Duration::from_millis(10),
            "floor"
        );
    }

    #[test]
    fn epoch_returned_at_registration_is_adopted() {
        let dir = tempfile::tempdir().unwrap();
        let store = AssignmentStore::open(dir.path()).unwrap();
        let sh = shared();
        assert!(apply_assignment(&sh, &store, assignment(7, "a")));
        // The node's record was removed and registered again: the coordinator holds 0 and
        // its next assignment carries a (log-index) epoch below 7 in an old cluster.
        adopt_epoch(&sh, &store, 0);
        assert_eq!(sh.epoch(), 0);
        assert!(sh.serves("a"), "the plan stays until a new one comes");
        assert_eq!(store.load().unwrap().unwrap().epoch, 0);
        assert!(apply_assignment(&sh, &store, assignment(3, "b")));
        assert!(sh.serves("b"));
        // A registration answer at or above the held epoch changes nothing.
        adopt_epoch(&sh, &store, 9);
        assert_eq!(sh.epoch(), 3);
    }
}
