//! [`Handle`]: the client API of the local replica and its retry policy.
//!
//! The Raft loop itself lives in [`crate::raft_loop`]; this module only talks to it through
//! the `Inbox` and reads what it publishes in `Shared`. Writes are forwarded to the
//! leader through a `LeaderClient`.
//!
//! Retry policy: every write carries a (client id, seq); writes without one get a fresh
//! id from this replica, so a retry of an unknown outcome is exactly-once (the state
//! machine answers a repeated pair from its session cache). A write is retried until its
//! deadline when it was certainly not applied (no leader, not the leader, a conf change
//! pending) and when its outcome is unknown (leadership lost, the link to the leader
//! broke); the final error says which of the two it was.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use edgeplane_proto::raft as pb;
use tokio::sync::{oneshot, watch};

pub use crate::error::Error;
use crate::inbox::{Inbox, LeaderClient, Request};
use crate::metrics::Metrics;
use crate::reads::splitmix64;
use crate::state::{self, State};

/// Who leads, as this replica currently believes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Leadership {
    /// 0 when no leader is known.
    pub leader_id: u64,
    pub term: u64,
    /// This replica is the leader.
    pub is_leader: bool,
}

/// Raft-level status for `cluster status`.
#[derive(Debug, Clone, Default)]
pub struct RaftStatus {
    pub id: u64,
    pub leader_id: u64,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub role: String,
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    pub snapshot_index: u64,
}

/// Timing knobs of the loop.
#[derive(Debug, Clone)]
pub struct LoopConfig {
    pub id: u64,
    pub tick: Duration,
    pub election_ticks: usize,
    pub heartbeat_ticks: usize,
    /// Take a snapshot and compact the log every this many applied entries.
    pub snapshot_entries: u64,
    /// Entries kept in the log below a snapshot, so a follower that is only a little behind
    /// catches up from the log instead of by a whole snapshot (etcd keeps 5,000).
    pub catch_up_entries: u64,
    /// How long a proposal or read may wait for the cluster.
    pub request_timeout: Duration,
}

/// Why a replica's process should end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// This replica was removed from the cluster (it applied its own removal, or a peer
    /// refused its messages because it did).
    Removed,
    /// Durable storage failed (a write or fsync): crash-only, the supervisor restarts the
    /// replica, which recovers from what is on disk.
    Fatal(String),
}

/// State the loop publishes for readers.
pub(crate) struct Shared {
    pub state: RwLock<Arc<State>>,
    /// Bumped each time a new state is published: lets watchers (agent sessions) wait for a
    /// change instead of polling.
    pub state_version: watch::Sender<u64>,
    pub status: Mutex<RaftStatus>,
    pub leadership: watch::Sender<Leadership>,
    pub exit: watch::Sender<Option<ExitReason>>,
    pub metrics: Arc<Metrics>,
}

impl Shared {
    pub(crate) fn new(metrics: Arc<Metrics>) -> Arc<Shared> {
        Arc::new(Shared {
            state: RwLock::new(Arc::new(State::default())),
            state_version: watch::channel(0).0,
            status: Mutex::new(Default::default()),
            leadership: watch::channel(Default::default()).0,
            exit: watch::channel(None).0,
            metrics,
        })
    }
}

/// Client ids for writes that came without one (agent registration, lease expiry, member
/// announcements, admin calls without meta): unique per replica process and cluster-wide
/// with overwhelming probability (64 random-looking bits from replica id, boot nonce and a
/// counter).
pub(crate) struct ClientIds {
    base: u64,
    next: AtomicU64,
}

impl ClientIds {
    pub(crate) fn new(replica_id: u64, nonce: u64) -> Self {
        ClientIds {
            base: splitmix64(nonce ^ replica_id.rotate_left(48)),
            next: AtomicU64::new(1),
        }
    }

    pub(crate) fn next(&self) -> u64 {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        // Never 0 (0 means "no id").
        splitmix64(self.base.wrapping_add(n)).max(1)
    }
}

/// Cheap-to-clone handle to the local replica: propose, read, watch leadership.
#[derive(Clone)]
pub struct Handle {
    pub(crate) inner: Arc<HandleInner>,
}

