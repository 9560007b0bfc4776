//! Leases: a node not heard from for the lease timeout is marked lost (leader only). A new
//! leader knows no lease, so it grants every node a fresh one when it takes over.

use std::sync::Arc;
use std::time::{Duration, Instant};

use edgeplane_proto::raft::{self as pb, command::Kind};

use super::hub::AgentHub;
use crate::node::Handle;
use crate::state::NodeStatus;

/// Lease settings (from [`crate::config::Config::agents`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LeaseConfig {
    /// Agents report (and so renew) this often.
    pub renew: Duration,
    /// A node not heard from for this long is marked lost.
    pub timeout: Duration,
}

impl Default for LeaseConfig {
    /// 2 s reports, 10 s leases.
    fn default() -> Self {
        LeaseConfig {
            renew: Duration::from_millis(2000),
            timeout: Duration::from_millis(10_000),
        }
    }
}

/// Leader-only: fresh grace on taking over; mark nodes lost when their lease expires.
pub async fn lease_loop(handle: Handle, hub: Arc<AgentHub>) {
    let mut leadership = handle.leadership();
    let mut was_leader = false;
    let period = (hub.lease.timeout / 10).clamp(Duration::from_millis(50), Duration::from_secs(1));
    loop {
        let is_leader = leadership.borrow_and_update().is_leader;
        if is_leader && !was_leader {
            grant_fresh_leases(&handle, &hub);
        } else if !is_leader && was_leader {
            hub.inner.lock().expect("agent hub lock").clear();
        }
        was_leader = is_leader;
        if is_leader {
            expire(&handle, &hub).await;
        }
        tokio::select! {
            r = leadership.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(period) => {}
        }
    }
}

/// New leader: everyone known gets a full lease from now (no mass eviction).
fn grant_fresh_leases(handle: &Handle, hub: &AgentHub) {
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
}

/// Mark the ready nodes whose lease expired lost, in one entry.
async fn expire(handle: &Handle, hub: &AgentHub) {
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
    if expired.is_empty() {
        return;
    }
    // One entry for every node that expired in this period: a mass expiry (a rack losing
    // power) is one proposal and one fsync, not one per node.
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
