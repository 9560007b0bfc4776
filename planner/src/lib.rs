//! The placement planner: which node serves which model, and how each GPU is split into MPS
//! partitions. A pure function of (cluster state, observed rates, current plan) -> (plan, steps,
//! reasons), so the coordinator's leader, `bench partition` (through [`sim_policy`]) and
//! `placement plan --dry-run` all run the same code.
//!
//! The rules (DESIGN.md §4):
//! 1. Plan on the demand: max(deployed rate, the smoothed observed rate of [`rate`]), with
//!    headroom max(x 1.2, + the half-width of its confidence band).
//! 2. Re-plan only when a rate moves significantly against the rate the current plan was made
//!    for (outside its Poisson confidence band and above an absolute floor, [`rate::Band`]; the
//!    planned capacity covers the band, so a rise beyond capacity is always such a move), or
//!    when the model set or the healthy nodes change (hysteresis).
//! 3. Order models by rate x SLO tightness (rate / SLO), highest first.
//! 4. A model's ideal share on a GPU kind is the MPS cap (10 % steps) with the best throughput per %
//!    whose largest batch meets 2 x latency x alpha x 1.1 <= SLO (alpha: gpulet's model against the
//!    worst neighbour filling the rest of the GPU).
//! 5. Serve the rate with full partitions of the ideal share plus one residue partition; residues are
//!    packed by time sharing into other residue partitions where the round-robin rule still holds.
//! 6. Place partitions on the GPU with the most free share that has the memory, preferring GPUs that
//!    already run the same partition (fewer moves).
//! 7. When demand exceeds capacity, shed the models with the least value per GPU share, and say so.
//! 8. The diff from the current plan is make-before-break: start new partitions, wait until ready,
//!    move traffic, stop the old ones.

pub mod rate;
pub mod reconcile;
pub mod sim_policy;

use edgeplane_gpu::capacity::{self, Tenant as CapTenant};
use edgeplane_gpu::{GpuData, GpuError, Load};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

/// Errors of the planner (bad input only: the planner never does I/O).
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("model `{model}`: {msg}")]
    Model { model: String, msg: String },
    #[error("node `{node}` gpu `{gpu}`: {msg}")]
    Gpu {
        node: String,
        gpu: String,
        msg: String,
    },
    #[error(transparent)]
    Profile(#[from] GpuError),
}

/// One GPU of a node.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GpuSlot {
    pub id: String,
    /// Profile name, e.g. `Jetson-AGX-Xavier`, `A100-80GB`.
    pub kind: String,
    pub memory_mib: u64,
}

/// A node as the planner sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Node {
    pub id: String,
    /// False once its lease expired: its partitions are re-placed.
    pub healthy: bool,
    pub gpus: Vec<GpuSlot>,
}

/// A deployed model with its demand.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelDemand {
    /// Deployment name (unique).
    pub name: String,
    /// Profile model (`resnet18`, `resnet50`, `vgg16`, ...).
    pub profile: String,
    pub slo_ms: f64,
    pub requested_rps: f64,
    /// Recent peak of the observed rate, when there is one.
    pub observed_peak_rps: Option<f64>,
    /// Resident GPU memory of one worker.
    pub mem_mib: u64,
    /// Value of one request (shedding order); 1 by default.
    pub value: f64,
}

/// Inputs of one planning round.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Inputs {
    pub nodes: Vec<Node>,
    pub models: Vec<ModelDemand>,
}

/// Tunables (defaults are the DESIGN.md values).
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub headroom: f64,
    /// The rate estimator's time constant and the significance band of a rate change.
    pub band: rate::Band,
    pub latency_margin: f64,
    /// MPS caps to choose from, percent.
    pub steps_pct: Vec<u32>,
    /// How many open residue partitions a residue tries to join (bounds planning time).
    pub residue_candidates: usize,
    /// Lend share nobody planned to the busiest partition of each GPU.
    pub lend_spare: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            headroom: 1.2,
            band: rate::Band::default(),
            latency_margin: 1.1,
            steps_pct: vec![10, 20, 30, 40, 50, 60, 70, 80, 90, 100],
            residue_candidates: 8,
            lend_spare: true,
        }
    }
}

/// A model's part in a partition.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Assigned {
    pub model: String,
    /// Planned requests/s routed here (the routing weight).
    pub rate_rps: f64,
    /// Largest batch dispatched.
    pub max_batch: u32,
}

/// One planned MPS partition.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Partition {
    /// Stable name: `node/gpu/share%/models#n`.
    pub id: String,
    pub node: String,
    pub gpu: String,
    pub share_pct: u32,
    pub tenants: Vec<Assigned>,
    pub mem_mib: u64,
    /// Why this partition exists.
    pub reason: String,
}

/// A model that is not served, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Shed {
    pub model: String,
    pub reason: String,
}

/// One decision with its reason (what `--dry-run` prints).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    pub subject: String,
    pub reason: String,
}

/// A complete plan.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Plan {
    pub partitions: Vec<Partition>,
    /// The rate each model was planned on, before headroom (the hysteresis reference).
    pub basis_rps: BTreeMap<String, f64>,
    pub shed: Vec<Shed>,
    /// Healthy nodes the plan was made with.
    pub nodes: BTreeSet<String>,
}

impl Plan {
    /// Planned share in use on (node, gpu), percent.
    pub fn used_pct(&self, node: &str, gpu: &str) -> u32 {
        self.partitions
            .iter()
            .filter(|p| p.node == node && p.gpu == gpu)
            .map(|p| p.share_pct)
            .sum()
    }
}

