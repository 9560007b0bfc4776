//! The planner loop: on the leader only, it turns deployed models, nodes and their GPUs, the
//! rates agents report and node health into a placement plan (the pure `edgeplane-planner`),
//! and commits the plan through Raft when it changes.
//!
//! - Inputs: the replicated state (models with SLO and requested rate, nodes with their GPUs
//!   and status, operator pins) and the leader's memory (observed rates, smoothed by the
//!   planner's rate estimator with time constant [`PlannerConfig::rate_tau`]; which
//!   partitions each agent reports ready).
//! - Hysteresis: the planner keeps the committed plan unless a rate left its confidence band, or the
//!   models or healthy nodes changed. The committed plan's reference (the rate each model was
//!   planned on, the nodes) is in the replicated state, so a new leader resumes from it: a
//!   model without a measured rate yet is taken at its committed rate, never re-planned from
//!   scratch because the new leader's memory is empty.
//! - Pins win: a pinned model is not planned, and a GPU holding a pin is not offered to the
//!   planner; the pin's partition is part of the node's assignment.
//! - Commit: one `CommitPlan` entry per round that changes anything, every changed node with a
//!   compare-and-set on its epoch (all or nothing; a refused round is planned again).
//! - Make-before-break across nodes: a model that moves keeps its old partition (in the node's
//!   effective assignment, not its target) until the new home reports it ready; the next round
//!   then retires it. A lost node keeps nothing.

use crate::admin::{LiveStats, ModelLiveStats, NodeLiveStats};
use crate::agents::{AgentHub, PartitionLive};
use crate::node::Handle;
use crate::state::{NodeStatus, Partition, State};
use edgeplane_gpu::profiles::MeasuredRow;
use edgeplane_gpu::GpuData;
use edgeplane_planner as planner;
use edgeplane_proto::raft as pb;
use edgeplane_proto::raft::command::Kind;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Planner loop settings.
#[derive(Debug, Clone)]
pub struct PlannerConfig {
    /// How often the leader plans (also on every state change).
    pub interval: Duration,
    /// The rate estimator's time constant (`planner.band.tau_s` is the same number, so the
    /// significance test matches the estimator).
    pub rate_tau: Duration,
    pub planner: planner::Config,
}

impl PlannerConfig {
    /// Defaults (1 s rounds, the planner's estimator time constant) overridden by
    /// `EDGEPLANE_COORDINATOR_PLAN_INTERVAL_MS` and `EDGEPLANE_COORDINATOR_RATE_TAU_S` (its
    /// older name `EDGEPLANE_COORDINATOR_PLAN_PEAK_S` is still read).
    pub fn from_env() -> Self {
        let get = |k: &str| match std::env::var(k) {
            Ok(v) => match v.parse::<f64>() {
                Ok(n) if n > 0.0 && n.is_finite() => Some(n),
                _ => {
                    tracing::warn!(var = k, value = %v, "bad value (a positive number), using the default");
                    None
                }
            },
            Err(_) => None,
        };
        let mut planner = planner::Config::default();
        if let Some(t) = get("EDGEPLANE_COORDINATOR_RATE_TAU_S")
            .or_else(|| get("EDGEPLANE_COORDINATOR_PLAN_PEAK_S"))
        {
            planner.band.tau_s = t;
        }
        let interval = get("EDGEPLANE_COORDINATOR_PLAN_INTERVAL_MS").unwrap_or(1000.0);
        PlannerConfig {
            interval: Duration::from_secs_f64(interval / 1000.0),
            rate_tau: Duration::from_secs_f64(planner.band.tau_s),
            planner,
        }
    }
}

/// The shipped GPU profiles, parsed once per process.
pub fn gpu_data() -> Option<&'static GpuData> {
    static CELL: OnceLock<Option<GpuData>> = OnceLock::new();
    CELL.get_or_init(|| match GpuData::shipped() {
        Ok(d) => Some(d),
        Err(e) => {
            tracing::error!(error = %e, "cannot parse the shipped GPU profiles: no planning");
            None
        }
    })
    .as_ref()
}

/// Observed rates: one [`planner::rate::RateEstimator`] per model (the simulator's
/// `adaptive` mode uses the same type), fed each round with the hub's measured rate over the
/// time since the previous round.
#[derive(Debug, Default)]
pub struct RateTracker {
    est: BTreeMap<String, planner::rate::RateEstimator>,
    last: Option<Instant>,
    /// When this leader started watching (a shorter watch underestimates nothing but is
    /// noisier: until two time constants, an estimate may only raise a planned rate).
    since: Option<Instant>,
}

impl RateTracker {
    pub fn push(&mut self, now: Instant, rates: BTreeMap<String, f64>, cfg: &PlannerConfig) {
        self.since.get_or_insert(now);
        // a round delayed (a slow commit) still covers the time since the last; a leader
        // that stopped sampling for long starts over from the interval
        let dt = self
            .last
            .map(|t| now.duration_since(t))
            .filter(|d| *d <= 10 * cfg.interval)
            .unwrap_or(cfg.interval)
            .as_secs_f64();
        self.last = Some(now);
        let tau = cfg.rate_tau.as_secs_f64();
        for (m, r) in rates {
            self.est
                .entry(m)
                .or_insert_with(|| planner::rate::RateEstimator::new(tau))
                .observe(r * dt, dt);
        }
    }

    /// The estimate per model, for models watched for at least one time constant.
    pub fn peak(&self) -> BTreeMap<String, f64> {
        self.est
            .iter()
            .filter(|(_, e)| e.watched_s() >= e.tau_s())
            .filter_map(|(m, e)| Some((m.clone(), e.rate()?)))
            .collect()
    }

    /// Whether this tracker has watched for two time constants: until then an estimate may
    /// only raise a model's planned rate, never lower it (a new leader's short watch would
    /// make noise look like a fall).
    pub fn full(&self, now: Instant, cfg: &PlannerConfig) -> bool {
        self.since
            .is_some_and(|s| now.duration_since(s) >= 2 * cfg.rate_tau)
    }

