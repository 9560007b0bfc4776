//! ReadIndex bookkeeping of the Raft loop.
//!
//! Why contexts carry (replica id, boot nonce, counter): raft-rs keys pending read requests
//! by their context bytes and silently ignores a request whose context is already pending.
//! Per-replica counters starting at 1 collide between members (and across a restart), and
//! the colliding read never answers. With the replica id and a per-process nonce in every
//! context, two requests collide only if they are the same request.
//!
//! Why reads are re-issued: raft-rs 0.7 drops a ReadIndex request without a word when there
//! is no leader, when the leader has not yet committed an entry in its term, or when the
//! leader changes while the request is pending. The tracker re-sends every request still
//! waiting for its index after `reissue` and at every leader change.
//!
//! Why every re-issue gets a fresh context (never the same bytes twice): raft-rs answers
//! pending reads in queue order — a heartbeat ack for context X releases X *and every read
//! queued before X*, on the assumption that the heartbeat carrying X went out after all of
//! them were queued. Re-queuing an X that the leader had already answered (a follower's
//! forwarded read re-sent while the leader was paused, or a local read whose answer is still
//! inside raft when the tick re-issues it) breaks that assumption: an ack still in flight from an *earlier* heartbeat round for X (e.g. held in a
//! peer's send queue while the leader was SIGSTOPped) then releases reads that arrived after
//! that round, at the old commit index, although a new leader may have committed writes in
//! between. That is how a resumed leader served revision 928 after 942 had been acknowledged
//! (issue 7, pause-leader). With a fresh context per issue, an ack can only come from a
//! heartbeat sent after that context was queued, so it proves leadership at a time after
//! every read queued before it. The first read state for any of a read's contexts answers
//! it; later ones are ignored.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::error::Error;

type ReadTx = oneshot::Sender<Result<(), Error>>;

struct Waiting {
    tx: ReadTx,
    started: Instant,
    last_sent: Instant,
    /// Every context this read was issued under (one per issue).
    ctxs: Vec<Vec<u8>>,
}

/// Reads waiting for a read index, then for the local apply to reach it.
pub(crate) struct ReadTracker {
    prefix: [u8; 16],
    /// Counter of the next context (and of the next read's id).
    next: u64,
    /// Reads waiting for a read index, by read id.
    waiting_index: HashMap<u64, Waiting>,
    /// Every context issued for a read still waiting for its index -> that read's id.
    by_ctx: HashMap<Vec<u8>, u64>,
    waiting_apply: Vec<(u64, ReadTx)>,
}

/// A number that differs between two processes of the same replica: wall-clock nanoseconds
/// at start mixed with the pid (a restart takes far longer than a nanosecond).
pub(crate) fn boot_nonce() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    splitmix64(t ^ (u64::from(std::process::id()) << 32))
}

