//! `edgeplane demo`: the whole system on one machine in about a minute.
//!
//! The `edgeplane` binary re-executes itself (`edgeplane internal coordinator|agent ...`, which
//! call the coordinator's and the agent's library entry points), so the demo needs nothing but
//! this binary: `cargo run --release -p edgeplane-cli -- demo` builds only the CLI package.
//!
//! What runs, as real processes talking real gRPC on loopback, mutual TLS on every link (a CA
//! and certificates generated for the run into its temporary folder with
//! [`edgeplane_tls::generate_cluster_material`], as `edgeplane certs` makes them):
//! - three coordinator replicas (Raft, sled in a temporary folder);
//! - an XR device agent with simulated NPUs (an XRBench hardware set-up) running an XRBench
//!   scenario in real time under SDRM3, registered with the cluster and reporting to its leader;
//! - the demo itself as an operator and a client: it deploys the models through the Admin API,
//!   pins the probe model, sends `Infer` requests to the agent, polls the cluster, SIGKILLs the
//!   leader midway and measures the failover.
//!
//! The GPU box serving the seed workload (ResNet18, ResNet50, VGG16 arriving one after another)
//! is a second agent with a simulated GPU ([`crate::gpu_box`], shared with `bench partition
//! --live`), placed by the leader's planner; the same workload also runs through the planner
//! and three other modes in virtual time ([`gpu_virtual`]). The report says which parts were
//! live and which simulated.
//!
//! The parts: [`live`] (the processes, the load, the failover), [`virtual_time`] (the
//! deterministic reference runs), [`files`] (CSVs and pictures) and [`report`] (the typed
//! [`DemoReport`], printed as text or, with `--format json`, as JSON).
//!
//! Children die with the demo: each is started with `PR_SET_PDEATHSIG = SIGKILL` (so even a
//! SIGKILLed demo leaves nothing behind), Ctrl-C stops them in order, and every path out of
//! [`demo`] stops them (the [`Children`] drop).

mod children;
mod files;
mod live;
mod report;
mod rpc;
mod virtual_time;

pub use report::DemoReport;

use std::ffi::OsString;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;

use crate::output::Format;
use children::Children;

/// The XR device agent's node name (and its node certificate's).
const XR_NODE: &str = "xr-headset";
/// The GPU box agent's node name (and its node certificate's).
const GPU_NODE: &str = "gpu-box";

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Seconds of load (the whole run takes a few seconds more: start-up, report).
    #[arg(long, default_value_t = 60.0)]
    pub duration: f64,
    /// Folder for the report, the pictures, the CSVs and the processes' logs.
    #[arg(long, default_value = "edgeplane-demo")]
    pub out: PathBuf,
    /// XRBench scenario the XR agent runs.
    #[arg(long, default_value = "VR_gaming")]
    pub scenario: String,
    /// XRBench hardware set-up of the XR agent's simulated NPUs.
    #[arg(long, default_value = "Dual_4K_WS_OS")]
    pub hardware: String,
    /// GPU profile of the GPU box (Jetson-AGX-Xavier, A100-80GB, V100, Jetson-Nano).
    #[arg(long, default_value = "Jetson-AGX-Xavier")]
    pub gpu: String,
    /// Rate of the demo's own Infer requests to the XR agent (0 = none), req/s.
    #[arg(long, default_value_t = 20.0)]
    pub probe_rate: f64,
    /// Rate of each seed model's Infer requests to the GPU box, req/s (the seed experiment: 50).
    #[arg(long, default_value_t = 50.0)]
    pub gpu_rate: f64,
    /// Virtual seconds of the GPU box's reference runs (the seed's arrivals are at 0, 50, 100 s).
    #[arg(long, default_value_t = 300.0, hide = true)]
    pub gpu_virtual_s: f64,
    /// Only the simulator tables (SDRM3 against the baselines; no cluster, no processes).
    #[arg(long)]
    pub sim_only: bool,
    /// With --sim-only: simulated milliseconds per run.
    #[arg(long, default_value_t = 2000.0)]
    pub duration_ms: f64,
    /// Serve the live dashboard (`edgeplane dashboard`) on --dashboard-listen while the demo
    /// runs, and print its address.
    #[arg(long)]
    pub dashboard: bool,
    /// With --dashboard: the address the page is served on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub dashboard_listen: String,
    /// Output format of the report: `table` (the text report) for people, `json` (the same
    /// figures as one JSON document) for scripts. Both are written to --out too.
    #[arg(long, short = 'o', visible_alias = "output", value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// `edgeplane internal coordinator|agent FLAGS...`: the processes `demo` starts.
