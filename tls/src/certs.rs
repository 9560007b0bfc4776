//! The cluster CA and the certificates it issues (rcgen; ECDSA P-256 keys). Private keys
//! are written with mode 0600.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use time::OffsetDateTime;

use crate::identity::{Identity, Principal};
use crate::Error;

/// File name of the CA certificate in a certificate directory.
pub const CA_CERT: &str = "ca.pem";
/// File name of the CA private key in a certificate directory.
pub const CA_KEY: &str = "ca.key";

/// Default validity of a CA certificate.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 86_400);
/// Default validity of a leaf certificate.
pub const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 86_400);

/// Paths of one certificate and its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The loaded cluster CA (certificate and key), able to sign.
pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
    pem: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

/// When a leaf certificate is valid.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From a minute ago (clock skew) for `d`.
    pub fn for_duration(d: Duration) -> Validity {
        let now = OffsetDateTime::now_utc();
        Validity {
            not_before: now - time::Duration::minutes(1),
            not_after: now + time::Duration::seconds(d.as_secs() as i64),
        }
    }

    /// Already expired (tests of refusal).
    pub fn expired() -> Validity {
        let now = OffsetDateTime::now_utc();
        Validity {
            not_before: now - time::Duration::days(2),
            not_after: now - time::Duration::days(1),
        }
    }
}

/// What a leaf certificate is for.
#[derive(Debug, Clone)]
pub struct LeafSpec {
    pub identity: Identity,
    /// DNS names and IP addresses the holder serves under (server certificates).
    pub hosts: Vec<String>,
    pub validity: Validity,
}

impl LeafSpec {
    pub fn new(identity: Identity) -> LeafSpec {
        // Only servers (members, agents) get host names; users and clients never serve.
        let hosts = if serves(&identity.principal) {
            default_hosts()
        } else {
            Vec::new()
        };
        LeafSpec {
            identity,
            hosts,
            validity: Validity::for_duration(LEAF_VALIDITY),
        }
    }
}

/// Whether certificates of this principal are server certificates too (ServerAuth): members
/// serve the client and peer ports, agents their Infer port. Users and clients only dial.
pub fn serves(p: &Principal) -> bool {
    matches!(p, Principal::Member(_) | Principal::Node(_))
}

/// Hosts put in every member and node certificate unless others are given: the loopback names.
pub fn default_hosts() -> Vec<String> {
    vec!["localhost".into(), "127.0.0.1".into(), "::1".into()]
}

fn rc(what: &str, e: rcgen::Error) -> Error {
    Error::Cert(format!("{what}: {e}"))
}

/// Write `data` to `path` readable only by the owner (0600), replacing it atomically.
pub fn write_private(path: &Path, data: &[u8]) -> Result<(), Error> {
    use std::io::Write as _;
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let io = |e: std::io::Error| Error::Io {
        path: path.display().to_string(),
        source: e,
    };
    let mut f = opts.open(&tmp).map_err(io)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io)?;
    }
    f.write_all(data).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Write `data` to `path` readable by everyone (0644): the CA certificate, which every
/// process of the cluster needs and which holds nothing secret.
pub fn write_public(path: &Path, data: &[u8]) -> Result<(), Error> {
    write_private(path, data)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).map_err(|e| {
            Error::Io {
                path: path.display().to_string(),
                source: e,
            }
        })?;
    }
    Ok(())
}

fn read(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|e| Error::Io {
        path: path.display().to_string(),
        source: e,
    })
}

impl Ca {
    /// Create a new CA (not written anywhere).
    pub fn generate(name: &str) -> Result<Ca, Error> {
        let key = KeyPair::generate().map_err(|e| rc("CA key", e))?;
        let mut p = CertificateParams::new(Vec::<String>::new()).map_err(|e| rc("CA", e))?;
        p.distinguished_name
            .push(DnType::CommonName, format!("{name} cluster CA"));
        p.distinguished_name
            .push(DnType::OrganizationName, "edgeplane");
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let v = Validity::for_duration(CA_VALIDITY);
        p.not_before = v.not_before;
        p.not_after = v.not_after;
        let cert = p.self_signed(&key).map_err(|e| rc("CA", e))?;
        let pem = cert.pem();
        Ok(Ca { cert, key, pem })
    }

