//! Authorization as one tower layer in front of every tonic server: the gRPC method path
//! says what it needs ([`Need`]), the client certificate says who calls ([`Identity`]).
//! A refused call gets `PERMISSION_DENIED` (or `UNAUTHENTICATED`) naming what it needs;
//! an allowed write leaves an audit line with who did it. Requests per client are limited.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use crate::identity::{Identity, Principal, Role};

/// What a method needs from its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Any certificate of the cluster CA.
    Authenticated,
    /// A user certificate with at least this role. `write` marks an audited write.
    Role { role: Role, write: bool },
    /// A coordinator member certificate.
    Member,
    /// An agent node certificate (or an admin user acting for tools such as benchmarks).
    Node,
    /// [`Need::Node`], or a member forwarding a join, or no certificate at all: an agent
    /// joining with a per-node token and a CSR (the handler checks the token). Only on a
    /// listener served with [`crate::ClientCerts::Optional`] does a client get this far
    /// without a certificate; such callers are [`Caller::Anonymous`] and rate limited per
    /// address ([`JOIN_RATE`]).
    JoinOrNode,
    /// An inference client certificate, or a user with the admin role (tools, tests): the
    /// agents' `Infer`. A viewer may read an agent's status but not run its models.
    InferClient,
}

impl Need {
    fn describe(&self) -> String {
        match self {
            Need::Authenticated => "a certificate of this cluster".into(),
            Need::Role { role, .. } => format!("the {role} role"),
            Need::Member => "a coordinator member certificate".into(),
            Need::Node => "an agent node certificate".into(),
            Need::JoinOrNode => {
                "an agent node certificate (or, to join, a per-node join token and a CSR)".into()
            }
            Need::InferClient => "an inference client certificate (or the admin role)".into(),
        }
    }

    fn allows(&self, id: &Identity) -> bool {
        match self {
            Need::Authenticated => true,
            // A member certificate is the cluster itself: members call each other's
            // Admin API (reads forwarded to the leader, leader transfer).
            Need::Role { role, .. } => {
                id.has_role(*role) || matches!(id.principal, Principal::Member(_))
            }
            Need::Member => matches!(id.principal, Principal::Member(_)),
            Need::Node => matches!(id.principal, Principal::Node(_)) || id.has_role(Role::Admin),
            Need::JoinOrNode => {
                matches!(id.principal, Principal::Node(_) | Principal::Member(_))
                    || id.has_role(Role::Admin)
            }
            Need::InferClient => {
                matches!(id.principal, Principal::Client(_)) || id.has_role(Role::Admin)
            }
        }
    }
}

/// Who called, as the layer saw it; handlers read it from the request extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The server runs with `--insecure`: nobody is authenticated.
    Insecure,
    /// TLS without a client certificate (allowed only for [`Need::JoinOrNode`]): the
    /// handler must authenticate the call itself (a join token).
    Anonymous,
    Cert(Identity),
}

impl Caller {
    /// The caller of a tonic request. `None` when no [`AuthLayer`] ran (a wiring bug:
    /// treat it as refused).
    pub fn of<T>(req: &tonic::Request<T>) -> Option<&Caller> {
        req.extensions().get::<Caller>()
    }

    pub fn identity(&self) -> Option<&Identity> {
        match self {
            Caller::Insecure | Caller::Anonymous => None,
            Caller::Cert(id) => Some(id),
        }
    }
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Caller::Insecure => f.write_str("unauthenticated (--insecure)"),
            Caller::Anonymous => f.write_str("anonymous (TLS without a client certificate)"),
            Caller::Cert(id) => write!(f, "{id}"),
        }
    }
}

/// Maps a gRPC path (`/package.Service/Method`) to what it needs.
pub type Policy = Arc<dyn Fn(&str) -> Need + Send + Sync>;

/// Requests per second and burst allowed to one client (per principal, or per IP address
/// when insecure).
#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    pub per_sec: f64,
    pub burst: f64,
}

/// Default limit for user and client certificates: far above interactive use and the
/// benchmarks, low enough that one client cannot flood the raft log.
pub const DEFAULT_RATE: RateLimit = RateLimit {
    per_sec: 50_000.0,
    burst: 100_000.0,
};

