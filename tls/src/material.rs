//! TLS material of one process (CA, certificate, key), reloaded without downtime when the
//! files change or on SIGHUP: new connections use the new material, established ones keep
//! theirs.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::dial::{Dial, Expect};
use crate::identity::Identity;
use crate::Error;

/// Where a process finds its TLS material (the `--tls-ca`, `--tls-cert`, `--tls-key` flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPaths {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsPaths {
    /// From the three optional flags: all or none. `Ok(None)` when none is given.
    pub fn from_flags(
        ca: Option<&Path>,
        cert: Option<&Path>,
        key: Option<&Path>,
    ) -> Result<Option<TlsPaths>, Error> {
        match (ca, cert, key) {
            (None, None, None) => Ok(None),
            (Some(ca), Some(cert), Some(key)) => Ok(Some(TlsPaths {
                ca: ca.to_path_buf(),
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
            })),
            _ => Err(Error::Config(
                "tls: give all three of --tls-ca, --tls-cert and --tls-key (or --insecure)".into(),
            )),
        }
    }
}

/// The message a server prints when started without TLS material.
pub const NO_TLS_MATERIAL: &str = "no TLS material: give --tls-ca, --tls-cert and --tls-key \
(make them with `edgeplane certs init` and `edgeplane certs issue`), or --insecure to run \
without TLS and authentication (only on a network you control)";

pub(crate) fn ring() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// One loaded version of the files.
pub struct Loaded {
    pub server: Arc<ServerConfig>,
    /// Like `server`, but a client may also connect without a certificate (it is then
    /// server-authenticated only, and the authorization layer decides what it may call:
    /// only the join call of the coordinator's client port).
    pub server_optional_client: Arc<ServerConfig>,
    pub ca_pem: Vec<u8>,
    pub cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    /// Identity in our own certificate.
    pub identity: Identity,
    stamp: Vec<Option<SystemTime>>,
}

impl Loaded {
    pub(crate) fn key_pem(&self) -> &[u8] {
        &self.key_pem
    }
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

fn stamp(p: &TlsPaths) -> Vec<Option<SystemTime>> {
    [&p.ca, &p.cert, &p.key]
        .iter()
        .map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
        .collect()
}

fn read(path: &Path, field: &str) -> Result<Vec<u8>, Error> {
    // An I/O error keeps its kind (the CLI exits 6 for a file it cannot read).
    std::fs::read(path).map_err(|e| Error::Io {
        path: format!("{field}: reading {}", path.display()),
        source: e,
    })
}

fn load(p: &TlsPaths) -> Result<Loaded, Error> {
    let st = stamp(p);
    let ca_pem = read(&p.ca, "--tls-ca")?;
    let cert_pem = read(&p.cert, "--tls-cert")?;
    let key_pem = read(&p.key, "--tls-key")?;
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&ca_pem) {
        let c = c.map_err(|e| Error::Config(format!("--tls-ca: {}: {e}", p.ca.display())))?;
        roots
            .add(c)
            .map_err(|e| Error::Config(format!("--tls-ca: {}: {e}", p.ca.display())))?;
    }
    if roots.is_empty() {
        return Err(Error::Config(format!(
            "--tls-ca: {} holds no certificate",
            p.ca.display()
        )));
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| Error::Config(format!("--tls-cert: {}: {e}", p.cert.display())))?;
    let first = chain.first().ok_or_else(|| {
        Error::Config(format!(
            "--tls-cert: {} holds no certificate",
            p.cert.display()
        ))
    })?;
    let identity = Identity::from_der(first)
        .map_err(|e| Error::Config(format!("--tls-cert: {}: {e}", p.cert.display())))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| Error::Config(format!("--tls-key: {}: {e}", p.key.display())))?;
    let roots = Arc::new(roots);
    let build = |optional: bool| -> Result<Arc<ServerConfig>, Error> {
        let mut v = WebPkiClientVerifier::builder_with_provider(roots.clone(), ring());
        if optional {
            v = v.allow_unauthenticated();
        }
        let verifier = v
            .build()
            .map_err(|e| Error::Config(format!("--tls-ca: {e}")))?;
        let mut server = ServerConfig::builder_with_provider(ring())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Config(format!("tls: {e}")))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| Error::Config(format!("--tls-cert/--tls-key: {e}")))?;
        server.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(server))
    };
    let server = build(false)?;
    let server_optional_client = build(true)?;
    Ok(Loaded {
        server,
        server_optional_client,
        ca_pem,
        cert_pem,
        key_pem,
        identity,
        stamp: st,
    })
}

/// The process's TLS material, shared by its servers and clients.
#[derive(Debug)]
pub struct TlsMaterial {
    paths: TlsPaths,
    current: RwLock<Arc<Loaded>>,
}

impl TlsMaterial {
    /// Load the files; errors name the flag and the file.
    pub fn load(paths: TlsPaths) -> Result<Arc<TlsMaterial>, Error> {
        let l = load(&paths)?;
        Ok(Arc::new(TlsMaterial {
            paths,
            current: RwLock::new(Arc::new(l)),
        }))
    }

    pub fn paths(&self) -> &TlsPaths {
        &self.paths
    }

    pub fn current(&self) -> Arc<Loaded> {
        self.current.read().expect("tls lock").clone()
    }

    /// Identity of our own certificate.
    pub fn identity(&self) -> Identity {
        self.current().identity.clone()
    }

