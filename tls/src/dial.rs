//! Dialing a cluster server over TLS and checking *who* answers, not only that the cluster
//! CA signed its certificate: a rustls [`ServerCertVerifier`] wraps WebPKI (chain, expiry,
//! host name, the ServerAuth usage) and then requires the identity the dialer expects
//! ([`Expect`]): a raft peer must be `member/<its id>`, the CLI, agents and forwarders need a
//! member, an Infer client needs the node it dials. A user or client certificate (ClientAuth
//! only) or another principal cannot pose as a server.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tonic::transport::{Channel, Endpoint};

use crate::identity::{Identity, Principal};
use crate::material::TlsMaterial;
use crate::Error;

/// The identity a dialer requires of the server it reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Exactly this coordinator replica (raft peer links).
    Member(u64),
    /// Any coordinator replica (the CLI, agents, joins, forwarding to the leader).
    AnyMember,
    /// The agent of this node (an Infer client that knows whom it dials).
    Node(String),
    /// Any agent (tools given only an address: `edgeplane agent status --agent ADDR`).
    AnyNode,
}

impl Expect {
    pub fn matches(&self, p: &Principal) -> bool {
        match (self, p) {
            (Expect::Member(want), Principal::Member(got)) => want == got,
            (Expect::AnyMember, Principal::Member(_)) => true,
            (Expect::Node(want), Principal::Node(got)) => want == got,
            (Expect::AnyNode, Principal::Node(_)) => true,
            _ => false,
        }
    }
}

impl std::fmt::Display for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expect::Member(id) => write!(f, "member/{id}"),
            Expect::AnyMember => f.write_str("a coordinator member"),
            Expect::Node(n) => write!(f, "node/{n}"),
            Expect::AnyNode => f.write_str("an agent node"),
        }
    }
}

/// The server's certificate is valid but names someone the dialer did not expect.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("the server's certificate is {got}, but this dial expects {expected}")]
    WrongPrincipal { got: Identity, expected: Expect },
    #[error("the server's certificate carries no usable identity: {0}")]
    NoIdentity(String),
}

/// WebPKI, then the expected principal.
#[derive(Debug)]
pub struct PrincipalVerifier {
    inner: Arc<WebPkiServerVerifier>,
    expect: Expect,
}

impl PrincipalVerifier {
    pub fn new(roots: Arc<RootCertStore>, expect: Expect) -> Result<PrincipalVerifier, Error> {
        let inner = WebPkiServerVerifier::builder_with_provider(roots, crate::material::ring())
            .build()
            .map_err(|e| Error::Config(format!("--tls-ca: {e}")))?;
        Ok(PrincipalVerifier { inner, expect })
    }
}

fn other(e: PeerError) -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
        Arc::new(e),
    )))
}

impl ServerCertVerifier for PrincipalVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        let id = Identity::from_der(end_entity).map_err(|e| other(PeerError::NoIdentity(e)))?;
        if !self.expect.matches(&id.principal) {
            tracing::warn!(server = %id, expected = %self.expect, "server identity refused");
            return Err(other(PeerError::WrongPrincipal {
                got: id,
                expected: self.expect.clone(),
            }));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Root store from a PEM bundle.
pub fn roots_from_pem(ca_pem: &[u8]) -> Result<Arc<RootCertStore>, Error> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem) {
        let c = c.map_err(|e| Error::Config(format!("--tls-ca: {e}")))?;
        roots
            .add(c)
            .map_err(|e| Error::Config(format!("--tls-ca: {e}")))?;
    }
    if roots.is_empty() {
        return Err(Error::Config("--tls-ca: holds no certificate".into()));
    }
    Ok(Arc::new(roots))
}

/// Where a connection's client config comes from.
#[derive(Clone)]
enum Source {
    /// The process's material (read at each new connection, so a reload applies).
    Material(Arc<TlsMaterial>),
    /// Only the CA, no client certificate (an agent joining).
    CaOnly(Arc<RootCertStore>),
}

/// A tonic connector: TCP (`TCP_NODELAY`), then rustls with [`PrincipalVerifier`].
#[derive(Clone)]
pub struct VerifyingConnector {
    source: Source,
    expect: Expect,
}

