//! `placement show` (global load, plans, pins, `--history`), `placement plan --dry-run` and
//! `edgeplane events`: the planner's side of the admin CLI.

use crate::admin::{Conn, ReadOpts};
use crate::output::Format;
use crate::GlobalArgs;
use anyhow::bail;
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

#[derive(Debug, Clone, clap::Args)]
pub struct EventsArgs {
    /// Only the last N events.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Keep printing new events as they are committed (polls every second; Ctrl-C ends).
    /// With `--format json`, one JSON object per line.
    #[arg(long, short = 'f')]
    pub follow: bool,
    #[command(flatten)]
    pub read: ReadOpts,
}

fn parts_json(ps: &[api::Partition]) -> serde_json::Value {
    json!(ps
        .iter()
        .map(|p| json!({"accelerator": p.accelerator_id, "share_pct": p.share_pct, "models": p.models}))
        .collect::<Vec<_>>())
}

fn event_json(e: &api::PlanEvent) -> serde_json::Value {
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

fn print_events(events: &[api::PlanEvent]) {
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
        let plan: serde_json::Value = serde_json::from_str(&r.plan_json).unwrap_or(json!(null));
        crate::output::print_json(&json!({
            "replanned": r.replanned, "committed": r.committed,
            "decisions": r.decisions, "steps": r.steps, "plan": plan,
        }));
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
            println!("  - {d}");
        }
        if !r.steps.is_empty() {
            println!("steps (make-before-break):");
            for (i, s) in r.steps.iter().enumerate() {
                println!("  {}. {s}", i + 1);
            }
        }
    }
    Ok(())
}

/// `edgeplane events`: every plan change with its reason, oldest first.
pub async fn events(g: &GlobalArgs, a: EventsArgs) -> anyhow::Result<()> {
    let conn = Conn::new(g)?;
    let stale = a.read.stale;
    let fetch = || {
        conn.call("events", |mut c| async move {
            c.show_placement(api::ReadRequest { stale }).await
        })
    };
    let r = fetch().await?;
    let skip = a.limit.map_or(0, |l| r.events.len().saturating_sub(l));
    let ev = &r.events[skip..];
    if a.follow {
        return follow(fetch, ev, a.read.format).await;
    }
    if a.read.format == Format::Json {
        crate::output::print_json(&json!(ev.iter().map(event_json).collect::<Vec<_>>()));
    } else if ev.is_empty() {
        println!("no plan changes yet");
    } else {
        print_events(ev);
    }
    Ok(())
}

/// `events --follow`: print what is there, then every event with a higher log index as it
/// appears (the history is ordered by index; a transient error is retried by `fetch` itself).
async fn follow<F, Fut>(fetch: F, first: &[api::PlanEvent], format: Format) -> anyhow::Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<api::ShowPlacementResponse>>,
{
    let print = |evs: &[api::PlanEvent]| match format {
        Format::Json => {
            for e in evs {
                println!("{}", event_json(e));
            }
        }
        Format::Table => print_events(evs),
    };
    print(first);
    let mut last = first.last().map_or(0, |e| e.index);
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let r = fetch().await?;
        let new: Vec<_> = r.events.into_iter().filter(|e| e.index > last).collect();
        if let Some(e) = new.last() {
            last = e.index;
        }
        print(&new);
    }
}