    pub fn clear(&mut self) {
        self.est.clear();
        self.last = None;
        self.since = None;
    }
}

/// The planner's view kept by the leader, shared with the Admin service (dry runs, load).
pub struct Planner {
    pub hub: Arc<AgentHub>,
    pub cfg: PlannerConfig,
    rates: Mutex<RateTracker>,
    metrics: OnceLock<Arc<crate::metrics::Metrics>>,
}

/// What one planning round would do (a dry run's answer).
#[derive(Debug, Clone, Default)]
pub struct PlanPreview {
    pub replanned: bool,
    pub decisions: Vec<String>,
    pub steps: Vec<String>,
    pub plan_json: String,
    /// node → its new effective partitions and target, only nodes that change.
    pub changes: Vec<pb::CommitPlacement>,
    pub basis_rps: BTreeMap<String, f64>,
    pub plan_nodes: Vec<String>,
    pub shed: Vec<String>,
    /// Why this round commits (the re-plan trigger or the make-before-break progress).
    pub reason: String,
}

impl PlanPreview {
    /// Whether committing this round would change the replicated state.
    pub fn changes_state(&self, st: &State) -> bool {
        let basis: BTreeMap<String, f64> =
            st.plan_basis.iter().map(|(k, v)| (k.clone(), *v)).collect();
        let nodes: BTreeSet<String> = st.plan_nodes.iter().cloned().collect();
        !self.changes.is_empty()
            || (self.replanned
                && (basis != self.basis_rps
                    || nodes != self.plan_nodes.iter().cloned().collect::<BTreeSet<_>>()))
    }
}

/// The profile model a deployed model runs: its name when the profiles know it, else the
/// part before `@` or `.` (`resnet50@cam1` -> `resnet50`).
/// Rows a node may report per accelerator (bounds what one Register can write to the state).
pub const MAX_PROFILE_ROWS: usize = 64;

/// A measured device that reported no memory size: planned as if memory were no limit.
fn unreported_memory(mb: u64) -> u64 {
    if mb > 0 {
        mb
    } else {
        u64::MAX / 4
    }
}

/// The planning kind of an accelerator with a measured profile: its own kind per node, so one
/// box's measurements never stand in for another's.
pub fn measured_kind(node: &str, acc: &str) -> String {
    format!("measured:{node}/{acc}")
}

fn measured_rows(kind: &str, rows: &[crate::state::ProfileRow]) -> Vec<MeasuredRow> {
    rows.iter()
        .map(|r| MeasuredRow {
            gpu: kind.to_string(),
            model: r.model.clone(),
            part: "full".into(),
            share: None,
            ms: r.ms.clone(),
            measured: None,
        })
        .collect()
}

/// Validate a reported profile the way the planner will use it (same rules as an operator's
/// `--measured` table): known models, one positive, non-decreasing ms per batch.
pub fn check_profile(a: &edgeplane_proto::agent::Accelerator) -> Result<(), String> {
    if a.profile.is_empty() {
        return Ok(());
    }
    if a.profile.len() > MAX_PROFILE_ROWS {
        return Err(format!(
            "{} rows; at most {MAX_PROFILE_ROWS} are accepted",
            a.profile.len()
        ));
    }
    if a.profile_source.len() > 512 {
        return Err("profile_source: longer than 512 bytes".into());
    }
    let data = gpu_data().ok_or("the shipped GPU profiles do not parse")?;
    let mut p = data.profiles.clone();
    let kind = measured_kind("check", &a.id);
    p.add_device(&kind, a.memory_mb);
    let rows: Vec<crate::state::ProfileRow> = a
        .profile
        .iter()
        .map(|r| crate::state::ProfileRow {
            model: r.model.clone(),
            ms: r.ms.clone(),
        })
        .collect();
    p.apply_measured_rows(&measured_rows(&kind, &rows))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The shipped data plus the measured profiles of the state's nodes: each accelerator that
/// reported one becomes its own device kind ([`measured_kind`]) with those rows. Borrowed
/// unchanged when no node reported a profile. A profile that no longer validates (shipped
/// table changed under a persisted state) is left out with a warning: that accelerator is then
/// planned as if it had none.
pub fn with_measured<'a>(data: &'a GpuData, st: &State) -> std::borrow::Cow<'a, GpuData> {
    let mut measured = st
        .nodes
        .values()
        .flat_map(|n| {
            n.accelerators
                .iter()
                .filter(|a| !a.profile.is_empty())
                .map(move |a| (n, a))
        })
        .peekable();
    if measured.peek().is_none() {
        return std::borrow::Cow::Borrowed(data);
    }
    let mut d = data.clone();
    for (n, a) in measured {
        let kind = measured_kind(&n.name, &a.id);
        let mut p = d.profiles.clone();
        // memory not reported (0): not a constraint the planner can check
        p.add_device(&kind, unreported_memory(a.memory_mb));
        match p.apply_measured_rows(&measured_rows(&kind, &a.profile)) {
            Ok(_) => d.profiles = p,
            Err(e) => tracing::warn!(node = %n.name, accelerator = %a.id, error = %e,
                "measured profile left out"),
        }
    }
    std::borrow::Cow::Owned(d)
}

/// What profile the planner uses for a node's accelerator, in words (None: not plannable).
pub fn profile_label(data: &GpuData, a: &crate::state::Accelerator) -> Option<String> {
    if !a.profile.is_empty() {
        Some(format!("measured ({})", a.profile_source))
    } else if a.kind == "gpu" && data.profiles.gpu(&a.name).is_ok() {
        Some(format!("shipped ({})", a.name))
    } else {
        None
    }
}

pub fn profile_of(data: &GpuData, name: &str) -> String {
    if data.profiles.model(name).is_ok() {
        return name.to_string();
    }
    let base = name.split(['@', '.']).next().unwrap_or(name);
    base.to_string()
}

