//! The share model against numbers derived by hand from configs/gpu (worked examples in the data
//! files, or arithmetic on their rows), not against the code's own output.

use edgeplane_gpu::sim::{self, Scenario, Segment, SimGpu, SimModel};
use edgeplane_gpu::{capacity, policies, GpuData, GpuError, Load, Profiles};

fn data() -> GpuData {
    GpuData::shipped().expect("shipped data parses")
}

fn close(a: f64, b: f64, tol: f64) {
    assert!((a - b).abs() <= tol, "{a} vs {b} (tol {tol})");
}

#[test]
fn interference_matches_the_worked_examples() {
    let d = data();
    let i = &d.interference;
    let r50 = Load {
        model: "resnet50",
        batch: 8.0,
        share: 0.5,
    };
    let vgg = Load {
        model: "vgg16",
        batch: 8.0,
        share: 0.5,
    };
    // interference.toml [[gpulet_model.example]] 1: 1.141 and 1.129
    close(i.alpha(r50, &[vgg]), 1.141, 0.001);
    close(i.alpha(vgg, &[r50]), 1.129, 0.001);
    // example 2, both at 100 % (default MPS): 1.386 and 1.363
    let r50f = Load { share: 1.0, ..r50 };
    let vggf = Load { share: 1.0, ..vgg };
    close(i.alpha(r50f, &[vggf]), 1.386, 0.001);
    close(i.alpha(vggf, &[r50f]), 1.363, 0.001);
    // alone: no interference; resnet18 uses resnet50's utilisation
    assert_eq!(i.alpha(r50, &[]), 1.0);
    let r18 = Load {
        model: "resnet18",
        ..r50
    };
    close(i.alpha(r18, &[vgg]), 1.141, 0.001);
}

#[test]
fn lookups_interpolate_in_inverse_share_and_in_batch() {
    let p = Profiles::shipped().unwrap();
    // a row value as shipped: A100 resnet50 mps-40 b8 = 8.67 ms
    close(
        p.latency_ms("A100-80GB", "resnet50", 8.0, 0.4).unwrap(),
        8.67,
        1e-9,
    );
    // share 0.35 between mps-30 (11.77) and mps-40 (8.67), linear in 1/share:
    // t = (1/0.35 - 1/0.3) / (1/0.4 - 1/0.3) = 0.5714; 11.77 - 3.10 x 0.5714 = 9.999
    close(
        p.latency_ms("A100-80GB", "resnet50", 8.0, 0.35).unwrap(),
        9.999,
        0.002,
    );
    // batch 6 between b4 (6.38) and b8 (8.67) at mps-40: 7.525
    close(
        p.latency_ms("A100-80GB", "resnet50", 6.0, 0.4).unwrap(),
        7.525,
        1e-9,
    );
    // out of range is an error, not a guess
    assert!(p.latency_ms("A100-80GB", "resnet50", 33.0, 0.4).is_err());
    assert!(p.latency_ms("A100-80GB", "resnet50", 1.0, 0.0).is_err());
    assert!(matches!(
        p.latency_ms("H100-80GB", "resnet50", 1.0, 0.5),
        Err(GpuError::NoCurve { .. })
    ));
}

#[test]
fn tensorrt_share_rows_follow_the_trtlab_calibration() {
    let d = data();
    // gamma = 1 - ln(929/383 x alpha) / ln 8, alpha(resnet50 b1 100 % | same) =
    // 0.1129x0.154 + 0.7160x0.154 + 0.3549x0.279 + 0.0882x0.279 + 0.8954 = 1.14663
    // => ln(2.42559 x 1.14663) = ln 2.78126 = 1.02290; gamma = 1 - 1.02290 / 2.07944 = 0.50809
    close(d.interference.trt_gamma(), 0.50809, 0.0005);
    // Jetson AGX Xavier TensorRT resnet18 b1: 1.64 ms full; at mps-50: 1.64 x 2^0.50809 = 2.332
    close(
        d.profiles
            .latency_ms("Jetson-AGX-Xavier", "resnet18", 1.0, 0.5)
            .unwrap(),
        2.332,
        0.002,
    );
    // the full row is unchanged
    close(
        d.profiles
            .latency_ms("Jetson-AGX-Xavier", "vgg16", 4.0, 1.0)
            .unwrap(),
        29.84,
        1e-9,
    );
}

#[test]
fn energy_matches_the_worked_example() {
    let d = data();
    let a100 = d.energy.gpu("A100-80GB").unwrap();
    // energy.toml [[example]] 1: (400 - 56) x 0.4 x 0.00867 = 1.193 J above idle
    let dynamic = a100.energy_j(0.4, 0.00867) - a100.idle_w * 0.00867;
    close(dynamic, 1.193, 0.001);
    assert_eq!(a100.power_w(2.0), 400.0, "utilisation is clamped at 1");
}

