//! CLI conventions an operator's scripts rely on (issue 23): `-o/--output`, format flags before
//! the command, plain tables in pipes and `--no-headers`, `nodes get`, `member list`, `cluster
//! health`, `version`, `cluster status` without a quorum, a refused connection named as such,
//! exit code 6 for an unreadable TLS file, and no panic on a closed pipe. Real processes: a
//! 3-replica plaintext cluster and the `edgeplane` binary.

use crate::cluster::{Cluster, Opts};
use crate::support::{self, free_port};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::ops::{cli, code};

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", out(o), err(o)))
}

#[test]
fn a_closed_pipe_ends_the_cli_quietly() {
    // 160 KB of completion script into a pipe whose reader leaves after one line: the writer
    // must get EPIPE (the pipe buffer is 64 KB). Before: a panic in println!, exit 101.
    let o = Command::new("bash")
        .arg("-c")
        .arg("set -o pipefail; \"$0\" completion bash | head -1 >/dev/null")
        .arg(support::bin("edgeplane"))
        .output()
        .expect("run bash");
    let status = o.status.code().expect("bash exited");
    assert!(
        status == 141 || status == 0,
        "expected SIGPIPE (141) or 0, got {status}: {}",
        err(&o)
    );
    assert!(!err(&o).contains("panicked"), "{}", err(&o));
}

#[test]
fn an_unreadable_tls_file_is_local_io_and_a_closed_port_is_named() {
    // Exit 6 (README: a file given on the command line cannot be read); it was 3.
    let o = Command::new(support::bin("edgeplane"))
        .args(["models", "list", "--endpoints", "127.0.0.1:1"])
        .args(["--tls-ca", "/nonexistent/ca.pem"])
        .args(["--tls-cert", "/nonexistent/c.pem"])
        .args(["--tls-key", "/nonexistent/c.key"])
        .env_remove("EDGEPLANE_INSECURE")
        .output()
        .unwrap();
    assert_eq!(code(&o), 6, "{}", err(&o));
    assert!(err(&o).contains("/nonexistent/"), "{}", err(&o));

    // Nothing listens: the error says "refused" and comes well before the 10 s timeout.
    let dead = format!("127.0.0.1:{}", free_port());
    let t0 = Instant::now();
    let o = cli(&["models", "list", "--endpoints", &dead, "--timeout-s", "10"]);
    let took = t0.elapsed();
    assert_eq!(code(&o), 2, "{}", err(&o));
    assert!(err(&o).to_lowercase().contains("refused"), "{}", err(&o));
    assert!(took < Duration::from_secs(6), "took {took:?}");
}

