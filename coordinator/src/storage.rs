//! Durable Raft storage.
//!
//! Two layers:
//! - [`LogBackend`]: the durable operations Raft needs (append entries + hard state in one
//!   batch, install/create snapshots, compact, conf state, applied index). Every mutating call
//!   returns only once the data is on disk. [`SledBackend`] implements it on sled 0.34.
//! - [`RaftStore`]: implements [`raft::Storage`] over any backend, serving reads from an
//!   in-memory mirror of the (compacted) log, like etcd's MemoryStorage in front of its WAL.
//!   Reads therefore never touch disk, and the mirror is bounded by log compaction.
//!
//! Why fsync by hand: sled 0.34's `flush()` writes its buffers but on Linux ends with
//! `sync_file_range`, which does not flush the drive cache nor file metadata. Raft's safety
//! needs "persisted" to mean durable, so after every flush we `fsync` sled's files.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError as RaftStorageError};

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    #[error("i/o on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("corrupt record {key}: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("{0}")]
    Invalid(String),
}

type Result<T, E = StorageError> = std::result::Result<T, E>;

/// Everything a backend holds, as loaded at start.
#[derive(Debug, Default, Clone)]
pub struct Loaded {
    pub hard_state: HardState,
    pub conf_state: ConfState,
    /// Latest snapshot (metadata + state-machine data); empty metadata when none.
    pub snapshot: Snapshot,
    /// Entries after the snapshot, in index order, contiguous.
    pub entries: Vec<Entry>,
    pub applied: u64,
}

/// Durable operations Raft needs. Every mutating method is durable when it returns
/// (written, flushed and fsynced), so the caller may then send persisted messages or
/// acknowledge clients.
pub trait LogBackend: Send + 'static {
    /// Everything stored, for start-up.
    fn load(&self) -> Result<Loaded>;
    /// Append `entries` (dropping any stored entries at or after `entries[0].index`, i.e. a
    /// conflicting suffix) and set the hard state, in one atomic batch.
    fn append(&mut self, entries: &[Entry], hard_state: Option<&HardState>) -> Result<()>;
    /// Install a snapshot received from the leader: replaces the whole log, sets the
    /// conf state and the hard state's commit/term from the snapshot metadata.
    fn install_snapshot(&mut self, snapshot: &Snapshot, hard_state: &HardState) -> Result<()>;
    /// Save a snapshot made locally and drop every entry at or below its index.
    fn save_snapshot_and_compact(&mut self, snapshot: &Snapshot) -> Result<()>;
    /// Record the conf state after a membership change was applied.
    fn set_conf_state(&mut self, conf_state: &ConfState) -> Result<()>;
    /// Record the applied index (informational: the state machine is rebuilt from the
    /// snapshot plus the log on restart, so this is written without its own fsync).
    fn set_applied(&mut self, applied: u64) -> Result<()>;
    /// Latency of the last fsync, for metrics.
    fn last_fsync(&self) -> Duration;
}

const K_HARD: &[u8] = b"m/hard_state";
const K_CONF: &[u8] = b"m/conf_state";
const K_SNAP_META: &[u8] = b"m/snap_meta";
const K_SNAP_DATA: &[u8] = b"m/snap_data";
const K_APPLIED: &[u8] = b"m/applied";
const ENTRY_PREFIX: u8 = b'e';
/// Values above this may land in sled blob files (sled's own threshold is larger).
const LARGE_VALUE: usize = 4096;

fn entry_key(index: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = ENTRY_PREFIX;
    k[1..].copy_from_slice(&index.to_be_bytes());
    k
}

/// [`LogBackend`] on sled 0.34: one tree, entries under `e<index BE>`, metadata under `m/*`,
/// so entries and hard state go into a single atomic `Batch`.
pub struct SledBackend {
    db: sled::Db,
    dir: PathBuf,
    /// Files fsynced after every flush (sled's data file and config file).
    sync_files: Vec<File>,
    last_fsync: Duration,
}