/// Limit for callers without a certificate (agents joining), per IP address: joins are
/// rare, and a guesser must not get to try secrets quickly.
pub const JOIN_RATE: RateLimit = RateLimit {
    per_sec: 5.0,
    burst: 20.0,
};

const MAX_TRACKED: usize = 10_000;

/// Parsed identities (or the parse error) by certificate DER.
type IdentityCache = HashMap<Vec<u8>, Result<Identity, String>>;

/// Certificates whose identity is remembered (distinct client certificates seen recently).
const MAX_IDENTITIES: usize = 4_096;

#[derive(Default)]
struct Buckets {
    map: HashMap<String, (f64, Instant)>,
}

/// Whether a node certificate (its SHA-256) is revoked: asked on every call a node makes.
pub type Revoked = Arc<dyn Fn(&[u8; 32]) -> bool + Send + Sync>;

/// The layer; `secure = false` (`--insecure`) lets everything through as
/// [`Caller::Insecure`] (still rate limited per IP).
#[derive(Clone)]
pub struct AuthLayer {
    policy: Policy,
    secure: bool,
    rate: Option<RateLimit>,
    buckets: Arc<Mutex<Buckets>>,
    /// Identities by certificate DER. The identity is a pure function of the certificate's
    /// bytes, and parsing X.509 on every request was a cost TLS added to every call; with
    /// the whole DER as key a cached answer is the answer parsing would give.
    identities: Arc<Mutex<IdentityCache>>,
    revoked: Option<Revoked>,
    server: &'static str,
}

impl AuthLayer {
    pub fn new(server: &'static str, secure: bool, policy: Policy) -> AuthLayer {
        AuthLayer {
            policy,
            secure,
            rate: Some(DEFAULT_RATE),
            buckets: Arc::default(),
            identities: Arc::default(),
            revoked: None,
            server,
        }
    }

    pub fn with_rate(mut self, rate: Option<RateLimit>) -> AuthLayer {
        self.rate = rate;
        self
    }

    /// Refuse every call (Health and reflection included) from a node certificate that
    /// `revoked` names.
    pub fn with_revocation(mut self, revoked: Revoked) -> AuthLayer {
        self.revoked = Some(revoked);
        self
    }

    fn rate_ok(&self, key: &str) -> bool {
        self.rate_ok_with(key, self.rate)
    }

    fn rate_ok_with(&self, key: &str, rate: Option<RateLimit>) -> bool {
        let Some(r) = rate else { return true };
        let now = Instant::now();
        let mut b = self.buckets.lock().expect("rate lock");
        if b.map.len() >= MAX_TRACKED && !b.map.contains_key(key) {
            // Bounded memory: forget idle clients rather than grow.
            b.map
                .retain(|_, (_, t)| now.duration_since(*t).as_secs() < 10);
            if b.map.len() >= MAX_TRACKED {
                return false;
            }
        }
        let e = b.map.entry(key.to_string()).or_insert((r.burst, now));
        e.0 = (e.0 + now.duration_since(e.1).as_secs_f64() * r.per_sec).min(r.burst);
        e.1 = now;
        if e.0 >= 1.0 {
            e.0 -= 1.0;
            true
        } else {
            false
        }
    }

    /// The identity in a certificate, parsed once per distinct certificate (bounded memory:
    /// the cache starts over when full).
    fn identity_of(&self, der: &[u8]) -> Result<Identity, String> {
        if let Some(hit) = self.identities.lock().expect("identity cache").get(der) {
            return hit.clone();
        }
        let id = Identity::from_der(der);
        let mut cache = self.identities.lock().expect("identity cache");
        if cache.len() >= MAX_IDENTITIES {
            cache.clear();
        }
        cache.insert(der.to_vec(), id.clone());
        id
    }

