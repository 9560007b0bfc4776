//! Admin commands over gRPC against the coordinator cluster, and `bench raft`.
//!
//! Every call tries the endpoints in turn until one answers or `--timeout-s` passes:
//! "unavailable"-type failures (connection refused, no leader yet, deadline) move on to the
//! next member; answers about the input (invalid argument, not found) end the command at
//! once. Writes carry a random client id and a sequence number, so a write retried on
//! another member is applied at most once. Output goes through [`crate::output`] (`--format
//! table|json` on every command), failures carry their exit code ([`crate::exit`]).

use std::path::PathBuf;
use std::process::{Child, Command as Proc, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use clap::{Args, Subcommand};
use edgeplane_proto::admin::{self as api, admin_client::AdminClient};
use serde_json::json;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::exit::{self, Kind};
pub use crate::output::Format;
use crate::output::{self, print_json, write_result, FormatArg};
use crate::GlobalArgs;

#[derive(Debug, Clone, Args)]
pub struct ReadOpts {
    /// Serve the read from the member asked, without ReadIndex (may be stale).
    #[arg(long)]
    pub stale: bool,
    /// Output format: `table` for people, `json` for scripts.
    #[arg(long, short = 'o', visible_alias = "output", value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Leader, term, indexes and members.
    ///
    /// Example: edgeplane cluster status --endpoints 10.0.0.1:7101,10.0.0.2:7101
    ///
    /// Without a quorum it prints each reachable member's own view and exits 2.
    Status(ReadOpts),
    /// Whether every member serves a linearizable read, each asked on its own (exit 2 when
    /// any is unhealthy).
    ///
    /// Example: edgeplane cluster health --endpoints 10.0.0.1:7101,10.0.0.2:7101
    Health(crate::health::HealthArgs),
}

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Deploy (or update) a model.
    ///
    /// Example: edgeplane models deploy resnet50 --slo-ms 50 --rate 20 --memory-mb 98
    Deploy {
        /// Model name (1-63 characters of [A-Za-z0-9._-]).
        name: String,
        /// Latency SLO in milliseconds (> 0).
        #[arg(long)]
        slo_ms: f64,
        /// Requested rate, requests/s (>= 0).
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
        /// Memory footprint in MiB.
        #[arg(long, default_value_t = 0)]
        memory_mb: u64,
        /// Deploy even when no profile knows the model (see `models catalog`); the planner
        /// places it only once a node measures it.
        #[arg(long)]
        allow_unknown: bool,
        #[command(flatten)]
        out: FormatArg,
    },
    /// Remove a model.
    ///
    /// Example: edgeplane models remove resnet50
    Remove {
        /// Model name.
        name: String,
        #[command(flatten)]
        out: FormatArg,
    },
    /// List models with their live figures (from the leader's agent reports).
    ///
    /// Example: edgeplane models list --format json
    List(ReadOpts),
    /// The models a deployment can name, with where their profiles come from (shipped GPU
    /// curves, XRBench scenarios, what the nodes measured).
    ///
    /// Example: edgeplane models catalog -o json
    Catalog(FormatArg),
    /// Show one model (linearizable unless --stale; exit code 4 when it is not deployed).
    ///
    /// Example: edgeplane models get resnet50
    Get {
        /// Model name.
        name: String,
        #[command(flatten)]
        opts: ReadOpts,
    },
}

