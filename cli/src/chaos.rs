//! `edgeplane chaos`: the history-checked fault suite of `edgeplane-chaos`, for operators.
//!
//! - `--endpoints A,B,C`: against a running cluster whose replicas were started with
//!   `--enable-fault-injection`. Only fault-hook faults (partitions, one-way, flapping): the
//!   CLI cannot signal remote processes. The models it writes (`chaos-<seed>-...`) are
//!   removed at the end.
//! - `--local`: starts its own 3 replicas as child processes (next to this binary), so the
//!   process faults (SIGKILL, SIGSTOP) run too; a fresh cluster per fault kind.
//!
//! The run's time is split evenly over the fault kinds. Exit status is non-zero when any
//! check found a violation.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use clap::Args;
use edgeplane_chaos::{
    run_scenario, CheckConfig, Counters, FaultKind, LocalCluster, ReplicaOpts, ScenarioConfig,
    ScenarioReport, Target, WorkloadConfig,
};
use edgeplane_proto::admin::{self as api, admin_client::AdminClient};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::output::Format;
use crate::GlobalArgs;

#[derive(Debug, Args)]
pub struct ChaosArgs {
    /// Start a local 3-replica cluster (child processes) instead of using --endpoints;
    /// enables the process faults (kill, pause).
    #[arg(long)]
    pub local: bool,
    /// Total run time: `90s`, `2m`, or seconds.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Fault kinds, comma-separated (default: every kind the target allows). Kinds:
    /// kill-leader, kill-follower, kill-majority, kill-all, pause-leader, snapshot-catch-up,
    /// partition-leader, partition-follower, one-way, flapping, member-replace.
    #[arg(long, value_delimiter = ',')]
    pub faults: Vec<String>,
    /// Concurrent workload clients.
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// Keys (model records) the clients write and read.
    #[arg(long, default_value_t = 8)]
    pub keys: usize,
    /// Seed of the workload and fault choices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// How long a fault lasts, ms.
    #[arg(long, default_value_t = 1500)]
    pub hold_ms: u64,
    /// The cluster's election timeout in ms (pauses last 3x this); --local uses its own.
    #[arg(long, default_value_t = 1000)]
    pub election_timeout_ms: u64,
    /// Output format of the final report.
    #[arg(long, short = 'o', visible_alias = "output", value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// `90s`, `2m`, `1500ms`, or a plain number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 60s, 2m, 1500ms"))?;
    let secs = match unit {
        "ms" => v / 1e3,
        "s" => v,
        "m" => v * 60.0,
        "h" => v * 3600.0,
        _ => {
            return Err(format!(
                "invalid duration unit {unit:?} in {s:?}: use ms, s, m or h"
            ))
        }
    };
    if !(secs.is_finite() && secs > 0.0) {
        return Err(format!("invalid duration {s:?}: must be > 0"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn kinds(a: &ChaosArgs) -> anyhow::Result<Vec<FaultKind>> {
    let ks: Vec<FaultKind> = if a.faults.is_empty() {
        FaultKind::ALL
            .iter()
            .copied()
            .filter(|k| a.local || !k.needs_processes())
            .collect()
    } else {
        a.faults
            .iter()
            .map(|s| FaultKind::parse(s.trim()))
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow!("--faults: {e}"))?
    };
    if !a.local {
        if let Some(k) = ks.iter().find(|k| k.needs_processes()) {
            bail!(
                "--faults: {} needs replica processes this CLI owns; run with --local, or pick \
                 fault-hook kinds (partition-leader, partition-follower, one-way, flapping)",
                k.name()
            );
        }
    }
    Ok(ks)
}

pub async fn chaos(g: &GlobalArgs, a: ChaosArgs) -> anyhow::Result<()> {
    let kinds = kinds(&a)?;
    if kinds.is_empty() {
        bail!("--faults: no fault kinds selected");
    }
    let per_kind = a.duration / kinds.len() as u32;
    if per_kind < Duration::from_secs(3) {
        bail!(
            "--duration {:?} leaves {:?} per fault kind ({} kinds); give at least 3 s each",
            a.duration,
            per_kind,
            kinds.len()
        );
    }
    let replica_opts = ReplicaOpts {
        snapshot_entries: 1000,
        ..ReplicaOpts::default()
    };
    let mut remote = if a.local {
        None
    } else {
        Some(
            Target::remote(&g.endpoints, Duration::from_millis(a.election_timeout_ms))
                .await
                .context("connecting to the cluster")?,
        )
    };

    let pb = ProgressBar::new(a.duration.as_millis() as u64);
    pb.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {msg}")
            .expect("progress template"),
    );
    let started = Instant::now();
    let mut reports: Vec<ScenarioReport> = Vec::new();
    for (i, kind) in kinds.iter().enumerate() {
        let counters = Arc::new(Counters::default());
        let ticker = {
            let c = counters.clone();
            let pb = pb.clone();
            let name = kind.name();
            let base = per_kind * i as u32;
            let t0 = Instant::now();
            tokio::spawn(async move {
                loop {
                    let pos = (base + t0.elapsed().min(per_kind)).as_millis() as u64;
                    pb.set_position(pos);
                    pb.set_message(format!(
                        "{name}: {} ops, {} acked writes, {} unknown, {} faults",
                        c.ops.load(Ordering::Relaxed),
                        c.acked_writes.load(Ordering::Relaxed),
                        c.unknown.load(Ordering::Relaxed),
                        c.faults.load(Ordering::Relaxed)
                    ));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
        };
        let cfg = ScenarioConfig {
            kind: *kind,
            duration: per_kind.saturating_sub(Duration::from_secs(2)),
            warm: Duration::from_millis(600),
            hold: Duration::from_millis(a.hold_ms),
            snapshot_entries: replica_opts.snapshot_entries,
            workload: WorkloadConfig {
                clients: a.clients,
                keys: a.keys,
                seed: a.seed.wrapping_add(i as u64),
                key_prefix: format!("chaos-{}-{}", a.seed, kind.name()),
                op_timeout: Duration::from_secs(1),
                ..Default::default()
            },
            check: CheckConfig::default(),
            // Fake nodes only in a cluster we own (a real one would place models on them).
            placement_nodes: if a.local { 2 } else { 0 },
        };
        let r = match &mut remote {
            Some(t) => {
                let r = run_scenario(t, &cfg, counters).await;
                cleanup(t, &cfg.workload.key_names()).await;
                r
            }
            None => {
                let dir = std::env::temp_dir().join(format!(
                    "edgeplane-chaos-{}-{}",
                    std::process::id(),
                    kind.name()
                ));
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                let bin = std::env::current_exe()?
                    .parent()
                    .ok_or_else(|| anyhow!("cannot locate the edgeplane binary's folder"))?
                    .join("edgeplane-coordinator");
                let procs = LocalCluster::start(&bin, &dir, 3, replica_opts.clone())?;
                let mut t = Target::local(procs)?;
                let r = run_scenario(&mut t, &cfg, counters).await;
                drop(t);
                let _ = std::fs::remove_dir_all(&dir);
                r
            }
        };
        ticker.abort();
        let r = r.with_context(|| format!("fault kind {}", kind.name()))?;
        for v in &r.violations {
            pb.println(format!("VIOLATION ({}): {v}", kind.name()));
        }
        reports.push(r);
    }
    pb.finish_and_clear();
    print_report(&reports, a.format, started.elapsed());
    let total: usize = reports.iter().map(|r| r.violations.len()).sum();
    let undecided: usize = reports.iter().map(|r| r.undecided.len()).sum();
    if total > 0 {
        bail!("{total} violation(s) found (details above)");
    }
    if undecided > 0 {
        bail!("{undecided} key history(ies) could not be decided within the search budget");
    }
    Ok(())
}

/// Remove the models a run wrote (best effort; the cluster belongs to the operator).
async fn cleanup(t: &Target, keys: &[String]) {
    for (id, addr) in &t.members {
        let Ok(ep) = tonic::transport::Endpoint::from_shared(format!("http://{addr}")) else {
            continue;
        };
        let Ok(ch) = ep.connect().await else { continue };
        let mut c = AdminClient::new(ch);
        let cid = rand::random::<u64>() | 1;
        for (seq, k) in keys.iter().enumerate() {
            let _ = c
                .remove_model(api::RemoveModelRequest {
                    meta: Some(api::WriteMeta {
                        client_id: cid,
                        seq: seq as u64 + 1,
                    }),
                    name: k.clone(),
                })
                .await;
        }
        tracing::debug!(member = id, "chaos models removed");
        return;
    }
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{:.0}", d.as_secs_f64() * 1e3))
}

fn print_report(reports: &[ScenarioReport], format: Format, elapsed: Duration) {
    if format == Format::Json {
        let v: Vec<_> = reports
            .iter()
            .map(|r| {
                json!({"fault": r.kind.map(|k| k.name()), "rounds": r.rounds, "ops": r.ops,
                    "ok": r.ok, "fail": r.fail, "unknown": r.unknown, "unknown_reads": r.unknown_reads,
                    "histories_checked": r.histories_checked, "pins": r.pins,
                    "gap_p50_ms": r.gap_pct(0.5).map(|d| d.as_secs_f64() * 1e3),
                    "gap_p99_ms": r.gap_pct(0.99).map(|d| d.as_secs_f64() * 1e3),
                    "not_recovered": r.not_recovered, "violations": r.violations,
                    "undecided": r.undecided})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v).expect("json"));
        return;
    }
    println!(
        "{:<20} {:>6} {:>7} {:>7} {:>5} {:>7} {:>9} {:>8} {:>8} {:>10}",
        "fault",
        "rounds",
        "ops",
        "ok",
        "fail",
        "unknown",
        "histories",
        "gap p50",
        "gap p99",
        "violations"
    );
    for r in reports {
        println!(
            "{:<20} {:>6} {:>7} {:>7} {:>5} {:>7} {:>9} {:>5} ms {:>5} ms {:>10}",
            r.kind.map_or("-", |k| k.name()),
            r.rounds,
            r.ops,
            r.ok,
            r.fail,
            r.unknown,
            r.histories_checked,
            ms(r.gap_pct(0.5)),
            ms(r.gap_pct(0.99)),
            r.violations.len()
        );
    }
    let ops: usize = reports.iter().map(|r| r.ops).sum();
    let hist: usize = reports.iter().map(|r| r.histories_checked).sum();
    let viol: usize = reports.iter().map(|r| r.violations.len()).sum();
    println!(
        "total: {ops} operations, {hist} histories checked, {viol} violations, {:.1} s",
        elapsed.as_secs_f64()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_reject_nonsense() {
        assert_eq!(parse_duration("60s").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(
            parse_duration("1500ms").unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("10x").unwrap_err().contains("unit"));
        assert!(parse_duration("abc").is_err());
    }
}
