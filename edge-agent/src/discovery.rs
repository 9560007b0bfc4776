//! Accelerator discovery behind one trait, with two sources: NVML (real GPUs) and simulated
//! XRBench NPUs from the embedded hardware set-ups.
//!
//! NVML is reached through a second, narrower trait ([`NvmlApi`]) so that the mapping from
//! NVML readings to our [`Accelerator`] is unit-tested with a fake, on machines without GPUs.
//! A machine without the NVIDIA driver is a normal case: discovery logs it once and the node
//! comes up as a CPU-only node (it still registers, reports and serves nothing GPU-bound).

use crate::catalog::{Catalog, CatalogError, HwAccelerator};

/// What the agent knows about one of its accelerators.
#[derive(Debug, Clone, PartialEq)]
pub struct Accelerator {
    /// Stable id within the node ("npu0", "gpu0", "cpu0").
    pub id: String,
    /// "npu-ws" / "npu-os" / "npu-rs" / "gpu" / "cpu".
    pub kind: String,
    pub name: String,
    pub memory_mb: u64,
    pub mig_capable: bool,
    pub sm_count: u32,
    pub simulated: bool,
    /// Live readings (NVML only): utilisation %, power W, total energy J since driver load.
    pub utilization_pct: Option<u32>,
    pub power_w: Option<f64>,
    pub total_energy_j: Option<f64>,
    /// For simulated NPUs: the XRBench sub-accelerator (cost tables).
    pub sim: Option<HwAccelerator>,
    /// For GPUs in the shipped profile table (`Jetson-AGX-Xavier`, `A100-80GB`, ...): the
    /// profile the planner and the GPU share model use. None = not in the table (the GPU is
    /// reported, but nothing is planned on it).
    pub gpu_profile: Option<String>,
    /// L(model, batch) measured on this box (the CPU worker's profile), reported to the
    /// coordinator so the planner plans on it instead of the shipped table.
    pub measured: Option<MeasuredProfile>,
}

/// A measured profile as reported: ms per batch of the shipped table's batches, per model.
#[derive(Debug, Clone, PartialEq)]
pub struct MeasuredProfile {
    pub rows: Vec<(String, Vec<f64>)>,
    /// How and where it was measured.
    pub source: String,
}

