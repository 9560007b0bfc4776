//! The agent's data dir: the last assignment (so a restarted agent serves it again before,
//! or without, reaching the coordinator), the node name it belongs to, and the counters of
//! work done (so work done while cut off survives a restart).
//!
//! - One agent per data dir: an exclusive advisory lock on `<dir>/LOCK`, held for the
//!   process's life ([`DataDir::open`] fails with [`PersistError::Locked`] otherwise).
//! - `<dir>/node`: the node name the dir was created for. A different `--name` on the same
//!   dir is refused ([`PersistError::NameMismatch`]): the assignment and counters belong to
//!   the other node.
//! - Every file is written crash-safely: temp file, fsync, rename over the old file, fsync
//!   of the directory. A crash leaves either the old or the new file, never a torn one.
//! - A persisted assignment that does not decode (disk corruption, a file from another
//!   program) is reported and set aside (renamed `assignment.pb.corrupt-<unix secs>`): the
//!   agent starts without one and the coordinator pushes the current plan.

use edgeplane_proto::agent::Assignment;
use prost::Message;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("data dir {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is corrupt: {source}")]
    Decode {
        path: PathBuf,
        source: prost::DecodeError,
    },
    #[error(
        "data dir {dir} is in use by another agent (lock {lock} is held); stop that agent or \
         give this one its own --data-dir"
    )]
    Locked { dir: PathBuf, lock: PathBuf },
    #[error(
        "data dir {dir} belongs to node {stored:?}, not {name:?}: its assignment and counters \
         are that node's. Start with --name {stored} or give this node its own --data-dir"
    )]
    NameMismatch {
        dir: PathBuf,
        stored: String,
        name: String,
    },
}

const FILE: &str = "assignment.pb";
const LOCK: &str = "LOCK";
const NODE: &str = "node";
const COUNTERS: &str = "counters.json";

/// Totals of one model, as persisted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelCounters {
    pub arrivals: u64,
    pub completions: u64,
    pub met: u64,
    pub missed: u64,
    pub drops: u64,
    /// Requests refused (model not assigned here); absent in counters written before it.
    #[serde(default)]
    pub refused: u64,
    pub energy_mj: f64,
}

/// Totals of one accelerator, as persisted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AccCounters {
    pub busy_ms: f64,
    pub energy_mj: f64,
}

/// The monotone counters reported to the coordinator, with the uptime they were reached
/// at (reports carry `uptime_base_s + this process's uptime`, so a restart does not look
/// like a counter reset to the coordinator and nothing is counted twice).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    pub uptime_s: f64,
    pub models: BTreeMap<String, ModelCounters>,
    pub accelerators: BTreeMap<String, AccCounters>,
}

/// The agent's data dir, locked for this process.
pub struct DataDir {
    dir: PathBuf,
    /// Held (locked) until drop.
    _lock: std::fs::File,
    /// Where a corrupt assignment was set aside at open, if it was.
    set_aside: std::sync::Mutex<Option<PathBuf>>,
}

/// The former name; kept so callers and tests read naturally.
pub type AssignmentStore = DataDir;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PersistError {
    let path = path.to_path_buf();
    move |source| PersistError::Io { path, source }
}

/// Write `bytes` to `dir/name` crash-safely.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), PersistError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    Ok(())
}

