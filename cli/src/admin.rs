//! Admin commands over gRPC against the coordinator cluster, and `bench raft`.
//!
//! Every call tries the endpoints in turn until one answers or `--timeout-s` passes:
//! "unavailable"-type failures (connection refused, no leader yet, deadline) move on to the
//! next member; answers about the input (invalid argument, not found) end the command at
//! once. Writes carry a random client id and a sequence number, so a write retried on
//! another member is applied at most once.

use std::path::PathBuf;
use std::process::{Child, Command as Proc, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use clap::{Args, Subcommand, ValueEnum};
use edgeplane_proto::admin::{self as api, admin_client::AdminClient};
use serde_json::json;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::GlobalArgs;

#[derive(Debug, Clone, Copy, Default, ValueEnum, PartialEq, Eq)]
pub enum Format {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct ReadOpts {
    /// Serve the read from the member asked, without ReadIndex (may be stale).
    #[arg(long)]
    pub stale: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Leader, term, indexes and members.
    Status(ReadOpts),
}

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Deploy (or update) a model.
    Deploy {
        name: String,
        /// Latency SLO in milliseconds (> 0).
        #[arg(long)]
        slo_ms: f64,
        /// Requested rate, requests/s.
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
        /// Memory footprint in MiB.
        #[arg(long, default_value_t = 0)]
        memory_mb: u64,
    },
    /// Remove a model.
    Remove { name: String },
    /// List models.
    List(ReadOpts),
    /// Show one model (linearizable unless --stale; fails when it is not deployed).
    Get {
        name: String,
        #[command(flatten)]
        opts: ReadOpts,
    },
}

#[derive(Debug, Subcommand)]
pub enum NodesCommand {
    /// List nodes.
    List(ReadOpts),
}

#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// Add a member (voter, or learner with --learner).
    Add {
        id: u64,
        #[arg(long)]
        peer_addr: String,
        #[arg(long)]
        client_addr: String,
        #[arg(long)]
        learner: bool,
    },
    /// Remove a member.
    Remove { id: u64 },
}

