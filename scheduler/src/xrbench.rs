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

/// Run one scenario on one hardware set-up with XRBench's own scheduler and semantics.
/// `seed` is what `srand` receives (1 = an unseeded glibc program).
pub fn run(cat: &Catalog, sc: &Scenario, hw: &Hardware, seed: u32) -> Result<ParityRun, Error> {
    let nm = sc.models.len();
    let na = hw.accelerators.len();
    // whole-model latency (f32, as stored) and energy per (model, acc)
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
    let tick = (1000 / max_fps) as f32;
    let total: Vec<u64> = sc
        .models
        .iter()
        .map(|m| (RUN_LENGTH_MS / m.period_ms.max(1)) as u64)
        .collect();
    // queues visited in byte order of the model name
    let mut order: Vec<usize> = (0..nm).collect();
    order.sort_by(|&a, &b| {
        sc.models[a]
            .name
            .as_bytes()
            .cmp(sc.models[b].name.as_bytes())
    });

    // E* per model (whole model on its most energy-efficient accelerator), for UXCost
    let e_star: Vec<f64> = (0..nm)
        .map(|m| en[m].iter().cloned().fold(f32::INFINITY, f32::min) as f64)
        .collect();
    let mut rng = GlibcRand::new(seed);
    let mut next = vec![0u64; nm];
    let mut queues: Vec<VecDeque<Req>> = (0..nm).map(|_| VecDeque::new()).collect();
    let mut completions = vec![0u64; nm];
    // running[a] = (model, req, completion time, energy)
    let mut running: Vec<Option<(usize, Req, f32, f32)>> = (0..na).map(|_| None).collect();
    let mut frames = Vec::new();
    let mut dispatches = vec![vec![0u64; na]; nm];
    let mut now: f32 = 0.0;
    let mut k: u32 = 0; // next base tick index

    loop {
        // 1. release
        for m in 0..nm {
            let _jitter = rng.next_i32();
            let i = next[m];
            if i < total[m] && (i as f32) * (sc.models[m].period_ms as f32) <= now {
                let u = rng.next_i32() as f32 / RAND_MAX as f32;
                if (sc.models[m].probability as f32) > u {
                    queues[m].push_back(Req {
                        frame: i,
                        deadline: ((i + 1) * sc.models[m].period_ms as u64) as f32,
                    });
                }
                next[m] += 1;
            }
        }
        // 2. retire
        for slot in running.iter_mut() {
            if let Some((_, _, done, _)) = slot {
                if now + 0.01 >= *done {
                    let (m, req, done, energy) = slot.take().unwrap();
                    completions[m] += 1;
                    frames.push(FrameRecord {
                        model: m,
                        frame: req.frame,
                        release_ms: req.frame as f64 * sc.models[m].period_ms as f64,
                        deadline_ms: req.deadline as f64,
                        done_ms: Some(done as f64),
                        dropped: false,
                        energy_mj: energy as f64,
                        accuracy: 1.0,
                        e_star_mj: e_star[m],
                    });
                }
            }
        }
        // 3. drop late queued frames: in passes over the queues in name order, at most the
        //    head of each queue per pass (the artifact's `DropLateFrames`; the log order
        //    decides the order in which models enter the score's sum)
        loop {
            let mut changed = false;
            for &m in &order {
                let Some(head) = queues[m].front() else {
                    continue;
                };
                if now > head.deadline {
                    let r = queues[m].pop_front().unwrap();
                    frames.push(FrameRecord {
                        model: m,
                        frame: r.frame,
                        release_ms: r.frame as f64 * sc.models[m].period_ms as f64,
                        deadline_ms: r.deadline as f64,
                        done_ms: None,
                        dropped: true,
                        energy_mj: 0.0,
                        accuracy: 1.0,
                        e_star_mj: e_star[m],
                    });
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        // 4. dispatch passes
        loop {
            let mut changed = false;
            for &m in &order {
                let Some(head) = queues[m].front() else {
                    continue;
                };
                if let Some(u) = upstream[m] {
                    if completions[u] < head.frame + 1 {
                        continue;
                    }
                }
                let best = (0..na)
                    .filter(|&a| running[a].is_none())
                    .min_by(|&a, &b| lat[m][a].total_cmp(&lat[m][b]).then(a.cmp(&b)));
                if let Some(a) = best {
                    let req = queues[m].pop_front().unwrap();
                    running[a] = Some((m, req, now + lat[m][a], en[m][a]));
                    dispatches[m][a] += 1;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        if (0..nm).all(|m| next[m] >= total[m]) {
            break;
        }
        // next event: next base tick or earliest completion
        while (k as f32) * tick <= now {
            k += 1;
        }
        let mut t = k as f32 * tick;
        for (_, _, done, _) in running.iter().flatten() {
            if *done < t {
                t = *done;
            }
        }
        now = t;
    }
    Ok(ParityRun {
        model_names: sc.models.iter().map(|m| m.name.clone()).collect(),
        e_star,
        frames,
        dispatches,
    })
}
