//! The daemons under a service manager (issue 23): the systemd units pass `systemd-analyze
//! verify` and use `Type=notify`, `ExecReload`, `UMask=0077` and one state directory each; a
//! replica started with `$NOTIFY_SOCKET` (as systemd starts it) sends `READY=1` once it serves,
//! survives SIGHUP (reload: `RELOADING=1` then `READY=1`) and sends `STOPPING=1` on SIGTERM.

use crate::cluster::{Cluster, Opts};
use crate::support;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn unit(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../deploy/systemd/{name}"));
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn the_units_verify_and_ask_for_notify_reload_and_private_files() {
    let mut dirs = Vec::new();
    for name in ["edgeplane-coordinator.service", "edgeplane-agent.service"] {
        let u = unit(name);
        for want in [
            "Type=notify",
            "ExecReload=/bin/kill -HUP $MAINPID",
            "UMask=0077",
        ] {
            assert!(u.lines().any(|l| l == want), "{name} lacks {want:?}");
        }
        let dir = u
            .lines()
            .find_map(|l| l.strip_prefix("StateDirectory="))
            .unwrap_or_else(|| panic!("{name}: no StateDirectory"));
        dirs.push(dir.to_string());
    }
    assert_ne!(dirs[0], dirs[1], "the two units share a state directory");
    assert!(unit("edgeplane.sysusers.conf")
        .lines()
        .any(|l| l.starts_with("u ") && l.contains("edgeplane")));
    let Some(analyze) = support::tool_or_skip("systemd-analyze", "systemd") else {
        return;
    };
    // verify checks that ExecStart is executable: point the copies at the built binaries
    let tmp = tempfile::tempdir().unwrap();
    let bin_dir = support::bin("edgeplane-coordinator");
    let bin_dir = bin_dir.parent().unwrap().display().to_string();
    let mut files = Vec::new();
    for name in ["edgeplane-coordinator.service", "edgeplane-agent.service"] {
        let p = tmp.path().join(name);
        std::fs::write(&p, unit(name).replace("/usr/local/bin", &bin_dir)).unwrap();
        files.push(p);
    }
    let o = Command::new(analyze)
        .arg("verify")
        .args(&files)
        .output()
        .unwrap();
    assert!(
        o.status.success() && o.stderr.is_empty(),
        "systemd-analyze verify: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Datagrams received on the notify socket until `want` is among them (or the deadline).
fn wait_for(sock: &UnixDatagram, seen: &mut Vec<String>, want: &str, within: Duration) {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 4096];
    while !seen.iter().any(|m| m.lines().any(|l| l == want)) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no {want:?} within {within:?}; got {seen:?}"
        );
        sock.set_read_timeout(Some(left)).unwrap();
        if let Ok(n) = sock.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
}

#[tokio::test]
async fn a_replica_tells_systemd_it_is_ready_reloads_on_sighup_and_says_it_stops() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    let mut c = Cluster::start(
        1,
        Opts {
            insecure: true,
            env: vec![("NOTIFY_SOCKET".into(), path.display().to_string())],
            ..Default::default()
        },
    );
    let mut seen = Vec::new();
    wait_for(&sock, &mut seen, "READY=1", Duration::from_secs(30));
    let leader = c.leader(Duration::from_secs(20)).await;
    let pid = c.pid(leader).expect("running").to_string();
    // SIGHUP is a reload, not a death (insecure: no TLS reloader would have caught it).
    seen.clear();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    wait_for(&sock, &mut seen, "RELOADING=1", Duration::from_secs(10));
    wait_for(&sock, &mut seen, "READY=1", Duration::from_secs(10));
    assert_eq!(c.exited(leader), None, "the replica died on SIGHUP");
    assert!(
        c.status(leader).await.is_some(),
        "the replica answers after SIGHUP"
    );
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    wait_for(&sock, &mut seen, "STOPPING=1", Duration::from_secs(10));
}
