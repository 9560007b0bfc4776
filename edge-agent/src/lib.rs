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
//!   [`persist`]: the last assignment, crash-safe in the data dir (served while cut off).
#![forbid(unsafe_code)]

pub mod catalog;
pub mod config;
pub mod core;
pub mod discovery;
pub mod engine_core;
pub mod infer;
pub mod link;
pub mod persist;
pub mod runtime;
pub mod scenario;
pub mod stats;

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
}

/// Run the configured scenario in virtual time through the same core; returns its summary.
pub fn run_virtual(cfg: &AgentConfig) -> Result<serde_json::Value, AgentError> {
    let accelerators = discovery::discover(&cfg.accelerators)?;
    let ids: Vec<String> = accelerators.iter().map(|a| a.id.clone()).collect();
    let core = core::build_with(
        &cfg.policy,
        &accelerators,
        cfg.scenario.as_deref(),
        cfg.tune,
        cfg.supernet,
    )
    .map_err(AgentError::Policy)?;
    let name = cfg.scenario.clone().unwrap_or_default();
    let mut st = scenario::simulate(core, &ids, &name, cfg.scenario_duration_ms, cfg.seed)?;
    let mut s = st.summary_json();
    s["scenario"] = serde_json::json!(name);
    s["policy"] = serde_json::json!(cfg.policy);
    s["clock"] = serde_json::json!("virtual");
    s["accelerators"] = serde_json::json!(String::from(cfg.accelerators.clone()));
    Ok(s)
}

/// Run the agent until `shutdown` fires (or the scenario ends with `exit_after_scenario`).
/// Returns the scenario summary when a scenario ran.
pub async fn run(
    cfg: AgentConfig,
    shutdown: broadcast::Sender<()>,
) -> Result<Option<serde_json::Value>, AgentError> {
    let accelerators = discovery::discover(&cfg.accelerators)?;
    tracing::info!(
        node = %cfg.name,
        accelerators = ?accelerators.iter().map(|a| format!("{}:{}", a.id, a.kind)).collect::<Vec<_>>(),
        "accelerators discovered"
    );
    let store = Arc::new(persist::AssignmentStore::open(&cfg.data_dir)?);
    let persisted = store.load()?;
    if let Some(a) = &persisted {
        tracing::info!(epoch = a.epoch, "serving the persisted assignment");
    }
    let core = core::build_with(
        &cfg.policy,
        &accelerators,
        cfg.scenario.as_deref(),
        cfg.tune,
        cfg.supernet,
    )
    .map_err(AgentError::Policy)?;
    let executors: Vec<Arc<dyn runtime::Executor>> = accelerators
        .iter()
        .map(|_| Arc::new(runtime::SimExecutor::default()) as Arc<dyn runtime::Executor>)
        .collect();
    let ids: Vec<String> = accelerators.iter().map(|a| a.id.clone()).collect();
    let shared = Arc::new(runtime::Shared {
        name: cfg.name.clone(),
        accelerators,
        stats: Mutex::new(stats::Stats::new(&ids)),
        start: Instant::now(),
        assignment: RwLock::new(persisted),
        connected: RwLock::new(None),
    });
    let (rt, rt_task) = runtime::start(shared.clone(), core, executors, shutdown.subscribe());

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
    tracing::info!(listen = %local, "inference API listening");
    let svc =
        edgeplane_proto::agent::inference_server::InferenceServer::new(infer::InferenceService {
            runtime: rt.clone(),
        })
        .max_decoding_message_size(8 << 20);
    let mut srv_shutdown = shutdown.subscribe();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming_shutdown(
                // TCP_NODELAY on every accepted socket: tonic's builder setting does not
                // reach sockets from an incoming stream, and without it each small
                // response waits ~40 ms for the client's delayed ACK.
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                async move {
                    let _ = srv_shutdown.recv().await;
                },
            ),
    );

    let link_task = if cfg.coordinators.is_empty() {
        tracing::info!("no coordinators configured: running standalone");
        None
    } else {
        let link = link::Link {
            shared: shared.clone(),
            store: store.clone(),
            coordinators: cfg.coordinators.clone(),
            join_token: cfg.join_token.clone(),
            agent_addr: local.to_string(),
            report_interval: Duration::from_millis(cfg.report_interval_ms),
            max_backoff: Duration::from_millis(cfg.max_backoff_ms),
            seed: cfg.seed,
        };
        Some(tokio::spawn(link.run(shutdown.subscribe())))
    };

    let mut summary = None;
    if let Some(name) = &cfg.scenario {
        let released = scenario::run(
            rt.clone(),
            name,
            Duration::from_millis(cfg.scenario_duration_ms),
            cfg.seed,
            shutdown.subscribe(),
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
    let mut done = shutdown.subscribe();
    if !cfg.exit_after_scenario || cfg.scenario.is_none() {
        let _ = done.recv().await;
    }
    let _ = rt_task.await;
    if let Some(t) = link_task {
        let _ = t.await;
    }
    match server.await {
        Ok(r) => r?,
        Err(e) => tracing::error!(error = %e, "server task failed"),
    }
    Ok(summary)
}
