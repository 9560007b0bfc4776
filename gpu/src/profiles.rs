//! Latency profiles L(gpu, model, batch, share), compiled in from `configs/gpu/profiles.toml`.
//!
//! Why a table and not a formula: the shipped rows are partly measured (MIGProfiler A100, torch2trt
//! Jetson b1) and partly derived by documented rules (`configs/gpu/README.md`); keeping the table lets
//! an operator replace any row with a measurement ([`Profiles::apply_measured`]) without touching code.
//!
//! Lookups use the `mps-*` rows (an MPS cap of P % = share P/100) and interpolate linearly in 1/share
//! and linearly in batch, as the data README prescribes. GPUs whose curves only have a `full` row get
//! derived `mps-*` rows at load time:
//! - `trt_power` (TensorRT curves, e.g. Jetson AGX Xavier, V100): L(b, s) = L(b, 1) x s^-gamma, with
//!   gamma calibrated so that 8 uncapped ResNet-50 workers (each at share 1/8, slowed by gpulet's alpha
//!   for ResNet-50 next to ResNet-50 at 100 %) give the measured 929/383 = 2.43x of one worker
//!   (trtlab, `interference.toml` `[time_slicing].data_point`). The data README says the A100-ratio rule
//!   overstates sharing gains for TensorRT and asks for exactly this calibration; a power law is our
//!   choice of curve through that one point (derived, not measured).
//! - `other_gpus_share` (other runtimes): L(b, s) = L(b, 1) x L_A100,resnet50(b, s) / L_A100,resnet50(b, 1).

use crate::GpuError;
use serde::Deserialize;
use std::collections::BTreeMap;

/// The shipped profile file (copied from shared/data/gpu with its README and sources).
pub const PROFILES_TOML: &str = include_str!("../../configs/gpu/profiles.toml");
/// The shipped interference file.
pub const INTERFERENCE_TOML: &str = include_str!("../../configs/gpu/interference.toml");
/// The shipped energy file.
pub const ENERGY_TOML: &str = include_str!("../../configs/gpu/energy.toml");

/// MPS caps the planner and the derived rows use, in percent.
pub const MPS_STEPS: [u32; 10] = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100];

/// Jetson boards list memory as text (shared LPDDR4x); the smaller variant is assumed.
const JETSON_XAVIER_MEM_MIB: u64 = 16 * 1024;
const JETSON_NANO_MEM_MIB: u64 = 4 * 1024;

#[derive(Debug, Deserialize)]
struct RawFile {
    batches: Vec<u32>,
    gpu: BTreeMap<String, RawGpu>,
    model: BTreeMap<String, RawModel>,
    curve: Vec<RawCurve>,
}

#[derive(Debug, Deserialize)]
struct RawGpu {
    sm: f64,
    memory_mib: Option<u64>,
    #[serde(default)]
    mig: bool,
}

#[derive(Debug, Deserialize)]
struct RawModel {
    gpu_mem_mib: u64,
    slo_ms: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct RawCurve {
    gpu: String,
    runtime: String,
    precision: String,
    model: String,
    rows: Vec<RawRow>,
}

#[derive(Debug, Deserialize)]
struct RawRow {
    part: String,
    share: f64,
    status: String,
    ms: Vec<f64>,
}

/// Where a row's numbers come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowStatus {
    /// Copied from a named source (or supplied by the operator as measured).
    Measured,
    /// Computed by a named rule.
    Derived(String),
    /// Some batches measured, the rest derived.
    Mixed,
}

/// One row of a latency curve: one partition size, every batch.
#[derive(Debug, Clone)]
pub struct Row {
    /// `mps-<P>`, `mig-<profile>` or `full`.
    pub part: String,
    /// Fraction of the full GPU's SMs.
    pub share: f64,
    pub status: RowStatus,
    /// Latency of one batch, ms, indexed like [`Profiles::batches`].
    pub ms: Vec<f64>,
}

