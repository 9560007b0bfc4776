//! The Edgeplane edge agent.
//!
//! - [`config`]: file → env → flags, validated once.
//! - [`discovery`]: accelerators from NVML (behind a trait, faked in tests) or simulated
//!   XRBench NPUs; no NVIDIA driver is a normal case (a CPU-only node).
//! - [`core`]: the scheduling core the runtime drives (same shape as the scheduler crate's
//!   online engine: explicit `now`, decisions out).
//! - [`runtime`]: the real-time loop over per-accelerator executors.
//! - [`infer`]: the agent's `Inference` gRPC API; [`scenario`]: local frame sources.
//! - [`link`]: register + session with the coordinator leader, reconnect with backoff;
//!   [`persist`]: the locked data dir: the last assignment (served while cut off), the node
//!   name it belongs to, the counters (work done while cut off survives a restart).
//! - [`metrics`]: Prometheus metrics (`--metrics-addr`). The Inference port also serves
//!   `grpc.health.v1` and gRPC reflection.
#![forbid(unsafe_code)]

pub mod catalog;
pub mod config;
pub mod core;
pub mod discovery;
pub mod energy;
pub mod engine_core;
pub mod entry;
pub mod gpu_core;
pub mod infer;
pub mod join;
pub mod link;
pub mod metrics;
pub mod oip;
pub mod partition;
pub mod persist;
pub mod runtime;
pub mod scenario;
pub mod stats;
pub mod worker_node;

