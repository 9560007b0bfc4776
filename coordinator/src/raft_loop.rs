//! The Raft loop: one dedicated OS thread per replica owns the `RawNode`, the storage and the
//! state machine.
//!
//! Why a thread and not a tokio task: every Ready may do blocking sled writes and an fsync;
//! on a thread they never stall the async runtime that serves gRPC. The thread receives
//! `Request`s through its `crate::inbox::Inbox`, ticks every `tick`, and handles each
//! Ready in the order raft-rs requires:
//! 1. send the leader's messages (they may go out before the local append),
//! 2. install a received snapshot (durable), restore the state machine from it and publish it,
//! 3. apply committed entries,
//! 4. append entries + hard state in one batch; flush and fsync only when raft says the
//!    Ready must be synced (new entries, vote or term), not when only the commit moved,
//! 5. only then send the persisted messages (votes, append responses),
//! 6. advance, then send/apply what the light ready holds.
//!
//! Proposals complete when their entry is applied: the loop remembers (index, term) of
//! every local proposal and answers it when that index is applied (success if the term
//! matches, "not applied" if another leader's entry took the slot).
//!
//! Snapshots are built off this thread: the loop hands a copy of the state (cheap: the
//! state is made of persistent maps) to a builder thread that serialises it and writes the
//! snapshot file; the loop adopts it (and compacts the log, keeping a catch-up margin) when
//! the builder reports back.

use std::collections::BTreeMap;
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgeplane_proto::raft::{self as pb, command::Kind};
use prost::Message as _;
use protobuf::Message as _;
use raft::eraftpb::{ConfChangeSingle, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType};
use raft::{RawNode, StateRole};

use crate::error::Error;
use crate::inbox::{Inbox, Outbox, ProposeTx, Request};
use crate::node::{ExitReason, Leadership, LoopConfig, RaftStatus, Shared};
use crate::reads::ReadTracker;
use crate::state::{CommandError, State};
use crate::storage::{RaftStore, SnapshotWriter};

struct Pending {
    term: u64,
    tx: ProposeTx,
    start: Instant,
    /// A membership change: raft-rs may have replaced it by an empty entry.
    conf: bool,
}

/// The loop's own data.
pub(crate) struct RaftLoop {
    cfg: LoopConfig,
    node: RawNode<RaftStore>,
    state: State,
    shared: Arc<Shared>,
    outbox: Box<dyn Outbox>,
    inbox: Inbox,
    rx: std_mpsc::Receiver<Request>,
    pending: BTreeMap<u64, Pending>,
    reads: ReadTracker,
    reissue_every: Duration,
    last_leadership: Leadership,
    applied: u64,
    /// A snapshot build in flight (index it covers).
    building: Option<u64>,
    snapshots: SnapshotWriter,
}

impl RaftLoop {
    pub(crate) fn new(
        cfg: LoopConfig,
        store: RaftStore,
        shared: Arc<Shared>,
        outbox: Box<dyn Outbox>,
        inbox: Inbox,
        rx: std_mpsc::Receiver<Request>,
        logger: &slog::Logger,
    ) -> Result<Self, Error> {
        let snap = store.latest_snapshot();
        let state = State::decode(snap.get_data())
            .map_err(|e| Error::Raft(format!("snapshot data does not decode: {e}")))?;
        let applied = snap.get_metadata().index;
        let snapshots = store.snapshot_writer();
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
        let reissue_every = (cfg.tick * cfg.heartbeat_ticks as u32 * 3).max(cfg.tick * 2);
        let mut me = RaftLoop {
            reads: ReadTracker::new(cfg.id, crate::reads::boot_nonce()),
            cfg,
            node,
            state,
            shared,
            outbox,
            inbox,
            rx,
            pending: BTreeMap::new(),
            reissue_every,
            last_leadership: Leadership::default(),
            applied,
            building: None,
            snapshots,
        };
        me.state.applied_index = applied;
        me.publish_state();
        me.outbox
            .set_members(&me.state.members, &me.state.removed_members);
        me.publish_status();
        Ok(me)
    }

