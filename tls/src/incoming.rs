//! A TLS listener for tonic servers: accepts TCP (TCP_NODELAY set), runs the rustls
//! handshake with the *current* material off the accept loop, and yields the streams
//! tonic serves (`Request::peer_certs` works on them). Failed handshakes (no certificate,
//! another CA, expired) are logged and dropped.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::Stream;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;

use crate::material::TlsMaterial;

/// Time a client gets to finish the handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Handshakes in flight at once on one listener, and from one IP address.
pub const MAX_HANDSHAKES: usize = 4096;
pub const MAX_HANDSHAKES_PER_IP: usize = 1024;

/// Counts handshakes in flight (globally and per IP) and failed ones; logs failures at most
/// once a second, with the count since the last line (a flood of raw TCP connections wrote
/// one line each).
#[derive(Default)]
struct HandshakeGate {
    in_flight: std::sync::Mutex<(usize, std::collections::HashMap<IpAddr, usize>)>,
    failed: AtomicU64,
    last_log: std::sync::Mutex<Option<Instant>>,
    since_log: AtomicU64,
}

/// One handshake's place in the gate; released on drop.
struct Permit {
    gate: Arc<HandshakeGate>,
    ip: IpAddr,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut g = self.gate.in_flight.lock().expect("gate lock");
        g.0 -= 1;
        if let Some(n) = g.1.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                g.1.remove(&self.ip);
            }
        }
    }
}

impl HandshakeGate {
    fn enter(self: &Arc<Self>, ip: IpAddr) -> Option<Permit> {
        let mut g = self.in_flight.lock().expect("gate lock");
        let per_ip = g.1.get(&ip).copied().unwrap_or(0);
        if g.0 >= MAX_HANDSHAKES || per_ip >= MAX_HANDSHAKES_PER_IP {
            return None;
        }
        g.0 += 1;
        *g.1.entry(ip).or_insert(0) += 1;
        Some(Permit {
            gate: self.clone(),
            ip,
        })
    }

    fn failed(&self, peer: std::net::SocketAddr, why: &str) {
        let total = self.failed.fetch_add(1, Ordering::Relaxed) + 1;
        let since = self.since_log.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = self.last_log.lock().expect("log lock");
        let now = Instant::now();
        if last.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) {
            *last = Some(now);
            self.since_log.store(0, Ordering::Relaxed);
            tracing::info!(%peer, error = why, failed_since_last_line = since, failed_handshakes_total = total, "tls handshake refused");
        }
    }
}

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
    let gate = Arc::new(HandshakeGate::default());
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
            // Bounded work per caller: past the limits the socket is closed unread.
            let Some(permit) = gate.enter(peer.ip()) else {
                gate.failed(peer, "too many handshakes in flight");
                continue;
            };
            let _ = sock.set_nodelay(true);
            let cur = material.current();
            let config = if optional_client_cert {
                cur.server_optional_client.clone()
            } else {
                cur.server.clone()
            };
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            let (tx, gate) = (tx.clone(), gate.clone());
            tokio::spawn(async move {
                let r = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(sock)).await;
                drop(permit);
                match r {
                    Ok(Ok(s)) => {
                        let _ = tx.send(s).await;
                    }
                    Ok(Err(e)) => gate.failed(peer, &e.to_string()),
                    Err(_) => gate.failed(peer, "handshake timed out"),
                }
            });
        }
    });
    futures::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|s| (Ok(s), rx)) },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshakes_in_flight_are_bounded_per_ip_and_released_on_drop() {
        let gate = Arc::new(HandshakeGate::default());
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let held: Vec<Permit> = (0..MAX_HANDSHAKES_PER_IP)
            .map(|_| gate.enter(a).expect("under the limit"))
            .collect();
        assert!(gate.enter(a).is_none(), "one IP past its limit");
        let other = gate.enter(b).expect("another IP is not affected");
        drop(held);
        assert!(gate.enter(a).is_some(), "released on drop");
        drop(other);
        assert_eq!(gate.in_flight.lock().unwrap().0, 0);
        assert!(
            gate.in_flight.lock().unwrap().1.is_empty(),
            "no entry kept per idle IP"
        );
        // Failures are counted even when the log line is suppressed.
        let peer = "10.0.0.1:1".parse().unwrap();
        for _ in 0..5 {
            gate.failed(peer, "bad");
        }
        assert_eq!(gate.failed.load(Ordering::Relaxed), 5);
        assert_eq!(
            gate.since_log.load(Ordering::Relaxed),
            4,
            "one line for five failures"
        );
    }
}
