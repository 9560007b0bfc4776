//! Starting the two clusters under test as child processes on loopback, with data dirs on the
//! same disk, and finding each one's leader so that neither pays for a forwarding hop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use edgeplane_proto::admin::{admin_client::AdminClient, ReadRequest};
use edgeplane_proto::etcd::{maintenance_client::MaintenanceClient, StatusRequest};
use tonic::transport::Endpoint;

/// Which system a cluster runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum System {
    Etcd,
    Edgeplane,
}

impl System {
    pub fn name(self) -> &'static str {
        match self {
            System::Etcd => "etcd",
            System::Edgeplane => "edgeplane",
        }
    }
}

/// Three members of one system; every child is killed (SIGKILL) and reaped on drop, so an
/// interrupted benchmark leaves no process behind.
pub struct Cluster {
    pub system: System,
    /// Client endpoints, `http://127.0.0.1:PORT`, one per member.
    pub endpoints: Vec<String>,
    children: Vec<Child>,
    _dir: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A loopback port below the ephemeral range (DESIGN §7, [`edgeplane_chaos::reserve_port`]):
/// the kernel never hands it to an outgoing connection while the member is down.
fn free_port() -> anyhow::Result<u16> {
    Ok(edgeplane_chaos::reserve_port()?)
}

fn ports(n: usize) -> anyhow::Result<Vec<u16>> {
    (0..n).map(|_| free_port()).collect()
}

fn log_file(dir: &Path, name: &str) -> anyhow::Result<Stdio> {
    Ok(Stdio::from(std::fs::File::create(dir.join(name))?))
}

/// Starts a 3-member etcd (its defaults: fsync on every commit, 100 ms heartbeat, 1 s election).
pub fn start_etcd(bin: &Path, parent: &Path) -> anyhow::Result<Cluster> {
    let dir = tempfile::Builder::new()
        .prefix("etcd-bench-")
        .tempdir_in(parent)?;
    let client = ports(3)?;
    let peer = ports(3)?;
    let initial = (0..3)
        .map(|i| format!("e{}=http://127.0.0.1:{}", i + 1, peer[i]))
        .collect::<Vec<_>>()
        .join(",");
    let mut children = Vec::new();
    for i in 0..3 {
        let name = format!("e{}", i + 1);
        let curl = format!("http://127.0.0.1:{}", client[i]);
        let purl = format!("http://127.0.0.1:{}", peer[i]);
        let child = Command::new(bin)
            .args(["--name", &name])
            .arg("--data-dir")
            .arg(dir.path().join(&name))
            .args(["--listen-client-urls", &curl, "--advertise-client-urls", &curl])
            .args(["--listen-peer-urls", &purl, "--initial-advertise-peer-urls", &purl])
            .args(["--initial-cluster", &initial, "--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "edgeplane-bench"])
            .args(["--logger", "zap", "--log-level", "error"])
            .stdout(Stdio::null())
            .stderr(log_file(dir.path(), &format!("{name}.log"))?)
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (install etcd 3.4 with `apt-get install etcd-server`, or pass --etcd PATH)",
                    bin.display()
                )
            })?;
        children.push(child);
    }
    Ok(Cluster {
        system: System::Etcd,
        endpoints: client
            .iter()
            .map(|p| format!("http://127.0.0.1:{p}"))
            .collect(),
        children,
        _dir: dir,
    })
}

/// Starts a 3-replica Edgeplane coordinator with its defaults (snapshot every 10,000 entries
/// unless `snapshot_entries` says otherwise).
pub fn start_edgeplane(
    bin: &Path,
    parent: &Path,
    snapshot_entries: Option<u64>,
) -> anyhow::Result<Cluster> {
    if !bin.exists() {
        bail!(
            "{} not found: build it first (cargo build --release -p edgeplane-coordinator) or pass --coordinator PATH",
            bin.display()
        );
    }
    let dir = tempfile::Builder::new()
        .prefix("edgeplane-bench-")
        .tempdir_in(parent)?;
    let client = ports(3)?;
    let peer = ports(3)?;
    let initial = (0..3)
        .map(|i| format!("{}=127.0.0.1:{}", i + 1, peer[i]))
        .collect::<Vec<_>>()
        .join(",");
    let mut children = Vec::new();
    for i in 0..3 {
        let mut cmd = Command::new(bin);
        cmd.args(["--id", &(i + 1).to_string()])
            .args(["--client-addr", &format!("127.0.0.1:{}", client[i])])
            .args(["--peer-addr", &format!("127.0.0.1:{}", peer[i])])
            .args(["--initial-cluster", &initial])
            .arg("--data-dir")
            .arg(dir.path().join(format!("r{}", i + 1)))
            // Compared with etcd over plaintext: run plaintext too, explicitly.
            .arg("--insecure")
            .env("EDGEPLANE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log_file(dir.path(), &format!("r{}.log", i + 1))?);
        if let Some(n) = snapshot_entries {
            cmd.args(["--snapshot-entries", &n.to_string()]);
        }
        children.push(
            cmd.spawn()
                .with_context(|| format!("starting {}", bin.display()))?,
        );
    }
    Ok(Cluster {
        system: System::Edgeplane,
        endpoints: client
            .iter()
            .map(|p| format!("http://127.0.0.1:{p}"))
            .collect(),
        children,
        _dir: dir,
    })
}

pub fn endpoint(url: &str) -> anyhow::Result<Endpoint> {
    Ok(Endpoint::from_shared(url.to_string())
        .map_err(|e| anyhow!("bad endpoint {url}: {e}"))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .tcp_nodelay(true))
}

/// Waits until the cluster has a leader and returns the leader's client endpoint.
pub async fn leader(c: &Cluster, within: Duration) -> anyhow::Result<String> {
    let deadline = Instant::now() + within;
    loop {
        for (i, url) in c.endpoints.iter().enumerate() {
            let Ok(ch) = endpoint(url)?.connect().await else {
                continue;
            };
            match c.system {
                System::Etcd => {
                    if let Ok(r) = MaintenanceClient::new(ch).status(StatusRequest {}).await {
                        let r = r.into_inner();
                        let me = r.header.map(|h| h.member_id).unwrap_or(0);
                        if r.leader != 0 && r.leader == me {
                            return Ok(c.endpoints[i].clone());
                        }
                    }
                }
                System::Edgeplane => {
                    if let Ok(r) = AdminClient::new(ch)
                        .cluster_status(ReadRequest { stale: true })
                        .await
                    {
                        let r = r.into_inner();
                        if let Some(m) = r
                            .members
                            .iter()
                            .find(|m| m.id == r.leader_id && !m.client_addr.is_empty())
                        {
                            return Ok(format!("http://{}", m.client_addr));
                        }
                    }
                }
            }
        }
        if Instant::now() > deadline {
            bail!(
                "{} elected no leader within {within:?} (logs are in the cluster's temp dir)",
                c.system.name()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The folder that holds both clusters' data dirs: one disk for both, as the comparison needs.
pub fn data_parent(dir: Option<PathBuf>) -> PathBuf {
    dir.unwrap_or_else(std::env::temp_dir)
}
