//! The body of the `edgeplane-agent` binary as a library function, so that another binary
//! (the `edgeplane` CLI's `demo`, which re-executes itself as `edgeplane internal agent ...`)
//! can run a real agent process without this binary having been built.

use crate::config::{AgentConfig, Flags};
use clap::Parser;
use std::ffi::OsString;
use std::process::ExitCode;

/// Parse `args` (the first item is the program name) as the agent's flags and run it until
/// SIGINT/SIGTERM (or the end of its scenario with `--exit-after-scenario`). A scenario's
/// summary is printed as JSON on stdout. Exit codes: 0 on success, 1 on a runtime failure,
/// 2 on an invalid config.
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
    let print = flags.print_config;
    let log_format = flags.log_format;
    let cfg = match AgentConfig::resolve(flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if print {
        print!("{}", cfg.to_toml());
        return ExitCode::SUCCESS;
    }
    if cfg.virtual_time {
        return match crate::run_virtual(&cfg) {
            Ok(s) => {
                println!("{s}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    edgeplane_telemetry::logs::init(log_format, "info,h2=warn,tower=warn");
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if cfg.compare_virtual {
        return match rt.block_on(crate::compare_virtual(&cfg)) {
            Ok(c) => {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&c).unwrap_or_else(|e| e.to_string())
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let res = rt.block_on(async move {
        edgeplane_telemetry::service::spawn_sighup_handler("agent");
        let (tx, _) = tokio::sync::broadcast::channel::<()>(4);
        let sig = tx.clone();
        tokio::spawn(async move {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
            tracing::info!("shutting down");
            edgeplane_telemetry::service::stopping();
            let _ = sig.send(());
        });
        crate::run(cfg, tx).await
    });
    match res {
        Ok(summary) => {
            if let Some(summary) = summary {
                println!("{summary}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