pub(crate) struct HandleInner {
    pub id: u64,
    pub inbox: Inbox,
    pub shared: Arc<Shared>,
    pub request_timeout: Duration,
    pub join_token: Option<edgeplane_tls::Secret>,
    pub client_addr: String,
    /// The cluster CA with its key (`--tls-ca-key`): this member signs joining agents'
    /// certificates (reloaded when its files change). `None` on members without the key.
    pub ca: Option<Arc<edgeplane_tls::CaSigner>>,
    /// Client TLS of this member (its member certificate), for calls to other members.
    pub client_tls: edgeplane_tls::ClientTls,
    pub forward: Box<dyn LeaderClient>,
    pub ids: ClientIds,
}

impl Handle {
    /// This replica's Raft id.
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// The shared bootstrap token agents may present to register (`--join-token`), if
    /// configured. Never log it.
    pub fn join_token(&self) -> Option<&str> {
        self.inner.join_token.as_ref().map(|s| s.expose())
    }

    /// The CA this member signs joining agents' certificates with (`--tls-ca-key`).
    pub fn signing_ca(&self) -> Option<Arc<edgeplane_tls::Ca>> {
        self.inner.ca.as_ref().map(|s| s.current())
    }

    /// This member's client TLS (member certificate, or plaintext with `--insecure`).
    pub fn client_tls(&self) -> &edgeplane_tls::ClientTls {
        &self.inner.client_tls
    }

    /// This replica's client (gRPC) address.
    pub fn client_addr(&self) -> &str {
        &self.inner.client_addr
    }

    /// How long a request may wait for the cluster.
    pub fn request_timeout(&self) -> Duration {
        self.inner.request_timeout
    }

    /// Watch leadership changes (leader id, term, whether this replica leads).
    pub fn leadership(&self) -> watch::Receiver<Leadership> {
        self.inner.shared.leadership.subscribe()
    }

    /// Fires when the replica must end (removed from the cluster, or storage failed).
    pub fn exit_reason(&self) -> watch::Receiver<Option<ExitReason>> {
        self.inner.shared.exit.subscribe()
    }

    /// Members (id → client/peer address) from the applied state.
    pub fn members(&self) -> Vec<state::Member> {
        self.stale_state().members.values().cloned().collect()
    }

    /// Client address of the current leader, if known (for redirecting agents).
    pub fn leader_client_addr(&self) -> Option<String> {
        let l = *self.inner.shared.leadership.borrow();
        if l.leader_id == 0 {
            return None;
        }
        self.stale_state()
            .members
            .get(&l.leader_id)
            .map(|m| m.client_addr.clone())
            .filter(|a| !a.is_empty())
    }