/// The latency curve of one model on one GPU (one runtime/precision).
#[derive(Debug, Clone)]
pub struct Curve {
    pub runtime: String,
    pub precision: String,
    pub rows: Vec<Row>,
}

impl Curve {
    /// MPS rows (and `full` as share 1.0 when no `mps-100` exists), sorted by share.
    fn mps_rows(&self) -> Vec<&Row> {
        let mut v: Vec<&Row> = self
            .rows
            .iter()
            .filter(|r| r.part.starts_with("mps-"))
            .collect();
        if !v.iter().any(|r| (r.share - 1.0).abs() < 1e-9) {
            if let Some(full) = self.rows.iter().find(|r| r.part == "full") {
                v.push(full);
            }
        }
        v.sort_by(|a, b| a.share.total_cmp(&b.share));
        v
    }
}

/// Static facts about a GPU kind.
#[derive(Debug, Clone)]
pub struct GpuInfo {
    pub sm: f64,
    pub memory_mib: u64,
    pub mig: bool,
}

/// Static facts about a model.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub gpu_mem_mib: u64,
    pub slo_ms: Option<f64>,
}

/// All latency curves plus GPU and model facts.
#[derive(Debug, Clone)]
pub struct Profiles {
    batches: Vec<u32>,
    gpus: BTreeMap<String, GpuInfo>,
    models: BTreeMap<String, ModelInfo>,
    /// (gpu, model) -> the curve used (TensorRT FP16 where present: the README's edge setting).
    curves: BTreeMap<(String, String), Curve>,
}

fn parse_status(s: &str) -> RowStatus {
    match s {
        "measured" => RowStatus::Measured,
        "mixed" => RowStatus::Mixed,
        other => RowStatus::Derived(other.to_string()),
    }
}

fn runtime_rank(runtime: &str, precision: &str) -> u8 {
    match (runtime, precision) {
        ("tensorrt", "fp16") => 0,
        ("tensorrt", _) => 1,
        _ => 2,
    }
}

impl Profiles {
    /// The shipped profiles (compiled in).
    pub fn shipped() -> Result<Self, GpuError> {
        Self::from_toml(PROFILES_TOML, INTERFERENCE_TOML)
    }

    /// Parse a profile file; `interference` supplies the trtlab point and gpulet constants for the
    /// `trt_power` calibration.
    pub fn from_toml(profiles: &str, interference: &str) -> Result<Self, GpuError> {
        let raw: RawFile =
            toml::from_str(profiles).map_err(|e| GpuError::Parse(format!("profiles.toml: {e}")))?;
        let mut gpus = BTreeMap::new();
        for (name, g) in raw.gpu {
            let memory_mib = match (g.memory_mib, name.as_str()) {
                (Some(m), _) => m,
                (None, "Jetson-AGX-Xavier") => JETSON_XAVIER_MEM_MIB,
                (None, "Jetson-Nano") => JETSON_NANO_MEM_MIB,
                (None, _) => {
                    return Err(GpuError::Parse(format!(
                        "profiles.toml: gpu.{name}: memory_mib missing"
                    )))
                }
            };
            gpus.insert(
                name,
                GpuInfo {
                    sm: g.sm,
                    memory_mib,
                    mig: g.mig,
                },
            );
        }
        let models = raw
            .model
            .into_iter()
            .map(|(k, m)| {
                (
                    k,
                    ModelInfo {
                        gpu_mem_mib: m.gpu_mem_mib,
                        slo_ms: m.slo_ms,
                    },
                )
            })
            .collect();
        let mut curves: BTreeMap<(String, String), Curve> = BTreeMap::new();
        for c in raw.curve {
            let rows: Vec<Row> = c
                .rows
                .into_iter()
                .map(|r| Row {
                    part: r.part,
                    share: r.share,
                    status: parse_status(&r.status),
                    ms: r.ms,
                })
                .collect();
            for r in &rows {
                if r.ms.len() != raw.batches.len() {
                    return Err(GpuError::Parse(format!(
                        "profiles.toml: curve {}/{} row {}: {} latencies for {} batches",
                        c.gpu,
                        c.model,
                        r.part,
                        r.ms.len(),
                        raw.batches.len()
                    )));
                }
            }
            let key = (c.gpu.clone(), c.model.clone());
            let new = Curve {
                runtime: c.runtime,
                precision: c.precision,
                rows,
            };
            match curves.get(&key) {
                Some(old)
                    if runtime_rank(&old.runtime, &old.precision)
                        <= runtime_rank(&new.runtime, &new.precision) => {}
                _ => {
                    curves.insert(key, new);
                }
            }
        }
        let mut p = Profiles {
            batches: raw.batches,
            gpus,
            models,
            curves,
        };
        let gamma = crate::interference::Interference::from_toml(interference)?.trt_gamma();
        p.derive_share_rows(gamma)?;
        Ok(p)
    }

