//! Cost per write of the state-machine work the Raft loop does for every proposal and
//! every applied entry: precheck against a scratch copy, apply, and publish a copy of the
//! whole state for readers. Measured with 10 and with 10,000 registered nodes (each with a
//! client session), in one run; prints both and their ratio. Cost per write must not grow
//! with the size of the state (issue 7, defect 8), so the ratio should be close to 1.
//!
//! Run: `cargo bench -p edgeplane-coordinator --bench write_cost`

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgeplane_coordinator::state::State;
use edgeplane_proto::raft::{self as pb, command::Kind};

fn register(name: String, client_id: u64) -> pb::Command {
    pb::Command {
        client_id,
        seq: 1,
        kind: Some(Kind::RegisterNode(pb::RegisterNode {
            name,
            accelerators: vec![pb::Accelerator {
                id: "gpu0".into(),
                kind: "gpu".into(),
                name: "A100".into(),
                memory_mb: 81920,
                ..Default::default()
            }],
            agent_addr: "10.0.0.1:7200".into(),
            cert_sha256: Vec::new(),
            cert_not_before_unix: 0,
        })),
    }
}

fn state_with(nodes: u64) -> (State, u64) {
    let mut s = State::default();
    let mut index = 2;
    for i in 0..nodes {
        s.apply(&register(format!("edge-{i:05}"), 1_000_000 + i), index);
        index += 1;
    }
    (s, index)
}

/// Mean time of one write (precheck + apply + publish) over `n` writes.
fn per_write(mut s: State, mut index: u64, n: u64) -> Duration {
    let start = Instant::now();
    for i in 0..n {
        let cmd = pb::Command {
            client_id: 7_000_000 + i,
            seq: 1,
            kind: Some(Kind::DeployModel(pb::DeployModel {
                name: format!("model-{}", i % 64),
                slo_ms: 25.0,
                rate: i as f64,
                memory_mb: 100,
            })),
        };
        black_box(s.precheck(&cmd)).expect("valid");
        black_box(s.apply(&cmd, index));
        index += 1;
        // What the loop publishes to readers after an applied batch.
        black_box(Arc::new(s.clone()));
    }
    start.elapsed() / n as u32
}

fn main() {
    let writes = 2_000;
    let mut rows = Vec::new();
    for nodes in [10u64, 10_000] {
        let (s, index) = state_with(nodes);
        // Warm up, then the best of three (the machine is shared).
        per_write(s.clone(), index, 200);
        let best = (0..3)
            .map(|_| per_write(s.clone(), index, writes))
            .min()
            .expect("three runs");
        println!(
            "write cost with {nodes:>6} registered nodes (+{nodes} sessions): {:>9.2} us/write",
            best.as_secs_f64() * 1e6
        );
        rows.push(best);
    }
    println!(
        "ratio 10,000 nodes / 10 nodes: {:.2}x",
        rows[1].as_secs_f64() / rows[0].as_secs_f64()
    );
}
