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

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("integration-tests sits in the workspace")
        .to_path_buf()
}

/// Path to a workspace binary (`edgeplane`, `edgeplane-coordinator`, `edgeplane-agent`),
/// built once per test process with the same profile as the tests.
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let root = workspace_root();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(&root)
            .args([
                "build",
                "--quiet",
                "--bin",
                "edgeplane",
                "--bin",
                "edgeplane-coordinator",
                "--bin",
                "edgeplane-agent",
            ])
            .status()
            .expect("run cargo build for the workspace binaries");
        assert!(status.success(), "building the workspace binaries failed");
    });
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let path = target.join("debug").join(name);
    assert!(path.exists(), "binary {} not found", path.display());
    path
}

/// A free loopback port (bound and released; good enough for tests on one machine).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}