/// A make-before-break step.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    Start {
        partition: String,
        reason: String,
    },
    WaitReady {
        partition: String,
        reason: String,
    },
    MoveTraffic {
        model: String,
        from: Vec<String>,
        to: Vec<String>,
        reason: String,
    },
    Stop {
        partition: String,
        reason: String,
    },
}

/// What one planning round returns.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    pub plan: Plan,
    /// False when the current plan was kept (hysteresis).
    pub replanned: bool,
    pub steps: Vec<Step>,
    pub decisions: Vec<Decision>,
    /// Why the current plan was replaced (None: a first plan, or the plan was kept). Its text
    /// is already in `decisions` (the JSON shape stays as it was).
    #[serde(skip)]
    pub trigger: Option<Trigger>,
}

/// The capacity menu of one (GPU kind, profile, SLO): ideal share and residue sizes.
#[derive(Debug, Clone)]
struct Menu {
    /// (pct, batch, throughput) for every feasible cap, ascending pct.
    caps: Vec<(u32, u32, f64)>,
    /// Index into `caps` of the ideal share.
    ideal: usize,
}

type MenuKey = (String, String, u64);

struct Ctx<'a> {
    data: &'a GpuData,
    cfg: &'a Config,
    menus: BTreeMap<MenuKey, Option<Menu>>,
}

impl Ctx<'_> {
    fn menu(&mut self, kind: &str, m: &ModelDemand) -> Result<Option<Menu>, PlanError> {
        let key = (kind.to_string(), m.profile.clone(), m.slo_ms.to_bits());
        if let Some(x) = self.menus.get(&key) {
            return Ok(x.clone());
        }
        let p = &self.data.profiles;
        let mut caps = Vec::new();
        if p.has_curve(kind, &m.profile) {
            for &pct in &self.cfg.steps_pct {
                let s = pct as f64 / 100.0;
                let mut best: Option<(u32, f64)> = None;
                for b in 1..=p.max_batch() {
                    let me = Load {
                        model: &m.profile,
                        batch: b as f64,
                        share: s,
                    };
                    let alpha = self.data.interference.worst_alpha(me, 1.0 - s);
                    let l = p.latency_ms(kind, &m.profile, b as f64, s)?
                        * alpha
                        * self.cfg.latency_margin;
                    if 2.0 * l > m.slo_ms {
                        break;
                    }
                    best = Some((b, 1000.0 * b as f64 / l));
                }
                if let Some((b, t)) = best {
                    caps.push((pct, b, t));
                }
            }
        }
        let menu = if caps.is_empty() {
            None
        } else {
            let ideal = (0..caps.len())
                .max_by(|&a, &b| {
                    let ea = caps[a].2 / caps[a].0 as f64;
                    let eb = caps[b].2 / caps[b].0 as f64;
                    ea.total_cmp(&eb).then(b.cmp(&a))
                })
                .expect("non-empty");
            Some(Menu { caps, ideal })
        };
        self.menus.insert(key, menu.clone());
        Ok(menu)
    }
}

#[derive(Debug, Clone)]
struct Slot {
    node: String,
    gpu: String,
    kind: String,
    free_pct: u32,
    free_mem: u64,
}

fn validate(inputs: &Inputs) -> Result<(), PlanError> {
    let mut names = BTreeSet::new();
    for m in &inputs.models {
        let bad = |msg: &str| PlanError::Model {
            model: m.name.clone(),
            msg: msg.to_string(),
        };
        if !names.insert(m.name.as_str()) {
            return Err(bad("deployed twice; names must be unique"));
        }
        if !(m.slo_ms.is_finite() && m.slo_ms > 0.0) {
            return Err(bad("slo_ms must be a positive number of ms"));
        }
        if !(m.requested_rps.is_finite() && m.requested_rps >= 0.0) {
            return Err(bad("requested_rps must be >= 0"));
        }
        if m.observed_peak_rps
            .is_some_and(|r| !(r.is_finite() && r >= 0.0))
        {
            return Err(bad("observed_peak_rps must be >= 0"));
        }
        if !(m.value.is_finite() && m.value > 0.0) {
            return Err(bad("value must be > 0"));
        }
    }
    for n in &inputs.nodes {
        for g in &n.gpus {
            if g.memory_mib == 0 {
                return Err(PlanError::Gpu {
                    node: n.id.clone(),
                    gpu: g.id.clone(),
                    msg: "memory_mib must be > 0".into(),
                });
            }
        }
    }
    Ok(())
}

/// The rate a model is planned on (before headroom): its demand, the larger of the rate it was
/// deployed with and the observed rate (which counts requests refused while it is served
/// nowhere). An idle model therefore falls back to its deployed rate, never to nothing.
pub fn basis_rps(m: &ModelDemand) -> f64 {
    m.observed_peak_rps
        .map_or(m.requested_rps, |o| o.max(m.requested_rps))
}

/// The capacity planned for a basis: headroom x the basis, and at least the upper edge of the
/// basis's confidence band (so every rise that stays inside the band is served without a
/// re-plan; a rise beyond the planned capacity is always outside the band).
pub fn planned_rps(basis: f64, cfg: &Config) -> f64 {
    if basis <= 0.0 {
        return 0.0;
    }
    (basis * cfg.headroom).max(basis + cfg.band.half_width(basis))
}