use config::AgentConfig;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// Errors that stop the agent from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Discovery(#[from] discovery::DiscoveryError),
    #[error(transparent)]
    Persist(#[from] persist::PersistError),
    #[error(transparent)]
    Catalog(#[from] catalog::CatalogError),
    #[error("policy: {0}")]
    Policy(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("inference server: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error(transparent)]
    Tls(#[from] edgeplane_tls::Error),
    #[error(transparent)]
    Worker(#[from] worker_node::WorkerNodeError),
    #[error(transparent)]
    Join(#[from] join::JoinError),
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
    let mut core = core::build_with(
        &cfg.policy,
        &accelerators,
        cfg.scenario.as_deref(),
        cfg.tune,
        cfg.supernet,
    )
    .map_err(AgentError::Policy)?;
    core.set_min_block_ms(cfg.min_block_us as f64 / 1000.0);
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
    let build = || -> Result<Box<dyn core::SchedulingCore>, AgentError> {
        let mut core = core::build_with(
            &cfg.policy,
            &accelerators,
            cfg.scenario.as_deref(),
            cfg.tune,
            cfg.supernet,
        )
        .map_err(AgentError::Policy)?;
        core.set_min_block_ms(cfg.min_block_us as f64 / 1000.0);
        Ok(core)
    };
    let virt = scenario::simulate(build()?, &ids, &name, cfg.scenario_duration_ms, cfg.seed)?;
    let shared = Arc::new(runtime::Shared {
        name: cfg.name.clone(),
        accelerators: accelerators.clone(),
        stats: Mutex::new(stats::Stats::new(&ids)),
        start: Instant::now(),
        assignment: RwLock::new(None),
        connected: RwLock::new(None),
    });
    let executors = accelerators
        .iter()
        .map(|_| Arc::new(runtime::SimExecutor::default()) as Arc<dyn runtime::Executor>)
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
    let live = ClockRun::of(&shared.stats.lock().expect("stats"));
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
    let mut srv_shutdown = shutdown.subscribe();
    let link_shutdown = shutdown.subscribe();
    let scenario_shutdown = shutdown.subscribe();
    let metrics_shutdown = shutdown.subscribe();
    let mut persist_shutdown = shutdown.subscribe();
    let join_shutdown = shutdown.subscribe();
    let mut accelerators = discovery::discover(&cfg.accelerators)?;
    tracing::info!(
        node = %cfg.name,
        accelerators = ?accelerators.iter().map(|a| format!("{}:{}", a.id, a.kind)).collect::<Vec<_>>(),
        "accelerators discovered"
    );
    let store = Arc::new(persist::DataDir::open(&cfg.data_dir)?);
    store.claim(&cfg.name)?;
    let persisted = store.load_or_set_aside()?;
    if let Some(a) = &persisted {
        tracing::info!(epoch = a.epoch, "serving the persisted assignment");
    }
    let counters = store.load_counters()?;
    // Worker-backed node (`--accelerators cpu`): real execution on the worker, scheduled by the
    // engine over the worker's measured profile. Kept alive for the agent's lifetime.
    let mut worker_handle = None;
    let (core, executors): (
        Box<dyn core::SchedulingCore>,
        Vec<Arc<dyn runtime::Executor>>,
    ) = if cfg.accelerators == config::AcceleratorSpec::Cpu {
        let (handle, profile) =
            worker_node::start(&cfg.worker, &cfg.data_dir, &accelerators[0].id).await?;
        let core = worker_node::build_core(&cfg.policy, &profile, &cfg.worker.models, 1)?;
        // Reported with the registration: the planner plans this node on what it measured.
        accelerators[0].measured = Some(profile.reported(&cfg.worker.models));
        let ex = Arc::new(oip::OipExecutor::new(handle.clone())) as Arc<dyn runtime::Executor>;
        worker_handle = Some(handle);
        (core, vec![ex])
    } else {
        let mut core = core::build_with(
            &cfg.policy,
            &accelerators,
            cfg.scenario.as_deref(),
            cfg.tune,
            cfg.supernet,
        )
        .map_err(AgentError::Policy)?;
        core.set_min_block_ms(cfg.min_block_us as f64 / 1000.0);
        let executors = accelerators
            .iter()
            .map(|_| Arc::new(runtime::SimExecutor::default()) as Arc<dyn runtime::Executor>)
            .collect();
        (core, executors)
    };
    let ids: Vec<String> = accelerators.iter().map(|a| a.id.clone()).collect();
    let mut st = stats::Stats::new(&ids);
    st.restore(&counters);
    if counters.uptime_s > 0.0 {
        tracing::info!(
            uptime_s = counters.uptime_s,
            "continuing the counters persisted by the previous run"
        );
    }
    let shared = Arc::new(runtime::Shared {
        name: cfg.name.clone(),
        accelerators,
        stats: Mutex::new(st),
        start: Instant::now(),
        assignment: RwLock::new(persisted),
        connected: RwLock::new(None),
    });
    let factory = Arc::new(partition::SimWorkerFactory {
        start_time: Duration::from_millis(cfg.worker_start_ms),
    });
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
                    agent_addr: &advertise,
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
    tracing::info!(listen = %local, advertise = %advertise, "inference API listening");
    let (health, health_svc) = tonic_health::server::health_reporter();
    health
        .set_serving::<edgeplane_proto::agent::inference_server::InferenceServer<infer::InferenceService>>()
        .await;
    // systemd (Type=notify): the Inference API is served.
    edgeplane_telemetry::service::ready();
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(edgeplane_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| AgentError::Policy(format!("gRPC reflection: {e}")))?;
    let svc =
        edgeplane_proto::agent::inference_server::InferenceServer::new(infer::InferenceService {
            runtime: rt.clone(),
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
        tls.clone(),
        layer,
        async move {
            let _ = srv_shutdown.recv().await;
        },
    ));

    let link_task = if cfg.coordinators.is_empty() {
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
            tls: edgeplane_tls::ClientTls(tls.clone()),
            agent_addr: advertise.clone(),
            report_interval: Duration::from_millis(cfg.report_interval_ms),
            max_backoff: Duration::from_millis(cfg.max_backoff_ms),
            seed: cfg.seed,
            session_timeout: Duration::from_millis(cfg.session_timeout_ms),
        };
        Some(tokio::spawn(link.run(link_shutdown)))
    };
    let metrics_task = match cfg.metrics_addr {
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
    };
    // Counters reach the data dir every report interval (the link also saves them before
    // each report) and once more at shutdown: work done while cut off survives a restart.
    let persister = {
        let (shared, store) = (shared.clone(), store.clone());
        let every = Duration::from_millis(cfg.report_interval_ms);
        tokio::spawn(async move {
            let save = || {
                let c = shared
                    .stats
                    .lock()
                    .expect("stats")
                    .counters(shared.start.elapsed().as_secs_f64());
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
    };

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
        let mut s = shared.stats.lock().expect("stats").summary_json();
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
