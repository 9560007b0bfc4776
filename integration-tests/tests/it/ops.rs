//! Operating Edgeplane (issue 13): the agent and CLI as real processes. Data-dir lock and
//! node name, a corrupt persisted assignment set aside, counters across a restart, Ctrl-C
//! in scenario mode, the advertise address, a silent partition noticed by the ack watchdog,
//! gRPC health and reflection, Prometheus metrics, and the CLI's exit codes, JSON shapes
//! and new commands (nodes drain/remove, placement unpin, snapshot restore, agent status)
//! against a real cluster. Every wait polls with a deadline.

use crate::cluster::{Cluster, Opts};
use crate::support::{self, eventually, free_port};
use edgeplane_proto::agent as api;
use edgeplane_proto::agent::inference_client::InferenceClient;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};

const TOKEN: &str = "ops-token";

struct Agent {
    listen: String,
    log: PathBuf,
    child: Child,
}

impl Agent {
    fn start(dir: &Path, name: &str, data_dir: &Path, args: &[&str]) -> Agent {
        let listen = format!("127.0.0.1:{}", free_port());
        Self::start_on(dir, name, data_dir, &listen, args)
    }

    fn start_on(dir: &Path, name: &str, data_dir: &Path, listen: &str, args: &[&str]) -> Agent {
        let log = dir.join(format!("agent-{name}-{}.log", free_port()));
        let child = Command::new(support::bin("edgeplane-agent"))
            .args(["--name", name, "--listen", listen])
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--report-interval-ms", "200", "--max-backoff-ms", "300"])
            .arg("--insecure")
            .args(args)
            .env("EDGEPLANE_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start edgeplane-agent");
        Agent {
            listen: listen.to_string(),
            log,
            child,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn channel(addr: &str) -> Option<Channel> {
        Endpoint::from_shared(format!("http://{addr}"))
            .ok()?
            .connect_timeout(Duration::from_millis(300))
            .timeout(Duration::from_secs(5))
            .connect()
            .await
            .ok()
    }

    async fn status(&self) -> Option<api::StatusResponse> {
        let mut c = InferenceClient::new(Self::channel(&self.listen).await?);
        c.status(api::StatusRequest {})
            .await
            .ok()
            .map(|r| r.into_inner())
    }

    async fn wait_up(&self) -> api::StatusResponse {
        let log = self.log.clone();
        eventually(Duration::from_secs(30), "agent answers Status", || async {
            let s = self.status().await;
            if s.is_none() && std::fs::read_to_string(&log).is_ok_and(|l| l.contains("Error")) {
                panic!("agent failed: {}", std::fs::read_to_string(&log).unwrap());
            }
            s
        })
        .await
    }

    /// Wait (bounded) for the process to end.
    fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            if Instant::now() > deadline {
                panic!("agent still running after {within:?}; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- agent log ---\n{}", self.log());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `edgeplane ARGS` in plaintext with quiet logs (also used by `cli_conventions`).
pub(crate) fn cli(args: &[&str]) -> Output {
    Command::new(support::bin("edgeplane"))
        .args(args)
        .env("EDGEPLANE_LOG", "error")
        .env("EDGEPLANE_INSECURE", "true")
        .output()
        .expect("run edgeplane")
}

pub(crate) fn code(o: &Output) -> i32 {
    o.status.code().expect("exited, not signalled")
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_dir_is_locked_and_belongs_to_one_node_name() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let a = Agent::start(dir.path(), "edge-a", &data, &[]);
    a.wait_up().await;
    // A second agent on the same dir fails at once with a clear error.
    let mut b = Agent::start(dir.path(), "edge-a", &data, &[]);
    let st = b.wait_exit(Duration::from_secs(20));
    assert!(!st.success());
    assert!(b.log().contains("in use by another agent"), "{}", b.log());
    drop(a);
    // The dir remembers its node: another name is refused, naming both.
    let mut c = Agent::start(dir.path(), "edge-b", &data, &[]);
    assert!(!c.wait_exit(Duration::from_secs(20)).success());
    assert!(
        c.log().contains("belongs to node \"edge-a\""),
        "{}",
        c.log()
    );
    // The right name starts again (the lock was released with the first process).
    let d = Agent::start(dir.path(), "edge-a", &data, &[]);
    assert_eq!(d.wait_up().await.name, "edge-a");
}

#[tokio::test]
async fn a_corrupt_persisted_assignment_is_set_aside_not_a_failed_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("assignment.pb"), [0xff, 0xff, 0xff, 0x01]).unwrap();
    let a = Agent::start(dir.path(), "edge-c", &data, &[]);
    let s = a.wait_up().await;
    assert_eq!(s.assignment_epoch, 0, "started without an assignment");
    let aside: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("assignment.pb.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert!(!data.join("assignment.pb").exists());
    assert!(a.log().contains("set aside"), "{}", a.log());
}

fn total_arrivals(data: &Path) -> u64 {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("counters.json")).unwrap()).unwrap();
    v["models"]
        .as_object()
        .unwrap()
        .values()
        .map(|m| m["arrivals"].as_u64().unwrap())
        .sum()
}

#[tokio::test]
async fn counters_of_work_done_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let run = |n: u32| {
        let mut a = Agent::start(
            dir.path(),
            "edge-k",
            &data,
            &[
                "--scenario",
                "VR_gaming",
                "--scenario-duration-ms",
                "800",
                "--exit-after-scenario",
            ],
        );
        let st = a.wait_exit(Duration::from_secs(40));
        assert!(st.success(), "run {n}: {}", a.log());
        let mut out = String::new();
        std::io::Read::read_to_string(a.child.stdout.as_mut().unwrap(), &mut out).unwrap();
        serde_json::from_str::<serde_json::Value>(out.trim()).unwrap()
    };
    let first = run(1);
    let after_first = total_arrivals(&data);
    let first_frames = first["frames"].as_u64().unwrap();
    assert!(first_frames > 0, "the scenario did work");
    // The file is saved at shutdown, after the summary: it holds at least what it showed.
    assert!(
        after_first >= first_frames,
        "{after_first} < {first_frames}"
    );
    let second = run(2);
    let after_second = total_arrivals(&data);
    let second_frames = second["frames"].as_u64().unwrap();
    assert!(
        second_frames > after_first,
        "the second run's totals continue the first's: {after_first} -> {second_frames}"
    );
    assert!(after_second >= second_frames);
}

