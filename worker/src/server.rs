//! The worker's Open Inference Protocol (KServe v2 gRPC) service, with `grpc.health.v1` and
//! gRPC reflection beside it.
//!
//! Live as soon as it listens; ready once every configured model is loaded (`ServerReady` says
//! `false`, with the reason logged, when a model failed to load). One forward pass runs at a
//! time (the worker is one accelerator to the agent's scheduler, which dispatches one job or
//! batch to it at a time); the pass itself uses the worker's thread pool (`--threads`).
//!
//! Requests are checked against the model's metadata: the name, version `1` (or empty), one
//! input named `input` of FP32 `[N, 3, R, R]` with `1 <= N <= max_batch`, and requested
//! outputs among `output`; anything else is refused naming the field.
//!
//! Cancellation: a request whose client went away (the RPC future is dropped: the client
//! reset the stream, or its `grpc-timeout` passed) or whose `grpc-timeout` deadline passed is
//! cut at the next layer boundary of its forward pass, or never started if it was still
//! waiting for the execution lock, so it does not hold up the requests behind it.
//!
//! Each `ModelInfer` response carries, in its parameters, `received_unix_ns` (wall clock when
//! the request reached the handler: the agent measures dispatch-to-worker overhead with it),
//! `queue_ms`, `exec_ms` (the forward pass alone) and `weights` (where the weights came from).

use crate::nets::{Net, NetError, Stop, WeightSource, CLASSES};
use edgeplane_proto::oip::grpc_inference_service_server::GrpcInferenceService;
use edgeplane_proto::oip::infer_parameter::ParameterChoice;
use edgeplane_proto::oip::model_infer_response::InferOutputTensor;
use edgeplane_proto::oip::model_metadata_response::TensorMetadata;
use edgeplane_proto::oip::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tonic::{Request, Response, Status};

/// The one model version this worker serves.
pub const VERSION: &str = "1";
pub const INPUT: &str = "input";
pub const OUTPUT: &str = "output";

/// What the worker serves.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub models: Vec<String>,
    /// Input height = width (224 for the real networks; tests use smaller images).
    pub resolution: usize,
    pub max_batch: usize,
    pub seed: u64,
    /// model -> safetensors file.
    pub weights: HashMap<String, std::path::PathBuf>,
    /// Threads of the forward pass; 0 = one per core.
    pub threads: usize,
}

pub struct Worker {
    cfg: WorkerConfig,
    nets: RwLock<HashMap<String, Arc<Net>>>,
    weights: RwLock<HashMap<String, String>>,
    ready: AtomicBool,
    failed: RwLock<Option<String>>,
    exec: Mutex<()>,
    pool: rayon::ThreadPool,
}

pub fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The worker's thread pool could not start.
#[derive(Debug, thiserror::Error)]
#[error("thread pool of {threads} threads: {source}")]
pub struct PoolError {
    threads: usize,
    source: rayon::ThreadPoolBuildError,
}

/// One request's cancellation state: set when its RPC is dropped, or past its deadline.
struct Ticket {
    gone: AtomicBool,
    deadline: Option<Instant>,
}

impl Stop for Ticket {
    fn stop(&self) -> bool {
        self.gone.load(Ordering::Relaxed) || self.deadline.is_some_and(|d| Instant::now() >= d)
    }
}

/// Marks the ticket when the handler's future is dropped (also after it finished: harmless).
struct OnDrop(Arc<Ticket>);

impl Drop for OnDrop {
    fn drop(&mut self) {
        self.0.gone.store(true, Ordering::Relaxed);
    }
}