    /// Decide on one request: the caller to attach, or the refusal.
    pub fn authorize(&self, path: &str, ext: &http::Extensions) -> Result<Caller, tonic::Status> {
        let need = (self.policy)(path);
        let tls = ext.get::<TlsConnectInfo<TcpConnectInfo>>();
        if !self.secure {
            let ip = ext
                .get::<TcpConnectInfo>()
                .and_then(|c| c.remote_addr())
                .map(|a| a.ip().to_string())
                .unwrap_or_default();
            if !self.rate_ok(&ip) {
                return Err(rate_refusal(path, &ip, self.rate));
            }
            return Ok(Caller::Insecure);
        }
        let certs = tls.and_then(|t| t.peer_certs());
        if need == Need::JoinOrNode && certs.as_ref().is_none_or(|c| c.is_empty()) {
            let ip = tls
                .and_then(|t| t.get_ref().remote_addr())
                .map(|a| a.ip().to_string())
                .unwrap_or_default();
            let key = format!("anonymous/{ip}");
            if !self.rate_ok_with(&key, Some(JOIN_RATE)) {
                return Err(rate_refusal(path, &key, Some(JOIN_RATE)));
            }
            return Ok(Caller::Anonymous);
        }
        let Some(first) = certs.as_ref().and_then(|c| c.first()) else {
            return Err(tonic::Status::unauthenticated(format!(
                "{path} needs {} (mutual TLS): no client certificate",
                need.describe()
            )));
        };
        let id = self.identity_of(first).map_err(|e| {
            tonic::Status::unauthenticated(format!("{path}: client certificate: {e}"))
        })?;
        if let (Some(revoked), Principal::Node(n)) = (&self.revoked, &id.principal) {
            use sha2::Digest as _;
            let h: [u8; 32] = sha2::Sha256::digest(first.as_ref()).into();
            if revoked(&h) {
                tracing::warn!(server = self.server, method = path, node = %n, "revoked node certificate refused");
                return Err(tonic::Status::permission_denied(format!(
                    "{path}: this certificate of node {n:?} was revoked when the node was \
                     removed or moved to a newer certificate; join again with a new token \
                     (`edgeplane tokens create --node {n}`) and an empty data dir"
                )));
            }
        }
        if !need.allows(&id) {
            tracing::warn!(server = self.server, method = path, caller = ?id.to_string(), needs = ?need.describe(), "permission denied");
            return Err(tonic::Status::permission_denied(format!(
                "{path} needs {}; the caller is {id}",
                need.describe()
            )));
        }
        let limited = matches!(id.principal, Principal::User(_) | Principal::Client(_));
        if limited && !self.rate_ok(&id.principal.to_string()) {
            return Err(rate_refusal(path, &id.to_string(), self.rate));
        }
        if let Need::Role { write: true, .. } = need {
            tracing::info!(target: "audit", who = ?id.to_string(), method = path, "write allowed");
        }
        Ok(Caller::Cert(id))
    }
}

/// SHA-256 of the client certificate on this request's connection (`None` without TLS or
/// without a client certificate): what a node registration is bound to, and revoked by.
pub fn peer_cert_sha256(ext: &http::Extensions) -> Option<[u8; 32]> {
    use sha2::Digest as _;
    let certs = ext
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|t| t.peer_certs())?;
    let first = certs.first()?;
    Some(sha2::Sha256::digest(first.as_ref()).into())
}

/// notBefore (unix seconds) of the client certificate on this request's connection.
pub fn peer_cert_not_before(ext: &http::Extensions) -> Option<u64> {
    let certs = ext
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|t| t.peer_certs())?;
    der_not_before(certs.first()?.as_ref())
}

/// notBefore (unix seconds) of the first certificate of a PEM text.
pub fn pem_cert_not_before(pem: &str) -> Option<u64> {
    use rustls_pki_types::pem::PemObject as _;
    let der = rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()?
        .ok()?;
    der_not_before(der.as_ref())
}

fn der_not_before(der: &[u8]) -> Option<u64> {
    let (_, c) = x509_parser::parse_x509_certificate(der).ok()?;
    u64::try_from(c.validity().not_before.timestamp()).ok()
}

/// SHA-256 of the first certificate of a PEM text (`None` when it holds none).
pub fn pem_cert_sha256(pem: &str) -> Option<[u8; 32]> {
    use rustls_pki_types::pem::PemObject as _;
    use sha2::Digest as _;
    let der = rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()?
        .ok()?;
    Some(sha2::Sha256::digest(der.as_ref()).into())
}