impl SledBackend {
    /// Open (or create) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|source| StorageError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let db = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            .open()?;
        let mut me = SledBackend {
            db,
            dir: dir.to_path_buf(),
            sync_files: Vec::new(),
            last_fsync: Duration::ZERO,
        };
        me.reopen_sync_files()?;
        Ok(me)
    }

    fn reopen_sync_files(&mut self) -> Result<()> {
        self.sync_files.clear();
        for name in ["db", "conf"] {
            let path = self.dir.join(name);
            if path.exists() {
                let f = File::open(&path).map_err(|source| StorageError::Io {
                    path: path.clone(),
                    source,
                })?;
                self.sync_files.push(f);
            }
        }
        // The directory itself, so a newly created file's entry is durable too.
        if let Ok(d) = File::open(&self.dir) {
            self.sync_files.push(d);
        }
        Ok(())
    }

    /// Flush sled, then fsync its files. This is the durability point. `large`: the batch
    /// held a value big enough that sled may have put it in a separate blob file (sled does
    /// not fsync those either), so the blob files are synced too.
    fn durable(&mut self, large: bool) -> Result<()> {
        self.db.flush()?;
        let start = Instant::now();
        if large {
            let blobs = self.dir.join("blobs");
            if let Ok(rd) = std::fs::read_dir(&blobs) {
                for e in rd.flatten() {
                    if let Ok(f) = File::open(e.path()) {
                        let _ = f.sync_all();
                    }
                }
                if let Ok(d) = File::open(&blobs) {
                    let _ = d.sync_all();
                }
            }
        }
        for f in &self.sync_files {
            f.sync_all().map_err(|source| StorageError::Io {
                path: self.dir.clone(),
                source,
            })?;
        }
        self.last_fsync = start.elapsed();
        Ok(())
    }

    fn get_msg<M: protobuf::Message>(&self, key: &[u8]) -> Result<Option<M>> {
        match self.db.get(key)? {
            None => Ok(None),
            Some(v) => M::parse_from_bytes(&v)
                .map(Some)
                .map_err(|e| StorageError::Corrupt {
                    key: String::from_utf8_lossy(key).into_owned(),
                    reason: e.to_string(),
                }),
        }
    }

    fn remove_entries_from(&self, batch: &mut sled::Batch, from: u64) -> Result<()> {
        for kv in self.db.range(entry_key(from)..=entry_key(u64::MAX)) {
            let (k, _) = kv?;
            batch.remove(k);
        }
        Ok(())
    }

    fn remove_entries_upto(&self, batch: &mut sled::Batch, upto: u64) -> Result<()> {
        for kv in self.db.range(entry_key(0)..=entry_key(upto)) {
            let (k, _) = kv?;
            batch.remove(k);
        }
        Ok(())
    }
}

fn encode<M: protobuf::Message>(m: &M) -> Vec<u8> {
    m.write_to_bytes()
        .expect("encoding a raft protobuf message cannot fail")
}

impl LogBackend for SledBackend {
    fn load(&self) -> Result<Loaded> {
        let hard_state: HardState = self.get_msg(K_HARD)?.unwrap_or_default();
        let conf_state: ConfState = self.get_msg(K_CONF)?.unwrap_or_default();
        let meta: SnapshotMetadata = self.get_msg(K_SNAP_META)?.unwrap_or_default();
        let mut snapshot = Snapshot::default();
        if meta.index > 0 {
            let data = self.db.get(K_SNAP_DATA)?.unwrap_or_default();
            snapshot.set_data(data.to_vec().into());
            snapshot.set_metadata(meta.clone());
        }
        let mut entries = Vec::new();
        for kv in self
            .db
            .range(entry_key(meta.index + 1)..=entry_key(u64::MAX))
        {
            let (k, v) = kv?;
            let e = Entry::parse_from_bytes(&v).map_err(|e| StorageError::Corrupt {
                key: format!("entry {:?}", &k[..]),
                reason: e.to_string(),
            })?;
            if let Some(last) = entries.last() {
                let last: &Entry = last;
                if e.index != last.index + 1 {
                    return Err(StorageError::Corrupt {
                        key: format!("entry {}", e.index),
                        reason: format!("gap after {}", last.index),
                    });
                }
            }
            entries.push(e);
        }
        let applied = self
            .db
            .get(K_APPLIED)?
            .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(0);
        Ok(Loaded {
            hard_state,
            conf_state,
            snapshot,
            entries,
            applied,
        })
    }