    /// `certs init`: a new CA written to `dir` (refuses to overwrite one).
    pub fn init(dir: &Path, name: &str) -> Result<Ca, Error> {
        std::fs::create_dir_all(dir).map_err(|e| Error::Io {
            path: dir.display().to_string(),
            source: e,
        })?;
        if dir.join(CA_KEY).exists() {
            return Err(Error::Cert(format!(
                "dir: {} already holds a CA ({CA_KEY}); remove it or pick another --dir",
                dir.display()
            )));
        }
        let ca = Ca::generate(name)?;
        write_private(&dir.join(CA_KEY), ca.key.serialize_pem().as_bytes())?;
        write_public(&dir.join(CA_CERT), ca.pem.as_bytes())?;
        Ok(ca)
    }

    /// Load the CA of `dir` (written by [`Ca::init`]).
    pub fn load(dir: &Path) -> Result<Ca, Error> {
        let pem = read(&dir.join(CA_CERT))?;
        let key_pem = read(&dir.join(CA_KEY))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| rc("CA key", e))?;
        let params = CertificateParams::from_ca_cert_pem(&pem).map_err(|e| rc("CA cert", e))?;
        // Re-signing the same subject with the same key gives an equivalent issuer: leaves
        // it signs verify against the original ca.pem.
        let cert = params.self_signed(&key).map_err(|e| rc("CA cert", e))?;
        Ok(Ca { cert, key, pem })
    }

    /// Load a CA from its certificate file (`--tls-ca`, which may hold several CA
    /// certificates while the CA is rotated: the one whose public key is `key_path`'s is
    /// used) and its private key (`--tls-ca-key`). Errors name the flag and the file.
    pub fn load_files(cert_path: &Path, key_path: &Path) -> Result<Ca, Error> {
        use rustls_pki_types::pem::PemObject as _;
        let cfg = |flag: &str, path: &Path, e: String| {
            Error::Config(format!("{flag}: {}: {e}", path.display()))
        };
        let pem = std::fs::read_to_string(cert_path)
            .map_err(|e| cfg("--tls-ca", cert_path, e.to_string()))?;
        let key_pem = std::fs::read_to_string(key_path)
            .map_err(|e| cfg("--tls-ca-key", key_path, e.to_string()))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| {
            cfg(
                "--tls-ca-key",
                key_path,
                format!("not a PEM private key: {e}"),
            )
        })?;
        for der in rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let der = der.map_err(|e| cfg("--tls-ca", cert_path, e.to_string()))?;
            let Ok((_, parsed)) = x509_parser::parse_x509_certificate(&der) else {
                continue;
            };
            if parsed
                .tbs_certificate
                .subject_pki
                .subject_public_key
                .data
                .as_ref()
                != key.public_key_raw()
            {
                continue;
            }
            let params = CertificateParams::from_ca_cert_der(&der)
                .map_err(|e| cfg("--tls-ca", cert_path, e.to_string()))?;
            let cert = params
                .self_signed(&key)
                .map_err(|e| cfg("--tls-ca", cert_path, e.to_string()))?;
            return Ok(Ca { cert, key, pem });
        }
        Err(Error::Config(format!(
            "--tls-ca-key: {} is not the key of any CA certificate in --tls-ca {}",
            key_path.display(),
            cert_path.display()
        )))
    }

    /// The CA certificate (PEM) that verifiers trust.
    pub fn cert_pem(&self) -> &str {
        &self.pem
    }

    fn leaf_params(spec: &LeafSpec) -> Result<CertificateParams, Error> {
        let mut p = CertificateParams::new(spec.hosts.clone()).map_err(|e| rc("hosts", e))?;
        for u in spec.identity.to_uris() {
            let ia5 = u.clone().try_into().map_err(|e| rc("identity URI", e))?;
            p.subject_alt_names.push(SanType::URI(ia5));
        }
        p.distinguished_name
            .push(DnType::CommonName, spec.identity.principal.to_string());
        if let Some(r) = spec.identity.role {
            p.distinguished_name
                .push(DnType::OrganizationalUnitName, r.as_str());
        }
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = if serves(&spec.identity.principal) {
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ]
        } else {
            vec![ExtendedKeyUsagePurpose::ClientAuth]
        };
        p.not_before = spec.validity.not_before;
        p.not_after = spec.validity.not_after;
        p.use_authority_key_identifier_extension = true;
        Ok(p)
    }

    /// Issue a certificate and a new key; returns (cert PEM, key PEM).
    pub fn issue(&self, spec: &LeafSpec) -> Result<(String, String), Error> {
        let key = KeyPair::generate().map_err(|e| rc("key", e))?;
        let cert = Self::leaf_params(spec)?
            .signed_by(&key, &self.cert, &self.key)
            .map_err(|e| rc("signing", e))?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// Sign a CSR (the requester keeps its key). The identity and hosts come from `spec`,
    /// never from the CSR: only the public key is taken from it.
    pub fn sign_csr(&self, csr_pem: &str, spec: &LeafSpec) -> Result<String, Error> {
        if csr_pem.len() > 16 * 1024 {
            return Err(Error::Cert("csr: larger than 16 KiB".into()));
        }
        let mut csr =
            CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| rc("csr", e))?;
        csr.params = Self::leaf_params(spec)?;
        let cert = csr
            .signed_by(&self.cert, &self.key)
            .map_err(|e| rc("signing the csr", e))?;
        Ok(cert.pem())
    }

    /// Issue and write `<dir>/<stem>.pem` and `<dir>/<stem>.key` (0600).
    pub fn issue_to(&self, dir: &Path, stem: &str, spec: &LeafSpec) -> Result<CertPaths, Error> {
        let (cert, key) = self.issue(spec)?;
        let paths = CertPaths {
            cert: dir.join(format!("{stem}.pem")),
            key: dir.join(format!("{stem}.key")),
        };
        write_private(&paths.key, key.as_bytes())?;
        write_private(&paths.cert, cert.as_bytes())?;
        Ok(paths)
    }
}

