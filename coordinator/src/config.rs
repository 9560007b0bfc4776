//! Configuration: TOML file, then environment (`EDGEPLANE_COORDINATOR_*`), then flags; flags
//! win. clap reads flags and env into `Option`s, the file fills what is still unset, then
//! defaults apply. Every value is validated at start and errors name the field.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Errors while building the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid config field `{field}`: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("reading config file {path}: {reason}")]
    File { path: PathBuf, reason: String },
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// Command-line flags (each also readable from `EDGEPLANE_COORDINATOR_<NAME>`).
#[derive(Debug, Clone, Default, clap::Parser)]
#[command(
    name = "edgeplane-coordinator",
    version,
    about = "Edgeplane coordinator replica (Raft)"
)]
pub struct Flags {
    /// Raft id of this replica (> 0).
    #[arg(long, env = "EDGEPLANE_COORDINATOR_ID")]
    pub id: Option<u64>,
    /// Address for the Admin (and agent) gRPC API.
    #[arg(long, env = "EDGEPLANE_COORDINATOR_CLIENT_ADDR")]
    pub client_addr: Option<String>,
    /// Address for Raft peer traffic.
    #[arg(long, env = "EDGEPLANE_COORDINATOR_PEER_ADDR")]
    pub peer_addr: Option<String>,
    /// Initial voters `id=peer_addr,...`; ignored once the data dir holds state.
    #[arg(long, env = "EDGEPLANE_COORDINATOR_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,
    /// Directory for the Raft log and snapshots.
    #[arg(long, env = "EDGEPLANE_COORDINATOR_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address of the Prometheus metrics endpoint.
    #[arg(long, env = "EDGEPLANE_COORDINATOR_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
    /// Shared bootstrap token agents may present when they register (the only agent
    /// authentication with --insecure). Per-node tokens (`edgeplane tokens create`) are the
    /// primary way to join; this flag is optional.
    #[arg(long, env = "EDGEPLANE_COORDINATOR_JOIN_TOKEN")]
    pub join_token: Option<String>,
    /// TOML config file.
    #[arg(long, env = "EDGEPLANE_COORDINATOR_CONFIG")]
    pub config: Option<PathBuf>,
    /// Join an existing cluster (do not bootstrap); implied when `--id` is not in
    /// `--initial-cluster`.
    #[arg(long, env = "EDGEPLANE_COORDINATOR_JOIN")]
    pub join: Option<bool>,
    /// Raft tick interval in milliseconds (default 100).
    #[arg(long, env = "EDGEPLANE_COORDINATOR_TICK_MS")]
    pub tick_ms: Option<u64>,
    /// Election timeout in ticks (default 10).
    #[arg(long, env = "EDGEPLANE_COORDINATOR_ELECTION_TICKS")]
    pub election_ticks: Option<usize>,
    /// Heartbeat interval in ticks (default 1).
    #[arg(long, env = "EDGEPLANE_COORDINATOR_HEARTBEAT_TICKS")]
    pub heartbeat_ticks: Option<usize>,
    /// Snapshot and compact the log every N applied entries (default 10000).
    #[arg(long, env = "EDGEPLANE_COORDINATOR_SNAPSHOT_ENTRIES")]
    pub snapshot_entries: Option<u64>,
    /// How long a write or read may wait for the cluster, in ms (default 5000).
    #[arg(long, env = "EDGEPLANE_COORDINATOR_REQUEST_TIMEOUT_MS")]
    pub request_timeout_ms: Option<u64>,
    /// Accept the `InjectFault` admin RPC (tests only).
    #[arg(long, env = "EDGEPLANE_COORDINATOR_ENABLE_FAULT_INJECTION")]
    pub enable_fault_injection: Option<bool>,
    /// Agents report (and so renew their lease) at least this often, ms (default 2000).
    #[arg(long, env = "EDGEPLANE_COORDINATOR_AGENT_RENEW_MS")]
    pub agent_renew_ms: Option<u64>,
    /// A node not heard from for this long is marked lost, ms (default 10000).
    #[arg(long, env = "EDGEPLANE_COORDINATOR_AGENT_LEASE_MS")]
    pub agent_lease_ms: Option<u64>,
    /// Observed request rates are measured over this window, ms (default 5000).
    #[arg(long, env = "EDGEPLANE_COORDINATOR_RATE_WINDOW_MS")]
    pub rate_window_ms: Option<u64>,
    /// The leader plans this often (and on every state change), ms (default 1000).
    #[arg(long, env = "EDGEPLANE_COORDINATOR_PLAN_INTERVAL_MS")]
    pub plan_interval_ms: Option<u64>,
    /// Time constant of the planner's rate estimator, s (default: the planner's).
    #[arg(long, env = "EDGEPLANE_COORDINATOR_RATE_TAU_S")]
    pub rate_tau_s: Option<f64>,
    /// Older name of `--rate-tau-s` (read when that is unset).
    #[arg(long, env = "EDGEPLANE_COORDINATOR_PLAN_PEAK_S", hide = true)]
    pub plan_peak_s: Option<f64>,
    /// Test hook (with --enable-fault-injection only): fsync fails after this many calls.
    #[arg(long, env = "EDGEPLANE_FAULT_FSYNC_FAIL_AFTER", hide = true)]
    pub fault_fsync_fail_after: Option<u64>,
    /// CA certificate (PEM): peers, agents and clients must present a certificate it
    /// signed (mutual TLS on both ports).
    #[arg(long, env = "EDGEPLANE_COORDINATOR_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// This replica's member certificate (PEM), from `edgeplane certs issue member`.
    #[arg(long, env = "EDGEPLANE_COORDINATOR_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of `--tls-cert` (PEM).
    #[arg(long, env = "EDGEPLANE_COORDINATOR_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// The cluster CA's private key (PEM, `ca.key` of `edgeplane certs init`): this member
    /// then signs the node certificates of agents joining with a per-node token. Members
    /// without it forward joins to the leader. Optional; keep it on as few members as
    /// needed (the leader must hold it, or joins fail).
    #[arg(long, env = "EDGEPLANE_COORDINATOR_TLS_CA_KEY")]
    pub tls_ca_key: Option<PathBuf>,
    /// Run without TLS and without authentication (a warning is logged on every start).
    #[arg(long, env = "EDGEPLANE_COORDINATOR_INSECURE")]
    pub insecure: bool,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Log line format on stderr: `text` (key=value) or `json` (one object per line). The
    /// filter is `EDGEPLANE_LOG` (e.g. `info,raft=warn`).
    #[arg(long, value_enum, env = "EDGEPLANE_COORDINATOR_LOG_FORMAT", default_value_t = edgeplane_telemetry::logs::LogFormat::Text)]
    pub log_format: edgeplane_telemetry::logs::LogFormat,
}

