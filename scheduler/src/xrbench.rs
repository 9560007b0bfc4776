//! `xrbench` semantics: an exact re-implementation of the XRBench artifact's simulator
//! (DESIGN §3.2, `configs/xrbench/README.md` §3), so our numbers are anchored to a peer's code.
//!
//! Everything that affects the result is copied: integer-ms periods, release at the first
//! event at or after i·period, events at base ticks and completions only, float32 times,
//! the order of work at an event (release, retire, drop late, dispatch), cascade readiness by
//! the upstream *completion count*, queued jobs dropped when now > deadline, dispatched jobs
//! run to completion, the LatencyGreedy dispatcher (queues in name order, idle accelerator with
//! the smallest whole-model latency), glibc `rand()` draws in the same order, and the end of
//! the run at the last release (work in flight is not logged).

use crate::catalog::{Catalog, Hardware, Scenario};
use crate::error::Error;
use crate::glibc_rand::{GlibcRand, RAND_MAX};
use crate::score::FrameRecord;
use std::collections::VecDeque;

/// XRBench runs last 700 ms.
pub const RUN_LENGTH_MS: u32 = 700;

/// The outcome of a parity run: logged frames plus per-model E* for UXCost.
#[derive(Debug, Clone)]
pub struct ParityRun {
    pub model_names: Vec<String>,
    pub e_star: Vec<f64>,
    pub frames: Vec<FrameRecord>,
    /// Dispatches per (model, accelerator), to compare with the artifact's timeline.
    pub dispatches: Vec<Vec<u64>>,
}

struct Req {
    frame: u64,
    deadline: f32,
}

/// A job on an accelerator: its model, request, completion time and energy.
struct Running {
    model: usize,
    req: Req,
    done: f32,
    energy: f32,
}

/// The simulator's state between events (the artifact's order of work at an event is
/// [`XrState::release`], [`XrState::retire`], [`XrState::drop_late`], [`XrState::dispatch`]).
struct XrState<'a> {
    sc: &'a Scenario,
    /// Whole-model latency (f32, as stored) and energy per (model, acc).
    lat: Vec<Vec<f32>>,
    en: Vec<Vec<f32>>,
    upstream: Vec<Option<usize>>,
    tick: f32,
    total: Vec<u64>,
    /// Queues visited in byte order of the model name.
    order: Vec<usize>,
    /// E* per model (whole model on its most energy-efficient accelerator), for UXCost.
    e_star: Vec<f64>,
    rng: GlibcRand,
    next: Vec<u64>,
    queues: Vec<VecDeque<Req>>,
    completions: Vec<u64>,
    running: Vec<Option<Running>>,
    frames: Vec<FrameRecord>,
    dispatches: Vec<Vec<u64>>,
    now: f32,
    /// Next base tick index.
    k: u32,
}

/// Run one scenario on one hardware set-up with XRBench's own scheduler and semantics.
/// `seed` is what `srand` receives (1 = an unseeded glibc program).
pub fn run(cat: &Catalog, sc: &Scenario, hw: &Hardware, seed: u32) -> Result<ParityRun, Error> {
    let mut st = XrState::new(cat, sc, hw, seed)?;
    loop {
        st.release();
        st.retire();
        st.drop_late();
        st.dispatch();
        if (0..sc.models.len()).all(|m| st.next[m] >= st.total[m]) {
            break;
        }
        st.next_event();
    }
    Ok(ParityRun {
        model_names: sc.models.iter().map(|m| m.name.clone()).collect(),
        e_star: st.e_star,
        frames: st.frames,
        dispatches: st.dispatches,
    })
}