fn to_pb(parts: &[Partition]) -> Vec<pb::Partition> {
    parts
        .iter()
        .map(|p| pb::Partition {
            accelerator_id: p.accelerator_id.clone(),
            share_pct: p.share_pct,
            models: p.models.clone(),
        })
        .collect()
}

fn normalise(mut parts: Vec<Partition>) -> Vec<Partition> {
    for p in &mut parts {
        p.models.sort();
        p.models.dedup();
    }
    parts.sort_by(|a, b| {
        (&a.accelerator_id, a.share_pct, &a.models).cmp(&(
            &b.accelerator_id,
            b.share_pct,
            &b.models,
        ))
    });
    parts
}

/// The committed plan as the planner sees it (targets, the reference rates and nodes).
pub fn committed_plan(st: &State) -> Option<planner::Plan> {
    if st.plan_basis.is_empty() && st.plan_nodes.is_empty() {
        return None;
    }
    let mut partitions = Vec::new();
    for n in st.nodes.values() {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for p in &n.target {
            let base = format!(
                "{}/{}/{}%/{}",
                n.name,
                p.accelerator_id,
                p.share_pct,
                p.models.join("+")
            );
            let k = seen.entry(base.clone()).or_insert(0);
            *k += 1;
            partitions.push(planner::Partition {
                id: format!("{base}#{k}"),
                node: n.name.clone(),
                gpu: p.accelerator_id.clone(),
                share_pct: p.share_pct,
                tenants: p
                    .models
                    .iter()
                    .map(|m| planner::Assigned {
                        model: m.clone(),
                        rate_rps: 0.0,
                        max_batch: 0,
                    })
                    .collect(),
                mem_mib: 0,
                reason: String::new(),
            });
        }
    }
    Some(planner::Plan {
        partitions,
        basis_rps: st.plan_basis.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        shed: Vec::new(),
        nodes: st.plan_nodes.iter().cloned().collect(),
    })
}

/// The planner's inputs from the state and the observed rates.
/// A measured rate is demand whether or not the model is served anywhere: agents count the
/// requests they refuse for a model not assigned to them, and the hub adds them to the
/// arrivals. The planner plans on the larger of it and the deployed rate
/// ([`planner::basis_rps`]); without a measurement (a new leader), on the committed rate.
pub fn inputs(data: &GpuData, st: &State, peaks: &BTreeMap<String, f64>) -> planner::Inputs {
    let pinned_models: BTreeSet<&str> = st.pins.iter().map(|p| p.model.as_str()).collect();
    let pinned_accs: BTreeSet<(&str, &str)> = st
        .pins
        .iter()
        .map(|p| (p.node.as_str(), p.accelerator.as_str()))
        .collect();
    let models = st
        .models
        .values()
        .filter(|m| !pinned_models.contains(m.name.as_str()))
        .map(|m| {
            let profile = profile_of(data, &m.name);
            let mem = if m.memory_mb > 0 {
                m.memory_mb
            } else {
                data.profiles.model(&profile).map_or(0, |i| i.gpu_mem_mib)
            };
            planner::ModelDemand {
                name: m.name.clone(),
                profile,
                slo_ms: m.slo_ms,
                requested_rps: m.rate,
                // measured here, else the rate the committed plan used (a new leader resumes)
                observed_peak_rps: peaks
                    .get(&m.name)
                    .copied()
                    .or_else(|| st.plan_basis.get(&m.name).copied()),
                mem_mib: mem,
                value: 1.0,
            }
        })
        .collect();
    let nodes = st
        .nodes
        .values()
        .filter_map(|n| {
            // An accelerator with a measured profile plans on its own rows (see
            // `with_measured`); otherwise a GPU of the shipped table on the shipped rows.
            let kind_of = |a: &crate::state::Accelerator| {
                let mk = measured_kind(&n.name, &a.id);
                if !a.profile.is_empty() && data.profiles.gpu(&mk).is_ok() {
                    Some(mk)
                } else if a.kind == "gpu" && data.profiles.gpu(&a.name).is_ok() {
                    Some(a.name.clone())
                } else {
                    None
                }
            };
            let gpus: Vec<planner::GpuSlot> = n
                .accelerators
                .iter()
                .filter(|a| !pinned_accs.contains(&(n.name.as_str(), a.id.as_str())))
                .filter_map(|a| {
                    let kind = kind_of(a)?;
                    Some(planner::GpuSlot {
                        id: a.id.clone(),
                        memory_mib: if a.memory_mb > 0 {
                            a.memory_mb
                        } else {
                            data.profiles.gpu(&kind).map_or(1, |g| g.memory_mib.max(1))
                        },
                        kind,
                    })
                })
                .collect();
            (!gpus.is_empty()).then(|| planner::Node {
                id: n.name.clone(),
                healthy: n.status == NodeStatus::Ready,
                gpus,
            })
        })
        .collect();
    planner::Inputs { nodes, models }
}

/// The partitions a node's pins give it (one per pinned accelerator, 100 %).
fn pin_partitions(st: &State, node: &str) -> Vec<Partition> {
    let mut by_acc: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in st.pins.iter().filter(|p| p.node == node) {
        by_acc
            .entry(p.accelerator.clone())
            .or_default()
            .push(p.model.clone());
    }
    by_acc
        .into_iter()
        .map(|(acc, models)| Partition {
            accelerator_id: acc,
            share_pct: 100,
            models,
        })
        .collect()
}

