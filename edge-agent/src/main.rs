//! `edgeplane-agent`: the edge agent. The body lives in the library
//! ([`edgeplane_agent::entry::main_with_args`]) so `edgeplane demo` can run the same agent by
//! re-executing itself; `edgeplane-agent profile` measures the box's workers.

mod profile_cmd;

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("profile") {
        let filter = tracing_subscriber::EnvFilter::try_from_env("EDGEPLANE_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
        return match profile_cmd::main(args[1..].to_vec()) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    edgeplane_agent::entry::main_with_args(std::env::args_os())
}
