use anyhow::Context;
use clap::Parser;
use std::collections::HashMap;

/// Built-in CPU inference worker: real ResNet18/ResNet50/VGG16 forward passes (own im2col + GEMM kernels) behind
/// the Open Inference Protocol (KServe v2 gRPC). Without --weights the weights are initialised
/// deterministically from --seed: real arithmetic, untrained values.
#[derive(Parser, Debug)]
#[command(name = "edgeplane-worker", version)]
struct Args {
    /// gRPC listen address (port 0 = any free port, printed on start).
    #[arg(
        long,
        env = "EDGEPLANE_WORKER_LISTEN",
        default_value = "127.0.0.1:8001"
    )]
    listen: std::net::SocketAddr,
    /// Models to serve, comma-separated (resnet18, resnet50, vgg16).
    #[arg(
        long,
        env = "EDGEPLANE_WORKER_MODELS",
        value_delimiter = ',',
        default_value = "resnet18,resnet50,vgg16"
    )]
    models: Vec<String>,
    /// MODEL=PATH: a safetensors file with torchvision state_dict names (repeatable).
    #[arg(long = "weights")]
    weights: Vec<String>,
    /// Seed of the deterministic initialisation of models without --weights.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Input height = width (224 is the networks' real input; smaller is for tests).
    #[arg(long, env = "EDGEPLANE_WORKER_RESOLUTION", default_value_t = 224)]
    resolution: usize,
    /// Largest batch one request may carry.
    #[arg(long, default_value_t = 8)]
    max_batch: usize,
    /// A model repository in Triton's layout: <DIR>/<model>/config.pbtxt and
    /// <DIR>/<model>/<version>/model.onnx; rescanned while running (new models load, removed
    /// ones unload). Served beside the built-in --models (use --models "" for none).
    #[arg(long, env = "EDGEPLANE_WORKER_REPOSITORY")]
    model_repository: Option<std::path::PathBuf>,
    /// Seconds between rescans of --model-repository.
    #[arg(long, default_value_t = 5.0)]
    repository_poll_s: f64,
    /// CPU threads for the forward pass (default: all cores).
    #[arg(long, env = "EDGEPLANE_WORKER_THREADS")]
    threads: Option<usize>,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let a = Args::parse();
    if let Some(t) = a.threads {
        anyhow::ensure!(t > 0, "--threads: must be at least 1");
    }
    anyhow::ensure!(
        a.repository_poll_s > 0.0 && a.repository_poll_s.is_finite(),
        "--repository-poll-s: must be a positive number of seconds"
    );
    if let Some(d) = &a.model_repository {
        anyhow::ensure!(
            d.is_dir(),
            "--model-repository {}: not a directory",
            d.display()
        );
    }
    let models: Vec<String> = a.models.iter().filter(|m| !m.is_empty()).cloned().collect();
    for m in &models {
        anyhow::ensure!(
            edgeplane_worker::nets::MODELS.contains(&m.as_str()),
            "--models: {m:?} is not a model of this worker; valid: {}",
            edgeplane_worker::nets::MODELS.join(", ")
        );
    }
    anyhow::ensure!(
        (32..=1024).contains(&a.resolution),
        "--resolution: must be in 32..=1024, got {}",
        a.resolution
    );
    anyhow::ensure!(a.max_batch >= 1, "--max-batch: must be at least 1");
    let mut weights = HashMap::new();
    for w in &a.weights {
        let (m, p) = w
            .split_once('=')
            .with_context(|| format!("--weights {w:?}: expected MODEL=PATH"))?;
        anyhow::ensure!(
            models.iter().any(|x| x == m),
            "--weights {w:?}: {m:?} is not in --models"
        );
        weights.insert(m.to_string(), std::path::PathBuf::from(p));
    }
    let cfg = edgeplane_worker::server::WorkerConfig {
        models,
        resolution: a.resolution,
        max_batch: a.max_batch,
        seed: a.seed,
        weights,
        threads: a.threads.unwrap_or(0),
        repository: a.model_repository,
        poll: std::time::Duration::from_secs_f64(a.repository_poll_s),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(a.listen)
            .await
            .with_context(|| format!("--listen {}: cannot bind", a.listen))?;
        let addr = listener.local_addr()?;
        tracing::info!(listen = %addr, models = ?cfg.models, resolution = cfg.resolution, "edgeplane-worker listening");
        println!("edgeplane-worker listening on {addr}");
        let worker = edgeplane_worker::server::Worker::new(cfg)?;
        tracing::info!(threads = worker.threads(), "forward-pass thread pool");
        edgeplane_worker::server::serve(worker, listener, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
        anyhow::Ok(())
    })
}
