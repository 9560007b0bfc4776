//! The demo's report: one typed [`DemoReport`] built from what the live run measured and what
//! the virtual-time runs computed, printed as text (`--format table`, also `report.txt`) or
//! as one JSON document (`--format json`, also `report.json`).

use std::fmt::Write as _;
use std::path::Path;

use edgeplane_scheduler::summary::ScenarioSummary;
use serde::{Deserialize, Serialize};

use super::files::Files;
use super::live::{Live, Sample};
use super::virtual_time::{GpuRun, XrComparison};
use super::DemoArgs;
use crate::latency::Latencies;

/// Everything the demo reports (the same figures as the text report).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DemoReport {
    /// Wall-clock seconds of the whole run (start-up, load, reference runs).
    pub total_s: f64,
    pub cluster: ClusterReport,
    pub failover: FailoverReport,
    /// The demo's own Infer requests to the XR agent (absent with `--probe-rate 0`).
    pub probe: Option<ProbeReport>,
    pub xr: XrReport,
    /// SDRM3 against baselines on the XR scenario, in virtual time.
    pub sdrm3: Sdrm3Report,
    /// The GPU box as a live agent (absent when this build's agent cannot simulate a GPU).
    pub gpu_live: Option<GpuLiveReport>,
    /// The GPU box's seed workload under the planner and 3 other modes, in virtual time.
    pub gpu_virtual: GpuVirtualReport,
    /// Plan changes with their reasons, live ones first, then the virtual-time planner's.
    pub plan_changes: Vec<PlanChange>,
    pub files: FilesReport,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterReport {
    /// Coordinator replicas started.
    pub members: usize,
    /// The replica that led first.
    pub first_leader: u64,
    /// Mutual TLS on every link.
    pub tls: bool,
    /// Whether a plaintext call to the leader was refused.
    pub plaintext_refused: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FailoverReport {
    /// The replica SIGKILLed.
    pub killed_id: u64,
    /// When it was killed, s since the load started.
    pub killed_at_s: f64,
    pub new_leader: u64,
    /// Seconds from the kill to a new leader.
    pub elected_after_s: f64,
    /// Seconds from the kill to the first acknowledged write.
    pub write_after_s: f64,
    /// Seconds from the kill until the XR agent's session was with the new leader (absent:
    /// not within 15 s).
    pub agent_back_after_s: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeReport {
    pub model: String,
    pub sent: usize,
    /// The agent answered (completed or dropped by its scheduler).
    pub answered: usize,
    pub completed: usize,
    pub deadlines_met: usize,
    /// Sent from 1 s before the kill to 1 s after the first write.
    pub around_failover_sent: usize,
    pub around_failover_answered: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct XrReport {
    pub scenario: String,
    pub hardware: String,
    /// Seconds of load.
    pub load_s: f64,
    /// The agent's own end-of-scenario summary (absent when it did not print one).
    pub summary: Option<ScenarioSummary>,
    /// Without a summary: the last figures the leader had per model (`models list`).
    pub leader_figures: Vec<LeaderFigure>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaderFigure {
    pub model: String,
    pub deadline_met_pct: f64,
    pub energy_mj: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sdrm3Report {
    /// Simulated milliseconds per policy.
    pub duration_ms: f64,
    pub seed: u64,
    /// SDRM3 first.
    pub rows: Vec<PolicyRow>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicyRow {
    pub policy: String,
    pub uxcost: f64,
    /// UXCost over SDRM3's.
    pub vs_sdrm3: f64,
    pub miss_rate: f64,
    pub deadlines_met: u64,
    pub frames: u64,
    pub energy_mj: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GpuLiveReport {
    pub gpu: String,
    /// Requests/s per model.
    pub rate: f64,
    pub models: Vec<GpuLiveModel>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GpuLiveModel {
    pub name: String,
    /// Deployed (and its load started), s since the load started.
    pub at_s: f64,
    pub sent: usize,
    /// The agent answered that the model is not (yet) placed on it.
    pub refused: usize,
    pub deadlines_met: usize,
    pub met_pct: f64,
    pub slo_ms: f64,
    pub p99_ms: f64,
    pub energy_j: f64,
    /// Seconds from `at_s` to the first completed request (absent: never).
    pub first_served_after_s: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GpuVirtualReport {
    pub gpu: String,
    /// Virtual seconds.
    pub duration_s: f64,
    /// The planner's rows first (mode `planner`), then each other mode's.
    pub rows: Vec<GpuModeRow>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GpuModeRow {
    pub mode: String,
    pub model: String,
    pub within_slo: u64,
    pub arrived: u64,
    pub slo_pct: f64,
    pub p99_ms: f64,
    pub energy_j: f64,
}

/// One plan change with its reason.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PlanChange {
    /// The operator pinned models (live; `text` as the demo logged it).
    OperatorPin { t_s: f64, text: String },
    /// The leader's planner committed a plan (live, from the replicated plan history).
    Planner {
        t_s: f64,
        node: String,
        epoch: u64,
        reason: String,
        partitions: String,
    },
    /// The leader's planner committed nothing during the live run.
    NoLiveChange,
    /// The planner in the virtual-time run of the GPU box.
    Virtual { t_s: f64, reason: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FilesReport {
    pub latency_png: String,
    pub partitions_png: String,
    pub csvs: Vec<String>,
    pub logs: String,
    pub report: String,
}

impl DemoReport {
    pub(super) fn build(
        a: &DemoArgs,
        live: &Live,
        gpu: &GpuRun,
        xr: &XrComparison,
        files: &Files,
        total_s: f64,
    ) -> DemoReport {
        let f = &live.failover;
        DemoReport {
            total_s,
            cluster: ClusterReport {
                members: live.members,
                first_leader: live.first_leader,
                tls: live.tls,
                plaintext_refused: live.plaintext_refused,
            },
            failover: FailoverReport {
                killed_id: f.killed_id,
                killed_at_s: f.killed_at_s,
                new_leader: f.new_leader,
                elected_after_s: f.elected_after_s,
                write_after_s: f.write_after_s,
                agent_back_after_s: f.agent_back_after_s,
            },
            probe: probe_report(live),
            xr: XrReport {
                scenario: a.scenario.clone(),
                hardware: a.hardware.clone(),
                load_s: live.load_s,
                summary: live.xr_summary.clone(),
                leader_figures: leader_figures(live),
            },
            sdrm3: sdrm3_report(xr),
            gpu_live: live.gpu_live.as_ref().map(|g| GpuLiveReport {
                gpu: a.gpu.clone(),
                rate: a.gpu_rate,
                models: g.models.iter().map(gpu_live_model).collect(),
            }),
            gpu_virtual: gpu_virtual_report(gpu),
            plan_changes: plan_changes(live, gpu),
            files: FilesReport {
                latency_png: files.latency_png.display().to_string(),
                partitions_png: files.partitions_png.display().to_string(),
                csvs: files.csvs.iter().map(|p| p.display().to_string()).collect(),
                logs: a.out.join("logs").display().to_string(),
                report: a.out.join("report.txt").display().to_string(),
            },
        }
    }

    /// The text report (`report.txt`, and stdout under `--format table`).
    pub fn render(&self) -> String {
        let mut r = String::new();
        let _ = writeln!(
            r,
            "\n=== Edgeplane demo report ({:.0} s) ===\n",
            self.total_s
        );
        self.render_cluster(&mut r);
        self.render_xr(&mut r);
        self.render_sdrm3(&mut r);
        self.render_gpu_live(&mut r);
        self.render_gpu_virtual(&mut r);
        self.render_plan_changes(&mut r);
        self.render_real_and_simulated(&mut r);
        self.render_files(&mut r);
        r
    }

    fn render_cluster(&self, r: &mut String) {
        let c = &self.cluster;
        let f = &self.failover;
        let _ = writeln!(
            r,
            "Cluster: {} coordinator replicas (real processes, gRPC on loopback, sled); replica {} led first. {}",
            c.members,
            c.first_leader,
            match (c.tls, c.plaintext_refused) {
                (true, true) => "TLS: on (mutual TLS on every link: peers, agents and the demo's admin and Infer clients, with a CA and certificates generated for this run; a plaintext call was refused).",
                (true, false) => "TLS: on (mutual TLS on every link, certificates generated for this run), but a plaintext call was answered: check the logs.",
                (false, _) => "TLS: off.",
            }
        );
        let _ = writeln!(
            r,
            "Failover time: {:.2} s to a new leader (replica {} after replica {} was SIGKILLed at {:.1} s), {:.2} s to the first acknowledged write{}.",
            f.elected_after_s,
            f.new_leader,
            f.killed_id,
            f.killed_at_s,
            f.write_after_s,
            match f.agent_back_after_s {
                Some(d) => format!(", {d:.2} s until the XR agent's session was with the new leader"),
                None => ", the XR agent's session did not reach the new leader within 15 s".into(),
            }
        );
        if let Some(p) = &self.probe {
            let _ = writeln!(
                r,
                "Serving through the failover: the demo sent {} Infer requests for {} to the XR agent: {} answered ({} RPCs failed), {} completed, {} within deadline ({} dropped by the scheduler as infeasible); of the {} sent from 1 s before the kill to 1 s after the first write, {} were answered.",
                p.sent,
                p.model,
                p.answered,
                p.sent - p.answered,
                p.completed,
                p.deadlines_met,
                p.answered - p.completed,
                p.around_failover_sent,
                p.around_failover_answered
            );
        }
    }

    fn render_xr(&self, r: &mut String) {
        let x = &self.xr;
        let _ = writeln!(
            r,
            "\nXR device agent (live, real time, SDRM3 with its weight tuner): {} on {} simulated NPUs, {:.0} s",
            x.scenario, x.hardware, x.load_s
        );
        let _ = writeln!(
            r,
            "  {:<26} {:>7} {:>14} {:>8} {:>7} {:>11}",
            "model", "frames", "deadlines met", "missed", "drops", "energy mJ"
        );
        let Some(s) = &x.summary else {
            let _ = writeln!(
                r,
                "  (the agent's summary is missing; last figures the leader had, from `models list`:)"
            );
            for m in &x.leader_figures {
                let _ = writeln!(
                    r,
                    "  {:<26} deadlines met {:.1} %  energy {:.1} mJ",
                    m.model, m.deadline_met_pct, m.energy_mj
                );
            }
            return;
        };
        for m in &s.models {
            let _ = writeln!(
                r,
                "  {:<26} {:>7} {:>7} ({:>4.1}%) {:>8} {:>7} {:>11.1}",
                m.model,
                m.arrivals,
                m.deadlines_met,
                m.met_pct(),
                m.deadlines_missed,
                m.drops,
                m.energy_mj
            );
        }
        let _ = writeln!(
            r,
            "  all: deadlines met {:.1} % of {} frames, scheduler {:.1} µs per decision",
            100.0 * s.deadline_met_rate,
            s.frames,
            s.decision_overhead_us
        );
    }

    fn render_sdrm3(&self, r: &mut String) {
        let _ = writeln!(
            r,
            "\nSDRM3 (with its weight tuner, as the live agent) against baselines on the same scenario and NPUs (scheduler simulator, virtual time, {} ms, seed {}):",
            self.sdrm3.duration_ms, self.sdrm3.seed
        );
        let _ = writeln!(
            r,
            "  {:<9} {:>8} {:>11} {:>9} {:>12} {:>10}",
            "policy", "UXCost", "vs sdrm3", "miss", "deadlines met", "energy mJ"
        );
        for p in &self.sdrm3.rows {
            let _ = writeln!(
                r,
                "  {:<9} {:>8.3} {:>10.2}x {:>9.3} {:>12} {:>10.0}",
                p.policy,
                p.uxcost,
                p.vs_sdrm3,
                p.miss_rate,
                format!("{}/{}", p.deadlines_met, p.frames),
                p.energy_mj
            );
        }
    }

    fn render_gpu_live(&self, r: &mut String) {
        let Some(g) = &self.gpu_live else { return };
        let _ = writeln!(
            r,
            "\nGPU box (live agent, one simulated {} GPU, placed by the leader's planner): the seed workload, {} req/s each, arriving at {}",
            g.gpu,
            g.rate,
            g.models
                .iter()
                .map(|m| format!("{:.0} s ({})", m.at_s, m.name))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let _ = writeln!(
            r,
            "  {:<10} {:>6} {:>9} {:>22} {:>8} {:>9} {:>10} {:>13}",
            "model",
            "sent",
            "refused",
            "deadlines (SLO) met",
            "SLO ms",
            "p99 ms",
            "energy J",
            "first served"
        );
        for m in &g.models {
            let _ = writeln!(
                r,
                "  {:<10} {:>6} {:>9} {:>7}/{:<7} {:>5.1}% {:>8.0} {:>9.1} {:>10.2} {:>13}",
                m.name,
                m.sent,
                m.refused,
                m.deadlines_met,
                m.sent,
                m.met_pct,
                m.slo_ms,
                m.p99_ms,
                m.energy_j,
                match m.first_served_after_s {
                    Some(d) => format!("+{d:.1} s"),
                    None => "never".into(),
                }
            );
        }
        let _ = writeln!(
            r,
            "  (refused = the agent answered that the model is not (yet) placed on it, before the plan reached it)"
        );
    }

    fn render_gpu_virtual(&self, r: &mut String) {
        let g = &self.gpu_virtual;
        let _ = writeln!(
            r,
            "\nGPU box ({}): the seed workload through the planner (VIRTUAL TIME, {} s; ResNet18, ResNet50, VGG16 arrive at 0, 50, 100 s, 50 req/s each):",
            g.gpu, g.duration_s
        );
        let _ = writeln!(
            r,
            "  {:<14} {:<10} {:>22} {:>9} {:>10}",
            "mode", "model", "deadlines (SLO) met", "p99 ms", "energy J"
        );
        for m in &g.rows {
            let _ = writeln!(
                r,
                "  {:<14} {:<10} {:>7}/{:<7} {:>5.1}% {:>9.1} {:>10.1}",
                m.mode, m.model, m.within_slo, m.arrived, m.slo_pct, m.p99_ms, m.energy_j
            );
        }
    }

    fn render_plan_changes(&self, r: &mut String) {
        let _ = writeln!(r, "\nPlan changes with their reasons:");
        for c in &self.plan_changes {
            let _ = match c {
                PlanChange::OperatorPin { t_s, text } => {
                    writeln!(r, "  live     t={t_s:>5.1} s  {text}")
                }
                PlanChange::Planner {
                    t_s,
                    node,
                    epoch,
                    reason,
                    partitions,
                } => writeln!(
                    r,
                    "  live     t={t_s:>5.1} s  planner, {node} epoch {epoch}: {reason} -> {partitions}"
                ),
                PlanChange::NoLiveChange => writeln!(
                    r,
                    "  live     (the leader's planner committed no plan change during the run)"
                ),
                PlanChange::Virtual { t_s, reason } => {
                    writeln!(r, "  virtual  t={t_s:>5.1} s  planner: {reason}")
                }
            };
        }
    }

    fn render_real_and_simulated(&self, r: &mut String) {
        let _ = writeln!(r, "\nWhat was real and what was simulated:");
        if self.gpu_live.is_some() {
            let _ = writeln!(r, "  real: 3 coordinator processes, Raft, sled, gRPC on loopback, the SIGKILL and the election; two agent processes, their registration, sessions and reports; the leader's planner and its plans committed through Raft; the XR agent's real-time SDRM3 loop; every Infer request.");
            let _ = writeln!(r, "  simulated: the NPUs (XRBench cost tables: each block waits its modelled latency) and the GPU (its profiled latency for the batch and MPS share); the planner-vs-baselines GPU table and the SDRM3-vs-baselines table are virtual-time runs.");
        } else {
            let _ = writeln!(r, "  real: 3 coordinator processes, Raft, sled, gRPC on loopback, the SIGKILL and the election; the XR agent process, its registration, session, reports and real-time SDRM3 loop; the Infer requests.");
            let _ = writeln!(r, "  simulated: the NPUs (XRBench cost tables: each block waits its modelled latency); the GPU box runs in virtual time through the planner and the GPU partition simulator (this build's agent cannot simulate a GPU: issue 9).");
        }
    }

    fn render_files(&self, r: &mut String) {
        let f = &self.files;
        let _ = writeln!(
            r,
            "\nPictures: {} (latency over time), {} (partitions over time)",
            f.latency_png, f.partitions_png
        );
        let _ = writeln!(r, "CSVs: {}", f.csvs.join(", "));
        let _ = writeln!(
            r,
            "Logs of every process: {}; this report: {}",
            f.logs, f.report
        );
    }
}

fn probe_report(live: &Live) -> Option<ProbeReport> {
    if live.probe.is_empty() {
        return None;
    }
    let f = &live.failover;
    let around: Vec<&Sample> = live
        .probe
        .iter()
        .filter(|s| s.t_s >= f.killed_at_s - 1.0 && s.t_s <= f.killed_at_s + f.write_after_s + 1.0)
        .collect();
    Some(ProbeReport {
        model: live.probe_model.clone(),
        sent: live.probe.len(),
        answered: live.probe.iter().filter(|s| s.answered).count(),
        completed: live.probe.iter().filter(|s| s.ok).count(),
        deadlines_met: live.probe.iter().filter(|s| s.met).count(),
        around_failover_sent: around.len(),
        around_failover_answered: around.iter().filter(|s| s.answered).count(),
    })
}

/// The last figure the leader had for each model, newest poll first.
fn leader_figures(live: &Live) -> Vec<LeaderFigure> {
    let mut seen = std::collections::BTreeSet::new();
    live.polls
        .iter()
        .rev()
        .filter(|p| seen.insert(p.model.clone()))
        .map(|p| LeaderFigure {
            model: p.model.clone(),
            deadline_met_pct: p.deadline_met_pct,
            energy_mj: p.energy_j * 1000.0,
        })
        .collect()
}

fn sdrm3_report(xr: &XrComparison) -> Sdrm3Report {
    let base = xr.rows.first().map_or(1.0, |x| x.report.uxcost);
    let rows = xr
        .rows
        .iter()
        .map(|row| {
            let rep = &row.report;
            PolicyRow {
                policy: row.policy.clone(),
                uxcost: rep.uxcost,
                vs_sdrm3: rep.uxcost / base,
                miss_rate: rep.miss_rate,
                deadlines_met: rep
                    .models
                    .iter()
                    .map(|m| m.completed - m.late.min(m.completed))
                    .sum(),
                frames: rep.frames,
                energy_mj: rep.energy_mj,
            }
        })
        .collect();
    Sdrm3Report {
        duration_ms: xr.duration_ms,
        seed: xr.seed,
        rows,
    }
}

fn gpu_live_model(m: &super::live::GpuModelLive) -> GpuLiveModel {
    let v = m.samples.lock().expect("samples");
    let sent = v.len();
    let met = v.iter().filter(|x| x.met).count();
    let first = v
        .iter()
        .filter(|x| x.ok)
        .map(|x| x.t_s)
        .fold(f64::INFINITY, f64::min);
    GpuLiveModel {
        name: m.name.clone(),
        at_s: m.at_s,
        sent,
        refused: v.iter().filter(|x| !x.answered).count(),
        deadlines_met: met,
        met_pct: if sent == 0 {
            0.0
        } else {
            100.0 * met as f64 / sent as f64
        },
        slo_ms: m.slo_ms,
        p99_ms: Latencies::from_ms(v.iter().filter(|x| x.ok).map(|x| x.latency_ms))
            .quantile_ms(0.99),
        energy_j: v.iter().map(|x| x.energy_mj).sum::<f64>() / 1000.0,
        first_served_after_s: first.is_finite().then_some(first - m.at_s),
    }
}

fn gpu_virtual_report(gpu: &GpuRun) -> GpuVirtualReport {
    let mut rows = Vec::new();
    for (i, run) in std::iter::once(&gpu.adaptive)
        .chain(&gpu.baselines)
        .enumerate()
    {
        let mode = if i == 0 {
            "planner".to_string()
        } else {
            run.mode.clone()
        };
        for m in &run.models {
            rows.push(GpuModeRow {
                mode: mode.clone(),
                model: m.model.clone(),
                within_slo: m.within_slo,
                arrived: m.arrived,
                slo_pct: 100.0 * m.slo_attainment(),
                p99_ms: m.p99_ms,
                energy_j: m.energy_j,
            });
        }
    }
    GpuVirtualReport {
        gpu: gpu.gpu.clone(),
        duration_s: gpu.duration_s,
        rows,
    }
}

fn plan_changes(live: &Live, gpu: &GpuRun) -> Vec<PlanChange> {
    let mut out: Vec<PlanChange> = live
        .events
        .iter()
        .filter(|e| e.text.starts_with("operator pin"))
        .map(|e| PlanChange::OperatorPin {
            t_s: e.t_s,
            text: e.text.clone(),
        })
        .collect();
    out.extend(live.plan_events.iter().map(|p| PlanChange::Planner {
        t_s: p.t_s,
        node: p.event.node.clone(),
        epoch: p.event.epoch,
        reason: p.event.reason.clone(),
        partitions: p.event.partitions.clone(),
    }));
    if live.plan_events.is_empty() && live.gpu_live.is_some() {
        out.push(PlanChange::NoLiveChange);
    }
    out.extend(gpu.changes.iter().map(|c| PlanChange::Virtual {
        t_s: c.t_s,
        reason: c.reason.clone(),
    }));
    out
}

/// Write `report.txt` and `report.json` into the demo's folder.
pub(super) fn write_files(out: &Path, report: &DemoReport, text: &str) -> anyhow::Result<()> {
    use anyhow::Context as _;
    std::fs::write(out.join("report.txt"), text)
        .with_context(|| format!("writing {}", out.join("report.txt").display()))?;
    let json = serde_json::to_string_pretty(report)?;
    std::fs::write(out.join("report.json"), json)
        .with_context(|| format!("writing {}", out.join("report.json").display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgeplane_scheduler::summary::ModelSummary;

    fn report() -> DemoReport {
        DemoReport {
            total_s: 67.6,
            cluster: ClusterReport {
                members: 3,
                first_leader: 2,
                tls: true,
                plaintext_refused: true,
            },
            failover: FailoverReport {
                killed_id: 2,
                killed_at_s: 30.06,
                new_leader: 1,
                elected_after_s: 1.354,
                write_after_s: 1.37,
                agent_back_after_s: None,
            },
            probe: None,
            xr: XrReport {
                scenario: "VR_gaming".into(),
                hardware: "Dual_4K_WS_OS".into(),
                load_s: 60.2,
                summary: Some(ScenarioSummary {
                    frames: 60,
                    deadlines_met: 45,
                    deadline_met_rate: 0.75,
                    models: vec![ModelSummary {
                        model: "ES_RITNet".into(),
                        arrivals: 60,
                        deadlines_met: 45,
                        deadlines_missed: 13,
                        drops: 2,
                        energy_mj: 12.34,
                        ..ModelSummary::default()
                    }],
                    ..ScenarioSummary::default()
                }),
                leader_figures: vec![],
            },
            sdrm3: Sdrm3Report {
                duration_ms: 5000.0,
                seed: 1,
                rows: vec![],
            },
            gpu_live: None,
            gpu_virtual: GpuVirtualReport {
                gpu: "V100".into(),
                duration_s: 300.0,
                rows: vec![],
            },
            plan_changes: vec![PlanChange::Virtual {
                t_s: 40.0,
                reason: "re-plan: model resnet50 deployed -> [20% resnet18, 80% resnet50]".into(),
            }],
            files: FilesReport {
                latency_png: "o/latency.png".into(),
                partitions_png: "o/partitions.png".into(),
                csvs: vec!["o/a.csv".into(), "o/b.csv".into()],
                logs: "o/logs".into(),
                report: "o/report.txt".into(),
            },
        }
    }

    #[test]
    fn the_text_report_shows_the_typed_figures() {
        let text = report().render();
        // 67.6 s rounds to 68; 1.354 s to 1.35; 30.06 s to 30.1; 45 of 60 frames is 75.0 %
        assert!(
            text.contains("=== Edgeplane demo report (68 s) ==="),
            "{text}"
        );
        assert!(text.contains(
            "Failover time: 1.35 s to a new leader (replica 1 after replica 2 was SIGKILLed at 30.1 s), 1.37 s to the first acknowledged write, the XR agent's session did not reach the new leader within 15 s."
        ), "{text}");
        assert!(
            text.contains(
                "  ES_RITNet                       60      45 (75.0%)       13       2        12.3"
            ),
            "{text}"
        );
        assert!(
            text.contains("  all: deadlines met 75.0 % of 60 frames"),
            "{text}"
        );
        assert!(text.contains("  virtual  t= 40.0 s  planner: re-plan: model resnet50 deployed"));
        assert!(text.contains("CSVs: o/a.csv, o/b.csv\n"));
        assert!(
            !text.contains("Serving through the failover"),
            "no probe, no line"
        );
    }

    #[test]
    fn the_json_report_reads_back() {
        let r = report();
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(v["plan_changes"][0]["kind"], "virtual");
        assert_eq!(v["xr"]["summary"]["models"][0]["deadlines_met"], 45);
        let back: DemoReport = serde_json::from_value(v).unwrap();
        assert_eq!(back.render(), r.render());
    }
}