// Multi-threaded: the test blocks its thread while it waits for the process, and the
// client connection of `wait_up` must still be served (else the agent's graceful server
// shutdown waits for it, up to its grace period).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_in_scenario_mode_exits_promptly() {
    let dir = tempfile::tempdir().unwrap();
    for exit_after in [false, true] {
        let mut args = vec![
            "--scenario",
            "VR_gaming",
            "--scenario-duration-ms",
            "600000",
        ];
        if exit_after {
            args.push("--exit-after-scenario");
        }
        let mut a = Agent::start(
            dir.path(),
            "edge-i",
            &dir.path().join(format!("d{exit_after}")),
            &args,
        );
        a.wait_up().await;
        let pid = a.child.id().to_string();
        let t = Instant::now();
        assert!(Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success());
        let st = a.wait_exit(Duration::from_secs(10));
        assert!(
            st.success(),
            "exit_after_scenario={exit_after}: {st:?}\n{}",
            a.log()
        );
        assert!(t.elapsed() < Duration::from_secs(10));
    }
}

async fn node_addr(c: &Cluster, leader: u64, name: &str) -> Option<String> {
    let mut admin = c.client(leader).await.ok()?;
    let r = admin
        .list_nodes(edgeplane_proto::admin::ReadRequest { stale: false })
        .await
        .ok()?
        .into_inner();
    r.nodes
        .into_iter()
        .find(|n| n.name == name)
        .map(|n| n.agent_addr)
}

#[tokio::test]
async fn a_wildcard_listen_registers_a_reachable_advertise_address() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start(
        1,
        Opts {
            insecure: true,
            join_token: Some(TOKEN.into()),
            ..Default::default()
        },
    );
    let leader = c.leader(Duration::from_secs(20)).await;
    let coord = c.replicas[&leader].client_addr.clone();
    let port = free_port();
    let join = ["--coordinators", coord.as_str(), "--join-token", TOKEN];
    let _w = Agent::start_on(
        dir.path(),
        "edge-wild",
        &dir.path().join("w"),
        &format!("0.0.0.0:{port}"),
        &join,
    );
    let got = eventually(Duration::from_secs(30), "edge-wild registered", || {
        node_addr(&c, leader, "edge-wild")
    })
    .await;
    assert_eq!(
        got,
        format!("127.0.0.1:{port}"),
        "the IP that reaches the coordinator"
    );
    let mut args = join.to_vec();
    args.extend(["--advertise-addr", "localhost:7399"]);
    let _h = Agent::start(dir.path(), "edge-host", &dir.path().join("h"), &args);
    let got = eventually(Duration::from_secs(30), "edge-host registered", || {
        node_addr(&c, leader, "edge-host")
    })
    .await;
    assert_eq!(
        got, "localhost:7399",
        "host:port advertise address as given"
    );
}