#[test]
fn batch_rule_is_two_latencies_within_the_slo() {
    let p = Profiles::shipped().unwrap();
    // Xavier resnet18 full GPU: L(b) = 1.64 b; 2 x 1.64 b <= 45 => b = 13; 13 / 21.32 ms = 609.8/s
    let c = capacity::single(&p, "Jetson-AGX-Xavier", "resnet18", 1.0, 45.0, 1.0)
        .unwrap()
        .unwrap();
    assert_eq!(c.batch, 13);
    close(c.throughput_rps, 609.76, 0.01);
    // nothing fits a 3 ms SLO (2 x 1.64 > 3)
    assert!(
        capacity::single(&p, "Jetson-AGX-Xavier", "resnet18", 1.0, 3.0, 1.0)
            .unwrap()
            .is_none()
    );
}

#[test]
fn measured_rows_win_and_bad_rows_name_row_and_field() {
    let mut p = Profiles::shipped().unwrap();
    let good = r#"
[[row]]
gpu = "Jetson-AGX-Xavier"
model = "resnet50"
part = "mps-50"
ms = [3.0, 4.0, 6.0, 10.0, 18.0, 34.0]
"#;
    assert_eq!(p.apply_measured(good).unwrap(), 1);
    close(
        p.latency_ms("Jetson-AGX-Xavier", "resnet50", 4.0, 0.5)
            .unwrap(),
        6.0,
        1e-9,
    );

    let bad = r#"
[[row]]
gpu = "Jetson-AGX-Xavier"
model = "resnet18"
part = "mps-60"
ms = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]