/// Why a plan was replaced (hysteresis fired). Structured, so that callers that know more
/// than the planner sees (the coordinator knows an operator's pins) can say it better without
/// parsing the text; `Display` is the text the planner's decisions carry.
#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    NodeLost(String),
    NodeJoined(String),
    ModelRemoved(String),
    ModelDeployed(String),
    /// The rate rose more than `band` req/s (the larger of its confidence band and the planned
    /// capacity's headroom) over the planned rate `old`.
    RateRose {
        model: String,
        now: f64,
        old: f64,
        band: f64,
    },
    /// The rate fell more than `band` req/s under the planned rate `old`.
    RateFell {
        model: String,
        now: f64,
        old: f64,
        band: f64,
    },
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Trigger::NodeLost(n) => write!(f, "node {n} lost"),
            Trigger::NodeJoined(n) => write!(f, "node {n} joined"),
            Trigger::ModelRemoved(m) => write!(f, "model {m} removed"),
            Trigger::ModelDeployed(m) => write!(f, "model {m} deployed"),
            Trigger::RateRose {
                model,
                now,
                old,
                band,
            } => write!(
                f,
                "{model}: rate {now:.1} req/s rose more than {band:.1} req/s (its confidence band and planned capacity) over {old:.1}"
            ),
            Trigger::RateFell {
                model,
                now,
                old,
                band,
            } => write!(
                f,
                "{model}: rate {now:.1} req/s fell more than {band:.1} req/s (its confidence band) under {old:.1}"
            ),
        }
    }
}

/// Why the current plan must be replaced, or None to keep it (hysteresis).
pub fn replan_trigger(inputs: &Inputs, current: &Plan, cfg: &Config) -> Option<Trigger> {
    let healthy: BTreeSet<String> = inputs
        .nodes
        .iter()
        .filter(|n| n.healthy)
        .map(|n| n.id.clone())
        .collect();
    if let Some(lost) = current.nodes.difference(&healthy).next() {
        return Some(Trigger::NodeLost(lost.clone()));
    }
    if let Some(new) = healthy.difference(&current.nodes).next() {
        return Some(Trigger::NodeJoined(new.clone()));
    }
    let names: BTreeSet<&String> = inputs.models.iter().map(|m| &m.name).collect();
    if let Some(gone) = current.basis_rps.keys().find(|k| !names.contains(k)) {
        return Some(Trigger::ModelRemoved(gone.clone()));
    }
    for m in &inputs.models {
        let now = basis_rps(m);
        match current.basis_rps.get(&m.name) {
            None => return Some(Trigger::ModelDeployed(m.name.clone())),
            Some(&old) => {
                let band = cfg.band.half_width(old);
                // a rise the planned capacity still carries needs no new layout: re-plan
                // once it is beyond both the band and the capacity
                let capacity = planned_rps(old, cfg);
                if now > old + band && now > capacity {
                    return Some(Trigger::RateRose {
                        model: m.name.clone(),
                        now,
                        old,
                        band: band.max(capacity - old),
                    });
                }
                if now < old - band {
                    return Some(Trigger::RateFell {
                        model: m.name.clone(),
                        now,
                        old,
                        band,
                    });
                }
            }
        }
    }
    None
}

/// Plan. With `current`, keeps it unless [`replan_trigger`] fires, and returns the diff as
/// make-before-break steps.
pub fn plan(
    data: &GpuData,
    inputs: &Inputs,
    current: Option<&Plan>,
    cfg: &Config,
) -> Result<Outcome, PlanError> {
    validate(inputs)?;
    let mut decisions = Vec::new();
    let mut trigger = None;
    if let Some(cur) = current {
        match replan_trigger(inputs, cur, cfg) {
            None => {
                return Ok(Outcome {
                    plan: cur.clone(),
                    replanned: false,
                    steps: Vec::new(),
                    trigger: None,
                    decisions: vec![Decision {
                        subject: "plan".into(),
                        reason: format!(
                            "kept: every rate within its confidence band around its planned rate (z = {}, at least {} req/s and {:.0} %), same models and nodes",
                            cfg.band.z,
                            cfg.band.floor_rps,
                            cfg.band.floor_frac * 100.0
                        ),
                    }],
                })
            }
            Some(why) => {
                decisions.push(Decision {
                    subject: "plan".into(),
                    reason: format!("re-plan: {why}"),
                });
                trigger = Some(why);
            }
        }
    }
    let incremental = matches!(
        trigger,
        Some(
            Trigger::RateRose { .. }
                | Trigger::RateFell { .. }
                | Trigger::ModelDeployed(_)
                | Trigger::ModelRemoved(_)
        )
    );
    if let (true, Some(cur)) = (incremental, current) {
        // the changed models and their partition neighbours (widening to their GPUs was
        // measured: more restarts and less goodput in `bench partition --variant dynamic`
        // than a full re-plan)
        for widen in [Neighbours::Partition] {
            if let Some(plan) = replan_incremental(data, inputs, cur, cfg, widen, &mut decisions)? {
                let steps = diff(current, &plan, inputs);
                return Ok(Outcome {
                    plan,
                    replanned: true,
                    steps,
                    decisions,
                    trigger,
                });
            }
        }
    }
    let plan = plan_layout(data, inputs, current, cfg, &BTreeMap::new(), &mut decisions)?;
    let steps = diff(current, &plan, inputs);
    Ok(Outcome {
        plan,
        replanned: true,
        steps,
        decisions,
        trigger,
    })
}

/// Which kept partitions an incremental re-plan gives up with the changed models.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Neighbours {
    /// Those sharing a partition with a changed (or removed) model.
    Partition,
    /// Every partition on a GPU where a changed model has one.
    Gpu,
}

/// Share (%) and memory (MiB) already taken on a (node, gpu) by partitions a re-plan keeps.
type Reserved = BTreeMap<(String, String), (u32, u64)>;

