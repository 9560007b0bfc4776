//! `edgeplane bench raft`: acknowledged writes/s (or linearizable reads/s) and latency
//! against a coordinator cluster, or a local 3-replica one it starts itself.

use std::path::PathBuf;
use std::process::{Child, Command as Proc, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use clap::Args;
use edgeplane_proto::admin::{self as api, admin_client::AdminClient};
use serde_json::json;

use crate::conn::Conn;
use crate::output::{print_json, Format};
use crate::tls::ClientTlsSource;
use crate::GlobalArgs;

#[derive(Debug, Args)]
pub struct BenchRaftArgs {
    /// Concurrent clients, each with its own connection and one write in flight.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// How long to run.
    #[arg(long, default_value_t = 10.0)]
    pub duration_s: f64,
    /// Start a local 3-replica cluster (temp data dirs) and benchmark it, ignoring --endpoints.
    #[arg(long)]
    pub local: bool,
    /// Measure linearizable reads (`models list`, ReadIndex) instead of writes.
    #[arg(long)]
    pub reads: bool,
    /// Output format: `table` for people, `json` for scripts.
    #[arg(long, short = 'o', visible_alias = "output", value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// With --local: run the benchmark twice in this run, on a plaintext (--insecure)
    /// cluster and on a mutual-TLS cluster, and report the cost of TLS.
    #[arg(long)]
    pub compare_tls: bool,
}

/// Child processes of a local benchmark cluster; killed on drop.
struct LocalCluster {
    children: Vec<Child>,
    dir: PathBuf,
    endpoints: Vec<String>,
    /// The client TLS of this cluster (its admin certificate, or plaintext).
    tls: ClientTlsSource,
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_local_cluster(tls: bool) -> anyhow::Result<LocalCluster> {
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .ok_or_else(|| anyhow!("cannot locate the edgeplane binary's folder"))?
        .join("edgeplane-coordinator");
    if !bin.exists() {
        bail!(
            "{} not found; build it first (cargo build --release -p edgeplane-coordinator)",
            bin.display()
        );
    }
    let dir = std::env::temp_dir().join(format!(
        "edgeplane-bench-{}-{}",
        std::process::id(),
        if tls { "tls" } else { "plain" }
    ));
    std::fs::create_dir_all(&dir)?;
    // A throwaway CA and certificates for this run (or plaintext, explicitly).
    let (material, client) = if tls {
        let m = edgeplane_tls::generate_cluster_material(&dir.join("tls"), &[1, 2, 3], &[])?;
        let admin = m.admin();
        let client = edgeplane_tls::ClientTls(Some(edgeplane_tls::TlsMaterial::load(
            edgeplane_tls::TlsPaths {
                ca: m.ca(),
                cert: admin.cert,
                key: admin.key,
            },
        )?));
        (Some(m), client)
    } else {
        (None, edgeplane_tls::ClientTls::insecure())
    };
    let mut peers = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..3 {
        peers.push(format!("127.0.0.1:{}", crate::gpu_box::free_port()?));
        clients.push(format!("127.0.0.1:{}", crate::gpu_box::free_port()?));
    }
    let ic = peers
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{}={p}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let mut lc = LocalCluster {
        children: Vec::new(),
        dir: dir.clone(),
        endpoints: clients.clone(),
        tls: ClientTlsSource::ready(client),
    };
    for i in 0..3 {
        let mut cmd = Proc::new(&bin);
        match &material {
            Some(m) => {
                let p = m.member(i as u64 + 1);
                cmd.arg("--tls-ca")
                    .arg(m.ca())
                    .arg("--tls-cert")
                    .arg(p.cert)
                    .arg("--tls-key")
                    .arg(p.key);
            }
            None => {
                cmd.arg("--insecure");
            }
        }
        let child = cmd
            .args(["--id", &(i + 1).to_string()])
            .args(["--client-addr", &clients[i], "--peer-addr", &peers[i]])
            .args(["--initial-cluster", &ic])
            .arg("--data-dir")
            .arg(dir.join(format!("r{}", i + 1)))
            .env("EDGEPLANE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        lc.children.push(child);
    }
    Ok(lc)
}

/// Find the leader's client address (so benchmark writes are not forwarded).
async fn leader_addr(conn: &Conn) -> anyhow::Result<String> {
    let deadline = Instant::now() + conn.timeout();
    loop {
        if let Ok(r) = conn
            .call("cluster status", |mut c| async move {
                c.cluster_status(api::ReadRequest { stale: true }).await
            })
            .await
        {
            if let Some(m) = r
                .members
                .iter()
                .find(|m| m.id == r.leader_id && !m.client_addr.is_empty())
            {
                return Ok(m.client_addr.clone());
            }
        }
        if Instant::now() > deadline {
            bail!("no leader elected within {:?}", conn.timeout());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn bench_raft(g: &GlobalArgs, a: BenchRaftArgs) -> anyhow::Result<()> {
    if !a.compare_tls {
        return bench_raft_run(g, &a, true).await.map(|_| ());
    }
    if !a.local {
        bail!("--compare-tls needs --local (it starts both clusters itself)");
    }
    let plain = bench_raft_run(g, &a, false).await?;
    let tls = bench_raft_run(g, &a, true).await?;
    let cost = if plain > 0.0 {
        (1.0 - tls / plain) * 100.0
    } else {
        0.0
    };
    if a.format == Format::Json {
        print_json(&json!({"clients": a.clients, "insecure_ops_per_s": plain,
            "tls_ops_per_s": tls, "tls_cost_pct": cost}));
    } else {
        println!(
            "bench raft --compare-tls: {} clients: insecure {plain:.0}/s, mutual TLS {tls:.0}/s, TLS costs {cost:.1} %",
            a.clients
        );
    }
    Ok(())
}

/// One benchmark run; returns the acknowledged operations per second. With `--local`,
/// `tls` picks a mutual-TLS or a plaintext (`--insecure`) cluster.
async fn bench_raft_run(g: &GlobalArgs, a: &BenchRaftArgs, tls: bool) -> anyhow::Result<f64> {
    if a.clients == 0 {
        bail!("invalid --clients: must be > 0");
    }
    if !(a.duration_s.is_finite() && a.duration_s > 0.0) {
        bail!("invalid --duration-s: must be > 0");
    }
    let (conn, _local) = if a.local {
        let lc = start_local_cluster(tls)?;
        let timeout = Duration::from_secs_f64(g.timeout_s.max(20.0));
        let conn = Conn::with_tls(lc.endpoints.clone(), timeout, lc.tls.clone());
        (conn, Some(lc))
    } else {
        (Conn::new(g)?, None)
    };
    let addr = leader_addr(&conn).await?;
    let ep = conn.dial(&addr)?;
    if a.reads {
        // One model so every read returns a (small) non-empty answer.
        let mut c = AdminClient::new(ep.connect().await?);
        c.deploy_model(api::DeployModelRequest {
            meta: Some(api::WriteMeta {
                client_id: rand::random::<u64>() | 1,
                seq: 1,
            }),
            name: "bench-read".into(),
            slo_ms: 50.0,
            rate: 1.0,
            memory_mb: 1,
        })
        .await
        .context("deploying the model the read benchmark reads")?;
    }
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(a.duration_s);
    let tasks: Vec<_> = (0..a.clients)
        .map(|i| tokio::spawn(bench_client(ep.clone(), i, a.reads, end)))
        .collect();
    let mut all = crate::latency::Latencies::default();
    let mut errors = 0;
    for t in tasks {
        let r = t.await?;
        for d in r.latencies {
            all.record(d);
        }
        errors += r.errors;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let wps = all.len() as f64 / elapsed;
    print_run(a, &addr, &all, errors, elapsed, wps);
    Ok(wps)
}

/// What one benchmark client saw.
struct ClientRun {
    /// Latency of each acknowledged operation.
    latencies: Vec<Duration>,
    errors: u64,
}

/// One client with its own connection and one operation in flight until `end`: client `i`
/// re-deploys its own model (`bench-<i>`), or reads `models list` with `reads`.
async fn bench_client(ep: edgeplane_tls::Dial, i: usize, reads: bool, end: Instant) -> ClientRun {
    let mut run = ClientRun {
        latencies: Vec::new(),
        errors: 0,
    };
    let ch = match ep.connect().await {
        Ok(c) => c,
        Err(_) => {
            run.errors = 1;
            return run;
        }
    };
    let mut c = AdminClient::new(ch);
    let client_id = rand::random::<u64>() | 1;
    let mut seq = 0u64;
    while Instant::now() < end {
        seq += 1;
        let t = Instant::now();
        let ok = if reads {
            c.list_models(api::ReadRequest { stale: false })
                .await
                .is_ok()
        } else {
            c.deploy_model(api::DeployModelRequest {
                meta: Some(api::WriteMeta { client_id, seq }),
                name: format!("bench-{i}"),
                slo_ms: 50.0,
                rate: seq as f64,
                memory_mb: 1,
            })
            .await
            .is_ok()
        };
        match ok {
            true => run.latencies.push(t.elapsed()),
            false => run.errors += 1,
        }
    }
    run
}

fn print_run(
    a: &BenchRaftArgs,
    addr: &str,
    all: &crate::latency::Latencies,
    errors: u64,
    elapsed: f64,
    wps: f64,
) {
    let what = if a.reads {
        "linearizable reads"
    } else {
        "writes"
    };
    let (p50, p99, p999) = (all.quantile(0.50), all.quantile(0.99), all.quantile(0.999));
    if a.format == Format::Json {
        print_json(
            &json!({"clients": a.clients, "duration_s": elapsed, "acknowledged": all.len(),
            "mode": if a.reads { "reads" } else { "writes" }, "ops_per_s": wps,
            "errors": errors, "writes_per_s": if a.reads { 0.0 } else { wps },
            "p50_ms": p50.as_secs_f64()*1e3,
            "p99_ms": p99.as_secs_f64()*1e3, "p999_ms": p999.as_secs_f64()*1e3,
            "leader": addr, "local_cluster": a.local}),
        );
        return;
    }
    println!(
        "bench raft: {} clients, {:.1}s, leader {addr}{}",
        a.clients,
        elapsed,
        if a.local {
            " (local 3-replica cluster)"
        } else {
            ""
        }
    );
    println!(
        "  acknowledged {what}: {}  ({:.0}/s), errors: {errors}",
        all.len(),
        wps
    );
    println!(
        "  latency of acknowledged {what}: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        p999.as_secs_f64() * 1e3
    );
}
