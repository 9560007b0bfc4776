//! The composition root: discovers the accelerators, builds the scheduling core, the
//! executors and the worker factory for them, and starts the driver, the Inference API, the
//! coordinator link, the metrics and the counter persister. The only place that tells
//! accelerator kinds apart (simulated NPUs, GPUs of the profile table, the CPU worker).

use crate::config::{self, AgentConfig};
use crate::discovery::Accelerator;
use crate::exec::factory::{full_device, OipWorkerFactory, SimWorkerFactory, WorkerFactory};
use crate::exec::sim::SimExecutor;
use crate::exec::worker::{self, Profile, WorkerNodeError};
use crate::exec::Executor;
use crate::sched::engine::EngineCore;
use crate::sched::gpu::GpuCore;
use crate::sched::refuse::RefuseCore;
use crate::sched::{check_policy, SchedulingCore};
use crate::{api, discovery, join, link, metrics, runtime, scenario, stats, store, AgentError};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

/// Build the core for `policy` over `accelerators` (and the scenario's cascades, if any).
pub fn build(
    policy: &str,
    accelerators: &[Accelerator],
    scenario: Option<&str>,
) -> Result<Box<dyn SchedulingCore>, String> {
    build_with(policy, accelerators, scenario, false, false)
}

/// [`build`], optionally with SDRM3's online tuner and Supernet controller switched on.
pub fn build_with(
    policy: &str,
    accelerators: &[Accelerator],
    scenario: Option<&str>,
    tune: bool,
    supernet: bool,
) -> Result<Box<dyn SchedulingCore>, String> {
    check_policy(policy)?;
    let gpus: Vec<(String, String)> = accelerators
        .iter()
        .filter_map(|a| a.gpu_profile.as_ref().map(|p| (a.id.clone(), p.clone())))
        .collect();
    if !gpus.is_empty() {
        // GPUs in the profile table: the assignment's partitions are the accelerators
        return Ok(Box::new(GpuCore::new(gpus)?));
    }
    if accelerators.iter().any(|a| a.sim.is_some()) {
        let mut core = EngineCore::new(policy, accelerators, scenario)?;
        if tune {
            core.enable_tuner();
        }
        if supernet {
            core.enable_supernet();
        }
        return Ok(Box::new(core));
    }
    tracing::warn!(
        policy,
        "no accelerator this agent can schedule on (no simulated NPU, no GPU of the profile table, no CPU worker): every request will be refused"
    );
    Ok(Box::new(RefuseCore))
}

/// The configured core for simulated or GPU accelerators, with its minimum block.
fn configured_core(
    cfg: &AgentConfig,
    accelerators: &[Accelerator],
) -> Result<Box<dyn SchedulingCore>, AgentError> {
    let mut core = build_with(
        &cfg.policy,
        accelerators,
        cfg.scenario.as_deref(),
        cfg.tune,
        cfg.supernet,
    )
    .map_err(AgentError::Policy)?;
    core.set_min_block_ms(cfg.min_block_us as f64 / 1000.0);
    Ok(core)
}

/// The address registered with the coordinator: `--advertise-addr` when given; the bound
/// address when it is a specific IP; for a wildcard (0.0.0.0, [::]) the local IP this host
/// uses to reach the first coordinator that resolves (no packet is sent: a UDP socket is
/// connected, its local address read), then the host name, with the bound port.
pub async fn advertise_addr(cfg: &AgentConfig, bound: std::net::SocketAddr) -> String {
    if let Some(a) = &cfg.advertise_addr {
        return a.clone();
    }
    if !bound.ip().is_unspecified() {
        return bound.to_string();
    }
    for c in &cfg.coordinators {
        let hp = c
            .strip_prefix("http://")
            .or_else(|| c.strip_prefix("https://"))
            .unwrap_or(c);
        let Ok(mut addrs) = tokio::net::lookup_host(hp).await else {
            continue;
        };
        let Some(target) = addrs.next() else { continue };
        let any = if target.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        };
        if let Ok(sock) = std::net::UdpSocket::bind(any) {
            if sock.connect(target).is_ok() {
                if let Ok(l) = sock.local_addr() {
                    if !l.ip().is_unspecified() {
                        return std::net::SocketAddr::new(l.ip(), bound.port()).to_string();
                    }
                }
            }
        }
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    if host.is_empty() {
        format!("127.0.0.1:{}", bound.port())
    } else {
        format!("{host}:{}", bound.port())
    }
}

