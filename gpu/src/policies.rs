//! The comparison modes of the simulator (the adaptive planner lives in `edgeplane-planner`):
//! - [`DefaultMps`]: one uncapped worker per model; every busy model competes for all SMs.
//! - [`TimeSlicing`]: one worker per model, one batch on the GPU at a time.
//! - [`EqualSplit`]: static caps of 1/k for the k models on a GPU.
//! - [`Gpulet`]: gpulet's elastic partitioning (Choi et al., "Serving Heterogeneous Machine Learning
//!   Models on Multi-GPU Servers with Spatio-Temporal Sharing", USENIX ATC'22).
//!
//! Every static mode gets the same load-aware placement before its sharing rule applies
//! ([`place_by_load`]: longest-processing-time bin packing of each model's deployed demand,
//! rate x L(batch 1, whole GPU), onto the GPU it leaves least utilised, memory permitting;
//! a model keeps its GPU while it stays deployed), and re-plans only when the deployed set
//! changes. How each follows its source:
//! - default MPS (NVIDIA MPS documentation, "Multi-Process Service", and the seed experiment's
//!   baseline): one client process per model, no `CUDA_MPS_ACTIVE_THREAD_PERCENTAGE`, so every
//!   busy client may use all SMs; the simulator shares the SMs among the running batches;
//! - time slicing (CUDA's default compute mode without MPS): one context runs at a time, the
//!   simulator runs one batch per GPU at a time at the measured context-switch cost;
//! - equal split (MPS with `CUDA_MPS_ACTIVE_THREAD_PERCENTAGE = 100 / k` for the k clients of a
//!   GPU, the seed's static-partition baseline).
//!
//! Placement is not part of any of these rules (they share one GPU); a fleet running them would
//! place by load, so they get the same bin packing the planner's comparison deserves instead of
//! model i on GPU i mod #GPUs (which put three models on the Nano in the dynamic variant).

use crate::capacity::{self, Tenant as CapTenant};
use crate::sim::{Layout, PartitionSpec, PlanPolicy, PlanView, Tenant};
use crate::{GpuError, Load};
use std::collections::BTreeMap;

fn deployed_models(v: &PlanView<'_>) -> Vec<usize> {
    (0..v.scenario.models.len())
        .filter(|&m| v.deployed[m])
        .collect()
}

/// Largest batch with 2 x L(b, share) <= SLO (no margins), at least 1.
fn plain_batch(v: &PlanView<'_>, gpu: usize, m: usize, share: f64) -> Result<u32, GpuError> {
    let kind = &v.scenario.gpus[gpu].kind;
    let model = &v.scenario.models[m];
    Ok(capacity::single(
        &v.data.profiles,
        kind,
        &model.profile,
        share,
        model.slo_ms,
        1.0,
    )?
    .map_or(1, |c| c.batch))
}

/// A model's demand on a GPU: the fraction of the whole GPU its deployed rate keeps busy at
/// batch 1 (None when the GPU kind has no curve for it).
fn demand_on(v: &PlanView<'_>, gpu: usize, m: usize) -> Result<Option<f64>, GpuError> {
    let kind = &v.scenario.gpus[gpu].kind;
    let model = &v.scenario.models[m];
    if !v.data.profiles.has_curve(kind, &model.profile) {
        return Ok(None);
    }
    let l = v.data.profiles.latency_ms(kind, &model.profile, 1.0, 1.0)?;
    Ok(Some(model.requested_rps.max(0.0) * l / 1000.0))
}

