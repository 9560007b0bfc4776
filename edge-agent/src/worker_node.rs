//! A node whose accelerator runs real models through an inference worker (`--accelerators cpu`):
//! worker configuration, the measured latency profile L(model, batch), and the scheduling core
//! built from it.
//!
//! The core is the same scheduler engine (SDRM3 by default) the simulated accelerators use; its
//! cost table is the measured profile instead of the XRBench layer table: each worker model is
//! one "layer" (a worker runs a whole network per request) whose latency is the measured batch-1
//! forward pass and whose energy is modelled at [`CPU_MODEL_W`] (reports say so).

use crate::oip::{Launch, WorkerHandle, WorkerSpec};
use serde::{Deserialize, Serialize};
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
    Oip(#[from] crate::oip::OipError),
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

/// Worker settings: flags (also from the environment)...
#[derive(Debug, Default, Clone, clap::Args)]
pub struct WorkerFlags {
    /// Command template that starts one worker per partition, run by `sh -c`: `{port}`,
    /// `{partition}`, `{share}` and `{models}` are substituted; CUDA_MPS_ACTIVE_THREAD_PERCENTAGE
    /// and CUDA_VISIBLE_DEVICES are set. Default with `--accelerators cpu`: the built-in
    /// `edgeplane-worker` next to this binary.
    #[arg(long, env = "EDGEPLANE_AGENT_WORKER_COMMAND")]
    pub worker_command: Option<String>,
    /// Connect to a worker already running at host:port instead of starting one.
    #[arg(long, env = "EDGEPLANE_AGENT_WORKER_ADDR")]
    pub worker_addr: Option<String>,
    /// Models the worker serves (comma-separated).
    #[arg(long, env = "EDGEPLANE_AGENT_WORKER_MODELS", value_delimiter = ',')]
    pub worker_models: Option<Vec<String>>,
    /// Input resolution (height = width) the built-in worker is started with.
    #[arg(long, env = "EDGEPLANE_AGENT_WORKER_RESOLUTION")]
    pub worker_resolution: Option<u32>,
    /// How long a worker may take to become ready, in ms.
    #[arg(long, env = "EDGEPLANE_AGENT_WORKER_READY_TIMEOUT_MS")]
    pub worker_ready_timeout_ms: Option<u64>,
    /// Longest single worker request, in ms (then it fails with UNAVAILABLE).
    #[arg(long, env = "EDGEPLANE_AGENT_WORKER_REQUEST_TIMEOUT_MS")]
    pub worker_request_timeout_ms: Option<u64>,
}

/// ...and the config file's `[worker]` table (same names without the `worker_` prefix).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerFile {
    pub command: Option<String>,
    pub addr: Option<String>,
    pub models: Option<Vec<String>>,
    pub resolution: Option<u32>,
    pub ready_timeout_ms: Option<u64>,
    pub request_timeout_ms: Option<u64>,
}

/// Effective worker settings.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WorkerConfig {
    pub command: Option<String>,
    pub addr: Option<String>,
    pub models: Vec<String>,
    pub resolution: u32,
    pub ready_timeout_ms: u64,
    pub request_timeout_ms: u64,
}

impl WorkerConfig {
    pub fn resolve(
        f: WorkerFlags,
        file: Option<WorkerFile>,
    ) -> Result<WorkerConfig, crate::config::ConfigError> {
        let file = file.unwrap_or_default();
        let bad = |field: &'static str, reason: String| crate::config::ConfigError::Invalid {
            field,
            reason,
        };
        let command = f
            .worker_command
            .or(file.command)
            .filter(|c| !c.trim().is_empty());
        let addr = f.worker_addr.or(file.addr).filter(|c| !c.trim().is_empty());
        if command.is_some() && addr.is_some() {
            return Err(bad(
                "worker_addr",
                "give either worker_command (start workers) or worker_addr (connect), not both"
                    .into(),
            ));
        }
        if let Some(a) = &addr {
            match a.rsplit_once(':') {
                Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => {}
                _ => return Err(bad("worker_addr", format!("{a:?} is not host:port"))),
            }
        }
        if let Some(c) = &command {
            if !c.contains("{port}") {
                return Err(bad(
                    "worker_command",
                    format!("{c:?} has no {{port}}: the agent picks each worker's gRPC port"),
                ));
            }
        }
        let models = f
            .worker_models
            .or(file.models)
            .unwrap_or_else(|| vec!["resnet18".into(), "resnet50".into(), "vgg16".into()]);
        if models.is_empty() || models.iter().any(|m| m.trim().is_empty()) {
            return Err(bad(
                "worker_models",
                "must list at least one model name".into(),
            ));
        }
        let resolution = f.worker_resolution.or(file.resolution).unwrap_or(224);
        if !(32..=1024).contains(&resolution) {
            return Err(bad(
                "worker_resolution",
                format!("{resolution}: must be in 32..=1024"),
            ));
        }
        let ready_timeout_ms = f
            .worker_ready_timeout_ms
            .or(file.ready_timeout_ms)
            .unwrap_or(120_000);
        if !(100..=3_600_000).contains(&ready_timeout_ms) {
            return Err(bad(
                "worker_ready_timeout_ms",
                "must be in 100..=3600000".into(),
            ));
        }
        let request_timeout_ms = f
            .worker_request_timeout_ms
            .or(file.request_timeout_ms)
            .unwrap_or(60_000);
        if !(10..=3_600_000).contains(&request_timeout_ms) {
            return Err(bad(
                "worker_request_timeout_ms",
                "must be in 10..=3600000".into(),
            ));
        }
        Ok(WorkerConfig {
            command,
            addr,
            models,
            resolution,
            ready_timeout_ms,
            request_timeout_ms,
        })
    }

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
                        .unwrap_or_else(|| crate::oip::builtin_command(self.resolution)),
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
            "# Built-in CPU worker (candle, FP32), input {r}x{r}, {w} warm-up + {n} timed passes per (model, batch); ms = median forward-pass time of the whole batch (worker-side, no queueing or transfer).",
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
            let input = crate::oip::InputTensor {
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
                    times.push(r.exec_ms);
                }
            }
            times.sort_by(f64::total_cmp);
            let med = times[times.len() / 2];
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
    })
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

