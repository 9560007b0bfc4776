//! The native discrete-event simulator: continuous virtual time, any run length, seeded
//! randomness, explicit cascade drops, phases, layer skips, the online tuner and Supernet
//! switching. It drives the same [`Engine`] the edge agent drives in wall time.
//!
//! The same event loop ([`Driver`]) also replays a recorded list of arrivals through a fresh
//! engine: that is how the tuner evaluates θ ± δ on *the same* frames (common random
//! numbers, [`replay`]).

use crate::catalog::{AccSpec, Catalog};
use crate::engine::{Action, DropReason, Engine, EngineModel, JobId};
use crate::error::Error;
use crate::policy::{self, Weights};
use crate::score::{self, FrameRecord, Report};
use crate::tuner::{Supernet, Tuner, TunerStep};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// One scenario, or several run one after another as phases (equal shares of the run).
    pub phases: Vec<String>,
    pub hardware: String,
    pub policy: String,
    pub duration_ms: f64,
    pub seed: u64,
    /// Probability that a frame exits early (after 50–90 % of its layers).
    pub early_exit_prob: f64,
    /// Run the SPSA tuner with its start-of-run profile forecast (sdrm3 only; on by default:
    /// SDRM3 as the paper defines it tunes its weights).
    pub tune: bool,
    /// Switch Supernet sub-networks with load.
    pub supernet: bool,
    /// Initial SDRM3 weights (None: DESIGN §3.4 defaults).
    pub weights: Option<crate::policy::Weights>,
    /// SDRM3 with block-aware costs (see `Sdrm3::layerwise`).
    pub sdrm3_layerwise: bool,
}

impl SimConfig {
    /// `scenario` may list several comma-separated scenarios, run as phases.
    pub fn new(scenario: &str, hardware: &str, policy: &str) -> Self {
        SimConfig {
            phases: scenario.split(',').map(|s| s.trim().to_string()).collect(),
            hardware: hardware.to_string(),
            policy: policy.to_string(),
            duration_ms: 2000.0,
            seed: 1,
            early_exit_prob: 0.0,
            tune: true,
            supernet: false,
            weights: None,
            sdrm3_layerwise: false,
        }
    }
}

/// The outcome of a native run.
#[derive(Debug, Clone)]
pub struct SimResult {
    pub report: Report,
    pub model_names: Vec<String>,
    pub frames: Vec<FrameRecord>,
    pub tuner_log: Vec<TunerStep>,
    /// Steps the tuner needed to converge the first time (None: did not converge / off).
    pub tuner_steps_to_converge: Option<usize>,
    pub width_switches: u64,
    pub decisions: u64,
    /// Every frame that was generated, in release order (replayable with [`replay`]).
    pub arrivals: Vec<Arrival>,
    /// The profile the tuner started from at each comparison (run and phase starts on the
    /// forecast, then the first step of every restart); empty when untuned.
    pub profile_choices: Vec<&'static str>,
}

/// One generated frame, as the engine received it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Arrival {
    pub time_ms: f64,
    pub model: usize,
    pub frame: u64,
    pub deadline_ms: f64,
    pub end_layer: Option<usize>,
    pub width: f64,
}

/// Everything needed to build a fresh engine like the live one (for replays).
#[derive(Debug, Clone)]
pub struct EngineSpec {
    pub accelerators: Vec<AccSpec>,
    pub models: Vec<EngineModel>,
    pub probabilities: Vec<f64>,
    pub active: Vec<bool>,
    pub layerwise: bool,
    /// Smallest dispatched block, ms ([`Engine::set_min_block_ms`]; 0 = B layers): a replay
    /// must group layers as the engine it stands in for does.
    pub min_block_ms: f64,
    /// Accelerators each model may run on ([`Engine::set_allowed`]; empty or missing = all):
    /// a replay must honour the assignment the live engine serves.
    pub allowed: Vec<Vec<usize>>,
}