/// Run the configured scenario in virtual time through the same core; returns its summary.
pub fn run_virtual(cfg: &AgentConfig) -> Result<serde_json::Value, AgentError> {
    let accelerators = discovery::discover(&cfg.accelerators)?;
    let ids: Vec<String> = accelerators.iter().map(|a| a.id.clone()).collect();
    let core = configured_core(cfg, &accelerators)?;
    let name = cfg.scenario.clone().unwrap_or_default();
    let mut st = scenario::simulate(core, &ids, &name, cfg.scenario_duration_ms, cfg.seed)?;
    let mut s = st.summary_json();
    s["scenario"] = serde_json::json!(name);
    s["policy"] = serde_json::json!(cfg.policy);
    s["clock"] = serde_json::json!("virtual");
    s["accelerators"] = serde_json::json!(String::from(cfg.accelerators.clone()));
    Ok(s)
}

/// One clock's run of a scenario, for [`compare_virtual`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClockRun {
    pub frames: u64,
    pub deadlines_met: u64,
    /// Deadlines met per frame released, in percent.
    pub deadline_met_pct: f64,
    pub models: Vec<ModelRun>,
}

/// One model of a [`ClockRun`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelRun {
    pub model: String,
    pub arrivals: u64,
    pub met: u64,
    pub missed: u64,
    pub drops: u64,
    pub p99_ms: f64,
}

impl ClockRun {
    fn of(st: &stats::Stats) -> ClockRun {
        let models: Vec<ModelRun> = st
            .models
            .iter()
            .map(|(name, m)| ModelRun {
                model: name.clone(),
                arrivals: m.arrivals,
                met: m.met,
                missed: m.missed,
                drops: m.drops,
                p99_ms: m.all.quantile_ms(0.99),
            })
            .collect();
        let frames: u64 = models.iter().map(|m| m.arrivals).sum();
        let met: u64 = models.iter().map(|m| m.met).sum();
        ClockRun {
            frames,
            deadlines_met: met,
            deadline_met_pct: if frames == 0 {
                0.0
            } else {
                100.0 * met as f64 / frames as f64
            },
            models,
        }
    }
}

/// What `--compare-virtual` prints: the same scenario, seed, policy and weights in virtual
/// time and live, and the live run's deficit in points.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Comparison {
    pub scenario: String,
    pub policy: String,
    pub seed: u64,
    pub duration_ms: u64,
    #[serde(rename = "virtual")]
    pub virtual_time: ClockRun,
    pub live: ClockRun,
    /// virtual − live deadline-met percentage.
    pub gap_points: f64,
}

/// Run the configured scenario in virtual time, then live through the real runtime with
/// simulated executors (standalone: no server, no coordinator), same core, seed and weights.
pub async fn compare_virtual(cfg: &AgentConfig) -> Result<Comparison, AgentError> {
    let accelerators = discovery::discover(&cfg.accelerators)?;
    let ids: Vec<String> = accelerators.iter().map(|a| a.id.clone()).collect();
    let name = cfg.scenario.clone().unwrap_or_default();
    let build = || configured_core(cfg, &accelerators);
    let virt = scenario::simulate(build()?, &ids, &name, cfg.scenario_duration_ms, cfg.seed)?;
    let shared = Arc::new(runtime::Shared::new(
        &cfg.name,
        accelerators.clone(),
        runtime::Ledger::new(stats::Stats::new(&ids)),
        None,
    ));
    let executors = accelerators
        .iter()
        .map(|_| Arc::new(SimExecutor::default()) as Arc<dyn Executor>)
        .collect();
    let (stop, _) = broadcast::channel(1);
    let (rt, task) = runtime::start(shared.clone(), build()?, executors, stop.subscribe());
    scenario::run(
        rt,
        &name,
        Duration::from_millis(cfg.scenario_duration_ms),
        cfg.seed,
        stop.subscribe(),
    )
    .await?;
    let _ = stop.send(());
    let _ = task.await;
    let live = shared.ledger.read(ClockRun::of);
    let virtual_time = ClockRun::of(&virt);
    Ok(Comparison {
        scenario: name,
        policy: cfg.policy.clone(),
        seed: cfg.seed,
        duration_ms: cfg.scenario_duration_ms,
        gap_points: virtual_time.deadline_met_pct - live.deadline_met_pct,
        virtual_time,
        live,
    })
}

