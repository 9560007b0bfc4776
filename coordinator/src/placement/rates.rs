//! Observed rates as the planner sees them: one estimator per model over the hub's
//! measured rates, sampled once per round.

use std::collections::BTreeMap;
use std::time::Instant;

use edgeplane_planner as planner;

use super::leader::PlannerConfig;

/// Observed rates: one [`planner::rate::RateEstimator`] per model (the simulator's
/// `adaptive` mode uses the same type), fed each round with the hub's measured rate over the
/// time since the previous round.
#[derive(Debug, Default)]
pub struct RateTracker {
    est: BTreeMap<String, planner::rate::RateEstimator>,
    last: Option<Instant>,
    /// When this leader started watching (a shorter watch underestimates nothing but is
    /// noisier: until two time constants, an estimate may only raise a planned rate).
    since: Option<Instant>,
}

impl RateTracker {
    pub fn push(&mut self, now: Instant, rates: BTreeMap<String, f64>, cfg: &PlannerConfig) {
        self.since.get_or_insert(now);
        // a round delayed (a slow commit) still covers the time since the last; a leader
        // that stopped sampling for long starts over from the interval
        let dt = self
            .last
            .map(|t| now.duration_since(t))
            .filter(|d| *d <= 10 * cfg.interval)
            .unwrap_or(cfg.interval)
            .as_secs_f64();
        self.last = Some(now);
        let tau = cfg.rate_tau.as_secs_f64();
        for (m, r) in rates {
            self.est
                .entry(m)
                .or_insert_with(|| planner::rate::RateEstimator::new(tau))
                .observe(r * dt, dt);
        }
    }

    /// The estimate per model, for models watched for at least one time constant.
    pub fn peak(&self) -> BTreeMap<String, f64> {
        self.est
            .iter()
            .filter(|(_, e)| e.watched_s() >= e.tau_s())
            .filter_map(|(m, e)| Some((m.clone(), e.rate()?)))
            .collect()
    }

    /// Whether this tracker has watched for two time constants: until then an estimate may
    /// only raise a model's planned rate, never lower it (a new leader's short watch would
    /// make noise look like a fall).
    pub fn full(&self, now: Instant, cfg: &PlannerConfig) -> bool {
        self.since
            .is_some_and(|s| now.duration_since(s) >= 2 * cfg.rate_tau)
    }

    pub fn clear(&mut self) {
        self.est.clear();
        self.last = None;
        self.since = None;
    }
}