pub fn internal(args: Vec<OsString>) -> ExitCode {
    let kind = args.first().and_then(|s| s.to_str()).unwrap_or("");
    let rest = args.iter().skip(1).cloned();
    match kind {
        "coordinator" => edgeplane_coordinator::entry::main_with_args(
            std::iter::once(OsString::from("edgeplane-coordinator")).chain(rest),
        ),
        "agent" => edgeplane_agent::entry::main_with_args(
            std::iter::once(OsString::from("edgeplane-agent")).chain(rest),
        ),
        _ => {
            eprintln!(
                "error: `edgeplane internal` runs the processes `edgeplane demo` starts: \
                 use `edgeplane internal coordinator --help` or `edgeplane internal agent --help`"
            );
            ExitCode::from(2)
        }
    }
}

pub async fn demo(a: DemoArgs) -> anyhow::Result<()> {
    if a.sim_only {
        if a.format == Format::Json {
            bail!("--format json: the simulator tables of --sim-only are text only; drop one of the two");
        }
        return crate::sim::demo(crate::sim::DemoArgs {
            duration_ms: a.duration_ms,
        });
    }
    check_args(&a)?;
    let cat = edgeplane_agent::catalog::Catalog::get()?;
    let hw = cat.hardware(&a.hardware).context("--hardware")?.to_vec();
    let scenario = cat.scenario(&a.scenario).context("--scenario")?.clone();
    let gpu_data = edgeplane_gpu::GpuData::shipped().context("loading the shipped GPU data")?;
    gpu_data.profiles.gpu(&a.gpu).context("--gpu")?;
    std::fs::create_dir_all(a.out.join("logs"))
        .with_context(|| format!("--out {}: cannot create the folder", a.out.display()))?;
    let started = Instant::now();
    let mut children = Children::default();
    let res = tokio::select! {
        r = live::live(&a, &hw, &scenario, &mut children) => Some(r),
        _ = tokio::signal::ctrl_c() => None,
    };
    children.stop_all(Duration::from_secs(3));
    let Some(res) = res else {
        eprintln!(
            "\ninterrupted: every process the demo started was stopped; logs in {}",
            a.out.join("logs").display()
        );
        std::process::exit(130);
    };
    let live = res?;
    // Ctrl-C keeps working while the rest is computed (tokio's handler replaced the default).
    tokio::spawn(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\ninterrupted (every process the demo started had already stopped)");
            std::process::exit(130);
        }
    });
    // The GPU box through the planner, in virtual time (see the module doc).
    eprintln!(
        "[{:6.1} s] reference runs in virtual time: the GPU box under the planner and 3 other modes, SDRM3 against baselines",
        started.elapsed().as_secs_f64()
    );
    let gpu = virtual_time::gpu_virtual(&gpu_data, &a.gpu, a.gpu_virtual_s)?;
    let sdrm3 = virtual_time::xr_comparison(&a.scenario, &a.hardware)?;
    let files = files::write_outputs(&a.out, &live, &gpu)?;
    let report = DemoReport::build(
        &a,
        &live,
        &gpu,
        &sdrm3,
        &files,
        started.elapsed().as_secs_f64(),
    );
    let text = report.render();
    report::write_files(&a.out, &report, &text)?;
    let mut so = std::io::stdout().lock();
    match a.format {
        Format::Table => so.write_all(text.as_bytes())?,
        Format::Json => writeln!(so, "{}", serde_json::to_string_pretty(&report)?)?,
    }
    so.flush()?;
    Ok(())
}

fn check_args(a: &DemoArgs) -> anyhow::Result<()> {
    if !(a.duration.is_finite() && (10.0..=3600.0).contains(&a.duration)) {
        bail!(
            "--duration must be between 10 and 3600 seconds, got {}",
            a.duration
        );
    }
    if !(a.gpu_virtual_s.is_finite() && (110.0..=3600.0).contains(&a.gpu_virtual_s)) {
        bail!("--gpu-virtual-s must be in 110..=3600 (the last seed model arrives at 100 s)");
    }
    if !(a.gpu_rate.is_finite() && a.gpu_rate > 0.0 && a.gpu_rate <= 500.0) {
        bail!("--gpu-rate must be in (0, 500] req/s, got {}", a.gpu_rate);
    }
    if !(a.probe_rate.is_finite() && (0.0..=500.0).contains(&a.probe_rate)) {
        bail!(
            "--probe-rate must be in 0..=500 req/s, got {}",
            a.probe_rate
        );
    }
    Ok(())
}
