//! Replicas as child processes of this one, so the fault schedule can SIGKILL, SIGSTOP and
//! SIGCONT them and restart them on their data dirs. Used by `edgeplane chaos --local` and
//! the CI test; against an operator's cluster only the fault hook is available.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::Error;

/// Timing and storage options passed to every replica.
#[derive(Debug, Clone)]
pub struct ReplicaOpts {
    pub tick_ms: u64,
    pub election_ticks: u64,
    pub snapshot_entries: u64,
    pub request_timeout_ms: u64,
    /// `--join-token`: lets (simulated) agents register.
    pub join_token: String,
}

impl Default for ReplicaOpts {
    fn default() -> Self {
        ReplicaOpts {
            tick_ms: 50,
            election_ticks: 10,
            snapshot_entries: 10_000,
            request_timeout_ms: 3000,
            join_token: "chaos".into(),
        }
    }
}

impl ReplicaOpts {
    pub fn election_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.tick_ms * self.election_ticks)
    }
}

struct Proc {
    client_addr: String,
    peer_addr: String,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    stopped: bool,
    /// `--initial-cluster`: the bootstrap set, or for a joiner the members it joins.
    initial_cluster: String,
}

/// A cluster of `edgeplane-coordinator` children with fault injection enabled.
pub struct LocalCluster {
    bin: PathBuf,
    opts: ReplicaOpts,
    dir: PathBuf,
    procs: BTreeMap<u64, Proc>,
    max_id: u64,
}

/// A listen port a killed replica can be restarted on (see [`crate::ports`]).
fn free_port() -> Result<u16, Error> {
    crate::ports::reserve_port().map_err(|e| Error::Process(format!("reserve a port: {e}")))
}

impl LocalCluster {
    /// Start `n` replicas (ids 1..=n) with data dirs and logs under `dir`.
    pub fn start(bin: &Path, dir: &Path, n: u64, opts: ReplicaOpts) -> Result<Self, Error> {
        if !bin.exists() {
            return Err(Error::Process(format!(
                "{} not found; build it first (cargo build -p edgeplane-coordinator)",
                bin.display()
            )));
        }
        let mut procs = BTreeMap::new();
        for id in 1..=n {
            procs.insert(
                id,
                Proc {
                    client_addr: format!("127.0.0.1:{}", free_port()?),
                    peer_addr: format!("127.0.0.1:{}", free_port()?),
                    data_dir: dir.join(format!("r{id}")),
                    log: dir.join(format!("r{id}.log")),
                    child: None,
                    stopped: false,
                    initial_cluster: String::new(),
                },
            );
        }
        let initial_cluster = procs
            .iter()
            .map(|(id, p)| format!("{id}={}", p.peer_addr))
            .collect::<Vec<_>>()
            .join(",");
        for p in procs.values_mut() {
            p.initial_cluster = initial_cluster.clone();
        }
        let mut c = LocalCluster {
            bin: bin.to_path_buf(),
            opts,
            dir: dir.to_path_buf(),
            procs,
            max_id: n,
        };
        for id in 1..=n {
            c.restart(id)?;
        }
        Ok(c)
    }

    pub fn opts(&self) -> &ReplicaOpts {
        &self.opts
    }

    /// id -> client (Admin) address.
    pub fn members(&self) -> BTreeMap<u64, String> {
        self.procs
            .iter()
            .map(|(id, p)| (*id, p.client_addr.clone()))
            .collect()
    }

    /// The largest replica id ever started here (ids are never reused).
    pub fn max_id(&self) -> u64 {
        self.max_id
    }

    pub fn is_running(&self, id: u64) -> bool {
        self.procs.get(&id).is_some_and(|p| p.child.is_some())
    }

