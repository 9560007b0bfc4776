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
    /// Address the Inference gRPC API listens on.
    #[arg(long, env = "EDGEPLANE_AGENT_LISTEN")]
    pub listen: Option<String>,
    /// Directory for the persisted assignment.
    #[arg(long, env = "EDGEPLANE_AGENT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// `nvml` or `sim:<XRBench hardware set-up>` (e.g. `sim:Dual_4K_WS_OS`).
    #[arg(long, env = "EDGEPLANE_AGENT_ACCELERATORS")]
    pub accelerators: Option<String>,
    /// Join token the cluster was started with.
    #[arg(long, env = "EDGEPLANE_AGENT_JOIN_TOKEN")]
    pub join_token: Option<String>,
    /// Run an XRBench scenario's frames locally in real time (e.g. `VR_gaming`).
    #[arg(long, env = "EDGEPLANE_AGENT_SCENARIO")]
    pub scenario: Option<String>,
    /// How long the scenario runs, in ms.
    #[arg(long, env = "EDGEPLANE_AGENT_SCENARIO_DURATION_MS")]
    pub scenario_duration_ms: Option<u64>,
    /// Exit after the scenario finished (prints its summary as JSON on stdout).
    #[arg(long)]
    pub exit_after_scenario: bool,
    /// With SDRM3: run the online weight tuner beside the real-time loop.
    #[arg(long)]
    pub tune: bool,
    /// With SDRM3: switch Supernet sub-networks with load.
    #[arg(long)]
    pub supernet: bool,
    /// Run the scenario through the same scheduling core in virtual time (no server, no
    /// wall clock), print its summary and exit: the reference a real-time run is held to.
    #[arg(long)]
    pub virtual_time: bool,
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
    /// TOML config file (lowest precedence).
    #[arg(long, env = "EDGEPLANE_AGENT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
}

/// The config file: every field optional, same names as the flags (snake_case).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    name: Option<String>,
    coordinators: Option<Vec<String>>,
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    accelerators: Option<String>,
    join_token: Option<String>,
    scenario: Option<String>,
    scenario_duration_ms: Option<u64>,
    tune: Option<bool>,
    supernet: Option<bool>,
    policy: Option<String>,
    seed: Option<u64>,
    report_interval_ms: Option<u64>,
    max_backoff_ms: Option<u64>,
}

/// Where the accelerators come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub enum AcceleratorSpec {
    /// Discover GPUs through NVML; none (or no driver) → a CPU-only node.
    Nvml,
    /// Simulated accelerators of an XRBench hardware set-up.
    Sim(String),
}

impl From<AcceleratorSpec> for String {
    fn from(s: AcceleratorSpec) -> String {
        match s {
            AcceleratorSpec::Nvml => "nvml".into(),
            AcceleratorSpec::Sim(n) => format!("sim:{n}"),
        }
    }
}

impl std::str::FromStr for AcceleratorSpec {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        if s == "nvml" {
            return Ok(AcceleratorSpec::Nvml);
        }
        match s.strip_prefix("sim:") {
            Some(n) if !n.is_empty() => Ok(AcceleratorSpec::Sim(n.to_string())),
            _ => Err(invalid(
                "accelerators",
                format!("{s:?}: expected `nvml` or `sim:<hardware set-up>`"),
            )),
        }
    }
}

/// The effective, validated agent configuration.
#[derive(Debug, Clone, Serialize)]
pub struct AgentConfig {
    pub name: String,
    pub coordinators: Vec<String>,
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub accelerators: AcceleratorSpec,
    pub join_token: String,
    pub scenario: Option<String>,
    pub scenario_duration_ms: u64,
    #[serde(skip)]
    pub exit_after_scenario: bool,
    #[serde(skip)]
    pub virtual_time: bool,
    pub tune: bool,
    pub supernet: bool,
    pub policy: String,
    pub seed: u64,
    pub report_interval_ms: u64,
    pub max_backoff_ms: u64,
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
        let listen: SocketAddr = listen_s
            .parse()
            .map_err(|e| invalid("listen", format!("{listen_s:?}: {e}")))?;
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
        let join_token = flags.join_token.or(file.join_token).unwrap_or_default();
        if !coordinators.is_empty() && join_token.is_empty() {
            return Err(invalid(
                "join_token",
                "required when `coordinators` are given",
            ));
        }
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
        let policy = flags
            .policy
            .or(file.policy)
            .unwrap_or_else(|| crate::core::DEFAULT_POLICY.into());
        crate::core::check_policy(&policy).map_err(|e| invalid("policy", e))?;
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
        Ok(AgentConfig {
            name,
            coordinators,
            listen,
            data_dir,
            accelerators,
            join_token,
            scenario,
            scenario_duration_ms,
            exit_after_scenario: flags.exit_after_scenario,
            virtual_time: flags.virtual_time,
            tune: flags.tune || file.tune.unwrap_or(false),
            supernet: flags.supernet || file.supernet.unwrap_or(false),
            policy,
            seed: flags.seed.or(file.seed).unwrap_or(1),
            report_interval_ms,
            max_backoff_ms,
        })
    }

    /// The effective configuration as TOML (for `--print-config`); the join token is masked.
    pub fn to_toml(&self) -> String {
        let mut shown = self.clone();
        if !shown.join_token.is_empty() {
            shown.join_token = "<set>".into();
        }
        toml::to_string(&shown).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(args: &[&str]) -> Flags {
        let mut v = vec!["edgeplane-agent"];
        v.extend_from_slice(args);
        Flags::try_parse_from(v).unwrap()
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
        ];
        for (args, field) in cases {
            let e = AgentConfig::resolve(flags(args)).unwrap_err().to_string();
            assert!(e.contains(&format!("`{field}`")), "{args:?} -> {e}");
        }
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
    }
}
