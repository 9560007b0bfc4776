//! `edgeplane-bench vs-etcd`: the same client code against etcd and Edgeplane, ratios printed.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use edgeplane_bench::{cluster, run, Op, Outcome, System};
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "edgeplane-bench",
    about = "Benchmarks Edgeplane against a peer on this machine"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Writes and linearizable reads at several client counts, etcd and Edgeplane interleaved.
    VsEtcd(VsEtcd),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Table,
    Json,
}

#[derive(clap::Args)]
struct VsEtcd {
    /// Client counts to run, comma-separated (each client is one connection, closed loop).
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    clients: Vec<usize>,
    /// Operations to run, comma-separated: write, read.
    #[arg(long, value_delimiter = ',', default_value = "write,read")]
    ops: Vec<String>,
    /// Seconds measured per (system, op, clients).
    #[arg(long, default_value_t = 10.0)]
    duration_s: f64,
    /// Seconds of warm-up before each measurement (not recorded).
    #[arg(long, default_value_t = 1.0)]
    warmup_s: f64,
    /// Also run writes for this many seconds per system and report p99.9 / p99 (snapshot spikes).
    #[arg(long, default_value_t = 0.0)]
    soak_s: f64,
    /// Clients in the soak run.
    #[arg(long, default_value_t = 16)]
    soak_clients: usize,
    /// Edgeplane's --snapshot-entries (default: the coordinator's own default).
    #[arg(long)]
    snapshot_entries: Option<u64>,
    /// The etcd binary (Debian: `apt-get install etcd-server`).
    #[arg(long, default_value = "etcd")]
    etcd: PathBuf,
    /// The edgeplane-coordinator binary (default: next to this binary).
    #[arg(long)]
    coordinator: Option<PathBuf>,
    /// Folder for both clusters' data dirs (default: the temp dir).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

fn parse_ops(ops: &[String]) -> anyhow::Result<Vec<Op>> {
    ops.iter()
        .map(|o| match o.as_str() {
            "write" => Ok(Op::Write),
            "read" => Ok(Op::Read),
            other => bail!("invalid --ops: unknown operation {other:?}; use write and/or read"),
        })
        .collect()
}

fn secs(name: &str, v: f64) -> anyhow::Result<Duration> {
    if !(v.is_finite() && v >= 0.0) {
        bail!("invalid --{name}: must be a number of seconds >= 0");
    }
    Ok(Duration::from_secs_f64(v))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Cmd::VsEtcd(a) = Cli::parse().cmd;
    let ops = parse_ops(&a.ops)?;
    if a.clients.is_empty() || a.clients.contains(&0) {
        bail!("invalid --clients: give one or more counts > 0, e.g. 1,64");
    }
    let duration = secs("duration-s", a.duration_s)?;
    if duration.is_zero() {
        bail!("invalid --duration-s: must be > 0");
    }
    let warmup = secs("warmup-s", a.warmup_s)?;
    let soak = secs("soak-s", a.soak_s)?;
    let coordinator = match a.coordinator.clone() {
        Some(p) => p,
        None => std::env::current_exe()?
            .parent()
            .context("cannot locate this binary's folder")?
            .join("edgeplane-coordinator"),
    };
    let parent = cluster::data_parent(a.data_dir.clone());

    let etcd = cluster::start_etcd(&a.etcd, &parent)?;
    let ours = cluster::start_edgeplane(&coordinator, &parent, a.snapshot_entries)?;
    let within = Duration::from_secs(30);
    let etcd_url = cluster::leader(&etcd, within).await?;
    let ours_url = cluster::leader(&ours, within).await?;
    let max_clients = a
        .clients
        .iter()
        .copied()
        .max()
        .unwrap_or(1)
        .max(a.soak_clients);
    run::populate(System::Etcd, &etcd_url, max_clients).await?;
    run::populate(System::Edgeplane, &ours_url, max_clients).await?;

    let mut pairs: Vec<Pair> = Vec::new();
    for &op in &ops {
        for &n in &a.clients {
            eprintln!(
                "running {} x{n}: etcd, then edgeplane ({:?} each)",
                op.name(),
                duration
            );
            let e = run::run(System::Etcd, &etcd_url, op, n, warmup, duration).await?;
            let o = run::run(System::Edgeplane, &ours_url, op, n, warmup, duration).await?;
            pairs.push(Pair { etcd: e, ours: o });
        }
    }
    let mut soaks = Vec::new();
    if !soak.is_zero() {
        for (sys, url) in [(System::Etcd, &etcd_url), (System::Edgeplane, &ours_url)] {
            eprintln!(
                "soak: {} writes x{} for {soak:?}",
                sys.name(),
                a.soak_clients
            );
            soaks.push(run::run(sys, url, Op::Write, a.soak_clients, warmup, soak).await?);
        }
    }
    drop((etcd, ours));
    print(a.format, &pairs, &soaks)
}

/// etcd's and edgeplane's outcome of the same operation at the same client count.
struct Pair {
    etcd: Outcome,
    ours: Outcome,
}

fn print(format: Format, pairs: &[Pair], soaks: &[Outcome]) -> anyhow::Result<()> {
    if format == Format::Json {
        let runs: Vec<_> = pairs
            .iter()
            .map(|Pair { etcd: e, ours: o }| {
                json!({"op": o.op.name(), "clients": o.clients, "etcd": e.json(), "edgeplane": o.json(),
                       "throughput_ratio": o.ops_per_s() / e.ops_per_s(),
                       "p99_ratio": o.ms(0.99) / e.ms(0.99)})
            })
            .collect();
        let soak: Vec<_> = soaks
            .iter()
            .map(|s| json!({"run": s.json(), "p999_over_p99": s.ms(0.999) / s.ms(0.99)}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"runs": runs, "soak": soak}))?
        );
        return Ok(());
    }
    println!(
        "{:<6} {:>7} | {:>10} {:>8} {:>8} | {:>10} {:>8} {:>8} | {:>9} {:>9}",
        "op",
        "clients",
        "etcd op/s",
        "p50 ms",
        "p99 ms",
        "ours op/s",
        "p50 ms",
        "p99 ms",
        "op/s ours/etcd",
        "p99 ours/etcd"
    );
    for Pair { etcd: e, ours: o } in pairs {
        println!(
            "{:<6} {:>7} | {:>10.0} {:>8.2} {:>8.2} | {:>10.0} {:>8.2} {:>8.2} | {:>9.2}x {:>9.2}x",
            o.op.name(),
            o.clients,
            e.ops_per_s(),
            e.ms(0.5),
            e.ms(0.99),
            o.ops_per_s(),
            o.ms(0.5),
            o.ms(0.99),
            o.ops_per_s() / e.ops_per_s(),
            o.ms(0.99) / e.ms(0.99)
        );
        if e.errors + o.errors > 0 {
            println!("       errors: etcd {}, edgeplane {}", e.errors, o.errors);
        }
    }
    for s in soaks {
        println!(
            "soak {:<9} writes x{}: {:.0} op/s, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms, p99.9/p99 = {:.2}",
            s.system.name(),
            s.clients,
            s.ops_per_s(),
            s.ms(0.99),
            s.ms(0.999),
            s.hist.max_ms(),
            s.ms(0.999) / s.ms(0.99)
        );
    }
    Ok(())
}
