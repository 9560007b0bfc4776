//! Process assembly: storage, raft thread, transport, the peer and client gRPC servers,
//! metrics, and graceful shutdown driven by one broadcast channel.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use edgeplane_proto::admin::admin_server::AdminServer;
use edgeplane_proto::raft::raft_transport_server::RaftTransportServer;
use edgeplane_proto::raft::{self as pb, command::Kind};
use tokio::sync::broadcast;
use tonic::service::RoutesBuilder;
use tonic::transport::server::TcpIncoming;

use crate::admin::AdminService;
use crate::config::Config;
use crate::inbox::Inbox;
use crate::live::LiveStats;
use crate::metrics::Metrics;
use crate::node::{ClientIds, ExitReason, Handle, HandleInner, LoopConfig, Shared};
use crate::raft_loop::RaftLoop;
use crate::state::{Member, State};
use crate::storage::{RaftStore, SledBackend, SyncCounter};
use crate::transport::{Transport, TransportService};

/// Accepted sockets with `TCP_NODELAY` set. Why: without it a small gRPC response waits for
/// the client's delayed ACK (Nagle), about 40 ms per call. tonic's `Server::tcp_nodelay`
/// only applies to listeners it binds itself, not to an incoming stream we hand it, so
/// every server of this project (admin/agent, peer, and the agent's `Inference`) goes
/// through this.
pub fn nodelay_incoming(listener: tokio::net::TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// Errors while starting a replica.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "data dir {dir} is in use by another coordinator (lock {lock} is held); stop that \
         replica or pick another --data-dir"
    )]
    Locked { dir: String, lock: String },
    #[error("opening the data dir {dir}: {source}")]
    Storage {
        dir: String,
        source: crate::storage::StorageError,
    },
    #[error("binding {field} {addr}: {source}")]
    Bind {
        field: &'static str,
        addr: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Node(#[from] crate::node::Error),
    #[error("starting the raft thread: {0}")]
    Thread(std::io::Error),
    #[error(transparent)]
    Tls(#[from] edgeplane_tls::Error),
    #[error(
        "--tls-cert: the certificate is {got}, but this replica is --id {id}; give it the \
         certificate issued for member {id} (`edgeplane certs issue member --id {id}`)"
    )]
    WrongIdentity {
        id: u64,
        got: edgeplane_tls::Identity,
    },
}

/// Node certificates revoked in the replicated state (this replica's view) are refused on
/// every call of the client port.
fn revocation(handle: &Handle) -> edgeplane_tls::Revoked {
    let h = handle.clone();
    Arc::new(move |sha: &[u8; 32]| h.stale_state().is_revoked(sha))
}

/// A replica serves and dials only as the member its `--id` names.
fn check_member_identity(id: u64, got: &edgeplane_tls::Identity) -> Result<(), StartError> {
    if got.principal == edgeplane_tls::Principal::Member(id) {
        Ok(())
    } else {
        Err(StartError::WrongIdentity {
            id,
            got: got.clone(),
        })
    }
}

/// Installs one more tonic service on the client-address server.
pub type ServiceInstaller = Box<dyn FnOnce(&Handle, &mut RoutesBuilder) + Send>;

/// What other modules (the agent side) plug into a replica.
#[derive(Default)]
pub struct Extensions {
    /// Leader-memory statistics merged into `nodes list` / `models list`.
    pub live_stats: Option<Arc<dyn LiveStats>>,
    /// Extra gRPC services served on `--client-addr` next to `Admin`.
    pub services: Vec<ServiceInstaller>,
}

/// A running replica.
pub struct Coordinator {
    /// The data dir's lock, held for as long as the replica runs.
    _lock: std::fs::File,
    handle: Handle,
    shutdown: broadcast::Sender<()>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    raft_thread: Option<std::thread::JoinHandle<()>>,
}