/// A new key and a CSR for it (the joining agent's side); returns (key PEM, CSR PEM).
pub fn new_key_and_csr() -> Result<(String, String), Error> {
    let key = KeyPair::generate().map_err(|e| rc("key", e))?;
    let p = CertificateParams::new(Vec::<String>::new()).map_err(|e| rc("csr", e))?;
    let csr = p.serialize_request(&key).map_err(|e| rc("csr", e))?;
    Ok((key.serialize_pem(), csr.pem().map_err(|e| rc("csr", e))?))
}

/// The file stem `certs issue` uses for an identity.
pub fn stem_for(identity: &Identity) -> String {
    match &identity.principal {
        Principal::Member(id) => format!("member-{id}"),
        Principal::Node(n) => format!("node-{n}"),
        Principal::User(n) => format!("user-{n}"),
        Principal::Client(n) => format!("client-{n}"),
    }
}

/// Material for a whole local cluster, as the demo and the tests use it.
#[derive(Debug, Clone)]
pub struct ClusterMaterial {
    pub dir: PathBuf,
}

impl ClusterMaterial {
    pub fn ca(&self) -> PathBuf {
        self.dir.join(CA_CERT)
    }

    /// Paths of the certificate with `stem` (see [`stem_for`]).
    pub fn paths(&self, stem: &str) -> CertPaths {
        CertPaths {
            cert: self.dir.join(format!("{stem}.pem")),
            key: self.dir.join(format!("{stem}.key")),
        }
    }

    pub fn member(&self, id: u64) -> CertPaths {
        self.paths(&format!("member-{id}"))
    }

    /// The `admin`-role user certificate `user-admin`.
    pub fn admin(&self) -> CertPaths {
        self.paths("user-admin")
    }

    pub fn node(&self, name: &str) -> CertPaths {
        self.paths(&format!("node-{name}"))
    }
}

