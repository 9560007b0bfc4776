//! Side-by-side benchmark of the Edgeplane coordinator against etcd 3.4 on the same machine.
//!
//! Both clusters run as three members on loopback with their data dirs on the same disk, and
//! one driver (`run`) with one client type (`client`) drives both, so the only difference
//! measured is the server. Not part of CI: it needs an etcd binary and minutes of quiet machine.
#![forbid(unsafe_code)]

pub mod client;
pub mod cluster;
pub mod run;

pub use cluster::{Cluster, System};
pub use run::{Op, Outcome};
