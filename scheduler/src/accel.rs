//! The accelerator-kind / cost-model seam: what the scheduling core needs to know about running
//! part of a model on an accelerator, without knowing what the accelerator is.
//!
//! Two kinds implement it: XRBench NPUs (per-layer tables, [`ModelCost`]; one job at a time, so
//! co-runners do not matter) and GPU MPS shares (the `edgeplane-gpu` crate's `GpuShareCost`: one
//! profile row per batch and share, slowed by co-located partitions). The scheduler stays pure and
//! depends on neither implementation's data; the GPU crate depends on this trait, not the reverse.
//!
//! The [`crate::Engine`] computes every NPU block cost through [`CostModel::cost`]. GPU shares are
//! not engine accelerators yet (see DESIGN.md §4): the agent wiring is the next issue.

use crate::{Error, ModelCost};

/// Which kind of accelerator a cost model describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccelKind {
    /// A fixed-function NPU with per-layer latency/energy tables (XRBench).
    Npu,
    /// A GPU partition with an MPS share of the SMs.
    GpuShare,
}

/// Another batch running at the same time on the same device.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CoRunner<'a> {
    /// Profile model name (e.g. `vgg16`).
    pub model: &'a str,
    pub batch: u32,
    /// Share of the device its partition holds (1.0 when uncapped).
    pub share: f64,
}

/// Latency and energy of a piece of work.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cost {
    pub latency_ms: f64,
    /// Energy in the artifact's "mJ" for NPUs; millijoules for GPU shares.
    pub energy_mj: f64,
}

/// Cost of layers `from..to` of one model (a whole batch of `batch` inputs) on one accelerator,
/// given what runs beside it.
pub trait CostModel {
    fn kind(&self) -> AccelKind;
    /// Number of schedulable blocks (NPU: layers; GPU share: 1, the whole model).
    fn blocks(&self) -> usize;
    fn cost(
        &self,
        from: usize,
        to: usize,
        batch: u32,
        co_runners: &[CoRunner<'_>],
    ) -> Result<Cost, Error>;
}

impl CostModel for ModelCost {
    fn kind(&self) -> AccelKind {
        AccelKind::Npu
    }
    fn blocks(&self) -> usize {
        self.layers()
    }
    /// Table sums; a batch of b runs its frames one after another (b x one frame); an NPU runs one
    /// job at a time, so co-runners do not change the cost.
    fn cost(
        &self,
        from: usize,
        to: usize,
        batch: u32,
        _co_runners: &[CoRunner<'_>],
    ) -> Result<Cost, Error> {
        if from > to || to > self.layers() || batch == 0 {
            return Err(Error::Invalid {
                field: "layers",
                why: format!(
                    "block {from}..{to} batch {batch} outside 0..{} / batch >= 1",
                    self.layers()
                ),
            });
        }
        let b = batch as f64;
        Ok(Cost {
            latency_ms: self.lat_ms(from, to) * b,
            energy_mj: self.energy_mj(from, to) * b,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Catalog;

    #[test]
    fn npu_tables_through_the_seam_equal_the_table_sums() {
        let cat = Catalog::embedded();
        let hw = cat.hardware(&cat.hardware_names()[0]).unwrap();
        let model = &cat.scenario(&cat.scenario_names()[0]).unwrap().models[0].cost_model;
        let c = cat.cost(model, &hw.accelerators[0]).unwrap();
        let n = c.blocks();
        assert_eq!(c.kind(), AccelKind::Npu);
        let all = c.cost(0, n, 1, &[]).unwrap();
        let by_layer: f64 = (0..n).map(|l| c.layer_cycles[l] as f64 / 1e6).sum();
        assert!((all.latency_ms - by_layer).abs() < 1e-9 * by_layer.max(1.0));
        let e: f64 = c.layer_energy_mj.iter().sum();
        assert!((all.energy_mj - e).abs() < 1e-9 * e.max(1.0));
        // co-runners do not change an NPU's cost; a batch of 3 is three frames
        let co = [CoRunner {
            model: "x",
            batch: 8,
            share: 1.0,
        }];
        assert_eq!(c.cost(0, n, 1, &co).unwrap(), all);
        assert!((c.cost(0, n, 3, &[]).unwrap().latency_ms - 3.0 * all.latency_ms).abs() < 1e-9);
        assert!(c.cost(0, n + 1, 1, &[]).is_err());
    }
}
