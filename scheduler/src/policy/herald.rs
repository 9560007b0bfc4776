//! `herald`: Herald (Kwon et al., HPCA'21), heterogeneous dataflow accelerators for
//! multi-DNN workloads. Herald assigns every layer of every model to a sub-accelerator ahead
//! of time, greedily by EDP with load balancing, then runs each sub-accelerator's layers in
//! FIFO order. Here: on first use of a model the layer-to-accelerator map is computed greedily
//! (each layer to the accelerator minimising EDP × (1 + that accelerator's share of the load
//! assigned so far, weighted by the model's rate)); at run time a job's next run of consecutive
//! layers mapped to the same accelerator is dispatched when that accelerator is idle, jobs in
//! release (FIFO) order. Faithfulness: Herald's scheduler also reorders layers across models
//! to fill idle gaps; that search is not reproduced, only its assignment and FIFO execution.

use super::{Pick, Policy};
use crate::engine::Engine;

#[derive(Default)]
pub struct Herald {
    map: Vec<Vec<usize>>, // [model][layer] -> acc
    epoch: u64,
}

impl Herald {
    fn ensure_map(&mut self, e: &Engine) {
        if self.map.len() == e.models().len() && self.epoch == e.allowed_epoch() {
            return;
        }
        self.epoch = e.allowed_epoch();
        let na = e.accelerators().len();
        let mut load = vec![0.0f64; na];
        let mut models: Vec<usize> = (0..e.models().len()).collect();
        // heavier demand first (rate × best whole latency)
        let demand = |m: usize| e.demand(m);
        models.sort_by(|&a, &b| demand(b).partial_cmp(&demand(a)).unwrap());
        self.map = vec![Vec::new(); e.models().len()];
        for m in models {
            let n = e.layers(m);
            let mut row = Vec::with_capacity(n);
            for l in 0..n {
                let probe = e.probe(m, l, l + 1);
                let total: f64 = load.iter().sum::<f64>().max(1e-9);
                let best = (0..na)
                    .filter(|&a| e.allowed(m, a))
                    .min_by(|&a, &b| {
                        let ca = e.block_cost(&probe, a, l, l + 1);
                        let cb = e.block_cost(&probe, b, l, l + 1);
                        let ka = ca.0 * ca.1 * (1.0 + load[a] / total);
                        let kb = cb.0 * cb.1 * (1.0 + load[b] / total);
                        ka.partial_cmp(&kb).unwrap().then(a.cmp(&b))
                    })
                    .unwrap();
                load[best] += e.block_cost(&probe, best, l, l + 1).0 / e.period(m);
                row.push(best);
            }
            self.map[m] = row;
        }
    }
}

impl Policy for Herald {
    fn name(&self) -> &'static str {
        "herald"
    }
    fn pick(&mut self, _now: f64, e: &Engine) -> Option<Pick> {
        self.ensure_map(e);
        for j in e.ready_jobs() {
            let acc = self.map[j.model][j.next_layer];
            if e.accelerators()[acc].busy.is_none() {
                let mut run = 1;
                while j.next_layer + run < j.end_layer
                    && self.map[j.model][j.next_layer + run] == acc
                {
                    run += 1;
                }
                return Some(Pick {
                    job: j.id,
                    acc,
                    layers: run,
                });
            }
        }
        None
    }
}
