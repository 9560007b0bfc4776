//! The workload: concurrent clients writing unique values to a few keys (model records; the
//! value is the model's `rate`) and reading them back linearizably, each operation through a
//! randomly chosen member. Seeded: the same seed gives the same choices (timing differs).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgeplane_proto::admin::{self as api, admin_client::AdminClient};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tonic::transport::Channel;
use tonic::Code;

use crate::history::{Clock, Op, OpKind, Outcome};

/// Workload shape.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    pub clients: usize,
    pub keys: usize,
    /// Share of writes among operations (the rest are linearizable reads).
    pub write_ratio: f64,
    /// How long a client waits for one answer before the outcome counts as unknown.
    pub op_timeout: Duration,
    /// Chance that a client retries a write with an unknown outcome under the same
    /// (client id, seq), through another member: exactly-once must hold.
    pub retry_unknown: f64,
    /// Stop after this many operations in total.
    pub max_ops: u64,
    pub seed: u64,
    /// Key names are `{prefix}-{i}` (unique per run so runs against one cluster do not mix).
    pub key_prefix: String,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        WorkloadConfig {
            clients: 12,
            keys: 6,
            write_ratio: 0.5,
            op_timeout: Duration::from_secs(2),
            retry_unknown: 0.5,
            max_ops: u64::MAX,
            seed: 1,
            key_prefix: "chaos".into(),
        }
    }
}

impl WorkloadConfig {
    pub fn validate(&self) -> Result<(), crate::Error> {
        let bad = |field, why: &str| {
            Err(crate::Error::Config {
                field,
                why: why.to_string(),
            })
        };
        if self.clients == 0 {
            return bad("clients", "must be >= 1");
        }
        if self.keys == 0 {
            return bad("keys", "must be >= 1");
        }
        if !(0.0..=1.0).contains(&self.write_ratio) {
            return bad("write_ratio", "must be within 0..=1");
        }
        if !(0.0..=1.0).contains(&self.retry_unknown) {
            return bad("retry_unknown", "must be within 0..=1");
        }
        if self.op_timeout.is_zero() {
            return bad("op_timeout", "must be > 0");
        }
        Ok(())
    }

    pub fn key_names(&self) -> Vec<String> {
        (0..self.keys)
            .map(|i| format!("{}-{i}", self.key_prefix))
            .collect()
    }
}

/// The members clients may talk to, shared with the fault schedule (which replaces members).
pub type Members = Arc<std::sync::RwLock<BTreeMap<u64, Channel>>>;

/// Live counters for progress display and for the fault schedule.
#[derive(Debug, Default)]
pub struct Counters {
    pub ops: AtomicU64,
    pub acked_writes: AtomicU64,
    pub unknown: AtomicU64,
    pub faults: AtomicU64,
    /// Reads only while set (an idle-writes window, e.g. right after a snapshot catch-up).
    pub quiet: AtomicBool,
    pub stop: AtomicBool,
}

/// Definite rejections: the request was refused before it could reach the log.
fn certainly_not_applied(c: Code) -> bool {
    matches!(
        c,
        Code::InvalidArgument
            | Code::NotFound
            | Code::FailedPrecondition
            | Code::PermissionDenied
            | Code::Unimplemented
            | Code::AlreadyExists
            | Code::Unauthenticated
    )
}

