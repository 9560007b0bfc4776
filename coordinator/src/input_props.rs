//! Property tests over every decoder and validator that takes bytes from the network or
//! from disk: raft message bytes (`RaftTransport.Send`), chunked snapshots, snapshot
//! state data, encoded commands (`Forward`, log entries), config files, agent reports.
//! Random and mutated inputs, fixed seed, many cases: no panic, bounded allocation, and
//! rejections that name the field.

use edgeplane_proto::raft as pb;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use prost::Message as _;
use protobuf::Message as _;

/// A fixed seed and `cases` cases, no failure files (shared with `apply_props`).
pub(crate) fn cfg(cases: u32) -> Config {
    Config {
        cases,
        rng_seed: RngSeed::Fixed(0x005E_C011),
        failure_persistence: None,
        ..Config::default()
    }
}

fn valid_raft_message() -> Vec<u8> {
    let mut m = raft::eraftpb::Message::default();
    m.set_msg_type(raft::eraftpb::MessageType::MsgAppend);
    m.from = 2;
    m.to = 1;
    m.term = 7;
    let e = raft::eraftpb::Entry {
        data: valid_command().into(),
        ..Default::default()
    };
    m.entries = vec![e].into();
    m.write_to_bytes().unwrap()
}

fn valid_command() -> Vec<u8> {
    pb::Command {
        client_id: 1,
        seq: 2,
        kind: Some(pb::command::Kind::DeployModel(pb::DeployModel {
            name: "m".into(),
            slo_ms: 10.0,
            rate: 1.0,
            memory_mb: 1,
        })),
    }
    .encode_to_vec()
}

fn valid_state() -> Vec<u8> {
    crate::state::State::default().encode()
}

/// `base` with up to 8 random byte edits (flip, insert, delete, truncate).
fn mutated(base: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec((0usize..4, any::<usize>(), any::<u8>()), 0..8).prop_map(
        move |edits| {
            let mut b = base.clone();
            for (op, at, v) in edits {
                let i = if b.is_empty() { 0 } else { at % b.len() };
                match op {
                    0 if !b.is_empty() => b[i] ^= v | 1,
                    1 => b.insert(i.min(b.len()), v),
                    2 if !b.is_empty() => {
                        b.remove(i);
                    }
                    _ => b.truncate(i),
                }
            }
            b
        },
    )
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..512)
}

proptest! {
    #![proptest_config(cfg(2000))]

    #[test]
    fn raft_message_bytes_never_panic(b in prop_oneof![bytes(), mutated(valid_raft_message())]) {
        let _ = raft::eraftpb::Message::parse_from_bytes(&b);
    }

    #[test]
    fn encoded_commands_never_panic(b in prop_oneof![bytes(), mutated(valid_command())]) {
        if let Ok(c) = pb::Command::decode(&b[..]) {
            // A decoded command re-encodes (no state that cannot be written back).
            let _ = c.encode_to_vec();
        }
    }

    #[test]
    fn snapshot_state_data_never_panics(b in prop_oneof![bytes(), mutated(valid_state())]) {
        let _ = crate::state::State::decode(&b);
    }
}

proptest! {
    #![proptest_config(cfg(500))]

    #[test]
    fn chunked_snapshots_never_panic_nor_trust_the_announced_size(
        total in prop_oneof![0u64..4096, any::<u64>()],
        header in prop_oneof![bytes(), Just(Vec::new())],
        pieces in proptest::collection::vec(bytes(), 0..6),
    ) {
        let mut chunks = vec![pb::SnapshotChunk {
            from: 2,
            to: 1,
            from_peer_addr: String::new(),
            message: header,
            total,
            data: Vec::new(),
        }];
        for p in pieces {
            chunks.push(pb::SnapshotChunk { data: p, ..Default::default() });
        }
        if let Err(e) = crate::transport::reassemble_snapshot(chunks) {
            prop_assert!(
                e.contains("chunk") || e.contains("total") || e.contains("announced")
                    || e.contains("MsgSnapshot"),
                "rejection without a field: {e}"
            );
        }
    }

    #[test]
    fn config_files_never_panic_and_errors_name_the_problem(
        s in prop_oneof![
            "[a-z_]{1,20} = [0-9a-z\"]{0,10}\n",
            "(tick_ms|election_ticks|snapshot_entries|id) = -?[0-9]{1,25}\n",
            any::<String>(),
        ]
    ) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, &s).unwrap();
        let f = crate::config::Flags {
            config: Some(p),
            insecure: true,
            ..Default::default()
        };
        if let Err(e) = crate::config::Config::from_flags(&f) {
            let e = e.to_string();
            prop_assert!(e.contains("config") || e.contains('`'), "{e}");
        }
    }

    #[test]
    fn agent_reports_reject_bad_numbers_by_field(
        up in prop_oneof![any::<f64>(), Just(f64::NAN), Just(-1.0)],
        p99 in any::<f64>(),
        model in "[a-z]{0,3}",
    ) {
        let r = edgeplane_proto::agent::Report {
            uptime_s: up,
            models: vec![edgeplane_proto::agent::ModelReport {
                model,
                p99_ms: p99,
                ..Default::default()
            }],
            ..Default::default()
        };
        if let Err(e) = crate::agents::check_report(&r) {
            prop_assert!(e.contains("uptime_s") || e.contains("models."), "{e}");
        }
    }
}