    fn derive_share_rows(&mut self, gamma: f64) -> Result<(), GpuError> {
        let a100 = self
            .curves
            .get(&("A100-80GB".to_string(), "resnet50".to_string()))
            .cloned();
        for curve in self.curves.values_mut() {
            if curve.rows.iter().any(|r| r.part.starts_with("mps-")) {
                continue;
            }
            let Some(full) = curve.rows.iter().find(|r| r.part == "full").cloned() else {
                continue;
            };
            let trt = curve.runtime == "tensorrt";
            for pct in MPS_STEPS {
                let s = pct as f64 / 100.0;
                let ms: Vec<f64> = if trt {
                    full.ms.iter().map(|l| l * s.powf(-gamma)).collect()
                } else if let Some(a) = &a100 {
                    full.ms
                        .iter()
                        .enumerate()
                        .map(|(bi, l)| {
                            let r = a.mps_rows();
                            l * interp_share(&r, bi, s) / interp_share(&r, bi, 1.0)
                        })
                        .collect()
                } else {
                    return Err(GpuError::Parse(
                        "profiles.toml: A100-80GB resnet50 curve needed for rule other_gpus_share"
                            .into(),
                    ));
                };
                let rule = if trt { "trt_power" } else { "other_gpus_share" };
                curve.rows.push(Row {
                    part: format!("mps-{pct}"),
                    share: s,
                    status: RowStatus::Derived(rule.into()),
                    ms,
                });
            }
        }
        Ok(())
    }

    /// Batch sizes every row is indexed by.
    pub fn batches(&self) -> &[u32] {
        &self.batches
    }
    /// Largest profiled batch.
    pub fn max_batch(&self) -> u32 {
        *self.batches.last().unwrap_or(&1)
    }
    pub fn gpu(&self, name: &str) -> Result<&GpuInfo, GpuError> {
        self.gpus
            .get(name)
            .ok_or_else(|| GpuError::UnknownGpu(name.to_string(), self.gpu_names().join(", ")))
    }
    pub fn gpu_names(&self) -> Vec<String> {
        self.gpus.keys().cloned().collect()
    }
    /// The models with GPU facts (memory, SLO), sorted.
    pub fn model_names(&self) -> Vec<String> {
        self.models.keys().cloned().collect()
    }
    pub fn model(&self, name: &str) -> Result<&ModelInfo, GpuError> {
        self.models
            .get(name)
            .ok_or_else(|| GpuError::UnknownModel(name.to_string()))
    }
    /// The curve used for (gpu, model).
    pub fn curve(&self, gpu: &str, model: &str) -> Result<&Curve, GpuError> {
        self.curves
            .get(&(gpu.to_string(), model.to_string()))
            .ok_or_else(|| GpuError::NoCurve {
                gpu: gpu.into(),
                model: model.into(),
            })
    }
    /// Whether a latency curve exists.
    pub fn has_curve(&self, gpu: &str, model: &str) -> bool {
        self.curves
            .contains_key(&(gpu.to_string(), model.to_string()))
    }