impl Accelerator {
    pub fn to_proto(&self) -> edgeplane_proto::agent::Accelerator {
        edgeplane_proto::agent::Accelerator {
            id: self.id.clone(),
            kind: self.kind.clone(),
            name: self.name.clone(),
            memory_mb: self.memory_mb,
            mig_capable: self.mig_capable,
            sm_count: self.sm_count,
            simulated: self.simulated,
            profile: self
                .measured
                .iter()
                .flat_map(|m| &m.rows)
                .map(|(model, ms)| edgeplane_proto::agent::ProfileRow {
                    model: model.clone(),
                    ms: ms.clone(),
                })
                .collect(),
            profile_source: self
                .measured
                .as_ref()
                .map_or(String::new(), |m| m.source.clone()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("{0}")]
    Gpu(String),
}

/// A source of accelerators.
pub trait Discover {
    fn discover(&self) -> Result<Vec<Accelerator>, DiscoveryError>;
}

/// Simulated accelerators of an XRBench hardware set-up (`sim:Dual_4K_WS_OS`). Simulated GPUs
/// (the placement issue's GPU share model) will be a second variant of this source.
pub struct SimDiscovery {
    pub hardware: String,
}

impl Discover for SimDiscovery {
    fn discover(&self) -> Result<Vec<Accelerator>, DiscoveryError> {
        let cat = Catalog::get()?;
        Ok(cat
            .hardware(&self.hardware)?
            .iter()
            .map(|a| Accelerator {
                id: format!("npu{}", a.id),
                kind: format!("npu-{}", a.dataflow.to_lowercase()),
                name: a.name.clone(),
                memory_mb: 0,
                mig_capable: false,
                sm_count: 0,
                simulated: true,
                utilization_pct: None,
                power_w: None,
                total_energy_j: None,
                sim: Some(a.clone()),
                gpu_profile: None,
                measured: None,
            })
            .collect())
    }
}

/// One GPU's readings as NVML gives them (units as NVML: bytes, mW, mJ). Every field that a
/// device may not support is optional.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NvmlDevice {
    pub name: String,
    pub memory_total_bytes: u64,
    /// CUDA compute capability (major, minor).
    pub compute_capability: Option<(i32, i32)>,
    /// `Some(current)` when the device supports MIG at all.
    pub mig_mode_current: Option<u32>,
    pub sm_count: Option<u32>,
    pub utilization_gpu_pct: Option<u32>,
    pub power_mw: Option<u32>,
    pub total_energy_mj: Option<u64>,
}

/// The NVML calls discovery needs; [`RealNvml`] implements it over `nvml-wrapper`.
pub trait NvmlApi {
    fn devices(&self) -> Result<Vec<NvmlDevice>, String>;
}

/// NVML readings → accelerators. Pure, so the fake tests it.
pub fn map_nvml(devices: &[NvmlDevice]) -> Vec<Accelerator> {
    devices
        .iter()
        .enumerate()
        .map(|(i, d)| Accelerator {
            id: format!("gpu{i}"),
            kind: "gpu".into(),
            name: d.name.clone(),
            memory_mb: d.memory_total_bytes / (1024 * 1024),
            // MIG needs Ampere+ (compute capability 8.0) and a device answering the MIG query.
            mig_capable: d.mig_mode_current.is_some()
                && d.compute_capability.is_some_and(|(maj, _)| maj >= 8),
            sm_count: d.sm_count.unwrap_or(0),
            simulated: false,
            utilization_pct: d.utilization_gpu_pct,
            power_w: d.power_mw.map(|mw| f64::from(mw) / 1000.0),
            total_energy_j: d.total_energy_mj.map(|mj| mj as f64 / 1000.0),
            sim: None,
            gpu_profile: nvml_profile(&d.name),
            measured: None,
        })
        .collect()
}

/// The shipped GPU profile an NVML product name is, when the table has it
/// (`NVIDIA A100-SXM4-80GB` -> `A100-80GB`, `Orin`/`Xavier` boards by name). None otherwise.
pub fn nvml_profile(product: &str) -> Option<String> {
    let p = product.to_ascii_uppercase().replace(' ', "-");
    let known = crate::catalog::gpu_data().ok()?.profiles.gpu_names();
    let pick = |name: &str| known.iter().find(|k| k.as_str() == name).cloned();
    if p.contains("A100") && p.contains("80") {
        return pick("A100-80GB");
    }
    if p.contains("H100") && p.contains("80") {
        return pick("H100-80GB");
    }
    if p.contains("V100") {
        return pick("V100");
    }
    if p.contains("XAVIER") {
        return pick("Jetson-AGX-Xavier");
    }
    if p.contains("NANO") && !p.contains("ORIN") {
        return pick("Jetson-Nano");
    }
    // exact profile names (a simulated or renamed board)
    known.iter().find(|k| k.to_ascii_uppercase() == p).cloned()
}

/// Simulated GPUs from the shipped profiles (`sim-gpu:Jetson-AGX-Xavier,A100-80GB`): one
/// accelerator per name, `gpu0`, `gpu1`, ... in the order given.
pub struct SimGpuDiscovery {
    pub profiles: Vec<String>,
}

impl Discover for SimGpuDiscovery {
    fn discover(&self) -> Result<Vec<Accelerator>, DiscoveryError> {
        let data = crate::catalog::gpu_data().map_err(DiscoveryError::Gpu)?;
        self.profiles
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let g = data.profiles.gpu(name).map_err(|e| {
                    DiscoveryError::Gpu(format!("accelerators: sim-gpu:{name}: {e}"))
                })?;
                Ok(Accelerator {
                    id: format!("gpu{i}"),
                    kind: "gpu".into(),
                    name: name.clone(),
                    memory_mb: g.memory_mib,
                    mig_capable: g.mig,
                    sm_count: g.sm as u32,
                    simulated: true,
                    utilization_pct: None,
                    power_w: None,
                    total_energy_j: None,
                    sim: None,
                    gpu_profile: Some(name.clone()),
                    measured: None,
                })
            })
            .collect()
    }
}

/// The box's memory (`MemTotal` of /proc/meminfo), 0 where it cannot be read: what the
/// planner fits the CPU worker's models into.
pub fn host_memory_mb() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024)
}

