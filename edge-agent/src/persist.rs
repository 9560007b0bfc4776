//! The last assignment, persisted in the data dir so a restarted agent serves it again
//! before (or without) reaching the coordinator.
//!
//! Written crash-safely: temp file, fsync, rename over the old file, fsync of the directory.
//! A crash leaves either the old or the new file, never a torn one.

use edgeplane_proto::agent::Assignment;
use prost::Message;
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
}

const FILE: &str = "assignment.pb";

pub struct AssignmentStore {
    dir: PathBuf,
}

impl AssignmentStore {
    pub fn open(dir: &Path) -> Result<Self, PersistError> {
        std::fs::create_dir_all(dir).map_err(|source| PersistError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(AssignmentStore {
            dir: dir.to_path_buf(),
        })
    }

    /// The persisted assignment, if any.
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

    pub fn save(&self, a: &Assignment) -> Result<(), PersistError> {
        let tmp = self.dir.join(format!("{FILE}.tmp"));
        let path = self.dir.join(FILE);
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| PersistError::Io { path, source }
        };
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&a.encode_to_vec()).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        drop(f);
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.dir))?;
        Ok(())
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
        let again = AssignmentStore::open(dir.path()).unwrap();
        assert_eq!(again.load().unwrap(), Some(a));
    }

    #[test]
    fn corrupt_file_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), [0xff, 0xff, 0xff]).unwrap();
        let s = AssignmentStore::open(dir.path()).unwrap();
        assert!(matches!(s.load(), Err(PersistError::Decode { .. })));
    }
}
