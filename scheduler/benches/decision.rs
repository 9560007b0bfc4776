//! One SDRM3 scheduling decision with 8, 64 and 512 ready jobs on 4 accelerators, beside the
//! same decision by EDF (a baseline whose decision is a single min-scan) for a ratio.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use edgeplane_scheduler::{policy_by_name, Catalog, Engine, EngineModel};

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
            upstream: None,
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
    for i in 0..jobs {
        let m = i % nm;
        let p = e.period(m);
        e.release(0.0, m, (i / nm) as u64, p * (1 + i / nm) as f64 * 4.0, None);
    }
    e
}

fn decision(c: &mut Criterion) {
    let mut g = c.benchmark_group("decision_4_accelerators");
    for jobs in [8usize, 64, 512] {
        for policy in ["sdrm3", "edf"] {
            let mut e = engine_with(policy, jobs);
            g.bench_with_input(BenchmarkId::new(policy, jobs), &jobs, |b, _| {
                b.iter(|| std::hint::black_box(e.next_pick(1.0)))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, decision);
criterion_main!(benches);
