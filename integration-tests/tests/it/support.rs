//! Shared test helpers: locating the workspace binaries, free ports, and `assert_eventually!`.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Poll `cond` until it holds or `timeout` passes; panics with `what` on timeout.
/// Polling with a deadline, never a bare sleep, is how tests wait for each other.
#[macro_export]
macro_rules! assert_eventually {
    ($cond:expr, $timeout:expr, $($what:tt)+) => {{
        let deadline = std::time::Instant::now() + $timeout;
        loop {
            if $cond { break; }
            if std::time::Instant::now() > deadline {
                panic!("condition not met within {:?}: {}", $timeout, format!($($what)+));
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
    }};
}

/// Async variant of [`assert_eventually!`] for conditions that await.
pub async fn eventually<F, Fut, T>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("condition not met within {timeout:?}: {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A `cargo` command without the variables cargo sets for a test process
/// (`CARGO_MANIFEST_DIR`, `CARGO_PKG_*`, ...): build scripts such as ring's watch them, so
/// passing them on made every binary build from a test, and the next `cargo test` after it,
/// rebuild ring and everything above it (about a minute on two cores, every run).
pub fn cargo_command(cargo: &str) -> Command {
    let mut cmd = Command::new(cargo);
    for (k, _) in std::env::vars_os() {
        let Some(k) = k.to_str() else { continue };
        if [
            "CARGO_MANIFEST_",
            "CARGO_PKG_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
            "CARGO_PRIMARY_PACKAGE",
            "CARGO_TARGET_TMPDIR",
            "CARGO_RUSTC_CURRENT_DIR",
        ]
        .iter()
        .any(|p| k.starts_with(p))
        {
            cmd.env_remove(k);
        }
    }
    cmd
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("integration-tests sits in the workspace")
        .to_path_buf()
}

/// Path to a workspace binary (`edgeplane`, `edgeplane-coordinator`, `edgeplane-agent`,
/// `edgeplane-worker`), brought up to date once per test process.
///
/// The build is `cargo test --workspace --no-run`, the README's test command without running:
/// its feature resolution is the one the binaries were already built with when this runs
/// under that command (every binary crate has an integration test, so cargo builds and
/// uplifts all four), which makes it a no-op there. A `cargo build --bin ...` resolves
/// features without the dev-dependencies: it rebuilt ~150 crates from a test (5 minutes on
/// two cores) and doubled the target dir, which filled the CI machine's disk.
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let root = workspace_root();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = crate::support::cargo_command(&cargo)
            .current_dir(&root)
            .args(["test", "--workspace", "--no-run", "--quiet"])
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run cargo test --no-run for the workspace binaries");
        assert!(status.success(), "building the workspace binaries failed");
    });
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let path = target.join("debug").join(name);
    assert!(path.exists(), "binary {} not found", path.display());
    path
}

/// A free loopback port below the ephemeral range, never handed out twice in this process, so
/// a killed child restarts on its port even while other tests open connections (an outgoing
/// connection once took a killed replica's port from the ephemeral range and failed CI).
pub fn free_port() -> u16 {
    edgeplane_chaos::reserve_port().expect("reserve a loopback port")
}

/// One cluster CA per test process (in a temp dir that lives as long as the process), made
/// with the same library code as `edgeplane certs`; certificates are issued on demand.
pub struct TestTls {
    pub dir: PathBuf,
    ca: std::sync::Mutex<edgeplane_tls::Ca>,
    admin: OnceLock<edgeplane_tls::ClientTls>,
}

pub fn tls() -> &'static TestTls {
    static T: OnceLock<TestTls> = OnceLock::new();
    T.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("edgeplane-it-tls-")
            .tempdir()
            .expect("temp dir")
            .keep();
        let ca = edgeplane_tls::Ca::init(&dir, "it").expect("test CA");
        TestTls {
            dir,
            ca: std::sync::Mutex::new(ca),
            admin: OnceLock::new(),
        }
    })
}