impl EngineSpec {
    /// An SDRM3 engine with weights `w`.
    pub fn sdrm3(&self, cat: &Catalog, w: Weights) -> Result<Engine, Error> {
        let pol = policy::Sdrm3::new(w, self.layerwise);
        let mut e = Engine::new(cat, &self.accelerators, self.models.clone(), Box::new(pol))?;
        for m in 0..self.models.len() {
            e.set_trigger_probability(m, self.probabilities[m]);
            e.set_active(m, self.active[m]);
        }
        e.set_min_block_ms(self.min_block_ms);
        for (m, accs) in self.allowed.iter().enumerate() {
            if !accs.is_empty() {
                e.set_allowed(m, accs)?;
            }
        }
        Ok(e)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    BlockDone(usize),
    /// Periodic release of model m (generated runs).
    Release(usize),
    /// The i-th recorded arrival (replays).
    Scripted(usize),
}

type Heap = BinaryHeap<Reverse<(u64, u64, Ev, u64)>>;

fn key(t: f64) -> u64 {
    // non-negative f64s order like their bit patterns
    t.max(0.0).to_bits()
}

/// The event loop around one engine: the event heap, the frame records and the bookkeeping
/// that turns engine actions into records. Shared by live runs and replays.
struct Driver {
    engine: Engine,
    heap: Heap,
    seq: u64,
    frames: Vec<FrameRecord>,
    rec_of: HashMap<JobId, usize>,
    decisions: u64,
}

impl Driver {
    fn new(engine: Engine) -> Self {
        Driver {
            engine,
            heap: BinaryHeap::new(),
            seq: 0,
            frames: Vec::new(),
            rec_of: HashMap::new(),
            decisions: 0,
        }
    }

    fn push(&mut self, t: f64, ev: Ev, frame: u64) {
        self.seq += 1;
        self.heap.push(Reverse((key(t), self.seq, ev, frame)));
    }

    /// Record what the engine did and schedule block completions.
    fn apply(&mut self, acts: &[Action], now: f64) {
        for a in acts {
            match *a {
                Action::Dispatch {
                    acc, latency_ms, ..
                } => {
                    self.decisions += 1;
                    self.push(now + latency_ms, Ev::BlockDone(acc), 0)
                }
                Action::Drop { job, energy_mj, .. } => {
                    if let Some(&r) = self.rec_of.get(&job) {
                        self.frames[r].dropped = true;
                        self.frames[r].energy_mj = energy_mj;
                    }
                }
                Action::Complete {
                    job,
                    done_ms,
                    energy_mj,
                    ..
                } => {
                    if let Some(&r) = self.rec_of.get(&job) {
                        self.frames[r].done_ms = Some(done_ms);
                        self.frames[r].energy_mj = energy_mj;
                    }
                }
            }
        }
    }

    /// Hand a frame to the engine and open its record; a frame whose upstream frame is
    /// already known dropped is dropped at once (cascade).
    fn release(&mut self, a: &Arrival, acts: &mut Vec<Action>) {
        self.engine.set_width(a.model, a.width);
        let id = self
            .engine
            .release(a.time_ms, a.model, a.frame, a.deadline_ms, a.end_layer);
        let e_star = self
            .engine
            .job(id)
            .map(|j| self.engine.best_remaining(j).1)
            .unwrap_or(0.0);
        self.rec_of.insert(id, self.frames.len());
        self.frames.push(FrameRecord {
            model: a.model,
            frame: a.frame,
            release_ms: a.time_ms,
            deadline_ms: a.deadline_ms,
            done_ms: None,
            dropped: false,
            energy_mj: 0.0,
            accuracy: Supernet::accuracy(a.width),
            e_star_mj: e_star,
        });
        if let Some(u) = self.engine.models()[a.model].upstream {
            if self.engine.upstream_failed(u, a.frame) {
                self.engine.drop_job(id, DropReason::Cascade, acts);
            }
        }
    }

    /// Decide at `now` after this instant's events were applied.
    fn decide(&mut self, now: f64) {
        let acts = self.engine.step(now);
        self.apply(&acts, now);
    }

    /// No event is left: whatever is still pending can only be finished or dropped. Returns
    /// false when nothing more can happen.
    fn drain(&mut self, end_ms: f64) -> bool {
        if self.engine.pending() == 0 {
            return false;
        }
        let t = self
            .frames
            .iter()
            .filter_map(|f| f.done_ms)
            .fold(end_ms, f64::max);
        let acts = self.engine.step(t);
        let dispatched = acts.iter().any(|a| matches!(a, Action::Dispatch { .. }));
        self.apply(&acts, t);
        if !dispatched {
            let ids: Vec<JobId> = self.engine.ready_jobs().map(|j| j.id).collect();
            let mut out = Vec::new();
            for id in ids {
                self.engine.drop_job(id, DropReason::Expired, &mut out);
            }
            self.apply(&out, t);
            if self.engine.pending() > 0 && self.heap.is_empty() {
                return false; // cascade-blocked jobs whose upstream never completes
            }
        }
        true
    }

