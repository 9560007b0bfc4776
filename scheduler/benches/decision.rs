//! One scheduling decision — `Engine::step`: the shared expiry rule, the policy's drops with
//! their cascades, and dispatches until the 4 accelerators are busy — by SDRM3 and by EDF on
//! the same state, with 8, 64 and 512 ready jobs, timed in the same run and printed as a
//! ratio. The state has hopeless frames (an SDRM3 drop decision to make, with a cascade
//! behind each) and feasible ones, so the drop rule does real work.
//!
//! `cargo bench -p edgeplane-scheduler --bench decision`

use edgeplane_scheduler::{policy_by_name, Catalog, Engine, EngineModel};
use std::time::Instant;

fn engine_with(policy: &str, jobs: usize) -> Engine {
    let cat = Catalog::embedded();
    let hw = cat.hardware("Quad_4K_WS_OS_WS_OS").unwrap();
    let sc = cat.scenario("social_interactionA").unwrap();
    let models: Vec<EngineModel> = sc
        .models
        .iter()
        .map(|m| EngineModel {
            name: m.name.clone(),
            cost_model: m.cost_model.clone(),
            period_ms: 1000.0 / m.fps as f64,
            upstream: m
                .depends_on
                .first()
                .and_then(|d| sc.models.iter().position(|x| &x.name == d)),
        })
        .collect();
    let mut e = Engine::new(
        cat,
        &hw.accelerators,
        models,
        policy_by_name(policy).unwrap(),
    )
    .unwrap();
    let nm = e.models().len();
    let ge = e.model_index("GE_FBNet_C").unwrap();
    // `jobs` ready jobs of the models without upstream; every 4th is hopeless (due in 1 ms)
    // and, for ES, has a GE frame waiting behind it (cascade)
    let mut ready = 0usize;
    let mut i = 0usize;
    while ready < jobs {
        let m = i % nm;
        i += 1;
        if m == ge {
            continue;
        }
        let frame = (i / nm) as u64;
        let p = e.period(m);
        let hopeless = ready.is_multiple_of(4);
        let deadline = if hopeless {
            1.0
        } else {
            p * (2 + i / nm) as f64
        };
        e.release(0.0, m, frame, deadline, None);
        if e.models()[m].name == "ES_RITNet" {
            e.release(0.0, ge, frame, deadline, None);
        }
        ready += 1;
    }
    e
}

fn median_step_ns(policy: &str, jobs: usize, samples: usize) -> (f64, usize) {
    let mut engines: Vec<Engine> = (0..samples).map(|_| engine_with(policy, jobs)).collect();
    let mut times = Vec::with_capacity(samples);
    let mut actions = 0;
    for e in engines.iter_mut() {
        let t = Instant::now();
        let acts = std::hint::black_box(e.step(std::hint::black_box(0.5)));
        times.push(t.elapsed().as_nanos() as f64);
        actions = acts.len();
    }
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], actions)
}

fn main() {
    // `cargo test --benches` runs bench binaries with `--bench` absent: keep that quick
    let quick = !std::env::args().any(|a| a == "--bench");
    let samples = if quick { 5 } else { 301 };
    println!("one decision (Engine::step) on 4 accelerators, median of {samples} fresh states");
    println!(
        "{:>6} {:>14} {:>14} {:>12} {:>10}",
        "jobs", "sdrm3 µs", "edf µs", "sdrm3/edf", "actions"
    );
    for jobs in [8usize, 64, 512] {
        // interleave the two so both see the same machine state
        let (s, sa) = median_step_ns("sdrm3", jobs, samples);
        let (d, _) = median_step_ns("edf", jobs, samples);
        println!(
            "{:>6} {:>14.2} {:>14.2} {:>12.2} {:>10}",
            jobs,
            s / 1e3,
            d / 1e3,
            s / d,
            sa
        );
    }
}