    fn append(&mut self, entries: &[Entry], hard_state: Option<&HardState>) -> Result<()> {
        if entries.is_empty() && hard_state.is_none() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        if let Some(first) = entries.first() {
            self.remove_entries_from(&mut batch, first.index)?;
            for e in entries {
                batch.insert(&entry_key(e.index), encode(e));
            }
        }
        if let Some(hs) = hard_state {
            batch.insert(K_HARD, encode(hs));
        }
        self.db.apply_batch(batch)?;
        let large = entries
            .iter()
            .any(|e| e.compute_size() as usize > LARGE_VALUE);
        self.durable(large)
    }

    fn install_snapshot(&mut self, snapshot: &Snapshot, hard_state: &HardState) -> Result<()> {
        let meta = snapshot.get_metadata();
        let mut batch = sled::Batch::default();
        self.remove_entries_from(&mut batch, 0)?;
        batch.insert(K_SNAP_META, encode(meta));
        batch.insert(K_SNAP_DATA, snapshot.get_data());
        batch.insert(K_CONF, encode(meta.get_conf_state()));
        batch.insert(K_HARD, encode(hard_state));
        batch.insert(K_APPLIED, &meta.index.to_be_bytes());
        self.db.apply_batch(batch)?;
        self.durable(snapshot.get_data().len() > LARGE_VALUE)
    }

    fn save_snapshot_and_compact(&mut self, snapshot: &Snapshot) -> Result<()> {
        let meta = snapshot.get_metadata();
        let mut batch = sled::Batch::default();
        batch.insert(K_SNAP_META, encode(meta));
        batch.insert(K_SNAP_DATA, snapshot.get_data());
        self.remove_entries_upto(&mut batch, meta.index)?;
        self.db.apply_batch(batch)?;
        self.durable(snapshot.get_data().len() > LARGE_VALUE)
    }

    fn set_conf_state(&mut self, conf_state: &ConfState) -> Result<()> {
        self.db.insert(K_CONF, encode(conf_state))?;
        self.durable(false)
    }

    fn set_applied(&mut self, applied: u64) -> Result<()> {
        self.db.insert(K_APPLIED, &applied.to_be_bytes())?;
        Ok(())
    }

    fn last_fsync(&self) -> Duration {
        self.last_fsync
    }
}

/// [`raft::Storage`] over a [`LogBackend`]: writes go through the backend (durable), reads
/// come from an in-memory mirror of the uncompacted log.
pub struct RaftStore {
    backend: Box<dyn LogBackend>,
    hard_state: HardState,
    conf_state: ConfState,
    snapshot: Snapshot,
    /// entries[i].index == snapshot index + 1 + i
    entries: Vec<Entry>,
    /// Set when raft asked for a snapshot the stored one cannot serve (the peer is not in
    /// its configuration, e.g. a member added after it was taken); the loop then takes a
    /// fresh snapshot and raft retries.
    snapshot_wanted: std::cell::Cell<bool>,
}

impl RaftStore {
    /// Load the backend's content into the mirror.
    pub fn open(backend: Box<dyn LogBackend>) -> Result<Self> {
        let l = backend.load()?;
        Ok(RaftStore {
            backend,
            hard_state: l.hard_state,
            conf_state: l.conf_state,
            snapshot: l.snapshot,
            entries: l.entries,
            snapshot_wanted: std::cell::Cell::new(false),
        })
    }

    /// True when nothing was ever stored (a fresh data dir).
    pub fn is_empty(&self) -> bool {
        self.hard_state == HardState::default()
            && self.conf_state == ConfState::default()
            && self.entries.is_empty()
            && self.snapshot.get_metadata().index == 0
    }

