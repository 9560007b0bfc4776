//! `edgeplane bench partition --live`: the partitioning experiment on a real cluster. Three
//! coordinator replicas and one or more agents with simulated GPUs run as real processes on
//! loopback; the load drives ResNet18, ResNet50 and VGG16 through the agents' Infer API, time
//! compressed by `--time-scale` (the 500 s experiment in 50 s at 10). It shows the chain
//! rates reported -> plan -> assignment -> partitions -> SLOs met, kills the leader (or an
//! agent) half way, and prints per-model SLO attainment beside the virtual-time reference
//! (`bench partition`'s adaptive mode on the same scenario).

use crate::gpu_box::{self, Links, SimGpuAgent};
use crate::latency::Latencies;
use crate::partition::{PartitionArgs, Variant};
use anyhow::{anyhow, bail, Context};
use edgeplane_gpu::{scenarios, sim, GpuData};
use edgeplane_planner::sim_policy::Adaptive;
use edgeplane_proto::admin::{self as api, admin_client::AdminClient};
use edgeplane_proto::agent::{inference_client::InferenceClient, InferRequest, Outcome};
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kill {
    None,
    Leader,
    Agent,
}

#[derive(Debug, Clone, clap::Args)]
pub struct LiveArgs {
    /// Run on a real cluster (3 coordinators + agents as processes) instead of in virtual time.
    #[arg(long)]
    pub live: bool,
    /// Virtual seconds per wall second (10: the 500 s experiment in 50 s).
    #[arg(long, default_value_t = 10.0)]
    pub time_scale: f64,
    /// Agents, each with one simulated `--gpu`.
    #[arg(long, default_value_t = 1)]
    pub agents: usize,
    /// What to kill half way: the leader coordinator, the agent serving the most models, or nothing.
    #[arg(long, value_enum, default_value_t = Kill::Leader)]
    pub kill: Kill,
    /// Agent lease (wall ms): a killed agent is lost after this long.
    #[arg(long, default_value_t = 5000)]
    pub lease_ms: u64,
    /// Worker start time (wall ms); default: the scenario's 3 s, time-scaled.
    #[arg(long)]
    pub worker_start_ms: Option<u64>,
    /// Keep the processes' data and logs (printed at the end).
    #[arg(long)]
    pub keep: bool,
}

/// One child process: its name or id, address, the process (`None` once killed) and the
/// arguments it was started with (to restart it).
struct ProcEntry<K> {
    key: K,
    addr: String,
    child: Option<Child>,
    args: Vec<String>,
}

struct Procs {
    /// Coordinators by raft id, `addr` their client address.
    coords: Vec<ProcEntry<u64>>,
    /// Agents by node name, `addr` their Infer address.
    agents: Vec<ProcEntry<String>>,
    dir: PathBuf,
    keep: bool,
}

impl Procs {
    /// The client addresses of the coordinators still running.
    fn live_clients(&self) -> Vec<String> {
        self.coords
            .iter()
            .filter(|c| c.child.is_some())
            .map(|c| c.addr.clone())
            .collect()
    }
}

fn kill_child(child: &mut Option<Child>) {
    if let Some(mut ch) = child.take() {
        let _ = ch.kill();
        let _ = ch.wait();
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.coords {
            kill_child(&mut c.child);
        }
        for a in &mut self.agents {
            kill_child(&mut a.child);
        }
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let p = exe
        .parent()
        .ok_or_else(|| anyhow!("cannot locate the edgeplane binary's folder"))?
        .join(name);
    if !p.exists() {
        bail!(
            "{} not found next to edgeplane; build it (cargo build -p edgeplane-coordinator -p edgeplane-agent)",
            p.display()
        );
    }
    Ok(p)
}

fn spawn(
    bin: &Path,
    args: &[String],
    env: &[(String, String)],
    log: &Path,
) -> anyhow::Result<Child> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let mut c = Command::new(bin);
    c.args(args)
        .env("EDGEPLANE_LOG", "info,raft=warn")
        .stdout(Stdio::null())
        .stderr(f);
    for (k, v) in env {
        c.env(k, v);
    }
    c.spawn()
        .with_context(|| format!("starting {}", bin.display()))
}

/// A placement benchmark on loopback: plaintext (`--insecure`), like `chaos --local`;
/// `bench raft --local --compare-tls` measures what TLS costs.
fn links() -> Links {
    Links::insecure()
}

/// Admin calls answer within 3 s.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(3);

