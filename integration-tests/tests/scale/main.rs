//! Tests that put hundreds of agent sessions on a 3-replica cluster and check timing
//! (lease expiry within lease + 2 s, no agent lost across a leader kill). They are a test
//! binary of their own so that cargo runs them after `it`, never beside its tests: on a
//! 2-core machine a neighbouring test's real-time agents starved the debug-build leader and
//! made these fail although each passes alone. The harness modules are shared with `it`.

#[path = "../it/cluster.rs"]
mod cluster;
#[path = "../it/support.rs"]
mod support;

mod agents_scale;
