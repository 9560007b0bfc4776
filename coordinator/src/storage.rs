//! Durable Raft storage.
//!
//! Two layers:
//! - [`LogBackend`]: the durable operations Raft needs (append entries + hard state in one
//!   batch, install a snapshot, compact, conf state, applied index). [`SledBackend`]
//!   implements it on sled 0.34 plus one snapshot file.
//! - [`RaftStore`]: implements [`raft::Storage`] over any backend, serving reads from an
//!   in-memory mirror of the (compacted) log, like etcd's MemoryStorage in front of its WAL.
//!   Reads therefore never touch disk, and the mirror is bounded by log compaction.
//!
//! Why fsync by hand: sled 0.34's `flush()` writes its buffers but on Linux ends with
//! `sync_file_range`, which does not flush the drive cache nor file metadata. Raft's safety
//! needs "persisted" to mean durable, so after a flush we `fsync` the files sled wrote:
//! its data file and every blob file it created since the last sync (sled moves large
//! pages into blob files of their own). The directory is synced when a file appears.
//!
//! Why the snapshot is a file of its own: in the sled tree it shared pages with the hard
//! state, so a small hard-state write rewrote (and re-synced) the whole snapshot. The file
//! is written atomically (temp file, fsync, rename, fsync of the directory) by
//! [`SnapshotWriter`], which the Raft loop runs on a builder thread.
//!
//! Why sync only when raft says so: a Ready whose only change is the commit index need not
//! be durable (the commit index is re-learnt from the leader), so such writes are buffered.

use std::collections::HashSet;
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
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
    /// (index, term) of the last entry dropped by compaction: the entry before `entries`.
    pub compacted: (u64, u64),
    /// Entries after `compacted`, in index order, contiguous (may start below the
    /// snapshot index: the catch-up margin).
    pub entries: Vec<Entry>,
    pub applied: u64,
}

/// Durable operations Raft needs. A mutating method with `sync` (or documented as durable)
/// returns once the data is on disk, so the caller may then send persisted messages or
/// acknowledge clients.
pub trait LogBackend: Send + 'static {
    /// Everything stored, for start-up.
    fn load(&self) -> Result<Loaded>;
    /// Append `entries` (dropping any stored entries at or after `entries[0].index`, i.e. a
    /// conflicting suffix) and set the hard state, in one atomic batch; durable when `sync`.
    fn append(
        &mut self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
        sync: bool,
    ) -> Result<()>;
    /// Install a snapshot received from the leader (durable): replaces the whole log, sets
    /// the conf state and the hard state.
    fn install_snapshot(&mut self, snapshot: &Snapshot, hard_state: &HardState) -> Result<()>;
    /// Drop every entry at or below `upto` (whose term is `term`). Not synced: entries that
    /// reappear after a crash are harmless (they are below a durable snapshot).
    fn compact(&mut self, upto: u64, term: u64) -> Result<()>;
    /// Record the conf state after a membership change was applied (durable).
    fn set_conf_state(&mut self, conf_state: &ConfState) -> Result<()>;
    /// Record the applied index (informational: the state machine is rebuilt from the
    /// snapshot plus the log on restart, so this is written without its own fsync).
    fn set_applied(&mut self, applied: u64) -> Result<()>;
    /// Writer of snapshot files for this store (usable from another thread).
    fn snapshot_writer(&self) -> SnapshotWriter;
    /// Latency of the last fsync, for metrics.
    fn last_fsync(&self) -> Duration;
    /// fsync-family calls made so far (data file, blob files, directories).
    fn fsync_count(&self) -> u64;
}

const K_HARD: &[u8] = b"m/hard_state";
const K_CONF: &[u8] = b"m/conf_state";
const K_COMPACTED: &[u8] = b"m/compacted";
const K_APPLIED: &[u8] = b"m/applied";
/// Keys of the store before snapshots moved to a file; read once for an upgrade.
const K_OLD_SNAP_META: &[u8] = b"m/snap_meta";
const K_OLD_SNAP_DATA: &[u8] = b"m/snap_data";
const ENTRY_PREFIX: u8 = b'e';
const SNAP_FILE: &str = "snapshot";
const SNAP_TMP: &str = "snapshot.tmp";

