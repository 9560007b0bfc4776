//! The CLI's percentiles: the workspace's one HDR-histogram implementation
//! ([`edgeplane_scheduler::latency`]), used by `bench raft`, `load`, `demo` and
//! `bench partition --live`.

pub use edgeplane_scheduler::latency::Latencies;
