//! `edgeplane demo`: the whole system on one machine in about a minute.
//!
//! The `edgeplane` binary re-executes itself (`edgeplane internal coordinator|agent ...`, which
//! call the coordinator's and the agent's library entry points), so the demo needs nothing but
//! this binary: `cargo run --release -p edgeplane-cli -- demo` builds only the CLI package.
//!
//! What runs, as real processes talking real gRPC on loopback, mutual TLS on every link (a CA
//! and certificates generated for the run into its temporary folder with
//! [`edgeplane_tls::generate_cluster_material`], as `edgeplane certs` makes them):
//! - three coordinator replicas (Raft, sled in a temporary folder);
//! - an XR device agent with simulated NPUs (an XRBench hardware set-up) running an XRBench
//!   scenario in real time under SDRM3, registered with the cluster and reporting to its leader;
//! - the demo itself as an operator and a client: it deploys the models through the Admin API,
//!   pins the probe model, sends `Infer` requests to the agent, polls the cluster, SIGKILLs the
//!   leader midway and measures the failover.
//!
//! The GPU box serving the seed workload (ResNet18, ResNet50, VGG16 arriving one after another)
//! is a second agent with a simulated GPU ([`crate::gpu_box`], shared with `bench partition
//! --live`), placed by the leader's planner; the same workload also runs through the planner
//! and three other modes in virtual time ([`gpu_virtual`]). The report says which parts were
//! live and which simulated.
//!
//! Children die with the demo: each is started with `PR_SET_PDEATHSIG = SIGKILL` (so even a
//! SIGKILLed demo leaves nothing behind), Ctrl-C stops them in order, and every path out of
//! [`demo`] stops them (the [`Children`] drop).

use crate::gpu_box::{self, Links};
use crate::latency::Latencies;
use crate::plot::ensure_font;
use anyhow::{anyhow, bail, Context};
use clap::Args;
use edgeplane_proto::admin::{self as api, admin_client::AdminClient};
use edgeplane_proto::agent::{inference_client::InferenceClient, InferRequest, StatusRequest};
use plotters::prelude::*;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// The XR device agent's node name (and its node certificate's).
const XR_NODE: &str = "xr-headset";
/// The GPU box agent's node name (and its node certificate's).
const GPU_NODE: &str = "gpu-box";

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Seconds of load (the whole run takes a few seconds more: start-up, report).
    #[arg(long, default_value_t = 60.0)]
    pub duration: f64,
    /// Folder for the report, the pictures, the CSVs and the processes' logs.
    #[arg(long, default_value = "edgeplane-demo")]
    pub out: PathBuf,
    /// XRBench scenario the XR agent runs.
    #[arg(long, default_value = "VR_gaming")]
    pub scenario: String,
    /// XRBench hardware set-up of the XR agent's simulated NPUs.
    #[arg(long, default_value = "Dual_4K_WS_OS")]
    pub hardware: String,
    /// GPU profile of the GPU box (Jetson-AGX-Xavier, A100-80GB, V100, Jetson-Nano).
    #[arg(long, default_value = "Jetson-AGX-Xavier")]
    pub gpu: String,
    /// Rate of the demo's own Infer requests to the XR agent (0 = none), req/s.
    #[arg(long, default_value_t = 20.0)]
    pub probe_rate: f64,
    /// Rate of each seed model's Infer requests to the GPU box, req/s (the seed experiment: 50).
    #[arg(long, default_value_t = 50.0)]
    pub gpu_rate: f64,
    /// Virtual seconds of the GPU box's reference runs (the seed's arrivals are at 0, 50, 100 s).
    #[arg(long, default_value_t = 300.0, hide = true)]
    pub gpu_virtual_s: f64,
    /// Only the simulator tables (SDRM3 against the baselines; no cluster, no processes).
    #[arg(long)]
    pub sim_only: bool,
    /// With --sim-only: simulated milliseconds per run.
    #[arg(long, default_value_t = 2000.0)]
    pub duration_ms: f64,
    /// Serve the live dashboard (`edgeplane dashboard`) on --dashboard-listen while the demo
    /// runs, and print its address.
    #[arg(long)]
    pub dashboard: bool,
    /// With --dashboard: the address the page is served on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub dashboard_listen: String,
}