impl VerifyingConnector {
    fn config(&self) -> Result<Arc<ClientConfig>, Error> {
        let (roots, auth) = match &self.source {
            Source::Material(m) => {
                let l = m.current();
                let chain: Vec<CertificateDer<'static>> =
                    CertificateDer::pem_slice_iter(&l.cert_pem)
                        .collect::<Result<_, _>>()
                        .map_err(|e| Error::Config(format!("--tls-cert: {e}")))?;
                let key = PrivateKeyDer::from_pem_slice(l.key_pem())
                    .map_err(|e| Error::Config(format!("--tls-key: {e}")))?;
                (roots_from_pem(&l.ca_pem)?, Some((chain, key)))
            }
            Source::CaOnly(r) => (r.clone(), None),
        };
        let verifier = Arc::new(PrincipalVerifier::new(roots, self.expect.clone())?);
        let b = ClientConfig::builder_with_provider(crate::material::ring())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Config(format!("tls: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut c = match auth {
            Some((chain, key)) => b
                .with_client_auth_cert(chain, key)
                .map_err(|e| Error::Config(format!("--tls-cert/--tls-key: {e}")))?,
            None => b.with_no_client_auth(),
        };
        c.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(c))
    }
}

type ConnectFuture =
    Pin<Box<dyn Future<Output = Result<TokioIo<TlsStream<TcpStream>>, std::io::Error>> + Send>>;

impl tower::Service<http::Uri> for VerifyingConnector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = ConnectFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let bad = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
            let host = uri
                .host()
                .ok_or_else(|| bad(format!("address {uri}: no host")))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().unwrap_or(443);
            let config = this.config().map_err(|e| bad(e.to_string()))?;
            let name = ServerName::try_from(host.clone())
                .map_err(|e| bad(format!("address {uri}: {e}")))?;
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            Ok(TokioIo::new(tls))
        })
    }
}

/// An endpoint plus how to secure it: what [`crate::ClientTls::endpoint`] gives. The
/// builder methods mirror [`Endpoint`]'s; `map` reaches the others.
#[derive(Clone)]
pub struct Dial {
    endpoint: Endpoint,
    connector: Option<VerifyingConnector>,
}

impl Dial {
    pub(crate) fn plain(endpoint: Endpoint) -> Dial {
        Dial {
            endpoint,
            connector: None,
        }
    }

    /// `http://addr`, TLS done by the connector with `material`, expecting `expect`.
    pub(crate) fn tls(
        addr: &str,
        material: Arc<TlsMaterial>,
        expect: Expect,
    ) -> Result<Dial, Error> {
        Self::with_source(addr, Source::Material(material), expect)
    }

    fn with_source(addr: &str, source: Source, expect: Expect) -> Result<Dial, Error> {
        let bare = crate::material::bare(addr);
        let endpoint = Endpoint::from_shared(format!("http://{bare}"))
            .map_err(|e| Error::Config(format!("address {addr:?}: {e}")))?;
        Ok(Dial {
            endpoint,
            connector: Some(VerifyingConnector { source, expect }),
        })
    }

    /// Any other [`Endpoint`] setting.
    pub fn map(mut self, f: impl FnOnce(Endpoint) -> Endpoint) -> Dial {
        self.endpoint = f(self.endpoint);
        self
    }

    pub fn connect_timeout(self, d: Duration) -> Dial {
        self.map(|e| e.connect_timeout(d))
    }

    pub fn timeout(self, d: Duration) -> Dial {
        self.map(|e| e.timeout(d))
    }

    pub fn tcp_nodelay(self, on: bool) -> Dial {
        self.map(|e| e.tcp_nodelay(on))
    }

    pub fn http2_keep_alive_interval(self, d: Duration) -> Dial {
        self.map(|e| e.http2_keep_alive_interval(d))
    }

    pub fn keep_alive_timeout(self, d: Duration) -> Dial {
        self.map(|e| e.keep_alive_timeout(d))
    }

    pub fn keep_alive_while_idle(self, on: bool) -> Dial {
        self.map(|e| e.keep_alive_while_idle(on))
    }

    pub async fn connect(&self) -> Result<Channel, tonic::transport::Error> {
        match &self.connector {
            Some(c) => self.endpoint.connect_with_connector(c.clone()).await,
            None => self.endpoint.connect().await,
        }
    }

    pub fn connect_lazy(&self) -> Channel {
        match &self.connector {
            Some(c) => self.endpoint.connect_with_connector_lazy(c.clone()),
            None => self.endpoint.connect_lazy(),
        }
    }
}

/// A dial to a coordinator that verifies it against `ca_pem` (it must be a member) and
/// presents no client certificate: the joining agent, which has none yet.
pub fn server_authenticated(ca_pem: &[u8], addr: &str) -> Result<Dial, Error> {
    Dial::with_source(
        addr,
        Source::CaOnly(roots_from_pem(ca_pem)?),
        Expect::AnyMember,
    )
}
