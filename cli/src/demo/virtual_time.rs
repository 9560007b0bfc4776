//! The demo's virtual-time reference runs: the GPU box's seed workload through the planner and
//! three other partitioning modes (the GPU partition simulator), and SDRM3 against baselines
//! on the XR agent's scenario and hardware (the scheduler simulator). Deterministic: the same
//! arguments give the same figures on every run.

use anyhow::Context;

/// The GPU box's seed workload in virtual time.
pub(super) struct GpuRun {
    pub gpu: String,
    pub adaptive: edgeplane_gpu::sim::SimResult,
    /// The same arrivals under the other partitioning modes.
    pub baselines: Vec<edgeplane_gpu::sim::SimResult>,
    /// Every plan the planner committed.
    pub changes: Vec<PlanChangeAt>,
    pub duration_s: f64,
    pub slo_ms: Vec<ModelSlo>,
}

/// A plan the virtual-time planner committed: when, and why with its partitions.
pub(super) struct PlanChangeAt {
    pub t_s: f64,
    pub reason: String,
}

/// A seed model's latency SLO.
pub(super) struct ModelSlo {
    pub model: String,
    pub slo_ms: f64,
}

pub(super) fn gpu_profiles() -> anyhow::Result<edgeplane_gpu::profiles::Profiles> {
    Ok(edgeplane_gpu::GpuData::shipped()
        .context("loading the shipped GPU data")?
        .profiles)
}

pub(super) fn gpu_virtual(
    data: &edgeplane_gpu::GpuData,
    gpu: &str,
    duration_s: f64,
) -> anyhow::Result<GpuRun> {
    use edgeplane_gpu::{policies, scenarios, sim};
    let sc = scenarios::seed(&data.profiles, gpu, 1, duration_s).context("--gpu")?;
    // The four modes see the same arrivals; they run side by side (one thread each).
    let sc = &sc;
    let (ad, adaptive, baselines) = std::thread::scope(|s| {
        let handles: Vec<_> = ["default_mps", "time_slicing", "gpulet"]
            .into_iter()
            .map(|mode| {
                s.spawn(move || {
                    let mut p: Box<dyn sim::PlanPolicy> = match mode {
                        "default_mps" => Box::new(policies::default_mps()),
                        "time_slicing" => Box::new(policies::time_slicing()),
                        _ => Box::new(policies::Gpulet::new()),
                    };
                    sim::run(data, sc, p.as_mut(), &mut |_| {})
                })
            })
            .collect();
        let mut adaptive = edgeplane_planner::sim_policy::Adaptive::default();
        let ad = sim::run(data, sc, &mut adaptive, &mut |_| {});
        let bl: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect();
        (ad, adaptive, bl)
    });
    let ad = ad?;
    let baselines = baselines.into_iter().collect::<Result<Vec<_>, _>>()?;
    let changes = adaptive
        .history
        .iter()
        .map(|(t, o)| PlanChangeAt {
            t_s: *t,
            reason: plan_change_text(o),
        })
        .collect();
    Ok(GpuRun {
        gpu: gpu.into(),
        adaptive: ad,
        baselines,
        changes,
        duration_s: sc.duration_s,
        slo_ms: sc
            .models
            .iter()
            .map(|m| ModelSlo {
                model: m.name.clone(),
                slo_ms: m.slo_ms,
            })
            .collect(),
    })
}

/// `<why> -> [<share>% <tenants>, ...]` of one planner output.
fn plan_change_text(o: &edgeplane_planner::Outcome) -> String {
    let why = o
        .decisions
        .iter()
        .find(|d| d.subject == edgeplane_planner::Subject::Plan)
        .map(|d| d.reason.clone())
        .unwrap_or_else(|| "first plan: models deployed".into());
    let parts = o
        .plan
        .partitions
        .iter()
        .map(|p| {
            format!(
                "{}% {}",
                p.share_pct,
                p.tenants
                    .iter()
                    .map(|t| t.model.as_str())
                    .collect::<Vec<_>>()
                    .join("+")
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!("{why} -> [{parts}]")
}

/// SDRM3 against the baselines in the scheduler simulator.
pub(super) struct XrComparison {
    pub duration_ms: f64,
    pub seed: u64,
    /// SDRM3 first.
    pub rows: Vec<PolicyRun>,
}

pub(super) struct PolicyRun {
    pub policy: String,
    pub report: edgeplane_scheduler::Report,
}

/// SDRM3 against the baselines on the XR agent's scenario and hardware, same seed, in virtual
/// time (the scheduler simulator).
pub(super) fn xr_comparison(scenario: &str, hardware: &str) -> anyhow::Result<XrComparison> {
    let cat = edgeplane_scheduler::Catalog::embedded();
    let duration_ms = 5000.0;
    let mut rows = Vec::new();
    let mut seed = 0;
    for p in ["sdrm3", "xrbench", "edf"] {
        let mut cfg = edgeplane_scheduler::SimConfig::new(scenario, hardware, p);
        cfg.duration_ms = duration_ms;
        // as the live agent runs it: SDRM3 with its online weight tuner
        cfg.tune = p == "sdrm3";
        seed = cfg.seed;
        rows.push(PolicyRun {
            policy: p.to_string(),
            report: edgeplane_scheduler::sim::run(cat, &cfg)?.report,
        });
    }
    Ok(XrComparison {
        duration_ms,
        seed,
        rows,
    })
}