    /// Latency (ms) of one batch of `batch` requests (1..=max batch, fractional allowed) on an MPS
    /// share `share` (0 < share <= 1) without co-runners. Linear in 1/share between rows, linear
    /// between batches; below the smallest row the work is taken as SM-bound (L x s_min / s).
    pub fn latency_ms(
        &self,
        gpu: &str,
        model: &str,
        batch: f64,
        share: f64,
    ) -> Result<f64, GpuError> {
        let curve = self.curve(gpu, model)?;
        let rows = curve.mps_rows();
        if rows.is_empty() {
            return Err(GpuError::NoCurve {
                gpu: gpu.into(),
                model: model.into(),
            });
        }
        let max_b = self.max_batch() as f64;
        if !(batch >= 1.0 && batch <= max_b && share > 0.0 && share <= 1.0 + 1e-9) {
            return Err(GpuError::OutOfRange(format!(
                "batch {batch} (1..={max_b}) share {share} (0..1]"
            )));
        }
        // batch interpolation between neighbouring profiled batches
        let bs = &self.batches;
        let mut hi = bs
            .iter()
            .position(|&b| b as f64 >= batch)
            .unwrap_or(bs.len() - 1);
        if hi == 0 {
            hi = 1.min(bs.len() - 1);
        }
        let lo = hi.saturating_sub(1);
        let (b0, b1) = (bs[lo] as f64, bs[hi] as f64);
        let w = if b1 > b0 {
            (batch - b0) / (b1 - b0)
        } else {
            0.0
        };
        let l0 = interp_share(&rows, lo, share);
        let l1 = interp_share(&rows, hi, share);
        Ok(l0 + (l1 - l0) * w)
    }

    /// Replace or add rows from an operator-supplied measured table (TOML, see
    /// [`MeasuredTable`]). Measured rows win over shipped ones (same gpu, model and part). The whole
    /// table is validated first; on any error nothing is applied.
    pub fn apply_measured(&mut self, toml_text: &str) -> Result<usize, GpuError> {
        let t: MeasuredTable = toml::from_str(toml_text).map_err(|e| GpuError::Measured {
            row: 0,
            field: "(file)".into(),
            msg: format!("{e}"),
        })?;
        self.apply_measured_rows(&t.row)
    }

    /// Register a device kind the shipped table does not have (a box's CPU worker, a GPU
    /// measured on the box) so measured rows can be given for it: the planner then plans on it
    /// like on a GPU without MIG (a share below 100 % is taken as SM-bound, L / share).
    /// A name that exists keeps its facts.
    pub fn add_device(&mut self, name: &str, memory_mib: u64) {
        self.gpus.entry(name.to_string()).or_insert(GpuInfo {
            sm: 1.0,
            memory_mib: memory_mib.max(1),
            mig: false,
        });
    }

