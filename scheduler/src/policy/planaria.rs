//! `planaria`: Planaria (Ghodrati et al., MICRO'20), dynamic architecture fission for
//! multi-tenant DNN acceleration. Planaria re-splits its PE array on every arrival among the
//! active tasks, giving each the smallest sub-array (from its 1K/2K/4K/8K configurations) that
//! meets its deadline, in deadline order, and re-allocates at layer (tile) boundaries.
//! Here the sub-arrays are the set-up's physical sub-accelerators: at each decision, jobs in
//! earliest-deadline order take the idle accelerator with the fewest PEs whose remaining
//! latency still meets the deadline (the fastest one if none does), one layer block at a
//! time, so allocations change at layer boundaries as jobs arrive. Faithfulness: fusing two
//! sub-accelerators into a larger array is not modelled (the cost tables have no fused
//! configurations for heterogeneous set-ups).

use super::{fastest_idle, Pick, Policy};
use crate::engine::Engine;

pub struct Planaria {
    pub block: usize,
}

impl Default for Planaria {
    fn default() -> Self {
        Planaria { block: 1 }
    }
}

impl Policy for Planaria {
    fn name(&self) -> &'static str {
        "planaria"
    }
    fn pick(&mut self, now: f64, e: &Engine) -> Option<Pick> {
        // deadline order; a job with no allowed idle accelerator is skipped, not a stop
        let mut jobs: Vec<&crate::engine::Job> = e.ready_jobs().collect();
        jobs.sort_by(|a, b| {
            a.deadline_ms
                .total_cmp(&b.deadline_ms)
                .then(a.id.cmp(&b.id))
        });
        jobs.into_iter().find_map(|j| {
            let fits = e
                .idle_accs_for(j)
                .filter(|&a| now + e.remaining(j, a).0 <= j.deadline_ms)
                .min_by_key(|&a| (e.accelerators()[a].spec.pes, a));
            fits.or_else(|| fastest_idle(e, j)).map(|acc| Pick {
                job: j.id,
                acc,
                layers: self.block,
            })
        })
    }
}
