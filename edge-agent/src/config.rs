//! Agent configuration: TOML file, then environment, then flags (flags win).
//!
//! clap reads both the flag and its `EDGEPLANE_AGENT_*` variable into one `Option`, so "env
//! below flags" comes for free; the file fills whatever neither gave, then defaults apply.
//! Every value is validated once, here, with an error that names the field, so the rest of
//! the agent never sees a half-valid config.

use clap::Parser;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Default smallest NPU block, µs of modelled latency (see `--min-block-us`).
pub const DEFAULT_MIN_BLOCK_US: u64 = 200;

/// Configuration errors; each names the offending field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("invalid `{field}`: {reason}")]
    Invalid { field: &'static str, reason: String },
}

/// The join token from `--join-token` or from `--join-token-file` (trimmed), never both.
fn join_token_of(inline: Option<String>, file: Option<PathBuf>) -> Result<String, ConfigError> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(invalid(
            "join_token_file",
            "give --join-token or --join-token-file, not both",
        )),
        (Some(t), None) => Ok(t),
        (None, Some(p)) => std::fs::read_to_string(&p)
            .map(|t| t.trim().to_string())
            .map_err(|e| invalid("join_token_file", format!("reading {}: {e}", p.display()))),
        (None, None) => Ok(String::new()),
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// Command-line flags (each also readable from the environment).
#[derive(Debug, Default, Parser)]
#[command(
    name = "edgeplane-agent",
    version,
    about = "Edgeplane edge agent: runs SDRM3 in real time and reports to the coordinator"
)]
pub struct Flags {
    /// Node name, unique in the cluster.
    #[arg(long, env = "EDGEPLANE_AGENT_NAME")]
    pub name: Option<String>,
    /// Coordinator client endpoints (any member; the agent follows redirects to the leader).
    #[arg(long, env = "EDGEPLANE_AGENT_COORDINATORS", value_delimiter = ',')]
    pub coordinators: Option<Vec<String>>,
    /// Address the Inference gRPC API listens on (ip:port or host:port; port 0 picks one).
    #[arg(long, env = "EDGEPLANE_AGENT_LISTEN")]
    pub listen: Option<String>,
    /// Address the coordinator and clients reach this agent at (host:port), registered with
    /// the cluster. Default: the listen address; when that is a wildcard (0.0.0.0, [::]),
    /// the local IP this host uses to reach the first coordinator, with the bound port.
    #[arg(long, env = "EDGEPLANE_AGENT_ADVERTISE_ADDR")]
    pub advertise_addr: Option<String>,
    /// Serve Prometheus metrics over HTTP on this address (off when unset).
    #[arg(long, env = "EDGEPLANE_AGENT_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
    /// Directory for the persisted assignment.
    #[arg(long, env = "EDGEPLANE_AGENT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// `nvml` or `sim:<XRBench hardware set-up>` (e.g. `sim:Dual_4K_WS_OS`).
    #[arg(long, env = "EDGEPLANE_AGENT_ACCELERATORS")]
    pub accelerators: Option<String>,
    /// Join token: a per-node token `ID.SECRET` (`edgeplane tokens create`) to join with
    /// `--tls-ca` and no certificate (used once; the agent then keeps the certificate it
    /// received in its data dir), or the cluster's shared bootstrap token.
    #[arg(long, env = "EDGEPLANE_AGENT_JOIN_TOKEN")]
    pub join_token: Option<String>,
    /// Read the join token from this file (keeps it out of `ps` and shell history; make it
    /// readable by the agent only). Not together with `--join-token`.
    #[arg(long, env = "EDGEPLANE_AGENT_JOIN_TOKEN_FILE")]
    pub join_token_file: Option<PathBuf>,
    /// Run an XRBench scenario's frames locally in real time (e.g. `VR_gaming`).
    #[arg(long, env = "EDGEPLANE_AGENT_SCENARIO")]
    pub scenario: Option<String>,
    /// How long the scenario runs, in ms.
    #[arg(long, env = "EDGEPLANE_AGENT_SCENARIO_DURATION_MS")]
    pub scenario_duration_ms: Option<u64>,
    /// Exit after the scenario finished (prints its summary as JSON on stdout).
    #[arg(long)]
    pub exit_after_scenario: bool,
    /// With SDRM3: run without the online weight tuner (and its start-of-run forecast); the
    /// tuner runs by default.
    #[arg(long)]
    pub no_tune: bool,
    /// Accepted for scripts written when the tuner was opt-in; it is on by default.
    #[arg(long, hide = true, conflicts_with = "no_tune")]
    pub tune: bool,
    /// With SDRM3: switch Supernet sub-networks with load.
    #[arg(long)]
    pub supernet: bool,
    /// Run the scenario through the same scheduling core in virtual time (no server, no
    /// wall clock), print its summary and exit: the reference a real-time run is held to.
    #[arg(long)]
    pub virtual_time: bool,
    /// Run the scenario twice through the same core, seed and weights: in virtual time, then
    /// live (wall clock, the real runtime and simulated executors; no server, no coordinator);
    /// print both summaries and the deadline-met gap as JSON and exit.
    #[arg(long, conflicts_with = "virtual_time")]
    pub compare_virtual: bool,
    /// Scheduling policy.
    #[arg(long, env = "EDGEPLANE_AGENT_POLICY")]
    pub policy: Option<String>,
    /// Seed for every random draw (scenario cascades, reconnect jitter).
    #[arg(long, env = "EDGEPLANE_AGENT_SEED")]
    pub seed: Option<u64>,
    /// Report interval in ms (also the lease renewal).
    #[arg(long, env = "EDGEPLANE_AGENT_REPORT_INTERVAL_MS")]
    pub report_interval_ms: Option<u64>,
    /// Largest reconnect backoff in ms.
    #[arg(long, env = "EDGEPLANE_AGENT_MAX_BACKOFF_MS")]
    pub max_backoff_ms: Option<u64>,
    /// Time a GPU partition's worker takes to start (process, model load, warm-up), in ms:
    /// a simulated worker is ready this long after the plan creates its partition.
    #[arg(long, env = "EDGEPLANE_AGENT_WORKER_START_MS")]
    pub worker_start_ms: Option<u64>,
    /// A coordinator session whose reports stay unacknowledged this long (ms) is presumed
    /// dead and reopened; HTTP/2 keepalive pings every third of it.
    #[arg(long, env = "EDGEPLANE_AGENT_SESSION_TIMEOUT_MS")]
    pub session_timeout_ms: Option<u64>,
    /// Smallest block of layers dispatched to a simulated NPU, in µs of modelled latency
    /// (0 = one layer per dispatch, as the simulator). Each dispatch costs the host a wake-up
    /// and a decision; many XRBench layers are shorter than that.
    #[arg(long, env = "EDGEPLANE_AGENT_MIN_BLOCK_US")]
    pub min_block_us: Option<u64>,
    /// TOML config file (lowest precedence).
    #[arg(long, env = "EDGEPLANE_AGENT_CONFIG")]
    pub config: Option<PathBuf>,
    /// CA certificate (PEM) of the cluster: the coordinator's certificate and every
    /// `Infer` client's must be signed by it (mutual TLS).
    #[arg(long, env = "EDGEPLANE_AGENT_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// This node's certificate (PEM), from `edgeplane certs issue node --name NAME`. Leave
    /// it (and `--tls-key`) out to join with a per-node `--join-token`: the agent then gets
    /// its certificate from the cluster and keeps it in `<data_dir>/tls/`.
    #[arg(long, env = "EDGEPLANE_AGENT_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of `--tls-cert` (PEM).
    #[arg(long, env = "EDGEPLANE_AGENT_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Run without TLS and without authentication (a warning is logged on every start).
    #[arg(long, env = "EDGEPLANE_AGENT_INSECURE")]
    pub insecure: bool,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Log line format on stderr: `text` (key=value) or `json` (one object per line). The
    /// filter is `EDGEPLANE_LOG` (e.g. `info,raft=warn`).
    #[arg(long, value_enum, env = "EDGEPLANE_AGENT_LOG_FORMAT", default_value_t = edgeplane_telemetry::logs::LogFormat::Text)]
    pub log_format: edgeplane_telemetry::logs::LogFormat,
    /// Inference workers (`--accelerators cpu`, real execution).
    #[command(flatten)]
    pub worker: WorkerFlags,
}