/// Re-plan only what changed: the models whose demand left its band (or that were deployed or
/// shed), and the neighbours sharing a partition with them or with a removed model; every other
/// partition is kept as it is (no worker restarts) and its share reserved. None when nothing can
/// be kept, or when the changed models do not fit the free share (a full re-plan then decides).
fn replan_incremental(
    data: &GpuData,
    inputs: &Inputs,
    cur: &Plan,
    cfg: &Config,
    widen: Neighbours,
    decisions: &mut Vec<Decision>,
) -> Result<Option<Plan>, PlanError> {
    let names: BTreeSet<&str> = inputs.models.iter().map(|m| m.name.as_str()).collect();
    let mut changed: BTreeSet<String> = inputs
        .models
        .iter()
        .filter(|m| {
            cur.basis_rps
                .get(&m.name)
                .is_none_or(|&old| cfg.band.significant(basis_rps(m), old))
        })
        .map(|m| m.name.clone())
        .collect();
    // shed or unplaced before (a committed plan read back from a store may not carry its shed
    // list): offered the free share again
    changed.extend(cur.shed.iter().map(|s| s.model.clone()));
    let placed: BTreeSet<&str> = cur
        .partitions
        .iter()
        .flat_map(|p| p.tenants.iter().map(|t| t.model.as_str()))
        .collect();
    changed.extend(
        inputs
            .models
            .iter()
            .filter(|m| !placed.contains(m.name.as_str()))
            .map(|m| m.name.clone()),
    );
    // a partition holding a changed or removed model is re-planned whole (its neighbours too)
    loop {
        let before = changed.len();
        for p in &cur.partitions {
            let touched = p
                .tenants
                .iter()
                .any(|t| changed.contains(&t.model) || !names.contains(t.model.as_str()));
            if touched {
                changed.extend(
                    p.tenants
                        .iter()
                        .filter(|t| names.contains(t.model.as_str()))
                        .map(|t| t.model.clone()),
                );
            }
        }
        if changed.len() == before {
            break;
        }
    }
    if widen == Neighbours::Gpu {
        let gpus: BTreeSet<(&str, &str)> = cur
            .partitions
            .iter()
            .filter(|p| p.tenants.iter().any(|t| changed.contains(&t.model)))
            .map(|p| (p.node.as_str(), p.gpu.as_str()))
            .collect();
        for p in &cur.partitions {
            if gpus.contains(&(p.node.as_str(), p.gpu.as_str())) {
                changed.extend(
                    p.tenants
                        .iter()
                        .filter(|t| names.contains(t.model.as_str()))
                        .map(|t| t.model.clone()),
                );
            }
        }
    }
    let kept: Vec<&Partition> = cur
        .partitions
        .iter()
        .filter(|p| {
            p.tenants
                .iter()
                .all(|t| names.contains(t.model.as_str()) && !changed.contains(&t.model))
        })
        .collect();
    if kept.is_empty() {
        return Ok(None);
    }
    let mem_of = |m: &str| {
        inputs
            .models
            .iter()
            .find(|x| x.name == m)
            .map_or(0, |x| x.mem_mib)
    };
    let mut reserved = Reserved::new();
    for p in &kept {
        let e = reserved
            .entry((p.node.clone(), p.gpu.clone()))
            .or_insert((0, 0));
        e.0 += p.share_pct;
        e.1 += p.tenants.iter().map(|t| mem_of(&t.model)).sum::<u64>();
    }
    let sub = Inputs {
        nodes: inputs.nodes.clone(),
        models: inputs
            .models
            .iter()
            .filter(|m| changed.contains(&m.name))
            .cloned()
            .collect(),
    };
    let mut sub_decisions = Vec::new();
    let part = plan_layout(data, &sub, Some(cur), cfg, &reserved, &mut sub_decisions)?;
    if part
        .shed
        .iter()
        .any(|s| !cur.shed.iter().any(|c| c.model == s.model))
    {
        decisions.push(Decision {
            subject: "plan".into(),
            reason: format!(
                "the changed models do not fit beside the kept partitions ({widen:?} neighbours): {}",
                if widen == Neighbours::Gpu { "full re-plan" } else { "widening to their GPUs" }
            ),
        });
        return Ok(None);
    }
    decisions.push(Decision {
        subject: "plan".into(),
        reason: format!(
            "incremental: re-planned {} ({} model(s)); kept {} partition(s) of the others unchanged",
            changed.iter().cloned().collect::<Vec<_>>().join(", "),
            changed.len(),
            kept.len()
        ),
    });
    decisions.extend(sub_decisions);
    let mut partitions: Vec<Partition> = kept.into_iter().cloned().collect();
    partitions.extend(part.partitions);
    partitions.sort_by(|a, b| a.id.cmp(&b.id));
    let mut basis_rps = part.basis_rps;
    for m in inputs.models.iter().filter(|m| !changed.contains(&m.name)) {
        if let Some(&b) = cur.basis_rps.get(&m.name) {
            basis_rps.insert(m.name.clone(), b);
        }
    }
    Ok(Some(Plan {
        partitions,
        basis_rps,
        shed: part.shed,
        nodes: part.nodes,
    }))
}

