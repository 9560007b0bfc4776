//! The Raft loop and the [`Handle`] the rest of the process uses to talk to it.
//!
//! One dedicated OS thread per replica owns the `RawNode`, the storage and the state
//! machine. Why a thread and not a tokio task: every Ready does blocking sled writes and an
//! fsync; on a thread they never stall the async runtime that serves gRPC. The thread
//! receives [`Request`]s over a channel, ticks every `tick`, and handles each Ready in the
//! order raft-rs requires:
//! 1. send the leader's messages (they may go out before the local append),
//! 2. install a received snapshot (durable) and restore the state machine from it,
//! 3. apply committed entries,
//! 4. append entries + hard state in one batch, flush, fsync,
//! 5. only then send the persisted messages (votes, append responses),
//! 6. advance, then send/apply what the light ready holds.
//!
//! Proposals complete when their entry is applied: the loop remembers (index, term) of
//! every local proposal and answers it when that index is applied (success if the term
//! matches, "dropped" if another leader's entry took the slot).

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use edgeplane_proto::raft::{self as pb, command::Kind};
use prost::Message as _;
use protobuf::Message as _;
use raft::eraftpb::{
    ConfChangeSingle, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType, Message,
};
use raft::{RawNode, StateRole};
use tokio::sync::{oneshot, watch};

use crate::metrics::Metrics;
use crate::state::{self, CommandError, State};
use crate::storage::{RaftStore, StorageError};
use crate::transport::Transport;

/// Errors of the replication layer, as seen by callers of [`Handle`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error("this replica is not the leader (leader: {leader_id})")]
    NotLeader { leader_id: u64 },
    #[error("no leader elected within {0:?}")]
    NoLeader(Duration),
    #[error("timed out after {0:?} waiting for the cluster")]
    Timeout(Duration),
    #[error("proposal dropped: {0}")]
    Dropped(String),
    #[error("the leader answered: {0}")]
    Remote(tonic::Status),
    #[error("the replica is shutting down")]
    Shutdown,
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error("raft: {0}")]
    Raft(String),
}

impl Error {
    /// The gRPC status an API should answer with.
    pub fn to_status(&self) -> tonic::Status {
        use tonic::Code;
        match self {
            Error::Command(CommandError::InvalidArgument { .. }) => {
                tonic::Status::invalid_argument(self.to_string())
            }
            Error::Command(CommandError::NotFound(_)) => tonic::Status::not_found(self.to_string()),
            Error::Command(CommandError::FailedPrecondition(_)) => {
                tonic::Status::failed_precondition(self.to_string())
            }
            Error::Remote(s) => tonic::Status::new(s.code(), s.message().to_string()),
            Error::NotLeader { .. } | Error::NoLeader(_) | Error::Dropped(_) | Error::Shutdown => {
                tonic::Status::unavailable(self.to_string())
            }
            Error::Timeout(_) => tonic::Status::new(Code::DeadlineExceeded, self.to_string()),
            Error::Storage(_) | Error::Raft(_) => tonic::Status::internal(self.to_string()),
        }
    }
}

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
    /// How long a proposal or read may wait for the cluster.
    pub request_timeout: Duration,
}

type ProposeTx = oneshot::Sender<Result<pb::ApplyResult, Error>>;

pub(crate) enum Request {
    Propose {
        cmd: pb::Command,
        tx: ProposeTx,
    },
    Read {
        tx: oneshot::Sender<Result<(), Error>>,
    },
    Raft(Vec<Message>),
    TransferLeader {
        to: u64,
        tx: oneshot::Sender<Result<(), Error>>,
    },
    Unreachable(u64),
    SnapshotDone {
        to: u64,
        ok: bool,
    },
    Shutdown,
}

/// State the loop publishes for readers.
pub(crate) struct Shared {
    pub state: RwLock<Arc<State>>,
    pub status: Mutex<RaftStatus>,
    pub leadership: watch::Sender<Leadership>,
    pub metrics: Arc<Metrics>,
}

