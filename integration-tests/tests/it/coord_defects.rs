//! Regression tests for the coordinator defects of issue 7, on real processes: reads after
//! a snapshot install, ReadIndex collisions, membership changes answered while a conf change
//! was pending, outcome-unknown writes, removing the leader, a failed fsync, and live
//! figures that differ by member. Each failed against the code before its fix.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgeplane_proto::admin as api;
use edgeplane_proto::agent as agent_api;

use crate::cluster::{Cluster, Opts, SERIAL};
use crate::support::eventually;

/// Defect 1: a follower that caught up by snapshot must serve the snapshot's state at once,
/// even when no entry follows the snapshot (an idle cluster).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn follower_serves_the_installed_snapshot_on_an_idle_cluster() {
    let _g = SERIAL.lock().await;
    // A snapshot after every applied entry: the leader's log is always compacted up to its
    // last entry, so the lagging follower gets a snapshot and no entry after it.
    let opts = Opts {
        snapshot_entries: 1,
        ..Default::default()
    };
    let mut c = Cluster::start(3, opts);
    let leader = c.leader(Duration::from_secs(10)).await;
    let lagger = c.running().into_iter().find(|x| *x != leader).unwrap();
    c.kill(lagger);
    let mut acked = BTreeSet::new();
    for k in 1..=12u64 {
        let name = format!("snap{k}");
        c.deploy_via(leader, &name, 91, k, 1.0)
            .await
            .expect("write while one follower is down");
        acked.insert(name);
    }
    let target = c.status(leader).await.expect("leader status").applied_index;
    c.spawn(lagger);
    // Wait until the follower says it applied everything (its status already moves on
    // install), then its reads must show the data: stale and linearizable alike.
    eventually(
        Duration::from_secs(15),
        "follower applied up to the leader",
        || async {
            let s = c.status(lagger).await?;
            (s.applied_index >= target).then_some(())
        },
    )
    .await;
    let have: BTreeSet<String> = eventually(Duration::from_secs(2), "stale list", || async {
        c.models_on(lagger).await.map(|v| v.into_iter().collect())
    })
    .await;
    assert!(
        acked.is_subset(&have),
        "replica {lagger} reports applied index {target} but serves {have:?}"
    );
    let mut cl = c.client(lagger).await.unwrap();
    let lin: BTreeSet<String> = cl
        .list_models(api::ReadRequest { stale: false })
        .await
        .expect("linearizable read on the follower")
        .into_inner()
        .models
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert!(
        acked.is_subset(&lin),
        "linearizable read was stale: {lin:?}"
    );
    assert!(c
        .log_of(lagger)
        .contains("installed snapshot from the leader"));
}

/// Defect 3: linearizable reads through every member at once all answer (no ReadIndex
/// context collides with another member's, so raft-rs never drops one).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_linearizable_reads_through_every_member_all_answer() {
    let _g = SERIAL.lock().await;
    let c = Arc::new(Cluster::start(3, Opts::default()));
    let leader = c.leader(Duration::from_secs(10)).await;
    c.deploy_via(leader, "r", 5, 1, 1.0).await.unwrap();
    let ok = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs(8);
    let mut tasks = Vec::new();
    // Two readers per member, so contexts are in flight from every member at once.
    for id in [1u64, 2, 3, 1, 2, 3] {
        let (c, ok) = (c.clone(), ok.clone());
        tasks.push(tokio::spawn(async move {
            let mut cl = c.client(id).await.unwrap();
            let mut failures = Vec::new();
            while Instant::now() < end {
                match cl.list_models(api::ReadRequest { stale: false }).await {
                    Ok(r) => {
                        assert_eq!(r.into_inner().models.len(), 1);
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(s) => failures.push(format!("via {id}: {:?} {}", s.code(), s.message())),
                }
            }
            failures
        }));
    }
    let mut failures = Vec::new();
    for t in tasks {
        failures.extend(t.await.unwrap());
    }
    let ok = ok.load(Ordering::Relaxed);
    assert!(
        failures.is_empty(),
        "{} of {} reads failed: {failures:?}",
        failures.len(),
        ok + failures.len() as u64
    );
    assert!(ok > 0);
}