/// A TCP proxy that can go silent: bytes stop flowing both ways, sockets stay open (a
/// pulled cable, a dropped NAT entry: no FIN, no RST).
struct Blackhole {
    addr: String,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Blackhole {
    async fn start(target: String) -> Blackhole {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let cut2 = cut.clone();
        tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = l.accept().await else {
                    return;
                };
                let Ok(outbound) = tokio::net::TcpStream::connect(&target).await else {
                    continue;
                };
                let (ri, wi) = inbound.into_split();
                let (ro, wo) = outbound.into_split();
                for (mut r, mut w) in [
                    (
                        Box::new(ri) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
                        Box::new(wo) as Box<dyn tokio::io::AsyncWrite + Unpin + Send>,
                    ),
                    (Box::new(ro), Box::new(wi)),
                ] {
                    let cut = cut2.clone();
                    tokio::spawn(async move {
                        use tokio::io::{AsyncReadExt, AsyncWriteExt};
                        let mut buf = vec![0u8; 16 << 10];
                        loop {
                            let n = match r.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            if cut.load(std::sync::atomic::Ordering::SeqCst) {
                                // Swallow: the peer never hears of it. Keep the socket open.
                                std::future::pending::<()>().await;
                            }
                            if w.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    });
                }
            }
        });
        Blackhole { addr, cut }
    }
}

#[tokio::test]
async fn a_silent_partition_is_noticed_within_the_session_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start(
        1,
        Opts {
            insecure: true,
            join_token: Some(TOKEN.into()),
            ..Default::default()
        },
    );
    let leader = c.leader(Duration::from_secs(20)).await;
    let proxy = Blackhole::start(c.replicas[&leader].client_addr.clone()).await;
    let a = Agent::start(
        dir.path(),
        "edge-p",
        &dir.path().join("p"),
        &[
            "--coordinators",
            &proxy.addr,
            "--join-token",
            TOKEN,
            "--session-timeout-ms",
            "1500",
        ],
    );
    eventually(Duration::from_secs(30), "session open", || async {
        a.status().await.filter(|s| s.connected)
    })
    .await;
    proxy.cut.store(true, std::sync::atomic::Ordering::SeqCst);
    let t = Instant::now();
    eventually(
        Duration::from_secs(8),
        "the agent notices the dead link",
        || async { a.status().await.filter(|s| !s.connected) },
    )
    .await;
    let noticed = t.elapsed();
    assert!(
        noticed < Duration::from_secs(5),
        "noticed after {noticed:?} (session timeout 1.5 s)"
    );
    assert!(a.log().contains("coordinator session ended"), "{}", a.log());
    // Healing the path: the agent reconnects by itself.
    proxy.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    eventually(Duration::from_secs(20), "reconnected", || async {
        a.status().await.filter(|s| s.connected)
    })
    .await;
}

