//! `sdrm3`: the SDRM3 real-time multi-model scheduler as DESIGN §3.4 defines it.
//!
//! For every (ready job, idle accelerator) pair a score combines urgency (the job's best-case
//! slack, so a slow accelerator never looks more urgent), the accelerator's latency and
//! energy fit, the model's recent misses (fairness), progress and staleness, weighted by the
//! system load ρ. Pairs that would finish late are taken only when no pair that makes its
//! deadline exists for any ready job. The best pair runs its next block of B layers; at the
//! block boundary the choice is made again (preemption only there; migration costs the
//! boundary activation's off-chip write and read). A job that can no longer make its deadline
//! (by a true lower bound) is dropped only when dropping is worth more than serving it late
//! (DESIGN §3.4, [`Sdrm3::drop_value`]). Every score is O(1) (suffix sums).

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
    /// Drop an infeasible job only when the drop's value exceeds θ_drop × E*(frame)
    /// (0: whenever dropping saves more than it costs).
    pub theta_drop: f64,
    /// Block-aware costs (see [`Sdrm3::layerwise`]): a discrete choice the tuner makes by
    /// replaying the same frames both ways; not part of the continuous vector.
    pub layerwise: bool,
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
            layerwise: false,
        }
    }
}

impl Weights {
    pub const DIM: usize = 7;
    /// Indices into [`Weights::to_vec`] (the tuner perturbs the vector).
    pub const URGENCY: usize = 0;
    pub const FAIRNESS: usize = 1;
    pub const LATENCY: usize = 2;
    pub const ENERGY: usize = 3;
    pub const PROGRESS: usize = 4;
    pub const STALENESS: usize = 5;
    pub const THETA_DROP: usize = 6;
    /// The starting points the tuner compares on the same replayed frames before it starts
    /// its gradient steps: the design's weights, a deadline-first profile (urgency dominant,
    /// close to least-slack-first) and an energy-first one (w_en = 2), each with whole-model
    /// and block-aware costs.
    pub fn profiles() -> [Weights; 6] {
        let d = Weights::default();
        let deadline = Weights {
            urgency: 3.0,
            fairness: 0.25,
            latency: 0.25,
            energy: 0.1,
            progress: 0.1,
            ..d
        };
        let energy = Weights {
            energy: 2.0,
            latency: 0.25,
            ..d
        };
        [
            d,
            Weights {
                layerwise: true,
                ..d
            },
            deadline,
            Weights {
                layerwise: true,
                ..deadline
            },
            energy,
            Weights {
                layerwise: true,
                ..energy
            },
        ]
    }
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
        // NaN-safe: a NaN weight (a broken measurement) becomes 0
        let pos = |x: f64| if x.is_nan() { 0.0 } else { x.max(0.0) };
        Weights {
            urgency: pos(v[Self::URGENCY]),
            fairness: pos(v[Self::FAIRNESS]),
            latency: pos(v[Self::LATENCY]),
            energy: pos(v[Self::ENERGY]),
            progress: pos(v[Self::PROGRESS]),
            staleness: pos(v[Self::STALENESS]),
            theta_drop: pos(v[Self::THETA_DROP]).min(1.0),
            layerwise: false,
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
    fn lw(&self) -> bool {
        self.layerwise || self.weights.layerwise
    }
    fn best(&self, e: &Engine, j: &crate::engine::Job) -> (f64, f64) {
        if self.lw() {
            e.layerwise_best(j, j.next_layer)
        } else {
            e.best_remaining(j)
        }
    }
    fn pair(&self, e: &Engine, j: &crate::engine::Job, a: usize) -> (f64, f64) {
        if self.lw() {
            let to = (j.next_layer + self.block.max(1)).min(j.end_layer);
            let (bl, be, _) = e.block_cost(j, a, j.next_layer, to);
            let (rl, re) = e.layerwise_best(j, to);
            (bl + rl, be + re)
        } else {
            e.remaining(j, a)
        }
    }
}

/// What one miss is worth in mJ under UXCost = Ē × Miss: one more miss adds Ē/N, one more
/// mJ adds Miss/N, so a miss is worth Ē / Miss mJ. Ē is estimated by the mean E* of a frame
/// of the active models, Miss by the recent miss share (floored at 1/(2W): no history is not
/// a zero miss rate).
pub fn miss_value_mj(e: &Engine) -> f64 {
    let n = e.models().len();
    let (mut ebar, mut miss, mut k) = (0.0, 0.0, 0usize);
    for m in 0..n {
        if !e.is_active(m) {
            continue;
        }
        ebar += e.whole_energy_star(m);
        miss += e.fairness(m);
        k += 1;
    }
    if k == 0 {
        return 0.0;
    }
    let floor = 1.0 / (2.0 * crate::engine::FAIR_W as f64);
    (ebar / k as f64) / (miss / k as f64).max(floor)
}

impl Sdrm3 {
    /// The value (in mJ) of dropping ready job `j` now, and its E*(frame); None when the job
    /// may still make its deadline, judged by a true lower bound (every remaining layer on its
    /// fastest allowed accelerator, no migration, starting now), so a feasible job is never
    /// dropped. An infeasible job is a miss whether it is served late or dropped; what differs:
    /// - energy: serving executes its remaining work (at best E*_rem); dropping is charged
    ///   E*(frame) by UXCost, so a nearly finished job is cheaper to serve;
    /// - load: dropping frees L*_rem of accelerator time; under the load ρ₋ⱼ of the *other*
    ///   ready work that saves ρ₋ⱼ · L*_rem / (shortest period) misses (at most one), plus
    ///   w_N more when a newer frame of the same model already waits behind it (staleness);
    ///   with nothing else waiting, freeing time saves nothing;
    /// - the cascade: its downstream frames are dropped with it; each released one that could
    ///   still make its own deadline after this job is served late is a miss that serving would
    ///   not cause; a downstream frame not yet released counts with its trigger probability.
    ///
    /// Misses are converted to mJ with [`miss_value_mj`].
    pub fn drop_value(
        &self,
        now: f64,
        e: &Engine,
        j: &crate::engine::Job,
        (work, capacity): (f64, f64),
        miss_value: f64,
    ) -> Option<(f64, f64)> {
        let (lb, _) = e.layerwise_best(j, j.next_layer);
        if now + lb <= j.deadline_ms {
            return None;
        }
        let (l_rem, e_rem) = e.best_remaining(j);
        let mut whole = j.clone();
        whole.next_layer = 0;
        whole.last_acc = None;
        let e_frame = e.best_remaining(&whole).1;
        // Work that is not running expires at its deadline (the shared rule), so an
        // infeasible job can only complete late if its last block can start in time. If not,
        // serving it only wastes energy before it is dropped anyway (with its cascade): drop.
        let last_block = e
            .layerwise_best(j, j.end_layer.saturating_sub(self.block.max(1)))
            .0;
        let doomed = now + lb - last_block > j.deadline_ms;
        let stale = if e.stale(j) {
            self.weights.staleness
        } else {
            0.0
        };
        let rho_others = ((work - l_rem) / capacity).clamp(0.0, 1.0);
        let relieved = (rho_others * l_rem / e.shortest_period()).min(1.0) + stale;
        let mut cascade = 0.0;
        // an outside request has no downstream frame riding on it
        let request = crate::engine::is_request_frame(j.frame);
        for d in e.downstreams(j.model).filter(|_| !request) {
            let down_lb = e.layerwise_best(&e.probe(d, 0, e.layers(d)), 0).0;
            // (deadline of the downstream frame, weight of its miss)
            let (deadline, weight) = match e.waiting_job(d, j.frame) {
                Some(dj) => (dj.deadline_ms, 1.0),
                None if !e.released(d, j.frame) => (
                    j.deadline_ms - e.period(j.model) + e.period(d),
                    e.trigger_probability(d),
                ),
                None => continue,
            };
            if now + lb + down_lb <= deadline {
                cascade += weight;
            }
        }
        let value = if doomed {
            e_rem + relieved * miss_value
        } else {
            (e_rem - e_frame) + (relieved - cascade) * miss_value
        };
        let value = if value.is_nan() {
            f64::NEG_INFINITY
        } else {
            value
        };
        Some((value, e_frame))
    }
}

impl Policy for Sdrm3 {
    fn name(&self) -> &'static str {
        "sdrm3"
    }
    fn drops(&mut self, now: f64, e: &Engine) -> Vec<(JobId, DropReason)> {
        let miss_value = miss_value_mj(e);
        let load = e.load_parts();
        e.ready_jobs()
            .filter(|j| {
                let v = self.drop_value(now, e, j, load, miss_value);
                v.is_some_and(|(value, e_frame)| value > self.weights.theta_drop * e_frame)
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
                // NaN-safe: a NaN score loses every comparison
                let s = if s.is_nan() { f64::NEG_INFINITY } else { s };
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