/// The file format (every field optional).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub id: Option<u64>,
    pub client_addr: Option<String>,
    pub peer_addr: Option<String>,
    pub initial_cluster: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub metrics_addr: Option<String>,
    pub join_token: Option<String>,
    pub join: Option<bool>,
    pub tick_ms: Option<u64>,
    pub election_ticks: Option<usize>,
    pub heartbeat_ticks: Option<usize>,
    pub snapshot_entries: Option<u64>,
    pub request_timeout_ms: Option<u64>,
    pub enable_fault_injection: Option<bool>,
    pub tls_ca: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_ca_key: Option<PathBuf>,
    pub insecure: Option<bool>,
    pub agent_renew_ms: Option<u64>,
    pub agent_lease_ms: Option<u64>,
    pub rate_window_ms: Option<u64>,
    pub plan_interval_ms: Option<u64>,
    pub rate_tau_s: Option<f64>,
}

/// The agent side's timings: leases, rate measurement and planning rounds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentsConfig {
    pub agent_renew_ms: u64,
    pub agent_lease_ms: u64,
    pub rate_window_ms: u64,
    pub plan_interval_ms: u64,
    /// None: the planner's default time constant.
    pub rate_tau_s: Option<f64>,
}

impl Default for AgentsConfig {
    fn default() -> Self {
        AgentsConfig {
            agent_renew_ms: 2000,
            agent_lease_ms: 10_000,
            rate_window_ms: 5000,
            plan_interval_ms: 1000,
            rate_tau_s: None,
        }
    }
}