#[derive(Debug, Subcommand)]
pub enum NodesCommand {
    /// List nodes (edge agents) with status, accelerators and live figures.
    ///
    /// Example: edgeplane nodes list
    List(ReadOpts),
    /// Show one node (exit code 4 when it is not registered).
    ///
    /// Example: edgeplane nodes get edge-7 -o json
    Get {
        /// Node name.
        name: String,
        #[command(flatten)]
        opts: ReadOpts,
    },
    /// Drain a node: mark it draining (nothing new is placed there), remove its pins and
    /// empty its plan. `--undo` makes it ready again.
    ///
    /// Example: edgeplane nodes drain edge-7; edgeplane nodes drain edge-7 --undo
    Drain {
        /// Node name.
        name: String,
        /// Make the node ready again instead.
        #[arg(long)]
        undo: bool,
        #[command(flatten)]
        out: FormatArg,
    },
    /// Forget a node and its pins (stop its agent first: a running agent registers again).
    ///
    /// Example: edgeplane nodes remove edge-7
    Remove {
        /// Node name.
        name: String,
        #[command(flatten)]
        out: FormatArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// List the members with their roles, addresses and reachability (as `cluster status`).
    ///
    /// Example: edgeplane member list
    List(ReadOpts),
    /// Add a member (voter, or learner with --learner), then start it with
    /// `--join` on its host.
    ///
    /// Example: edgeplane member add 4 --peer-addr 10.0.0.4:7201 --client-addr 10.0.0.4:7101
    Add {
        /// Member id (> 0, unique, never reused).
        id: u64,
        /// Raft peer address of the new member (host:port).
        #[arg(long)]
        peer_addr: String,
        /// Client (Admin/Agent API) address of the new member (host:port).
        #[arg(long)]
        client_addr: String,
        /// Add as a non-voting learner (promote later by adding it again without --learner).
        #[arg(long)]
        learner: bool,
        #[command(flatten)]
        out: FormatArg,
    },
    /// Remove a member (the leader hands leadership over first).
    ///
    /// Example: edgeplane member remove 3
    Remove {
        /// Member id.
        id: u64,
        #[command(flatten)]
        out: FormatArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum LeaderCommand {
    /// Transfer leadership to a voting member.
    ///
    /// Example: edgeplane leader transfer --to 2
    Transfer {
        /// Id of the voter that should lead.
        #[arg(long)]
        to: u64,
        #[command(flatten)]
        out: FormatArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Save a snapshot of the replicated state to a file.
    ///
    /// Example: edgeplane snapshot save backup.snap
    Save {
        /// File to write.
        file: PathBuf,
        /// Save the answering member's own state without ReadIndex.
        #[arg(long)]
        stale: bool,
        #[command(flatten)]
        conn: GlobalArgs,
        #[command(flatten)]
        out: FormatArg,
    },
    /// Restore a saved snapshot into a NEW data dir (offline, like `etcdutl snapshot
    /// restore`): the replica started on it is the first member of a new cluster holding
    /// the snapshot's models, nodes and placements. Then add members with `member add`.
    ///
    /// Example: edgeplane snapshot restore backup.snap --data-dir /var/lib/edgeplane/r1
    /// --id 1 --peer-addr 10.0.0.1:7201 --client-addr 10.0.0.1:7101
    Restore(crate::restore::RestoreArgs),
}

#[derive(Debug, Subcommand)]
pub enum PlacementCommand {
    /// Pin a model to a node (optionally to one accelerator). Without --accelerator the pin
    /// is node-wide on a node without GPUs (its scheduler uses every accelerator), and on the
    /// node's first GPU otherwise.
    ///
    /// Example: edgeplane placement set --node gpu-box-1 --model ResNet50 --accelerator gpu0
    Set {
        /// Node name.
        #[arg(long)]
        node: String,
        /// Model name (must be deployed).
        #[arg(long)]
        model: String,
        /// Accelerator id on the node (default: its first).
        #[arg(long)]
        accelerator: Option<String>,
        #[command(flatten)]
        out: FormatArg,
    },
    /// Show placements: each node's partitions, pins, global load per GPU and model.
    Show(crate::placement::ShowArgs),
    /// What the leader's planner would do now and why (`--dry-run`: commits nothing).
    Plan(crate::placement::PlanArgs),
    /// Remove a pin: the model leaves the node's plan (exit code 4 when there is none).
    ///
    /// Example: edgeplane placement unpin --node gpu-box-1 --model ResNet50
    Unpin {
        /// Node name.
        #[arg(long)]
        node: String,
        /// Model name.
        #[arg(long)]
        model: String,
        #[command(flatten)]
        out: FormatArg,
    },
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
    /// Output format: `table` for people, `json` for scripts.
    #[arg(long, short = 'o', visible_alias = "output", value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// With --local: run the benchmark twice in this run, on a plaintext (--insecure)
    /// cluster and on a mutual-TLS cluster, and report the cost of TLS.
    #[arg(long)]
    pub compare_tls: bool,
}

/// Connection helper over all endpoints.
pub(crate) struct Conn {
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

fn endpoint(addr: &str) -> anyhow::Result<edgeplane_tls::Dial> {
    Ok(crate::tls::endpoint(addr)
        .map_err(|e| {
            // A TLS file that cannot be read is local I/O (6); anything else about the
            // endpoint or the TLS flags is invalid input (3).
            let kind = match exit::kind_of(&e) {
                Kind::Io => Kind::Io,
                _ => Kind::InvalidInput,
            };
            exit::fail(kind, format!("endpoint {addr:?}: {e:#}"))
        })?
        .connect_timeout(Duration::from_millis(500))
        .tcp_nodelay(true))
}

impl Conn {
    /// A connection to one endpoint only, with its own timeout (per-member views).
    pub(crate) fn single(addr: &str, timeout: Duration) -> anyhow::Result<Self> {
        Ok(Conn {
            endpoints: vec![addr.to_string()],
            timeout,
            client_id: rand::random::<u64>() | 1,
        })
    }

    pub(crate) fn new(g: &GlobalArgs) -> anyhow::Result<Self> {
        if g.endpoints.is_empty() {
            return Err(exit::fail(Kind::InvalidInput, "no --endpoints given"));
        }
        if !(g.timeout_s.is_finite() && g.timeout_s > 0.0) {
            return Err(exit::fail(
                Kind::InvalidInput,
                format!("invalid --timeout-s {}: must be > 0", g.timeout_s),
            ));
        }
        Ok(Conn {
            endpoints: g.endpoints.clone(),
            timeout: Duration::from_secs_f64(g.timeout_s),
            client_id: rand::random::<u64>() | 1,
        })
    }

    /// Run `f` against members in turn until one succeeds or the timeout passes.
    pub(crate) async fn call<T, F, Fut>(&self, what: &str, mut f: F) -> anyhow::Result<T>
    where
        F: FnMut(AdminClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let start = Instant::now();
        let deadline = start + self.timeout;
        let mut last: String;
        let mut last_kind: Kind;
        let mut i = 0usize;
        // Since when every member has refused the connection (nothing listens there).
        let mut all_refused_since: Option<Instant> = None;
        let mut refused_this_pass = 0usize;
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
                        Ok(Err(s)) if !retryable(&s) => return Err(exit::status(what, &s)),
                        Ok(Err(s)) => {
                            // Unavailable-type codes stay "unavailable"; an internal error
                            // that persists to the deadline is reported as an error.
                            last_kind = match Kind::of_code(s.code()) {
                                Kind::Unavailable => Kind::Unavailable,
                                _ => Kind::Error,
                            };
                            last = format!("{addr}: {} ({:?})", s.message(), s.code())
                        }
                        Err(_) => {
                            last_kind = Kind::Unavailable;
                            last = format!("{addr}: no answer in time")
                        }
                    }
                }
                Err(e) => {
                    last_kind = Kind::Unavailable;
                    last = format!("{addr}: cannot connect: {}", exit::error_chain(&e));
                    if exit::is_connection_refused(&e) {
                        refused_this_pass += 1;
                    }
                }
            }
            if i.is_multiple_of(self.endpoints.len()) {
                if refused_this_pass == self.endpoints.len() {
                    let since = *all_refused_since.get_or_insert_with(Instant::now);
                    // Every member refused for 2 s: nothing is listening, waiting the whole
                    // timeout would not help (a member that is starting is up well within it).
                    if since.elapsed() >= Duration::from_secs(2) {
                        return Err(exit::fail(
                            Kind::Unavailable,
                            format!(
                                "{what}: connection refused by every endpoint for {:.1?} (is the \
                                 cluster running, and are --endpoints its client addresses?); \
                                 last error: {last}",
                                start.elapsed()
                            ),
                        ));
                    }
                } else {
                    all_refused_since = None;
                }
                refused_this_pass = 0;
            }
            if Instant::now() >= deadline {
                return Err(exit::fail(
                    last_kind,
                    format!(
                        "{what}: no member answered within {:?} (no leader or cluster unreachable); last error: {last}",
                        self.timeout
                    ),
                ));
            }
            if i.is_multiple_of(self.endpoints.len()) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// The members this connection tries, in order.
    pub(crate) fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    pub(crate) fn meta(&self, seq: u64) -> Option<api::WriteMeta> {
        Some(api::WriteMeta {
            client_id: self.client_id,
            seq,
        })
    }
}

pub async fn cluster(g: &GlobalArgs, c: ClusterCommand) -> anyhow::Result<()> {
    let conn = Conn::new(g)?;
    let o = match c {
        ClusterCommand::Status(o) => o,
        ClusterCommand::Health(a) => return crate::health::health(g, a).await,
    };
    let r = match conn
        .call("cluster status", |mut c| async move {
            c.cluster_status(api::ReadRequest { stale: o.stale }).await
        })
        .await
    {
        Ok(r) => r,
        Err(e) if !o.stale && exit::kind_of(&e) == Kind::Unavailable => {
            return crate::health::status_without_quorum(g, o.format, e).await;
        }
        Err(e) => return Err(e),
    };
    print_cluster_status(&r, o.format);
    Ok(())
}

/// Print a `cluster status` answer (also `member list`).
fn print_cluster_status(r: &api::ClusterStatusResponse, format: Format) {
    if format == Format::Json {
        let members: Vec<_> = r
            .members
            .iter()
            .map(|m| {
                json!({"id": m.id, "peer_addr": m.peer_addr, "client_addr": m.client_addr,
                       "role": m.role, "reachable": m.reachable})
            })
            .collect();
        print_json(
            &json!({"leader_id": r.leader_id, "term": r.term, "commit_index": r.commit_index,
            "applied_index": r.applied_index, "answered_by": r.id, "version": r.version,
            "members": members}),
        );
    } else {
        println!(
            "leader {}  term {}  commit {}  applied {}  (answered by {})",
            r.leader_id, r.term, r.commit_index, r.applied_index, r.id
        );
        let mut t = output::table(["id", "role", "peer", "client", "reachable"]);
        for m in &r.members {
            t.add_row(vec![
                m.id.to_string(),
                m.role.clone(),
                m.peer_addr.clone(),
                m.client_addr.clone(),
                m.reachable.to_string(),
            ]);
        }
        println!("{t}");
    }
}

/// One node of `nodes list --format json` (also the dashboard's `/api/nodes`).
pub fn node_json(n: &api::NodeInfo, live_figures_unknown: bool) -> serde_json::Value {
    let lr = n.last_report.unwrap_or_default();
    json!({"name": n.name, "status": n.status, "agent_addr": n.agent_addr,
       "accelerators": n.accelerators.iter().map(|a| json!({"id": a.id, "kind": a.kind,
            "name": a.name, "memory_mb": a.memory_mb, "mig_capable": a.mig_capable,
            "sm_count": a.sm_count, "simulated": a.simulated, "profile": a.profile,
            "profiled_models": a.profiled_models})).collect::<Vec<_>>(),
       "assignment_epoch": n.assignment_epoch, "models": n.models,
       "last_report": {"deadlines_met": lr.deadlines_met, "deadlines_missed": lr.deadlines_missed,
                       "energy_j": lr.energy_j},
       "live_figures_unknown": live_figures_unknown})
}

/// One model of `models list --format json` (without `live_figures_unknown`).
pub fn model_json(m: &api::ModelInfo) -> serde_json::Value {
    json!({"name": m.name, "slo_ms": m.slo_ms, "rate": m.rate, "memory_mb": m.memory_mb,
           "observed_rate": m.observed_rate, "deadline_met_pct": m.deadline_met_pct,
           "energy_j": m.energy_j})
}

fn models_table<'a>(models: impl IntoIterator<Item = &'a api::ModelInfo>) -> comfy_table::Table {
    let mut t = output::table([
        "name",
        "slo_ms",
        "rate",
        "memory_mb",
        "observed/s",
        "met %",
        "energy_j",
    ]);
    for m in models {
        t.add_row(vec![
            m.name.clone(),
            format!("{:.1}", m.slo_ms),
            format!("{:.1}", m.rate),
            m.memory_mb.to_string(),
            format!("{:.1}", m.observed_rate),
            format!("{:.1}", m.deadline_met_pct),
            format!("{:.2}", m.energy_j),
        ]);
    }
    t
}

pub async fn models(g: &GlobalArgs, c: ModelsCommand) -> anyhow::Result<()> {
    let conn = Conn::new(g)?;
    match c {
        ModelsCommand::Deploy {
            name,
            slo_ms,
            rate,
            memory_mb,
            allow_unknown,
            out,
        } => {
            if !(slo_ms.is_finite() && slo_ms > 0.0) {
                return Err(exit::fail(
                    Kind::InvalidInput,
                    format!(
                        "slo_ms: --slo-ms must be a positive number of milliseconds, got {slo_ms}"
                    ),
                ));
            }
            if !allow_unknown {
                let known = crate::catalog::of_cluster(&conn).await?;
                crate::catalog::check_deployable(&known, &name)?;
            }
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
            write_result(
                out.format,
                "models deploy",
                r.index,
                r.epoch,
                &r.message,
                json!({"model": name}),
                &format!("deployed {name} (index {})", r.index),
            );
        }
        ModelsCommand::Remove { name, out } => {
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
            write_result(
                out.format,
                "models remove",
                r.index,
                r.epoch,
                &r.message,
                json!({"model": name}),
                &format!("removed {name} (index {})", r.index),
            );
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
                let mut v = model_json(&m);
                v["applied_index"] = json!(r.applied_index);
                print_json(&v);
            } else {
                println!("{}", models_table([&m]));
                println!("(applied index {})", r.applied_index);
            }
        }
        ModelsCommand::Catalog(out) => crate::catalog::print(&conn, out.format).await?,
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
                        let mut v = model_json(m);
                        v["live_figures_unknown"] = json!(r.live_figures_unknown);
                        v
                    })
                    .collect();
                print_json(&json!(v));
            } else {
                println!("{}", models_table(&r.models));
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
    let (o, only) = match c {
        NodesCommand::List(o) => (o, None),
        NodesCommand::Get { name, opts } => (opts, Some(name)),
        NodesCommand::Drain { name, undo, out } => {
            let meta = conn.meta(1);
            let r = conn
                .call("nodes drain", |mut c| {
                    let req = api::DrainNodeRequest {
                        meta,
                        name: name.clone(),
                        undo,
                    };
                    async move { c.drain_node(req).await }
                })
                .await?;
            let status = if undo { "ready" } else { "draining" };
            write_result(
                out.format,
                "nodes drain",
                r.index,
                r.epoch,
                &r.message,
                json!({"node": name, "status": status}),
                &r.message,
            );
            return Ok(());
        }
        NodesCommand::Remove { name, out } => {
            let meta = conn.meta(1);
            let r = conn
                .call("nodes remove", |mut c| {
                    let req = api::RemoveNodeRequest {
                        meta,
                        name: name.clone(),
                    };
                    async move { c.remove_node(req).await }
                })
                .await?;
            write_result(
                out.format,
                "nodes remove",
                r.index,
                r.epoch,
                &r.message,
                json!({"node": name}),
                &format!("removed node {name} (index {})", r.index),
            );
            return Ok(());
        }
    };
    let mut r = conn
        .call("nodes list", |mut c| async move {
            c.list_nodes(api::ReadRequest { stale: o.stale }).await
        })
        .await?;
    if let Some(name) = &only {
        r.nodes.retain(|n| &n.name == name);
        if r.nodes.is_empty() {
            return Err(exit::fail(
                Kind::NotFound,
                format!("nodes get: node {name:?} is not registered (see `edgeplane nodes list`)"),
            ));
        }
    }
    if o.format == Format::Json {
        let v: Vec<_> = r
            .nodes
            .iter()
            .map(|n| node_json(n, r.live_figures_unknown))
            .collect();
        match (&only, v.first()) {
            (Some(_), Some(one)) => print_json(one),
            _ => print_json(&json!(v)),
        }
    } else {
        let mut t = output::table([
            "name", "status", "address", "accel", "profile", "epoch", "met", "missed", "energy_j",
            "models",
        ]);
        for n in &r.nodes {
            let lr = n.last_report.unwrap_or_default();
            t.add_row(vec![
                n.name.clone(),
                n.status.clone(),
                n.agent_addr.clone(),
                n.accelerators.len().to_string(),
                // what the planner plans each accelerator with: measured rows, shipped, or none
                n.accelerators
                    .iter()
                    .map(|a| {
                        let p = a.profile.split(' ').next().unwrap_or("");
                        format!("{}:{}", a.id, if p.is_empty() { "-" } else { p })
                    })
                    .collect::<Vec<_>>()
                    .join(","),
                n.assignment_epoch.to_string(),
                lr.deadlines_met.to_string(),
                lr.deadlines_missed.to_string(),
                format!("{:.2}", lr.energy_j),
                n.models.join(","),
            ]);
        }
        println!("{t}");
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
        MemberCommand::List(o) => {
            let r = conn
                .call("member list", |mut c| async move {
                    c.cluster_status(api::ReadRequest { stale: o.stale }).await
                })
                .await?;
            print_cluster_status(&r, o.format);
        }
        MemberCommand::Add {
            id,
            peer_addr,
            client_addr,
            learner,
            out,
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
            let role = if learner { "learner" } else { "voter" };
            write_result(
                out.format,
                "member add",
                r.index,
                r.epoch,
                &r.message,
                json!({"id": id, "role": role, "peer_addr": peer_addr, "client_addr": client_addr}),
                &format!("added member {id} as {role} (index {})", r.index),
            );
        }
        MemberCommand::Remove { id, out } => {
            let r = conn
                .call("member remove", |mut c| {
                    let req = api::RemoveMemberRequest { meta, id };
                    async move { c.remove_member(req).await }
                })
                .await?;
            write_result(
                out.format,
                "member remove",
                r.index,
                r.epoch,
                &r.message,
                json!({"id": id}),
                &format!("removed member {id} (index {})", r.index),
            );
        }
    }
    Ok(())
}

