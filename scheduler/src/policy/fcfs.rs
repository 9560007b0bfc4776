//! `fcfs`: first come, first served. Global arrival order, the fastest idle accelerator,
//! whole model, no preemption. The classic baseline every RTMM paper compares against.

use super::{fastest_idle, Pick, Policy};
use crate::engine::Engine;

pub struct Fcfs;

impl Policy for Fcfs {
    fn name(&self) -> &'static str {
        "fcfs"
    }
    fn pick(&mut self, _now: f64, e: &Engine) -> Option<Pick> {
        // ready_jobs() iterates in release order; the first that has an allowed idle
        // accelerator runs (an older job waiting for its busy accelerator blocks no one)
        e.ready_jobs().find_map(|j| {
            fastest_idle(e, j).map(|acc| Pick {
                job: j.id,
                acc,
                layers: usize::MAX,
            })
        })
    }
}