    /// Like [`Handle::leader_client_addr`], but waits (up to `timeout`) while a leader is
    /// being elected or has not announced its client address yet (right after start).
    pub async fn wait_leader_client_addr(&self, timeout: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(a) = self.leader_client_addr() {
                return Some(a);
            }
            if self.inner.shared.leadership.borrow().is_leader
                || tokio::time::Instant::now() >= deadline
            {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Raft status (term, indexes, role, configuration).
    pub fn raft_status(&self) -> RaftStatus {
        self.inner
            .shared
            .status
            .lock()
            .expect("status lock")
            .clone()
    }

    /// Metrics registry of this replica.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.inner.shared.metrics.clone()
    }

    /// The state as applied locally, without any coordination (may be stale).
    /// Changes each time the local replica publishes a new state (applied entries or an
    /// installed snapshot); read the state itself with [`Handle::stale_state`].
    pub fn state_changes(&self) -> watch::Receiver<u64> {
        self.inner.shared.state_version.subscribe()
    }

    pub fn stale_state(&self) -> Arc<State> {
        self.inner.shared.state.read().expect("state lock").clone()
    }

    /// Read the state. `linearizable`: confirm leadership by ReadIndex and wait until the
    /// local replica applied up to the read index (works on followers too). Otherwise the
    /// local state is returned as is.
    pub async fn read(&self, linearizable: bool) -> Result<Arc<State>, Error> {
        if linearizable {
            let (tx, rx) = oneshot::channel();
            self.send(Request::Read { tx })?;
            let t = self.inner.request_timeout;
            match tokio::time::timeout(t, rx).await {
                Ok(Ok(r)) => r?,
                Ok(Err(_)) => return Err(Error::Shutdown),
                Err(_) => {
                    let l = *self.inner.shared.leadership.borrow();
                    return Err(if l.leader_id == 0 {
                        Error::NoLeader(t)
                    } else {
                        Error::Timeout(t)
                    });
                }
            }
        }
        Ok(self.stale_state())
    }

    /// Propose a command and wait until it is applied; followers forward it to the leader.
    /// A non-OK apply result comes back as `Error::Command`. A command without a client
    /// id gets one, so retries (here and by the forwarding path) are exactly-once.
    pub async fn propose(&self, mut cmd: pb::Command) -> Result<pb::ApplyResult, Error> {
        state::validate(&cmd)?;
        if cmd.client_id == 0 {
            cmd.client_id = self.inner.ids.next();
            cmd.seq = 1;
        }
        let timeout = self.inner.request_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut leadership = self.leadership();
        let mut unknown: Option<String> = None;
        loop {
            let l = *leadership.borrow_and_update();
            let attempt = if l.is_leader {
                self.propose_local(cmd.clone(), deadline).await
            } else if l.leader_id != 0 {
                match self.leader_client_addr() {
                    Some(addr) => {
                        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                        self.inner.forward.forward(&addr, &cmd, left).await
                    }
                    None => Err(Error::NotLeader {
                        leader_id: l.leader_id,
                    }),
                }
            } else {
                Err(Error::NotLeader { leader_id: 0 })
            };
            let last = match attempt {
                Err(
                    e @ (Error::NotLeader { .. } | Error::NotApplied(_) | Error::OutcomeUnknown(_)),
                ) => e,
                other => return other,
            };
            if let Error::OutcomeUnknown(m) = &last {
                unknown = Some(m.clone());
            }
            // Wait for a leadership change (or a short pause) and retry under the same
            // (client id, seq).
            let pause = tokio::time::sleep(Duration::from_millis(50));
            tokio::select! {
                _ = leadership.changed() => {}
                _ = pause => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(match unknown {
                    Some(m) => Error::OutcomeUnknown(format!("{m}; no answer within {timeout:?}")),
                    None if leadership.borrow().leader_id == 0 => Error::NoLeader(timeout),
                    None => Error::NotApplied(format!(
                        "not committed within {timeout:?} (last attempt: {last})"
                    )),
                });
            }
        }
    }

    /// Propose on this replica only (the leader side of forwarding).
    pub(crate) async fn propose_local(
        &self,
        cmd: pb::Command,
        deadline: tokio::time::Instant,
    ) -> Result<pb::ApplyResult, Error> {
        let (tx, rx) = oneshot::channel();
        self.send(Request::Propose { cmd, tx })?;
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(Error::OutcomeUnknown(
                "the replica stopped while the write was in flight".into(),
            )),
            Err(_) => Err(Error::OutcomeUnknown(format!(
                "not applied within {:?}",
                self.inner.request_timeout
            ))),
        }
    }

    /// Ask the leader to hand leadership to `to` (this replica must be the leader).
    pub async fn transfer_leader(&self, to: u64) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        self.send(Request::TransferLeader { to, tx })?;
        match tokio::time::timeout(self.inner.request_timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(Error::Shutdown),
            Err(_) => Err(Error::Timeout(self.inner.request_timeout)),
        }
    }

    pub(crate) fn send(&self, r: Request) -> Result<(), Error> {
        self.inner.inbox.send(r)
    }

    /// Ask the loop to stop (used on shutdown).
    pub(crate) fn stop(&self) {
        let _ = self.inner.inbox.send(Request::Shutdown);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_client_ids_are_distinct_and_never_zero() {
        let mut seen = std::collections::HashSet::new();
        for (replica, nonce) in [(1u64, 10u64), (2, 10), (1, 11)] {
            let ids = ClientIds::new(replica, nonce);
            for _ in 0..1000 {
                let id = ids.next();
                assert_ne!(id, 0);
                assert!(seen.insert(id), "client id {id} issued twice");
            }
        }
    }
}
