//! Checks of what agents send: registrations' measured profiles, reports' values and
//! epochs. A refusal names the field.

use edgeplane_proto::agent as api;
use tonic::Status;

/// Measured profiles an agent registers with are validated and bounded.
pub(super) fn check_profiles(r: &api::RegisterRequest) -> Result<(), Status> {
    for (i, a) in r.accelerators.iter().enumerate() {
        crate::profiles::check_profile(a).map_err(|msg| {
            Status::invalid_argument(format!("accelerators[{i}] ({}).profile: {msg}", a.id))
        })?;
    }
    Ok(())
}

/// A report's values must be finite and non-negative; otherwise it is refused whole.
/// Most models one report may carry (an agent serves a handful; the leader keeps what it is
/// told in memory).
pub const MAX_REPORT_MODELS: usize = 256;

/// A report's epoch against the node's current one: older is stale, newer cannot exist (an
/// agent learns epochs from the leader).
pub fn check_report_epoch(reported: u64, current: u64) -> Result<(), String> {
    if reported < current {
        Err(format!(
            "stale epoch: report made under epoch {reported}, node is at {current}"
        ))
    } else if reported > current {
        Err(format!(
            "assignment_epoch: {reported} is ahead of the node's epoch {current}; an agent \
             reports under an epoch the leader gave it"
        ))
    } else {
        Ok(())
    }
}

pub fn check_report(r: &api::Report) -> Result<(), String> {
    if r.models.len() > MAX_REPORT_MODELS {
        return Err(format!(
            "models: {} in one report; at most {MAX_REPORT_MODELS}",
            r.models.len()
        ));
    }
    let bad = |f: &str, v: f64| -> Result<(), String> {
        if v.is_finite() && v >= 0.0 {
            Ok(())
        } else {
            Err(format!(
                "{f}: must be a finite non-negative number, got {v}"
            ))
        }
    };
    bad("uptime_s", r.uptime_s)?;
    bad("decision_overhead_us", r.decision_overhead_us)?;
    for m in &r.models {
        if m.model.is_empty() || m.model.len() > 253 {
            return Err("models.model: must be 1 to 253 bytes".into());
        }
        bad("models.p50_ms", m.p50_ms)?;
        bad("models.p99_ms", m.p99_ms)?;
        bad("models.energy_j", m.energy_j)?;
    }
    for a in &r.accelerators {
        bad("accelerators.busy_s", a.busy_s)?;
        bad("accelerators.energy_j", a.energy_j)?;
    }
    Ok(())
}