    /// Re-read the files. On an error the old material stays in use.
    pub fn reload(&self) -> Result<bool, Error> {
        let l = load(&self.paths)?;
        let mut cur = self.current.write().expect("tls lock");
        let changed =
            l.cert_pem != cur.cert_pem || l.ca_pem != cur.ca_pem || l.key_pem != cur.key_pem;
        *cur = Arc::new(l);
        Ok(changed)
    }

    fn stale(&self) -> bool {
        stamp(&self.paths) != self.current().stamp
    }

    /// Reload when the files change (polled every `every`) or on SIGHUP, until the
    /// material is dropped everywhere else.
    pub fn spawn_reloader(self: &Arc<Self>, every: Duration) {
        spawn_reloader(self, every);
    }

    /// A tonic client TLS config from the current files (for each new connection).
    pub fn client_config(&self) -> tonic::transport::ClientTlsConfig {
        let l = self.current();
        tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&l.ca_pem))
            .identity(tonic::transport::Identity::from_pem(
                &l.cert_pem,
                &l.key_pem,
            ))
    }
}

/// Client side of a link: TLS with our material, or plaintext (`--insecure`).
#[derive(Debug, Clone, Default)]
pub struct ClientTls(pub Option<Arc<TlsMaterial>>);

impl ClientTls {
    pub fn insecure() -> ClientTls {
        ClientTls(None)
    }

    /// `https://addr` or `http://addr`.
    pub fn url(&self, addr: &str) -> String {
        let bare = addr
            .strip_prefix("http://")
            .or_else(|| addr.strip_prefix("https://"))
            .unwrap_or(addr);
        match self.0 {
            Some(_) => format!("https://{bare}"),
            None if addr.starts_with("https://") => addr.to_string(),
            None => format!("http://{bare}"),
        }
    }

    /// A dial to the coordinator at `addr` (host:port): with TLS, the server must present a
    /// member certificate ([`Expect::AnyMember`]).
    pub fn endpoint(&self, addr: &str) -> Result<Dial, Error> {
        self.endpoint_to(addr, Expect::AnyMember)
    }

    /// A dial to `addr` whose server must be `expect` (with TLS; plaintext checks nothing).
    pub fn endpoint_to(&self, addr: &str, expect: Expect) -> Result<Dial, Error> {
        match &self.0 {
            Some(m) => Dial::tls(addr, m.clone(), expect),
            None => {
                let ep = tonic::transport::Endpoint::from_shared(self.url(addr))
                    .map_err(|e| Error::Config(format!("address {addr:?}: {e}")))?;
                Ok(Dial::plain(ep))
            }
        }
    }
}

/// `addr` without an `http://` or `https://` prefix.
pub(crate) fn bare(addr: &str) -> &str {
    addr.strip_prefix("http://")
        .or_else(|| addr.strip_prefix("https://"))
        .unwrap_or(addr)
}

/// Load material from paths given on the command line, with the secure-by-default rule:
/// no paths and no `--insecure` is an error naming the flags.
pub fn load_or_insecure(
    paths: Option<TlsPaths>,
    insecure: bool,
) -> Result<Option<Arc<TlsMaterial>>, Error> {
    match (paths, insecure) {
        (Some(_), true) => Err(Error::Config(
            "tls: --insecure together with --tls-* flags; give one or the other".into(),
        )),
        (Some(p), false) => Ok(Some(TlsMaterial::load(p)?)),
        (None, true) => {
            tracing::warn!(
                "running with --insecure: no TLS and no authentication on any port; anyone who \
                 reaches them controls this cluster"
            );
            Ok(None)
        }
        (None, false) => Err(Error::Config(NO_TLS_MATERIAL.into())),
    }
}

/// Something read from files that is re-read when they change or on SIGHUP (the process's TLS
/// material, the CA a member signs with). On a failed reload the previous value stays in use.
pub trait Reloadable: Send + Sync + 'static {
    /// Whether the files changed since the last load.
    fn stale(&self) -> bool;
    /// Re-read the files; whether anything changed.
    fn reload(&self) -> Result<bool, Error>;
    /// What it is, for the log line.
    fn what(&self) -> String;
}

impl Reloadable for TlsMaterial {
    fn stale(&self) -> bool {
        TlsMaterial::stale(self)
    }
    fn reload(&self) -> Result<bool, Error> {
        TlsMaterial::reload(self)
    }
    fn what(&self) -> String {
        "tls material".into()
    }
}

/// Reload `r` when its files change (polled every `every`) or on SIGHUP, until it is dropped
/// everywhere else. Logs "<what> reloaded" (or "<what> reload failed").
pub fn spawn_reloader<R: Reloadable>(r: &Arc<R>, every: Duration) {
    let weak = Arc::downgrade(r);
    tokio::spawn(async move {
        #[cfg(unix)]
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        loop {
            #[cfg(unix)]
            let signalled = async {
                match hup.as_mut() {
                    Some(h) => {
                        h.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            #[cfg(not(unix))]
            let signalled = std::future::pending::<()>();
            let forced = tokio::select! {
                _ = signalled => true,
                _ = tokio::time::sleep(every) => false,
            };
            let Some(m) = weak.upgrade() else { return };
            if forced || m.stale() {
                match m.reload() {
                    Ok(changed) => {
                        tracing::info!(changed, sighup = forced, "{} reloaded", m.what())
                    }
                    Err(e) => tracing::error!(
                        error = %e,
                        "{} reload failed; keeping the previous one",
                        m.what()
                    ),
                }
            }
        }
    });
}
