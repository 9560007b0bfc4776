//! The `adaptive` mode of the GPU simulator: the same [`crate::plan`] the coordinator runs, fed from
//! the simulator's view (each simulated GPU is one GPU of its node, the observed rate is the peak of
//! 10-s arrival rates over the last 60 s (a 1-s peak of Poisson
//! traffic moves by more than the 5 % hysteresis band on its own)).

use crate::{plan, Config, GpuSlot, Inputs, ModelDemand, Node, Outcome, Plan};
use edgeplane_gpu::sim::{Layout, PartitionSpec, PlanPolicy, PlanView, Tenant};
use edgeplane_gpu::GpuError;
use std::collections::BTreeMap;

/// Adaptive spatial-temporal partitioning driven by the planner.
#[derive(Debug, Default)]
pub struct Adaptive {
    pub cfg: Config,
    current: Option<Plan>,
    /// Every outcome that re-planned, with its time (for reports).
    pub history: Vec<(f64, Outcome)>,
}

impl Adaptive {
    pub fn new(cfg: Config) -> Self {
        Adaptive {
            cfg,
            current: None,
            history: Vec::new(),
        }
    }
}

/// The planner's inputs for a simulator view.
pub fn inputs_from_view(v: &PlanView<'_>) -> Result<Inputs, GpuError> {
    let mut nodes: BTreeMap<String, Vec<GpuSlot>> = BTreeMap::new();
    for (i, g) in v.scenario.gpus.iter().enumerate() {
        let info = v.data.profiles.gpu(&g.kind)?;
        nodes.entry(g.node.clone()).or_default().push(GpuSlot {
            id: format!("gpu{i}"),
            kind: g.kind.clone(),
            memory_mib: info.memory_mib,
        });
    }
    let mut models = Vec::new();
    for (i, m) in v.scenario.models.iter().enumerate() {
        if !v.deployed[i] {
            continue;
        }
        models.push(ModelDemand {
            name: m.name.clone(),
            profile: m.profile.clone(),
            slo_ms: m.slo_ms,
            requested_rps: m.requested_rps,
            observed_peak_rps: v.observed_peak_rps[i],
            mem_mib: v.data.profiles.model(&m.profile)?.gpu_mem_mib,
            value: m.value,
        });
    }
    Ok(Inputs {
        nodes: nodes
            .into_iter()
            .map(|(id, gpus)| Node {
                id,
                healthy: true,
                gpus,
            })
            .collect(),
        models,
    })
}

/// Translate a plan into the simulator's layout.
pub fn layout_of(plan: &Plan, v: &PlanView<'_>) -> Layout {
    let idx = |name: &str| v.scenario.models.iter().position(|m| m.name == name);
    let partitions = plan
        .partitions
        .iter()
        .filter_map(|p| {
            let gpu: usize = p.gpu.strip_prefix("gpu")?.parse().ok()?;
            Some(PartitionSpec {
                gpu,
                share: Some(p.share_pct as f64 / 100.0),
                tenants: p
                    .tenants
                    .iter()
                    .filter_map(|t| {
                        Some(Tenant {
                            model: idx(&t.model)?,
                            weight: t.rate_rps,
                            max_batch: t.max_batch,
                        })
                    })
                    .collect(),
            })
        })
        .collect();
    Layout {
        partitions,
        shed: plan.shed.iter().filter_map(|s| idx(&s.model)).collect(),
    }
}

impl PlanPolicy for Adaptive {
    fn name(&self) -> &str {
        "adaptive"
    }
    fn interval_s(&self) -> f64 {
        1.0
    }
    fn window_s(&self) -> f64 {
        60.0
    }
    fn rate_bucket_s(&self) -> f64 {
        10.0
    }
    fn plan(&mut self, v: &PlanView<'_>) -> Result<Option<Layout>, GpuError> {
        let inputs = inputs_from_view(v)?;
        let out = plan(v.data, &inputs, self.current.as_ref(), &self.cfg)
            .map_err(|e| GpuError::Scenario(e.to_string()))?;
        if !out.replanned {
            return Ok(None);
        }
        let layout = layout_of(&out.plan, v);
        self.current = Some(out.plan.clone());
        self.history.push((v.now_s, out));
        Ok(Some(layout))
    }
}