fn entry_key(index: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = ENTRY_PREFIX;
    k[1..].copy_from_slice(&index.to_be_bytes());
    k
}

/// Counts fsync-family calls and, for tests run with fault injection, fails them after a
/// number of successes (to check that a replica whose disk fails exits).
#[derive(Debug, Default)]
pub struct SyncCounter {
    count: AtomicU64,
    fail_after: Option<u64>,
}

impl SyncCounter {
    /// `fail_after`: every sync after this many succeeds fails with EIO (None: never).
    pub fn new(fail_after: Option<u64>) -> Arc<Self> {
        Arc::new(SyncCounter {
            count: AtomicU64::new(0),
            fail_after,
        })
    }

    fn sync(&self, f: &File, path: &Path) -> Result<()> {
        let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        if self.fail_after.is_some_and(|k| n > k) {
            return Err(StorageError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::other("fsync failed (injected fault: EIO)"),
            });
        }
        f.sync_all().map_err(|source| StorageError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// Writes snapshot files atomically and compacts the log below them; cheap to clone,
/// usable from any thread (the Raft loop runs it on a builder thread, so neither the
/// serialisation nor the deletion of thousands of compacted entries stalls the loop).
#[derive(Clone)]
pub struct SnapshotWriter {
    dir: PathBuf,
    syncs: Arc<SyncCounter>,
    /// The log's tree (sled handles are shared and thread-safe); None: nothing to compact.
    db: Option<sled::Db>,
    /// Index of the snapshot file on disk. Held while writing, so a locally built snapshot
    /// and one installed from the leader never interleave, and an older one never replaces
    /// a newer one.
    on_disk: Arc<std::sync::Mutex<u64>>,
}

impl SnapshotWriter {
    /// Write the snapshot at (`index`, `term`) with `data` as the current snapshot file:
    /// temp file, fsync, rename over the old one, fsync the directory. Returns it.
    pub fn write(&self, index: u64, term: u64, cs: ConfState, data: Vec<u8>) -> Result<Snapshot> {
        let mut snap = Snapshot::default();
        snap.set_data(data.into());
        let meta = snap.mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(cs);
        if !self.save(&snap)? {
            return Err(StorageError::Invalid(format!(
                "snapshot {index} not written: a newer one was installed meanwhile"
            )));
        }
        Ok(snap)
    }

    /// Drop every entry at or below `upto` (whose term is `term`) from the stored log, in
    /// one batch with the new compaction point. Not synced: entries that reappear after a
    /// crash are below a durable snapshot and ignored by `load`. Entries at or below a
    /// snapshot are committed and applied, so the Raft loop never writes them concurrently.
    pub fn compact(&self, upto: u64, term: u64) -> Result<()> {
        let Some(db) = &self.db else {
            return Ok(());
        };
        // The compaction point first: `load` ignores entries at or below it, so a crash in
        // the middle leaves only garbage that the next compaction deletes.
        db.insert(K_COMPACTED, compacted_value(upto, term).as_slice())?;
        // Then small batches: a sled batch holds a lock every writer (the Raft loop's
        // appends included) waits for, and one batch of 10,000 removals was a latency spike.
        let keys: Vec<sled::IVec> = db
            .range(entry_key(0)..=entry_key(upto))
            .keys()
            .collect::<Result<_, _>>()?;
        for chunk in keys.chunks(128) {
            let mut batch = sled::Batch::default();
            for k in chunk {
                batch.remove(k.clone());
            }
            db.apply_batch(batch)?;
        }
        // Write the pages this dirtied here, so the Raft loop's next durable flush does not
        // have to (it would stall every write behind them).
        db.flush()?;
        Ok(())
    }

    /// Write `snap` as the snapshot file unless a newer one is there; true when written.
    fn save(&self, snap: &Snapshot) -> Result<bool> {
        let mut on_disk = self.on_disk.lock().expect("snapshot file lock");
        let index = snap.get_metadata().index;
        if index < *on_disk {
            return Ok(false);
        }
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StorageError::Io { path, source }
        };
        let tmp = self.dir.join(SNAP_TMP);
        let dst = self.dir.join(SNAP_FILE);
        {
            let mut f = File::create(&tmp).map_err(io(&tmp))?;
            f.write_all(&encode(snap)).map_err(io(&tmp))?;
            self.syncs.sync(&f, &tmp)?;
        }
        std::fs::rename(&tmp, &dst).map_err(io(&dst))?;
        let d = File::open(&self.dir).map_err(io(&self.dir))?;
        self.syncs.sync(&d, &self.dir)?;
        *on_disk = index;
        Ok(true)
    }

    fn load(&self) -> Result<Option<Snapshot>> {
        let path = self.dir.join(SNAP_FILE);
        match std::fs::read(&path) {
            Ok(b) => Snapshot::parse_from_bytes(&b)
                .map(|s| {
                    *self.on_disk.lock().expect("snapshot file lock") = s.get_metadata().index;
                    Some(s)
                })
                .map_err(|e| StorageError::Corrupt {
                    key: path.display().to_string(),
                    reason: e.to_string(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StorageError::Io { path, source }),
        }
    }
}

/// [`LogBackend`] on sled 0.34: one tree, entries under `e<index BE>`, metadata under `m/*`,
/// so entries and hard state go into a single atomic `Batch`; the snapshot in a file.
pub struct SledBackend {
    db: sled::Db,
    dir: PathBuf,
    /// sled's data file, fsynced at every durable point.
    data_file: File,
    /// Blob files already fsynced (sled never rewrites a blob file in place).
    synced_blobs: HashSet<std::ffi::OsString>,
    snapshots: SnapshotWriter,
    syncs: Arc<SyncCounter>,
    last_fsync: Duration,
}

/// Open sled in `dir`. sled releases its file lock from a background thread some time after
/// the last handle of a previous open in this process is dropped, so an immediate reopen in the
/// same process (a restore followed by a start, the tests) can find the lock still held; that
/// case is retried for a few seconds. A lock held by another process is reported as before.
fn open_sled(dir: &Path) -> Result<sled::Db> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            // Durability comes from our own flush + fsync; sled's background flusher would
            // only add sync_file_range calls between them.
            .flush_every_ms(None)
            .open();
        match r {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            r => return Ok(r?),
        }
    }
}

impl SledBackend {
    /// Open (or create) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_with(dir, SyncCounter::new(None))
    }

