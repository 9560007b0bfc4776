//! `edf`: earliest deadline first with layer-block preemption (Liu & Layland 1973, as used for
//! DNN accelerators by e.g. the SDRM3/DREAM evaluation). The ready job with the earliest
//! deadline runs its next block of `block` layers on the fastest idle accelerator; at every
//! block boundary the choice is made again, so a more urgent job preempts.

use super::{fastest_idle, Pick, Policy};
use crate::engine::Engine;

pub struct Edf {
    pub block: usize,
}

impl Default for Edf {
    fn default() -> Self {
        Edf { block: 1 }
    }
}

impl Policy for Edf {
    fn name(&self) -> &'static str {
        "edf"
    }
    fn pick(&mut self, _now: f64, e: &Engine) -> Option<Pick> {
        // Earliest deadline first among the jobs that can run now: a job whose allowed
        // accelerators are all busy must not stop the others (partitions make it common).
        let mut jobs: Vec<&crate::engine::Job> = e.ready_jobs().collect();
        jobs.sort_by(|a, b| {
            a.deadline_ms
                .total_cmp(&b.deadline_ms)
                .then(a.model.cmp(&b.model))
                .then(a.id.cmp(&b.id))
        });
        jobs.into_iter().find_map(|j| {
            fastest_idle(e, j).map(|acc| Pick {
                job: j.id,
                acc,
                layers: self.block,
            })
        })
    }
}