/// How long shutdown waits for open Inference connections to finish.
const SERVER_DRAIN: Duration = Duration::from_secs(5);

/// The core, the fixed accelerators' executors and the partitions' worker factory of this
/// node. A worker-backed node (`--accelerators cpu`): real execution on the worker, scheduled
/// by the engine over the worker's measured profile; the worker is one 100 % partition,
/// started through the same [`WorkerFactory`] seam the GPU partitions use, and kept in
/// `worker` for the agent's lifetime.
async fn node_parts(
    cfg: &AgentConfig,
    accelerators: &mut [Accelerator],
    worker: &mut Option<Arc<crate::exec::oip::WorkerHandle>>,
) -> Result<
    (
        Box<dyn SchedulingCore>,
        Vec<Arc<dyn Executor>>,
        Arc<dyn WorkerFactory>,
    ),
    AgentError,
> {
    if cfg.accelerators == config::AcceleratorSpec::Cpu {
        let id = accelerators[0].id.clone();
        let (handle, profile) = worker::start(&cfg.worker, &cfg.data_dir, &id).await?;
        let core = build_core(&cfg.policy, &profile, &cfg.worker.models, 1)?;
        // Reported with the registration: the planner plans this node on what it measured.
        accelerators[0].measured = Some(profile.reported(&cfg.worker.models));
        let factory = Arc::new(OipWorkerFactory {
            worker: handle.clone(),
        });
        let ex = factory.start(&full_device(&id, &cfg.worker.models), Box::new(|_| {}));
        *worker = Some(handle);
        return Ok((core, vec![ex], factory));
    }
    let core = configured_core(cfg, accelerators)?;
    let executors = accelerators
        .iter()
        .map(|_| Arc::new(SimExecutor::default()) as Arc<dyn Executor>)
        .collect();
    let factory = Arc::new(SimWorkerFactory {
        start_time: Duration::from_millis(cfg.worker_start_ms),
    });
    Ok((core, executors, factory))
}

/// The node's TLS material: joined with the per-node token (only the CA given), from an
/// earlier join, or as configured; checked to be this node's certificate.
async fn node_tls(
    cfg: &AgentConfig,
    advertise: &str,
    shared: &runtime::Shared,
    join_shutdown: broadcast::Receiver<()>,
) -> Result<Option<Arc<edgeplane_tls::TlsMaterial>>, AgentError> {
    let tls = match &cfg.join_ca {
        // Only the CA: join with the per-node token first (unless an earlier join left its
        // certificate in the data dir), then authenticate by the certificate received.
        Some(ca) => {
            let paths = if join::has_joined(&cfg.data_dir) {
                tracing::info!("using the node certificate of an earlier join");
                join::joined_paths(&cfg.data_dir, ca)
            } else {
                let req = join::JoinRequest {
                    name: &cfg.name,
                    token: &cfg.join_token,
                    ca,
                    data_dir: &cfg.data_dir,
                    coordinators: &cfg.coordinators,
                    agent_addr: advertise,
                    accelerators: shared.accelerators.iter().map(|a| a.to_proto()).collect(),
                    max_backoff: Duration::from_millis(cfg.max_backoff_ms),
                };
                join::join(req, join_shutdown).await?
            };
            Some(edgeplane_tls::TlsMaterial::load(paths)?)
        }
        None => edgeplane_tls::load_or_insecure(cfg.tls.clone(), cfg.insecure)?,
    };
    if let Some(m) = &tls {
        let want = edgeplane_tls::Principal::Node(cfg.name.clone());
        let id = m.identity();
        if id.principal != want {
            return Err(edgeplane_tls::Error::Config(format!(
                "--tls-cert: the certificate is for {id}, but this agent is node/{} (--name)",
                cfg.name
            ))
            .into());
        }
        m.spawn_reloader(Duration::from_secs(2));
    }
    Ok(tls)
}

