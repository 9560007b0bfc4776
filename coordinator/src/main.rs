//! `edgeplane-coordinator`: one replica of the coordinator cluster.

use clap::Parser;
use edgeplane_coordinator::{agents, Config, Coordinator, Flags};

fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();
    let cfg = match Config::from_flags(&flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    if flags.print_config {
        print!("{}", cfg.to_toml());
        return Ok(());
    }
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("EDGEPLANE_LOG").unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new("info,raft=warn,h2=warn,tower=warn")
        });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let coord = Coordinator::start(
            cfg,
            agents::AgentHub::new(agents::LeaseConfig::from_env()).extensions(),
        )
        .await?;
        wait_for_signal().await;
        tracing::info!("shutdown signal received");
        coord.shutdown().await;
        Ok(())
    })
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
