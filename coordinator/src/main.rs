//! `edgeplane-coordinator`: one replica of the coordinator cluster. The body lives in the
//! library ([`edgeplane_coordinator::entry::main_with_args`]) so `edgeplane demo` can run
//! the same replica by re-executing itself.

fn main() -> std::process::ExitCode {
    edgeplane_coordinator::entry::main_with_args(std::env::args_os())
}
