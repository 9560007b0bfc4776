//! One integration-test binary for the whole workspace (keeps link time down on two cores).
//! Each module starts real binaries on loopback and talks to them over gRPC.

mod agent;
mod cluster;
mod coordinator;
mod docker;
mod support;