/// The `grpc-timeout` header (`<1..8 digits><H|M|S|m|u|n>`), as the gRPC spec writes it.
fn grpc_timeout(md: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let v = md.get("grpc-timeout")?.to_str().ok()?;
    let (num, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = num.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// A validated request: the batch (NCHW values) and its size.
struct Batch {
    data: Vec<f32>,
    n: usize,
}

impl Worker {
    pub fn new(cfg: WorkerConfig) -> Result<Arc<Worker>, PoolError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(cfg.threads)
            .thread_name(|i| format!("ep-worker-{i}"))
            .build()
            .map_err(|source| PoolError {
                threads: cfg.threads,
                source,
            })?;
        Ok(Arc::new(Worker {
            cfg,
            nets: RwLock::new(HashMap::new()),
            weights: RwLock::new(HashMap::new()),
            ready: AtomicBool::new(false),
            failed: RwLock::new(None),
            exec: Mutex::new(()),
            pool,
        }))
    }

    /// Threads a forward pass uses.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Load every model (blocking; seconds for VGG16's 138 M parameters). Ready afterwards.
    pub fn load_all(&self) -> Result<(), NetError> {
        let res = self.cfg.models.iter().try_for_each(|m| self.load(m));
        match &res {
            Ok(()) => self.ready.store(true, Ordering::SeqCst),
            Err(e) => *self.failed.write().expect("lock") = Some(e.to_string()),
        }
        res
    }

    fn load(&self, m: &str) -> Result<(), NetError> {
        let t0 = Instant::now();
        let ws = match self.cfg.weights.get(m) {
            Some(p) => WeightSource::file(p)?,
            None => WeightSource::Seeded(self.cfg.seed),
        };
        let net = Net::load(m, &ws)?;
        tracing::info!(model = %m, weights = %ws.describe(), load_ms = t0.elapsed().as_millis() as u64, "model loaded");
        self.weights
            .write()
            .expect("lock")
            .insert(m.to_string(), ws.describe());
        self.nets
            .write()
            .expect("lock")
            .insert(m.to_string(), Arc::new(net));
        Ok(())
    }

    /// The model `name` at `version` (empty = the served one), or the error naming the field.
    fn net(&self, name: &str, version: &str) -> Result<Arc<Net>, Status> {
        if !self.cfg.models.iter().any(|m| m == name) {
            return Err(Status::not_found(format!(
                "model_name: {name:?} is not served here; served: {}",
                self.cfg.models.join(", ")
            )));
        }
        if !version.is_empty() && version != VERSION {
            return Err(Status::not_found(format!(
                "model_version: {version:?} of {name:?} is not served; versions: {VERSION} (or empty for it)"
            )));
        }
        match self.nets.read().expect("lock").get(name) {
            Some(n) => Ok(n.clone()),
            None => Err(Status::unavailable(format!(
                "model {name:?} is not loaded (still loading, or its load failed)"
            ))),
        }
    }

    fn input_shape(&self) -> Vec<i64> {
        let r = self.cfg.resolution as i64;
        vec![-1, 3, r, r]
    }

    /// Validate one request against the model's metadata; returns the batch.
    fn input(&self, req: &ModelInferRequest) -> Result<Batch, Status> {
        let bad = |m: String| Err(Status::invalid_argument(m));
        for (i, o) in req.outputs.iter().enumerate() {
            if o.name != OUTPUT {
                return bad(format!(
                    "outputs[{i}].name: {:?} is not an output of {:?}; outputs: {OUTPUT:?}",
                    o.name, req.model_name
                ));
            }
        }
        if req.inputs.len() != 1 {
            return bad(format!(
                "inputs: expected exactly 1 input tensor ({INPUT:?}, FP32 {:?}), got {}",
                self.input_shape(),
                req.inputs.len()
            ));
        }
        let inp = &req.inputs[0];
        if inp.name != INPUT {
            return bad(format!(
                "inputs[0].name: {:?} is not an input of {:?}; inputs: {INPUT:?}",
                inp.name, req.model_name
            ));
        }
        if inp.datatype != "FP32" {
            return bad(format!(
                "inputs[0].datatype: expected \"FP32\", got {:?}",
                inp.datatype
            ));
        }
        let r = self.cfg.resolution as i64;
        let ok = inp.shape.len() == 4
            && inp.shape[1..] == [3, r, r]
            && (1..=self.cfg.max_batch as i64).contains(&inp.shape[0]);
        if !ok {
            return bad(format!(
                "inputs[0].shape: expected [N, 3, {r}, {r}] with 1 <= N <= {}, got {:?}",
                self.cfg.max_batch, inp.shape
            ));
        }
        let n = inp.shape.iter().product::<i64>() as usize;
        let data = tensor_data(req, n)?;
        Ok(Batch {
            data,
            n: inp.shape[0] as usize,
        })
    }

    /// Run `b` under the execution lock unless `t` says stop; (logits, queue_ms, exec_ms).
    fn run(&self, net: &Net, b: &Batch, t: &Ticket, t_recv: Instant) -> Ran {
        let _g = self.exec.lock().unwrap_or_else(|p| p.into_inner());
        let t0 = Instant::now();
        let queue_ms = t0.duration_since(t_recv).as_secs_f64() * 1e3;
        let y = self
            .pool
            .install(|| net.forward(&b.data, b.n, self.cfg.resolution, t));
        Ran {
            y,
            queue_ms,
            exec_ms: t0.elapsed().as_secs_f64() * 1e3,
        }
    }
}

struct Ran {
    y: Result<Vec<f32>, NetError>,
    queue_ms: f64,
    exec_ms: f64,
}

/// The request's FP32 values: `raw_input_contents[0]` or `inputs[0].contents.fp32_contents`.
fn tensor_data(req: &ModelInferRequest, n: usize) -> Result<Vec<f32>, Status> {
    let shape = &req.inputs[0].shape;
    if let Some(raw) = req.raw_input_contents.first() {
        if raw.len() != n * 4 {
            return Err(Status::invalid_argument(format!(
                "raw_input_contents[0]: {} bytes, expected {} (shape {shape:?} x 4-byte FP32)",
                raw.len(),
                n * 4
            )));
        }
        return Ok(raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect());
    }
    let v = req.inputs[0]
        .contents
        .as_ref()
        .map(|c| c.fp32_contents.clone())
        .unwrap_or_default();
    if v.len() != n {
        return Err(Status::invalid_argument(format!(
            "inputs[0].contents.fp32_contents: {} values, expected {n} for shape {shape:?}",
            v.len()
        )));
    }
    Ok(v)
}

fn param(p: ParameterChoice) -> InferParameter {
    InferParameter {
        parameter_choice: Some(p),
    }
}

pub struct Service(pub Arc<Worker>);

impl Service {
    fn response(&self, req: ModelInferRequest, ran: Ran, received: u64) -> ModelInferResponse {
        let y = ran.y.unwrap_or_default();
        let n = (y.len() / CLASSES) as i64;
        let mut raw = Vec::with_capacity(y.len() * 4);
        for v in &y {
            raw.extend_from_slice(&v.to_le_bytes());
        }
        let weights = self
            .0
            .weights
            .read()
            .expect("lock")
            .get(&req.model_name)
            .cloned()
            .unwrap_or_default();
        let parameters = HashMap::from([
            (
                "received_unix_ns".to_string(),
                param(ParameterChoice::Uint64Param(received)),
            ),
            (
                "queue_ms".to_string(),
                param(ParameterChoice::DoubleParam(ran.queue_ms)),
            ),
            (
                "exec_ms".to_string(),
                param(ParameterChoice::DoubleParam(ran.exec_ms)),
            ),
            (
                "weights".to_string(),
                param(ParameterChoice::StringParam(weights)),
            ),
        ]);
        ModelInferResponse {
            model_name: req.model_name,
            model_version: VERSION.into(),
            id: req.id,
            parameters,
            outputs: vec![InferOutputTensor {
                name: OUTPUT.into(),
                datatype: "FP32".into(),
                shape: vec![n, CLASSES as i64],
                parameters: HashMap::new(),
                contents: None,
            }],
            raw_output_contents: vec![raw],
        }
    }
}

#[tonic::async_trait]
impl GrpcInferenceService for Service {
    async fn server_live(
        &self,
        _: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        let failed = self.0.failed.read().expect("lock").is_some();
        Ok(Response::new(ServerReadyResponse {
            ready: !failed && self.0.ready.load(Ordering::SeqCst),
        }))
    }

    async fn model_ready(
        &self,
        r: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        let r = r.get_ref();
        let ready = self.0.net(&r.name, &r.version).is_ok();
        Ok(Response::new(ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        Ok(Response::new(ServerMetadataResponse {
            name: "edgeplane-worker".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: vec![],
        }))
    }

    async fn model_metadata(
        &self,
        r: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let r = r.into_inner();
        if let Err(e) = self.0.net(&r.name, &r.version) {
            if e.code() != tonic::Code::Unavailable {
                return Err(e);
            }
        }
        let seeded = !self.0.cfg.weights.contains_key(&r.name);
        Ok(Response::new(ModelMetadataResponse {
            name: r.name,
            versions: vec![VERSION.into()],
            platform: if seeded {
                "edgeplane-cpu (seeded weights: real arithmetic, untrained values)".into()
            } else {
                "edgeplane-cpu (safetensors weights)".into()
            },
            inputs: vec![TensorMetadata {
                name: INPUT.into(),
                datatype: "FP32".into(),
                shape: self.0.input_shape(),
            }],
            outputs: vec![TensorMetadata {
                name: OUTPUT.into(),
                datatype: "FP32".into(),
                shape: vec![-1, CLASSES as i64],
            }],
        }))
    }

    async fn model_infer(
        &self,
        r: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let received = unix_ns();
        let t_recv = Instant::now();
        let ticket = Arc::new(Ticket {
            gone: AtomicBool::new(false),
            deadline: grpc_timeout(r.metadata()).map(|d| t_recv + d),
        });
        let _guard = OnDrop(ticket.clone());
        let req = r.into_inner();
        let net = self.0.net(&req.model_name, &req.model_version)?;
        let batch = self.0.input(&req)?;
        let w = self.0.clone();
        let ran = tokio::task::spawn_blocking(move || w.run(&net, &batch, &ticket, t_recv))
            .await
            .map_err(|e| Status::internal(format!("forward pass panicked: {e}")))?;
        match &ran.y {
            Ok(_) => {}
            Err(e @ NetError::Cancelled { .. }) => {
                tracing::info!(model = %req.model_name, error = %e, "request cut");
                return Err(Status::deadline_exceeded(e.to_string()));
            }
            Err(e) => return Err(Status::internal(e.to_string())),
        }
        Ok(Response::new(self.response(req, ran, received)))
    }
}

/// Serve on `listener` until `shutdown` resolves; models load in the background (live at
/// once, ready when loaded).
pub async fn serve(
    worker: Arc<Worker>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_not_serving::<edgeplane_proto::oip::grpc_inference_service_server::GrpcInferenceServiceServer<Service>>()
        .await;
    reporter
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    let w = worker.clone();
    let rt = tokio::runtime::Handle::current();
    std::thread::spawn(move || match w.load_all() {
        Ok(()) => rt.block_on(async {
            reporter
                .set_serving::<edgeplane_proto::oip::grpc_inference_service_server::GrpcInferenceServiceServer<Service>>()
                .await;
            reporter.set_service_status("", tonic_health::ServingStatus::Serving).await;
        }),
        Err(e) => {
            tracing::error!(error = %e, "model loading failed; the worker will never be ready")
        }
    });
    let svc = edgeplane_proto::oip::grpc_inference_service_server::GrpcInferenceServiceServer::new(
        Service(worker),
    )
    .max_decoding_message_size(256 << 20)
    .max_encoding_message_size(256 << 20);
    let mut routes = tonic::service::RoutesBuilder::default();
    routes.add_service(svc).add_service(health);
    match tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(edgeplane_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
    {
        Ok(r) => {
            routes.add_service(r);
        }
        Err(e) => tracing::error!(error = %e, "gRPC reflection unavailable"),
    }
    tonic::transport::Server::builder()
        .add_routes(routes.routes())
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await
}
