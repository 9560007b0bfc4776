//! `edgeplane-agent profile`: measure L(model, batch) on this box's worker and the dispatch
//! overhead of real execution, and print (or write) the profile table.

use anyhow::Context;
use clap::Parser;
use edgeplane_agent::config::{WorkerConfig, WorkerFlags};
use edgeplane_agent::exec::{oip, worker as worker_node, Executor};
use edgeplane_agent::{discovery, node, runtime, sched as core, stats};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Measure L(model, batch) on this box's inference worker (warm-up, then the median of the
/// timed passes) and write it in the shipped profile format; then run jobs through the real
/// runtime (SDRM3 -> executor -> worker) and report the dispatch overhead: time from the
/// dispatch decision to the worker receiving the job, p50/p99 and ratio to execution time.
#[derive(Parser, Debug)]
#[command(name = "edgeplane-agent profile")]
pub struct ProfileArgs {
    #[command(flatten)]
    worker: WorkerFlags,
    /// Batches to measure (the table's other batches are extrapolated linearly).
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    batches: Vec<u32>,
    #[arg(long, default_value_t = 2)]
    warmup: u32,
    #[arg(long, default_value_t = 5)]
    reps: u32,
    /// Write the table here (and use it as the agent's cached profile when it is the data
    /// dir's `profile-cpu-<resolution>.toml`).
    #[arg(long)]
    out: Option<std::path::PathBuf>,
    /// Jobs per model run through the runtime for the overhead measurement (0 = skip).
    #[arg(long, default_value_t = 50)]
    overhead_jobs: u32,
    /// The `gpu` column of the table.
    #[arg(long, default_value = "cpu")]
    device: String,
}

pub fn main(args: Vec<String>) -> anyhow::Result<()> {
    let a = ProfileArgs::parse_from(args);
    anyhow::ensure!(
        !a.batches.is_empty() && a.batches.iter().all(|b| worker_node::BATCHES.contains(b)),
        "--batches: each must be one of {:?}",
        worker_node::BATCHES
    );
    anyhow::ensure!(a.reps >= 1, "--reps: must be at least 1");
    let cfg = WorkerConfig::resolve(a.worker.clone(), None)?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        // What the box has (NVML GPUs, else the CPU), with NVML's live readings.
        let accs = discovery::discover(&edgeplane_agent::config::AcceleratorSpec::Nvml)?;
        for x in &accs {
            println!(
                "# accelerator {} kind={} name={:?} memory_mb={} mig_capable={} util={:?}% power={:?}W total_energy={:?}J",
                x.id, x.kind, x.name, x.memory_mb, x.mig_capable, x.utilization_pct, x.power_w, x.total_energy_j
            );
        }
        let energy = match edgeplane_agent::exec::energy::Rapl::system() {
            Some(_) => "rapl (measured)",
            None => "modelled (RAPL not readable)",
        };
        println!("# CPU energy source: {energy}");
        let t0 = Instant::now();
        let w = oip::WorkerHandle::start(cfg.spec("cpu0", 100, None)).await?;
        println!("# worker ready in {} ms at {:?}", t0.elapsed().as_millis(), w.addr());
        let mut p = worker_node::measure(&w, &cfg.models, &a.batches, a.warmup, a.reps, &a.device).await?;
        p.resolution = cfg.resolution;
        let table = p.to_toml();
        print!("{table}");
        if let Some(out) = &a.out {
            std::fs::write(out, &table).with_context(|| format!("--out {}", out.display()))?;
        }
        if a.overhead_jobs > 0 {
            overhead(&w, &p, &cfg.models, a.overhead_jobs).await?;
        }
        w.stop();
        anyhow::Ok(())
    })
}

/// Run `n` jobs per model one after another through the real runtime (the SDRM3 engine over
/// the measured profile, the OIP executor, the worker) and print the overhead percentiles.
async fn overhead(
    w: &Arc<oip::WorkerHandle>,
    p: &worker_node::Profile,
    models: &[String],
    n: u32,
) -> anyhow::Result<()> {
    let core = node::build_core(core::DEFAULT_POLICY, p, models, 1)?;
    let acc = discovery::cpu_node();
    let ids = vec![acc.id.clone()];
    let shared = Arc::new(runtime::Shared::new(
        "profile",
        vec![acc],
        runtime::Ledger::new(stats::Stats::new(&ids)),
        None,
    ));
    let (tx, _) = tokio::sync::broadcast::channel(1);
    let ex = Arc::new(oip::OipExecutor::new(w.clone())) as Arc<dyn Executor>;
    let (h, task) = runtime::start(shared, core, vec![ex], tx.subscribe());
    w.clear_overhead();
    println!("\n# dispatch overhead (dispatch decision -> worker has the job), {n} sequential jobs per model via SDRM3 + OIP");
    for m in models {
        let l = p.b1(m).unwrap_or(100.0);
        let (mut ok, mut met) = (0, 0);
        for _ in 0..n {
            let o = h
                .infer_with(m, Duration::from_secs_f64(l * 4.0 / 1000.0 + 0.05), None)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            ok += u32::from(o.completed);
            met += u32::from(o.deadline_met);
        }
        println!("# {m}: {ok}/{n} completed, {met} deadlines met");
    }
    for s in w.overhead() {
        println!(
            "overhead model={} jobs={} p50_ms={:.3} p99_ms={:.3} exec_p50_ms={:.2} ratio_p50={:.4} ratio_p99={:.4}",
            s.model, s.jobs, s.overhead_p50_ms, s.overhead_p99_ms, s.exec_p50_ms, s.ratio_p50, s.ratio_p99
        );
    }
    let _ = tx.send(());
    let _ = task.await;
    Ok(())
}