#[tokio::test]
async fn output_flags_member_views_and_status_without_quorum() {
    let mut c = Cluster::start(
        3,
        Opts {
            insecure: true,
            env: vec![("EDGEPLANE_COORDINATOR_LOG_FORMAT".into(), "json".into())],
            ..Default::default()
        },
    );
    let leader = c.leader(Duration::from_secs(20)).await;
    // --log-format json: every line of the leader's log is one JSON object with a level.
    let log = c.log_of(leader);
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "the leader logged nothing");
    for l in &lines {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{l}");
    }
    let eps = c.endpoints().join(",");
    let ep = ["--endpoints", eps.as_str()];
    let run = |args: &[&str]| {
        let mut v: Vec<&str> = args.to_vec();
        v.extend(ep);
        cli(&v)
    };

    // -o / --output, before or after the command.
    for args in [
        &["member", "list", "-o", "json"][..],
        &["member", "list", "--output", "json"][..],
        &["-o", "json", "member", "list"][..],
        &["--format=json", "cluster", "status"][..],
    ] {
        let o = run(args);
        assert_eq!(code(&o), 0, "{args:?}: {}", err(&o));
        let v = json(&o);
        assert_eq!(v["leader_id"], leader, "{args:?}");
        assert_eq!(v["members"].as_array().map(Vec::len), Some(3), "{args:?}");
    }

    // Plain tables in a pipe (this test reads stdout through one), --no-headers.
    let o = run(&["member", "list"]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    let table: Vec<String> = out(&o).lines().skip(1).map(str::to_string).collect();
    assert!(out(&o).is_ascii(), "no box drawing in a pipe:\n{}", out(&o));
    assert_eq!(table[0].split_whitespace().next(), Some("id"), "{table:?}");
    assert_eq!(table.len(), 4, "header + 3 members: {table:?}");
    let o = run(&["member", "list", "--no-headers"]);
    let text = out(&o);
    let rows: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(rows.len(), 3, "{rows:?}");
    let ids: Vec<&str> = rows
        .iter()
        .filter_map(|r| r.split_whitespace().next())
        .collect();
    assert_eq!(ids, ["1", "2", "3"]);

    // A model no profile knows is refused with the valid names (before: exit 0, and the only
    // trace was "not served" in `placement show`); --allow-unknown deploys it anyway.
    let o = run(&["models", "deploy", "resnet-9000", "--slo-ms", "30"]);
    assert_eq!(code(&o), 3, "{}", err(&o));
    assert!(
        err(&o).contains("resnet18") && err(&o).contains("ES_RITNet"),
        "{}",
        err(&o)
    );
    let o = run(&["models", "list", "-o", "json"]);
    assert_eq!(
        json(&o).as_array().map(Vec::len),
        Some(0),
        "nothing was deployed"
    );
    let o = run(&[
        "models",
        "deploy",
        "resnet-9000",
        "--slo-ms",
        "30",
        "--allow-unknown",
    ]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    let o = run(&["models", "deploy", "resnet18", "--slo-ms", "30"]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    let o = run(&["models", "catalog", "-o", "json"]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    let v = json(&o);
    let vgg = v
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model"] == "vgg16")
        .expect("vgg16 in the catalog");
    assert!(
        vgg["gpus"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g == "Jetson-AGX-Xavier"),
        "{vgg}"
    );

    // nodes get: not found is 4.
    let o = run(&["nodes", "get", "ghost"]);
    assert_eq!(code(&o), 4, "{}", err(&o));

    // cluster health and version: every member answers on its own.
    let o = run(&["cluster", "health", "-o", "json"]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    let v = json(&o);
    let healthy: Vec<bool> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["healthy"].as_bool().unwrap())
        .collect();
    assert_eq!(healthy, [true, true, true]);
    let o = run(&["version", "-o", "json"]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    let v = json(&o);
    let want = env!("CARGO_PKG_VERSION");
    assert_eq!(v["client"], want);
    let servers = v["servers"].as_array().unwrap();
    assert_eq!(servers.len(), 3);
    assert!(servers.iter().all(|s| s["version"] == want), "{v}");

    // Two of three down: no quorum is a line in the output and exit 2, with the survivor's
    // own view (before: "no member answered within 4s" and nothing else).
    let survivor = *c.replicas.keys().find(|id| **id != leader).unwrap();
    for id in c.replicas.keys().copied().collect::<Vec<_>>() {
        if id != survivor {
            c.kill(id);
        }
    }
    let all: Vec<String> = c.replicas.values().map(|r| r.client_addr.clone()).collect();
    let all = all.join(",");
    let o = cli(&["cluster", "status", "--endpoints", &all, "--timeout-s", "2"]);
    assert_eq!(code(&o), 2, "{}\n{}", out(&o), err(&o));
    assert!(out(&o).contains("no quorum"), "{}", out(&o));
    let o = cli(&[
        "cluster",
        "status",
        "--endpoints",
        &all,
        "--timeout-s",
        "2",
        "-o",
        "json",
    ]);
    assert_eq!(code(&o), 2, "{}", err(&o));
    let v = json(&o);
    assert_eq!(v["quorum"], false);
    let reachable: Vec<u64> = v["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["reachable"] == true)
        .map(|m| m["id"].as_u64().unwrap())
        .collect();
    assert_eq!(reachable, [survivor]);
    let o = cli(&["cluster", "health", "--endpoints", &all]);
    assert_eq!(code(&o), 2, "{}", err(&o));
}
