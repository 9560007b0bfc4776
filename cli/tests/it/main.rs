//! The CLI as a process.

use std::process::Command;

#[test]
fn bench_partition_json_has_the_issue_shape_and_writes_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_edgeplane"))
        .args([
            "bench",
            "partition",
            "--format",
            "json",
            "--duration-s",
            "30",
            "--out",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = v["results"].as_array().unwrap();
    assert_eq!(v.as_object().unwrap().len(), 1, "only `results`");
    // five modes x three models
    assert_eq!(rows.len(), 15);
    let modes: Vec<&str> = rows.iter().map(|r| r["mode"].as_str().unwrap()).collect();
    for m in [
        "default_mps",
        "time_slicing",
        "equal_split",
        "gpulet",
        "adaptive",
    ] {
        assert_eq!(modes.iter().filter(|x| **x == m).count(), 3, "{m}");
    }
    let keys = [
        "mode",
        "model",
        "slo_attainment",
        "p50_ms",
        "p99_ms",
        "goodput",
        "reconfigurations",
        "energy_j",
    ];
    for r in rows {
        let o = r.as_object().unwrap();
        assert_eq!(o.len(), keys.len(), "{o:?}");
        for k in keys {
            assert!(o.contains_key(k), "{k} missing in {o:?}");
        }
        let a = r["slo_attainment"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&a));
        // in 30 s only resnet18 has traffic (resnet50 starts at 50 s, vgg16 at 100 s)
        let e = r["energy_j"].as_f64().unwrap();
        assert!(
            if r["model"] == "resnet18" {
                e > 0.0
            } else {
                e >= 0.0
            },
            "{r}"
        );
    }
    for f in [
        "latency.png",
        "shares.png",
        "timeseries.csv",
        "shares.csv",
        "summary.json",
    ] {
        let m = std::fs::metadata(dir.path().join(f)).unwrap();
        assert!(m.len() > 100, "{f} is {} bytes", m.len());
    }
}

#[test]
fn bench_partition_names_a_bad_gpu_and_the_valid_ones() {
    let out = Command::new(env!("CARGO_BIN_EXE_edgeplane"))
        .args([
            "bench",
            "partition",
            "--gpu",
            "RTX-9999",
            "--duration-s",
            "5",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("RTX-9999") && e.contains("Jetson-AGX-Xavier"),
        "{e}"
    );
}