/// Cheap-to-clone handle to the local replica: propose, read, watch leadership.
#[derive(Clone)]
pub struct Handle {
    pub(crate) inner: Arc<HandleInner>,
}

pub(crate) struct HandleInner {
    pub id: u64,
    pub tx: std_mpsc::Sender<Request>,
    pub shared: Arc<Shared>,
    pub request_timeout: Duration,
    pub join_token: Option<String>,
    pub client_addr: String,
    pub forward: crate::forward::Forwarder,
}

impl Handle {
    /// This replica's Raft id.
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// The token agents must present to register (`--join-token`), if configured.
    pub fn join_token(&self) -> Option<&str> {
        self.inner.join_token.as_deref()
    }

    /// This replica's client (gRPC) address.
    pub fn client_addr(&self) -> &str {
        &self.inner.client_addr
    }

    /// Watch leadership changes (leader id, term, whether this replica leads).
    pub fn leadership(&self) -> watch::Receiver<Leadership> {
        self.inner.shared.leadership.subscribe()
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
                Ok(Err(_)) => return Err(Error::Timeout(t)),
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
    /// A non-OK apply result comes back as `Error::Command`.
    pub async fn propose(&self, cmd: pb::Command) -> Result<pb::ApplyResult, Error> {
        state::validate(&cmd)?;
        let timeout = self.inner.request_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut leadership = self.leadership();
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
            match attempt {
                Err(Error::NotLeader { .. }) | Err(Error::Dropped(_)) => {
                    // Wait for a leadership change (or a short pause) and retry: the
                    // (client id, seq) pair makes a retry safe.
                    let pause = tokio::time::sleep(Duration::from_millis(50));
                    tokio::select! {
                        _ = leadership.changed() => {}
                        _ = pause => {}
                        _ = tokio::time::sleep_until(deadline) => {}
                    }
                    if tokio::time::Instant::now() >= deadline {
                        let l = *leadership.borrow();
                        return Err(if l.leader_id == 0 {
                            Error::NoLeader(timeout)
                        } else {
                            Error::Timeout(timeout)
                        });
                    }
                }
                Err(Error::Remote(s)) if s.code() == tonic::Code::Unavailable => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    if tokio::time::Instant::now() >= deadline {
                        return Err(Error::Remote(s));
                    }
                }
                other => return other,
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
            Ok(Err(_)) => Err(Error::Shutdown),
            Err(_) => Err(Error::Timeout(self.inner.request_timeout)),
        }
    }

    /// Ask the leader to hand leadership to `to` (forwarded if this replica is a follower).
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
        self.inner.tx.send(r).map_err(|_| Error::Shutdown)
    }

    /// Ask the loop to stop (used on shutdown).
    pub(crate) fn stop(&self) {
        let _ = self.inner.tx.send(Request::Shutdown);
    }
}

struct Pending {
    term: u64,
    tx: ProposeTx,
    start: Instant,
}

/// The loop's own data.
pub(crate) struct RaftLoop {
    cfg: LoopConfig,
    node: RawNode<RaftStore>,
    state: State,
    shared: Arc<Shared>,
    transport: Arc<Transport>,
    rx: std_mpsc::Receiver<Request>,
    pending: BTreeMap<u64, Pending>,
    next_read: u64,
    reads_waiting_index: HashMap<u64, (oneshot::Sender<Result<(), Error>>, Instant)>,
    reads_waiting_apply: Vec<(u64, oneshot::Sender<Result<(), Error>>)>,
    last_leadership: Leadership,
    applied: u64,
}

