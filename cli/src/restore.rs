//! `edgeplane snapshot restore`: offline, into a new data dir (see
//! `edgeplane_coordinator::restore`).

use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use crate::exit::{self, Kind};
use crate::output::{write_result, FormatArg};

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Snapshot file written by `edgeplane snapshot save`.
    pub file: PathBuf,
    /// New data dir for the restored replica (must not exist, or be empty).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Member id of the restored replica (> 0).
    #[arg(long, default_value_t = 1)]
    pub id: u64,
    /// Raft peer address the restored replica will listen on (host:port).
    #[arg(long)]
    pub peer_addr: String,
    /// Client address the restored replica will listen on (host:port).
    #[arg(long)]
    pub client_addr: String,
    #[command(flatten)]
    pub out: FormatArg,
}

pub fn restore(a: RestoreArgs) -> anyhow::Result<()> {
    let data = std::fs::read(&a.file).map_err(|e| {
        exit::fail(
            if e.kind() == std::io::ErrorKind::NotFound {
                Kind::NotFound
            } else {
                Kind::Io
            },
            format!("snapshot restore: cannot read {}: {e}", a.file.display()),
        )
    })?;
    use edgeplane_coordinator::restore::RestoreError as E;
    let r = edgeplane_coordinator::restore::restore(
        &a.file,
        &data,
        &a.data_dir,
        a.id,
        &a.peer_addr,
        &a.client_addr,
    )
    .map_err(|e| {
        let kind = match &e {
            E::Snapshot { .. } | E::NotEmpty { .. } | E::Invalid { .. } => Kind::InvalidInput,
            E::Storage { .. } => Kind::Io,
        };
        exit::fail(kind, format!("snapshot restore: {e}"))
    })?;
    write_result(
        a.out.format,
        "snapshot restore",
        r.index,
        0,
        "",
        json!({"data_dir": a.data_dir.display().to_string(), "id": a.id, "models": r.models,
               "nodes": r.nodes, "pins": r.pins}),
        &format!(
            "restored {} model(s), {} node(s), {} pin(s) into {} (member {}, log from index {}).\n\
             Start it: edgeplane-coordinator --id {} --data-dir {} --peer-addr {} --client-addr {} \
             --initial-cluster {}={}",
            r.models,
            r.nodes,
            r.pins,
            a.data_dir.display(),
            a.id,
            r.index,
            a.id,
            a.data_dir.display(),
            a.peer_addr,
            a.client_addr,
            a.id,
            a.peer_addr
        ),
    );
    Ok(())
}