/// Serve the Inference API (with health and reflection) on `listener` until shutdown.
async fn serve_inference(
    rt: runtime::RuntimeHandle,
    listener: tokio::net::TcpListener,
    tls: Option<Arc<edgeplane_tls::TlsMaterial>>,
    mut srv_shutdown: broadcast::Receiver<()>,
) -> Result<tokio::task::JoinHandle<Result<(), tonic::transport::Error>>, AgentError> {
    let (health, health_svc) = tonic_health::server::health_reporter();
    health
        .set_serving::<edgeplane_proto::agent::inference_server::InferenceServer<api::InferenceService>>()
        .await;
    // systemd (Type=notify): the Inference API is served.
    edgeplane_telemetry::service::ready();
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(edgeplane_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| AgentError::Policy(format!("gRPC reflection: {e}")))?;
    let svc =
        edgeplane_proto::agent::inference_server::InferenceServer::new(api::InferenceService {
            runtime: rt,
        })
        .max_decoding_message_size(8 << 20);
    let mut routes = tonic::service::RoutesBuilder::default();
    routes.add_service(svc);
    routes.add_service(health_svc);
    routes.add_service(reflection);
    // Infer runs models: inference clients and admins. Status, Health and reflection are
    // reads for any certificate of the cluster CA.
    let layer =
        edgeplane_tls::AuthLayer::new("inference", tls.is_some(), std::sync::Arc::new(infer_need));
    let server = tokio::spawn(edgeplane_tls::serve_routes(
        "inference",
        routes.routes(),
        listener,
        tls,
        layer,
        async move {
            let _ = srv_shutdown.recv().await;
        },
    ));
    Ok(server)
}

/// The coordinator link's task (None when standalone).
fn spawn_link(
    cfg: &AgentConfig,
    shared: &Arc<runtime::Shared>,
    store: &Arc<store::DataDir>,
    tls: Option<Arc<edgeplane_tls::TlsMaterial>>,
    advertise: &str,
    link_shutdown: broadcast::Receiver<()>,
) -> Option<tokio::task::JoinHandle<()>> {
    if cfg.coordinators.is_empty() {
        tracing::info!("no coordinators configured: running standalone");
        None
    } else {
        let link = link::Link {
            shared: shared.clone(),
            store: store.clone(),
            coordinators: cfg.coordinators.clone(),
            // A joined agent authenticates by its certificate: its per-node token is used up
            // and is never sent again.
            join_token: if cfg.join_ca.is_some() {
                edgeplane_tls::Secret::default()
            } else {
                cfg.join_token.clone()
            },
            tls: edgeplane_tls::ClientTls(tls),
            agent_addr: advertise.to_string(),
            report_interval: Duration::from_millis(cfg.report_interval_ms),
            max_backoff: Duration::from_millis(cfg.max_backoff_ms),
            seed: cfg.seed,
            session_timeout: Duration::from_millis(cfg.session_timeout_ms),
        };
        Some(tokio::spawn(link.run(link_shutdown)))
    }
}

/// The Prometheus endpoint's task (None without `--metrics-addr`).
async fn spawn_metrics(
    cfg: &AgentConfig,
    shared: &Arc<runtime::Shared>,
    metrics_shutdown: broadcast::Receiver<()>,
) -> Result<Option<tokio::task::JoinHandle<()>>, AgentError> {
    Ok(match cfg.metrics_addr {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| AgentError::Listen { addr, source })?;
            tracing::info!(metrics = %addr, "Prometheus metrics on /metrics");
            Some(tokio::spawn(metrics::serve(
                l,
                shared.clone(),
                metrics_shutdown,
            )))
        }
        None => {
            drop(metrics_shutdown);
            None
        }
    })
}

