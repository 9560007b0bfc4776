//! A node whose accelerator runs real models through an inference worker (`--accelerators cpu`):
//! worker configuration, the measured latency profile L(model, batch), and the scheduling core
//! built from it.
//!
//! The core is the same scheduler engine (SDRM3 by default) the simulated accelerators use; its
//! cost table is the measured profile instead of the XRBench layer table: each worker model is
//! one "layer" (a worker runs a whole network per request) whose latency is the measured batch-1
//! forward pass and whose energy is modelled at [`CPU_MODEL_W`] (reports say so).

use super::oip::{Launch, WorkerHandle, WorkerSpec};
use crate::config::WorkerConfig;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// Modelled package power of a CPU worker while it computes (W), used when RAPL is unreadable.
pub const CPU_MODEL_W: f64 = 65.0;
/// Batches a profile row lists (the shipped GPU profiles' `batches`).
pub const BATCHES: [u32; 6] = [1, 2, 4, 8, 16, 32];

#[derive(Debug, thiserror::Error)]
pub enum WorkerNodeError {
    #[error(transparent)]
    Oip(#[from] super::oip::OipError),
    #[error("profile {path}: {why}")]
    Profile { path: String, why: String },
    #[error("scheduling core: {0}")]
    Core(String),
    #[error("measuring {model} at batch {batch}: {why}")]
    Measure {
        model: String,
        batch: u32,
        why: String,
    },
}

impl WorkerConfig {
    /// The spec of the worker of `partition` with `share_pct` of its device.
    pub fn spec(
        &self,
        partition: &str,
        share_pct: u32,
        visible_devices: Option<&str>,
    ) -> WorkerSpec {
        let launch = match (&self.addr, &self.command) {
            (Some(a), _) => Launch::Connect(a.clone()),
            (None, c) => {
                let mut env = Vec::new();
                if let Some(v) = visible_devices {
                    env.push(("CUDA_VISIBLE_DEVICES".to_string(), v.to_string()));
                }
                Launch::Spawn {
                    command: c
                        .clone()
                        .unwrap_or_else(|| super::oip::builtin_command(self.resolution)),
                    env,
                }
            }
        };
        WorkerSpec {
            partition: partition.into(),
            share_pct,
            launch,
            models: self.models.clone(),
            ready_timeout: Duration::from_millis(self.ready_timeout_ms),
            request_timeout: Duration::from_millis(self.request_timeout_ms),
        }
    }
}

/// A measured latency profile: ms per forward pass of a whole batch, per model.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// Device label (the `gpu` column of the shipped format: "cpu" here).
    pub device: String,
    pub part: String,
    pub resolution: u32,
    pub warmup: u32,
    pub reps: u32,
    /// model -> batch -> median ms (measured batches only).
    pub rows: BTreeMap<String, BTreeMap<u32, f64>>,
    pub host: String,
    /// Which worker measured it (built-in + version, or the external address / command).
    pub worker: String,
}

#[derive(Deserialize)]
struct ProfileRow {
    gpu: String,
    model: String,
    part: String,
    ms: Vec<f64>,
}

impl Profile {
    /// L(model, 1) in ms.
    pub fn b1(&self, model: &str) -> Option<f64> {
        self.rows.get(model).and_then(|r| r.get(&1).copied())
    }

    /// What the agent reports to the coordinator: the `ms` row of every served model that was
    /// measured, and where it was measured.
    pub fn reported(&self, models: &[String]) -> crate::discovery::MeasuredProfile {
        crate::discovery::MeasuredProfile {
            rows: models
                .iter()
                .filter_map(|m| Some((m.clone(), self.ms_row(m)?)))
                .collect(),
            source: format!(
                "{} on {}, {r}x{r} input, measured batches {:?}",
                self.device,
                self.host,
                self.rows
                    .values()
                    .next()
                    .map(|r| r.keys().copied().collect::<Vec<_>>())
                    .unwrap_or_default(),
                r = self.resolution
            ),
        }
    }

    /// The `ms` array of the shipped format (batches 1..32): measured batches as measured,
    /// the rest extrapolated linearly from the largest measured batch (b x L(bmax) / bmax,
    /// the shipped `jetson_linear` rule), made non-decreasing.
    pub fn ms_row(&self, model: &str) -> Option<Vec<f64>> {
        let r = self.rows.get(model)?;
        let (&bmax, &lmax) = r.iter().next_back()?;
        let mut out: Vec<f64> = BATCHES
            .iter()
            .map(|b| {
                r.get(b)
                    .copied()
                    .unwrap_or(lmax * f64::from(*b) / f64::from(bmax))
            })
            .collect();
        for i in 1..out.len() {
            out[i] = out[i].max(out[i - 1]);
        }
        Some(out.iter().map(|x| (x * 1000.0).round() / 1000.0).collect())
    }