/// The config file: every field optional, same names as the flags (snake_case).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    name: Option<String>,
    coordinators: Option<Vec<String>>,
    listen: Option<String>,
    advertise_addr: Option<String>,
    metrics_addr: Option<String>,
    data_dir: Option<PathBuf>,
    accelerators: Option<String>,
    join_token: Option<String>,
    join_token_file: Option<PathBuf>,
    scenario: Option<String>,
    scenario_duration_ms: Option<u64>,
    tune: Option<bool>,
    supernet: Option<bool>,
    policy: Option<String>,
    /// `[worker]`: inference worker settings.
    worker: Option<WorkerFile>,
    seed: Option<u64>,
    report_interval_ms: Option<u64>,
    max_backoff_ms: Option<u64>,
    worker_start_ms: Option<u64>,
    session_timeout_ms: Option<u64>,
    min_block_us: Option<u64>,
    tls_ca: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    insecure: Option<bool>,
}

/// Where the accelerators come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub enum AcceleratorSpec {
    /// Discover GPUs through NVML; none (or no driver) → a CPU-only node.
    Nvml,
    /// Simulated accelerators of an XRBench hardware set-up.
    Sim(String),
    /// Simulated GPUs named after the shipped GPU profiles (`sim-gpu:Jetson-AGX-Xavier`,
    /// several comma-separated: `sim-gpu:A100-80GB,A100-80GB`).
    SimGpu(Vec<String>),
    /// The host CPU running real models through an inference worker (the built-in
    /// `edgeplane-worker` unless `worker_command`/`worker_addr` say otherwise).
    Cpu,
}

