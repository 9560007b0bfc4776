//! Composition of a replica with its agent side: the agent hub, the placement loop and the
//! `Agent` service mounted through [`Extensions`]. The one module that names them all, so
//! that agents, placement, admin and server never import each other.

use std::sync::Arc;

use edgeplane_proto::agent::agent_server::AgentServer;

use crate::agents::{leases, notify, AgentHub, AgentService, LeaseConfig};
use crate::config::AgentsConfig;
use crate::live::LiveStats;
use crate::node::Handle;
use crate::placement::{self, Planner, PlannerConfig};
use crate::server::Extensions;

/// The extensions a replica needs for the agent side: the `Agent` service, the lease loop,
/// the epoch notifier and the placement loop, and the planner as the Admin service's live
/// stats.
pub fn agent_extensions(cfg: &AgentsConfig) -> Extensions {
    let ms = std::time::Duration::from_millis;
    let lease = LeaseConfig {
        renew: ms(cfg.agent_renew_ms),
        timeout: ms(cfg.agent_lease_ms),
    };
    let hub = AgentHub::new(lease, ms(cfg.rate_window_ms));
    let planner = Planner::new(
        hub.clone(),
        PlannerConfig::new(ms(cfg.plan_interval_ms), cfg.rate_tau_s),
    );
    let mut ext = Extensions {
        live_stats: Some(planner.clone() as Arc<dyn LiveStats>),
        ..Default::default()
    };
    ext.services.push(Box::new(move |handle: &Handle, routes| {
        tokio::spawn(leases::lease_loop(handle.clone(), hub.clone()));
        tokio::spawn(placement::run(handle.clone(), planner.clone()));
        tokio::spawn(notify::epoch_notifier(handle.clone(), hub.clone()));
        routes.add_service(AgentServer::new(AgentService {
            handle: handle.clone(),
            hub,
        }));
    }));
    ext
}
