//! `edgeplane-agent`: thin wrapper over the library (config, logging, signals).

use clap::Parser;
use edgeplane_agent::config::{AgentConfig, Flags};

fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();
    let print = flags.print_config;
    let cfg = AgentConfig::resolve(flags)?;
    if print {
        print!("{}", cfg.to_toml());
        return Ok(());
    }
    if cfg.virtual_time {
        println!("{}", edgeplane_agent::run_virtual(&cfg)?);
        return Ok(());
    }
    let filter = tracing_subscriber::EnvFilter::try_from_env("EDGEPLANE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let (tx, _) = tokio::sync::broadcast::channel::<()>(4);
        let sig = tx.clone();
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("install SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            tracing::info!("shutting down");
            let _ = sig.send(());
        });
        if let Some(summary) = edgeplane_agent::run(cfg, tx).await? {
            println!("{summary}");
        }
        anyhow::Ok(())
    })
}
