//! Real execution: the executor that sends each job the scheduler dispatches to an inference
//! worker over the Open Inference Protocol (KServe v2 gRPC), and the management of those
//! workers (one per partition).
//!
//! - [`WorkerHandle`] reaches one worker: it either starts it from a command template (the
//!   agent config's `worker_command`, with `{port}`, `{partition}`, `{share}` and `{models}`
//!   substituted and `CUDA_MPS_ACTIVE_THREAD_PERCENTAGE` / `CUDA_VISIBLE_DEVICES` set), waits for
//!   `ServerReady`, restarts it when it dies and kills it when the handle is stopped or dropped;
//!   or it connects to a worker that is already running (`worker_addr`).
//! - A request in flight when its worker dies fails with `UNAVAILABLE` (the connection drops;
//!   requests also carry a timeout, so a hung worker cannot hang a job); requests dispatched
//!   while the worker restarts fail at once with `UNAVAILABLE`.
//! - [`OipExecutor`] implements [`Executor`]: a block becomes one `ModelInfer` carrying the job's
//!   tensor (or a zero tensor of the model's input shape for jobs without one: scenario frames,
//!   opaque payloads), and its completion carries the energy: RAPL-measured when readable,
//!   otherwise the cost table's modelled figure (see [`crate::exec::energy`]).
//! - Dispatch overhead: the time from the dispatch decision (`Executor::run`) to the worker's
//!   handler receiving the request (`received_unix_ns` in the response parameters, same host
//!   clock), logged per model with the worker's own execution time ([`WorkerHandle::overhead`]).

use super::energy::{Rapl, Source};
use super::{Block, Completion, ExecError, ExecOutput, Executor, WorkerOutput};
use edgeplane_proto::oip::grpc_inference_service_client::GrpcInferenceServiceClient;
use edgeplane_proto::oip::infer_parameter::ParameterChoice;
use edgeplane_proto::oip::model_infer_request::InferInputTensor;
use edgeplane_proto::oip::{ModelInferRequest, ModelMetadataRequest, ServerReadyRequest};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tonic::transport::Channel;
use tonic::{Code, Status};

type Client = GrpcInferenceServiceClient<Channel>;

#[derive(Debug, thiserror::Error)]
pub enum OipError {
    #[error("worker {partition}: cannot start `{command}`: {source}")]
    Spawn {
        partition: String,
        command: String,
        source: std::io::Error,
    },
    #[error("worker {partition} at {addr} did not become ready within {timeout_ms} ms: {last}")]
    NotReady {
        partition: String,
        addr: String,
        timeout_ms: u64,
        last: String,
    },
    #[error("worker {partition}: model {model:?}: {why}")]
    Model {
        partition: String,
        model: String,
        why: String,
    },
    #[error("worker {partition}: {why}")]
    Other { partition: String, why: String },
}

/// A model as its worker describes it (`ModelMetadata`).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelMeta {
    pub input_name: String,
    pub datatype: String,
    /// -1 = variable (the batch).
    pub input_shape: Vec<i64>,
    pub output_shape: Vec<i64>,
    pub platform: String,
}

pub use super::InputTensor;

/// What came back from the worker for one job.
#[derive(Debug, Clone)]
pub struct JobResult {
    pub shape: Vec<i64>,
    pub datatype: String,
    pub data: Vec<u8>,
    /// The worker's forward pass alone.
    pub exec_ms: f64,
    /// Dispatch decision -> the worker's handler has the request.
    pub overhead_ms: f64,
    pub energy_mj: f64,
    pub energy_source: Source,
}

/// How the agent reaches the worker of one partition.
#[derive(Debug, Clone)]
pub enum Launch {
    /// Connect to a worker already running at this address (`host:port`).
    Connect(String),
    /// Start (and restart) a worker from a command template run by `sh -c`.
    Spawn {
        command: String,
        /// Extra environment (`CUDA_MPS_ACTIVE_THREAD_PERCENTAGE`, `CUDA_VISIBLE_DEVICES`, ...).
        env: Vec<(String, String)>,
    },
}

#[derive(Debug, Clone)]
pub struct WorkerSpec {
    /// The partition this worker serves ("cpu0", "gpu0/mps-50", "gpu0/mig-1g.10gb-0").
    pub partition: String,
    /// Its share of the device in % (MPS active-thread percentage; 100 for a whole device).
    pub share_pct: u32,
    pub launch: Launch,
    pub models: Vec<String>,
    pub ready_timeout: Duration,
    /// Longest a single request may take before it fails with UNAVAILABLE.
    pub request_timeout: Duration,
}