impl RaftLoop {
    pub(crate) fn new(
        cfg: LoopConfig,
        store: RaftStore,
        shared: Arc<Shared>,
        transport: Arc<Transport>,
        rx: std_mpsc::Receiver<Request>,
        logger: &slog::Logger,
    ) -> Result<Self, Error> {
        let snap = store.latest_snapshot();
        let state = State::decode(snap.get_data())
            .map_err(|e| Error::Raft(format!("snapshot data does not decode: {e}")))?;
        let applied = snap.get_metadata().index;
        let raft_cfg = raft::Config {
            id: cfg.id,
            election_tick: cfg.election_ticks,
            heartbeat_tick: cfg.heartbeat_ticks,
            applied,
            check_quorum: true,
            pre_vote: true,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            ..Default::default()
        };
        raft_cfg
            .validate()
            .map_err(|e| Error::Raft(e.to_string()))?;
        let node =
            RawNode::new(&raft_cfg, store, logger).map_err(|e| Error::Raft(e.to_string()))?;
        let mut me = RaftLoop {
            cfg,
            node,
            state,
            shared,
            transport,
            rx,
            pending: BTreeMap::new(),
            next_read: 1,
            reads_waiting_index: HashMap::new(),
            reads_waiting_apply: Vec::new(),
            last_leadership: Leadership::default(),
            applied,
        };
        me.state.applied_index = applied;
        me.publish_state();
        me.transport.set_members(&me.state);
        me.publish_status();
        Ok(me)
    }