/// Counters reach the data dir every report interval (the link also saves them before each
/// report) and once more at shutdown: work done while cut off survives a restart.
fn spawn_persister(
    cfg: &AgentConfig,
    shared: &Arc<runtime::Shared>,
    store: &Arc<store::DataDir>,
    mut persist_shutdown: broadcast::Receiver<()>,
) -> tokio::task::JoinHandle<()> {
    // Counters reach the data dir every report interval (the link also saves them before
    // each report) and once more at shutdown: work done while cut off survives a restart.
    {
        let (shared, store) = (shared.clone(), store.clone());
        let every = Duration::from_millis(cfg.report_interval_ms);
        tokio::spawn(async move {
            let save = || {
                let c = shared.ledger.counters(shared.start.elapsed().as_secs_f64());
                if let Err(e) = store.save_counters(&c) {
                    tracing::warn!(error = %e, "cannot persist the counters");
                }
            };
            loop {
                tokio::select! {
                    _ = persist_shutdown.recv() => break,
                    _ = tokio::time::sleep(every) => save(),
                }
            }
            save();
        })
    }
}

/// Run the agent until `shutdown` fires (or the scenario ends with `exit_after_scenario`).
/// Returns the scenario summary when a scenario ran.
pub async fn run(
    cfg: AgentConfig,
    shutdown: broadcast::Sender<()>,
) -> Result<Option<serde_json::Value>, AgentError> {
    // Every subscription the run needs is taken before anything can fire the broadcast: a
    // receiver made after a send never sees it (Ctrl-C during a scenario hung here).
    let mut done = shutdown.subscribe();
    let rt_shutdown = shutdown.subscribe();
    let srv_shutdown = shutdown.subscribe();
    let link_shutdown = shutdown.subscribe();
    let scenario_shutdown = shutdown.subscribe();
    let metrics_shutdown = shutdown.subscribe();
    let persist_shutdown = shutdown.subscribe();
    let join_shutdown = shutdown.subscribe();
    let mut accelerators = discovery::discover(&cfg.accelerators)?;
    tracing::info!(
        node = %cfg.name,
        accelerators = ?accelerators.iter().map(|a| format!("{}:{}", a.id, a.kind)).collect::<Vec<_>>(),
        "accelerators discovered"
    );
    let store = Arc::new(store::DataDir::open(&cfg.data_dir)?);
    store.claim(&cfg.name)?;
    let persisted = store.load_or_set_aside()?;
    if let Some(a) = &persisted {
        tracing::info!(epoch = a.epoch, "serving the persisted assignment");
    }
    let counters = store.load_counters()?;
    let mut worker_handle = None;
    let (core, executors, factory) =
        node_parts(&cfg, &mut accelerators, &mut worker_handle).await?;
    let ids: Vec<String> = accelerators.iter().map(|a| a.id.clone()).collect();
    let mut st = stats::Stats::new(&ids);
    st.restore(&counters);
    if counters.uptime_s > 0.0 {
        tracing::info!(
            uptime_s = counters.uptime_s,
            "continuing the counters persisted by the previous run"
        );
    }
    let shared = Arc::new(runtime::Shared::new(
        &cfg.name,
        accelerators,
        runtime::Ledger::new(st),
        persisted,
    ));
    let (rt, rt_task) = runtime::start_with(shared.clone(), core, executors, factory, rt_shutdown);

    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| AgentError::Listen {
            addr: cfg.listen,
            source,
        })?;
    let local = listener.local_addr().map_err(|source| AgentError::Listen {
        addr: cfg.listen,
        source,
    })?;
    let advertise = advertise_addr(&cfg, local).await;
    let tls = node_tls(&cfg, &advertise, &shared, join_shutdown).await?;
    tracing::info!(listen = %local, advertise = %advertise, "inference API listening");
    let server = serve_inference(rt.clone(), listener, tls.clone(), srv_shutdown).await?;

    let link_task = spawn_link(&cfg, &shared, &store, tls, &advertise, link_shutdown);
    let metrics_task = spawn_metrics(&cfg, &shared, metrics_shutdown).await?;
    let persister = spawn_persister(&cfg, &shared, &store, persist_shutdown);

    let mut summary = None;
    if let Some(name) = &cfg.scenario {
        let released = scenario::run(
            rt.clone(),
            name,
            Duration::from_millis(cfg.scenario_duration_ms),
            cfg.seed,
            scenario_shutdown,
        )
        .await?;
        let mut s = shared.ledger.summary_json();
        s["scenario"] = serde_json::json!(name);
        s["released"] = serde_json::json!(released);
        s["policy"] = serde_json::json!(cfg.policy);
        s["clock"] = serde_json::json!("wall");
        s["accelerators"] = serde_json::json!(String::from(cfg.accelerators.clone()));
        tracing::info!(summary = %s, "scenario finished");
        summary = Some(s);
        if cfg.exit_after_scenario {
            let _ = shutdown.send(());
        }
    }
    if !cfg.exit_after_scenario || cfg.scenario.is_none() {
        let _ = done.recv().await;
    }
    let _ = rt_task.await;
    if let Some(w) = worker_handle.take() {
        w.stop();
    }
    if let Some(t) = link_task {
        let _ = t.await;
    }
    if let Some(t) = metrics_task {
        let _ = t.await;
    }
    let _ = persister.await;
    // Graceful, but bounded: a client that keeps its connection open (or whose runtime is
    // stalled) must not keep the agent from exiting.
    match tokio::time::timeout(SERVER_DRAIN, server).await {
        Ok(Ok(r)) => r?,
        Ok(Err(e)) => tracing::error!(error = %e, "server task failed"),
        Err(_) => tracing::warn!(
            grace = ?SERVER_DRAIN,
            "inference connections still open after the grace period: closing them"
        ),
    }
    Ok(summary)
}