impl AgentsConfig {
    /// Flags (with env) over the file over the defaults; every value > 0.
    fn from_flags(f: &Flags, file: &FileConfig) -> Result<AgentsConfig, ConfigError> {
        let d = AgentsConfig::default();
        let positive = |field: &'static str, v: Option<u64>, def: u64| match v {
            Some(0) => Err(invalid(field, "must be > 0")),
            Some(n) => Ok(n),
            None => Ok(def),
        };
        let rate_tau_s = f.rate_tau_s.or(f.plan_peak_s).or(file.rate_tau_s);
        if let Some(t) = rate_tau_s {
            if !(t.is_finite() && t > 0.0) {
                return Err(invalid(
                    "rate_tau_s",
                    format!("must be a finite number > 0 (seconds), got {t}"),
                ));
            }
        }
        Ok(AgentsConfig {
            agent_renew_ms: positive(
                "agent_renew_ms",
                f.agent_renew_ms.or(file.agent_renew_ms),
                d.agent_renew_ms,
            )?,
            agent_lease_ms: positive(
                "agent_lease_ms",
                f.agent_lease_ms.or(file.agent_lease_ms),
                d.agent_lease_ms,
            )?,
            rate_window_ms: positive(
                "rate_window_ms",
                f.rate_window_ms.or(file.rate_window_ms),
                d.rate_window_ms,
            )?,
            plan_interval_ms: positive(
                "plan_interval_ms",
                f.plan_interval_ms.or(file.plan_interval_ms),
                d.plan_interval_ms,
            )?,
            rate_tau_s,
        })
    }
}

impl FileConfig {
    /// The file named by `--config` (every field unset without one).
    fn read(path: Option<&std::path::Path>) -> Result<FileConfig, ConfigError> {
        let Some(p) = path else {
            return Ok(FileConfig::default());
        };
        let text = std::fs::read_to_string(p).map_err(|e| ConfigError::File {
            path: p.to_path_buf(),
            reason: e.to_string(),
        })?;
        toml::from_str::<FileConfig>(&text).map_err(|e| ConfigError::File {
            path: p.to_path_buf(),
            reason: e.to_string(),
        })
    }
}

/// TLS material or `insecure` (exactly one), and the CA key (only with TLS).
struct TlsChoice {
    tls: Option<edgeplane_tls::TlsPaths>,
    tls_ca_key: Option<PathBuf>,
    insecure: bool,
}

impl TlsChoice {
    fn from_flags(f: &Flags, file: &FileConfig) -> Result<TlsChoice, ConfigError> {
        let tls = edgeplane_tls::TlsPaths::from_flags(
            f.tls_ca.as_deref().or(file.tls_ca.as_deref()),
            f.tls_cert.as_deref().or(file.tls_cert.as_deref()),
            f.tls_key.as_deref().or(file.tls_key.as_deref()),
        )
        .map_err(|e| invalid("tls", e.to_string()))?;
        let insecure = f.insecure || file.insecure.unwrap_or(false);
        let tls_ca_key = f.tls_ca_key.clone().or(file.tls_ca_key.clone());
        if tls_ca_key.is_some() && tls.is_none() {
            return Err(invalid(
                "tls_ca_key",
                "needs --tls-ca, --tls-cert and --tls-key (a CA key signs nothing without TLS)",
            ));
        }
        match (&tls, insecure) {
            (None, false) => return Err(invalid("tls", edgeplane_tls::NO_TLS_MATERIAL)),
            (Some(_), true) => {
                return Err(invalid(
                    "insecure",
                    "--insecure together with --tls-ca/--tls-cert/--tls-key; give one or the other",
                ))
            }
            _ => {}
        }
        Ok(TlsChoice {
            tls,
            tls_ca_key,
            insecure,
        })
    }
}

