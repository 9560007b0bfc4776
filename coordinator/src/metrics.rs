//! Prometheus metrics of one replica, kept in a `prometheus-client` registry and served as
//! OpenMetrics or Prometheus text (content negotiation) by `edgeplane-telemetry`'s responder,
//! with the process metrics and `edgeplane_build_info`.
//!
//! Metric names (counters gain the `_total` suffix in the exposition):
//! `edgeplane_raft_term`, `edgeplane_raft_commit_index`, `edgeplane_raft_applied_index`,
//! `edgeplane_raft_is_leader`, `edgeplane_raft_has_leader` (gauges), `edgeplane_raft_leader_changes_total`,
//! `edgeplane_raft_snapshots_total`, `edgeplane_storage_fsyncs_total` (counters),
//! `edgeplane_raft_proposal_seconds`, `edgeplane_storage_fsync_seconds` (histograms).

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Latency buckets, seconds (0.5 ms .. 5 s).
const BUCKETS_S: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Every metric of one replica. The handles are cheap clones of what the registry holds.
pub struct Metrics {
    pub term: Gauge<u64, AtomicU64>,
    pub leader_changes: Counter,
    pub commit_index: Gauge<u64, AtomicU64>,
    pub applied_index: Gauge<u64, AtomicU64>,
    pub is_leader: Gauge<u64, AtomicU64>,
    /// 1 while this replica knows a leader (etcd's `etcd_server_has_leader`).
    pub has_leader: Gauge<u64, AtomicU64>,
    pub snapshots: Counter,
    /// fsync-family calls of the Raft storage (data file, blob files, snapshot file, dirs);
    /// the storage counts them, so the loop stores its total (`fsyncs.inner().store`).
    pub fsyncs: Counter,
    /// Plans the planner loop committed on this replica while it led, and the node
    /// assignments those plans changed (reconfigurations).
    pub plan_changes: Counter,
    pub reconfigurations: Counter,
    pub proposal_latency: Histogram,
    pub fsync_latency: Histogram,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        let m = Metrics {
            term: Gauge::default(),
            leader_changes: Counter::default(),
            commit_index: Gauge::default(),
            applied_index: Gauge::default(),
            is_leader: Gauge::default(),
            has_leader: Gauge::default(),
            snapshots: Counter::default(),
            fsyncs: Counter::default(),
            plan_changes: Counter::default(),
            reconfigurations: Counter::default(),
            proposal_latency: Histogram::new(BUCKETS_S),
            fsync_latency: Histogram::new(BUCKETS_S),
            registry: Registry::default(),
        };
        let mut r = Registry::default();
        r.register("edgeplane_raft_term", "Current Raft term", m.term.clone());
        r.register(
            "edgeplane_raft_commit_index",
            "Commit index",
            m.commit_index.clone(),
        );
        r.register(
            "edgeplane_raft_applied_index",
            "Applied index",
            m.applied_index.clone(),
        );
        r.register(
            "edgeplane_raft_is_leader",
            "1 if this replica leads",
            m.is_leader.clone(),
        );
        r.register(
            "edgeplane_raft_has_leader",
            "1 if this replica knows a leader, 0 if not",
            m.has_leader.clone(),
        );
        r.register(
            "edgeplane_raft_leader_changes",
            "Leader changes seen",
            m.leader_changes.clone(),
        );
        r.register(
            "edgeplane_raft_snapshots",
            "Snapshots taken locally",
            m.snapshots.clone(),
        );
        r.register(
            "edgeplane_storage_fsyncs",
            "fsync calls made by the Raft storage",
            m.fsyncs.clone(),
        );
        r.register(
            "edgeplane_plan_changes",
            "Plans committed by the planner loop while this replica led",
            m.plan_changes.clone(),
        );
        r.register(
            "edgeplane_reconfigurations",
            "Node assignments changed by committed plans (partitions started, resized or stopped)",
            m.reconfigurations.clone(),
        );
        r.register(
            "edgeplane_raft_proposal_seconds",
            "Proposal to apply latency on the leader",
            m.proposal_latency.clone(),
        );
        r.register(
            "edgeplane_storage_fsync_seconds",
            "fsync latency of the Raft log",
            m.fsync_latency.clone(),
        );
        edgeplane_telemetry::metrics::register_process_and_build(&mut r, "coordinator");
        Metrics { registry: r, ..m }
    }
}

impl Metrics {
    pub fn observe_fsync(&self, d: Duration) {
        self.fsync_latency.observe(d.as_secs_f64());
    }
    pub fn observe_proposal(&self, d: Duration) {
        self.proposal_latency.observe(d.as_secs_f64());
    }

    /// OpenMetrics text exposition.
    pub fn render(&self) -> String {
        edgeplane_telemetry::metrics::encode(&self.registry)
    }
}

/// Serve `metrics` on `listener` until `shutdown` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    shutdown: tokio::sync::broadcast::Receiver<()>,
) {
    edgeplane_telemetry::metrics::serve(listener, Arc::new(move || metrics.render()), shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn exposition_has_every_metric_with_its_type() {
        let m = Metrics::default();
        m.term.set(7);
        m.leader_changes.inc();
        m.fsyncs
            .inner()
            .store(42, std::sync::atomic::Ordering::Relaxed);
        m.observe_proposal(Duration::from_millis(3));
        let t = m.render();
        for line in [
            "# TYPE edgeplane_raft_term gauge",
            "edgeplane_raft_term 7",
            "# TYPE edgeplane_raft_leader_changes counter",
            "edgeplane_raft_leader_changes_total 1",
            "edgeplane_storage_fsyncs_total 42",
            "# TYPE edgeplane_raft_proposal_seconds histogram",
            "edgeplane_raft_proposal_seconds_count 1",
            "edgeplane_raft_proposal_seconds_bucket{le=\"0.005\"} 1",
            "edgeplane_raft_proposal_seconds_bucket{le=\"0.002\"} 0",
            "# EOF",
        ] {
            assert!(t.contains(line), "missing {line:?} in\n{t}");
        }
    }

    #[tokio::test]
    async fn http_answers_metrics_and_404() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (tx, rx) = tokio::sync::broadcast::channel(1);
        let m = Arc::new(Metrics::default());
        let task = tokio::spawn(serve(l, m, rx));
        let get = |path: &'static str| async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        let ok = get("/metrics").await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.contains("edgeplane_raft_is_leader"), "{ok}");
        assert!(get("/nope").await.starts_with("HTTP/1.1 404"));
        tx.send(()).unwrap();
        task.await.unwrap();
    }
}