    /// Bootstrap a fresh store with the initial voters: an initial snapshot at index 1
    /// carrying the conf state (the same trick as raft-rs's examples), durable.
    pub fn bootstrap(&mut self, voters: Vec<u64>, data: Vec<u8>) -> Result<()> {
        let mut snap = Snapshot::default();
        let meta = snap.mut_metadata();
        meta.index = 1;
        meta.term = 1;
        meta.mut_conf_state().voters = voters;
        snap.set_data(data.into());
        let hs = HardState {
            term: 1,
            commit: 1,
            ..Default::default()
        };
        self.apply_snapshot(snap, hs)
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }
    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }
    pub fn latest_snapshot(&self) -> &Snapshot {
        &self.snapshot
    }
    pub fn last_fsync(&self) -> Duration {
        self.backend.last_fsync()
    }
    pub fn log_len(&self) -> usize {
        self.entries.len()
    }

    fn snap_index(&self) -> u64 {
        self.snapshot.get_metadata().index
    }
    fn first(&self) -> u64 {
        self.snap_index() + 1
    }
    fn last(&self) -> u64 {
        self.entries
            .last()
            .map(|e| e.index)
            .unwrap_or_else(|| self.snap_index())
    }

    /// Durably append entries and/or the hard state (one batch + fsync).
    pub fn append(&mut self, entries: &[Entry], hs: Option<&HardState>) -> Result<()> {
        if let Some(first) = entries.first() {
            if first.index < self.first() {
                return Err(StorageError::Invalid(format!(
                    "append at {} overwrites the compacted log (first index {})",
                    first.index,
                    self.first()
                )));
            }
            if first.index > self.last() + 1 {
                return Err(StorageError::Invalid(format!(
                    "append at {} leaves a gap after {}",
                    first.index,
                    self.last()
                )));
            }
        }
        self.backend.append(entries, hs)?;
        if let Some(first) = entries.first() {
            let keep = (first.index - self.first()) as usize;
            self.entries.truncate(keep);
            self.entries.extend_from_slice(entries);
        }
        if let Some(hs) = hs {
            self.hard_state = hs.clone();
        }
        Ok(())
    }

    /// Durably install a snapshot from the leader (replaces the log).
    pub fn apply_snapshot(&mut self, snap: Snapshot, mut hs: HardState) -> Result<()> {
        let meta = snap.get_metadata();
        if meta.index < self.snap_index() {
            return Err(StorageError::Invalid(format!(
                "snapshot {} older than the stored one {}",
                meta.index,
                self.snap_index()
            )));
        }
        hs.term = hs.term.max(meta.term);
        hs.commit = hs.commit.max(meta.index);
        self.backend.install_snapshot(&snap, &hs)?;
        self.hard_state = hs;
        self.conf_state = meta.get_conf_state().clone();
        self.entries.clear();
        self.snapshot = snap;
        Ok(())
    }

    /// Make a snapshot at `index` (must be applied locally) with `data`, and compact the log
    /// up to it.
    pub fn create_snapshot(
        &mut self,
        index: u64,
        conf_state: ConfState,
        data: Vec<u8>,
    ) -> Result<()> {
        if index <= self.snap_index() {
            return Ok(());
        }
        let term = raft::Storage::term(self, index)
            .map_err(|e| StorageError::Invalid(format!("term of {index}: {e}")))?;
        let mut snap = Snapshot::default();
        snap.set_data(data.into());
        let meta = snap.mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(conf_state);
        self.backend.save_snapshot_and_compact(&snap)?;
        let drop = (index - self.snap_index()) as usize;
        self.entries.drain(..drop.min(self.entries.len()));
        self.snapshot = snap;
        Ok(())
    }

    pub fn set_conf_state(&mut self, cs: ConfState) -> Result<()> {
        self.backend.set_conf_state(&cs)?;
        self.conf_state = cs;
        Ok(())
    }

    /// Remember the commit index in memory (it is persisted with the next hard state write;
    /// losing it only means re-learning it from the leader).
    pub fn set_commit(&mut self, commit: u64) {
        self.hard_state.commit = commit;
    }

    /// True (once) when raft needed a newer snapshot than the stored one.
    pub fn take_snapshot_wanted(&self) -> bool {
        self.snapshot_wanted.replace(false)
    }

    pub fn set_applied(&mut self, applied: u64) -> Result<()> {
        self.backend.set_applied(applied)
    }
}

