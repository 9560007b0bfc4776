//! Local scenario source: releases an XRBench scenario's frames in real time (frame i of a
//! model at i·period, deadline (i+1)·period, from the source's start), with seeded draws for
//! the models' trigger probabilities.
//!
//! Cascades are approximated: a downstream frame is released at its own period with its
//! probability, not when its upstream frame completes (the runtime has no cross-job
//! dependency yet). For the always-on scenarios (e.g. VR_gaming) this changes nothing.

use crate::catalog::{Catalog, CatalogError};
use crate::runtime::RuntimeHandle;
use rand::{Rng, SeedableRng};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// Run `scenario` for `duration`, then wait (bounded) for the last frames to finish.
/// Returns the number of frames released.
pub async fn run(
    rt: RuntimeHandle,
    scenario: &str,
    duration: Duration,
    seed: u64,
    mut shutdown: broadcast::Receiver<()>,
) -> Result<u64, CatalogError> {
    let sc = Catalog::get()?.scenario(scenario)?.clone();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let start = Instant::now();
    let end = start + duration;
    // next frame index per model
    let mut next: Vec<u64> = vec![0; sc.models.len()];
    let mut released = 0u64;
    loop {
        // the earliest due frame
        let (i, due) = sc
            .models
            .iter()
            .enumerate()
            .map(|(i, m)| {
                (
                    i,
                    start + Duration::from_millis(next[i] * m.period_ms.max(1)),
                )
            })
            .min_by_key(|(_, t)| *t)
            .expect("a scenario has models");
        if due >= end {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(due.into()) => {}
            _ = shutdown.recv() => return Ok(released),
        }
        let m = &sc.models[i];
        let deadline = start + Duration::from_millis((next[i] + 1) * m.period_ms.max(1));
        next[i] += 1;
        if m.probability < 1.0 && !rng.gen_bool(m.probability.clamp(0.0, 1.0)) {
            continue;
        }
        if rt.submit(&m.name, due, deadline) {
            released += 1;
        }
    }
    // Drain: every released frame ends completed or dropped; poll with a deadline.
    let drain_until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < drain_until {
        let pending = {
            let st = rt.shared.stats.lock().expect("stats");
            // Every frame this source released must have arrived, and every arrival ended.
            let ended: u64 = st.models.values().map(|m| m.completions + m.drops).sum();
            let arrived: u64 = st.models.values().map(|m| m.arrivals).sum();
            arrived.saturating_sub(ended) + released.saturating_sub(arrived)
        };
        if pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(released)
}
