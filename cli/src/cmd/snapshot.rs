//! `edgeplane snapshot save|restore`.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;
use edgeplane_proto::admin as api;
use serde_json::json;

use crate::conn::Conn;
use crate::output::{write_result, FormatArg};
use crate::GlobalArgs;

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Save a snapshot of the replicated state to a file.
    ///
    /// Example: edgeplane snapshot save backup.snap
    Save {
        /// File to write.
        file: PathBuf,
        /// Save the answering member's own state without ReadIndex.
        #[arg(long)]
        stale: bool,
        #[command(flatten)]
        conn: GlobalArgs,
        #[command(flatten)]
        out: FormatArg,
    },
    /// Restore a saved snapshot into a NEW data dir (offline, like `etcdutl snapshot
    /// restore`): the replica started on it is the first member of a new cluster holding
    /// the snapshot's models, nodes and placements. Then add members with `member add`.
    ///
    /// Example: edgeplane snapshot restore backup.snap --data-dir /var/lib/edgeplane/r1
    /// --id 1 --peer-addr 10.0.0.1:7201 --client-addr 10.0.0.1:7101
    Restore(crate::restore::RestoreArgs),
}

pub async fn snapshot(c: SnapshotCommand) -> anyhow::Result<()> {
    let (file, stale, g, out) = match c {
        SnapshotCommand::Restore(a) => return crate::restore::restore(a),
        SnapshotCommand::Save {
            file,
            stale,
            conn,
            out,
        } => (file, stale, conn, out),
    };
    let conn = Conn::new(&g)?;
    let r = conn
        .call("snapshot save", |mut c| async move {
            c.save_snapshot(api::ReadRequest { stale }).await
        })
        .await?;
    std::fs::write(&file, &r.data).with_context(|| format!("writing {}", file.display()))?;
    write_result(
        out.format,
        "snapshot save",
        r.index,
        0,
        "",
        json!({"file": file.display().to_string(), "bytes": r.data.len(), "term": r.term}),
        &format!(
            "saved snapshot at index {} ({} bytes) to {}",
            r.index,
            r.data.len(),
            file.display()
        ),
    );
    Ok(())
}
