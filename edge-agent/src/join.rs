//! Joining a cluster with a per-node token (`--join-token ID.SECRET`, `--tls-ca`, no
//! `--tls-cert`): the agent makes its own key pair, sends a CSR in its `Register` call over
//! TLS that authenticates only the server, and receives a node certificate signed by the
//! cluster CA. Key and certificate are written to `<data_dir>/tls/` (mode 0600); from then
//! on the agent authenticates by that certificate and needs no token (a restart finds them).

use std::path::{Path, PathBuf};
use std::time::Duration;

use edgeplane_proto::agent::agent_client::AgentClient;
use edgeplane_proto::agent::{Accelerator, RegisterRequest};
use tokio::sync::broadcast;

/// Why a join failed for good.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The coordinator refused the join (the token, the name, the CSR): retrying the same
    /// token cannot succeed.
    #[error("join refused by {addr}: {message}")]
    Refused { addr: String, message: String },
    #[error("join: {0}")]
    Local(String),
    #[error("join: shutting down before the agent joined")]
    Shutdown,
}

/// Where a joined agent keeps its key and certificate.
pub fn joined_paths(data_dir: &Path, ca: &Path) -> edgeplane_tls::TlsPaths {
    let dir = data_dir.join("tls");
    edgeplane_tls::TlsPaths {
        ca: ca.to_path_buf(),
        cert: dir.join("node.pem"),
        key: dir.join("node.key"),
    }
}

/// Whether `data_dir` holds the certificate of an earlier join.
pub fn has_joined(data_dir: &Path) -> bool {
    joined_paths(data_dir, Path::new("")).cert.exists()
}

/// What a join needs.
pub struct JoinRequest<'a> {
    pub name: &'a str,
    pub token: &'a edgeplane_tls::Secret,
    pub ca: &'a Path,
    pub data_dir: &'a Path,
    pub coordinators: &'a [String],
    pub agent_addr: &'a str,
    pub accelerators: Vec<Accelerator>,
    pub max_backoff: Duration,
}

fn local(what: &str, e: impl std::fmt::Display) -> JoinError {
    JoinError::Local(format!("{what}: {e}"))
}

/// Join: try the coordinators in turn (with backoff) until one answers. A refusal ends the
/// join at once with the coordinator's reason; an unreachable cluster is retried until
/// `shutdown`. Returns the paths of the written key and certificate.
pub async fn join(
    req: JoinRequest<'_>,
    mut shutdown: broadcast::Receiver<()>,
) -> Result<edgeplane_tls::TlsPaths, JoinError> {
    edgeplane_tls::JoinToken::parse(req.token.expose()).map_err(JoinError::Local)?;
    let ca_pem =
        std::fs::read(req.ca).map_err(|e| local(&format!("--tls-ca {}", req.ca.display()), e))?;
    let (key_pem, csr_pem) =
        edgeplane_tls::certs::new_key_and_csr().map_err(|e| local("key pair", e))?;
    let mut backoff = Duration::from_millis(100);
    let mut i = 0usize;
    let cert_pem = loop {
        let addr = &req.coordinators[i % req.coordinators.len()];
        i += 1;
        let attempt = async {
            let ep = edgeplane_tls::dial::server_authenticated(&ca_pem, addr)
                .map_err(|e| Err(e.to_string()))?
                .connect_timeout(Duration::from_secs(1))
                .timeout(Duration::from_secs(10));
            let ch = ep.connect().await.map_err(|e| Err(format!("{e:?}")))?;
            AgentClient::new(ch)
                .register(RegisterRequest {
                    name: req.name.to_string(),
                    join_token: req.token.expose().to_string(),
                    agent_addr: req.agent_addr.to_string(),
                    accelerators: req.accelerators.clone(),
                    assignment_epoch: 0,
                    csr: csr_pem.clone(),
                    joined_from_ip: String::new(),
                })
                .await
                .map_err(|s| match s.code() {
                    tonic::Code::PermissionDenied
                    | tonic::Code::Unauthenticated
                    | tonic::Code::InvalidArgument
                    | tonic::Code::FailedPrecondition
                    | tonic::Code::NotFound => Ok(s.message().to_string()),
                    _ => Err(format!("{:?}: {}", s.code(), s.message())),
                })
        };
        let res: Result<_, Result<String, String>> = tokio::select! {
            r = attempt => r,
            _ = shutdown.recv() => return Err(JoinError::Shutdown),
        };
        match res {
            Ok(r) if !r.get_ref().certificate.is_empty() => break r.into_inner().certificate,
            Ok(_) => {
                return Err(JoinError::Refused {
                    addr: addr.clone(),
                    message: "the answer carries no certificate (a coordinator older than \
                              per-node tokens?)"
                        .into(),
                })
            }
            Err(Ok(message)) => {
                return Err(JoinError::Refused {
                    addr: addr.clone(),
                    message,
                })
            }
            Err(Err(e)) => {
                tracing::warn!(%addr, error = %e, "join attempt failed; trying the next coordinator");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.recv() => return Err(JoinError::Shutdown),
        }
        backoff = (backoff * 2).min(req.max_backoff);
    };
    let paths = joined_paths(req.data_dir, req.ca);
    write_joined(&paths, &key_pem, &cert_pem)?;
    tracing::info!(node = %req.name, cert = %paths.cert.display(), "joined the cluster: node certificate written; the token is used up");
    Ok(paths)
}

/// Key first, then the certificate (its presence marks the join as done), both 0600 in a
/// 0700 directory.
fn write_joined(
    paths: &edgeplane_tls::TlsPaths,
    key_pem: &str,
    cert_pem: &str,
) -> Result<(), JoinError> {
    let dir: PathBuf = paths
        .cert
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    std::fs::create_dir_all(&dir).map_err(|e| local(&dir.display().to_string(), e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| local(&dir.display().to_string(), e))?;
    }
    edgeplane_tls::certs::write_private(&paths.key, key_pem.as_bytes())
        .map_err(|e| local("writing the node key", e))?;
    edgeplane_tls::certs::write_private(&paths.cert, cert_pem.as_bytes())
        .map_err(|e| local("writing the node certificate", e))
}
