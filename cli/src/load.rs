//! `edgeplane load`: open-loop load generator against an edge agent's `Infer` API.
//!
//! Open loop means requests are sent on their schedule whether or not earlier ones have
//! answered (each is its own task), so a slow agent shows up as latency and misses rather
//! than as a lower offered rate. Inter-arrival times are Poisson (exponential) or fixed,
//! drawn from a seeded RNG, so a run is reproducible.

use clap::{Args, ValueEnum};
use edgeplane_proto::agent::{inference_client::InferenceClient, InferRequest, Outcome};
use rand::{Rng, SeedableRng};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Arrivals {
    Poisson,
    Fixed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Agent Inference address (host:port).
    #[arg(long)]
    pub agent: String,
    /// Model to request.
    #[arg(long)]
    pub model: String,
    /// Offered rate, requests/s.
    #[arg(long)]
    pub rate: f64,
    /// How long to send, in seconds.
    #[arg(long)]
    pub duration_s: f64,
    /// Relative deadline per request, ms (default: the model's period on the agent).
    #[arg(long)]
    pub slo_ms: Option<f64>,
    /// Inter-arrival distribution.
    #[arg(long, value_enum, default_value_t = Arrivals::Poisson)]
    pub arrivals: Arrivals,
    /// Payload bytes per request.
    #[arg(long, default_value_t = 0)]
    pub payload_bytes: usize,
    /// RNG seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// Results of one run.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct LoadReport {
    pub model: String,
    pub offered_rate: f64,
    pub duration_s: f64,
    pub sent: u64,
    pub completed: u64,
    pub met: u64,
    pub missed: u64,
    pub dropped: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub first_error: Option<String>,
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn validate(a: &LoadArgs) -> anyhow::Result<()> {
    if !a.rate.is_finite() || a.rate <= 0.0 || a.rate > 100_000.0 {
        anyhow::bail!("--rate: must be a number in (0, 100000], got {}", a.rate);
    }
    if !a.duration_s.is_finite() || a.duration_s <= 0.0 || a.duration_s > 86_400.0 {
        anyhow::bail!("--duration-s: must be in (0, 86400], got {}", a.duration_s);
    }
    if let Some(s) = a.slo_ms {
        if !s.is_finite() || s <= 0.0 {
            anyhow::bail!("--slo-ms: must be a positive number, got {s}");
        }
    }
    if a.model.is_empty() {
        anyhow::bail!("--model: must not be empty");
    }
    Ok(())
}

pub async fn load(a: LoadArgs) -> anyhow::Result<()> {
    validate(&a)?;
    let r = run(&a).await?;
    match a.format {
        Format::Json => println!("{}", serde_json::to_string(&r)?),
        Format::Table => {
            println!(
                "model {}  offered {:.1}/s for {:.1}s",
                r.model, r.offered_rate, r.duration_s
            );
            println!(
                "sent {}  completed {}  met {}  missed {}  dropped {}  errors {}",
                r.sent, r.completed, r.met, r.missed, r.dropped, r.errors
            );
            println!(
                "latency p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms",
                r.p50_ms, r.p99_ms, r.p999_ms
            );
            if let Some(e) = &r.first_error {
                println!("first error: {e}");
            }
        }
    }
    if r.sent > 0 && r.errors == r.sent {
        anyhow::bail!(
            "every request failed: {}",
            r.first_error.unwrap_or_default()
        );
    }
    Ok(())
}

async fn run(a: &LoadArgs) -> anyhow::Result<LoadReport> {
    let url = if a.agent.starts_with("http") {
        a.agent.clone()
    } else {
        format!("http://{}", a.agent)
    };
    let channel = tonic::transport::Endpoint::from_shared(url)?
        .connect_timeout(Duration::from_secs(3))
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to agent {}: {e}", a.agent))?;
    let client = InferenceClient::new(channel);
    let mut rng = rand::rngs::StdRng::seed_from_u64(a.seed);
    let total = Duration::from_secs_f64(a.duration_s);
    let expected = (a.rate * a.duration_s).ceil() as u64;
    let bar = indicatif::ProgressBar::new(expected);
    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} sent",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let payload = vec![0u8; a.payload_bytes];
    let start = Instant::now();
    let mut next = Duration::ZERO;
    let mut tasks = tokio::task::JoinSet::new();
    let mut sent = 0u64;
    loop {
        let gap = match a.arrivals {
            Arrivals::Fixed => 1.0 / a.rate,
            Arrivals::Poisson => {
                let u: f64 = rng.gen_range(f64::EPSILON..1.0);
                -u.ln() / a.rate
            }
        };
        if next >= total {
            break;
        }
        tokio::time::sleep_until((start + next).into()).await;
        let mut c = client.clone();
        let req = InferRequest {
            model: a.model.clone(),
            deadline_ms: 0.0,
            slo_ms: a.slo_ms.unwrap_or(0.0),
            payload: payload.clone(),
        };
        tasks.spawn(async move {
            let t0 = Instant::now();
            let r = c.infer(req).await;
            (t0.elapsed().as_secs_f64() * 1000.0, r)
        });
        sent += 1;
        bar.inc(1);
        next += Duration::from_secs_f64(gap);
    }
    let mut rep = LoadReport {
        model: a.model.clone(),
        offered_rate: a.rate,
        duration_s: a.duration_s,
        sent,
        ..Default::default()
    };
    let mut lat = Vec::new();
    while let Some(res) = tasks.join_next().await {
        let (client_ms, r) = res?;
        match r {
            Ok(resp) => {
                let resp = resp.into_inner();
                if resp.outcome == Outcome::Completed as i32 {
                    rep.completed += 1;
                    if resp.deadline_met {
                        rep.met += 1;
                    } else {
                        rep.missed += 1;
                    }
                    lat.push(client_ms);
                } else {
                    rep.dropped += 1;
                }
            }
            Err(s) => {
                rep.errors += 1;
                if rep.first_error.is_none() {
                    rep.first_error = Some(format!("{:?}: {}", s.code(), s.message()));
                }
            }
        }
    }
    bar.finish_and_clear();
    lat.sort_by(f64::total_cmp);
    rep.p50_ms = quantile(&lat, 0.5);
    rep.p99_ms = quantile(&lat, 0.99);
    rep.p999_ms = quantile(&lat, 0.999);
    Ok(rep)
}
