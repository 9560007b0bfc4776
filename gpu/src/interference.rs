//! gpulet's linear interference model (Choi et al., USENIX ATC'22; constants and utilisation from
//! `configs/gpu/interference.toml`, RTX 2080 Ti set by default as the data README advises).
//!
//! alpha(me | other) = c_l2_me*l2_me + c_l2_other*l2_other + c_dram_me*dram_me
//!                     + c_dram_other*dram_other + c_const, each utilisation x that partition's share;
//! with several neighbours gpulet takes the largest pairwise alpha; alpha < 1 is raised to 1.

use crate::GpuError;
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Deserialize)]
struct RawFile {
    gpulet_model: RawGpulet,
    time_slicing: RawTimeSlicing,
}

#[derive(Debug, Deserialize)]
struct RawGpulet {
    latency_ratio: f64,
    constants: BTreeMap<String, Constants>,
    utilisation: BTreeMap<String, BTreeMap<String, Util>>,
}

#[derive(Debug, Deserialize)]
struct RawTimeSlicing {
    data_point: TrtlabPoint,
    ratios: Ratios,
}

#[derive(Debug, Deserialize)]
struct TrtlabPoint {
    processes: u32,
    mps_inf_per_s: f64,
    single_process_inf_per_s: f64,
}

#[derive(Debug, Deserialize)]
struct Ratios {
    time_sliced_over_single: f64,
}

/// gpulet's fitted constants for one GPU.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Constants {
    pub c_l2_me: f64,
    pub c_l2_other: f64,
    pub c_dram_me: f64,
    pub c_dram_other: f64,
    pub c_const: f64,
}

/// Nsight L2 and DRAM utilisation by batch [1, 2, 4, 8, 16, 32].
#[derive(Debug, Clone, Deserialize)]
pub struct Util {
    pub l2: Vec<f64>,
    pub dram: Vec<f64>,
}

/// One running batch as the interference model sees it.
#[derive(Debug, Clone, Copy)]
pub struct Load<'a> {
    pub model: &'a str,
    pub batch: f64,
    /// Share of the partition it runs in (1.0 for uncapped default-MPS workers).
    pub share: f64,
}

/// The interference model plus the MPS/time-slicing facts the simulator needs.
#[derive(Debug, Clone)]
pub struct Interference {
    pub constants: Constants,
    util: BTreeMap<String, Util>,
    /// gpulet plans with latency x alpha x this (1.1).
    pub latency_ratio: f64,
    /// Time-sliced over single-process throughput (0.953, trtlab).
    pub time_slice_factor: f64,
    trtlab_processes: u32,
    trtlab_gain: f64,
}

const UTIL_BATCHES: [f64; 6] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0];

impl Interference {
    /// The shipped constants (RTX 2080 Ti set).
    pub fn shipped() -> Result<Self, GpuError> {
        Self::from_toml(crate::profiles::INTERFERENCE_TOML)
    }

    pub fn from_toml(text: &str) -> Result<Self, GpuError> {
        let raw: RawFile =
            toml::from_str(text).map_err(|e| GpuError::Parse(format!("interference.toml: {e}")))?;
        let set = "RTX-2080Ti";
        let constants = *raw.gpulet_model.constants.get(set).ok_or_else(|| {
            GpuError::Parse(format!("interference.toml: constants.{set} missing"))
        })?;
        let util = raw
            .gpulet_model
            .utilisation
            .get(set)
            .cloned()
            .ok_or_else(|| {
                GpuError::Parse(format!("interference.toml: utilisation.{set} missing"))
            })?;
        let d = raw.time_slicing.data_point;
        Ok(Interference {
            constants,
            util,
            latency_ratio: raw.gpulet_model.latency_ratio,
            time_slice_factor: raw.time_slicing.ratios.time_sliced_over_single,
            trtlab_processes: d.processes,
            trtlab_gain: d.mps_inf_per_s / d.single_process_inf_per_s,
        })
    }

    /// Utilisation (l2, dram) of a model at a batch; models without gpulet rows use resnet50's
    /// (the data README's rule for resnet18, extended to any other model).
    pub fn util(&self, model: &str, batch: f64) -> (f64, f64) {
        let u = self
            .util
            .get(model)
            .or_else(|| self.util.get("resnet50"))
            .expect("resnet50 utilisation is shipped");
        let b = batch.clamp(1.0, 32.0);
        let hi = UTIL_BATCHES
            .iter()
            .position(|&x| x >= b)
            .unwrap_or(5)
            .max(1);
        let lo = hi - 1;
        let t = (b - UTIL_BATCHES[lo]) / (UTIL_BATCHES[hi] - UTIL_BATCHES[lo]);
        let t = t.clamp(0.0, 1.0);
        (
            u.l2[lo] + (u.l2[hi] - u.l2[lo]) * t,
            u.dram[lo] + (u.dram[hi] - u.dram[lo]) * t,
        )
    }

    /// alpha of `me` next to one neighbour (not clamped).
    pub fn pair_alpha(&self, me: Load<'_>, other: Load<'_>) -> f64 {
        let c = &self.constants;
        let (l2m, drm) = self.util(me.model, me.batch);
        let (l2o, dro) = self.util(other.model, other.batch);
        c.c_l2_me * l2m * me.share
            + c.c_l2_other * l2o * other.share
            + c.c_dram_me * drm * me.share
            + c.c_dram_other * dro * other.share
            + c.c_const
    }

    /// alpha of `me` next to all `others` (largest pairwise value, at least 1; 1 when alone).
    pub fn alpha(&self, me: Load<'_>, others: &[Load<'_>]) -> f64 {
        others
            .iter()
            .map(|o| self.pair_alpha(me, *o))
            .fold(1.0, f64::max)
    }

    /// Conservative planning alpha for `me` when the rest of the GPU (`neighbour_share`) may hold any
    /// model: the largest pairwise alpha over every model with utilisation rows, at the same batch.
    pub fn worst_alpha(&self, me: Load<'_>, neighbour_share: f64) -> f64 {
        self.util
            .keys()
            .map(|o| {
                self.pair_alpha(
                    me,
                    Load {
                        model: o,
                        batch: me.batch,
                        share: neighbour_share,
                    },
                )
            })
            .fold(1.0, f64::max)
    }

    /// Exponent of the `trt_power` share rule: 8 uncapped ResNet-50 b1 workers (share 1/8 each,
    /// slowed by alpha at 100 %) must give the measured trtlab gain (929/383) over one worker:
    /// n x n^-gamma / alpha = gain  =>  gamma = 1 - ln(gain x alpha) / ln n.
    pub fn trt_gamma(&self) -> f64 {
        let n = self.trtlab_processes as f64;
        let me = Load {
            model: "resnet50",
            batch: 1.0,
            share: 1.0,
        };
        let a = self.alpha(me, &[me]);
        1.0 - (self.trtlab_gain * a).ln() / n.ln()
    }
}
