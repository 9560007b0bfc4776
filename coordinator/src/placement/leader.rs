//! The leader's planner loop: sample the hub's rates, run a [`round`], commit it as one
//! `CommitPlan` entry when it changes anything (every changed node with a compare-and-set
//! on its epoch; a refused round is planned again).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use edgeplane_planner as planner;
use edgeplane_proto::raft as pb;
use edgeplane_proto::raft::command::Kind;

use super::preview::round;
use super::rates::RateTracker;
use crate::agents::AgentHub;
use crate::live::{LiveStats, ModelLiveStats, NodeLiveStats, PartitionLive, PlanPreview};
use crate::node::Handle;
use crate::profiles::gpu_data;
use crate::state::State;

/// Planner loop settings (from [`crate::config::Config::planner`]).
#[derive(Debug, Clone)]
pub struct PlannerConfig {
    /// How often the leader plans (also on every state change).
    pub interval: Duration,
    /// The rate estimator's time constant (`planner.band.tau_s` is the same number, so the
    /// significance test matches the estimator).
    pub rate_tau: Duration,
    pub planner: planner::Config,
}

impl Default for PlannerConfig {
    /// 1 s rounds, the planner's estimator time constant.
    fn default() -> Self {
        PlannerConfig::new(Duration::from_secs(1), None)
    }
}

impl PlannerConfig {
    /// Rounds every `interval`; the estimator's time constant `rate_tau_s` (None: the
    /// planner's default).
    pub fn new(interval: Duration, rate_tau_s: Option<f64>) -> Self {
        let mut planner = planner::Config::default();
        if let Some(t) = rate_tau_s {
            planner.band.tau_s = t;
        }
        PlannerConfig {
            interval,
            rate_tau: Duration::from_secs_f64(planner.band.tau_s),
            planner,
        }
    }
}

/// The planner's view kept by the leader, shared with the Admin service (dry runs, load).
pub struct Planner {
    pub hub: Arc<AgentHub>,
    pub cfg: PlannerConfig,
    rates: Mutex<RateTracker>,
    metrics: OnceLock<Arc<crate::metrics::Metrics>>,
}

impl Planner {
    pub fn new(hub: Arc<AgentHub>, cfg: PlannerConfig) -> Arc<Planner> {
        Arc::new(Planner {
            hub,
            cfg,
            rates: Mutex::new(RateTracker::default()),
            metrics: OnceLock::new(),
        })
    }

    /// The observed peaks the planner uses: with less than a whole peak window watched, a
    /// model keeps at least its committed rate (rises count at once, falls only after a
    /// full window).
    fn peaks_for(&self, st: &State) -> BTreeMap<String, f64> {
        let t = self.rates.lock().expect("rates lock");
        let mut p = t.peak();
        if !t.full(Instant::now(), &self.cfg) {
            for (m, r) in p.iter_mut() {
                if let Some(b) = st.plan_basis.get(m) {
                    *r = r.max(*b);
                }
            }
        }
        p
    }

    fn peaks(&self) -> BTreeMap<String, f64> {
        self.rates.lock().expect("rates lock").peak()
    }

    /// One round over `st` with the leader's current observations.
    pub fn preview(&self, st: &State) -> Result<PlanPreview, String> {
        let data = gpu_data().ok_or("the shipped GPU profiles do not parse")?;
        let hub = self.hub.clone();
        round(
            data,
            st,
            &self.peaks_for(st),
            &move |n: &str| hub.ready_models(n),
            &self.cfg.planner,
        )
    }
}

impl LiveStats for Planner {
    fn node(&self, name: &str) -> Option<NodeLiveStats> {
        self.hub.node(name)
    }
    fn model(&self, name: &str) -> Option<ModelLiveStats> {
        self.hub.model(name)
    }
    fn plan_preview(&self, st: &State) -> Result<PlanPreview, String> {
        self.preview(st)
    }
    fn partitions(&self, node: &str) -> Vec<PartitionLive> {
        self.hub.partitions(node)
    }
    fn planned_rates(&self) -> BTreeMap<String, f64> {
        self.peaks()
    }
}

/// Leader-only loop: sample rates, plan, commit changes.
pub async fn run(handle: Handle, planner: Arc<Planner>) {
    let _ = planner.metrics.set(handle.metrics());
    let mut leadership = handle.leadership();
    let mut changes = handle.state_changes();
    let mut tick = tokio::time::interval(planner.cfg.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_leader = false;
    loop {
        let mut sample = false;
        tokio::select! {
            r = leadership.changed() => if r.is_err() { return },
            r = changes.changed() => {
                if r.is_err() { return }
                // let a burst of entries settle into one round
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            _ = tick.tick() => sample = true,
        }
        let is_leader = leadership.borrow_and_update().is_leader;
        if !is_leader {
            if was_leader {
                planner.rates.lock().expect("rates lock").clear();
            }
            was_leader = false;
            continue;
        }
        if !was_leader {
            tracing::info!("leader: planner loop resumes from the committed plan");
        }
        was_leader = true;
        if sample {
            let rates = planner.hub.rates();
            planner
                .rates
                .lock()
                .expect("rates lock")
                .push(Instant::now(), rates, &planner.cfg);
        }
        planner.plan_and_commit(&handle).await;
    }
}

impl Planner {
    /// One round over the local state; commit it when it changes the state.
    async fn plan_and_commit(&self, handle: &Handle) {
        let st = handle.stale_state();
        let preview = match self.preview(&st) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "planner failed; keeping the committed plan");
                return;
            }
        };
        if !preview.changes_state(&st) {
            return;
        }
        let n_nodes = preview.changes.len() as u64;
        match handle.propose(commit_command(&preview)).await {
            Ok(r) => {
                if let Some(m) = self.metrics.get() {
                    m.plan_changes.inc();
                    m.reconfigurations.inc_by(n_nodes);
                }
                tracing::info!(
                    index = r.index,
                    nodes = n_nodes,
                    reason = %preview.reason,
                    decisions = ?preview.decisions,
                    "plan committed"
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "plan not committed (stale epoch or no quorum); planning again next round")
            }
        }
    }
}

/// The `CommitPlan` entry of a round.
pub fn commit_command(p: &PlanPreview) -> pb::Command {
    pb::Command {
        client_id: 0,
        seq: 0,
        kind: Some(Kind::CommitPlan(pb::CommitPlan {
            nodes: p.changes.clone(),
            basis_rps: p.basis_rps.clone().into_iter().collect(),
            plan_nodes: p.plan_nodes.clone(),
            reason: p.reason.clone(),
            shed: p.shed.clone(),
        })),
    }
}