/// The CPU stand-in for a node without usable GPUs.
pub fn cpu_node() -> Accelerator {
    Accelerator {
        id: "cpu0".into(),
        kind: "cpu".into(),
        name: "host CPU".into(),
        memory_mb: host_memory_mb(),
        mig_capable: false,
        sm_count: 0,
        simulated: false,
        utilization_pct: None,
        power_w: None,
        total_energy_j: None,
        sim: None,
        gpu_profile: None,
        measured: None,
    }
}

/// NVML discovery. `api` is `None` when the library could not be loaded.
pub struct NvmlDiscovery<A: NvmlApi> {
    pub api: Result<A, String>,
}

impl<A: NvmlApi> Discover for NvmlDiscovery<A> {
    fn discover(&self) -> Result<Vec<Accelerator>, DiscoveryError> {
        let devices = match &self.api {
            Ok(api) => api.devices(),
            Err(e) => Err(e.clone()),
        };
        match devices {
            Ok(d) if !d.is_empty() => {
                let accs = map_nvml(&d);
                for a in &accs {
                    match &a.gpu_profile {
                        Some(p) => {
                            tracing::info!(id = %a.id, product = %a.name, profile = %p, "GPU maps to a shipped profile: the planner can place models on it")
                        }
                        None => {
                            tracing::warn!(id = %a.id, product = %a.name, "GPU is not in the shipped profile table: it is reported, but the planner places nothing on it (add a measured profile)")
                        }
                    }
                }
                Ok(accs)
            }
            Ok(_) => {
                tracing::warn!("NVML loaded but reports no GPU; running as a CPU-only node");
                Ok(vec![cpu_node()])
            }
            Err(reason) => {
                tracing::warn!(
                    %reason,
                    "NVML not available (no NVIDIA driver?); running as a CPU-only node"
                );
                Ok(vec![cpu_node()])
            }
        }
    }
}

/// NVML through `nvml-wrapper`; the library (`libnvidia-ml.so.1`) is loaded at run time.
pub struct RealNvml {
    nvml: nvml_wrapper::Nvml,
}

impl RealNvml {
    /// Load NVML from the default library name, or from `lib_path` (tests point it at a path
    /// that does not exist to prove the agent survives a missing driver).
    pub fn load(lib_path: Option<&std::ffi::OsStr>) -> Result<RealNvml, String> {
        let mut b = nvml_wrapper::Nvml::builder();
        if let Some(p) = lib_path {
            b.lib_path(p);
        }
        b.init()
            .map(|nvml| RealNvml { nvml })
            .map_err(|e| e.to_string())
    }
}

impl NvmlApi for RealNvml {
    fn devices(&self) -> Result<Vec<NvmlDevice>, String> {
        let n = self.nvml.device_count().map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for i in 0..n {
            let d = self.nvml.device_by_index(i).map_err(|e| e.to_string())?;
            out.push(NvmlDevice {
                name: d.name().unwrap_or_else(|_| format!("GPU {i}")),
                memory_total_bytes: d.memory_info().map(|m| m.total).unwrap_or(0),
                compute_capability: d.cuda_compute_capability().ok().map(|c| (c.major, c.minor)),
                mig_mode_current: d.mig_mode().ok().map(|m| m.current),
                sm_count: None,
                utilization_gpu_pct: d.utilization_rates().ok().map(|u| u.gpu),
                power_mw: d.power_usage().ok(),
                total_energy_mj: d.total_energy_consumption().ok(),
            });
        }
        Ok(out)
    }
}