impl From<AcceleratorSpec> for String {
    fn from(s: AcceleratorSpec) -> String {
        match s {
            AcceleratorSpec::Nvml => "nvml".into(),
            AcceleratorSpec::Sim(n) => format!("sim:{n}"),
            AcceleratorSpec::SimGpu(n) => format!("sim-gpu:{}", n.join(",")),
            AcceleratorSpec::Cpu => "cpu".into(),
        }
    }
}

impl std::str::FromStr for AcceleratorSpec {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        if s == "nvml" {
            return Ok(AcceleratorSpec::Nvml);
        }
        if let Some(list) = s.strip_prefix("sim-gpu:") {
            let names: Vec<String> = list
                .split(',')
                .map(|x| x.trim().to_string())
                .filter(|x| !x.is_empty())
                .collect();
            if names.is_empty() {
                return Err(invalid(
                    "accelerators",
                    format!("{s:?}: expected `sim-gpu:<GPU profile>[,<GPU profile>...]`"),
                ));
            }
            let known = crate::catalog::gpu_data()
                .map(|d| d.profiles.gpu_names())
                .unwrap_or_default();
            if let Some(bad) = names.iter().find(|n| !known.contains(n)) {
                return Err(invalid(
                    "accelerators",
                    format!(
                        "{s:?}: {bad:?} is not a shipped GPU profile; valid: {}",
                        known.join(", ")
                    ),
                ));
            }
            return Ok(AcceleratorSpec::SimGpu(names));
        }
        if s == "cpu" {
            return Ok(AcceleratorSpec::Cpu);
        }
        match s.strip_prefix("sim:") {
            Some(n) if !n.is_empty() => Ok(AcceleratorSpec::Sim(n.to_string())),
            _ => Err(invalid(
                "accelerators",
                format!("{s:?}: expected `nvml`, `cpu`, `sim:<hardware set-up>` or `sim-gpu:<GPU profile>[,...]`"),
            )),
        }
    }
}

/// The policy when none is configured.
pub const DEFAULT_POLICY: &str = "sdrm3";

/// The effective, validated agent configuration.
#[derive(Debug, Clone, Serialize)]
pub struct AgentConfig {
    pub name: String,
    pub coordinators: Vec<String>,
    pub listen: SocketAddr,
    /// `host:port` to register; `None` = derive at start (see [`Flags::advertise_addr`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise_addr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_addr: Option<SocketAddr>,
    pub data_dir: PathBuf,
    pub accelerators: AcceleratorSpec,
    /// Shown as `<set>` by `--print-config`, `<redacted>` by `Debug`.
    #[serde(serialize_with = "masked")]
    pub join_token: edgeplane_tls::Secret,
    pub scenario: Option<String>,
    pub scenario_duration_ms: u64,
    #[serde(skip)]
    pub exit_after_scenario: bool,
    #[serde(skip)]
    pub virtual_time: bool,
    #[serde(skip)]
    pub compare_virtual: bool,
    pub tune: bool,
    pub supernet: bool,
    pub policy: String,
    pub seed: u64,
    pub report_interval_ms: u64,
    pub max_backoff_ms: u64,
    pub worker_start_ms: u64,
    pub session_timeout_ms: u64,
    pub min_block_us: u64,
    /// TLS material (`None` with `insecure`, or in virtual time where nothing is served).
    #[serde(skip)]
    pub tls: Option<edgeplane_tls::TlsPaths>,
    /// Only `--tls-ca` given: the agent joins with a per-node token (or already did) and
    /// uses the certificate in `<data_dir>/tls/` ([`crate::join`]).
    #[serde(skip)]
    pub join_ca: Option<PathBuf>,
    pub insecure: bool,
    pub worker: WorkerConfig,
}

fn masked<S: serde::Serializer>(v: &edgeplane_tls::Secret, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(if v.is_empty() { "" } else { "<set>" })
}