/// Defect 2: a membership change proposed while another one is still pending (raft-rs
/// then replaces it by an empty entry; likewise right after an election) is acknowledged
/// only once it really happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_member_adds_are_acknowledged_only_when_applied() {
    let _g = SERIAL.lock().await;
    let mut c = Cluster::start(3, Opts::default());
    let leader = c.leader(Duration::from_secs(10)).await;
    let mut joiners = Vec::new();
    for id in [4u64, 5, 6] {
        let (peer, client) = c.add_joiner(id);
        joiners.push((id, peer, client));
    }
    // Sent at once: while the first is in flight the others find a conf change pending.
    let mut tasks = Vec::new();
    for (id, peer, client) in joiners {
        let mut admin = c.client(leader).await.unwrap();
        tasks.push(tokio::spawn(async move {
            let r = admin
                .add_member(api::AddMemberRequest {
                    meta: Some(api::WriteMeta {
                        client_id: 4040 + id,
                        seq: 1,
                    }),
                    id,
                    peer_addr: peer,
                    client_addr: client,
                    learner: true,
                })
                .await;
            (id, r)
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        let (id, r) = t.await.unwrap();
        match r {
            Ok(_) => acked.push(id),
            Err(s) => {
                // Refused: it must say it was not applied (safe to retry).
                assert_eq!(s.code(), tonic::Code::Unavailable, "{s:?}");
                assert!(s.message().contains("not applied"), "{s:?}");
            }
        }
    }
    assert!(!acked.is_empty());
    // Every acknowledged learner is in the configuration (nothing else changes it, so
    // "eventually" only covers the status read itself).
    let s = c.status(leader).await.unwrap();
    for id in &acked {
        assert!(
            s.members.iter().any(|m| m.id == *id && m.role == "learner"),
            "member add {id} was acknowledged but is not in the configuration: {:?}",
            s.members
        );
    }
}

/// Defect 9: a write accepted by a leader that then loses its quorum has an unknown
/// outcome, and the caller is told so (UNKNOWN), not "unavailable, retry" nor a timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn write_accepted_by_a_leader_that_loses_quorum_reports_outcome_unknown() {
    let _g = SERIAL.lock().await;
    let opts = Opts {
        request_timeout_ms: 2500,
        ..Default::default()
    };
    let mut c = Cluster::start(3, opts);
    let leader = c.leader(Duration::from_secs(10)).await;
    c.deploy_via(leader, "before", 61, 1, 1.0).await.unwrap();
    let mut cl = c.client(leader).await.unwrap();
    for id in c.running().into_iter().filter(|x| *x != leader) {
        c.kill(id);
    }
    let r = cl
        .deploy_model(api::DeployModelRequest {
            meta: Some(api::WriteMeta {
                client_id: 61,
                seq: 2,
            }),
            name: "during".into(),
            slo_ms: 10.0,
            rate: 1.0,
            memory_mb: 1,
        })
        .await;
    let s = r.expect_err("no quorum: the write cannot be acknowledged");
    assert_eq!(s.code(), tonic::Code::Unknown, "{s:?}");
    assert!(s.message().contains("outcome unknown"), "{s:?}");
    // A write sent when no leader exists was certainly not applied.
    let r = cl
        .deploy_model(api::DeployModelRequest {
            meta: Some(api::WriteMeta {
                client_id: 62,
                seq: 1,
            }),
            name: "after".into(),
            slo_ms: 10.0,
            rate: 1.0,
            memory_mb: 1,
        })
        .await;
    let s = r.expect_err("no leader");
    assert_eq!(s.code(), tonic::Code::Unavailable, "{s:?}");
    assert!(s.message().contains("not applied"), "{s:?}");
}

/// Defect 11: removing the leader hands leadership over first; the removed replica says so
/// and exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn removing_the_leader_moves_leadership_and_the_removed_replica_exits() {
    let _g = SERIAL.lock().await;
    let mut c = Cluster::start(3, Opts::default());
    let leader = c.leader(Duration::from_secs(10)).await;
    let other = c.running().into_iter().find(|x| *x != leader).unwrap();
    let mut admin = c.client(other).await.unwrap();
    admin
        .remove_member(api::RemoveMemberRequest {
            meta: Some(api::WriteMeta {
                client_id: 111,
                seq: 1,
            }),
            id: leader,
        })
        .await
        .expect("remove the leader");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = c.exited(leader) {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "removed replica {leader} still running"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert!(status.success(), "removed replica exit status {status:?}");
    assert!(
        c.log_of(leader).contains("removed from the cluster"),
        "the removed replica did not say so"
    );
    let new_leader = c.leader(Duration::from_secs(10)).await;
    assert_ne!(new_leader, leader);
    let s = c.status(new_leader).await.unwrap();
    assert!(!s.members.iter().any(|m| m.id == leader), "{s:?}");
    c.deploy_via(new_leader, "after-remove", 112, 1, 1.0)
        .await
        .expect("the two remaining members accept writes");
}

/// Defect 12: a replica whose fsync fails exits non-zero instead of staying up answering
/// Unavailable (crash-only: its supervisor restarts it).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_fsync_makes_the_replica_exit_non_zero() {
    let _g = SERIAL.lock().await;
    let mut c = Cluster::start(3, Opts::default());
    let leader = c.leader(Duration::from_secs(10)).await;
    let victim = c.running().into_iter().find(|x| *x != leader).unwrap();
    c.kill(victim);
    // The storage fault hook (honoured only with --enable-fault-injection): every fsync
    // after the first 5 of this process fails with EIO.
    c.opts
        .env
        .push(("EDGEPLANE_FAULT_FSYNC_FAIL_AFTER".into(), "5".into()));
    c.spawn(victim);
    c.opts.env.clear();
    let mut k = 0u64;
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(st) = c.exited(victim) {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "replica {victim} still running after its fsync failed"
        );
        k += 1;
        let _ = c.deploy_via(leader, &format!("f{k}"), 120, k, 1.0).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(!status.success(), "exit status {status:?}");
    assert!(c.log_of(victim).contains("fsync"), "{}", c.log_of(victim));
    // The other two keep serving; the restarted replica (no fault) catches up.
    c.spawn(victim);
    let name = format!("f{}", k + 1);
    c.deploy_via(leader, &name, 120, k + 1, 1.0).await.unwrap();
    eventually(
        Duration::from_secs(15),
        "restarted replica catches up",
        || async { c.models_on(victim).await?.contains(&name).then_some(()) },
    )
    .await;
}

