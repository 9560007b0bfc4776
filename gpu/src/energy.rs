//! Board power model from `configs/gpu/energy.toml`:
//! P(t) = P_idle + (P_max - P_idle) x u(t), u = min(1, sum of share_i x busy_i).
//! Upper-bound flavoured (P_max is the board limit); P_idle is paid for the whole run because a
//! partitioned GPU does not power-gate unused SMs.

use crate::GpuError;
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Deserialize)]
struct RawFile {
    gpu: BTreeMap<String, RawGpu>,
}

#[derive(Debug, Deserialize)]
struct RawGpu {
    max_w: f64,
    idle_w: f64,
}

/// Idle and maximum board power of one GPU kind.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PowerModel {
    pub idle_w: f64,
    pub max_w: f64,
}

impl PowerModel {
    /// Board power at SM utilisation `u` (clamped to 0..=1).
    pub fn power_w(&self, u: f64) -> f64 {
        self.idle_w + (self.max_w - self.idle_w) * u.clamp(0.0, 1.0)
    }
    /// Energy (J) of running at utilisation `u` for `dt_s` seconds.
    pub fn energy_j(&self, u: f64, dt_s: f64) -> f64 {
        self.power_w(u) * dt_s
    }
}

/// Power models of every shipped GPU kind.
#[derive(Debug, Clone)]
pub struct Energy {
    gpus: BTreeMap<String, PowerModel>,
}

impl Energy {
    pub fn shipped() -> Result<Self, GpuError> {
        Self::from_toml(crate::profiles::ENERGY_TOML)
    }
    pub fn from_toml(text: &str) -> Result<Self, GpuError> {
        let raw: RawFile =
            toml::from_str(text).map_err(|e| GpuError::Parse(format!("energy.toml: {e}")))?;
        Ok(Energy {
            gpus: raw
                .gpu
                .into_iter()
                .map(|(k, g)| {
                    (
                        k,
                        PowerModel {
                            idle_w: g.idle_w,
                            max_w: g.max_w,
                        },
                    )
                })
                .collect(),
        })
    }
    pub fn gpu(&self, name: &str) -> Result<PowerModel, GpuError> {
        self.gpus.get(name).copied().ok_or_else(|| {
            GpuError::UnknownGpu(
                name.into(),
                self.gpus.keys().cloned().collect::<Vec<_>>().join(", "),
            )
        })
    }
}
