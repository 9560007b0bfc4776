//! `edgeplane load`: open-loop load generator against an edge agent's `Infer` API.
//!
//! Open loop means requests are sent on their schedule whether or not earlier ones have
//! answered (each is its own task), so a slow agent shows up as latency and misses rather
//! than as a lower offered rate. Inter-arrival times are Poisson (exponential) or fixed,
//! drawn from a seeded RNG, so a run is reproducible.

use crate::exit::{self, Kind};
use clap::{Args, ValueEnum};
use edgeplane_proto::agent::{inference_client::InferenceClient, InferRequest, Outcome};
use rand::{Rng, SeedableRng};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Arrivals {
    Poisson,
    Fixed,
}

pub use crate::output::Format;

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
    /// Send a real FP32 input tensor of this shape (e.g. `1,3,224,224` for resnet18 on a
    /// `--accelerators cpu` agent; seeded pseudo-random pixels) instead of an opaque payload;
    /// the report then checks every output tensor and gives the worker's execution time.
    #[arg(long, value_delimiter = ',')]
    pub input_shape: Option<Vec<i64>>,
    /// RNG seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Output format: `table` for people, `json` for scripts.
    #[arg(long, short = 'o', visible_alias = "output", value_enum, default_value_t = Format::Table)]
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
    /// With `--input-shape`: completed requests whose output tensor came back (FP32, batch
    /// rows), and the worker's own forward-pass time.
    pub outputs: u64,
    pub exec_p50_ms: f64,
    pub dispatch_overhead_p50_ms: f64,
    pub energy_source: String,
    pub first_error: Option<String>,
    /// The gRPC code of `first_error`, when it was a refusal (picks the exit code).
    #[serde(skip)]
    pub first_error_code: Option<tonic::Code>,
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
    if let Some(sh) = &a.input_shape {
        let n: i64 = sh.iter().product();
        if sh.is_empty() || sh.iter().any(|d| *d <= 0) || n > (64 << 20) / 4 {
            anyhow::bail!(
                "--input-shape: positive dimensions of at most 64 MiB of FP32, got {sh:?}"
            );
        }
        if a.payload_bytes > 0 {
            anyhow::bail!("--payload-bytes: not with --input-shape (the tensor is the payload)");
        }
    }
    Ok(())
}

pub async fn load(tls: &crate::tls::ClientTlsSource, a: LoadArgs) -> anyhow::Result<()> {
    validate(&a).map_err(|e| exit::fail(Kind::InvalidInput, format!("{e:#}")))?;
    let r = run(tls, &a).await?;
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
            if r.outputs > 0 {
                println!(
                    "outputs {}  worker exec p50 {:.2} ms  dispatch->worker p50 {:.3} ms  energy {}",
                    r.outputs, r.exec_p50_ms, r.dispatch_overhead_p50_ms, r.energy_source
                );
            }
            if let Some(e) = &r.first_error {
                println!("first error: {e}");
            }
        }
    }
    if r.sent > 0 && r.errors == r.sent {
        // The exit code is the first refusal's (README's table): a model the agent does not
        // serve (FAILED_PRECONDITION) is 3, an agent that went away (UNAVAILABLE) is 2.
        let kind = r.first_error_code.map_or(Kind::Error, Kind::of_code);
        return Err(exit::fail(
            kind,
            format!(
                "every request failed: {}",
                r.first_error.unwrap_or_default()
            ),
        ));
    }
    Ok(())
}

async fn connect(
    tls: &crate::tls::ClientTlsSource,
    a: &LoadArgs,
) -> anyhow::Result<tonic::transport::Channel> {
    let channel = tls
        .agent_endpoint(&a.agent)?
        .connect_timeout(Duration::from_secs(3))
        .connect()
        .await
        .map_err(|e| {
            exit::fail(
                Kind::Unavailable,
                format!(
                    "cannot connect to agent {}: {}",
                    a.agent,
                    exit::error_chain(&e)
                ),
            )
        })?;
    Ok(channel)
}