    /// Pop every event at the earliest instant; block completions are applied at once,
    /// releases are returned to the caller (in heap order).
    fn pop_instant(&mut self) -> Option<(f64, Vec<(Ev, u64)>)> {
        let Reverse((k, _, _, _)) = *self.heap.peek()?;
        let now = f64::from_bits(k);
        let mut acts = Vec::new();
        let mut releases = Vec::new();
        while let Some(Reverse((k2, _, ev, frame))) = self.heap.peek().copied() {
            if k2 != k {
                break;
            }
            self.heap.pop();
            match ev {
                Ev::BlockDone(acc) => {
                    if let Some(a) = self.engine.block_done(now, acc) {
                        acts.push(a);
                    }
                }
                other => releases.push((other, frame)),
            }
        }
        self.apply(&acts, now);
        Some((now, releases))
    }
}

/// Replay `arrivals` through a fresh SDRM3 engine with weights `w` and return the UXCost of
/// those frames (the run drains: every frame ends completed or dropped). The tuner's
/// measurement: the same frames for every θ it compares.
pub fn replay(
    cat: &Catalog,
    spec: &EngineSpec,
    w: Weights,
    arrivals: &[Arrival],
) -> Result<Report, Error> {
    let mut d = Driver::new(spec.sdrm3(cat, w)?);
    let t0 = arrivals.first().map(|a| a.time_ms).unwrap_or(0.0);
    for (i, a) in arrivals.iter().enumerate() {
        d.push(a.time_ms - t0, Ev::Scripted(i), 0);
    }
    loop {
        let Some((now, releases)) = d.pop_instant() else {
            if d.drain(0.0) {
                continue;
            }
            break;
        };
        let mut acts = Vec::new();
        for (ev, _) in releases {
            if let Ev::Scripted(i) = ev {
                let mut a = arrivals[i];
                a.time_ms -= t0;
                a.deadline_ms -= t0;
                d.release(&a, &mut acts);
            }
        }
        d.apply(&acts, now);
        d.decide(now);
    }
    let names: Vec<String> = spec.models.iter().map(|m| m.name.clone()).collect();
    Ok(score::score(&names, &d.frames))
}

/// The scenario(s) of a run merged into one model list, with per-phase active sets.
struct Workload {
    models: Vec<EngineModel>,
    probs: Vec<f64>,
    active: Vec<HashSet<usize>>,
}

fn workload(cat: &Catalog, phases: &[String]) -> Result<Workload, Error> {
    let mut models: Vec<EngineModel> = Vec::new();
    let mut probs: Vec<f64> = Vec::new();
    let mut active: Vec<HashSet<usize>> = Vec::new();
    let mut upstream_names: Vec<Option<String>> = Vec::new();
    for name in phases {
        let sc = cat.scenario(name)?;
        let mut set = HashSet::new();
        for sm in &sc.models {
            let idx = match models.iter().position(|m| m.name == sm.name) {
                Some(i) => i,
                None => {
                    models.push(EngineModel {
                        name: sm.name.clone(),
                        cost_model: sm.cost_model.clone(),
                        period_ms: 1000.0 / sm.fps as f64,
                        upstream: None,
                    });
                    probs.push(sm.probability);
                    upstream_names.push(sm.depends_on.first().cloned());
                    models.len() - 1
                }
            };
            set.insert(idx);
        }
        active.push(set);
    }
    for (i, up) in upstream_names.iter().enumerate() {
        models[i].upstream = up
            .as_ref()
            .and_then(|u| models.iter().position(|m| &m.name == u));
    }
    Ok(Workload {
        models,
        probs,
        active,
    })
}

/// Per-window state of a live run: the tuner and Supernet act at window boundaries.
struct Windows {
    len: f64,
    next: f64,
    start_rec: usize,
    start_arrival: usize,
    rho_sum: f64,
    rho_n: u64,
    tuner: Option<Tuner>,
    supernet: Option<Supernet>,
}

/// Run one native simulation.
pub fn run(cat: &Catalog, cfg: &SimConfig) -> Result<SimResult, Error> {
    if !(cfg.duration_ms.is_finite() && cfg.duration_ms > 0.0) {
        return Err(Error::Invalid {
            field: "duration_ms",
            why: "must be > 0".into(),
        });
    }
    if cfg.phases.is_empty() {
        return Err(Error::Invalid {
            field: "scenario",
            why: "no scenario given".into(),
        });
    }
    let mut pol: Box<dyn policy::Policy> = if cfg.policy == "sdrm3" {
        Box::new(policy::Sdrm3::new(Weights::default(), cfg.sdrm3_layerwise))
    } else {
        policy::by_name(&cfg.policy)?
    };
    if let (Some(w), Some(pw)) = (cfg.weights, pol.weights_mut()) {
        *pw = w;
    }
    run_with(cat, cfg, pol)
}

/// [`run`] with the policy given (`cfg.policy` only names it for the tuner's replays).
pub(crate) fn run_with(
    cat: &Catalog,
    cfg: &SimConfig,
    pol: Box<dyn policy::Policy>,
) -> Result<SimResult, Error> {
    let hw = cat.hardware(&cfg.hardware)?;
    let wl = workload(cat, &cfg.phases)?;
    let mut engine = Engine::new(cat, &hw.accelerators, wl.models.clone(), pol)?;
    let nm = engine.models().len();
    for m in 0..nm {
        engine.set_trigger_probability(m, wl.probs[m]);
        engine.set_active(m, wl.active[0].contains(&m));
    }
    let names: Vec<String> = engine.models().iter().map(|m| m.name.clone()).collect();
    let longest = wl.models.iter().map(|m| m.period_ms).fold(0.0, f64::max);
    let window = (2.0 * longest).max(200.0);
    let phase_len = cfg.duration_ms / cfg.phases.len() as f64;
    let mut spec = EngineSpec {
        accelerators: hw.accelerators.clone(),
        models: wl.models.clone(),
        probabilities: wl.probs.clone(),
        active: (0..nm).map(|m| wl.active[0].contains(&m)).collect(),
        layerwise: cfg.sdrm3_layerwise,
        min_block_ms: 0.0,
        allowed: Vec::new(),
    };

    let mut d = Driver::new(engine);
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    for m in 0..nm {
        d.push(0.0, Ev::Release(m), 0);
    }
    let mut arrivals: Vec<Arrival> = Vec::new();
    let mut generated: HashSet<(usize, u64)> = HashSet::new();
    let mut win = Windows {
        len: window,
        next: window,
        start_rec: 0,
        start_arrival: 0,
        rho_sum: 0.0,
        rho_n: 0,
        tuner: (cfg.tune && d.engine.policy_name() == "sdrm3").then(|| Tuner::new(cfg.seed)),
        supernet: cfg.supernet.then(Supernet::default),
    };
    let mut phase_idx = 0usize;
    forecast_profile(cat, &spec, &wl, 0, 0.0, &mut d, &mut win)?;

    loop {
        let Some((now, releases)) = d.pop_instant() else {
            if d.drain(cfg.duration_ms) {
                continue;
            }
            break;
        };
        let ph = ((now / phase_len) as usize).min(cfg.phases.len() - 1);
        if ph != phase_idx {
            phase_idx = ph;
            for m in 0..nm {
                let on = wl.active[ph].contains(&m);
                d.engine.set_active(m, on);
                spec.active[m] = on;
            }
            if let Some(t) = win.tuner.as_mut() {
                t.restart(now);
            }
            forecast_profile(cat, &spec, &wl, ph, now, &mut d, &mut win)?;
        }
        let mut acts = Vec::new();
        for (ev, frame) in releases {
            let Ev::Release(m) = ev else { continue };
            let t_next = (frame + 1) as f64 * wl.models[m].period_ms;
            if t_next < cfg.duration_ms {
                d.push(t_next, Ev::Release(m), frame + 1);
            }
            if !wl.active[phase_idx].contains(&m) {
                continue;
            }
            let Some(a) = generate(&mut rng, &mut generated, &wl, cfg, &d.engine, now, m, frame)
            else {
                continue;
            };
            arrivals.push(a);
            d.release(&a, &mut acts);
        }
        d.apply(&acts, now);
        d.decide(now);
        win.rho_sum += d.engine.load();
        win.rho_n += 1;
        if now >= win.next && now < cfg.duration_ms {
            on_window(cat, &spec, &mut d, &mut win, &arrivals, &names, now)?;
        }
    }
    let report = score::score(&names, &d.frames);
    let (tuner_log, steps, profile_choices) = match win.tuner {
        Some(t) => {
            let s = t.first_convergence();
            (t.log, s, t.profile_choices)
        }
        None => (Vec::new(), None, Vec::new()),
    };
    Ok(SimResult {
        report,
        model_names: names,
        frames: d.frames,
        tuner_log,
        tuner_steps_to_converge: steps,
        width_switches: win.supernet.map(|s| s.switches).unwrap_or(0),
        decisions: d.decisions,
        arrivals,
        profile_choices,
    })
}

/// Frame `frame` of model `m` is due at `now`: draw whether it is generated (its trigger
/// probability, and only if its upstream frame was) and whether it exits early.
#[allow(clippy::too_many_arguments)]
fn generate(
    rng: &mut ChaCha8Rng,
    generated: &mut HashSet<(usize, u64)>,
    wl: &Workload,
    cfg: &SimConfig,
    engine: &Engine,
    now: f64,
    m: usize,
    frame: u64,
) -> Option<Arrival> {
    let gen_ok = match wl.models[m].upstream {
        Some(u) => generated.contains(&(u, frame)),
        None => true,
    };
    let draw: f64 = rng.gen();
    if !gen_ok || draw >= wl.probs[m] {
        return None;
    }
    generated.insert((m, frame));
    let layers = engine.layers(m);
    let end = if cfg.early_exit_prob > 0.0 && rng.gen::<f64>() < cfg.early_exit_prob {
        Some(((layers as f64) * rng.gen_range(0.5..0.9)).ceil() as usize)
    } else {
        None
    };
    Some(Arrival {
        time_ms: now,
        model: m,
        frame,
        deadline_ms: now + wl.models[m].period_ms,
        end_layer: end,
        width: engine.width(m),
    })
}

/// At the start of a run or phase the tuner has no window to replay yet; sensors are
/// periodic, so it replays a forecast instead: every active model's frames over the next
/// window at its period (every cascade trigger assumed to fire: the busiest case), and starts
/// from the best profile on it.
fn forecast_profile(
    cat: &Catalog,
    spec: &EngineSpec,
    wl: &Workload,
    phase: usize,
    now: f64,
    d: &mut Driver,
    win: &mut Windows,
) -> Result<(), Error> {
    let Some(t) = win.tuner.as_mut() else {
        return Ok(());
    };
    let widths: Vec<f64> = (0..wl.models.len()).map(|m| d.engine.width(m)).collect();
    let fc = forecast(
        &wl.models,
        |m| wl.active[phase].contains(&m),
        &widths,
        now,
        win.len,
    );
    if let Some(w) = d.engine.policy_mut().weights_mut() {
        let mut eval = |x: Weights| replay(cat, spec, x, &fc).map(|r| r.uxcost);
        t.choose_profile(w, &mut eval)?;
    }
    Ok(())
}

/// The periodic frames of the `active` models over `[now, now + window)`: frame i of a
/// model at i × period, due a period later, every cascade trigger assumed to fire (the
/// busiest case), in time order (ties: model order). What the tuner replays at the start of
/// a run, a phase or an assignment, before a window of real arrivals exists.
pub fn forecast(
    models: &[EngineModel],
    active: impl Fn(usize) -> bool,
    widths: &[f64],
    now: f64,
    window: f64,
) -> Vec<Arrival> {
    let mut fc = Vec::new();
    for (m, model) in models.iter().enumerate() {
        if !active(m) {
            continue;
        }
        let p = model.period_ms;
        let mut i = (now / p).ceil() as u64;
        while (i as f64) * p < now + window {
            fc.push(Arrival {
                time_ms: i as f64 * p,
                model: m,
                frame: i,
                deadline_ms: (i + 1) as f64 * p,
                end_layer: None,
                width: widths.get(m).copied().unwrap_or(1.0),
            });
            i += 1;
        }
    }
    fc.sort_by(|a, b| a.time_ms.total_cmp(&b.time_ms).then(a.model.cmp(&b.model)));
    fc
}

/// A window ended: the tuner takes one step on the window's arrivals (replayed in virtual
/// time, beside the live engine), Supernet switches with the window's load and misses.
fn on_window(
    cat: &Catalog,
    spec: &EngineSpec,
    d: &mut Driver,
    win: &mut Windows,
    arrivals: &[Arrival],
    names: &[String],
    now: f64,
) -> Result<(), Error> {
    let finished: Vec<FrameRecord> = d.frames[win.start_rec..]
        .iter()
        .filter(|f| f.dropped || f.done_ms.is_some())
        .cloned()
        .collect();
    let r = score::score(names, &finished);
    if let Some(t) = win.tuner.as_mut() {
        let window_arrivals = &arrivals[win.start_arrival..];
        if let Some(w) = d.engine.policy_mut().weights_mut() {
            let mut eval = |x: Weights| replay(cat, spec, x, window_arrivals).map(|r| r.uxcost);
            t.on_window(now, w, &mut eval)?;
        }
    }
    if let Some(s) = win.supernet.as_mut() {
        let rho = win.rho_sum / win.rho_n.max(1) as f64;
        s.on_window(&mut d.engine, rho, r.miss_rate);
    }
    win.rho_sum = 0.0;
    win.rho_n = 0;
    win.start_rec = d.frames.len();
    win.start_arrival = arrivals.len();
    win.next = now + win.len;
    Ok(())
}
