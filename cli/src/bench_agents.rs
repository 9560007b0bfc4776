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

use crate::tls::ClientTlsSource;
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

/// What every simulated agent shares.
struct Fleet {
    join_token: String,
    report_interval: Duration,
    /// One lazy channel per member (a session that lost its member tries another).
    members: Vec<Channel>,
    tls: ClientTlsSource,
    counters: Counters,
    end: Instant,
}

impl Fleet {
    fn endpoint(&self, addr: &str) -> anyhow::Result<edgeplane_tls::Dial> {
        Ok(self
            .tls
            .endpoint(addr)?
            .connect_timeout(Duration::from_secs(3))
            .tcp_nodelay(true))
    }

    fn any_member(&self) -> Channel {
        self.members[rand::random::<usize>() % self.members.len()].clone()
    }
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

/// The leader and its commit index, from the first member that answers.
#[derive(Debug, Clone, Copy, Default)]
struct LeaderCommit {
    leader_id: u64,
    commit_index: u64,
}

async fn leader_commit(members: &[Channel]) -> Option<LeaderCommit> {
    for ch in members {
        if let Ok(r) = AdminClient::new(ch.clone())
            .cluster_status(admin_api::ReadRequest { stale: false })
            .await
        {
            let r = r.into_inner();
            return Some(LeaderCommit {
                leader_id: r.leader_id,
                commit_index: r.commit_index,
            });
        }
    }
    None
}

/// This run's nodes by status.
#[derive(Debug, Clone, Copy, Default)]
struct NodeCounts {
    ready: usize,
    lost: usize,
}

/// This run's nodes by status, from the first member that answers (any member forwards a
/// linearizable list to the leader).
async fn node_statuses(members: &[Channel], prefix: &str) -> Option<NodeCounts> {
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
    let mut counts = NodeCounts::default();
    for n in ours {
        match n.status.as_str() {
            "ready" => counts.ready += 1,
            "lost" => counts.lost += 1,
            _ => {}
        }
    }
    Some(counts)
}

/// One simulated agent's session state.
struct AgentState {
    name: String,
    ch: Channel,
    epoch: u64,
    seq: u64,
    started: Instant,
}

/// How a session ended.
enum SessionEnd {
    /// The run is over.
    Done,
    /// The member redirected to the leader at this address.
    Redirect(String),
    /// The stream or its member went away.
    Lost,
}

/// Whether registration went through (`Some(false)`: retry; `None`: refused for good).
async fn register(f: &Fleet, st: &mut AgentState) -> Option<bool> {
    let r = AgentClient::new(st.ch.clone())
        .register(api::RegisterRequest {
            name: st.name.clone(),
            join_token: f.join_token.clone(),
            agent_addr: "127.0.0.1:9".into(),
            accelerators: vec![api::Accelerator {
                id: "npu0".into(),
                kind: "npu-ws".into(),
                name: "bench".into(),
                memory_mb: 1024,
                simulated: true,
                ..Default::default()
            }],
            assignment_epoch: st.epoch,
            csr: String::new(),
            joined_from_ip: String::new(),
        })
        .await;
    let c = &f.counters;
    match r {
        Ok(r) => {
            let r = r.into_inner();
            st.epoch = st.epoch.max(r.assignment_epoch);
            c.registered.fetch_add(1, Relaxed);
            if !r.leader_addr.is_empty() {
                if let Ok(e) = f.endpoint(&r.leader_addr) {
                    st.ch = e.connect_lazy();
                }
            }
            Some(true)
        }
        Err(e)
            if e.code() == tonic::Code::PermissionDenied
                || e.code() == tonic::Code::Unauthenticated =>
        {
            c.session_errors.fetch_add(1, Relaxed);
            None
        }
        Err(_) => {
            tokio::time::sleep(Duration::from_millis(200)).await;
            st.ch = f.any_member();
            Some(false)
        }
    }
}

/// Open a session (Hello) and report every interval until the run ends or the session does.
async fn hold_session(f: &Fleet, st: &mut AgentState) -> SessionEnd {
    let c = &f.counters;
    let (tx, rx) = tokio::sync::mpsc::channel::<api::AgentMessage>(4);
    let _ = tx
        .send(api::AgentMessage {
            body: Some(agent_message::Body::Hello(api::Hello {
                name: st.name.clone(),
                join_token: f.join_token.clone(),
                assignment_epoch: st.epoch,
            })),
        })
        .await;
    let mut inbound = match AgentClient::new(st.ch.clone())
        .session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
    {
        Ok(s) => s.into_inner(),
        Err(_) => {
            c.session_errors.fetch_add(1, Relaxed);
            return SessionEnd::Lost;
        }
    };
    c.sessions_open.fetch_add(1, Relaxed);
    // spread the reports of all agents over the interval
    let interval = f.report_interval;
    let phase = Duration::from_millis(rand::random::<u64>() % interval.as_millis().max(1) as u64);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + phase, interval);
    let end = loop {
        tokio::select! {
            _ = tick.tick() => {
                if Instant::now() >= f.end { break SessionEnd::Done; }
                st.seq += 1;
                let report = api::Report {
                    seq: st.seq,
                    assignment_epoch: st.epoch,
                    uptime_s: st.started.elapsed().as_secs_f64(),
                    ..Default::default()
                };
                if tx.send(api::AgentMessage { body: Some(agent_message::Body::Report(report)) }).await.is_err() {
                    // the stream went away (its member died): reconnect, do not stop
                    c.session_errors.fetch_add(1, Relaxed);
                    break SessionEnd::Lost;
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
                        st.epoch = st.epoch.max(a.epoch);
                        c.assignments.fetch_add(1, Relaxed);
                    }
                    coordinator_message::Body::Redirect(r) => {
                        c.redirects.fetch_add(1, Relaxed);
                        break SessionEnd::Redirect(r.leader_addr);
                    }
                },
                Some(Ok(_)) => {}
                Some(Err(_)) | None => { c.session_errors.fetch_add(1, Relaxed); break SessionEnd::Lost; }
            }
        }
    };
    c.sessions_open.fetch_sub(1, Relaxed);
    end
}

