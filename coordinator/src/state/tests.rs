use super::*;

fn deploy(name: &str, slo: f64, rate: f64) -> pb::Command {
    pb::Command {
        client_id: 7,
        seq: 1,
        kind: Some(Kind::DeployModel(pb::DeployModel {
            name: name.into(),
            slo_ms: slo,
            rate,
            memory_mb: 100,
        })),
    }
}

#[test]
fn bad_input_names_the_field_and_writes_nothing() {
    let mut s = State::default();
    for (cmd, field) in [
        (deploy("", 10.0, 1.0), "name"),
        (deploy("m", 0.0, 1.0), "slo_ms"),
        (deploy("m", -1.0, 1.0), "slo_ms"),
        (deploy("m", 10.0, f64::NAN), "rate"),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (mut c, f))| {
        c.seq = i as u64 + 1;
        (c, f)
    }) {
        let before = s.models.clone();
        let err = validate(&cmd).unwrap_err();
        assert!(
            matches!(&err, CommandError::InvalidArgument { field: f, .. } if f == field),
            "{err}"
        );
        let a = s.apply(&cmd, 5);
        assert_eq!(a.result.code(), pb::ResultCode::InvalidArgument);
        assert_eq!(a.result.field, field);
        assert_eq!(s.models, before);
    }
}

#[test]
fn retried_write_applies_once() {
    let mut s = State::default();
    let mut cmd = pb::Command {
        client_id: 9,
        seq: 1,
        kind: Some(Kind::RegisterNode(pb::RegisterNode {
            name: "n".into(),
            accelerators: vec![pb::Accelerator {
                id: "gpu0".into(),
                ..Default::default()
            }],
            agent_addr: "127.0.0.1:1".into(),
            cert_sha256: Vec::new(),
            cert_not_before_unix: 0,
        })),
    };
    s.apply(&cmd, 2);
    s.apply(&deploy("m", 10.0, 1.0), 3);
    cmd.seq = 2;
    cmd.kind = Some(Kind::PinPlacement(pb::PinPlacement {
        node: "n".into(),
        model: "m".into(),
        accelerator: String::new(),
    }));
    let first = s.apply(&cmd, 4);
    assert_eq!(
        first.result.epoch, 4,
        "the epoch is the log index of the change"
    );
    let again = s.apply(&cmd, 5);
    assert!(again.duplicate);
    assert_eq!(again.result, first.result);
    assert_eq!(s.nodes["n"].assignment_epoch, 4);
}

fn register(name: &str, client_id: u64) -> pb::Command {
    pb::Command {
        client_id,
        seq: 1,
        kind: Some(Kind::RegisterNode(pb::RegisterNode {
            name: name.into(),
            accelerators: vec![pb::Accelerator {
                id: "gpu0".into(),
                ..Default::default()
            }],
            agent_addr: "127.0.0.1:1".into(),
            cert_sha256: Vec::new(),
            cert_not_before_unix: 0,
        })),
    }
}

fn pin(node: &str, model: &str, client_id: u64) -> pb::Command {
    pb::Command {
        client_id,
        seq: 1,
        kind: Some(Kind::PinPlacement(pb::PinPlacement {
            node: node.into(),
            model: model.into(),
            accelerator: String::new(),
        })),
    }
}

#[test]
fn a_pin_without_an_accelerator_is_node_wide_unless_the_node_has_gpus() {
    let mut s = State::default();
    s.apply(&deploy("m", 10.0, 1.0), 2);
    let node = |name: &str, kinds: &[(&str, &str)], client_id| pb::Command {
        client_id,
        seq: 1,
        kind: Some(Kind::RegisterNode(pb::RegisterNode {
            name: name.into(),
            accelerators: kinds
                .iter()
                .map(|(id, kind)| pb::Accelerator {
                    id: id.to_string(),
                    kind: kind.to_string(),
                    ..Default::default()
                })
                .collect(),
            agent_addr: "127.0.0.1:1".into(),
            cert_sha256: Vec::new(),
            cert_not_before_unix: 0,
        })),
    };
    s.apply(
        &node("xr", &[("npu0", "npu-ws"), ("npu1", "npu-os")], 30),
        3,
    );
    s.apply(&node("box", &[("cpu0", "cpu"), ("gpu0", "gpu")], 31), 4);
    assert_eq!(
        s.apply(&pin("xr", "m", 32), 5).result.code(),
        pb::ResultCode::Ok
    );
    assert_eq!(
        s.apply(&pin("box", "m", 33), 6).result.code(),
        pb::ResultCode::Ok
    );
    let accs = |n: &str| -> Vec<String> {
        s.nodes[n]
            .partitions
            .iter()
            .map(|p| p.accelerator_id.clone())
            .collect()
    };
    assert_eq!(accs("xr"), vec![""], "both NPUs stay usable");
    assert_eq!(
        accs("box"),
        vec!["cpu0"],
        "a GPU node keeps the first accelerator"
    );
}