/// `host:port` with a non-empty host and a port in 1..=65535 (`allow_zero`: 0 too).
fn check_host_port(field: &'static str, s: &str, allow_zero: bool) -> Result<(), ConfigError> {
    let bad = || {
        invalid(
            field,
            format!("{s:?} is not host:port (e.g. 10.0.0.7:7301)"),
        )
    };
    let (h, p) = s.rsplit_once(':').ok_or_else(bad)?;
    let h = h.trim_start_matches('[').trim_end_matches(']');
    if h.is_empty() || h.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err(bad());
    }
    match p.parse::<u16>() {
        Ok(0) if !allow_zero => Err(invalid(field, format!("{s:?}: port 0 cannot be reached"))),
        Ok(_) => Ok(()),
        Err(_) => Err(bad()),
    }
}

/// Resolve `ip:port` or `host:port` to the first socket address.
fn resolve(field: &'static str, s: &str) -> Result<SocketAddr, ConfigError> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    check_host_port(field, s, true)?;
    use std::net::ToSocketAddrs;
    s.to_socket_addrs()
        .map_err(|e| invalid(field, format!("{s:?}: cannot resolve: {e}")))?
        .next()
        .ok_or_else(|| invalid(field, format!("{s:?}: resolves to no address")))
}

impl AgentConfig {
    /// Merge file < env < flags, apply defaults and validate.
    pub fn resolve(flags: Flags) -> Result<AgentConfig, ConfigError> {
        let file = match &flags.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                toml::from_str::<FileConfig>(&text).map_err(|e| ConfigError::Parse {
                    path: path.clone(),
                    source: Box::new(e),
                })?
            }
            None => FileConfig::default(),
        };
        let name = flags.name.or(file.name).unwrap_or_else(|| "edge-1".into());
        if name.is_empty()
            || name.len() > 63
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return Err(invalid(
                "name",
                format!("{name:?}: 1-63 characters of [A-Za-z0-9._-]"),
            ));
        }
        let coordinators: Vec<String> = flags
            .coordinators
            .or(file.coordinators)
            .unwrap_or_default()
            .into_iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        for c in &coordinators {
            let hostport = c
                .strip_prefix("http://")
                .or_else(|| c.strip_prefix("https://"))
                .unwrap_or(c);
            match hostport.rsplit_once(':') {
                Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => {}
                _ => return Err(invalid("coordinators", format!("{c:?} is not host:port"))),
            }
        }
        let listen_s = flags
            .listen
            .or(file.listen)
            .unwrap_or_else(|| "127.0.0.1:7301".into());
        let listen = resolve("listen", &listen_s)?;
        let advertise_addr = flags
            .advertise_addr
            .or(file.advertise_addr)
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
        if let Some(a) = &advertise_addr {
            check_host_port("advertise_addr", a, false)?;
            if let Ok(sa) = a.parse::<SocketAddr>() {
                if sa.ip().is_unspecified() {
                    return Err(invalid(
                        "advertise_addr",
                        format!("{a:?} is a wildcard: give an address others can reach"),
                    ));
                }
            }
        }
        let metrics_addr = match flags.metrics_addr.or(file.metrics_addr) {
            Some(m) if !m.trim().is_empty() => Some(resolve("metrics_addr", m.trim())?),
            _ => None,
        };
        let data_dir = flags
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from(format!("./data/agent-{name}")));
        if data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty"));
        }
        let accelerators: AcceleratorSpec = flags
            .accelerators
            .or(file.accelerators)
            .unwrap_or_else(|| "sim:Dual_4K_WS_OS".into())
            .parse()?;
        let join_token = edgeplane_tls::Secret::new(join_token_of(
            flags.join_token.or(file.join_token),
            flags.join_token_file.or(file.join_token_file),
        )?);
        let scenario = flags.scenario.or(file.scenario).filter(|s| !s.is_empty());
        let scenario_duration_ms = flags
            .scenario_duration_ms
            .or(file.scenario_duration_ms)
            .unwrap_or(10_000);
        if scenario_duration_ms == 0 || scenario_duration_ms > 86_400_000 {
            return Err(invalid("scenario_duration_ms", "must be in 1..=86400000"));
        }
        if flags.virtual_time && scenario.is_none() {
            return Err(invalid("scenario", "required with --virtual-time"));
        }
        if flags.compare_virtual && scenario.is_none() {
            return Err(invalid("scenario", "required with --compare-virtual"));
        }
        let policy = flags
            .policy
            .or(file.policy)
            .unwrap_or_else(|| DEFAULT_POLICY.into());
        if !edgeplane_scheduler::policy::POLICIES.contains(&policy.as_str()) {
            return Err(invalid(
                "policy",
                format!(
                    "{policy:?} is not a policy; valid: {}",
                    edgeplane_scheduler::policy::POLICIES.join(", ")
                ),
            ));
        }
        let report_interval_ms = flags
            .report_interval_ms
            .or(file.report_interval_ms)
            .unwrap_or(1000);
        if !(10..=60_000).contains(&report_interval_ms) {
            return Err(invalid("report_interval_ms", "must be in 10..=60000"));
        }
        let max_backoff_ms = flags.max_backoff_ms.or(file.max_backoff_ms).unwrap_or(5000);
        if !(10..=600_000).contains(&max_backoff_ms) {
            return Err(invalid("max_backoff_ms", "must be in 10..=600000"));
        }
        let worker_start_ms = flags
            .worker_start_ms
            .or(file.worker_start_ms)
            .unwrap_or(2000);
        if worker_start_ms > 600_000 {
            return Err(invalid("worker_start_ms", "must be in 0..=600000"));
        }
        let session_timeout_ms = flags
            .session_timeout_ms
            .or(file.session_timeout_ms)
            .unwrap_or(3000);
        if !(300..=600_000).contains(&session_timeout_ms) {
            return Err(invalid("session_timeout_ms", "must be in 300..=600000"));
        }
        let min_block_us = flags
            .min_block_us
            .or(file.min_block_us)
            .unwrap_or(DEFAULT_MIN_BLOCK_US);
        if min_block_us > 100_000 {
            return Err(invalid("min_block_us", "must be in 0..=100000 (µs)"));
        }
        let (ca, cert, key) = (
            flags.tls_ca.or(file.tls_ca),
            flags.tls_cert.or(file.tls_cert),
            flags.tls_key.or(file.tls_key),
        );
        let insecure = flags.insecure || file.insecure.unwrap_or(false);
        // Only the CA: join with a per-node token (or use the certificate of an earlier join).
        let join_ca = match (&ca, &cert, &key) {
            (Some(ca), None, None) if !insecure => Some(ca.clone()),
            _ => None,
        };
        let tls = if join_ca.is_some() {
            None
        } else {
            edgeplane_tls::TlsPaths::from_flags(ca.as_deref(), cert.as_deref(), key.as_deref())
                .map_err(|e| invalid("tls", e.to_string()))?
        };
        match (&tls, insecure) {
            (None, false) if !flags.virtual_time && !flags.compare_virtual && join_ca.is_none() => {
                return Err(invalid("tls", edgeplane_tls::NO_TLS_MATERIAL))
            }
            (Some(_), true) => {
                return Err(invalid(
                    "insecure",
                    "--insecure together with --tls-ca/--tls-cert/--tls-key; give one or the other",
                ))
            }
            _ => {}
        }
        if insecure && ca.is_some() {
            return Err(invalid(
                "insecure",
                "--insecure together with --tls-ca; give one or the other",
            ));
        }
        if !coordinators.is_empty() && join_token.is_empty() {
            if insecure {
                return Err(invalid(
                    "join_token",
                    "required when `coordinators` are given with --insecure (the cluster's \
                     shared token is the only agent authentication then)",
                ));
            }
            if join_ca.is_some() && !crate::join::has_joined(&data_dir) {
                return Err(invalid(
                    "join_token",
                    format!(
                        "required to join: {} holds no certificate of an earlier join; give \
                         --join-token ID.SECRET (from `edgeplane tokens create`), or a node \
                         certificate with --tls-cert and --tls-key",
                        data_dir.display()
                    ),
                ));
            }
        }
        if join_ca.is_some()
            && coordinators.is_empty()
            && join_token.is_empty()
            && !crate::join::has_joined(&data_dir)
            && !flags.virtual_time
        {
            return Err(invalid(
                "tls",
                "--tls-ca alone means joining a cluster with a per-node token: give \
                 --coordinators and --join-token ID.SECRET, or a node certificate with \
                 --tls-cert and --tls-key",
            ));
        }
        if join_ca.is_some() && !join_token.is_empty() && !crate::join::has_joined(&data_dir) {
            edgeplane_tls::JoinToken::parse(join_token.expose()).map_err(|e| {
                invalid(
                    "join_token",
                    format!(
                        "{}; joining without --tls-cert needs a per-node token",
                        e.trim_start_matches("join_token: ")
                    ),
                )
            })?;
            if coordinators.is_empty() {
                return Err(invalid(
                    "coordinators",
                    "required to join with --join-token",
                ));
            }
        }
        Ok(AgentConfig {
            worker_start_ms,
            name,
            coordinators,
            listen,
            advertise_addr,
            metrics_addr,
            data_dir,
            accelerators,
            join_token,
            scenario,
            scenario_duration_ms,
            exit_after_scenario: flags.exit_after_scenario,
            virtual_time: flags.virtual_time,
            compare_virtual: flags.compare_virtual,
            tune: flags.tune || (!flags.no_tune && file.tune.unwrap_or(true)),
            supernet: flags.supernet || file.supernet.unwrap_or(false),
            policy,
            seed: flags.seed.or(file.seed).unwrap_or(1),
            report_interval_ms,
            max_backoff_ms,
            session_timeout_ms,
            min_block_us,
            tls,
            join_ca,
            insecure,
            worker: WorkerConfig::resolve(flags.worker, file.worker)?,
        })
    }

    /// The effective configuration as TOML (for `--print-config`); the join token is masked.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