/// Defect 13: `nodes list` / `models list` give the same live figures through every member.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn live_figures_are_the_same_through_every_member() {
    let _g = SERIAL.lock().await;
    let opts = Opts {
        join_token: Some("tok".into()),
        ..Default::default()
    };
    let c = Cluster::start(3, opts);
    let leader = c.leader(Duration::from_secs(10)).await;
    c.deploy_via(leader, "m1", 7, 1, 1.0).await.unwrap();
    let ch = crate::support::admin_channel(&c.replicas[&leader].client_addr)
        .await
        .unwrap();
    let mut ag = agent_api::agent_client::AgentClient::new(ch);
    ag.register(agent_api::RegisterRequest {
        name: "edge-1".into(),
        join_token: "tok".into(),
        agent_addr: "127.0.0.1:9".into(),
        accelerators: vec![],
        assignment_epoch: 0,
        csr: String::new(),
        joined_from_ip: String::new(),
    })
    .await
    .expect("register");
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let hello = agent_api::AgentMessage {
        body: Some(agent_api::agent_message::Body::Hello(agent_api::Hello {
            name: "edge-1".into(),
            join_token: "tok".into(),
            assignment_epoch: 0,
        })),
    };
    tx.send(hello).await.unwrap();
    let mut inbound = ag
        .session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("session")
        .into_inner();
    let report = |seq: u64, uptime: f64, arrivals: u64| agent_api::AgentMessage {
        body: Some(agent_api::agent_message::Body::Report(agent_api::Report {
            seq,
            assignment_epoch: 0,
            uptime_s: uptime,
            models: vec![agent_api::ModelReport {
                model: "m1".into(),
                arrivals,
                completions: arrivals,
                deadlines_met: arrivals - 1,
                deadlines_missed: 1,
                drops: 0,
                p50_ms: 1.0,
                p99_ms: 2.0,
                energy_j: 3.0,
                refused: 0,
            }],
            accelerators: vec![],
            decision_overhead_us: 1.0,
        })),
    };
    // Two reports 1 s of agent uptime apart: 40 arrivals → 40 requests/s observed.
    tx.send(report(1, 1.0, 10)).await.unwrap();
    tx.send(report(2, 2.0, 50)).await.unwrap();
    let mut acks = 0;
    while acks < 2 {
        let m = tokio::time::timeout(
            Duration::from_secs(5),
            tokio_stream::StreamExt::next(&mut inbound),
        )
        .await
        .expect("ack in time")
        .expect("stream open")
        .expect("message");
        if let Some(agent_api::coordinator_message::Body::Ack(a)) = m.body {
            assert!(a.accepted, "{a:?}");
            acks += 1;
        }
    }
    // Hand-derived: 49 met / 1 missed on node edge-1, model m1 at 40 req/s, 98 % met.
    for id in [1u64, 2, 3] {
        let mut cl = c.client(id).await.unwrap();
        let r = cl
            .list_nodes(api::ReadRequest { stale: false })
            .await
            .unwrap()
            .into_inner();
        assert!(!r.live_figures_unknown, "via replica {id}");
        let lr = r.nodes[0].last_report.unwrap();
        assert_eq!(
            (lr.deadlines_met, lr.deadlines_missed),
            (49, 1),
            "nodes list via replica {id} (leader {leader})"
        );
        let models = cl
            .list_models(api::ReadRequest { stale: false })
            .await
            .unwrap()
            .into_inner()
            .models;
        assert_eq!(
            models[0].observed_rate, 40.0,
            "models list via replica {id}"
        );
        assert_eq!(
            models[0].deadline_met_pct, 98.0,
            "models list via replica {id}"
        );
    }
    drop(tx);
}

