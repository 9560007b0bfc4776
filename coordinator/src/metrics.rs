//! Prometheus text metrics, served by a tiny HTTP responder on tokio (any path answers the
//! metrics page; this avoids pulling a web framework for one endpoint).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BUCKETS_MS: [f64; 12] = [
    0.5, 1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0,
];

/// A fixed-bucket histogram (milliseconds).
#[derive(Default)]
pub struct Histogram {
    counts: [AtomicU64; 12],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let ms = d.as_secs_f64() * 1e3;
        for (i, b) in BUCKETS_MS.iter().enumerate() {
            if ms <= *b {
                self.counts[i].fetch_add(1, Relaxed);
            }
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_us.fetch_add(d.as_micros() as u64, Relaxed);
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} histogram\n"));
        for (i, b) in BUCKETS_MS.iter().enumerate() {
            out.push_str(&format!(
                "{name}_bucket{{le=\"{}\"}} {}\n",
                b / 1e3,
                self.counts[i].load(Relaxed)
            ));
        }
        let n = self.count.load(Relaxed);
        out.push_str(&format!("{name}_bucket{{le=\"+Inf\"}} {n}\n"));
        out.push_str(&format!(
            "{name}_sum {}\n{name}_count {n}\n",
            self.sum_us.load(Relaxed) as f64 / 1e6
        ));
    }
}

/// Every metric of one replica.
#[derive(Default)]
pub struct Metrics {
    pub term: AtomicU64,
    pub leader_changes: AtomicU64,
    pub commit_index: AtomicU64,
    pub applied_index: AtomicU64,
    pub is_leader: AtomicU64,
    pub snapshots: AtomicU64,
    /// fsync-family calls of the Raft storage (data file, blob files, snapshot file, dirs).
    pub fsyncs: AtomicU64,
    pub proposal_latency: Histogram,
    pub fsync_latency: Histogram,
}

impl Metrics {
    pub fn observe_fsync(&self, d: Duration) {
        self.fsync_latency.observe(d);
    }
    pub fn observe_proposal(&self, d: Duration) {
        self.proposal_latency.observe(d);
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut o = String::new();
        for (name, help, v) in [
            ("edgeplane_raft_term", "Current Raft term", &self.term),
            (
                "edgeplane_raft_commit_index",
                "Commit index",
                &self.commit_index,
            ),
            (
                "edgeplane_raft_applied_index",
                "Applied index",
                &self.applied_index,
            ),
            (
                "edgeplane_raft_is_leader",
                "1 if this replica leads",
                &self.is_leader,
            ),
        ] {
            o.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}\n",
                v.load(Relaxed)
            ));
        }
        for (name, help, v) in [
            (
                "edgeplane_raft_leader_changes_total",
                "Leader changes seen",
                &self.leader_changes,
            ),
            (
                "edgeplane_raft_snapshots_total",
                "Snapshots taken locally",
                &self.snapshots,
            ),
            (
                "edgeplane_storage_fsyncs_total",
                "fsync calls made by the Raft storage",
                &self.fsyncs,
            ),
        ] {
            o.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
                v.load(Relaxed)
            ));
        }
        self.proposal_latency.render(
            "edgeplane_raft_proposal_seconds",
            "Proposal to apply latency on the leader",
            &mut o,
        );
        self.fsync_latency.render(
            "edgeplane_storage_fsync_seconds",
            "fsync latency of the Raft log",
            &mut o,
        );
        o
    }
}

/// Serve `metrics` on `listener` until `shutdown` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    mut shutdown: tokio::sync::broadcast::Receiver<()>,
) {
    loop {
        tokio::select! {
            _ = shutdown.recv() => return,
            acc = listener.accept() => {
                let Ok((mut sock, _)) = acc else { continue };
                let m = metrics.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 2048];
                    let _ = tokio::time::timeout(Duration::from_secs(2), sock.read(&mut buf)).await;
                    let body = m.render();
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = sock.write_all(resp.as_bytes()).await;
                    let _ = sock.shutdown().await;
                });
            }
        }
    }
}
