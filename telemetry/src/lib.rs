//! What every Edgeplane daemon shares around its real work: the metrics endpoint
//! ([`metrics`]), the log set-up ([`logs`]) and the service manager's protocol ([`service`]).

pub mod logs;
pub mod metrics;
pub mod service;
