//! The one rate estimator of the planner's inputs, used by the coordinator's planner loop
//! and by the simulator's `adaptive` mode ([`crate::sim_policy`]), with the confidence band
//! the re-plan test ([`crate::replan_trigger`]) and the planned headroom use.
//!
//! - Estimate: an exponentially weighted moving average of the arrival rate with time
//!   constant `tau_s`, started as the plain mean of what was seen (weight `dt / watched`)
//!   until that weight falls under the EWMA's `1 - exp(-dt / tau)`, so the first minutes are
//!   not biased towards a prior.
//! - Confidence: for Poisson arrivals at rate λ the steady-state EWMA has variance
//!   λ / (2 τ), i.e. the estimate of a window of `T = 2 τ` seconds. A change of the estimate
//!   from the planned rate `λ_p` is significant when it exceeds
//!   `z · sqrt(λ_p / T)`, and (so that tiny rates do not re-plan on single requests, nor
//!   large ones on a fraction of a per cent) `floor_rps` and `floor_frac · λ_p`.

/// EWMA of a Poisson arrival rate (see the module doc).
#[derive(Debug, Clone, PartialEq)]
pub struct RateEstimator {
    tau_s: f64,
    rate: f64,
    watched_s: f64,
}

impl RateEstimator {
    /// A fresh estimator; `tau_s` is clamped to at least 1 ms.
    pub fn new(tau_s: f64) -> Self {
        RateEstimator {
            tau_s: tau_s.max(1e-3),
            rate: 0.0,
            watched_s: 0.0,
        }
    }

    /// `count` arrivals seen over the last `dt_s` seconds (or `rate x dt` for a measured
    /// rate). Ignores a non-positive or non-finite interval and a negative or non-finite count.
    pub fn observe(&mut self, count: f64, dt_s: f64) {
        if !(dt_s.is_finite() && dt_s > 0.0 && count.is_finite() && count >= 0.0) {
            return;
        }
        self.watched_s += dt_s;
        let ewma = 1.0 - (-dt_s / self.tau_s).exp();
        let w = (dt_s / self.watched_s).max(ewma);
        self.rate += w * (count / dt_s - self.rate);
    }

    /// The estimate so far (None before the first observation).
    pub fn rate(&self) -> Option<f64> {
        (self.watched_s > 0.0).then_some(self.rate)
    }

    /// Seconds observed.
    pub fn watched_s(&self) -> f64 {
        self.watched_s
    }

    pub fn tau_s(&self) -> f64 {
        self.tau_s
    }
}

/// The confidence parameters shared by the trigger and the planned headroom.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Band {
    /// The estimator's time constant, s (the estimate is worth a window of `2 tau_s`).
    pub tau_s: f64,
    /// Standard deviations a change must exceed to be significant.
    pub z: f64,
    /// A change smaller than this many req/s is never significant.
    pub floor_rps: f64,
    /// ... nor one smaller than this fraction of the planned rate.
    pub floor_frac: f64,
}

impl Default for Band {
    fn default() -> Self {
        Band {
            tau_s: 15.0,
            z: 4.0,
            floor_rps: 1.0,
            floor_frac: 0.05,
        }
    }
}

impl Band {
    /// Half-width of the band around a planned rate `rate_rps`, req/s.
    pub fn half_width(&self, rate_rps: f64) -> f64 {
        let r = rate_rps.max(0.0);
        let sigma = (r / (2.0 * self.tau_s)).sqrt();
        (self.z * sigma)
            .max(self.floor_rps)
            .max(self.floor_frac * r)
    }

