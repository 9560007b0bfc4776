//! The body of the `edgeplane-coordinator` binary as a library function, so that another
//! binary (the `edgeplane` CLI's `demo`, which re-executes itself as `edgeplane internal
//! coordinator ...`) can run a real replica process without this binary having been built.

use crate::{Config, Coordinator, ExitReason, Flags};
use clap::Parser;
use std::ffi::OsString;
use std::process::ExitCode;

/// Parse `args` (the first item is the program name) as the coordinator's flags and run a
/// replica until SIGINT/SIGTERM, removal from the cluster, or a storage failure.
/// Exit codes: 0 after a clean shutdown, 1 on a runtime failure, 2 on an invalid config.
pub fn main_with_args<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let flags = match Flags::try_parse_from(args) {
        Ok(f) => f,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let cfg = match Config::from_flags(&flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if flags.print_config {
        print!("{}", cfg.to_toml());
        return ExitCode::SUCCESS;
    }
    edgeplane_telemetry::logs::init(flags.log_format, "info,raft=warn,h2=warn,tower=warn");
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let res: Result<(), crate::server::StartError> = rt.block_on(async move {
        edgeplane_telemetry::service::spawn_sighup_handler("coordinator");
        let ext = crate::wiring::agent_extensions(&cfg.agents);
        let coord = Coordinator::start(cfg, ext).await?;
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
    });
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
