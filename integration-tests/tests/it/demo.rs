//! `edgeplane demo` as a newcomer runs it: the real binary, a short `--duration`. It must exit
//! 0 with a report (read as `--format json`) that says every link was mutual TLS and names the
//! failover time, the deadlines met per model and the plan changes, write its pictures and
//! CSVs, and leave no process behind: after a normal run, after Ctrl-C, and after the demo
//! itself is SIGKILLed.

use crate::support::bin;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The pids the demo wrote to `<out>/pids.txt` (one `name pid` line per child).
fn pids(out: &Path) -> Vec<(String, u32)> {
    std::fs::read_to_string(out.join("pids.txt"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (n, p) = l.split_once(' ')?;
            Some((n.to_string(), p.trim().parse().ok()?))
        })
        .collect()
}

/// Whether `pid` is still one of the demo's children (an `edgeplane internal` process); a
/// reused pid running something else does not count.
fn alive(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            let s = String::from_utf8_lossy(&c).replace('\0', " ");
            s.contains(" internal ")
        })
        .unwrap_or(false)
}

fn demo(out: &Path, duration: &str) -> Command {
    let mut c = Command::new(bin("edgeplane"));
    // 110 virtual seconds of the GPU reference runs still hold all three arrivals (0, 50, 100 s)
    c.args([
        "demo",
        "--format",
        "json",
        "--duration",
        duration,
        "--gpu-virtual-s",
        "150",
        "--out",
    ])
    .arg(out)
    .env("EDGEPLANE_LOG", "warn");
    c
}

/// Start the demo in the background and wait until its children are up (3 coordinators and
/// the XR agent; a GPU box agent too when the agent can simulate GPUs).
fn start_and_wait_for_children(out: &Path, extra: &[&str]) -> (Child, Vec<(String, u32)>) {
    let child = demo(out, "60")
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start edgeplane demo");
    let mut found: Vec<(String, u32)>;
    crate::assert_eventually!(
        {
            found = pids(out);
            found.len() >= 4
        },
        Duration::from_secs(60),
        "the demo wrote at least 4 child pids to {}",
        out.join("pids.txt").display()
    );
    for (n, p) in &found {
        assert!(alive(*p), "{n} (pid {p}) runs");
    }
    (child, found)
}

