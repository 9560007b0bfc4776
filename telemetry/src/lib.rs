//! Telemetry every Edgeplane daemon shares: the metrics endpoint ([`metrics`]) and the log
//! set-up ([`logs`]).

pub mod logs;
pub mod metrics;
