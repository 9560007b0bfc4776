fn main() -> std::process::ExitCode {
    edgeplane_cli::main()
}