    /// Whether an estimate `now` differs significantly from the planned `planned`.
    pub fn significant(&self, now: f64, planned: f64) -> bool {
        (now - planned).abs() > self.half_width(planned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warm_up_is_the_plain_mean_then_an_ewma() {
        let mut e = RateEstimator::new(10.0);
        assert_eq!(e.rate(), None);
        e.observe(10.0, 1.0);
        assert_eq!(e.rate(), Some(10.0));
        e.observe(20.0, 1.0);
        assert_eq!(e.rate(), Some(15.0)); // mean of 10 and 20
        e.observe(0.0, 1.0);
        assert!((e.rate().unwrap() - 10.0).abs() < 1e-12); // (10 + 20 + 0) / 3
                                                           // after the warm-up a step is followed with time constant tau: at a constant 100
                                                           // req/s for tau seconds from an estimate of r0 the estimate is 100 - (100 - r0) / e
        let mut e = RateEstimator::new(10.0);
        for _ in 0..1000 {
            e.observe(0.0, 1.0);
        }
        for _ in 0..10 {
            e.observe(100.0, 1.0);
        }
        let want = 100.0 * (1.0 - (-1.0f64).exp());
        assert!((e.rate().unwrap() - want).abs() < 1e-9, "{:?}", e.rate());
    }

    /// Arrivals per second of a Poisson stream (exponential gaps from a seeded LCG).
    fn poisson_counts(rate: f64, secs: usize, seed: u64) -> Vec<u32> {
        let mut x = seed
            .wrapping_mul(2862933555777941757)
            .wrapping_add(3037000493);
        let mut u = move || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        let mut counts = vec![0u32; secs];
        let mut t = 0.0;
        loop {
            t += -u().ln() / rate;
            if t >= secs as f64 {
                return counts;
            }
            counts[t as usize] += 1;
        }
    }

    /// Re-plans an hour of a constant Poisson stream would cause: the estimate against the
    /// rate last planned on, re-planned (and the reference moved) whenever it leaves the band.
    fn replans_in_an_hour(rate: f64, seed: u64) -> usize {
        let band = Band::default();
        let mut e = RateEstimator::new(band.tau_s);
        let mut planned = rate; // deployed at its rate
        let mut n = 0;
        for c in poisson_counts(rate, 3600, seed) {
            e.observe(c as f64, 1.0);
            let now = e.rate().unwrap();
            if e.watched_s() >= band.tau_s && band.significant(now, planned) {
                n += 1;
                planned = now;
            }
        }
        n
    }

    #[test]
    fn constant_poisson_rates_re_plan_at_most_once_an_hour() {
        // 4 sigma of a 30-s window: a false alarm has probability ~6e-5 per independent look
        // (about 120 an hour at tau = 15 s), so an hour should see none; at most one allowed
        for rate in [10.0, 50.0, 200.0] {
            for seed in 1..=3 {
                let n = replans_in_an_hour(rate, seed);
                assert!(n <= 1, "{rate} req/s seed {seed}: {n} re-plans in an hour");
            }
        }
    }

    #[test]
    fn a_real_step_is_seen_within_seconds() {
        // 50 -> 70 req/s (noise-free counts): the estimate 70 - 20 e^(-t/15) leaves the band
        // of 50 (4 sqrt(50/30) = 5.164) when 20 (1 - e^(-t/15)) > 5.164, t > 4.48 s: at the
        // 5th second
        let band = Band::default();
        let mut e = RateEstimator::new(band.tau_s);
        for _ in 0..600 {
            e.observe(50.0, 1.0);
        }
        let seen = (1..=60).find(|_| {
            e.observe(70.0, 1.0);
            band.significant(e.rate().unwrap(), 50.0)
        });
        assert_eq!(seen, Some(5));
    }

    #[test]
    fn bad_observations_change_nothing() {
        let mut e = RateEstimator::new(10.0);
        e.observe(5.0, 1.0);
        for (c, dt) in [(1.0, 0.0), (1.0, -1.0), (f64::NAN, 1.0), (-1.0, 1.0)] {
            e.observe(c, dt);
        }
        assert_eq!((e.rate(), e.watched_s()), (Some(5.0), 1.0));
    }

    #[test]
    fn the_band_is_z_sigma_over_the_floors() {
        let b = Band::default(); // tau 15 s: T = 30 s, z = 4, floors 1 req/s and 5 %
                                 // 50 req/s: sigma = sqrt(50 / 30) = 1.291; 4 sigma = 5.164 > 2.5 (5 %) > 1
        assert!((b.half_width(50.0) - 4.0 * (50.0f64 / 30.0).sqrt()).abs() < 1e-12);
        // 2 req/s: 4 sigma = 1.033 > 1 = the floor
        assert!((b.half_width(2.0) - 4.0 * (2.0f64 / 30.0).sqrt()).abs() < 1e-12);
        // 0.5 req/s: 4 sigma = 0.516 < the 1 req/s floor
        assert_eq!(b.half_width(0.5), 1.0);
        // 2000 req/s: 4 sigma = 32.7 < 5 % = 100
        assert_eq!(b.half_width(2000.0), 100.0);
        assert!(b.significant(56.0, 50.0) && !b.significant(55.0, 50.0));
        assert!(b.significant(44.0, 50.0) && !b.significant(45.0, 50.0));
    }
}