/// Worker settings: flags (also from the environment)...
#[derive(Debug, Default, Clone, clap::Args)]
pub struct WorkerFlags {
    /// Command template that starts one worker per partition, run by `sh -c`: `{port}`,
    /// `{partition}`, `{share}` and `{models}` are substituted; CUDA_MPS_ACTIVE_THREAD_PERCENTAGE
    /// and CUDA_VISIBLE_DEVICES are set. Default with `--accelerators cpu`: the built-in
    /// `edgeplane-worker` next to this binary.
    #[arg(long, env = "EDGEPLANE_AGENT_WORKER_COMMAND")]
    pub worker_command: Option<String>,
    /// Connect to a worker already running at host:port instead of starting one.
    #[arg(long, env = "EDGEPLANE_AGENT_WORKER_ADDR")]
    pub worker_addr: Option<String>,
    /// Models the worker serves (comma-separated).
    #[arg(long, env = "EDGEPLANE_AGENT_WORKER_MODELS", value_delimiter = ',')]
    pub worker_models: Option<Vec<String>>,
    /// Input resolution (height = width) the built-in worker is started with.
    #[arg(long, env = "EDGEPLANE_AGENT_WORKER_RESOLUTION")]
    pub worker_resolution: Option<u32>,
    /// How long a worker may take to become ready, in ms.
    #[arg(long, env = "EDGEPLANE_AGENT_WORKER_READY_TIMEOUT_MS")]
    pub worker_ready_timeout_ms: Option<u64>,
    /// Longest single worker request, in ms (then it fails with UNAVAILABLE).
    #[arg(long, env = "EDGEPLANE_AGENT_WORKER_REQUEST_TIMEOUT_MS")]
    pub worker_request_timeout_ms: Option<u64>,
    /// Largest batch the agent sends a worker (1..=32; the effective limit is also capped
    /// by the worker's own, when its model metadata fixes the batch dimension).
    #[arg(long, env = "EDGEPLANE_AGENT_WORKER_MAX_BATCH")]
    pub worker_max_batch: Option<u32>,
}