impl WorkerSpec {
    /// The command line for one start on `port`.
    pub fn command_line(&self, template: &str, port: u16) -> String {
        template
            .replace("{port}", &port.to_string())
            .replace("{partition}", &self.partition)
            .replace("{share}", &self.share_pct.to_string())
            .replace("{models}", &self.models.join(","))
    }
}

/// The built-in CPU worker's command template: `edgeplane-worker` next to the agent binary
/// (else from `PATH`), at `resolution`.
pub fn builtin_command(resolution: u32) -> String {
    let exe = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("edgeplane-worker")))
        .filter(|p| p.exists())
        .map_or("edgeplane-worker".to_string(), |p| p.display().to_string());
    format!("'{exe}' --listen 127.0.0.1:{{port}} --models {{models}} --resolution {resolution}")
}

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A request's (execution, dispatch overhead) in ms, never NaN: the worker's own `exec_ms`
/// when it sent a finite, positive one, else the agent's own round trip (measured); the
/// overhead from the worker's `received_unix_ns` when sent, else 0 (not measurable).
pub fn timing(
    worker_exec_ms: Option<f64>,
    received_unix_ns: Option<u64>,
    dispatched_ns: u64,
    round_trip_ms: f64,
) -> (f64, f64) {
    use crate::figures::{check_ms, Figure};
    let own = check_ms(Figure::RoundTripMs, round_trip_ms).unwrap_or(1e-3);
    let exec = match worker_exec_ms.map(|v| check_ms(Figure::WorkerExecMs, v)) {
        Some(Ok(v)) => v,
        Some(Err(e)) => {
            tracing::debug!(error = %e, "using the agent-measured round trip");
            own
        }
        None => own,
    };
    let overhead = received_unix_ns
        .filter(|_| dispatched_ns > 0)
        .map_or(0.0, |r| r.saturating_sub(dispatched_ns) as f64 / 1e6);
    (exec, overhead)
}

/// A request's timeout: the time left to `deadline` (at least 1 ms: a zero `grpc-timeout`
/// is no timeout to some servers), never more than the worker's `cap`.
pub fn request_timeout(cap: Duration, deadline: Option<Instant>, now: Instant) -> Duration {
    deadline.map_or(cap, |d| {
        d.saturating_duration_since(now)
            .max(Duration::from_millis(1))
            .min(cap)
    })
}

/// A failed `ModelInfer` as the executor reports it: the worker's refusal of the input or
/// model as it is; cut by the job's own deadline (`cut`: tonic's timer says CANCELLED, ours
/// or the worker's DEADLINE_EXCEEDED) DEADLINE_EXCEEDED, the job ran out of time and the
/// worker is fine; anything else UNAVAILABLE.
fn call_error(p: &str, s: Status, timeout: Duration, cut: bool) -> Status {
    match s.code() {
        Code::InvalidArgument | Code::NotFound => s,
        Code::Cancelled | Code::DeadlineExceeded if cut => Status::deadline_exceeded(format!(
            "worker {p}: cut at the job's deadline ({timeout:?} left at dispatch)"
        )),
        _ => Status::unavailable(format!(
            "worker {p} failed during the request ({:?}): {}",
            s.code(),
            s.message()
        )),
    }
}

/// The `ModelInfer` request of one job.
fn infer_request(model: &str, meta: &ModelMeta, input: &InputTensor) -> ModelInferRequest {
    ModelInferRequest {
        model_name: model.into(),
        model_version: String::new(),
        id: String::new(),
        parameters: HashMap::new(),
        inputs: vec![InferInputTensor {
            name: meta.input_name.clone(),
            datatype: meta.datatype.clone(),
            shape: input.shape.clone(),
            parameters: HashMap::new(),
            contents: None,
        }],
        outputs: vec![],
        raw_input_contents: vec![input.data.clone()],
    }
}

/// The first output's bytes: raw contents, else the typed FP32 contents.
fn output_bytes(
    resp: &edgeplane_proto::oip::ModelInferResponse,
    out: &edgeplane_proto::oip::model_infer_response::InferOutputTensor,
) -> Vec<u8> {
    resp.raw_output_contents
        .first()
        .cloned()
        .unwrap_or_else(|| {
            out.contents
                .as_ref()
                .map(|c| {
                    c.fp32_contents
                        .iter()
                        .flat_map(|v| v.to_le_bytes())
                        .collect()
                })
                .unwrap_or_default()
        })
}