fn progress_bar(expected: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(expected);
    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} sent {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// `--input-shape`: one seeded FP32 tensor of that shape, sent with every request.
fn input_tensor(a: &LoadArgs) -> Option<edgeplane_proto::agent::Tensor> {
    a.input_shape.as_ref().map(|shape| {
        let n: i64 = shape.iter().product();
        let mut r = rand::rngs::StdRng::seed_from_u64(a.seed ^ 0x5eed);
        let data: Vec<u8> = (0..n)
            .flat_map(|_| r.gen_range(0.0f32..1.0).to_le_bytes())
            .collect();
        edgeplane_proto::agent::Tensor {
            name: String::new(),
            datatype: "FP32".into(),
            shape: shape.clone(),
            data,
        }
    })
}

async fn run(tls: &crate::tls::ClientTlsSource, a: &LoadArgs) -> anyhow::Result<LoadReport> {
    let client = InferenceClient::new(connect(tls, a).await?);
    let mut rng = rand::rngs::StdRng::seed_from_u64(a.seed);
    let total = Duration::from_secs_f64(a.duration_s);
    let bar = progress_bar((a.rate * a.duration_s).ceil() as u64);
    let payload = vec![0u8; a.payload_bytes];
    let input = input_tensor(a);
    let start = Instant::now();
    let mut next = Duration::ZERO;
    let mut tasks = tokio::task::JoinSet::new();
    let mut sent = 0u64;
    let failed = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
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
            input: input.clone(),
        };
        let failed_in_task = failed.clone();
        tasks.spawn(async move {
            let t0 = Instant::now();
            let r = c.infer(req).await;
            if r.is_err() {
                failed_in_task.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Answer {
                client_ms: t0.elapsed().as_secs_f64() * 1000.0,
                result: r,
            }
        });
        sent += 1;
        // Poisson arrivals can send a few more than rate x duration: the bar grows with them
        // instead of showing 31/30.
        if sent > bar.length().unwrap_or(0) {
            bar.set_length(sent);
        }
        bar.inc(1);
        let n_failed = failed.load(std::sync::atomic::Ordering::Relaxed);
        if n_failed > 0 {
            bar.set_message(format!("({n_failed} failed)"));
        }
        next += Duration::from_secs_f64(gap);
    }
    let rep = LoadReport {
        model: a.model.clone(),
        offered_rate: a.rate,
        duration_s: a.duration_s,
        sent,
        ..Default::default()
    };
    let rep = collect(tasks, rep, input.as_ref()).await?;
    bar.finish_and_clear();
    Ok(rep)
}

/// One request's answer and its latency as the client saw it.
struct Answer {
    client_ms: f64,
    result: Result<tonic::Response<edgeplane_proto::agent::InferResponse>, tonic::Status>,
}

/// Every answer into the report: outcomes, latency quantiles, the output tensors' check.
async fn collect(
    mut tasks: tokio::task::JoinSet<Answer>,
    mut rep: LoadReport,
    input: Option<&edgeplane_proto::agent::Tensor>,
) -> anyhow::Result<LoadReport> {
    let mut lat = crate::latency::Latencies::default();
    let mut exec = crate::latency::Latencies::default();
    let mut over = crate::latency::Latencies::default();
    while let Some(res) = tasks.join_next().await {
        let Answer { client_ms, result } = res?;
        match result {
            Ok(resp) => {
                let resp = resp.into_inner();
                if resp.outcome == Outcome::Completed as i32 {
                    rep.completed += 1;
                    if resp.deadline_met {
                        rep.met += 1;
                    } else {
                        rep.missed += 1;
                    }
                    lat.record_ms(client_ms);
                    if let (Some(o), Some(i)) = (&resp.output, input) {
                        let rows = o.shape.first().copied().unwrap_or(0);
                        let n: i64 = o.shape.iter().product();
                        if o.datatype == "FP32"
                            && rows == i.shape[0]
                            && o.data.len() as i64 == n * 4
                        {
                            rep.outputs += 1;
                        } else if rep.first_error.is_none() {
                            rep.first_error = Some(format!(
                                "output tensor {:?} {:?} with {} bytes does not match batch {}",
                                o.datatype,
                                o.shape,
                                o.data.len(),
                                i.shape[0]
                            ));
                        }
                        exec.record_ms(resp.exec_ms);
                        over.record_ms(resp.dispatch_overhead_ms);
                        rep.energy_source = resp.energy_source.clone();
                    }
                } else {
                    rep.dropped += 1;
                }
            }
            Err(s) => {
                rep.errors += 1;
                if rep.first_error.is_none() {
                    rep.first_error = Some(format!("{:?}: {}", s.code(), s.message()));
                    rep.first_error_code = Some(s.code());
                }
            }
        }
    }
    rep.p50_ms = lat.quantile_ms(0.5);
    rep.p99_ms = lat.quantile_ms(0.99);
    rep.p999_ms = lat.quantile_ms(0.999);
    rep.exec_p50_ms = exec.quantile_ms(0.5);
    rep.dispatch_overhead_p50_ms = over.quantile_ms(0.5);
    Ok(rep)
}