    /// Run until shutdown.
    pub(crate) fn run(mut self) {
        let mut next_tick = Instant::now() + self.cfg.tick;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(wait) {
                Ok(Request::Shutdown) => break,
                Ok(r) => self.handle(r),
                Err(std_mpsc::RecvTimeoutError::Timeout) => {}
                Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
            }
            let mut stop = false;
            for _ in 0..4096 {
                match self.rx.try_recv() {
                    Ok(Request::Shutdown) => {
                        stop = true;
                        break;
                    }
                    Ok(r) => self.handle(r),
                    Err(_) => break,
                }
            }
            if stop {
                break;
            }
            if Instant::now() >= next_tick {
                self.node.tick();
                next_tick += self.cfg.tick;
                if next_tick < Instant::now() {
                    next_tick = Instant::now() + self.cfg.tick;
                }
                self.expire_reads();
            }
            if let Err(e) = self.on_ready() {
                tracing::error!(error = %e, "raft loop failed; stopping this replica's loop");
                break;
            }
        }
        for (_, p) in std::mem::take(&mut self.pending) {
            let _ = p.tx.send(Err(Error::Shutdown));
        }
        tracing::info!(id = self.cfg.id, "raft loop stopped");
    }

    fn handle(&mut self, r: Request) {
        match r {
            Request::Raft(msgs) => {
                for m in msgs {
                    if let Err(e) = self.node.step(m) {
                        tracing::debug!(error = %e, "step failed");
                    }
                }
            }
            Request::Propose { cmd, tx } => self.propose(cmd, tx),
            Request::Read { tx } => {
                let id = self.next_read;
                self.next_read += 1;
                self.node.read_index(id.to_be_bytes().to_vec());
                self.reads_waiting_index.insert(id, (tx, Instant::now()));
            }
            Request::TransferLeader { to, tx } => {
                let r = if self.node.raft.state != StateRole::Leader {
                    Err(Error::NotLeader {
                        leader_id: self.node.raft.leader_id,
                    })
                } else if !self.state.members.contains_key(&to)
                    && !self.node.store().conf_state().voters.contains(&to)
                {
                    Err(Error::Command(CommandError::InvalidArgument {
                        field: "to".into(),
                        reason: format!("unknown member {to}"),
                    }))
                } else {
                    self.node.transfer_leader(to);
                    Ok(())
                };
                let _ = tx.send(r);
            }
            Request::Unreachable(id) => self.node.report_unreachable(id),
            Request::SnapshotDone { to, ok } => {
                let s = if ok {
                    raft::SnapshotStatus::Finish
                } else {
                    raft::SnapshotStatus::Failure
                };
                self.node.report_snapshot(to, s);
            }
            Request::Shutdown => {}
        }
    }

    fn propose(&mut self, cmd: pb::Command, tx: ProposeTx) {
        if self.node.raft.state != StateRole::Leader {
            let _ = tx.send(Err(Error::NotLeader {
                leader_id: self.node.raft.leader_id,
            }));
            return;
        }
        if let Err(e) = self.precheck(&cmd) {
            // Retries of an applied (client, seq) must get the cached answer, not an error
            // from a check against the state the write already changed.
            if !matches!(self.state.sessions.get(&cmd.client_id), Some(s) if s.seq == cmd.seq && cmd.client_id != 0)
            {
                let _ = tx.send(Err(Error::Command(e)));
                return;
            }
        }
        let data = cmd.encode_to_vec();
        let res = match &cmd.kind {
            Some(Kind::AddMember(a)) => {
                let m = a.member.as_ref().expect("validated");
                let ty = if m.learner {
                    ConfChangeType::AddLearnerNode
                } else {
                    ConfChangeType::AddNode
                };
                self.node.propose_conf_change(data, conf_change(m.id, ty))
            }
            Some(Kind::RemoveMember(r)) => self
                .node
                .propose_conf_change(data, conf_change(r.id, ConfChangeType::RemoveNode)),
            _ => self.node.propose(vec![], data),
        };
        match res {
            Ok(()) => {
                let index = self.node.raft.raft_log.last_index();
                let term = self.node.raft.term;
                self.pending.insert(
                    index,
                    Pending {
                        term,
                        tx,
                        start: Instant::now(),
                    },
                );
            }
            Err(e) => {
                let _ = tx.send(Err(Error::Dropped(e.to_string())));
            }
        }
    }

    fn precheck(&self, cmd: &pb::Command) -> Result<(), CommandError> {
        let scratch = State {
            nodes: self.state.nodes.clone(),
            models: self.state.models.clone(),
            pins: self.state.pins.clone(),
            members: self.state.members.clone(),
            sessions: Default::default(),
            applied_index: 0,
        };
        scratch.precheck(cmd)
    }

    fn expire_reads(&mut self) {
        let t = self.cfg.request_timeout;
        self.reads_waiting_index
            .retain(|_, (_, at)| at.elapsed() < t);
        self.reads_waiting_apply.retain(|(_, tx)| !tx.is_closed());
    }

    fn on_ready(&mut self) -> Result<(), Error> {
        if !self.node.has_ready() {
            self.publish_leadership();
            return self.maybe_snapshot();
        }
        let mut rd = self.node.ready();
        if !rd.messages().is_empty() {
            self.transport.send(rd.take_messages());
        }
        if !rd.snapshot().is_empty() {
            let snap = rd.snapshot().clone();
            let hs = rd
                .hs()
                .cloned()
                .unwrap_or_else(|| self.node.store().hard_state().clone());
            let st = State::decode(snap.get_data())
                .map_err(|e| Error::Raft(format!("received snapshot does not decode: {e}")))?;
            self.node.mut_store().apply_snapshot(snap.clone(), hs)?;
            self.state = st;
            self.applied = snap.get_metadata().index;
            self.state.applied_index = self.applied;
            let idx = self.applied;
            let stale: Vec<u64> = self.pending.range(..=idx).map(|(k, _)| *k).collect();
            for k in stale {
                if let Some(p) = self.pending.remove(&k) {
                    let _ = p.tx.send(Err(Error::Dropped(
                        "replaced by a snapshot; outcome unknown, retry".into(),
                    )));
                }
            }
            self.transport.set_members(&self.state);
            tracing::info!(index = idx, "installed snapshot from the leader");
        }
        for rs in rd.take_read_states() {
            let id = u64::from_be_bytes(rs.request_ctx.as_slice().try_into().unwrap_or([0; 8]));
            if let Some((tx, _)) = self.reads_waiting_index.remove(&id) {
                self.reads_waiting_apply.push((rs.index, tx));
            }
        }
        let committed = rd.take_committed_entries();
        self.apply_entries(committed)?;
        let hs = rd.hs().cloned();
        if !rd.entries().is_empty() || hs.is_some() {
            self.node.mut_store().append(rd.entries(), hs.as_ref())?;
            self.shared
                .metrics
                .observe_fsync(self.node.store().last_fsync());
        }
        if !rd.persisted_messages().is_empty() {
            self.transport.send(rd.take_persisted_messages());
        }
        let mut light = self.node.advance(rd);
        if let Some(c) = light.commit_index() {
            self.node.mut_store().set_commit(c);
        }
        self.transport.send(light.take_messages());
        self.apply_entries(light.take_committed_entries())?;
        self.node.advance_apply();
        self.resolve_reads();
        self.maybe_snapshot()?;
        self.publish_leadership();
        self.publish_status();
        Ok(())
    }

    fn apply_entries(&mut self, entries: Vec<Entry>) -> Result<(), Error> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut touched = false;
        for e in entries {
            let index = e.index;
            let result = match e.get_entry_type() {
                EntryType::EntryNormal => {
                    if e.data.is_empty() {
                        None
                    } else {
                        Some(self.apply_normal(&e))
                    }
                }
                EntryType::EntryConfChangeV2 => Some(self.apply_conf_change_v2(&e)?),
                EntryType::EntryConfChange => {
                    tracing::warn!(index, "ignoring a v1 conf change entry");
                    None
                }
            };
            touched = true;
            self.applied = index;
            self.state.applied_index = index;
            if let Some(p) = self.pending.remove(&index) {
                let reply = if p.term != e.term {
                    Err(Error::Dropped(
                        "another leader's entry took this slot; retry".into(),
                    ))
                } else {
                    match result {
                        Some(r) if r.code != 0 => {
                            Err(Error::Command(CommandError::from_result(&r)))
                        }
                        Some(r) => Ok(r),
                        None => Ok(pb::ApplyResult {
                            index,
                            ..Default::default()
                        }),
                    }
                };
                self.shared.metrics.observe_proposal(p.start.elapsed());
                let _ = p.tx.send(reply);
            }
            // Anything pending below this index was overwritten and never applied.
            while let Some((&k, _)) = self.pending.first_key_value() {
                if k >= index {
                    break;
                }
                let p = self.pending.remove(&k).expect("present");
                let _ =
                    p.tx.send(Err(Error::Dropped("entry was overwritten; retry".into())));
            }
        }
        if touched {
            self.publish_state();
            let _ = self.node.mut_store().set_applied(self.applied);
            self.resolve_reads();
        }
        Ok(())
    }

    /// Answer reads whose read index is applied.
    fn resolve_reads(&mut self) {
        if self.reads_waiting_apply.is_empty() {
            return;
        }
        let applied = self.applied;
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.reads_waiting_apply)
            .into_iter()
            .partition(|(i, _)| *i <= applied);
        self.reads_waiting_apply = waiting;
        for (_, tx) in ready {
            let _ = tx.send(Ok(()));
        }
    }

    fn apply_normal(&mut self, e: &Entry) -> pb::ApplyResult {
        match pb::Command::decode(e.get_data()) {
            Ok(cmd) => {
                let is_member = matches!(cmd.kind, Some(Kind::UpdateMember(_)));
                let a = self.state.apply(&cmd, e.index);
                if is_member && a.result.code == 0 {
                    self.transport.set_members(&self.state);
                }
                a.result
            }
            Err(err) => {
                tracing::error!(index = e.index, error = %err, "undecodable command entry");
                pb::ApplyResult {
                    code: 3,
                    message: format!("invalid argument `command`: does not decode: {err}"),
                    index: e.index,
                    epoch: 0,
                }
            }
        }
    }

    fn apply_conf_change_v2(&mut self, e: &Entry) -> Result<pb::ApplyResult, Error> {
        let cc = ConfChangeV2::parse_from_bytes(e.get_data()).map_err(|err| {
            Error::Raft(format!("conf change at {} does not decode: {err}", e.index))
        })?;
        // `propose_conf_change(context, cc)` stores our command in the entry's context.
        let ctx = if e.get_context().is_empty() {
            cc.get_context()
        } else {
            e.get_context()
        };
        let cmd = pb::Command::decode(ctx).unwrap_or_default();
        let a = self.state.apply(&cmd, e.index);
        // A refused or duplicate membership command leaves the Raft configuration alone,
        // except for the empty "leave joint" changes raft-rs proposes itself.
        if (a.result.code == 0 && !a.duplicate) || cc.changes.is_empty() {
            match self.node.apply_conf_change(&cc) {
                Ok(cs) => {
                    self.node.mut_store().set_conf_state(cs.clone())?;
                    tracing::info!(index = e.index, voters = ?cs.voters, learners = ?cs.learners, "membership changed");
                }
                Err(err) => {
                    tracing::warn!(index = e.index, error = %err, "conf change refused by raft")
                }
            }
            self.transport.set_members(&self.state);
        }
        Ok(a.result)
    }

    fn maybe_snapshot(&mut self) -> Result<(), Error> {
        let snap_index = self.node.store().latest_snapshot().get_metadata().index;
        let wanted = self.node.store().take_snapshot_wanted();
        if self.applied >= snap_index + self.cfg.snapshot_entries
            || (wanted && self.applied > snap_index)
        {
            let cs: ConfState = self.node.store().conf_state().clone();
            let data = self.state.encode();
            let start = Instant::now();
            self.node
                .mut_store()
                .create_snapshot(self.applied, cs, data)?;
            tracing::info!(
                index = self.applied,
                took_ms = start.elapsed().as_millis() as u64,
                "snapshot taken, log compacted"
            );
            self.shared
                .metrics
                .snapshots
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }

    fn publish_state(&self) {
        *self.shared.state.write().expect("state lock") = Arc::new(self.state.clone());
    }

    fn publish_leadership(&mut self) {
        let l = Leadership {
            leader_id: self.node.raft.leader_id,
            term: self.node.raft.term,
            is_leader: self.node.raft.state == StateRole::Leader,
        };
        if l != self.last_leadership {
            if l.leader_id != self.last_leadership.leader_id && l.leader_id != 0 {
                self.shared
                    .metrics
                    .leader_changes
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(
                    leader = l.leader_id,
                    term = l.term,
                    is_leader = l.is_leader,
                    "leader changed"
                );
            }
            if self.last_leadership.is_leader && !l.is_leader {
                // Lost leadership: local proposals may or may not commit under the new
                // leader; answer now so clients retry (their (client id, seq) is idempotent).
                for (_, p) in std::mem::take(&mut self.pending) {
                    let _ =
                        p.tx.send(Err(Error::Dropped("leadership lost; retry".into())));
                }
            }
            self.last_leadership = l;
            self.shared.leadership.send_replace(l);
        }
    }

    fn publish_status(&self) {
        let r = &self.node.raft;
        let cs = self.node.store().conf_state();
        let role = match r.state {
            StateRole::Leader => "leader",
            StateRole::Candidate | StateRole::PreCandidate => "candidate",
            StateRole::Follower if cs.learners.contains(&self.cfg.id) => "learner",
            StateRole::Follower => "follower",
        };
        let st = RaftStatus {
            id: self.cfg.id,
            leader_id: r.leader_id,
            term: r.term,
            commit_index: r.raft_log.committed,
            applied_index: self.applied,
            role: role.to_string(),
            voters: cs.voters.clone(),
            learners: cs.learners.clone(),
            snapshot_index: self.node.store().latest_snapshot().get_metadata().index,
        };
        let m = &self.shared.metrics;
        use std::sync::atomic::Ordering::Relaxed;
        m.term.store(st.term, Relaxed);
        m.commit_index.store(st.commit_index, Relaxed);
        m.applied_index.store(st.applied_index, Relaxed);
        m.is_leader
            .store(u64::from(r.state == StateRole::Leader), Relaxed);
        *self.shared.status.lock().expect("status lock") = st;
    }
}

fn conf_change(id: u64, ty: ConfChangeType) -> ConfChangeV2 {
    let mut single = ConfChangeSingle {
        node_id: id,
        ..Default::default()
    };
    single.set_change_type(ty);
    let mut cc = ConfChangeV2::default();
    cc.set_changes(vec![single].into());
    cc
}
