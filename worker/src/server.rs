//! The worker's Open Inference Protocol (KServe v2 gRPC) service.
//!
//! Live as soon as it listens; ready once every configured model is loaded. One forward pass
//! runs at a time (the worker is one accelerator to the agent's scheduler, which dispatches one
//! job or batch to it at a time); the pass itself uses every thread candle is given.
//!
//! Each `ModelInfer` response carries, in its parameters, `received_unix_ns` (wall clock when
//! the request reached the handler: the agent measures dispatch-to-worker overhead with it),
//! `queue_ms`, `exec_ms` (the forward pass alone) and `weights` (where the weights came from).

use crate::nets::{Net, WeightSource, CLASSES};
use candle_core::{Device, Tensor};
use edgeplane_proto::oip::grpc_inference_service_server::GrpcInferenceService;
use edgeplane_proto::oip::infer_parameter::ParameterChoice;
use edgeplane_proto::oip::model_infer_response::InferOutputTensor;
use edgeplane_proto::oip::model_metadata_response::TensorMetadata;
use edgeplane_proto::oip::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tonic::{Request, Response, Status};

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
}

pub struct Worker {
    cfg: WorkerConfig,
    nets: RwLock<HashMap<String, Arc<Net>>>,
    weights: RwLock<HashMap<String, String>>,
    ready: AtomicBool,
    failed: RwLock<Option<String>>,
    exec: Mutex<()>,
}

pub fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

impl Worker {
    pub fn new(cfg: WorkerConfig) -> Arc<Worker> {
        Arc::new(Worker {
            cfg,
            nets: RwLock::new(HashMap::new()),
            weights: RwLock::new(HashMap::new()),
            ready: AtomicBool::new(false),
            failed: RwLock::new(None),
            exec: Mutex::new(()),
        })
    }

    /// Load every model (blocking; seconds for VGG16's 138 M parameters). Ready afterwards.
    pub fn load_all(&self) -> Result<(), crate::nets::NetError> {
        let res = (|| -> Result<(), crate::nets::NetError> {
            for m in &self.cfg.models {
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
                    .insert(m.clone(), ws.describe());
                self.nets
                    .write()
                    .expect("lock")
                    .insert(m.clone(), Arc::new(net));
            }
            Ok(())
        })();
        match &res {
            Ok(()) => self.ready.store(true, Ordering::SeqCst),
            Err(e) => *self.failed.write().expect("lock") = Some(e.to_string()),
        }
        res
    }

    fn net(&self, name: &str) -> Result<Arc<Net>, Status> {
        if let Some(n) = self.nets.read().expect("lock").get(name) {
            return Ok(n.clone());
        }
        if self.cfg.models.iter().any(|m| m == name) {
            return Err(Status::unavailable(format!(
                "model {name:?} is still loading"
            )));
        }
        Err(Status::not_found(format!(
            "model_name: {name:?} is not served here; served: {}",
            self.cfg.models.join(", ")
        )))
    }

    fn input_shape(&self) -> Vec<i64> {
        let r = self.cfg.resolution as i64;
        vec![-1, 3, r, r]
    }

    /// Validate one request's input; returns the batch tensor.
    fn input(&self, req: &ModelInferRequest) -> Result<Tensor, Status> {
        let bad = |m: String| Err(Status::invalid_argument(m));
        if req.inputs.len() != 1 {
            return bad(format!(
                "inputs: expected exactly 1 input tensor (\"input\", FP32 {:?}), got {}",
                self.input_shape(),
                req.inputs.len()
            ));
        }
        let inp = &req.inputs[0];
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
        let data: Vec<f32> = if let Some(raw) = req.raw_input_contents.first() {
            if raw.len() != n * 4 {
                return bad(format!(
                    "raw_input_contents[0]: {} bytes, expected {} (shape {:?} x 4-byte FP32)",
                    raw.len(),
                    n * 4,
                    inp.shape
                ));
            }
            raw.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        } else {
            let v = inp
                .contents
                .as_ref()
                .map(|c| c.fp32_contents.clone())
                .unwrap_or_default();
            if v.len() != n {
                return bad(format!(
                    "inputs[0].contents.fp32_contents: {} values, expected {n} for shape {:?}",
                    v.len(),
                    inp.shape
                ));
            }
            v
        };
        let dims: Vec<usize> = inp.shape.iter().map(|&d| d as usize).collect();
        Tensor::from_vec(data, dims, &Device::Cpu).map_err(|e| Status::internal(e.to_string()))
    }
}

