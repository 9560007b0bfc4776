//! `edgeplane dashboard` and `edgeplane top` against a real fleet: three coordinator replicas
//! (mutual TLS, fast planner) and two agents with a simulated Jetson GPU each.
//! - the JSON views match `nodes list` / `placement show --format json`, and a dashboard run
//!   with a *viewer* certificate answers every view while the cluster's state (applied index
//!   and state hash on every replica) stays the same; every non-GET request is refused;
//! - a real headless Chromium (DevTools protocol over `--remote-debugging-pipe`) loads the
//!   page, sees the seed models' partitions, a plan change within 5 s of the deploy that
//!   caused it, no JavaScript error, and takes the README's screenshot;
//! - `top` under tmux: rows, view switching, sorting, `q`, and a closed terminal.
//!
//! Chromium and tmux are skipped (visibly) outside CI when missing; under `CI=true` a missing
//! tool fails the test (`.ci/run` installs both).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use edgeplane_proto::admin as adm;
use edgeplane_tls::Role;
use serde_json::{json, Value};

use crate::cluster::{Cluster, Opts};
use crate::support::{self, eventually, free_port, tls};

mod browser;

/// The dashboard tests start a fleet each: one at a time on a two-core machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const GPU_NODES: [&str; 2] = ["dash-gpu-1", "dash-gpu-2"];

/// The seed models with their SLOs (ms); 20 req/s each.
const SEED: [(&str, f64); 3] = [("resnet18", 45.0), ("resnet50", 108.0), ("vgg16", 150.0)];
const SEED_RATE: f64 = 20.0;

/// Skip (outside CI) or fail (under CI=true) when `tool` is not installed.
pub fn require(tool: &str, test: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!(
                "CI=true requires {test} to run, but {tool} is not installed (.ci/run installs it)"
            );
        }
        eprintln!("SKIPPED {test}: {tool} is not installed (apt-get install {tool}; it runs under CI=true)");
    }
    found
}

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Three replicas and two GPU agents, every link mutual TLS.
struct Fleet {
    cluster: Cluster,
    _agents: Vec<Agent>,
    leader: u64,
}

fn start_agent(dir: &Path, name: &str, coordinators: &[String]) -> Agent {
    let t = tls();
    let log = std::fs::File::create(dir.join(format!("agent-{name}.log"))).expect("log");
    let child = Command::new(support::bin("edgeplane-agent"))
        .args(["--name", name, "--listen"])
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--data-dir")
        .arg(dir.join(format!("agent-{name}")))
        .args(["--accelerators", "sim-gpu:Jetson-AGX-Xavier"])
        .args(["--worker-start-ms", "200", "--report-interval-ms", "200"])
        .args(["--max-backoff-ms", "300"])
        .args(["--coordinators", &coordinators.join(",")])
        .args(t.args(&t.node(name)))
        .env("EDGEPLANE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start edgeplane-agent");
    Agent(child)
}

impl Fleet {
    async fn start() -> Fleet {
        let opts = Opts {
            env: vec![
                (
                    "EDGEPLANE_COORDINATOR_PLAN_INTERVAL_MS".into(),
                    "200".into(),
                ),
                ("EDGEPLANE_COORDINATOR_RATE_WINDOW_MS".into(), "1000".into()),
            ],
            ..Default::default()
        };
        let cluster = Cluster::start(3, opts);
        let leader = cluster.leader(Duration::from_secs(20)).await;
        let eps = cluster.endpoints();
        let agents = GPU_NODES
            .iter()
            .map(|n| start_agent(cluster.dir.path(), n, &eps))
            .collect();
        let f = Fleet {
            cluster,
            _agents: agents,
            leader,
        };
        eventually(Duration::from_secs(40), "both GPU nodes ready", || async {
            let n = f.nodes().await?;
            let ready = n
                .nodes
                .iter()
                .filter(|n| n.status == "ready" && n.accelerators.iter().any(|a| a.kind == "gpu"))
                .count();
            (ready == GPU_NODES.len()).then_some(())
        })
        .await;
        f
    }