/// Load-aware placement shared by the static modes: models already in `placed` stay; the others,
/// largest demand first (demand on the GPU where it is smallest), go to the GPU whose
/// utilisation after adding them is lowest among those with the memory (ties: lower index);
/// when none has the memory, the least utilised GPU that has a curve for it; a model no GPU
/// has a curve for goes to GPU `m mod #GPUs` (the simulator refuses what it cannot run).
pub fn place_by_load(
    v: &PlanView<'_>,
    models: &[usize],
    placed: &mut BTreeMap<usize, usize>,
) -> Result<(), GpuError> {
    let ng = v.scenario.gpus.len();
    let mut util = vec![0.0f64; ng];
    let mut mem_free = Vec::with_capacity(ng);
    for g in &v.scenario.gpus {
        mem_free.push(v.data.profiles.gpu(&g.kind)?.memory_mib as i64);
    }
    let mem_of = |m: usize| -> Result<i64, GpuError> {
        Ok(v.data
            .profiles
            .model(&v.scenario.models[m].profile)?
            .gpu_mem_mib as i64)
    };
    for (&m, &g) in placed.iter() {
        util[g] += demand_on(v, g, m)?.unwrap_or(0.0);
        mem_free[g] -= mem_of(m)?;
    }
    struct New {
        model: usize,
        demand: Vec<Option<f64>>,
        smallest: f64,
    }
    let mut new = Vec::new();
    for &m in models.iter().filter(|m| !placed.contains_key(m)) {
        let demand = (0..ng)
            .map(|g| demand_on(v, g, m))
            .collect::<Result<Vec<_>, _>>()?;
        let smallest = demand
            .iter()
            .flatten()
            .copied()
            .fold(f64::INFINITY, f64::min);
        new.push(New {
            model: m,
            demand,
            smallest,
        });
    }
    new.sort_by(|a, b| {
        b.smallest
            .total_cmp(&a.smallest)
            .then(a.model.cmp(&b.model))
    });
    for n in new {
        let mem = mem_of(n.model)?;
        let after = |g: usize| n.demand[g].map(|d| util[g] + d);
        let best = |need_mem: bool| {
            (0..ng)
                .filter(|&g| !need_mem || mem_free[g] >= mem)
                .filter_map(|g| after(g).map(|u| (u, g)))
                .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)))
                .map(|(_, g)| g)
        };
        let g = best(true).or_else(|| best(false)).unwrap_or(n.model % ng);
        util[g] += n.demand[g].unwrap_or(0.0);
        mem_free[g] -= mem;
        placed.insert(n.model, g);
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StaticKind {
    DefaultMps,
    TimeSlicing,
    EqualSplit,
}

/// Shared implementation of the three static modes.
#[derive(Debug)]
pub struct Static {
    kind: StaticKind,
    last: Option<Vec<bool>>,
    /// The GPU of each placed model (kept while it stays deployed).
    placed: BTreeMap<usize, usize>,
}

/// Default MPS: no caps.
pub fn default_mps() -> Static {
    Static {
        kind: StaticKind::DefaultMps,
        last: None,
        placed: BTreeMap::new(),
    }
}
/// Time slicing: one context at a time.
pub fn time_slicing() -> Static {
    Static {
        kind: StaticKind::TimeSlicing,
        last: None,
        placed: BTreeMap::new(),
    }
}
/// Equal split: caps 1/k.
pub fn equal_split() -> Static {
    Static {
        kind: StaticKind::EqualSplit,
        last: None,
        placed: BTreeMap::new(),
    }
}

