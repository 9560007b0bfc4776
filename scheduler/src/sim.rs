//! The native discrete-event simulator: continuous virtual time, any run length, seeded
//! randomness, explicit cascade drops, phases, layer skips, the online tuner and Supernet
//! switching. It drives the same [`Engine`] the edge agent drives in wall time.

use crate::catalog::Catalog;
use crate::engine::{Action, Engine, EngineModel, JobId};
use crate::error::Error;
use crate::policy;
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
    /// Run the SPSA tuner (sdrm3 only).
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
            tune: false,
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    BlockDone(usize),
    Release(usize),
}

fn key(t: f64) -> u64 {
    // non-negative f64s order like their bit patterns
    t.max(0.0).to_bits()
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
    let hw = cat.hardware(&cfg.hardware)?;
    // merge the phases' models by name
    let mut models: Vec<EngineModel> = Vec::new();
    let mut probs: Vec<f64> = Vec::new();
    let mut active: Vec<HashSet<usize>> = Vec::new();
    let mut upstream_names: Vec<Option<String>> = Vec::new();
    for name in &cfg.phases {
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
    let mut pol: Box<dyn policy::Policy> = if cfg.policy == "sdrm3" {
        Box::new(policy::Sdrm3 {
            layerwise: cfg.sdrm3_layerwise,
            ..Default::default()
        })
    } else {
        policy::by_name(&cfg.policy)?
    };
    if let (Some(w), Some(pw)) = (cfg.weights, pol.weights_mut()) {
        *pw = w;
    }
    let mut engine = Engine::new(cat, &hw.accelerators, models, pol)?;
    let nm = engine.models().len();
    let names: Vec<String> = engine.models().iter().map(|m| m.name.clone()).collect();
    let e_star: Vec<f64> = (0..nm).map(|m| engine.whole_energy_star(m)).collect();
    let longest = engine
        .models()
        .iter()
        .map(|m| m.period_ms)
        .fold(0.0, f64::max);
    let window = (2.0 * longest).max(200.0);
    let phase_len = cfg.duration_ms / cfg.phases.len() as f64;

    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut heap: BinaryHeap<Reverse<(u64, u64, Ev, u64)>> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut push = |heap: &mut BinaryHeap<_>, t: f64, ev: Ev, frame: u64| {
        seq += 1;
        heap.push(Reverse((key(t), seq, ev, frame)));
    };
    for m in 0..nm {
        push(&mut heap, 0.0, Ev::Release(m), 0);
    }
    let mut frames: Vec<FrameRecord> = Vec::new();
    let mut rec_of: HashMap<JobId, usize> = HashMap::new();
    let mut generated: HashSet<(usize, u64)> = HashSet::new();
    let mut tuner = if cfg.tune && engine.policy_name() == "sdrm3" {
        Some(Tuner::new(cfg.seed))
    } else {
        None
    };
    let mut supernet = cfg.supernet.then(Supernet::default);
    let mut next_window = window;
    let mut window_start_rec = 0usize;
    let mut rho_sum = (0.0, 0u64);
    let mut phase_idx = 0usize;
    let mut decisions = 0u64;
    let mut now;

    loop {
        let Some(Reverse((k, _, _, _))) = heap.peek().cloned() else {
            if engine.pending() > 0 {
                // nothing left to wait for: whatever is still queued can never run
                let t = frames
                    .iter()
                    .filter_map(|f| f.done_ms)
                    .fold(cfg.duration_ms, f64::max);
                let acts = engine.step(t);
                let dispatched = acts.iter().any(|a| matches!(a, Action::Dispatch { .. }));
                apply(&acts, t, &mut frames, &rec_of, &mut heap, &mut push);
                if !dispatched {
                    let ids: Vec<JobId> = engine.ready_jobs().map(|j| j.id).collect();
                    let mut out = Vec::new();
                    for id in ids {
                        engine.drop_job(id, crate::engine::DropReason::Expired, &mut out);
                    }
                    apply(&out, t, &mut frames, &rec_of, &mut heap, &mut push);
                    if engine.pending() > 0 && heap.is_empty() {
                        break; // cascade-blocked jobs whose upstream never completes
                    }
                }
                continue;
            }
            break;
        };
        now = f64::from_bits(k);
        // phase change
        let ph = ((now / phase_len) as usize).min(cfg.phases.len() - 1);
        if ph != phase_idx {
            phase_idx = ph;
            if let Some(t) = tuner.as_mut() {
                t.restart(now);
            }
        }
        // pop every event at this instant
        let mut acts = Vec::new();
        while let Some(Reverse((k2, _, ev, frame))) = heap.peek().cloned() {
            if k2 != k {
                break;
            }
            heap.pop();
            match ev {
                Ev::BlockDone(acc) => {
                    if let Some(a) = engine.block_done(now, acc) {
                        acts.push(a);
                    }
                }
                Ev::Release(m) => {
                    let period = engine.models()[m].period_ms;
                    let t_next = (frame + 1) as f64 * period;
                    if t_next < cfg.duration_ms {
                        push(&mut heap, t_next, Ev::Release(m), frame + 1);
                    }
                    if !active[phase_idx].contains(&m) {
                        continue;
                    }
                    let up = engine.models()[m].upstream;
                    let gen_ok = match up {
                        Some(u) => generated.contains(&(u, frame)),
                        None => true,
                    };
                    let draw: f64 = rng.gen();
                    if !gen_ok || draw >= probs[m] {
                        continue;
                    }
                    generated.insert((m, frame));
                    let layers = engine.layers(m);
                    let end = if cfg.early_exit_prob > 0.0 && rng.gen::<f64>() < cfg.early_exit_prob
                    {
                        Some(((layers as f64) * rng.gen_range(0.5..0.9)).ceil() as usize)
                    } else {
                        None
                    };
                    let width = engine.width(m);
                    let id = engine.release(now, m, frame, now + period, end);
                    rec_of.insert(id, frames.len());
                    frames.push(FrameRecord {
                        model: m,
                        frame,
                        release_ms: now,
                        deadline_ms: now + period,
                        done_ms: None,
                        dropped: false,
                        energy_mj: 0.0,
                        accuracy: Supernet::accuracy(width),
                    });
                    if let Some(u) = up {
                        if engine.upstream_failed(u, frame) {
                            engine.drop_job(id, crate::engine::DropReason::Cascade, &mut acts);
                        }
                    }
                }
            }
        }
        apply(&acts, now, &mut frames, &rec_of, &mut heap, &mut push);
        let acts = engine.step(now);
        decisions += acts
            .iter()
            .filter(|a| matches!(a, Action::Dispatch { .. }))
            .count() as u64;
        apply(&acts, now, &mut frames, &rec_of, &mut heap, &mut push);
        rho_sum.0 += engine.load();
        rho_sum.1 += 1;

        // window boundary: tuner and Supernet
        if now >= next_window && now < cfg.duration_ms {
            let done: Vec<FrameRecord> = frames[window_start_rec..]
                .iter()
                .filter(|f| f.dropped || f.done_ms.is_some())
                .cloned()
                .collect();
            let r = score::score(&names, &e_star, &done);
            if let Some(t) = tuner.as_mut() {
                if let Some(w) = engine.policy_mut().weights_mut() {
                    t.on_window(now, r.uxcost, w);
                }
            }
            if let Some(s) = supernet.as_mut() {
                let rho = rho_sum.0 / rho_sum.1.max(1) as f64;
                s.on_window(&mut engine, rho, r.miss_rate);
            }
            rho_sum = (0.0, 0);
            window_start_rec = frames.len();
            next_window = now + window;
        }
    }
    let report = score::score(&names, &e_star, &frames);
    let (tuner_log, steps) = match tuner {
        Some(t) => {
            let s = t.first_convergence();
            (t.log, s)
        }
        None => (Vec::new(), None),
    };
    Ok(SimResult {
        report,
        model_names: names,
        frames,
        tuner_log,
        tuner_steps_to_converge: steps,
        width_switches: supernet.map(|s| s.switches).unwrap_or(0),
        decisions,
    })
}

type Heap = BinaryHeap<Reverse<(u64, u64, Ev, u64)>>;

fn apply(
    acts: &[Action],
    now: f64,
    frames: &mut [FrameRecord],
    rec_of: &HashMap<JobId, usize>,
    heap: &mut Heap,
    push: &mut impl FnMut(&mut Heap, f64, Ev, u64),
) {
    for a in acts {
        match *a {
            Action::Dispatch {
                acc, latency_ms, ..
            } => push(heap, now + latency_ms, Ev::BlockDone(acc), 0),
            Action::Drop { job, energy_mj, .. } => {
                if let Some(&r) = rec_of.get(&job) {
                    frames[r].dropped = true;
                    frames[r].energy_mj = energy_mj;
                }
            }
            Action::Complete {
                job,
                done_ms,
                energy_mj,
                ..
            } => {
                if let Some(&r) = rec_of.get(&job) {
                    frames[r].done_ms = Some(done_ms);
                    frames[r].energy_mj = energy_mj;
                }
            }
        }
    }
}