/// Generate into `dir` a CA, member certificates for `members`, users `admin`, `operator`
/// and `viewer` with those roles, node certificates for `nodes`, and a client `client`.
/// Loopback hosts only. This is what `edgeplane demo` and the tests call.
pub fn generate_cluster_material(
    dir: &Path,
    members: &[u64],
    nodes: &[&str],
) -> Result<ClusterMaterial, Error> {
    use crate::identity::Role;
    let ca = Ca::init(dir, "edgeplane")?;
    let mut ids: Vec<Identity> = members
        .iter()
        .map(|id| Identity {
            principal: Principal::Member(*id),
            role: None,
        })
        .collect();
    for (n, r) in [
        ("admin", Role::Admin),
        ("operator", Role::Operator),
        ("viewer", Role::Viewer),
    ] {
        ids.push(Identity {
            principal: Principal::User(n.into()),
            role: Some(r),
        });
    }
    for n in nodes {
        ids.push(Identity {
            principal: Principal::Node((*n).into()),
            role: None,
        });
    }
    ids.push(Identity {
        principal: Principal::Client("client".into()),
        role: None,
    });
    for id in ids {
        ca.issue_to(dir, &stem_for(&id), &LeafSpec::new(id.clone()))?;
    }
    Ok(ClusterMaterial {
        dir: dir.to_path_buf(),
    })
}

/// The CA a member signs joining agents' certificates with (`--tls-ca` and `--tls-ca-key`),
/// re-read when the files change or on SIGHUP ([`crate::material::spawn_reloader`]), so a CA
/// rotation reaches the signer without a restart. A failed reload keeps the previous CA.
#[derive(Debug)]
pub struct CaSigner {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: std::sync::RwLock<(std::sync::Arc<Ca>, Vec<Option<std::time::SystemTime>>)>,
}

/// Modification times of the CA's files (a change triggers a reload).
fn ca_stamp(cert: &Path, key: &Path) -> Vec<Option<std::time::SystemTime>> {
    [cert, key]
        .iter()
        .map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
        .collect()
}

impl CaSigner {
    /// Load the CA; errors name the flag and the file.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<std::sync::Arc<CaSigner>, Error> {
        // Stamped before reading: a change during the read shows as stale and is read again.
        let stamp = ca_stamp(cert_path, key_path);
        let ca = Ca::load_files(cert_path, key_path)?;
        Ok(std::sync::Arc::new(CaSigner {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            current: std::sync::RwLock::new((std::sync::Arc::new(ca), stamp)),
        }))
    }

    /// The CA to sign with now.
    pub fn current(&self) -> std::sync::Arc<Ca> {
        self.current.read().expect("ca lock").0.clone()
    }
}

impl crate::material::Reloadable for CaSigner {
    fn stale(&self) -> bool {
        ca_stamp(&self.cert_path, &self.key_path) != self.current.read().expect("ca lock").1
    }

    fn reload(&self) -> Result<bool, Error> {
        let st = ca_stamp(&self.cert_path, &self.key_path);
        let ca = Ca::load_files(&self.cert_path, &self.key_path)?;
        let mut cur = self.current.write().expect("ca lock");
        let changed = ca.pem != cur.0.pem || ca.key.serialize_der() != cur.0.key.serialize_der();
        *cur = (std::sync::Arc::new(ca), st);
        Ok(changed)
    }

