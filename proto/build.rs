//! Compiles every `.proto` under `proto/proto` with a vendored `protoc`, so a fresh
//! machine needs no system protobuf compiler. Also writes the encoded file descriptor set
//! that the servers' gRPC reflection service serves.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut files: Vec<_> = std::fs::read_dir("proto")?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "proto"))
        .collect();
    files.sort();
    println!("cargo:rerun-if-changed=proto");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    // Messages that carry a join token: their `Debug` (in src/lib.rs) redacts it.
    config.skip_debug([
        "edgeplane.agent.v1.RegisterRequest",
        "edgeplane.agent.v1.Hello",
        "edgeplane.admin.v1.CreateTokenResponse",
    ]);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("edgeplane_descriptor.bin"))
        .compile_with_config(config, &files, &[std::path::PathBuf::from("proto")])?;
    Ok(())
}