    /// Open with a given sync counter (its fault setting is used by the fault tests).
    pub fn open_with(dir: &Path, syncs: Arc<SyncCounter>) -> Result<Self> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StorageError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let db = open_sled(dir)?;
        db.flush()?;
        let data_path = dir.join("db");
        let data_file = File::open(&data_path).map_err(io(&data_path))?;
        let mut me = SledBackend {
            db: db.clone(),
            dir: dir.to_path_buf(),
            data_file,
            synced_blobs: HashSet::new(),
            snapshots: SnapshotWriter {
                dir: dir.to_path_buf(),
                syncs: syncs.clone(),
                db: Some(db.clone()),
                on_disk: Default::default(),
            },
            syncs,
            last_fsync: Duration::ZERO,
        };
        // Everything sled created at open (config file, data file, directory entries) is
        // made durable once here; afterwards only what changes is synced.
        for name in ["conf", "db"] {
            let p = dir.join(name);
            if let Ok(f) = File::open(&p) {
                me.syncs.sync(&f, &p)?;
            }
        }
        me.sync_new_blobs()?;
        let d = File::open(dir).map_err(io(dir))?;
        me.syncs.sync(&d, dir)?;
        me.upgrade_old_snapshot()?;
        Ok(me)
    }

    /// Stores written before snapshots moved to a file keep them in the tree: move it out.
    fn upgrade_old_snapshot(&mut self) -> Result<()> {
        let Some(meta) = self.get_msg::<SnapshotMetadata>(K_OLD_SNAP_META)? else {
            return Ok(());
        };
        let data = self.db.get(K_OLD_SNAP_DATA)?.unwrap_or_default();
        let mut snap = Snapshot::default();
        snap.set_data(data.to_vec().into());
        snap.set_metadata(meta.clone());
        self.snapshots.save(&snap)?;
        let mut batch = sled::Batch::default();
        batch.remove(K_OLD_SNAP_META);
        batch.remove(K_OLD_SNAP_DATA);
        batch.insert(
            K_COMPACTED,
            compacted_value(meta.index, meta.term).as_slice(),
        );
        self.db.apply_batch(batch)?;
        self.durable()
    }

    /// fsync blob files sled created since the last call (and their directory).
    fn sync_new_blobs(&mut self) -> Result<()> {
        let blobs = self.dir.join("blobs");
        let Ok(rd) = std::fs::read_dir(&blobs) else {
            return Ok(());
        };
        let mut any = false;
        let present: Vec<_> = rd.flatten().map(|e| e.file_name()).collect();
        for name in &present {
            if self.synced_blobs.contains(name) {
                continue;
            }
            let p = blobs.join(name);
            // A blob sled removed meanwhile needs no sync.
            if let Ok(f) = File::open(&p) {
                self.syncs.sync(&f, &p)?;
                any = true;
            }
            self.synced_blobs.insert(name.clone());
        }
        // Forget names sled deleted, so the set stays bounded.
        let now: HashSet<_> = present.into_iter().collect();
        self.synced_blobs.retain(|n| now.contains(n));
        if any {
            if let Ok(d) = File::open(&blobs) {
                self.syncs.sync(&d, &blobs)?;
            }
        }
        Ok(())
    }

    /// Flush sled, then fsync what it wrote. This is the durability point.
    fn durable(&mut self) -> Result<()> {
        self.db.flush()?;
        let start = Instant::now();
        let p = self.dir.join("db");
        self.syncs.sync(&self.data_file, &p)?;
        self.sync_new_blobs()?;
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
}

