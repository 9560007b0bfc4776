//! The XRBench data the agent needs at run time: whole-model cost per simulated accelerator,
//! the hardware set-ups and the scenarios. The files are embedded at build time from
//! `configs/xrbench/` so a deployed agent needs no data directory for them.

use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

const HARDWARE_TOML: &str = include_str!("../../configs/xrbench/hardware.toml");
const SCENARIOS_TOML: &str = include_str!("../../configs/xrbench/scenarios.toml");
const LAYER_COSTS_CSV: &str = include_str!("../../configs/xrbench/layer_costs.csv");

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

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct HwAccelerator {
    pub id: u32,
    pub name: String,
    pub dataflow: String,
    pub pes: u32,
    pub offchip_bw: u32,
    pub cost_tag: String,
}

#[derive(Debug, Clone, Deserialize)]
struct HwSystem {
    accelerators: Vec<HwAccelerator>,
}

#[derive(Debug, Deserialize)]
struct HardwareFile {
    systems: BTreeMap<String, HwSystem>,
}

/// One model of a scenario.
#[derive(Debug, Clone, Deserialize)]
pub struct ScenarioModel {
    pub name: String,
    pub cost_model: String,
    pub fps: u32,
    pub period_ms: u64,
    #[serde(default)]
    pub depends_on: Vec<String>,
    #[serde(default = "one")]
    pub probability: f64,
}
fn one() -> f64 {
    1.0
}

#[derive(Debug, Clone, Deserialize)]
pub struct Scenario {
    pub models: Vec<ScenarioModel>,
}

#[derive(Debug, Deserialize)]
struct ScenariosFile {
    scenarios: BTreeMap<String, Scenario>,
}

/// Whole-model cost of one model on one (cost tag, dataflow) accelerator type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cost {
    pub latency_ms: f64,
    /// XRBench "mJ" (= Σ nJ / 1e6).
    pub energy_mj: f64,
    pub layers: u32,
}

/// The parsed, embedded XRBench data. Built once per process (parsing the 4.8 MB cost table
/// takes a moment), shared read-only afterwards.
#[derive(Debug)]
pub struct Catalog {
    systems: BTreeMap<String, HwSystem>,
    scenarios: BTreeMap<String, Scenario>,
    /// (cost model, cost tag, dataflow) → whole-model cost.
    costs: HashMap<(String, String, String), Cost>,
    /// Servable model name → (cost model, default relative deadline in ms).
    models: BTreeMap<String, (String, u64)>,
}

impl Catalog {
    /// The process-wide catalogue.
    pub fn get() -> Result<&'static Catalog, CatalogError> {
        static CELL: OnceLock<Result<Catalog, String>> = OnceLock::new();
        CELL.get_or_init(|| Catalog::parse().map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|reason| CatalogError::Malformed {
                file: "configs/xrbench",
                reason: reason.clone(),
            })
    }

    fn parse() -> Result<Catalog, CatalogError> {
        let hw: HardwareFile =
            toml::from_str(HARDWARE_TOML).map_err(|e| CatalogError::Malformed {
                file: "hardware.toml",
                reason: e.to_string(),
            })?;
        let sc: ScenariosFile =
            toml::from_str(SCENARIOS_TOML).map_err(|e| CatalogError::Malformed {
                file: "scenarios.toml",
                reason: e.to_string(),
            })?;
        let bad = |reason: String| CatalogError::Malformed {
            file: "layer_costs.csv",
            reason,
        };
        let mut costs: HashMap<(String, String, String), Cost> = HashMap::new();
        let mut cycles: HashMap<(String, String, String), f64> = HashMap::new();
        for (i, line) in LAYER_COSTS_CSV.lines().enumerate().skip(1) {
            let f: Vec<&str> = line.split(',').collect();
            if f.len() < 21 {
                return Err(bad(format!("line {} has {} fields", i + 1, f.len())));
            }
            let lat: f64 = f[19]
                .parse()
                .map_err(|e| bad(format!("line {}: latency_cycles: {e}", i + 1)))?;
            let en: f64 = f[20]
                .parse()
                .map_err(|e| bad(format!("line {}: energy_nj: {e}", i + 1)))?;
            let key = (f[0].to_string(), f[13].to_string(), f[12].to_string());
            *cycles.entry(key.clone()).or_default() += lat;
            let c = costs.entry(key).or_insert(Cost {
                latency_ms: 0.0,
                energy_mj: 0.0,
                layers: 0,
            });
            c.energy_mj += en / 1e6;
            c.layers += 1;
        }
        // XRBench's whole-model latency is float32(Σ cycles) / 1e6.
        for (k, c) in costs.iter_mut() {
            c.latency_ms = f64::from(cycles[k] as f32) / 1e6;
        }
        let mut models: BTreeMap<String, (String, u64)> = BTreeMap::new();
        for s in sc.scenarios.values() {
            for m in &s.models {
                models
                    .entry(m.name.clone())
                    .or_insert((m.cost_model.clone(), m.period_ms.max(1)));
            }
        }
        Ok(Catalog {
            systems: hw.systems,
            scenarios: sc.scenarios,
            costs,
            models,
        })
    }

    /// The sub-accelerators of an XRBench hardware set-up, in simulator id order.
    pub fn hardware(&self, name: &str) -> Result<&[HwAccelerator], CatalogError> {
        self.systems
            .get(name)
            .map(|s| s.accelerators.as_slice())
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

    /// Whole-model cost of `model` on a simulated accelerator.
    pub fn cost(&self, model: &str, acc: &HwAccelerator) -> Option<Cost> {
        let (cost_model, _) = self.models.get(model)?;
        self.costs
            .get(&(
                cost_model.clone(),
                acc.cost_tag.clone(),
                acc.dataflow.clone(),
            ))
            .copied()
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