/// One agent: register, then hold a session (following redirects) until the run ends.
async fn agent(f: Arc<Fleet>, name: String, ch: Channel) {
    let mut st = AgentState {
        name,
        ch,
        epoch: 0,
        seq: 0,
        started: Instant::now(),
    };
    let mut registered = false;
    while Instant::now() < f.end {
        if !registered {
            match register(&f, &mut st).await {
                None => return,
                Some(false) => continue,
                Some(true) => registered = true,
            }
        }
        match hold_session(&f, &mut st).await {
            SessionEnd::Done => return,
            SessionEnd::Redirect(addr) if !addr.is_empty() => {
                if let Ok(e) = f.endpoint(&addr) {
                    st.ch = e.connect_lazy();
                }
            }
            SessionEnd::Redirect(_) | SessionEnd::Lost => {
                // the member went away (a killed leader): like the real agent, try another
                // member, which answers with a redirect to the leader
                tokio::time::sleep(Duration::from_millis(200)).await;
                st.ch = f.any_member();
            }
        }
    }
}

fn check_args(a: &BenchAgentsArgs) -> anyhow::Result<()> {
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
    Ok(())
}

/// What the run measured.
struct Measured {
    cpu_share: Option<f64>,
    at_end: NodeCounts,
    before: LeaderCommit,
    after: LeaderCommit,
    /// With `--expire`: time until every session was marked lost, and the Raft entries.
    expiry: Option<Expiry>,
}

#[derive(Debug, Clone, Copy)]
struct Expiry {
    took: Duration,
    raft_entries: u64,
}

pub async fn bench_agents(g: &GlobalArgs, a: BenchAgentsArgs) -> anyhow::Result<()> {
    check_args(&a)?;
    let tls = ClientTlsSource::from_args(&g.tls);
    let first = g
        .endpoints
        .first()
        .context("invalid --endpoints: give at least one coordinator address")?;
    let dial = |addr: &str| -> anyhow::Result<edgeplane_tls::Dial> {
        Ok(tls
            .endpoint(addr)?
            .connect_timeout(Duration::from_secs(3))
            .tcp_nodelay(true))
    };
    dial(first)?
        .connect()
        .await
        .with_context(|| format!("connecting to {first} (is a coordinator listening there?)"))?;
    let start = Instant::now();
    let fleet = Arc::new(Fleet {
        join_token: a.join_token.clone(),
        report_interval: Duration::from_millis(a.report_interval_ms),
        members: g
            .endpoints
            .iter()
            .map(|e| dial(e).map(|e| e.connect_lazy()))
            .collect::<anyhow::Result<Vec<_>>>()?,
        tls: tls.clone(),
        counters: Counters::default(),
        end: start + Duration::from_secs_f64(a.duration_s),
    });
    let mut tasks = Vec::with_capacity(a.count);
    let mut ch = None;
    for i in 0..a.count {
        if i % a.per_connection == 0 {
            let ep = &g.endpoints[(i / a.per_connection) % g.endpoints.len()];
            ch = Some(dial(ep)?.connect_lazy());
        }
        let ch = ch.clone().expect("set above");
        let name = format!("{}-{i}", a.prefix);
        tasks.push(tokio::spawn(agent(fleet.clone(), name, ch)));
    }
    let m = measure(&a, &fleet, start, tasks).await?;
    print(&a, &fleet.counters, &m)
}

