//! Which models a round leaves out, and why: idle ones, ones no GPU kind here can serve, and,
//! while the estimated demand exceeds the free share, those with the least value per share.

use crate::demand::Need;
use crate::{Inputs, Shed};
use std::collections::BTreeSet;

/// The models a round leaves out (in the order decided) and their indices.
#[derive(Debug, Default)]
pub(crate) struct Shedding {
    pub list: Vec<Shed>,
    /// Model indices (into `Inputs::models`).
    pub set: BTreeSet<usize>,
}

impl Shedding {
    pub fn push(&mut self, idx: usize, model: &str, reason: String) {
        self.list.push(Shed {
            model: model.to_string(),
            reason,
        });
        self.set.insert(idx);
    }
}

/// Shedding before placement: idle models, models without a kind, then least value per share
/// while the summed need exceeds `total_pct`.
pub(crate) fn before_placement(inputs: &Inputs, needs: &[Need], total_pct: u64) -> Shedding {
    let mut shed = Shedding::default();
    for n in needs {
        let m = &inputs.models[n.idx];
        if n.rate <= 0.0 {
            // deployed at 0 req/s and no request seen (refused ones count): nothing to serve
            // yet; the first requests raise its observed rate and the next round places it
            shed.push(
                n.idx,
                &m.name,
                "idle: deployed at 0 req/s and no request observed; placed once requests arrive"
                    .into(),
            );
            continue;
        }
        if n.kinds.is_empty() {
            shed.push(
                n.idx,
                &m.name,
                format!(
                    "no GPU kind here can serve {} within its {:.0} ms SLO (or no profile)",
                    m.profile, m.slo_ms
                ),
            );
        }
    }
    by_value(inputs, needs, total_pct, &mut shed);
    shed
}

/// Shed by least value per share while the estimated demand exceeds capacity.
fn by_value(inputs: &Inputs, needs: &[Need], total_pct: u64, shed: &mut Shedding) {
    let mut demand: u64 = needs
        .iter()
        .filter(|n| !shed.set.contains(&n.idx))
        .map(|n| n.pct as u64)
        .sum();
    if demand <= total_pct {
        return;
    }
    let value = |n: &Need| inputs.models[n.idx].value * n.rate / n.pct as f64;
    let mut cands: Vec<&Need> = needs
        .iter()
        .filter(|n| !shed.set.contains(&n.idx) && n.pct > 0)
        .collect();
    cands.sort_by(|a, b| {
        value(a)
            .total_cmp(&value(b))
            .then(inputs.models[a.idx].name.cmp(&inputs.models[b.idx].name))
    });
    for n in cands {
        if demand <= total_pct {
            break;
        }
        let v = value(n);
        shed.push(
            n.idx,
            &inputs.models[n.idx].name,
            format!(
                "shed: demand {demand} % > capacity {total_pct} %; lowest value per share ({v:.2} req/s per %, needs {} %)",
                n.pct
            ),
        );
        demand -= n.pct as u64;
    }
}