#[test]
fn demo_runs_the_system_reports_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = demo(&out, "12").output().expect("run edgeplane demo");
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        o.status
    );

    // The report, read as the JSON document `--format json` prints (the typed DemoReport).
    let r: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("--format json prints one JSON document ({e}):\n{stdout}"));

    // Every link was mutual TLS (and a plaintext call was refused).
    assert_eq!(r["cluster"]["tls"], true, "TLS was on: {}", r["cluster"]);
    assert_eq!(r["cluster"]["plaintext_refused"], true, "{}", r["cluster"]);

    // The failover time, measured, in seconds.
    let secs = r["failover"]["elected_after_s"]
        .as_f64()
        .unwrap_or_else(|| panic!("no failover time: {}", r["failover"]));
    assert!(secs > 0.0 && secs < 30.0, "failover {secs} s");

    // Deadlines met per model: each XR model of VR_gaming (live, from the agent's summary or
    // the leader's figures) and each seed model on the GPU box (live or virtual time).
    let xr = &r["xr"];
    let xr_models: Vec<&str> = xr["summary"]["models"]
        .as_array()
        .or(xr["leader_figures"].as_array())
        .into_iter()
        .flatten()
        .filter_map(|m| m["model"].as_str())
        .collect();
    let gpu_models: Vec<&str> = r["gpu_virtual"]["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["slo_pct"].is_number())
        .filter_map(|m| m["model"].as_str())
        .collect();
    for m in ["ES_RITNet", "GE_FBNet_C", "HT_hand_graph_cnn_half"] {
        assert!(xr_models.contains(&m), "no deadlines-met row for {m}: {xr}");
    }
    for m in ["resnet18", "resnet50", "vgg16"] {
        assert!(
            gpu_models.contains(&m),
            "no deadlines-met row for {m}: {}",
            r["gpu_virtual"]
        );
    }
    // Plan changes with their reasons.
    let changes = r["plan_changes"].as_array().expect("plan_changes");
    assert!(
        changes.iter().any(|c| {
            let reason = c["reason"].as_str().or(c["text"].as_str()).unwrap_or("");
            reason.contains("re-plan:") || reason.contains("pin")
        }),
        "no plan change with a reason: {changes:?}"
    );
    let sdrm3 = r["sdrm3"]["rows"].as_array().expect("sdrm3 rows");
    assert!(
        sdrm3.len() >= 2 && sdrm3[0]["policy"] == "sdrm3",
        "SDRM3 against a baseline: {sdrm3:?}"
    );
    let files = &r["files"];
    let named: Vec<&str> = [
        &files["latency_png"],
        &files["partitions_png"],
        &files["report"],
    ]
    .into_iter()
    .chain(files["csvs"].as_array().into_iter().flatten())
    .filter_map(|v| v.as_str())
    .collect();
    for f in [
        "latency.png",
        "partitions.png",
        "live_probe_latency.csv",
        "gpu_partitions.csv",
        "events.csv",
        "report.txt",
        "report.json",
    ] {
        let len = std::fs::metadata(out.join(f)).map(|m| m.len()).unwrap_or(0);
        assert!(len > 0, "{f} written and not empty");
        if f != "report.json" {
            assert!(
                named.iter().any(|n| n.ends_with(f)),
                "the report says where {f} is: {files}"
            );
        }
    }
    // the text report holds the same figures
    let text = std::fs::read_to_string(out.join("report.txt")).unwrap();
    assert!(text.contains("Failover time:") && text.contains("a plaintext call was refused"));
    let ps = pids(&out);
    assert!(
        ps.len() >= 4,
        "3 coordinators and the XR agent were started: {ps:?}"
    );
    for (n, p) in ps {
        assert!(
            !alive(p),
            "{n} (pid {p}) is still running after the demo exited"
        );
    }
}

/// With `--dashboard` the demo's page answers while it runs (its leader, the XR agent).
#[test]
fn ctrl_c_stops_every_child() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let listen = format!("127.0.0.1:{}", crate::support::free_port());
    let (mut child, _) = start_and_wait_for_children(
        &out,
        &["--dashboard", "--dashboard-listen", listen.as_str()],
    );
    let view = |path: &str| -> Option<serde_json::Value> {
        let r = crate::dashboard::http(&listen, "GET", path)?;
        (r.status == 200).then(|| serde_json::from_str(&r.body).ok())?
    };
    crate::assert_eventually!(
        view("/api/cluster").is_some_and(|v| v["cluster"]["leader_id"].as_u64() > Some(0))
            && view("/api/nodes").is_some_and(|v| v.to_string().contains("xr-headset")),
        Duration::from_secs(60),
        "the demo's dashboard on {listen} shows its leader and the XR agent"
    );
    let st = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let mut code: Option<std::process::ExitStatus>;
    crate::assert_eventually!(
        {
            code = child.try_wait().unwrap();
            code.is_some()
        },
        Duration::from_secs(20),
        "the demo exits after SIGINT"
    );
    assert_eq!(code.unwrap().code(), Some(130), "interrupted exit code");
    // read again: a child started while the signal was on its way counts too
    for (n, p) in pids(&out) {
        assert!(!alive(p), "{n} (pid {p}) outlived the interrupted demo");
    }
}

#[test]
fn sigkilled_demo_takes_its_children_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let (mut child, _) = start_and_wait_for_children(&out, &[]);
    child.kill().unwrap(); // SIGKILL: no handler runs in the demo
    child.wait().unwrap();
    let ps = pids(&out);
    crate::assert_eventually!(
        ps.iter().all(|(_, p)| !alive(*p)),
        Duration::from_secs(10),
        "every child dies with the SIGKILLed demo: {ps:?}"
    );
}