fn compacted_value(index: u64, term: u64) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&index.to_be_bytes());
    v[8..].copy_from_slice(&term.to_be_bytes());
    v
}

fn encode<M: protobuf::Message>(m: &M) -> Vec<u8> {
    m.write_to_bytes()
        .expect("encoding a raft protobuf message cannot fail")
}

impl LogBackend for SledBackend {
    fn load(&self) -> Result<Loaded> {
        let hard_state: HardState = self.get_msg(K_HARD)?.unwrap_or_default();
        let conf_state: ConfState = self.get_msg(K_CONF)?.unwrap_or_default();
        let snapshot = self.snapshots.load()?.unwrap_or_default();
        let (si, st) = (snapshot.get_metadata().index, snapshot.get_metadata().term);
        let compacted = self
            .db
            .get(K_COMPACTED)?
            .and_then(|v| {
                let b: [u8; 16] = v.as_ref().try_into().ok()?;
                Some((
                    u64::from_be_bytes(b[..8].try_into().ok()?),
                    u64::from_be_bytes(b[8..].try_into().ok()?),
                ))
            })
            .unwrap_or((si, st));
        let mut entries: Vec<Entry> = Vec::new();
        for kv in self
            .db
            .range(entry_key(compacted.0 + 1)..=entry_key(u64::MAX))
        {
            let (k, v) = kv?;
            let e = Entry::parse_from_bytes(&v).map_err(|e| StorageError::Corrupt {
                key: format!("entry {:?}", &k[..]),
                reason: e.to_string(),
            })?;
            if let Some(last) = entries.last() {
                if e.index != last.index + 1 {
                    return Err(StorageError::Corrupt {
                        key: format!("entry {}", e.index),
                        reason: format!("gap after {}", last.index),
                    });
                }
            }
            entries.push(e);
        }
        // The log must connect to the snapshot: hold the snapshot's entry with its term, or
        // start right after it. Otherwise (a crash while installing a leader's snapshot)
        // the old log is not part of the snapshot's history: drop it.
        let connects = match entries.first() {
            None => true,
            Some(f) if f.index > si => f.index == si + 1 && compacted.0 <= si,
            Some(f) => entries
                .get((si - f.index) as usize)
                .is_some_and(|e| e.term == st),
        };
        let (compacted, entries) = if connects {
            (compacted, entries)
        } else {
            ((si, st), Vec::new())
        };
        let applied = self
            .db
            .get(K_APPLIED)?
            .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(0);
        Ok(Loaded {
            hard_state,
            conf_state,
            snapshot,
            compacted,
            entries,
            applied,
        })
    }

