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
use crate::onnx::OnnxNet;
use crate::repo::{self, ModelConfig, TensorSpec};
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
    /// A model repository in Triton's layout ([`crate::repo`]), rescanned every `poll`.
    pub repository: Option<std::path::PathBuf>,
    pub poll: Duration,
}

/// A network the worker can run.
pub enum Model {
    Builtin(Net),
    Onnx(OnnxNet),
}

/// A loaded model with the metadata requests are checked against.
pub struct Served {
    model: Model,
    version: String,
    config: ModelConfig,
    platform: String,
    weights: String,
    /// The repository file it came from (`None`: a built-in network).
    source: Option<std::path::PathBuf>,
}

pub struct Worker {
    cfg: WorkerConfig,
    nets: RwLock<HashMap<String, Arc<Served>>>,
    ready: AtomicBool,
    /// model -> why it failed to load.
    failed: RwLock<HashMap<String, String>>,
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
            ready: AtomicBool::new(false),
            failed: RwLock::new(HashMap::new()),
            exec: Mutex::new(()),
            pool,
        }))
    }

    /// Threads a forward pass uses.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Load every built-in model and the repository's (blocking; seconds for VGG16's 138 M
    /// parameters). Ready afterwards unless one failed.
    pub fn load_all(&self) -> Result<(), NetError> {
        let res = self.cfg.models.iter().try_for_each(|m| self.load(m));
        if let Err(e) = &res {
            self.failed
                .write()
                .expect("lock")
                .insert("(built-in)".into(), e.to_string());
        }
        self.sync_repository();
        self.ready.store(res.is_ok(), Ordering::SeqCst);
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
        let r = self.cfg.resolution as i64;
        let served = Served {
            model: Model::Builtin(net),
            version: VERSION.into(),
            config: ModelConfig {
                max_batch: self.cfg.max_batch,
                input: TensorSpec {
                    name: INPUT.into(),
                    datatype: "FP32".into(),
                    dims: vec![3, r, r],
                },
                output: TensorSpec {
                    name: OUTPUT.into(),
                    datatype: "FP32".into(),
                    dims: vec![CLASSES as i64],
                },
            },
            platform: match ws {
                WeightSource::Seeded(_) => {
                    "edgeplane-cpu (seeded weights: real arithmetic, untrained values)".into()
                }
                WeightSource::File { .. } => "edgeplane-cpu (safetensors weights)".into(),
            },
            weights: ws.describe(),
            source: None,
        };
        self.nets
            .write()
            .expect("lock")
            .insert(m.to_string(), Arc::new(served));
        Ok(())
    }

    /// Bring the loaded repository models in line with the directory: load new models and
    /// versions, unload removed ones, record the failures (ServerReady is false while any).
    pub fn sync_repository(&self) {
        let Some(dir) = &self.cfg.repository else {
            return;
        };
        let entries = match repo::scan(dir) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %e, "model repository unreadable");
                self.failed
                    .write()
                    .expect("lock")
                    .insert("(repository)".into(), e.to_string());
                return;
            }
        };
        let mut failed = HashMap::new();
        let mut seen = Vec::new();
        for e in entries {
            match e {
                Ok(en) => {
                    seen.push(en.name.clone());
                    if let Err(why) = self.load_entry(&en) {
                        tracing::error!(model = %en.name, error = %why, "repository model failed to load");
                        self.nets.write().expect("lock").remove(&en.name);
                        failed.insert(en.name.clone(), why);
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "repository entry unusable");
                    failed.insert(e.to_string(), e.to_string());
                }
            }
        }
        self.nets.write().expect("lock").retain(|name, s| {
            let keep = s.source.is_none() || seen.contains(name);
            if !keep {
                tracing::info!(model = %name, "model unloaded (removed from the repository)");
            }
            keep
        });
        let mut f = self.failed.write().expect("lock");
        f.retain(|k, _| k == "(built-in)");
        f.extend(failed);
    }

    fn load_entry(&self, en: &repo::Entry) -> Result<(), String> {
        if let Some(s) = self.nets.read().expect("lock").get(&en.name) {
            if s.source.as_ref() == Some(&en.path) && s.config == en.config {
                return Ok(());
            }
            if s.source.is_none() {
                return Err(format!(
                    "{:?} is a built-in model name; rename the directory",
                    en.name
                ));
            }
        }
        let t0 = Instant::now();
        let net = OnnxNet::load(&en.path).map_err(|e| e.to_string())?;
        if net.input_name != en.config.input.name || net.output_name != en.config.output.name {
            return Err(format!(
                "config.pbtxt input/output {:?}/{:?} differ from the graph's {:?}/{:?}",
                en.config.input.name, en.config.output.name, net.input_name, net.output_name
            ));
        }
        if en.config.input.dims[0] as usize != net.channels {
            return Err(format!(
                "config.pbtxt input.dims[0] = {} but the first Conv takes {} channels",
                en.config.input.dims[0], net.channels
            ));
        }
        tracing::info!(model = %en.name, version = %en.version, path = %en.path.display(), load_ms = t0.elapsed().as_millis() as u64, "repository model loaded");
        let served = Served {
            model: Model::Onnx(net),
            version: en.version.clone(),
            config: en.config.clone(),
            platform: "edgeplane-cpu (onnx)".into(),
            weights: format!("onnx file {}", en.path.display()),
            source: Some(en.path.clone()),
        };
        self.nets
            .write()
            .expect("lock")
            .insert(en.name.clone(), Arc::new(served));
        Ok(())
    }

    /// The model `name` at `version` (empty = the served one), or the error naming the field.
    fn net(&self, name: &str, version: &str) -> Result<Arc<Served>, Status> {
        if let Some(n) = self.nets.read().expect("lock").get(name) {
            if !version.is_empty() && version != n.version {
                return Err(Status::not_found(format!(
                    "model_version: {version:?} of {name:?} is not served; versions: {} (or empty for it)",
                    n.version
                )));
            }
            return Ok(n.clone());
        }
        if let Some(why) = self.failed.read().expect("lock").get(name) {
            return Err(Status::unavailable(format!(
                "model {name:?} failed to load: {why}"
            )));
        }
        if self.cfg.models.iter().any(|m| m == name) {
            return Err(Status::unavailable(format!(
                "model {name:?} is not loaded (still loading, or its load failed)"
            )));
        }
        let mut served: Vec<String> = self.nets.read().expect("lock").keys().cloned().collect();
        served.sort();
        Err(Status::not_found(format!(
            "model_name: {name:?} is not served here; served: {}",
            served.join(", ")
        )))
    }

    /// Validate one request against the model's metadata; returns the batch.
    fn input(&self, m: &Served, req: &ModelInferRequest) -> Result<Batch, Status> {
        let (ins, outs) = (&m.config.input, &m.config.output);
        let bad = |m: String| Err(Status::invalid_argument(m));
        for (i, o) in req.outputs.iter().enumerate() {
            if o.name != outs.name {
                return bad(format!(
                    "outputs[{i}].name: {:?} is not an output of {:?}; outputs: {:?}",
                    o.name, req.model_name, outs.name
                ));
            }
        }
        if req.inputs.len() != 1 {
            return bad(format!(
                "inputs: expected exactly 1 input tensor ({:?}, FP32 [-1, {:?}]), got {}",
                ins.name,
                ins.dims,
                req.inputs.len()
            ));
        }
        let inp = &req.inputs[0];
        if inp.name != ins.name {
            return bad(format!(
                "inputs[0].name: {:?} is not an input of {:?}; inputs: {:?}",
                inp.name, req.model_name, ins.name
            ));
        }
        if inp.datatype != "FP32" {
            return bad(format!(
                "inputs[0].datatype: expected \"FP32\", got {:?}",
                inp.datatype
            ));
        }
        let ok = inp.shape.len() == ins.dims.len() + 1
            && inp.shape[1..] == ins.dims[..]
            && (1..=m.config.max_batch as i64).contains(&inp.shape[0]);
        if !ok {
            let d: Vec<String> = ins.dims.iter().map(i64::to_string).collect();
            return bad(format!(
                "inputs[0].shape: expected [N, {}] with 1 <= N <= {}, got {:?}",
                d.join(", "),
                m.config.max_batch,
                inp.shape
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
    fn run(&self, m: &Served, b: &Batch, t: &Ticket, t_recv: Instant) -> Ran {
        let _g = self.exec.lock().unwrap_or_else(|p| p.into_inner());
        let t0 = Instant::now();
        let queue_ms = t0.duration_since(t_recv).as_secs_f64() * 1e3;
        let d = &m.config.input.dims;
        let y = self.pool.install(|| match &m.model {
            Model::Builtin(net) => net.forward(&b.data, b.n, self.cfg.resolution, t),
            Model::Onnx(net) => net.forward(&b.data, b.n, (d[1] as usize, d[2] as usize), t),
        });
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
    fn response(
        &self,
        m: &Served,
        req: ModelInferRequest,
        ran: Ran,
        received: u64,
    ) -> Result<ModelInferResponse, Status> {
        let y = ran.y.unwrap_or_default();
        let per: i64 = m.config.output.dims.iter().product();
        let n = req.inputs[0].shape[0];
        if y.len() as i64 != n * per {
            return Err(Status::internal(format!(
                "the model produced {} values, its config says {n} x {:?}",
                y.len(),
                m.config.output.dims
            )));
        }
        let mut raw = Vec::with_capacity(y.len() * 4);
        for v in &y {
            raw.extend_from_slice(&v.to_le_bytes());
        }
        let weights = m.weights.clone();
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
        let mut shape = vec![n];
        shape.extend(&m.config.output.dims);
        Ok(ModelInferResponse {
            model_name: req.model_name,
            model_version: m.version.clone(),
            id: req.id,
            parameters,
            outputs: vec![InferOutputTensor {
                name: m.config.output.name.clone(),
                datatype: "FP32".into(),
                shape,
                parameters: HashMap::new(),
                contents: None,
            }],
            raw_output_contents: vec![raw],
        })
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
        let failed = !self.0.failed.read().expect("lock").is_empty();
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
        let m = self.0.net(&r.name, &r.version)?;
        let spec = |t: &TensorSpec| {
            let mut shape = vec![-1];
            shape.extend(&t.dims);
            TensorMetadata {
                name: t.name.clone(),
                datatype: t.datatype.clone(),
                shape,
            }
        };
        Ok(Response::new(ModelMetadataResponse {
            name: r.name,
            versions: vec![m.version.clone()],
            platform: m.platform.clone(),
            inputs: vec![spec(&m.config.input)],
            outputs: vec![spec(&m.config.output)],
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
        let batch = self.0.input(&net, &req)?;
        let (w, m) = (self.0.clone(), net.clone());
        let ran = tokio::task::spawn_blocking(move || w.run(&m, &batch, &ticket, t_recv))
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
        Ok(Response::new(self.response(&net, req, ran, received)?))
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
    let poll = worker.cfg.poll;
    let weak = Arc::downgrade(&worker);
    std::thread::spawn(move || {
        let loaded = w.load_all();
        drop(w);
        if let Ok(()) = &loaded {
            rt.block_on(async {
            reporter
                .set_serving::<edgeplane_proto::oip::grpc_inference_service_server::GrpcInferenceServiceServer<Service>>()
                .await;
                reporter.set_service_status("", tonic_health::ServingStatus::Serving).await;
            })
        }
        if let Err(e) = loaded {
            tracing::error!(error = %e, "model loading failed; the worker will never be ready")
        }
        // Rescan the repository until the worker is gone.
        loop {
            std::thread::sleep(poll);
            let Some(w) = weak.upgrade() else { return };
            if w.cfg.repository.is_none() {
                return;
            }
            w.sync_repository();
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