/// One (dispatch overhead, worker execution) sample.
#[derive(Debug, Clone, Copy)]
pub struct OverheadSample {
    pub overhead_ms: f64,
    pub exec_ms: f64,
}

/// Overhead percentiles of one model.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OverheadSummary {
    pub model: String,
    pub jobs: usize,
    pub overhead_p50_ms: f64,
    pub overhead_p99_ms: f64,
    pub exec_p50_ms: f64,
    /// overhead p50 / execution p50.
    pub ratio_p50: f64,
    pub ratio_p99: f64,
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[i.min(v.len() - 1)]
}

/// One worker, started by us or connected to.
pub struct WorkerHandle {
    pub spec: WorkerSpec,
    client: RwLock<Option<(Client, String)>>,
    meta: RwLock<HashMap<String, ModelMeta>>,
    stopping: AtomicBool,
    stop: tokio::sync::Notify,
    overhead: Mutex<BTreeMap<String, Vec<OverheadSample>>>,
}

impl std::fmt::Debug for WorkerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerHandle")
            .field("spec", &self.spec)
            .finish()
    }
}

async fn wait_ready(
    partition: &str,
    addr: &str,
    timeout: Duration,
    mut child: Option<&mut tokio::process::Child>,
) -> Result<Client, OipError> {
    let deadline = Instant::now() + timeout;
    let mut last: String;
    loop {
        if let Some(c) = child.as_deref_mut() {
            if let Ok(Some(st)) = c.try_wait() {
                return Err(OipError::NotReady {
                    partition: partition.into(),
                    addr: addr.into(),
                    timeout_ms: timeout.as_millis() as u64,
                    last: format!("the worker process exited ({st}) before it was ready"),
                });
            }
        }
        let ep = Channel::from_shared(format!("http://{addr}"))
            .map_err(|e| OipError::Other {
                partition: partition.into(),
                why: format!("address {addr:?}: {e}"),
            })?
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true);
        match ep.connect().await {
            Ok(ch) => {
                let mut c = GrpcInferenceServiceClient::new(ch)
                    .max_decoding_message_size(256 << 20)
                    .max_encoding_message_size(256 << 20);
                match c.server_ready(ServerReadyRequest {}).await {
                    Ok(r) if r.get_ref().ready => return Ok(c),
                    Ok(_) => last = "ServerReady answered ready = false".into(),
                    Err(s) => last = format!("ServerReady: {}", s.message()),
                }
            }
            Err(e) => last = format!("connect: {e}"),
        }
        if Instant::now() >= deadline {
            return Err(OipError::NotReady {
                partition: partition.into(),
                addr: addr.into(),
                timeout_ms: timeout.as_millis() as u64,
                last,
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn spawn_child(
    spec: &WorkerSpec,
    template: &str,
    env: &[(String, String)],
) -> Result<(tokio::process::Child, String), OipError> {
    let port = free_port().map_err(|e| OipError::Other {
        partition: spec.partition.clone(),
        why: format!("no free port: {e}"),
    })?;
    let line = spec.command_line(template, port);
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(format!("exec {line}"))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .env("EDGEPLANE_PARTITION", &spec.partition)
        .env(
            "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE",
            spec.share_pct.to_string(),
        );
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().map_err(|source| OipError::Spawn {
        partition: spec.partition.clone(),
        command: line.clone(),
        source,
    })?;
    tracing::info!(partition = %spec.partition, command = %line, pid = child.id(), "worker started");
    Ok((child, format!("127.0.0.1:{port}")))
}

impl WorkerHandle {
    /// Start (or connect to) the worker, wait until it is ready and read its models' metadata.
    pub async fn start(spec: WorkerSpec) -> Result<Arc<WorkerHandle>, OipError> {
        let (client, addr, child) = match &spec.launch {
            Launch::Connect(addr) => {
                let c = wait_ready(&spec.partition, addr, spec.ready_timeout, None).await?;
                (c, addr.clone(), None)
            }
            Launch::Spawn { command, env } => {
                let (mut child, addr) = spawn_child(&spec, command, env)?;
                let c = wait_ready(&spec.partition, &addr, spec.ready_timeout, Some(&mut child))
                    .await?;
                (c, addr, Some(child))
            }
        };
        let h = Arc::new(WorkerHandle {
            spec,
            client: RwLock::new(Some((client.clone(), addr))),
            meta: RwLock::new(HashMap::new()),
            stopping: AtomicBool::new(false),
            stop: tokio::sync::Notify::new(),
            overhead: Mutex::new(BTreeMap::new()),
        });
        h.read_metadata(client).await?;
        if let Some(child) = child {
            tokio::spawn(h.clone().supervise(child));
        }
        Ok(h)
    }

    async fn read_metadata(&self, mut c: Client) -> Result<(), OipError> {
        for m in &self.spec.models {
            let err = |why: String| OipError::Model {
                partition: self.spec.partition.clone(),
                model: m.clone(),
                why,
            };
            let md = c
                .model_metadata(ModelMetadataRequest {
                    name: m.clone(),
                    version: String::new(),
                })
                .await
                .map_err(|s| err(format!("ModelMetadata: {}", s.message())))?
                .into_inner();
            let (Some(i), Some(o)) = (md.inputs.first(), md.outputs.first()) else {
                return Err(err("metadata lists no input or no output tensor".into()));
            };
            self.meta.write().expect("meta lock").insert(
                m.clone(),
                ModelMeta {
                    input_name: i.name.clone(),
                    datatype: i.datatype.clone(),
                    input_shape: i.shape.clone(),
                    output_shape: o.shape.clone(),
                    platform: md.platform.clone(),
                },
            );
        }
        Ok(())
    }

    /// Restart the worker whenever it exits, until stopped.
    async fn supervise(self: Arc<Self>, mut child: tokio::process::Child) {
        let Launch::Spawn { command, env } = self.spec.launch.clone() else {
            return;
        };
        let mut backoff = Duration::from_millis(100);
        loop {
            tokio::select! {
                st = child.wait() => {
                    *self.client.write().expect("client lock") = None;
                    if self.stopping.load(Ordering::SeqCst) {
                        return;
                    }
                    tracing::warn!(partition = %self.spec.partition, status = ?st.ok(), "worker exited; restarting it");
                }
                _ = self.stop.notified() => {
                    *self.client.write().expect("client lock") = None;
                    let _ = child.kill().await;
                    tracing::info!(partition = %self.spec.partition, "worker stopped");
                    return;
                }
            }
            loop {
                if self.stopping.load(Ordering::SeqCst) {
                    return;
                }
                match spawn_child(&self.spec, &command, &env) {
                    Ok((mut c, addr)) => {
                        match wait_ready(
                            &self.spec.partition,
                            &addr,
                            self.spec.ready_timeout,
                            Some(&mut c),
                        )
                        .await
                        {
                            Ok(client) => {
                                *self.client.write().expect("client lock") = Some((client, addr));
                                tracing::info!(partition = %self.spec.partition, "worker restarted and ready");
                                child = c;
                                backoff = Duration::from_millis(100);
                                break;
                            }
                            Err(e) => {
                                let _ = c.kill().await;
                                tracing::warn!(error = %e, "worker restart failed; retrying");
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "worker restart failed; retrying"),
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }

    /// Stop the worker (a started one is killed; a connected one is left running).
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.stop.notify_one();
    }

    pub fn ready(&self) -> bool {
        self.client.read().expect("client lock").is_some()
    }

    /// The worker's address now (changes when it is restarted).
    pub fn addr(&self) -> Option<String> {
        self.client
            .read()
            .expect("client lock")
            .as_ref()
            .map(|c| c.1.clone())
    }

    /// The largest batch the worker says it takes for `model`: the batch dimension of its
    /// input when the metadata fixes it (`[4, 3, 224, 224]` -> 4); None when it is variable
    /// (-1) or the model is not served.
    pub fn max_batch(&self, model: &str) -> Option<u32> {
        fixed_batch(&self.metadata(model)?.input_shape)
    }

    pub fn metadata(&self, model: &str) -> Option<ModelMeta> {
        self.meta.read().expect("meta lock").get(model).cloned()
    }

    /// Run `model` on `input` (None: one zero image of the model's input shape).
    /// `dispatched_ns`: wall clock of the dispatch decision, for the overhead measurement.
    pub async fn infer(
        &self,
        model: &str,
        input: Option<&InputTensor>,
        dispatched_ns: u64,
    ) -> Result<JobResult, Status> {
        self.infer_until(model, input, dispatched_ns, None).await
    }

    /// [`Self::infer`] cut at `deadline`: the request's timeout (`grpc-timeout`, and the
    /// client's own timer) is the time left to it, at most the spec's request timeout.
    pub async fn infer_until(
        &self,
        model: &str,
        input: Option<&InputTensor>,
        dispatched_ns: u64,
        deadline: Option<Instant>,
    ) -> Result<JobResult, Status> {
        let timeout = request_timeout(self.spec.request_timeout, deadline, Instant::now());
        let p = &self.spec.partition;
        let meta = self.metadata(model).ok_or_else(|| {
            Status::not_found(format!("model {model:?} is not served by worker {p}"))
        })?;
        let synth;
        let input = match input {
            Some(i) => i,
            None => {
                let shape: Vec<i64> = meta.input_shape.iter().map(|&d| d.max(1)).collect();
                let n = shape.iter().product::<i64>().max(0) as usize;
                synth = InputTensor {
                    shape,
                    data: vec![0u8; n * 4],
                };
                &synth
            }
        };
        let client = self
            .client
            .read()
            .expect("client lock")
            .as_ref()
            .map(|c| c.0.clone());
        let Some(mut client) = client else {
            return Err(Status::unavailable(format!(
                "worker {p} is not ready (restarting or stopped)"
            )));
        };
        let mut req = tonic::Request::new(infer_request(model, &meta, input));
        req.set_timeout(timeout);
        // The agent times every request itself (monotonic clock, dispatch to response): a
        // third-party v2 server sends no `exec_ms`, and its figures are only used when sane.
        let sent = Instant::now();
        // The client enforces the timeout too: a worker that ignores `grpc-timeout` and hangs
        // must not hang the job.
        let call = tokio::time::timeout(timeout, client.model_infer(req)).await;
        let call = call.unwrap_or_else(|_| {
            Err(Status::deadline_exceeded(format!(
                "no answer within the {} ms request timeout",
                timeout.as_millis()
            )))
        });
        let resp = match call {
            Ok(r) => r.into_inner(),
            Err(s) => {
                let cut = deadline.is_some_and(|d| Instant::now() >= d);
                return Err(call_error(p, s, timeout, cut));
            }
        };
        let param = |k: &str| {
            resp.parameters
                .get(k)
                .and_then(|v| v.parameter_choice.clone())
        };
        let received = match param("received_unix_ns") {
            Some(ParameterChoice::Uint64Param(v)) => Some(v),
            Some(ParameterChoice::Int64Param(v)) => Some(v as u64),
            _ => None,
        };
        let round_trip_ms = sent.elapsed().as_secs_f64() * 1000.0;
        let worker_exec = match param("exec_ms") {
            Some(ParameterChoice::DoubleParam(v)) => Some(v),
            _ => None,
        };
        let (exec_ms, overhead_ms) = timing(worker_exec, received, dispatched_ns, round_trip_ms);
        let Some(out) = resp.outputs.first() else {
            return Err(Status::internal(format!(
                "worker {p} returned no output tensor"
            )));
        };
        let data = output_bytes(&resp, out);
        if received.is_some() && worker_exec.is_some() {
            self.overhead
                .lock()
                .expect("overhead lock")
                .entry(model.to_string())
                .or_default()
                .push(OverheadSample {
                    overhead_ms,
                    exec_ms,
                });
        }
        Ok(JobResult {
            shape: out.shape.clone(),
            datatype: out.datatype.clone(),
            data,
            exec_ms,
            overhead_ms,
            energy_mj: 0.0,
            energy_source: Source::Modelled,
        })
    }

    /// Dispatch-overhead percentiles per model so far.
    pub fn overhead(&self) -> Vec<OverheadSummary> {
        self.overhead
            .lock()
            .expect("overhead lock")
            .iter()
            .map(|(m, s)| {
                let mut o: Vec<f64> = s.iter().map(|x| x.overhead_ms).collect();
                let mut e: Vec<f64> = s.iter().map(|x| x.exec_ms).collect();
                let (p50, p99, e50) = (pct(&mut o, 50.0), pct(&mut o, 99.0), pct(&mut e, 50.0));
                OverheadSummary {
                    model: m.clone(),
                    jobs: s.len(),
                    overhead_p50_ms: p50,
                    overhead_p99_ms: p99,
                    exec_p50_ms: e50,
                    ratio_p50: p50 / e50,
                    ratio_p99: p99 / e50,
                }
            })
            .collect()
    }

    pub fn clear_overhead(&self) {
        self.overhead.lock().expect("overhead lock").clear();
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.stop.notify_one();
    }
}

/// Runs blocks on a worker. A block is a whole job (worker-backed accelerators have one-layer
/// cost tables, so the scheduler never splits a model).
pub struct OipExecutor {
    pub worker: Arc<WorkerHandle>,
    rt: tokio::runtime::Handle,
    rapl: Option<Rapl>,
}

impl OipExecutor {
    /// Must be called inside a tokio runtime (requests are spawned on it).
    pub fn new(worker: Arc<WorkerHandle>) -> OipExecutor {
        let rapl = Rapl::system();
        tracing::info!(
            partition = %worker.spec.partition,
            energy = if rapl.is_some() { "rapl (measured)" } else { "modelled (RAPL not readable)" },
            "worker executor"
        );
        OipExecutor {
            worker,
            rt: tokio::runtime::Handle::current(),
            rapl,
        }
    }
}

impl Executor for OipExecutor {
    fn run(&self, block: Block, done: Completion) {
        if let Err(e) = within_limit(&block) {
            done(Err(e));
            return;
        }
        let dispatched_ns = unix_ns();
        let w = self.worker.clone();
        let rapl = self.rapl.clone();
        self.rt.spawn(async move {
            let before = rapl.as_ref().map(Rapl::read);
            let input = block.input.as_deref();
            let r = w
                .infer_until(&block.model, input, dispatched_ns, block.deadline)
                .await;
            let (energy, source) = match (&rapl, before) {
                (Some(rp), Some(b)) => {
                    let e = rp.delta_mj(&b, &rp.read());
                    match crate::figures::check_amount(crate::figures::Figure::EnergyMj, e) {
                        Ok(e) => (e, Source::Rapl),
                        Err(err) => {
                            tracing::warn!(error = %err, "RAPL reading refused: modelled energy");
                            (block.energy_mj, Source::Modelled)
                        }
                    }
                }
                _ => (block.energy_mj, Source::Modelled),
            };
            if let Err(s) = &r {
                tracing::warn!(model = %block.model, code = ?s.code(), error = %s.message(), "worker request failed");
            }
            done(
                r.map(|res| ExecOutput {
                    energy_mj: energy,
                    worker: Some(WorkerOutput {
                        shape: res.shape,
                        datatype: res.datatype,
                        data: res.data,
                        exec_ms: res.exec_ms,
                        overhead_ms: res.overhead_ms,
                        energy_source: source,
                    }),
                })
                .map_err(|s| ExecError::from_status(&s)),
            );
        });
    }
}

/// The batch dimension of an input shape when it is fixed (> 0), None when variable.
fn fixed_batch(shape: &[i64]) -> Option<u32> {
    u32::try_from(*shape.first()?).ok().filter(|&b| b > 0)
}

/// A block never goes to a worker in a larger batch than its limit (the batch the scheduler
/// formed, and a client tensor's batch dimension): refused before it is sent.
fn within_limit(block: &Block) -> Result<(), ExecError> {
    let Some(limit) = worker_model(&block.model).map(|m| m.max_batch) else {
        return Ok(());
    };
    let tensor = block
        .input
        .as_ref()
        .and_then(|i| i.shape.first())
        .map_or(1, |&b| u32::try_from(b).unwrap_or(u32::MAX));
    let batch = block.batch.max(tensor);
    if batch > limit {
        return Err(ExecError::InvalidInput(format!(
            "batch {batch} of {:?} is over the worker's limit of {limit} (--worker-max-batch)",
            block.model
        )));
    }
    Ok(())
}

/// Models served by workers on this node, with their metadata and default deadline (for the
/// `Infer` service's validation). Set once at start-up by the worker-backed node set-up.
#[derive(Debug, Clone)]
pub struct WorkerModel {
    pub meta: ModelMeta,
    pub default_deadline_ms: f64,
    /// The largest batch the agent sends the worker for this model
    /// ([`crate::exec::worker::batch_limit`]).
    pub max_batch: u32,
}

static WORKER_MODELS: OnceLock<RwLock<BTreeMap<String, WorkerModel>>> = OnceLock::new();

fn registry() -> &'static RwLock<BTreeMap<String, WorkerModel>> {
    WORKER_MODELS.get_or_init(|| RwLock::new(BTreeMap::new()))
}

pub fn register_model(name: &str, m: WorkerModel) {
    registry()
        .write()
        .expect("registry lock")
        .insert(name.into(), m);
}

pub fn worker_model(name: &str) -> Option<WorkerModel> {
    registry().read().expect("registry lock").get(name).cloned()
}

pub fn worker_model_names() -> Vec<String> {
    registry()
        .read()
        .expect("registry lock")
        .keys()
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{request_timeout, timing};
    use std::time::{Duration, Instant};

    #[test]
    fn a_call_cut_at_the_deadline_is_a_timeout_not_a_dead_worker() {
        use tonic::{Code, Status};
        let t = Duration::from_millis(3);
        let c = |code, cut| super::call_error("cpu0", Status::new(code, "x"), t, cut).code();
        assert_eq!(c(Code::Cancelled, true), Code::DeadlineExceeded);
        assert_eq!(c(Code::DeadlineExceeded, true), Code::DeadlineExceeded);
        // the cap (not the job's deadline) ran out, or the worker died: unavailable
        assert_eq!(c(Code::Cancelled, false), Code::Unavailable);
        assert_eq!(c(Code::Unknown, true), Code::Unavailable);
        assert_eq!(c(Code::InvalidArgument, true), Code::InvalidArgument);
    }

    #[test]
    fn no_block_goes_to_a_worker_over_its_batch_limit() {
        use super::{fixed_batch, register_model, within_limit, ModelMeta, WorkerModel};
        use crate::exec::{Block, ExecError, InputTensor};
        assert_eq!(fixed_batch(&[-1, 3, 64, 64]), None);
        assert_eq!(fixed_batch(&[4, 3, 64, 64]), Some(4));
        assert_eq!(fixed_batch(&[]), None);
        let meta = ModelMeta {
            input_name: "x".into(),
            datatype: "FP32".into(),
            input_shape: vec![-1, 3],
            output_shape: vec![-1, 10],
            platform: "test".into(),
        };
        register_model(
            "limit-test-model",
            WorkerModel {
                meta,
                default_deadline_ms: 10.0,
                max_batch: 2,
            },
        );
        let block = |batch: u32, rows: i64| Block {
            model: "limit-test-model".into(),
            layers: 1,
            latency_ms: 1.0,
            energy_mj: 1.0,
            batch,
            input: Some(std::sync::Arc::new(InputTensor {
                shape: vec![rows, 3],
                data: vec![0; rows as usize * 12],
            })),
            deadline: None,
        };
        assert_eq!(within_limit(&block(1, 2)), Ok(()));
        assert_eq!(within_limit(&block(2, 1)), Ok(()));
        // a batch of 3 (formed, or in the tensor) is over the limit of 2
        assert!(matches!(
            within_limit(&block(3, 1)),
            Err(ExecError::InvalidInput(_))
        ));
        assert!(matches!(
            within_limit(&block(1, 3)),
            Err(ExecError::InvalidInput(_))
        ));
    }

    #[test]
    fn the_request_timeout_is_the_time_left_to_the_deadline() {
        let now = Instant::now();
        let cap = Duration::from_millis(5000);
        let ms = Duration::from_millis;
        // 40 ms left: a 40 ms timeout
        assert_eq!(request_timeout(cap, Some(now + ms(40)), now), ms(40));
        // no deadline, or one further than the cap: the cap
        assert_eq!(request_timeout(cap, None, now), cap);
        assert_eq!(request_timeout(cap, Some(now + ms(9000)), now), cap);
        // already passed: 1 ms, never 0
        assert_eq!(request_timeout(cap, Some(now), now + ms(3)), ms(1));
    }

    #[test]
    fn a_worker_without_exec_ms_is_timed_by_the_agent() {
        // a third-party v2 server: no exec_ms, no received_unix_ns
        assert_eq!(timing(None, None, 5, 7.5), (7.5, 0.0));
        // NaN / negative exec_ms refused: the agent's own round trip
        assert_eq!(timing(Some(f64::NAN), None, 5, 7.5), (7.5, 0.0));
        assert_eq!(timing(Some(-1.0), None, 5, 7.5), (7.5, 0.0));
        // our worker: its exec_ms, and overhead from its receive time (2 ms after dispatch)
        assert_eq!(timing(Some(3.0), Some(2_000_005), 5, 7.5), (3.0, 2.0));
    }
}