    /// The table as TOML in the shipped measured-profile format (`[[row]] gpu model part ms`),
    /// provenance in comments.
    pub fn to_toml(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# Measured by `edgeplane-agent profile` on {}.",
            self.host
        );
        let _ = writeln!(
            s,
            "# Worker: {}. Input {r}x{r}, {w} warm-up + {n} timed passes per (model, batch); ms = median time of the whole batch (measured: the worker's own exec_ms when it reports a finite one, else the agent's dispatch-to-response time).",
            if self.worker.is_empty() { "built-in CPU worker (candle, FP32)" } else { &self.worker },
            r = self.resolution,
            w = self.warmup,
            n = self.reps
        );
        let _ = writeln!(
            s,
            "# Same format as configs/gpu measured tables; batches = {BATCHES:?}."
        );
        for (m, r) in &self.rows {
            let measured: Vec<u32> = r.keys().copied().collect();
            let Some(row) = self.ms_row(m) else { continue };
            let _ = writeln!(s, "\n# measured batches: {measured:?}; the others are extrapolated (b x L(bmax)/bmax)");
            let _ = writeln!(s, "[[row]]");
            let _ = writeln!(s, "gpu = {:?}", self.device);
            let _ = writeln!(s, "model = {m:?}");
            let _ = writeln!(s, "part = {:?}", self.part);
            let _ = writeln!(s, "ms = {row:?}");
            let _ = writeln!(
                s,
                "measured = {{ {} }}",
                r.iter()
                    .map(|(b, v)| format!("b{b} = {v:.3}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        s
    }

    /// Read a table written by [`Profile::to_toml`] (only its b1 values matter to the core).
    pub fn parse(text: &str, path: &str) -> Result<Profile, WorkerNodeError> {
        #[derive(Deserialize)]
        struct Loose {
            #[serde(default)]
            row: Vec<toml::Value>,
        }
        let err = |why: String| WorkerNodeError::Profile {
            path: path.into(),
            why,
        };
        let l: Loose = toml::from_str(text).map_err(|e| err(e.to_string()))?;
        let mut rows = Vec::new();
        for v in l.row {
            let mut t = v
                .as_table()
                .cloned()
                .ok_or_else(|| err("row is not a table".into()))?;
            t.remove("measured");
            let r: ProfileRow = toml::Value::Table(t)
                .try_into()
                .map_err(|e: toml::de::Error| err(e.to_string()))?;
            rows.push(r);
        }
        let mut p = Profile {
            device: rows
                .first()
                .map(|r| r.gpu.clone())
                .unwrap_or_else(|| "cpu".into()),
            part: rows
                .first()
                .map(|r| r.part.clone())
                .unwrap_or_else(|| "full".into()),
            resolution: 0,
            warmup: 0,
            reps: 0,
            rows: BTreeMap::new(),
            host: String::new(),
            worker: String::new(),
        };
        for r in rows {
            if r.ms.len() != BATCHES.len() || r.ms.iter().any(|x| !(x.is_finite() && *x > 0.0)) {
                return Err(err(format!(
                    "row {:?}: field `ms`: expected {} positive numbers (batches {BATCHES:?})",
                    r.model,
                    BATCHES.len()
                )));
            }
            p.rows.insert(
                r.model,
                BATCHES.iter().copied().zip(r.ms.iter().copied()).collect(),
            );
        }
        Ok(p)
    }
}

/// Measure L(model, batch) on `worker`: `warmup` untimed passes, then the median of `reps`
/// worker-side forward-pass times.
pub async fn measure(
    worker: &WorkerHandle,
    models: &[String],
    batches: &[u32],
    warmup: u32,
    reps: u32,
    device: &str,
) -> Result<Profile, WorkerNodeError> {
    let mut rows = BTreeMap::new();
    for m in models {
        let meta = worker.metadata(m).ok_or_else(|| WorkerNodeError::Measure {
            model: m.clone(),
            batch: 0,
            why: "the worker does not serve it".into(),
        })?;
        let mut row = BTreeMap::new();
        for &b in batches {
            let mut shape = meta.input_shape.clone();
            if let Some(d) = shape.first_mut() {
                *d = i64::from(b);
            }
            let n: i64 = shape.iter().map(|d| (*d).max(1)).product();
            let input = super::oip::InputTensor {
                shape,
                data: (0..n as usize)
                    .flat_map(|i| (((i % 251) as f32) / 251.0).to_le_bytes())
                    .collect(),
            };
            let mut times = Vec::new();
            for i in 0..warmup + reps {
                let r = worker.infer(m, Some(&input), 0).await.map_err(|s| {
                    WorkerNodeError::Measure {
                        model: m.clone(),
                        batch: b,
                        why: s.message().to_string(),
                    }
                })?;
                if i >= warmup {
                    let ms = crate::figures::check_ms(crate::figures::Figure::ProfileMs, r.exec_ms)
                        .map_err(|e| WorkerNodeError::Measure {
                            model: m.clone(),
                            batch: b,
                            why: e.to_string(),
                        })?;
                    times.push(ms);
                }
            }
            times.sort_by(f64::total_cmp);
            let med = median(&times).ok_or_else(|| WorkerNodeError::Measure {
                model: m.clone(),
                batch: b,
                why: "no timed pass".into(),
            })?;
            tracing::info!(model = %m, batch = b, ms = med, "measured");
            row.insert(b, med);
        }
        rows.insert(m.clone(), row);
    }
    worker.clear_overhead();
    Ok(Profile {
        device: device.into(),
        part: "full".into(),
        resolution: 0,
        warmup,
        reps,
        rows,
        host: host_description(),
        worker: String::new(),
    })
}

/// The median of sorted samples (mean of the middle two for an even count).
pub fn median(sorted: &[f64]) -> Option<f64> {
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// "hostname, CPU model, N threads".
pub fn host_description() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':').map(|x| x.1.trim().to_string()))
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{cpu}, {n} hardware threads")
}

/// Default relative deadline of a worker model: 4 x its measured batch-1 latency, at least
/// 10 ms (requests normally give their own `deadline_ms`).
pub fn default_deadline_ms(l_b1_ms: f64) -> f64 {
    (4.0 * l_b1_ms).max(10.0).ceil()
}

/// The agent's batch limit for one model: the smallest of the worker's own (when its metadata
/// fixes the batch dimension), `--worker-max-batch` and the largest profiled batch.
pub fn batch_limit(flag: u32, worker: Option<u32>) -> u32 {
    let top = BATCHES[BATCHES.len() - 1];
    flag.min(worker.unwrap_or(top)).min(top).max(1)
}

/// Where the profile of this node's worker is cached.
pub fn profile_path(data_dir: &std::path::Path, resolution: u32) -> std::path::PathBuf {
    data_dir.join(format!("profile-cpu-{resolution}.toml"))
}

/// Untimed warm-up passes and timed passes (the median is kept) per (model, batch).
pub const WARMUP: u32 = 2;
pub const REPS: u32 = 10;

/// The worker's identity for the profile key and the table's header.
pub fn worker_identity(cfg: &WorkerConfig) -> String {
    match (&cfg.addr, &cfg.command) {
        (Some(a), _) => format!("external v2 worker at {a}"),
        (None, Some(c)) => format!("worker command `{c}`"),
        (None, None) => crate::profile_key::builtin_identity(cfg.resolution),
    }
}

/// The key of this worker's profile (see [`crate::profile_key`]).
fn profile_key(cfg: &WorkerConfig, handle: &WorkerHandle) -> crate::profile_key::ProfileKey {
    let models: Vec<String> = cfg
        .models
        .iter()
        .filter_map(|m| {
            let d = handle.metadata(m)?;
            Some(crate::profile_key::describe_model(
                m,
                &d.platform,
                (&d.input_name, &d.datatype, &d.input_shape),
                &d.output_shape,
            ))
        })
        .collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    crate::profile_key::ProfileKey::new(
        &worker_identity(cfg),
        &models,
        threads,
        &host_description(),
    )
}

/// Start the node's worker, load (or measure and cache) its profile and register its models.
pub async fn start(
    cfg: &WorkerConfig,
    data_dir: &std::path::Path,
    partition: &str,
) -> Result<(std::sync::Arc<WorkerHandle>, Profile), WorkerNodeError> {
    let t0 = Instant::now();
    let handle = WorkerHandle::start(cfg.spec(partition, 100, None)).await?;
    tracing::info!(partition, addr = ?handle.addr(), ready_ms = t0.elapsed().as_millis() as u64, "worker ready");
    let path = profile_path(data_dir, cfg.resolution);
    let key = profile_key(cfg, &handle);
    let cached = std::fs::read_to_string(&path)
        .ok()
        .filter(|t| {
            let ok = key.matches(t);
            if !ok {
                tracing::info!(path = %path.display(), "cached profile is for another worker, model or host: measuring again");
            }
            ok
        })
        .and_then(|t| Profile::parse(&t, &path.display().to_string()).ok())
        .filter(|p| cfg.models.iter().all(|m| p.b1(m).is_some()));
    let profile = match cached {
        Some(mut p) => {
            tracing::info!(path = %path.display(), "using the cached measured profile");
            // the table's own header is not parsed: say where the numbers came from
            p.resolution = cfg.resolution;
            p.host = format!("this box (cached in {})", path.display());
            p
        }
        None => {
            tracing::info!("no cached profile: measuring L(model, 1) on the worker");
            let mut p = measure(&handle, &cfg.models, &[1], WARMUP, REPS, "cpu").await?;
            p.resolution = cfg.resolution;
            p.worker = worker_identity(cfg);
            let _ = std::fs::create_dir_all(data_dir);
            let text = format!("{}\n{}", key.line(), p.to_toml());
            if let Err(e) = std::fs::write(&path, text) {
                tracing::warn!(path = %path.display(), error = %e, "cannot cache the profile");
            }
            p
        }
    };
    for m in &cfg.models {
        if let (Some(meta), Some(l)) = (handle.metadata(m), profile.b1(m)) {
            let max_batch = batch_limit(cfg.max_batch, handle.max_batch(m));
            tracing::info!(model = %m, max_batch, "worker batch limit");
            super::oip::register_model(
                m,
                super::oip::WorkerModel {
                    meta,
                    default_deadline_ms: default_deadline_ms(l),
                    max_batch,
                },
            );
        }
    }
    Ok((handle, profile))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::WorkerFlags;
    use crate::node::build_core;

    fn prof() -> Profile {
        Profile {
            device: "cpu".into(),
            part: "full".into(),
            resolution: 64,
            warmup: 1,
            reps: 3,
            rows: BTreeMap::from([(
                "resnet18".to_string(),
                BTreeMap::from([(1, 2.0), (2, 3.5), (4, 7.0)]),
            )]),
            host: "test".into(),
            worker: "test worker".into(),
        }
    }

    #[test]
    fn profile_round_trips_in_the_shipped_format() {
        let p = prof();
        assert_eq!(
            p.ms_row("resnet18").unwrap(),
            vec![2.0, 3.5, 7.0, 14.0, 28.0, 56.0]
        );
        let t = p.to_toml();
        assert!(
            t.contains("[[row]]") && t.contains("part = \"full\""),
            "{t}"
        );
        let q = Profile::parse(&t, "x").unwrap();
        assert_eq!(q.b1("resnet18"), Some(2.0));
        let e = Profile::parse(
            "[[row]]\ngpu=\"cpu\"\nmodel=\"m\"\npart=\"full\"\nms=[1.0]\n",
            "f.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("`ms`") && e.contains("f.toml"), "{e}");
    }

    #[test]
    fn core_from_a_profile_dispatches_whole_models() {
        let mut core = build_core("sdrm3", &prof(), &["resnet18".to_string()], 1).unwrap();
        let id = core.release(0.0, "resnet18", 50.0).unwrap();
        let acts = core.tick(0.0);
        assert!(
            acts.iter().any(|a| matches!(a, crate::sched::Action::Dispatch { job, last: true, latency_ms, .. } if *job == id && (*latency_ms - 2.0).abs() < 1e-6)),
            "{acts:?}"
        );
        assert!(
            core.release(0.0, "vgg16", 50.0).is_err(),
            "a model without a row is refused"
        );
    }

    #[test]
    fn worker_config_errors_name_the_field() {
        let f = WorkerFlags {
            worker_command: Some("w --listen 1.2.3.4:99".into()),
            ..Default::default()
        };
        let e = WorkerConfig::resolve(f, None).unwrap_err().to_string();
        assert!(e.contains("worker_command") && e.contains("{port}"), "{e}");
        let f = WorkerFlags {
            worker_addr: Some("nope".into()),
            ..Default::default()
        };
        assert!(WorkerConfig::resolve(f, None)
            .unwrap_err()
            .to_string()
            .contains("worker_addr"));
        let c = WorkerConfig::resolve(WorkerFlags::default(), None).unwrap();
        assert_eq!(c.models, vec!["resnet18", "resnet50", "vgg16"]);
        let s = c.spec("cpu0", 50, Some("MIG-1"));
        assert_eq!(
            s.command_line("x {port} {share} {partition} {models}", 9),
            "x 9 50 cpu0 resnet18,resnet50,vgg16"
        );
    }
}

#[cfg(test)]
mod figure_tests {
    use super::{batch_limit, median};

    #[test]
    fn the_batch_limit_is_the_smallest_of_worker_flag_and_profile() {
        // no worker limit: the flag, at most 32
        assert_eq!(batch_limit(32, None), 32);
        assert_eq!(batch_limit(2, None), 2);
        assert_eq!(batch_limit(64, None), 32);
        // the worker fixes batch 4: min(4, 8) = 4; min(4, 2) = 2
        assert_eq!(batch_limit(8, Some(4)), 4);
        assert_eq!(batch_limit(2, Some(4)), 2);
    }

    #[test]
    fn median_of_sorted_passes() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[1.0, 2.0, 9.0]), Some(2.0));
        assert_eq!(median(&[1.0, 2.0, 4.0, 9.0]), Some(3.0));
    }
}
