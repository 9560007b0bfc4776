//! What each model needs: its demand (the planning basis), the capacity planned for it, and the
//! share it needs on each GPU kind (most efficient kind first). Also the input checks.

use crate::menu::Menus;
use crate::{Config, Inputs, ModelDemand, PlanError};
use std::collections::BTreeSet;

/// Reject bad input with the field that is wrong.
pub fn validate(inputs: &Inputs) -> Result<(), PlanError> {
    let mut names = BTreeSet::new();
    for m in &inputs.models {
        let bad = |msg: &str| PlanError::Model {
            model: m.name.clone(),
            msg: msg.to_string(),
        };
        if !names.insert(m.name.as_str()) {
            return Err(bad("deployed twice; names must be unique"));
        }
        if !(m.slo_ms.is_finite() && m.slo_ms > 0.0) {
            return Err(bad("slo_ms must be a positive number of ms"));
        }
        if !(m.requested_rps.is_finite() && m.requested_rps >= 0.0) {
            return Err(bad("requested_rps must be >= 0"));
        }
        if m.observed_peak_rps
            .is_some_and(|r| !(r.is_finite() && r >= 0.0))
        {
            return Err(bad("observed_peak_rps must be >= 0"));
        }
        if !(m.value.is_finite() && m.value > 0.0) {
            return Err(bad("value must be > 0"));
        }
    }
    for n in &inputs.nodes {
        for g in &n.gpus {
            if g.memory_mib == 0 {
                return Err(PlanError::Gpu {
                    node: n.id.clone(),
                    gpu: g.id.clone(),
                    msg: "memory_mib must be > 0".into(),
                });
            }
        }
    }
    Ok(())
}

/// The rate a model is planned on (before headroom): its demand, the larger of the rate it was
/// deployed with and the observed rate (which counts requests refused while it is served
/// nowhere). An idle model therefore falls back to its deployed rate, never to nothing.
pub fn basis_rps(m: &ModelDemand) -> f64 {
    m.observed_peak_rps
        .map_or(m.requested_rps, |o| o.max(m.requested_rps))
}

/// The capacity planned for a basis: headroom x the basis, and at least the upper edge of the
/// basis's confidence band (so every rise that stays inside the band is served without a
/// re-plan; a rise beyond the planned capacity is always outside the band).
pub fn planned_rps(basis: f64, cfg: &Config) -> f64 {
    if basis <= 0.0 {
        return 0.0;
    }
    (basis * cfg.headroom).max(basis + cfg.band.half_width(basis))
}

/// One model's need in a round.
#[derive(Debug, Clone)]
pub(crate) struct Need {
    /// Index of the model in `Inputs::models` (also this need's index).
    pub idx: usize,
    /// Capacity to plan (the basis with headroom).
    pub rate: f64,
    /// The demand the plan is made for (the hysteresis reference).
    pub basis: f64,
    /// Share (%) it needs on its best kind, at least 10 when it has a rate.
    pub pct: u32,
    /// GPU kinds that can serve it, least share per req/s first.
    pub kinds: Vec<String>,
}

struct KindOption {
    pct_per_rps: f64,
    kind: String,
    need_pct: u32,
}

/// Every model's need, in input order, on the GPU kinds present.
pub(crate) fn needs(
    menus: &mut Menus<'_>,
    inputs: &Inputs,
    kinds: &BTreeSet<String>,
) -> Result<Vec<Need>, PlanError> {
    let mut out = Vec::with_capacity(inputs.models.len());
    for (idx, m) in inputs.models.iter().enumerate() {
        let basis = basis_rps(m);
        let rate = planned_rps(basis, menus.cfg);
        let mut options = Vec::new();
        for k in kinds {
            if let Some(menu) = menus.get(k, m)? {
                let c = menu.ideal();
                let need =
                    (rate / c.rps * c.pct as f64)
                        .ceil()
                        .max(if rate > 0.0 { 10.0 } else { 0.0 });
                options.push(KindOption {
                    pct_per_rps: c.pct as f64 / c.rps,
                    kind: k.clone(),
                    need_pct: need as u32,
                });
            }
        }
        // most efficient kind first (least share per req/s)
        options.sort_by(|a, b| {
            a.pct_per_rps
                .total_cmp(&b.pct_per_rps)
                .then(a.kind.cmp(&b.kind))
        });
        out.push(Need {
            idx,
            rate,
            basis,
            pct: options.first().map_or(0, |o| o.need_pct),
            kinds: options.into_iter().map(|o| o.kind).collect(),
        });
    }
    Ok(out)
}

/// Placement order: rate x SLO tightness (rate / SLO), highest first, then by name; only the
/// models with a rate that were not shed.
pub(crate) fn order(needs: &[Need], inputs: &Inputs, shed: &BTreeSet<usize>) -> Vec<usize> {
    let mut order: Vec<usize> = (0..needs.len())
        .filter(|&i| !shed.contains(&needs[i].idx) && needs[i].rate > 0.0)
        .collect();
    let model = |i: usize| &inputs.models[needs[i].idx];
    order.sort_by(|&a, &b| {
        let ka = needs[a].rate / model(a).slo_ms;
        let kb = needs[b].rate / model(b).slo_ms;
        kb.total_cmp(&ka).then(model(a).name.cmp(&model(b).name))
    });
    order
}
