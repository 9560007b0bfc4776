//! Offline restore of a saved snapshot (`edgeplane snapshot save`) into a NEW data dir, like
//! `etcdutl snapshot restore`: the replica started on it (`edgeplane-coordinator --id ID
//! --data-dir DIR ...`, no `--initial-cluster` needed) is the single voter of a new cluster
//! that holds the snapshot's models, nodes, pins and placements; more members are added
//! with `edgeplane member add` and started with `--join`.
//!
//! The restored log starts at the snapshot's applied index (not at 1), so every
//! assignment epoch the new cluster hands out is above the epochs agents hold from the old
//! one: agents keep serving and accept the next plan. The old cluster's membership and
//! client sessions are dropped; node leases start fresh on the new leader.

use std::path::{Path, PathBuf};

use crate::state::{Member, State};
use crate::storage::{RaftStore, SledBackend};

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("snapshot file {path}: {reason}")]
    Snapshot { path: PathBuf, reason: String },
    #[error("data dir {path} is not empty: restore only into a new (or empty) dir")]
    NotEmpty { path: PathBuf },
    #[error("invalid `{field}`: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("data dir {path}: {reason}")]
    Storage { path: PathBuf, reason: String },
}

/// What a restore wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Restored {
    /// The log index the new cluster starts from (the snapshot's applied index).
    pub index: u64,
    pub models: usize,
    pub nodes: usize,
    pub pins: usize,
}

/// Restore the snapshot `data` (read from `path`, for messages) into `data_dir` as the
/// only member `id` with the given addresses.
pub fn restore(
    path: &Path,
    data: &[u8],
    data_dir: &Path,
    id: u64,
    peer_addr: &str,
    client_addr: &str,
) -> Result<Restored, RestoreError> {
    if id == 0 {
        return Err(RestoreError::Invalid {
            field: "id",
            reason: "must be > 0".into(),
        });
    }
    crate::state::check_addr("peer_addr", peer_addr).map_err(|e| RestoreError::Invalid {
        field: "peer_addr",
        reason: e.to_string(),
    })?;
    crate::state::check_addr("client_addr", client_addr).map_err(|e| RestoreError::Invalid {
        field: "client_addr",
        reason: e.to_string(),
    })?;
    if data.is_empty() {
        return Err(RestoreError::Snapshot {
            path: path.into(),
            reason: "empty file".into(),
        });
    }
    let mut st = State::decode(data).map_err(|e| RestoreError::Snapshot {
        path: path.into(),
        reason: format!("not an Edgeplane snapshot ({e})"),
    })?;
    if data_dir.exists()
        && std::fs::read_dir(data_dir)
            .map_err(|e| RestoreError::Storage {
                path: data_dir.into(),
                reason: e.to_string(),
            })?
            .next()
            .is_some()
    {
        return Err(RestoreError::NotEmpty {
            path: data_dir.into(),
        });
    }
    let index = st.applied_index.max(1);
    st.members.clear();
    st.removed_members.clear();
    st.sessions.clear();
    st.members.insert(
        id,
        Member {
            id,
            peer_addr: peer_addr.into(),
            client_addr: client_addr.into(),
            learner: false,
        },
    );
    st.applied_index = index;
    let raft_dir = data_dir.join("raft");
    let storage = |e: crate::storage::StorageError| RestoreError::Storage {
        path: raft_dir.clone(),
        reason: e.to_string(),
    };
    let backend = SledBackend::open(&raft_dir).map_err(storage)?;
    let mut store = RaftStore::open(Box::new(backend)).map_err(storage)?;
    store
        .bootstrap_at(vec![id], st.encode(), index)
        .map_err(storage)?;
    Ok(Restored {
        index,
        models: st.models.len(),
        nodes: st.nodes.len(),
        pins: st.pins.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_bad_input_and_a_used_dir() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.snap");
        let good = State::default().encode();
        let e = restore(
            &p,
            b"garbage",
            &dir.path().join("a"),
            1,
            "127.0.0.1:1",
            "127.0.0.1:2",
        )
        .unwrap_err();
        assert!(matches!(e, RestoreError::Snapshot { .. }), "{e}");
        let e = restore(
            &p,
            &good,
            &dir.path().join("a"),
            0,
            "127.0.0.1:1",
            "127.0.0.1:2",
        )
        .unwrap_err();
        assert!(e.to_string().contains("`id`"), "{e}");
        let e = restore(&p, &good, &dir.path().join("a"), 1, "nohost", "127.0.0.1:2").unwrap_err();
        assert!(e.to_string().contains("peer_addr"), "{e}");
        std::fs::create_dir_all(dir.path().join("used")).unwrap();
        std::fs::write(dir.path().join("used/x"), b"1").unwrap();
        let e = restore(
            &p,
            &good,
            &dir.path().join("used"),
            1,
            "127.0.0.1:1",
            "127.0.0.1:2",
        )
        .unwrap_err();
        assert!(matches!(e, RestoreError::NotEmpty { .. }), "{e}");
    }

    #[test]
    fn restored_store_starts_at_the_snapshot_index_with_one_member() {
        let dir = tempfile::tempdir().unwrap();
        let mut st = State::default();
        st.applied_index = 420;
        st.members.insert(
            7,
            Member {
                id: 7,
                peer_addr: "10.0.0.7:1".into(),
                client_addr: "10.0.0.7:2".into(),
                learner: false,
            },
        );
        let out = dir.path().join("new");
        let r = restore(
            &dir.path().join("s"),
            &st.encode(),
            &out,
            1,
            "127.0.0.1:7201",
            "127.0.0.1:7101",
        )
        .unwrap();
        assert_eq!(r.index, 420);
        let store =
            RaftStore::open(Box::new(SledBackend::open(&out.join("raft")).unwrap())).unwrap();
        let snap = store.latest_snapshot();
        assert_eq!(snap.get_metadata().index, 420);
        assert_eq!(store.conf_state().voters, vec![1]);
        let back = State::decode(snap.get_data()).unwrap();
        assert_eq!(back.members.keys().copied().collect::<Vec<_>>(), vec![1]);
        assert_eq!(back.members[&1].client_addr, "127.0.0.1:7101");
    }
}
