//! The experiments of `edgeplane bench partition`.

use crate::sim::{Scenario, Segment, SimGpu, SimModel};
use crate::{GpuError, Profiles};

#[allow(clippy::too_many_arguments)] // a table of literals reads better positionally
fn model(
    p: &Profiles,
    name: &str,
    profile: &str,
    requested: f64,
    deploy_s: f64,
    undeploy_s: Option<f64>,
    schedule: Vec<Segment>,
    value: f64,
) -> Result<SimModel, GpuError> {
    let slo_ms = p.model(profile)?.slo_ms.ok_or_else(|| {
        GpuError::Scenario(format!("model {profile} has no SLO in the shipped data"))
    })?;
    Ok(SimModel {
        name: name.into(),
        profile: profile.into(),
        slo_ms,
        requested_rps: requested,
        deploy_s,
        undeploy_s,
        schedule,
        value,
    })
}

fn seg(from_s: f64, to_s: f64, rps: f64) -> Segment {
    Segment { from_s, to_s, rps }
}

/// The seed experiment: ResNet18, ResNet50 and VGG16 at 50 req/s each (Poisson), traffic from
/// t = 0, 50 and 100 s until 500 s, one GPU. Each is deployed (declared at 50 req/s) 10 s before
/// its traffic starts, so a new worker is up when the first request comes.
pub fn seed(p: &Profiles, gpu: &str, seed: u64, duration_s: f64) -> Result<Scenario, GpuError> {
    p.gpu(gpu)?;
    let mut models = Vec::new();
    for (name, start) in [("resnet18", 0.0f64), ("resnet50", 50.0), ("vgg16", 100.0)] {
        models.push(model(
            p,
            name,
            name,
            50.0,
            (start - 10.0).max(0.0),
            None,
            vec![seg(start.min(duration_s), duration_s, 50.0)],
            1.0,
        )?);
    }
    Ok(Scenario {
        gpus: vec![SimGpu {
            node: "edge-1".into(),
            kind: gpu.into(),
        }],
        models,
        duration_s,
        seed,
        worker_start_s: 3.0,
    })
}

/// Churn at constant load: ResNet18, ResNet50 and VGG16, each a constant Poisson stream at
/// `rate` req/s (and deployed at it) from t = 0, on `n_gpus` GPUs of kind `gpu` (one node
/// each). A stable planner changes nothing after the first plan.
pub fn steady(
    p: &Profiles,
    gpu: &str,
    n_gpus: usize,
    rate: f64,
    seed: u64,
    duration_s: f64,
) -> Result<Scenario, GpuError> {
    p.gpu(gpu)?;
    if n_gpus == 0 {
        return Err(GpuError::Scenario(
            "steady: --gpus must be at least 1".into(),
        ));
    }
    let mut models = Vec::new();
    for name in ["resnet18", "resnet50", "vgg16"] {
        models.push(model(
            p,
            name,
            name,
            rate,
            0.0,
            None,
            vec![seg(0.0, duration_s, rate)],
            1.0,
        )?);
    }
    Ok(Scenario {
        gpus: (0..n_gpus)
            .map(|i| SimGpu {
                node: format!("edge-{}", i + 1),
                kind: gpu.into(),
            })
            .collect(),
        models,
        duration_s,
        seed,
        worker_start_s: 3.0,
    })
}

/// A linear ramp from `a` to `b` req/s over [from, to), in 10-s steps.
fn ramp(from_s: f64, to_s: f64, a: f64, b: f64) -> Vec<Segment> {
    let n = ((to_s - from_s) / 10.0).ceil().max(1.0) as usize;
    (0..n)
        .map(|i| {
            let t0 = from_s + i as f64 * 10.0;
            let t1 = (t0 + 10.0).min(to_s);
            let x = (i as f64 + 0.5) / n as f64;
            seg(t0, t1, a + (b - a) * x)
        })
        .collect()
}

/// The harder variant: two Jetson AGX Xavier boards and one Jetson Nano (two GPU kinds), nine deployments
/// of the three models with ramps, a burst, a model that leaves and one that arrives late; at the
/// peak the demand exceeds what the three GPUs can serve within SLO.
pub fn dynamic(p: &Profiles, seed: u64, duration_s: f64) -> Result<Scenario, GpuError> {
    let d = duration_s;
    let mut models = dynamic_models(p, d)?;
    for m in &mut models {
        for s in &mut m.schedule {
            s.to_s = s.to_s.min(d);
        }
        m.schedule.retain(|s| s.to_s > s.from_s);
    }
    Ok(Scenario {
        gpus: vec![
            SimGpu {
                node: "edge-1".into(),
                kind: "Jetson-AGX-Xavier".into(),
            },
            SimGpu {
                node: "edge-2".into(),
                kind: "Jetson-AGX-Xavier".into(),
            },
            SimGpu {
                node: "edge-3".into(),
                kind: "Jetson-Nano".into(),
            },
        ],
        models,
        duration_s,
        seed,
        worker_start_s: 3.0,
    })
}

/// The nine deployments of [`dynamic`], their schedules running to `d` (clipped by the caller).
fn dynamic_models(p: &Profiles, d: f64) -> Result<Vec<SimModel>, GpuError> {
    Ok(vec![
        model(
            p,
            "r18-a",
            "resnet18",
            60.0,
            0.0,
            None,
            {
                let mut v = vec![seg(0.0, 100.0, 60.0)];
                v.extend(ramp(100.0, 200.0, 60.0, 300.0));
                v.push(seg(200.0, d, 300.0));
                v
            },
            1.0,
        )?,
        model(
            p,
            "r50-a",
            "resnet50",
            40.0,
            0.0,
            None,
            vec![
                seg(0.0, 250.0, 40.0),
                seg(250.0, 290.0, 140.0),
                seg(290.0, d, 40.0),
            ],
            1.0,
        )?,
        model(
            p,
            "vgg-a",
            "vgg16",
            40.0,
            0.0,
            Some(350.0),
            vec![seg(0.0, 350.0, 40.0)],
            1.0,
        )?,
        model(
            p,
            "r18-b",
            "resnet18",
            80.0,
            0.0,
            None,
            vec![seg(0.0, d, 80.0)],
            1.0,
        )?,
        model(
            p,
            "r50-b",
            "resnet50",
            30.0,
            0.0,
            None,
            {
                let mut v = vec![seg(0.0, 300.0, 30.0)];
                v.extend(ramp(300.0, 400.0, 30.0, 110.0));
                v.push(seg(400.0, d, 110.0));
                v
            },
            1.0,
        )?,
        model(
            p,
            "vgg-b",
            "vgg16",
            50.0,
            140.0,
            None,
            vec![seg(150.0, d, 50.0)],
            1.0,
        )?,
        model(
            p,
            "r50-c",
            "resnet50",
            60.0,
            0.0,
            None,
            vec![seg(0.0, d, 60.0)],
            1.0,
        )?,
        model(
            p,
            "vgg-c",
            "vgg16",
            90.0,
            0.0,
            None,
            vec![seg(0.0, d, 90.0)],
            0.5,
        )?,
        model(
            p,
            "r50-d",
            "resnet50",
            80.0,
            0.0,
            None,
            vec![seg(0.0, d, 80.0)],
            0.3,
        )?,
    ])
}
