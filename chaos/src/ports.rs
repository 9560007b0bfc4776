//! Listen ports for local child processes that get killed and restarted on the same address.
//!
//! Why not `bind(":0")`: the kernel hands those out from its ephemeral range, the same range
//! it draws the local port of every *outgoing* connection from. Once a child is killed its
//! port is free again, and on a busy machine (a test suite with dozens of gRPC clients) an
//! outgoing connection can take it before the child restarts; the restart then fails with
//! "Address already in use" and the cluster loses a member for good. A CI run failed exactly
//! that way. Ports handed out here lie below the ephemeral range, where no outgoing
//! connection ever lands, and each is handed out once per process, so a restarted child
//! finds its port as it left it.

use std::sync::atomic::{AtomicU32, Ordering};

/// Lowest port handed out (above the registered ports most services use).
const LOW: u32 = 20_000;

/// The kernel's ephemeral range start (Linux default 32768 when it cannot be read).
fn ephemeral_low() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

fn can_bind(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// A loopback port that is free now, lies outside the ephemeral range and has not been handed
/// out before by this process. Processes start at different offsets (by pid), so concurrent
/// test binaries rarely probe the same ports; a port another process took is skipped.
pub fn reserve_port() -> std::io::Result<u16> {
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let high = ephemeral_low().min(65_536);
    if high <= LOW + 1_000 {
        // A tuned kernel left no room below its ephemeral range: fall back to the kernel's pick.
        return std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()
            .map(|a| a.port());
    }
    // First caller seeds the sequence from the pid; later callers continue it.
    let seed = std::process::id().wrapping_mul(7_919) % (high - LOW);
    let _ = NEXT.compare_exchange(u32::MAX, seed, Ordering::SeqCst, Ordering::SeqCst);
    reserve_in(&NEXT, LOW, high)
}

/// The next bindable port of `[low, high)` in the sequence `next` walks.
fn reserve_in(next: &AtomicU32, low: u32, high: u32) -> std::io::Result<u16> {
    let span = high - low;
    for _ in 0..span {
        let n = next.fetch_add(1, Ordering::SeqCst);
        let port = (low + n % span) as u16;
        if can_bind(port) {
            return Ok(port);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        format!("no free loopback port between {low} and {high}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_free_and_below_the_ephemeral_range() {
        let low = ephemeral_low();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let p = reserve_port().unwrap();
            if low > LOW + 1_000 {
                assert!(u32::from(p) >= LOW && u32::from(p) < low, "port {p}");
            }
            assert!(seen.insert(p), "port {p} handed out twice");
            assert!(can_bind(p), "port {p} is not free");
        }
    }

    #[test]
    fn a_port_someone_else_holds_is_skipped_and_a_full_range_is_an_error() {
        // Hold a real port; a sequence that starts on it must step over it.
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p = u32::from(held.local_addr().unwrap().port());
        let next = AtomicU32::new(0);
        if can_bind((p + 1) as u16) {
            let got = reserve_in(&next, p, p + 2).unwrap();
            assert_eq!(u32::from(got), p + 1);
        }
        let next = AtomicU32::new(0);
        let err = reserve_in(&next, p, p + 1).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
        assert!(err.to_string().contains(&p.to_string()), "{err}");
    }
}
