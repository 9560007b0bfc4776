//! `edgeplane load`: open-loop load generator against an edge agent.

use clap::Args;

#[derive(Debug, Args)]
pub struct LoadArgs {}

pub async fn load(_a: LoadArgs) -> anyhow::Result<()> {
    anyhow::bail!("load: not built yet")
}