    /// [`Profiles::apply_measured`] for rows already parsed (a node's reported profile).
    /// All rows are validated first; on any error nothing is applied.
    pub fn apply_measured_rows(&mut self, rows: &[MeasuredRow]) -> Result<usize, GpuError> {
        let mut staged = Vec::new();
        for (i, r) in rows.iter().enumerate() {
            let n = i + 1;
            let err = |field: &str, msg: String| GpuError::Measured {
                row: n,
                field: field.into(),
                msg,
            };
            if !self.gpus.contains_key(&r.gpu) {
                return Err(err(
                    "gpu",
                    format!(
                        "unknown GPU `{}`; use one of: {}",
                        r.gpu,
                        self.gpu_names().join(", ")
                    ),
                ));
            }
            if !self.models.contains_key(&r.model) {
                return Err(err(
                    "model",
                    format!(
                        "unknown model `{}`; use one of: {}",
                        r.model,
                        self.models.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
            let share = part_share(&r.part, &self.gpus[&r.gpu]).ok_or_else(|| {
                err(
                    "part",
                    format!(
                        "`{}` is not `full`, `mps-<10..100>` or `mig-<profile>` with a share",
                        r.part
                    ),
                )
            })?;
            let share = match (share, r.share) {
                (Some(s), _) => s,
                (None, Some(s)) if s > 0.0 && s <= 1.0 => s,
                (None, _) => {
                    return Err(err(
                        "share",
                        "a mig-* row needs `share` (SM fraction of the full GPU, 0..1]".into(),
                    ))
                }
            };
            if r.ms.len() != self.batches.len() {
                return Err(err(
                    "ms",
                    format!(
                        "{} latencies given; give one per batch {:?}",
                        r.ms.len(),
                        self.batches
                    ),
                ));
            }
            if let Some(j) = r.ms.iter().position(|x| !(x.is_finite() && *x > 0.0)) {
                return Err(err(
                    "ms",
                    format!("ms[{j}] = {} must be a positive number of ms", r.ms[j]),
                ));
            }
            if let Some(j) = r.ms.windows(2).position(|w| w[1] < w[0]) {
                return Err(err(
                    "ms",
                    format!(
                        "latency falls from batch {} to batch {}: a bigger batch cannot be faster",
                        self.batches[j],
                        self.batches[j + 1]
                    ),
                ));
            }
            staged.push((
                r.gpu.clone(),
                r.model.clone(),
                r.part.clone(),
                share,
                r.ms.clone(),
            ));
        }
        let n = staged.len();
        for (gpu, model, part, share, ms) in staged {
            let curve = self.curves.entry((gpu, model)).or_insert_with(|| Curve {
                runtime: "measured".into(),
                precision: "measured".into(),
                rows: Vec::new(),
            });
            curve.rows.retain(|r| r.part != part);
            curve.rows.push(Row {
                part,
                share,
                status: RowStatus::Measured,
                ms,
            });
        }
        Ok(n)
    }
}

/// `Some(Some(share))` for full/mps rows, `Some(None)` for mig rows (share must be given), `None` if
/// the name is not a partition name.
fn part_share(part: &str, _gpu: &GpuInfo) -> Option<Option<f64>> {
    if part == "full" {
        return Some(Some(1.0));
    }
    if let Some(p) = part.strip_prefix("mps-") {
        let p: u32 = p.parse().ok()?;
        return (10..=100).contains(&p).then_some(Some(p as f64 / 100.0));
    }
    if part.strip_prefix("mig-").is_some_and(|s| !s.is_empty()) {
        return Some(None);
    }
    None
}

/// Linear interpolation in 1/share between the rows bracketing `share` at batch index `bi`.
fn interp_share(rows: &[&Row], bi: usize, share: f64) -> f64 {
    let first = rows[0];
    if share <= first.share {
        // below the smallest profiled share: SM-bound work scales with 1/share
        return first.ms[bi] * first.share / share;
    }
    for w in rows.windows(2) {
        let (a, b) = (w[0], w[1]);
        if share <= b.share {
            let (xa, xb, x) = (1.0 / a.share, 1.0 / b.share, 1.0 / share);
            let t = (x - xa) / (xb - xa);
            return a.ms[bi] + (b.ms[bi] - a.ms[bi]) * t;
        }
    }
    rows[rows.len() - 1].ms[bi]
}

/// An operator-supplied measured table:
///
/// ```toml
/// [[row]]
/// gpu = "Jetson-AGX-Xavier"
/// model = "resnet50"
/// part = "mps-50"              # full | mps-<10..100> | mig-<profile> (then also share = ...)
/// ms = [5.1, 6.0, 8.2, 13.0, 24.0, 46.0]   # one per batch 1, 2, 4, 8, 16, 32
/// ```
#[derive(Debug, Deserialize)]
pub struct MeasuredTable {
    #[serde(default)]
    pub row: Vec<MeasuredRow>,
}

/// One measured row.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeasuredRow {
    pub gpu: String,
    pub model: String,
    pub part: String,
    pub share: Option<f64>,
    pub ms: Vec<f64>,
    /// The raw measured batches (`edgeplane-agent profile` writes them beside `ms`, which
    /// extrapolates the rest); informative only.
    #[serde(default)]
    pub measured: Option<toml::Table>,
}
