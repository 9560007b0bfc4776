//! GPU MPS shares behind the scheduler's cost-model seam ([`edgeplane_scheduler::CostModel`]):
//! a model on a partition is one block (the profiles have no per-layer data); its latency is the
//! profile row for (batch, share) times gpulet's alpha over the co-runners, its energy the board's
//! dynamic power for that share over that time (idle power belongs to the board, not to a batch).

use crate::{GpuData, Load};
use edgeplane_scheduler::{AccelKind, CoRunner, Cost, CostModel, Error};

/// One model on one GPU partition.
#[derive(Debug, Clone)]
pub struct GpuShareCost<'a> {
    pub data: &'a GpuData,
    /// GPU profile name.
    pub gpu: String,
    /// Profile model name.
    pub model: String,
    /// MPS share of the partition (0, 1].
    pub share: f64,
}

impl CostModel for GpuShareCost<'_> {
    fn kind(&self) -> AccelKind {
        AccelKind::GpuShare
    }
    fn blocks(&self) -> usize {
        1
    }
    fn cost(
        &self,
        from: usize,
        to: usize,
        batch: u32,
        co_runners: &[CoRunner<'_>],
    ) -> Result<Cost, Error> {
        if (from, to) != (0, 1) {
            return Err(Error::Invalid {
                field: "layers",
                why: format!(
                    "a GPU share runs the whole model as one block (0..1), not {from}..{to}"
                ),
            });
        }
        let bad = |e: crate::GpuError| Error::Invalid {
            field: "gpu profile",
            why: e.to_string(),
        };
        let l = self
            .data
            .profiles
            .latency_ms(&self.gpu, &self.model, batch as f64, self.share)
            .map_err(bad)?;
        let me = Load {
            model: &self.model,
            batch: batch as f64,
            share: self.share,
        };
        let others: Vec<Load<'_>> = co_runners
            .iter()
            .map(|c| Load {
                model: c.model,
                batch: c.batch as f64,
                share: c.share,
            })
            .collect();
        let latency_ms = l * self.data.interference.alpha(me, &others);
        let pm = self.data.energy.gpu(&self.gpu).map_err(bad)?;
        Ok(Cost {
            latency_ms,
            // W x ms = mJ
            energy_mj: (pm.max_w - pm.idle_w) * self.share * latency_ms,
        })
    }
}
