//! Capacity rules shared by the planners (adaptive and gpulet): the largest batch whose planned
//! latency keeps the SLO (2 x latency <= SLO: a request may wait for the batch in flight, then run in
//! its own), and round-robin time sharing of several models inside one partition.

use crate::{GpuError, Profiles};

/// What one model gets from a partition of a given share.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Capacity {
    /// Largest batch with 2 x planned latency <= SLO.
    pub batch: u32,
    /// Planned latency of that batch (profile x alpha x margin), ms.
    pub latency_ms: f64,
    /// Requests/s the partition sustains at that batch.
    pub throughput_rps: f64,
}

/// Largest batch on `share` meeting `2 x L x inflate <= slo_ms` (`inflate` = alpha x margin).
pub fn single(
    p: &Profiles,
    gpu: &str,
    model: &str,
    share: f64,
    slo_ms: f64,
    inflate: f64,
) -> Result<Option<Capacity>, GpuError> {
    let mut best = None;
    for b in 1..=p.max_batch() {
        let l = p.latency_ms(gpu, model, b as f64, share)? * inflate;
        if 2.0 * l > slo_ms {
            break;
        }
        best = Some(Capacity {
            batch: b,
            latency_ms: l,
            throughput_rps: 1000.0 * b as f64 / l,
        });
    }
    Ok(best)
}

/// One model's part in a time-shared partition.
#[derive(Debug, Clone, Copy)]
pub struct Tenant<'a> {
    pub model: &'a str,
    pub rate_rps: f64,
    pub slo_ms: f64,
}

/// Round-robin time sharing: a cycle runs one batch of every tenant; tenant i's batch must hold the
/// requests that arrive during one cycle (b_i = ceil(rate_i x C)), and every tenant must meet
/// 2 x C <= SLO_i (wait up to one cycle, then its batch runs within the next). Returns the batches
/// and the cycle (ms), or None when no fixed point fits.
pub fn time_share(
    p: &Profiles,
    gpu: &str,
    share: f64,
    tenants: &[Tenant<'_>],
    inflate: f64,
) -> Result<Option<(Vec<u32>, f64)>, GpuError> {
    let mut b: Vec<u32> = vec![1; tenants.len()];
    for _ in 0..64 {
        let mut c = 0.0;
        for (t, bi) in tenants.iter().zip(&b) {
            c += p.latency_ms(gpu, t.model, *bi as f64, share)? * inflate;
        }
        if tenants.iter().any(|t| 2.0 * c > t.slo_ms) {
            return Ok(None);
        }
        let nb: Vec<u32> = tenants
            .iter()
            .map(|t| ((t.rate_rps * c / 1000.0).ceil() as u32).max(1))
            .collect();
        if nb.iter().any(|&x| x > p.max_batch()) {
            return Ok(None);
        }
        if nb.iter().zip(&b).all(|(n, o)| n <= o) {
            return Ok(Some((b, c)));
        }
        b = nb.iter().zip(&b).map(|(n, o)| (*n).max(*o)).collect();
    }
    Ok(None)
}