/// Discover per the configured spec.
pub fn discover(spec: &crate::config::AcceleratorSpec) -> Result<Vec<Accelerator>, DiscoveryError> {
    match spec {
        crate::config::AcceleratorSpec::Sim(hw) => SimDiscovery {
            hardware: hw.clone(),
        }
        .discover(),
        crate::config::AcceleratorSpec::SimGpu(names) => SimGpuDiscovery {
            profiles: names.clone(),
        }
        .discover(),
        crate::config::AcceleratorSpec::Cpu => Ok(vec![cpu_node()]),
        crate::config::AcceleratorSpec::Nvml => {
            let lib = std::env::var_os("EDGEPLANE_NVML_LIB");
            NvmlDiscovery {
                api: RealNvml::load(lib.as_deref()),
            }
            .discover()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct FakeNvml(Vec<NvmlDevice>);
    impl NvmlApi for FakeNvml {
        fn devices(&self) -> Result<Vec<NvmlDevice>, String> {
            Ok(self.0.clone())
        }
    }

    #[test]
    fn nvml_readings_map_to_accelerators() {
        let fake = FakeNvml(vec![
            NvmlDevice {
                name: "NVIDIA H100 80GB HBM3".into(),
                memory_total_bytes: 80 * 1024 * 1024 * 1024,
                compute_capability: Some((9, 0)),
                mig_mode_current: Some(0),
                sm_count: Some(132),
                utilization_gpu_pct: Some(37),
                power_mw: Some(123_500),
                total_energy_mj: Some(5_000_000),
            },
            NvmlDevice {
                name: "Tesla V100".into(),
                memory_total_bytes: 16 * 1024 * 1024 * 1024,
                compute_capability: Some((7, 0)),
                mig_mode_current: None,
                ..Default::default()
            },
        ]);
        let accs = NvmlDiscovery { api: Ok(fake) }.discover().unwrap();
        assert_eq!(accs.len(), 2);
        let h = &accs[0];
        assert_eq!(h.id, "gpu0");
        assert_eq!(h.kind, "gpu");
        assert_eq!(h.memory_mb, 80 * 1024);
        assert!(h.mig_capable);
        assert_eq!(h.sm_count, 132);
        assert_eq!(h.utilization_pct, Some(37));
        assert_eq!(h.power_w, Some(123.5));
        assert_eq!(h.total_energy_j, Some(5000.0));
        assert!(!h.simulated);
        assert_eq!(h.gpu_profile.as_deref(), Some("H100-80GB"));
        let v = &accs[1];
        assert_eq!(v.gpu_profile.as_deref(), Some("V100"));
        assert_eq!(v.id, "gpu1");
        assert!(!v.mig_capable, "V100 has no MIG");
        assert_eq!(v.power_w, None);
    }

    #[test]
    fn missing_nvml_library_gives_a_cpu_node() {
        let api = RealNvml::load(Some(std::ffi::OsStr::new(
            "/nonexistent/libnvidia-ml-missing.so.1",
        )));
        assert!(api.is_err());
        let accs = NvmlDiscovery { api }.discover().unwrap();
        assert_eq!(accs, vec![cpu_node()]);
    }

    #[test]
    fn nvml_names_map_to_profiles_or_say_unknown() {
        assert_eq!(
            nvml_profile("NVIDIA A100-SXM4-80GB").as_deref(),
            Some("A100-80GB")
        );
        assert_eq!(
            nvml_profile("NVIDIA A100 80GB PCIe").as_deref(),
            Some("A100-80GB")
        );
        assert_eq!(nvml_profile("Xavier").as_deref(), Some("Jetson-AGX-Xavier"));
        assert_eq!(nvml_profile("NVIDIA GeForce RTX 4090"), None);
        assert_eq!(nvml_profile("NVIDIA H200"), None);
    }

    #[test]
    fn sim_gpus_come_from_the_profiles_and_bad_names_are_listed() {
        let accs = SimGpuDiscovery {
            profiles: vec!["Jetson-AGX-Xavier".into(), "A100-80GB".into()],
        }
        .discover()
        .unwrap();
        assert_eq!(accs.len(), 2);
        assert_eq!(accs[0].id, "gpu0");
        assert_eq!(accs[0].kind, "gpu");
        assert_eq!(accs[1].gpu_profile.as_deref(), Some("A100-80GB"));
        assert!(accs[1].mig_capable);
        let e = SimGpuDiscovery {
            profiles: vec!["RTX-9999".into()],
        }
        .discover()
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("RTX-9999") && e.contains("Jetson-AGX-Xavier"),
            "{e}"
        );
    }

    #[test]
    fn sim_setup_lists_its_npus() {
        let accs = SimDiscovery {
            hardware: "Dual_4K_WS_OS".into(),
        }
        .discover()
        .unwrap();
        let kinds: Vec<_> = accs.iter().map(|a| a.kind.as_str()).collect();
        assert_eq!(kinds, ["npu-ws", "npu-os"]);
        assert!(accs.iter().all(|a| a.simulated && a.sim.is_some()));
    }
}
