//! The GPU-box driver shared by `edgeplane demo` and `edgeplane bench partition --live`: both
//! start a local coordinator cluster and agents with simulated GPUs (`--accelerators
//! sim-gpu:<profile>`) as real processes on loopback, wait for them, deploy the seed workload
//! through the Admin API and send `Infer` requests to the agents.
//!
//! What lives here is what both did with copied code: free loopback ports, the driver's
//! links (Admin API as an `admin` user, the agents' Infer API as a client; mutual TLS or
//! plaintext), the leader lookup, polling with a deadline, and the command line of a
//! simulated-GPU agent.

use anyhow::{bail, Context as _};
use edgeplane_proto::admin::{self as api, admin_client::AdminClient};
use edgeplane_proto::agent::inference_client::InferenceClient;
use edgeplane_tls::{ClientTls, ClusterMaterial, Dial, Expect, TlsMaterial, TlsPaths};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// A free loopback port below the ephemeral range (see `edgeplane_chaos::ports`: a child
/// restarted on it cannot find it taken by an outgoing connection).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(edgeplane_chaos::reserve_port()?)
}

/// `n` fresh `127.0.0.1:<port>` addresses.
pub fn loopback_addrs(n: usize) -> anyhow::Result<Vec<String>> {
    (0..n)
        .map(|_| free_port().map(|p| format!("127.0.0.1:{p}")))
        .collect()
}

/// `1=peer1,2=peer2,...` for `--initial-cluster` (member ids from 1).
pub fn initial_cluster(peers: &[String]) -> String {
    peers
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{}={p}", i + 1))
        .collect::<Vec<_>>()
        .join(",")
}

/// The driver's side of its links: the identity it uses for the Admin API (an `admin`
/// user) and the one for the agents' Infer and Status calls (a `client`), both mutual TLS
/// with a throwaway CA, or both plaintext.
#[derive(Clone, Default)]
pub struct Links {
    pub admin: ClientTls,
    pub infer: ClientTls,
    /// Where the material is (None: plaintext).
    pub material: Option<ClusterMaterial>,
}

/// The file names of the client certificate [`edgeplane_tls::generate_cluster_material`]
/// issues (`client-client.pem`).
const CLIENT_STEM: &str = "client-client";

impl Links {
    /// Plaintext links, for processes started with `--insecure`.
    pub fn insecure() -> Links {
        Links::default()
    }

    /// Generate a CA and certificates into `dir` (members `1..=members`, a node certificate
    /// for each of `nodes`, users `admin`/`operator`/`viewer`, a client) and use the `admin`
    /// user and the client.
    pub fn generate(dir: &Path, members: u64, nodes: &[&str]) -> anyhow::Result<Links> {
        let ids: Vec<u64> = (1..=members).collect();
        let m = edgeplane_tls::generate_cluster_material(dir, &ids, nodes)
            .with_context(|| format!("generating TLS material in {}", dir.display()))?;
        let load = |p: edgeplane_tls::CertPaths| -> anyhow::Result<ClientTls> {
            Ok(ClientTls(Some(TlsMaterial::load(TlsPaths {
                ca: m.ca(),
                cert: p.cert,
                key: p.key,
            })?)))
        };
        Ok(Links {
            admin: load(m.admin())?,
            infer: load(m.paths(CLIENT_STEM))?,
            material: Some(m),
        })
    }

    pub fn tls(&self) -> bool {
        self.material.is_some()
    }

    /// The `--tls-ca/--tls-cert/--tls-key` flags of a process holding the certificate
    /// `stem` (`member-1`, `node-edge-1`), or `--insecure`.
    pub fn server_flags(&self, stem: &str) -> Vec<String> {
        match &self.material {
            Some(m) => {
                let p = m.paths(stem);
                vec![
                    "--tls-ca".into(),
                    m.ca().display().to_string(),
                    "--tls-cert".into(),
                    p.cert.display().to_string(),
                    "--tls-key".into(),
                    p.key.display().to_string(),
                ]
            }
            None => vec!["--insecure".into()],
        }
    }

    /// An Admin API endpoint (connect within 300 ms, answers within `timeout`).
    pub fn admin_endpoint(&self, addr: &str, timeout: Duration) -> anyhow::Result<Dial> {
        endpoint(&self.admin, addr, Expect::AnyMember, timeout)
    }

    /// An Infer API endpoint of an agent (connect within 300 ms, answers within `timeout`).
    pub fn infer_endpoint(&self, addr: &str, timeout: Duration) -> anyhow::Result<Dial> {
        endpoint(&self.infer, addr, Expect::AnyNode, timeout)
    }

    /// A connected Admin client, or None when `addr` does not answer.
    pub async fn admin(&self, addr: &str, timeout: Duration) -> Option<AdminClient<Channel>> {
        let ch = self
            .admin_endpoint(addr, timeout)
            .ok()?
            .connect()
            .await
            .ok()?;
        Some(AdminClient::new(ch))
    }

