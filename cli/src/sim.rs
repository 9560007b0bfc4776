//! `demo`, `sim` and `bench sdrm3`: scheduler simulations, no cluster needed.

use clap::Args;

#[derive(Debug, Args)]
pub struct DemoArgs {}

#[derive(Debug, Args)]
pub struct SimArgs {}

#[derive(Debug, Args)]
pub struct BenchArgs {}

pub fn demo(_a: DemoArgs) -> anyhow::Result<()> {
    anyhow::bail!("demo: not built yet")
}

pub fn sim(_a: SimArgs) -> anyhow::Result<()> {
    anyhow::bail!("sim: not built yet")
}

pub fn bench(_a: BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("bench sdrm3: not built yet")
}
