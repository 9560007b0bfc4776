//! Real inference: an agent with `--accelerators cpu` runs ResNet/VGG forward passes on the
//! built-in `edgeplane-worker` (a separate process it starts and supervises) over the Open
//! Inference Protocol; a fake v2 worker (a small server in this test) covers the connect and
//! failure paths. Inputs are 64x64 so a debug build on a loaded two-core machine stays quick;
//! the arithmetic is the full network's at that resolution.

use crate::support::{self, eventually, free_port};
use edgeplane_proto::agent as api;
use edgeplane_proto::agent::inference_client::InferenceClient;
use edgeplane_proto::oip;
use edgeplane_proto::oip::grpc_inference_service_server::{
    GrpcInferenceService, GrpcInferenceServiceServer,
};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};

const RES: i64 = 64;

struct Agent {
    listen: String,
    log: PathBuf,
    child: Child,
}

impl Agent {
    fn start(dir: &Path, extra: &[&str]) -> Agent {
        let listen = format!("127.0.0.1:{}", free_port());
        let log = dir.join("agent.log");
        let child = Command::new(support::bin("edgeplane-agent"))
            .args([
                "--name",
                "cpu-box",
                "--listen",
                &listen,
                "--accelerators",
                "cpu",
            ])
            .arg("--data-dir")
            .arg(dir.join("data"))
            // the worker path is under test here, not TLS (it::security covers Infer's TLS)
            .arg("--insecure")
            .args(extra)
            .env("EDGEPLANE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("agent log"))
            .spawn()
            .expect("start edgeplane-agent");
        Agent { listen, log, child }
    }

    /// Poll (with a deadline) until the agent process has exited; its status.
    async fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait().ok().flatten() {
                return s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the agent did not exit within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn client(&self) -> Option<InferenceClient<Channel>> {
        let ch = Endpoint::from_shared(format!("http://{}", self.listen))
            .ok()?
            .connect_timeout(Duration::from_millis(300))
            .connect()
            .await
            .ok()?;
        Some(InferenceClient::new(ch).max_decoding_message_size(64 << 20))
    }

    /// Wait until the agent answers (its worker is ready and profiled by then).
    async fn ready(&self) -> InferenceClient<Channel> {
        eventually(
            Duration::from_secs(50),
            "agent serving with its worker ready",
            || async {
                let mut c = self.client().await?;
                c.status(api::StatusRequest {}).await.ok()?;
                Some(c)
            },
        )
        .await
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!("--- agent log (last lines) ---");
            for l in &lines[lines.len().saturating_sub(20)..] {
                eprintln!("{l}");
            }
        }
        // SIGTERM first so the agent stops its worker; then make sure.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn image(batch: i64, seed: u32) -> api::Tensor {
    let n = (batch * 3 * RES * RES) as u32;
    let data = (0..n)
        .flat_map(|i| {
            ((((i.wrapping_mul(2654435761) ^ seed) % 1000) as f32) / 1000.0).to_le_bytes()
        })
        .collect();
    api::Tensor {
        name: String::new(),
        datatype: "FP32".into(),
        shape: vec![batch, 3, RES, RES],
        data,
    }
}

fn req(model: &str, deadline_ms: f64, input: Option<api::Tensor>) -> api::InferRequest {
    api::InferRequest {
        model: model.into(),
        deadline_ms,
        slo_ms: 0.0,
        payload: vec![],
        input,
    }
}

/// The worker's pid file (our command template wraps the built-in worker to record it).
fn pids(dir: &Path) -> Vec<u32> {
    std::fs::read_to_string(dir.join("pids"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn cpu_time_ticks(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn worker_template(dir: &Path) -> String {
    format!(
        "sh -c 'echo $$ >> {}; exec {} --listen 127.0.0.1:{{port}} --models {{models}} --resolution {RES}'",
        dir.join("pids").display(),
        support::bin("edgeplane-worker").display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_agent_runs_real_networks_on_tensors_under_sdrm3() {
    let dir = tempfile::tempdir().unwrap();
    let a = Agent::start(
        dir.path(),
        &[
            "--worker-models",
            "resnet18,vgg16",
            "--worker-resolution",
            "64",
            "--worker-max-batch",
            "2",
        ],
    );
    let mut c = a.ready().await;
    let st = c.status(api::StatusRequest {}).await.unwrap().into_inner();
    assert_eq!(st.models, vec!["resnet18", "vgg16"], "{st:?}");
    assert_eq!(st.accelerators[0].kind, "cpu");
    // The profile was measured on start and cached in the shipped table format.
    let prof = std::fs::read_to_string(dir.path().join("data/profile-cpu-64.toml")).unwrap();
    assert!(
        prof.contains("[[row]]") && prof.contains("model = \"vgg16\""),
        "{prof}"
    );

    // A real tensor in, the network's output tensor out, with real timing.
    let r = c
        .infer(req("resnet18", 30_000.0, Some(image(1, 1))))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.outcome, api::Outcome::Completed as i32, "{r:?}");
    assert!(r.deadline_met);
    let out = r.output.clone().expect("output tensor");
    assert_eq!(
        (out.datatype.as_str(), out.shape.clone()),
        ("FP32", vec![1, 1000])
    );
    assert_eq!(out.data.len(), 4000);
    assert!(
        r.exec_ms > 0.0 && r.latency_ms >= r.exec_ms,
        "{} {}",
        r.exec_ms,
        r.latency_ms
    );
    assert!(r.dispatch_overhead_ms >= 0.0 && r.dispatch_overhead_ms < r.latency_ms);
    assert!(!r.energy_source.is_empty());
    // Deterministic arithmetic: the same image gives the same logits, another image others.
    let again = c
        .infer(req("resnet18", 30_000.0, Some(image(1, 1))))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.output.unwrap().data, out.data);
    let other = c
        .infer(req("resnet18", 30_000.0, Some(image(1, 2))))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(other.output.unwrap().data, out.data);
    // A batch of two: two rows, the first equal to image 1's logits.
    let mut two = image(1, 1);
    two.data.extend(image(1, 2).data);
    two.shape[0] = 2;
    let b = c
        .infer(req("resnet18", 30_000.0, Some(two)))
        .await
        .unwrap()
        .into_inner();
    let bo = b.output.unwrap();
    assert_eq!(bo.shape, vec![2, 1000]);
    let f = |d: &[u8]| {
        d.chunks(4)
            .map(|x| f32::from_le_bytes([x[0], x[1], x[2], x[3]]))
            .collect::<Vec<_>>()
    };
    for (u, v) in f(&bo.data[..4000]).iter().zip(f(&out.data)) {
        assert!((u - v).abs() <= 1e-3 * (1.0 + v.abs()), "{u} vs {v}");
    }
    // A batch of three is over --worker-max-batch 2: refused, never sent to the worker.
    let mut three = image(1, 1);
    three.data.extend(image(1, 2).data);
    three.data.extend(image(1, 3).data);
    three.shape[0] = 3;
    let e = c
        .infer(req("resnet18", 30_000.0, Some(three)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("limit of 2"), "{e:?}");
    // VGG16 too.
    let v = c
        .infer(req("vgg16", 60_000.0, Some(image(1, 3))))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.output.unwrap().shape, vec![1, 1000]);

    // Deadlines are held against real execution: 1 ms cannot fit a measured ResNet18 pass.
    let d = c
        .infer(req("resnet18", 1.0, Some(image(1, 1))))
        .await
        .unwrap()
        .into_inner();
    assert!(!d.deadline_met, "{d:?}");
    if d.outcome == api::Outcome::Dropped as i32 {
        assert!(d.output.is_none());
    }

    // Validation names the field.
    let bad = |t: api::Tensor| req("resnet18", 1000.0, Some(t));
    let mut t = image(1, 1);
    t.shape = vec![1, 3, 32, 32];
    let e = c.infer(bad(t)).await.unwrap_err();
    assert!(
        e.message().contains("input.shape") && e.message().contains("64"),
        "{e:?}"
    );
    let mut t = image(1, 1);
    t.datatype = "FP16".into();
    assert!(c
        .infer(bad(t))
        .await
        .unwrap_err()
        .message()
        .contains("input.datatype"));
    let mut t = image(1, 1);
    t.data.pop();
    assert!(c
        .infer(bad(t))
        .await
        .unwrap_err()
        .message()
        .contains("input.data"));
    let mut r2 = bad(image(1, 1));
    r2.payload = vec![1];
    assert!(c.infer(r2).await.unwrap_err().message().contains("payload"));

    // `edgeplane load` with real tensors reports real latencies and deadlines met.
    let out = Command::new(support::bin("edgeplane"))
        .env("EDGEPLANE_INSECURE", "true")
        .args([
            "load",
            "--agent",
            &a.listen,
            "--model",
            "resnet18",
            "--rate",
            "4",
            "--duration-s",
            "1.5",
        ])
        .args([
            "--slo-ms",
            "20000",
            "--arrivals",
            "fixed",
            "--input-shape",
            "1,3,64,64",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["sent"], 6, "{j}");
    assert_eq!(j["outputs"], j["completed"], "{j}");
    assert!(j["met"].as_u64().unwrap() >= 1, "{j}");
    assert!(j["exec_p50_ms"].as_f64().unwrap() > 0.0, "{j}");
    assert!(
        j["p50_ms"].as_f64().unwrap() >= j["exec_p50_ms"].as_f64().unwrap(),
        "{j}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_worker_fails_in_flight_requests_and_is_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let tpl = worker_template(dir.path());
    let a = Agent::start(
        dir.path(),
        &[
            "--worker-models",
            "vgg16",
            "--worker-command",
            &tpl,
            "--worker-resolution",
            "64",
        ],
    );
    let mut c = a.ready().await;
    let first = pids(dir.path());
    assert_eq!(first.len(), 1, "one worker started: {first:?}");
    let pid = first[0];
    // A batch of 8 VGG16 images keeps the worker busy for a while; wait until it computes.
    let busy0 = cpu_time_ticks(pid).unwrap();
    let mut c2 = c.clone();
    let inflight =
        tokio::spawn(async move { c2.infer(req("vgg16", 600_000.0, Some(image(8, 9)))).await });
    eventually(
        Duration::from_secs(20),
        "the worker computing the batch",
        || async { (cpu_time_ticks(pid)? > busy0 + 20).then_some(()) },
    )
    .await;
    assert!(
        !inflight.is_finished(),
        "the batch finished before the kill; make it bigger"
    );
    Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    let r = tokio::time::timeout(Duration::from_secs(15), inflight)
        .await
        .expect("the in-flight request must not hang")
        .unwrap();
    let e = r.expect_err("the in-flight request fails");
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    assert!(e.message().contains("worker"), "{e:?}");
    // The agent restarts the worker, and requests succeed again.
    let r = eventually(
        Duration::from_secs(40),
        "a request served by the restarted worker",
        || {
            let mut c = c.clone();
            async move {
                c.infer(req("vgg16", 60_000.0, Some(image(1, 4))))
                    .await
                    .ok()
            }
        },
    )
    .await;
    assert_eq!(r.into_inner().output.unwrap().shape, vec![1, 1000]);
    let now = pids(dir.path());
    assert_eq!(now.len(), 2, "restarted once: {now:?}");
    assert!(a.log().contains("worker exited; restarting it"));
    let _ = &mut c;
}

/// A fake v2 worker: serves one model with [-1, 3, 8, 8] input, returns zeros, records the
/// inputs it got; `ready` and `hold` steer it.
#[derive(Default)]
struct Fake {
    ready: AtomicBool,
    hold: AtomicBool,
    infers: AtomicU64,
    got: Mutex<Vec<Vec<u8>>>,
}

struct FakeSvc(Arc<Fake>);

#[tonic::async_trait]
impl GrpcInferenceService for FakeSvc {
    async fn server_live(
        &self,
        _: tonic::Request<oip::ServerLiveRequest>,
    ) -> Result<tonic::Response<oip::ServerLiveResponse>, tonic::Status> {
        Ok(tonic::Response::new(oip::ServerLiveResponse { live: true }))
    }
    async fn server_ready(
        &self,
        _: tonic::Request<oip::ServerReadyRequest>,
    ) -> Result<tonic::Response<oip::ServerReadyResponse>, tonic::Status> {
        Ok(tonic::Response::new(oip::ServerReadyResponse {
            ready: self.0.ready.load(Ordering::SeqCst),
        }))
    }
    async fn model_ready(
        &self,
        _: tonic::Request<oip::ModelReadyRequest>,
    ) -> Result<tonic::Response<oip::ModelReadyResponse>, tonic::Status> {
        Ok(tonic::Response::new(oip::ModelReadyResponse {
            ready: true,
        }))
    }
    async fn server_metadata(
        &self,
        _: tonic::Request<oip::ServerMetadataRequest>,
    ) -> Result<tonic::Response<oip::ServerMetadataResponse>, tonic::Status> {
        Ok(tonic::Response::new(oip::ServerMetadataResponse {
            name: "fake".into(),
            version: "0".into(),
            extensions: vec![],
        }))
    }
    async fn model_metadata(
        &self,
        r: tonic::Request<oip::ModelMetadataRequest>,
    ) -> Result<tonic::Response<oip::ModelMetadataResponse>, tonic::Status> {
        use oip::model_metadata_response::TensorMetadata;
        Ok(tonic::Response::new(oip::ModelMetadataResponse {
            name: r.into_inner().name,
            versions: vec!["1".into()],
            platform: "fake".into(),
            inputs: vec![TensorMetadata {
                name: "x".into(),
                datatype: "FP32".into(),
                shape: vec![-1, 3, 8, 8],
            }],
            outputs: vec![TensorMetadata {
                name: "y".into(),
                datatype: "FP32".into(),
                shape: vec![-1, 1000],
            }],
        }))
    }
    async fn model_infer(
        &self,
        r: tonic::Request<oip::ModelInferRequest>,
    ) -> Result<tonic::Response<oip::ModelInferResponse>, tonic::Status> {
        use oip::infer_parameter::ParameterChoice as P;
        let r = r.into_inner();
        self.0.infers.fetch_add(1, Ordering::SeqCst);
        self.0
            .got
            .lock()
            .unwrap()
            .push(r.raw_input_contents.first().cloned().unwrap_or_default());
        while self.0.hold.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let n = r.inputs[0].shape[0];
        let p = |c| oip::InferParameter {
            parameter_choice: Some(c),
        };
        Ok(tonic::Response::new(oip::ModelInferResponse {
            model_name: r.model_name,
            model_version: "1".into(),
            id: r.id,
            parameters: [
                ("exec_ms".to_string(), p(P::DoubleParam(2.0))),
                (
                    "received_unix_ns".to_string(),
                    p(P::Uint64Param(
                        std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .unwrap()
                            .as_nanos() as u64,
                    )),
                ),
            ]
            .into(),
            outputs: vec![oip::model_infer_response::InferOutputTensor {
                name: "y".into(),
                datatype: "FP32".into(),
                shape: vec![n, 1000],
                parameters: Default::default(),
                contents: None,
            }],
            raw_output_contents: vec![vec![0; n as usize * 4000]],
        }))
    }
}

async fn fake_worker(f: Arc<Fake>) -> (String, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let t = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(GrpcInferenceServiceServer::new(FakeSvc(f)))
            .serve_with_incoming(
                tonic::transport::server::TcpIncoming::from(l).with_nodelay(Some(true)),
            )
            .await;
    });
    (addr, t)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_worker_connect_path_and_its_failure_modes() {
    // Connected to an external v2 worker: tensors pass through intact, outputs come back.
    let f = Arc::new(Fake::default());
    f.ready.store(true, Ordering::SeqCst);
    let (addr, server) = fake_worker(f.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let a = Agent::start(
        dir.path(),
        &[
            "--worker-addr",
            &addr,
            "--worker-models",
            "resnet18",
            "--worker-request-timeout-ms",
            "2000",
        ],
    );
    let mut c = a.ready().await;
    let mut t = api::Tensor {
        name: "x".into(),
        datatype: "FP32".into(),
        shape: vec![2, 3, 8, 8],
        data: vec![],
    };
    t.data = (0..2 * 3 * 64 * 4).map(|i| (i % 251) as u8).collect();
    let sent = t.data.clone();
    let r = c
        .infer(req("resnet18", 10_000.0, Some(t.clone())))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.output.unwrap().shape, vec![2, 1000]);
    assert_eq!(
        f.got.lock().unwrap().last().unwrap(),
        &sent,
        "the tensor reached the worker intact"
    );
    let e = c
        .infer(req(
            "resnet18",
            10_000.0,
            Some(api::Tensor {
                name: "input".into(),
                ..t.clone()
            }),
        ))
        .await
        .unwrap_err();
    assert!(
        e.message().contains("input.name") && e.message().contains("\"x\""),
        "{e:?}"
    );

    // The worker hangs with a request in flight: it fails with UNAVAILABLE after the request
    // timeout, never hangs the job (the process-death path is the CPU worker test's).
    f.hold.store(true, Ordering::SeqCst);
    let before = f.infers.load(Ordering::SeqCst);
    let mut c2 = c.clone();
    let tt = t.clone();
    let inflight =
        tokio::spawn(async move { c2.infer(req("resnet18", 600_000.0, Some(tt))).await });
    eventually(
        Duration::from_secs(10),
        "the request reached the fake worker",
        || async { (f.infers.load(Ordering::SeqCst) > before).then_some(()) },
    )
    .await;
    let r = tokio::time::timeout(Duration::from_secs(15), inflight)
        .await
        .expect("no hang")
        .unwrap();
    let e = r.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    assert!(
        e.message().contains("2000 ms") || e.message().contains("worker"),
        "{e:?}"
    );
    f.hold.store(false, Ordering::SeqCst);
    server.abort();
    drop(a);

    // A worker that answers but never becomes ready: the agent stops with a clear error.
    let g = Arc::new(Fake::default());
    let (addr, _server) = fake_worker(g).await;
    let dir = tempfile::tempdir().unwrap();
    let mut a = Agent::start(
        dir.path(),
        &["--worker-addr", &addr, "--worker-ready-timeout-ms", "1000"],
    );
    let st = a.wait_exit(Duration::from_secs(20)).await;
    assert!(!st.success());
    let log = a.log();
    assert!(
        log.contains("did not become ready within 1000 ms") && log.contains("ready = false"),
        "{log}"
    );

    // A worker command that never listens: same, naming the command's failure.
    let dir = tempfile::tempdir().unwrap();
    let mut a = Agent::start(
        dir.path(),
        &[
            "--worker-command",
            "sleep 30 # {port}",
            "--worker-ready-timeout-ms",
            "1000",
        ],
    );
    let st = a.wait_exit(Duration::from_secs(20)).await;
    assert!(!st.success());
    let log = a.log();
    assert!(
        log.contains("worker cpu0")
            && log.contains("did not become ready")
            && log.contains("connect"),
        "{log}"
    );
}

/// Joined to a cluster: the agent registers with its measured CPU profile, the leader's
/// planner places a deployed model on the CPU with those rows (and the dry run says it used
/// them), the agent serves its assignment, and `edgeplane load --agent` reports real
/// latencies and deadlines met.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joined_cpu_agent_is_planned_on_its_measured_profile_and_serves() {
    use crate::cluster::{Cluster, Opts};
    use edgeplane_proto::admin as adm;
    const TOKEN: &str = "it-join-token";
    let c = Cluster::start(3, Opts::fast_planner(TOKEN));
    let leader = c.leader(Duration::from_secs(15)).await;
    let dir = tempfile::tempdir().unwrap();
    // A cached profile in the data dir (what an earlier start leaves): the agent uses it
    // instead of measuring, so the rows the coordinator receives are known here, independent
    // of how fast this machine is. A cached profile belongs to its worker, models and host
    // (its `# key:` line): a first standalone start measures and writes it; its rows are then
    // replaced under the same key.
    let key = {
        let mut first = Agent::start(
            dir.path(),
            &["--worker-models", "resnet18", "--worker-resolution", "64"],
        );
        first.ready().await;
        let _ = Command::new("kill")
            .arg(first.child.id().to_string())
            .status();
        first.wait_exit(Duration::from_secs(10)).await;
        let t = std::fs::read_to_string(dir.path().join("data/profile-cpu-64.toml")).unwrap();
        t.lines()
            .find(|l| l.starts_with("# key: "))
            .expect("the measured profile carries its key")
            .to_string()
    };
    std::fs::write(
        dir.path().join("data/profile-cpu-64.toml"),
        format!(
            "{key}\n[[row]]\ngpu = \"cpu\"\nmodel = \"resnet18\"\npart = \"full\"\n\
             ms = [7.0, 13.0, 25.0, 49.0, 97.0, 193.0]\nmeasured = {{ b1 = 7.0 }}\n"
        ),
    )
    .unwrap();
    let eps = c.endpoints().join(",");
    let a = Agent::start(
        dir.path(),
        &[
            "--worker-models",
            "resnet18",
            "--worker-resolution",
            "64",
            "--coordinators",
            &eps,
            "--join-token",
            TOKEN,
            "--report-interval-ms",
            "200",
        ],
    );
    a.ready().await;
    // Registered, with its (cached) measured profile.
    let node = eventually(
        Duration::from_secs(30),
        "cpu-box ready with a measured profile",
        || async {
            let mut cl = c.client(leader).await.ok()?;
            let n = cl
                .list_nodes(adm::ReadRequest { stale: false })
                .await
                .ok()?
                .into_inner();
            n.nodes
                .into_iter()
                .find(|n| n.name == "cpu-box" && n.status == "ready")
                .filter(|n| {
                    n.accelerators
                        .iter()
                        .any(|x| x.profile.starts_with("measured"))
                })
        },
    )
    .await;
    let acc = &node.accelerators[0];
    assert_eq!(acc.kind, "cpu");
    assert_eq!(acc.profiled_models, vec!["resnet18"], "{acc:?}");
    assert!(
        acc.profile.contains("64x64") && acc.profile.contains("cached"),
        "{}",
        acc.profile
    );

    let mut admin = c.client(leader).await.unwrap();
    admin
        .deploy_model(adm::DeployModelRequest {
            meta: None,
            name: "resnet18".into(),
            slo_ms: 2000.0,
            rate: 2.0,
            memory_mb: 0,
        })
        .await
        .unwrap();
    // The planner places it on the CPU (no GPU in this cluster): only the measured rows
    // make the CPU plannable at all.
    eventually(
        Duration::from_secs(30),
        "resnet18 planned on cpu-box/cpu0",
        || async {
            let mut cl = c.client(leader).await.ok()?;
            let p = cl
                .show_placement(adm::ReadRequest { stale: false })
                .await
                .ok()?
                .into_inner();
            p.nodes
                .iter()
                .any(|n| {
                    n.node == "cpu-box"
                        && n.partitions.iter().any(|x| {
                            x.accelerator_id == "cpu0" && x.models.contains(&"resnet18".into())
                        })
                })
                .then_some(())
        },
    )
    .await;
    let dry = admin
        .plan_placement(adm::PlanPlacementRequest { dry_run: true })
        .await
        .unwrap()
        .into_inner();
    assert!(
        dry.decisions
            .iter()
            .any(|d| d.subject() == adm::decision::Subject::Profile
                && d.node == "cpu-box"
                && d.accelerator == "cpu0"
                && d.reason.starts_with("measured")),
        "the dry run names the profile it planned with: {:?}",
        dry.decisions
    );
    // The agent holds the assignment and serves it under SDRM3 on the worker.
    let mut ic = a.client().await.unwrap();
    eventually(
        Duration::from_secs(20),
        "the assignment reached the agent",
        || {
            let mut ic = ic.clone();
            async move {
                let st = ic.status(api::StatusRequest {}).await.ok()?.into_inner();
                (st.assignment_epoch > 0).then_some(())
            }
        },
    )
    .await;
    let r = ic
        .infer(req("resnet18", 30_000.0, Some(image(1, 7))))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.outcome, api::Outcome::Completed as i32, "{r:?}");
    let out = Command::new(support::bin("edgeplane"))
        .env("EDGEPLANE_INSECURE", "true")
        .args(["load", "--agent", &a.listen, "--model", "resnet18"])
        .args(["--rate", "4", "--duration-s", "1.5", "--slo-ms", "20000"])
        .args(["--arrivals", "fixed", "--input-shape", "1,3,64,64"])
        .args(["--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["completed"].as_u64().unwrap() >= 5, "{v}");
    assert_eq!(v["met"], v["completed"], "{v}");
    assert!(v["p50_ms"].as_f64().unwrap() > 0.0, "{v}");
}