/// Lay out `inputs`' models on the healthy nodes' GPUs, less what `reserved` already takes.
fn plan_layout(
    data: &GpuData,
    inputs: &Inputs,
    current: Option<&Plan>,
    cfg: &Config,
    reserved: &Reserved,
    decisions: &mut Vec<Decision>,
) -> Result<Plan, PlanError> {
    let mut ctx = Ctx {
        data,
        cfg,
        menus: BTreeMap::new(),
    };
    let mut slots: Vec<Slot> = Vec::new();
    for n in inputs.nodes.iter().filter(|n| n.healthy) {
        for g in &n.gpus {
            let (pct, mem) = reserved
                .get(&(n.id.clone(), g.id.clone()))
                .copied()
                .unwrap_or((0, 0));
            slots.push(Slot {
                node: n.id.clone(),
                gpu: g.id.clone(),
                kind: g.kind.clone(),
                free_pct: 100u32.saturating_sub(pct),
                free_mem: g.memory_mib.saturating_sub(mem),
            });
        }
    }
    let kinds: BTreeSet<String> = slots.iter().map(|s| s.kind.clone()).collect();
    let total_pct: u64 = slots.iter().map(|s| s.free_pct as u64).sum();

    // demand per model, on the best GPU kind for it (least share per req/s)
    struct Need {
        idx: usize,
        rate: f64,
        basis: f64,
        pct: u32,
        kind: Option<String>,
        kinds: Vec<String>,
    }
    let mut needs = Vec::new();
    for (idx, m) in inputs.models.iter().enumerate() {
        let basis = basis_rps(m);
        let rate = planned_rps(basis, cfg);
        let mut options: Vec<(f64, String, u32)> = Vec::new();
        for k in &kinds {
            if let Some(menu) = ctx.menu(k, m)? {
                let (pct, _, t) = menu.caps[menu.ideal];
                let need = (rate / t * pct as f64)
                    .ceil()
                    .max(if rate > 0.0 { 10.0 } else { 0.0 });
                options.push((pct as f64 / t, k.clone(), need as u32));
            }
        }
        // most efficient kind first (least share per req/s)
        options.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        needs.push(Need {
            idx,
            rate,
            basis,
            pct: options.first().map_or(0, |b| b.2),
            kind: options.first().map(|b| b.1.clone()),
            kinds: options.into_iter().map(|o| o.1).collect(),
        });
    }
    let mut shed: Vec<Shed> = Vec::new();
    let mut shed_set = BTreeSet::new();
    for n in &needs {
        if n.rate <= 0.0 {
            // deployed at 0 req/s and no request seen (refused ones count): nothing to serve
            // yet; the first requests raise its observed rate and the next round places it
            let m = &inputs.models[n.idx];
            shed.push(Shed {
                model: m.name.clone(),
                reason:
                    "idle: deployed at 0 req/s and no request observed; placed once requests arrive"
                        .into(),
            });
            shed_set.insert(n.idx);
            continue;
        }
        if n.kind.is_none() {
            let m = &inputs.models[n.idx];
            shed.push(Shed {
                model: m.name.clone(),
                reason: format!(
                    "no GPU kind here can serve {} within its {:.0} ms SLO (or no profile)",
                    m.profile, m.slo_ms
                ),
            });
            shed_set.insert(n.idx);
        }
    }
    // shed by least value per share while the estimated demand exceeds capacity
    let mut demand: u64 = needs
        .iter()
        .filter(|n| !shed_set.contains(&n.idx))
        .map(|n| n.pct as u64)
        .sum();
    if demand > total_pct {
        let mut by_value: Vec<&Need> = needs
            .iter()
            .filter(|n| !shed_set.contains(&n.idx) && n.pct > 0)
            .collect();
        by_value.sort_by(|a, b| {
            let va = inputs.models[a.idx].value * a.rate / a.pct as f64;
            let vb = inputs.models[b.idx].value * b.rate / b.pct as f64;
            va.total_cmp(&vb)
                .then(inputs.models[a.idx].name.cmp(&inputs.models[b.idx].name))
        });
        for n in by_value {
            if demand <= total_pct {
                break;
            }
            let m = &inputs.models[n.idx];
            let v = m.value * n.rate / n.pct as f64;
            shed.push(Shed {
                model: m.name.clone(),
                reason: format!(
                    "shed: demand {demand} % > capacity {total_pct} %; lowest value per share ({v:.2} req/s per %, needs {} %)",
                    n.pct
                ),
            });
            shed_set.insert(n.idx);
            demand -= n.pct as u64;
        }
    }

    // priority: rate x SLO tightness
    let mut order: Vec<usize> = (0..needs.len())
        .filter(|&i| !shed_set.contains(&needs[i].idx) && needs[i].rate > 0.0)
        .collect();
    order.sort_by(|&a, &b| {
        let ka = needs[a].rate / inputs.models[needs[a].idx].slo_ms;
        let kb = needs[b].rate / inputs.models[needs[b].idx].slo_ms;
        kb.total_cmp(&ka).then(
            inputs.models[needs[a].idx]
                .name
                .cmp(&inputs.models[needs[b].idx].name),
        )
    });

    // where each model ran before (stickiness)
    let mut prefer: BTreeMap<&str, Vec<(String, String, u32)>> = BTreeMap::new();
    if let Some(cur) = current {
        for p in &cur.partitions {
            for t in &p.tenants {
                prefer.entry(t.model.as_str()).or_default().push((
                    p.node.clone(),
                    p.gpu.clone(),
                    p.share_pct,
                ));
            }
        }
    }

    let index: BTreeMap<(String, String), usize> = slots
        .iter()
        .enumerate()
        .map(|(i, s)| ((s.node.clone(), s.gpu.clone()), i))
        .collect();
    let mut heap: BinaryHeap<(u32, std::cmp::Reverse<usize>)> = slots
        .iter()
        .enumerate()
        .map(|(i, s)| (s.free_pct, std::cmp::Reverse(i)))
        .collect();

    struct Draft {
        slot: usize,
        pct: u32,
        tenants: Vec<(usize, f64, u32)>,
        residue: bool,
        reason: String,
    }
    let mut drafts: Vec<Draft> = Vec::new();
    let mut residues: Vec<(usize, f64)> = Vec::new();

    // pick a slot for `pct`/`mem` of kind (any kind if None): sticky first, then most free
    fn take(
        slots: &mut [Slot],
        heap: &mut BinaryHeap<(u32, std::cmp::Reverse<usize>)>,
        index: &BTreeMap<(String, String), usize>,
        prefer: &[(String, String, u32)],
        kind: &str,
        pct: u32,
        mem: u64,
    ) -> Option<usize> {
        let fits = |s: &Slot| s.kind == kind && s.free_pct >= pct && s.free_mem >= mem;
        // the GPU that ran this exact partition, else any GPU that ran the model (fewer moves)
        let lookup = |exact: bool| {
            prefer.iter().find_map(|(n, g, sp)| {
                if exact && *sp != pct {
                    return None;
                }
                index
                    .get(&(n.clone(), g.clone()))
                    .copied()
                    .filter(|&i| fits(&slots[i]))
            })
        };
        let sticky = lookup(true).or_else(|| lookup(false));
        let chosen = sticky.or_else(|| {
            // most free first: pop stale heap entries until one is current and fits
            let mut popped = Vec::new();
            let mut found = None;
            while let Some((fp, std::cmp::Reverse(i))) = heap.pop() {
                if slots[i].free_pct != fp {
                    continue; // stale
                }
                popped.push((fp, std::cmp::Reverse(i)));
                if fp < pct {
                    break;
                }
                if fits(&slots[i]) {
                    found = Some(i);
                    break;
                }
                if popped.len() > 64 {
                    // many misfits (other kinds / memory): fall back to a scan
                    found = (0..slots.len())
                        .filter(|&j| fits(&slots[j]))
                        .max_by_key(|&j| (slots[j].free_pct, std::cmp::Reverse(j)));
                    break;
                }
            }
            heap.extend(popped);
            found
        })?;
        slots[chosen].free_pct -= pct;
        slots[chosen].free_mem -= mem;
        heap.push((slots[chosen].free_pct, std::cmp::Reverse(chosen)));
        Some(chosen)
    }

    let mut chosen: Vec<Option<String>> = vec![None; needs.len()];
    for &ni in &order {
        let n = &needs[ni];
        let m = &inputs.models[n.idx];
        let pref = prefer.get(m.name.as_str()).cloned().unwrap_or_default();
        let mut residue = 0.0;
        let mut last_pct = 0;
        for kind in &n.kinds {
            let menu = ctx.menu(kind, m)?.expect("kinds listed have a menu");
            let (pct, batch, t) = menu.caps[menu.ideal];
            last_pct = pct;
            let full = (n.rate / t).floor() as usize;
            let mut placed_here = Vec::new();
            let mut failed = false;
            for _ in 0..full {
                match take(&mut slots, &mut heap, &index, &pref, kind, pct, m.mem_mib) {
                    Some(s) => {
                        placed_here.push(drafts.len());
                        drafts.push(Draft {
                            slot: s,
                            pct,
                            tenants: vec![(n.idx, t, batch)],
                            residue: false,
                            reason: format!(
                                "{}: full partition at its ideal share {pct} % on {kind}",
                                m.name
                            ),
                        });
                    }
                    None => {
                        failed = true;
                        break;
                    }
                }
            }
            if failed {
                // give back what this model took on this kind, try the next kind
                for &d in placed_here.iter().rev() {
                    let dr = drafts.remove(d);
                    slots[dr.slot].free_pct += dr.pct;
                    slots[dr.slot].free_mem += m.mem_mib;
                    heap.push((slots[dr.slot].free_pct, std::cmp::Reverse(dr.slot)));
                }
                continue;
            }
            residue = n.rate - full as f64 * t;
            chosen[ni] = Some(kind.clone());
            decisions.push(Decision {
                subject: m.name.clone(),
                reason: format!(
                    "planned on {:.1} req/s ({} {:.1} with headroom max(x {}, + its confidence band)); ideal share {pct} % on {kind} (batch {batch}, {t:.1} req/s, {:.2} req/s per %); {full} full partition(s) + residue {residue:.1} req/s",
                    n.rate,
                    if n.basis > m.requested_rps { "observed" } else { "deployed" },
                    n.basis,
                    cfg.headroom,
                    t / pct as f64
                ),
            });
            break;
        }
        if chosen[ni].is_none() {
            shed.push(Shed {
                model: m.name.clone(),
                reason: format!(
                    "shed: no GPU left with {last_pct} % free and {} MiB for its full partitions",
                    m.mem_mib
                ),
            });
            shed_set.insert(n.idx);
            continue;
        }
        if residue > 1e-9 {
            residues.push((ni, residue));
        }
    }

    // residues: join an open residue partition by time sharing, else a new smallest partition
    residues.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut open: Vec<usize> = Vec::new();
    for (ni, r) in residues {
        let n = &needs[ni];
        let m = &inputs.models[n.idx];
        let kind = chosen[ni].clone().expect("placed");
        let mut joined = false;
        // share a standalone residue partition would take: joining must save share
        let menu = ctx.menu(&kind, m)?.expect("menu");
        let alone = menu
            .caps
            .iter()
            .find(|c| c.2 + 1e-9 >= r)
            .map_or(u32::MAX, |c| c.0);
        for &d in open.iter().rev().take(cfg.residue_candidates) {
            let dr = &drafts[d];
            let slot = &slots[dr.slot];
            if slot.kind != kind || slot.free_mem < m.mem_mib {
                continue;
            }
            // grow the partition by 10 % steps while the GPU has room
            let mut pct = dr.pct;
            while pct <= 100 && pct - dr.pct < alone {
                if pct > dr.pct && slot.free_pct < pct - dr.pct {
                    break;
                }
                let s = pct as f64 / 100.0;
                let mut ten: Vec<CapTenant<'_>> = dr
                    .tenants
                    .iter()
                    .map(|&(mi, rate, _)| CapTenant {
                        model: &inputs.models[mi].profile,
                        rate_rps: rate,
                        slo_ms: inputs.models[mi].slo_ms,
                    })
                    .collect();
                ten.push(CapTenant {
                    model: &m.profile,
                    rate_rps: r,
                    slo_ms: m.slo_ms,
                });
                let worst = ten
                    .iter()
                    .map(|t| {
                        data.interference.worst_alpha(
                            Load {
                                model: t.model,
                                batch: 1.0,
                                share: s,
                            },
                            1.0 - s,
                        )
                    })
                    .fold(1.0, f64::max);
                if capacity::time_share(&data.profiles, &kind, s, &ten, worst * cfg.latency_margin)?
                    .is_some()
                {
                    joined = true;
                    break;
                }
                pct += 10;
            }
            if joined {
                let grow = pct - dr.pct;
                let dslot = dr.slot;
                slots[dslot].free_pct -= grow;
                slots[dslot].free_mem -= m.mem_mib;
                heap.push((slots[dslot].free_pct, std::cmp::Reverse(dslot)));
                let menu = ctx.menu(&kind, m)?.expect("menu");
                let b = menu.caps.iter().find(|c| c.0 >= pct).map_or(1, |c| c.1);
                let dr = &mut drafts[d];
                dr.pct = pct;
                dr.tenants.push((n.idx, r, b));
                dr.reason.push_str(&format!(
                    "; {} joins by time sharing ({r:.1} req/s), partition at {pct} %",
                    m.name
                ));
                decisions.push(Decision {
                    subject: m.name.clone(),
                    reason: format!(
                        "residue {r:.1} req/s time-shares a {pct} % partition (round-robin cycle keeps 2 x cycle <= every SLO)"
                    ),
                });
                break;
            }
        }
        if joined {
            continue;
        }
        let pref = prefer.get(m.name.as_str()).cloned().unwrap_or_default();
        let mut done = false;
        let mut kinds = vec![kind.clone()];
        kinds.extend(n.kinds.iter().filter(|k| **k != kind).cloned());
        let mut caps = Vec::new();
        for k in &kinds {
            let menu = ctx.menu(k, m)?.expect("menu");
            caps.extend(menu.caps.iter().map(|c| (k.clone(), *c)));
        }
        for (k, (pct, b, t)) in caps {
            if done {
                break;
            }
            if t + 1e-9 < r {
                continue;
            }
            if let Some(s) = take(&mut slots, &mut heap, &index, &pref, &k, pct, m.mem_mib) {
                open.push(drafts.len());
                drafts.push(Draft {
                    slot: s,
                    pct,
                    tenants: vec![(n.idx, r, b)],
                    residue: true,
                    reason: format!(
                        "{}: residue {r:.1} req/s in the smallest share that serves it ({pct} %)",
                        m.name
                    ),
                });
                done = true;
            }
        }
        let covered: f64 = drafts
            .iter()
            .flat_map(|d| d.tenants.iter())
            .filter(|t| t.0 == n.idx)
            .map(|t| t.1)
            .sum();
        if !done && covered >= n.basis {
            // the full partitions still carry the observed peak itself: keep them, without headroom
            decisions.push(Decision {
                subject: m.name.clone(),
                reason: format!(
                    "residue {r:.1} req/s fits nowhere; its full partitions carry {covered:.1} req/s >= its demand {:.1}: served without headroom",
                    n.basis
                ),
            });
        } else if !done {
            // serving part of the rate would overload the full partitions (requests beyond their
            // capacity queue without bound): shed the model as a whole and free its share for the
            // residues still to place
            let mut freed = 0;
            for d in drafts.iter_mut() {
                if !d.tenants.is_empty() && d.tenants.iter().all(|t| t.0 == n.idx) {
                    let sl = &mut slots[d.slot];
                    sl.free_pct += d.pct;
                    sl.free_mem += m.mem_mib;
                    heap.push((sl.free_pct, std::cmp::Reverse(d.slot)));
                    freed += d.pct;
                    d.tenants.clear();
                    d.pct = 0;
                }
            }
            shed.push(Shed {
                model: m.name.clone(),
                reason: format!(
                    "shed: its residue of {r:.1} req/s fits no free share on any GPU, and serving only part of its rate would overload its partitions ({freed} % freed)"
                ),
            });
            shed_set.insert(n.idx);
        }
    }

    // spare share: an MPS cap is a limit, not a reservation, so share nobody planned is lent in 10 %
    // steps to the partition on that GPU with the highest utilisation at batch 1 (lower latency,
    // more tail headroom); a later re-plan takes it back when a model needs it
    let mut lent = vec![0u32; drafts.len()];
    if cfg.lend_spare {
        for (si, slot) in slots.iter_mut().enumerate() {
            loop {
                if slot.free_pct < 10 {
                    break;
                }
                let kind = slot.kind.clone();
                let mut best: Option<(f64, usize)> = None;
                for (di, d) in drafts.iter().enumerate() {
                    if d.slot != si || d.pct >= 100 || d.tenants.is_empty() {
                        continue;
                    }
                    let s = d.pct as f64 / 100.0;
                    let s_up = (d.pct + 10) as f64 / 100.0;
                    let mut rho = 0.0;
                    let mut rho_up = 0.0;
                    for &(mi, rate, _) in &d.tenants {
                        let prof = &inputs.models[mi].profile;
                        rho += rate * data.profiles.latency_ms(&kind, prof, 1.0, s)? / 1000.0;
                        rho_up += rate * data.profiles.latency_ms(&kind, prof, 1.0, s_up)? / 1000.0;
                    }
                    // lend only where it shortens batches (>= 3 %): power is paid per share x busy
                    // time, so share that does not speed a launch-bound model up only costs energy
                    if rho_up > rho * 0.97 {
                        continue;
                    }
                    if best.is_none_or(|b| rho > b.0) {
                        best = Some((rho, di));
                    }
                }
                let Some((_, di)) = best else { break };
                drafts[di].pct += 10;
                slot.free_pct -= 10;
                lent[di] += 10;
            }
        }
        for (di, d) in drafts.iter_mut().enumerate() {
            if lent[di] > 0 {
                d.reason.push_str(&format!(
                    "; +{} % spare share lent (GPU otherwise idle there)",
                    lent[di]
                ));
                // the batch cap stays the planned one: the extra share only shortens batches
            }
        }
    }

    // build the plan with stable ids
    let mut partitions = Vec::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for d in drafts.iter().filter(|d| !d.tenants.is_empty()) {
        let slot = &slots[d.slot];
        let mut names: Vec<&str> = d
            .tenants
            .iter()
            .map(|t| inputs.models[t.0].name.as_str())
            .collect();
        names.sort();
        let base = format!("{}/{}/{}%/{}", slot.node, slot.gpu, d.pct, names.join("+"));
        let k = seen.entry(base.clone()).or_insert(0);
        *k += 1;
        let id = format!("{base}#{k}");
        let mem = d.tenants.iter().map(|t| inputs.models[t.0].mem_mib).sum();
        let _ = d.residue;
        partitions.push(Partition {
            id,
            node: slot.node.clone(),
            gpu: slot.gpu.clone(),
            share_pct: d.pct,
            tenants: d
                .tenants
                .iter()
                .map(|&(mi, rate, b)| Assigned {
                    model: inputs.models[mi].name.clone(),
                    rate_rps: rate,
                    max_batch: b,
                })
                .collect(),
            mem_mib: mem,
            reason: d.reason.clone(),
        });
    }
    partitions.sort_by(|a, b| a.id.cmp(&b.id));
    for s in &shed {
        decisions.push(Decision {
            subject: s.model.clone(),
            reason: s.reason.clone(),
        });
    }
    let plan = Plan {
        partitions,
        basis_rps: needs
            .iter()
            .map(|n| (inputs.models[n.idx].name.clone(), n.basis))
            .collect(),
        shed,
        nodes: inputs
            .nodes
            .iter()
            .filter(|n| n.healthy)
            .map(|n| n.id.clone())
            .collect(),
    };
    Ok(plan)
}

