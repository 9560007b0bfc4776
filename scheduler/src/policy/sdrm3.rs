//! `sdrm3`: the SDRM3 real-time multi-model scheduler as DESIGN §3.4 defines it.
//!
//! For every (ready job, idle accelerator) pair a score combines urgency (the job's best-case
//! slack, so a slow accelerator never looks more urgent), the accelerator's latency and
//! energy fit, the model's recent misses (fairness), progress and staleness, weighted by the
//! system load ρ. Pairs that would finish late are taken only when no pair that makes its
//! deadline exists for any ready job. The best pair runs its next block of B layers; at the
//! block boundary the choice is made again (preemption only there; migration costs the
//! boundary activation's off-chip write and read). Infeasible jobs are dropped proactively,
//! with the same frame of their downstream models. Every score is O(1) (suffix sums).

use super::{Pick, Policy};
use crate::engine::{DropReason, Engine, JobId};

/// Score weights and the drop threshold; the online tuner moves them.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Weights {
    pub urgency: f64,
    pub fairness: f64,
    pub latency: f64,
    pub energy: f64,
    pub progress: f64,
    pub staleness: f64,
    /// Drop when d − t − L* < −θ_drop · period.
    pub theta_drop: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            urgency: 1.0,
            fairness: 0.5,
            latency: 0.5,
            energy: 0.25,
            progress: 0.25,
            staleness: 0.5,
            theta_drop: 0.0,
        }
    }
}

impl Weights {
    pub const DIM: usize = 7;
    pub fn to_vec(self) -> [f64; 7] {
        [
            self.urgency,
            self.fairness,
            self.latency,
            self.energy,
            self.progress,
            self.staleness,
            self.theta_drop,
        ]
    }
    pub fn from_vec(v: [f64; 7]) -> Self {
        Weights {
            urgency: v[0].max(0.0),
            fairness: v[1].max(0.0),
            latency: v[2].max(0.0),
            energy: v[3].max(0.0),
            progress: v[4].max(0.0),
            staleness: v[5].max(0.0),
            theta_drop: v[6].clamp(0.0, 1.0),
        }
    }
}

/// The SDRM3 policy.
#[derive(Debug, Clone)]
pub struct Sdrm3 {
    pub weights: Weights,
    /// Layers per dispatch block (B).
    pub block: usize,
    /// Block-aware costs: L(j,a) = the next block on a (migration included) + the rest of the
    /// job at its per-layer best, and L*(j) = the per-layer best of the remaining layers.
    /// SDRM3 re-decides at every block boundary, so a job is not bound to finish on the
    /// accelerator of its next block. Off by default (the literal reading: L(j,a) = all
    /// remaining layers on a). Measured with `bench sdrm3`: on it wins big on the Quad set-up
    /// (social_interactionB 0.81 → 0.002 of xrbench's UXCost) but loses on Dual WS+OS ones
    /// (outdoor_activity_A 0.014 → 0.68), so the geomean is worse; kept for the tuner to choose.
    pub layerwise: bool,
}

impl Default for Sdrm3 {
    fn default() -> Self {
        Sdrm3 {
            weights: Weights::default(),
            block: 1,
            layerwise: false,
        }
    }
}

impl Sdrm3 {
    fn best(&self, e: &Engine, j: &crate::engine::Job) -> (f64, f64) {
        if self.layerwise {
            e.layerwise_best(j, j.next_layer)
        } else {
            e.best_remaining(j)
        }
    }
    fn pair(&self, e: &Engine, j: &crate::engine::Job, a: usize) -> (f64, f64) {
        if self.layerwise {
            let to = (j.next_layer + self.block.max(1)).min(j.end_layer);
            let (bl, be, _) = e.block_cost(j, a, j.next_layer, to);
            let (rl, re) = e.layerwise_best(j, to);
            (bl + rl, be + re)
        } else {
            e.remaining(j, a)
        }
    }
}

impl Policy for Sdrm3 {
    fn name(&self) -> &'static str {
        "sdrm3"
    }
    fn drops_expired(&self) -> bool {
        false // it drops proactively, before the deadline passes
    }
    fn drops(&mut self, now: f64, e: &Engine) -> Vec<(JobId, DropReason)> {
        e.ready_jobs()
            .filter(|j| {
                let (l_star, _) = self.best(e, j);
                j.deadline_ms - now - l_star < -self.weights.theta_drop * e.period(j.model)
            })
            .map(|j| (j.id, DropReason::Infeasible))
            .collect()
    }
    fn pick(&mut self, now: f64, e: &Engine) -> Option<Pick> {
        let w = self.weights;
        let rho = e.load();
        let idle: Vec<usize> = e.idle_accs().collect();
        // (on_time, score, deadline, model, job, acc)
        let mut best: Option<(bool, f64, f64, usize, JobId, usize)> = None;
        for j in e.ready_jobs() {
            let (l_star, e_star) = self.best(e, j);
            let p = e.period(j.model);
            let u = (1.0 - (j.deadline_ms - now - l_star) / p).clamp(0.0, 1.0);
            let f = e.fairness(j.model);
            let g = j.next_layer as f64 / j.end_layer.max(1) as f64;
            let n = if e.stale(j) { 1.0 } else { 0.0 };
            let base = w.urgency * u * (0.5 + 0.5 * rho) + w.fairness * f + w.progress * g
                - w.staleness * n;
            for &a in idle.iter().filter(|&&a| e.allowed(j.model, a)) {
                let (l, en) = self.pair(e, j, a);
                let on_time = now + l <= j.deadline_ms;
                let s = base
                    + w.latency * (l_star / l.max(1e-12))
                    + w.energy * (e_star / en.max(1e-12)) * (1.0 - rho);
                let cand = (on_time, s, j.deadline_ms, j.model, j.id, a);
                let better = match &best {
                    None => true,
                    Some(b) => {
                        if cand.0 != b.0 {
                            cand.0
                        } else if (cand.1 - b.1).abs() > 1e-12 {
                            cand.1 > b.1
                        } else if cand.2 != b.2 {
                            cand.2 < b.2
                        } else {
                            (cand.3, cand.4, cand.5) < (b.3, b.4, b.5)
                        }
                    }
                };
                if better {
                    best = Some(cand);
                }
            }
        }
        best.map(|b| Pick {
            job: b.4,
            acc: b.5,
            layers: self.block,
        })
    }
    fn weights_mut(&mut self) -> Option<&mut Weights> {
        Some(&mut self.weights)
    }
}
