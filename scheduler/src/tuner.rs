//! Online tuning of SDRM3's weights (SPSA, DESIGN §3.5) and Supernet sub-network switching.
//!
//! SPSA needs only two measurements per step whatever the number of weights: perturb every
//! weight by ±δ at once (random signs), measure θ(1+δΔ) and θ(1−δΔ), and move each weight by
//! η against the sign of the estimated gradient. The measurements use common random numbers:
//! every candidate is evaluated by replaying *the same* frames (the last window's arrivals,
//! in virtual time, through a fresh engine) so the difference is the weights' doing, not the
//! workload's. The step is kept only if the replayed cost at the new θ is lower than at the
//! old one (η halves otherwise); tuning stops when the improvement over the last two steps is
//! below 1 %, and restarts when the scenario changes or the replayed cost of the current
//! weights on a new window drifts by more than 10 % from the cost at convergence.

use crate::engine::Engine;
use crate::error::Error;
use crate::policy::Weights;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const DELTA: f64 = 0.10;
const ETA0: f64 = 0.20;
/// Converged when the improvement over the last two steps is below this share.
const CONVERGED: f64 = 0.01;
const DRIFT: f64 = 0.10;

/// One logged tuner step. All costs of a step are UXCost of the same replayed frames.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TunerStep {
    pub step: usize,
    pub time_ms: f64,
    /// Cost at the weights the step started from.
    pub cost: f64,
    pub cost_plus: f64,
    pub cost_minus: f64,
    /// Cost at the moved weights.
    pub cost_new: f64,
    /// Whether the move was kept (cost_new < cost).
    pub accepted: bool,
    pub eta: f64,
    pub weights: Weights,
    pub converged: bool,
}

/// The SPSA tuner state.
#[derive(Debug, Clone)]
pub struct Tuner {
    rng: ChaCha8Rng,
    sign: [f64; Weights::DIM],
    eta: f64,
    step: usize,
    improvements: Vec<f64>,
    /// Replayed cost at convergence (None: tuning).
    converged_at: Option<f64>,
    first_convergence: Option<usize>,
    pub log: Vec<TunerStep>,
    /// The profile each profile comparison started from ([`Weights::PROFILE_NAMES`]; the
    /// current weights' name, or "current" when they were off every profile and kept).
    pub profile_choices: Vec<&'static str>,
}

impl Tuner {
    pub fn new(seed: u64) -> Self {
        Tuner {
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x5EED_u64),
            sign: [1.0; Weights::DIM],
            eta: ETA0,
            step: 0,
            improvements: Vec::new(),
            converged_at: None,
            first_convergence: None,
            log: Vec::new(),
            profile_choices: Vec::new(),
        }
    }

    /// Steps taken until the first convergence.
    pub fn first_convergence(&self) -> Option<usize> {
        self.first_convergence
    }

    /// Start over (the workload changed).
    pub fn restart(&mut self, _now: f64) {
        self.eta = ETA0;
        self.step = 0;
        self.improvements.clear();
        self.converged_at = None;
    }

    fn perturbed(&self, theta: Weights, dir: f64) -> Weights {
        let t = theta.to_vec();
        let mut v = [0.0; Weights::DIM];
        for i in 0..Weights::DIM {
            // θ_drop starts at 0: perturb it additively
            v[i] = if i == Weights::THETA_DROP {
                t[i] + dir * DELTA * self.sign[i] * 0.5
            } else {
                t[i] * (1.0 + dir * DELTA * self.sign[i])
            };
        }
        Weights {
            layerwise: theta.layerwise,
            ..Weights::from_vec(v)
        }
    }

    fn moved(&self, theta: Weights, diff: f64) -> Weights {
        let mut t = theta.to_vec();
        for (i, ti) in t.iter_mut().enumerate() {
            let s = (diff * self.sign[i]).signum();
            if i == Weights::THETA_DROP {
                *ti -= self.eta * s * 0.5;
            } else {
                *ti *= 1.0 - self.eta * s;
            }
        }
        Weights {
            layerwise: theta.layerwise,
            ..Weights::from_vec(t)
        }
    }

    /// A window ended. `eval(θ)` replays the window's arrivals with weights θ and returns
    /// their UXCost; `w` holds the live weights and is updated in place.
    pub fn on_window(
        &mut self,
        now: f64,
        w: &mut Weights,
        eval: &mut dyn FnMut(Weights) -> Result<f64, Error>,
    ) -> Result<(), Error> {
        if let Some(base) = self.converged_at {
            let c = eval(*w)?;
            if (c - base).abs() <= DRIFT * base.max(1e-12) {
                return Ok(());
            }
            self.restart(now);
        }
        self.step += 1;
        self.new_direction();
        if self.step == 1 {
            self.choose_profile(w, eval)?;
        }
        let theta = *w;
        let cost = eval(theta)?;
        let cost_plus = eval(self.perturbed(theta, 1.0))?;
        let cost_minus = eval(self.perturbed(theta, -1.0))?;
        let diff = cost_plus - cost_minus;
        let (cost_new, accepted) = if diff.abs() > 0.0 && diff.is_finite() {
            let cand = self.moved(theta, diff);
            let c = eval(cand)?;
            if c < cost {
                *w = cand;
                (c, true)
            } else {
                (c, false)
            }
        } else {
            (cost, false)
        };
        if !accepted {
            self.eta *= 0.5;
        }
        let improvement = if accepted && cost > 0.0 {
            (cost - cost_new) / cost
        } else {
            0.0
        };
        self.improvements.push(improvement);
        let n = self.improvements.len();
        let converged = n >= 2 && self.improvements[n - 2] + self.improvements[n - 1] < CONVERGED;
        self.log.push(TunerStep {
            step: self.step,
            time_ms: now,
            cost,
            cost_plus,
            cost_minus,
            cost_new,
            accepted,
            eta: self.eta,
            weights: *w,
            converged,
        });
        if converged {
            if self.first_convergence.is_none() {
                self.first_convergence = Some(self.step);
            }
            self.converged_at = Some(if accepted { cost_new } else { cost });
        }
        Ok(())
    }

    /// Compare the current weights with [`Weights::profiles`] on the same frames (`eval`)
    /// and keep the best; ties keep the current weights. Used before the first gradient step,
    /// and at the start of a run or phase on a forecast of the next window's frames.
    pub fn choose_profile(
        &mut self,
        w: &mut Weights,
        eval: &mut dyn FnMut(Weights) -> Result<f64, Error>,
    ) -> Result<(), Error> {
        let mut best = (eval(*w)?, *w);
        for p in Weights::profiles() {
            if p == *w {
                continue;
            }
            let c = eval(p)?;
            if c < best.0 {
                best = (c, p);
            }
        }
        *w = best.1;
        self.profile_choices
            .push(best.1.profile_name().unwrap_or("current"));
        Ok(())
    }

    /// Gradient steps taken so far (every window's step, kept or not).
    pub fn steps(&self) -> usize {
        self.log.len()
    }

    fn new_direction(&mut self) {
        for s in self.sign.iter_mut() {
            *s = if self.rng.gen::<bool>() { 1.0 } else { -1.0 };
        }
    }
}