fn rate_refusal(path: &str, who: &str, r: Option<RateLimit>) -> tonic::Status {
    tonic::Status::resource_exhausted(format!(
        "{path}: rate limit of {} requests/s per client exceeded by {who}; retry later",
        r.map(|r| r.per_sec).unwrap_or_default()
    ))
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`AuthLayer`] wraps around a server's routes.
#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    layer: AuthLayer,
}

impl<S, B> tower::Service<http::Request<B>> for Auth<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        match self.layer.authorize(req.uri().path(), req.extensions()) {
            Ok(caller) => {
                req.extensions_mut().insert(caller);
                Box::pin(self.inner.call(req))
            }
            Err(status) => Box::pin(async move { Ok(status.into_http()) }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(need: Need) -> AuthLayer {
        AuthLayer::new("test", true, Arc::new(move |_: &str| need))
    }

    #[test]
    fn only_the_join_call_is_open_to_a_client_without_a_certificate() {
        let ext = http::Extensions::new();
        let l = layer(Need::JoinOrNode);
        assert_eq!(
            l.authorize("/edgeplane.agent.v1.Agent/Register", &ext)
                .unwrap(),
            Caller::Anonymous
        );
        for need in [
            Need::Node,
            Need::Member,
            Need::Authenticated,
            Need::Role {
                role: Role::Viewer,
                write: false,
            },
        ] {
            let e = layer(need).authorize("/x/Y", &ext).unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unauthenticated, "{need:?}: {e:?}");
            assert!(e.message().contains("no client certificate"), "{e:?}");
        }
        // Callers without a certificate are rate limited (per address).
        let limited = (0..(JOIN_RATE.burst as usize + 5))
            .filter(|_| {
                l.authorize("/edgeplane.agent.v1.Agent/Register", &ext)
                    .is_err()
            })
            .count();
        assert!(limited >= 4, "{limited} refused");
    }

    #[test]
    fn join_or_node_admits_nodes_members_and_admins_only() {
        let id = |p: Principal, r: Option<Role>| Identity {
            principal: p,
            role: r,
        };
        let n = Need::JoinOrNode;
        assert!(n.allows(&id(Principal::Node("a".into()), None)));
        assert!(n.allows(&id(Principal::Member(1), None)));
        assert!(n.allows(&id(Principal::User("x".into()), Some(Role::Admin))));
        assert!(!n.allows(&id(Principal::User("x".into()), Some(Role::Operator))));
        assert!(!n.allows(&id(Principal::Client("c".into()), None)));
    }

    #[test]
    fn identities_are_parsed_once_per_certificate_and_equal_a_fresh_parse() {
        use rustls_pki_types::pem::PemObject as _;
        let ca = crate::certs::Ca::generate("test").unwrap();
        let l = layer(Need::Member);
        let mut ders = Vec::new();
        for (who, role) in [("alice", Some(Role::Operator)), ("bob", None)] {
            let (pem, _) = ca
                .issue(&crate::certs::LeafSpec::new(Identity {
                    principal: Principal::User(who.into()),
                    role,
                }))
                .unwrap();
            ders.push(
                rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
                    .unwrap()
                    .to_vec(),
            );
        }
        for _ in 0..3 {
            for d in &ders {
                assert_eq!(l.identity_of(d), Identity::from_der(d));
            }
        }
        assert_eq!(
            l.identities.lock().unwrap().len(),
            2,
            "one entry per certificate"
        );
        // A certificate that does not parse is refused every time, with the same reason.
        let bad = b"not a certificate".to_vec();
        let e = l.identity_of(&bad).unwrap_err();
        assert_eq!(l.identity_of(&bad).unwrap_err(), e);
        assert!(e.contains("not DER X.509"), "{e}");
        // Bounded: the cache starts over instead of growing.
        for i in 0..MAX_IDENTITIES + 10 {
            let _ = l.identity_of(&i.to_le_bytes());
        }
        assert!(l.identities.lock().unwrap().len() <= MAX_IDENTITIES);
    }
}
