//! The `edgeplane` operator CLI. Each command group lives in its own module:
//! - [`sim`]: `demo`, `sim`, `bench sdrm3` (scheduler simulations, no cluster needed)
//! - [`cmd`]: one file per admin command group (cluster, models, nodes, member/leader,
//!   snapshot, placement, events, tokens, agent), over [`conn::Conn`]
//! - [`bench_raft`]: `bench raft`
//! - [`chaos`]: the history-checked fault suite against a cluster (`edgeplane chaos`)
//! - [`load`]: the open-loop load generator against an edge agent
//! - [`partition`]: `bench partition` (GPU partitioning modes in virtual time)

pub mod bench_agents;
pub mod bench_raft;
pub mod catalog;
pub mod chaos;
pub mod cmd;
pub mod conn;
pub mod dashboard;
pub mod demo;
pub mod exit;
pub mod gpu_box;
pub mod latency;
pub mod load;
pub mod output;
pub mod partition;
pub mod partition_live;
pub mod plot;
pub mod restore;
pub mod sim;
pub mod tls;
pub mod top;

use clap::{CommandFactory, Parser, Subcommand};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "edgeplane",
    version,
    about = "Edgeplane: real-time ML inference control plane",
    after_help = "Examples:\n  \
edgeplane demo\n  \
edgeplane cluster status --endpoints 10.0.0.1:7101,10.0.0.2:7101,10.0.0.3:7101\n  \
edgeplane models deploy resnet50 --slo-ms 50 --rate 20\n  \
edgeplane nodes list --format json\n  \
edgeplane tokens create --ttl 2h --node edge-7\n  \
edgeplane agent status --agent 10.0.0.21:7301\n  \
edgeplane completion bash > /etc/bash_completion.d/edgeplane\n\n\
Every command takes --format table|json. Exit codes: 0 ok, 1 error, 2 unavailable,\n\
3 invalid input, 4 not found, 5 permission denied, 6 local I/O (see README)."
)]
pub struct Cli {
    /// Leave the header row out of tables (for scripts that cut columns).
    #[arg(long, global = true)]
    pub no_headers: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// Connection options of the commands that talk to the coordinator cluster (given after
/// the command group, e.g. `edgeplane models list --endpoints ...`).
#[derive(Debug, Clone, clap::Args)]
pub struct GlobalArgs {
    /// Coordinator client endpoints, comma-separated host:port (any member works; the CLI
    /// tries the next on failure).
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        env = "EDGEPLANE_ENDPOINTS",
        default_value = "127.0.0.1:7101"
    )]
    pub endpoints: Vec<String>,
    /// How long to wait for an answer (leader election included), in seconds.
    #[arg(long, global = true, default_value_t = 10.0)]
    pub timeout_s: f64,
    /// Mutual TLS: `--tls-ca`, `--tls-cert`, `--tls-key`, or `--insecure`.
    #[command(flatten)]
    pub tls: tls::TlsArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The whole system on this machine in about a minute: a 3-replica coordinator cluster,
    /// an XR agent (SDRM3 on simulated NPUs) and a GPU box, load, a leader kill, a report.
    Demo(demo::DemoArgs),
    /// Simulate one scenario on one hardware set-up with one policy.
    Sim(sim::SimArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Cluster membership and health.
    Cluster {
        #[command(flatten)]
        conn: GlobalArgs,
        #[command(subcommand)]
        cmd: cmd::cluster::ClusterCommand,
    },
    /// Models to serve.
    Models {
        #[command(flatten)]
        conn: GlobalArgs,
        #[command(subcommand)]
        cmd: cmd::models::ModelsCommand,
    },
    /// Edge nodes: list, drain, remove.
    Nodes {
        #[command(flatten)]
        conn: GlobalArgs,
        #[command(subcommand)]
        cmd: cmd::nodes::NodesCommand,
    },
    /// Add or remove coordinator members.
    Member {
        #[command(flatten)]
        conn: GlobalArgs,
        #[command(subcommand)]
        cmd: cmd::members::MemberCommand,
    },
    /// Leadership.
    Leader {
        #[command(flatten)]
        conn: GlobalArgs,
        #[command(subcommand)]
        cmd: cmd::members::LeaderCommand,
    },
    /// Snapshots of the replicated state: save (online), restore (offline).
    #[command(subcommand)]
    Snapshot(cmd::snapshot::SnapshotCommand),
    /// Placements: the planner's plan, operator pins, global load, dry runs.
    Placement {
        #[command(flatten)]
        conn: GlobalArgs,
        #[command(subcommand)]
        cmd: cmd::placement::PlacementCommand,
    },
    /// Plan changes with their reasons (the replicated plan history).
    Events {
        #[command(flatten)]
        conn: GlobalArgs,
        #[command(flatten)]
        args: cmd::events::EventsArgs,
    },
    /// One edge agent's own view (its Status RPC).
    Agent {
        #[command(flatten)]
        tls: tls::TlsArgs,
        #[command(subcommand)]
        cmd: cmd::agent::AgentCommand,
    },
    /// Open-loop load generator against an edge agent's Infer API.
    Load {
        #[command(flatten)]
        tls: tls::TlsArgs,
        #[command(flatten)]
        args: load::LoadArgs,
    },
    /// Fault suite: workload + faults, then check the history is linearizable.
    Chaos {
        #[command(flatten)]
        conn: GlobalArgs,
        #[command(flatten)]
        args: chaos::ChaosArgs,
    },
    /// The client's version and every member's (each asked on its own; no quorum needed).
    ///
    /// Example: edgeplane version --endpoints 10.0.0.1:7101,10.0.0.2:7101
    Version {
        #[command(flatten)]
        conn: GlobalArgs,
        #[command(flatten)]
        out: output::FormatArg,
    },
    /// A read-only live view of the fleet in the browser, served on localhost with your
    /// credentials (cluster, nodes, partitions over time, models, events).
    ///
    /// Example: edgeplane dashboard --listen 127.0.0.1:8080, then open http://127.0.0.1:8080/
    Dashboard {
        #[command(flatten)]
        conn: GlobalArgs,
        #[command(flatten)]
        args: dashboard::DashboardArgs,
    },
    /// The same live view in the terminal: nodes, partitions, models, events (q quits).
    ///
    /// Example: edgeplane top
    Top {
        #[command(flatten)]
        conn: GlobalArgs,
        #[command(flatten)]
        args: top::TopArgs,
    },
    /// Print a shell completion script.
    ///
    /// Example: edgeplane completion bash > /etc/bash_completion.d/edgeplane;
    /// edgeplane completion zsh > "${fpath[1]}/_edgeplane"; edgeplane completion fish >
    /// ~/.config/fish/completions/edgeplane.fish
    Completion {
        /// Shell to generate the script for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Cluster CA and certificates (members, operators with roles, nodes, clients).
    #[command(subcommand)]
    Certs(tls::CertsCommand),
    /// Per-node join tokens: create (printed once), list (never a secret), revoke.
    Tokens {
        #[command(flatten)]
        conn: GlobalArgs,
        #[command(subcommand)]
        cmd: cmd::tokens::TokensCommand,
    },
}

/// A closed stdout (`edgeplane nodes list | head -1`) ends the process quietly with
/// SIGPIPE (the shell shows 141), as `ls` or `kubectl` do, instead of a panic in `println!`.
/// Rust ignores SIGPIPE by default; this restores the default action.
fn default_sigpipe() {
    // SAFETY: setting a signal's disposition to SIG_DFL has no preconditions; it is done
    // before the runtime starts any thread.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

impl Command {
    /// Whether the command prints its answer and ends (every command but the long runs that
    /// start processes and hold connections: demo, benchmarks, the fault suite). Only these get
    /// the default SIGPIPE action ([`default_sigpipe`]); the long runs keep Rust's default
    /// (EPIPE as an error), so a closed pipe to a child process never kills them.
    fn is_one_shot(&self) -> bool {
        !matches!(
            self,
            Command::Demo(_)
                | Command::Bench(_)
                | Command::Chaos { .. }
                | Command::Dashboard { .. }
                | Command::Top { .. }
        )
    }
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Every policy on every scenario and hardware set-up (simulated).
    Sdrm3(sim::BenchArgs),
    /// Acknowledged writes/s (or linearizable reads/s with --reads) and latency against a
    /// coordinator cluster.
    Raft {
        #[command(flatten)]
        conn: GlobalArgs,
        #[command(flatten)]
        args: bench_raft::BenchRaftArgs,
    },
    /// GPU partitioning modes in virtual time (seed experiment or the dynamic variant).
    Partition(partition::PartitionArgs),
    /// Many lightweight agent sessions against a cluster: leader CPU, leader change, mass expiry.
    Agents {
        #[command(flatten)]
        conn: GlobalArgs,
        #[command(flatten)]
        args: bench_agents::BenchAgentsArgs,
    },
}

/// Entry point of the binary: parse, run, map errors to an exit code ([`exit`]).
pub fn main() -> ExitCode {
    // `edgeplane internal coordinator|agent ...`: the processes `demo` starts (itself,
    // re-executed), dispatched before any logging or runtime of the CLI is set up.
    {
        let mut raw = std::env::args_os();
        if raw.nth(1).is_some_and(|a| a == "internal") {
            return demo::internal(raw.collect());
        }
    }
    let argv = output::hoist_format_flags(hoist_connection_flags(std::env::args().collect()));
    let json = output::json_requested(&argv);
    let cli = match Cli::try_parse_from(&argv) {
        Ok(c) => c,
        Err(e) => {
            // --help and --version print to stdout and succeed; a usage error is invalid
            // input (3), not clap's default 2, which means "unavailable" here.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(exit::Kind::InvalidInput.code())
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    output::set_no_headers(cli.no_headers);
    if cli.command.is_one_shot() {
        default_sigpipe();
    }
    let filter = tracing_subscriber::EnvFilter::try_from_env("EDGEPLANE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            output::print_error(json, &e);
            exit::exit_code(&e)
        }
    }
}

/// Connection flags written before the command (`edgeplane --endpoints E models list`, the
/// form older scripts use) are moved after the command group, where they are defined;
/// on a command that takes none (`edgeplane --endpoints E sim`) clap then refuses them.
pub fn hoist_connection_flags(argv: Vec<String>) -> Vec<String> {
    let mut out = Vec::with_capacity(argv.len());
    let mut hoisted = Vec::new();
    let mut it = argv.into_iter();
    if let Some(bin) = it.next() {
        out.push(bin);
    }
    while let Some(a) = it.next() {
        if matches!(
            a.as_str(),
            "--endpoints" | "--timeout-s" | "--tls-ca" | "--tls-cert" | "--tls-key"
        ) {
            hoisted.push(a);
            if let Some(v) = it.next() {
                hoisted.push(v);
            }
        } else if a == "--insecure"
            || [
                "--endpoints=",
                "--timeout-s=",
                "--tls-ca=",
                "--tls-cert=",
                "--tls-key=",
            ]
            .iter()
            .any(|p| a.starts_with(p))
        {
            hoisted.push(a);
        } else if a.starts_with('-') {
            out.push(a);
        } else {
            // `snapshot` and `bench` take the flags on their leaves (`snapshot save`,
            // `bench raft`): put them after the leaf name there.
            let leaf_level = a == "snapshot" || a == "bench";
            out.push(a);
            if leaf_level {
                for b in it.by_ref() {
                    let flag = b.starts_with('-');
                    out.push(b);
                    if !flag {
                        break;
                    }
                }
            }
            out.append(&mut hoisted);
            out.extend(it);
            return out;
        }
    }
    out.append(&mut hoisted);
    out
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Demo(a) => demo::demo(a).await,
        Command::Sim(a) => sim::sim(a),
        Command::Bench(BenchCommand::Sdrm3(a)) => sim::bench(a),
        Command::Bench(BenchCommand::Raft { conn, args }) => {
            bench_raft::bench_raft(&conn, args).await
        }
        Command::Bench(BenchCommand::Partition(a)) if a.live.live => partition_live::run(a).await,
        Command::Bench(BenchCommand::Partition(a)) => partition::bench_partition(a),
        Command::Bench(BenchCommand::Agents { conn, args }) => {
            bench_agents::bench_agents(&conn, args).await
        }
        Command::Cluster { conn, cmd } => cmd::cluster::cluster(&conn, cmd).await,
        Command::Models { conn, cmd } => cmd::models::models(&conn, cmd).await,
        Command::Nodes { conn, cmd } => cmd::nodes::nodes(&conn, cmd).await,
        Command::Member { conn, cmd } => cmd::members::member(&conn, cmd).await,
        Command::Leader { conn, cmd } => cmd::members::leader(&conn, cmd).await,
        Command::Snapshot(c) => cmd::snapshot::snapshot(c).await,
        Command::Placement { conn, cmd } => cmd::placement::placement(&conn, cmd).await,
        Command::Events { conn, args } => cmd::events::events(&conn, args).await,
        Command::Agent { tls, cmd } => {
            cmd::agent::agent(&tls::ClientTlsSource::from_args(&tls), cmd).await
        }
        Command::Load { tls, args } => {
            load::load(&tls::ClientTlsSource::from_args(&tls), args).await
        }
        Command::Chaos { conn, args } => chaos::chaos(&conn, args).await,
        Command::Certs(c) => tls::certs(c),
        Command::Tokens { conn, cmd } => cmd::tokens::tokens(&conn, cmd).await,
        Command::Version { conn, out } => cmd::health::version(&conn, out.format).await,
        Command::Dashboard { conn, args } => dashboard::dashboard(&conn, args).await,
        Command::Top { conn, args } => top::top(&conn, args).await,
        Command::Completion { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "edgeplane",
                &mut std::io::stdout(),
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn connection_flags_only_where_used() {
        let parse = |a: &[&str]| Cli::try_parse_from(a);
        assert!(parse(&["edgeplane", "models", "list", "--endpoints", "a:1"]).is_ok());
        assert!(parse(&["edgeplane", "models", "--endpoints", "a:1", "list"]).is_ok());
        assert!(parse(&["edgeplane", "sim", "--endpoints", "a:1"]).is_err());
        assert!(parse(&["edgeplane", "completion", "bash", "--endpoints", "a:1"]).is_err());
        assert!(parse(&["edgeplane", "snapshot", "save", "f", "--endpoints", "a:1"]).is_ok());
        assert!(parse(&[
            "edgeplane",
            "snapshot",
            "restore",
            "f",
            "--endpoints",
            "a:1"
        ])
        .is_err());
    }

    #[test]
    fn connection_flags_before_the_command_still_work() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let a = hoist_connection_flags(v(&[
            "edgeplane",
            "--endpoints",
            "a:1",
            "--timeout-s=3",
            "models",
            "list",
            "--stale",
        ]));
        assert_eq!(
            a,
            v(&[
                "edgeplane",
                "models",
                "--endpoints",
                "a:1",
                "--timeout-s=3",
                "list",
                "--stale"
            ])
        );
        assert!(Cli::try_parse_from(&a).is_ok());
        let b = hoist_connection_flags(v(&["edgeplane", "--endpoints", "a:1", "sim"]));
        assert!(Cli::try_parse_from(&b).is_err(), "sim takes no endpoints");
        let d = hoist_connection_flags(v(&[
            "edgeplane",
            "--endpoints",
            "a:1",
            "snapshot",
            "save",
            "f",
        ]));
        assert_eq!(
            d,
            v(&["edgeplane", "snapshot", "save", "--endpoints", "a:1", "f"])
        );
        assert!(Cli::try_parse_from(&d).is_ok());
        let e = hoist_connection_flags(v(&["edgeplane", "--endpoints", "a:1", "bench", "raft"]));
        assert!(Cli::try_parse_from(&e).is_ok(), "{e:?}");
        let c = hoist_connection_flags(v(&["edgeplane", "models", "list"]));
        assert_eq!(c, v(&["edgeplane", "models", "list"]));
    }

    #[test]
    fn every_argument_is_documented() {
        fn walk(c: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in c.get_arguments() {
                let id = a.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if a.get_help().is_none() && a.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for s in c.get_subcommands() {
                if s.get_about().is_none() && s.get_long_about().is_none() && s.get_name() != "help"
                {
                    missing.push(format!("{path} {} (no about)", s.get_name()));
                }
                walk(s, &format!("{path} {}", s.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "edgeplane", &mut missing);
        assert!(missing.is_empty(), "undocumented: {missing:#?}");
    }
}
