//! `prema`: PREMA (Choi & Rhu, HPCA'20), a predictive multi-task scheduler for NPUs.
//! Each job accumulates tokens = priority × normalised waiting time (waiting / its isolated
//! latency, i.e. its slowdown); jobs whose tokens reach the threshold (here: half the current
//! maximum) are candidates, and among them the shortest estimated job runs (PREMA's SJF step).
//! Preemption at layer boundaries (PREMA's checkpoint granularity). Priorities follow PREMA's
//! three levels (1, 3, 9), assigned by frame rate: the shortest periods get 9.
//! Faithfulness: tokens are recomputed from waiting time at each decision instead of being
//! incremented per scheduling quantum; with a fixed quantum the two are proportional.

use super::{fastest_idle, Pick, Policy};
use crate::engine::Engine;

pub struct Prema {
    pub block: usize,
}

impl Default for Prema {
    fn default() -> Self {
        Prema { block: 1 }
    }
}

fn priority(e: &Engine, model: usize) -> f64 {
    let p = e.period(model);
    let s = e.shortest_period();
    if p <= s * 1.5 {
        9.0
    } else if p <= s * 4.0 {
        3.0
    } else {
        1.0
    }
}

impl Policy for Prema {
    fn name(&self) -> &'static str {
        "prema"
    }
    fn pick(&mut self, now: f64, e: &Engine) -> Option<Pick> {
        let cands: Vec<(&crate::engine::Job, f64, f64)> = e
            .ready_jobs()
            .map(|j| {
                let (l, _) = e.best_remaining(j);
                let token =
                    priority(e, j.model) * ((now - j.release_ms).max(0.0) + 1e-3) / l.max(1e-6);
                (j, token, l)
            })
            .collect();
        let max_t = cands.iter().map(|c| c.1).fold(0.0, f64::max);
        // candidates (tokens at the threshold) shortest first, then the rest by tokens: the
        // first with an allowed idle accelerator runs, so a candidate whose accelerators are
        // busy does not leave the others idle
        let (mut hot, mut rest): (Vec<_>, Vec<_>) =
            cands.into_iter().partition(|c| c.1 >= 0.5 * max_t);
        hot.sort_by(|a, b| a.2.total_cmp(&b.2).then(a.0.id.cmp(&b.0.id)));
        rest.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.id.cmp(&b.0.id)));
        hot.into_iter().chain(rest).find_map(|(j, _, _)| {
            fastest_idle(e, j).map(|acc| Pick {
                job: j.id,
                acc,
                layers: self.block,
            })
        })
    }
}
