//! `edgeplane-coordinator`: one replica of the coordinator cluster.

use clap::Parser;
use edgeplane_coordinator::{agents, Config, Coordinator, ExitReason, Flags};

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
        tokio::select! {
            _ = wait_for_signal() => {
                tracing::info!("shutdown signal received");
                coord.shutdown().await;
                Ok(())
            }
            reason = coord.exit_reason() => match reason {
                ExitReason::Removed => {
                    tracing::warn!("this replica was removed from the cluster; shutting down");
                    coord.shutdown().await;
                    Ok(())
                }
                ExitReason::Fatal(e) => {
                    // Crash-only: no graceful shutdown on a failed disk; the supervisor
                    // restarts the replica, which recovers from what is durable.
                    tracing::error!(error = %e, "storage failed (fsync or write); exiting");
                    eprintln!("error: storage failed: {e}");
                    std::process::exit(1);
                }
            },
        }
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
