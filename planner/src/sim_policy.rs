//! The `adaptive` mode of the GPU simulator: the same [`crate::plan`] the coordinator runs, fed from
//! the simulator's view (each simulated GPU is one GPU of its node) with the coordinator's rate
//! estimator ([`crate::rate::RateEstimator`], the same `Config::band`): every virtual second's
//! arrivals of a deployed model (refused ones included) are one observation; a model's estimate
//! is used once it has watched one time constant (before that it is planned on its deployed rate).

use crate::rate::RateEstimator;
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
    /// One estimator per scenario model (reset while it is not deployed), and how many whole
    /// virtual seconds of arrivals they have seen.
    estimators: Vec<RateEstimator>,
    seen_s: usize,
}

impl Adaptive {
    pub fn new(cfg: Config) -> Self {
        Adaptive {
            cfg,
            current: None,
            history: Vec::new(),
            estimators: Vec::new(),
            seen_s: 0,
        }
    }

    /// Feed the estimators the whole seconds of arrivals not seen yet; returns each model's
    /// estimate once it has watched a time constant.
    fn observe(&mut self, v: &PlanView<'_>) -> Vec<Option<f64>> {
        let tau = self.cfg.band.tau_s;
        let n = v.scenario.models.len();
        if self.estimators.len() != n {
            self.estimators = vec![RateEstimator::new(tau); n];
        }
        let now = v.now_s.floor().max(0.0) as usize;
        for sec in self.seen_s..now {
            for m in 0..n {
                if !v.deployed[m] {
                    self.estimators[m] = RateEstimator::new(tau);
                    continue;
                }
                let c = v.arrivals_per_s[m].get(sec).copied().unwrap_or(0);
                self.estimators[m].observe(c as f64, 1.0);
            }
        }
        self.seen_s = self.seen_s.max(now);
        self.estimators
            .iter()
            .map(|e| e.rate().filter(|_| e.watched_s() >= tau))
            .collect()
    }
}

/// The planner's inputs for a simulator view.
pub fn inputs_from_view(v: &PlanView<'_>, observed: &[Option<f64>]) -> Result<Inputs, GpuError> {
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
            observed_peak_rps: observed.get(i).copied().flatten(),
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
    fn replans(&self) -> Option<usize> {
        Some(self.history.len().saturating_sub(1))
    }
    fn plan(&mut self, v: &PlanView<'_>) -> Result<Option<Layout>, GpuError> {
        let observed = self.observe(v);
        let inputs = inputs_from_view(v, &observed)?;
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