async fn admin(addr: &str) -> Option<AdminClient<Channel>> {
    links().admin(addr, ADMIN_TIMEOUT).await
}

/// (leader id, leader client address), asking every live member.
async fn leader(addrs: &[String]) -> Option<(u64, String)> {
    links().leader(addrs, ADMIN_TIMEOUT).await
}

async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    gpu_box::wait_for(timeout, Duration::from_millis(50), what, f).await
}

/// model -> agent addresses serving it, from the committed placement (the leader's view).
type RouteMap = BTreeMap<String, Vec<String>>;
type Routes = Arc<RwLock<RouteMap>>;

/// One request of the load and what became of it.
#[derive(Debug, Clone)]
struct Rec {
    model: String,
    /// Wall seconds since the experiment's t = 0.
    t: f64,
    outcome: u8, // 0 met, 1 missed, 2 dropped, 3 refused
    latency_ms: f64,
    agent: String,
}

async fn placement(addrs: &[String]) -> Option<api::ShowPlacementResponse> {
    let (_, l) = leader(addrs).await?;
    let mut c = admin(&l).await?;
    c.show_placement(api::ReadRequest { stale: false })
        .await
        .ok()
        .map(|r| r.into_inner())
}

async fn routes_of(addrs: &[String]) -> Option<RouteMap> {
    let (_, l) = leader(addrs).await?;
    let mut c = admin(&l).await?;
    let p = c
        .show_placement(api::ReadRequest { stale: false })
        .await
        .ok()?
        .into_inner();
    let nodes = c
        .list_nodes(api::ReadRequest { stale: false })
        .await
        .ok()?
        .into_inner();
    let addr: BTreeMap<&str, &str> = nodes
        .nodes
        .iter()
        .filter(|n| n.status == "ready")
        .map(|n| (n.name.as_str(), n.agent_addr.as_str()))
        .collect();
    let mut out: RouteMap = BTreeMap::new();
    for n in &p.nodes {
        let Some(a) = addr.get(n.node.as_str()) else {
            continue;
        };
        for part in &n.partitions {
            for m in &part.models {
                let v = out.entry(m.clone()).or_default();
                if !v.contains(&a.to_string()) {
                    v.push(a.to_string());
                }
            }
        }
    }
    Some(out)
}

/// The experiment: the scenario, its time scale and the virtual-time reference.
struct Setup {
    sc: sim::Scenario,
    /// Virtual seconds of the scenario.
    dur_v: f64,
    /// Virtual seconds per wall second.
    ts: f64,
    worker_ms: u64,
    /// The same scenario under the adaptive planner in virtual time.
    reference: sim::SimResult,
}

impl Setup {
    /// Wall seconds of `v` virtual seconds.
    fn wall(&self, v: f64) -> f64 {
        v / self.ts
    }
}

fn check_args(a: &PartitionArgs) -> anyhow::Result<()> {
    let l = &a.live;
    if a.variant != Variant::Seed {
        bail!("--live runs the seed variant only (--variant seed)");
    }
    if !(l.time_scale.is_finite() && l.time_scale >= 1.0) {
        bail!("--time-scale must be a number >= 1 (virtual seconds per wall second)");
    }
    if l.agents == 0 || l.agents > 8 {
        bail!("--agents must be in 1..=8");
    }
    if l.kill == Kill::Agent && l.agents < 2 {
        bail!(
            "--kill agent needs --agents 2 or more (the killed node's models move to the others)"
        );
    }
    Ok(())
}

fn setup(a: &PartitionArgs) -> anyhow::Result<Setup> {
    let data = GpuData::shipped()?;
    let dur_v = a.duration_s.unwrap_or(500.0);
    let mut sc = scenarios::seed(&data.profiles, &a.gpu, a.seed, dur_v).context("--gpu")?;
    for m in &mut sc.models {
        m.requested_rps = a.rate;
        for s in &mut m.schedule {
            s.rps = a.rate;
        }
    }
    let ts = a.live.time_scale;
    let worker_ms = a
        .live
        .worker_start_ms
        .unwrap_or((sc.worker_start_s * 1000.0 / ts).round() as u64);
    let mut ad = Adaptive::default();
    let reference = sim::run(&data, &sc, &mut ad, &mut |_| {})?;
    Ok(Setup {
        sc,
        dur_v,
        ts,
        worker_ms,
        reference,
    })
}

