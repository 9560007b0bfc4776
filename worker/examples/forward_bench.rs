//! One side of `worker/bench/bench.py`: times the worker's forward pass (the same code the
//! gRPC service runs, on a thread pool of `--threads`) on a safetensors state_dict and a raw
//! FP32 input, and prints one JSON line `{"ms": [...]}` (one entry per timed pass); writes
//! the first pass's logits to `--output` for the comparison with ONNX Runtime.
//!
//! cargo run --release -p edgeplane-worker --example forward_bench -- \
//!   --model resnet18 --weights w.safetensors --input x.f32 --batch 1 --threads 2 --iters 5

use anyhow::Context;
use edgeplane_worker::nets::{Net, Never, WeightSource};
use std::time::Instant;

struct Args {
    model: String,
    weights: std::path::PathBuf,
    input: std::path::PathBuf,
    output: Option<std::path::PathBuf>,
    batch: usize,
    res: usize,
    threads: usize,
    warmup: usize,
    iters: usize,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        model: String::new(),
        weights: Default::default(),
        input: Default::default(),
        output: None,
        batch: 1,
        res: 224,
        threads: 1,
        warmup: 1,
        iters: 5,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().with_context(|| format!("{k}: needs a value"))?;
        match k.as_str() {
            "--model" => a.model = v,
            "--weights" => a.weights = v.into(),
            "--input" => a.input = v.into(),
            "--output" => a.output = Some(v.into()),
            "--batch" => a.batch = v.parse().context("--batch")?,
            "--res" => a.res = v.parse().context("--res")?,
            "--threads" => a.threads = v.parse().context("--threads")?,
            "--warmup" => a.warmup = v.parse().context("--warmup")?,
            "--iters" => a.iters = v.parse().context("--iters")?,
            _ => anyhow::bail!("unknown flag {k}"),
        }
    }
    Ok(a)
}

fn main() -> anyhow::Result<()> {
    let a = args()?;
    let net = Net::load(&a.model, &WeightSource::file(&a.weights)?)?;
    let raw = std::fs::read(&a.input).with_context(|| format!("{}", a.input.display()))?;
    let n = a.batch * 3 * a.res * a.res;
    anyhow::ensure!(
        raw.len() >= n * 4,
        "--input: {} bytes, need {}",
        raw.len(),
        n * 4
    );
    let x: Vec<f32> = raw[..n * 4]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(a.threads)
        .build()?;
    let mut ms = Vec::new();
    for i in 0..a.warmup + a.iters {
        let t0 = Instant::now();
        let y = pool.install(|| net.forward(&x, a.batch, a.res, &Never))?;
        let dt = t0.elapsed().as_secs_f64() * 1e3;
        if i == 0 {
            if let Some(p) = &a.output {
                let b: Vec<u8> = y.iter().flat_map(|v| v.to_le_bytes()).collect();
                std::fs::write(p, b)?;
            }
        }
        if i >= a.warmup {
            ms.push(dt);
        }
    }
    println!("{{\"ms\": {ms:?}}}");
    Ok(())
}
