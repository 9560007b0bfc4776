fn main() -> anyhow::Result<()> {
    anyhow::bail!("edgeplane-coordinator: not built yet")
}