impl PlanPolicy for Static {
    fn name(&self) -> &str {
        match self.kind {
            StaticKind::DefaultMps => "default_mps",
            StaticKind::TimeSlicing => "time_slicing",
            StaticKind::EqualSplit => "equal_split",
        }
    }
    fn time_sliced(&self) -> bool {
        self.kind == StaticKind::TimeSlicing
    }
    fn interval_s(&self) -> f64 {
        1.0
    }
    fn plan(&mut self, v: &PlanView<'_>) -> Result<Option<Layout>, GpuError> {
        if self.last.as_deref() == Some(v.deployed) {
            return Ok(None);
        }
        self.last = Some(v.deployed.to_vec());
        let ng = v.scenario.gpus.len();
        let models = deployed_models(v);
        self.placed.retain(|m, _| v.deployed[*m]);
        place_by_load(v, &models, &mut self.placed)?;
        let mut parts = Vec::new();
        for g in 0..ng {
            let here: Vec<usize> = models
                .iter()
                .copied()
                .filter(|m| self.placed.get(m) == Some(&g))
                .collect();
            let k = here.len().max(1) as f64;
            for &m in &here {
                let (share, nominal) = match self.kind {
                    StaticKind::EqualSplit => (Some(1.0 / k), 1.0 / k),
                    _ => (None, 1.0),
                };
                parts.push(PartitionSpec {
                    gpu: g,
                    share,
                    tenants: vec![Tenant {
                        model: m,
                        weight: 1.0,
                        max_batch: plain_batch(v, g, m, nominal)?,
                    }],
                });
            }
        }
        Ok(Some(Layout {
            partitions: parts,
            shed: Vec::new(),
        }))
    }
}

/// gpulet's elastic partitioning, as in the ATC'22 paper §4 (Algorithm 1, "elastic partitioning")
/// with the constants read from its code (`configs/gpu/interference.toml` `[gpulet_model]`,
/// `[adaptive_greedy]`):
/// - at most two gpulets per GPU, sizes from the menu {20, 40, 50, 60, 80, 100} %: the first takes
///   the size it needs, the second is the remainder of the GPU (largest menu size <= 100 - first);
/// - plan on the epoch's rate x headroom (1.5 below 125 req/s, 1.2 at or above), re-plan each 20 s
///   epoch only when a rate rose by > 5 % and > 10 req/s or fell by > 10 % (rate = the epoch's mean);
/// - models by rate, highest first; each gets saturated gpulets of its most cost-effective size
///   (max throughput per %, batch with 2 x L x alpha x 1.1 <= SLO), then its residue goes into an
///   existing gpulet by temporal sharing if that stays feasible, else into the smallest new gpulet
///   that serves it; alpha is gpulet's linear model against the other gpulet on the GPU.
///
/// Deviations: gpulet reorganises with background model loading; here a change is the simulator's
/// make-before-break with the same worker start time as adaptive. gpulet's temporal-sharing check
/// (duty cycle) is replaced by the shared round-robin rule in [`capacity::time_share`]. A model that
/// cannot be placed is refused (gpulet would drop its requests at the frontend). Plans happen only at
/// epoch boundaries (every 20 s from t = 0), so a model deployed between epochs waits for the next
/// one, as with gpulet's epoch scheduler. With one GPU and three models the two-gpulet limit forces
/// two models to time-share one gpulet; when that misses a tight SLO (resnet18, 45 ms) the model is
/// refused: that is the rule's outcome here, not a weakened rule.
#[derive(Debug, Default)]
pub struct Gpulet {
    last_rates: Option<Vec<f64>>,
    last_deployed: Option<Vec<bool>>,
}

/// gpulet's partition menu, percent.
pub const GPULET_MENU: [u32; 6] = [20, 40, 50, 60, 80, 100];

#[derive(Debug, Clone)]
struct Glet {
    gpu: usize,
    pct: u32,
    tenants: Vec<(usize, f64)>,
}

impl Gpulet {
    pub fn new() -> Self {
        Self::default()
    }

    fn needs_replan(&self, v: &PlanView<'_>, rates: &[f64]) -> bool {
        let (Some(last), Some(dep)) = (&self.last_rates, &self.last_deployed) else {
            return true;
        };
        if dep.as_slice() != v.deployed {
            return true;
        }
        rates
            .iter()
            .zip(last)
            .any(|(&r, &l)| (r > l * 1.05 && r > l + 10.0) || r < l * 0.90)
    }