#[tokio::test]
async fn health_reflection_and_metrics_are_served() {
    use tonic_health::pb::{
        health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
    };
    let dir = tempfile::tempdir().unwrap();
    let coord_metrics = format!("127.0.0.1:{}", free_port());
    let c = Cluster::start(
        1,
        Opts {
            insecure: true,
            env: vec![(
                "EDGEPLANE_COORDINATOR_METRICS_ADDR".into(),
                coord_metrics.clone(),
            )],
            ..Opts::default()
        },
    );
    let leader = c.leader(Duration::from_secs(20)).await;
    let coord = c.replicas[&leader].client_addr.clone();
    let metrics = format!("127.0.0.1:{}", free_port());
    let a = Agent::start(
        dir.path(),
        "edge-m",
        &dir.path().join("m"),
        &["--metrics-addr", &metrics],
    );
    a.wait_up().await;
    for (addr, svc) in [
        (coord.as_str(), "edgeplane.admin.v1.Admin"),
        (coord.as_str(), ""),
        (a.listen.as_str(), "edgeplane.agent.v1.Inference"),
    ] {
        let ch = Agent::channel(addr).await.expect("connect");
        let st = eventually(Duration::from_secs(10), "health SERVING", || {
            let ch = ch.clone();
            async move {
                let r = HealthClient::new(ch)
                    .check(HealthCheckRequest {
                        service: svc.into(),
                    })
                    .await
                    .ok()?
                    .into_inner();
                (r.status == ServingStatus::Serving as i32).then_some(r.status)
            }
        })
        .await;
        assert_eq!(st, ServingStatus::Serving as i32, "{addr} {svc:?}");
    }
    // Reflection lists the services without any .proto at hand.
    for (addr, want) in [
        (coord.as_str(), "edgeplane.admin.v1.Admin"),
        (a.listen.as_str(), "edgeplane.agent.v1.Inference"),
    ] {
        use tonic_reflection::pb::v1::{
            server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
            ServerReflectionRequest,
        };
        let ch = Agent::channel(addr).await.unwrap();
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = ServerReflectionClient::new(ch)
            .server_reflection_info(tokio_stream::iter(vec![req]))
            .await
            .unwrap()
            .into_inner();
        let resp = stream.message().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(l)) = resp.message_response else {
            panic!("unexpected reflection answer {resp:?}");
        };
        let names: Vec<String> = l.service.into_iter().map(|s| s.name).collect();
        assert!(names.iter().any(|n| n == want), "{addr}: {names:?}");
        assert!(
            names.iter().any(|n| n == "grpc.health.v1.Health"),
            "{names:?}"
        );
    }
    // The agent's Prometheus endpoint.
    let body = eventually(Duration::from_secs(10), "metrics answer", || async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(&metrics).await.ok()?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).await.ok()?;
        Some(out)
    })
    .await;
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(
        body.contains("# TYPE edgeplane_agent_connected gauge"),
        "{body}"
    );
    assert!(
        body.contains("edgeplane_agent_accelerator_busy_seconds_total{accelerator=\"npu0\"}"),
        "{body}"
    );
    // Both daemons, both formats: Prometheus text passes promtool's lint, OpenMetrics when
    // asked for it (before: always OpenMetrics, and `promtool check metrics` exited 3 on
    // "no help text" for every counter).
    for (addr, family) in [
        (metrics.as_str(), "edgeplane_agent_connected"),
        (coord_metrics.as_str(), "edgeplane_raft_has_leader"),
    ] {
        let text = scrape(addr, "text/plain;version=0.0.4").await;
        assert!(
            text.contains("Content-Type: text/plain; version=0.0.4"),
            "{text}"
        );
        let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        for want in [family, "process_cpu_seconds_total", "edgeplane_build_info{"] {
            assert!(body.contains(want), "{addr}: {want} missing:\n{body}");
        }
        assert!(!body.contains("# EOF"), "{body}");
        promtool_check_metrics(&body);
        let om = scrape(addr, "application/openmetrics-text;version=1.0.0").await;
        assert!(
            om.contains("Content-Type: application/openmetrics-text"),
            "{om}"
        );
        assert!(om.trim_end().ends_with("# EOF"), "{om}");
    }
}

async fn scrape(addr: &str, accept: &str) -> String {
    eventually(Duration::from_secs(10), "metrics answer", || async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        let req = format!("GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: {accept}\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).await.ok()?;
        out.starts_with("HTTP/1.1 200").then_some(out)
    })
    .await
}

