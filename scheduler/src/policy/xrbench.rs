//! `xrbench`: the XRBench artifact's default runtime (LatencyGreedy), in native time.
//! Per-model FIFO queues visited in name order in passes (each pass dispatches at most the
//! head of each queue), each job to the idle accelerator with the lowest whole-model latency,
//! whole-model and non-preemptive. Exactly the dispatcher of `crate::xrbench` (parity mode).

use super::{fastest_idle, Pick, Policy};
use crate::engine::Engine;

#[derive(Default)]
pub struct XrbenchGreedy {
    /// (step, models already served in the current pass)
    pass: (u64, Vec<usize>),
}

impl Policy for XrbenchGreedy {
    fn name(&self) -> &'static str {
        "xrbench"
    }
    fn pick(&mut self, _now: f64, e: &Engine) -> Option<Pick> {
        if self.pass.0 != e.step_seq() {
            self.pass = (e.step_seq(), Vec::new());
        }
        let mut order: Vec<usize> = (0..e.models().len()).collect();
        order.sort_by(|&a, &b| {
            e.models()[a]
                .name
                .as_bytes()
                .cmp(e.models()[b].name.as_bytes())
        });
        for round in 0..2 {
            for &m in &order {
                if round == 0 && self.pass.1.contains(&m) {
                    continue;
                }
                // FIFO head of model m: its oldest unfinished job; it must be ready
                let Some(head) = e.ready_jobs().find(|j| j.model == m) else {
                    continue;
                };
                if let Some(acc) = fastest_idle(e, head) {
                    self.pass.1.push(m);
                    return Some(Pick {
                        job: head.id,
                        acc,
                        layers: usize::MAX,
                    });
                }
            }
            // every model served once in this pass: start a new pass
            self.pass.1.clear();
        }
        None
    }
}