/// What a call to the agent's Infer port needs.
pub fn infer_need(path: &str) -> edgeplane_tls::Need {
    match path {
        "/edgeplane.agent.v1.Inference/Infer" => edgeplane_tls::Need::InferClient,
        _ => edgeplane_tls::Need::Authenticated,
    }
}

/// The scheduling core for worker-backed accelerators (a catalogue built from the profile
/// through the scheduler's [`edgeplane_scheduler::catalog_builder::CatalogBuilder`]): the scheduler engine (`policy`) over a
/// cost table with one whole-model "layer" per model: latency = measured L(model, 1), energy =
/// that latency at [`worker::CPU_MODEL_W`]; `n_acc` identical accelerators (one per partition).
pub fn build_core(
    policy: &str,
    profile: &Profile,
    models: &[String],
    n_acc: usize,
) -> Result<Box<dyn SchedulingCore>, WorkerNodeError> {
    use edgeplane_scheduler::catalog::AccSpec;
    use edgeplane_scheduler::catalog_builder::{CatalogBuilder, LayerCost};
    use edgeplane_scheduler::engine::{Engine, EngineModel};
    let accs: Vec<AccSpec> = (0..n_acc)
        .map(|i| AccSpec {
            id: i,
            name: format!("worker{i}"),
            dataflow: "CPU".into(),
            pes: 1,
            offchip_bw: 1,
            cost_tag: "worker".into(),
        })
        .collect();
    let mut builder = CatalogBuilder::new().hardware("worker", accs.clone());
    let mut ems = Vec::new();
    for m in models {
        let l = profile.b1(m).ok_or_else(|| {
            WorkerNodeError::Core(format!("no measured L({m}, 1) in the profile"))
        })?;
        // One whole-model layer. The engine's cost unit: cycles at 1 GHz (latency_ms =
        // cycles / 1e6); energy: mJ = W x ms, nJ = mJ x 1e6.
        let layer = LayerCost {
            cycles: (l * 1e6).round().max(1.0) as u64,
            energy_nj: l * worker::CPU_MODEL_W * 1e6,
            out_bytes: 1.0,
        };
        builder = builder.model(m, "CPU", "worker", &[layer]);
        ems.push(EngineModel {
            name: m.clone(),
            cost_model: m.clone(),
            period_ms: worker::default_deadline_ms(l),
            upstream: None,
        });
    }
    let cat = builder
        .build()
        .map_err(|e| WorkerNodeError::Core(e.to_string()))?;
    let pol = edgeplane_scheduler::policy::by_name(policy)
        .map_err(|e| WorkerNodeError::Core(e.to_string()))?;
    let engine =
        Engine::new(&cat, &accs, ems, pol).map_err(|e| WorkerNodeError::Core(e.to_string()))?;
    // the node's CPU accelerators are cpu0.. (discovery::cpu_node)
    let ids = (0..n_acc).map(|i| format!("cpu{i}")).collect();
    Ok(Box::new(EngineCore::from_engine(engine, ids)))
}
