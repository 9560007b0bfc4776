//! A harness that runs real `edgeplane-coordinator` processes on loopback: start, SIGKILL,
//! restart with the same data dir, talk Admin gRPC to any replica, cut links through the
//! replicas' fault-injection hook. Other test modules (the agent tests) can reuse it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use edgeplane_proto::admin::{self as api, admin_client::AdminClient};
use tonic::transport::Channel;

use crate::support::free_port;

/// Path to `edgeplane-coordinator` or `edgeplane` (see [`crate::support::bin`]).
pub fn bin(name: &str) -> PathBuf {
    crate::support::bin(name)
}

/// Coordinator tests measure timings on a 2-core machine: the modules that start clusters
/// (`coordinator`, `coord_defects`) run their tests one at a time through this lock.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Timing and feature options for a test cluster.
#[derive(Debug, Clone)]
pub struct Opts {
    pub tick_ms: u64,
    pub election_ticks: usize,
    pub snapshot_entries: u64,
    pub request_timeout_ms: u64,
    pub join_token: Option<String>,
    /// Extra environment for every replica process (e.g. a storage fault hook).
    pub env: Vec<(String, String)>,
    /// Run the replicas with `--insecure` (plaintext) instead of mutual TLS.
    pub insecure: bool,
    /// Members started with the test CA's key (`--tls-ca-key`): they sign the certificates
    /// of agents joining with a per-node token.
    pub ca_key_on: Vec<u64>,
}

impl Default for Opts {
    /// Fast ticks for tests that do not measure failover time.
    fn default() -> Self {
        Opts {
            tick_ms: 50,
            election_ticks: 10,
            snapshot_entries: 10_000,
            request_timeout_ms: 3000,
            join_token: None,
            env: Vec::new(),
            insecure: false,
            ca_key_on: Vec::new(),
        }
    }
}

impl Opts {
    /// The production election settings (tick 100 ms, election 10 ticks).
    pub fn election_defaults() -> Self {
        Opts {
            tick_ms: 100,
            election_ticks: 10,
            ..Default::default()
        }
    }
    /// A plaintext cluster whose leader plans every 200 ms over a 1 s rate window, with a
    /// shared bootstrap join token: the placement tests (the planner, not TLS, is under test).
    pub fn fast_planner(join_token: &str) -> Self {
        Opts {
            insecure: true,
            join_token: Some(join_token.into()),
            env: vec![
                (
                    "EDGEPLANE_COORDINATOR_PLAN_INTERVAL_MS".into(),
                    "200".into(),
                ),
                ("EDGEPLANE_COORDINATOR_RATE_WINDOW_MS".into(), "1000".into()),
            ],
            ..Default::default()
        }
    }
    pub fn election_timeout(&self) -> Duration {
        Duration::from_millis(self.tick_ms * self.election_ticks as u64)
    }
}

/// One replica process.
pub struct Replica {
    pub id: u64,
    pub client_addr: String,
    pub peer_addr: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
    initial_cluster: String,
}

