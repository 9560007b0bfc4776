//! raft-rs logs through slog; this drain forwards every record to `tracing` (target
//! `raft`), with slog's key/values rendered as one `kv` field.

use std::fmt;

use slog::{Drain, Key, OwnedKVList, Record, Serializer, KV};

struct KvString(String);

impl Serializer for KvString {
    fn emit_arguments(&mut self, key: Key, val: &fmt::Arguments) -> slog::Result {
        use std::fmt::Write as _;
        let _ = write!(self.0, " {key}={val}");
        Ok(())
    }
}

/// A slog drain that forwards to tracing.
pub struct TracingDrain;

impl Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record, values: &OwnedKVList) -> Result<(), slog::Never> {
        let mut kv = KvString(String::new());
        let _ = record.kv().serialize(record, &mut kv);
        let _ = values.serialize(record, &mut kv);
        let msg = record.msg();
        let kv = kv.0;
        match record.level() {
            slog::Level::Critical | slog::Level::Error => {
                tracing::error!(target: "raft", kv = %kv, "{msg}")
            }
            slog::Level::Warning => tracing::warn!(target: "raft", kv = %kv, "{msg}"),
            slog::Level::Info => tracing::info!(target: "raft", kv = %kv, "{msg}"),
            slog::Level::Debug => tracing::debug!(target: "raft", kv = %kv, "{msg}"),
            slog::Level::Trace => tracing::trace!(target: "raft", kv = %kv, "{msg}"),
        }
        Ok(())
    }
}

/// The logger handed to raft-rs.
pub fn raft_logger(id: u64) -> slog::Logger {
    slog::Logger::root(TracingDrain.fuse(), slog::o!("raft_id" => id))
}
