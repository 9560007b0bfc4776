//! Per-member views that do not need a quorum: `cluster health` (etcdctl's `endpoint
//! health`), `version` (the client's and every member's build) and the fallback of `cluster
//! status` when no leader answers (each member's own, possibly stale, view).
//!
//! Every endpoint is asked on its own and in parallel, with a short timeout, so one dead member
//! costs its timeout once, not once per member.

use std::time::{Duration, Instant};

use clap::Args;
use edgeplane_proto::admin as api;
use serde_json::json;

use crate::conn::Conn;
use crate::exit::{self, Kind};
use crate::output::{self, print_json, Format};
use crate::GlobalArgs;

/// `cluster health` options.
#[derive(Debug, Clone, Args)]
pub struct HealthArgs {
    /// Seconds each member gets to answer a linearizable read.
    #[arg(long, default_value_t = 2.0)]
    pub member_timeout_s: f64,
    /// Output format: `table` for people, `json` for scripts.
    #[arg(long, short = 'o', visible_alias = "output", value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// What one member said about itself, or why it did not answer.
#[derive(Debug, Clone)]
pub struct MemberView {
    pub endpoint: String,
    pub took: Duration,
    pub answer: Result<api::ClusterStatusResponse, String>,
}

impl MemberView {
    /// The member's own entry in its member list (its role as it last saw it).
    fn own_role(&self) -> String {
        match &self.answer {
            Ok(r) => r
                .members
                .iter()
                .find(|m| m.id == r.id)
                .map_or_else(|| "unknown".to_string(), |m| m.role.clone()),
            Err(_) => "-".to_string(),
        }
    }

    fn json(&self) -> serde_json::Value {
        match &self.answer {
            Ok(r) => json!({"endpoint": self.endpoint, "reachable": true, "id": r.id,
                "role": self.own_role(), "leader_id": r.leader_id, "term": r.term,
                "applied_index": r.applied_index, "version": r.version,
                "took_ms": self.took.as_secs_f64() * 1000.0}),
            Err(e) => json!({"endpoint": self.endpoint, "reachable": false, "error": e,
                "took_ms": self.took.as_secs_f64() * 1000.0}),
        }
    }
}

/// Ask every endpoint for its status on its own (`stale`: its local view, no quorum needed).
pub async fn member_views(g: &GlobalArgs, stale: bool, timeout: Duration) -> Vec<MemberView> {
    let tls = crate::tls::ClientTlsSource::from_args(&g.tls);
    let asks = g.endpoints.iter().map(|ep| {
        let conn = Conn::single(ep, timeout, tls.clone());
        let ep = ep.clone();
        async move {
            let t0 = Instant::now();
            let answer = match conn {
                Ok(conn) => conn
                    .call("cluster status", |mut c| async move {
                        c.cluster_status(api::ReadRequest { stale }).await
                    })
                    .await
                    .map_err(|e| format!("{e:#}")),
                Err(e) => Err(format!("{e:#}")),
            };
            MemberView {
                endpoint: ep,
                took: t0.elapsed(),
                answer,
            }
        }
    });
    futures::future::join_all(asks).await
}

/// `cluster health`: every member must answer a linearizable read (it has a leader and is
/// caught up with it). Exit 2 when any member is unhealthy.
pub async fn health(g: &GlobalArgs, a: HealthArgs) -> anyhow::Result<()> {
    if !(a.member_timeout_s.is_finite() && a.member_timeout_s > 0.0) {
        return Err(exit::fail(
            Kind::InvalidInput,
            format!(
                "--member-timeout-s: must be > 0, got {}",
                a.member_timeout_s
            ),
        ));
    }
    let views = member_views(g, false, Duration::from_secs_f64(a.member_timeout_s)).await;
    let unhealthy = views.iter().filter(|v| v.answer.is_err()).count();
    if a.format == Format::Json {
        let rows: Vec<_> = views
            .iter()
            .map(|v| {
                let mut j = v.json();
                j["healthy"] = json!(v.answer.is_ok());
                j
            })
            .collect();
        print_json(&json!(rows));
    } else {
        let mut t = output::table(["endpoint", "health", "took", "error"]);
        for v in &views {
            let (h, e) = match &v.answer {
                Ok(_) => ("healthy", String::new()),
                Err(e) => ("unhealthy", e.clone()),
            };
            t.add_row(vec![
                v.endpoint.clone(),
                h.to_string(),
                format!("{:.1} ms", v.took.as_secs_f64() * 1000.0),
                e,
            ]);
        }
        println!("{t}");
    }
    if unhealthy > 0 {
        return Err(exit::fail(
            Kind::Unavailable,
            format!(
                "cluster health: {unhealthy} of {} members unhealthy",
                views.len()
            ),
        ));
    }
    Ok(())
}

/// `version`: this client's build and each member's (from its own status, no quorum needed).
pub async fn version(g: &GlobalArgs, format: Format) -> anyhow::Result<()> {
    let client = env!("CARGO_PKG_VERSION");
    let views = member_views(g, true, Duration::from_secs(2)).await;
    if format == Format::Json {
        let servers: Vec<_> = views.iter().map(MemberView::json).collect();
        print_json(&json!({"client": client, "servers": servers}));
        return Ok(());
    }
    println!("client  {client}");
    let mut t = output::table(["endpoint", "member", "version"]);
    for v in &views {
        let (id, ver) = match &v.answer {
            Ok(r) if r.version.is_empty() => (r.id.to_string(), "unknown (older)".to_string()),
            Ok(r) => (r.id.to_string(), r.version.clone()),
            Err(e) => ("-".to_string(), format!("unreachable: {e}")),
        };
        t.add_row(vec![v.endpoint.clone(), id, ver]);
    }
    println!("{t}");
    Ok(())
}

/// `cluster status` when no member could answer with the leader's view: print each member's
/// own view, say there is no quorum, and exit 2.
pub async fn status_without_quorum(
    g: &GlobalArgs,
    format: Format,
    cause: anyhow::Error,
) -> anyhow::Result<()> {
    let views = member_views(g, true, Duration::from_secs(2)).await;
    let up = views.iter().filter(|v| v.answer.is_ok()).count();
    let line = format!(
        "no quorum: no leader answered ({up} of {} members reachable); below is each \
         reachable member's own view, which may be stale",
        views.len()
    );
    if format == Format::Json {
        print_json(&json!({"quorum": false, "message": line,
            "members": views.iter().map(MemberView::json).collect::<Vec<_>>()}));
    } else {
        println!("{line}");
        let mut t = output::table([
            "endpoint",
            "member",
            "reachable",
            "role",
            "term",
            "leader",
            "applied",
            "version",
        ]);
        for v in &views {
            let row = match &v.answer {
                Ok(r) => vec![
                    v.endpoint.clone(),
                    r.id.to_string(),
                    "true".into(),
                    v.own_role(),
                    r.term.to_string(),
                    r.leader_id.to_string(),
                    r.applied_index.to_string(),
                    r.version.clone(),
                ],
                Err(_) => vec![v.endpoint.clone(), "-".into(), "false".into()],
            };
            t.add_row(row);
        }
        println!("{t}");
    }
    Err(exit::fail(
        Kind::Unavailable,
        format!("cluster status: {line}; cause: {cause:#}"),
    ))
}