/// ...and the config file's `[worker]` table (same names without the `worker_` prefix).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerFile {
    pub command: Option<String>,
    pub addr: Option<String>,
    pub models: Option<Vec<String>>,
    pub resolution: Option<u32>,
    pub ready_timeout_ms: Option<u64>,
    pub request_timeout_ms: Option<u64>,
    pub max_batch: Option<u32>,
}

/// The largest batch a worker profile lists (the last of `exec::worker::BATCHES`).
pub const MAX_BATCH: u32 = 32;

/// Effective worker settings.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WorkerConfig {
    pub command: Option<String>,
    pub addr: Option<String>,
    pub models: Vec<String>,
    pub resolution: u32,
    pub ready_timeout_ms: u64,
    pub request_timeout_ms: u64,
    /// `--worker-max-batch` (default: the largest profiled batch, 32).
    pub max_batch: u32,
}

impl WorkerConfig {
    pub fn resolve(f: WorkerFlags, file: Option<WorkerFile>) -> Result<WorkerConfig, ConfigError> {
        let file = file.unwrap_or_default();
        let bad = |field: &'static str, reason: String| ConfigError::Invalid { field, reason };
        let command = f
            .worker_command
            .or(file.command)
            .filter(|c| !c.trim().is_empty());
        let addr = f.worker_addr.or(file.addr).filter(|c| !c.trim().is_empty());
        if command.is_some() && addr.is_some() {
            return Err(bad(
                "worker_addr",
                "give either worker_command (start workers) or worker_addr (connect), not both"
                    .into(),
            ));
        }
        if let Some(a) = &addr {
            match a.rsplit_once(':') {
                Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => {}
                _ => return Err(bad("worker_addr", format!("{a:?} is not host:port"))),
            }
        }
        if let Some(c) = &command {
            if !c.contains("{port}") {
                return Err(bad(
                    "worker_command",
                    format!("{c:?} has no {{port}}: the agent picks each worker's gRPC port"),
                ));
            }
        }
        let models = f
            .worker_models
            .or(file.models)
            .unwrap_or_else(|| vec!["resnet18".into(), "resnet50".into(), "vgg16".into()]);
        if models.is_empty() || models.iter().any(|m| m.trim().is_empty()) {
            return Err(bad(
                "worker_models",
                "must list at least one model name".into(),
            ));
        }
        let resolution = f.worker_resolution.or(file.resolution).unwrap_or(224);
        if !(32..=1024).contains(&resolution) {
            return Err(bad(
                "worker_resolution",
                format!("{resolution}: must be in 32..=1024"),
            ));
        }
        let ready_timeout_ms = f
            .worker_ready_timeout_ms
            .or(file.ready_timeout_ms)
            .unwrap_or(120_000);
        if !(100..=3_600_000).contains(&ready_timeout_ms) {
            return Err(bad(
                "worker_ready_timeout_ms",
                "must be in 100..=3600000".into(),
            ));
        }
        let request_timeout_ms = f
            .worker_request_timeout_ms
            .or(file.request_timeout_ms)
            .unwrap_or(60_000);
        if !(10..=3_600_000).contains(&request_timeout_ms) {
            return Err(bad(
                "worker_request_timeout_ms",
                "must be in 10..=3600000".into(),
            ));
        }
        let max_batch = f.worker_max_batch.or(file.max_batch).unwrap_or(MAX_BATCH);
        if !(1..=MAX_BATCH).contains(&max_batch) {
            return Err(bad(
                "worker_max_batch",
                format!("{max_batch}: must be in 1..={MAX_BATCH}"),
            ));
        }
        Ok(WorkerConfig {
            command,
            addr,
            models,
            resolution,
            ready_timeout_ms,
            request_timeout_ms,
            max_batch,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(args: &[&str]) -> Flags {
        let mut v = vec!["edgeplane-agent"];
        v.extend_from_slice(args);
        v.push("--insecure");
        Flags::try_parse_from(v).unwrap()
    }

    #[test]
    fn refuses_to_serve_without_tls_material_or_insecure() {
        let f = Flags::try_parse_from(["edgeplane-agent"]).unwrap();
        let e = AgentConfig::resolve(f).unwrap_err().to_string();
        for want in ["--tls-ca", "--tls-cert", "--tls-key", "--insecure"] {
            assert!(e.contains(want), "{e}");
        }
        // Virtual time serves nothing: no TLS needed.
        let f = Flags::try_parse_from([
            "edgeplane-agent",
            "--virtual-time",
            "--scenario",
            "VR_gaming",
        ])
        .unwrap();
        assert!(AgentConfig::resolve(f).is_ok());
    }

    #[test]
    fn flags_override_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.toml");
        std::fs::write(
            &path,
            "name = \"from-file\"\nlisten = \"127.0.0.1:9000\"\npolicy = \"edf\"\n",
        )
        .unwrap();
        let c = AgentConfig::resolve(flags(&[
            "--config",
            path.to_str().unwrap(),
            "--name",
            "from-flag",
        ]))
        .unwrap();
        assert_eq!(c.name, "from-flag");
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.policy, "edf");
    }

    #[test]
    fn bad_values_name_the_field() {
        let cases: &[(&[&str], &str)] = &[
            (&["--listen", "nowhere"], "listen"),
            (&["--accelerators", "tpu"], "accelerators"),
            (&["--policy", "magic"], "policy"),
            (&["--name", "a b"], "name"),
            (&["--coordinators", "hostonly"], "coordinators"),
            (&["--coordinators", "127.0.0.1:1"], "join_token"),
            (&["--report-interval-ms", "0"], "report_interval_ms"),
            (&["--accelerators", "sim-gpu:RTX-9999"], "accelerators"),
            (&["--accelerators", "sim-gpu:"], "accelerators"),
            (&["--worker-start-ms", "9999999"], "worker_start_ms"),
            (&["--advertise-addr", "nohost"], "advertise_addr"),
            (&["--advertise-addr", "0.0.0.0:7301"], "advertise_addr"),
            (&["--advertise-addr", "edge:0"], "advertise_addr"),
            (&["--session-timeout-ms", "5"], "session_timeout_ms"),
            (&["--min-block-us", "200000"], "min_block_us"),
            (&["--metrics-addr", "x"], "metrics_addr"),
        ];
        for (args, field) in cases {
            let e = AgentConfig::resolve(flags(args)).unwrap_err().to_string();
            assert!(e.contains(&format!("`{field}`")), "{args:?} -> {e}");
        }
    }

    #[test]
    fn listen_and_advertise_accept_host_port() {
        let c = AgentConfig::resolve(flags(&[
            "--listen",
            "localhost:0",
            "--advertise-addr",
            "edge-7.example:7301",
        ]))
        .unwrap();
        assert!(c.listen.ip().is_loopback(), "{:?}", c.listen);
        assert_eq!(c.advertise_addr.as_deref(), Some("edge-7.example:7301"));
        let d = AgentConfig::resolve(flags(&["--listen", "0.0.0.0:7301"])).unwrap();
        assert_eq!(d.advertise_addr, None, "derived at start");
    }

    #[test]
    fn unknown_file_key_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.toml");
        std::fs::write(&path, "nmae = \"typo\"\n").unwrap();
        let e = AgentConfig::resolve(flags(&["--config", path.to_str().unwrap()]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("nmae"), "{e}");
    }

    #[test]
    fn the_join_token_can_come_from_a_file_but_not_from_both() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "abcdef.0123456789abcdef\n").unwrap();
        let p = path.to_str().unwrap();
        let c = AgentConfig::resolve(flags(&[
            "--coordinators",
            "127.0.0.1:7101",
            "--join-token-file",
            p,
        ]))
        .unwrap();
        assert_eq!(c.join_token.expose(), "abcdef.0123456789abcdef");
        let e = AgentConfig::resolve(flags(&["--join-token", "x", "--join-token-file", p]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("join_token_file") && e.contains("not both"),
            "{e}"
        );
        let missing = dir.path().join("missing");
        let e = AgentConfig::resolve(flags(&["--join-token-file", missing.to_str().unwrap()]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("join_token_file") && e.contains("missing"),
            "{e}"
        );
    }

    #[test]
    fn print_config_masks_token() {
        let c = AgentConfig::resolve(flags(&[
            "--coordinators",
            "127.0.0.1:7101",
            "--join-token",
            "s3cret",
        ]))
        .unwrap();
        let t = c.to_toml();
        assert!(t.contains("accelerators = \"sim:Dual_4K_WS_OS\""), "{t}");
        assert!(!t.contains("s3cret"));
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn only_a_ca_means_joining_with_a_per_node_token() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        let parse = |extra: &[&str]| {
            let mut v = vec!["edgeplane-agent", "--data-dir", &d, "--tls-ca", "/x/ca.pem"];
            v.extend_from_slice(extra);
            AgentConfig::resolve(Flags::try_parse_from(v).unwrap())
        };
        let c = parse(&[
            "--coordinators",
            "127.0.0.1:7101",
            "--join-token",
            "abc123.0123456789abcdef",
        ])
        .unwrap();
        assert_eq!(
            c.join_ca.as_deref(),
            Some(std::path::Path::new("/x/ca.pem"))
        );
        assert!(c.tls.is_none());
        // No token and no earlier join: the error names the token and the alternative.
        let e = parse(&["--coordinators", "127.0.0.1:7101"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`join_token`") && e.contains("--tls-cert"),
            "{e}"
        );
        // The shared token's form is not a per-node token.
        let e = parse(&["--coordinators", "127.0.0.1:7101", "--join-token", "tok"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("`join_token`") && e.contains("ID.SECRET"), "{e}");
        assert!(!e.contains("tok\""), "{e}");
        // Only a CA, and nowhere to join: the error says what to add.
        let e = parse(&[]).unwrap_err().to_string();
        assert!(
            e.contains("--coordinators") && e.contains("--tls-cert"),
            "{e}"
        );
        // After a join the certificate is used: no token needed.
        let p = crate::join::joined_paths(dir.path(), std::path::Path::new("/x/ca.pem"));
        std::fs::create_dir_all(p.cert.parent().unwrap()).unwrap();
        std::fs::write(&p.cert, "x").unwrap();
        assert!(parse(&["--coordinators", "127.0.0.1:7101"]).is_ok());
    }

    /// configs/agent.toml goes through the real loader, and lists exactly the keys
    /// `--print-config` shows: a key added to the config without the example fails here.
    #[test]
    fn the_example_config_parses_and_lists_every_key() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/agent.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let c = AgentConfig::resolve(flags(&["--config", path.to_str().unwrap()])).unwrap();
        assert_eq!(c.session_timeout_ms, 3000);
        assert_eq!(c.advertise_addr.as_deref(), Some("10.0.0.21:7301"));
        let example: toml::Table = toml::from_str(&text).unwrap();
        let effective: toml::Table = toml::from_str(&c.to_toml()).unwrap();
        let keys = |t: &toml::Table| t.keys().cloned().collect::<std::collections::BTreeSet<_>>();
        assert_eq!(keys(&example), keys(&effective));
    }
}
