//! `edgeplane nodes list|get|drain|remove`.

use clap::Subcommand;
use edgeplane_proto::admin as api;
use serde_json::json;

use super::ReadOpts;
use crate::conn::Conn;
use crate::exit::{self, Kind};
use crate::output::Format;
use crate::output::{self, print_json, write_result, FormatArg};
use crate::GlobalArgs;

#[derive(Debug, Subcommand)]
pub enum NodesCommand {
    /// List nodes (edge agents) with status, accelerators and live figures.
    ///
    /// Example: edgeplane nodes list
    List(ReadOpts),
    /// Show one node (exit code 4 when it is not registered).
    ///
    /// Example: edgeplane nodes get edge-7 -o json
    Get {
        /// Node name.
        name: String,
        #[command(flatten)]
        opts: ReadOpts,
    },
    /// Drain a node: mark it draining (nothing new is placed there), remove its pins and
    /// empty its plan. `--undo` makes it ready again.
    ///
    /// Example: edgeplane nodes drain edge-7; edgeplane nodes drain edge-7 --undo
    Drain {
        /// Node name.
        name: String,
        /// Make the node ready again instead.
        #[arg(long)]
        undo: bool,
        #[command(flatten)]
        out: FormatArg,
    },
    /// Forget a node and its pins (stop its agent first: a running agent registers again).
    ///
    /// Example: edgeplane nodes remove edge-7
    Remove {
        /// Node name.
        name: String,
        #[command(flatten)]
        out: FormatArg,
    },
}

/// One node of `nodes list --format json` (also the dashboard's `/api/nodes`).
pub fn node_json(n: &api::NodeInfo, live_figures_unknown: bool) -> serde_json::Value {
    let lr = n.last_report.unwrap_or_default();
    json!({"name": n.name, "status": n.status, "agent_addr": n.agent_addr,
       "accelerators": n.accelerators.iter().map(|a| json!({"id": a.id, "kind": a.kind,
            "name": a.name, "memory_mb": a.memory_mb, "mig_capable": a.mig_capable,
            "sm_count": a.sm_count, "simulated": a.simulated, "profile": a.profile,
            "profiled_models": a.profiled_models})).collect::<Vec<_>>(),
       "assignment_epoch": n.assignment_epoch, "models": n.models,
       "last_report": {"deadlines_met": lr.deadlines_met, "deadlines_missed": lr.deadlines_missed,
                       "energy_j": lr.energy_j},
       "live_figures_unknown": live_figures_unknown})
}

pub async fn nodes(g: &GlobalArgs, c: NodesCommand) -> anyhow::Result<()> {
    let conn = Conn::new(g)?;
    let (o, only) = match c {
        NodesCommand::List(o) => (o, None),
        NodesCommand::Get { name, opts } => (opts, Some(name)),
        NodesCommand::Drain { name, undo, out } => {
            let meta = conn.meta(1);
            let r = conn
                .call("nodes drain", |mut c| {
                    let req = api::DrainNodeRequest {
                        meta,
                        name: name.clone(),
                        undo,
                    };
                    async move { c.drain_node(req).await }
                })
                .await?;
            let status = if undo { "ready" } else { "draining" };
            write_result(
                out.format,
                "nodes drain",
                r.index,
                r.epoch,
                &r.message,
                json!({"node": name, "status": status}),
                &r.message,
            );
            return Ok(());
        }
        NodesCommand::Remove { name, out } => {
            let meta = conn.meta(1);
            let r = conn
                .call("nodes remove", |mut c| {
                    let req = api::RemoveNodeRequest {
                        meta,
                        name: name.clone(),
                    };
                    async move { c.remove_node(req).await }
                })
                .await?;
            write_result(
                out.format,
                "nodes remove",
                r.index,
                r.epoch,
                &r.message,
                json!({"node": name}),
                &format!("removed node {name} (index {})", r.index),
            );
            return Ok(());
        }
    };
    let mut r = conn
        .call("nodes list", |mut c| async move {
            c.list_nodes(api::ReadRequest { stale: o.stale }).await
        })
        .await?;
    if let Some(name) = &only {
        r.nodes.retain(|n| &n.name == name);
        if r.nodes.is_empty() {
            return Err(exit::fail(
                Kind::NotFound,
                format!("nodes get: node {name:?} is not registered (see `edgeplane nodes list`)"),
            ));
        }
    }
    if o.format == Format::Json {
        let v: Vec<_> = r
            .nodes
            .iter()
            .map(|n| node_json(n, r.live_figures_unknown))
            .collect();
        match (&only, v.first()) {
            (Some(_), Some(one)) => print_json(one),
            _ => print_json(&json!(v)),
        }
    } else {
        let mut t = output::table([
            "name", "status", "address", "accel", "profile", "epoch", "met", "missed", "energy_j",
            "models",
        ]);
        for n in &r.nodes {
            let lr = n.last_report.unwrap_or_default();
            t.add_row(vec![
                n.name.clone(),
                n.status.clone(),
                n.agent_addr.clone(),
                n.accelerators.len().to_string(),
                // what the planner plans each accelerator with: measured rows, shipped, or none
                n.accelerators
                    .iter()
                    .map(|a| {
                        let p = a.profile.split(' ').next().unwrap_or("");
                        format!("{}:{}", a.id, if p.is_empty() { "-" } else { p })
                    })
                    .collect::<Vec<_>>()
                    .join(","),
                n.assignment_epoch.to_string(),
                lr.deadlines_met.to_string(),
                lr.deadlines_missed.to_string(),
                format!("{:.2}", lr.energy_j),
                n.models.join(","),
            ]);
        }
        println!("{t}");
        if r.live_figures_unknown {
            println!("{LIVE_FIGURES_UNKNOWN}");
        }
    }
    Ok(())
}

/// Printed under a stale list answered by a follower: live figures live in the leader's memory.
pub(crate) const LIVE_FIGURES_UNKNOWN: &str =
    "(live figures unknown: a stale list from a follower; \
     drop --stale to get the leader's figures)";
