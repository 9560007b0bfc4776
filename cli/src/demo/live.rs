//! The demo's live part, in the order it runs: start the cluster ([`start_cluster`]), deploy
//! the XR models, start the XR agent and the GPU box, pin, drive the load while polling the
//! leader and killing it halfway ([`drive`]), then collect the XR agent's summary
//! ([`finish`]). Everything here is real processes and real gRPC; see the module doc of
//! [`super`].

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use edgeplane_proto::admin as api;
use edgeplane_scheduler::summary::ScenarioSummary;

use super::children::Children;
pub(super) use super::rpc::Sample;
use super::rpc::{self, find_leader, Leader, Probe};
use super::virtual_time::gpu_profiles;
use super::{DemoArgs, GPU_NODE, XR_NODE};
use crate::gpu_box::{self, Links};

/// What the failover measurement found.
#[derive(Debug, Clone, Default)]
pub(super) struct Failover {
    pub killed_id: u64,
    pub killed_at_s: f64,
    pub new_leader: u64,
    pub elected_after_s: f64,
    pub write_after_s: f64,
    pub agent_back_after_s: Option<f64>,
}

/// One row of the live placement, polled from the cluster.
#[derive(Debug, Clone)]
pub(super) struct PlacementRow {
    pub t_s: f64,
    pub node: String,
    pub epoch: u64,
    pub accelerator: String,
    pub share_pct: u32,
    pub models: Vec<String>,
}

/// One model in one poll of `models list` from the leader.
#[derive(Debug, Clone)]
pub(super) struct ModelPoll {
    pub t_s: f64,
    pub model: String,
    pub observed_rate: f64,
    pub deadline_met_pct: f64,
    pub energy_j: f64,
}

/// Something the demo logged while it ran, s since it started.
#[derive(Debug, Clone)]
pub(super) struct Event {
    pub t_s: f64,
    pub text: String,
}

/// A plan change from the replicated plan history, with when the demo first saw it.
#[derive(Debug, Clone)]
pub(super) struct SeenPlanEvent {
    pub t_s: f64,
    pub event: api::PlanEvent,
}

/// What the live part measured.
pub(super) struct Live {
    pub members: usize,
    /// Mutual TLS on every link; whether a plaintext call to the leader was refused.
    pub tls: bool,
    pub plaintext_refused: bool,
    pub first_leader: u64,
    pub failover: Failover,
    pub probe_model: String,
    pub probe: Vec<Sample>,
    pub polls: Vec<ModelPoll>,
    pub placement: Vec<PlacementRow>,
    /// The XR agent's own end-of-scenario summary (JSON on its stdout).
    pub xr_summary: Option<ScenarioSummary>,
    pub events: Vec<Event>,
    pub load_s: f64,
    /// The GPU box as a live agent (when the agent can simulate GPUs).
    pub gpu_live: Option<GpuLive>,
    /// Plan changes from the replicated plan history (`placement show`), with when the demo
    /// first saw each.
    pub plan_events: Vec<SeenPlanEvent>,
}

