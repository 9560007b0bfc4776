//! Coordinator fault tests on real processes: failover time, durability across SIGKILL,
//! partitions through the transport fault hook, snapshot catch-up, membership under load,
//! at-most-once retries and input validation.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgeplane_proto::admin as api;

use crate::cluster::{bin, Cluster, Opts, SERIAL};
use crate::support::eventually;

/// Write `name` through any running replica (same client id/seq on every try) until it is
/// acknowledged or `timeout` passes. Returns whether it was acknowledged.
async fn write_any(c: &Cluster, name: &str, client_id: u64, seq: u64, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut i = 0usize;
    while Instant::now() < deadline {
        let ids = c.running();
        let id = ids[i % ids.len()];
        i += 1;
        if let Ok(Ok(_)) = tokio::time::timeout(
            Duration::from_millis(700),
            c.deploy_via(id, name, client_id, seq, 1.0),
        )
        .await
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// Wait until every running replica holds every name in `acked`.
async fn all_replicas_have(c: &Cluster, acked: &BTreeSet<String>, timeout: Duration) {
    for id in c.running() {
        eventually(
            timeout,
            &format!("replica {id} holds every acknowledged write"),
            || async {
                let have: BTreeSet<String> = c.models_on(id).await?.into_iter().collect();
                acked.is_subset(&have).then_some(())
            },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_sigkill_failover_within_3s_and_nothing_acknowledged_lost() {
    let _g = SERIAL.lock().await;
    let opts = Opts::election_defaults();
    let mut c = Cluster::start(3, opts);
    c.leader(Duration::from_secs(15)).await;
    let mut acked = BTreeSet::new();
    let mut seq = 0;
    let mut failovers = Vec::new();
    for round in 0..5 {
        for k in 0..5 {
            seq += 1;
            let name = format!("r{round}-m{k}");
            assert!(write_any(&c, &name, 1, seq, Duration::from_secs(10)).await);
            acked.insert(name);
        }
        let leader = c.leader(Duration::from_secs(10)).await;
        c.kill(leader);
        let t0 = Instant::now();
        seq += 1;
        let name = format!("r{round}-after-kill");
        assert!(write_any(&c, &name, 1, seq, Duration::from_secs(10)).await);
        let took = t0.elapsed();
        acked.insert(name);
        failovers.push(took);
        eprintln!("round {round}: killed leader {leader}, write acknowledged again after {took:?}");
        // The killed replica comes back, catches up, and the next round kills the new leader.
        c.spawn(leader);
        all_replicas_have(&c, &acked, Duration::from_secs(15)).await;
    }
    let worst = failovers.iter().max().copied().unwrap_or_default();
    assert!(
        worst < Duration::from_secs(3),
        "failover times {failovers:?}, worst {worst:?} >= 3 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn all_replicas_killed_and_restarted_lose_nothing_acknowledged() {
    let _g = SERIAL.lock().await;
    let c = Cluster::start(3, Opts::default());
    c.leader(Duration::from_secs(10)).await;
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let c = Arc::new(c);
    let mut tasks = Vec::new();
    for w in 0..8u64 {
        let c = c.clone();
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            for k in 0..15u64 {
                let name = format!("w{w}-k{k}");
                if write_any(&c, &name, 100 + w, k + 1, Duration::from_secs(5)).await {
                    acked.lock().unwrap().insert(name);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut c = Arc::try_unwrap(c).ok().expect("sole owner");
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 100,
        "only {} writes acknowledged",
        acked.len()
    );
    for id in [1, 2, 3] {
        c.kill(id);
    }
    for id in [1, 2, 3] {
        c.spawn(id);
    }
    c.leader(Duration::from_secs(10)).await;
    all_replicas_have(&c, &acked, Duration::from_secs(15)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn minority_partition_cut_off_leader_stops_acknowledging() {
    let _g = SERIAL.lock().await;
    let opts = Opts::default();
    let et = opts.election_timeout();
    let c = Cluster::start(3, opts);
    let old = c.leader(Duration::from_secs(10)).await;
    assert!(write_any(&c, "before", 7, 1, Duration::from_secs(5)).await);
    let others: Vec<u64> = c.running().into_iter().filter(|x| *x != old).collect();
    for o in &others {
        c.set_link(old, *o, true).await;
    }
    let cut_at = Instant::now();
    // A write sent to the cut-off leader is never acknowledged (checked below, once it
    // gave up); meanwhile watch the old leader step down.
    let c = Arc::new(c);
    let minority = {
        let c = c.clone();
        tokio::spawn(async move { c.deploy_via(old, "minority-write", 8, 1, 1.0).await })
    };
    // It steps down (check_quorum) about one election timeout after losing contact.
    let stepped = eventually(et * 4, "old leader steps down", || async {
        let s = c.status(old).await?;
        (s.leader_id != old).then(|| cut_at.elapsed())
    })
    .await;
    eprintln!("cut-off leader stepped down after {stepped:?} (election timeout {et:?})");
    assert!(
        stepped <= et * 2 + Duration::from_millis(500),
        "stepped down after {stepped:?}"
    );
    // The majority elects a new leader and acknowledges writes.
    let new = eventually(
        Duration::from_secs(10),
        "majority elects a leader",
        || async {
            let s = c.status(others[0]).await?;
            (s.leader_id != 0 && s.leader_id != old).then_some(s.leader_id)
        },
    )
    .await;
    assert!(others.contains(&new));
    let mut cl = c.client(new).await.unwrap();
    cl.deploy_model(api::DeployModelRequest {
        meta: Some(api::WriteMeta {
            client_id: 9,
            seq: 1,
        }),
        name: "majority-write".into(),
        slo_ms: 10.0,
        rate: 1.0,
        memory_mb: 1,
    })
    .await
    .expect("majority write");
    let r = minority.await.unwrap();
    assert!(r.is_err(), "cut-off leader acknowledged a write: {r:?}");
    // Heal: the old leader rejoins as follower and converges; the minority write is gone.
    for o in &others {
        c.set_link(old, *o, false).await;
    }
    let acked: BTreeSet<String> = ["before", "majority-write"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    all_replicas_have(&c, &acked, Duration::from_secs(10)).await;
    let on_old = c.models_on(old).await.unwrap();
    assert!(!on_old.contains(&"minority-write".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn follower_missing_compacted_log_catches_up_by_snapshot() {
    let _g = SERIAL.lock().await;
    let opts = Opts {
        snapshot_entries: 20,
        ..Default::default()
    };
    let mut c = Cluster::start(3, opts);
    let leader = c.leader(Duration::from_secs(10)).await;
    let lagger = c.running().into_iter().find(|x| *x != leader).unwrap();
    c.kill(lagger);
    let mut acked = BTreeSet::new();
    for k in 0..80u64 {
        let name = format!("s{k}");
        assert!(write_any(&c, &name, 3, k + 1, Duration::from_secs(5)).await);
        acked.insert(name);
    }
    c.spawn(lagger);
    all_replicas_have(&c, &acked, Duration::from_secs(15)).await;
    let log = c.log_of(lagger);
    assert!(
        log.contains("installed snapshot from the leader"),
        "replica {lagger} did not catch up by snapshot; log:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn add_and_remove_member_under_write_load() {
    let _g = SERIAL.lock().await;
    let mut c = Cluster::start(3, Opts::default());
    c.leader(Duration::from_secs(10)).await;
    let (peer4, client4) = c.add_joiner(4);
    c.spawn(4);
    let c = Arc::new(c);
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let writer = {
        let (c, stop, acked) = (c.clone(), stop.clone(), acked.clone());
        tokio::spawn(async move {
            let mut k = 0u64;
            while !stop.load(Ordering::Relaxed) {
                k += 1;
                let name = format!("load{k}");
                // Only through replicas 1..3 (replica 4 may not be a member yet).
                let id = 1 + (k % 3);
                if let Ok(Ok(_)) = tokio::time::timeout(
                    Duration::from_secs(3),
                    c.deploy_via(id, &name, 77, k, 1.0),
                )
                .await
                {
                    acked.lock().unwrap().insert(name);
                }
            }
        })
    };
    let mut admin = c.client(1).await.unwrap();
    // First as a learner (catches up without voting), then promoted to voter.
    admin
        .add_member(api::AddMemberRequest {
            meta: Some(api::WriteMeta {
                client_id: 5,
                seq: 1,
            }),
            id: 4,
            peer_addr: peer4.clone(),
            client_addr: client4.clone(),
            learner: true,
        })
        .await
        .expect("member add --learner");
    eventually(
        Duration::from_secs(15),
        "replica 4 is a learner with the data",
        || async {
            let s = c.status(1).await?;
            let m = s.members.iter().find(|m| m.id == 4)?;
            let n = c.models_on(4).await?.len();
            (m.role == "learner" && n > 0).then_some(())
        },
    )
    .await;
    admin
        .add_member(api::AddMemberRequest {
            meta: Some(api::WriteMeta {
                client_id: 5,
                seq: 3,
            }),
            id: 4,
            peer_addr: peer4,
            client_addr: client4,
            learner: false,
        })
        .await
        .expect("member add (promote)");
    eventually(
        Duration::from_secs(15),
        "replica 4 is a voter with the data",
        || async {
            let s = c.status(1).await?;
            let m = s.members.iter().find(|m| m.id == 4)?;
            let n = c.models_on(4).await?.len();
            (m.role != "learner" && n > 0).then_some(())
        },
    )
    .await;
    // Remove a member that is not the leader.
    let leader = c.leader(Duration::from_secs(10)).await;
    let victim = [1u64, 2, 3].into_iter().find(|x| *x != leader).unwrap();
    admin = c.client(leader).await.unwrap();
    admin
        .remove_member(api::RemoveMemberRequest {
            meta: Some(api::WriteMeta {
                client_id: 5,
                seq: 4,
            }),
            id: victim,
        })
        .await
        .expect("member remove");
    eventually(
        Duration::from_secs(10),
        "member removed from the configuration",
        || async {
            let s = c.status(leader).await?;
            (!s.members.iter().any(|m| m.id == victim)).then_some(())
        },
    )
    .await;
    // Writes keep being acknowledged after both changes.
    let before = acked.lock().unwrap().len();
    eventually(
        Duration::from_secs(10),
        "writes continue after membership changes",
        || async { (acked.lock().unwrap().len() > before + 10).then_some(()) },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    let acked = acked.lock().unwrap().clone();
    for id in [1u64, 2, 3, 4].into_iter().filter(|x| *x != victim) {
        eventually(
            Duration::from_secs(15),
            &format!("replica {id} has every acknowledged write"),
            || async {
                let have: BTreeSet<String> = c.models_on(id).await?.into_iter().collect();
                acked.is_subset(&have).then_some(())
            },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retried_client_write_is_applied_once() {
    let _g = SERIAL.lock().await;
    let c = Cluster::start(3, Opts::default());
    c.leader(Duration::from_secs(10)).await;
    let first = c
        .deploy_via(1, "m", 4242, 1, 10.0)
        .await
        .expect("first write");
    // The same (client id, seq) retried through other members, even with another payload,
    // returns the first result and changes nothing.
    for id in [2, 3, 1] {
        let again = c.deploy_via(id, "m", 4242, 1, 99.0).await.expect("retry");
        assert_eq!(again.index, first.index, "retry applied again");
    }
    let mut cl = c.client(2).await.unwrap();
    let models = cl
        .list_models(api::ReadRequest { stale: false })
        .await
        .unwrap()
        .into_inner()
        .models;
    assert_eq!(models.len(), 1);
    assert_eq!(models[0].rate, 10.0);
    // The next sequence number applies.
    let next = c.deploy_via(3, "m", 4242, 2, 20.0).await.unwrap();
    assert!(next.index > first.index);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_is_invalid_argument_naming_the_field_and_writes_nothing() {
    let _g = SERIAL.lock().await;
    let c = Cluster::start(3, Opts::default());
    c.leader(Duration::from_secs(10)).await;
    let mut cl = c.client(2).await.unwrap();
    let deploy = |name: &str, slo: f64, rate: f64| api::DeployModelRequest {
        meta: Some(api::WriteMeta {
            client_id: 11,
            seq: 1,
        }),
        name: name.into(),
        slo_ms: slo,
        rate,
        memory_mb: 1,
    };
    for (req, field) in [
        (deploy("", 10.0, 1.0), "name"),
        (deploy("m", 0.0, 1.0), "slo_ms"),
        (deploy("m", -5.0, 1.0), "slo_ms"),
        (deploy("m", 10.0, f64::NAN), "rate"),
    ] {
        let e = cl.deploy_model(req).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert!(
            e.message().contains(field),
            "{} does not name {field}",
            e.message()
        );
    }
    let e = cl
        .remove_member(api::RemoveMemberRequest { meta: None, id: 99 })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("id"), "{}", e.message());
    let e = cl
        .add_member(api::AddMemberRequest {
            meta: None,
            id: 9,
            peer_addr: "not-an-address".into(),
            client_addr: "127.0.0.1:1".into(),
            learner: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("peer_addr"), "{}", e.message());
    let e = cl
        .remove_model(api::RemoveModelRequest {
            meta: None,
            name: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    let e = cl
        .set_placement(api::SetPlacementRequest {
            meta: None,
            node: "edge-unknown".into(),
            model: "nope".into(),
            accelerator: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("model"), "{}", e.message());
    let e = cl
        .set_placement(api::SetPlacementRequest {
            meta: None,
            node: String::new(),
            model: "m".into(),
            accelerator: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("node"), "{}", e.message());
    let s = cl
        .list_models(api::ReadRequest { stale: false })
        .await
        .unwrap()
        .into_inner();
    assert!(s.models.is_empty(), "something was written: {:?}", s.models);
    let st = cl
        .cluster_status(api::ReadRequest { stale: false })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.members.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cli_admin_commands_against_a_cluster() {
    let _g = SERIAL.lock().await;
    let c = Cluster::start(3, Opts::default());
    c.leader(Duration::from_secs(10)).await;
    let eps = format!("127.0.0.1:1,{}", c.endpoints().join(","));
    let run = |args: &[&str]| {
        crate::support::admin_env(&mut std::process::Command::new(bin("edgeplane")))
            .args(["--endpoints", &eps, "--timeout-s", "10"])
            .args(args)
            .output()
            .expect("run edgeplane")
    };
    let o = run(&[
        "models",
        "deploy",
        "resnet50",
        "--slo-ms",
        "30",
        "--rate",
        "50",
        "--memory-mb",
        "200",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = run(&["models", "list", "--format", "json"]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["name"], "resnet50");
    assert_eq!(v[0]["slo_ms"], 30.0);
    assert_eq!(v[0]["rate"], 50.0);
    assert_eq!(v[0]["memory_mb"], 200);
    let o = run(&["cluster", "status", "--format", "json", "--stale"]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["leader_id"].as_u64().unwrap() > 0);
    assert_eq!(v["members"].as_array().unwrap().len(), 3);
    let o = run(&["models", "deploy", "bad", "--slo-ms", "0"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("slo_ms"));
    let o = run(&["models", "remove", "unknown-model"]);
    assert!(!o.status.success());
    let o = run(&["nodes", "list", "--format", "json"]);
    assert!(o.status.success());
    let snap = c.dir.path().join("snap.json");
    let o = run(&["snapshot", "save", snap.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::read_to_string(&snap).unwrap().contains("resnet50"));
    let leader = c.leader(Duration::from_secs(5)).await;
    let to = [1u64, 2, 3].into_iter().find(|x| *x != leader).unwrap();
    let o = run(&["leader", "transfer", "--to", &to.to_string()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(c.leader(Duration::from_secs(5)).await, to);
}

#[test]
fn config_layers_file_env_flags_and_names_bad_fields() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(
        &file,
        "tick_ms = 50\nelection_ticks = 20\nsnapshot_entries = 7\nmetrics_addr = \"127.0.0.1:9\"\n",
    )
    .unwrap();
    let base = |extra: &[&str]| {
        let mut c = std::process::Command::new(bin("edgeplane-coordinator"));
        c.args(["--id", "1", "--client-addr", "127.0.0.1:7101"])
            .args(["--peer-addr", "127.0.0.1:7201"])
            .args(["--initial-cluster", "1=127.0.0.1:7201,2=127.0.0.1:7202"])
            .args(["--data-dir", dir.path().to_str().unwrap()])
            .arg("--insecure")
            .arg("--config")
            .arg(&file)
            .args(extra);
        c
    };
    // file < env < flags
    let out = base(&["--tick-ms", "20", "--print-config"])
        .env("EDGEPLANE_COORDINATOR_TICK_MS", "30")
        .env("EDGEPLANE_COORDINATOR_SNAPSHOT_ENTRIES", "9")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("tick_ms = 20"), "{text}");
    assert!(text.contains("snapshot_entries = 9"), "{text}");
    assert!(text.contains("election_ticks = 20"), "{text}");
    assert!(text.contains("metrics_addr = \"127.0.0.1:9\""), "{text}");
    // Bad values fail at start naming the field.
    for (args, env, field) in [
        (vec!["--heartbeat-ticks", "0"], None, "heartbeat_ticks"),
        (
            vec!["--print-config"],
            Some(("EDGEPLANE_COORDINATOR_METRICS_ADDR", "nope")),
            "metrics_addr",
        ),
    ] {
        let mut c = base(&args);
        if let Some((k, v)) = env {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(field), "{err}");
    }
}