impl Coordinator {
    /// Open storage, start the raft thread and every server. Returns once listening.
    pub async fn start(cfg: Config, ext: Extensions) -> Result<Coordinator, StartError> {
        let lock = lock_data_dir(&cfg.data_dir)?;
        // TLS first: a member must not bootstrap or open storage under the wrong identity.
        let tls = edgeplane_tls::load_or_insecure(cfg.tls.clone(), cfg.insecure)?;
        if let Some(m) = &tls {
            check_member_identity(cfg.id, &m.identity())?;
            m.spawn_reloader(Duration::from_secs(2));
            tracing::info!(identity = %m.identity(), "mutual TLS on the peer and client ports");
        }
        let store = open_store(&cfg)?;

        let client_tls = edgeplane_tls::ClientTls(tls.clone());
        let ca = load_ca(&cfg)?;
        let (shutdown, _) = broadcast::channel(4);
        let (inbox, rx) = Inbox::new();
        let initial: HashMap<u64, String> = cfg.initial_cluster.clone().into_iter().collect();
        let transport = Transport::new(
            cfg.id,
            cfg.peer_addr.clone(),
            tokio::runtime::Handle::current(),
            inbox.clone(),
            &initial,
            cfg.enable_fault_injection,
            client_tls.clone(),
        );
        let metrics = Arc::new(Metrics::default());
        let shared = Shared::new(metrics.clone());
        let loop_cfg = LoopConfig {
            id: cfg.id,
            tick: cfg.tick(),
            election_ticks: cfg.election_ticks,
            heartbeat_ticks: cfg.heartbeat_ticks,
            snapshot_entries: cfg.snapshot_entries,
            catch_up_entries: cfg.snapshot_entries.min(5_000),
            request_timeout: cfg.request_timeout(),
        };
        let logger = crate::logging::raft_logger(cfg.id);
        let raft_loop = RaftLoop::new(
            loop_cfg,
            store,
            shared.clone(),
            Box::new(transport.clone()),
            inbox.clone(),
            rx,
            &logger,
        )?;
        let raft_thread = std::thread::Builder::new()
            .name(format!("raft-{}", cfg.id))
            .spawn(move || raft_loop.run())
            .map_err(StartError::Thread)?;

        let handle = Handle {
            inner: Arc::new(HandleInner {
                id: cfg.id,
                inbox,
                ids: ClientIds::new(cfg.id, crate::reads::boot_nonce()),
                shared,
                request_timeout: cfg.request_timeout(),
                join_token: cfg.join_token.clone(),
                client_addr: cfg.client_addr.clone(),
                ca,
                client_tls: client_tls.clone(),
                forward: Box::new(crate::forward::Forwarder::new(client_tls.clone())),
            }),
        };

        let mut tasks =
            vec![serve_peer(&cfg, &transport, tls.clone(), shutdown.subscribe()).await?];

        let client = ClientServer {
            handle: &handle,
            transport: &transport,
            tls: tls.clone(),
            shutdown: &shutdown,
        };
        tasks.extend(client.serve(&cfg, ext).await?);

        if let Some(addr) = &cfg.metrics_addr {
            let l = bind("metrics_addr", addr).await?;
            tasks.push(tokio::spawn(crate::metrics::serve(
                l,
                metrics.clone(),
                shutdown.subscribe(),
            )));
        }

        tasks.push(announce_addresses(
            handle.clone(),
            &cfg,
            shutdown.subscribe(),
        ));
        tracing::info!(id = cfg.id, client = %cfg.client_addr, peer = %cfg.peer_addr, "coordinator replica started");
        // systemd (Type=notify): the ports are bound and served.
        edgeplane_telemetry::service::ready();
        Ok(Coordinator {
            _lock: lock,
            handle,
            shutdown,
            tasks,
            raft_thread: Some(raft_thread),
        })
    }

    /// The local replica.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Resolves when the replica must end: it was removed from the cluster, or its storage
    /// failed (then the process should exit non-zero at once: crash-only).
    pub async fn exit_reason(&self) -> ExitReason {
        let mut w = self.handle.exit_reason();
        loop {
            if let Some(r) = w.borrow_and_update().clone() {
                return r;
            }
            if w.changed().await.is_err() {
                // The loop is gone without a reason: treat it as fatal.
                return ExitReason::Fatal("the raft loop stopped".into());
            }
        }
    }

    /// A receiver that fires when the replica shuts down (for extension tasks).
    pub fn shutdown_guard(&self) -> broadcast::Receiver<()> {
        self.shutdown.subscribe()
    }