    fn what(&self) -> String {
        "ca key".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Role;
    use rustls_pki_types::pem::PemObject as _;

    fn der(pem: &str) -> Vec<u8> {
        rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .to_vec()
    }

    #[test]
    fn issued_certificates_carry_identity_and_private_files_are_0600() {
        let dir = tempfile::tempdir().unwrap();
        let m = generate_cluster_material(dir.path(), &[1, 2], &["edge-1"]).unwrap();
        let pem = std::fs::read_to_string(m.admin().cert).unwrap();
        let id = Identity::from_der(&der(&pem)).unwrap();
        assert_eq!(id.principal, Principal::User("admin".into()));
        assert_eq!(id.role, Some(Role::Admin));
        let pem = std::fs::read_to_string(m.node("edge-1").cert).unwrap();
        assert_eq!(
            Identity::from_der(&der(&pem)).unwrap().principal,
            Principal::Node("edge-1".into())
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            for f in [m.dir.join(CA_KEY), m.member(1).key, m.member(2).cert] {
                let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{}", f.display());
            }
            let ca = std::fs::metadata(m.ca()).unwrap().permissions().mode() & 0o777;
            assert_eq!(ca, 0o644, "ca.pem is for everyone to read");
        }
        // init refuses to overwrite a CA.
        let e = Ca::init(dir.path(), "again").unwrap_err().to_string();
        assert!(e.contains("already holds a CA"), "{e}");
    }

    #[test]
    fn csr_signing_takes_only_the_key_from_the_request() {
        let dir = tempfile::tempdir().unwrap();
        Ca::init(dir.path(), "t").unwrap();
        let ca = Ca::load(dir.path()).unwrap();
        let (_key, csr) = new_key_and_csr().unwrap();
        let spec = LeafSpec::new(Identity {
            principal: Principal::Node("n1".into()),
            role: None,
        });
        let cert = ca.sign_csr(&csr, &spec).unwrap();
        let id = Identity::from_der(&der(&cert)).unwrap();
        assert_eq!(id.principal, Principal::Node("n1".into()));
        let e = ca.sign_csr("garbage", &spec).unwrap_err().to_string();
        assert!(e.contains("csr"), "{e}");
    }

    #[test]
    fn a_ca_loads_from_its_files_even_from_a_bundle_and_refuses_a_foreign_key() {
        let dir = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        Ca::init(dir.path(), "t").unwrap();
        Ca::init(other.path(), "o").unwrap();
        // A bundle (CA rotation): the other CA first, ours second.
        let bundle = dir.path().join("bundle.pem");
        let mut text = std::fs::read_to_string(other.path().join(CA_CERT)).unwrap();
        text.push_str(&std::fs::read_to_string(dir.path().join(CA_CERT)).unwrap());
        std::fs::write(&bundle, text).unwrap();
        let ca = Ca::load_files(&bundle, &dir.path().join(CA_KEY)).unwrap();
        let (_key, csr) = new_key_and_csr().unwrap();
        let spec = LeafSpec::new(Identity {
            principal: Principal::Node("n2".into()),
            role: None,
        });
        let cert = ca.sign_csr(&csr, &spec).unwrap();
        // It verifies against our ca.pem (rustls, as the servers verify).
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls_pki_types::CertificateDer::from(der(
                &std::fs::read_to_string(dir.path().join(CA_CERT)).unwrap(),
            )))
            .unwrap();
        let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            std::sync::Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        v.verify_client_cert(
            &rustls_pki_types::CertificateDer::from(der(&cert)),
            &[],
            rustls_pki_types::UnixTime::now(),
        )
        .unwrap();
        let e = Ca::load_files(&dir.path().join(CA_CERT), &other.path().join(CA_KEY))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--tls-ca-key"), "{e}");
        let e = Ca::load_files(&dir.path().join("missing.pem"), &dir.path().join(CA_KEY))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--tls-ca") && e.contains("missing.pem"), "{e}");
    }

    #[test]
    fn the_signer_follows_a_rotated_ca_and_keeps_the_old_one_on_a_bad_reload() {
        use crate::material::Reloadable as _;
        let dir = tempfile::tempdir().unwrap();
        let old = Ca::init(dir.path(), "old").unwrap();
        let (cert, key) = (dir.path().join(CA_CERT), dir.path().join(CA_KEY));
        let signer = CaSigner::load(&cert, &key).unwrap();
        assert!(!signer.stale());
        assert_eq!(signer.current().cert_pem(), old.cert_pem());
        // Rotation: the bundle holds old and new CA certificates, the key is the new CA's.
        let new = Ca::generate("new").unwrap();
        std::fs::write(&cert, format!("{}{}", old.cert_pem(), new.cert_pem())).unwrap();
        write_private(&key, new.key.serialize_pem().as_bytes()).unwrap();
        assert!(signer.reload().unwrap(), "a rotated CA is a change");
        let spec = LeafSpec::new(Identity {
            principal: Principal::Node("edge-9".into()),
            role: None,
        });
        let (leaf, _) = signer.current().issue(&spec).unwrap();
        let leaf = der(&leaf);
        let (_, parsed) = x509_parser::parse_x509_certificate(&leaf).unwrap();
        let issuer = parsed.issuer().to_string();
        assert!(issuer.contains("new"), "signed by the new CA: {issuer}");
        // A broken key file: the reload fails, naming the flag, and the new CA stays.
        std::fs::write(&key, "not a key").unwrap();
        let e = signer.reload().unwrap_err().to_string();
        assert!(e.contains("--tls-ca-key"), "{e}");
        assert!(signer.current().cert_pem().contains(new.cert_pem().trim()));
        assert!(signer.reload().is_err());
    }
}
