//! Serving a tonic router behind [`AuthLayer`], over mutual TLS or (with `--insecure`)
//! plaintext, with `TCP_NODELAY` on accepted sockets either way.

use std::future::Future;
use std::sync::Arc;

use crate::authz::AuthLayer;
use crate::material::TlsMaterial;

/// HTTP/2 streams one connection may have open at once.
pub const MAX_CONCURRENT_STREAMS: u32 = 1024;

/// Whether a TLS client must present a certificate during the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCerts {
    /// Every client presents a certificate of the cluster CA (mutual TLS).
    Required,
    /// A client may connect without one; [`AuthLayer`] then allows it only the methods
    /// whose need is [`crate::Need::JoinOrNode`] (the coordinator's client port, for agents
    /// joining with a token).
    Optional,
}

/// Serve `routes` on `listener` until `shutdown` resolves (client certificates required).
pub async fn serve_routes(
    name: &'static str,
    routes: tonic::service::Routes,
    listener: tokio::net::TcpListener,
    tls: Option<Arc<TlsMaterial>>,
    layer: AuthLayer,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    serve_routes_with(
        name,
        routes,
        listener,
        tls,
        layer,
        ClientCerts::Required,
        shutdown,
    )
    .await
}

/// [`serve_routes`] with a choice of [`ClientCerts`].
pub async fn serve_routes_with(
    name: &'static str,
    routes: tonic::service::Routes,
    listener: tokio::net::TcpListener,
    tls: Option<Arc<TlsMaterial>>,
    layer: AuthLayer,
    certs: ClientCerts,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let b = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        // Dead or silent peers are found and dropped; one connection cannot open unbounded
        // streams.
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)))
        .max_concurrent_streams(Some(MAX_CONCURRENT_STREAMS))
        .layer(layer)
        .add_routes(routes);
    let r = match tls {
        Some(m) => {
            let inc =
                crate::incoming::tls_incoming_with(listener, m, certs == ClientCerts::Optional);
            b.serve_with_incoming_shutdown(inc, shutdown).await
        }
        None => {
            let inc =
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            b.serve_with_incoming_shutdown(inc, shutdown).await
        }
    };
    if let Err(e) = &r {
        tracing::error!(server = name, error = %e, "server failed");
    }
    r
}