#[test]
fn removing_a_node_revokes_its_certificate() {
    let mut s = State::default();
    let reg = |cert: u8| pb::Command {
        kind: Some(Kind::RegisterNode(pb::RegisterNode {
            name: "edge-1".into(),
            agent_addr: "127.0.0.1:1".into(),
            cert_sha256: if cert == 0 {
                Vec::new()
            } else {
                vec![cert; 32]
            },
            ..Default::default()
        })),
        ..Default::default()
    };
    assert_eq!(s.apply(&reg(1), 2).result.code(), pb::ResultCode::Ok);
    assert_eq!(s.nodes["edge-1"].cert_sha256, "01".repeat(32));
    let remove = pb::Command {
        kind: Some(Kind::RemoveNode(pb::RemoveNode {
            name: "edge-1".into(),
        })),
        ..Default::default()
    };
    assert_eq!(s.apply(&remove, 3).result.code(), pb::ResultCode::Ok);
    assert!(s.is_revoked(&[1; 32]));
    // The removed node's certificate cannot register it (or any name) again, and the
    // refusal says how to bring the box back.
    let before = s.encode();
    let r = s.apply(&reg(1), 4).result;
    assert_eq!(r.code(), pb::ResultCode::PermissionDenied, "{}", r.message);
    assert!(
        r.message.contains("revoked") && r.message.contains("tokens create --node edge-1"),
        "{}",
        r.message
    );
    assert_eq!(before, s.encode(), "a refused registration wrote something");
    // A new certificate (a new join) registers the name; plaintext registrations are
    // not bound to a certificate and are unaffected.
    assert_eq!(s.apply(&reg(2), 5).result.code(), pb::ResultCode::Ok);
    assert_eq!(s.nodes["edge-1"].cert_sha256, "02".repeat(32));
    assert_eq!(s.apply(&reg(0), 6).result.code(), pb::ResultCode::Ok);
    assert_eq!(s.nodes["edge-1"].cert_sha256, "02".repeat(32));
    // The list is bounded, oldest forgotten first.
    for i in 0..MAX_REVOKED_CERTS + 5 {
        s.revoked_certs.push_back(RevokedCert {
            sha256: format!("{i:064x}"),
            node: "x".into(),
        });
    }
    assert_eq!(s.apply(&remove, 7).result.code(), pb::ResultCode::Ok);
    assert_eq!(s.revoked_certs.len(), MAX_REVOKED_CERTS);
    assert!(s.is_revoked(&[2; 32]), "the newest revocation is kept");
}

/// Issue 22, finding 3: a registration cannot carry megabytes (before: eight 3.3 MB
/// registrations grew the replicated state to 8.6 MB).
#[test]
fn registrations_are_bounded_in_accelerators_and_string_lengths() {
    let acc = |i: usize| pb::Accelerator {
        id: format!("gpu{i}"),
        kind: "gpu".into(),
        ..Default::default()
    };
    let reg = |accelerators: Vec<pb::Accelerator>| pb::Command {
        kind: Some(Kind::RegisterNode(pb::RegisterNode {
            name: "edge-1".into(),
            accelerators,
            ..Default::default()
        })),
        ..Default::default()
    };
    assert!(validate(&reg((0..MAX_ACCELERATORS).map(acc).collect())).is_ok());
    let e = validate(&reg((0..=MAX_ACCELERATORS).map(acc).collect())).unwrap_err();
    assert!(
        e.to_string().contains("accelerators") && e.to_string().contains("64"),
        "{e}"
    );
    let mut long = acc(0);
    long.name = "x".repeat(MAX_FIELD + 1);
    let e = validate(&reg(vec![long])).unwrap_err().to_string();
    assert!(e.contains("accelerators[0].name"), "{e}");
    let mut rows = acc(0);
    rows.profile = vec![pb::ProfileRow::default(); MAX_PROFILE_ROWS + 1];
    let e = validate(&reg(vec![rows])).unwrap_err().to_string();
    assert!(e.contains("accelerators[0].profile"), "{e}");
}