pub async fn run(a: PartitionArgs) -> anyhow::Result<()> {
    check_args(&a)?;
    let l = a.live.clone();
    let st = setup(&a)?;
    let mut cl = start_cluster(&a, &st).await?;
    let clients = cl.clients.clone();
    // routes, kept fresh from the committed placement
    let routes: Routes = Arc::new(RwLock::new(BTreeMap::new()));
    deploy_first_models(&st, &clients, &routes).await?;
    let t0 = Instant::now();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let samples = watch_routes(&clients, &routes, &stop);
    let recs: Arc<Mutex<Vec<Rec>>> = Default::default();
    let tasks = start_load(&a, &st, &clients, &routes, &recs, t0);
    // the kill half way
    let half = st.wall(st.dur_v) / 2.0;
    tokio::time::sleep_until((t0 + Duration::from_secs_f64(half)).into()).await;
    let mut failover = json!(null);
    let mut agent_kill = json!(null);
    match l.kill {
        Kill::None => {}
        Kill::Leader => failover = kill_leader(&mut cl.procs, &clients, t0).await?,
        Kill::Agent => agent_kill = kill_agent(&mut cl, &st, &l, &recs, t0).await?,
    }
    for t in tasks {
        let _ = t.await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let recs = recs.lock().expect("recs").clone();
    let samples = std::mem::take(&mut *samples.lock().expect("samples"));
    let results = Results {
        recs,
        samples,
        failover,
        agent_kill,
    };
    report(&a, &st, &cl, results).await
}

/// The running processes and where they listen.
struct Cluster {
    procs: Procs,
    clients: Vec<String>,
    agent_bin: PathBuf,
    first_leader: u64,
}

/// The coordinators' timing, scaled to the experiment (leases, planning, rate windows).
fn coordinator_env(l: &LiveArgs, ts: f64) -> Vec<(String, String)> {
    let rate_window_ms = ((50_000.0 / ts) as u64).clamp(1000, 5000);
    let peak_s = ((300.0 / ts) as u64).clamp(3, 30);
    [
        ("AGENT_LEASE_MS", l.lease_ms.to_string()),
        ("AGENT_RENEW_MS", (l.lease_ms / 6).max(100).to_string()),
        ("PLAN_INTERVAL_MS", "250".to_string()),
        ("RATE_WINDOW_MS", rate_window_ms.to_string()),
        ("PLAN_PEAK_S", peak_s.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (format!("EDGEPLANE_COORDINATOR_{k}"), v))
    .collect()
}

/// 3 coordinators, then `--agents` agents with one simulated GPU each; waits for a leader and
/// for every agent to register.
async fn start_cluster(a: &PartitionArgs, st: &Setup) -> anyhow::Result<Cluster> {
    let l = &a.live;
    let coord_bin = sibling("edgeplane-coordinator")?;
    let agent_bin = sibling("edgeplane-agent")?;
    let dir = std::env::temp_dir().join(format!("edgeplane-live-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let token = "live-bench-token".to_string();
    let mut procs = Procs {
        coords: Vec::new(),
        agents: Vec::new(),
        dir: dir.clone(),
        keep: l.keep,
    };
    let peers = gpu_box::loopback_addrs(3)?;
    let clients = gpu_box::loopback_addrs(3)?;
    let ic = gpu_box::initial_cluster(&peers);
    let coord_env = coordinator_env(l, st.ts);
    for i in 0..3 {
        let id = i as u64 + 1;
        let mut args: Vec<String> = vec![
            "--id".into(),
            id.to_string(),
            "--client-addr".into(),
            clients[i].clone(),
            "--peer-addr".into(),
            peers[i].clone(),
            "--initial-cluster".into(),
            ic.clone(),
            "--data-dir".into(),
            dir.join(format!("r{id}")).display().to_string(),
            "--join-token".into(),
            token.clone(),
            "--tick-ms".into(),
            "50".into(),
            "--election-ticks".into(),
            "10".into(),
        ];
        args.extend(links().server_flags(&format!("member-{id}")));
        let child = spawn(
            &coord_bin,
            &args,
            &coord_env,
            &dir.join(format!("r{id}.log")),
        )?;
        procs.coords.push(ProcEntry {
            key: id,
            addr: clients[i].clone(),
            child: Some(child),
            args,
        });
    }
    let (first_leader, _) =
        wait_for(Duration::from_secs(20), "a leader", || leader(&clients)).await?;
    for i in 1..=l.agents {
        let name = format!("edge-{i}");
        let listen = format!("127.0.0.1:{}", gpu_box::free_port()?);
        let args = SimGpuAgent {
            name: &name,
            listen: &listen,
            data_dir: dir.join(format!("agent-{name}")),
            gpu: &a.gpu,
            coordinators: &clients,
            join_token: &token,
            report_interval_ms: 200,
            max_backoff_ms: 300,
            worker_start_ms: Some(st.worker_ms),
        }
        .args(&links());
        let log = dir.join(format!("agent-{name}.log"));
        let child = spawn(&agent_bin, &args, &[], &log)?;
        procs.agents.push(ProcEntry {
            key: name,
            addr: listen,
            child: Some(child),
            args,
        });
    }
    wait_registered(&clients, l.agents).await?;
    eprintln!(
        "live: 3 coordinators, {} agent(s) with sim-gpu:{}, time scale {}, {:.1} s wall; worker start {} ms, lease {} ms",
        l.agents,
        a.gpu,
        st.ts,
        st.wall(st.dur_v),
        st.worker_ms,
        l.lease_ms
    );
    Ok(Cluster {
        procs,
        clients,
        agent_bin,
        first_leader,
    })
}

async fn wait_registered(clients: &[String], n_agents: usize) -> anyhow::Result<()> {
    wait_for(
        Duration::from_secs(30),
        "every agent registered",
        || async {
            let (_, ld) = leader(clients).await?;
            let mut c = admin(&ld).await?;
            let n = c.list_nodes(api::ReadRequest { stale: false }).await.ok()?;
            (n.into_inner()
                .nodes
                .iter()
                .filter(|n| n.status == "ready")
                .count()
                == n_agents)
                .then_some(())
        },
    )
    .await
}

/// Deploy `m` through the leader, retried for up to 10 s.
async fn deploy(clients: &[String], m: &sim::SimModel) -> anyhow::Result<()> {
    let deploy = api::DeployModelRequest {
        meta: None,
        name: m.name.clone(),
        slo_ms: m.slo_ms,
        rate: m.requested_rps,
        memory_mb: 0,
    };
    wait_for(Duration::from_secs(10), "deploy", || async {
        let (_, ld) = leader(clients).await?;
        let mut c = admin(&ld).await?;
        c.deploy_model(deploy.clone()).await.ok().map(|_| ())
    })
    .await
}

/// Models deployed at t = 0 are deployed (and served) before the clock starts, as in the
/// virtual run, where they are deployed before their traffic.
async fn deploy_first_models(
    st: &Setup,
    clients: &[String],
    routes: &Routes,
) -> anyhow::Result<()> {
    for m in st.sc.models.iter().filter(|m| m.deploy_s <= 0.0) {
        deploy(clients, m).await?;
        let name = m.name.clone();
        let slo = m.slo_ms;
        wait_for(
            Duration::from_secs(20),
            "the first model served",
            || async {
                let r = routes_of(clients).await?;
                let agent = r.get(&name)?.first()?.clone();
                let out = links()
                    .infer(&agent, Duration::from_secs(5))
                    .await?
                    .infer(InferRequest {
                        model: name.clone(),
                        deadline_ms: 0.0,
                        slo_ms: slo,
                        payload: Vec::new(),
                        input: None,
                    })
                    .await
                    .ok()?
                    .into_inner();
                (out.outcome == Outcome::Completed as i32).then_some(())
            },
        )
        .await?;
        *routes.write().expect("routes") = routes_of(clients).await.unwrap_or_default();
    }
    Ok(())
}

/// Refresh `routes` from the committed placement every 100 ms until `stop`; every sample is
/// kept (for the partition-continuity check).
fn watch_routes(
    clients: &[String],
    routes: &Routes,
    stop: &Arc<std::sync::atomic::AtomicBool>,
) -> Arc<Mutex<Vec<RouteMap>>> {
    let samples: Arc<Mutex<Vec<RouteMap>>> = Default::default();
    let (routes, stop, clients, out) = (
        routes.clone(),
        stop.clone(),
        clients.to_vec(),
        samples.clone(),
    );
    tokio::spawn(async move {
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            if let Some(r) = routes_of(&clients).await {
                out.lock().expect("samples").push(r.clone());
                *routes.write().expect("routes") = r;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    samples
}

/// One model's load: deploy it at its (scaled) deploy time, then Poisson arrivals from its
/// start, each sent to one of the agents the routes name (round robin).
struct ModelLoad {
    m: sim::SimModel,
    routes: Routes,
    recs: Arc<Mutex<Vec<Rec>>>,
    clients: Vec<String>,
    seed: u64,
    ts: f64,
    /// Wall seconds of the whole run.
    end: f64,
    t0: Instant,
}

fn start_load(
    a: &PartitionArgs,
    st: &Setup,
    clients: &[String],
    routes: &Routes,
    recs: &Arc<Mutex<Vec<Rec>>>,
    t0: Instant,
) -> Vec<tokio::task::JoinHandle<()>> {
    st.sc
        .models
        .iter()
        .enumerate()
        .map(|(mi, m)| {
            let load = ModelLoad {
                m: m.clone(),
                routes: routes.clone(),
                recs: recs.clone(),
                clients: clients.to_vec(),
                seed: a.seed.wrapping_mul(1000).wrapping_add(mi as u64),
                ts: st.ts,
                end: st.wall(st.dur_v),
                t0,
            };
            tokio::spawn(load.run())
        })
        .collect()
}

impl ModelLoad {
    async fn run(self) {
        let (m, t0, ts) = (&self.m, self.t0, self.ts);
        let wall = |v: f64| v / ts;
        let deploy_at = t0 + Duration::from_secs_f64(wall(m.deploy_s));
        tokio::time::sleep_until(deploy_at.into()).await;
        if m.deploy_s > 0.0 {
            let _ = deploy(&self.clients, m).await;
        }
        let seg = m.schedule[0];
        let mut rng = rand::rngs::StdRng::seed_from_u64(self.seed);
        let mut t = wall(seg.from_s);
        let mut chans: BTreeMap<String, InferenceClient<Channel>> = BTreeMap::new();
        let mut rr = 0usize;
        let mut inflight = Vec::new();
        loop {
            let u: f64 = rng.gen_range(f64::EPSILON..1.0);
            t += -u.ln() / seg.rps;
            if t >= self.end.min(wall(seg.to_s)) {
                break;
            }
            tokio::time::sleep_until((t0 + Duration::from_secs_f64(t)).into()).await;
            let agent = {
                let r = self.routes.read().expect("routes");
                r.get(&m.name).and_then(|v| {
                    rr += 1;
                    (!v.is_empty()).then(|| v[rr % v.len()].clone())
                })
            };
            let Some(agent) = agent else {
                self.recs.lock().expect("recs").push(Rec {
                    model: m.name.clone(),
                    t,
                    outcome: 3,
                    latency_ms: 0.0,
                    agent: String::new(),
                });
                continue;
            };
            let client = chans
                .entry(agent.clone())
                .or_insert_with(|| {
                    let ep = links()
                        .infer_endpoint(&agent, Duration::from_secs(5))
                        .expect("address");
                    InferenceClient::new(ep.connect_lazy())
                })
                .clone();
            let (recs, name, slo) = (self.recs.clone(), m.name.clone(), m.slo_ms);
            inflight.push(tokio::spawn(async move {
                let rec = send_one(client, name, slo, t, agent).await;
                recs.lock().expect("recs").push(rec);
            }));
            inflight.retain(|h: &tokio::task::JoinHandle<()>| !h.is_finished());
        }
        for h in inflight {
            let _ = h.await;
        }
    }
}

/// One Infer request, recorded as met (0), missed (1), dropped (2) or refused (3).
async fn send_one(
    mut c: InferenceClient<Channel>,
    name: String,
    slo: f64,
    t: f64,
    agent: String,
) -> Rec {
    let sent = Instant::now();
    let r = c
        .infer(InferRequest {
            model: name.clone(),
            deadline_ms: 0.0,
            slo_ms: slo,
            payload: Vec::new(),
            input: None,
        })
        .await;
    let lat = sent.elapsed().as_secs_f64() * 1000.0;
    let outcome = match r {
        Ok(r) => {
            let r = r.into_inner();
            if r.outcome == Outcome::Completed as i32 {
                if r.deadline_met && lat <= slo {
                    0
                } else {
                    1
                }
            } else {
                2
            }
        }
        Err(_) => 3,
    };
    Rec {
        model: name,
        t,
        outcome,
        latency_ms: lat,
        agent,
    }
}

/// SIGKILL the leader; measure the election and what the new leader's planner did.
async fn kill_leader(
    procs: &mut Procs,
    clients: &[String],
    t0: Instant,
) -> anyhow::Result<serde_json::Value> {
    let before = placement(clients).await;
    let (lid, _) = leader(clients)
        .await
        .ok_or_else(|| anyhow!("no leader at the kill"))?;
    let events_before = before.as_ref().map_or(0, |p| p.events.len());
    let epochs = |p: &api::ShowPlacementResponse| -> BTreeMap<String, u64> {
        p.nodes.iter().map(|n| (n.node.clone(), n.epoch)).collect()
    };
    let kill_t = t0.elapsed().as_secs_f64();
    if let Some(c) = procs.coords.iter_mut().find(|c| c.key == lid) {
        kill_child(&mut c.child);
    }
    let live = procs.live_clients();
    let (nl, _) = wait_for(Duration::from_secs(20), "a new leader", || async {
        leader(&live).await.filter(|(id, _)| *id != lid)
    })
    .await?;
    let elected = t0.elapsed().as_secs_f64() - kill_t;
    // give the new leader a few planning rounds with fresh reports
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = placement(&live).await;
    let new_events: Vec<String> = after
        .as_ref()
        .map(|p| {
            p.events
                .iter()
                .skip(events_before)
                .map(|e| format!("{}: {}", e.node, e.reason))
                .collect()
        })
        .unwrap_or_default();
    Ok(json!({
        "rates_at_kill": before.as_ref().map(|p| p.models.iter().map(|m| json!({
            "model": m.model, "requested_rps": m.requested_rps,
            "observed_rps": m.observed_rps, "planned_rps": m.planned_rps,
        })).collect::<Vec<_>>()),
        "killed_leader": lid,
        "new_leader": nl,
        "killed_at_s": kill_t,
        "election_s": elected,
        "epochs_before": before.as_ref().map(epochs),
        "epochs_after": after.as_ref().map(epochs),
        "plan_changes_after_failover": new_events,
        "recomputed_from_scratch": new_events.iter().any(|e| e.contains("first plan")),
    }))
}

/// The agent to kill: the one serving the most models (then the last by name).
struct Victim {
    node: String,
    addr: String,
    idx: usize,
    models: BTreeSet<String>,
    epoch_before: u64,
}

async fn pick_victim(procs: &Procs, clients: &[String]) -> anyhow::Result<Victim> {
    let p = placement(clients)
        .await
        .ok_or_else(|| anyhow!("no placement"))?;
    let node = p
        .nodes
        .iter()
        .max_by_key(|n| {
            (
                n.partitions.iter().map(|x| x.models.len()).sum::<usize>(),
                n.node.clone(),
            )
        })
        .map(|n| n.node.clone())
        .ok_or_else(|| anyhow!("no node"))?;
    let models: BTreeSet<String> = p
        .nodes
        .iter()
        .filter(|n| n.node == node)
        .flat_map(|n| n.partitions.iter().flat_map(|x| x.models.clone()))
        .collect();
    let epoch_before = p
        .nodes
        .iter()
        .find(|n| n.node == node)
        .map_or(0, |n| n.epoch);
    let idx = procs
        .agents
        .iter()
        .position(|x| x.key == node)
        .expect("victim");
    Ok(Victim {
        addr: procs.agents[idx].addr.clone(),
        node,
        idx,
        models,
        epoch_before,
    })
}

/// SIGKILL the busiest agent; measure until its models are served elsewhere, then restart it
/// and wait until it rejoins.
async fn kill_agent(
    cl: &mut Cluster,
    st: &Setup,
    l: &LiveArgs,
    recs: &Arc<Mutex<Vec<Rec>>>,
    t0: Instant,
) -> anyhow::Result<serde_json::Value> {
    let v = pick_victim(&cl.procs, &cl.clients).await?;
    let kill_t = t0.elapsed().as_secs_f64();
    kill_child(&mut cl.procs.agents[v.idx].child);
    let replaced = wait_replaced(&v, recs, kill_t).await?;
    // restart the killed agent: it must rejoin with a fresh assignment
    tokio::time::sleep(Duration::from_secs_f64(st.wall(st.dur_v) / 8.0)).await;
    let args = cl.procs.agents[v.idx].args.clone();
    let log = cl.procs.dir.join(format!("agent-{}.log", v.node));
    cl.procs.agents[v.idx].child = Some(spawn(&cl.agent_bin, &args, &[], &log)?);
    let clients = &cl.clients;
    let rejoined = wait_for(
        Duration::from_secs(20),
        "the killed agent rejoins",
        || async {
            let p = placement(clients).await?;
            let n = p.nodes.iter().find(|n| n.node == v.node)?;
            (n.status == "ready").then_some((n.epoch, n.partitions.len()))
        },
    )
    .await?;
    Ok(json!({
        "killed": v.node,
        "models_moved": v.models,
        "killed_at_s": kill_t,
        "lease_ms": l.lease_ms,
        "replacement_s": replaced,
        "within_lease_plus_2s": replaced <= l.lease_ms as f64 / 1000.0 + 2.0,
        "epoch_before_kill": v.epoch_before,
        "epoch_after_rejoin": rejoined.0,
        "partitions_after_rejoin": rejoined.1,
    }))
}

/// Seconds after the kill until every moved model had a completion on another agent
/// (whether it met its SLO is in the per-model figures).
async fn wait_replaced(
    v: &Victim,
    recs: &Arc<Mutex<Vec<Rec>>>,
    kill_t: f64,
) -> anyhow::Result<f64> {
    wait_for(
        Duration::from_secs(30),
        "the lost node's models served elsewhere",
        || async {
            let r = recs.lock().expect("recs");
            let mut last: f64 = 0.0;
            for m in &v.models {
                let first = r
                    .iter()
                    .filter(|x| {
                        &x.model == m && x.t > kill_t && x.outcome <= 1 && x.agent != v.addr
                    })
                    .map(|x| x.t)
                    .fold(f64::INFINITY, f64::min);
                if !first.is_finite() {
                    return None;
                }
                last = last.max(first);
            }
            Some(last - kill_t)
        },
    )
    .await
    .map_err(|e| {
        let r = recs.lock().expect("recs");
        let mut by: BTreeMap<(String, String, u8), usize> = BTreeMap::new();
        for x in r.iter().filter(|x| x.t > kill_t) {
            *by.entry((x.model.clone(), x.agent.clone(), x.outcome)).or_insert(0) += 1;
        }
        anyhow!(
            "{e}; moved {:?}, victim {}; after the kill (model, agent, outcome 0 met/1 missed/2 dropped/3 refused): {by:?}",
            v.models,
            v.addr
        )
    })
}

/// What the run collected.
struct Results {
    recs: Vec<Rec>,
    samples: Vec<RouteMap>,
    failover: serde_json::Value,
    agent_kill: serde_json::Value,
}

/// Every member's own (stale) view of the plan, once they caught up: followers apply a
/// commit a moment after the leader, and the planner may still commit (rates fall as the
/// load ends), so compare until the views agree, for at most 5 s.
async fn views_identical(live_clients: &[String]) -> bool {
    let views_deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut views = Vec::new();
        for c in live_clients {
            if let Some(mut cl) = admin(c).await {
                if let Ok(r) = cl.show_placement(api::ReadRequest { stale: true }).await {
                    let r = r.into_inner();
                    views.push(
                        r.nodes
                            .iter()
                            .map(|n| (n.node.clone(), n.epoch, format!("{:?}", n.partitions)))
                            .collect::<Vec<_>>(),
                    );
                }
            }
        }
        let same = views.windows(2).all(|w| w[0] == w[1]) && views.len() == live_clients.len();
        if same || Instant::now() >= views_deadline {
            return same;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Partition continuity: the models that, once they had a partition, were missing from a
/// later placement sample.
fn lost_partitions(samples: &[RouteMap]) -> BTreeSet<String> {
    let mut lost: BTreeSet<String> = BTreeSet::new();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    for r in samples {
        for m in &seen {
            if r.get(m).is_none_or(|v| v.is_empty()) {
                lost.insert(m.clone());
            }
        }
        seen.extend(r.keys().cloned());
    }
    lost
}

/// Per model: the JSON row and the table line, beside the virtual-time reference.
fn model_rows(st: &Setup, recs: &[Rec]) -> (Vec<serde_json::Value>, Vec<String>) {
    let mut rows = Vec::new();
    let mut table = Vec::new();
    for m in &st.sc.models {
        let mine: Vec<&Rec> = recs.iter().filter(|r| r.model == m.name).collect();
        let count = |o: u8| mine.iter().filter(|r| r.outcome == o).count();
        let lat = Latencies::from_ms(mine.iter().filter(|r| r.outcome <= 1).map(|r| r.latency_ms));
        let q = |p: f64| lat.quantile_ms(p);
        let att = if mine.is_empty() {
            0.0
        } else {
            count(0) as f64 / mine.len() as f64
        };
        let vref = st
            .reference
            .models
            .iter()
            .find(|x| x.model == m.name)
            .map_or(0.0, |x| x.slo_attainment());
        table.push(format!(
            "{:<10} {:>7} {:>7} {:>7} {:>7} {:>7} {:>9.2}% {:>8.1} {:>8.1}   {:>9.2}%",
            m.name,
            mine.len(),
            count(0),
            count(1),
            count(2),
            count(3),
            att * 100.0,
            q(0.5),
            q(0.99),
            vref * 100.0
        ));
        let mut misses_by_s: BTreeMap<u64, usize> = BTreeMap::new();
        for r in mine.iter().filter(|r| r.outcome != 0) {
            *misses_by_s.entry(r.t as u64).or_insert(0) += 1;
        }
        rows.push(json!({
            "misses_by_wall_second": misses_by_s,
            "model": m.name, "slo_ms": m.slo_ms, "sent": mine.len(), "met": count(0), "missed": count(1),
            "dropped": count(2), "refused": count(3), "slo_attainment": att,
            "p50_ms": q(0.5), "p99_ms": q(0.99), "virtual_slo_attainment": vref,
        }));
    }
    (rows, table)
}

/// rates reported -> plan -> partitions -> GPU shares, from the final placement.
fn chain_json(p: &api::ShowPlacementResponse) -> serde_json::Value {
    json!({
        "rates": p.models.iter().map(|m| json!({"model": m.model, "requested_rps": m.requested_rps,
            "observed_rps": m.observed_rps, "planned_rps": m.planned_rps})).collect::<Vec<_>>(),
        "plan_events": p.events.len(),
        "partitions": p.nodes.iter().map(|n| json!({"node": n.node, "epoch": n.epoch,
            "partitions": n.partitions.iter().map(|x| format!("{} {}% [{}]", x.accelerator_id, x.share_pct, x.models.join(","))).collect::<Vec<_>>()})).collect::<Vec<_>>(),
        "gpus": p.gpus.iter().map(|g| json!({"node": g.node, "gpu": g.accelerator_id,
            "planned_share_pct": g.planned_share_pct, "measured_util_pct": g.measured_util_pct})).collect::<Vec<_>>(),
    })
}

async fn report(a: &PartitionArgs, st: &Setup, cl: &Cluster, r: Results) -> anyhow::Result<()> {
    let l = &a.live;
    let live_clients = cl.procs.live_clients();
    let final_p = placement(&live_clients).await;
    let identical = views_identical(&live_clients).await;
    let lost_partition = lost_partitions(&r.samples);
    let (rows, table) = model_rows(st, &r.recs);
    let (ts, dur_v) = (st.ts, st.dur_v);
    let out = json!({
        "time_scale": ts, "virtual_duration_s": dur_v, "wall_duration_s": st.wall(dur_v),
        "gpu": a.gpu, "agents": l.agents, "worker_start_ms": st.worker_ms, "lease_ms": l.lease_ms,
        "first_leader": cl.first_leader,
        "models": rows, "chain": final_p.as_ref().map(chain_json), "failover": r.failover,
        "agent_kill": r.agent_kill,
        "plan_identical_on_every_replica": identical,
        "models_that_lost_their_partition": lost_partition,
        "data_dir": if l.keep { json!(cl.procs.dir.display().to_string()) } else { json!(null) },
    });
    match a.format {
        crate::partition::Format::Json => println!("{}", serde_json::to_string_pretty(&out)?),
        crate::partition::Format::Table => print_table(a, st, &out, &table)?,
    }
    Ok(())
}

fn print_table(
    a: &PartitionArgs,
    st: &Setup,
    out: &serde_json::Value,
    table: &[String],
) -> anyhow::Result<()> {
    let l = &a.live;
    println!(
        "bench partition --live --gpu {} --time-scale {}: {} s virtual in {:.1} s wall, {} agent(s), kill {:?}",
        a.gpu,
        st.ts,
        st.dur_v,
        st.wall(st.dur_v),
        l.agents,
        l.kill
    );
    println!(
        "{:<10} {:>7} {:>7} {:>7} {:>7} {:>7} {:>10} {:>8} {:>8}   {:>10}",
        "model",
        "sent",
        "met",
        "missed",
        "dropped",
        "refused",
        "SLO met",
        "p50 ms",
        "p99 ms",
        "virtual"
    );
    for t in table {
        println!("{t}");
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "chain": out["chain"], "failover": out["failover"], "agent_kill": out["agent_kill"],
            "plan_identical_on_every_replica": out["plan_identical_on_every_replica"],
            "models_that_lost_their_partition": out["models_that_lost_their_partition"],
        }))?
    );
    Ok(())
}