    async fn admin(&self) -> Option<adm::admin_client::AdminClient<tonic::transport::Channel>> {
        self.cluster.client(self.leader).await.ok()
    }

    async fn nodes(&self) -> Option<adm::ListNodesResponse> {
        let mut c = self.admin().await?;
        let r = c.list_nodes(adm::ReadRequest { stale: false }).await.ok()?;
        Some(r.into_inner())
    }

    async fn placement(&self) -> Option<adm::ShowPlacementResponse> {
        let mut c = self.admin().await?;
        let r = c.show_placement(adm::ReadRequest { stale: false });
        Some(r.await.ok()?.into_inner())
    }

    async fn deploy(&self, name: &str, slo_ms: f64) {
        eventually(Duration::from_secs(15), "deploy acknowledged", || async {
            let mut c = self.admin().await?;
            c.deploy_model(adm::DeployModelRequest {
                meta: None,
                name: name.into(),
                slo_ms,
                rate: SEED_RATE,
                memory_mb: 0,
            })
            .await
            .ok()
            .map(|_| ())
        })
        .await;
    }

    /// Wait until the committed plan serves every one of `models`.
    async fn placed(&self, models: &[&str]) -> adm::ShowPlacementResponse {
        eventually(Duration::from_secs(40), "the models placed", || async {
            let p = self.placement().await?;
            let served = |m: &str| {
                p.nodes
                    .iter()
                    .flat_map(|n| &n.partitions)
                    .any(|x| x.models.iter().any(|y| y == m))
            };
            models.iter().all(|m| served(m)).then_some(p)
        })
        .await
    }

    /// (applied index, state hash) of every replica, once they agree and hold still.
    async fn quiet_state(&self) -> Vec<(u64, u64)> {
        eventually(
            Duration::from_secs(30),
            "a quiet, converged state",
            || async {
                let a = self.hashes().await?;
                tokio::time::sleep(Duration::from_millis(700)).await;
                let b = self.hashes().await?;
                (a == b && a.windows(2).all(|w| w[0] == w[1])).then_some(a)
            },
        )
        .await
    }

    async fn hashes(&self) -> Option<Vec<(u64, u64)>> {
        let mut out = Vec::new();
        for id in self.cluster.running() {
            let mut c = self.cluster.client(id).await.ok()?;
            let h = c.state_hash(adm::ReadRequest { stale: true }).await.ok()?;
            let h = h.into_inner();
            out.push((h.applied_index, h.hash));
        }
        Some(out)
    }
}

/// The environment that makes an `edgeplane` command use `role`'s certificate.
fn role_env(cmd: &mut Command, role: Role) -> &mut Command {
    let t = tls();
    let p = t.user(role);
    cmd.env("EDGEPLANE_TLS_CA", t.ca())
        .env("EDGEPLANE_TLS_CERT", p.cert)
        .env("EDGEPLANE_TLS_KEY", p.key)
        .env_remove("EDGEPLANE_INSECURE")
}

/// A running `edgeplane dashboard`.
struct Dashboard {
    child: Child,
    addr: String,
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Dashboard {
    fn start(f: &Fleet, role: Role, log: &Path) -> Dashboard {
        let addr = format!("127.0.0.1:{}", free_port());
        let mut cmd = Command::new(support::bin("edgeplane"));
        cmd.args(["dashboard", "--listen", &addr, "--poll-ms", "250"])
            .args(["--history-s", "40"])
            .args(["--endpoints", &f.cluster.endpoints().join(",")])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).expect("log"));
        let child = role_env(&mut cmd, role).spawn().expect("start dashboard");
        let d = Dashboard { child, addr };
        crate::assert_eventually!(
            http(&d.addr, "GET", "/api/cluster").is_some_and(|r| r.status == 200),
            Duration::from_secs(20),
            "the dashboard answers on {}",
            d.addr
        );
        d
    }

    fn get(&self, path: &str) -> Value {
        let r = http(&self.addr, "GET", path).unwrap_or_else(|| panic!("GET {path}: no answer"));
        assert_eq!(r.status, 200, "GET {path}: {}", r.body);
        serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("GET {path}: {e}: {}", r.body))
    }
}