/// A set of replica processes sharing one temp dir.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub opts: Opts,
    pub replicas: BTreeMap<u64, Replica>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for r in self.replicas.values() {
                let log = std::fs::read_to_string(&r.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                eprintln!("--- replica {} log (last lines) ---", r.id);
                for l in tail.iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
        for r in self.replicas.values_mut() {
            if let Some(mut c) = r.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

impl Cluster {
    /// Start `n` replicas with ids 1..=n bootstrapped as one cluster.
    pub fn start(n: u64, opts: Opts) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut replicas = BTreeMap::new();
        let peers: Vec<(u64, String)> = (1..=n)
            .map(|id| (id, format!("127.0.0.1:{}", free_port())))
            .collect();
        let ic = peers
            .iter()
            .map(|(id, a)| format!("{id}={a}"))
            .collect::<Vec<_>>()
            .join(",");
        for (id, peer) in peers {
            replicas.insert(
                id,
                Replica {
                    id,
                    client_addr: format!("127.0.0.1:{}", free_port()),
                    peer_addr: peer,
                    data_dir: dir.path().join(format!("r{id}")),
                    log: dir.path().join(format!("r{id}.log")),
                    child: None,
                    initial_cluster: ic.clone(),
                },
            );
        }
        let mut c = Cluster {
            dir,
            opts,
            replicas,
        };
        let ids: Vec<u64> = c.replicas.keys().copied().collect();
        for id in ids {
            c.spawn(id);
        }
        c
    }

    /// Prepare (not start) a replica that will join: its initial cluster lists the others.
    pub fn add_joiner(&mut self, id: u64) -> (String, String) {
        let ic = self
            .replicas
            .values()
            .map(|r| format!("{}={}", r.id, r.peer_addr))
            .collect::<Vec<_>>()
            .join(",");
        let r = Replica {
            id,
            client_addr: format!("127.0.0.1:{}", free_port()),
            peer_addr: format!("127.0.0.1:{}", free_port()),
            data_dir: self.dir.path().join(format!("r{id}")),
            log: self.dir.path().join(format!("r{id}.log")),
            child: None,
            initial_cluster: ic,
        };
        let out = (r.peer_addr.clone(), r.client_addr.clone());
        self.replicas.insert(id, r);
        out
    }

    /// Start (or restart) replica `id` with its data dir.
    pub fn spawn(&mut self, id: u64) {
        let o = self.opts.clone();
        let r = self.replicas.get_mut(&id).expect("replica");
        assert!(r.child.is_none(), "replica {id} already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&r.log)
            .expect("log file");
        let mut cmd = Command::new(bin("edgeplane-coordinator"));
        cmd.args(["--id", &id.to_string()])
            .args(["--client-addr", &r.client_addr])
            .args(["--peer-addr", &r.peer_addr])
            .args(["--initial-cluster", &r.initial_cluster])
            .arg("--data-dir")
            .arg(&r.data_dir)
            .args(["--tick-ms", &o.tick_ms.to_string()])
            .args(["--election-ticks", &o.election_ticks.to_string()])
            .args(["--snapshot-entries", &o.snapshot_entries.to_string()])
            .args(["--request-timeout-ms", &o.request_timeout_ms.to_string()])
            .args(["--enable-fault-injection", "true"])
            .env("EDGEPLANE_LOG", "info,raft=info")
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(t) = &o.join_token {
            cmd.args(["--join-token", t]);
        }
        if o.insecure {
            cmd.arg("--insecure");
        } else {
            let t = crate::support::tls();
            cmd.args(t.args(&t.member(id)));
            if o.ca_key_on.contains(&id) {
                cmd.arg("--tls-ca-key")
                    .arg(t.dir.join(edgeplane_tls::certs::CA_KEY));
            }
        }
        for (k, v) in &o.env {
            cmd.env(k, v);
        }
        r.child = Some(cmd.spawn().expect("start edgeplane-coordinator"));
    }

    /// SIGKILL replica `id` and wait for it to die.
    pub fn kill(&mut self, id: u64) {
        let r = self.replicas.get_mut(&id).expect("replica");
        if let Some(mut c) = r.child.take() {
            c.kill().expect("SIGKILL");
            c.wait().expect("reap");
        }
    }

    /// The exit status of replica `id` if its process has ended (it is then no longer
    /// counted as running).
    pub fn exited(&mut self, id: u64) -> Option<std::process::ExitStatus> {
        let r = self.replicas.get_mut(&id).expect("replica");
        let st = r.child.as_mut()?.try_wait().expect("try_wait")?;
        r.child = None;
        Some(st)
    }

    /// The process id of replica `id`, while it runs.
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.replicas[&id].child.as_ref().map(Child::id)
    }

    pub fn running(&self) -> Vec<u64> {
        self.replicas
            .values()
            .filter(|r| r.child.is_some())
            .map(|r| r.id)
            .collect()
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.running()
            .iter()
            .map(|id| self.replicas[id].client_addr.clone())
            .collect()
    }

    pub fn log_of(&self, id: u64) -> String {
        std::fs::read_to_string(&self.replicas[&id].log).unwrap_or_default()
    }

    /// An Admin client for replica `id` (fails fast if it does not answer).
    pub async fn client(&self, id: u64) -> Result<AdminClient<Channel>, tonic::Status> {
        let tls = if self.opts.insecure {
            edgeplane_tls::ClientTls::insecure()
        } else {
            crate::support::tls().admin()
        };
        let ep = tls
            .endpoint(&self.replicas[&id].client_addr)
            .expect("endpoint")
            .connect_timeout(Duration::from_millis(300))
            .timeout(Duration::from_secs(5));
        let ch = ep
            .connect()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        Ok(AdminClient::new(ch))
    }

    pub async fn status(&self, id: u64) -> Option<api::ClusterStatusResponse> {
        let mut c = self.client(id).await.ok()?;
        c.cluster_status(api::ReadRequest { stale: true })
            .await
            .ok()
            .map(|r| r.into_inner())
    }

    /// The leader all running replicas agree on, waiting up to `timeout`.
    pub async fn leader(&self, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let mut seen = Vec::new();
            for id in self.running() {
                if let Some(s) = self.status(id).await {
                    seen.push(s.leader_id);
                }
            }
            if let Some(&l) = seen.first() {
                if l != 0 && seen.iter().all(|x| *x == l) && self.running().contains(&l) {
                    return l;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no agreed leader within {timeout:?}: {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Deploy a model through replica `id` with a given (client id, seq).
    pub async fn deploy_via(
        &self,
        id: u64,
        name: &str,
        client_id: u64,
        seq: u64,
        rate: f64,
    ) -> Result<api::WriteResponse, tonic::Status> {
        let mut c = self.client(id).await?;
        c.deploy_model(api::DeployModelRequest {
            meta: Some(api::WriteMeta { client_id, seq }),
            name: name.to_string(),
            slo_ms: 25.0,
            rate,
            memory_mb: 10,
        })
        .await
        .map(|r| r.into_inner())
    }

    /// Model names on replica `id` (stale read of its own state).
    pub async fn models_on(&self, id: u64) -> Option<Vec<String>> {
        let mut c = self.client(id).await.ok()?;
        let r = c.list_models(api::ReadRequest { stale: true }).await.ok()?;
        Some(r.into_inner().models.into_iter().map(|m| m.name).collect())
    }

    /// Cut (or heal) the link between replicas `a` and `b` on both ends.
    pub async fn set_link(&self, a: u64, b: u64, cut: bool) {
        use api::inject_fault_request::Mode;
        for (x, y) in [(a, b), (b, a)] {
            if !self.running().contains(&x) {
                continue;
            }
            let mut c = self.client(x).await.expect("client for fault injection");
            c.inject_fault(api::InjectFaultRequest {
                peer: y,
                mode: if cut { Mode::Drop } else { Mode::Heal } as i32,
                delay_ms: 0,
                heal_all: false,
            })
            .await
            .expect("inject fault");
        }
    }

    /// Delay (or heal, with 0) every batch on the link between `a` and `b`, on `a`'s end
    /// (both directions as `a` sees them).
    pub async fn set_delay(&self, a: u64, b: u64, delay_ms: u64) {
        use api::inject_fault_request::Mode;
        let mut c = self.client(a).await.expect("client for fault injection");
        c.inject_fault(api::InjectFaultRequest {
            peer: b,
            mode: if delay_ms > 0 {
                Mode::Delay
            } else {
                Mode::Heal
            } as i32,
            delay_ms,
            heal_all: false,
        })
        .await
        .expect("inject fault");
    }
}
