//! The XRBench-derived catalogue: scenarios, hardware set-ups and per-layer costs.
//!
//! The data is embedded at compile time (from `configs/xrbench/`), so every binary stands
//! alone (an agent in a minimal container has no repository beside it). Costs are kept per
//! (model, accelerator) with suffix sums, so the remaining latency and energy of any job on
//! any accelerator is O(1): the scheduler asks for them at every decision.

use crate::error::Error;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

const SCENARIOS_TOML: &str = include_str!("../../configs/xrbench/scenarios.toml");
const HARDWARE_TOML: &str = include_str!("../../configs/xrbench/hardware.toml");
const LAYER_COSTS_CSV: &str = include_str!("../../configs/xrbench/layer_costs.csv");

/// One model entry of a scenario (a `Network` block of the XRBench scenario file).
#[derive(Debug, Clone, Deserialize)]
pub struct ScenarioModel {
    /// Name as in the scenario file (queues are keyed on it).
    pub name: String,
    /// Name to look up in the cost table.
    pub cost_model: String,
    pub fps: u32,
    /// 1000 / fps in integer division, as XRBench computes it.
    pub period_ms: u32,
    #[serde(default)]
    pub depends_on: Vec<String>,
    #[serde(default = "one")]
    pub probability: f64,
    pub queue_rank: u32,
}

fn one() -> f64 {
    1.0
}

/// A usage scenario: the models that run together, in file order.
#[derive(Debug, Clone, Deserialize)]
pub struct Scenario {
    #[serde(skip)]
    pub name: String,
    pub base_tick_ms: u32,
    pub models: Vec<ScenarioModel>,
}

/// One sub-accelerator of a hardware set-up.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AccSpec {
    pub id: usize,
    pub name: String,
    /// WS (NVDLA-style) or OS (ShiDianNao-style) or RS (Eyeriss-style).
    pub dataflow: String,
    pub pes: u32,
    pub offchip_bw: u32,
    /// `hw_tag` of the matching rows in `layer_costs.csv`.
    pub cost_tag: String,
}

/// A hardware set-up: the sub-accelerators in simulator id order.
#[derive(Debug, Clone, Deserialize)]
pub struct Hardware {
    #[serde(skip)]
    pub name: String,
    pub accelerators: Vec<AccSpec>,
}

/// Per-layer costs of one model on one accelerator kind, with suffix sums.
#[derive(Debug, Clone, Default)]
pub struct ModelCost {
    /// Latency of each layer, in cycles (1 GHz: 1e6 cycles = 1 ms).
    pub layer_cycles: Vec<u64>,
    /// Energy of each layer in the artifact's "mJ" (nJ / 1e6).
    pub layer_energy_mj: Vec<f64>,
    /// Output activation bytes of each layer (int8: one byte per element), used for the
    /// off-chip write + read when a job migrates between accelerators at that boundary.
    pub layer_out_bytes: Vec<f64>,
    /// suffix_lat_ms[l] = latency of layers l.. in ms (len = layers + 1).
    suffix_lat_ms: Vec<f64>,
    suffix_energy_mj: Vec<f64>,
}

impl ModelCost {
    pub(crate) fn finish(&mut self) {
        let n = self.layer_cycles.len();
        self.suffix_lat_ms = vec![0.0; n + 1];
        self.suffix_energy_mj = vec![0.0; n + 1];
        for l in (0..n).rev() {
            self.suffix_lat_ms[l] = self.suffix_lat_ms[l + 1] + self.layer_cycles[l] as f64 / 1e6;
            self.suffix_energy_mj[l] = self.suffix_energy_mj[l + 1] + self.layer_energy_mj[l];
        }
    }
    pub fn layers(&self) -> usize {
        self.layer_cycles.len()
    }
    /// Latency (ms) of layers `from..to`.
    pub fn lat_ms(&self, from: usize, to: usize) -> f64 {
        self.suffix_lat_ms[from] - self.suffix_lat_ms[to]
    }
    /// Energy (mJ) of layers `from..to`.
    pub fn energy_mj(&self, from: usize, to: usize) -> f64 {
        self.suffix_energy_mj[from] - self.suffix_energy_mj[to]
    }
    /// Whole-model latency exactly as XRBench computes it: float32(Σ cycles) / 1e6.
    pub fn xrbench_latency_ms(&self) -> f32 {
        (self.layer_cycles.iter().sum::<u64>() as f32) / 1e6f32
    }
    /// Whole-model energy as XRBench stores it: float32(Σ nJ / 1e6).
    pub fn xrbench_energy_mj(&self) -> f32 {
        self.energy_mj(0, self.layers()) as f32
    }
}

/// Everything the scheduler knows about workloads and hardware.
#[derive(Debug)]
pub struct Catalog {
    pub(crate) scenarios: BTreeMap<String, Scenario>,
    pub(crate) hardware: BTreeMap<String, Hardware>,
    /// (cost_model, dataflow, cost_tag) -> costs
    pub(crate) costs: HashMap<(String, String, String), ModelCost>,
}

#[derive(Deserialize)]
struct ScenarioFile {
    scenarios: BTreeMap<String, Scenario>,
}
#[derive(Deserialize)]
struct HardwareFile {
    systems: BTreeMap<String, Hardware>,
}

