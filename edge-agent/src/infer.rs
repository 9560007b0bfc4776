//! The agent's `Inference` gRPC service. Every request is validated before it touches the
//! runtime, so a malformed one changes nothing (no arrival counted, no job queued).

use crate::catalog::Catalog;
use crate::core::CoreError;
use crate::runtime::RuntimeHandle;
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
    let cat = Catalog::get().map_err(|e| Status::internal(e.to_string()))?;
    let default = cat
        .default_deadline_ms(&req.model)
        .ok_or_else(|| Status::not_found(format!("model {:?} is not known", req.model)))?;
    if !rt.shared.serves(&req.model) {
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
        default as f64
    };
    Ok(Duration::from_secs_f64(ms / 1000.0))
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
        match self.runtime.infer(&req.model, rel).await {
            Ok(o) => Ok(Response::new(InferResponse {
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
            })),
            Err(e @ CoreError::UnknownModel(_)) => Err(Status::not_found(e.to_string())),
            Err(e @ CoreError::NoAccelerator { .. }) => {
                Err(Status::failed_precondition(e.to_string()))
            }
        }
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let sh = &self.runtime.shared;
        let models = match sh.served_models() {
            Some(m) => m.into_iter().collect(),
            None => Catalog::get()
                .map_err(|e| Status::internal(e.to_string()))?
                .model_names()
                .map(String::from)
                .collect(),
        };
        let leader = sh.connected.read().expect("connected lock").clone();
        Ok(Response::new(StatusResponse {
            name: sh.name.clone(),
            assignment_epoch: sh.epoch(),
            models,
            connected: leader.is_some(),
            leader_addr: leader.unwrap_or_default(),
            accelerators: sh.accelerators.iter().map(|a| a.to_proto()).collect(),
        }))
    }
}