/// Issue 22, finding 2: a second certificate for the node re-registers it; removing the
/// node must revoke the first one too (before, only the last bound one was revoked and the
/// original joined certificate registered again).
#[test]
fn every_certificate_bound_to_a_node_is_revoked_and_older_ones_cannot_rebind() {
    let mut s = State::default();
    let reg = |cert: u8, not_before: u64| pb::Command {
        kind: Some(Kind::RegisterNode(pb::RegisterNode {
            name: "edge-1".into(),
            agent_addr: "127.0.0.1:1".into(),
            cert_sha256: vec![cert; 32],
            cert_not_before_unix: not_before,
            ..Default::default()
        })),
        ..Default::default()
    };
    let remove = pb::Command {
        kind: Some(Kind::RemoveNode(pb::RemoveNode {
            name: "edge-1".into(),
        })),
        ..Default::default()
    };
    // The joined certificate (A, notBefore 100), then `certs issue node` (B, 200).
    assert_eq!(s.apply(&reg(0xa, 100), 2).result.code(), pb::ResultCode::Ok);
    assert_eq!(s.apply(&reg(0xb, 200), 3).result.code(), pb::ResultCode::Ok);
    assert_eq!(s.nodes["edge-1"].cert_sha256, "0b".repeat(32));
    assert!(s.is_revoked(&[0xa; 32]), "moving to B revoked A at once");
    let r = s.apply(&reg(0xa, 100), 4).result;
    assert_eq!(
        r.code(),
        pb::ResultCode::PermissionDenied,
        "A registers again: {}",
        r.message
    );
    assert_eq!(s.apply(&remove, 5).result.code(), pb::ResultCode::Ok);
    for c in [0xa, 0xb] {
        assert!(s.is_revoked(&[c; 32]), "{c:x} revoked after nodes remove");
        let before = s.encode();
        assert_eq!(
            s.apply(&reg(c, 300), 6).result.code(),
            pb::ResultCode::PermissionDenied
        );
        assert_eq!(before, s.encode(), "a refused registration wrote something");
    }
    // Bound to D (notBefore 500): an older certificate C (400) cannot take the name.
    assert_eq!(s.apply(&reg(0xd, 500), 7).result.code(), pb::ResultCode::Ok);
    let before = s.encode();
    let r = s.apply(&reg(0xc, 400), 8).result;
    assert_eq!(r.code(), pb::ResultCode::PermissionDenied, "{}", r.message);
    assert!(r.message.contains("newer certificate"), "{}", r.message);
    assert_eq!(before, s.encode());
    assert!(!s.is_revoked(&[0xd; 32]), "the refusal left D bound");
}

#[test]
fn epochs_keep_increasing_when_a_node_is_removed_and_registered_again() {
    let mut s = State::default();
    s.apply(&deploy("m", 10.0, 1.0), 2);
    s.apply(&register("n", 20), 3);
    let mut epochs = vec![s.apply(&pin("n", "m", 21), 4).result.epoch];
    epochs.push(s.apply(&pin("n", "m", 22), 9).result.epoch);
    let rm = pb::Command {
        client_id: 23,
        seq: 1,
        kind: Some(Kind::RemoveNode(pb::RemoveNode { name: "n".into() })),
    };
    assert_eq!(s.apply(&rm, 10).result.code(), pb::ResultCode::Ok);
    s.apply(&register("n", 24), 11);
    epochs.push(s.apply(&pin("n", "m", 25), 12).result.epoch);
    // Hand-derived: the indexes of the three pins.
    assert_eq!(epochs, vec![4, 9, 12]);
    // A snapshot round trip (restore) keeps them.
    let back = State::decode(&s.encode()).unwrap();
    assert_eq!(back.nodes["n"].assignment_epoch, 12);
}