/// Defect 7: a snapshot larger than one chunk (1 MiB) reaches a lagging follower as a stream
/// of chunks, and the follower installs it whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn large_snapshot_reaches_a_lagging_follower_in_chunks() {
    let _g = SERIAL.lock().await;
    let opts = Opts {
        snapshot_entries: 5,
        join_token: Some("tok".into()),
        ..Default::default()
    };
    let mut c = Cluster::start(3, opts);
    let leader = c.leader(Duration::from_secs(10)).await;
    let lagger = c.running().into_iter().find(|x| *x != leader).unwrap();
    c.kill(lagger);
    // 75 nodes with 64 accelerators (the most a node may register) of 220-byte names each: the
    // state's JSON holds 75 × 64 × 220 B ≈ 1.06 MB of names alone, more than one 1 MiB chunk.
    let ch = crate::support::admin_channel(&c.replicas[&leader].client_addr)
        .await
        .unwrap();
    let mut ag = agent_api::agent_client::AgentClient::new(ch)
        .max_encoding_message_size(16 << 20)
        .max_decoding_message_size(16 << 20);
    for n in 0..75 {
        let accelerators = (0..64)
            .map(|i| agent_api::Accelerator {
                id: format!("acc{i}"),
                kind: "npu".into(),
                name: format!("{n:02}-{i:03}-{}", "n".repeat(213)),
                ..Default::default()
            })
            .collect();
        ag.register(agent_api::RegisterRequest {
            name: format!("big-{n}"),
            join_token: "tok".into(),
            agent_addr: "127.0.0.1:9".into(),
            accelerators,
            assignment_epoch: 0,
            csr: String::new(),
            joined_from_ip: String::new(),
        })
        .await
        .expect("register a large node");
    }
    // The leader builds snapshots and compacts its log on a background thread: wait until it
    // has dropped the entries the lagger lacks (killed at index <= 3 of a fresh cluster), or
    // the lagger, restarted too early, would catch up from the log and no snapshot would move.
    eventually(
        Duration::from_secs(20),
        "the leader compacted its log past the lagger",
        || async {
            let log = c.log_of(leader);
            log.lines()
                .filter(|l| l.contains("snapshot taken, log compacted"))
                .filter_map(|l| {
                    l.split("compacted_to=Some(")
                        .nth(1)?
                        .split(')')
                        .next()?
                        .parse::<u64>()
                        .ok()
                })
                .any(|upto| upto >= 8)
                .then_some(())
        },
    )
    .await;
    c.spawn(lagger);
    eventually(
        Duration::from_secs(20),
        "follower holds every node",
        || async {
            let mut cl = c.client(lagger).await.ok()?;
            // The follower's own state (list calls are answered by the leader).
            let snap = cl
                .save_snapshot(api::ReadRequest { stale: true })
                .await
                .ok()?
                .into_inner();
            let st: serde_json::Value = serde_json::from_slice(&snap.data).ok()?;
            let nodes = st["nodes"].as_object()?;
            (nodes.len() == 75
                && nodes
                    .values()
                    .all(|n| n["accelerators"].as_array().map(Vec::len) == Some(64)))
            .then_some(())
        },
    )
    .await;
    let log = c.log_of(lagger);
    assert!(log.contains("received a chunked snapshot"), "{log}");
}

/// Defect 3 (second half): linearizable reads issued while there is no leader (raft-rs
/// drops them) or pending when the leader dies are re-issued to the new leader and answer,
/// instead of timing out.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_issued_during_an_election_answer_after_it() {
    let _g = SERIAL.lock().await;
    let opts = Opts {
        request_timeout_ms: 6000,
        ..Default::default()
    };
    let mut c = Cluster::start(3, opts);
    let leader = c.leader(Duration::from_secs(10)).await;
    c.deploy_via(leader, "e", 8, 1, 1.0).await.unwrap();
    let followers: Vec<u64> = c.running().into_iter().filter(|x| *x != leader).collect();
    let mut clients = Vec::new();
    for id in &followers {
        clients.push((*id, c.client(*id).await.unwrap()));
    }
    c.kill(leader);
    // Sent at once, while the followers still believe in the dead leader or hold an
    // election (the election timeout is 500 ms, the request timeout 6 s).
    let mut tasks = Vec::new();
    for (id, mut cl) in clients {
        for _ in 0..3 {
            let mut cl2 = cl.clone();
            tasks.push(tokio::spawn(async move {
                let r = cl2.list_models(api::ReadRequest { stale: false }).await;
                (id, r.map(|r| r.into_inner().models.len()))
            }));
        }
        let _ = &mut cl;
    }
    for t in tasks {
        let (id, r) = t.await.unwrap();
        assert_eq!(
            r.map_err(|s| format!("{:?}: {}", s.code(), s.message())),
            Ok(1),
            "read through replica {id} during the election"
        );
    }
}