/// The effective, validated configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub id: u64,
    pub client_addr: String,
    pub peer_addr: String,
    pub initial_cluster: BTreeMap<u64, String>,
    pub data_dir: PathBuf,
    pub metrics_addr: Option<String>,
    /// Shown redacted by `Debug`, `Serialize` and `--print-config`.
    #[serde(serialize_with = "redact")]
    pub join_token: Option<edgeplane_tls::Secret>,
    /// The CA key (`--tls-ca-key`): this member signs joining agents' certificates.
    pub tls_ca_key: Option<PathBuf>,
    pub join: bool,
    pub tick_ms: u64,
    pub election_ticks: usize,
    pub heartbeat_ticks: usize,
    pub snapshot_entries: u64,
    pub request_timeout_ms: u64,
    pub enable_fault_injection: bool,
    /// With fault injection only: fsync fails after this many calls.
    pub fault_fsync_fail_after: Option<u64>,
    pub agents: AgentsConfig,
    /// TLS material (`None` only with `insecure`).
    #[serde(skip)]
    pub tls: Option<edgeplane_tls::TlsPaths>,
    pub insecure: bool,
}

impl Config {
    pub fn tick(&self) -> Duration {
        Duration::from_millis(self.tick_ms)
    }
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// Merge flags (with env) over the file named by `--config`, then validate.
    pub fn from_flags(f: &Flags) -> Result<Config, ConfigError> {
        let file = FileConfig::read(f.config.as_deref())?;
        let agents = AgentsConfig::from_flags(f, &file)?;
        let TlsChoice {
            tls,
            tls_ca_key,
            insecure,
        } = TlsChoice::from_flags(f, &file)?;
        let id = f.id.or(file.id).ok_or_else(|| invalid("id", "required"))?;
        if id == 0 {
            return Err(invalid("id", "must be > 0"));
        }
        let client_addr = f
            .client_addr
            .clone()
            .or(file.client_addr)
            .ok_or_else(|| invalid("client_addr", "required"))?;
        check_addr("client_addr", &client_addr)?;
        let peer_addr = f
            .peer_addr
            .clone()
            .or(file.peer_addr)
            .ok_or_else(|| invalid("peer_addr", "required"))?;
        check_addr("peer_addr", &peer_addr)?;
        let ic = f
            .initial_cluster
            .clone()
            .or(file.initial_cluster)
            .unwrap_or_default();
        let initial_cluster = parse_initial_cluster(&ic)?;
        let data_dir = f
            .data_dir
            .clone()
            .or(file.data_dir)
            .ok_or_else(|| invalid("data_dir", "required"))?;
        if data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty"));
        }
        let metrics_addr = f.metrics_addr.clone().or(file.metrics_addr);
        if let Some(m) = &metrics_addr {
            check_addr("metrics_addr", m)?;
        }
        let join_token = f.join_token.clone().or(file.join_token);
        if join_token.as_deref() == Some("") {
            return Err(invalid("join_token", "must not be empty when given"));
        }
        let join_token = join_token.map(edgeplane_tls::Secret::new);
        let join = f.join.or(file.join).unwrap_or(false) || !initial_cluster.contains_key(&id);
        let tick_ms = f.tick_ms.or(file.tick_ms).unwrap_or(100);
        if tick_ms == 0 || tick_ms > 10_000 {
            return Err(invalid(
                "tick_ms",
                format!("must be in 1..=10000, got {tick_ms}"),
            ));
        }
        let election_ticks = f.election_ticks.or(file.election_ticks).unwrap_or(10);
        let heartbeat_ticks = f.heartbeat_ticks.or(file.heartbeat_ticks).unwrap_or(1);
        if heartbeat_ticks == 0 {
            return Err(invalid("heartbeat_ticks", "must be > 0"));
        }
        if election_ticks <= heartbeat_ticks {
            return Err(invalid(
                "election_ticks",
                format!("must be greater than heartbeat_ticks ({heartbeat_ticks}), got {election_ticks}"),
            ));
        }
        let snapshot_entries = f
            .snapshot_entries
            .or(file.snapshot_entries)
            .unwrap_or(10_000);
        if snapshot_entries == 0 {
            return Err(invalid("snapshot_entries", "must be > 0"));
        }
        let request_timeout_ms = f
            .request_timeout_ms
            .or(file.request_timeout_ms)
            .unwrap_or(5000);
        if request_timeout_ms == 0 {
            return Err(invalid("request_timeout_ms", "must be > 0"));
        }
        let enable_fault_injection = f
            .enable_fault_injection
            .or(file.enable_fault_injection)
            .unwrap_or(false);
        let fault_fsync_fail_after = f.fault_fsync_fail_after.filter(|_| enable_fault_injection);
        if !join && initial_cluster.get(&id) != Some(&peer_addr) {
            return Err(invalid(
                "initial_cluster",
                format!(
                    "entry {id}={} does not match peer_addr {peer_addr}",
                    initial_cluster[&id]
                ),
            ));
        }
        Ok(Config {
            id,
            client_addr,
            peer_addr,
            initial_cluster,
            data_dir,
            metrics_addr,
            join_token,
            tls_ca_key,
            join,
            tick_ms,
            election_ticks,
            heartbeat_ticks,
            snapshot_entries,
            request_timeout_ms,
            enable_fault_injection,
            fault_fsync_fail_after,
            agents,
            tls,
            insecure,
        })
    }

    /// The effective configuration as TOML (for `--print-config`).
    pub fn to_toml(&self) -> String {
        let mut v = toml::Table::new();
        v.insert("id".into(), (self.id as i64).into());
        v.insert("client_addr".into(), self.client_addr.clone().into());
        v.insert("peer_addr".into(), self.peer_addr.clone().into());
        v.insert(
            "initial_cluster".into(),
            self.initial_cluster
                .iter()
                .map(|(k, a)| format!("{k}={a}"))
                .collect::<Vec<_>>()
                .join(",")
                .into(),
        );
        v.insert(
            "data_dir".into(),
            self.data_dir.display().to_string().into(),
        );
        if let Some(m) = &self.metrics_addr {
            v.insert("metrics_addr".into(), m.clone().into());
        }
        if self.join_token.is_some() {
            v.insert("join_token".into(), "<redacted>".into());
        }
        v.insert("join".into(), self.join.into());
        v.insert("tick_ms".into(), (self.tick_ms as i64).into());
        v.insert("election_ticks".into(), (self.election_ticks as i64).into());
        v.insert(
            "heartbeat_ticks".into(),
            (self.heartbeat_ticks as i64).into(),
        );
        v.insert(
            "snapshot_entries".into(),
            (self.snapshot_entries as i64).into(),
        );
        v.insert(
            "request_timeout_ms".into(),
            (self.request_timeout_ms as i64).into(),
        );
        v.insert(
            "enable_fault_injection".into(),
            self.enable_fault_injection.into(),
        );
        if let Some(t) = &self.tls {
            v.insert("tls_ca".into(), t.ca.display().to_string().into());
            v.insert("tls_cert".into(), t.cert.display().to_string().into());
            v.insert("tls_key".into(), t.key.display().to_string().into());
        }
        if let Some(k) = &self.tls_ca_key {
            v.insert("tls_ca_key".into(), k.display().to_string().into());
        }
        v.insert("insecure".into(), self.insecure.into());
        let a = &self.agents;
        v.insert("agent_renew_ms".into(), (a.agent_renew_ms as i64).into());
        v.insert("agent_lease_ms".into(), (a.agent_lease_ms as i64).into());
        v.insert("rate_window_ms".into(), (a.rate_window_ms as i64).into());
        v.insert(
            "plan_interval_ms".into(),
            (a.plan_interval_ms as i64).into(),
        );
        if let Some(t) = a.rate_tau_s {
            v.insert("rate_tau_s".into(), t.into());
        }
        if let Some(n) = self.fault_fsync_fail_after {
            v.insert("fault_fsync_fail_after".into(), (n as i64).into());
        }
        toml::to_string(&v).unwrap_or_default()
    }
}