/// One planning round: pure given the state, the observed peaks and which models each node
/// reports ready. Commits nothing.
pub fn round(
    data: &GpuData,
    st: &State,
    peaks: &BTreeMap<String, f64>,
    ready: &dyn Fn(&str) -> BTreeSet<String>,
    cfg: &planner::Config,
) -> Result<PlanPreview, String> {
    let data = with_measured(data, st);
    let data = data.as_ref();
    let inputs = inputs(data, st, peaks);
    let current = committed_plan(st);
    let out = planner::plan(data, &inputs, current.as_ref(), cfg).map_err(|e| e.to_string())?;
    // Which profile each plannable accelerator was planned with (measured rows win).
    let mut decisions: Vec<String> = st
        .nodes
        .values()
        .filter(|n| n.status == NodeStatus::Ready)
        .flat_map(|n| {
            n.accelerators.iter().filter_map(move |a| {
                let label = profile_label(data, a)?;
                Some(format!("profile {}/{}: {label}", n.name, a.id))
            })
        })
        .collect();
    decisions.extend(
        out.decisions
            .iter()
            .map(|d| format!("{}: {}", d.subject, d.reason)),
    );
    let steps: Vec<String> = if out.replanned {
        let mut next = out.plan.clone();
        for p in &mut next.partitions {
            for t in &mut p.tenants {
                t.max_batch = 0;
            }
        }
        planner::diff(current.as_ref(), &next, &inputs)
            .iter()
            .map(|s| match s {
                planner::Step::Start { partition, reason } => {
                    format!("start {partition}: {reason}")
                }
                planner::Step::WaitReady { partition, reason } => {
                    format!("wait until {partition} is ready: {reason}")
                }
                planner::Step::MoveTraffic {
                    model,
                    from,
                    to,
                    reason,
                } => format!(
                    "move {model} from [{}] to [{}]: {reason}",
                    from.join(", "),
                    to.join(", ")
                ),
                planner::Step::Stop { partition, reason } => {
                    format!("stop {partition}: {reason}")
                }
            })
            .collect()
    } else {
        Vec::new()
    };
    let trigger = out
        .decisions
        .iter()
        .find(|d| d.subject == "plan")
        .map(|d| d.reason.clone())
        .unwrap_or_else(|| "first plan".into());
    let trigger = explain_pinned(st, out.trigger.as_ref(), trigger);
    // desired target per node
    let mut target: BTreeMap<String, Vec<Partition>> = BTreeMap::new();
    if out.replanned {
        for p in &out.plan.partitions {
            target.entry(p.node.clone()).or_default().push(Partition {
                accelerator_id: p.gpu.clone(),
                share_pct: p.share_pct,
                models: p.tenants.iter().map(|t| t.model.clone()).collect(),
            });
        }
    } else {
        for n in st.nodes.values() {
            if !n.target.is_empty() {
                target.insert(n.name.clone(), n.target.clone());
            }
        }
        // pins are added below; drop pinned models a stale target may still hold
    }
    let pinned: BTreeSet<&str> = st.pins.iter().map(|p| p.model.as_str()).collect();
    for parts in target.values_mut() {
        for p in parts.iter_mut() {
            p.models.retain(|m| !pinned.contains(m.as_str()));
        }
        parts.retain(|p| !p.models.is_empty());
    }
    // where each model will live, for make-before-break
    let mut home: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (node, parts) in &target {
        for p in parts {
            for m in &p.models {
                home.entry(m.clone()).or_default().insert(node.clone());
            }
        }
    }
    for p in st.pins.iter() {
        home.entry(p.model.clone())
            .or_default()
            .insert(p.node.clone());
    }
    let mut changes = Vec::new();
    let mut reasons = Vec::new();
    for n in st.nodes.values() {
        let mut tgt = target.get(&n.name).cloned().unwrap_or_default();
        tgt.extend(pin_partitions(st, &n.name));
        let tgt = normalise(tgt);
        let tgt_models: BTreeSet<&String> = tgt.iter().flat_map(|p| &p.models).collect();
        let mut eff = tgt.clone();
        let mut kept = Vec::new();
        if n.status == NodeStatus::Ready {
            for p in &n.partitions {
                if eff.contains(p) {
                    continue;
                }
                // keep an old partition while one of its models leaves this node for a home
                // that does not report it ready yet
                let waiting: Vec<&String> = p
                    .models
                    .iter()
                    .filter(|m| !tgt_models.contains(m) && st.models.contains_key(*m))
                    .filter(|m| {
                        home.get(*m).is_some_and(|homes| {
                            homes
                                .iter()
                                .filter(|h| **h != n.name)
                                .any(|h| !ready(h).contains(*m))
                        })
                    })
                    .collect();
                if !waiting.is_empty() {
                    kept.push(format!(
                        "{} {}% [{}] kept until {} ready on the new node",
                        p.accelerator_id,
                        p.share_pct,
                        p.models.join(", "),
                        waiting
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                    let mut keep = p.clone();
                    keep.models.retain(|m| st.models.contains_key(m));
                    if !keep.models.is_empty() {
                        eff.push(keep);
                    }
                }
            }
        }
        let eff = normalise(eff);
        let cur = normalise(n.partitions.clone());
        // The recorded target is compared without pinned models: a pin is applied by its own
        // command, and recording it again in the target would bump the node's epoch once
        // after every pin (an agent would see a second assignment for nothing).
        let strip = |v: &[Partition]| {
            normalise(
                v.iter()
                    .cloned()
                    .map(|mut p| {
                        p.models.retain(|m| !pinned.contains(m.as_str()));
                        p
                    })
                    .filter(|p| !p.models.is_empty())
                    .collect(),
            )
        };
        if eff != cur || strip(&tgt) != strip(&n.target) {
            let why = if !kept.is_empty() {
                format!("{trigger}; make-before-break: {}", kept.join("; "))
            } else if out.replanned {
                trigger.clone()
            } else if n.status != NodeStatus::Ready {
                format!("node {} is {}", n.name, n.status.as_str())
            } else {
                "make-before-break: the new partitions are ready, old ones retired".into()
            };
            reasons.push(format!("{}: {why}", n.name));
            changes.push(pb::CommitPlacement {
                node: n.name.clone(),
                partitions: to_pb(&eff),
                expected_epoch: n.assignment_epoch,
                reason: why,
                target: to_pb(&tgt),
            });
        }
    }
    decisions.extend(reasons);
    let plan = if out.replanned {
        out.plan.clone()
    } else {
        current.clone().unwrap_or_default()
    };
    Ok(PlanPreview {
        replanned: out.replanned,
        decisions,
        steps,
        plan_json: serde_json::to_string(&plan).unwrap_or_default(),
        changes,
        basis_rps: plan.basis_rps.clone(),
        plan_nodes: plan.nodes.iter().cloned().collect(),
        shed: plan
            .shed
            .iter()
            .map(|s| format!("{}: {}", s.model, s.reason))
            .collect(),
        reason: trigger,
    })
}

/// The pure planner sees only what it plans: a model an operator pinned looks "removed" to
/// it, and a node whose accelerators are all pinned looks "lost". Say what happened instead,
/// from the planner's structured trigger (`text` is its rendering, kept otherwise).
fn explain_pinned(st: &State, trigger: Option<&planner::Trigger>, text: String) -> String {
    match trigger {
        Some(planner::Trigger::ModelRemoved(m))
            if st.models.contains_key(m) && st.pins.iter().any(|p| &p.model == m) =>
        {
            format!(
                "re-plan: model {m} pinned by an operator (its pin places it now, not the planner)"
            )
        }
        Some(planner::Trigger::NodeLost(n))
            if st
                .nodes
                .get(n)
                .is_some_and(|x| x.status == NodeStatus::Ready)
                && st.pins.iter().any(|p| &p.node == n) =>
        {
            format!(
                "re-plan: node {n}'s accelerators pinned by an operator (the planner no longer places models there)"
            )
        }
        _ => text,
    }
}

impl Planner {
    pub fn new(hub: Arc<AgentHub>, cfg: PlannerConfig) -> Arc<Planner> {
        Arc::new(Planner {
            hub,
            cfg,
            rates: Mutex::new(RateTracker::default()),
            metrics: OnceLock::new(),
        })
    }

    /// The observed peaks the planner uses: with less than a whole peak window watched, a
    /// model keeps at least its committed rate (rises count at once, falls only after a
    /// full window).
    fn peaks_for(&self, st: &State) -> BTreeMap<String, f64> {
        let t = self.rates.lock().expect("rates lock");
        let mut p = t.peak();
        if !t.full(Instant::now(), &self.cfg) {
            for (m, r) in p.iter_mut() {
                if let Some(b) = st.plan_basis.get(m) {
                    *r = r.max(*b);
                }
            }
        }
        p
    }

    fn peaks(&self) -> BTreeMap<String, f64> {
        self.rates.lock().expect("rates lock").peak()
    }

    /// One round over `st` with the leader's current observations.
    pub fn preview(&self, st: &State) -> Result<PlanPreview, String> {
        let data = gpu_data().ok_or("the shipped GPU profiles do not parse")?;
        let hub = self.hub.clone();
        round(
            data,
            st,
            &self.peaks_for(st),
            &move |n: &str| hub.ready_models(n),
            &self.cfg.planner,
        )
    }
}

impl LiveStats for Planner {
    fn node(&self, name: &str) -> Option<NodeLiveStats> {
        self.hub.node(name)
    }
    fn model(&self, name: &str) -> Option<ModelLiveStats> {
        self.hub.model(name)
    }
    fn plan_preview(&self, st: &State) -> Result<PlanPreview, String> {
        self.preview(st)
    }
    fn partitions(&self, node: &str) -> Vec<PartitionLive> {
        self.hub.partitions(node)
    }
    fn planned_rates(&self) -> BTreeMap<String, f64> {
        self.peaks()
    }
}

/// Leader-only loop: sample rates, plan, commit changes.
pub async fn run(handle: Handle, planner: Arc<Planner>) {
    let _ = planner.metrics.set(handle.metrics());
    let mut leadership = handle.leadership();
    let mut changes = handle.state_changes();
    let mut tick = tokio::time::interval(planner.cfg.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_leader = false;
    loop {
        let mut sample = false;
        tokio::select! {
            r = leadership.changed() => if r.is_err() { return },
            r = changes.changed() => {
                if r.is_err() { return }
                // let a burst of entries settle into one round
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            _ = tick.tick() => sample = true,
        }
        let is_leader = leadership.borrow_and_update().is_leader;
        if !is_leader {
            if was_leader {
                planner.rates.lock().expect("rates lock").clear();
            }
            was_leader = false;
            continue;
        }
        if !was_leader {
            tracing::info!("leader: planner loop resumes from the committed plan");
        }
        was_leader = true;
        if sample {
            let rates = planner.hub.rates();
            planner
                .rates
                .lock()
                .expect("rates lock")
                .push(Instant::now(), rates, &planner.cfg);
        }
        let st = handle.stale_state();
        let preview = match planner.preview(&st) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "planner failed; keeping the committed plan");
                continue;
            }
        };
        if !preview.changes_state(&st) {
            continue;
        }
        let n_nodes = preview.changes.len() as u64;
        let cmd = pb::Command {
            client_id: 0,
            seq: 0,
            kind: Some(Kind::CommitPlan(pb::CommitPlan {
                nodes: preview.changes.clone(),
                basis_rps: preview.basis_rps.clone().into_iter().collect(),
                plan_nodes: preview.plan_nodes.clone(),
                reason: preview.reason.clone(),
                shed: preview.shed.clone(),
            })),
        };
        match handle.propose(cmd).await {
            Ok(r) => {
                if let Some(m) = planner.metrics.get() {
                    m.plan_changes.inc();
                    m.reconfigurations.inc_by(n_nodes);
                }
                tracing::info!(
                    index = r.index,
                    nodes = n_nodes,
                    reason = %preview.reason,
                    decisions = ?preview.decisions,
                    "plan committed"
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "plan not committed (stale epoch or no quorum); planning again next round")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgeplane_proto::raft::command::Kind;

    fn cmd(kind: Kind) -> pb::Command {
        pb::Command {
            client_id: 0,
            seq: 0,
            kind: Some(kind),
        }
    }

    fn register_acc(st: &mut State, name: &str, acc: pb::Accelerator, index: u64) {
        st.apply(
            &cmd(Kind::RegisterNode(pb::RegisterNode {
                name: name.into(),
                accelerators: vec![acc],
                agent_addr: "127.0.0.1:1".into(),
                ..Default::default()
            })),
            index,
        );
    }

    fn register(st: &mut State, name: &str, gpu: &str, index: u64) {
        let acc = pb::Accelerator {
            id: "gpu0".into(),
            kind: "gpu".into(),
            name: gpu.into(),
            simulated: true,
            ..Default::default()
        };
        register_acc(st, name, acc, index);
    }

    fn deploy(st: &mut State, name: &str, rate: f64, index: u64) {
        st.apply(
            &cmd(Kind::DeployModel(pb::DeployModel {
                name: name.into(),
                slo_ms: 100.0,
                rate,
                memory_mb: 0,
            })),
            index,
        );
    }

    fn commit(st: &mut State, p: &PlanPreview, index: u64) -> pb::ApplyResult {
        st.apply(
            &cmd(Kind::CommitPlan(pb::CommitPlan {
                nodes: p.changes.clone(),
                basis_rps: p.basis_rps.clone().into_iter().collect(),
                plan_nodes: p.plan_nodes.clone(),
                reason: p.reason.clone(),
                shed: p.shed.clone(),
            })),
            index,
        )
        .result
    }

    fn all_ready(st: &State) -> impl Fn(&str) -> BTreeSet<String> + '_ {
        move |n: &str| {
            st.nodes
                .get(n)
                .map(|n| n.models().into_iter().collect())
                .unwrap_or_default()
        }
    }

    /// One round on `st` with no observed rates, nothing reported ready, default tunables.
    fn plan_now(st: &State) -> PlanPreview {
        let none = |_: &str| BTreeSet::new();
        round(
            gpu_data().unwrap(),
            st,
            &BTreeMap::new(),
            &none,
            &planner::Config::default(),
        )
        .unwrap()
    }

    fn setup() -> State {
        let mut st = State::default();
        register(&mut st, "a", "Jetson-AGX-Xavier", 1);
        deploy(&mut st, "resnet18", 50.0, 2);
        deploy(&mut st, "resnet50", 50.0, 3);
        st
    }

    fn register_measured(st: &mut State, name: &str, ms_b1: f64, index: u64) {
        let ms: Vec<f64> = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]
            .iter()
            .map(|b| ms_b1 * b)
            .collect();
        let acc = pb::Accelerator {
            id: "cpu0".into(),
            kind: "cpu".into(),
            name: "host CPU".into(),
            memory_mb: 8192,
            profile: vec![pb::ProfileRow {
                model: "resnet18".into(),
                ms,
            }],
            profile_source: "cpu on test".into(),
            ..Default::default()
        };
        register_acc(st, name, acc, index);
    }

    #[test]
    fn measured_profiles_make_a_cpu_plannable_and_are_named_in_the_decisions() {
        let data = gpu_data().unwrap();
        let mut st = State::default();
        register_measured(&mut st, "cpu-box", 5.0, 1);
        deploy(&mut st, "resnet18", 20.0, 2);
        let none = |_: &str| BTreeSet::new();
        let cfg = planner::Config::default();
        let p = round(data, &st, &BTreeMap::new(), &none, &cfg).unwrap();
        assert!(
            p.decisions
                .iter()
                .any(|d| d == "profile cpu-box/cpu0: measured (cpu on test)"),
            "{:?}",
            p.decisions
        );
        assert_eq!(
            commit(&mut st, &p, 10).code(),
            pb::ResultCode::Ok,
            "{:?}",
            p.decisions
        );
        assert_eq!(st.nodes["cpu-box"].models(), vec!["resnet18"]);
        // Too slow a CPU for the SLO (100 ms): the measured rows say so, the model is shed
        // rather than planned on numbers the box does not have.
        let mut slow = State::default();
        register_measured(&mut slow, "slow-box", 80.0, 1);
        deploy(&mut slow, "resnet18", 20.0, 2);
        let p = round(data, &slow, &BTreeMap::new(), &none, &cfg).unwrap();
        assert!(
            p.changes.iter().all(|c| c.partitions.is_empty()),
            "{:?}",
            p.changes
        );
        assert!(!p.shed.is_empty(), "{:?}", p.decisions);
        // A node without a profile and without a GPU of the table is not plannable at all.
        let mut bare = State::default();
        st_register_cpu_without_profile(&mut bare);
        deploy(&mut bare, "resnet18", 20.0, 2);
        let p = round(data, &bare, &BTreeMap::new(), &none, &cfg).unwrap();
        assert!(p.changes.is_empty(), "{:?}", p.changes);
    }

    fn st_register_cpu_without_profile(st: &mut State) {
        let acc = pb::Accelerator {
            id: "cpu0".into(),
            kind: "cpu".into(),
            name: "host CPU".into(),
            ..Default::default()
        };
        register_acc(st, "bare", acc, 1);
    }

    #[test]
    fn a_reported_profile_is_validated_with_the_field_named() {
        use edgeplane_proto::agent as ag;
        let acc = |rows: Vec<ag::ProfileRow>| ag::Accelerator {
            id: "cpu0".into(),
            kind: "cpu".into(),
            profile: rows,
            ..Default::default()
        };
        let row = |m: &str, ms: Vec<f64>| ag::ProfileRow {
            model: m.into(),
            ms,
        };
        assert!(check_profile(&acc(vec![])).is_ok());
        assert!(check_profile(&acc(vec![row("resnet18", vec![1., 2., 4., 8., 16., 32.])])).is_ok());
        let e = check_profile(&acc(vec![row("nope", vec![1., 2., 4., 8., 16., 32.])])).unwrap_err();
        assert!(e.contains("model") && e.contains("nope"), "{e}");
        let e = check_profile(&acc(vec![row("resnet18", vec![1., 2.])])).unwrap_err();
        assert!(e.contains("ms"), "{e}");
        let e = check_profile(&acc(vec![row(
            "resnet18",
            vec![1., f64::NAN, 4., 8., 16., 32.],
        )]))
        .unwrap_err();
        assert!(e.contains("ms"), "{e}");
        let many = (0..=MAX_PROFILE_ROWS)
            .map(|_| row("resnet18", vec![1., 2., 4., 8., 16., 32.]))
            .collect();
        assert!(check_profile(&acc(many)).unwrap_err().contains("at most"));
    }

    #[test]
    fn first_round_places_every_model_and_a_second_keeps_it() {
        let data = gpu_data().unwrap();
        let mut st = setup();
        let p = plan_now(&st);
        assert!(p.replanned);
        assert_eq!(p.changes.len(), 1, "{:?}", p.decisions);
        assert_eq!(commit(&mut st, &p, 10).code(), pb::ResultCode::Ok);
        let a = &st.nodes["a"];
        assert_eq!(a.models(), vec!["resnet18", "resnet50"]);
        assert_eq!(a.assignment_epoch, 10);
        assert_eq!(st.events.len(), 1);
        // same inputs, rates within the band: nothing to commit (hysteresis)
        let mut peaks = BTreeMap::new();
        peaks.insert("resnet18".to_string(), 51.0);
        peaks.insert("resnet50".to_string(), 47.0);
        let p2 = round(
            data,
            &st,
            &peaks,
            &all_ready(&st),
            &planner::Config::default(),
        )
        .unwrap();
        assert!(!p2.replanned);
        assert!(!p2.changes_state(&st), "{:?}", p2.changes);
    }

    #[test]
    fn hysteresis_no_churn_under_rate_noise() {
        let data = gpu_data().unwrap();
        let mut st = setup();
        let p = plan_now(&st);
        commit(&mut st, &p, 10);
        // Poisson-like noise of +-4 % around the requested 50 req/s, 200 rounds: no commit
        let mut x: u64 = 12345;
        let mut commits = 0;
        for _ in 0..200 {
            let mut peaks = BTreeMap::new();
            for m in ["resnet18", "resnet50"] {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = (x >> 33) as f64 / (1u64 << 31) as f64; // 0..1
                peaks.insert(m.to_string(), 50.0 * (0.96 + 0.08 * u));
            }
            let p = round(
                data,
                &st,
                &peaks,
                &all_ready(&st),
                &planner::Config::default(),
            )
            .unwrap();
            if p.changes_state(&st) {
                commits += 1;
            }
        }
        assert_eq!(commits, 0);
        // a real rise (+30 %) re-plans
        let mut peaks = BTreeMap::new();
        peaks.insert("resnet18".to_string(), 65.0);
        let p = round(
            data,
            &st,
            &peaks,
            &all_ready(&st),
            &planner::Config::default(),
        )
        .unwrap();
        assert!(p.replanned);
        assert!(p.reason.contains("rose"), "{}", p.reason);
    }

    #[test]
    fn pins_win_over_the_planner() {
        let mut st = setup();
        register(&mut st, "b", "Jetson-AGX-Xavier", 4);
        st.apply(
            &cmd(Kind::PinPlacement(pb::PinPlacement {
                node: "b".into(),
                model: "resnet50".into(),
                accelerator: "gpu0".into(),
            })),
            5,
        );
        let p = plan_now(&st);
        commit(&mut st, &p, 10);
        // resnet50 only where it is pinned, at 100 %; the planner placed resnet18 on a
        assert_eq!(st.nodes["b"].models(), vec!["resnet50"]);
        assert_eq!(st.nodes["b"].partitions[0].share_pct, 100);
        assert_eq!(st.nodes["a"].models(), vec!["resnet18"]);
    }

    #[test]
    fn a_move_keeps_the_old_partition_until_the_new_home_is_ready() {
        let data = gpu_data().unwrap();
        let mut st = setup();
        register(&mut st, "b", "Jetson-AGX-Xavier", 4);
        let p = plan_now(&st);
        commit(&mut st, &p, 10);
        // pin resnet18 (wherever it is) onto the other node's GPU: it must move
        let (from, to) = if st.nodes["a"].models().contains(&"resnet18".to_string()) {
            ("a", "b")
        } else {
            ("b", "a")
        };
        st.apply(
            &cmd(Kind::PinPlacement(pb::PinPlacement {
                node: to.into(),
                model: "resnet18".into(),
                accelerator: "gpu0".into(),
            })),
            11,
        );
        // the pin already put resnet18 on `to`; `to` does not report it ready yet
        let p = plan_now(&st);
        assert!(
            p.reason.contains("pinned by an operator") && !p.reason.contains("lost"),
            "neither the model nor the node went away, a pin took them from the planner: {}",
            p.reason
        );
        commit(&mut st, &p, 12);
        assert!(
            st.nodes[from].models().contains(&"resnet18".to_string()),
            "old partition kept while the new one is not ready: {:?}",
            st.nodes[from].partitions
        );
        assert!(!st.nodes[from]
            .target
            .iter()
            .any(|p| p.models.contains(&"resnet18".to_string())));
        // now `to` reports it ready: the next round retires the old partition
        let p = round(
            data,
            &st,
            &BTreeMap::new(),
            &all_ready(&st),
            &planner::Config::default(),
        )
        .unwrap();
        assert_eq!(commit(&mut st, &p, 13).code(), pb::ResultCode::Ok);
        assert!(!st.nodes[from].models().contains(&"resnet18".to_string()));
        assert!(st
            .events
            .iter()
            .any(|e| e.reason.contains("make-before-break")));
    }

    #[test]
    fn a_deployed_model_is_planned_at_least_at_its_deployed_rate() {
        let data = gpu_data().unwrap();
        let mut st = setup(); // resnet18 and resnet50 deployed at 50 req/s
        let none = |_: &str| BTreeSet::new();
        let p = plan_now(&st);
        commit(&mut st, &p, 10);
        assert_eq!(st.plan_basis.get("resnet18"), Some(&50.0));
        // idle (a measured 0), served or not: demand = max(50 deployed, 0 observed) = 50, the
        // committed basis, so nothing re-plans and the model keeps its partitions
        let mut peaks = BTreeMap::new();
        peaks.insert("resnet18".to_string(), 0.0);
        for ready in [&none as &dyn Fn(&str) -> BTreeSet<String>, &all_ready(&st)] {
            let p = round(data, &st, &peaks, ready, &planner::Config::default()).unwrap();
            assert!(!p.replanned, "{:?}", p.decisions);
            assert!(!p.changes_state(&st), "{:?}", p.changes);
        }
        // a measured rate above the deployed one is demand, also for a model served nowhere
        // (its refused requests are counted): 80 > 50 x 1.05 re-plans on 80
        peaks.insert("resnet18".to_string(), 80.0);
        let p = round(data, &st, &peaks, &none, &planner::Config::default()).unwrap();
        assert!(p.replanned && p.reason.contains("rose"), "{}", p.reason);
        assert_eq!(p.basis_rps.get("resnet18"), Some(&80.0));
        assert_eq!(p.basis_rps.get("resnet50"), Some(&50.0));
        // a stale committed 0 (a plan made before this rule) is no floor: the next round
        // plans on the deployed 50 again
        st.plan_basis.insert("resnet18".to_string(), 0.0);
        let p = round(
            data,
            &st,
            &BTreeMap::new(),
            &none,
            &planner::Config::default(),
        )
        .unwrap();
        assert!(p.replanned, "{:?}", p.decisions);
        assert_eq!(p.basis_rps.get("resnet18"), Some(&50.0));
    }

    #[test]
    fn an_idle_model_deployed_at_zero_is_not_placed_with_a_reason_in_the_events() {
        let mut st = setup();
        deploy(&mut st, "vgg16", 0.0, 4);
        let p = plan_now(&st);
        assert_eq!(
            commit(&mut st, &p, 10).code(),
            pb::ResultCode::Ok,
            "{:?}",
            p.decisions
        );
        assert!(!st.nodes["a"].models().contains(&"vgg16".to_string()));
        let ev: Vec<&str> = st
            .events
            .iter()
            .filter(|e| e.node.is_empty())
            .map(|e| e.reason.as_str())
            .collect();
        assert_eq!(ev.len(), 1, "{:?}", st.events);
        assert!(ev[0].starts_with("not placed: vgg16: idle"), "{ev:?}");
        // the same shed again is no new event; its first requests (refused, counted) place it
        let data = gpu_data().unwrap();
        let mut peaks = BTreeMap::new();
        peaks.insert("vgg16".to_string(), 5.0);
        let p = round(
            data,
            &st,
            &peaks,
            &all_ready(&st),
            &planner::Config::default(),
        )
        .unwrap();
        assert!(p.replanned, "{:?}", p.decisions);
        assert_eq!(commit(&mut st, &p, 11).code(), pb::ResultCode::Ok);
        assert!(st.nodes["a"].models().contains(&"vgg16".to_string()));
        assert_eq!(st.events.iter().filter(|e| e.node.is_empty()).count(), 1);
    }

    #[test]
    fn a_stale_epoch_refuses_the_whole_plan() {
        let mut st = setup();
        let p = plan_now(&st);
        // the node's assignment changes after the round was planned
        st.apply(
            &cmd(Kind::PinPlacement(pb::PinPlacement {
                node: "a".into(),
                model: "resnet50".into(),
                accelerator: "gpu0".into(),
            })),
            9,
        );
        let before = st.nodes["a"].clone();
        let r = commit(&mut st, &p, 10);
        assert_eq!(
            r.code(),
            pb::ResultCode::FailedPrecondition,
            "{}",
            r.message
        );
        assert!(r.message.contains("stale epoch"), "{}", r.message);
        assert_eq!(st.nodes["a"], before);
        assert!(st.plan_basis.is_empty(), "nothing of the plan applied");
    }

    #[test]
    fn a_new_leader_resumes_from_the_committed_plan() {
        let data = gpu_data().unwrap();
        let mut st = setup();
        let mut peaks = BTreeMap::new();
        peaks.insert("resnet18".to_string(), 80.0);
        peaks.insert("resnet50".to_string(), 30.0);
        let none = |_: &str| BTreeSet::new();
        let p = round(data, &st, &peaks, &none, &planner::Config::default()).unwrap();
        commit(&mut st, &p, 10);
        // a new leader has no rate yet: it plans on the committed basis, not the requested
        // 50 req/s, so it keeps the plan
        let p = round(
            data,
            &st,
            &BTreeMap::new(),
            &all_ready(&st),
            &planner::Config::default(),
        )
        .unwrap();
        assert!(!p.replanned, "{:?}", p.decisions);
        assert!(!p.changes_state(&st));
    }

    #[test]
    fn a_lost_node_is_emptied_and_its_models_placed_elsewhere() {
        let mut st = setup();
        register(&mut st, "b", "Jetson-AGX-Xavier", 4);
        let p = plan_now(&st);
        commit(&mut st, &p, 10);
        let lost = if st.nodes["a"].models().is_empty() {
            "b"
        } else {
            "a"
        };
        st.apply(
            &cmd(Kind::ExpireNodes(pb::ExpireNodes {
                names: vec![lost.into()],
            })),
            11,
        );
        let p = plan_now(&st);
        assert!(p.reason.contains("lost"), "{}", p.reason);
        commit(&mut st, &p, 12);
        assert!(st.nodes[lost].partitions.is_empty());
        let other = if lost == "a" { "b" } else { "a" };
        assert_eq!(st.nodes[other].models(), vec!["resnet18", "resnet50"]);
    }
}