    /// Stop servers, then the raft loop; waits for both.
    pub async fn shutdown(mut self) {
        edgeplane_telemetry::service::stopping();
        // A planned stop of the leader hands leadership over first, so clients see a
        // short transfer instead of a full election timeout.
        if self.handle.leadership().borrow().is_leader {
            let rs = self.handle.raft_status();
            if let Some(&to) = rs.voters.iter().find(|v| **v != rs.id) {
                if self.handle.transfer_leader(to).await.is_ok() {
                    let mut w = self.handle.leadership();
                    let _ = tokio::time::timeout(Duration::from_secs(1), async {
                        while w.borrow_and_update().is_leader {
                            if w.changed().await.is_err() {
                                break;
                            }
                        }
                    })
                    .await;
                    tracing::info!(to, "handed leadership over before stopping");
                }
            }
        }
        let _ = self.shutdown.send(());
        for t in self.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(3), t).await;
        }
        self.handle.stop();
        if let Some(t) = self.raft_thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        tracing::info!("coordinator replica stopped");
    }
}

/// Serve `routes` on `l` behind the authorization layer: over mutual TLS with `tls`,
/// plaintext without (`--insecure`).
pub async fn serve_routes(
    name: &'static str,
    routes: tonic::service::Routes,
    l: tokio::net::TcpListener,
    tls: Option<Arc<edgeplane_tls::TlsMaterial>>,
    layer: edgeplane_tls::AuthLayer,
    sd: broadcast::Receiver<()>,
) {
    serve_routes_with(
        name,
        routes,
        l,
        tls,
        layer,
        edgeplane_tls::ClientCerts::Required,
        sd,
    )
    .await
}

/// [`serve_routes`] with a choice of whether clients must present a certificate.
pub async fn serve_routes_with(
    name: &'static str,
    routes: tonic::service::Routes,
    l: tokio::net::TcpListener,
    tls: Option<Arc<edgeplane_tls::TlsMaterial>>,
    layer: edgeplane_tls::AuthLayer,
    certs: edgeplane_tls::ClientCerts,
    mut sd: broadcast::Receiver<()>,
) {
    let stop = async move {
        let _ = sd.recv().await;
    };
    let _ = edgeplane_tls::serve_routes_with(name, routes, l, tls, layer, certs, stop).await;
}

/// Open the Raft log under the data dir; bootstrap the initial cluster into an empty one
/// (unless joining).
fn open_store(cfg: &Config) -> Result<RaftStore, StartError> {
    let dir = cfg.data_dir.join("raft");
    let fail_after = cfg.fault_fsync_fail_after;
    if let Some(n) = fail_after {
        tracing::warn!(
            after = n,
            "fault injection: fsync will fail after {n} calls"
        );
    }
    let backend = SledBackend::open_with(&dir, SyncCounter::new(fail_after)).map_err(|source| {
        StartError::Storage {
            dir: dir.display().to_string(),
            source,
        }
    })?;
    let mut store = RaftStore::open(Box::new(backend)).map_err(|source| StartError::Storage {
        dir: dir.display().to_string(),
        source,
    })?;
    if store.is_empty() {
        if cfg.join {
            tracing::info!(id = cfg.id, "empty data dir: joining an existing cluster");
        } else {
            let mut st = State::default();
            for (id, addr) in &cfg.initial_cluster {
                st.members.insert(
                    *id,
                    Member {
                        id: *id,
                        peer_addr: addr.clone(),
                        client_addr: String::new(),
                        learner: false,
                    },
                );
            }
            store
                .bootstrap(cfg.initial_cluster.keys().copied().collect(), st.encode())
                .map_err(|source| StartError::Storage {
                    dir: dir.display().to_string(),
                    source,
                })?;
            tracing::info!(id = cfg.id, voters = ?cfg.initial_cluster.keys().collect::<Vec<_>>(), "bootstrapped a new cluster");
        }
    } else {
        tracing::info!(
            id = cfg.id,
            "data dir holds state: resuming (initial cluster ignored)"
        );
    }
    Ok(store)
}

/// The CA key signs the certificates of agents that join with a per-node token.
fn load_ca(cfg: &Config) -> Result<Option<Arc<edgeplane_tls::CaSigner>>, StartError> {
    // The CA key signs the certificates of agents that join with a per-node token.
    Ok(match (&cfg.tls_ca_key, &cfg.tls) {
        (Some(key), Some(paths)) => {
            let ca = edgeplane_tls::CaSigner::load(&paths.ca, key)?;
            // A CA rotation (new key, bundle of old and new certificates) reaches the
            // signer like the rest of the TLS material: on change or SIGHUP.
            edgeplane_tls::spawn_reloader(&ca, Duration::from_secs(2));
            tracing::info!(
                "this member holds the CA key: it signs the certificates of joining agents"
            );
            Some(ca)
        }
        _ => None,
    })
}