pub async fn leader(g: &GlobalArgs, c: LeaderCommand) -> anyhow::Result<()> {
    let conn = Conn::new(g)?;
    let LeaderCommand::Transfer { to, out } = c;
    let r = conn
        .call("leader transfer", |mut c| async move {
            c.transfer_leader(api::TransferLeaderRequest { to }).await
        })
        .await?;
    write_result(
        out.format,
        "leader transfer",
        0,
        0,
        "",
        json!({"leader_id": r.leader_id}),
        &format!("leader is now {}", r.leader_id),
    );
    Ok(())
}

pub async fn snapshot(c: SnapshotCommand) -> anyhow::Result<()> {
    let (file, stale, g, out) = match c {
        SnapshotCommand::Restore(a) => return crate::restore::restore(a),
        SnapshotCommand::Save {
            file,
            stale,
            conn,
            out,
        } => (file, stale, conn, out),
    };
    let conn = Conn::new(&g)?;
    let r = conn
        .call("snapshot save", |mut c| async move {
            c.save_snapshot(api::ReadRequest { stale }).await
        })
        .await?;
    std::fs::write(&file, &r.data).with_context(|| format!("writing {}", file.display()))?;
    write_result(
        out.format,
        "snapshot save",
        r.index,
        0,
        "",
        json!({"file": file.display().to_string(), "bytes": r.data.len(), "term": r.term}),
        &format!(
            "saved snapshot at index {} ({} bytes) to {}",
            r.index,
            r.data.len(),
            file.display()
        ),
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
            out,
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
            write_result(
                out.format,
                "placement set",
                r.index,
                r.epoch,
                &r.message,
                json!({"node": node, "model": model, "accelerator": accelerator}),
                &format!("pinned {model} to {node} (assignment epoch {})", r.epoch),
            );
        }
        PlacementCommand::Unpin { node, model, out } => {
            let meta = conn.meta(1);
            let r = conn
                .call("placement unpin", |mut c| {
                    let req = api::UnpinPlacementRequest {
                        meta,
                        node: node.clone(),
                        model: model.clone(),
                    };
                    async move { c.unpin_placement(req).await }
                })
                .await?;
            write_result(
                out.format,
                "placement unpin",
                r.index,
                r.epoch,
                &r.message,
                json!({"node": node, "model": model}),
                &format!(
                    "unpinned {model} from {node} (assignment epoch {})",
                    r.epoch
                ),
            );
        }
        PlacementCommand::Show(o) => crate::placement::show(&conn, o).await?,
        PlacementCommand::Plan(a) => crate::placement::plan(&conn, a).await?,
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

fn start_local_cluster(tls: bool) -> anyhow::Result<LocalCluster> {
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
    let dir = std::env::temp_dir().join(format!(
        "edgeplane-bench-{}-{}",
        std::process::id(),
        if tls { "tls" } else { "plain" }
    ));
    std::fs::create_dir_all(&dir)?;
    // A throwaway CA and certificates for this run (or plaintext, explicitly).
    let material = if tls {
        let m = edgeplane_tls::generate_cluster_material(&dir.join("tls"), &[1, 2, 3], &[])?;
        let admin = m.admin();
        crate::tls::set_client(edgeplane_tls::ClientTls(Some(
            edgeplane_tls::TlsMaterial::load(edgeplane_tls::TlsPaths {
                ca: m.ca(),
                cert: admin.cert,
                key: admin.key,
            })?,
        )));
        Some(m)
    } else {
        crate::tls::set_client(edgeplane_tls::ClientTls::insecure());
        None
    };
    let mut peers = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..3 {
        peers.push(format!("127.0.0.1:{}", crate::gpu_box::free_port()?));
        clients.push(format!("127.0.0.1:{}", crate::gpu_box::free_port()?));
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
        let mut cmd = Proc::new(&bin);
        match &material {
            Some(m) => {
                let p = m.member(i as u64 + 1);
                cmd.arg("--tls-ca")
                    .arg(m.ca())
                    .arg("--tls-cert")
                    .arg(p.cert)
                    .arg("--tls-key")
                    .arg(p.key);
            }
            None => {
                cmd.arg("--insecure");
            }
        }
        let child = cmd
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

pub async fn bench_raft(g: &GlobalArgs, a: BenchRaftArgs) -> anyhow::Result<()> {
    if !a.compare_tls {
        return bench_raft_run(g, &a, true).await.map(|_| ());
    }
    if !a.local {
        bail!("--compare-tls needs --local (it starts both clusters itself)");
    }
    let plain = bench_raft_run(g, &a, false).await?;
    let tls = bench_raft_run(g, &a, true).await?;
    let cost = if plain > 0.0 {
        (1.0 - tls / plain) * 100.0
    } else {
        0.0
    };
    if a.format == Format::Json {
        print_json(&json!({"clients": a.clients, "insecure_ops_per_s": plain,
            "tls_ops_per_s": tls, "tls_cost_pct": cost}));
    } else {
        println!(
            "bench raft --compare-tls: {} clients: insecure {plain:.0}/s, mutual TLS {tls:.0}/s, TLS costs {cost:.1} %",
            a.clients
        );
    }
    Ok(())
}

/// One benchmark run; returns the acknowledged operations per second. With `--local`,
/// `tls` picks a mutual-TLS or a plaintext (`--insecure`) cluster.
async fn bench_raft_run(g: &GlobalArgs, a: &BenchRaftArgs, tls: bool) -> anyhow::Result<f64> {
    if a.clients == 0 {
        bail!("invalid --clients: must be > 0");
    }
    if !(a.duration_s.is_finite() && a.duration_s > 0.0) {
        bail!("invalid --duration-s: must be > 0");
    }
    let mut g = g.clone();
    let _local = if a.local {
        let lc = start_local_cluster(tls)?;
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
    let mut all = crate::latency::Latencies::default();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        for d in l {
            all.record(d);
        }
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let wps = all.len() as f64 / elapsed;
    let what = if a.reads {
        "linearizable reads"
    } else {
        "writes"
    };
    let (p50, p99, p999) = (all.quantile(0.50), all.quantile(0.99), all.quantile(0.999));
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
    Ok(wps)
}