/// `edgeplane internal coordinator|agent FLAGS...`: the processes `demo` starts.
pub fn internal(args: Vec<OsString>) -> ExitCode {
    let kind = args.first().and_then(|s| s.to_str()).unwrap_or("");
    let rest = args.iter().skip(1).cloned();
    match kind {
        "coordinator" => edgeplane_coordinator::entry::main_with_args(
            std::iter::once(OsString::from("edgeplane-coordinator")).chain(rest),
        ),
        "agent" => edgeplane_agent::entry::main_with_args(
            std::iter::once(OsString::from("edgeplane-agent")).chain(rest),
        ),
        _ => {
            eprintln!(
                "error: `edgeplane internal` runs the processes `edgeplane demo` starts: \
                 use `edgeplane internal coordinator --help` or `edgeplane internal agent --help`"
            );
            ExitCode::from(2)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Child processes

struct Proc {
    name: String,
    child: Child,
}

/// Every process the demo started. Dropping it stops them all: SIGTERM, a grace period, then
/// SIGKILL, and waits for each (no zombie, no orphan).
#[derive(Default)]
struct Children {
    procs: Vec<Proc>,
}

impl Children {
    /// Start `edgeplane internal <args>` with stderr to `log` and stdout to `out` (or null).
    /// Must be called from the thread that lives as long as the demo (the main thread):
    /// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child ends.
    fn spawn(
        &mut self,
        name: &str,
        args: &[String],
        log: &Path,
        out: Option<&Path>,
    ) -> anyhow::Result<u32> {
        let exe = std::env::current_exe().context("locating the edgeplane binary")?;
        let mut cmd = Command::new(exe);
        cmd.arg("internal")
            .args(args)
            .stdin(Stdio::null())
            .env(
                "EDGEPLANE_LOG",
                "info,raft=warn,h2=warn,tower=warn,sled=warn",
            )
            .stderr(
                std::fs::File::create(log)
                    .with_context(|| format!("creating {}", log.display()))?,
            );
        match out {
            Some(p) => cmd.stdout(
                std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
            ),
            None => cmd.stdout(Stdio::null()),
        };
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: between fork and exec only async-signal-safe calls (prctl, getppid, _exit).
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(move || {
                if libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                // The demo died between fork and prctl: the signal will never come.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        let pid = child.id();
        self.procs.push(Proc {
            name: name.into(),
            child,
        });
        Ok(pid)
    }

    /// SIGKILL one process now and reap it.
    fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        let i = self
            .procs
            .iter()
            .position(|p| p.name == name)
            .ok_or_else(|| anyhow!("no process {name}"))?;
        let mut p = self.procs.remove(i);
        p.child.kill().with_context(|| format!("killing {name}"))?;
        let _ = p.child.wait();
        Ok(())
    }

    /// Wait for a process to exit by itself for up to `limit`; true if it did.
    fn wait_exit(&mut self, name: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let Some(i) = self.procs.iter().position(|p| p.name == name) else {
                return true;
            };
            if let Ok(Some(_)) = self.procs[i].child.try_wait() {
                self.procs.remove(i);
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM everything, give it `grace`, SIGKILL what is left, reap all.
    fn stop_all(&mut self, grace: Duration) {
        for p in &self.procs {
            // SAFETY: plain kill(2) on a child we have not reaped (its pid is still ours).
            unsafe {
                libc::kill(p.child.id() as libc::pid_t, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline
            && self
                .procs
                .iter_mut()
                .any(|p| matches!(p.child.try_wait(), Ok(None)))
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        for mut p in self.procs.drain(..) {
            if let Ok(None) = p.child.try_wait() {
                let _ = p.child.kill();
            }
            let _ = p.child.wait();
        }
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        self.stop_all(Duration::from_secs(2));
    }
}

// ---------------------------------------------------------------------------------------------
// gRPC helpers

/// The demo's Admin calls answer within 2 s.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(2);

async fn admin(net: &Links, addr: &str) -> Option<AdminClient<Channel>> {
    net.admin(addr, ADMIN_TIMEOUT).await
}

async fn status_of(net: &Links, addr: &str) -> Option<api::ClusterStatusResponse> {
    let mut c = admin(net, addr).await?;
    tokio::time::timeout(
        Duration::from_millis(500),
        c.cluster_status(api::ReadRequest { stale: true }),
    )
    .await
    .ok()?
    .ok()
    .map(|r| r.into_inner())
}

/// The current leader as (raft id, client address), asking `addrs` in turn.
/// `clients[i]` is replica `i + 1`'s client address (the demo numbers them so).
async fn find_leader(
    net: &Links,
    clients: &[String],
    ask: &[String],
    not: u64,
) -> Option<(u64, String, u64)> {
    for a in ask {
        if let Some(s) = status_of(net, a).await {
            if s.leader_id != 0 && s.leader_id != not {
                if let Some(addr) = clients.get((s.leader_id as usize).wrapping_sub(1)) {
                    return Some((s.leader_id, addr.clone(), s.term));
                }
            }
        }
    }
    None
}

/// A write through `addrs` (any member: followers forward), retried until `limit`.
async fn deploy(
    net: &Links,
    addrs: &[String],
    name: &str,
    slo_ms: f64,
    rate: f64,
    limit: Duration,
) -> anyhow::Result<u64> {
    let deadline = Instant::now() + limit;
    let mut last = String::from("no member reachable");
    loop {
        for a in addrs {
            if let Some(mut c) = admin(net, a).await {
                let req = api::DeployModelRequest {
                    meta: None,
                    name: name.into(),
                    slo_ms,
                    rate,
                    memory_mb: 0,
                };
                match tokio::time::timeout(Duration::from_secs(2), c.deploy_model(req)).await {
                    Ok(Ok(r)) => return Ok(r.into_inner().index),
                    Ok(Err(s)) => last = format!("{a}: {}", s.message()),
                    Err(_) => last = format!("{a}: no answer in 2 s"),
                }
            }
        }
        if Instant::now() > deadline {
            bail!("deploying {name}: {last}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn pin(
    net: &Links,
    addrs: &[String],
    node: &str,
    model: &str,
    limit: Duration,
) -> anyhow::Result<u64> {
    let deadline = Instant::now() + limit;
    let mut last = String::from("no member reachable");
    loop {
        for a in addrs {
            if let Some(mut c) = admin(net, a).await {
                let req = api::SetPlacementRequest {
                    meta: None,
                    node: node.into(),
                    model: model.into(),
                    accelerator: String::new(),
                };
                match c.set_placement(req).await {
                    Ok(r) => return Ok(r.into_inner().epoch),
                    Err(s) => last = format!("{a}: {}", s.message()),
                }
            }
        }
        if Instant::now() > deadline {
            bail!("pinning {model} to {node}: {last}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn agent_status(net: &Links, addr: &str) -> Option<edgeplane_proto::agent::StatusResponse> {
    net.infer(addr, ADMIN_TIMEOUT)
        .await?
        .status(StatusRequest {})
        .await
        .ok()
        .map(|r| r.into_inner())
}

// ---------------------------------------------------------------------------------------------
// Progress and events

struct Progress {
    bar: indicatif::ProgressBar,
    start: Instant,
    log: Vec<(f64, String)>,
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
        let msg = msg.into();
        let t = self.t();
        let line = format!("[{t:6.1} s] {msg}");
        if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
        self.log.push((t, msg));
    }
}

// ---------------------------------------------------------------------------------------------
// Probe load: the demo's own Infer requests to the XR agent

#[derive(Debug, Clone)]
struct Sample {
    t_s: f64,
    latency_ms: f64,
    /// The agent answered (completed or dropped by its scheduler); false = the RPC failed.
    answered: bool,
    ok: bool,
    met: bool,
    energy_mj: f64,
    error: String,
}

#[allow(clippy::too_many_arguments)]
fn start_probe(
    net: &Links,
    agent: String,
    model: String,
    rate: f64,
    deadline_ms: f64,
    t0: Instant,
    until: Option<Instant>,
    stop: tokio::sync::watch::Receiver<bool>,
    samples: Arc<Mutex<Vec<Sample>>>,
) -> tokio::task::JoinHandle<()> {
    let ep = net.infer_endpoint(&agent, ADMIN_TIMEOUT);
    tokio::spawn(async move {
        let Ok(ep) = ep else { return };
        let ch = ep.connect_lazy();
        let period = Duration::from_secs_f64(1.0 / rate);
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut inflight = tokio::task::JoinSet::new();
        loop {
            tick.tick().await;
            if *stop.borrow() || until.is_some_and(|u| Instant::now() >= u) {
                break;
            }
            let mut c = InferenceClient::new(ch.clone());
            let (m, s) = (model.clone(), samples.clone());
            inflight.spawn(async move {
                let sent = Instant::now();
                let r = c
                    .infer(InferRequest {
                        model: m,
                        deadline_ms,
                        ..Default::default()
                    })
                    .await;
                let t_s = sent.duration_since(t0).as_secs_f64();
                let sample = match r {
                    Ok(r) => {
                        let r = r.into_inner();
                        Sample {
                            t_s,
                            answered: true,
                            latency_ms: r.latency_ms,
                            ok: r.outcome == edgeplane_proto::agent::Outcome::Completed as i32,
                            met: r.deadline_met,
                            energy_mj: r.energy_mj,
                            error: r.reason,
                        }
                    }
                    Err(e) => Sample {
                        t_s,
                        answered: false,
                        latency_ms: sent.elapsed().as_secs_f64() * 1000.0,
                        ok: false,
                        met: false,
                        energy_mj: 0.0,
                        error: format!("{:?}: {}", e.code(), e.message()),
                    },
                };
                s.lock().expect("samples").push(sample);
            });
            while inflight.try_join_next().is_some() {}
        }
        while inflight.join_next().await.is_some() {}
    })
}

// ---------------------------------------------------------------------------------------------
// The demo

/// What the failover measurement found.
#[derive(Debug, Clone, Default)]
struct Failover {
    killed_id: u64,
    killed_at_s: f64,
    new_leader: u64,
    elected_after_s: f64,
    write_after_s: f64,
    agent_back_after_s: Option<f64>,
}

/// One row of the live placement, polled from the cluster.
#[derive(Debug, Clone)]
struct PlacementRow {
    t_s: f64,
    node: String,
    epoch: u64,
    accelerator: String,
    share_pct: u32,
    models: Vec<String>,
}

/// One poll of `models list` from the leader: (t, model, observed rate, deadline met %, J).
type ModelPoll = (f64, String, f64, f64, f64);

pub async fn demo(a: DemoArgs) -> anyhow::Result<()> {
    if a.sim_only {
        return crate::sim::demo(crate::sim::DemoArgs {
            duration_ms: a.duration_ms,
        });
    }
    if !(a.duration.is_finite() && (10.0..=3600.0).contains(&a.duration)) {
        bail!(
            "--duration must be between 10 and 3600 seconds, got {}",
            a.duration
        );
    }
    if !(a.gpu_virtual_s.is_finite() && (110.0..=3600.0).contains(&a.gpu_virtual_s)) {
        bail!("--gpu-virtual-s must be in 110..=3600 (the last seed model arrives at 100 s)");
    }
    if !(a.gpu_rate.is_finite() && a.gpu_rate > 0.0 && a.gpu_rate <= 500.0) {
        bail!("--gpu-rate must be in (0, 500] req/s, got {}", a.gpu_rate);
    }
    if !(a.probe_rate.is_finite() && (0.0..=500.0).contains(&a.probe_rate)) {
        bail!(
            "--probe-rate must be in 0..=500 req/s, got {}",
            a.probe_rate
        );
    }
    let cat = edgeplane_agent::catalog::Catalog::get()?;
    let hw = cat.hardware(&a.hardware).context("--hardware")?.to_vec();
    let scenario = cat.scenario(&a.scenario).context("--scenario")?.clone();
    let gpu_data = edgeplane_gpu::GpuData::shipped().context("loading the shipped GPU data")?;
    gpu_data.profiles.gpu(&a.gpu).context("--gpu")?;
    std::fs::create_dir_all(a.out.join("logs"))
        .with_context(|| format!("--out {}: cannot create the folder", a.out.display()))?;
    let started = Instant::now();
    let mut children = Children::default();
    let res = tokio::select! {
        r = live(&a, &hw, &scenario, &mut children) => Some(r),
        _ = tokio::signal::ctrl_c() => None,
    };
    children.stop_all(Duration::from_secs(3));
    let Some(res) = res else {
        eprintln!(
            "\ninterrupted: every process the demo started was stopped; logs in {}",
            a.out.join("logs").display()
        );
        std::process::exit(130);
    };
    let live = res?;
    // Ctrl-C keeps working while the rest is computed (tokio's handler replaced the default).
    tokio::spawn(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\ninterrupted (every process the demo started had already stopped)");
            std::process::exit(130);
        }
    });
    // The GPU box through the planner, in virtual time (see the module doc).
    eprintln!(
        "[{:6.1} s] reference runs in virtual time: the GPU box under the planner and 3 other modes, SDRM3 against baselines",
        started.elapsed().as_secs_f64()
    );
    let gpu = gpu_virtual(&gpu_data, &a.gpu, a.gpu_virtual_s)?;
    let sdrm3 = xr_comparison(&a.scenario, &a.hardware)?;
    let files = write_outputs(&a.out, &live, &gpu)?;
    let report = render_report(
        &a,
        &live,
        &gpu,
        &sdrm3,
        &files,
        started.elapsed().as_secs_f64(),
    );
    std::fs::write(a.out.join("report.txt"), &report)
        .with_context(|| format!("writing {}", a.out.join("report.txt").display()))?;
    let mut so = std::io::stdout().lock();
    so.write_all(report.as_bytes())?;
    so.flush()?;
    Ok(())
}

/// What the live part measured.
struct Live {
    members: usize,
    /// Mutual TLS on every link; whether a plaintext call to the leader was refused.
    tls: bool,
    plaintext_refused: bool,
    first_leader: u64,
    failover: Failover,
    probe_model: String,
    probe: Vec<Sample>,
    polls: Vec<ModelPoll>,
    placement: Vec<PlacementRow>,
    /// The XR agent's own end-of-scenario summary (JSON on its stdout).
    xr_summary: Option<serde_json::Value>,
    events: Vec<(f64, String)>,
    load_s: f64,
    /// The GPU box as a live agent (when the agent can simulate GPUs).
    gpu_live: Option<GpuLive>,
    /// Plan changes from the replicated plan history (`placement show`), with when the demo
    /// first saw each (s since the load started).
    plan_events: Vec<(f64, api::PlanEvent)>,
}

/// One seed model on the live GPU box.
struct GpuModelLive {
    name: String,
    slo_ms: f64,
    /// When it was deployed and its load started, s since the load started.
    at_s: f64,
    samples: Arc<Mutex<Vec<Sample>>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

struct GpuLive {
    addr: String,
    models: Vec<GpuModelLive>,
}

/// `--dashboard`: the live page over the demo's own admin certificate, open while `live` runs.
async fn start_dashboard(
    a: &DemoArgs,
    net: &Links,
    clients: &[String],
    prog: &mut Progress,
) -> anyhow::Result<crate::dashboard::Running> {
    let args = crate::dashboard::DashboardArgs {
        listen: a.dashboard_listen.clone(),
        history_s: 600,
        poll_ms: 1000,
    };
    let running = crate::dashboard::start(
        crate::conn::Conn::with_tls(
            clients.to_vec(),
            Duration::from_secs(5),
            crate::tls::ClientTlsSource::ready(net.admin.clone()),
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

/// Whether this build's agent can simulate GPUs (`--accelerators sim-gpu:<profile>`, issue 9).
fn agent_simulates_gpus(gpu: &str) -> bool {
    format!("sim-gpu:{gpu}")
        .parse::<edgeplane_agent::config::AcceleratorSpec>()
        .is_ok()
}

/// Start the cluster and the agent, drive load, kill the leader, collect. Runs on the main
/// thread (see [`Children::spawn`]).
async fn live(
    a: &DemoArgs,
    hw: &[edgeplane_agent::catalog::HwAccelerator],
    scenario: &edgeplane_agent::catalog::Scenario,
    children: &mut Children,
) -> anyhow::Result<Live> {
    let data = tempfile::Builder::new()
        .prefix("edgeplane-demo-")
        .tempdir()
        .context("creating a temporary folder for the replicas' data")?;
    let logs = a.out.join("logs");
    let token = format!("demo-{:016x}", rand::random::<u64>());
    let mut prog = Progress::new(a.duration);
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
    let (leader, leader_addr, term) = loop {
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
        "cluster up: replica {leader} leads (term {term}, {leader_addr})"
    ));
    let _dashboard = match a.dashboard {
        true => Some(start_dashboard(a, &net, &clients, &mut prog).await?),
        false => None,
    };
    // Evidence that TLS is on: the same call in plaintext gets no answer.
    let plaintext_refused =
        net.tls() && status_of(&Links::insecure(), &leader_addr).await.is_none();
    prog.event(if plaintext_refused {
        "a plaintext ClusterStatus to the leader is refused: every call goes over mutual TLS"
    } else {
        "warning: a plaintext ClusterStatus to the leader was answered"
    });

    // The XR scenario's models, deployed so `models list` shows their live figures.
    for m in &scenario.models {
        deploy(
            &net,
            &clients,
            &m.name,
            m.period_ms as f64,
            m.fps as f64,
            Duration::from_secs(10),
        )
        .await?;
    }
    // The probe model: the scenario's cheapest model on this hardware.
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

    let xr_port = gpu_box::free_port()?;
    let xr_addr = format!("127.0.0.1:{xr_port}");
    let mut xr_args: Vec<String> = vec![
        "agent".into(),
        "--name".into(),
        XR_NODE.into(),
        "--coordinators".into(),
        clients.join(","),
        "--join-token".into(),
        token.clone(),
        "--listen".into(),
        xr_addr.clone(),
        "--data-dir".into(),
        data.path().join(XR_NODE).display().to_string(),
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
    xr_args.extend(net.server_flags(&format!("node-{XR_NODE}")));
    let xr_out = logs.join("xr-headset.summary.json");
    // The agent's scenario (and the agent) ends `duration` after its start, which is after
    // this instant: the probe stops here, so it never calls an agent that has just exited.
    let xr_ends = Instant::now() + Duration::from_secs_f64(a.duration);
    let pid = children.spawn(
        XR_NODE,
        &xr_args,
        &logs.join("xr-headset.log"),
        Some(&xr_out),
    )?;
    let _ = writeln!(pids, "xr-headset {pid}");
    std::fs::write(a.out.join("pids.txt"), &pids)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(s) = agent_status(&net, &xr_addr).await {
            if s.connected {
                break;
            }
        }
        if Instant::now() > deadline {
            bail!(
                "the XR agent did not connect to the cluster within 20 s; see {}",
                logs.join("xr-headset.log").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut gpu_live = None;
    if agent_simulates_gpus(&a.gpu) {
        let addr = format!("127.0.0.1:{}", gpu_box::free_port()?);
        let mut args: Vec<String> = vec!["agent".into()];
        args.extend(
            gpu_box::SimGpuAgent {
                name: GPU_NODE,
                listen: &addr,
                data_dir: data.path().join(GPU_NODE),
                gpu: &a.gpu,
                coordinators: &clients,
                join_token: &token,
                report_interval_ms: 500,
                max_backoff_ms: 500,
                worker_start_ms: None,
            }
            .args(&net),
        );
        let pid = children.spawn(GPU_NODE, &args, &logs.join("gpu-box.log"), None)?;
        let _ = writeln!(pids, "gpu-box {pid}");
        std::fs::write(a.out.join("pids.txt"), &pids)?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if agent_status(&net, &addr).await.is_some_and(|s| s.connected) {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "the GPU box agent did not connect within 20 s; see {}",
                    logs.join("gpu-box.log").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
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
        gpu_live = Some(GpuLive { addr, models });
    }
    let load_t0 = Instant::now();
    prog.event(format!(
        "xr-headset agent up: {} on {} simulated NPUs ({}), SDRM3, reporting to the leader",
        a.scenario,
        hw.len(),
        a.hardware
    ));
    // The XR models run on the headset's NPUs: the operator pins them there (the GPU planner
    // leaves pinned models alone).
    let mut epoch = 0;
    for m in &scenario.models {
        epoch = pin(&net, &clients, XR_NODE, &m.name, Duration::from_secs(10)).await?;
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

    let samples = Arc::new(Mutex::new(Vec::new()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stop_rx_gpu = stop_rx.clone();
    let probe = (a.probe_rate > 0.0).then(|| {
        start_probe(
            &net,
            xr_addr.clone(),
            probe_model.clone(),
            a.probe_rate,
            0.0,
            load_t0,
            Some(xr_ends),
            stop_rx,
            samples.clone(),
        )
    });
    if probe.is_some() {
        prog.event(format!(
            "probe: {} Infer requests/s for {probe_model} to the XR agent over gRPC",
            a.probe_rate
        ));
    }

    let mut polls: Vec<ModelPoll> = Vec::new();
    let mut placement: Vec<PlacementRow> = Vec::new();
    let mut failover = None;
    let mut current_leader = (leader, leader_addr);
    let kill_at = a.duration / 2.0;
    let mut next_poll = 0.0;
    let mut last_epochs: std::collections::BTreeMap<String, u64> = Default::default();
    let mut plan_events: Vec<(f64, api::PlanEvent)> = Vec::new();
    loop {
        let t = load_t0.elapsed().as_secs_f64();
        prog.bar.set_position(t.min(a.duration) as u64);
        if t >= a.duration {
            break;
        }
        if let Some(g) = gpu_live.as_mut() {
            for m in g
                .models
                .iter_mut()
                .filter(|m| m.task.is_none() && t >= m.at_s)
            {
                deploy(
                    &net,
                    &clients,
                    &m.name,
                    m.slo_ms,
                    a.gpu_rate,
                    Duration::from_secs(10),
                )
                .await?;
                m.task = Some(start_probe(
                    &net,
                    g.addr.clone(),
                    m.name.clone(),
                    a.gpu_rate,
                    m.slo_ms,
                    load_t0,
                    None,
                    stop_rx_gpu.clone(),
                    m.samples.clone(),
                ));
                prog.event(format!(
                    "deployed {} (SLO {} ms, {} req/s) and started its load on gpu-box",
                    m.name, m.slo_ms, a.gpu_rate
                ));
            }
        }
        if failover.is_none() && t >= kill_at {
            prog.bar.set_message("leader killed, measuring failover");
            let f = kill_leader(
                &net,
                children,
                &clients,
                &current_leader,
                &xr_addr,
                load_t0,
                &mut prog,
            )
            .await?;
            current_leader = (f.new_leader, clients[(f.new_leader - 1) as usize].clone());
            failover = Some(f);
            prog.bar.set_message("");
        }
        if t >= next_poll {
            next_poll = t + 0.5;
            poll(
                &net,
                &current_leader.1,
                t,
                &mut polls,
                &mut placement,
                &mut last_epochs,
                &mut plan_events,
                &mut prog,
            )
            .await;
            if let Some((_, m, _, met, _)) = polls.iter().rev().find(|p| p.1 == probe_model) {
                let n = samples.lock().expect("samples").len();
                prog.bar.set_message(format!(
                    "leader {}  {m}: {met:.1} % deadlines met  probe answers {n}",
                    current_leader.0
                ));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop_tx.send(true);
    if let Some(p) = probe {
        let _ = tokio::time::timeout(Duration::from_secs(5), p).await;
    }
    if let Some(g) = gpu_live.as_mut() {
        for m in &mut g.models {
            if let Some(t) = m.task.take() {
                let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
            }
        }
    }
    let load_s = load_t0.elapsed().as_secs_f64();
    prog.bar.finish_and_clear();
    prog.event("load finished; waiting for the XR agent's scenario summary");
    let exited = children.wait_exit(XR_NODE, Duration::from_secs(10));
    let xr_summary = if exited {
        std::fs::read_to_string(&xr_out)
            .ok()
            .and_then(|s| s.lines().rev().find_map(|l| serde_json::from_str(l).ok()))
    } else {
        None
    };
    prog.event("stopping the cluster");
    children.stop_all(Duration::from_secs(3));
    let failover =
        failover.ok_or_else(|| anyhow!("the leader was never killed (run too short)"))?;
    let probe = std::mem::take(&mut *samples.lock().expect("samples"));
    Ok(Live {
        members: 3,
        tls: net.tls(),
        plaintext_refused,
        first_leader: leader,
        failover,
        probe_model,
        probe,
        polls,
        placement,
        xr_summary,
        events: prog.log,
        load_s,
        gpu_live,
        plan_events,
    })
}

/// Poll `models list` (live figures, from the leader) and `placement show`.
#[allow(clippy::too_many_arguments)]
async fn poll(
    net: &Links,
    leader: &str,
    t: f64,
    polls: &mut Vec<ModelPoll>,
    placement: &mut Vec<PlacementRow>,
    last_epochs: &mut std::collections::BTreeMap<String, u64>,
    plan_events: &mut Vec<(f64, api::PlanEvent)>,
    prog: &mut Progress,
) {
    let Some(mut c) = admin(net, leader).await else {
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
            for m in r.models {
                polls.push((t, m.name, m.observed_rate, m.deadline_met_pct, m.energy_j));
            }
        }
    }
    if let Ok(Ok(r)) = tokio::time::timeout(
        Duration::from_millis(800),
        c.show_placement(api::ReadRequest { stale: false }),
    )
    .await
    {
        let r = r.into_inner();
        for ev in r.events {
            if plan_events.iter().all(|(_, x)| x.index != ev.index) {
                prog.event(format!(
                    "plan change for {} (epoch {}): {} -> {}",
                    ev.node, ev.epoch, ev.reason, ev.partitions
                ));
                plan_events.push((prog.t(), ev));
            }
        }
        for n in r.nodes {
            last_epochs.insert(n.node.clone(), n.epoch);
            for p in n.partitions {
                placement.push(PlacementRow {
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

/// SIGKILL the leader; measure until a new leader is elected, a write is acknowledged, and
/// the XR agent's session is open with the new leader.
async fn kill_leader(
    net: &Links,
    children: &mut Children,
    clients: &[String],
    leader: &(u64, String),
    xr_addr: &str,
    t0: Instant,
    prog: &mut Progress,
) -> anyhow::Result<Failover> {
    let (old, _) = leader.clone();
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
    let (new_leader, new_addr, term) = loop {
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
        "replica {new_leader} elected leader (term {term}) {elected_after_s:.2} s after the kill"
    ));
    // A write acknowledged by the new cluster (an idempotent re-deploy of a model).
    deploy(
        net,
        std::slice::from_ref(&new_addr),
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
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut agent_back_after_s = None;
    while Instant::now() < deadline {
        if let Some(s) = agent_status(net, xr_addr).await {
            if s.connected && s.leader_addr == new_addr {
                let d = killed.elapsed().as_secs_f64();
                agent_back_after_s = Some(d);
                prog.event(format!(
                    "xr-headset's session moved to the new leader {d:.2} s after the kill"
                ));
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Ok(Failover {
        killed_id: old,
        killed_at_s,
        new_leader,
        elected_after_s,
        write_after_s,
        agent_back_after_s,
    })
}

// ---------------------------------------------------------------------------------------------
// The GPU box in virtual time, and the XR comparison

struct GpuRun {
    gpu: String,
    adaptive: edgeplane_gpu::sim::SimResult,
    /// The same arrivals under the other partitioning modes.
    baselines: Vec<edgeplane_gpu::sim::SimResult>,
    /// (t, reason) of every plan the planner committed.
    changes: Vec<(f64, String)>,
    duration_s: f64,
    slo_ms: Vec<(String, f64)>,
}

fn gpu_profiles() -> anyhow::Result<edgeplane_gpu::profiles::Profiles> {
    Ok(edgeplane_gpu::GpuData::shipped()
        .context("loading the shipped GPU data")?
        .profiles)
}

fn gpu_virtual(
    data: &edgeplane_gpu::GpuData,
    gpu: &str,
    duration_s: f64,
) -> anyhow::Result<GpuRun> {
    use edgeplane_gpu::{policies, scenarios, sim};
    let sc = scenarios::seed(&data.profiles, gpu, 1, duration_s).context("--gpu")?;
    // The four modes see the same arrivals; they run side by side (one thread each).
    let sc = &sc;
    let (ad, adaptive, baselines) = std::thread::scope(|s| {
        let handles: Vec<_> = ["default_mps", "time_slicing", "gpulet"]
            .into_iter()
            .map(|mode| {
                s.spawn(move || {
                    let mut p: Box<dyn sim::PlanPolicy> = match mode {
                        "default_mps" => Box::new(policies::default_mps()),
                        "time_slicing" => Box::new(policies::time_slicing()),
                        _ => Box::new(policies::Gpulet::new()),
                    };
                    sim::run(data, sc, p.as_mut(), &mut |_| {})
                })
            })
            .collect();
        let mut adaptive = edgeplane_planner::sim_policy::Adaptive::default();
        let ad = sim::run(data, sc, &mut adaptive, &mut |_| {});
        let bl: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect();
        (ad, adaptive, bl)
    });
    let ad = ad?;
    let baselines = baselines.into_iter().collect::<Result<Vec<_>, _>>()?;
    let changes = adaptive
        .history
        .iter()
        .map(|(t, o)| {
            let why = o
                .decisions
                .iter()
                .find(|d| d.subject == "plan")
                .map(|d| d.reason.clone())
                .unwrap_or_else(|| "first plan: models deployed".into());
            let parts = o
                .plan
                .partitions
                .iter()
                .map(|p| {
                    format!(
                        "{}% {}",
                        p.share_pct,
                        p.tenants
                            .iter()
                            .map(|t| t.model.as_str())
                            .collect::<Vec<_>>()
                            .join("+")
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            (*t, format!("{why} -> [{parts}]"))
        })
        .collect();
    Ok(GpuRun {
        gpu: gpu.into(),
        adaptive: ad,
        baselines,
        changes,
        duration_s: sc.duration_s,
        slo_ms: sc
            .models
            .iter()
            .map(|m| (m.name.clone(), m.slo_ms))
            .collect(),
    })
}

struct XrComparison {
    duration_ms: f64,
    rows: Vec<(String, edgeplane_scheduler::Report)>,
}

/// SDRM3 against the baselines on the XR agent's scenario and hardware, same seed, in virtual
/// time (the scheduler simulator).
fn xr_comparison(scenario: &str, hardware: &str) -> anyhow::Result<XrComparison> {
    let cat = edgeplane_scheduler::Catalog::embedded();
    let duration_ms = 5000.0;
    let mut rows = Vec::new();
    for p in ["sdrm3", "xrbench", "edf"] {
        let mut cfg = edgeplane_scheduler::SimConfig::new(scenario, hardware, p);
        cfg.duration_ms = duration_ms;
        // as the live agent runs it: SDRM3 with its online weight tuner
        cfg.tune = p == "sdrm3";
        rows.push((
            p.to_string(),
            edgeplane_scheduler::sim::run(cat, &cfg)?.report,
        ));
    }
    Ok(XrComparison { duration_ms, rows })
}

// ---------------------------------------------------------------------------------------------
// Files

struct Files {
    latency_png: PathBuf,
    partitions_png: PathBuf,
    csvs: Vec<PathBuf>,
}

fn write_outputs(out: &Path, live: &Live, gpu: &GpuRun) -> anyhow::Result<Files> {
    let mut csvs = Vec::new();
    // live probe latency
    let mut s = String::from("t_s,model,latency_ms,answered,completed,deadline_met,reason\n");
    for x in &live.probe {
        let _ = writeln!(
            s,
            "{:.3},{},{:.3},{},{},{},\"{}\"",
            x.t_s,
            live.probe_model,
            x.latency_ms,
            x.answered,
            x.ok,
            x.met,
            x.error.replace('"', "'")
        );
    }
    csvs.push(write(out, "live_probe_latency.csv", &s)?);
    if let Some(g) = &live.gpu_live {
        let mut s =
            String::from("t_s,model,latency_ms,answered,completed,deadline_met,energy_mj,reason\n");
        for m in &g.models {
            for x in m.samples.lock().expect("samples").iter() {
                let _ = writeln!(
                    s,
                    "{:.3},{},{:.3},{},{},{},{:.3},\"{}\"",
                    x.t_s,
                    m.name,
                    x.latency_ms,
                    x.answered,
                    x.ok,
                    x.met,
                    x.energy_mj,
                    x.error.replace('"', "'")
                );
            }
        }
        csvs.push(write(out, "live_gpu_latency.csv", &s)?);
    }
    let mut s = String::from("t_s,model,observed_rate,deadline_met_pct,energy_j\n");
    for (t, m, r, met, e) in &live.polls {
        let _ = writeln!(s, "{t:.1},{m},{r:.2},{met:.2},{e:.4}");
    }
    csvs.push(write(out, "live_models.csv", &s)?);
    let mut s = String::from("t_s,node,epoch,accelerator,share_pct,models\n");
    for p in &live.placement {
        let _ = writeln!(
            s,
            "{:.1},{},{},{},{},{}",
            p.t_s,
            p.node,
            p.epoch,
            p.accelerator,
            p.share_pct,
            p.models.join("+")
        );
    }
    csvs.push(write(out, "live_placement.csv", &s)?);
    let mut s = String::from("mode,t_s,model,latency_ms\n");
    for r in std::iter::once(&gpu.adaptive).chain(&gpu.baselines) {
        for m in &r.models {
            for (t, l) in &m.samples {
                let _ = writeln!(s, "{},{t:.3},{},{l:.3}", r.mode, m.model);
            }
        }
    }
    csvs.push(write(out, "gpu_latency.csv", &s)?);
    let mut s = String::from("t_s,gpu,share_pct,models\n");
    for l in &gpu.adaptive.layouts {
        for (g, share, models) in &l.partitions {
            let _ = writeln!(
                s,
                "{:.3},gpu{g},{:.0},{}",
                l.t_s,
                share * 100.0,
                models.join("+")
            );
        }
    }
    csvs.push(write(out, "gpu_partitions.csv", &s)?);
    let mut s = String::from("t_s,source,reason\n");
    for (t, r) in &gpu.changes {
        let _ = writeln!(s, "{t:.1},planner (gpu box),\"{}\"", r.replace('"', "'"));
    }
    for (t, e) in &live.events {
        let _ = writeln!(s, "{t:.1},live,\"{}\"", e.replace('"', "'"));
    }
    csvs.push(write(out, "events.csv", &s)?);
    let latency_png = out.join("latency.png");
    draw_latency(&latency_png, live, gpu)?;
    let partitions_png = out.join("partitions.png");
    draw_partitions(&partitions_png, live, gpu)?;
    Ok(Files {
        latency_png,
        partitions_png,
        csvs,
    })
}

fn write(out: &Path, name: &str, text: &str) -> anyhow::Result<PathBuf> {
    let p = out.join(name);
    std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
    Ok(p)
}

/// Seed models take the first three (the same in every panel); the XR probe the fifth.
const COLORS: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
];

fn e<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing: {e}")
}

/// Two panels: the live probe's latency on the XR agent (leader kill marked), and the GPU
/// box's per-model latency through the planner (virtual time), log scale.
fn draw_latency(path: &Path, live: &Live, gpu: &GpuRun) -> anyhow::Result<()> {
    ensure_font()?;
    let root = BitMapBackend::new(path, (1200, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let (top, bottom) = root.split_vertically(450);
    let tmax = live.load_s.max(1.0);
    // Every live series: the XR probe, then the GPU box's models when it ran live.
    let mut series: Vec<(String, RGBColor, Vec<Sample>)> = vec![(
        format!("{} (XR agent)", live.probe_model),
        COLORS[4],
        live.probe.clone(),
    )];
    if let Some(g) = &live.gpu_live {
        for (i, m) in g.models.iter().enumerate() {
            series.push((
                format!("{} (GPU box)", m.name),
                COLORS[i % 4],
                m.samples.lock().expect("samples").clone(),
            ));
        }
    }
    let lmax = series
        .iter()
        .flat_map(|(_, _, v)| v.iter().filter(|s| s.ok).map(|s| s.latency_ms))
        .fold(1.0f64, f64::max)
        * 1.5;
    let mut ch = ChartBuilder::on(&top)
        .caption(
            format!(
                "live: Infer latency (leader SIGKILLed at {:.1} s)",
                live.failover.killed_at_s
            ),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..tmax, (0.1f64..lmax).log_scale())
        .map_err(e)?;
    ch.configure_mesh()
        .x_desc("s since load started")
        .y_desc("latency ms (log)")
        .draw()
        .map_err(e)?;
    for (name, c, v) in &series {
        let c = *c;
        ch.draw_series(
            v.iter()
                .filter(|s| s.ok)
                .map(move |s| Circle::new((s.t_s, s.latency_ms.max(0.1)), 2, c.filled())),
        )
        .map_err(e)?
        .label(name.clone())
        .legend(move |(x, y)| Circle::new((x, y), 3, c.filled()));
    }
    let k = live.failover.killed_at_s;
    ch.draw_series(LineSeries::new(
        [(k, 0.1), (k, lmax)],
        BLACK.stroke_width(2),
    ))
    .map_err(e)?
    .label("leader SIGKILLed")
    .legend(|(x, y)| PathElement::new([(x, y), (x + 15, y)], BLACK));
    ch.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(e)?;

    let gmax = gpu
        .adaptive
        .models
        .iter()
        .flat_map(|m| m.samples.iter().map(|s| s.1 as f64))
        .chain(gpu.slo_ms.iter().map(|x| x.1))
        .fold(1.0f64, f64::max)
        * 1.3;
    let mut ch = ChartBuilder::on(&bottom)
        .caption(
            format!(
                "GPU box ({}, virtual time): latency per model through the planner",
                gpu.gpu
            ),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..gpu.duration_s, (0.5f64..gmax).log_scale())
        .map_err(e)?;
    ch.configure_mesh()
        .x_desc("virtual s")
        .y_desc("latency ms (log)")
        .draw()
        .map_err(e)?;
    for (i, m) in gpu.adaptive.models.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        // every 10th sample keeps the picture light
        ch.draw_series(
            m.samples
                .iter()
                .step_by(10)
                .map(move |(t, l)| Circle::new((*t as f64, (*l as f64).max(0.5)), 1, c.filled())),
        )
        .map_err(e)?
        .label(m.model.clone())
        .legend(move |(x, y)| Circle::new((x, y), 3, c.filled()));
        if let Some((_, slo)) = gpu.slo_ms.iter().find(|(n, _)| *n == m.model) {
            ch.draw_series(LineSeries::new(
                [(0.0, *slo), (gpu.duration_s, *slo)],
                c.stroke_width(1),
            ))
            .map_err(e)?;
        }
    }
    ch.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(e)?;
    root.present()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// A serving layout at a time: (share %, models) per partition.
type Snapshot = (f64, Vec<(f64, Vec<String>)>);

/// The GPU share of each model over time (stacked): live from `placement show` polls of the
/// GPU box when it ran live (top), and the planner's layouts in virtual time.
fn draw_partitions(path: &Path, live: &Live, gpu: &GpuRun) -> anyhow::Result<()> {
    ensure_font()?;
    let models: Vec<String> = gpu.slo_ms.iter().map(|(n, _)| n.clone()).collect();
    let virt: Vec<Snapshot> = gpu
        .adaptive
        .layouts
        .iter()
        .map(|l| {
            (
                l.t_s,
                l.partitions
                    .iter()
                    .map(|p| (p.1 * 100.0, p.2.clone()))
                    .collect(),
            )
        })
        .collect();
    let mut live_snaps: Vec<Snapshot> = Vec::new();
    for p in live.placement.iter().filter(|p| p.node == GPU_NODE) {
        if live_snaps.last().is_none_or(|s| s.0 != p.t_s) {
            live_snaps.push((p.t_s, Vec::new()));
        }
        if let Some(s) = live_snaps.last_mut() {
            s.1.push((p.share_pct as f64, p.models.clone()));
        }
    }
    let height = if live_snaps.is_empty() { 500 } else { 1000 };
    let root = BitMapBackend::new(path, (1200, height)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    if live_snaps.is_empty() {
        draw_shares(
            &root,
            &format!(
                "GPU box ({}, virtual time): MPS share per model, planned by the planner",
                gpu.gpu
            ),
            "virtual s",
            gpu.duration_s,
            &models,
            &virt,
        )?;
    } else {
        let (top, bottom) = root.split_vertically(500);
        draw_shares(
            &top,
            &format!(
                "live: gpu-box's partitions ({}), polled from `placement show` twice a second",
                gpu.gpu
            ),
            "s since load started",
            live.load_s.max(1.0),
            &models,
            &live_snaps,
        )?;
        draw_shares(
            &bottom,
            &format!(
                "virtual time: the same workload over {} s, planned by the same planner",
                gpu.duration_s
            ),
            "virtual s",
            gpu.duration_s,
            &models,
            &virt,
        )?;
    }
    root.present()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn draw_shares(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    title: &str,
    x_desc: &str,
    tmax: f64,
    models: &[String],
    snaps: &[Snapshot],
) -> anyhow::Result<()> {
    let mut ch = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..tmax, 0.0..100.0)
        .map_err(e)?;
    ch.configure_mesh()
        .x_desc(x_desc)
        .y_desc("GPU share %")
        .draw()
        .map_err(e)?;
    for (li, (t0, parts)) in snaps.iter().enumerate() {
        let t1 = snaps.get(li + 1).map_or(tmax, |n| n.0);
        let mut base = 0.0;
        for (mi, m) in models.iter().enumerate() {
            let share: f64 = parts
                .iter()
                .filter(|p| p.1.iter().any(|x| x == m))
                .map(|p| p.0 / p.1.len().max(1) as f64)
                .sum();
            if share > 0.0 {
                ch.draw_series(std::iter::once(Rectangle::new(
                    [(*t0, base), (t1, (base + share).min(100.0))],
                    COLORS[mi % COLORS.len()].mix(0.7).filled(),
                )))
                .map_err(e)?;
                base += share;
            }
        }
    }
    for (mi, m) in models.iter().enumerate() {
        let c = COLORS[mi % COLORS.len()];
        ch.draw_series(std::iter::empty::<Rectangle<(f64, f64)>>())
            .map_err(e)?
            .label(m.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], c.filled()));
    }
    ch.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(e)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The report

fn render_report(
    a: &DemoArgs,
    live: &Live,
    gpu: &GpuRun,
    xr: &XrComparison,
    files: &Files,
    total_s: f64,
) -> String {
    let mut r = String::new();
    let f = &live.failover;
    let _ = writeln!(r, "\n=== Edgeplane demo report ({total_s:.0} s) ===\n");
    let _ = writeln!(
        r,
        "Cluster: {} coordinator replicas (real processes, gRPC on loopback, sled); replica {} led first. {}",
        live.members,
        live.first_leader,
        match (live.tls, live.plaintext_refused) {
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
    let around: Vec<&Sample> = live
        .probe
        .iter()
        .filter(|s| s.t_s >= f.killed_at_s - 1.0 && s.t_s <= f.killed_at_s + f.write_after_s + 1.0)
        .collect();
    if !live.probe.is_empty() {
        let answered = live.probe.iter().filter(|s| s.answered).count();
        let ok = live.probe.iter().filter(|s| s.ok).count();
        let met = live.probe.iter().filter(|s| s.met).count();
        let _ = writeln!(
            r,
            "Serving through the failover: the demo sent {} Infer requests for {} to the XR agent: {} answered ({} RPCs failed), {} completed, {} within deadline ({} dropped by the scheduler as infeasible); of the {} sent from 1 s before the kill to 1 s after the first write, {} were answered.",
            live.probe.len(),
            live.probe_model,
            answered,
            live.probe.len() - answered,
            ok,
            met,
            answered - ok,
            around.len(),
            around.iter().filter(|s| s.answered).count()
        );
    }

    let _ = writeln!(
        r,
        "\nXR device agent (live, real time, SDRM3 with its weight tuner): {} on {} simulated NPUs, {:.0} s",
        a.scenario, a.hardware, live.load_s
    );
    let _ = writeln!(
        r,
        "  {:<26} {:>7} {:>14} {:>8} {:>7} {:>11}",
        "model", "frames", "deadlines met", "missed", "drops", "energy mJ"
    );
    match live
        .xr_summary
        .as_ref()
        .and_then(|s| s["models"].as_array())
    {
        Some(models) => {
            for m in models {
                let n = m["arrivals"].as_u64().unwrap_or(0);
                let met = m["deadlines_met"].as_u64().unwrap_or(0);
                let _ = writeln!(
                    r,
                    "  {:<26} {:>7} {:>7} ({:>4.1}%) {:>8} {:>7} {:>11.1}",
                    m["model"].as_str().unwrap_or("?"),
                    n,
                    met,
                    if n == 0 {
                        0.0
                    } else {
                        100.0 * met as f64 / n as f64
                    },
                    m["deadlines_missed"].as_u64().unwrap_or(0),
                    m["drops"].as_u64().unwrap_or(0),
                    m["energy_mj"].as_f64().unwrap_or(0.0)
                );
            }
            if let Some(s) = &live.xr_summary {
                let _ = writeln!(
                    r,
                    "  all: deadlines met {:.1} % of {} frames, scheduler {:.1} µs per decision",
                    100.0 * s["deadline_met_rate"].as_f64().unwrap_or(0.0),
                    s["frames"].as_u64().unwrap_or(0),
                    s["decision_overhead_us"].as_f64().unwrap_or(0.0)
                );
            }
        }
        None => {
            let _ = writeln!(
                r,
                "  (the agent's summary is missing; last figures the leader had, from `models list`:)"
            );
            let mut seen = std::collections::BTreeSet::new();
            for (_, m, _, met, en) in live.polls.iter().rev() {
                if seen.insert(m.clone()) {
                    let _ = writeln!(
                        r,
                        "  {m:<26} deadlines met {met:.1} %  energy {:.1} mJ",
                        en * 1000.0
                    );
                }
            }
        }
    }
    let _ = writeln!(
        r,
        "\nSDRM3 (with its weight tuner, as the live agent) against baselines on the same scenario and NPUs (scheduler simulator, virtual time, {} ms, seed 1):",
        xr.duration_ms
    );
    let _ = writeln!(
        r,
        "  {:<9} {:>8} {:>11} {:>9} {:>12} {:>10}",
        "policy", "UXCost", "vs sdrm3", "miss", "deadlines met", "energy mJ"
    );
    let base = xr.rows.first().map_or(1.0, |x| x.1.uxcost);
    for (p, rep) in &xr.rows {
        let met: u64 = rep
            .models
            .iter()
            .map(|m| m.completed - m.late.min(m.completed))
            .sum();
        let _ = writeln!(
            r,
            "  {:<9} {:>8.3} {:>10.2}x {:>9.3} {:>12} {:>10.0}",
            p,
            rep.uxcost,
            rep.uxcost / base,
            rep.miss_rate,
            format!("{met}/{}", rep.frames),
            rep.energy_mj
        );
    }

    if let Some(g) = &live.gpu_live {
        let _ = writeln!(
            r,
            "\nGPU box (live agent, one simulated {} GPU, placed by the leader's planner): the seed workload, {} req/s each, arriving at {}",
            a.gpu,
            a.gpu_rate,
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
            let v = m.samples.lock().expect("samples");
            let sent = v.len();
            let refused = v.iter().filter(|x| !x.answered).count();
            let met = v.iter().filter(|x| x.met).count();
            let p99 = Latencies::from_ms(v.iter().filter(|x| x.ok).map(|x| x.latency_ms))
                .quantile_ms(0.99);
            let energy: f64 = v.iter().map(|x| x.energy_mj).sum::<f64>() / 1000.0;
            let first = v
                .iter()
                .filter(|x| x.ok)
                .map(|x| x.t_s)
                .fold(f64::INFINITY, f64::min);
            let _ = writeln!(
                r,
                "  {:<10} {:>6} {:>9} {:>7}/{:<7} {:>5.1}% {:>8.0} {:>9.1} {:>10.2} {:>13}",
                m.name,
                sent,
                refused,
                met,
                sent,
                if sent == 0 {
                    0.0
                } else {
                    100.0 * met as f64 / sent as f64
                },
                m.slo_ms,
                p99,
                energy,
                if first.is_finite() {
                    format!("+{:.1} s", first - m.at_s)
                } else {
                    "never".into()
                }
            );
        }
        let _ = writeln!(
            r,
            "  (refused = the agent answered that the model is not (yet) placed on it, before the plan reached it)"
        );
    }
    let _ = writeln!(
        r,
        "\nGPU box ({}): the seed workload through the planner (VIRTUAL TIME, {} s; ResNet18, ResNet50, VGG16 arrive at 0, 50, 100 s, 50 req/s each):",
        gpu.gpu, gpu.duration_s
    );
    let _ = writeln!(
        r,
        "  {:<14} {:<10} {:>22} {:>9} {:>10}",
        "mode", "model", "deadlines (SLO) met", "p99 ms", "energy J"
    );
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
            let _ = writeln!(
                r,
                "  {:<14} {:<10} {:>7}/{:<7} {:>5.1}% {:>9.1} {:>10.1}",
                mode,
                m.model,
                m.within_slo,
                m.arrived,
                100.0 * m.slo_attainment(),
                m.p99_ms,
                m.energy_j
            );
        }
    }
    let _ = writeln!(r, "\nPlan changes with their reasons:");
    for (t, e) in live
        .events
        .iter()
        .filter(|(_, e)| e.starts_with("operator pin"))
    {
        let _ = writeln!(r, "  live     t={t:>5.1} s  {e}");
    }
    for (t, ev) in &live.plan_events {
        let _ = writeln!(
            r,
            "  live     t={t:>5.1} s  planner, {} epoch {}: {} -> {}",
            ev.node, ev.epoch, ev.reason, ev.partitions
        );
    }
    if live.plan_events.is_empty() && live.gpu_live.is_some() {
        let _ = writeln!(
            r,
            "  live     (the leader's planner committed no plan change during the run)"
        );
    }
    for (t, why) in &gpu.changes {
        let _ = writeln!(r, "  virtual  t={t:>5.1} s  planner: {why}");
    }
    let _ = writeln!(r, "\nWhat was real and what was simulated:");
    if live.gpu_live.is_some() {
        let _ = writeln!(r, "  real: 3 coordinator processes, Raft, sled, gRPC on loopback, the SIGKILL and the election; two agent processes, their registration, sessions and reports; the leader's planner and its plans committed through Raft; the XR agent's real-time SDRM3 loop; every Infer request.");
        let _ = writeln!(r, "  simulated: the NPUs (XRBench cost tables: each block waits its modelled latency) and the GPU (its profiled latency for the batch and MPS share); the planner-vs-baselines GPU table and the SDRM3-vs-baselines table are virtual-time runs.");
    } else {
        let _ = writeln!(r, "  real: 3 coordinator processes, Raft, sled, gRPC on loopback, the SIGKILL and the election; the XR agent process, its registration, session, reports and real-time SDRM3 loop; the Infer requests.");
        let _ = writeln!(r, "  simulated: the NPUs (XRBench cost tables: each block waits its modelled latency); the GPU box runs in virtual time through the planner and the GPU partition simulator (this build's agent cannot simulate a GPU: issue 9).");
    }
    let _ = writeln!(
        r,
        "\nPictures: {} (latency over time), {} (partitions over time)",
        files.latency_png.display(),
        files.partitions_png.display()
    );
    let _ = writeln!(
        r,
        "CSVs: {}",
        files
            .csvs
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        r,
        "Logs of every process: {}; this report: {}",
        a.out.join("logs").display(),
        a.out.join("report.txt").display()
    );
    r
}