/// `promtool check metrics` on a Prometheus text exposition. Without promtool (Debian's
/// `prometheus` package) the check is skipped with a note, except under CI=true.
pub fn promtool_check_metrics(body: &str) {
    use std::io::Write;
    let Some(promtool) = support::tool_or_skip("promtool", "prometheus") else {
        return;
    };
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "promtool check metrics failed:\n{}{}\n--- input ---\n{body}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn the_shipped_prometheus_config_passes_promtool() {
    let Some(promtool) = support::tool_or_skip("promtool", "prometheus") else {
        return;
    };
    let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus.yml");
    let o = Command::new(promtool)
        .args(["check", "config", "--syntax-only"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[tokio::test]
async fn cli_exit_codes_json_writes_and_node_commands_against_a_real_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start(
        1,
        Opts {
            insecure: true,
            join_token: Some(TOKEN.into()),
            ..Default::default()
        },
    );
    let leader = c.leader(Duration::from_secs(20)).await;
    let e = c.replicas[&leader].client_addr.clone();
    let ep = ["--endpoints", e.as_str()];
    let with = |args: &[&'static str]| -> Vec<String> {
        let mut v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        v.extend(ep.iter().map(|s| s.to_string()));
        v
    };
    let run = |args: Vec<String>| cli(&args.iter().map(String::as_str).collect::<Vec<_>>());

    // A write in JSON: one document with the write shape.
    let o = run(with(&[
        "models",
        "deploy",
        "ES_RITNet",
        "--slo-ms",
        "16",
        "--rate",
        "60",
        "--format",
        "json",
    ]));
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    let v = json(&o);
    assert_eq!(v["command"], "models deploy");
    assert_eq!(v["ok"], true);
    assert!(v["index"].as_u64().unwrap() > 0);
    assert_eq!(v["model"], "ES_RITNet");

    // Not found (4), invalid input from the cluster (3) and from the command line (3).
    let o = run(with(&["models", "get", "nope"]));
    assert_eq!(code(&o), 4, "{}", String::from_utf8_lossy(&o.stderr));
    let o = run(with(&["models", "get", "nope", "--format", "json"]));
    assert_eq!(code(&o), 4);
    let err: serde_json::Value = serde_json::from_slice(&o.stderr).unwrap();
    assert_eq!(err["error"]["kind"], "not_found");
    let o = run(with(&["models", "deploy", "bad", "--slo-ms", "-1"]));
    assert_eq!(code(&o), 3, "{}", String::from_utf8_lossy(&o.stderr));
    let o = run(with(&["models", "deploy", "bad", "--slo-ms", "abc"]));
    assert_eq!(
        code(&o),
        3,
        "clap usage error: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = run(with(&[
        "placement",
        "unpin",
        "--node",
        "ghost",
        "--model",
        "ES_RITNet",
    ]));
    assert_eq!(code(&o), 4, "{}", String::from_utf8_lossy(&o.stderr));
    let o = run(with(&["nodes", "drain", "ghost"]));
    assert_eq!(code(&o), 4, "{}", String::from_utf8_lossy(&o.stderr));
    let o = run(with(&["nodes", "remove", "ghost"]));
    assert_eq!(code(&o), 4, "{}", String::from_utf8_lossy(&o.stderr));
    // Unavailable (2): nothing listens there.
    let dead = format!("127.0.0.1:{}", free_port());
    let o = cli(&["models", "list", "--endpoints", &dead, "--timeout-s", "1"]);
    assert_eq!(code(&o), 2, "{}", String::from_utf8_lossy(&o.stderr));
    // The older spelling (connection flags before the command) still works.
    let o = cli(&["--endpoints", &e, "models", "list", "--format", "json"]);
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(json(&o).as_array().unwrap().len(), 1);

    // An agent joins; pin, unpin, drain (and it stays draining when it re-registers),
    // agent status, remove.
    let a = Agent::start(
        dir.path(),
        "edge-d",
        &dir.path().join("d"),
        &["--coordinators", &e, "--join-token", TOKEN],
    );
    eventually(Duration::from_secs(30), "edge-d connected", || async {
        a.status().await.filter(|s| s.connected)
    })
    .await;
    let o = run(with(&[
        "placement",
        "set",
        "--node",
        "edge-d",
        "--model",
        "ES_RITNet",
        "--format",
        "json",
    ]));
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    eventually(Duration::from_secs(15), "agent serves the pin", || async {
        a.status().await.filter(|s| s.models == ["ES_RITNet"])
    })
    .await;
    let o = cli(&["agent", "status", "--agent", &a.listen, "--format", "json"]);
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    let v = json(&o);
    assert_eq!(v["name"], "edge-d");
    assert_eq!(v["connected"], true);
    assert_eq!(v["models"][0], "ES_RITNet");
    assert_eq!(
        v["ready_models"][0], "ES_RITNet",
        "NPUs are ready at once: {v}"
    );
    let o = run(with(&[
        "placement",
        "unpin",
        "--node",
        "edge-d",
        "--model",
        "ES_RITNet",
    ]));
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    let o = run(with(&[
        "placement",
        "set",
        "--node",
        "edge-d",
        "--model",
        "ES_RITNet",
    ]));
    assert_eq!(code(&o), 0);
    let o = run(with(&["nodes", "drain", "edge-d", "--format", "json"]));
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(json(&o)["status"], "draining");
    eventually(
        Duration::from_secs(15),
        "the drained agent serves nothing",
        || async {
            a.status()
                .await
                .filter(|s| s.models.is_empty() && s.assignment_epoch > 0)
        },
    )
    .await;
    let o = run(with(&[
        "placement",
        "set",
        "--node",
        "edge-d",
        "--model",
        "ES_RITNet",
    ]));
    assert_eq!(
        code(&o),
        3,
        "no pin on a draining node: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let nodes = json(&run(with(&["nodes", "list", "--format", "json"])));
    assert_eq!(nodes[0]["status"], "draining");
    let show = json(&run(with(&["placement", "show", "--format", "json"])));
    assert_eq!(show["pins"].as_array().unwrap().len(), 0, "{show}");
    drop(a);
    let o = run(with(&["nodes", "remove", "edge-d", "--format", "json"]));
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    let nodes = json(&run(with(&["nodes", "list", "--format", "json"])));
    assert!(nodes.as_array().unwrap().is_empty(), "{nodes}");
    // agent status against nothing: unavailable.
    let o = cli(&["agent", "status", "--agent", &dead, "--timeout-s", "1"]);
    assert_eq!(code(&o), 2);
}

#[tokio::test]
async fn snapshot_restore_brings_the_state_up_in_a_new_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start(
        1,
        Opts {
            insecure: true,
            ..Opts::default()
        },
    );
    let leader = c.leader(Duration::from_secs(20)).await;
    let e = c.replicas[&leader].client_addr.clone();
    for m in ["resnet18", "resnet50"] {
        let o = cli(&["models", "deploy", m, "--slo-ms", "30", "--endpoints", &e]);
        assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    }
    let snap = dir.path().join("backup.snap");
    let o = cli(&[
        "snapshot",
        "save",
        snap.to_str().unwrap(),
        "--endpoints",
        &e,
        "--format",
        "json",
    ]);
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    let saved_index = json(&o)["index"].as_u64().unwrap();
    drop(c);

    let (peer, client) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let data = dir.path().join("restored");
    let restore = |d: &Path| {
        cli(&[
            "snapshot",
            "restore",
            snap.to_str().unwrap(),
            "--data-dir",
            d.to_str().unwrap(),
            "--id",
            "1",
            "--peer-addr",
            &peer,
            "--client-addr",
            &client,
            "--format",
            "json",
        ])
    };
    let o = restore(&data);
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    let v = json(&o);
    assert_eq!(v["models"], 2);
    assert_eq!(v["index"].as_u64().unwrap(), saved_index);
    // Not twice into the same dir; not from a missing or foreign file.
    assert_eq!(code(&restore(&data)), 3);
    let o = cli(&[
        "snapshot",
        "restore",
        "/nonexistent.snap",
        "--data-dir",
        "/tmp/x",
        "--peer-addr",
        &peer,
        "--client-addr",
        &client,
    ]);
    assert_eq!(code(&o), 4, "{}", String::from_utf8_lossy(&o.stderr));

    let log = std::fs::File::create(dir.path().join("restored.log")).unwrap();
    let mut child = Command::new(support::bin("edgeplane-coordinator"))
        .args(["--id", "1", "--peer-addr", &peer, "--client-addr", &client])
        .args(["--initial-cluster", &format!("1={peer}")])
        .arg("--data-dir")
        .arg(&data)
        .arg("--insecure")
        .env("EDGEPLANE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    struct Kill<'a>(&'a mut Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _k = Kill(&mut child);
    let names = eventually(
        Duration::from_secs(30),
        "restored cluster answers",
        || async {
            let o = cli(&[
                "models",
                "list",
                "--endpoints",
                &client,
                "--timeout-s",
                "2",
                "--format",
                "json",
            ]);
            (code(&o) == 0).then(|| json(&o))
        },
    )
    .await;
    let mut got: Vec<&str> = names
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    got.sort();
    assert_eq!(got, ["resnet18", "resnet50"]);
    // It takes writes, numbered after the snapshot's index.
    let o = cli(&[
        "models",
        "deploy",
        "vgg16",
        "--slo-ms",
        "60",
        "--endpoints",
        &client,
        "--format",
        "json",
    ]);
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    assert!(json(&o)["index"].as_u64().unwrap() > saved_index);
}

#[test]
fn completion_scripts_for_every_shell() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef edgeplane"),
        ("fish", "complete -c edgeplane"),
    ] {
        let o = cli(&["completion", shell]);
        assert_eq!(code(&o), 0, "{shell}");
        let s = String::from_utf8_lossy(&o.stdout);
        assert!(s.contains(marker), "{shell}: {}", &s[..s.len().min(300)]);
        assert!(s.contains("drain"), "{shell} completes the new commands");
    }
    // Help shows examples; usage errors are invalid input.
    let o = cli(&["nodes", "drain", "--help"]);
    assert_eq!(code(&o), 0);
    assert!(String::from_utf8_lossy(&o.stdout).contains("Example: edgeplane nodes drain"));
    assert_eq!(code(&cli(&["nodes", "frobnicate"])), 3);
}