impl raft::Storage for RaftStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.hard_state.clone(),
            self.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first() {
            return Err(raft::Error::Store(RaftStorageError::Compacted));
        }
        if high > self.last() + 1 {
            return Err(raft::Error::Store(RaftStorageError::Unavailable));
        }
        let off = self.first();
        let mut ents = self.entries[(low - off) as usize..(high - off) as usize].to_vec();
        raft::util::limit_size(&mut ents, max_size.into());
        Ok(ents)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let si = self.snap_index();
        if idx == si {
            return Ok(self.snapshot.get_metadata().term);
        }
        if idx < si {
            return Err(raft::Error::Store(RaftStorageError::Compacted));
        }
        if idx > self.last() {
            return Err(raft::Error::Store(RaftStorageError::Unavailable));
        }
        Ok(self.entries[(idx - si - 1) as usize].term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        let cs = self.snapshot.get_metadata().get_conf_state();
        let knows_peer = cs.voters.contains(&to)
            || cs.learners.contains(&to)
            || cs.voters_outgoing.contains(&to)
            || cs.learners_next.contains(&to);
        if self.snap_index() < request_index || !knows_peer {
            self.snapshot_wanted.set(true);
            return Err(raft::Error::Store(
                RaftStorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(self.snapshot.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::Storage as _;

    fn ent(index: u64, term: u64) -> Entry {
        let mut e = Entry {
            index,
            term,
            ..Default::default()
        };
        e.set_data(format!("d{index}").into_bytes().into());
        e
    }

    fn open(dir: &Path) -> RaftStore {
        RaftStore::open(Box::new(SledBackend::open(dir).unwrap())).unwrap()
    }

    #[test]
    fn bootstrap_append_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = open(dir.path());
            assert!(s.is_empty());
            s.bootstrap(vec![1, 2, 3], b"state".to_vec()).unwrap();
            let mut hs = s.hard_state().clone();
            hs.vote = 2;
            hs.term = 2;
            s.append(&[ent(2, 2), ent(3, 2), ent(4, 2)], Some(&hs))
                .unwrap();
            // a conflicting suffix replaces 4..
            s.append(&[ent(4, 3), ent(5, 3)], None).unwrap();
            assert!(s.last_fsync() > Duration::ZERO);
        }
        let s = open(dir.path());
        assert!(!s.is_empty());
        assert_eq!(s.first_index().unwrap(), 2);
        assert_eq!(s.last_index().unwrap(), 5);
        assert_eq!(s.term(1).unwrap(), 1);
        assert_eq!(s.term(4).unwrap(), 3);
        assert_eq!(s.hard_state().vote, 2);
        assert_eq!(s.conf_state().voters, vec![1, 2, 3]);
        let es = s
            .entries(2, 6, None, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(
            es.iter().map(|e| e.index).collect::<Vec<_>>(),
            vec![2, 3, 4, 5]
        );
        assert_eq!(s.latest_snapshot().get_data(), b"state");
    }

    #[test]
    fn snapshot_compacts_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = open(dir.path());
            s.bootstrap(vec![1], vec![]).unwrap();
            let ents: Vec<_> = (2..=10).map(|i| ent(i, 1)).collect();
            s.append(&ents, None).unwrap();
            s.create_snapshot(7, s.conf_state().clone(), b"at7".to_vec())
                .unwrap();
            assert_eq!(s.first_index().unwrap(), 8);
            assert!(matches!(
                s.entries(5, 8, None, GetEntriesContext::empty(false)),
                Err(raft::Error::Store(RaftStorageError::Compacted))
            ));
        }
        let s = open(dir.path());
        assert_eq!(s.first_index().unwrap(), 8);
        assert_eq!(s.last_index().unwrap(), 10);
        assert_eq!(s.term(7).unwrap(), 1);
        assert_eq!(s.snapshot(0, 1).unwrap().get_data(), b"at7");
        // A peer outside the stored snapshot's configuration asks for a fresh one.
        assert!(s.snapshot(0, 9).is_err());
        assert!(s.take_snapshot_wanted());
    }

    #[test]
    fn install_snapshot_replaces_log() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = open(dir.path());
            s.bootstrap(vec![1, 2], vec![]).unwrap();
            s.append(&[ent(2, 1), ent(3, 1)], None).unwrap();
            let mut snap = Snapshot::default();
            snap.mut_metadata().index = 20;
            snap.mut_metadata().term = 4;
            snap.mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
            snap.set_data(b"leader".to_vec().into());
            s.apply_snapshot(snap, HardState::default()).unwrap();
        }
        let s = open(dir.path());
        assert_eq!(s.first_index().unwrap(), 21);
        assert_eq!(s.last_index().unwrap(), 20);
        assert_eq!(s.hard_state().commit, 20);
        assert_eq!(s.hard_state().term, 4);
        assert_eq!(s.conf_state().voters, vec![1, 2, 3]);
    }
}
