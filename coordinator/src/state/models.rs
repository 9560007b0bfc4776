//! Models: deploy (insert or update) and remove (with its pins and partitions).

use edgeplane_proto::raft as pb;
use serde::{Deserialize, Serialize};

use super::{check_name, CommandError, State};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    pub name: String,
    pub slo_ms: f64,
    /// Requested rate, requests/s.
    pub rate: f64,
    pub memory_mb: u64,
}

pub(super) fn validate_deploy(d: &pb::DeployModel) -> Result<(), CommandError> {
    check_name("name", &d.name)?;
    if !d.slo_ms.is_finite() || d.slo_ms <= 0.0 {
        return Err(CommandError::invalid(
            "slo_ms",
            format!("must be a finite number > 0, got {}", d.slo_ms),
        ));
    }
    if !d.rate.is_finite() || d.rate < 0.0 {
        return Err(CommandError::invalid(
            "rate",
            format!("must be a finite number >= 0, got {}", d.rate),
        ));
    }
    Ok(())
}

impl State {
    pub(super) fn apply_deploy(&mut self, d: &pb::DeployModel) -> Result<u64, CommandError> {
        self.models.insert(
            d.name.clone(),
            Model {
                name: d.name.clone(),
                slo_ms: d.slo_ms,
                rate: d.rate,
                memory_mb: d.memory_mb,
            },
        );
        Ok(0)
    }

    pub(super) fn apply_remove_model(
        &mut self,
        r: &pb::RemoveModel,
        index: u64,
    ) -> Result<u64, CommandError> {
        if self.models.remove(&r.name).is_none() {
            return Err(CommandError::NotFound(format!(
                "model {:?} not found",
                r.name
            )));
        }
        self.pins.retain(|p| p.model != r.name);
        let holding: Vec<String> = self
            .nodes
            .values()
            .filter(|n| n.partitions.iter().any(|p| p.models.contains(&r.name)))
            .map(|n| n.name.clone())
            .collect();
        for name in holding {
            let node = self.nodes.get_mut(&name).expect("listed");
            for p in &mut node.partitions {
                p.models.retain(|m| m != &r.name);
            }
            node.assignment_epoch = index;
        }
        Ok(0)
    }
}
