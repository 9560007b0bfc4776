//! `edgeplane member list|add|remove` and `edgeplane leader transfer`.

use clap::Subcommand;
use edgeplane_proto::admin as api;
use serde_json::json;

use super::cluster::print_cluster_status;
use super::ReadOpts;
use crate::conn::Conn;
use crate::output::{write_result, FormatArg};
use crate::GlobalArgs;

#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// List the members with their roles, addresses and reachability (as `cluster status`).
    ///
    /// Example: edgeplane member list
    List(ReadOpts),
    /// Add a member (voter, or learner with --learner), then start it with
    /// `--join` on its host.
    ///
    /// Example: edgeplane member add 4 --peer-addr 10.0.0.4:7201 --client-addr 10.0.0.4:7101
    Add {
        /// Member id (> 0, unique, never reused).
        id: u64,
        /// Raft peer address of the new member (host:port).
        #[arg(long)]
        peer_addr: String,
        /// Client (Admin/Agent API) address of the new member (host:port).
        #[arg(long)]
        client_addr: String,
        /// Add as a non-voting learner (promote later by adding it again without --learner).
        #[arg(long)]
        learner: bool,
        #[command(flatten)]
        out: FormatArg,
    },
    /// Remove a member (the leader hands leadership over first).
    ///
    /// Example: edgeplane member remove 3
    Remove {
        /// Member id.
        id: u64,
        #[command(flatten)]
        out: FormatArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum LeaderCommand {
    /// Transfer leadership to a voting member.
    ///
    /// Example: edgeplane leader transfer --to 2
    Transfer {
        /// Id of the voter that should lead.
        #[arg(long)]
        to: u64,
        #[command(flatten)]
        out: FormatArg,
    },
}

pub async fn member(g: &GlobalArgs, c: MemberCommand) -> anyhow::Result<()> {
    let conn = Conn::new(g)?;
    let meta = conn.meta(1);
    match c {
        MemberCommand::List(o) => {
            let r = conn
                .call("member list", |mut c| async move {
                    c.cluster_status(api::ReadRequest { stale: o.stale }).await
                })
                .await?;
            print_cluster_status(&r, o.format);
        }
        MemberCommand::Add {
            id,
            peer_addr,
            client_addr,
            learner,
            out,
        } => {
            let r = conn
                .call("member add", |mut c| {
                    let req = api::AddMemberRequest {
                        meta,
                        id,
                        peer_addr: peer_addr.clone(),
                        client_addr: client_addr.clone(),
                        learner,
                    };
                    async move { c.add_member(req).await }
                })
                .await?;
            let role = if learner { "learner" } else { "voter" };
            write_result(
                out.format,
                "member add",
                r.index,
                r.epoch,
                &r.message,
                json!({"id": id, "role": role, "peer_addr": peer_addr, "client_addr": client_addr}),
                &format!("added member {id} as {role} (index {})", r.index),
            );
        }
        MemberCommand::Remove { id, out } => {
            let r = conn
                .call("member remove", |mut c| {
                    let req = api::RemoveMemberRequest { meta, id };
                    async move { c.remove_member(req).await }
                })
                .await?;
            write_result(
                out.format,
                "member remove",
                r.index,
                r.epoch,
                &r.message,
                json!({"id": id}),
                &format!("removed member {id} (index {})", r.index),
            );
        }
    }
    Ok(())
}

pub async fn leader(g: &GlobalArgs, c: LeaderCommand) -> anyhow::Result<()> {
    let conn = Conn::new(g)?;
    let LeaderCommand::Transfer { to, out } = c;
    let r = conn
        .call("leader transfer", |mut c| async move {
            c.transfer_leader(api::TransferLeaderRequest { to }).await
        })
        .await?;
    write_result(
        out.format,
        "leader transfer",
        0,
        0,
        "",
        json!({"leader_id": r.leader_id}),
        &format!("leader is now {}", r.leader_id),
    );
    Ok(())
}