fn redact<S: serde::Serializer>(
    v: &Option<edgeplane_tls::Secret>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match v {
        Some(_) => s.serialize_some("<redacted>"),
        None => s.serialize_none(),
    }
}

fn check_addr(field: &'static str, a: &str) -> Result<(), ConfigError> {
    crate::state::check_addr(field, a).map_err(|e| invalid(field, e.to_string()))
}

/// Parse `1=host:port,2=host:port`.
pub fn parse_initial_cluster(s: &str) -> Result<BTreeMap<u64, String>, ConfigError> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .ok_or_else(|| invalid("initial_cluster", format!("{part:?} is not id=host:port")))?;
        let id: u64 = id
            .trim()
            .parse()
            .ok()
            .filter(|i| *i > 0)
            .ok_or_else(|| invalid("initial_cluster", format!("bad id in {part:?}")))?;
        check_addr("initial_cluster", addr.trim())?;
        if out.insert(id, addr.trim().to_string()).is_some() {
            return Err(invalid("initial_cluster", format!("id {id} listed twice")));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn flags(args: &[&str]) -> Flags {
        Flags::parse_from(std::iter::once("x").chain(args.iter().copied()))
    }

    const BASE: &[&str] = &[
        "--id",
        "1",
        "--client-addr",
        "127.0.0.1:7101",
        "--peer-addr",
        "127.0.0.1:7201",
        "--initial-cluster",
        "1=127.0.0.1:7201,2=127.0.0.1:7202",
        "--data-dir",
        "/tmp/x",
        "--insecure",
    ];

    #[test]
    fn flags_win_over_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "tick_ms = 50\nelection_ticks = 20\n").unwrap();
        let mut a = BASE.to_vec();
        let ps = p.display().to_string();
        a.extend(["--config", &ps, "--tick-ms", "20"]);
        let c = Config::from_flags(&flags(&a)).unwrap();
        assert_eq!(c.tick_ms, 20);
        assert_eq!(c.election_ticks, 20);
        assert!(!c.join);
        assert!(c.to_toml().contains("tick_ms = 20"));
    }

    #[test]
    fn bad_values_name_the_field() {
        let mut a = BASE.to_vec();
        a.extend(["--tick-ms", "0"]);
        let e = Config::from_flags(&flags(&a)).unwrap_err().to_string();
        assert!(e.contains("tick_ms"), "{e}");
        let mut a = BASE.to_vec();
        a[3] = "nonsense";
        let e = Config::from_flags(&flags(&a)).unwrap_err().to_string();
        assert!(e.contains("client_addr"), "{e}");
        let e = parse_initial_cluster("1=a:1,x=b:2")
            .unwrap_err()
            .to_string();
        assert!(e.contains("initial_cluster"), "{e}");
    }

    #[test]
    fn agent_timings_come_from_flags_env_or_file_and_name_the_field() {
        // defaults as documented: 2 s reports, 10 s leases, 5 s rate window, 1 s rounds
        let c = Config::from_flags(&flags(BASE)).unwrap();
        assert_eq!(c.agents, AgentsConfig::default());
        assert_eq!(c.agents.rate_window_ms, 5000);
        let mut a = BASE.to_vec();
        a.extend(["--agent-lease-ms", "700", "--plan-peak-s", "2"]);
        let c = Config::from_flags(&flags(&a)).unwrap();
        assert_eq!(c.agents.agent_lease_ms, 700);
        assert_eq!(c.agents.rate_tau_s, Some(2.0), "the older name still reads");
        assert!(c.to_toml().contains("agent_lease_ms = 700"));
        let mut a = BASE.to_vec();
        a.extend(["--rate-window-ms", "0"]);
        let e = Config::from_flags(&flags(&a)).unwrap_err().to_string();
        assert!(e.contains("`rate_window_ms`"), "{e}");
        // the fsync hook exists only with fault injection
        let mut a = BASE.to_vec();
        a.extend(["--fault-fsync-fail-after", "5"]);
        assert_eq!(
            Config::from_flags(&flags(&a))
                .unwrap()
                .fault_fsync_fail_after,
            None
        );
    }

    /// configs/coordinator.toml goes through the real loader, and lists exactly the keys
    /// `--print-config` shows: a key added to the config without the example fails here.
    #[test]
    fn the_example_config_parses_and_lists_every_key() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/coordinator.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let cfg = Config::from_flags(&Flags {
            config: Some(path),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(cfg.id, 1);
        assert_eq!(cfg.tick_ms, 100);
        let example: toml::Table = toml::from_str(&text).unwrap();
        let effective: toml::Table = toml::from_str(&cfg.to_toml()).unwrap();
        let keys = |t: &toml::Table| t.keys().cloned().collect::<std::collections::BTreeSet<_>>();
        assert_eq!(keys(&example), keys(&effective));
    }

    #[test]
    fn the_join_token_never_shows_and_the_ca_key_needs_tls() {
        let mut a = BASE.to_vec();
        a.extend(["--join-token", "s3cret-bootstrap"]);
        let c = Config::from_flags(&flags(&a)).unwrap();
        for shown in [
            format!("{c:?}"),
            c.to_toml(),
            serde_json::to_string(&c).unwrap(),
        ] {
            assert!(!shown.contains("s3cret"), "{shown}");
        }
        assert_eq!(c.join_token.as_ref().unwrap().expose(), "s3cret-bootstrap");
        let mut b = BASE.to_vec();
        b.extend(["--tls-ca-key", "/x/ca.key"]);
        let e = Config::from_flags(&flags(&b)).unwrap_err().to_string();
        assert!(e.contains("tls_ca_key") && e.contains("--tls-ca"), "{e}");
    }

    #[test]
    fn refuses_to_start_without_tls_material_or_insecure() {
        let a: Vec<&str> = BASE
            .iter()
            .copied()
            .filter(|x| *x != "--insecure")
            .collect();
        let e = Config::from_flags(&flags(&a)).unwrap_err().to_string();
        for want in ["--tls-ca", "--tls-cert", "--tls-key", "--insecure"] {
            assert!(e.contains(want), "{e}");
        }
        let mut b = a.clone();
        b.extend(["--tls-ca", "/x/ca.pem"]);
        let e = Config::from_flags(&flags(&b)).unwrap_err().to_string();
        assert!(e.contains("all three"), "{e}");
        let mut c = a.clone();
        c.extend(["--tls-ca", "/c", "--tls-cert", "/p", "--tls-key", "/k"]);
        let cfg = Config::from_flags(&flags(&c)).unwrap();
        assert!(cfg.to_toml().contains("tls_cert = \"/p\""));
        c.push("--insecure");
        let e = Config::from_flags(&flags(&c)).unwrap_err().to_string();
        assert!(e.contains("insecure"), "{e}");
    }
}
