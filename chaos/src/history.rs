//! The history model: every operation a client ran, with invoke and complete times taken
//! from one monotonic clock, and what the client learned about its outcome.
//!
//! A register per key: writes store a unique value, reads return the value (or absent).

use std::time::{Duration, Instant};

/// A value written to a key. Values are unique per history (the workload guarantees it) so
/// a read identifies exactly one write. `0` is never written.
pub type Value = u64;

/// What the client knows about an operation's effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Acknowledged: took effect exactly once between invoke and complete.
    Ok,
    /// Certainly not applied (rejected before it could reach the log).
    Fail,
    /// Timeout, lost connection, ambiguous error: may take effect at any time after invoke,
    /// or never. The client that saw it continues under a new client id.
    Unknown,
}

/// The operation on one key's register.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpKind {
    Write(Value),
    /// The value read (`None`: the key was absent). Meaningful only when the outcome is Ok.
    Read(Option<Value>),
}

/// One operation as recorded by the workload.
#[derive(Debug, Clone, PartialEq)]
pub struct Op {
    /// Logical client (changes after an unknown outcome).
    pub client: u64,
    pub key: String,
    pub kind: OpKind,
    /// Nanoseconds since the history's clock started.
    pub invoke: u64,
    /// When the client got its answer (or gave up, for Unknown).
    pub complete: u64,
    pub outcome: Outcome,
    /// The applied index the answer reported (write: its log index; read: the state's
    /// applied index), when the member returned one.
    pub revision: Option<u64>,
    /// The member the request was sent to (0: unknown).
    pub member: u64,
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.kind {
            OpKind::Write(v) => format!("write {v}"),
            OpKind::Read(Some(v)) => format!("read -> {v}"),
            OpKind::Read(None) => "read -> absent".to_string(),
        };
        write!(
            f,
            "[{:>10.3} ms .. {:>10.3} ms] client {:#x} {} {:?} (member {}, revision {})",
            self.invoke as f64 / 1e6,
            self.complete as f64 / 1e6,
            self.client,
            what,
            self.outcome,
            self.member,
            self.revision
                .map(|r| r.to_string())
                .unwrap_or_else(|| "-".into()),
        )
    }
}

/// The one clock all clients of a run share.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    pub fn new() -> Self {
        Clock {
            start: Instant::now(),
        }
    }
    /// Nanoseconds since the clock started.
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }
    pub fn at(&self, ns: u64) -> Instant {
        self.start + Duration::from_nanos(ns)
    }
}

/// All operations of one run.
#[derive(Debug, Clone, Default)]
pub struct History {
    pub ops: Vec<Op>,
}

impl History {
    /// Keys in first-seen order.
    pub fn keys(&self) -> Vec<String> {
        let mut seen = std::collections::BTreeSet::new();
        let mut out = Vec::new();
        for o in &self.ops {
            if seen.insert(o.key.clone()) {
                out.push(o.key.clone());
            }
        }
        out
    }

    pub fn for_key<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a Op> + 'a {
        self.ops.iter().filter(move |o| o.key == key)
    }
}