    /// A connected Inference client, or None when `addr` does not answer.
    pub async fn infer(&self, addr: &str, timeout: Duration) -> Option<InferenceClient<Channel>> {
        let ch = self
            .infer_endpoint(addr, timeout)
            .ok()?
            .connect()
            .await
            .ok()?;
        Some(InferenceClient::new(ch))
    }

    /// (leader id, leader client address), asking each of `addrs` in turn (a member's own
    /// view, `stale`).
    pub async fn leader(&self, addrs: &[String], timeout: Duration) -> Option<(u64, String)> {
        for a in addrs {
            if let Some(mut c) = self.admin(a, timeout).await {
                if let Ok(r) = c.cluster_status(api::ReadRequest { stale: true }).await {
                    let r = r.into_inner();
                    if let Some(m) = r.members.iter().find(|m| m.id == r.leader_id) {
                        if r.leader_id != 0 && !m.client_addr.is_empty() {
                            return Some((r.leader_id, m.client_addr.clone()));
                        }
                    }
                }
            }
        }
        None
    }
}

fn endpoint(
    tls: &ClientTls,
    addr: &str,
    expect: Expect,
    timeout: Duration,
) -> anyhow::Result<Dial> {
    Ok(tls
        .endpoint_to(addr, expect)?
        .connect_timeout(Duration::from_millis(300))
        .timeout(timeout)
        .tcp_nodelay(true))
}

/// Poll `f` every `every` until it yields a value; an error naming `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(
    timeout: Duration,
    every: Duration,
    what: &str,
    mut f: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("{what}: not within {timeout:?}");
        }
        tokio::time::sleep(every).await;
    }
}

/// An agent with simulated GPUs of one profile, registered with a local cluster.
pub struct SimGpuAgent<'a> {
    pub name: &'a str,
    pub listen: &'a str,
    pub data_dir: PathBuf,
    /// GPU profile (`Jetson-AGX-Xavier`, `A100-80GB`, ...).
    pub gpu: &'a str,
    pub coordinators: &'a [String],
    pub join_token: &'a str,
    pub report_interval_ms: u64,
    pub max_backoff_ms: u64,
    /// `--worker-start-ms` (the agent's default when None).
    pub worker_start_ms: Option<u64>,
}

impl SimGpuAgent<'_> {
    /// The agent's flags, TLS ones (its node certificate, `node-<name>`) included.
    pub fn args(&self, links: &Links) -> Vec<String> {
        let mut v: Vec<String> = vec![
            "--name".into(),
            self.name.into(),
            "--listen".into(),
            self.listen.into(),
            "--data-dir".into(),
            self.data_dir.display().to_string(),
            "--accelerators".into(),
            format!("sim-gpu:{}", self.gpu),
        ];
        if let Some(ms) = self.worker_start_ms {
            v.extend(["--worker-start-ms".into(), ms.to_string()]);
        }
        v.extend([
            "--report-interval-ms".into(),
            self.report_interval_ms.to_string(),
            "--max-backoff-ms".into(),
            self.max_backoff_ms.to_string(),
            "--coordinators".into(),
            self.coordinators.join(","),
            "--join-token".into(),
            self.join_token.into(),
        ]);
        v.extend(links.server_flags(&format!("node-{}", self.name)));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sim_gpu_agent_flags_carry_its_node_certificate_or_insecure() {
        let coords = vec!["127.0.0.1:1".to_string(), "127.0.0.1:2".to_string()];
        let a = SimGpuAgent {
            name: "gpu-box",
            listen: "127.0.0.1:3",
            data_dir: PathBuf::from("/tmp/x"),
            gpu: "V100",
            coordinators: &coords,
            join_token: "t",
            report_interval_ms: 500,
            max_backoff_ms: 500,
            worker_start_ms: None,
        };
        let plain = a.args(&Links::insecure()).join(" ");
        assert!(plain.contains("--accelerators sim-gpu:V100"), "{plain}");
        assert!(
            plain.contains("--coordinators 127.0.0.1:1,127.0.0.1:2"),
            "{plain}"
        );
        assert!(plain.ends_with("--insecure"), "{plain}");
        assert!(!plain.contains("--worker-start-ms"), "{plain}");
        let dir = tempfile::tempdir().unwrap();
        let links = Links::generate(dir.path(), 3, &["gpu-box"]).unwrap();
        let tls = a.args(&links).join(" ");
        assert!(tls.contains("node-gpu-box.pem"), "{tls}");
        assert!(tls.contains("--tls-ca"), "{tls}");
        assert!(!tls.contains("--insecure"), "{tls}");
        assert_eq!(initial_cluster(&coords), "1=127.0.0.1:1,2=127.0.0.1:2");
    }
}