/// The scheduling core for worker-backed accelerators: the scheduler engine (`policy`) over a
/// cost table with one whole-model "layer" per model: latency = measured L(model, 1), energy =
/// that latency at [`CPU_MODEL_W`]; `n_acc` identical accelerators (one per partition).
pub fn build_core(
    policy: &str,
    profile: &Profile,
    models: &[String],
    n_acc: usize,
) -> Result<Box<dyn crate::core::SchedulingCore>, WorkerNodeError> {
    use edgeplane_scheduler::engine::{Engine, EngineModel};
    let mut csv =
        String::from("model,layer_index,dataflow,hw_tag,latency_cycles,energy_nj,N,K,C,Y,X,R,S\n");
    let mut ems = Vec::new();
    for m in models {
        let l = profile.b1(m).ok_or_else(|| {
            WorkerNodeError::Core(format!("no measured L({m}, 1) in the profile"))
        })?;
        // The engine's cost unit: cycles at 1 GHz (latency_ms = cycles / 1e6).
        let cycles = (l * 1e6).round().max(1.0) as u64;
        let energy_nj = l * CPU_MODEL_W * 1e6; // mJ = W x ms; nJ = mJ x 1e6
        let _ = writeln!(csv, "{m},0,CPU,worker,{cycles},{energy_nj},1,1,1,1,1,1,1");
        ems.push(EngineModel {
            name: m.clone(),
            cost_model: m.clone(),
            period_ms: default_deadline_ms(l),
            upstream: None,
        });
    }
    let mut hw = String::from("[systems.worker]\naccelerators = [\n");
    for i in 0..n_acc {
        let _ = writeln!(hw, "  {{ id = {i}, name = \"worker{i}\", dataflow = \"CPU\", pes = 1, offchip_bw = 1, cost_tag = \"worker\" }},");
    }
    hw.push_str("]\n");
    let cat = edgeplane_scheduler::Catalog::parse("[scenarios]\n", &hw, &csv)
        .map_err(|e| WorkerNodeError::Core(e.to_string()))?;
    let accs = cat
        .hardware("worker")
        .map_err(|e| WorkerNodeError::Core(e.to_string()))?
        .accelerators
        .clone();
    let pol = edgeplane_scheduler::policy::by_name(policy)
        .map_err(|e| WorkerNodeError::Core(e.to_string()))?;
    let engine =
        Engine::new(&cat, &accs, ems, pol).map_err(|e| WorkerNodeError::Core(e.to_string()))?;
    // the node's CPU accelerators are cpu0.. (discovery::cpu_node)
    let ids = (0..n_acc).map(|i| format!("cpu{i}")).collect();
    Ok(Box::new(crate::engine_core::EngineCore::from_engine(
        engine, ids,
    )))
}

/// Default relative deadline of a worker model: 4 x its measured batch-1 latency, at least
/// 10 ms (requests normally give their own `deadline_ms`).
pub fn default_deadline_ms(l_b1_ms: f64) -> f64 {
    (4.0 * l_b1_ms).max(10.0).ceil()
}

/// Where the profile of this node's worker is cached.
pub fn profile_path(data_dir: &std::path::Path, resolution: u32) -> std::path::PathBuf {
    data_dir.join(format!("profile-cpu-{resolution}.toml"))
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
    let cached = std::fs::read_to_string(&path)
        .ok()
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
            let mut p = measure(&handle, &cfg.models, &[1], 1, 3, "cpu").await?;
            p.resolution = cfg.resolution;
            let _ = std::fs::create_dir_all(data_dir);
            if let Err(e) = std::fs::write(&path, p.to_toml()) {
                tracing::warn!(path = %path.display(), error = %e, "cannot cache the profile");
            }
            p
        }
    };
    for m in &cfg.models {
        if let (Some(meta), Some(l)) = (handle.metadata(m), profile.b1(m)) {
            crate::oip::register_model(
                m,
                crate::oip::WorkerModel {
                    meta,
                    default_deadline_ms: default_deadline_ms(l),
                },
            );
        }
    }
    Ok((handle, profile))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let acts = core.step(0.0);
        assert!(
            acts.iter().any(|a| matches!(a, crate::core::Action::Dispatch { job, last: true, latency_ms, .. } if *job == id && (*latency_ms - 2.0).abs() < 1e-6)),
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