impl<'a> XrState<'a> {
    fn new(cat: &Catalog, sc: &'a Scenario, hw: &Hardware, seed: u32) -> Result<Self, Error> {
        let nm = sc.models.len();
        let na = hw.accelerators.len();
        let mut lat = vec![vec![0f32; na]; nm];
        let mut en = vec![vec![0f32; na]; nm];
        for (m, sm) in sc.models.iter().enumerate() {
            for (a, acc) in hw.accelerators.iter().enumerate() {
                let c = cat.cost(&sm.cost_model, acc)?;
                lat[m][a] = c.xrbench_latency_ms();
                en[m][a] = c.xrbench_energy_mj();
            }
        }
        let upstream: Vec<Option<usize>> = sc
            .models
            .iter()
            .map(|sm| {
                sm.depends_on
                    .first()
                    .and_then(|d| sc.models.iter().position(|x| &x.name == d))
            })
            .collect();
        let max_fps = sc.models.iter().map(|m| m.fps).max().unwrap_or(1).max(1);
        let total: Vec<u64> = sc
            .models
            .iter()
            .map(|m| (RUN_LENGTH_MS / m.period_ms.max(1)) as u64)
            .collect();
        let mut order: Vec<usize> = (0..nm).collect();
        order.sort_by(|&a, &b| {
            sc.models[a]
                .name
                .as_bytes()
                .cmp(sc.models[b].name.as_bytes())
        });
        let e_star: Vec<f64> = (0..nm)
            .map(|m| en[m].iter().cloned().fold(f32::INFINITY, f32::min) as f64)
            .collect();
        Ok(XrState {
            sc,
            lat,
            en,
            upstream,
            tick: (1000 / max_fps) as f32,
            total,
            order,
            e_star,
            rng: GlibcRand::new(seed),
            next: vec![0u64; nm],
            queues: (0..nm).map(|_| VecDeque::new()).collect(),
            completions: vec![0u64; nm],
            running: (0..na).map(|_| None).collect(),
            frames: Vec::new(),
            dispatches: vec![vec![0u64; na]; nm],
            now: 0.0,
            k: 0,
        })
    }

    /// 1. release
    fn release(&mut self) {
        let sc = self.sc;
        for m in 0..sc.models.len() {
            let _jitter = self.rng.next_i32();
            let i = self.next[m];
            if i < self.total[m] && (i as f32) * (sc.models[m].period_ms as f32) <= self.now {
                let u = self.rng.next_i32() as f32 / RAND_MAX as f32;
                if (sc.models[m].probability as f32) > u {
                    self.queues[m].push_back(Req {
                        frame: i,
                        deadline: ((i + 1) * sc.models[m].period_ms as u64) as f32,
                    });
                }
                self.next[m] += 1;
            }
        }
    }

    /// 2. retire
    fn retire(&mut self) {
        let now = self.now;
        for slot in self.running.iter_mut() {
            if let Some(r) = slot {
                if now + 0.01 >= r.done {
                    let Running {
                        model: m,
                        req,
                        done,
                        energy,
                    } = slot.take().unwrap();
                    self.completions[m] += 1;
                    self.frames.push(FrameRecord {
                        model: m,
                        frame: req.frame,
                        release_ms: req.frame as f64 * self.sc.models[m].period_ms as f64,
                        deadline_ms: req.deadline as f64,
                        done_ms: Some(done as f64),
                        dropped: false,
                        energy_mj: energy as f64,
                        accuracy: 1.0,
                        e_star_mj: self.e_star[m],
                    });
                }
            }
        }
    }

    /// 3. drop late queued frames: in passes over the queues in name order, at most the
    ///    head of each queue per pass (the artifact's `DropLateFrames`; the log order
    ///    decides the order in which models enter the score's sum)
    fn drop_late(&mut self) {
        loop {
            let mut changed = false;
            for &m in &self.order {
                let Some(head) = self.queues[m].front() else {
                    continue;
                };
                if self.now > head.deadline {
                    let r = self.queues[m].pop_front().unwrap();
                    self.frames.push(FrameRecord {
                        model: m,
                        frame: r.frame,
                        release_ms: r.frame as f64 * self.sc.models[m].period_ms as f64,
                        deadline_ms: r.deadline as f64,
                        done_ms: None,
                        dropped: true,
                        energy_mj: 0.0,
                        accuracy: 1.0,
                        e_star_mj: self.e_star[m],
                    });
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
    }

    /// 4. dispatch passes
    fn dispatch(&mut self) {
        let na = self.running.len();
        loop {
            let mut changed = false;
            for &m in &self.order {
                let Some(head) = self.queues[m].front() else {
                    continue;
                };
                if let Some(u) = self.upstream[m] {
                    if self.completions[u] < head.frame + 1 {
                        continue;
                    }
                }
                let lat = &self.lat[m];
                let best = (0..na)
                    .filter(|&a| self.running[a].is_none())
                    .min_by(|&a, &b| lat[a].total_cmp(&lat[b]).then(a.cmp(&b)));
                if let Some(a) = best {
                    let req = self.queues[m].pop_front().unwrap();
                    self.running[a] = Some(Running {
                        model: m,
                        req,
                        done: self.now + lat[a],
                        energy: self.en[m][a],
                    });
                    self.dispatches[m][a] += 1;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
    }

    /// Next event: next base tick or earliest completion.
    fn next_event(&mut self) {
        while (self.k as f32) * self.tick <= self.now {
            self.k += 1;
        }
        let mut t = self.k as f32 * self.tick;
        for r in self.running.iter().flatten() {
            if r.done < t {
                t = r.done;
            }
        }
        self.now = t;
    }
}
