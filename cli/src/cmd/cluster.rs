//! `edgeplane cluster status|health`.

use clap::Subcommand;
use edgeplane_proto::admin as api;
use serde_json::json;

use super::ReadOpts;
use crate::conn::Conn;
use crate::exit::{self, Kind};
use crate::output::{self, print_json, Format};
use crate::GlobalArgs;

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Leader, term, indexes and members.
    ///
    /// Example: edgeplane cluster status --endpoints 10.0.0.1:7101,10.0.0.2:7101
    ///
    /// Without a quorum it prints each reachable member's own view and exits 2.
    Status(ReadOpts),
    /// Whether every member serves a linearizable read, each asked on its own (exit 2 when
    /// any is unhealthy).
    ///
    /// Example: edgeplane cluster health --endpoints 10.0.0.1:7101,10.0.0.2:7101
    Health(super::health::HealthArgs),
}

pub async fn cluster(g: &GlobalArgs, c: ClusterCommand) -> anyhow::Result<()> {
    let conn = Conn::new(g)?;
    let o = match c {
        ClusterCommand::Status(o) => o,
        ClusterCommand::Health(a) => return super::health::health(g, a).await,
    };
    let r = match conn
        .call("cluster status", |mut c| async move {
            c.cluster_status(api::ReadRequest { stale: o.stale }).await
        })
        .await
    {
        Ok(r) => r,
        Err(e) if !o.stale && exit::kind_of(&e) == Kind::Unavailable => {
            return super::health::status_without_quorum(g, o.format, e).await;
        }
        Err(e) => return Err(e),
    };
    print_cluster_status(&r, o.format);
    Ok(())
}

/// Print a `cluster status` answer (also `member list`).
pub(crate) fn print_cluster_status(r: &api::ClusterStatusResponse, format: Format) {
    if format == Format::Json {
        let members: Vec<_> = r
            .members
            .iter()
            .map(|m| {
                json!({"id": m.id, "peer_addr": m.peer_addr, "client_addr": m.client_addr,
                       "role": m.role, "reachable": m.reachable})
            })
            .collect();
        print_json(
            &json!({"leader_id": r.leader_id, "term": r.term, "commit_index": r.commit_index,
            "applied_index": r.applied_index, "answered_by": r.id, "version": r.version,
            "members": members}),
        );
    } else {
        println!(
            "leader {}  term {}  commit {}  applied {}  (answered by {})",
            r.leader_id, r.term, r.commit_index, r.applied_index, r.id
        );
        let mut t = output::table(["id", "role", "peer", "client", "reachable"]);
        for m in &r.members {
            t.add_row(vec![
                m.id.to_string(),
                m.role.clone(),
                m.peer_addr.clone(),
                m.client_addr.clone(),
                m.reachable.to_string(),
            ]);
        }
        println!("{t}");
    }
}
