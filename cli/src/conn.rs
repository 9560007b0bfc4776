//! The connection to the coordinator cluster every admin command uses.
//!
//! Every call tries the endpoints in turn until one answers or `--timeout-s` passes:
//! "unavailable"-type failures (connection refused, no leader yet, deadline) move on to the
//! next member; answers about the input (invalid argument, not found) end the command at
//! once. Writes carry a random client id and a sequence number, so a write retried on
//! another member is applied at most once.

use std::time::{Duration, Instant};

use edgeplane_proto::admin::{self as api, admin_client::AdminClient};
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::exit::{self, Kind};
use crate::tls::ClientTlsSource;
use crate::GlobalArgs;

/// Connection helper over all endpoints, with the TLS its calls use (given explicitly).
pub(crate) struct Conn {
    endpoints: Vec<String>,
    timeout: Duration,
    client_id: u64,
    tls: ClientTlsSource,
}

fn retryable(s: &Status) -> bool {
    matches!(
        s.code(),
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Unknown
            | Code::Cancelled
            | Code::Internal
    )
}

/// A dial to the member at `addr` with `tls`; failures carry their exit code.
pub(crate) fn endpoint(tls: &ClientTlsSource, addr: &str) -> anyhow::Result<edgeplane_tls::Dial> {
    Ok(tls
        .endpoint(addr)
        .map_err(|e| {
            // A TLS file that cannot be read is local I/O (6); anything else about the
            // endpoint or the TLS flags is invalid input (3).
            let kind = match exit::kind_of(&e) {
                Kind::Io => Kind::Io,
                _ => Kind::InvalidInput,
            };
            exit::fail(kind, format!("endpoint {addr:?}: {e:#}"))
        })?
        .connect_timeout(Duration::from_millis(500))
        .tcp_nodelay(true))
}

impl Conn {
    /// A connection to one endpoint only, with its own timeout (per-member views).
    pub(crate) fn single(
        addr: &str,
        timeout: Duration,
        tls: ClientTlsSource,
    ) -> anyhow::Result<Self> {
        Ok(Conn::with_tls(vec![addr.to_string()], timeout, tls))
    }

    /// A connection over `endpoints` with this TLS (clusters the CLI starts itself).
    pub(crate) fn with_tls(
        endpoints: Vec<String>,
        timeout: Duration,
        tls: ClientTlsSource,
    ) -> Self {
        Conn {
            endpoints,
            timeout,
            client_id: rand::random::<u64>() | 1,
            tls,
        }
    }

    /// A connection from the command's flags (`--endpoints`, `--timeout-s`, TLS).
    pub(crate) fn new(g: &GlobalArgs) -> anyhow::Result<Self> {
        if g.endpoints.is_empty() {
            return Err(exit::fail(Kind::InvalidInput, "no --endpoints given"));
        }
        if !(g.timeout_s.is_finite() && g.timeout_s > 0.0) {
            return Err(exit::fail(
                Kind::InvalidInput,
                format!("invalid --timeout-s {}: must be > 0", g.timeout_s),
            ));
        }
        Ok(Conn::with_tls(
            g.endpoints.clone(),
            Duration::from_secs_f64(g.timeout_s),
            ClientTlsSource::from_args(&g.tls),
        ))
    }

    /// The TLS this connection's calls use.
    pub(crate) fn tls(&self) -> &ClientTlsSource {
        &self.tls
    }

    /// How long a call may take, every member tried.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A dial to the member at `addr` with this connection's TLS.
    pub(crate) fn dial(&self, addr: &str) -> anyhow::Result<edgeplane_tls::Dial> {
        endpoint(&self.tls, addr)
    }

    /// Run `f` against members in turn until one succeeds or the timeout passes.
    pub(crate) async fn call<T, F, Fut>(&self, what: &str, mut f: F) -> anyhow::Result<T>
    where
        F: FnMut(AdminClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let start = Instant::now();
        let deadline = start + self.timeout;
        let mut last: String;
        let mut last_kind: Kind;
        let mut i = 0usize;
        // Since when every member has refused the connection (nothing listens there).
        let mut all_refused_since: Option<Instant> = None;
        let mut refused_this_pass = 0usize;
        loop {
            let addr = &self.endpoints[i % self.endpoints.len()];
            i += 1;
            let ep = self.dial(addr)?;
            let left = deadline.saturating_duration_since(Instant::now());
            match ep.connect().await {
                Ok(ch) => {
                    let client = AdminClient::new(ch);
                    // Cap one attempt so a member that accepts but cannot answer (partitioned,
                    // no leader) does not use up the whole budget.
                    let attempt = left
                        .min(Duration::from_secs(4))
                        .max(Duration::from_millis(50));
                    match tokio::time::timeout(attempt, f(client)).await {
                        Ok(Ok(r)) => return Ok(r.into_inner()),
                        Ok(Err(s)) if !retryable(&s) => return Err(exit::status(what, &s)),
                        Ok(Err(s)) => {
                            // Unavailable-type codes stay "unavailable"; an internal error
                            // that persists to the deadline is reported as an error.
                            last_kind = match Kind::of_code(s.code()) {
                                Kind::Unavailable => Kind::Unavailable,
                                _ => Kind::Error,
                            };
                            last = format!("{addr}: {} ({:?})", s.message(), s.code())
                        }
                        Err(_) => {
                            last_kind = Kind::Unavailable;
                            last = format!("{addr}: no answer in time")
                        }
                    }
                }
                Err(e) => {
                    last_kind = Kind::Unavailable;
                    last = format!("{addr}: cannot connect: {}", exit::error_chain(&e));
                    if exit::is_connection_refused(&e) {
                        refused_this_pass += 1;
                    }
                }
            }
            if i.is_multiple_of(self.endpoints.len()) {
                if refused_this_pass == self.endpoints.len() {
                    let since = *all_refused_since.get_or_insert_with(Instant::now);
                    // Every member refused for 2 s: nothing is listening, waiting the whole
                    // timeout would not help (a member that is starting is up well within it).
                    if since.elapsed() >= Duration::from_secs(2) {
                        return Err(exit::fail(
                            Kind::Unavailable,
                            format!(
                                "{what}: connection refused by every endpoint for {:.1?} (is the \
                                 cluster running, and are --endpoints its client addresses?); \
                                 last error: {last}",
                                start.elapsed()
                            ),
                        ));
                    }
                } else {
                    all_refused_since = None;
                }
                refused_this_pass = 0;
            }
            if Instant::now() >= deadline {
                return Err(exit::fail(
                    last_kind,
                    format!(
                        "{what}: no member answered within {:?} (no leader or cluster unreachable); last error: {last}",
                        self.timeout
                    ),
                ));
            }
            if i.is_multiple_of(self.endpoints.len()) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// The members this connection tries, in order.
    pub(crate) fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    pub(crate) fn meta(&self, seq: u64) -> Option<api::WriteMeta> {
        Some(api::WriteMeta {
            client_id: self.client_id,
            seq,
        })
    }
}
