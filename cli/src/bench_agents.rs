//! `edgeplane bench agents`: many lightweight agent sessions from one process against a
//! cluster, to measure what the leader pays per agent (register, 1 Hz reports, assignments),
//! whether a leader change loses any of them, and how fast a mass expiry is committed.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use edgeplane_proto::admin::{self as admin_api, admin_client::AdminClient};
use edgeplane_proto::agent::{
    self as api, agent_client::AgentClient, agent_message, coordinator_message,
};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

use crate::GlobalArgs;

pub use crate::output::Format;

#[derive(Debug, clap::Args)]
pub struct BenchAgentsArgs {
    /// Number of agent sessions to hold.
    #[arg(long, default_value_t = 1000)]
    pub count: usize,
    /// How long to hold them, in seconds.
    #[arg(long, default_value_t = 30.0)]
    pub duration_s: f64,
    /// Report interval per agent, in ms (the production agent reports every 1000 ms).
    #[arg(long, default_value_t = 1000)]
    pub report_interval_ms: u64,
    /// The cluster's join token.
    #[arg(long, env = "EDGEPLANE_JOIN_TOKEN")]
    pub join_token: String,
    /// Node names are PREFIX-0 .. PREFIX-(count-1).
    #[arg(long, default_value = "bench-agent")]
    pub prefix: String,
    /// Sessions multiplexed on one HTTP/2 connection.
    #[arg(long, default_value_t = 100)]
    pub per_connection: usize,
    /// PID of the leader's process on this machine: its CPU share is measured over the run.
    #[arg(long)]
    pub leader_pid: Option<u32>,
    /// At the end, close every session at once and measure how long until all are marked lost
    /// (and in how many Raft entries).
    #[arg(long)]
    pub expire: bool,
    /// Output format: `table` for people, `json` for scripts.
    #[arg(long, short = 'o', visible_alias = "output", value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Default)]
struct Counters {
    registered: AtomicU64,
    sessions_open: AtomicU64,
    reports_sent: AtomicU64,
    acks_accepted: AtomicU64,
    acks_rejected: AtomicU64,
    assignments: AtomicU64,
    redirects: AtomicU64,
    session_errors: AtomicU64,
}

fn endpoint(addr: &str) -> anyhow::Result<edgeplane_tls::Dial> {
    Ok(crate::tls::endpoint(addr)?
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true))
}

/// CPU seconds (user + system) a process has used, from /proc.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat (--leader-pid)"))?;
    // fields after the command name (which may contain spaces) start after the last ')'
    let rest = stat
        .rsplit_once(')')
        .map(|x| x.1)
        .context("unexpected /proc stat format")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    Ok(ticks / 100.0) // USER_HZ is 100 on Linux
}

async fn leader_commit(members: &[Channel]) -> Option<(u64, u64)> {
    for ch in members {
        if let Ok(r) = AdminClient::new(ch.clone())
            .cluster_status(admin_api::ReadRequest { stale: false })
            .await
        {
            let r = r.into_inner();
            return Some((r.leader_id, r.commit_index));
        }
    }
    None
}

/// (ready, lost) among this run's nodes, from the first member that answers (any member
/// forwards a linearizable list to the leader).
async fn node_statuses(members: &[Channel], prefix: &str) -> Option<(usize, usize)> {
    let mut answer = None;
    for ch in members {
        if let Ok(r) = AdminClient::new(ch.clone())
            .list_nodes(admin_api::ReadRequest { stale: false })
            .await
        {
            answer = Some(r.into_inner());
            break;
        }
    }
    let r = answer?;
    let ours = r
        .nodes
        .iter()
        .filter(|n| n.name.starts_with(&format!("{prefix}-")));
    let (mut ready, mut lost) = (0, 0);
    for n in ours {
        match n.status.as_str() {
            "ready" => ready += 1,
            "lost" => lost += 1,
            _ => {}
        }
    }
    Some((ready, lost))
}

