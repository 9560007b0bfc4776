//! The driver: N closed-loop clients, each on its own connection, for a fixed time, with a
//! warm-up that is not recorded. Identical for both systems.

use std::time::{Duration, Instant};

use edgeplane_scheduler::latency::Latencies;
use serde_json::json;

use crate::client::Client;
use crate::cluster::{endpoint, System};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Write,
    Read,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Write => "write",
            Op::Read => "read",
        }
    }
}

/// What one (system, op, clients) run measured.
pub struct Outcome {
    pub system: System,
    pub op: Op,
    pub clients: usize,
    pub ok: u64,
    pub errors: u64,
    pub seconds: f64,
    /// Latency of successful operations.
    pub hist: Latencies,
}

impl Outcome {
    pub fn ops_per_s(&self) -> f64 {
        self.ok as f64 / self.seconds
    }
    pub fn ms(&self, q: f64) -> f64 {
        self.hist.quantile_ms(q)
    }
    pub fn json(&self) -> serde_json::Value {
        json!({"system": self.system.name(), "op": self.op.name(), "clients": self.clients,
               "ok": self.ok, "errors": self.errors, "seconds": self.seconds,
               "ops_per_s": self.ops_per_s(), "p50_ms": self.ms(0.5), "p99_ms": self.ms(0.99),
               "p999_ms": self.ms(0.999), "max_ms": self.hist.max_ms()})
    }
}

fn key(i: usize) -> String {
    format!("bench-{i}")
}

/// Makes sure every client's key exists, so reads find something.
pub async fn populate(system: System, url: &str, clients: usize) -> anyhow::Result<()> {
    let ch = endpoint(url)?.connect().await?;
    let mut c = Client::new(system, ch);
    for i in 0..clients {
        c.write(&key(i), 1).await?;
    }
    Ok(())
}

pub async fn run(
    system: System,
    url: &str,
    op: Op,
    clients: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<Outcome> {
    let ep = endpoint(url)?;
    let mut conns = Vec::with_capacity(clients);
    for _ in 0..clients {
        conns.push(ep.connect().await?);
    }
    let start = Instant::now() + warmup;
    let end = start + duration;
    let mut tasks = Vec::with_capacity(clients);
    for (i, ch) in conns.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let mut c = Client::new(system, ch);
            let mut hist = Latencies::default();
            let (mut ok, mut errors, mut value) = (0u64, 0u64, 0u64);
            let k = key(i);
            loop {
                let t = Instant::now();
                if t >= end {
                    break;
                }
                value += 1;
                let r = match op {
                    Op::Write => c.write(&k, value).await.map(|_| true),
                    Op::Read => c.read(&k).await,
                };
                let done = Instant::now();
                if t < start {
                    continue;
                }
                match r {
                    Ok(true) => {
                        ok += 1;
                        hist.record(done - t);
                    }
                    Ok(false) | Err(_) => errors += 1,
                }
            }
            (hist, ok, errors)
        }));
    }
    let mut hist = Latencies::default();
    let (mut ok, mut errors) = (0, 0);
    for t in tasks {
        let (h, o, e) = t.await?;
        hist.merge(&h);
        ok += o;
        errors += e;
    }
    Ok(Outcome {
        system,
        op,
        clients,
        ok,
        errors,
        seconds: duration.as_secs_f64(),
        hist,
    })
}
