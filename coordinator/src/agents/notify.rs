//! Assignment notification: an open session waits on its node's epoch, and one task wakes
//! only the sessions whose node changed. It diffs each newly published node map against the
//! previous one (persistent maps: shared subtrees are skipped, so the cost follows the
//! change, not the number of nodes); 10,000 sessions polling every 100 ms cost the leader
//! its election heartbeats.

use std::sync::Arc;

use tokio::sync::watch;

use super::hub::AgentHub;
use crate::node::Handle;

impl AgentHub {
    /// A receiver that changes whenever `node`'s assignment epoch changes.
    pub(super) fn watch_epoch(&self, node: &str, current: u64) -> watch::Receiver<u64> {
        let mut g = self.epochs.lock().expect("epochs lock");
        g.entry(node.to_string())
            .or_insert_with(|| watch::channel(current).0)
            .subscribe()
    }

    /// Forget `node`'s epoch watch once no session holds it any more.
    pub(super) fn unwatch_epoch(&self, node: &str) {
        let mut g = self.epochs.lock().expect("epochs lock");
        if g.get(node).is_some_and(|tx| tx.receiver_count() == 0) {
            g.remove(node);
        }
    }
}

/// Wakes the sessions of nodes whose assignment epoch changed (runs on every member; only
/// the leader has sessions).
pub async fn epoch_notifier(handle: Handle, hub: Arc<AgentHub>) {
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
