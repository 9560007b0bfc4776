//! A third-party Open Inference Protocol v2 server as the agent's worker: KServe's Python model
//! server (pip `kserve` 0.21) serving a small ONNX network through ONNX Runtime
//! (`integration-tests/third_party/kserve_onnx_server.py`). Its responses carry none of our
//! worker's parameters (`exec_ms`, `received_unix_ns`), so every figure the agent reports here
//! is what the agent measured itself. Needs a Python with kserve, onnx, onnxruntime and numpy:
//! `$EDGEPLANE_IT_PYTHON`, else /opt/ep-venv/bin/python; skipped (visibly) without one outside
//! CI, a failure under CI=true.

use crate::support::{self, eventually, free_port};
use edgeplane_proto::agent as api;
use edgeplane_proto::agent::inference_client::InferenceClient;
use edgeplane_proto::oip;
use edgeplane_proto::oip::grpc_inference_service_client::GrpcInferenceServiceClient;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::Endpoint;

const MODEL: &str = "tinynet";

/// A python that imports kserve, onnx, onnxruntime and numpy; None (after saying why) when
/// there is none outside CI; panics under CI=true.
fn python() -> Option<PathBuf> {
    let p = std::env::var_os("EDGEPLANE_IT_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/ep-venv/bin/python"));
    let ok = Command::new(&p)
        .args(["-c", "import kserve, onnx, onnxruntime, numpy"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Some(p);
    }
    let why = format!(
        "{} cannot import kserve, onnx, onnxruntime, numpy (set EDGEPLANE_IT_PYTHON)",
        p.display()
    );
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "third-party worker test under CI: {why}"
    );
    eprintln!("SKIPPED it::third_party_worker: {why}");
    None
}

