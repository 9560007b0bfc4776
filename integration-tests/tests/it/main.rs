//! One integration-test binary for the whole workspace (keeps link time down on two cores).
//! Each module starts real binaries on loopback and talks to them over gRPC.

mod agent;
mod agents_scale;
mod chaos;
mod cluster;
mod coord_defects;
mod coordinator;
mod docker;
mod support;
