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
        let j = e.ready_jobs().min_by(|a, b| {
            a.deadline_ms
                .total_cmp(&b.deadline_ms)
                .then(a.model.cmp(&b.model))
                .then(a.id.cmp(&b.id))
        })?;
        let acc = fastest_idle(e, j)?;
        Some(Pick {
            job: j.id,
            acc,
            layers: self.block,
        })
    }
}