impl DataDir {
    /// Create (if needed) and lock the data dir. Fails when another process holds it.
    pub fn open(dir: &Path) -> Result<Self, PersistError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let lock_path = dir.join(LOCK);
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        // fs4's flock-based lock (called by path: std's own `File::try_lock` is newer than
        // the workspace's minimum Rust version).
        match fs4::FileExt::try_lock(&lock) {
            Ok(()) => {}
            Err(fs4::TryLockError::WouldBlock) => {
                return Err(PersistError::Locked {
                    dir: dir.to_path_buf(),
                    lock: lock_path,
                })
            }
            Err(fs4::TryLockError::Error(e)) => return Err(io(&lock_path)(e)),
        }
        Ok(DataDir {
            dir: dir.to_path_buf(),
            _lock: lock,
            set_aside: std::sync::Mutex::new(None),
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Check the dir belongs to node `name`, recording the name on first use.
    pub fn claim(&self, name: &str) -> Result<(), PersistError> {
        let path = self.dir.join(NODE);
        match std::fs::read_to_string(&path) {
            Ok(stored) => {
                let stored = stored.trim();
                if stored != name {
                    return Err(PersistError::NameMismatch {
                        dir: self.dir.clone(),
                        stored: stored.to_string(),
                        name: name.to_string(),
                    });
                }
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                write_atomic(&self.dir, NODE, format!("{name}\n").as_bytes())
            }
            Err(source) => Err(PersistError::Io { path, source }),
        }
    }

    /// The persisted assignment, if any. A file that does not decode is an error here; see
    /// [`DataDir::load_or_set_aside`] for the start-up path.
    pub fn load(&self) -> Result<Option<Assignment>, PersistError> {
        let path = self.dir.join(FILE);
        match std::fs::read(&path) {
            Ok(bytes) => Assignment::decode(bytes.as_slice())
                .map(Some)
                .map_err(|source| PersistError::Decode { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(PersistError::Io { path, source }),
        }
    }

    /// The persisted assignment; a corrupt one is logged, renamed out of the way
    /// (`assignment.pb.corrupt-<unix secs>`) and treated as absent.
    pub fn load_or_set_aside(&self) -> Result<Option<Assignment>, PersistError> {
        match self.load() {
            Err(PersistError::Decode { path, source }) => {
                let secs = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let aside = self.dir.join(format!("{FILE}.corrupt-{secs}"));
                std::fs::rename(&path, &aside).map_err(io(&path))?;
                tracing::error!(
                    file = %path.display(),
                    moved_to = %aside.display(),
                    error = %source,
                    "the persisted assignment is corrupt: set aside; starting without one \
                     (the coordinator pushes the current plan on connect)"
                );
                *self.set_aside.lock().expect("set_aside lock") = Some(aside);
                Ok(None)
            }
            r => r,
        }
    }

    /// Where a corrupt assignment was moved at start-up, if one was.
    pub fn set_aside_path(&self) -> Option<PathBuf> {
        self.set_aside.lock().expect("set_aside lock").clone()
    }

    pub fn save(&self, a: &Assignment) -> Result<(), PersistError> {
        write_atomic(&self.dir, FILE, &a.encode_to_vec())
    }

    /// The persisted counters (zeros when none). A corrupt file is set aside like a
    /// corrupt assignment: counters are figures, not a reason to refuse to start.
    pub fn load_counters(&self) -> Result<Counters, PersistError> {
        let path = self.dir.join(COUNTERS);
        match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(c) => Ok(c),
                Err(e) => {
                    let aside = self.dir.join(format!("{COUNTERS}.corrupt"));
                    std::fs::rename(&path, &aside).map_err(io(&path))?;
                    tracing::error!(file = %path.display(), moved_to = %aside.display(), error = %e,
                        "the persisted counters are corrupt: set aside; counting from zero");
                    Ok(Counters::default())
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Counters::default()),
            Err(source) => Err(PersistError::Io { path, source }),
        }
    }

    pub fn save_counters(&self, c: &Counters) -> Result<(), PersistError> {
        let bytes = serde_json::to_vec(c).expect("counters serialize");
        write_atomic(&self.dir, COUNTERS, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgeplane_proto::agent::Partition;

    #[test]
    fn round_trip_and_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let s = AssignmentStore::open(dir.path()).unwrap();
        assert_eq!(s.load().unwrap(), None);
        let mut a = Assignment {
            epoch: 3,
            partitions: vec![Partition {
                accelerator_id: "npu0".into(),
                share_pct: 100,
                models: vec!["ES_RITNet".into()],
            }],
        };
        s.save(&a).unwrap();
        a.epoch = 4;
        s.save(&a).unwrap();
        drop(s);
        let again = AssignmentStore::open(dir.path()).unwrap();
        assert_eq!(again.load().unwrap(), Some(a));
    }

    #[test]
    fn corrupt_file_is_reported_and_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), [0xff, 0xff, 0xff]).unwrap();
        let s = AssignmentStore::open(dir.path()).unwrap();
        assert!(matches!(s.load(), Err(PersistError::Decode { .. })));
        assert_eq!(s.load_or_set_aside().unwrap(), None);
        let aside = s.set_aside_path().expect("moved");
        assert_eq!(std::fs::read(&aside).unwrap(), vec![0xff, 0xff, 0xff]);
        assert!(!dir.path().join(FILE).exists());
        // The next start is clean.
        assert_eq!(s.load().unwrap(), None);
    }

    #[test]
    fn second_open_of_a_locked_dir_fails_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDir::open(dir.path()).unwrap();
        let e = DataDir::open(dir.path())
            .err()
            .expect("second open must fail");
        assert!(matches!(e, PersistError::Locked { .. }), "{e}");
        assert!(e.to_string().contains("--data-dir"), "{e}");
        drop(first);
        DataDir::open(dir.path()).expect("free again after the holder is gone");
    }

    #[test]
    fn the_dir_belongs_to_one_node_name() {
        let dir = tempfile::tempdir().unwrap();
        let d = DataDir::open(dir.path()).unwrap();
        d.claim("edge-a").unwrap();
        d.claim("edge-a").unwrap();
        let e = d.claim("edge-b").unwrap_err();
        assert!(matches!(e, PersistError::NameMismatch { .. }), "{e}");
        assert!(e.to_string().contains("edge-a"), "{e}");
    }

    #[test]
    fn counters_round_trip_and_corrupt_counters_start_from_zero() {
        let dir = tempfile::tempdir().unwrap();
        let d = DataDir::open(dir.path()).unwrap();
        assert_eq!(d.load_counters().unwrap(), Counters::default());
        let mut c = Counters {
            uptime_s: 12.5,
            ..Default::default()
        };
        c.models.insert(
            "m".into(),
            ModelCounters {
                arrivals: 9,
                met: 7,
                ..Default::default()
            },
        );
        d.save_counters(&c).unwrap();
        assert_eq!(d.load_counters().unwrap(), c);
        std::fs::write(dir.path().join(COUNTERS), b"{not json").unwrap();
        assert_eq!(d.load_counters().unwrap(), Counters::default());
        assert!(dir.path().join("counters.json.corrupt").exists());
    }
}
