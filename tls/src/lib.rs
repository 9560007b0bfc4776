//! Edgeplane security: the cluster CA and its certificates ([`certs`]), the identity and
//! role a certificate carries ([`identity`]), TLS material with reload ([`material`]), a
//! TLS listener for tonic ([`incoming`]), authorization of every gRPC call ([`authz`]) and
//! per-node join tokens ([`token`]).
//! Crypto is rustls (ring provider) and rcgen; nothing here is hand-written crypto.
#![forbid(unsafe_code)]

pub mod authz;
pub mod certs;
pub mod dial;
pub mod identity;
pub mod incoming;
pub mod material;
pub mod serve;
pub mod token;

pub use authz::{
    peer_cert_not_before, peer_cert_sha256, pem_cert_not_before, pem_cert_sha256, AuthLayer,
    Caller, Need, Policy, RateLimit, Revoked,
};
pub use certs::{
    generate_cluster_material, Ca, CaSigner, CertPaths, ClusterMaterial, LeafSpec, Validity,
};
pub use dial::{Dial, Expect};
pub use identity::{Identity, Principal, Role};
pub use incoming::tls_incoming;
pub use material::{
    load_or_insecure, spawn_reloader, ClientTls, Reloadable, TlsMaterial, TlsPaths, NO_TLS_MATERIAL,
};
pub use serve::{serve_routes, serve_routes_with, ClientCerts};
pub use token::{JoinToken, Secret};

/// Errors of this crate; each names the flag, file or field at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Config(String),
    #[error("certificate: {0}")]
    Cert(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}