/// A child process killed (and reaped) when dropped.
struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_kserve(py: &Path, dir: &Path, grpc: u16) -> Proc {
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("third_party/kserve_onnx_server.py");
    let log = std::fs::File::create(dir.join("kserve.log")).unwrap();
    Proc(
        Command::new(py)
            .arg(script)
            .args(["--model_name", MODEL, "--grpc_port", &grpc.to_string()])
            .args(["--http_port", &free_port().to_string()])
            .arg("--model_dir")
            .arg(dir.join("model"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the KServe model server"),
    )
}

fn image(seed: u32) -> api::Tensor {
    let data = (0..3 * 32 * 32u32)
        .flat_map(|i| {
            ((((i.wrapping_mul(2654435761) ^ seed) % 1000) as f32) / 1000.0).to_le_bytes()
        })
        .collect();
    api::Tensor {
        name: String::new(),
        datatype: "FP32".into(),
        shape: vec![1, 3, 32, 32],
        data,
    }
}

fn metrics(addr: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).expect("metrics port");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// Lines of a text that carry a NaN, an infinite value or a null figure.
fn bad_figures(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| {
            let v = l.rsplit([' ', ':', ',']).next().unwrap_or("");
            l.contains("NaN")
                || l.contains("null")
                || matches!(v.trim(), "inf" | "-inf" | "+Inf" if !l.contains("le=\""))
        })
        .map(String::from)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kserve_onnx_server_is_a_measured_worker() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let grpc = free_port();
    let _kserve = start_kserve(&py, dir.path(), grpc);
    let waddr = format!("127.0.0.1:{grpc}");

    // KServe speaks inference.GRPCInferenceService, with model metadata.
    let mut w = eventually(Duration::from_secs(30), "KServe gRPC ready", || async {
        let ch = Endpoint::from_shared(format!("http://{waddr}"))
            .ok()?
            .connect()
            .await
            .ok()?;
        let mut c = GrpcInferenceServiceClient::new(ch);
        c.server_ready(oip::ServerReadyRequest {})
            .await
            .ok()?
            .into_inner()
            .ready
            .then_some(c)
    })
    .await;
    let md = w
        .model_metadata(oip::ModelMetadataRequest {
            name: MODEL.into(),
            version: String::new(),
        })
        .await
        .expect("ModelMetadata")
        .into_inner();
    assert_eq!(md.inputs[0].datatype, "FP32", "{md:?}");
    assert_eq!(md.inputs[0].shape, vec![-1, 3, 32, 32], "{md:?}");

    let listen = format!("127.0.0.1:{}", free_port());
    let maddr = format!("127.0.0.1:{}", free_port());
    let data = dir.path().join("data");
    let _agent = Proc(
        Command::new(support::bin("edgeplane-agent"))
            .args([
                "--name",
                "kserve-box",
                "--listen",
                &listen,
                "--accelerators",
                "cpu",
            ])
            .args([
                "--worker-addr",
                &waddr,
                "--worker-models",
                MODEL,
                "--metrics-addr",
                &maddr,
            ])
            .arg("--data-dir")
            .arg(&data)
            .args(["--insecure", "--report-interval-ms", "200"])
            .env("EDGEPLANE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("agent.log")).unwrap())
            .spawn()
            .expect("start edgeplane-agent"),
    );
    let mut c = eventually(
        Duration::from_secs(40),
        "agent serving on KServe",
        || async {
            let ch = Endpoint::from_shared(format!("http://{listen}"))
                .ok()?
                .connect()
                .await
                .ok()?;
            let mut c = InferenceClient::new(ch);
            c.status(api::StatusRequest {}).await.ok()?;
            Some(c)
        },
    )
    .await;
    let st = c.status(api::StatusRequest {}).await.unwrap().into_inner();
    assert_eq!(st.models, vec![MODEL], "{st:?}");
    let row = &st.accelerators[0].profile[0];
    assert_eq!(row.model, MODEL);
    assert_eq!(row.ms.len(), 6, "{row:?}");
    assert!(
        row.ms.iter().all(|m| m.is_finite() && *m > 0.0),
        "measured profile {row:?}"
    );
    eprintln!(
        "measured profile against KServe (ms, batches 1..32): {:?} ({})",
        row.ms, st.accelerators[0].profile_source
    );

    // 20 requests at a low rate (one every 50 ms), 500 ms deadline each.
    let (mut met, n) = (0, 20);
    let mut replies = String::new();
    for i in 0..n {
        let r = c
            .infer(api::InferRequest {
                model: MODEL.into(),
                deadline_ms: 500.0,
                slo_ms: 0.0,
                payload: vec![],
                input: Some(image(i)),
            })
            .await
            .expect("Infer on KServe")
            .into_inner();
        assert!(r.exec_ms.is_finite() && r.exec_ms > 0.0, "{r:?}");
        assert!(r.energy_mj.is_finite() && r.energy_mj > 0.0, "{r:?}");
        assert!(r.latency_ms.is_finite() && r.latency_ms > 0.0, "{r:?}");
        assert_eq!(
            r.output.as_ref().map(|o| o.shape.clone()),
            Some(vec![1, 10]),
            "{r:?}"
        );
        met += u32::from(r.deadline_met);
        replies.push_str(&format!("{r:?}\n"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("KServe worker: {met}/{n} deadlines met");
    assert!(met * 10 >= n * 9, "{met}/{n} met");
    assert!(
        bad_figures(&replies).is_empty(),
        "{:?}",
        bad_figures(&replies)
    );

    let m = metrics(&maddr);
    let energy: Vec<&str> = m
        .lines()
        .filter(|l| l.starts_with("edgeplane_agent_energy_joules_total"))
        .collect();
    assert!(!energy.is_empty(), "{m}");
    for l in &energy {
        let v: f64 = l.rsplit(' ').next().unwrap().parse().expect(l);
        assert!(v.is_finite() && v > 0.0, "{l}");
    }
    assert!(bad_figures(&m).is_empty(), "{:?}", bad_figures(&m));

    drop(_agent); // SIGTERM: the counters are saved once more
    let mut files = 0;
    for e in std::fs::read_dir(&data).unwrap() {
        let p = e.unwrap().path();
        if let Ok(t) = std::fs::read_to_string(&p) {
            assert!(
                bad_figures(&t).is_empty(),
                "{}: {:?}",
                p.display(),
                bad_figures(&t)
            );
            files += 1;
        }
    }
    assert!(files >= 2, "counters and profile in {}", data.display());
    let prof = std::fs::read_to_string(data.join("profile-cpu-224.toml")).expect("cached profile");
    assert!(
        prof.contains("# key: ") && prof.contains("external v2 worker"),
        "{prof}"
    );
}