impl TestTls {
    pub fn ca(&self) -> PathBuf {
        self.dir.join(edgeplane_tls::certs::CA_CERT)
    }

    /// The certificate for `identity` (issued once, then reused).
    pub fn issue(&self, identity: edgeplane_tls::Identity) -> edgeplane_tls::CertPaths {
        let ca = self.ca.lock().expect("test CA lock");
        let stem = edgeplane_tls::certs::stem_for(&identity);
        let p = edgeplane_tls::CertPaths {
            cert: self.dir.join(format!("{stem}.pem")),
            key: self.dir.join(format!("{stem}.key")),
        };
        if p.cert.exists() {
            return p;
        }
        ca.issue_to(&self.dir, &stem, &edgeplane_tls::LeafSpec::new(identity))
            .expect("issue a test certificate")
    }

    pub fn member(&self, id: u64) -> edgeplane_tls::CertPaths {
        self.issue(edgeplane_tls::Identity {
            principal: edgeplane_tls::Principal::Member(id),
            role: None,
        })
    }

    /// A user named after its role (`admin`, `operator`, `viewer`).
    pub fn user(&self, role: edgeplane_tls::Role) -> edgeplane_tls::CertPaths {
        self.issue(edgeplane_tls::Identity {
            principal: edgeplane_tls::Principal::User(role.as_str().into()),
            role: Some(role),
        })
    }

    pub fn node(&self, name: &str) -> edgeplane_tls::CertPaths {
        self.issue(edgeplane_tls::Identity {
            principal: edgeplane_tls::Principal::Node(name.into()),
            role: None,
        })
    }

    /// Client TLS holding `p`.
    pub fn client(&self, p: &edgeplane_tls::CertPaths) -> edgeplane_tls::ClientTls {
        edgeplane_tls::ClientTls(Some(
            edgeplane_tls::TlsMaterial::load(edgeplane_tls::TlsPaths {
                ca: self.ca(),
                cert: p.cert.clone(),
                key: p.key.clone(),
            })
            .expect("load test TLS material"),
        ))
    }

    /// Client TLS of the `admin` user.
    pub fn admin(&self) -> edgeplane_tls::ClientTls {
        self.admin
            .get_or_init(|| self.client(&self.user(edgeplane_tls::Role::Admin)))
            .clone()
    }

    /// `--tls-ca X --tls-cert Y --tls-key Z` for `p`.
    pub fn args(&self, p: &edgeplane_tls::CertPaths) -> Vec<std::ffi::OsString> {
        vec![
            "--tls-ca".into(),
            self.ca().into(),
            "--tls-cert".into(),
            p.cert.clone().into(),
            "--tls-key".into(),
            p.key.clone().into(),
        ]
    }
}

/// Point an `edgeplane` CLI command at the test CA with the `admin` user's certificate.
pub fn admin_env(cmd: &mut Command) -> &mut Command {
    let t = tls();
    let p = t.user(edgeplane_tls::Role::Admin);
    cmd.env("EDGEPLANE_TLS_CA", t.ca())
        .env("EDGEPLANE_TLS_CERT", p.cert)
        .env("EDGEPLANE_TLS_KEY", p.key)
}

/// A connected channel to `addr` over mutual TLS as the `admin` user.
pub async fn admin_channel(
    addr: &str,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    tls()
        .admin()
        .endpoint(addr)
        .expect("endpoint")
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
}

/// The path of an external tool the test needs, found on PATH. Missing: under `CI=true` the
/// test fails (CI installs it, so a green CI means it ran); elsewhere it is skipped with a note
/// naming the Debian package that brings it.
pub fn tool_or_skip(tool: &str, debian_package: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!(
                "CI=true requires {tool} (apt-get install {debian_package}), but it is not on PATH"
            );
        }
        eprintln!(
            "SKIPPED: {tool} not found (apt-get install {debian_package}); it runs under CI=true"
        );
    }
    found
}
