//! The model repository: an ONNX ResNet18 in torchvision's layout (built by
//! `worker/bench/make_repo.py` with the `onnx` package) is served with ONNX Runtime's
//! outputs on the same input; a model dropped into the repository at run time with an
//! operator the worker lacks fails naming the node and the operator, and removing it unloads it.
//!
//! Needs python3 with onnx, onnxruntime and numpy (`EDGEPLANE_TEST_PYTHON` picks the
//! interpreter): skipped with a message outside CI when missing, a failure under `CI=true`.

use edgeplane_proto::oip;
use edgeplane_proto::oip::grpc_inference_service_client::GrpcInferenceServiceClient as Client;
use edgeplane_worker::server::{serve, Worker, WorkerConfig};
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const RES: i64 = 64;

fn python() -> Option<String> {
    let py = std::env::var("EDGEPLANE_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&py)
        .args(["-c", "import onnx, onnxruntime, numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(py);
    }
    let why = format!("{py} with onnx, onnxruntime and numpy is not available");
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true: {why} (pip install onnx onnxruntime numpy)"
    );
    eprintln!("SKIPPED repository test: {why}");
    None
}

fn f32s(p: &Path) -> Vec<f32> {
    std::fs::read(p)
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn request(model: &str, x: &[f32], batch: i64) -> oip::ModelInferRequest {
    oip::ModelInferRequest {
        model_name: model.into(),
        model_version: String::new(),
        id: String::new(),
        parameters: HashMap::new(),
        inputs: vec![oip::model_infer_request::InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![batch, 3, RES, RES],
            parameters: HashMap::new(),
            contents: None,
        }],
        outputs: vec![],
        raw_input_contents: vec![x.iter().flat_map(|v| v.to_le_bytes()).collect()],
    }
}

async fn poll<F: std::future::Future<Output = bool>>(what: &str, mut f: impl FnMut() -> F) {
    let until = Instant::now() + Duration::from_secs(30);
    while !f().await {
        assert!(Instant::now() < until, "{what}: not within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_onnx_resnet18_is_served_with_onnx_runtimes_outputs() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/make_repo.py");
    let out = Command::new(&py)
        .args([
            script,
            dir.path().to_str().unwrap(),
            "--res",
            "64",
            "--batch",
            "2",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let repo = dir.path().join("repo");
    let cfg = WorkerConfig {
        models: vec![],
        resolution: RES as usize,
        max_batch: 8,
        seed: 1,
        weights: HashMap::new(),
        threads: 1,
        repository: Some(repo.clone()),
        poll: Duration::from_millis(100),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_stop, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(Worker::new(cfg).unwrap(), listener, async {
        let _ = rx.await;
    }));
    let mut c = Client::connect(format!("http://{addr}")).await.unwrap();
    poll("ServerReady", || {
        let mut c = c.clone();
        async move {
            c.server_ready(oip::ServerReadyRequest {})
                .await
                .is_ok_and(|r| r.into_inner().ready)
        }
    })
    .await;
    let md = c
        .model_metadata(oip::ModelMetadataRequest {
            name: "resnet18".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(md.versions, vec!["1"]);
    assert_eq!(md.inputs[0].shape, vec![-1, 3, RES, RES]);

    // The outputs match ONNX Runtime's on the same graph and input.
    let x = f32s(&dir.path().join("input.f32"));
    let want = f32s(&dir.path().join("expected.f32"));
    let r = c
        .model_infer(request("resnet18", &x, 2))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.outputs[0].shape, vec![2, 1000]);
    let got: Vec<f32> = r.raw_output_contents[0]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = got
        .iter()
        .zip(&want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        diff / scale <= 1e-4,
        "max relative difference {} vs ONNX Runtime",
        diff / scale
    );
    let argmax = |v: &[f32]| (0..v.len()).max_by(|&i, &j| v[i].total_cmp(&v[j])).unwrap();
    for b in 0..2 {
        assert_eq!(
            argmax(&got[b * 1000..][..1000]),
            argmax(&want[b * 1000..][..1000])
        );
    }

    // A model added at run time with an unsupported operator: named node and operator;
    // the server is not ready while it is there, and ready again once it is removed.
    let broken = repo.join("broken");
    std::fs::create_dir_all(broken.join("1")).unwrap();
    std::fs::copy(
        dir.path().join("broken/model.onnx"),
        broken.join("1/model.onnx"),
    )
    .unwrap();
    std::fs::copy(
        dir.path().join("broken/config.pbtxt"),
        broken.join("config.pbtxt"),
    )
    .unwrap();
    poll("the broken model's failure", || {
        let mut c = c.clone();
        async move {
            let e = c
                .model_infer(oip::ModelInferRequest {
                    model_name: "broken".into(),
                    ..Default::default()
                })
                .await
                .unwrap_err();
            e.code() == tonic::Code::Unavailable
        }
    })
    .await;
    let e = c
        .model_infer(oip::ModelInferRequest {
            model_name: "broken".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        e.message().contains("\"norm0\"") && e.message().contains("\"LRN\""),
        "{e:?}"
    );
    assert!(
        !c.server_ready(oip::ServerReadyRequest {})
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    std::fs::remove_dir_all(&broken).unwrap();
    // Unloading resnet18 too: gone from the served models.
    std::fs::remove_dir_all(repo.join("resnet18")).unwrap();
    poll("unload", || {
        let mut c = c.clone();
        async move {
            c.model_ready(oip::ModelReadyRequest {
                name: "resnet18".into(),
                version: String::new(),
            })
            .await
            .is_ok_and(|r| !r.into_inner().ready)
        }
    })
    .await;
    poll("ServerReady again (no failed model left)", || {
        let mut c = c.clone();
        async move {
            c.server_ready(oip::ServerReadyRequest {})
                .await
                .is_ok_and(|r| r.into_inner().ready)
        }
    })
    .await;
}
