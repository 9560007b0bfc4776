//! The XRBench data the agent needs at run time: whole-model cost per simulated accelerator,
//! the hardware set-ups and the scenarios. A view over the scheduling core's embedded
//! [`edgeplane_scheduler::Catalog`] (compiled in from `configs/xrbench/`), so the data is
//! parsed once per process and a deployed agent needs no data directory for it.

use edgeplane_scheduler::Catalog as CoreCatalog;
use std::collections::BTreeMap;
use std::sync::OnceLock;

/// The shipped GPU profiles, parsed once per process.
pub fn gpu_data() -> Result<&'static edgeplane_gpu::GpuData, String> {
    static CELL: OnceLock<Result<edgeplane_gpu::GpuData, String>> = OnceLock::new();
    CELL.get_or_init(|| edgeplane_gpu::GpuData::shipped().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(Clone::clone)
}

/// Errors reading the embedded data or looking names up in it.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("embedded {file} is malformed: {reason}")]
    Malformed { file: &'static str, reason: String },
    #[error("unknown hardware set-up {name:?}; valid: {valid}")]
    UnknownHardware { name: String, valid: String },
    #[error("unknown scenario {name:?}; valid: {valid}")]
    UnknownScenario { name: String, valid: String },
}

/// The scheduler's types, not copies: a simulated sub-accelerator, a scenario and its models.
pub use edgeplane_scheduler::catalog::{AccSpec as HwAccelerator, Scenario, ScenarioModel};

/// Whole-model cost of one model on one (cost tag, dataflow) accelerator type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cost {
    pub latency_ms: f64,
    /// XRBench "mJ" (= Σ nJ / 1e6).
    pub energy_mj: f64,
    pub layers: u32,
}

/// The agent's view of the embedded XRBench data. Built once per process, shared read-only.
#[derive(Debug)]
pub struct Catalog {
    core: &'static CoreCatalog,
    systems: BTreeMap<String, Vec<HwAccelerator>>,
    scenarios: BTreeMap<String, Scenario>,
    /// Servable model name → (cost model, default relative deadline in ms).
    models: BTreeMap<String, (String, u64)>,
}

impl Catalog {
    /// The process-wide catalogue.
    pub fn get() -> Result<&'static Catalog, CatalogError> {
        static CELL: OnceLock<Result<Catalog, String>> = OnceLock::new();
        CELL.get_or_init(|| Catalog::build().map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|reason| CatalogError::Malformed {
                file: "configs/xrbench",
                reason: reason.clone(),
            })
    }

    fn build() -> Result<Catalog, CatalogError> {
        let core = CoreCatalog::embedded();
        let mut systems = BTreeMap::new();
        for name in core.hardware_names() {
            let hw = core.hardware(&name).map_err(|e| CatalogError::Malformed {
                file: "hardware.toml",
                reason: e.to_string(),
            })?;
            let accs = hw.accelerators.clone();
            systems.insert(name, accs);
        }
        let mut scenarios = BTreeMap::new();
        let mut models: BTreeMap<String, (String, u64)> = BTreeMap::new();
        for name in core.scenario_names() {
            let sc = core.scenario(&name).map_err(|e| CatalogError::Malformed {
                file: "scenarios.toml",
                reason: e.to_string(),
            })?;
            for m in &sc.models {
                models
                    .entry(m.name.clone())
                    .or_insert((m.cost_model.clone(), u64::from(m.period_ms.max(1))));
            }
            scenarios.insert(name, sc.clone());
        }
        Ok(Catalog {
            core,
            systems,
            scenarios,
            models,
        })
    }

    /// The sub-accelerators of an XRBench hardware set-up, in simulator id order.
    pub fn hardware(&self, name: &str) -> Result<&[HwAccelerator], CatalogError> {
        self.systems
            .get(name)
            .map(Vec::as_slice)
            .ok_or_else(|| CatalogError::UnknownHardware {
                name: name.into(),
                valid: self.systems.keys().cloned().collect::<Vec<_>>().join(", "),
            })
    }

    pub fn scenario(&self, name: &str) -> Result<&Scenario, CatalogError> {
        self.scenarios
            .get(name)
            .ok_or_else(|| CatalogError::UnknownScenario {
                name: name.into(),
                valid: self
                    .scenarios
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// Every model name the agent can serve, sorted.
    pub fn model_names(&self) -> impl Iterator<Item = &str> {
        self.models.keys().map(String::as_str)
    }

    /// The cost-table name of a servable model (differs for aliases like `D2go_FastRCNN`).
    pub fn cost_model(&self, model: &str) -> Option<&str> {
        self.models.get(model).map(|(c, _)| c.as_str())
    }

    /// Default relative deadline of a model (its period in the first scenario that uses it).
    pub fn default_deadline_ms(&self, model: &str) -> Option<u64> {
        self.models.get(model).map(|(_, p)| *p)
    }

    /// Whole-model cost of `model` on a simulated accelerator, as XRBench computes it
    /// (latency = float32(Σ cycles) / 1e6).
    pub fn cost(&self, model: &str, acc: &HwAccelerator) -> Option<Cost> {
        let (cost_model, _) = self.models.get(model)?;
        let c = self.core.cost(cost_model, acc).ok()?;
        Some(Cost {
            latency_ms: f64::from(c.xrbench_latency_ms()),
            energy_mj: c.energy_mj(0, c.layers()),
            layers: c.layers() as u32,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_match_the_readme_totals() {
        let c = Catalog::get().unwrap();
        let hw = c.hardware("Dual_4K_WS_OS").unwrap();
        assert_eq!(hw.len(), 2);
        // README table: ES_RITNet Dual_4K WS 2.79 ms / 36.6 mJ, OS 3.32 ms / 26.6 mJ.
        let ws = c.cost("ES_RITNet", &hw[0]).unwrap();
        let os = c.cost("ES_RITNet", &hw[1]).unwrap();
        assert!((ws.latency_ms - 2.79).abs() < 0.01, "{ws:?}");
        assert!((ws.energy_mj - 36.6).abs() < 0.1, "{ws:?}");
        assert!((os.latency_ms - 3.32).abs() < 0.01, "{os:?}");
        assert_eq!(c.default_deadline_ms("ES_RITNet"), Some(16));
        assert!(c.cost("D2go_FastRCNN", &hw[0]).is_some(), "alias resolves");
        assert!(c
            .hardware("Nope")
            .unwrap_err()
            .to_string()
            .contains("Dual_4K_WS_OS"));
    }
}