    fn append(
        &mut self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
        sync: bool,
    ) -> Result<()> {
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
        if sync {
            self.durable()?;
        }
        Ok(())
    }

    fn install_snapshot(&mut self, snapshot: &Snapshot, hard_state: &HardState) -> Result<()> {
        // The file first: if we crash before the batch, load() finds a log that does not
        // connect to the new snapshot and drops it.
        self.snapshots.save(snapshot)?;
        let meta = snapshot.get_metadata();
        let mut batch = sled::Batch::default();
        self.remove_entries_from(&mut batch, 0)?;
        batch.insert(K_CONF, encode(meta.get_conf_state()));
        batch.insert(K_HARD, encode(hard_state));
        batch.insert(K_APPLIED, &meta.index.to_be_bytes());
        batch.insert(
            K_COMPACTED,
            compacted_value(meta.index, meta.term).as_slice(),
        );
        self.db.apply_batch(batch)?;
        self.durable()
    }

    fn compact(&mut self, upto: u64, term: u64) -> Result<()> {
        self.snapshots.compact(upto, term)
    }

    fn set_conf_state(&mut self, conf_state: &ConfState) -> Result<()> {
        self.db.insert(K_CONF, encode(conf_state))?;
        self.durable()
    }

    fn set_applied(&mut self, applied: u64) -> Result<()> {
        self.db.insert(K_APPLIED, &applied.to_be_bytes())?;
        Ok(())
    }

    fn snapshot_writer(&self) -> SnapshotWriter {
        self.snapshots.clone()
    }

    fn last_fsync(&self) -> Duration {
        self.last_fsync
    }

    fn fsync_count(&self) -> u64 {
        self.syncs.count()
    }
}