/// The peer server (`RaftTransport`, member certificates only).
async fn serve_peer(
    cfg: &Config,
    transport: &Arc<Transport>,
    tls: Option<Arc<edgeplane_tls::TlsMaterial>>,
    shutdown: broadcast::Receiver<()>,
) -> Result<tokio::task::JoinHandle<()>, StartError> {
    let peer_l = bind("peer_addr", &cfg.peer_addr).await?;
    let svc = RaftTransportServer::new(TransportService {
        transport: transport.clone(),
    })
    .max_decoding_message_size(256 << 20)
    .max_encoding_message_size(256 << 20);
    let mut peer_routes = RoutesBuilder::default();
    peer_routes.add_service(svc);
    let layer = edgeplane_tls::AuthLayer::new("peer", tls.is_some(), crate::auth::peer_policy())
        .with_rate(None);
    Ok(tokio::spawn(serve_routes(
        "peer",
        peer_routes.routes(),
        peer_l,
        tls,
        layer,
        shutdown,
    )))
}

/// Announce this replica's addresses in the replicated member list (until they are there,
/// then check every 2 s).
fn announce_addresses(
    handle: Handle,
    cfg: &Config,
    mut sd: broadcast::Receiver<()>,
) -> tokio::task::JoinHandle<()> {
    let h = handle;
    let me = pb::Member {
        id: cfg.id,
        peer_addr: cfg.peer_addr.clone(),
        client_addr: cfg.client_addr.clone(),
        learner: false,
    };
    tokio::spawn(async move {
        loop {
            let st = h.stale_state();
            let done = st
                .members
                .get(&me.id)
                .is_some_and(|m| m.client_addr == me.client_addr && m.peer_addr == me.peer_addr);
            if !done && st.members.contains_key(&me.id) && h.leadership().borrow().leader_id != 0 {
                let mut m = me.clone();
                m.learner = st.members[&me.id].learner;
                let c = pb::Command {
                    client_id: 0,
                    seq: 0,
                    kind: Some(Kind::UpdateMember(pb::UpdateMember { member: Some(m) })),
                };
                if let Err(e) = h.propose(c).await {
                    tracing::debug!(error = %e, "announcing member addresses failed; retrying");
                }
            }
            tokio::select! {
                _ = sd.recv() => return,
                _ = tokio::time::sleep(Duration::from_millis(if done { 2000 } else { 200 })) => {}
            }
        }
    })
}

/// What the client server is built from.
struct ClientServer<'a> {
    handle: &'a Handle,
    transport: &'a Arc<Transport>,
    tls: Option<Arc<edgeplane_tls::TlsMaterial>>,
    shutdown: &'a broadcast::Sender<()>,
}

impl ClientServer<'_> {
    /// Admin plus whatever the extensions add: the single place where services are mounted
    /// on --client-addr. Returns the server's task and the gRPC ops task.
    async fn serve(
        self,
        cfg: &Config,
        ext: Extensions,
    ) -> Result<Vec<tokio::task::JoinHandle<()>>, StartError> {
        let handle = self.handle;
        let client_l = bind("client_addr", &cfg.client_addr).await?;
        let mut routes = RoutesBuilder::default();
        routes.add_service(AdminServer::new(AdminService {
            handle: handle.clone(),
            transport: self.transport.clone(),
            live: ext.live_stats.clone(),
        }));
        for install in ext.services {
            install(handle, &mut routes);
        }
        let ops = crate::grpc_ops::install(handle, &mut routes, self.shutdown.subscribe());
        let layer = edgeplane_tls::AuthLayer::new(
            "client",
            self.tls.is_some(),
            crate::auth::client_policy(),
        )
        .with_revocation(revocation(handle));
        // Clients without a certificate get through the handshake here (agents joining with
        // a token); the layer lets them call `Agent/Register` with a CSR and nothing else.
        let server = tokio::spawn(serve_routes_with(
            "client",
            routes.routes(),
            client_l,
            self.tls,
            layer,
            edgeplane_tls::ClientCerts::Optional,
            self.shutdown.subscribe(),
        ));
        Ok(vec![ops, server])
    }
}

async fn bind(field: &'static str, addr: &str) -> Result<tokio::net::TcpListener, StartError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind {
            field,
            addr: addr.to_string(),
            source,
        })
}