/// Supernet sub-network widths and their accuracy (share of the full network's).
pub const WIDTHS: [f64; 3] = [0.5, 0.75, 1.0];
pub const ACCURACY: [f64; 3] = [0.93, 0.97, 1.0];

/// Switches Supernet sub-networks with load, with hysteresis (down above ρ 0.9 or 5 %
/// misses, up below ρ 0.7 and 1 % misses).
#[derive(Debug, Clone, Default)]
pub struct Supernet {
    pub switches: u64,
}

impl Supernet {
    pub fn accuracy(width: f64) -> f64 {
        WIDTHS
            .iter()
            .position(|w| (w - width).abs() < 1e-9)
            .map(|i| ACCURACY[i])
            .unwrap_or(1.0)
    }
    fn level(width: f64) -> usize {
        WIDTHS
            .iter()
            .position(|w| (w - width).abs() < 1e-9)
            .unwrap_or(2)
    }

    /// Decide at a window boundary.
    pub fn on_window(&mut self, e: &mut Engine, rho: f64, miss: f64) {
        let n = e.models().len();
        // whole-model best latency at full width, per period (its share of the machine)
        let demand = |e: &Engine, m: usize| e.demand(m);
        if rho > 0.9 || miss > 0.05 {
            let best = (0..n)
                .filter(|&m| Self::level(e.width(m)) > 0)
                .max_by(|&a, &b| {
                    let gain = |m: usize| {
                        let l = Self::level(e.width(m));
                        let saved = demand(e, m) * (WIDTHS[l].powi(2) - WIDTHS[l - 1].powi(2));
                        saved / (ACCURACY[l] - ACCURACY[l - 1])
                    };
                    gain(a).total_cmp(&gain(b)).then(b.cmp(&a))
                });
            if let Some(m) = best {
                let l = Self::level(e.width(m));
                e.set_width(m, WIDTHS[l - 1]);
                self.switches += 1;
            }
        } else if rho < 0.7 && miss < 0.01 {
            let best = (0..n)
                .filter(|&m| Self::level(e.width(m)) < 2)
                .min_by(|&a, &b| demand(e, a).total_cmp(&demand(e, b)).then(a.cmp(&b)));
            if let Some(m) = best {
                let l = Self::level(e.width(m));
                e.set_width(m, WIDTHS[l + 1]);
                self.switches += 1;
            }
        }
    }
}
