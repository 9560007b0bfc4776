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
//! waiting for its index after `reissue` and at every leader change; a duplicate answer for
//! the same context is ignored.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::error::Error;

type ReadTx = oneshot::Sender<Result<(), Error>>;

struct Waiting {
    tx: ReadTx,
    started: Instant,
    last_sent: Instant,
}

/// Reads waiting for a read index, then for the local apply to reach it.
pub(crate) struct ReadTracker {
    prefix: [u8; 16],
    next: u64,
    waiting_index: HashMap<Vec<u8>, Waiting>,
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
            waiting_apply: Vec::new(),
        }
    }

    /// Register a read; returns the context to pass to `RawNode::read_index`.
    pub(crate) fn start(&mut self, tx: ReadTx, now: Instant) -> Vec<u8> {
        let mut ctx = Vec::with_capacity(24);
        ctx.extend_from_slice(&self.prefix);
        ctx.extend_from_slice(&self.next.to_be_bytes());
        self.next += 1;
        self.waiting_index.insert(
            ctx.clone(),
            Waiting {
                tx,
                started: now,
                last_sent: now,
            },
        );
        ctx
    }

    /// Contexts to send again: those sent at least `every` ago, or all when `all` (a leader
    /// change).
    pub(crate) fn due(&mut self, now: Instant, every: Duration, all: bool) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for (ctx, w) in self.waiting_index.iter_mut() {
            if all || now.duration_since(w.last_sent) >= every {
                w.last_sent = now;
                out.push(ctx.clone());
            }
        }
        out
    }

    /// The cluster confirmed `ctx` at read index `index`.
    pub(crate) fn on_read_state(&mut self, ctx: &[u8], index: u64) {
        if let Some(w) = self.waiting_index.remove(ctx) {
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
        self.waiting_index
            .retain(|_, w| now.duration_since(w.started) < timeout && !w.tx.is_closed());
        self.waiting_apply.retain(|(_, tx)| !tx.is_closed());
    }

    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        self.waiting_index.len() + self.waiting_apply.len()
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
    fn waiting_reads_are_reissued_and_answered_once() {
        let t0 = Instant::now();
        let mut t = ReadTracker::new(1, 42);
        let (tx, mut rx) = oneshot::channel();
        let ctx = t.start(tx, t0);
        let every = Duration::from_millis(100);
        assert!(t
            .due(t0 + Duration::from_millis(50), every, false)
            .is_empty());
        assert_eq!(
            t.due(t0 + Duration::from_millis(150), every, false),
            vec![ctx.clone()]
        );
        // A leader change re-sends everything at once.
        assert_eq!(
            t.due(t0 + Duration::from_millis(160), every, true),
            vec![ctx.clone()]
        );
        t.on_read_state(&ctx, 10);
        t.on_read_state(&ctx, 11); // a duplicate answer for a re-issued request
        t.resolve(9);
        assert!(rx.try_recv().is_err());
        t.resolve(10);
        assert!(matches!(rx.try_recv(), Ok(Ok(()))));
        assert_eq!(t.waiting(), 0);
    }
}
