fn main() -> anyhow::Result<()> {
    anyhow::bail!("edgeplane-agent: not built yet")
}