#[test]
fn expire_nodes_marks_only_ready_nodes_lost_and_names_bad_fields() {
    let mut s = State::default();
    for (i, n) in ["a", "b", "c"].iter().enumerate() {
        s.apply(&register(n, 30 + i as u64), 2 + i as u64);
    }
    let drain = pb::Command {
        client_id: 40,
        seq: 1,
        kind: Some(Kind::SetNodeStatus(pb::SetNodeStatus {
            name: "c".into(),
            status: pb::NodeStatus::Draining as i32,
        })),
    };
    s.apply(&drain, 5);
    let expire = |names: &[&str]| pb::Command {
        client_id: 41,
        seq: 1,
        kind: Some(Kind::ExpireNodes(pb::ExpireNodes {
            names: names.iter().map(|n| n.to_string()).collect(),
        })),
    };
    // "gone" was never registered: skipped, the rest still applies (one entry for all)
    assert_eq!(
        s.apply(&expire(&["a", "c", "gone"]), 6).result.code(),
        pb::ResultCode::Ok
    );
    assert_eq!(s.nodes["a"].status, NodeStatus::Lost);
    assert_eq!(s.nodes["b"].status, NodeStatus::Ready);
    assert_eq!(
        s.nodes["c"].status,
        NodeStatus::Draining,
        "only ready nodes expire"
    );
    let e = validate(&expire(&[])).unwrap_err();
    assert!(e.to_string().contains("names"), "{e}");
    let e = validate(&expire(&["ok", " "])).unwrap_err();
    assert!(e.to_string().contains("names[1]"), "{e}");
}

#[test]
fn a_drained_node_stays_draining_when_its_agent_registers_again() {
    let mut s = State::default();
    s.apply(&register("d", 50), 2);
    let drain = pb::Command {
        client_id: 51,
        seq: 1,
        kind: Some(Kind::SetNodeStatus(pb::SetNodeStatus {
            name: "d".into(),
            status: pb::NodeStatus::Draining as i32,
        })),
    };
    s.apply(&drain, 3);
    s.apply(&register("d", 52), 4);
    assert_eq!(s.nodes["d"].status, NodeStatus::Draining);
    let undo = pb::Command {
        client_id: 53,
        seq: 1,
        kind: Some(Kind::SetNodeStatus(pb::SetNodeStatus {
            name: "d".into(),
            status: pb::NodeStatus::Ready as i32,
        })),
    };
    s.apply(&undo, 5);
    assert_eq!(s.nodes["d"].status, NodeStatus::Ready);
}

#[test]
fn sessions_are_evicted_oldest_write_first() {
    let mut s = State::default();
    for i in 0..(MAX_SESSIONS as u64 + 3) {
        let mut c = deploy("m", 10.0, 1.0);
        c.client_id = 1000 + i;
        s.apply(&c, 10 + i);
    }
    // MAX + 3 clients evicted 1000, 1001, 1002. Client 1000 writes again (a new
    // session, the newest), which evicts the next oldest, 1003.
    let mut c = deploy("m", 10.0, 1.0);
    c.client_id = 1000;
    c.seq = 2;
    s.apply(&c, 50_000);
    assert_eq!(s.sessions.len(), MAX_SESSIONS);
    assert!(s.sessions.contains_key(&1000));
    for gone in 1001..=1003u64 {
        assert!(!s.sessions.contains_key(&gone), "client {gone} kept");
    }
    assert!(s.sessions.contains_key(&1004));
    // The eviction index is rebuilt from a snapshot.
    let mut back = State::decode(&s.encode()).unwrap();
    let mut c = deploy("m", 10.0, 1.0);
    c.client_id = 99;
    back.apply(&c, 50_001);
    assert!(!back.sessions.contains_key(&1004));
    assert!(back.sessions.contains_key(&1005));
}

#[test]
fn snapshot_roundtrip() {
    let mut s = State::default();
    s.apply(&deploy("m", 10.0, 2.5), 2);
    let back = State::decode(&s.encode()).unwrap();
    assert_eq!(back, s);
}

#[test]
fn addresses() {
    assert!(check_addr("a", "127.0.0.1:7101").is_ok());
    assert!(check_addr("a", "localhost:1").is_ok());
    assert!(check_addr("a", "127.0.0.1").is_err());
    assert!(check_addr("a", ":80").is_err());
    assert!(check_addr("a", "h:0").is_err());
    assert!(check_addr("a", "h:99999").is_err());
}
