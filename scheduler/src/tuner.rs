//! Online tuning of SDRM3's weights (SPSA, DESIGN §3.5) and Supernet sub-network switching.
//!
//! SPSA needs only two measurements per step whatever the number of weights: perturb every
//! weight by ±δ at once (random signs), measure one window with θ(1+δΔ) and one with
//! θ(1−δΔ), and move each weight by η against the sign of the estimated gradient. η halves when
//! the cost rises; the tuner stops when the two windows differ by < 2 % and restarts when the
//! scenario changes or the windowed cost drifts by > 10 %.

use crate::engine::Engine;
use crate::policy::Weights;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const DELTA: f64 = 0.10;
const ETA0: f64 = 0.20;
const CONVERGED: f64 = 0.02;
const DRIFT: f64 = 0.10;

/// One logged tuner step.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TunerStep {
    pub step: usize,
    pub time_ms: f64,
    pub cost_plus: f64,
    pub cost_minus: f64,
    pub eta: f64,
    pub weights: Weights,
    pub converged: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Plus,
    Minus(f64),
    Converged(f64),
}

/// The SPSA tuner state.
#[derive(Debug, Clone)]
pub struct Tuner {
    rng: ChaCha8Rng,
    theta: Weights,
    sign: [f64; Weights::DIM],
    phase: Phase,
    eta: f64,
    last_cost: Option<f64>,
    step: usize,
    started: bool,
    first_convergence: Option<usize>,
    pub log: Vec<TunerStep>,
}

impl Tuner {
    pub fn new(seed: u64) -> Self {
        Tuner {
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x5EED_u64),
            theta: Weights::default(),
            sign: [1.0; Weights::DIM],
            phase: Phase::Plus,
            eta: ETA0,
            last_cost: None,
            step: 0,
            started: false,
            first_convergence: None,
            log: Vec::new(),
        }
    }

    /// Steps taken until the first convergence.
    pub fn first_convergence(&self) -> Option<usize> {
        self.first_convergence
    }

    /// Start over (the workload changed).
    pub fn restart(&mut self, _now: f64) {
        self.phase = Phase::Plus;
        self.eta = ETA0;
        self.last_cost = None;
        self.started = false;
        self.step = 0;
    }

    fn perturbed(&self, dir: f64) -> Weights {
        let t = self.theta.to_vec();
        let mut v = [0.0; Weights::DIM];
        for i in 0..Weights::DIM {
            // θ_drop starts at 0: perturb it additively
            v[i] = if i == 6 {
                t[i] + dir * DELTA * self.sign[i] * 0.5
            } else {
                t[i] * (1.0 + dir * DELTA * self.sign[i])
            };
        }
        Weights::from_vec(v)
    }

    /// A window ended with windowed UXCost `cost` under the current weights `w`; set the
    /// weights for the next window.
    pub fn on_window(&mut self, now: f64, cost: f64, w: &mut Weights) {
        if !self.started {
            self.started = true;
            self.theta = *w;
            self.new_direction();
            *w = self.perturbed(1.0);
            self.phase = Phase::Plus;
            return;
        }
        match self.phase {
            Phase::Plus => {
                self.phase = Phase::Minus(cost);
                *w = self.perturbed(-1.0);
            }
            Phase::Minus(cost_plus) => {
                let cost_minus = cost;
                self.step += 1;
                let diff = (cost_plus - cost_minus).abs() / cost_plus.max(cost_minus).max(1e-12);
                let mean = 0.5 * (cost_plus + cost_minus);
                if let Some(prev) = self.last_cost {
                    if mean > prev {
                        self.eta *= 0.5;
                    }
                }
                self.last_cost = Some(mean);
                let converged = diff < CONVERGED;
                if !converged {
                    let mut t = self.theta.to_vec();
                    for (i, ti) in t.iter_mut().enumerate() {
                        let g = (cost_plus - cost_minus) * self.sign[i];
                        let s = g.signum();
                        if i == 6 {
                            *ti -= self.eta * s * 0.5;
                        } else {
                            *ti *= 1.0 - self.eta * s;
                        }
                    }
                    self.theta = Weights::from_vec(t);
                }
                self.log.push(TunerStep {
                    step: self.step,
                    time_ms: now,
                    cost_plus,
                    cost_minus,
                    eta: self.eta,
                    weights: self.theta,
                    converged,
                });
                if converged {
                    if self.first_convergence.is_none() {
                        self.first_convergence = Some(self.step);
                    }
                    self.phase = Phase::Converged(mean);
                    *w = self.theta;
                } else {
                    self.new_direction();
                    self.phase = Phase::Plus;
                    *w = self.perturbed(1.0);
                }
            }
            Phase::Converged(base) => {
                if (cost - base).abs() > DRIFT * base.max(1e-12) {
                    self.restart(now);
                    self.started = true;
                    self.theta = *w;
                    self.new_direction();
                    *w = self.perturbed(1.0);
                }
            }
        }
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
                    gain(a).partial_cmp(&gain(b)).unwrap().then(b.cmp(&a))
                });
            if let Some(m) = best {
                let l = Self::level(e.width(m));
                e.set_width(m, WIDTHS[l - 1]);
                self.switches += 1;
            }
        } else if rho < 0.7 && miss < 0.01 {
            let best = (0..n)
                .filter(|&m| Self::level(e.width(m)) < 2)
                .min_by(|&a, &b| {
                    demand(e, a)
                        .partial_cmp(&demand(e, b))
                        .unwrap()
                        .then(a.cmp(&b))
                });
            if let Some(m) = best {
                let l = Self::level(e.width(m));
                e.set_width(m, WIDTHS[l + 1]);
                self.switches += 1;
            }
        }
    }
}
