//! One integration-test binary for the whole workspace (keeps link time down on two cores).
//! Each module starts real binaries on loopback and talks to them over gRPC.

mod agent;
mod chaos;
mod cli_conventions;
mod cluster;
mod coord_defects;
mod coordinator;
mod dashboard;
mod demo;
mod docker;
mod ops;
mod placement_live;
mod readme_walkthrough;
mod security;
mod server_identity;
mod service;
mod support;
mod third_party_worker;
mod worker;
