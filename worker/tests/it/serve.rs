//! The worker's gRPC service in-process, as a v2 client sees it: strict validation against
//! the model's metadata, readiness that says `false` instead of failing, health and
//! reflection, and cancellation of abandoned requests at a layer boundary.

use edgeplane_proto::oip;
use edgeplane_proto::oip::grpc_inference_service_client::GrpcInferenceServiceClient as Client;
use edgeplane_proto::oip::infer_parameter::ParameterChoice;
use edgeplane_worker::server::{serve, Worker, WorkerConfig};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

const RES: usize = 64;

struct Served {
    client: Client<Channel>,
    channel: Channel,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start(models: &[&str], weights: HashMap<String, std::path::PathBuf>) -> Served {
    let cfg = WorkerConfig {
        models: models.iter().map(|m| m.to_string()).collect(),
        resolution: RES,
        max_batch: 8,
        seed: 3,
        weights,
        threads: 1,
        repository: None,
        poll: Duration::from_secs(1),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let w = Worker::new(cfg).unwrap();
    tokio::spawn(serve(w, listener, async {
        let _ = rx.await;
    }));
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    Served {
        client: Client::new(channel.clone()),
        channel,
        _stop: tx,
    }
}

/// Poll `ServerReady` until `want`, within 60 s (VGG-free model sets load in well under that).
async fn wait_ready(c: &mut Client<Channel>, models: &[&str]) {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let mut all = true;
        for m in models {
            let r = c
                .model_ready(oip::ModelReadyRequest {
                    name: m.to_string(),
                    version: String::new(),
                })
                .await
                .unwrap();
            all &= r.into_inner().ready;
        }
        if all {
            return;
        }
        assert!(Instant::now() < until, "models not ready within 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn infer(model: &str, batch: usize) -> oip::ModelInferRequest {
    let n = batch * 3 * RES * RES;
    let raw: Vec<u8> = (0..n)
        .flat_map(|i| (((i * 31) % 255) as f32 / 255.0).to_le_bytes())
        .collect();
    oip::ModelInferRequest {
        model_name: model.into(),
        model_version: String::new(),
        id: "t".into(),
        parameters: HashMap::new(),
        inputs: vec![oip::model_infer_request::InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![batch as i64, 3, RES as i64, RES as i64],
            parameters: HashMap::new(),
            contents: None,
        }],
        outputs: vec![],
        raw_input_contents: vec![raw],
    }
}

fn exec_ms(r: &oip::ModelInferResponse) -> f64 {
    match r.parameters["exec_ms"].parameter_choice {
        Some(ParameterChoice::DoubleParam(v)) => v,
        ref o => panic!("exec_ms: {o:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_checked_against_the_metadata() {
    let mut s = start(&["resnet18"], HashMap::new()).await;
    let c = &mut s.client;
    wait_ready(c, &["resnet18"]).await;
    let ok = c
        .model_infer(infer("resnet18", 1))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.model_version, "1");
    assert_eq!(ok.outputs[0].shape, vec![1, 1000]);

    let mut r = infer("resnet18", 1);
    r.model_version = "2".into();
    let e = c.model_infer(r).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    assert!(
        e.message().contains("model_version") && e.message().contains("\"2\""),
        "{e:?}"
    );
    let mut r = infer("resnet18", 1);
    r.inputs[0].name = "images".into();
    let e = c.model_infer(r).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message().contains("inputs[0].name") && e.message().contains("images"),
        "{e:?}"
    );
    let mut r = infer("resnet18", 1);
    r.outputs = vec![oip::model_infer_request::InferRequestedOutputTensor {
        name: "probs".into(),
        parameters: HashMap::new(),
    }];
    let e = c.model_infer(r).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message().contains("outputs[0].name") && e.message().contains("probs"),
        "{e:?}"
    );
    let mut r = infer("resnet18", 9);
    r.raw_input_contents.clear();
    let e = c.model_infer(r).await.unwrap_err();
    assert!(
        e.message().contains("inputs[0].shape") && e.message().contains("<= 8"),
        "{e:?}"
    );

    let ready = |v: &str| oip::ModelReadyRequest {
        name: "resnet18".into(),
        version: v.into(),
    };
    assert!(c.model_ready(ready("1")).await.unwrap().into_inner().ready);
    assert!(!c.model_ready(ready("2")).await.unwrap().into_inner().ready);
    let md = oip::ModelMetadataRequest {
        name: "resnet18".into(),
        version: "2".into(),
    };
    assert_eq!(
        c.model_metadata(md).await.unwrap_err().code(),
        tonic::Code::NotFound
    );

    // grpc.health.v1 says SERVING once loaded; reflection lists the inference service.
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    let h = HealthClient::new(s.channel.clone())
        .check(HealthCheckRequest {
            service: "inference.GRPCInferenceService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        h.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let req = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut st = ServerReflectionClient::new(s.channel.clone())
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let msg = st.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(l)) = msg.message_response else {
        panic!("{msg:?}")
    };
    let names: Vec<_> = l.service.iter().map(|s| s.name.as_str()).collect();
    assert!(
        names.contains(&"inference.GRPCInferenceService"),
        "{names:?}"
    );
    assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_load_makes_server_ready_false_not_an_error() {
    let weights = HashMap::from([(
        "resnet18".to_string(),
        std::path::PathBuf::from("/nonexistent/resnet18.safetensors"),
    )]);
    let mut s = start(&["resnet18"], weights).await;
    let c = &mut s.client;
    // Loading fails at once (no such file); readiness stays false and the model not ready.
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let r = c.server_ready(oip::ServerReadyRequest {}).await.unwrap();
        assert!(!r.into_inner().ready);
        let e = c.model_infer(infer("resnet18", 1)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
        if Instant::now() > until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        c.server_live(oip::ServerLiveRequest {})
            .await
            .unwrap()
            .into_inner()
            .live
    );
}

/// A ResNet50 batch-8 request whose deadline passes mid-pass is cut at the next layer
/// boundary, so a ResNet18 request queued behind it waits at most about one residual block
/// past that deadline instead of the rest of the pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_batch_is_cut_at_a_layer_boundary() {
    let s = start(&["resnet50", "resnet18"], HashMap::new()).await;
    let mut c = s.client.clone();
    wait_ready(&mut c, &["resnet50", "resnet18"]).await;
    // Per-pass times on this box now (the worker's own exec_ms; medians of 3).
    let mut t8 = Vec::new();
    let mut alone = Vec::new();
    for _ in 0..3 {
        t8.push(exec_ms(
            &c.model_infer(infer("resnet50", 8))
                .await
                .unwrap()
                .into_inner(),
        ));
        let t0 = Instant::now();
        c.model_infer(infer("resnet18", 1)).await.unwrap();
        alone.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    t8.sort_by(f64::total_cmp);
    alone.sort_by(f64::total_cmp);
    let (t8, alone) = (t8[1], alone[1]);
    // ResNet50 has 16 residual blocks of roughly equal cost (within 1.2x of the mean by MACs);
    // one block is at most 2 x t8 / 16.
    let block_ms = 2.0 * t8 / 16.0;
    let timeout = Duration::from_secs_f64(t8 * 0.3 / 1e3);

    let mut c8 = s.client.clone();
    let big = tokio::spawn(async move {
        let mut r = tonic::Request::new(infer("resnet50", 8));
        r.set_timeout(timeout);
        c8.model_infer(r).await
    });
    // The small request goes out right behind the big one and queues for the lock.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let t0 = Instant::now();
    c.model_infer(infer("resnet18", 1)).await.unwrap();
    let waited = t0.elapsed().as_secs_f64() * 1e3;
    let e = big.await.unwrap().unwrap_err();
    assert!(
        matches!(
            e.code(),
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ),
        "{e:?}"
    );
    let delay = waited - alone - timeout.as_secs_f64() * 1e3;
    eprintln!(
        "resnet50 b8 {t8:.0} ms, resnet18 alone {alone:.0} ms, behind the cut batch {waited:.0} ms: \
         {delay:.0} ms past the deadline (bound: one block, {block_ms:.0} ms)"
    );
    assert!(
        delay <= block_ms,
        "waited {delay:.0} ms past the deadline, more than one block ({block_ms:.0} ms); uncut it would be ~{:.0} ms",
        t8 * 0.7
    );
}