/// Run one client until stopped, the deadline passes or the shared op budget is spent.
#[allow(clippy::too_many_arguments)]
pub async fn client(
    index: usize,
    cfg: WorkloadConfig,
    members: Members,
    clock: Clock,
    deadline: Instant,
    counters: Arc<Counters>,
) -> Vec<Op> {
    let mut rng = ChaCha8Rng::seed_from_u64(
        cfg.seed
            .wrapping_mul(0x9e37_79b9)
            .wrapping_add(index as u64),
    );
    let keys = cfg.key_names();
    let mut client_id: u64 = rng.gen::<u64>() | 1;
    let mut seq = 0u64;
    let mut counter = 0u64;
    let mut ops = Vec::new();
    loop {
        if counters.stop.load(Ordering::Relaxed)
            || Instant::now() >= deadline
            || counters.ops.fetch_add(1, Ordering::Relaxed) >= cfg.max_ops
        {
            break;
        }
        let key = keys[rng.gen_range(0..keys.len())].clone();
        // The member set can change (member replace): pick from the current one.
        let view: Vec<(u64, Channel)> = members
            .read()
            .expect("members lock")
            .iter()
            .map(|(i, c)| (*i, c.clone()))
            .collect();
        let pick = |rng: &mut ChaCha8Rng| view[rng.gen_range(0..view.len())].clone();
        let (member, ch) = pick(&mut rng);
        let write = rng.gen_bool(cfg.write_ratio) && !counters.quiet.load(Ordering::Relaxed);
        if write {
            counter += 1;
            // Unique per run and exact as an f64 (< 2^53).
            let value = ((index as u64 + 1) << 32) | counter;
            seq += 1;
            let invoke = clock.now();
            let mut outcome;
            let mut revision = None;
            let mut via = member;
            match deploy(&ch, &key, value, client_id, seq, cfg.op_timeout).await {
                Ok(ix) => {
                    outcome = Outcome::Ok;
                    revision = Some(ix);
                }
                Err(Some(c)) if certainly_not_applied(c) => outcome = Outcome::Fail,
                Err(_) => outcome = Outcome::Unknown,
            }
            // Retry an unknown outcome under the same id: a duplicate must not apply twice.
            if outcome == Outcome::Unknown && rng.gen_bool(cfg.retry_unknown) {
                for _ in 0..2 {
                    let (v, vch) = pick(&mut rng);
                    via = v;
                    if let Ok(ix) = deploy(&vch, &key, value, client_id, seq, cfg.op_timeout).await
                    {
                        outcome = Outcome::Ok;
                        revision = Some(ix);
                        break;
                    }
                }
            }
            let complete = clock.now();
            match outcome {
                Outcome::Ok => {
                    counters.acked_writes.fetch_add(1, Ordering::Relaxed);
                }
                Outcome::Unknown => {
                    counters.unknown.fetch_add(1, Ordering::Relaxed);
                }
                Outcome::Fail => {}
            }
            ops.push(Op {
                client: client_id,
                key,
                kind: OpKind::Write(value),
                invoke,
                complete,
                outcome,
                revision,
                member: via,
            });
            if outcome == Outcome::Unknown {
                // The old id may still have a write in flight: continue as a new client.
                client_id = rng.gen::<u64>() | 1;
                seq = 0;
                // Do not spin on a member that refuses connections (killed, restarting).
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        } else {
            let invoke = clock.now();
            let r = get(&ch, &key, cfg.op_timeout).await;
            let complete = clock.now();
            let (kind, outcome, revision) = match r {
                Ok((v, rev)) => (OpKind::Read(v), Outcome::Ok, rev),
                Err(_) => {
                    counters.unknown.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    (OpKind::Read(None), Outcome::Unknown, None)
                }
            };
            ops.push(Op {
                client: client_id,
                key,
                kind,
                invoke,
                complete,
                outcome,
                revision,
                member,
            });
        }
    }
    ops
}

/// Deploy `key` with `rate = value`. Err(None): no answer in time.
pub async fn deploy(
    ch: &Channel,
    key: &str,
    value: u64,
    client_id: u64,
    seq: u64,
    timeout: Duration,
) -> Result<u64, Option<Code>> {
    let mut c = AdminClient::new(ch.clone());
    let req = api::DeployModelRequest {
        meta: Some(api::WriteMeta { client_id, seq }),
        name: key.to_string(),
        slo_ms: 25.0,
        rate: value as f64,
        memory_mb: 0,
    };
    match tokio::time::timeout(timeout, c.deploy_model(req)).await {
        Ok(Ok(r)) => Ok(r.into_inner().index),
        Ok(Err(s)) => Err(Some(s.code())),
        Err(_) => Err(None),
    }
}

/// Linearizable read of `key`: (value, revision). Absent keys read as `None`.
pub async fn get(
    ch: &Channel,
    key: &str,
    timeout: Duration,
) -> Result<(Option<u64>, Option<u64>), Option<Code>> {
    let mut c = AdminClient::new(ch.clone());
    let req = api::GetModelRequest {
        name: key.to_string(),
        stale: false,
    };
    match tokio::time::timeout(timeout, c.get_model(req)).await {
        Ok(Ok(r)) => {
            let r = r.into_inner();
            let rate = r.model.map(|m| m.rate).unwrap_or(0.0);
            if rate.fract() != 0.0 || rate < 1.0 {
                // Not a value this workload wrote (every write is an integer >= 1).
                return Ok((Some(u64::MAX), Some(r.applied_index)));
            }
            Ok((Some(rate as u64), Some(r.applied_index)))
        }
        Ok(Err(s)) if s.code() == Code::NotFound => Ok((None, None)),
        Ok(Err(s)) => Err(Some(s.code())),
        Err(_) => Err(None),
    }
}
