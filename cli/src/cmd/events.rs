//! `edgeplane events`: plan changes with their reasons (the replicated plan history), once
//! or `--follow`.

use super::placement::{event_json, print_events};
use super::ReadOpts;
use crate::conn::Conn;
use crate::output::Format;
use crate::GlobalArgs;
use edgeplane_proto::admin as api;
use serde_json::json;

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
