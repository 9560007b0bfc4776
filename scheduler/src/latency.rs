//! The workspace's one percentile implementation: an HDR histogram (µs, 3 significant
//! digits, 1 µs ..= 1 h). Memory does not grow with the number of samples, and quantiles are
//! within 0.1% of the exact nearest-rank value. The CLI (`load`, `demo`, `bench partition
//! --live`), the raft benchmark, the chaos runner, the agent's report windows and the GPU
//! partition simulator all use it.

use hdrhistogram::Histogram;
use std::time::Duration;

const MAX_US: u64 = 3_600_000_000;

#[derive(Debug, Clone)]
pub struct Latencies(Histogram<u64>);

impl Default for Latencies {
    fn default() -> Self {
        Latencies(Histogram::new_with_bounds(1, MAX_US, 3).expect("valid bounds"))
    }
}

impl Latencies {
    /// A histogram of `ms` values.
    pub fn from_ms(ms: impl IntoIterator<Item = f64>) -> Latencies {
        let mut l = Latencies::default();
        for x in ms {
            l.record_ms(x);
        }
        l
    }

    pub fn record(&mut self, d: Duration) {
        self.0.saturating_record((d.as_micros() as u64).max(1));
    }

    pub fn record_ms(&mut self, ms: f64) {
        self.0
            .saturating_record(((ms.max(0.0) * 1000.0).round() as u64).max(1));
    }

    pub fn len(&self) -> u64 {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Size of the bucket array: fixed by the bounds, whatever was recorded (bounded memory).
    pub fn buckets(&self) -> usize {
        self.0.distinct_values()
    }

    /// Forget every sample (a new report window).
    pub fn clear(&mut self) {
        self.0.reset();
    }

    /// Add another histogram's samples (per-client histograms merged after a run).
    pub fn merge(&mut self, other: &Latencies) {
        // Both sides have the same bounds (`Default`), so every value fits and `add`
        // cannot fail.
        self.0.add(&other.0).expect("histograms of equal bounds");
    }

    /// The largest sample in ms; zero when empty.
    pub fn max_ms(&self) -> f64 {
        if self.0.is_empty() {
            0.0
        } else {
            self.0.max() as f64 / 1e3
        }
    }

    /// The q-quantile (0..=1); zero when empty.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.0.is_empty() {
            Duration::ZERO
        } else {
            Duration::from_micros(self.0.value_at_quantile(q))
        }
    }

    /// The q-quantile in ms; zero when empty.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            0.0
        } else {
            self.0.value_at_quantile(q) as f64 / 1e3
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_match_nearest_rank_within_precision() {
        let mut l = Latencies::default();
        assert_eq!(l.quantile(0.5), Duration::ZERO);
        for i in 1..=1000u64 {
            l.record(Duration::from_micros(i * 100));
        }
        let p50 = l.quantile_ms(0.5);
        let p99 = l.quantile_ms(0.99);
        assert!((p50 - 50.0).abs() <= 0.05, "{p50}");
        assert!((p99 - 99.0).abs() <= 0.1, "{p99}");
        assert_eq!(l.len(), 1000);
        // ms values below 2 ms are exact to the µs
        let l = Latencies::from_ms([1.64, 1.64, 0.2]);
        assert_eq!(l.quantile_ms(0.5), 1.64);
        assert_eq!(l.quantile_ms(0.0), 0.2);
        assert_eq!(Latencies::from_ms([]).quantile_ms(0.99), 0.0);
    }

    #[test]
    fn merge_keeps_every_sample_and_clear_empties() {
        let mut a = Latencies::from_ms([1.0, 2.0, 3.0]);
        let b = Latencies::from_ms([10.0, 20.0]);
        a.merge(&b);
        assert_eq!(a.len(), 5);
        // nearest rank of 5 samples: the third, 3 ms (to the histogram's 0.1 % precision)
        assert!(
            (a.quantile_ms(0.5) - 3.0).abs() < 0.005,
            "{}",
            a.quantile_ms(0.5)
        );
        assert!((a.max_ms() - 20.0).abs() < 0.02, "{}", a.max_ms());
        a.clear();
        assert!(a.is_empty());
        assert_eq!(a.max_ms(), 0.0);
    }
}
