//! `edgeplane dashboard`: a read-only live view of the fleet in the browser, served by the CLI
//! on a local address with the operator's own credentials (the `kubectl proxy` / `nomad ui`
//! pattern: the browser needs no client certificate, the CLI talks mutual TLS to the cluster).
//!
//! A collector ([`collect`]) polls the cluster's read RPCs and keeps a bounded history; the
//! HTTP server (axum, already in the tree through tonic) answers `GET` only: the page
//! (`assets/index.html`, compiled in, plain HTML + JS drawing SVG by hand) and one JSON view
//! per panel ([`api`]). Any other method is refused (405), and the collector can only read
//! ([`collect::ReadOnlyCluster`]), so nothing the page does can write to the cluster.

pub mod api;
pub mod collect;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use clap::Args;
use tracing::{info, warn};

use crate::conn::Conn;
use crate::exit::{self, Kind};
use crate::GlobalArgs;
use collect::{ReadOnlyCluster, Shared, Store};

const INDEX_HTML: &str = include_str!("assets/index.html");

#[derive(Debug, Clone, Args)]
pub struct DashboardArgs {
    /// Address the page is served on (host:port). Keep it on loopback: the page shows what
    /// your certificate may read, to anyone who can reach this address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Seconds of history the charts show (10 ..= 86400).
    #[arg(long, default_value_t = 600)]
    pub history_s: u64,
    /// How often the cluster is polled, in milliseconds (>= 100).
    #[arg(long, default_value_t = 1000)]
    pub poll_ms: u64,
}

/// A running dashboard: its address, and the tasks serving it (aborted on drop).
pub struct Running {
    pub addr: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Why the dashboard could not start (a bad flag or a taken address).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid --listen {addr:?}: {why} (give host:port, e.g. 127.0.0.1:8080)")]
    Listen { addr: String, why: String },
    #[error("invalid --poll-ms {0}: must be >= 100")]
    Poll(u64),
    #[error("invalid --history-s {0}: must be 10..=86400")]
    History(u64),
}

fn validate(a: &DashboardArgs) -> Result<SocketAddr, StartError> {
    if a.poll_ms < 100 {
        return Err(StartError::Poll(a.poll_ms));
    }
    if !(10..=86400).contains(&a.history_s) {
        return Err(StartError::History(a.history_s));
    }
    a.listen.parse().map_err(|e| StartError::Listen {
        addr: a.listen.clone(),
        why: format!("{e}"),
    })
}

/// Start the collector and the server in the background (`demo --dashboard` uses this).
pub(crate) async fn start(conn: Conn, a: &DashboardArgs) -> anyhow::Result<Running> {
    let addr = validate(a).map_err(|e| exit::fail(Kind::InvalidInput, e.to_string()))?;
    if !addr.ip().is_loopback() {
        warn!(listen = %addr, "the dashboard listens beyond loopback: anyone who can reach it sees what your certificate may read");
        eprintln!(
            "warning: --listen {addr} is not a loopback address: anyone who can reach it \
             sees the cluster as your certificate may read it"
        );
    }
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        exit::fail(
            Kind::Unavailable,
            format!("--listen {addr}: cannot listen: {e} (pick another port)"),
        )
    })?;
    let addr = listener.local_addr()?;
    let store: Shared = Arc::new(RwLock::new(Store::new(Duration::from_secs(a.history_s))));
    let collector = tokio::spawn(collect::run(
        ReadOnlyCluster::new(conn),
        store.clone(),
        Duration::from_millis(a.poll_ms),
    ));
    let app = router(store, addr);
    let server = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            warn!(error = %e, "dashboard server stopped");
        }
    });
    info!(listen = %addr, "dashboard serving");
    Ok(Running {
        addr,
        tasks: vec![collector, server],
    })
}

/// `edgeplane dashboard`: serve until Ctrl-C.
pub async fn dashboard(g: &GlobalArgs, a: DashboardArgs) -> anyhow::Result<()> {
    let conn = Conn::new(g)?;
    conn.tls().client()?;
    let running = start(conn, &a).await?;
    println!(
        "edgeplane dashboard: http://{}/ (read-only; Ctrl-C to stop)",
        running.addr
    );
    tokio::signal::ctrl_c().await?;
    drop(running);
    Ok(())
}

#[derive(Clone)]
struct AppState {
    store: Shared,
    listen: SocketAddr,
}

fn router(store: Shared, listen: SocketAddr) -> Router {
    let st = AppState { store, listen };
    Router::new()
        .route("/", get(index))
        .route("/api/cluster", get(|s| view(s, api::cluster)))
        .route("/api/nodes", get(|s| view(s, api::nodes)))
        .route("/api/placement", get(|s| view(s, api::placement)))
        .route("/api/partitions", get(|s| view(s, api::partitions)))
        .route("/api/models", get(|s| view(s, api::models)))
        .route("/api/events", get(|s| view(s, api::events)))
        .fallback(|| async { (StatusCode::NOT_FOUND, "no such page; see /\n") })
        .layer(middleware::from_fn_with_state(st.clone(), guard))
        .with_state(st)
}

async fn index() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        INDEX_HTML,
    )
        .into_response()
}

async fn view(State(st): State<AppState>, f: fn(&Store) -> serde_json::Value) -> Response {
    let v = f(&st.store.read().expect("store lock"));
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        v.to_string(),
    )
        .into_response()
}

/// GET and HEAD only; on a loopback listener, only requests addressed to a loopback name
/// (a page on another site cannot read the views through DNS rebinding).
async fn guard(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let m = req.method();
    if m != axum::http::Method::GET && m != axum::http::Method::HEAD {
        let mut r = (StatusCode::METHOD_NOT_ALLOWED, "read-only: GET only\n").into_response();
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    if st.listen.ip().is_loopback() {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if !loopback_host(host) {
            return (
                StatusCode::FORBIDDEN,
                "the dashboard answers requests for localhost only\n",
            )
                .into_response();
        }
    }
    next.run(req).await
}

/// `localhost[:port]`, `127.x.y.z[:port]`, `[::1][:port]`.
fn loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_names_pass_the_host_check() {
        for ok in [
            "localhost:8080",
            "127.0.0.1:8080",
            "[::1]:8080",
            "127.0.0.1",
        ] {
            assert!(loopback_host(ok), "{ok}");
        }
        for bad in ["evil.example:8080", "10.0.0.1:8080", "", "[fe80::1]:1"] {
            assert!(!loopback_host(bad), "{bad}");
        }
    }

    #[test]
    fn bad_flags_name_the_flag() {
        let a = |listen: &str, poll_ms, history_s| DashboardArgs {
            listen: listen.into(),
            poll_ms,
            history_s,
        };
        let e = validate(&a("nonsense", 1000, 600)).unwrap_err().to_string();
        assert!(e.contains("--listen") && e.contains("host:port"), "{e}");
        let e = validate(&a("127.0.0.1:0", 10, 600))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--poll-ms"), "{e}");
        let e = validate(&a("127.0.0.1:0", 1000, 0))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--history-s"), "{e}");
        assert!(validate(&a("127.0.0.1:0", 1000, 600)).is_ok());
    }
}
