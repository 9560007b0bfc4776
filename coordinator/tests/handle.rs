//! The agent-side seam, in process: a one-replica cluster driven through `Handle`.

use std::time::Duration;

use edgeplane_coordinator::{Config, Coordinator, Extensions, Flags};
use edgeplane_proto::raft::{self as pb, command::Kind};

fn port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handle_register_pin_and_read() {
    let dir = tempfile::tempdir().unwrap();
    let peer = format!("127.0.0.1:{}", port());
    let flags = Flags {
        id: Some(1),
        client_addr: Some(format!("127.0.0.1:{}", port())),
        peer_addr: Some(peer.clone()),
        initial_cluster: Some(format!("1={peer}")),
        data_dir: Some(dir.path().to_path_buf()),
        join_token: Some("s3cret".into()),
        tick_ms: Some(20),
        // in-process handle test: no network peer, plaintext is fine
        insecure: true,
        ..Default::default()
    };
    let cfg = Config::from_flags(&flags).unwrap();
    let coord = Coordinator::start(cfg, Extensions::default())
        .await
        .unwrap();
    let h = coord.handle();
    assert_eq!(h.join_token(), Some("s3cret"));
    let mut lw = h.leadership();
    tokio::time::timeout(Duration::from_secs(10), async {
        while !lw.borrow_and_update().is_leader {
            lw.changed().await.unwrap();
        }
    })
    .await
    .expect("single replica becomes leader");

    let cmd = |seq, kind| pb::Command {
        client_id: 42,
        seq,
        kind: Some(kind),
    };
    h.propose(cmd(
        1,
        Kind::RegisterNode(pb::RegisterNode {
            name: "edge-1".into(),
            accelerators: vec![pb::Accelerator {
                id: "npu0".into(),
                kind: "npu".into(),
                ..Default::default()
            }],
            agent_addr: "127.0.0.1:7301".into(),
            cert_sha256: Vec::new(),
            cert_not_before_unix: 0,
        }),
    ))
    .await
    .unwrap();
    h.propose(cmd(
        2,
        Kind::DeployModel(pb::DeployModel {
            name: "ES".into(),
            slo_ms: 16.0,
            rate: 60.0,
            memory_mb: 10,
        }),
    ))
    .await
    .unwrap();
    let r = h
        .propose(cmd(
            3,
            Kind::PinPlacement(pb::PinPlacement {
                node: "edge-1".into(),
                model: "ES".into(),
                accelerator: String::new(),
            }),
        ))
        .await
        .unwrap();
    // Placement epochs are the log index of the change (they only grow, for the life of the
    // cluster, across node removal and snapshot restores).
    assert_eq!(r.epoch, r.index);
    assert!(r.epoch > 0);
    let err = h
        .propose(cmd(
            4,
            Kind::SetNodeStatus(pb::SetNodeStatus {
                name: "edge-2".into(),
                status: pb::NodeStatus::Lost as i32,
            }),
        ))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not found"), "{err}");
    let st = h.read(true).await.unwrap();
    let n = &st.nodes["edge-1"];
    assert_eq!(n.models(), vec!["ES".to_string()]);
    assert_eq!(n.assignment_epoch, r.epoch);
    // The replica announces its client address through the log shortly after start.
    tokio::time::timeout(Duration::from_secs(10), async {
        while h.leader_client_addr().as_deref() != Some(h.client_addr()) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("leader client address announced");
    coord.shutdown().await;
}
