//! Admin commands over gRPC against the coordinator cluster, and `bench raft`.

use crate::GlobalArgs;
use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Leader, term, indexes and members.
    Status,
}
#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// List models.
    List,
}
#[derive(Debug, Subcommand)]
pub enum NodesCommand {
    /// List nodes.
    List,
}
#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// Remove a member.
    Remove { id: u64 },
}
#[derive(Debug, Subcommand)]
pub enum LeaderCommand {
    /// Transfer leadership.
    Transfer {
        #[arg(long)]
        to: u64,
    },
}
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Save a snapshot of the replicated state to a file.
    Save { file: std::path::PathBuf },
}
#[derive(Debug, Subcommand)]
pub enum PlacementCommand {
    /// Show placements.
    Show,
}
#[derive(Debug, Args)]
pub struct BenchRaftArgs {}

fn todo(what: &str) -> anyhow::Result<()> {
    anyhow::bail!("{what}: not built yet")
}

pub async fn cluster(_g: &GlobalArgs, _c: ClusterCommand) -> anyhow::Result<()> {
    todo("cluster")
}
pub async fn models(_g: &GlobalArgs, _c: ModelsCommand) -> anyhow::Result<()> {
    todo("models")
}
pub async fn nodes(_g: &GlobalArgs, _c: NodesCommand) -> anyhow::Result<()> {
    todo("nodes")
}
pub async fn member(_g: &GlobalArgs, _c: MemberCommand) -> anyhow::Result<()> {
    todo("member")
}
pub async fn leader(_g: &GlobalArgs, _c: LeaderCommand) -> anyhow::Result<()> {
    todo("leader")
}
pub async fn snapshot(_g: &GlobalArgs, _c: SnapshotCommand) -> anyhow::Result<()> {
    todo("snapshot")
}
pub async fn placement(_g: &GlobalArgs, _c: PlacementCommand) -> anyhow::Result<()> {
    todo("placement")
}
pub async fn bench_raft(_g: &GlobalArgs, _a: BenchRaftArgs) -> anyhow::Result<()> {
    todo("bench raft")
}