    /// Start replica `id` on its data dir (no-op when it runs).
    pub fn restart(&mut self, id: u64) -> Result<(), Error> {
        let o = self.opts.clone();
        let p = self
            .procs
            .get_mut(&id)
            .ok_or_else(|| Error::Process(format!("no replica {id}")))?;
        if p.child.is_some() {
            return Ok(());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p.log)
            .map_err(|e| Error::Process(format!("open {}: {e}", p.log.display())))?;
        let child = Command::new(&self.bin)
            .args(["--id", &id.to_string()])
            .args(["--client-addr", &p.client_addr])
            .args(["--peer-addr", &p.peer_addr])
            .args(["--initial-cluster", &p.initial_cluster])
            .arg("--data-dir")
            .arg(&p.data_dir)
            .args(["--tick-ms", &o.tick_ms.to_string()])
            .args(["--election-ticks", &o.election_ticks.to_string()])
            .args(["--snapshot-entries", &o.snapshot_entries.to_string()])
            .args(["--request-timeout-ms", &o.request_timeout_ms.to_string()])
            .args(["--enable-fault-injection", "true"])
            .args(["--join-token", &o.join_token])
            // The fault suite checks consistency, not security: plaintext, explicitly.
            .arg("--insecure")
            .env("EDGEPLANE_LOG", "info,raft=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| Error::Process(format!("start {}: {e}", self.bin.display())))?;
        p.child = Some(child);
        p.stopped = false;
        Ok(())
    }

    /// Start a new replica `id` that joins `members` (id -> peer address; the replicas it
    /// should contact). Returns (peer address, client address) for `member add`.
    pub fn add_replica(
        &mut self,
        id: u64,
        members: &BTreeMap<u64, String>,
    ) -> Result<(String, String), Error> {
        if self.procs.contains_key(&id) {
            return Err(Error::Process(format!("replica {id} exists already")));
        }
        let p = Proc {
            client_addr: format!("127.0.0.1:{}", free_port()?),
            peer_addr: format!("127.0.0.1:{}", free_port()?),
            data_dir: self.dir.join(format!("r{id}")),
            log: self.dir.join(format!("r{id}.log")),
            child: None,
            stopped: false,
            initial_cluster: members
                .iter()
                .map(|(i, a)| format!("{i}={a}"))
                .collect::<Vec<_>>()
                .join(","),
        };
        let out = (p.peer_addr.clone(), p.client_addr.clone());
        self.procs.insert(id, p);
        self.max_id = self.max_id.max(id);
        self.restart(id)?;
        Ok(out)
    }

    /// Kill replica `id` for good and forget it (after it was removed from the cluster).
    pub fn decommission(&mut self, id: u64) {
        self.kill(id);
        self.procs.remove(&id);
    }

    /// SIGKILL replica `id` and reap it.
    pub fn kill(&mut self, id: u64) {
        if let Some(p) = self.procs.get_mut(&id) {
            if let Some(mut c) = p.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
            p.stopped = false;
        }
    }

    fn signal(&mut self, id: u64, sig: libc::c_int) -> Result<(), Error> {
        let p = self
            .procs
            .get_mut(&id)
            .ok_or_else(|| Error::Process(format!("no replica {id}")))?;
        let Some(c) = &p.child else {
            return Err(Error::Process(format!("replica {id} is not running")));
        };
        let pid = c.id() as libc::pid_t;
        // SAFETY: plain kill(2) on our own child's pid; the child is not reaped yet (we hold
        // its `Child`), so the pid cannot have been reused.
        let rc = unsafe { libc::kill(pid, sig) };
        if rc != 0 {
            return Err(Error::Process(format!(
                "kill({pid}, {sig}): {}",
                std::io::Error::last_os_error()
            )));
        }
        p.stopped = sig == libc::SIGSTOP;
        Ok(())
    }

    /// SIGSTOP: the process stays, silent (a GC pause / a frozen VM).
    pub fn pause(&mut self, id: u64) -> Result<(), Error> {
        self.signal(id, libc::SIGSTOP)
    }

    /// SIGCONT after [`pause`](Self::pause).
    pub fn resume(&mut self, id: u64) -> Result<(), Error> {
        self.signal(id, libc::SIGCONT)
    }

    /// The last `lines` lines of replica `id`'s log (for failure reports).
    pub fn log_tail(&self, id: u64, lines: usize) -> String {
        let Some(p) = self.procs.get(&id) else {
            return String::new();
        };
        let s = std::fs::read_to_string(&p.log).unwrap_or_default();
        let v: Vec<&str> = s.lines().collect();
        v[v.len().saturating_sub(lines)..].join("\n")
    }

    pub fn data_dir(&self, id: u64) -> Option<&Path> {
        self.procs.get(&id).map(|p| p.data_dir.as_path())
    }

    pub fn peer_addr(&self, id: u64) -> Option<&str> {
        self.procs.get(&id).map(|p| p.peer_addr.as_str())
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        let ids: Vec<u64> = self.procs.keys().copied().collect();
        for id in ids {
            if self.procs[&id].stopped {
                let _ = self.resume(id);
            }
            self.kill(id);
        }
    }
}