    fn alpha_for(
        v: &PlanView<'_>,
        glets: &[Glet],
        gpu: usize,
        me_pct: u32,
        me_models: &[usize],
        exclude: Option<usize>,
    ) -> f64 {
        let names = |m: usize| v.scenario.models[m].profile.as_str();
        let mut a: f64 = 1.0;
        for (gi, o) in glets.iter().enumerate() {
            if o.gpu != gpu || Some(gi) == exclude {
                continue;
            }
            for &m in me_models {
                for &(om, _) in &o.tenants {
                    let me = Load {
                        model: names(m),
                        batch: 1.0,
                        share: me_pct as f64 / 100.0,
                    };
                    let other = Load {
                        model: names(om),
                        batch: 1.0,
                        share: o.pct as f64 / 100.0,
                    };
                    a = a.max(v.data.interference.alpha(me, &[other]));
                }
            }
        }
        a
    }
}

impl PlanPolicy for Gpulet {
    fn name(&self) -> &str {
        "gpulet"
    }
    fn interval_s(&self) -> f64 {
        20.0
    }
    fn window_s(&self) -> f64 {
        20.0
    }
    fn rate_bucket_s(&self) -> f64 {
        20.0 // the epoch's rate
    }
    fn plan(&mut self, v: &PlanView<'_>) -> Result<Option<Layout>, GpuError> {
        let rates = gpulet_rates(v);
        if !self.needs_replan(v, &rates) {
            return Ok(None);
        }
        self.last_rates = Some(rates.clone());
        self.last_deployed = Some(v.deployed.to_vec());
        let n = v.scenario.models.len();
        let mut order: Vec<usize> = (0..n)
            .filter(|&m| v.deployed[m] && rates[m] > 0.0)
            .collect();
        order.sort_by(|&a, &b| rates[b].total_cmp(&rates[a]).then(a.cmp(&b)));
        let mut glets: Vec<Glet> = Vec::new();
        let mut residue = vec![0.0; n];
        // pass 1: saturated gpulets at the most cost-effective size
        for &m in &order {
            let r = rates[m];
            let planned = r * if r < 125.0 { 1.5 } else { 1.2 };
            residue[m] = gpulet_saturate(v, &mut glets, m, planned)?;
        }
        // pass 2: residues, by rate
        let mut shed = Vec::new();
        for &m in &order {
            let r = residue[m];
            if r <= 1e-9 {
                continue;
            }
            let placed = gpulet_time_share(v, &mut glets, m, r)?
                || gpulet_new_smallest(v, &mut glets, m, r)?;
            if !placed && !glets.iter().any(|g| g.tenants.iter().any(|t| t.0 == m)) {
                shed.push(m);
            }
        }
        Ok(Some(Layout {
            partitions: gpulet_partitions(v, &glets)?,
            shed,
        }))
    }
}

/// The most cost-effective (gpu, size) for a saturated gpulet: max throughput per %.
#[derive(Clone, Copy)]
struct Best {
    eff: f64,
    gpu: usize,
    pct: u32,
    tput: f64,
}

/// Each model's rate for the plan: its observed peak (or requested rate) while deployed, else 0.
fn gpulet_rates(v: &PlanView<'_>) -> Vec<f64> {
    (0..v.scenario.models.len())
        .map(|m| {
            if v.deployed[m] {
                v.observed_peak_rps[m].unwrap_or(v.scenario.models[m].requested_rps)
            } else {
                0.0
            }
        })
        .collect()
}

/// Sizes a new gpulet may take on GPU g: any menu size on an empty GPU; on a GPU split once
/// (p), only the remainder (largest menu size <= 100 - p); none on a GPU split twice.
fn gpulet_sizes(glets: &[Glet], g: usize) -> Vec<u32> {
    let here: Vec<u32> = glets.iter().filter(|x| x.gpu == g).map(|x| x.pct).collect();
    match here.len() {
        0 => GPULET_MENU.to_vec(),
        1 => GPULET_MENU
            .iter()
            .copied()
            .filter(|&s| s <= 100 - here[0].min(100))
            .max()
            .into_iter()
            .collect(),
        _ => Vec::new(),
    }
}