/// Take `<data_dir>/LOCK` (flock, released when the process ends however it ends). A second
/// replica on the same dir is refused at once with the dir named, before sled is opened
/// (sled's own lock would refuse it too, but only after retries and in sled's words).
/// The data dir holds the raft log (token hashes, certificate bindings): only the owner may
/// enter it (0700), and the files already in it are made 0600.
fn private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        for e in walk(dir)? {
            let mode = if e.is_dir() { 0o700 } else { 0o600 };
            std::fs::set_permissions(&e, std::fs::Permissions::from_mode(mode))?;
        }
    }
    Ok(())
}

/// Every path under `dir` (not following links).
#[cfg(unix)]
fn walk(dir: &std::path::Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let t = e.file_type()?;
            if t.is_dir() {
                todo.push(e.path());
                out.push(e.path());
            } else if t.is_file() {
                out.push(e.path());
            }
        }
    }
    Ok(out)
}

fn lock_data_dir(data_dir: &std::path::Path) -> Result<std::fs::File, StartError> {
    let storage = |e: std::io::Error, path: &std::path::Path| StartError::Storage {
        dir: data_dir.display().to_string(),
        source: crate::storage::StorageError::Io {
            path: path.to_path_buf(),
            source: e,
        },
    };
    std::fs::create_dir_all(data_dir).map_err(|e| storage(e, data_dir))?;
    private_dir(data_dir).map_err(|e| storage(e, data_dir))?;
    let path = data_dir.join("LOCK");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| storage(e, &path))?;
    match fs4::FileExt::try_lock(&file) {
        Ok(()) => Ok(file),
        Err(fs4::TryLockError::WouldBlock) => Err(StartError::Locked {
            dir: data_dir.display().to_string(),
            lock: path.display().to_string(),
        }),
        Err(fs4::TryLockError::Error(e)) => Err(storage(e, &path)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt as _;

    #[test]
    fn a_second_replica_on_the_same_data_dir_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock_data_dir(dir.path()).unwrap();
        let t0 = std::time::Instant::now();
        let e = lock_data_dir(dir.path()).unwrap_err().to_string();
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "waited {:?}",
            t0.elapsed()
        );
        assert!(e.contains("in use by another coordinator"), "{e}");
        assert!(e.contains("--data-dir"), "{e}");
        drop(held);
        // Released with the holder.
        lock_data_dir(dir.path()).unwrap();
    }

    fn free_addr() -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    }

    /// Defect 9: a write that comes without a client id (agent registration, lease expiry,
    /// member announcements, admin calls without meta) still gets one, so the session cache
    /// makes its retries exactly-once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_without_a_client_id_get_one_and_a_session() {
        let dir = tempfile::tempdir().unwrap();
        let peer = free_addr();
        let cfg = Config {
            id: 1,
            client_addr: free_addr(),
            peer_addr: peer.clone(),
            initial_cluster: [(1u64, peer)].into_iter().collect(),
            data_dir: dir.path().to_path_buf(),
            metrics_addr: None,
            join_token: None,
            tls_ca_key: None,
            join: false,
            tick_ms: 20,
            election_ticks: 10,
            heartbeat_ticks: 1,
            snapshot_entries: 10_000,
            request_timeout_ms: 3000,
            enable_fault_injection: false,
            fault_fsync_fail_after: None,
            agents: Default::default(),
            tls: None,
            insecure: true,
        };
        let coord = Coordinator::start(cfg, Extensions::default())
            .await
            .unwrap();
        let h = coord.handle();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !h.leadership().borrow().is_leader {
            assert!(std::time::Instant::now() < deadline, "no leader");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let r = h
            .propose(pb::Command {
                client_id: 0,
                seq: 0,
                kind: Some(Kind::DeployModel(pb::DeployModel {
                    name: "m".into(),
                    slo_ms: 10.0,
                    rate: 1.0,
                    memory_mb: 1,
                })),
            })
            .await
            .unwrap();
        let st = h.stale_state();
        assert!(
            st.sessions.values().any(|s| s.result.index == r.index),
            "no session recorded the write at {}",
            r.index
        );
        coord.shutdown().await;
    }

    #[tokio::test]
    async fn accepted_sockets_have_nodelay() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let mut incoming = nodelay_incoming(l);
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let accepted = incoming.next().await.unwrap().unwrap();
        assert!(
            accepted.nodelay().unwrap(),
            "accepted socket without TCP_NODELAY"
        );
    }
}
