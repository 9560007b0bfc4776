//! The agent's `Inference` gRPC service. Every request is validated before it touches the
//! runtime, so a malformed one changes nothing (no arrival counted, no job queued).

use crate::catalog::Catalog;
use crate::exec::{ExecError, InputTensor};
use crate::runtime::RuntimeHandle;
use crate::sched::CoreError;
use edgeplane_proto::agent::inference_server::Inference;
use edgeplane_proto::agent::{InferRequest, InferResponse, Outcome, StatusRequest, StatusResponse};
use std::time::Duration;
use tonic::{Request, Response, Status};

/// Largest payload accepted (the transport allows more, so the check here is what answers).
pub const MAX_PAYLOAD: usize = 1 << 20;
/// Longest relative deadline accepted.
const MAX_DEADLINE_MS: f64 = 3_600_000.0;

pub struct InferenceService {
    pub runtime: RuntimeHandle,
}

fn check_ms(field: &str, v: f64) -> Result<(), Status> {
    if !v.is_finite() || !(0.0..=MAX_DEADLINE_MS).contains(&v) {
        return Err(Status::invalid_argument(format!(
            "{field}: must be a finite number of ms in 0..={MAX_DEADLINE_MS}, got {v}"
        )));
    }
    Ok(())
}

/// Validate a request's input tensor against the worker model's metadata; returns it in the
/// executor's form.
pub fn validate_tensor(
    t: &edgeplane_proto::agent::Tensor,
    model: &str,
    meta: &crate::exec::oip::ModelMeta,
) -> Result<InputTensor, Status> {
    let bad = |m: String| Err(Status::invalid_argument(m));
    if !t.name.is_empty() && t.name != meta.input_name {
        return bad(format!(
            "input.name: model {model:?} has input {:?}, got {:?} (or leave it empty)",
            meta.input_name, t.name
        ));
    }
    if t.datatype != meta.datatype {
        return bad(format!(
            "input.datatype: model {model:?} takes {:?}, got {:?}",
            meta.datatype, t.datatype
        ));
    }
    let fits = t.shape.len() == meta.input_shape.len()
        && t.shape.iter().zip(&meta.input_shape).all(|(&g, &w)| {
            if w < 0 {
                (1..=64).contains(&g)
            } else {
                g == w
            }
        });
    if !fits {
        return bad(format!(
            "input.shape: model {model:?} takes {:?} (-1 = any batch 1..=64), got {:?}",
            meta.input_shape, t.shape
        ));
    }
    let elem = match t.datatype.as_str() {
        "FP32" | "INT32" | "UINT32" => 4,
        "FP64" | "INT64" | "UINT64" => 8,
        "FP16" | "INT16" | "UINT16" => 2,
        _ => 1,
    };
    let want = t.shape.iter().product::<i64>() as usize * elem;
    if t.data.len() != want {
        return bad(format!(
            "input.data: {} bytes, expected {want} (shape {:?} x {elem}-byte {})",
            t.data.len(),
            t.shape,
            t.datatype
        ));
    }
    Ok(InputTensor {
        shape: t.shape.clone(),
        data: t.data.clone(),
    })
}

/// Validate a request; returns the relative deadline to use.
pub fn validate(req: &InferRequest, rt: &RuntimeHandle) -> Result<Duration, Status> {
    if req.model.is_empty() {
        return Err(Status::invalid_argument("model: must not be empty"));
    }
    check_ms("deadline_ms", req.deadline_ms)?;
    check_ms("slo_ms", req.slo_ms)?;
    if req.payload.len() > MAX_PAYLOAD {
        return Err(Status::invalid_argument(format!(
            "payload: {} bytes is over the {MAX_PAYLOAD}-byte limit",
            req.payload.len()
        )));
    }
    let worker_model = crate::exec::oip::worker_model(&req.model);
    if let Some(t) = &req.input {
        if !req.payload.is_empty() {
            return Err(Status::invalid_argument(
                "payload: must be empty when `input` carries a tensor",
            ));
        }
        let Some(wm) = &worker_model else {
            return Err(Status::invalid_argument(format!(
                "input: model {:?} is not run by a worker on node {} (simulated accelerator): send `payload` instead, or no input",
                req.model, rt.shared.name
            )));
        };
        validate_tensor(t, &req.model, &wm.meta)?;
    }
    let cat = Catalog::get().map_err(|e| Status::internal(e.to_string()))?;
    let gpu_node = rt
        .shared
        .accelerators
        .iter()
        .any(|a| a.gpu_profile.is_some());
    let default = match &worker_model {
        Some(w) => w.default_deadline_ms.round(),
        None => cat
            .default_deadline_ms(&req.model)
            .map(|d| d as f64)
            .or_else(|| {
                gpu_node
                    .then(|| crate::sched::gpu::default_deadline_ms(&req.model))
                    .flatten()
            })
            .ok_or_else(|| Status::not_found(format!("model {:?} is not known", req.model)))?,
    };
    if !rt.shared.serves(&req.model) {
        // Demand all the same: reported, so the coordinator's observed rate includes it (a
        // model served nowhere would otherwise look idle and never be placed again). The
        // name is a known model (checked above), so this map stays bounded.
        rt.shared.ledger.refused(&req.model);
        tracing::debug!(model = %req.model, node = %rt.shared.name, "request refused: model not assigned here");
        return Err(Status::failed_precondition(format!(
            "model {:?} is not assigned to node {} (assignment epoch {})",
            req.model,
            rt.shared.name,
            rt.shared.epoch()
        )));
    }
    let ms = if req.deadline_ms > 0.0 {
        req.deadline_ms
    } else if req.slo_ms > 0.0 {
        req.slo_ms
    } else {
        default
    };
    Ok(Duration::from_secs_f64(ms / 1000.0))
}

