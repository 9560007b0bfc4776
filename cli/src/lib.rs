//! The `edgeplane` operator CLI. Each command group lives in its own module:
//! - [`sim`]: `demo`, `sim`, `bench sdrm3` (scheduler simulations, no cluster needed)
//! - [`admin`]: cluster/models/nodes/member/leader/snapshot/placement and `bench raft`
//! - [`chaos`]: the history-checked fault suite against a cluster (`edgeplane chaos`)
//! - [`load`]: the open-loop load generator against an edge agent
//! - [`partition`]: `bench partition` (GPU partitioning modes in virtual time)

pub mod admin;
pub mod bench_agents;
pub mod chaos;
pub mod load;
pub mod partition;
pub mod plot;
pub mod sim;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "edgeplane",
    version,
    about = "Edgeplane: real-time ML inference control plane"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every admin command shares.
#[derive(Debug, Clone, clap::Args)]
pub struct GlobalArgs {
    /// Coordinator client endpoints (any member works; the CLI tries the next on failure).
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
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the main demo (self-contained, no cluster needed).
    Demo(sim::DemoArgs),
    /// Simulate one scenario on one hardware set-up with one policy.
    Sim(sim::SimArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Cluster membership and health.
    #[command(subcommand)]
    Cluster(admin::ClusterCommand),
    /// Models to serve.
    #[command(subcommand)]
    Models(admin::ModelsCommand),
    /// Edge nodes.
    #[command(subcommand)]
    Nodes(admin::NodesCommand),
    /// Add or remove coordinator members.
    #[command(subcommand)]
    Member(admin::MemberCommand),
    /// Leadership.
    #[command(subcommand)]
    Leader(admin::LeaderCommand),
    /// Snapshots of the replicated state.
    #[command(subcommand)]
    Snapshot(admin::SnapshotCommand),
    /// Operator-pinned placements (model -> node).
    #[command(subcommand)]
    Placement(admin::PlacementCommand),
    /// Open-loop load generator against an edge agent's Infer API.
    Load(load::LoadArgs),
    /// Fault suite: workload + faults, then check the history is linearizable.
    Chaos(chaos::ChaosArgs),
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Every policy on every scenario and hardware set-up (simulated).
    Sdrm3(sim::BenchArgs),
    /// Acknowledged writes/s (or linearizable reads/s with --reads) and latency against a
    /// coordinator cluster.
    Raft(admin::BenchRaftArgs),
    /// GPU partitioning modes in virtual time (seed experiment or the dynamic variant).
    Partition(partition::PartitionArgs),
    /// Many lightweight agent sessions against a cluster: leader CPU, leader change, mass expiry.
    Agents(bench_agents::BenchAgentsArgs),
}

/// Entry point of the binary: parse, run, map errors to a non-zero exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("EDGEPLANE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
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
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let g = cli.global;
    match cli.command {
        Command::Demo(a) => sim::demo(a),
        Command::Sim(a) => sim::sim(a),
        Command::Bench(BenchCommand::Sdrm3(a)) => sim::bench(a),
        Command::Bench(BenchCommand::Raft(a)) => admin::bench_raft(&g, a).await,
        Command::Bench(BenchCommand::Partition(a)) => partition::bench_partition(a),
        Command::Bench(BenchCommand::Agents(a)) => bench_agents::bench_agents(&g, a).await,
        Command::Cluster(c) => admin::cluster(&g, c).await,
        Command::Models(c) => admin::models(&g, c).await,
        Command::Nodes(c) => admin::nodes(&g, c).await,
        Command::Member(c) => admin::member(&g, c).await,
        Command::Leader(c) => admin::leader(&g, c).await,
        Command::Snapshot(c) => admin::snapshot(&g, c).await,
        Command::Placement(c) => admin::placement(&g, c).await,
        Command::Load(a) => load::load(a).await,
        Command::Chaos(a) => chaos::chaos(&g, a).await,
    }
}