/// One agent: register, then hold a session (following redirects) until `end`.
async fn agent(
    name: String,
    mut ch: Channel,
    members: Arc<Vec<Channel>>,
    a: Arc<(String, Duration)>,
    c: Arc<Counters>,
    end: Instant,
) {
    let (token, interval) = (&a.0, a.1);
    let mut registered = false;
    let mut epoch = 0;
    let mut seq = 0u64;
    let started = Instant::now();
    while Instant::now() < end {
        let mut client = AgentClient::new(ch.clone());
        if !registered {
            let r = client
                .register(api::RegisterRequest {
                    name: name.clone(),
                    join_token: token.clone(),
                    agent_addr: "127.0.0.1:9".into(),
                    accelerators: vec![api::Accelerator {
                        id: "npu0".into(),
                        kind: "npu-ws".into(),
                        name: "bench".into(),
                        memory_mb: 1024,
                        simulated: true,
                        ..Default::default()
                    }],
                    assignment_epoch: epoch,
                    csr: String::new(),
                    joined_from_ip: String::new(),
                })
                .await;
            match r {
                Ok(r) => {
                    let r = r.into_inner();
                    epoch = epoch.max(r.assignment_epoch);
                    registered = true;
                    c.registered.fetch_add(1, Relaxed);
                    if !r.leader_addr.is_empty() {
                        if let Ok(e) = endpoint(&r.leader_addr) {
                            ch = e.connect_lazy();
                            client = AgentClient::new(ch.clone());
                        }
                    }
                }
                Err(e) => {
                    if e.code() == tonic::Code::PermissionDenied
                        || e.code() == tonic::Code::Unauthenticated
                    {
                        c.session_errors.fetch_add(1, Relaxed);
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    ch = members[rand::random::<usize>() % members.len()].clone();
                    continue;
                }
            }
        }
        let (tx, rx) = tokio::sync::mpsc::channel::<api::AgentMessage>(4);
        let _ = tx
            .send(api::AgentMessage {
                body: Some(agent_message::Body::Hello(api::Hello {
                    name: name.clone(),
                    join_token: token.clone(),
                    assignment_epoch: epoch,
                })),
            })
            .await;
        let mut inbound = match client
            .session(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
        {
            Ok(s) => s.into_inner(),
            Err(_) => {
                c.session_errors.fetch_add(1, Relaxed);
                tokio::time::sleep(Duration::from_millis(200)).await;
                ch = members[rand::random::<usize>() % members.len()].clone();
                continue;
            }
        };
        c.sessions_open.fetch_add(1, Relaxed);
        // spread the reports of all agents over the interval
        let phase =
            Duration::from_millis(rand::random::<u64>() % interval.as_millis().max(1) as u64);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + phase, interval);
        let redirected = loop {
            tokio::select! {
                _ = tick.tick() => {
                    if Instant::now() >= end { break None; }
                    seq += 1;
                    let report = api::Report {
                        seq,
                        assignment_epoch: epoch,
                        uptime_s: started.elapsed().as_secs_f64(),
                        ..Default::default()
                    };
                    if tx.send(api::AgentMessage { body: Some(agent_message::Body::Report(report)) }).await.is_err() {
                        // the stream went away (its member died): reconnect, do not stop
                        c.session_errors.fetch_add(1, Relaxed);
                        break Some(String::new());
                    }
                    c.reports_sent.fetch_add(1, Relaxed);
                }
                m = inbound.next() => match m {
                    Some(Ok(api::CoordinatorMessage { body: Some(b) })) => match b {
                        coordinator_message::Body::Ack(a) => {
                            if a.accepted { c.acks_accepted.fetch_add(1, Relaxed); }
                            else { c.acks_rejected.fetch_add(1, Relaxed); }
                        }
                        coordinator_message::Body::Assignment(a) => {
                            epoch = epoch.max(a.epoch);
                            c.assignments.fetch_add(1, Relaxed);
                        }
                        coordinator_message::Body::Redirect(r) => {
                            c.redirects.fetch_add(1, Relaxed);
                            break Some(r.leader_addr);
                        }
                    },
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => { c.session_errors.fetch_add(1, Relaxed); break Some(String::new()); }
                }
            }
        };
        c.sessions_open.fetch_sub(1, Relaxed);
        match redirected {
            None => return,
            Some(addr) if !addr.is_empty() => {
                if let Ok(e) = endpoint(&addr) {
                    ch = e.connect_lazy();
                }
            }
            Some(_) => {
                // the member went away (a killed leader): like the real agent, try another
                // member, which answers with a redirect to the leader
                tokio::time::sleep(Duration::from_millis(200)).await;
                ch = members[rand::random::<usize>() % members.len()].clone();
            }
        }
    }
}

pub async fn bench_agents(g: &GlobalArgs, a: BenchAgentsArgs) -> anyhow::Result<()> {
    if a.count == 0 {
        bail!("invalid --count: must be > 0");
    }
    if !(a.duration_s.is_finite() && a.duration_s > 0.0) {
        bail!("invalid --duration-s: must be > 0");
    }
    if a.report_interval_ms == 0 {
        bail!("invalid --report-interval-ms: must be > 0");
    }
    if a.per_connection == 0 {
        bail!("invalid --per-connection: must be > 0");
    }
    let first = g
        .endpoints
        .first()
        .context("invalid --endpoints: give at least one coordinator address")?;
    endpoint(first)?
        .connect()
        .await
        .with_context(|| format!("connecting to {first} (is a coordinator listening there?)"))?;
    let c = Arc::new(Counters::default());
    let shared = Arc::new((
        a.join_token.clone(),
        Duration::from_millis(a.report_interval_ms),
    ));
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(a.duration_s);
    let members = Arc::new(
        g.endpoints
            .iter()
            .map(|e| endpoint(e).map(|e| e.connect_lazy()))
            .collect::<anyhow::Result<Vec<_>>>()?,
    );
    let mut tasks = Vec::with_capacity(a.count);
    let mut ch = None;
    for i in 0..a.count {
        if i % a.per_connection == 0 {
            let ep = &g.endpoints[(i / a.per_connection) % g.endpoints.len()];
            ch = Some(endpoint(ep)?.connect_lazy());
        }
        let ch = ch.clone().expect("set above");
        tasks.push(tokio::spawn(agent(
            format!("{}-{i}", a.prefix),
            ch,
            members.clone(),
            shared.clone(),
            c.clone(),
            end,
        )));
    }
    let pb = ProgressBar::new(a.duration_s.ceil() as u64);
    pb.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len}s {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    // CPU is measured once every agent holds its session (registration is a one-off cost)
    let mut cpu_from: Option<(Instant, f64)> = None;
    let (leader0, commit0) = leader_commit(&members).await.unwrap_or((0, 0));
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let open = c.sessions_open.load(Relaxed);
        if cpu_from.is_none() && open as usize == a.count {
            if let Some(pid) = a.leader_pid {
                cpu_from = Some((Instant::now(), cpu_seconds(pid)?));
            }
        }
        pb.set_position(start.elapsed().as_secs());
        pb.set_message(format!(
            "sessions {open}/{}  reports {}  redirects {}",
            a.count,
            c.reports_sent.load(Relaxed),
            c.redirects.load(Relaxed)
        ));
    }
    let cpu_share = match (cpu_from, a.leader_pid) {
        (Some((t, s)), Some(pid)) => Some((cpu_seconds(pid)? - s) / t.elapsed().as_secs_f64()),
        _ => None,
    };
    pb.finish_and_clear();
    let (ready, lost_before) = node_statuses(&members, &a.prefix).await.unwrap_or((0, 0));
    for t in tasks {
        let _ = t.await;
    }
    let mut expiry = None;
    if a.expire {
        // every session is closed now (the tasks ended): time until all are marked lost
        let t0 = Instant::now();
        let (_, commit_before) = leader_commit(&members).await.unwrap_or((0, 0));
        let limit = Duration::from_secs(120);
        loop {
            if let Some((_, lost)) = node_statuses(&members, &a.prefix).await {
                if lost >= a.count {
                    break;
                }
            }
            if t0.elapsed() > limit {
                bail!("not every agent was marked lost within {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (_, commit_after) = leader_commit(&members).await.unwrap_or((0, 0));
        expiry = Some((t0.elapsed(), commit_after.saturating_sub(commit_before)));
    }
    let (leader1, commit1) = leader_commit(&members).await.unwrap_or((0, 0));
    let load = |x: &AtomicU64| x.load(Relaxed);
    let out = json!({
        "agents": a.count, "duration_s": a.duration_s, "report_interval_ms": a.report_interval_ms,
        "registered": load(&c.registered), "reports_sent": load(&c.reports_sent),
        "acks_accepted": load(&c.acks_accepted), "acks_rejected": load(&c.acks_rejected),
        "assignments": load(&c.assignments), "redirects": load(&c.redirects),
        "session_errors": load(&c.session_errors),
        "nodes_ready_at_end": ready, "nodes_lost_at_end": lost_before,
        "leader_changed": leader0 != leader1, "raft_entries_during_run": commit1.saturating_sub(commit0),
        "leader_cpu_share": cpu_share,
        "expiry_s": expiry.map(|e| e.0.as_secs_f64()), "expiry_raft_entries": expiry.map(|e| e.1),
    });
    if a.format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "bench agents: {} sessions for {:.0}s, a report every {} ms each",
        a.count, a.duration_s, a.report_interval_ms
    );
    println!(
        "  reports sent {}, acknowledged {} (rejected {}), assignments {}, redirects {}, session errors {}",
        load(&c.reports_sent),
        load(&c.acks_accepted),
        load(&c.acks_rejected),
        load(&c.assignments),
        load(&c.redirects),
        load(&c.session_errors)
    );
    println!(
        "  nodes at the end: {ready} ready, {lost_before} lost; leader changed: {}",
        leader0 != leader1
    );
    if let Some(s) = cpu_share {
        println!("  leader CPU: {:.1} % of one core", s * 100.0);
    }
    if let Some((t, n)) = expiry {
        println!(
            "  mass expiry: all {} marked lost after {:.2} s, in {n} Raft entries",
            a.count,
            t.as_secs_f64()
        );
    }
    Ok(())
}