/// Capacity of model m alone in a `pct` gpulet on GPU g, given the gpulets already placed.
fn gpulet_single(
    v: &PlanView<'_>,
    glets: &[Glet],
    m: usize,
    g: usize,
    pct: u32,
) -> Result<Option<capacity::Capacity>, GpuError> {
    let model = &v.scenario.models[m];
    let a = Gpulet::alpha_for(v, glets, g, pct, &[m], None);
    capacity::single(
        &v.data.profiles,
        &v.scenario.gpus[g].kind,
        &model.profile,
        pct as f64 / 100.0,
        model.slo_ms,
        a * v.data.interference.latency_ratio,
    )
}

/// Pass 1: saturated gpulets for model m while the planned rate fills one; returns the residue.
fn gpulet_saturate(
    v: &PlanView<'_>,
    glets: &mut Vec<Glet>,
    m: usize,
    mut remaining: f64,
) -> Result<f64, GpuError> {
    loop {
        let mut best: Option<Best> = None;
        for g in 0..v.scenario.gpus.len() {
            for pct in gpulet_sizes(glets, g) {
                let Some(c) = gpulet_single(v, glets, m, g, pct)? else {
                    continue;
                };
                let eff = c.throughput_rps / pct as f64;
                if best.is_none_or(|b| eff > b.eff + 1e-12) {
                    best = Some(Best {
                        eff,
                        gpu: g,
                        pct,
                        tput: c.throughput_rps,
                    });
                }
            }
        }
        match best {
            Some(b) if remaining >= b.tput => {
                glets.push(Glet {
                    gpu: b.gpu,
                    pct: b.pct,
                    tenants: vec![(m, b.tput)],
                });
                remaining -= b.tput;
            }
            _ => return Ok(remaining),
        }
    }
}

/// Pass 2a: temporal sharing of residue r in an existing gpulet (smallest first).
fn gpulet_time_share(
    v: &PlanView<'_>,
    glets: &mut [Glet],
    m: usize,
    r: f64,
) -> Result<bool, GpuError> {
    let model = &v.scenario.models[m];
    let ratio = v.data.interference.latency_ratio;
    let mut cands: Vec<usize> = (0..glets.len()).collect();
    cands.sort_by_key(|&i| (glets[i].pct, i));
    for i in cands {
        let gl = &glets[i];
        let kind = &v.scenario.gpus[gl.gpu].kind;
        let mut ms: Vec<usize> = gl.tenants.iter().map(|t| t.0).collect();
        ms.push(m);
        let a = Gpulet::alpha_for(v, glets, gl.gpu, gl.pct, &ms, Some(i));
        let mut ts: Vec<CapTenant<'_>> = gl
            .tenants
            .iter()
            .map(|&(tm, tr)| CapTenant {
                model: &v.scenario.models[tm].profile,
                rate_rps: tr,
                slo_ms: v.scenario.models[tm].slo_ms,
            })
            .collect();
        ts.push(CapTenant {
            model: &model.profile,
            rate_rps: r,
            slo_ms: model.slo_ms,
        });
        let share = gl.pct as f64 / 100.0;
        if capacity::time_share(&v.data.profiles, kind, share, &ts, a * ratio)?.is_some() {
            glets[i].tenants.push((m, r));
            return Ok(true);
        }
    }
    Ok(false)
}

/// Pass 2b: the smallest new gpulet that serves residue r.
fn gpulet_new_smallest(
    v: &PlanView<'_>,
    glets: &mut Vec<Glet>,
    m: usize,
    r: f64,
) -> Result<bool, GpuError> {
    for pct in GPULET_MENU {
        for g in 0..v.scenario.gpus.len() {
            if !gpulet_sizes(glets, g).contains(&pct) {
                continue;
            }
            if let Some(c) = gpulet_single(v, glets, m, g, pct)? {
                if c.throughput_rps >= r {
                    glets.push(Glet {
                        gpu: g,
                        pct,
                        tenants: vec![(m, r)],
                    });
                    return Ok(true);
                }
            }
        }
    }
    Ok(false)
}