/// Watch the run (progress, the leader's CPU), wait for the agents, then measure the expiry.
async fn measure(
    a: &BenchAgentsArgs,
    f: &Fleet,
    start: Instant,
    tasks: Vec<tokio::task::JoinHandle<()>>,
) -> anyhow::Result<Measured> {
    let c = &f.counters;
    let pb = ProgressBar::new(a.duration_s.ceil() as u64);
    pb.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len}s {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    // CPU is measured once every agent holds its session (registration is a one-off cost)
    let mut cpu_from: Option<(Instant, f64)> = None;
    let before = leader_commit(&f.members).await.unwrap_or_default();
    while Instant::now() < f.end {
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
    let at_end = node_statuses(&f.members, &a.prefix)
        .await
        .unwrap_or_default();
    for t in tasks {
        let _ = t.await;
    }
    let expiry = match a.expire {
        true => Some(mass_expiry(a, &f.members).await?),
        false => None,
    };
    let after = leader_commit(&f.members).await.unwrap_or_default();
    Ok(Measured {
        cpu_share,
        at_end,
        before,
        after,
        expiry,
    })
}

/// Every session is closed now (the tasks ended): time until all are marked lost.
async fn mass_expiry(a: &BenchAgentsArgs, members: &[Channel]) -> anyhow::Result<Expiry> {
    let t0 = Instant::now();
    let commit_before = leader_commit(members).await.unwrap_or_default();
    let limit = Duration::from_secs(120);
    loop {
        if let Some(n) = node_statuses(members, &a.prefix).await {
            if n.lost >= a.count {
                break;
            }
        }
        if t0.elapsed() > limit {
            bail!("not every agent was marked lost within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let commit_after = leader_commit(members).await.unwrap_or_default();
    Ok(Expiry {
        took: t0.elapsed(),
        raft_entries: commit_after
            .commit_index
            .saturating_sub(commit_before.commit_index),
    })
}

fn print(a: &BenchAgentsArgs, c: &Counters, m: &Measured) -> anyhow::Result<()> {
    let load = |x: &AtomicU64| x.load(Relaxed);
    let leader_changed = m.before.leader_id != m.after.leader_id;
    let (ready, lost_before) = (m.at_end.ready, m.at_end.lost);
    let out = json!({
        "agents": a.count, "duration_s": a.duration_s, "report_interval_ms": a.report_interval_ms,
        "registered": load(&c.registered), "reports_sent": load(&c.reports_sent),
        "acks_accepted": load(&c.acks_accepted), "acks_rejected": load(&c.acks_rejected),
        "assignments": load(&c.assignments), "redirects": load(&c.redirects),
        "session_errors": load(&c.session_errors),
        "nodes_ready_at_end": ready, "nodes_lost_at_end": lost_before,
        "leader_changed": leader_changed,
        "raft_entries_during_run": m.after.commit_index.saturating_sub(m.before.commit_index),
        "leader_cpu_share": m.cpu_share,
        "expiry_s": m.expiry.map(|e| e.took.as_secs_f64()),
        "expiry_raft_entries": m.expiry.map(|e| e.raft_entries),
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
        "  nodes at the end: {ready} ready, {lost_before} lost; leader changed: {leader_changed}"
    );
    if let Some(s) = m.cpu_share {
        println!("  leader CPU: {:.1} % of one core", s * 100.0);
    }
    if let Some(e) = m.expiry {
        println!(
            "  mass expiry: all {} marked lost after {:.2} s, in {} Raft entries",
            a.count,
            e.took.as_secs_f64(),
            e.raft_entries
        );
    }
    Ok(())
}