fn param(p: ParameterChoice) -> InferParameter {
    InferParameter {
        parameter_choice: Some(p),
    }
}

pub struct Service(pub Arc<Worker>);

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
        if let Some(e) = self.0.failed.read().expect("lock").as_ref() {
            return Err(Status::internal(format!("model loading failed: {e}")));
        }
        Ok(Response::new(ServerReadyResponse {
            ready: self.0.ready.load(Ordering::SeqCst),
        }))
    }

    async fn model_ready(
        &self,
        r: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        let ready = self
            .0
            .nets
            .read()
            .expect("lock")
            .contains_key(&r.get_ref().name);
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
        let name = r.into_inner().name;
        if !self.0.cfg.models.contains(&name) {
            self.0.net(&name)?;
        }
        let seeded = !self.0.cfg.weights.contains_key(&name);
        Ok(Response::new(ModelMetadataResponse {
            name,
            versions: vec!["1".into()],
            platform: if seeded {
                "candle-cpu (seeded weights: real arithmetic, untrained values)".into()
            } else {
                "candle-cpu (safetensors weights)".into()
            },
            inputs: vec![TensorMetadata {
                name: "input".into(),
                datatype: "FP32".into(),
                shape: self.0.input_shape(),
            }],
            outputs: vec![TensorMetadata {
                name: "output".into(),
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
        let req = r.into_inner();
        let net = self.0.net(&req.model_name)?;
        let x = self.0.input(&req)?;
        let w = self.0.clone();
        let (y, queue_ms, exec_ms) = tokio::task::spawn_blocking(move || {
            let _g = w.exec.lock().unwrap_or_else(|p| p.into_inner());
            let t0 = Instant::now();
            let queue_ms = t0.duration_since(t_recv).as_secs_f64() * 1e3;
            let y = net
                .forward(&x)
                .and_then(|y| Ok(y.flatten_all()?.to_vec1::<f32>()?));
            (y, queue_ms, t0.elapsed().as_secs_f64() * 1e3)
        })
        .await
        .map_err(|e| Status::internal(format!("forward pass panicked: {e}")))?;
        let y = y.map_err(|e| Status::internal(e.to_string()))?;
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
                param(ParameterChoice::DoubleParam(queue_ms)),
            ),
            (
                "exec_ms".to_string(),
                param(ParameterChoice::DoubleParam(exec_ms)),
            ),
            (
                "weights".to_string(),
                param(ParameterChoice::StringParam(weights)),
            ),
        ]);
        Ok(Response::new(ModelInferResponse {
            model_name: req.model_name,
            model_version: "1".into(),
            id: req.id,
            parameters,
            outputs: vec![InferOutputTensor {
                name: "output".into(),
                datatype: "FP32".into(),
                shape: vec![n, CLASSES as i64],
                parameters: HashMap::new(),
                contents: None,
            }],
            raw_output_contents: vec![raw],
        }))
    }
}

/// Serve on `listener` until `shutdown` resolves; models load in the background (live at
/// once, ready when loaded).
pub async fn serve(
    worker: Arc<Worker>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let w = worker.clone();
    std::thread::spawn(move || {
        if let Err(e) = w.load_all() {
            tracing::error!(error = %e, "model loading failed; the worker will never be ready");
        }
    });
    let svc = edgeplane_proto::oip::grpc_inference_service_server::GrpcInferenceServiceServer::new(
        Service(worker),
    )
    .max_decoding_message_size(256 << 20)
    .max_encoding_message_size(256 << 20);
    tonic::transport::Server::builder()
        .add_service(svc)
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await
}