/// The partitions of the planned gpulets, each tenant batched as it would be alone in it.
fn gpulet_partitions(v: &PlanView<'_>, glets: &[Glet]) -> Result<Vec<PartitionSpec>, GpuError> {
    let p = &v.data.profiles;
    let ratio = v.data.interference.latency_ratio;
    let mut parts = Vec::new();
    for gl in glets {
        let share = gl.pct as f64 / 100.0;
        let mut tenants = Vec::new();
        for &(m, w) in &gl.tenants {
            let model = &v.scenario.models[m];
            let kind = &v.scenario.gpus[gl.gpu].kind;
            let b = capacity::single(p, kind, &model.profile, share, model.slo_ms, ratio)?
                .map_or(1, |c| c.batch);
            tenants.push(Tenant {
                model: m,
                weight: w,
                max_batch: b,
            });
        }
        parts.push(PartitionSpec {
            gpu: gl.gpu,
            share: Some(share),
            tenants,
        });
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{Scenario, SimGpu, SimModel};
    use crate::GpuData;

    fn m(name: &str, profile: &str, rps: f64) -> SimModel {
        SimModel {
            name: name.into(),
            profile: profile.into(),
            slo_ms: 100.0,
            requested_rps: rps,
            deploy_s: 0.0,
            undeploy_s: None,
            schedule: Vec::new(),
            value: 1.0,
        }
    }

    fn scenario(models: Vec<SimModel>) -> Scenario {
        let xavier = |node: &str| SimGpu {
            node: node.into(),
            kind: "Jetson-AGX-Xavier".into(),
        };
        Scenario {
            gpus: vec![xavier("a"), xavier("b")],
            models,
            duration_s: 1.0,
            seed: 1,
            worker_start_s: 3.0,
        }
    }

    #[test]
    fn static_modes_bin_pack_by_demand_not_by_index() {
        // Xavier TensorRT FP16 rows at batch 1 (configs/gpu/profiles.toml): resnet18 1.64 ms,
        // vgg16 7.46 ms, resnet50 3.48 ms. Busy fraction = rate x L / 1000:
        //   r18-big 100 x 1.64 = 0.164, vgg 20 x 7.46 = 0.1492, r50 40 x 3.48 = 0.1392,
        //   r18-small 10 x 1.64 = 0.0164.
        // Largest first: r18-big -> gpu 0 (tie, lower index); vgg -> gpu 1 (0.149 < 0.313);
        // r50 -> gpu 1 (0.149 + 0.139 = 0.288 < 0.164 + 0.139 = 0.303); r18-small -> gpu 0
        // (0.180 < 0.305). Index mod 2 would have put r50 on 0 and r18-small on 1.
        let data = GpuData::shipped().unwrap();
        let sc = scenario(vec![
            m("r18-big", "resnet18", 100.0),
            m("vgg", "vgg16", 20.0),
            m("r50", "resnet50", 40.0),
            m("r18-small", "resnet18", 10.0),
        ]);
        let deployed = vec![true; 4];
        let current = Layout::default();
        let v = PlanView {
            now_s: 0.0,
            data: &data,
            scenario: &sc,
            deployed: &deployed,
            observed_peak_rps: &[None; 4],
            arrivals_per_s: &[],
            current: &current,
        };
        let mut placed = BTreeMap::new();
        place_by_load(&v, &[0, 1, 2, 3], &mut placed).unwrap();
        let want: BTreeMap<usize, usize> = [(0, 0), (1, 1), (2, 1), (3, 0)].into();
        assert_eq!(placed, want);
        // a model that stays deployed keeps its GPU when another arrives
        let mut again: BTreeMap<usize, usize> = [(0, 1)].into();
        place_by_load(&v, &[0, 1], &mut again).unwrap();
        assert_eq!(again, [(0, 1), (1, 0)].into());
    }
}