pub struct HttpAnswer {
    pub status: u16,
    pub body: String,
}

/// One HTTP/1.1 request over a plain socket (what any tool does with the JSON views).
pub fn http(addr: &str, method: &str, path: &str) -> Option<HttpAnswer> {
    http_as(addr, addr, method, path)
}

/// [`http`] with another `Host` header (what a page on another site sends after DNS rebinding).
fn http_as(addr: &str, host: &str, method: &str, path: &str) -> Option<HttpAnswer> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let body = if method == "GET" { "" } else { "{}" };
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let status = raw.split_whitespace().nth(1)?.parse().ok()?;
    let body = raw.split_once("\r\n\r\n")?.1.to_string();
    Some(HttpAnswer { status, body })
}

/// `edgeplane ARGS --format json` as `role`.
fn cli_json(f: &Fleet, role: Role, args: &[&str]) -> Value {
    let mut cmd = Command::new(support::bin("edgeplane"));
    cmd.args(args).args([
        "--format",
        "json",
        "--endpoints",
        &f.cluster.endpoints().join(","),
    ]);
    let out = role_env(&mut cmd, role).output().expect("run edgeplane");
    assert!(
        out.status.success(),
        "edgeplane {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from the CLI")
}

/// The dashboard's node objects without the fields only the dashboard adds.
fn strip_dashboard_fields(mut nodes: Value) -> Value {
    for n in nodes.as_array_mut().expect("nodes array") {
        let o = n.as_object_mut().expect("node object");
        assert!(o
            .remove("rates")
            .is_some_and(|r| r.get("finished_per_s").is_some()));
        assert!(o.remove("profile_source").is_some_and(|p| p.is_array()));
    }
    nodes
}

const VIEWS: [&str; 6] = [
    "/api/cluster",
    "/api/nodes",
    "/api/placement",
    "/api/partitions",
    "/api/models",
    "/api/events",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_views_match_the_cli_and_a_viewer_changes_nothing() {
    let _serial = SERIAL.lock().await;
    let f = Fleet::start().await;
    for (m, slo) in SEED {
        f.deploy(m, slo).await;
    }
    f.placed(&SEED.map(|s| s.0)).await;
    let before = f.quiet_state().await;
    let dir = tempfile::tempdir().unwrap();
    let d = Dashboard::start(&f, Role::Viewer, &dir.path().join("dashboard.log"));

    // nodes and placement: the CLI's own JSON objects (the viewer may read both).
    eventually(
        Duration::from_secs(20),
        "/api/nodes = nodes list",
        || async {
            let cli = cli_json(&f, Role::Viewer, &["nodes", "list"]);
            let v = d.get("/api/nodes");
            assert_eq!(v["error"], Value::Null, "{v}");
            (strip_dashboard_fields(v["nodes"].clone()) == cli).then_some(())
        },
    )
    .await;
    let cli = cli_json(&f, Role::Viewer, &["placement", "show", "--history"]);
    eventually(
        Duration::from_secs(20),
        "/api/placement = placement show",
        || async { (d.get("/api/placement")["placement"] == cli).then_some(()) },
    )
    .await;

    // cluster: the leader and the three members, as `cluster status` has them.
    let st = cli_json(&f, Role::Viewer, &["cluster", "status"]);
    let c = d.get("/api/cluster");
    assert_eq!(c["cluster"]["leader_id"], st["leader_id"], "{c}");
    assert_eq!(c["cluster"]["members"].as_array().unwrap().len(), 3, "{c}");
    assert_eq!(c["cluster"]["applied_index"], json!(before[0].0), "{c}");

    check_models(&d.get("/api/models"), &cli);
    // partitions: one series per GPU of `placement show`.
    let p = d.get("/api/partitions");
    assert_eq!(
        p["gpus"].as_array().unwrap().len(),
        cli["gpus"].as_array().unwrap().len(),
        "{p}"
    );
    // events: the plan history.
    let ev = d.get("/api/events");
    assert_eq!(
        ev["events"].as_array().unwrap().len(),
        cli["events"].as_array().unwrap().len()
    );

    read_everything_write_nothing(&d);
    // Two more polls of the collector (250 ms apart), then the replicas' state is compared.
    let seen = d.get("/api/cluster")["updated_unix_ms"].as_u64().unwrap();
    eventually(Duration::from_secs(10), "two more polls", || async {
        let now = d.get("/api/cluster")["updated_unix_ms"].as_u64()?;
        (now >= seen + 500).then_some(())
    })
    .await;
    let after = f.quiet_state().await;
    assert_eq!(before, after, "the dashboard changed the cluster's state");
}

/// Each seed model in `/api/models`: its requested rate, SLO, where `placement show` has it.
fn check_models(m: &Value, cli: &Value) {
    for (name, slo) in SEED {
        let e = m["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing from /api/models: {m}"));
        assert_eq!(e["requested_rps"], json!(SEED_RATE), "{e}");
        assert_eq!(e["slo_ms"], json!(slo), "{e}");
        let placed = &e["placement"];
        let on_cli: Vec<Value> = cli["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|n| {
                let node = n["node"].clone();
                n["partitions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|p| p["models"].as_array().unwrap().contains(&json!(name)))
                    .map(move |p| {
                        json!({"node": node, "accelerator": p["accelerator"], "share_pct": p["share_pct"]})
                    })
            })
            .collect();
        assert_eq!(placed, &json!(on_cli), "{name}: {e}");
        assert!(
            e["history"].as_array().is_some_and(|h| !h.is_empty()),
            "{e}"
        );
    }
}

