//! Summaries of a simulation run: time series in fixed bins and statistics over a time window
//! (the seed claim is about 100-400 s, where the three models overlap).

use crate::sim::ModelResult;
use edgeplane_scheduler::latency::Latencies;

/// One time bin of one model.
#[derive(Debug, Clone, PartialEq)]
pub struct Bin {
    pub t_s: f64,
    pub completed: usize,
    pub within_slo: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Completed requests binned by completion time.
pub fn bins(m: &ModelResult, slo_ms: f64, bin_s: f64, duration_s: f64) -> Vec<Bin> {
    let n = (duration_s / bin_s).ceil() as usize;
    let mut per: Vec<Vec<f64>> = vec![Vec::new(); n];
    for &(t, l) in &m.samples {
        let i = ((t as f64) / bin_s) as usize;
        if i < n {
            per[i].push(l as f64);
        }
    }
    per.into_iter()
        .enumerate()
        .map(|(i, v)| {
            let h = Latencies::from_ms(v.iter().copied());
            Bin {
                t_s: i as f64 * bin_s,
                completed: v.len(),
                within_slo: v.iter().filter(|&&x| x <= slo_ms).count(),
                p50_ms: h.quantile_ms(0.5),
                p99_ms: h.quantile_ms(0.99),
                max_ms: v.iter().copied().fold(0.0, f64::max),
            }
        })
        .collect()
}

/// Statistics of one model over [from, to).
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub completed: usize,
    pub refused: usize,
    pub slo_attainment: f64,
    pub p99_ms: f64,
    /// Smallest and largest p99 of the 10-s bins in the window (flatness).
    pub p99_10s_min_ms: f64,
    pub p99_10s_max_ms: f64,
}

pub fn window(m: &ModelResult, slo_ms: f64, from_s: f64, to_s: f64) -> Window {
    let v: Vec<f64> = m
        .samples
        .iter()
        .filter(|(t, _)| (*t as f64) >= from_s && (*t as f64) < to_s)
        .map(|&(_, l)| l as f64)
        .collect();
    let ok = v.iter().filter(|&&x| x <= slo_ms).count();
    // refused requests count against attainment (they are not in the latency percentiles)
    let refused = m
        .refused_at
        .iter()
        .filter(|t| (**t as f64) >= from_s && (**t as f64) < to_s)
        .count();
    let b = bins(m, slo_ms, 10.0, to_s);
    let inside: Vec<&Bin> = b
        .iter()
        .filter(|x| x.t_s >= from_s && x.t_s < to_s && x.completed > 0)
        .collect();
    Window {
        completed: v.len(),
        refused,
        slo_attainment: if v.len() + refused == 0 {
            1.0
        } else {
            ok as f64 / (v.len() + refused) as f64
        },
        p99_ms: Latencies::from_ms(v.iter().copied()).quantile_ms(0.99),
        p99_10s_min_ms: inside
            .iter()
            .map(|x| x.p99_ms)
            .fold(f64::INFINITY, f64::min),
        p99_10s_max_ms: inside.iter().map(|x| x.p99_ms).fold(0.0, f64::max),
    }
}