impl Catalog {
    /// The catalogue compiled into the binary (parsed once per process).
    pub fn embedded() -> &'static Catalog {
        static CAT: OnceLock<Catalog> = OnceLock::new();
        CAT.get_or_init(|| {
            Catalog::parse(SCENARIOS_TOML, HARDWARE_TOML, LAYER_COSTS_CSV)
                .expect("the embedded XRBench catalogue parses")
        })
    }

    /// Load a catalogue from a directory holding `scenarios.toml`, `hardware.toml` and
    /// `layer_costs.csv` (the layout of `configs/xrbench/`).
    pub fn from_dir(dir: &std::path::Path) -> Result<Catalog, Error> {
        let read = |f: &str| {
            std::fs::read_to_string(dir.join(f)).map_err(|e| Error::Data {
                what: format!("{}", dir.join(f).display()),
                why: e.to_string(),
            })
        };
        Catalog::parse(
            &read("scenarios.toml")?,
            &read("hardware.toml")?,
            &read("layer_costs.csv")?,
        )
    }

    /// Parse the three files.
    pub fn parse(scenarios: &str, hardware: &str, csv_text: &str) -> Result<Catalog, Error> {
        let sf: ScenarioFile = toml::from_str(scenarios).map_err(|e| Error::Data {
            what: "scenarios.toml".into(),
            why: e.to_string(),
        })?;
        let hf: HardwareFile = toml::from_str(hardware).map_err(|e| Error::Data {
            what: "hardware.toml".into(),
            why: e.to_string(),
        })?;
        let mut scenarios = sf.scenarios;
        for (k, v) in scenarios.iter_mut() {
            v.name = k.clone();
        }
        let mut hardware = hf.systems;
        for (k, v) in hardware.iter_mut() {
            v.name = k.clone();
        }
        let mut costs: HashMap<(String, String, String), ModelCost> = HashMap::new();
        let mut rdr = csv::ReaderBuilder::new().from_reader(csv_text.as_bytes());
        let headers = rdr
            .headers()
            .map_err(|e| data_err("layer_costs.csv", e))?
            .clone();
        let col = |name: &str| -> Result<usize, Error> {
            headers.iter().position(|h| h == name).ok_or(Error::Data {
                what: "layer_costs.csv".into(),
                why: format!("missing column `{name}`"),
            })
        };
        let (c_model, c_idx, c_df, c_tag, c_lat, c_en) = (
            col("model")?,
            col("layer_index")?,
            col("dataflow")?,
            col("hw_tag")?,
            col("latency_cycles")?,
            col("energy_nj")?,
        );
        let (c_n, c_k, c_y, c_x, c_r, c_s) = (
            col("N")?,
            col("K")?,
            col("Y")?,
            col("X")?,
            col("R")?,
            col("S")?,
        );
        for rec in rdr.records() {
            let rec = rec.map_err(|e| data_err("layer_costs.csv", e))?;
            let num = |c: usize| -> Result<f64, Error> {
                rec[c].parse::<f64>().map_err(|e| Error::Data {
                    what: "layer_costs.csv".into(),
                    why: format!("column {} value `{}`: {e}", &headers[c], &rec[c]),
                })
            };
            let key = (
                rec[c_model].to_string(),
                rec[c_df].to_string(),
                rec[c_tag].to_string(),
            );
            let idx = num(c_idx)? as usize;
            let mc = costs.entry(key).or_default();
            if mc.layer_cycles.len() != idx {
                return Err(Error::Data {
                    what: "layer_costs.csv".into(),
                    why: format!("layers of {} out of order at index {idx}", &rec[c_model]),
                });
            }
            mc.layer_cycles.push(num(c_lat)? as u64);
            mc.layer_energy_mj.push(num(c_en)? / 1e6);
            let out = num(c_n)?
                * num(c_k)?
                * (num(c_y)? - num(c_r)? + 1.0).max(1.0)
                * (num(c_x)? - num(c_s)? + 1.0).max(1.0);
            mc.layer_out_bytes.push(out);
        }
        for mc in costs.values_mut() {
            mc.finish();
        }
        Ok(Catalog {
            scenarios,
            hardware,
            costs,
        })
    }

    /// A scenario by name; the error lists the valid names.
    pub fn scenario(&self, name: &str) -> Result<&Scenario, Error> {
        self.scenarios.get(name).ok_or_else(|| Error::Unknown {
            what: "scenario",
            name: name.into(),
            valid: self.scenario_names().join(", "),
        })
    }
    pub fn scenario_names(&self) -> Vec<String> {
        self.scenarios.keys().cloned().collect()
    }
    /// A hardware set-up by name; the error lists the valid names.
    pub fn hardware(&self, name: &str) -> Result<&Hardware, Error> {
        self.hardware.get(name).ok_or_else(|| Error::Unknown {
            what: "hardware",
            name: name.into(),
            valid: self.hardware_names().join(", "),
        })
    }
    pub fn hardware_names(&self) -> Vec<String> {
        self.hardware.keys().cloned().collect()
    }
    /// Names of the models that have cost tables.
    pub fn model_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.costs.keys().map(|k| k.0.clone()).collect();
        v.sort();
        v.dedup();
        v
    }
    /// Costs of `cost_model` on one accelerator.
    pub fn cost(&self, cost_model: &str, acc: &AccSpec) -> Result<&ModelCost, Error> {
        self.costs
            .get(&(
                cost_model.to_string(),
                acc.dataflow.clone(),
                acc.cost_tag.clone(),
            ))
            .ok_or_else(|| Error::Unknown {
                what: "model",
                name: cost_model.into(),
                valid: self.model_names().join(", "),
            })
    }
}

fn data_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Data {
        what: what.into(),
        why: e.to_string(),
    }
}