/// Every view, many times, and every writing method (405).
fn read_everything_write_nothing(d: &Dashboard) {
    for _ in 0..5 {
        for v in VIEWS {
            let r = d.get(v);
            assert_eq!(r["error"], Value::Null, "{v} as a viewer: {r}");
        }
    }
    for v in VIEWS.iter().chain(&["/"]) {
        for method in ["POST", "PUT", "DELETE", "PATCH"] {
            let r = http(&d.addr, method, v).expect("an answer");
            assert_eq!(r.status, 405, "{method} {v}: {}", r.body);
        }
    }
    let r = http_as(&d.addr, "evil.example:80", "GET", "/api/nodes").expect("an answer");
    assert_eq!(r.status, 403, "a request for another host name: {}", r.body);
    let r = http(&d.addr, "GET", "/").expect("the page");
    assert!(
        r.status == 200 && r.body.contains("js-errors"),
        "{}",
        r.status
    );
}

/// Where the README's screenshot is written: `docs/dashboard.png` with
/// `EDGEPLANE_UPDATE_SCREENSHOT=1`, the target folder otherwise.
fn screenshot_path() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf();
    if std::env::var("EDGEPLANE_UPDATE_SCREENSHOT").as_deref() == Ok("1") {
        root.join("docs").join("dashboard.png")
    } else {
        std::env::temp_dir().join("edgeplane-dashboard.png")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_the_seed_models_and_a_plan_change_within_5_s() {
    if !require("chromium", "the dashboard browser test") {
        return;
    }
    let _serial = SERIAL.lock().await;
    let f = Fleet::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = Dashboard::start(&f, Role::Admin, &dir.path().join("dashboard.log"));
    let mut b = browser::Browser::launch(dir.path(), &format!("http://{}/", d.addr));
    b.wait_for("the page polled", Duration::from_secs(20), |b| {
        b.eval("Number(document.body.dataset.polls)").as_f64() >= Some(1.0)
    });
    for (m, slo) in &SEED[..2] {
        f.deploy(m, *slo).await;
    }
    f.placed(&["resnet18", "resnet50"]).await;
    // The third seed model: its plan change must reach the page within 5 s of the deploy.
    let known = f.placement().await.map_or(0, |p| p.events.len());
    let t0 = Instant::now();
    f.deploy(SEED[2].0, SEED[2].1).await;
    let event = eventually(
        Duration::from_secs(20),
        "the plan change for vgg16",
        || async {
            let p = f.placement().await?;
            p.events[known.min(p.events.len())..]
                .iter()
                .find(|e| e.partitions.contains("vgg16"))
                .cloned()
        },
    )
    .await;
    let shown = format!(
        "document.querySelector('li.event[data-event-index=\"{}\"]') !== null",
        event.index
    );
    b.wait_for(
        "the plan change on the page",
        Duration::from_secs(20),
        |b| b.eval(&shown) == json!(true),
    );
    let took = t0.elapsed();
    eprintln!(
        "plan change #{} on the page {took:?} after the deploy",
        event.index
    );
    assert!(
        took < Duration::from_secs(5),
        "the plan change #{} reached the page {took:?} after the deploy",
        event.index
    );

    // The partitions chart: every GPU partition of the committed plan, its models and share.
    let plan = f.placed(&SEED.map(|s| s.0)).await;
    let want: Vec<(String, u32)> = plan
        .nodes
        .iter()
        .flat_map(|n| &n.partitions)
        .map(|p| (p.models.join("+"), p.share_pct))
        .collect();
    let legend = "JSON.stringify([...document.querySelectorAll('#partitions .part')].map(e => [e.dataset.model, Number(e.dataset.share)]))";
    b.wait_for("the chart shows the plan", Duration::from_secs(20), |b| {
        let got: Vec<(String, u32)> =
            serde_json::from_str(b.eval(legend).as_str().unwrap_or("[]")).unwrap_or_default();
        want.iter().all(|w| got.contains(w))
    });
    let text = b.eval("document.body.innerText");
    for (m, _) in SEED {
        assert!(
            text.as_str().unwrap_or("").contains(m),
            "{m} not on the page"
        );
    }
    // Load through the agents' Infer API (`edgeplane load`): the observed rates reach the page.
    let _load = start_load(&f, &plan, dir.path()).await;
    let observed = "Math.max(0, ...[...document.querySelectorAll('#models tr')].slice(1).map(r => Number(r.children[3].textContent)))";
    b.wait_for("observed rates on the page", Duration::from_secs(30), |b| {
        b.eval(observed).as_f64() > Some(0.0)
    });
    // A few more polls so the charts hold some history, then the picture.
    let polls = b
        .eval("Number(document.body.dataset.polls)")
        .as_f64()
        .unwrap_or(0.0);
    b.wait_for("eight more polls", Duration::from_secs(30), |b| {
        b.eval("Number(document.body.dataset.polls)").as_f64() >= Some(polls + 8.0)
    });
    let path = screenshot_path();
    b.screenshot(&path);
    eprintln!("dashboard screenshot: {}", path.display());
    let errors = b.eval("document.getElementById('js-errors').textContent");
    assert_eq!(errors, json!(""), "the page logged JavaScript errors");
    assert!(b.errors().is_empty(), "JavaScript errors: {:?}", b.errors());
}

/// `edgeplane load` processes, killed on drop.
struct Load(Vec<Child>);

impl Drop for Load {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// 15 req/s of each seed model to the agent its partition is on, for 30 s.
async fn start_load(f: &Fleet, plan: &adm::ShowPlacementResponse, dir: &Path) -> Load {
    let nodes = f.nodes().await.expect("nodes");
    let t = tls();
    let app = t.issue(edgeplane_tls::Identity {
        principal: edgeplane_tls::Principal::Client("dash-app".into()),
        role: None,
    });
    let mut children = Vec::new();
    for (m, _) in SEED {
        let Some(node) = plan
            .nodes
            .iter()
            .find(|n| n.partitions.iter().any(|p| p.models.iter().any(|x| x == m)))
        else {
            continue;
        };
        let addr = &nodes
            .nodes
            .iter()
            .find(|n| n.name == node.node)
            .expect("node")
            .agent_addr;
        let c = Command::new(support::bin("edgeplane"))
            .args([
                "load",
                "--agent",
                addr,
                "--model",
                m,
                "--rate",
                "15",
                "--duration-s",
                "30",
            ])
            .args(t.args(&app))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join(format!("load-{m}.log"))).expect("log"))
            .spawn()
            .expect("start edgeplane load");
        children.push(c);
    }
    Load(children)
}

