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
//!
//! Modules, in the order a round runs them: [`hysteresis`] (keep, re-plan all, or re-plan the
//! changed models incrementally), [`demand`] (validation, each model's demand and need per GPU
//! kind), `menu` (feasible caps and the ideal share), `shed` (what is left out before
//! placement), `pack` (full and residue partitions onto GPUs), `spare` (lending unplanned
//! share), [`diff`] (make-before-break steps). [`decision`] holds what a plan says about itself.

pub mod decision;
pub mod demand;
pub mod diff;
pub mod hysteresis;
mod menu;
mod pack;
pub mod rate;
pub mod reconcile;
mod shed;
pub mod sim_policy;
mod spare;

pub use decision::{Decision, Subject};
pub use demand::{basis_rps, planned_rps};
pub use diff::{diff, Step};
pub use hysteresis::{replan_trigger, Trigger};

use edgeplane_gpu::{GpuData, GpuError};
use pack::{Board, Packing, Reserved};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

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

/// Plan. With `current`, keeps it unless [`replan_trigger`] fires, and returns the diff as
/// make-before-break steps. A rate change, a deploy or a removal re-plans incrementally when
/// the changed models fit beside the kept partitions; anything else re-plans everything.
pub fn plan(
    data: &GpuData,
    inputs: &Inputs,
    current: Option<&Plan>,
    cfg: &Config,
) -> Result<Outcome, PlanError> {
    demand::validate(inputs)?;
    let mut decisions = Vec::new();
    let mut trigger = None;
    if let Some(cur) = current {
        let Some(why) = replan_trigger(inputs, cur, cfg) else {
            return Ok(Outcome {
                plan: cur.clone(),
                replanned: false,
                steps: Vec::new(),
                decisions: vec![hysteresis::kept(cfg)],
                trigger: None,
            });
        };
        decisions.push(Decision::plan(format!("re-plan: {why}")));
        trigger = Some(why);
    }
    let mut next = None;
    if let (Some(cur), Some(t)) = (current, &trigger) {
        if hysteresis::incremental(t) {
            next = replan_incremental(data, inputs, cur, cfg, &mut decisions)?;
        }
    }
    let plan = match next {
        Some(p) => p,
        None => layout(data, inputs, current, cfg, &Reserved::new(), &mut decisions)?,
    };
    let steps = diff(current, &plan, inputs);
    Ok(Outcome {
        plan,
        replanned: true,
        steps,
        decisions,
        trigger,
    })
}

/// Re-plan only what changed ([`hysteresis::scope`]): the changed models and their partition
/// neighbours are planned into the share the kept partitions leave (no worker restarts for the
/// others). None when nothing can be kept, or when the changed models do not fit (a full
/// re-plan then decides).
fn replan_incremental(
    data: &GpuData,
    inputs: &Inputs,
    cur: &Plan,
    cfg: &Config,
    decisions: &mut Vec<Decision>,
) -> Result<Option<Plan>, PlanError> {
    let Some(scope) = hysteresis::scope(inputs, cur, cfg) else {
        return Ok(None);
    };
    let sub = Inputs {
        nodes: inputs.nodes.clone(),
        models: inputs
            .models
            .iter()
            .filter(|m| scope.changed.contains(&m.name))
            .cloned()
            .collect(),
    };
    let mut sub_decisions = Vec::new();
    let part = layout(
        data,
        &sub,
        Some(cur),
        cfg,
        &scope.reserved,
        &mut sub_decisions,
    )?;
    let was_shed: BTreeSet<&str> = cur.shed.iter().map(|s| s.model.as_str()).collect();
    if part
        .shed
        .iter()
        .any(|s| !was_shed.contains(s.model.as_str()))
    {
        decisions.push(Decision::plan(
            "the changed models do not fit beside the kept partitions (partition neighbours): full re-plan".into(),
        ));
        return Ok(None);
    }
    decisions.push(Decision::plan(format!(
        "incremental: re-planned {} ({} model(s)); kept {} partition(s) of the others unchanged",
        scope.changed.iter().cloned().collect::<Vec<_>>().join(", "),
        scope.changed.len(),
        scope.kept.len()
    )));
    decisions.extend(sub_decisions);
    let mut partitions: Vec<Partition> = scope.kept.into_iter().cloned().collect();
    partitions.extend(part.partitions);
    partitions.sort_by(|a, b| a.id.cmp(&b.id));
    let mut basis_rps = part.basis_rps;
    for m in inputs
        .models
        .iter()
        .filter(|m| !scope.changed.contains(&m.name))
    {
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

/// Lay out `inputs`' models on the healthy nodes' GPUs, less what `reserved` already takes:
/// needs, shedding, full partitions in priority order, residues, spare share, stable ids.
fn layout(
    data: &GpuData,
    inputs: &Inputs,
    current: Option<&Plan>,
    cfg: &Config,
    reserved: &Reserved,
    decisions: &mut Vec<Decision>,
) -> Result<Plan, PlanError> {
    let mut menus = menu::Menus::new(data, cfg);
    let board = Board::new(inputs, reserved);
    let kinds: BTreeSet<String> = board.slots.iter().map(|s| s.kind.clone()).collect();
    let needs = demand::needs(&mut menus, inputs, &kinds)?;
    let shedding = shed::before_placement(inputs, &needs, board.total_free_pct());
    let order = demand::order(&needs, inputs, &shedding.set);
    let mut pk = Packing::new(inputs, menus, board, shedding, current);
    let mut placed = Vec::new();
    for &ni in &order {
        placed.extend(pk.place_full(&needs[ni])?);
    }
    pk.place_residues(&needs, placed)?;
    if cfg.lend_spare {
        spare::lend(&mut pk)?;
    }
    let partitions = pk.partitions();
    decisions.append(&mut pk.decisions);
    decisions.extend(
        pk.shed
            .list
            .iter()
            .map(|s| Decision::model(&s.model, s.reason.clone())),
    );
    Ok(Plan {
        partitions,
        basis_rps: needs
            .iter()
            .map(|n| (inputs.models[n.idx].name.clone(), n.basis))
            .collect(),
        shed: pk.shed.list,
        nodes: inputs
            .nodes
            .iter()
            .filter(|n| n.healthy)
            .map(|n| n.id.clone())
            .collect(),
    })
}