/// One seed model on the live GPU box.
pub(super) struct GpuModelLive {
    pub name: String,
    pub slo_ms: f64,
    /// When it was deployed and its load started, s since the load started.
    pub at_s: f64,
    pub samples: Arc<Mutex<Vec<Sample>>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

pub(super) struct GpuLive {
    addr: String,
    pub models: Vec<GpuModelLive>,
}

// ---------------------------------------------------------------------------------------------
// Progress and events

pub(super) struct Progress {
    bar: indicatif::ProgressBar,
    start: Instant,
    log: Vec<Event>,
}

impl Progress {
    fn new(duration_s: f64) -> Self {
        let bar = indicatif::ProgressBar::new(duration_s.ceil() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {bar:30} {pos:>3}/{len} s of load  {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Progress {
            bar,
            start: Instant::now(),
            log: Vec::new(),
        }
    }
    fn t(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }
    /// An event: printed above the bar (or as a plain line when there is no terminal).
    fn event(&mut self, msg: impl Into<String>) {
        let text = msg.into();
        let t_s = self.t();
        let line = format!("[{t_s:6.1} s] {text}");
        if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
        self.log.push(Event { t_s, text });
    }
}

// ---------------------------------------------------------------------------------------------
// Start-up

/// The running cluster and what the demo needs to talk to it.
struct Cluster {
    /// The replicas' and agents' data (removed when the demo ends).
    data: tempfile::TempDir,
    logs: PathBuf,
    token: String,
    net: Links,
    /// Replica `i + 1`'s client address at `i`.
    clients: Vec<String>,
    /// `name pid` lines, rewritten to `<out>/pids.txt` after each start.
    pids: String,
    first: Leader,
}

impl Cluster {
    fn record_pid(&mut self, a: &DemoArgs, name: &str, pid: u32) -> anyhow::Result<()> {
        let _ = writeln!(self.pids, "{name} {pid}");
        std::fs::write(a.out.join("pids.txt"), &self.pids)?;
        Ok(())
    }
}

/// Poll `f` every 50 ms until it answers or `limit` passes.
async fn wait_until<F, Fut>(limit: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Generate the run's certificates and start 3 coordinator replicas; wait for a leader.
async fn start_cluster(
    a: &DemoArgs,
    children: &mut Children,
    prog: &mut Progress,
) -> anyhow::Result<Cluster> {
    let data = tempfile::Builder::new()
        .prefix("edgeplane-demo-")
        .tempdir()
        .context("creating a temporary folder for the replicas' data")?;
    let logs = a.out.join("logs");
    let token = format!("demo-{:016x}", rand::random::<u64>());
    // Mutual TLS on every link: a throwaway CA and certificates for this run (members 1-3,
    // the two agents' node certificates, the demo's own admin user and Infer client).
    let pki = data.path().join("pki");
    let net = Links::generate(&pki, 3, &[XR_NODE, GPU_NODE])?;
    prog.event(format!(
        "mutual TLS: generated a throwaway CA and certificates for 3 members, 2 nodes and the demo's admin and Infer clients in {}",
        pki.display()
    ));
    prog.event(format!(
        "starting 3 coordinator replicas (sled in {})",
        data.path().display()
    ));
    let peers = gpu_box::loopback_addrs(3)?;
    let clients = gpu_box::loopback_addrs(3)?;
    let ic = gpu_box::initial_cluster(&peers);
    let mut pids = String::new();
    for i in 0..3 {
        let id = i + 1;
        let mut args: Vec<String> = vec![
            "coordinator".into(),
            "--id".into(),
            id.to_string(),
            "--client-addr".into(),
            clients[i].clone(),
            "--peer-addr".into(),
            peers[i].clone(),
            "--initial-cluster".into(),
            ic.clone(),
            "--data-dir".into(),
            data.path()
                .join(format!("replica-{id}"))
                .display()
                .to_string(),
            "--join-token".into(),
            token.clone(),
        ];
        args.extend(net.server_flags(&format!("member-{id}")));
        let pid = children.spawn(
            &format!("coordinator-{id}"),
            &args,
            &logs.join(format!("coordinator-{id}.log")),
            None,
        )?;
        let _ = writeln!(pids, "coordinator-{id} {pid}");
    }
    std::fs::write(a.out.join("pids.txt"), &pids)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        if let Some(l) = find_leader(&net, &clients, &clients, 0).await {
            break l;
        }
        if Instant::now() > deadline {
            bail!(
                "no coordinator leader within 30 s; see the logs in {}",
                logs.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    prog.event(format!(
        "cluster up: replica {} leads (term {}, {})",
        first.id, first.term, first.addr
    ));
    Ok(Cluster {
        data,
        logs,
        token,
        net,
        clients,
        pids,
        first,
    })
}

/// Deploy the XR scenario's models (so `models list` shows their live figures); returns the
/// probe model, the scenario's cheapest on this hardware.
async fn deploy_xr_models(
    a: &DemoArgs,
    cl: &Cluster,
    hw: &[edgeplane_agent::catalog::HwAccelerator],
    scenario: &edgeplane_agent::catalog::Scenario,
    prog: &mut Progress,
) -> anyhow::Result<String> {
    for m in &scenario.models {
        rpc::deploy(
            &cl.net,
            &cl.clients,
            &m.name,
            m.period_ms as f64,
            m.fps as f64,
            Duration::from_secs(10),
        )
        .await?;
    }
    let cat = edgeplane_agent::catalog::Catalog::get()?;
    let probe_model = scenario
        .models
        .iter()
        .filter_map(|m| {
            let best = hw
                .iter()
                .filter_map(|acc| cat.cost(&m.name, acc))
                .map(|c| c.latency_ms)
                .fold(f64::INFINITY, f64::min);
            best.is_finite().then(|| (m.name.clone(), best))
        })
        .min_by(|x, y| x.1.total_cmp(&y.1))
        .map(|x| x.0)
        .ok_or_else(|| anyhow!("scenario {} has no model the hardware can run", a.scenario))?;
    prog.event(format!(
        "deployed the {} models of {} through the leader",
        scenario.models.len(),
        a.scenario
    ));
    Ok(probe_model)
}

/// The XR device agent, started.
struct XrAgent {
    addr: String,
    /// Its stdout: the scenario summary.
    summary: PathBuf,
    /// When its scenario (and the agent) ends.
    ends: Instant,
}

/// Start the XR agent (simulated NPUs, the scenario in real time under SDRM3) and wait until
/// its session with the cluster is open.
async fn start_xr_agent(
    a: &DemoArgs,
    cl: &mut Cluster,
    children: &mut Children,
) -> anyhow::Result<XrAgent> {
    let addr = format!("127.0.0.1:{}", gpu_box::free_port()?);
    let mut args: Vec<String> = vec![
        "agent".into(),
        "--name".into(),
        XR_NODE.into(),
        "--coordinators".into(),
        cl.clients.join(","),
        "--join-token".into(),
        cl.token.clone(),
        "--listen".into(),
        addr.clone(),
        "--data-dir".into(),
        cl.data.path().join(XR_NODE).display().to_string(),
        "--accelerators".into(),
        format!("sim:{}", a.hardware),
        "--scenario".into(),
        a.scenario.clone(),
        "--scenario-duration-ms".into(),
        ((a.duration * 1000.0) as u64).to_string(),
        "--exit-after-scenario".into(),
        "--policy".into(),
        "sdrm3".into(),
        "--tune".into(),
        "--report-interval-ms".into(),
        "500".into(),
        "--max-backoff-ms".into(),
        "500".into(),
    ];
    args.extend(cl.net.server_flags(&format!("node-{XR_NODE}")));
    let summary = cl.logs.join("xr-headset.summary.json");
    // The agent's scenario (and the agent) ends `duration` after its start, which is after
    // this instant: the probe stops here, so it never calls an agent that has just exited.
    let ends = Instant::now() + Duration::from_secs_f64(a.duration);
    let log = cl.logs.join("xr-headset.log");
    let pid = children.spawn(XR_NODE, &args, &log, Some(&summary))?;
    cl.record_pid(a, "xr-headset", pid)?;
    let net = &cl.net;
    let up = wait_until(Duration::from_secs(20), || async {
        rpc::agent_status(net, &addr)
            .await
            .is_some_and(|s| s.connected)
    })
    .await;
    if !up {
        bail!(
            "the XR agent did not connect to the cluster within 20 s; see {}",
            log.display()
        );
    }
    Ok(XrAgent {
        addr,
        summary,
        ends,
    })
}

/// Whether this build's agent can simulate GPUs (`--accelerators sim-gpu:<profile>`, issue 9).
fn agent_simulates_gpus(gpu: &str) -> bool {
    format!("sim-gpu:{gpu}")
        .parse::<edgeplane_agent::config::AcceleratorSpec>()
        .is_ok()
}

/// Start the GPU box agent (one simulated GPU, placed by the leader's planner) and plan its
/// seed workload; `None` when this build's agent cannot simulate a GPU.
async fn start_gpu_box(
    a: &DemoArgs,
    cl: &mut Cluster,
    children: &mut Children,
    prog: &mut Progress,
) -> anyhow::Result<Option<GpuLive>> {
    if !agent_simulates_gpus(&a.gpu) {
        return Ok(None);
    }
    let addr = format!("127.0.0.1:{}", gpu_box::free_port()?);
    let mut args: Vec<String> = vec!["agent".into()];
    args.extend(
        gpu_box::SimGpuAgent {
            name: GPU_NODE,
            listen: &addr,
            data_dir: cl.data.path().join(GPU_NODE),
            gpu: &a.gpu,
            coordinators: &cl.clients,
            join_token: &cl.token,
            report_interval_ms: 500,
            max_backoff_ms: 500,
            worker_start_ms: None,
        }
        .args(&cl.net),
    );
    let log = cl.logs.join("gpu-box.log");
    let pid = children.spawn(GPU_NODE, &args, &log, None)?;
    cl.record_pid(a, "gpu-box", pid)?;
    let net = &cl.net;
    let up = wait_until(Duration::from_secs(20), || async {
        rpc::agent_status(net, &addr)
            .await
            .is_some_and(|s| s.connected)
    })
    .await;
    if !up {
        bail!(
            "the GPU box agent did not connect within 20 s; see {}",
            log.display()
        );
    }
    prog.event(format!(
        "gpu-box agent up: one simulated {} GPU, placed by the leader's planner",
        a.gpu
    ));
    // The seed workload: ResNet18, ResNet50, VGG16 at 0, 50, 100 s of a 300-s run,
    // compressed to --duration.
    let seed = edgeplane_gpu::scenarios::seed(&gpu_profiles()?, &a.gpu, 1, 300.0)?;
    let models = seed
        .models
        .iter()
        .map(|m| GpuModelLive {
            name: m.name.clone(),
            slo_ms: m.slo_ms,
            at_s: m.schedule.first().map_or(0.0, |g| g.from_s) / 300.0 * a.duration,
            samples: Arc::new(Mutex::new(Vec::new())),
            task: None,
        })
        .collect();
    Ok(Some(GpuLive { addr, models }))
}

/// `--dashboard`: the live page over the demo's own admin certificate, open while `live` runs.
async fn start_dashboard(
    a: &DemoArgs,
    cl: &Cluster,
    prog: &mut Progress,
) -> anyhow::Result<crate::dashboard::Running> {
    let args = crate::dashboard::DashboardArgs {
        listen: a.dashboard_listen.clone(),
        history_s: 600,
        poll_ms: 1000,
    };
    let running = crate::dashboard::start(
        crate::conn::Conn::with_tls(
            cl.clients.clone(),
            Duration::from_secs(5),
            crate::tls::ClientTlsSource::ready(cl.net.admin.clone()),
        ),
        &args,
    )
    .await?;
    prog.event(format!(
        "dashboard: http://{}/ (live, read-only; open while the demo runs)",
        running.addr
    ));
    Ok(running)
}

/// The XR models run on the headset's NPUs: the operator pins them there (the GPU planner
/// leaves pinned models alone).
async fn pin_xr_models(
    cl: &Cluster,
    scenario: &edgeplane_agent::catalog::Scenario,
    prog: &mut Progress,
) -> anyhow::Result<()> {
    let mut epoch = 0;
    for m in &scenario.models {
        epoch = rpc::pin(
            &cl.net,
            &cl.clients,
            XR_NODE,
            &m.name,
            Duration::from_secs(10),
        )
        .await?;
    }
    prog.event(format!(
        "operator pin: {} -> xr-headset (assignment epoch {epoch})",
        scenario
            .models
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The run

/// Start the cluster and the agent, drive load, kill the leader, collect. Runs on the main
/// thread (see [`Children::spawn`]).
pub(super) async fn live(
    a: &DemoArgs,
    hw: &[edgeplane_agent::catalog::HwAccelerator],
    scenario: &edgeplane_agent::catalog::Scenario,
    children: &mut Children,
) -> anyhow::Result<Live> {
    let mut prog = Progress::new(a.duration);
    let mut cl = start_cluster(a, children, &mut prog).await?;
    let _dashboard = match a.dashboard {
        true => Some(start_dashboard(a, &cl, &mut prog).await?),
        false => None,
    };
    // Evidence that TLS is on: the same call in plaintext gets no answer.
    let plaintext_refused = cl.net.tls()
        && rpc::status_of(&Links::insecure(), &cl.first.addr)
            .await
            .is_none();
    prog.event(if plaintext_refused {
        "a plaintext ClusterStatus to the leader is refused: every call goes over mutual TLS"
    } else {
        "warning: a plaintext ClusterStatus to the leader was answered"
    });
    let probe_model = deploy_xr_models(a, &cl, hw, scenario, &mut prog).await?;
    let xr = start_xr_agent(a, &mut cl, children).await?;
    let gpu_live = start_gpu_box(a, &mut cl, children, &mut prog).await?;
    let load_t0 = Instant::now();
    prog.event(format!(
        "xr-headset agent up: {} on {} simulated NPUs ({}), SDRM3, reporting to the leader",
        a.scenario,
        hw.len(),
        a.hardware
    ));
    pin_xr_models(&cl, scenario, &mut prog).await?;
    let mut run = Run {
        cl: &cl,
        xr: &xr,
        load_t0,
        probe_model: probe_model.clone(),
        samples: Arc::new(Mutex::new(Vec::new())),
        stop: tokio::sync::watch::channel(false),
        gpu_live,
        polls: Vec::new(),
        placement: Vec::new(),
        plan_events: Vec::new(),
        failover: None,
        leader: cl.first.clone(),
    };
    let probe = run.start_xr_probe(a, &mut prog);
    run.drive(a, children, &mut prog).await?;
    finish(run, probe, children, prog, plaintext_refused).await
}

/// The load phase's state.
struct Run<'a> {
    cl: &'a Cluster,
    xr: &'a XrAgent,
    load_t0: Instant,
    probe_model: String,
    samples: Arc<Mutex<Vec<Sample>>>,
    /// Tells every probe to stop.
    stop: (
        tokio::sync::watch::Sender<bool>,
        tokio::sync::watch::Receiver<bool>,
    ),
    gpu_live: Option<GpuLive>,
    polls: Vec<ModelPoll>,
    placement: Vec<PlacementRow>,
    plan_events: Vec<SeenPlanEvent>,
    failover: Option<Failover>,
    /// The leader the demo polls (the new one after the kill).
    leader: Leader,
}

impl Run<'_> {
    /// The demo's own Infer requests to the XR agent (none with `--probe-rate 0`).
    fn start_xr_probe(
        &self,
        a: &DemoArgs,
        prog: &mut Progress,
    ) -> Option<tokio::task::JoinHandle<()>> {
        if a.probe_rate <= 0.0 {
            return None;
        }
        let p = Probe {
            agent: self.xr.addr.clone(),
            model: self.probe_model.clone(),
            rate: a.probe_rate,
            deadline_ms: 0.0,
            t0: self.load_t0,
            until: Some(self.xr.ends),
        }
        .start(&self.cl.net, self.stop.1.clone(), self.samples.clone());
        prog.event(format!(
            "probe: {} Infer requests/s for {} to the XR agent over gRPC",
            a.probe_rate, self.probe_model
        ));
        Some(p)
    }

    /// `--duration` seconds of load: GPU models deployed as they arrive, the leader killed
    /// halfway, the leader polled every 0.5 s.
    async fn drive(
        &mut self,
        a: &DemoArgs,
        children: &mut Children,
        prog: &mut Progress,
    ) -> anyhow::Result<()> {
        let kill_at = a.duration / 2.0;
        let mut next_poll = 0.0;
        loop {
            let t = self.load_t0.elapsed().as_secs_f64();
            prog.bar.set_position(t.min(a.duration) as u64);
            if t >= a.duration {
                return Ok(());
            }
            self.start_due_gpu_models(a, t, prog).await?;
            if self.failover.is_none() && t >= kill_at {
                prog.bar.set_message("leader killed, measuring failover");
                let f = kill_leader(
                    self.cl,
                    children,
                    &self.leader,
                    &self.xr.addr,
                    self.load_t0,
                    prog,
                )
                .await?;
                self.leader = Leader {
                    id: f.new_leader,
                    addr: self.cl.clients[(f.new_leader - 1) as usize].clone(),
                    term: 0,
                };
                self.failover = Some(f);
                prog.bar.set_message("");
            }
            if t >= next_poll {
                next_poll = t + 0.5;
                self.poll(t, prog).await;
                self.show_progress(prog);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Deploy each seed model whose arrival time has come and start its load on the GPU box.
    async fn start_due_gpu_models(
        &mut self,
        a: &DemoArgs,
        t: f64,
        prog: &mut Progress,
    ) -> anyhow::Result<()> {
        let Some(g) = self.gpu_live.as_mut() else {
            return Ok(());
        };
        let (net, clients) = (&self.cl.net, &self.cl.clients);
        for m in g
            .models
            .iter_mut()
            .filter(|m| m.task.is_none() && t >= m.at_s)
        {
            rpc::deploy(
                net,
                clients,
                &m.name,
                m.slo_ms,
                a.gpu_rate,
                Duration::from_secs(10),
            )
            .await?;
            m.task = Some(
                Probe {
                    agent: g.addr.clone(),
                    model: m.name.clone(),
                    rate: a.gpu_rate,
                    deadline_ms: m.slo_ms,
                    t0: self.load_t0,
                    until: None,
                }
                .start(net, self.stop.1.clone(), m.samples.clone()),
            );
            prog.event(format!(
                "deployed {} (SLO {} ms, {} req/s) and started its load on gpu-box",
                m.name, m.slo_ms, a.gpu_rate
            ));
        }
        Ok(())
    }

    fn show_progress(&self, prog: &Progress) {
        if let Some(p) = self
            .polls
            .iter()
            .rev()
            .find(|p| p.model == self.probe_model)
        {
            let n = self.samples.lock().expect("samples").len();
            prog.bar.set_message(format!(
                "leader {}  {}: {:.1} % deadlines met  probe answers {n}",
                self.leader.id, p.model, p.deadline_met_pct
            ));
        }
    }

    /// Poll `models list` (live figures, from the leader) and `placement show`.
    async fn poll(&mut self, t: f64, prog: &mut Progress) {
        let Some(mut c) = rpc::admin(&self.cl.net, &self.leader.addr).await else {
            return;
        };
        if let Ok(Ok(r)) = tokio::time::timeout(
            Duration::from_millis(800),
            c.list_models(api::ReadRequest { stale: false }),
        )
        .await
        {
            let r = r.into_inner();
            if !r.live_figures_unknown {
                self.polls.extend(r.models.into_iter().map(|m| ModelPoll {
                    t_s: t,
                    model: m.name,
                    observed_rate: m.observed_rate,
                    deadline_met_pct: m.deadline_met_pct,
                    energy_j: m.energy_j,
                }));
            }
        }
        if let Ok(Ok(r)) = tokio::time::timeout(
            Duration::from_millis(800),
            c.show_placement(api::ReadRequest { stale: false }),
        )
        .await
        {
            self.record_placement(t, r.into_inner(), prog);
        }
    }

    fn record_placement(&mut self, t: f64, r: api::ShowPlacementResponse, prog: &mut Progress) {
        for ev in r.events {
            if self.plan_events.iter().all(|x| x.event.index != ev.index) {
                prog.event(format!(
                    "plan change for {} (epoch {}): {} -> {}",
                    ev.node, ev.epoch, ev.reason, ev.partitions
                ));
                self.plan_events.push(SeenPlanEvent {
                    t_s: prog.t(),
                    event: ev,
                });
            }
        }
        for n in r.nodes {
            for p in n.partitions {
                self.placement.push(PlacementRow {
                    t_s: t,
                    node: n.node.clone(),
                    epoch: n.epoch,
                    accelerator: p.accelerator_id,
                    share_pct: p.share_pct,
                    models: p.models,
                });
            }
        }
    }
}

/// Stop the load, wait for the XR agent's summary, stop the cluster.
async fn finish(
    mut run: Run<'_>,
    probe: Option<tokio::task::JoinHandle<()>>,
    children: &mut Children,
    mut prog: Progress,
    plaintext_refused: bool,
) -> anyhow::Result<Live> {
    let _ = run.stop.0.send(true);
    if let Some(p) = probe {
        let _ = tokio::time::timeout(Duration::from_secs(5), p).await;
    }
    if let Some(g) = run.gpu_live.as_mut() {
        for m in &mut g.models {
            if let Some(t) = m.task.take() {
                let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
            }
        }
    }
    let load_s = run.load_t0.elapsed().as_secs_f64();
    prog.bar.finish_and_clear();
    prog.event("load finished; waiting for the XR agent's scenario summary");
    let exited = children.wait_exit(XR_NODE, Duration::from_secs(10));
    let xr_summary = if exited {
        read_summary(&run.xr.summary)
    } else {
        None
    };
    prog.event("stopping the cluster");
    children.stop_all(Duration::from_secs(3));
    let failover = run
        .failover
        .ok_or_else(|| anyhow!("the leader was never killed (run too short)"))?;
    let probe = std::mem::take(&mut *run.samples.lock().expect("samples"));
    Ok(Live {
        members: 3,
        tls: run.cl.net.tls(),
        plaintext_refused,
        first_leader: run.cl.first.id,
        failover,
        probe_model: run.probe_model,
        probe,
        polls: run.polls,
        placement: run.placement,
        xr_summary,
        events: prog.log,
        load_s,
        gpu_live: run.gpu_live,
        plan_events: run.plan_events,
    })
}

/// The agent's summary: the last line of its stdout that reads as one (a summary whose
/// fields do not match [`ScenarioSummary`] reads as none, and the report says it is missing).
fn read_summary(path: &std::path::Path) -> Option<ScenarioSummary> {
    let text = std::fs::read_to_string(path).ok()?;
    let parsed = text
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<ScenarioSummary>(l).ok());
    if parsed.is_none() {
        tracing::warn!(path = %path.display(), "no scenario summary in the XR agent's output");
    }
    parsed
}

/// SIGKILL the leader; measure until a new leader is elected, a write is acknowledged, and
/// the XR agent's session is open with the new leader.
async fn kill_leader(
    cl: &Cluster,
    children: &mut Children,
    leader: &Leader,
    xr_addr: &str,
    t0: Instant,
    prog: &mut Progress,
) -> anyhow::Result<Failover> {
    let (net, clients) = (&cl.net, &cl.clients);
    let old = leader.id;
    let killed = Instant::now();
    children.kill(&format!("coordinator-{old}"))?;
    let killed_at_s = killed.duration_since(t0).as_secs_f64();
    prog.event(format!("SIGKILL the leader, replica {old}"));
    let survivors: Vec<String> = clients
        .iter()
        .enumerate()
        .filter(|(i, _)| (*i as u64 + 1) != old)
        .map(|(_, c)| c.clone())
        .collect();
    let deadline = killed + Duration::from_secs(30);
    let new = loop {
        if let Some(l) = find_leader(net, clients, &survivors, old).await {
            break l;
        }
        if Instant::now() > deadline {
            bail!("no new leader within 30 s of the kill");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let elected_after_s = killed.elapsed().as_secs_f64();
    prog.event(format!(
        "replica {} elected leader (term {}) {elected_after_s:.2} s after the kill",
        new.id, new.term
    ));
    // A write acknowledged by the new cluster (an idempotent re-deploy of a model).
    rpc::deploy(
        net,
        std::slice::from_ref(&new.addr),
        "failover-probe",
        100.0,
        0.0,
        Duration::from_secs(20),
    )
    .await?;
    let write_after_s = killed.elapsed().as_secs_f64();
    prog.event(format!(
        "first write acknowledged {write_after_s:.2} s after the kill"
    ));
    let agent_back_after_s = agent_back(net, xr_addr, &new.addr, killed, prog).await;
    Ok(Failover {
        killed_id: old,
        killed_at_s,
        new_leader: new.id,
        elected_after_s,
        write_after_s,
        agent_back_after_s,
    })
}

/// Seconds after `killed` until the XR agent's session is with `new_addr` (15 s at most).
async fn agent_back(
    net: &Links,
    xr_addr: &str,
    new_addr: &str,
    killed: Instant,
    prog: &mut Progress,
) -> Option<f64> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Some(s) = rpc::agent_status(net, xr_addr).await {
            if s.connected && s.leader_addr == new_addr {
                let d = killed.elapsed().as_secs_f64();
                prog.event(format!(
                    "xr-headset's session moved to the new leader {d:.2} s after the kill"
                ));
                return Some(d);
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    None
}