/// [`raft::Storage`] over a [`LogBackend`]: writes go through the backend (durable), reads
/// come from an in-memory mirror of the uncompacted log.
pub struct RaftStore {
    backend: Box<dyn LogBackend>,
    hard_state: HardState,
    conf_state: ConfState,
    snapshot: Snapshot,
    /// (index, term) of the last compacted entry; entries[i].index == compacted.0 + 1 + i.
    compacted: (u64, u64),
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
        let mut hard_state = l.hard_state;
        // The commit index is at least the snapshot's (it may have been written without a
        // sync, or not at all when the snapshot file landed before the batch).
        let si = l.snapshot.get_metadata().index;
        hard_state.commit = hard_state.commit.max(si);
        hard_state.term = hard_state.term.max(l.snapshot.get_metadata().term);
        Ok(RaftStore {
            backend,
            hard_state,
            conf_state: l.conf_state,
            snapshot: l.snapshot,
            compacted: l.compacted,
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
        self.bootstrap_at(voters, data, 1)
    }

    /// [`RaftStore::bootstrap`] with the initial snapshot at `index` (an offline restore
    /// continues the log numbering of the cluster the snapshot came from).
    pub fn bootstrap_at(&mut self, voters: Vec<u64>, data: Vec<u8>, index: u64) -> Result<()> {
        let index = index.max(1);
        let mut snap = Snapshot::default();
        let meta = snap.mut_metadata();
        meta.index = index;
        meta.term = 1;
        meta.mut_conf_state().voters = voters;
        snap.set_data(data.into());
        let hs = HardState {
            term: 1,
            commit: index,
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
    pub fn fsync_count(&self) -> u64 {
        self.backend.fsync_count()
    }
    pub fn log_len(&self) -> usize {
        self.entries.len()
    }
    pub fn snapshot_writer(&self) -> SnapshotWriter {
        self.backend.snapshot_writer()
    }

    fn snap_index(&self) -> u64 {
        self.snapshot.get_metadata().index
    }
    fn first(&self) -> u64 {
        self.compacted.0 + 1
    }
    fn last(&self) -> u64 {
        self.entries
            .last()
            .map(|e| e.index)
            .unwrap_or(self.compacted.0)
            .max(self.snap_index())
    }

    /// Append entries and/or the hard state (one batch); durable when `sync`.
    pub fn append(&mut self, entries: &[Entry], hs: Option<&HardState>, sync: bool) -> Result<()> {
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
        if entries.is_empty() && !sync {
            // Only the commit index moved: keep it in memory (it is written with the next
            // synced hard state, and re-learnt from the leader after a crash). Every sled
            // write costs a sync_file_range of its own, so this is not written at all.
            if let Some(hs) = hs {
                self.hard_state = hs.clone();
            }
            return Ok(());
        }
        self.backend.append(entries, hs, sync)?;
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
        self.compacted = (meta.index, meta.term);
        self.entries.clear();
        self.snapshot = snap;
        Ok(())
    }

    /// Where a snapshot at `index` compacts the log to, keeping `keep` entries below it
    /// (the catch-up margin): (index, term), or None when nothing is to be dropped.
    pub fn compaction_point(&self, index: u64, keep: u64) -> Option<(u64, u64)> {
        let upto = index.saturating_sub(keep);
        if upto <= self.compacted.0 || upto > self.last() {
            return None;
        }
        raft::Storage::term(self, upto).ok().map(|t| (upto, t))
    }

    /// Adopt a snapshot whose file is durable and whose compaction up to `compacted` the
    /// builder already did on disk: update the in-memory mirror only.
    pub fn adopt_built_snapshot(&mut self, snap: Snapshot, compacted: Option<(u64, u64)>) {
        if snap.get_metadata().index <= self.snap_index() {
            return;
        }
        self.snapshot = snap;
        if let Some((upto, term)) = compacted {
            if upto > self.compacted.0 {
                let drop = (upto - self.compacted.0) as usize;
                self.entries.drain(..drop.min(self.entries.len()));
                self.compacted = (upto, term);
            }
        }
    }

    /// Adopt a snapshot written by [`SnapshotWriter`] (its file is durable) and compact the
    /// log up to `keep` entries below it (the catch-up margin), on this thread.
    pub fn adopt_snapshot(&mut self, snap: Snapshot, keep: u64) -> Result<()> {
        let index = snap.get_metadata().index;
        if index <= self.snap_index() {
            return Ok(());
        }
        self.snapshot = snap;
        let upto = index.saturating_sub(keep);
        if upto > self.compacted.0 && upto <= self.last() {
            let term = raft::Storage::term(self, upto)
                .map_err(|e| StorageError::Invalid(format!("term of {upto}: {e}")))?;
            self.backend.compact(upto, term)?;
            let drop = (upto - self.compacted.0) as usize;
            self.entries.drain(..drop.min(self.entries.len()));
            self.compacted = (upto, term);
        }
        Ok(())
    }

    /// Make a snapshot at `index` (must be applied locally) with `data` on this thread, and
    /// compact the log up to it (no margin). Used by tests and tools.
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
        let snap = self
            .backend
            .snapshot_writer()
            .write(index, term, conf_state, data)?;
        self.adopt_snapshot(snap, 0)
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
        if idx == self.snap_index() {
            return Ok(self.snapshot.get_metadata().term);
        }
        if idx == self.compacted.0 {
            return Ok(self.compacted.1);
        }
        if idx < self.compacted.0 {
            return Err(raft::Error::Store(RaftStorageError::Compacted));
        }
        match self.entries.get((idx - self.compacted.0 - 1) as usize) {
            Some(e) => Ok(e.term),
            None if idx < self.snap_index() => Err(raft::Error::Store(RaftStorageError::Compacted)),
            None => Err(raft::Error::Store(RaftStorageError::Unavailable)),
        }
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
            s.append(&[ent(2, 2), ent(3, 2), ent(4, 2)], Some(&hs), true)
                .unwrap();
            // a conflicting suffix replaces 4..
            s.append(&[ent(4, 3), ent(5, 3)], None, true).unwrap();
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
            s.append(&ents, None, true).unwrap();
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
            s.append(&[ent(2, 1), ent(3, 1)], None, true).unwrap();
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

    #[test]
    fn only_must_sync_writes_are_fsynced_and_only_the_data_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(dir.path());
        s.bootstrap(vec![1], vec![]).unwrap();
        let base = s.fsync_count();
        // New entries + term: must sync. One fsync: sled's data file (no new blob, no dir).
        let mut hs = s.hard_state().clone();
        hs.term = 2;
        s.append(&[ent(2, 2)], Some(&hs), true).unwrap();
        assert_eq!(s.fsync_count() - base, 1);
        // Only the commit index moved: kept in memory, neither written nor synced.
        hs.commit = 2;
        s.append(&[], Some(&hs), false).unwrap();
        assert_eq!(s.fsync_count() - base, 1);
        assert_eq!(s.hard_state().commit, 2);
        // Ten single-entry appends: ten fsyncs (one per entry), not 3 per entry as before.
        for i in 3..13 {
            s.append(&[ent(i, 2)], None, true).unwrap();
        }
        assert_eq!(s.fsync_count() - base, 11);
        drop(s);
        let s = open(dir.path());
        assert_eq!(s.last_index().unwrap(), 12);
        // The unsynced commit index is re-learnt from the leader; term and vote are durable.
        assert_eq!(s.hard_state().commit, 1);
        assert_eq!(s.hard_state().term, 2);
    }

    #[test]
    fn snapshot_lives_in_its_own_file_and_a_margin_of_log_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = open(dir.path());
            s.bootstrap(vec![1], vec![]).unwrap();
            let ents: Vec<_> = (2..=30).map(|i| ent(i, 1)).collect();
            s.append(&ents, None, true).unwrap();
            let w = s.snapshot_writer();
            let snap = w
                .write(25, 1, s.conf_state().clone(), vec![7u8; 100_000])
                .unwrap();
            s.adopt_snapshot(snap, 10).unwrap();
            // Compacted up to 15: 16..=30 still served from the log.
            assert_eq!(s.first_index().unwrap(), 16);
            assert_eq!(s.term(15).unwrap(), 1);
            assert_eq!(s.term(25).unwrap(), 1);
            assert!(s
                .entries(16, 31, None, GetEntriesContext::empty(false))
                .is_ok());
        }
        // The snapshot is a file; no temp file is left behind.
        assert!(dir.path().join(SNAP_FILE).exists());
        assert!(!dir.path().join(SNAP_TMP).exists());
        let s = open(dir.path());
        assert_eq!(s.latest_snapshot().get_metadata().index, 25);
        assert_eq!(s.latest_snapshot().get_data().len(), 100_000);
        assert_eq!(s.first_index().unwrap(), 16);
        assert_eq!(s.last_index().unwrap(), 30);
    }

    #[test]
    fn a_crash_while_installing_a_snapshot_drops_the_old_log() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = open(dir.path());
            s.bootstrap(vec![1, 2], vec![]).unwrap();
            s.append(&[ent(2, 1), ent(3, 1)], None, true).unwrap();
            // The leader's snapshot file lands, then the replica dies before the batch.
            let mut snap = Snapshot::default();
            snap.mut_metadata().index = 20;
            snap.mut_metadata().term = 4;
            snap.mut_metadata().mut_conf_state().voters = vec![1, 2];
            s.snapshot_writer().save(&snap).unwrap();
        }
        let s = open(dir.path());
        assert_eq!(s.first_index().unwrap(), 21);
        assert_eq!(s.last_index().unwrap(), 20);
        assert_eq!(s.hard_state().commit, 20);
    }

    #[test]
    fn a_failing_fsync_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let b = SledBackend::open_with(dir.path(), SyncCounter::new(Some(3))).unwrap();
        let mut s = RaftStore::open(Box::new(b)).unwrap();
        // Opening used the 3 allowed syncs (conf, db, dir); the next durable write fails.
        let e = s.bootstrap(vec![1], vec![]).unwrap_err();
        assert!(e.to_string().contains("fsync failed"), "{e}");
    }
}