/// A tmux server of its own (its own socket), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket]);
        c
    }

    fn run(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).output().expect("run tmux");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn capture(&self, target: &str) -> String {
        self.run(&["capture-pane", "-p", "-t", target])
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").output();
    }
}

fn pid_alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.split_whitespace().nth(2).is_none_or(|st| st != "Z"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_under_tmux_shows_the_rows_switches_views_and_quits() {
    if !require("tmux", "the edgeplane top test") {
        return;
    }
    let _serial = SERIAL.lock().await;
    let f = Fleet::start().await;
    f.deploy("resnet18", 45.0).await;
    f.placed(&["resnet18"]).await;
    let dir = tempfile::tempdir().unwrap();
    let t = tls();
    let p = t.user(Role::Viewer);
    let exit_file = dir.path().join("top.exit");
    let top = format!(
        "env EDGEPLANE_TLS_CA={} EDGEPLANE_TLS_CERT={} EDGEPLANE_TLS_KEY={} {} top --poll-ms 250 --endpoints {}",
        t.ca().display(),
        p.cert.display(),
        p.key.display(),
        support::bin("edgeplane").display(),
        f.cluster.endpoints().join(",")
    );
    let tmux = Tmux {
        socket: format!("edgeplane-it-{}", std::process::id()),
    };
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "top",
        "-x",
        "150",
        "-y",
        "30",
        &format!("{top}; echo $? > {}", exit_file.display()),
    ]);
    let rows = |want: &[&str]| {
        let s = tmux.capture("top");
        want.iter().all(|w| s.contains(w)).then_some(s)
    };
    let wait = |what: &str, want: &[&str]| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = rows(want) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: {want:?} not on the screen:\n{}",
                tmux.capture("top")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // Nodes view: both GPU nodes, ready, with their accelerator.
    let s = wait(
        "nodes view",
        &["1 nodes", GPU_NODES[0], GPU_NODES[1], "ready", "gpu0"],
    );
    assert!(s.contains("leader") && s.contains("3/3 reachable"), "{s}");
    // Partitions view: resnet18's partition on its GPU.
    tmux.run(&["send-keys", "-t", "top", "2"]);
    wait("partitions view", &["share %", "resnet18"]);
    // Models view: requested 20.0/s.
    tmux.run(&["send-keys", "-t", "top", "3"]);
    wait("models view", &["requested/s", "resnet18", "20.0"]);
    // Sort: the second column carries the marker, `r` flips it.
    tmux.run(&["send-keys", "-t", "top", "s"]);
    wait("sorted by slo_ms", &["slo_ms ^"]);
    tmux.run(&["send-keys", "-t", "top", "r"]);
    wait("reversed", &["slo_ms v"]);
    tmux.run(&["send-keys", "-t", "top", "4"]);
    wait("events view", &["reason", GPU_NODES[0]]);
    tmux.run(&["send-keys", "-t", "top", "q"]);
    crate::assert_eventually!(
        std::fs::read_to_string(&exit_file).is_ok_and(|s| s.trim() == "0"),
        Duration::from_secs(10),
        "top exits 0 on q (exit file: {:?})",
        std::fs::read_to_string(&exit_file)
    );

    // A closed terminal: the session (and its pty) goes away; top goes with it.
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "gone",
        "-x",
        "120",
        "-y",
        "30",
        &format!("exec {top}"),
    ]);
    let pid = tmux
        .run(&["list-panes", "-t", "gone", "-F", "#{pane_pid}"])
        .trim()
        .to_string();
    wait_gone_setup(&tmux);
    assert!(pid_alive(&pid), "top {pid} runs");
    tmux.run(&["kill-session", "-t", "gone"]);
    crate::assert_eventually!(
        !pid_alive(&pid),
        Duration::from_secs(10),
        "top {pid} exits when its terminal closes"
    );
}

/// Wait until the second session's `top` drew its first screen.
fn wait_gone_setup(tmux: &Tmux) {
    crate::assert_eventually!(
        tmux.capture("gone").contains("1 nodes"),
        Duration::from_secs(20),
        "top draws in the second session"
    );
}
