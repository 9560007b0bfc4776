//! Spare share: an MPS cap is a limit, not a reservation, so share nobody planned is lent in 10 %
//! steps to the partition on that GPU with the highest utilisation at batch 1 (lower latency,
//! more tail headroom); a later re-plan takes it back when a model needs it.

use crate::pack::Packing;
use crate::PlanError;

/// Lend every GPU's unplanned share to its busiest partitions (one pass over the drafts).
pub(crate) fn lend(pk: &mut Packing<'_, '_>) -> Result<(), PlanError> {
    let mut on_slot: Vec<Vec<usize>> = vec![Vec::new(); pk.board.slots.len()];
    for (di, d) in pk.drafts.iter().enumerate() {
        on_slot[d.slot].push(di);
    }
    let mut lent = vec![0u32; pk.drafts.len()];
    for (si, drafts) in on_slot.iter().enumerate() {
        while pk.board.slots[si].free_pct >= 10 {
            let Some(di) = busiest(pk, si, drafts)? else {
                break;
            };
            pk.drafts[di].pct += 10;
            pk.board.slots[si].free_pct -= 10;
            lent[di] += 10;
        }
    }
    for (d, l) in pk.drafts.iter_mut().zip(lent) {
        if l > 0 {
            // the batch cap stays the planned one: the extra share only shortens batches
            d.reason.push_str(&format!(
                "; +{l} % spare share lent (GPU otherwise idle there)"
            ));
        }
    }
    Ok(())
}

/// The draft on slot `si` with the highest utilisation at batch 1 that 10 % more share speeds
/// up by at least 3 % (power is paid per share x busy time, so share that does not speed a
/// launch-bound model up only costs energy).
fn busiest(pk: &Packing<'_, '_>, si: usize, drafts: &[usize]) -> Result<Option<usize>, PlanError> {
    let kind = &pk.board.slots[si].kind;
    let profiles = &pk.menus.data.profiles;
    let mut best: Option<(f64, usize)> = None;
    for &di in drafts {
        let d = &pk.drafts[di];
        if d.pct >= 100 || d.tenants.is_empty() {
            continue;
        }
        let s = d.pct as f64 / 100.0;
        let s_up = (d.pct + 10) as f64 / 100.0;
        let mut rho = 0.0;
        let mut rho_up = 0.0;
        for t in &d.tenants {
            let prof = &pk.inputs.models[t.model].profile;
            rho += t.rate * profiles.latency_ms(kind, prof, 1.0, s)? / 1000.0;
            rho_up += t.rate * profiles.latency_ms(kind, prof, 1.0, s_up)? / 1000.0;
        }
        if rho_up > rho * 0.97 {
            continue;
        }
        if best.is_none_or(|b| rho > b.0) {
            best = Some((rho, di));
        }
    }
    Ok(best.map(|b| b.1))
}
