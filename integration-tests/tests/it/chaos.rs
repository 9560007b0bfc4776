//! The history-checked fault suite against real coordinator processes: one test per fault
//! kind, each a fresh 3-replica cluster under a concurrent workload, then the checks of
//! `edgeplane-chaos` (linearizable per key, nothing acknowledged lost, revisions and placement
//! epochs never go backwards, one leader per term, identical replicas). Scenarios run one at
//! a time (a shared lock) so their timing does not depend on each other on a 2-core machine.
//!
//! Snapshots every 300 entries, so replicas that fall behind catch up by snapshot install.
//! Until the coordinator fix for issue 7 defect 1 lands, that install can serve stale reads in
//! any scenario where a replica falls behind; the scenarios where it was seen are ignored
//! with the finding noted (re-enable them after merging the fix).

use std::sync::Arc;
use std::time::Duration;

use edgeplane_chaos::{
    run_scenario, CheckConfig, Counters, FaultKind, LocalCluster, ReplicaOpts, ScenarioConfig,
    Target, WorkloadConfig,
};

use crate::cluster::bin;

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const SNAPSHOT_ENTRIES: u64 = 300;

async fn scenario(kind: FaultKind) {
    let _g = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let opts = ReplicaOpts {
        tick_ms: 50,
        election_ticks: 10,
        // Small, so every scenario crosses snapshots and restarted replicas catch up by one.
        snapshot_entries: SNAPSHOT_ENTRIES,
        request_timeout_ms: 2000,
        ..ReplicaOpts::default()
    };
    let procs = LocalCluster::start(&bin("edgeplane-coordinator"), dir.path(), 3, opts)
        .expect("start replicas");
    let mut target = Target::local(procs).expect("target");
    let cfg = ScenarioConfig {
        kind,
        duration: Duration::from_secs(10),
        warm: Duration::from_millis(600),
        hold: Duration::from_millis(1500),
        snapshot_entries: SNAPSHOT_ENTRIES,
        workload: WorkloadConfig {
            clients: 48,
            keys: 8,
            op_timeout: Duration::from_secs(1),
            seed: 1 + kind as u64,
            key_prefix: format!("chaos-{}", kind.name()),
            ..Default::default()
        },
        check: CheckConfig::default(),
        placement_nodes: 2,
    };
    let counters = Arc::new(Counters::default());
    let rep = run_scenario(&mut target, &cfg, counters)
        .await
        .unwrap_or_else(|e| panic!("{}: the run itself failed: {e}", kind.name()));
    let ms =
        |d: Option<Duration>| d.map_or("-".into(), |d| format!("{:.0}", d.as_secs_f64() * 1e3));
    println!(
        "chaos {:<20} rounds {:>2}  ops {:>5} (ok {:>5} fail {:>3} unknown {:>4}, reads {:>4})  histories {:>2}  \
         pins {:>4}  states {:>7}  gap p50 {:>5} ms p99 {:>5} ms  not-recovered {}  violations {}  ({:.1} s)",
        kind.name(),
        rep.rounds,
        rep.ops,
        rep.ok,
        rep.fail,
        rep.unknown,
        rep.unknown_reads,
        rep.histories_checked,
        rep.pins,
        rep.states_explored,
        ms(rep.gap_pct(0.5)),
        ms(rep.gap_pct(0.99)),
        rep.not_recovered,
        rep.violations.len(),
        rep.elapsed.as_secs_f64(),
    );
    if !rep.violations.is_empty() {
        for v in &rep.violations {
            println!("VIOLATION ({}): {v}", kind.name());
        }
        if let Some(p) = &target.procs {
            for id in 1..=3 {
                println!("--- replica {id} log tail ---\n{}", p.log_tail(id, 20));
            }
        }
    }
    assert!(rep.rounds >= 1, "{}: no fault round completed", kind.name());
    assert!(
        rep.ok >= 500,
        "{}: only {} acknowledged operations; the run checked too little",
        kind.name(),
        rep.ok
    );
    assert!(
        rep.undecided.is_empty(),
        "{}: checker undecided on {:?}",
        kind.name(),
        rep.undecided
    );
    assert_eq!(
        rep.violations.len(),
        0,
        "{}: violations found (see above)",
        kind.name()
    );
}

// Found a revision going backwards (1 run in 4): the restarted old leader installed a
// snapshot at index 302 and then answered a linearizable read from its pre-snapshot state
// (revision 289) after a write at 292 was acknowledged: the unpublished snapshot install.
// Fixed (issue 7 defect 1 and 11 fixes): regression test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_kill_leader() {
    scenario(FaultKind::KillLeader).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_kill_follower() {
    scenario(FaultKind::KillFollower).await;
}

// Found (1 run in 7): replica 3, restarted after the majority kill, installed snapshot 920 and
// answered linearizable reads from revision 857 after 896..913 were acknowledged: defect 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_kill_majority() {
    scenario(FaultKind::KillMajority).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_kill_all() {
    scenario(FaultKind::KillAll).await;
}

// Found stale linearizable reads (2 runs in 4): reads sent to the paused leader were answered
// on SIGCONT from its pre-pause state (revision 431) although the new leader had acknowledged
// writes up to 470 before they were sent. Cause: the read tracker re-issued a ReadIndex under
// the same context, and raft-rs let a held-back ack from the pre-pause heartbeat round release
// every read queued before it (coordinator `reads.rs`; unit test
// `a_stale_heartbeat_ack_does_not_release_a_newer_read`). Fixed by a fresh context per issue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_pause_leader() {
    scenario(FaultKind::PauseLeader).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_snapshot_catch_up() {
    scenario(FaultKind::SnapshotCatchUp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_partition_leader() {
    scenario(FaultKind::PartitionLeader).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_partition_follower() {
    scenario(FaultKind::PartitionFollower).await;
}

// Found (1 run in 6): the old leader, cut off one way, fell behind, installed snapshot 301
// and then answered a linearizable read from revision 167 (after 299 was acknowledged): the
// unpublished snapshot install again. Any scenario where a replica falls more than
// SNAPSHOT_ENTRIES behind can meet it before the fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_one_way() {
    scenario(FaultKind::OneWay).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_flapping() {
    scenario(FaultKind::Flapping).await;
}

// Found: after `member remove` of the leader was acknowledged and applied, the remaining
// members still named the removed replica as leader 5 s later (every run: the second round
// removes the leader). Passes 4 runs in 4 with wt-coord 4d072cd merged in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_member_replace() {
    scenario(FaultKind::MemberReplace).await;
}
