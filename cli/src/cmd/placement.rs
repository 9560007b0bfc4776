//! `edgeplane placement set|show|plan|unpin`: pins, global load, plans (`--history`) and
//! `placement plan --dry-run`, the planner's side of the admin CLI.

use super::ReadOpts;
use crate::conn::Conn;
use crate::output::{write_result, Format, FormatArg};
use crate::GlobalArgs;
use anyhow::bail;
use clap::Subcommand;
use edgeplane_proto::admin as api;
use serde_json::json;

#[derive(Debug, Clone, clap::Args)]
pub struct ShowArgs {
    #[command(flatten)]
    pub read: ReadOpts,
    /// Also print the plan history (every plan change with its reason).
    #[arg(long)]
    pub history: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct PlanArgs {
    /// Print what the leader's planner would do now and why, committing nothing (the only
    /// mode: the planner loop on the leader commits plans itself).
    #[arg(long)]
    pub dry_run: bool,
    /// Output format: `table` for people, `json` for scripts.
    #[arg(long, short = 'o', visible_alias = "output", value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

fn parts_json(ps: &[api::Partition]) -> serde_json::Value {
    json!(ps
        .iter()
        .map(|p| json!({"accelerator": p.accelerator_id, "share_pct": p.share_pct, "models": p.models}))
        .collect::<Vec<_>>())
}

pub(crate) fn event_json(e: &api::PlanEvent) -> serde_json::Value {
    json!({"index": e.index, "node": e.node, "epoch": e.epoch, "reason": e.reason, "partitions": e.partitions})
}

/// `placement show --format json`.
pub fn show_json(r: &api::ShowPlacementResponse, history: bool) -> serde_json::Value {
    let mut v = json!({
        "nodes": r.nodes.iter().map(|n| json!({
            "node": n.node, "epoch": n.epoch, "status": n.status,
            "partitions": parts_json(&n.partitions), "target": parts_json(&n.target),
        })).collect::<Vec<_>>(),
        "pins": r.pins.iter().map(|p| json!({"node": p.node, "model": p.model, "accelerator": p.accelerator})).collect::<Vec<_>>(),
        "gpus": r.gpus.iter().map(|g| json!({
            "node": g.node, "accelerator": g.accelerator_id, "name": g.name,
            "planned_share_pct": g.planned_share_pct, "measured_util_pct": g.measured_util_pct,
        })).collect::<Vec<_>>(),
        "models": r.models.iter().map(|m| json!({
            "model": m.model, "requested_rps": m.requested_rps, "observed_rps": m.observed_rps,
            "planned_rps": m.planned_rps, "pinned": m.pinned,
        })).collect::<Vec<_>>(),
        "shed": r.shed,
    });
    if history {
        v["events"] = json!(r.events.iter().map(event_json).collect::<Vec<_>>());
    }
    v
}

pub(crate) fn print_events(events: &[api::PlanEvent]) {
    for e in events {
        println!(
            "  #{:<6} {:<16} epoch {:<6} {}\n          -> {}",
            e.index,
            if e.node.is_empty() { "(plan)" } else { &e.node },
            e.epoch,
            e.reason,
            e.partitions
        );
    }
}

/// `placement show` for people.
pub fn show_text(r: &api::ShowPlacementResponse, history: bool) {
    let pinned = |node: &str, p: &api::Partition| {
        p.models
            .iter()
            .all(|m| r.pins.iter().any(|x| x.node == node && &x.model == m))
    };
    for n in &r.nodes {
        let status = if n.status.is_empty() { "?" } else { &n.status };
        println!("{} ({status}, epoch {})", n.node, n.epoch);
        for p in &n.partitions {
            let kept = !n.target.is_empty() && !n.target.contains(p);
            println!(
                "  {} {:>3}%  {}{}{}",
                if p.accelerator_id.is_empty() {
                    "any"
                } else {
                    &p.accelerator_id
                },
                p.share_pct,
                p.models.join(","),
                if pinned(&n.node, p) { "  [pin]" } else { "" },
                if kept {
                    "  [kept until its new home is ready]"
                } else {
                    ""
                }
            );
        }
    }
    if !r.gpus.is_empty() {
        println!("gpus:");
        println!(
            "  {:<16} {:<6} {:<20} {:>8} {:>9}",
            "node", "gpu", "name", "planned", "measured"
        );
        for g in &r.gpus {
            println!(
                "  {:<16} {:<6} {:<20} {:>7}% {:>8.1}%",
                g.node, g.accelerator_id, g.name, g.planned_share_pct, g.measured_util_pct
            );
        }
    }
    if !r.models.is_empty() {
        println!("models:");
        println!(
            "  {:<20} {:>10} {:>10} {:>10}",
            "model", "requested", "observed", "planned"
        );
        for m in &r.models {
            println!(
                "  {:<20} {:>8.1}/s {:>8.1}/s {:>8.1}/s{}",
                m.model,
                m.requested_rps,
                m.observed_rps,
                m.planned_rps,
                if m.pinned { "  [pin]" } else { "" }
            );
        }
    }
    if !r.pins.is_empty() {
        println!("pins (win over the planner):");
        for p in &r.pins {
            println!("  {} -> {} [{}]", p.model, p.node, p.accelerator);
        }
    }
    for s in &r.shed {
        println!("not served: {s}");
    }
    if history {
        println!("history:");
        print_events(&r.events);
    }
}

pub(crate) async fn show(conn: &Conn, o: ShowArgs) -> anyhow::Result<()> {
    let stale = o.read.stale;
    let r = conn
        .call("placement show", |mut c| async move {
            c.show_placement(api::ReadRequest { stale }).await
        })
        .await?;
    if o.read.format == Format::Json {
        crate::output::print_json(&show_json(&r, o.history));
    } else {
        show_text(&r, o.history);
    }
    Ok(())
}

pub(crate) async fn plan(conn: &Conn, a: PlanArgs) -> anyhow::Result<()> {
    if !a.dry_run {
        bail!("`placement plan` needs --dry-run: the leader's planner loop commits plans itself; --dry-run shows what it would do now, and why");
    }
    let r = conn
        .call("placement plan", |mut c| async move {
            c.plan_placement(api::PlanPlacementRequest { dry_run: true })
                .await
        })
        .await?;
    if a.format == Format::Json {
        let j = serde_json::to_value(super::plan_view::DryRunJson::from(&r))?;
        crate::output::print_json(&j);
    } else {
        println!(
            "{} (dry run: nothing committed)",
            if r.replanned {
                "the planner would re-plan now"
            } else {
                "the planner keeps the committed plan"
            }
        );
        println!("why:");
        for d in &r.decisions {
            println!("  - {}", super::plan_view::decision_text(d));
        }
        if !r.steps.is_empty() {
            println!("steps (make-before-break):");
            for (i, s) in r.steps.iter().enumerate() {
                println!("  {}. {}", i + 1, super::plan_view::step_text(s));
            }
        }
    }
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum PlacementCommand {
    /// Pin a model to a node (optionally to one accelerator). Without --accelerator the pin
    /// is node-wide on a node without GPUs (its scheduler uses every accelerator), and on the
    /// node's first GPU otherwise.
    ///
    /// Example: edgeplane placement set --node gpu-box-1 --model ResNet50 --accelerator gpu0
    Set {
        /// Node name.
        #[arg(long)]
        node: String,
        /// Model name (must be deployed).
        #[arg(long)]
        model: String,
        /// Accelerator id on the node (default: its first).
        #[arg(long)]
        accelerator: Option<String>,
        #[command(flatten)]
        out: FormatArg,
    },
    /// Show placements: each node's partitions, pins, global load per GPU and model.
    Show(ShowArgs),
    /// What the leader's planner would do now and why (`--dry-run`: commits nothing).
    Plan(PlanArgs),
    /// Remove a pin: the model leaves the node's plan (exit code 4 when there is none).
    ///
    /// Example: edgeplane placement unpin --node gpu-box-1 --model ResNet50
    Unpin {
        /// Node name.
        #[arg(long)]
        node: String,
        /// Model name.
        #[arg(long)]
        model: String,
        #[command(flatten)]
        out: FormatArg,
    },
}

pub async fn placement(g: &GlobalArgs, c: PlacementCommand) -> anyhow::Result<()> {
    let conn = Conn::new(g)?;
    match c {
        PlacementCommand::Set {
            node,
            model,
            accelerator,
            out,
        } => {
            let meta = conn.meta(1);
            let r = conn
                .call("placement set", |mut c| {
                    let req = api::SetPlacementRequest {
                        meta,
                        node: node.clone(),
                        model: model.clone(),
                        accelerator: accelerator.clone().unwrap_or_default(),
                    };
                    async move { c.set_placement(req).await }
                })
                .await?;
            write_result(
                out.format,
                "placement set",
                r.index,
                r.epoch,
                &r.message,
                json!({"node": node, "model": model, "accelerator": accelerator}),
                &format!("pinned {model} to {node} (assignment epoch {})", r.epoch),
            );
        }
        PlacementCommand::Unpin { node, model, out } => {
            let meta = conn.meta(1);
            let r = conn
                .call("placement unpin", |mut c| {
                    let req = api::UnpinPlacementRequest {
                        meta,
                        node: node.clone(),
                        model: model.clone(),
                    };
                    async move { c.unpin_placement(req).await }
                })
                .await?;
            write_result(
                out.format,
                "placement unpin",
                r.index,
                r.epoch,
                &r.message,
                json!({"node": node, "model": model}),
                &format!(
                    "unpinned {model} from {node} (assignment epoch {})",
                    r.epoch
                ),
            );
        }
        PlacementCommand::Show(o) => show(&conn, o).await?,
        PlacementCommand::Plan(a) => plan(&conn, a).await?,
    }
    Ok(())
}
