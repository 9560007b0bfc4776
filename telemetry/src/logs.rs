//! Log set-up of the daemons: `--log-format text|json` (`EDGEPLANE_LOG_FORMAT`), the filter
//! from `EDGEPLANE_LOG` (tracing's env-filter syntax) or the daemon's default.
//!
//! - `text`: tracing's default format (`key=value` fields), colours only on a terminal.
//! - `json`: one JSON object per line (`timestamp`, `level`, `target`, `fields`, `span`s), for
//!   Loki, Elasticsearch, `jq`.

/// The log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable `key=value` lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl std::fmt::Display for LogFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// Install the global subscriber writing to stderr: `EDGEPLANE_LOG` if set and valid, else
/// `default_filter`. A second call (tests, a re-executed child) does nothing.
pub fn init(format: LogFormat, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("EDGEPLANE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            // Colours only for a person at a terminal: journald and log files get plain text.
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(false)
            .with_current_span(false)
            .try_init(),
    };
}
