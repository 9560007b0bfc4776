//! The end-of-scenario summary of an edge agent: written by the agent (one JSON object on its
//! stdout, `edgeplane-agent --scenario ...`) and read back by `edgeplane demo`. Both sides use
//! these structs, so a renamed field fails to deserialise instead of silently reading as zero.
//! They live here because the scheduler crate is below both the agent and the CLI.

use serde::{Deserialize, Serialize};

/// The whole run: totals, the scheduler's cost, SDRM3's controllers and one row per model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScenarioSummary {
    /// Frames released (arrivals of every model).
    pub frames: u64,
    /// Frames completed within their deadline.
    pub deadlines_met: u64,
    /// `deadlines_met / frames` (0 when no frame arrived).
    pub deadline_met_rate: f64,
    /// Mean scheduler time per decision, µs.
    pub decision_overhead_us: f64,
    /// Scheduling decisions taken.
    pub decisions: u64,
    /// Blocks (layer groups) executed.
    pub steps: u64,
    /// What SDRM3's controllers did (absent for other policies).
    pub sdrm3: Option<ControllerSummary>,
    /// One row per model, in name order.
    pub models: Vec<ModelSummary>,
    /// The scenario's name.
    #[serde(default)]
    pub scenario: String,
    /// The scheduling policy.
    #[serde(default)]
    pub policy: String,
    /// `wall` (the live agent) or `virtual` (`--virtual`, the simulated clock).
    #[serde(default)]
    pub clock: String,
    /// The accelerators flag the agent ran with (e.g. `sim:Dual_4K_WS_OS`).
    #[serde(default)]
    pub accelerators: String,
    /// Frames the scenario source released (the live agent only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released: Option<u64>,
}

/// One model of a [`ScenarioSummary`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelSummary {
    pub model: String,
    pub arrivals: u64,
    pub completions: u64,
    pub deadlines_met: u64,
    pub deadlines_missed: u64,
    pub drops: u64,
    pub energy_mj: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl ModelSummary {
    /// Share of arrivals that met their deadline, percent (0 when none arrived).
    pub fn met_pct(&self) -> f64 {
        if self.arrivals == 0 {
            0.0
        } else {
            100.0 * self.deadlines_met as f64 / self.arrivals as f64
        }
    }
}

/// What SDRM3's controllers did during the run (the agent's `ControllerStatus`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ControllerSummary {
    /// Whether the online tuner ran.
    pub tuning: bool,
    /// Gradient steps the tuner took.
    pub tuner_steps: u64,
    /// The profile the final weights are, or `tuned`.
    pub profile: String,
    /// Profile comparisons made.
    pub profile_choices: u64,
    /// Whether the Supernet controller switched sub-network widths.
    pub supernet: bool,
    /// Mean Supernet accuracy of the completed jobs.
    pub accuracy: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The agent's summary as it printed it before the struct existed (keys written by hand):
    /// it must still read, and a renamed key must fail instead of reading as zero.
    #[test]
    fn reads_the_agent_summary_and_refuses_a_renamed_key() {
        let text = r#"{"frames":120,"deadlines_met":90,"deadline_met_rate":0.75,
            "decision_overhead_us":3.5,"decisions":400,"steps":800,
            "sdrm3":{"tuning":true,"tuner_steps":4,"profile":"tuned","profile_choices":1,
                     "supernet":false,"accuracy":1.0},
            "models":[{"model":"ES_RITNet","arrivals":60,"completions":58,"deadlines_met":45,
                       "deadlines_missed":13,"drops":2,"energy_mj":12.5,"p50_ms":4.0,"p99_ms":9.0}],
            "scenario":"VR_gaming","policy":"sdrm3","clock":"wall",
            "accelerators":"sim:Dual_4K_WS_OS","released":120}"#;
        let s: ScenarioSummary = serde_json::from_str(text).unwrap();
        assert_eq!(
            (s.frames, s.deadlines_met, s.released),
            (120, 90, Some(120))
        );
        assert_eq!(s.models[0].met_pct(), 75.0, "45 of 60");
        assert_eq!(s.sdrm3.as_ref().map(|c| c.tuner_steps), Some(4));
        let renamed = text.replace("\"deadlines_met\":90", "\"met\":90");
        assert!(serde_json::from_str::<ScenarioSummary>(&renamed).is_err());
        // what is written reads back the same
        let again: ScenarioSummary =
            serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(again, s);
    }
}