    /// Run until shutdown, or until storage fails (then the exit reason is published: the
    /// process must end, crash-only).
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
            let now = Instant::now();
            if now >= next_tick {
                self.node.tick();
                next_tick += self.cfg.tick;
                if next_tick < now {
                    next_tick = now + self.cfg.tick;
                }
                self.reads.expire(self.cfg.request_timeout, now);
                for ctx in self.reads.due(now, self.reissue_every, false) {
                    self.node.read_index(ctx);
                }
            }
            if let Err(e) = self.on_ready() {
                tracing::error!(
                    error = %e,
                    "raft loop failed (a durable write or fsync did not succeed); this replica \
                     exits and recovers from its data dir when restarted"
                );
                self.shared
                    .exit
                    .send_replace(Some(ExitReason::Fatal(e.to_string())));
                break;
            }
        }
        for (_, p) in std::mem::take(&mut self.pending) {
            let _ =
                p.tx.send(Err(Error::OutcomeUnknown("the replica stopped".into())));
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
                let ctx = self.reads.start(tx, Instant::now());
                self.node.read_index(ctx);
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
            Request::SnapshotBuilt(r) => {
                self.building = None;
                match r {
                    Ok((snap, compacted)) => {
                        let index = snap.get_metadata().index;
                        self.node.mut_store().adopt_built_snapshot(snap, compacted);
                        self.shared.metrics.snapshots.inc();
                        tracing::info!(index, compacted_to = ?compacted.map(|c| c.0), "snapshot taken, log compacted");
                    }
                    Err(e @ crate::storage::StorageError::Invalid(_)) => {
                        tracing::info!(reason = %e, "snapshot build skipped")
                    }
                    Err(e) => {
                        // The disk failed under the builder: crash-only, like the log.
                        tracing::error!(error = %e, "writing a snapshot failed; exiting");
                        self.shared
                            .exit
                            .send_replace(Some(ExitReason::Fatal(e.to_string())));
                    }
                }
            }
            Request::RemovedByPeer(peer) => {
                tracing::warn!(
                    peer,
                    "a peer says this replica was removed from the cluster"
                );
                self.removed();
            }
            Request::Shutdown => {}
        }
    }

    fn removed(&mut self) {
        if self.shared.exit.borrow().is_none() {
            tracing::warn!(
                id = self.cfg.id,
                "this replica was removed from the cluster; exiting"
            );
            self.shared.exit.send_replace(Some(ExitReason::Removed));
        }
    }

    fn propose(&mut self, mut cmd: pb::Command, tx: ProposeTx) {
        if self.node.raft.state != StateRole::Leader {
            let _ = tx.send(Err(Error::NotLeader {
                leader_id: self.node.raft.leader_id,
            }));
            return;
        }
        // Token commands carry the leader's clock (expiry, "now" of a join), decided here
        // once, so every replica applies the same entry the same way.
        crate::state::prepare(&mut cmd, crate::state::tokens::now_unix_ms());
        let retry_of_applied = cmd.client_id != 0
            && matches!(self.state.sessions.get(&cmd.client_id), Some(s) if s.seq == cmd.seq);
        if let Err(e) = self.state.precheck(&cmd) {
            // Retries of an applied (client, seq) must get the cached answer, not an error
            // from a check against the state the write already changed.
            if !retry_of_applied {
                let _ = tx.send(Err(Error::Command(e)));
                return;
            }
        }
        let conf = matches!(
            cmd.kind,
            Some(Kind::AddMember(_)) | Some(Kind::RemoveMember(_))
        );
        if conf && self.node.raft.has_pending_conf() && !retry_of_applied {
            // raft-rs would replace the change by an empty entry: refuse it here, so the
            // caller retries instead of being told a change happened that did not.
            let _ = tx.send(Err(Error::NotApplied(
                "another membership change is still being applied (always so right after an \
                 election)"
                    .into(),
            )));
            return;
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
                        conf,
                    },
                );
            }
            Err(e) => {
                let _ = tx.send(Err(Error::NotApplied(format!("raft refused it: {e}"))));
            }
        }
    }

    fn on_ready(&mut self) -> Result<(), Error> {
        if !self.node.has_ready() {
            self.publish_leadership();
            self.maybe_snapshot();
            return Ok(());
        }
        let mut rd = self.node.ready();
        if !rd.messages().is_empty() {
            self.outbox.send(rd.take_messages());
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
                    let _ = p.tx.send(Err(Error::OutcomeUnknown(
                        "replaced by a snapshot from the leader".into(),
                    )));
                }
            }
            // Readers must see the installed state at once (an idle cluster may apply no
            // further entry for a long time).
            self.publish_state();
            self.outbox
                .set_members(&self.state.members, &self.state.removed_members);
            self.reads.resolve(self.applied);
            tracing::info!(index = idx, "installed snapshot from the leader");
            let cs = snap.get_metadata().get_conf_state();
            if self.state.removed_members.contains(&self.cfg.id) && !conf_has(cs, self.cfg.id) {
                self.removed();
            }
        }
        for rs in rd.take_read_states() {
            self.reads.on_read_state(&rs.request_ctx, rs.index);
        }
        let committed = rd.take_committed_entries();
        self.apply_entries(committed)?;
        let hs = rd.hs().cloned();
        if !rd.entries().is_empty() || hs.is_some() {
            let sync = rd.must_sync();
            self.node
                .mut_store()
                .append(rd.entries(), hs.as_ref(), sync)?;
            if sync {
                self.shared
                    .metrics
                    .observe_fsync(self.node.store().last_fsync());
            }
        }
        self.shared.metrics.fsyncs.inner().store(
            self.node.store().fsync_count(),
            std::sync::atomic::Ordering::Relaxed,
        );
        if !rd.persisted_messages().is_empty() {
            self.outbox.send(rd.take_persisted_messages());
        }
        let mut light = self.node.advance(rd);
        if let Some(c) = light.commit_index() {
            self.node.mut_store().set_commit(c);
        }
        self.outbox.send(light.take_messages());
        self.apply_entries(light.take_committed_entries())?;
        self.node.advance_apply();
        self.reads.resolve(self.applied);
        self.maybe_snapshot();
        self.publish_leadership();
        self.publish_status();
        Ok(())
    }

    fn apply_entries(&mut self, entries: Vec<Entry>) -> Result<(), Error> {
        if entries.is_empty() {
            return Ok(());
        }
        // Answers go out after the state is published, so a caller that reads right after
        // its write was acknowledged sees it (even with a stale read on this replica).
        let mut replies = Vec::new();
        for e in entries {
            let index = e.index;
            let is_conf = e.get_entry_type() == EntryType::EntryConfChangeV2;
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
            self.applied = index;
            self.state.applied_index = index;
            if let Some(p) = self.pending.remove(&index) {
                let reply = if p.term != e.term {
                    Err(Error::NotApplied(
                        "another leader's entry took this log slot".into(),
                    ))
                } else if p.conf && !is_conf {
                    Err(Error::NotApplied(
                        "raft replaced the membership change by an empty entry (a change was \
                         pending)"
                            .into(),
                    ))
                } else {
                    match result {
                        Some(Ok(r)) => match CommandError::from_result(&r) {
                            Some(e) => Err(Error::Command(e)),
                            None => Ok(r),
                        },
                        Some(Err(e)) => Err(e),
                        None => Ok(pb::ApplyResult {
                            index,
                            ..Default::default()
                        }),
                    }
                };
                self.shared.metrics.observe_proposal(p.start.elapsed());
                replies.push((p.tx, reply));
            }
            // Anything pending below this index was overwritten and never applied.
            while let Some((&k, _)) = self.pending.first_key_value() {
                if k >= index {
                    break;
                }
                let p = self.pending.remove(&k).expect("present");
                replies.push((
                    p.tx,
                    Err(Error::NotApplied(
                        "the entry was overwritten by a new leader".into(),
                    )),
                ));
            }
        }
        self.publish_state();
        for (tx, r) in replies {
            let _ = tx.send(r);
        }
        // The applied index is not written per batch: the state machine is rebuilt from the
        // snapshot plus the log at start, and every sled write costs a sync_file_range.
        self.reads.resolve(self.applied);
        Ok(())
    }

    fn apply_normal(&mut self, e: &Entry) -> Result<pb::ApplyResult, Error> {
        match pb::Command::decode(e.get_data()) {
            Ok(cmd) => {
                let is_member = matches!(cmd.kind, Some(Kind::UpdateMember(_)));
                let a = self.state.apply(&cmd, e.index);
                if is_member && a.result.code() == pb::ResultCode::Ok {
                    self.outbox
                        .set_members(&self.state.members, &self.state.removed_members);
                }
                Ok(a.result)
            }
            Err(err) => {
                tracing::error!(index = e.index, error = %err, "undecodable command entry");
                let refused = Err(CommandError::invalid(
                    "command",
                    format!("does not decode: {err}"),
                ));
                Ok((&crate::state::StoredResult::of(&refused, e.index)).into())
            }
        }
    }

    /// Apply a membership entry. The outer error is a failure of the replica (storage);
    /// the inner one is the answer for the proposer.
    fn apply_conf_change_v2(&mut self, e: &Entry) -> Result<Result<pb::ApplyResult, Error>, Error> {
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
        let mut answer = Ok(a.result.clone());
        // A refused or duplicate membership command leaves the Raft configuration alone,
        // except for the empty "leave joint" changes raft-rs proposes itself.
        if (a.result.code() == pb::ResultCode::Ok && !a.duplicate) || cc.changes.is_empty() {
            match self.node.apply_conf_change(&cc) {
                Ok(cs) => {
                    self.node.mut_store().set_conf_state(cs.clone())?;
                    tracing::info!(index = e.index, voters = ?cs.voters, learners = ?cs.learners, "membership changed");
                    if !conf_has(&cs, self.cfg.id) {
                        self.removed();
                    }
                }
                Err(err) => {
                    tracing::warn!(index = e.index, error = %err, "conf change refused by raft");
                    answer = Err(Error::NotApplied(format!(
                        "raft refused the membership change: {err}"
                    )));
                }
            }
            self.outbox
                .set_members(&self.state.members, &self.state.removed_members);
        }
        Ok(answer)
    }

    /// Start a snapshot build when enough entries were applied since the last one (or raft
    /// asked for a fresh one). The state copy is O(1) (persistent maps); serialising and
    /// writing happen on the builder thread.
    fn maybe_snapshot(&mut self) {
        if self.building.is_some() {
            return;
        }
        let snap_index = self.node.store().latest_snapshot().get_metadata().index;
        let wanted = self.node.store().take_snapshot_wanted();
        if self.applied >= snap_index + self.cfg.snapshot_entries
            || (wanted && self.applied > snap_index)
        {
            let index = self.applied;
            let term = match raft::Storage::term(self.node.store(), index) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(index, error = %e, "no term for the snapshot index");
                    return;
                }
            };
            let cs: ConfState = self.node.store().conf_state().clone();
            let compact = self
                .node
                .store()
                .compaction_point(index, self.cfg.catch_up_entries);
            let state = self.state.clone();
            let writer = self.snapshots.clone();
            let inbox = self.inbox.clone();
            self.building = Some(index);
            let spawned = std::thread::Builder::new()
                .name(format!("snapshot-{}", self.cfg.id))
                .spawn(move || {
                    let start = Instant::now();
                    let r =
                        writer
                            .write(index, term, cs, state.encode())
                            .and_then(|s| match compact {
                                Some((upto, t)) => writer.compact(upto, t).map(|()| (s, compact)),
                                None => Ok((s, None)),
                            });
                    if let Ok((s, _)) = &r {
                        tracing::debug!(
                            index,
                            bytes = s.get_data().len(),
                            took_ms = start.elapsed().as_millis() as u64,
                            "snapshot built"
                        );
                    }
                    let _ = inbox.send(Request::SnapshotBuilt(r));
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start the snapshot builder");
                self.building = None;
            }
        }
    }

    fn publish_state(&self) {
        *self.shared.state.write().expect("state lock") = Arc::new(self.state.clone());
        self.shared.state_version.send_modify(|v| *v += 1);
    }

    fn publish_leadership(&mut self) {
        let l = Leadership {
            leader_id: self.node.raft.leader_id,
            term: self.node.raft.term,
            is_leader: self.node.raft.state == StateRole::Leader,
        };
        if l != self.last_leadership {
            if l.leader_id != self.last_leadership.leader_id && l.leader_id != 0 {
                self.shared.metrics.leader_changes.inc();
                tracing::info!(
                    leader = l.leader_id,
                    term = l.term,
                    is_leader = l.is_leader,
                    "leader changed"
                );
                // Reads pending at the old leader are lost with it: ask the new one.
                for ctx in self.reads.due(Instant::now(), self.reissue_every, true) {
                    self.node.read_index(ctx);
                }
            }
            if self.last_leadership.is_leader && !l.is_leader {
                // Lost leadership: local proposals may or may not commit under the new
                // leader; answer now so clients retry under their (client id, seq).
                for (_, p) in std::mem::take(&mut self.pending) {
                    let _ = p.tx.send(Err(Error::OutcomeUnknown(
                        "leadership lost while the write was in flight".into(),
                    )));
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
        m.term.set(st.term);
        m.commit_index.set(st.commit_index);
        m.applied_index.set(st.applied_index);
        m.is_leader.set(u64::from(r.state == StateRole::Leader));
        m.has_leader.set(u64::from(st.leader_id != 0));
        *self.shared.status.lock().expect("status lock") = st;
    }
}

fn conf_has(cs: &ConfState, id: u64) -> bool {
    cs.voters.contains(&id)
        || cs.learners.contains(&id)
        || cs.voters_outgoing.contains(&id)
        || cs.learners_next.contains(&id)
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