#[derive(Debug, Subcommand)]
pub enum LeaderCommand {
    /// Transfer leadership.
    Transfer {
        #[arg(long)]
        to: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Save a snapshot of the replicated state to a file.
    Save {
        file: PathBuf,
        #[arg(long)]
        stale: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum PlacementCommand {
    /// Pin a model to a node (optionally to one accelerator).
    Set {
        #[arg(long)]
        node: String,
        #[arg(long)]
        model: String,
        #[arg(long)]
        accelerator: Option<String>,
    },
    /// Show placements.
    Show(ReadOpts),
}

#[derive(Debug, Args)]
pub struct BenchRaftArgs {
    /// Concurrent clients, each with its own connection and one write in flight.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// How long to run.
    #[arg(long, default_value_t = 10.0)]
    pub duration_s: f64,
    /// Start a local 3-replica cluster (temp data dirs) and benchmark it, ignoring --endpoints.
    #[arg(long)]
    pub local: bool,
    /// Measure linearizable reads (`models list`, ReadIndex) instead of writes.
    #[arg(long)]
    pub reads: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// Connection helper over all endpoints.
struct Conn {
    endpoints: Vec<String>,
    timeout: Duration,
    client_id: u64,
}

fn retryable(s: &Status) -> bool {
    matches!(
        s.code(),
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Unknown
            | Code::Cancelled
            | Code::Internal
    )
}

fn endpoint(addr: &str) -> anyhow::Result<Endpoint> {
    let url = if addr.starts_with("http") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    Ok(Endpoint::from_shared(url)
        .with_context(|| format!("malformed endpoint {addr:?}"))?
        .connect_timeout(Duration::from_millis(500))
        .tcp_nodelay(true))
}

impl Conn {
    fn new(g: &GlobalArgs) -> anyhow::Result<Self> {
        if g.endpoints.is_empty() {
            bail!("no --endpoints given");
        }
        if !(g.timeout_s.is_finite() && g.timeout_s > 0.0) {
            bail!("invalid --timeout-s {}: must be > 0", g.timeout_s);
        }
        Ok(Conn {
            endpoints: g.endpoints.clone(),
            timeout: Duration::from_secs_f64(g.timeout_s),
            client_id: rand::random::<u64>() | 1,
        })
    }

    /// Run `f` against members in turn until one succeeds or the timeout passes.
    async fn call<T, F, Fut>(&self, what: &str, mut f: F) -> anyhow::Result<T>
    where
        F: FnMut(AdminClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let deadline = Instant::now() + self.timeout;
        let mut last: String;
        let mut i = 0usize;
        loop {
            let addr = &self.endpoints[i % self.endpoints.len()];
            i += 1;
            let ep = endpoint(addr)?;
            let left = deadline.saturating_duration_since(Instant::now());
            match ep.connect().await {
                Ok(ch) => {
                    let client = AdminClient::new(ch);
                    // Cap one attempt so a member that accepts but cannot answer (partitioned,
                    // no leader) does not use up the whole budget.
                    let attempt = left
                        .min(Duration::from_secs(4))
                        .max(Duration::from_millis(50));
                    match tokio::time::timeout(attempt, f(client)).await {
                        Ok(Ok(r)) => return Ok(r.into_inner()),
                        Ok(Err(s)) if !retryable(&s) => {
                            bail!("{what}: {} ({:?})", s.message(), s.code())
                        }
                        Ok(Err(s)) => last = format!("{addr}: {} ({:?})", s.message(), s.code()),
                        Err(_) => last = format!("{addr}: no answer in time"),
                    }
                }
                Err(e) => last = format!("{addr}: cannot connect: {e}"),
            }
            if Instant::now() >= deadline {
                bail!(
                    "{what}: no member answered within {:?} (no leader or cluster unreachable); last error: {last}",
                    self.timeout
                );
            }
            if i.is_multiple_of(self.endpoints.len()) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    fn meta(&self, seq: u64) -> Option<api::WriteMeta> {
        Some(api::WriteMeta {
            client_id: self.client_id,
            seq,
        })
    }
}

fn print_json(v: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(v).expect("json"));
}

pub async fn cluster(g: &GlobalArgs, c: ClusterCommand) -> anyhow::Result<()> {
    let conn = Conn::new(g)?;
    let ClusterCommand::Status(o) = c;
    let r = conn
        .call("cluster status", |mut c| async move {
            c.cluster_status(api::ReadRequest { stale: o.stale }).await
        })
        .await?;
    let members: Vec<_> = r
        .members
        .iter()
        .map(|m| {
            json!({"id": m.id, "peer_addr": m.peer_addr, "client_addr": m.client_addr,
                   "role": m.role, "reachable": m.reachable})
        })
        .collect();
    if o.format == Format::Json {
        print_json(
            &json!({"leader_id": r.leader_id, "term": r.term, "commit_index": r.commit_index,
            "applied_index": r.applied_index, "members": members}),
        );
    } else {
        println!(
            "leader {}  term {}  commit {}  applied {}  (answered by {})",
            r.leader_id, r.term, r.commit_index, r.applied_index, r.id
        );
        println!(
            "{:>4}  {:<10} {:<22} {:<22} reachable",
            "id", "role", "peer", "client"
        );
        for m in &r.members {
            println!(
                "{:>4}  {:<10} {:<22} {:<22} {}",
                m.id, m.role, m.peer_addr, m.client_addr, m.reachable
            );
        }
    }
    Ok(())
}

pub async fn models(g: &GlobalArgs, c: ModelsCommand) -> anyhow::Result<()> {
    let conn = Conn::new(g)?;
    match c {
        ModelsCommand::Deploy {
            name,
            slo_ms,
            rate,
            memory_mb,
        } => {
            let meta = conn.meta(1);
            let r = conn
                .call("models deploy", |mut c| {
                    let req = api::DeployModelRequest {
                        meta,
                        name: name.clone(),
                        slo_ms,
                        rate,
                        memory_mb,
                    };
                    async move { c.deploy_model(req).await }
                })
                .await?;
            println!("deployed {name} (index {})", r.index);
        }
        ModelsCommand::Remove { name } => {
            let meta = conn.meta(1);
            let r = conn
                .call("models remove", |mut c| {
                    let req = api::RemoveModelRequest {
                        meta,
                        name: name.clone(),
                    };
                    async move { c.remove_model(req).await }
                })
                .await?;
            println!("removed {name} (index {})", r.index);
        }
        ModelsCommand::Get { name, opts: o } => {
            let r = conn
                .call("models get", |mut c| {
                    let req = api::GetModelRequest {
                        name: name.clone(),
                        stale: o.stale,
                    };
                    async move { c.get_model(req).await }
                })
                .await?;
            let m = r
                .model
                .ok_or_else(|| anyhow!("models get: the member answered without a model"))?;
            if o.format == Format::Json {
                print_json(&json!({"name": m.name, "slo_ms": m.slo_ms, "rate": m.rate,
                    "memory_mb": m.memory_mb, "observed_rate": m.observed_rate,
                    "deadline_met_pct": m.deadline_met_pct, "energy_j": m.energy_j,
                    "applied_index": r.applied_index}));
            } else {
                println!(
                    "{}  slo {:.1} ms  rate {:.1}/s  memory {} MiB  observed {:.1}/s  met {:.1}%  energy {:.2} J  (applied index {})",
                    m.name,
                    m.slo_ms,
                    m.rate,
                    m.memory_mb,
                    m.observed_rate,
                    m.deadline_met_pct,
                    m.energy_j,
                    r.applied_index
                );
            }
        }
        ModelsCommand::List(o) => {
            let r = conn
                .call("models list", |mut c| async move {
                    c.list_models(api::ReadRequest { stale: o.stale }).await
                })
                .await?;
            if o.format == Format::Json {
                let v: Vec<_> = r
                    .models
                    .iter()
                    .map(|m| {
                        json!({"name": m.name, "slo_ms": m.slo_ms, "rate": m.rate, "memory_mb": m.memory_mb,
                           "observed_rate": m.observed_rate, "deadline_met_pct": m.deadline_met_pct,
                           "energy_j": m.energy_j, "live_figures_unknown": r.live_figures_unknown})
                    })
                    .collect();
                print_json(&json!(v));
            } else {
                println!(
                    "{:<24} {:>8} {:>8} {:>9} {:>9} {:>7} {:>10}",
                    "name", "slo_ms", "rate", "memory_mb", "observed", "met%", "energy_j"
                );
                for m in &r.models {
                    println!(
                        "{:<24} {:>8.1} {:>8.1} {:>9} {:>9.1} {:>7.1} {:>10.2}",
                        m.name,
                        m.slo_ms,
                        m.rate,
                        m.memory_mb,
                        m.observed_rate,
                        m.deadline_met_pct,
                        m.energy_j
                    );
                }
                if r.live_figures_unknown {
                    println!("{LIVE_FIGURES_UNKNOWN}");
                }
            }
        }
    }
    Ok(())
}

pub async fn nodes(g: &GlobalArgs, c: NodesCommand) -> anyhow::Result<()> {
    let conn = Conn::new(g)?;
    let NodesCommand::List(o) = c;
    let r = conn
        .call("nodes list", |mut c| async move {
            c.list_nodes(api::ReadRequest { stale: o.stale }).await
        })
        .await?;
    if o.format == Format::Json {
        let v: Vec<_> = r
            .nodes
            .iter()
            .map(|n| {
                let lr = n.last_report.unwrap_or_default();
                json!({"name": n.name, "status": n.status,
                   "accelerators": n.accelerators.iter().map(|a| json!({"id": a.id, "kind": a.kind,
                        "name": a.name, "memory_mb": a.memory_mb, "mig_capable": a.mig_capable,
                        "sm_count": a.sm_count, "simulated": a.simulated})).collect::<Vec<_>>(),
                   "assignment_epoch": n.assignment_epoch, "models": n.models,
                   "last_report": {"deadlines_met": lr.deadlines_met, "deadlines_missed": lr.deadlines_missed,
                                   "energy_j": lr.energy_j},
                   "live_figures_unknown": r.live_figures_unknown})
            })
            .collect();
        print_json(&json!(v));
    } else {
        println!(
            "{:<16} {:<9} {:>5} {:>6} {:>9} {:>9} {:>10}  models",
            "name", "status", "accel", "epoch", "met", "missed", "energy_j"
        );
        for n in &r.nodes {
            let lr = n.last_report.unwrap_or_default();
            println!(
                "{:<16} {:<9} {:>5} {:>6} {:>9} {:>9} {:>10.2}  {}",
                n.name,
                n.status,
                n.accelerators.len(),
                n.assignment_epoch,
                lr.deadlines_met,
                lr.deadlines_missed,
                lr.energy_j,
                n.models.join(",")
            );
        }
        if r.live_figures_unknown {
            println!("{LIVE_FIGURES_UNKNOWN}");
        }
    }
    Ok(())
}

/// Printed under a stale list answered by a follower: live figures live in the leader's memory.
const LIVE_FIGURES_UNKNOWN: &str = "(live figures unknown: a stale list from a follower; \
     drop --stale to get the leader's figures)";

pub async fn member(g: &GlobalArgs, c: MemberCommand) -> anyhow::Result<()> {
    let conn = Conn::new(g)?;
    let meta = conn.meta(1);
    match c {
        MemberCommand::Add {
            id,
            peer_addr,
            client_addr,
            learner,
        } => {
            let r = conn
                .call("member add", |mut c| {
                    let req = api::AddMemberRequest {
                        meta,
                        id,
                        peer_addr: peer_addr.clone(),
                        client_addr: client_addr.clone(),
                        learner,
                    };
                    async move { c.add_member(req).await }
                })
                .await?;
            println!(
                "added member {id} as {} (index {})",
                if learner { "learner" } else { "voter" },
                r.index
            );
        }
        MemberCommand::Remove { id } => {
            let r = conn
                .call("member remove", |mut c| {
                    let req = api::RemoveMemberRequest { meta, id };
                    async move { c.remove_member(req).await }
                })
                .await?;
            println!("removed member {id} (index {})", r.index);
        }
    }
    Ok(())
}

pub async fn leader(g: &GlobalArgs, c: LeaderCommand) -> anyhow::Result<()> {
    let conn = Conn::new(g)?;
    let LeaderCommand::Transfer { to } = c;
    let r = conn
        .call("leader transfer", |mut c| async move {
            c.transfer_leader(api::TransferLeaderRequest { to }).await
        })
        .await?;
    println!("leader is now {}", r.leader_id);
    Ok(())
}

pub async fn snapshot(g: &GlobalArgs, c: SnapshotCommand) -> anyhow::Result<()> {
    let conn = Conn::new(g)?;
    let SnapshotCommand::Save { file, stale } = c;
    let r = conn
        .call("snapshot save", |mut c| async move {
            c.save_snapshot(api::ReadRequest { stale }).await
        })
        .await?;
    std::fs::write(&file, &r.data).with_context(|| format!("writing {}", file.display()))?;
    println!(
        "saved snapshot at index {} ({} bytes) to {}",
        r.index,
        r.data.len(),
        file.display()
    );
    Ok(())
}

pub async fn placement(g: &GlobalArgs, c: PlacementCommand) -> anyhow::Result<()> {
    let conn = Conn::new(g)?;
    match c {
        PlacementCommand::Set {
            node,
            model,
            accelerator,
        } => {
            let meta = conn.meta(1);
            let r = conn
                .call("placement set", |mut c| {
                    let req = api::SetPlacementRequest {
                        meta,
                        node: node.clone(),
                        model: model.clone(),
                        accelerator: accelerator.clone().unwrap_or_default(),
                    };
                    async move { c.set_placement(req).await }
                })
                .await?;
            println!("pinned {model} to {node} (assignment epoch {})", r.epoch);
        }
        PlacementCommand::Show(o) => {
            let r = conn
                .call("placement show", |mut c| async move {
                    c.show_placement(api::ReadRequest { stale: o.stale }).await
                })
                .await?;
            if o.format == Format::Json {
                let nodes: Vec<_> = r
                    .nodes
                    .iter()
                    .map(|n| {
                        json!({"node": n.node, "epoch": n.epoch, "partitions": n.partitions.iter().map(|p|
                        json!({"accelerator": p.accelerator_id, "share_pct": p.share_pct, "models": p.models})).collect::<Vec<_>>()})
                    })
                    .collect();
                let pins: Vec<_> = r
                    .pins
                    .iter()
                    .map(
                        |p| json!({"node": p.node, "model": p.model, "accelerator": p.accelerator}),
                    )
                    .collect();
                print_json(&json!({"nodes": nodes, "pins": pins}));
            } else {
                for n in &r.nodes {
                    println!("{} (epoch {})", n.node, n.epoch);
                    for p in &n.partitions {
                        println!(
                            "  {} {:>3}%  {}",
                            p.accelerator_id,
                            p.share_pct,
                            p.models.join(",")
                        );
                    }
                }
                if !r.pins.is_empty() {
                    println!("pins:");
                    for p in &r.pins {
                        println!("  {} -> {} [{}]", p.model, p.node, p.accelerator);
                    }
                }
            }
        }
    }
    Ok(())
}

/// Child processes of a local benchmark cluster; killed on drop.
struct LocalCluster {
    children: Vec<Child>,
    dir: PathBuf,
    endpoints: Vec<String>,
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn start_local_cluster() -> anyhow::Result<LocalCluster> {
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .ok_or_else(|| anyhow!("cannot locate the edgeplane binary's folder"))?
        .join("edgeplane-coordinator");
    if !bin.exists() {
        bail!(
            "{} not found; build it first (cargo build --release -p edgeplane-coordinator)",
            bin.display()
        );
    }
    let dir = std::env::temp_dir().join(format!("edgeplane-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut peers = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..3 {
        peers.push(format!("127.0.0.1:{}", free_port()?));
        clients.push(format!("127.0.0.1:{}", free_port()?));
    }
    let ic = peers
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{}={p}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let mut lc = LocalCluster {
        children: Vec::new(),
        dir: dir.clone(),
        endpoints: clients.clone(),
    };
    for i in 0..3 {
        let child = Proc::new(&bin)
            .args(["--id", &(i + 1).to_string()])
            .args(["--client-addr", &clients[i], "--peer-addr", &peers[i]])
            .args(["--initial-cluster", &ic])
            .arg("--data-dir")
            .arg(dir.join(format!("r{}", i + 1)))
            .env("EDGEPLANE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        lc.children.push(child);
    }
    Ok(lc)
}

/// Find the leader's client address (so benchmark writes are not forwarded).
async fn leader_addr(conn: &Conn) -> anyhow::Result<String> {
    let deadline = Instant::now() + conn.timeout;
    loop {
        if let Ok(r) = conn
            .call("cluster status", |mut c| async move {
                c.cluster_status(api::ReadRequest { stale: true }).await
            })
            .await
        {
            if let Some(m) = r
                .members
                .iter()
                .find(|m| m.id == r.leader_id && !m.client_addr.is_empty())
            {
                return Ok(m.client_addr.clone());
            }
        }
        if Instant::now() > deadline {
            bail!("no leader elected within {:?}", conn.timeout);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub async fn bench_raft(g: &GlobalArgs, a: BenchRaftArgs) -> anyhow::Result<()> {
    if a.clients == 0 {
        bail!("invalid --clients: must be > 0");
    }
    if !(a.duration_s.is_finite() && a.duration_s > 0.0) {
        bail!("invalid --duration-s: must be > 0");
    }
    let mut g = g.clone();
    let _local = if a.local {
        let lc = start_local_cluster()?;
        g.endpoints = lc.endpoints.clone();
        g.timeout_s = g.timeout_s.max(20.0);
        Some(lc)
    } else {
        None
    };
    let conn = Conn::new(&g)?;
    let addr = leader_addr(&conn).await?;
    let ep = endpoint(&addr)?;
    let duration = Duration::from_secs_f64(a.duration_s);
    if a.reads {
        // One model so every read returns a (small) non-empty answer.
        let mut c = AdminClient::new(ep.connect().await?);
        c.deploy_model(api::DeployModelRequest {
            meta: Some(api::WriteMeta {
                client_id: rand::random::<u64>() | 1,
                seq: 1,
            }),
            name: "bench-read".into(),
            slo_ms: 50.0,
            rate: 1.0,
            memory_mb: 1,
        })
        .await
        .context("deploying the model the read benchmark reads")?;
    }
    let reads = a.reads;
    let start = Instant::now();
    let end = start + duration;
    let mut tasks = Vec::new();
    for i in 0..a.clients {
        let ep = ep.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            let ch = match ep.connect().await {
                Ok(c) => c,
                Err(_) => return (lat, 1u64),
            };
            let mut c = AdminClient::new(ch);
            let client_id = rand::random::<u64>() | 1;
            let mut seq = 0u64;
            while Instant::now() < end {
                seq += 1;
                let t = Instant::now();
                if reads {
                    match c.list_models(api::ReadRequest { stale: false }).await {
                        Ok(_) => lat.push(t.elapsed()),
                        Err(_) => errors += 1,
                    }
                    continue;
                }
                let r = c
                    .deploy_model(api::DeployModelRequest {
                        meta: Some(api::WriteMeta { client_id, seq }),
                        name: format!("bench-{i}"),
                        slo_ms: 50.0,
                        rate: seq as f64,
                        memory_mb: 1,
                    })
                    .await;
                match r {
                    Ok(_) => lat.push(t.elapsed()),
                    Err(_) => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        all.extend(l);
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort();
    let wps = all.len() as f64 / elapsed;
    let what = if a.reads {
        "linearizable reads"
    } else {
        "writes"
    };
    let (p50, p99, p999) = (pct(&all, 0.50), pct(&all, 0.99), pct(&all, 0.999));
    if a.format == Format::Json {
        print_json(
            &json!({"clients": a.clients, "duration_s": elapsed, "acknowledged": all.len(),
            "mode": if a.reads { "reads" } else { "writes" }, "ops_per_s": wps,
            "errors": errors, "writes_per_s": if a.reads { 0.0 } else { wps },
            "p50_ms": p50.as_secs_f64()*1e3,
            "p99_ms": p99.as_secs_f64()*1e3, "p999_ms": p999.as_secs_f64()*1e3,
            "leader": addr, "local_cluster": a.local}),
        );
    } else {
        println!(
            "bench raft: {} clients, {:.1}s, leader {addr}{}",
            a.clients,
            elapsed,
            if a.local {
                " (local 3-replica cluster)"
            } else {
                ""
            }
        );
        println!(
            "  acknowledged {what}: {}  ({:.0}/s), errors: {errors}",
            all.len(),
            wps
        );
        println!(
            "  latency of acknowledged {what}: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms",
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            p999.as_secs_f64() * 1e3
        );
    }
    Ok(())
}