/// SplitMix64 finaliser: a bijection on u64 that spreads nearby inputs apart.
pub(crate) fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl ReadTracker {
    pub(crate) fn new(replica_id: u64, nonce: u64) -> Self {
        let mut prefix = [0u8; 16];
        prefix[..8].copy_from_slice(&replica_id.to_be_bytes());
        prefix[8..].copy_from_slice(&nonce.to_be_bytes());
        ReadTracker {
            prefix,
            next: 1,
            waiting_index: HashMap::new(),
            by_ctx: HashMap::new(),
            waiting_apply: Vec::new(),
        }
    }

    /// A context never issued before by this process: (replica id, boot nonce, counter).
    fn fresh_ctx(prefix: &[u8; 16], next: &mut u64) -> Vec<u8> {
        let mut ctx = Vec::with_capacity(24);
        ctx.extend_from_slice(prefix);
        ctx.extend_from_slice(&next.to_be_bytes());
        *next += 1;
        ctx
    }

    /// Register a read; returns the context to pass to `RawNode::read_index`.
    pub(crate) fn start(&mut self, tx: ReadTx, now: Instant) -> Vec<u8> {
        let id = self.next;
        let ctx = Self::fresh_ctx(&self.prefix, &mut self.next);
        self.by_ctx.insert(ctx.clone(), id);
        self.waiting_index.insert(
            id,
            Waiting {
                tx,
                started: now,
                last_sent: now,
                ctxs: vec![ctx.clone()],
            },
        );
        ctx
    }

    /// Contexts to send again: one fresh context for each read sent at least `every` ago,
    /// or for all when `all` (a leader change).
    pub(crate) fn due(&mut self, now: Instant, every: Duration, all: bool) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for (id, w) in self.waiting_index.iter_mut() {
            if all || now.duration_since(w.last_sent) >= every {
                w.last_sent = now;
                let ctx = Self::fresh_ctx(&self.prefix, &mut self.next);
                self.by_ctx.insert(ctx.clone(), *id);
                w.ctxs.push(ctx.clone());
                out.push(ctx);
            }
        }
        out
    }

    /// The cluster confirmed `ctx` at read index `index`.
    pub(crate) fn on_read_state(&mut self, ctx: &[u8], index: u64) {
        let Some(id) = self.by_ctx.remove(ctx) else {
            return;
        };
        if let Some(w) = self.waiting_index.remove(&id) {
            for c in &w.ctxs {
                self.by_ctx.remove(c);
            }
            self.waiting_apply.push((index, w.tx));
        }
    }

    /// Answer reads whose read index is applied.
    pub(crate) fn resolve(&mut self, applied: u64) {
        if self.waiting_apply.is_empty() {
            return;
        }
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiting_apply)
            .into_iter()
            .partition(|(i, _)| *i <= applied);
        self.waiting_apply = waiting;
        for (_, tx) in ready {
            let _ = tx.send(Ok(()));
        }
    }

    /// Forget reads whose caller gave up (timed out or went away).
    pub(crate) fn expire(&mut self, timeout: Duration, now: Instant) {
        let by_ctx = &mut self.by_ctx;
        self.waiting_index.retain(|_, w| {
            let keep = now.duration_since(w.started) < timeout && !w.tx.is_closed();
            if !keep {
                for c in &w.ctxs {
                    by_ctx.remove(c);
                }
            }
            keep
        });
        self.waiting_apply.retain(|(_, tx)| !tx.is_closed());
    }

    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        self.waiting_index.len() + self.waiting_apply.len()
    }

    #[cfg(test)]
    pub(crate) fn contexts(&self) -> usize {
        self.by_ctx.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts_differ_between_members_and_restarts() {
        let now = Instant::now();
        let mut seen = std::collections::HashSet::new();
        // Three members, each started twice (a restart gets a new nonce), 100 reads each.
        for id in 1..=3u64 {
            for boot in 0..2u64 {
                let mut t = ReadTracker::new(id, splitmix64(boot * 7919 + id));
                for _ in 0..100 {
                    let (tx, _rx) = oneshot::channel();
                    assert!(seen.insert(t.start(tx, now)), "context reused");
                }
            }
        }
        assert_eq!(seen.len(), 600);
        assert_ne!(boot_nonce(), 0);
    }

    #[test]
    fn waiting_reads_are_reissued_under_fresh_contexts_and_answered_once() {
        let t0 = Instant::now();
        let mut t = ReadTracker::new(1, 42);
        let (tx, mut rx) = oneshot::channel();
        let ctx = t.start(tx, t0);
        let every = Duration::from_millis(100);
        assert!(t
            .due(t0 + Duration::from_millis(50), every, false)
            .is_empty());
        let again = t.due(t0 + Duration::from_millis(150), every, false);
        assert_eq!(again.len(), 1);
        assert_ne!(again[0], ctx, "a re-issue must not reuse a context");
        // A leader change re-sends everything at once, again under a new context.
        let all = t.due(t0 + Duration::from_millis(160), every, true);
        assert_eq!(all.len(), 1);
        assert!(all[0] != ctx && all[0] != again[0]);
        assert_eq!(t.contexts(), 3);
        // The answer for any of the read's contexts answers it (here the second one);
        // answers for its other contexts are ignored.
        t.on_read_state(&again[0], 10);
        t.on_read_state(&ctx, 11);
        t.on_read_state(&all[0], 12);
        assert_eq!(t.contexts(), 0);
        t.resolve(9);
        assert!(rx.try_recv().is_err());
        t.resolve(10);
        assert!(matches!(rx.try_recv(), Ok(Ok(()))));
        assert_eq!(t.waiting(), 0);
    }

    #[test]
    fn expired_reads_forget_their_contexts() {
        let t0 = Instant::now();
        let mut t = ReadTracker::new(1, 7);
        let (tx, _rx) = oneshot::channel();
        t.start(tx, t0);
        t.due(
            t0 + Duration::from_millis(200),
            Duration::from_millis(100),
            false,
        );
        assert_eq!(t.contexts(), 2);
        t.expire(Duration::from_secs(1), t0 + Duration::from_secs(2));
        assert_eq!((t.waiting(), t.contexts()), (0, 0));
    }

    mod raft_nodes {
        //! Real raft-rs 0.7 nodes on in-memory storage, messages delivered by hand so the
        //! interleaving of a SIGSTOP/SIGCONT of the leader is exact.
        use raft::eraftpb::{ConfState, Message};
        use raft::storage::MemStorage;
        use raft::{RawNode, StateRole};

        pub type Node = RawNode<MemStorage>;

        /// Three voters, production settings (check quorum, pre-vote); node 1 leads and has
        /// committed an entry of its term (ReadIndex needs one).
        pub fn cluster() -> Vec<Node> {
            let logger = slog::Logger::root(slog::Discard, slog::o!());
            let mut nodes: Vec<Node> = (1..=3u64)
                .map(|id| {
                    let cfg = raft::Config {
                        id,
                        election_tick: 10,
                        heartbeat_tick: 1,
                        check_quorum: true,
                        pre_vote: true,
                        ..Default::default()
                    };
                    let cs = ConfState::from((vec![1, 2, 3], vec![]));
                    RawNode::new(&cfg, MemStorage::new_with_conf_state(cs), &logger)
                        .expect("raw node")
                })
                .collect();
            nodes[0].campaign().expect("campaign");
            pump(&mut nodes, &[1, 2, 3]);
            assert_eq!(nodes[0].raft.state, StateRole::Leader);
            nodes[0].propose(vec![], b"w1".to_vec()).expect("propose");
            pump(&mut nodes, &[1, 2, 3]);
            nodes
        }

        /// Persist and advance one node's Ready; returns (messages out, read states).
        pub fn ready(n: &mut Node) -> (Vec<Message>, Vec<raft::ReadState>) {
            let mut out = Vec::new();
            if !n.has_ready() {
                return (out, Vec::new());
            }
            let mut rd = n.ready();
            out.extend(rd.take_messages());
            let rs = rd.take_read_states();
            let _ = rd.take_committed_entries();
            n.mut_store().wl().append(rd.entries()).expect("append");
            if let Some(hs) = rd.hs() {
                n.mut_store().wl().set_hardstate(hs.clone());
            }
            out.extend(rd.take_persisted_messages());
            let mut light = n.advance(rd);
            if let Some(c) = light.commit_index() {
                n.mut_store().wl().mut_hard_state().set_commit(c);
            }
            out.extend(light.take_messages());
            let _ = light.take_committed_entries();
            n.advance_apply();
            (out, rs)
        }

        /// Deliver messages among `live` (ids) until quiet; messages to others are dropped.
        pub fn pump(nodes: &mut [Node], live: &[u64]) {
            for _ in 0..100 {
                let mut msgs = Vec::new();
                for &id in live {
                    msgs.extend(ready(&mut nodes[id as usize - 1]).0);
                }
                msgs.retain(|m| live.contains(&m.to));
                if msgs.is_empty() {
                    return;
                }
                for m in msgs {
                    let to = m.to as usize - 1;
                    let _ = nodes[to].step(m);
                }
            }
            panic!("messages did not settle");
        }

        /// Node 1 is paused: 2 and 3 time out, elect a leader among them and commit a
        /// write. Returns that write's index.
        pub fn elect_without_node_1(nodes: &mut [Node]) -> u64 {
            for _ in 0..40 {
                nodes[1].tick();
                nodes[2].tick();
                pump(nodes, &[2, 3]);
                if nodes[1].raft.state == StateRole::Leader
                    || nodes[2].raft.state == StateRole::Leader
                {
                    break;
                }
            }
            let l = if nodes[1].raft.state == StateRole::Leader {
                1
            } else {
                2
            };
            assert_eq!(
                nodes[l].raft.state,
                StateRole::Leader,
                "2 and 3 elected a leader"
            );
            nodes[l].propose(vec![], b"w2".to_vec()).expect("propose");
            pump(nodes, &[2, 3]);
            nodes[l].raft.raft_log.committed
        }
    }

    /// Issue 7, pause-leader: a leader paused (SIGSTOP) past the election timeout must not
    /// answer a read that arrives after its resume from its pre-pause commit index.
    ///
    /// Node 1 leads and confirms its read X with a heartbeat round; both acks are held back
    /// (they sit in the peers' send queues while node 1 is paused). Nodes 2 and 3 elect a
    /// leader and commit a write. Node 1 resumes: the first held ack answers X; then read A
    /// arrives; the tick re-issues X (the tracker has not yet seen X's read state); then the
    /// second held ack for X arrives. With X re-queued under the same context behind A,
    /// that stale ack released A at node 1's old commit index (below the write already
    /// acknowledged): a stale linearizable read. With a fresh context per issue the stale
    /// ack matches nothing pending, and A waits for a real confirmation.
    #[test]
    fn a_stale_heartbeat_ack_does_not_release_a_newer_read() {
        use raft::eraftpb::MessageType;
        use raft_nodes::*;

        let mut nodes = cluster();
        let old_commit = nodes[0].raft.raft_log.committed;
        let t0 = Instant::now();
        let mut tracker = ReadTracker::new(1, 99);
        // Read X: node 1 sends a heartbeat round carrying X; 2 and 3 answer, answers held.
        let (x_tx, mut x_rx) = oneshot::channel();
        let x = tracker.start(x_tx, t0);
        nodes[0].read_index(x.clone());
        let (hb, _) = ready(&mut nodes[0]);
        let mut held = Vec::new();
        for m in hb {
            assert_eq!(m.get_msg_type(), MessageType::MsgHeartbeat);
            let to = m.to as usize - 1;
            nodes[to].step(m).expect("step heartbeat");
            held.extend(ready(&mut nodes[to]).0.into_iter().filter(|r| r.to == 1));
        }
        assert_eq!(held.len(), 2, "both followers acknowledged X");

        let acknowledged = elect_without_node_1(&mut nodes);
        assert!(
            acknowledged > old_commit,
            "the new leader committed a write"
        );

        // Node 1 resumes, still leader of its old term. The first held ack answers X.
        nodes[0].step(held.remove(0)).expect("first ack");
        // Read A arrives after the write above was acknowledged.
        let (a_tx, mut a_rx) = oneshot::channel();
        let a = tracker.start(a_tx, t0 + Duration::from_secs(1));
        nodes[0].read_index(a);
        // The tick re-issues reads waiting longer than the re-issue period (X among them:
        // its read state is still inside raft).
        for ctx in tracker.due(
            t0 + Duration::from_secs(1),
            Duration::from_millis(150),
            false,
        ) {
            nodes[0].read_index(ctx);
        }
        // The second held ack, from the heartbeat round sent before the pause.
        nodes[0].step(held.remove(0)).expect("second ack");
        let states = ready(&mut nodes[0]).1;
        for rs in &states {
            tracker.on_read_state(&rs.request_ctx, rs.index);
        }
        tracker.resolve(nodes[0].raft.raft_log.committed);

        assert!(
            matches!(x_rx.try_recv(), Ok(Ok(()))),
            "X was confirmed before the pause"
        );
        assert!(
            a_rx.try_recv().is_err(),
            "read A was answered from index {old_commit} although {acknowledged} was \
             acknowledged before A began (read states: {:?})",
            states.iter().map(|r| r.index).collect::<Vec<_>>()
        );
    }

    /// The variant the chaos suite actually hit (probe logs of the pause-leader scenario):
    /// follower 3 forwards its read Y to leader 1, and its tracker re-sends Y while node 1 is
    /// paused (those MsgReadIndex messages wait in node 3's send queue). On resume node 1
    /// answers Y from the first held heartbeat ack, queues a local read A, then steps the
    /// re-sent MsgReadIndex: under the same context Y is queued again behind A, and the
    /// second held ack for Y released A at the pre-pause commit index.
    #[test]
    fn a_re_sent_forwarded_read_does_not_let_a_stale_ack_release_a_newer_read() {
        use raft::eraftpb::MessageType;
        use raft_nodes::*;

        let mut nodes = cluster();
        let old_commit = nodes[0].raft.raft_log.committed;
        let t0 = Instant::now();
        let mut leader_reads = ReadTracker::new(1, 11);
        let mut follower_reads = ReadTracker::new(3, 33);
        // Follower 3 reads Y through leader 1; 1 sends a heartbeat round carrying Y.
        let (y_tx, _y_rx) = oneshot::channel();
        let y = follower_reads.start(y_tx, t0);
        nodes[2].read_index(y);
        let fwd = ready(&mut nodes[2]).0;
        assert_eq!(fwd.len(), 1);
        assert_eq!(fwd[0].get_msg_type(), MessageType::MsgReadIndex);
        nodes[0]
            .step(fwd.into_iter().next().unwrap())
            .expect("forwarded read");
        let (hb, _) = ready(&mut nodes[0]);
        let mut held = Vec::new();
        for m in hb {
            assert_eq!(m.get_msg_type(), MessageType::MsgHeartbeat);
            let to = m.to as usize - 1;
            nodes[to].step(m).expect("step heartbeat");
            held.extend(ready(&mut nodes[to]).0.into_iter().filter(|r| r.to == 1));
        }
        assert_eq!(held.len(), 2, "both followers acknowledged Y");
        // Node 1 is paused; node 3 re-sends Y (still believing 1 leads): held too.
        for ctx in follower_reads.due(
            t0 + Duration::from_millis(200),
            Duration::from_millis(150),
            false,
        ) {
            nodes[2].read_index(ctx);
        }
        let resent: Vec<_> = ready(&mut nodes[2])
            .0
            .into_iter()
            .filter(|m| m.to == 1)
            .collect();
        assert_eq!(resent.len(), 1);

        let acknowledged = elect_without_node_1(&mut nodes);
        assert!(
            acknowledged > old_commit,
            "the new leader committed a write"
        );

        // Node 1 resumes: first held ack answers Y (a MsgReadIndexResp to node 3).
        nodes[0].step(held.remove(0)).expect("first ack");
        // A local read A arrives after the write above was acknowledged.
        let (a_tx, mut a_rx) = oneshot::channel();
        let a = leader_reads.start(a_tx, t0 + Duration::from_secs(1));
        nodes[0].read_index(a);
        // Node 3's re-sent read, then the second held ack.
        for m in resent {
            nodes[0].step(m).expect("re-sent read");
        }
        nodes[0].step(held.remove(0)).expect("second ack");
        let states = ready(&mut nodes[0]).1;
        for rs in &states {
            leader_reads.on_read_state(&rs.request_ctx, rs.index);
        }
        leader_reads.resolve(nodes[0].raft.raft_log.committed);
        assert!(
            a_rx.try_recv().is_err(),
            "read A was answered from index {old_commit} although {acknowledged} was \
             acknowledged before A began (read states: {:?})",
            states.iter().map(|r| r.index).collect::<Vec<_>>()
        );
    }
}