[[row]]
gpu = "Jetson-AGX-Xavier"
model = "resnet18"
part = "mps-70"
ms = [1.0, 2.0, 3.0, 4.0, 5.0]
"#;
    let before = p
        .latency_ms("Jetson-AGX-Xavier", "resnet18", 1.0, 0.6)
        .unwrap();
    let e = p.apply_measured(bad).unwrap_err().to_string();
    assert!(e.contains("row 2") && e.contains("`ms`"), "{e}");
    // nothing half-applied: row 1 was valid but is not in
    assert_eq!(
        p.latency_ms("Jetson-AGX-Xavier", "resnet18", 1.0, 0.6)
            .unwrap(),
        before
    );

    for (text, field) in [
        (
            "gpu = \"RTX\"\nmodel = \"resnet18\"\npart = \"full\"\nms = [1,2,3,4,5,6]",
            "`gpu`",
        ),
        (
            "gpu = \"V100\"\nmodel = \"bert\"\npart = \"full\"\nms = [1,2,3,4,5,6]",
            "`model`",
        ),
        (
            "gpu = \"V100\"\nmodel = \"vgg16\"\npart = \"mps-5\"\nms = [1,2,3,4,5,6]",
            "`part`",
        ),
        (
            "gpu = \"V100\"\nmodel = \"vgg16\"\npart = \"full\"\nms = [1,2,3,4,5,-6]",
            "`ms`",
        ),
        (
            "gpu = \"V100\"\nmodel = \"vgg16\"\npart = \"full\"\nms = [1,2,3,4,6,5]",
            "`ms`",
        ),
        (
            "gpu = \"A100-80GB\"\nmodel = \"vgg16\"\npart = \"mig-2g.20gb\"\nms = [1,2,3,4,5,6]",
            "`share`",
        ),
    ] {
        let e = p
            .apply_measured(&format!("[[row]]\n{text}\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("row 1") && e.contains(field), "{field}: {e}");
    }
}

fn one_model(rate: f64, duration: f64) -> Scenario {
    Scenario {
        gpus: vec![SimGpu {
            node: "n".into(),
            kind: "Jetson-AGX-Xavier".into(),
        }],
        models: vec![SimModel {
            name: "resnet18".into(),
            profile: "resnet18".into(),
            slo_ms: 45.0,
            requested_rps: rate,
            deploy_s: 0.0,
            undeploy_s: None,
            schedule: vec![Segment {
                from_s: 0.0,
                to_s: duration,
                rps: rate,
            }],
            value: 1.0,
        }],
        duration_s: duration,
        seed: 3,
        worker_start_s: 3.0,
    }
}

#[test]
fn a_lone_request_takes_its_profile_latency_and_power() {
    let d = data();
    // 1 req/s on Xavier: requests almost never meet; time slicing runs each alone on the full GPU
    // at 1.64 / 0.953 = 1.7209 ms; default MPS at 1.64 ms
    let sc = one_model(1.0, 200.0);
    let ts = sim::run(&d, &sc, &mut policies::time_slicing(), &mut |_| {}).unwrap();
    close(ts.models[0].p50_ms, 1.7209, 0.001);
    let mps = sim::run(&d, &sc, &mut policies::default_mps(), &mut |_| {}).unwrap();
    close(mps.models[0].p50_ms, 1.64, 1e-6);
    // energy: idle 6 W x 200 s + (30 - 6) W x busy time, busy = completed x 1.64 ms
    let n = mps.models[0].completed as f64;
    assert!(n > 150.0 && n < 250.0, "{n}");
    close(mps.energy_j, 6.0 * 200.0 + 24.0 * n * 0.00164, 1e-6);
    close(mps.models[0].energy_j, mps.energy_j, 1e-6);
}

#[test]
fn runs_are_deterministic_for_a_seed() {
    let d = data();
    let sc = edgeplane_gpu::scenarios::seed(&d.profiles, "Jetson-AGX-Xavier", 9, 120.0).unwrap();
    let a = sim::run(&d, &sc, &mut policies::Gpulet::new(), &mut |_| {}).unwrap();
    let b = sim::run(&d, &sc, &mut policies::Gpulet::new(), &mut |_| {}).unwrap();
    for (x, y) in a.models.iter().zip(&b.models) {
        assert_eq!(
            (x.arrived, x.within_slo, x.p99_ms),
            (y.arrived, y.within_slo, y.p99_ms)
        );
    }
    // and the arrivals are the same in every mode
    let c = sim::run(&d, &sc, &mut policies::equal_split(), &mut |_| {}).unwrap();
    let arrived = |r: &sim::SimResult| r.models.iter().map(|m| m.arrived).collect::<Vec<_>>();
    let total = |r: &sim::SimResult| arrived(r).iter().sum::<u64>();
    // (requests still queued at the end within their SLO leave the denominator; a handful at most)
    assert!(
        total(&a).abs_diff(total(&c)) < 10,
        "{:?} {:?}",
        arrived(&a),
        arrived(&c)
    );
}

#[test]
fn default_mps_co_runners_are_retimed_not_fixed_at_dispatch() {
    let d = data();
    // resnet18 at 5 req/s (it almost never queues behind itself) next to vgg16 at 100 req/s in
    // default MPS. Fixed at dispatch, a resnet18 batch-1 latency would be 1.64 ms (alone) or
    // 1.64 x 2^0.508 x alpha(1.36..1.39) = 3.17..3.24 ms (shared); re-timing when a vgg16 batch
    // starts or ends mid-flight gives values strictly between. Count them.
    let mut sc = one_model(5.0, 120.0);
    sc.models.push(SimModel {
        name: "vgg16".into(),
        profile: "vgg16".into(),
        slo_ms: 142.0,
        requested_rps: 100.0,
        deploy_s: 0.0,
        undeploy_s: None,
        schedule: vec![Segment {
            from_s: 0.0,
            to_s: 120.0,
            rps: 100.0,
        }],
        value: 1.0,
    });
    let r = sim::run(&d, &sc, &mut policies::default_mps(), &mut |_| {}).unwrap();
    let between = r.models[0]
        .samples
        .iter()
        .filter(|(_, l)| *l > 1.66 && *l < 3.1)
        .count();
    let alone = r.models[0]
        .samples
        .iter()
        .filter(|(_, l)| (*l - 1.64).abs() < 1e-3)
        .count();
    assert!(
        between > 30 && alone > 30,
        "{between} partially overlapped, {alone} alone"
    );
}

#[test]
fn gpu_shares_sit_behind_the_schedulers_cost_model_seam() {
    use edgeplane_gpu::cost::GpuShareCost;
    use edgeplane_scheduler::{AccelKind, CoRunner, CostModel};
    let d = data();
    let c = GpuShareCost {
        data: &d,
        gpu: "Jetson-AGX-Xavier".into(),
        model: "resnet18".into(),
        share: 0.5,
    };
    assert_eq!((c.kind(), c.blocks()), (AccelKind::GpuShare, 1));
    // alone: the mps-50 row, 1.64 x 2^0.50809 = 2.332 ms; energy (30 - 6) x 0.5 x 2.332 = 27.98 mJ
    let alone = c.cost(0, 1, 1, &[]).unwrap();
    close(alone.latency_ms, 2.332, 0.002);
    close(alone.energy_mj, 27.98, 0.03);
    // next to vgg16 b1 in a 50 % partition: alpha = 0.11291x0.154x0.5 + 0.71596x0.310x0.5
    //   + 0.35487x0.279x0.5 + 0.08820x0.560x0.5 + 0.89537 = 1.08924 -> 2.540 ms
    let co = [CoRunner {
        model: "vgg16",
        batch: 1,
        share: 0.5,
    }];
    close(c.cost(0, 1, 1, &co).unwrap().latency_ms, 2.540, 0.003);
    assert!(c.cost(0, 2, 1, &[]).is_err());
}
