//! A TLS listener for tonic servers: accepts TCP (TCP_NODELAY set), runs the rustls
//! handshake with the *current* material off the accept loop, and yields the streams
//! tonic serves (`Request::peer_certs` works on them). Failed handshakes (no certificate,
//! another CA, expired) are logged and dropped.

use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;

use crate::material::TlsMaterial;

/// Time a client gets to finish the handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serve TLS on `listener` with `material` (reloaded material applies to new connections).
pub fn tls_incoming(
    listener: TcpListener,
    material: Arc<TlsMaterial>,
) -> impl Stream<Item = Result<TlsStream<TcpStream>, std::io::Error>> + Send + 'static {
    tls_incoming_with(listener, material, false)
}

/// [`tls_incoming`]; with `optional_client_cert` a client may connect without a
/// certificate (server-authenticated only; the authorization layer then refuses every call
/// but the ones that allow it).
pub fn tls_incoming_with(
    listener: TcpListener,
    material: Arc<TlsMaterial>,
    optional_client_cert: bool,
) -> impl Stream<Item = Result<TlsStream<TcpStream>, std::io::Error>> + Send + 'static {
    let (tx, rx) = mpsc::channel::<TlsStream<TcpStream>>(256);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = tx.closed() => return,
            };
            let (sock, peer) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
            let _ = sock.set_nodelay(true);
            let cur = material.current();
            let config = if optional_client_cert {
                cur.server_optional_client.clone()
            } else {
                cur.server.clone()
            };
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(sock)).await {
                    Ok(Ok(s)) => {
                        let _ = tx.send(s).await;
                    }
                    Ok(Err(e)) => {
                        tracing::info!(%peer, error = %e, "tls handshake refused");
                    }
                    Err(_) => tracing::info!(%peer, "tls handshake timed out"),
                }
            });
        }
    });
    futures::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|s| (Ok(s), rx)) },
    )
}