/// A worker's error as the client sees it: the code it stands for, the worker's text.
fn exec_status(e: ExecError) -> Status {
    let m = e.to_string();
    match e {
        ExecError::InvalidInput(_) => Status::invalid_argument(m),
        ExecError::NotServed(_) => Status::not_found(m),
        ExecError::TimedOut(_) => Status::deadline_exceeded(m),
        ExecError::Internal(_) => Status::internal(m),
        ExecError::Unavailable(_) | ExecError::StartFailed(_) => Status::unavailable(m),
    }
}

#[tonic::async_trait]
impl Inference for InferenceService {
    async fn infer(
        &self,
        request: Request<InferRequest>,
    ) -> Result<Response<InferResponse>, Status> {
        let req = request.into_inner();
        let rel = validate(&req, &self.runtime)?;
        let epoch = self.runtime.shared.epoch();
        let input = match (&req.input, crate::exec::oip::worker_model(&req.model)) {
            (Some(t), Some(wm)) => Some(std::sync::Arc::new(validate_tensor(
                t, &req.model, &wm.meta,
            )?)),
            // Worker-backed model without a tensor: it still runs (on a zero input), and
            // its timing and energy come back.
            _ => None,
        };
        let outcome = self.runtime.infer_with(&req.model, rel, input).await;
        match outcome {
            Ok(o) => {
                if let Some(e) = o.error {
                    return Err(exec_status(e));
                }
                let (output, exec_ms, overhead_ms, source) = match o.output {
                    Some(r) => (
                        req.input.is_some().then(|| edgeplane_proto::agent::Tensor {
                            name: "output".into(),
                            datatype: r.datatype.clone(),
                            shape: r.shape.clone(),
                            data: r.data,
                        }),
                        r.exec_ms,
                        r.overhead_ms,
                        r.energy_source.as_str(),
                    ),
                    None => (
                        None,
                        0.0,
                        0.0,
                        crate::exec::energy::Source::Modelled.as_str(),
                    ),
                };
                Ok(Response::new(InferResponse {
                    output,
                    exec_ms,
                    dispatch_overhead_ms: overhead_ms,
                    energy_source: source.into(),
                    outcome: if o.completed {
                        Outcome::Completed as i32
                    } else {
                        Outcome::Dropped as i32
                    },
                    deadline_met: o.deadline_met,
                    latency_ms: o.latency_ms,
                    accelerator_id: o.accelerator_id,
                    energy_mj: o.energy_mj,
                    reason: o.reason,
                    assignment_epoch: epoch,
                }))
            }
            Err(e @ CoreError::UnknownModel(_)) => Err(Status::not_found(e.to_string())),
            Err(e @ (CoreError::NoAccelerator { .. } | CoreError::NoPartition { .. })) => {
                Err(Status::failed_precondition(e.to_string()))
            }
        }
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let sh = &self.runtime.shared;
        let models = match sh.served_models() {
            Some(m) => m.into_iter().collect(),
            None if !crate::exec::oip::worker_model_names().is_empty() => {
                crate::exec::oip::worker_model_names()
            }
            None => Catalog::get()
                .map_err(|e| Status::internal(e.to_string()))?
                .model_names()
                .map(String::from)
                .collect(),
        };
        let leader = sh.connected.read().expect("connected lock").clone();
        let ready_models = sh.ledger.ready_models(&models);
        Ok(Response::new(StatusResponse {
            ready_models,
            name: sh.name.clone(),
            assignment_epoch: sh.epoch(),
            models,
            connected: leader.is_some(),
            leader_addr: leader.unwrap_or_default(),
            accelerators: sh.accelerators.iter().map(|a| a.to_proto()).collect(),
        }))
    }
}