/// Make-before-break steps from `current` to `next`: start and wait for every new partition, move
/// each model whose partitions changed, then stop the partitions no longer planned.
pub fn diff(current: Option<&Plan>, next: &Plan, inputs: &Inputs) -> Vec<Step> {
    let empty = Plan::default();
    let cur = current.unwrap_or(&empty);
    let shape = |p: &Partition| {
        let mut t: Vec<(&str, u32)> = p
            .tenants
            .iter()
            .map(|t| (t.model.as_str(), t.max_batch))
            .collect();
        t.sort();
        (p.node.clone(), p.gpu.clone(), p.share_pct, format!("{t:?}"))
    };
    let old_shapes: BTreeSet<_> = cur.partitions.iter().map(shape).collect();
    let new_shapes: BTreeSet<_> = next.partitions.iter().map(shape).collect();
    let lost: BTreeSet<&str> = inputs
        .nodes
        .iter()
        .filter(|n| !n.healthy)
        .map(|n| n.id.as_str())
        .collect();
    let mut steps = Vec::new();
    let started: Vec<&Partition> = next
        .partitions
        .iter()
        .filter(|p| !old_shapes.contains(&shape(p)))
        .collect();
    for p in &started {
        steps.push(Step::Start {
            partition: p.id.clone(),
            reason: p.reason.clone(),
        });
    }
    for p in &started {
        steps.push(Step::WaitReady {
            partition: p.id.clone(),
            reason: "make-before-break: the old partitions serve until this worker is ready".into(),
        });
    }
    let models: BTreeSet<&str> = cur
        .partitions
        .iter()
        .chain(&next.partitions)
        .flat_map(|p| p.tenants.iter().map(|t| t.model.as_str()))
        .collect();
    for m in models {
        let of = |pl: &Plan| -> Vec<String> {
            pl.partitions
                .iter()
                .filter(|p| p.tenants.iter().any(|t| t.model == m))
                .map(|p| p.id.clone())
                .collect()
        };
        let (from, to) = (of(cur), of(next));
        if from != to {
            let reason = if to.is_empty() {
                "no partition in the new plan (shed or removed)".to_string()
            } else {
                "new layout ready".to_string()
            };
            steps.push(Step::MoveTraffic {
                model: m.to_string(),
                from,
                to,
                reason,
            });
        }
    }
    for p in &cur.partitions {
        if !new_shapes.contains(&shape(p)) {
            let reason = if lost.contains(p.node.as_str()) || !next.nodes.contains(&p.node) {
                format!("node {} lost", p.node)
            } else {
                "replaced by the new layout (traffic already moved)".to_string()
            };
            steps.push(Step::Stop {
                partition: p.id.clone(),
                reason,
            });
        }
    }
    steps
}
