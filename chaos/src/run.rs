//! One scenario: start the workload, inject one kind of fault round after round, heal,
//! then quiesce and check everything. The fault schedule lives here too.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgeplane_proto::admin::{self as api, admin_client::AdminClient};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tonic::transport::{Channel, Endpoint};

use crate::checker::{check_history, CheckConfig};
use crate::checks::{
    epoch_regressions, lost_writes, observed_epoch_regressions, revision_regressions, split_brain,
    LeaderSeen, PinAck,
};
use crate::history::{Clock, History, Op, OpKind, Outcome, Value};
use crate::procs::LocalCluster;
use crate::workload::{self, Counters, Members, WorkloadConfig};
use crate::Error;

/// The faults the schedule can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// SIGKILL the leader, restart it after the hold time.
    KillLeader,
    /// SIGKILL one follower.
    KillFollower,
    /// SIGKILL the leader and one follower (no quorum left).
    KillMajority,
    /// SIGKILL every replica, restart all.
    KillAll,
    /// SIGSTOP the leader beyond the election timeout, then SIGCONT.
    PauseLeader,
    /// Kill a follower, let the log move past a snapshot, restart it (it catches up by
    /// snapshot) and keep the cluster idle for writes while reading through every member.
    SnapshotCatchUp,
    /// Fault hook: cut the leader off from every peer (a minority leader).
    PartitionLeader,
    /// Fault hook: cut one follower off from every peer (symmetric split 1 | n-1).
    PartitionFollower,
    /// Fault hook: drop only the leader's outbound messages (it still hears the others).
    OneWay,
    /// Fault hook: cut and heal random links every 150-400 ms.
    Flapping,
    /// Under write load: start a new replica, add it as a learner, promote it, remove an
    /// old member (a follower in odd rounds, the leader in even ones) and stop that one.
    MemberReplace,
}

impl FaultKind {
    pub const ALL: [FaultKind; 11] = [
        FaultKind::KillLeader,
        FaultKind::KillFollower,
        FaultKind::KillMajority,
        FaultKind::KillAll,
        FaultKind::PauseLeader,
        FaultKind::SnapshotCatchUp,
        FaultKind::PartitionLeader,
        FaultKind::PartitionFollower,
        FaultKind::OneWay,
        FaultKind::Flapping,
        FaultKind::MemberReplace,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillLeader => "kill-leader",
            FaultKind::KillFollower => "kill-follower",
            FaultKind::KillMajority => "kill-majority",
            FaultKind::KillAll => "kill-all",
            FaultKind::PauseLeader => "pause-leader",
            FaultKind::SnapshotCatchUp => "snapshot-catch-up",
            FaultKind::PartitionLeader => "partition-leader",
            FaultKind::PartitionFollower => "partition-follower",
            FaultKind::OneWay => "one-way",
            FaultKind::Flapping => "flapping",
            FaultKind::MemberReplace => "member-replace",
        }
    }

    /// Whether the fault needs replica processes owned by this run (signals).
    pub fn needs_processes(self) -> bool {
        matches!(
            self,
            FaultKind::KillLeader
                | FaultKind::KillFollower
                | FaultKind::KillMajority
                | FaultKind::KillAll
                | FaultKind::PauseLeader
                | FaultKind::SnapshotCatchUp
                | FaultKind::MemberReplace
        )
    }

    pub fn parse(s: &str) -> Result<FaultKind, Error> {
        FaultKind::ALL
            .iter()
            .copied()
            .find(|k| k.name() == s)
            .ok_or_else(|| Error::Config {
                field: "faults",
                why: format!(
                    "unknown fault {s:?}; known: {}",
                    FaultKind::ALL
                        .iter()
                        .map(|k| k.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })
    }
}

/// The cluster under test: Admin endpoints, and the processes when this run owns them.
pub struct Target {
    pub members: BTreeMap<u64, String>,
    channels: BTreeMap<u64, Channel>,
    /// The same channels, shared with the workload clients.
    shared: Members,
    pub procs: Option<LocalCluster>,
    /// Used for pause lengths; the replicas' configured election timeout.
    pub election_timeout: Duration,
    /// The cluster's join token (simulated nodes register with it).
    pub join_token: String,
}

fn channel(addr: &str) -> Result<Channel, Error> {
    let url = if addr.starts_with("http") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    Ok(Endpoint::from_shared(url)
        .map_err(|e| Error::Endpoint {
            addr: addr.to_string(),
            why: e.to_string(),
        })?
        .connect_timeout(Duration::from_millis(300))
        .tcp_nodelay(true)
        .connect_lazy())
}

impl Target {
    /// A cluster this process started (every fault kind available).
    pub fn local(procs: LocalCluster) -> Result<Self, Error> {
        let members = procs.members();
        let election_timeout = procs.opts().election_timeout();
        let join_token = procs.opts().join_token.clone();
        let channels: BTreeMap<u64, Channel> = members
            .iter()
            .map(|(id, a)| Ok((*id, channel(a)?)))
            .collect::<Result<_, Error>>()?;
        Ok(Target {
            members,
            shared: Arc::new(std::sync::RwLock::new(channels.clone())),
            channels,
            procs: Some(procs),
            election_timeout,
            join_token,
        })
    }

    /// An operator's cluster: members are discovered from `cluster status` on any endpoint.
    pub async fn remote(endpoints: &[String], election_timeout: Duration) -> Result<Self, Error> {
        // A fresh cluster lists its members' addresses only once the bootstrap is applied.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match Self::try_remote(endpoints, election_timeout).await {
                Ok(t) => return Ok(t),
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    async fn try_remote(endpoints: &[String], election_timeout: Duration) -> Result<Self, Error> {
        let mut last = String::from("no endpoints given");
        for e in endpoints {
            let ch = channel(e)?;
            let mut c = AdminClient::new(ch);
            match tokio::time::timeout(
                Duration::from_secs(3),
                c.cluster_status(api::ReadRequest { stale: true }),
            )
            .await
            {
                Ok(Ok(r)) => {
                    let members: BTreeMap<u64, String> = r
                        .into_inner()
                        .members
                        .into_iter()
                        .filter(|m| !m.client_addr.is_empty() && m.role != "learner")
                        .map(|m| (m.id, m.client_addr))
                        .collect();
                    if members.is_empty() {
                        return Err(Error::Cluster(format!(
                            "{e} lists no members with a client address"
                        )));
                    }
                    let channels: BTreeMap<u64, Channel> = members
                        .iter()
                        .map(|(id, a)| Ok((*id, channel(a)?)))
                        .collect::<Result<_, Error>>()?;
                    return Ok(Target {
                        members,
                        shared: Arc::new(std::sync::RwLock::new(channels.clone())),
                        channels,
                        procs: None,
                        election_timeout,
                        join_token: String::new(),
                    });
                }
                Ok(Err(s)) => last = format!("{e}: {}", s.message()),
                Err(_) => last = format!("{e}: no answer in 3 s"),
            }
        }
        Err(Error::Cluster(format!(
            "no endpoint answered cluster status; last: {last}"
        )))
    }

    /// `old` left the cluster, `new` (at `client_addr`) joined.
    fn replace_member(&mut self, old: u64, new: u64, client_addr: &str) -> Result<(), Error> {
        let ch = channel(client_addr)?;
        self.members.remove(&old);
        self.channels.remove(&old);
        self.members.insert(new, client_addr.to_string());
        self.channels.insert(new, ch);
        *self.shared.write().expect("members lock") = self.channels.clone();
        Ok(())
    }

    fn client(&self, id: u64) -> AdminClient<Channel> {
        AdminClient::new(self.channels[&id].clone())
    }

    fn running(&self) -> Vec<u64> {
        self.members
            .keys()
            .copied()
            .filter(|id| self.procs.as_ref().is_none_or(|p| p.is_running(*id)))
            .collect()
    }

    async fn status(&self, id: u64) -> Option<api::ClusterStatusResponse> {
        let mut c = self.client(id);
        match tokio::time::timeout(
            Duration::from_millis(300),
            c.cluster_status(api::ReadRequest { stale: true }),
        )
        .await
        {
            Ok(Ok(r)) => Some(r.into_inner()),
            _ => None,
        }
    }

    /// The leader every answering running member agrees on (None while they disagree).
    pub async fn agreed_leader(&self) -> Option<u64> {
        let mut seen = BTreeSet::new();
        let mut answered = 0;
        let running = self.running();
        for id in &running {
            if let Some(s) = self.status(*id).await {
                answered += 1;
                seen.insert(s.leader_id);
            }
        }
        let l = *seen.iter().next()?;
        (seen.len() == 1 && l != 0 && running.contains(&l) && answered * 2 > self.members.len())
            .then_some(l)
    }

    async fn wait_leader(&self, timeout: Duration) -> Option<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.agreed_leader().await {
                return Some(l);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn inject(
        &self,
        on: u64,
        peer: u64,
        mode: api::inject_fault_request::Mode,
    ) -> Result<(), Error> {
        let mut c = self.client(on);
        c.inject_fault(api::InjectFaultRequest {
            peer,
            mode: mode as i32,
            delay_ms: 0,
            heal_all: false,
        })
        .await
        .map(|_| ())
        .map_err(|s| Error::Cluster(format!("inject fault on {on}: {}", s.message())))
    }

    /// Cut both directions between `a` and `b` (rules on both ends).
    async fn cut(&self, a: u64, b: u64) -> Result<(), Error> {
        use api::inject_fault_request::Mode;
        self.inject(a, b, Mode::Drop).await?;
        self.inject(b, a, Mode::Drop).await
    }

    /// Clear every fault rule on every running member, retried until a deadline: a member
    /// may be busy, or just restarted and still opening its data dir (seconds on a loaded
    /// 2-core CI box, where a fixed 20 tries once ran out before member 2 listened).
    async fn heal_all(&self) -> Result<(), Error> {
        const HEAL_DEADLINE: Duration = Duration::from_secs(30);
        for id in self.running() {
            let mut ok = false;
            let deadline = Instant::now() + HEAL_DEADLINE;
            while Instant::now() < deadline {
                let mut c = self.client(id);
                let r = c
                    .inject_fault(api::InjectFaultRequest {
                        peer: 0,
                        mode: 0,
                        delay_ms: 0,
                        heal_all: true,
                    })
                    .await;
                match r {
                    Ok(_) => {
                        ok = true;
                        break;
                    }
                    Err(s) if s.code() == tonic::Code::PermissionDenied => {
                        return Err(Error::Cluster(format!(
                            "member {id}: {} (partition faults need it)",
                            s.message()
                        )))
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
            if !ok {
                return Err(Error::Cluster(format!(
                    "could not heal member {id}: it did not answer InjectFault within {} s",
                    HEAL_DEADLINE.as_secs()
                )));
            }
        }
        Ok(())
    }

    fn procs(&mut self, kind: FaultKind) -> Result<&mut LocalCluster, Error> {
        self.procs
            .as_mut()
            .ok_or(Error::NeedsProcesses(kind.name()))
    }
}

/// How one scenario runs.
#[derive(Debug, Clone)]
pub struct ScenarioConfig {
    pub kind: FaultKind,
    /// Total wall time of the fault phase (rounds are repeated until it is used up).
    pub duration: Duration,
    /// Workload before each fault.
    pub warm: Duration,
    /// How long a fault lasts.
    pub hold: Duration,
    /// Entries between snapshots on the replicas (SnapshotCatchUp waits for 1.5x this many
    /// acknowledged writes while the follower is down).
    pub snapshot_entries: u64,
    pub workload: WorkloadConfig,
    pub check: CheckConfig,
    /// Simulated nodes to register (as an agent would) and pin models to, for the
    /// placement-epoch checks; 0 turns them off (do not register fake nodes in a cluster
    /// that runs real agents: its scheduler would place models on them).
    pub placement_nodes: usize,
}

/// Figures and findings of one scenario.
#[derive(Debug, Clone, Default)]
pub struct ScenarioReport {
    pub kind: Option<FaultKind>,
    pub rounds: usize,
    pub ops: usize,
    pub ok: usize,
    pub fail: usize,
    pub unknown: usize,
    /// Reads among `unknown` (no answer in time: with ReadIndex collisions, defect 3 of
    /// issue 7, these happen even without faults).
    pub unknown_reads: usize,
    pub histories_checked: usize,
    pub states_explored: usize,
    /// Availability gap per round: fault start to the first acknowledged write invoked
    /// after it.
    pub gaps: Vec<Duration>,
    /// Rounds after which no leader was agreed within the recovery timeout.
    pub not_recovered: usize,
    /// Every finding, human-readable; the number of violations is its length.
    pub violations: Vec<String>,
    /// Keys the checker could not decide within its budget (neither pass nor fail).
    pub undecided: Vec<String>,
    /// Acknowledged placement pins (their epochs are checked).
    pub pins: usize,
    pub elapsed: Duration,
}

impl ScenarioReport {
    pub fn gap_pct(&self, p: f64) -> Option<Duration> {
        if self.gaps.is_empty() {
            return None;
        }
        // The workspace's one percentile implementation (an HDR histogram), nearest rank.
        let mut h = edgeplane_scheduler::latency::Latencies::default();
        for g in &self.gaps {
            h.record(*g);
        }
        Some(h.quantile(p))
    }
}

/// Run one scenario against `target`. `counters` is shared with the caller for progress.
pub async fn run_scenario(
    target: &mut Target,
    cfg: &ScenarioConfig,
    counters: Arc<Counters>,
) -> Result<ScenarioReport, Error> {
    cfg.workload.validate()?;
    if cfg.kind.needs_processes() && target.procs.is_none() {
        return Err(Error::NeedsProcesses(cfg.kind.name()));
    }
    let started = Instant::now();
    let clock = Clock::new();
    target
        .wait_leader(Duration::from_secs(20))
        .await
        .ok_or_else(|| Error::Cluster("no leader within 20 s before the run".into()))?;
    counters.stop.store(false, Ordering::Relaxed);
    counters.quiet.store(false, Ordering::Relaxed);

    // Observer: (term, leader) as every member sees it, for the one-leader-per-term check.
    let seen: Arc<Mutex<Vec<LeaderSeen>>> = Arc::default();
    // (member, node, epoch) from linearizable placement reads, in real-time order.
    let epochs: Arc<Mutex<Vec<(u64, String, u64)>>> = Arc::default();
    let observer = {
        let seen = seen.clone();
        let shared = target.shared.clone();
        let counters = counters.clone();
        let epochs = epochs.clone();
        let watch_placement = cfg.placement_nodes > 0;
        let prefix = format!("{}-node", cfg.workload.key_prefix);
        tokio::spawn(async move {
            while !counters.stop.load(Ordering::Relaxed) {
                let chans: Vec<(u64, Channel)> = shared
                    .read()
                    .expect("members lock")
                    .iter()
                    .map(|(i, c)| (*i, c.clone()))
                    .collect();
                for (id, ch) in &chans {
                    let mut c = AdminClient::new(ch.clone());
                    if let Ok(Ok(r)) = tokio::time::timeout(
                        Duration::from_millis(200),
                        c.cluster_status(api::ReadRequest { stale: true }),
                    )
                    .await
                    {
                        let r = r.into_inner();
                        seen.lock().expect("seen lock").push(LeaderSeen {
                            term: r.term,
                            leader: r.leader_id,
                            reported_by: r.id,
                        });
                    }
                    if watch_placement {
                        // Linearizable, one after another: epochs must not go down.
                        if let Ok(Ok(r)) = tokio::time::timeout(
                            Duration::from_millis(300),
                            c.show_placement(api::ReadRequest { stale: false }),
                        )
                        .await
                        {
                            let mut e = epochs.lock().expect("epochs lock");
                            for n in r.into_inner().nodes {
                                if n.node.starts_with(&prefix) {
                                    e.push((*id, n.node, n.epoch));
                                }
                            }
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    // Placement: simulated nodes, one client pinning models to them.
    let nodes: Vec<String> = (0..cfg.placement_nodes)
        .map(|i| format!("{}-node{i}", cfg.workload.key_prefix))
        .collect();
    let pins: Arc<Mutex<Vec<PinAck>>> = Arc::default();
    let pinner = if nodes.is_empty() {
        None
    } else {
        register_nodes(target, &nodes, Duration::from_secs(15)).await?;
        Some(tokio::spawn(pin_client(
            nodes.clone(),
            target.join_token.clone(),
            cfg.workload.key_names(),
            target.shared.clone(),
            clock,
            counters.clone(),
            pins.clone(),
            cfg.workload.seed,
        )))
    };

    // Workload.
    let members = target.shared.clone();
    let wl_deadline = Instant::now() + cfg.duration + Duration::from_secs(120);
    let mut clients = Vec::new();
    for i in 0..cfg.workload.clients {
        clients.push(tokio::spawn(workload::client(
            i,
            cfg.workload.clone(),
            members.clone(),
            clock,
            wl_deadline,
            counters.clone(),
        )));
    }

    // Fault schedule.
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.workload.seed ^ 0x5eed);
    let mut fault_times = Vec::new();
    let mut report = ScenarioReport {
        kind: Some(cfg.kind),
        ..Default::default()
    };
    let phase_end = Instant::now() + cfg.duration;
    let mut schedule_err = None;
    loop {
        tokio::time::sleep(cfg.warm).await;
        let Some(leader) = target.wait_leader(Duration::from_secs(15)).await else {
            report.not_recovered += 1;
            break;
        };
        counters.faults.fetch_add(1, Ordering::Relaxed);
        let mut at = clock.now();
        let r = one_round(
            target,
            cfg,
            leader,
            &mut rng,
            &counters,
            &clock,
            &mut at,
            &mut report.violations,
        )
        .await;
        fault_times.push(at);
        if let Err(e) = r {
            schedule_err = Some(e);
            break;
        }
        report.rounds += 1;
        if target.wait_leader(Duration::from_secs(15)).await.is_none() {
            report.not_recovered += 1;
        }
        if Instant::now() >= phase_end {
            break;
        }
    }
    // Let the workload see the healed cluster for a moment, then stop it.
    tokio::time::sleep(cfg.warm).await;
    counters.stop.store(true, Ordering::Relaxed);
    let mut history = History::default();
    for c in clients {
        history.ops.extend(
            c.await
                .map_err(|e| Error::Cluster(format!("client task: {e}")))?,
        );
    }
    let _ = observer.await;
    if let Some(p) = pinner {
        let _ = p.await;
    }
    if let Some(e) = schedule_err {
        return Err(e);
    }

    // Quiesce: everything up and healed, one leader.
    if let Some(p) = target.procs.as_mut() {
        for id in target.members.keys() {
            p.restart(*id)?;
        }
    }
    target.heal_all().await?;
    target
        .wait_leader(Duration::from_secs(30))
        .await
        .ok_or_else(|| Error::Cluster("no leader within 30 s after healing".into()))?;

    // Final linearizable reads through every member (part of the checked history).
    let mut finals: BTreeMap<String, Option<Value>> = BTreeMap::new();
    for key in cfg.workload.key_names() {
        for id in target.members.keys() {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let invoke = clock.now();
                match workload::get(&target.channels[id], &key, Duration::from_secs(3)).await {
                    Ok((v, rev)) => {
                        history.ops.push(Op {
                            client: 0,
                            key: key.clone(),
                            kind: OpKind::Read(v),
                            invoke,
                            complete: clock.now(),
                            outcome: Outcome::Ok,
                            revision: rev,
                            member: *id,
                        });
                        finals.entry(key.clone()).or_insert(v);
                        break;
                    }
                    Err(_) if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(50)).await
                    }
                    Err(c) => {
                        report.violations.push(format!(
                            "final read of {key} through member {id} failed for 10 s ({c:?})"
                        ));
                        break;
                    }
                }
            }
        }
    }

    // Checks.
    let chk = check_history(&history, cfg.check);
    report.histories_checked = chk.keys_checked;
    report.states_explored = chk.states_explored;
    report.undecided = chk.undecided.clone();
    for v in &chk.violations {
        report.violations.push(format!("linearizability: {v}"));
    }
    for (a, b) in revision_regressions(&history) {
        report.violations.push(format!(
            "revision went backwards:\n    {a}\n  then\n    {b}"
        ));
    }
    for w in lost_writes(&history, &finals) {
        report
            .violations
            .push(format!("acknowledged write lost: {w}"));
    }
    for (term, leaders) in split_brain(&seen.lock().expect("seen lock")) {
        report
            .violations
            .push(format!("term {term} had leaders {leaders:?}"));
    }
    for (a, b) in epoch_regressions(&pins.lock().expect("pins lock")) {
        report.violations.push(format!(
            "placement epoch did not increase on {}: pin of {} acknowledged epoch {} at {:.3} ms, \
             a later pin of {} (invoked {:.3} ms) answered epoch {}",
            a.node,
            a.model,
            a.epoch,
            a.complete as f64 / 1e6,
            b.model,
            b.invoke as f64 / 1e6,
            b.epoch
        ));
    }
    for (m, n, a, b) in observed_epoch_regressions(&epochs.lock().expect("epochs lock")) {
        report.violations.push(format!(
            "linearizable placement read through member {m} showed node {n} at epoch {b} \
             after an earlier read had shown epoch {a}"
        ));
    }
    report.pins = pins.lock().expect("pins lock").len();
    if let Some(v) = convergence(target).await {
        report.violations.push(v);
    }

    // Figures.
    let mut acked: Vec<&Op> = history
        .ops
        .iter()
        .filter(|o| o.outcome == Outcome::Ok && matches!(o.kind, OpKind::Write(_)))
        .collect();
    acked.sort_by_key(|o| o.complete);
    for t in fault_times {
        if let Some(o) = acked.iter().find(|o| o.invoke >= t) {
            report.gaps.push(Duration::from_nanos(o.complete - t));
        }
    }
    report.ops = history.ops.len();
    report.ok = history
        .ops
        .iter()
        .filter(|o| o.outcome == Outcome::Ok)
        .count();
    report.fail = history
        .ops
        .iter()
        .filter(|o| o.outcome == Outcome::Fail)
        .count();
    report.unknown = history
        .ops
        .iter()
        .filter(|o| o.outcome == Outcome::Unknown)
        .count();
    report.unknown_reads = history
        .ops
        .iter()
        .filter(|o| o.outcome == Outcome::Unknown && matches!(o.kind, OpKind::Read(_)))
        .count();
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Register `nodes` as an agent would (one simulated accelerator each).
async fn register_nodes(target: &Target, nodes: &[String], timeout: Duration) -> Result<(), Error> {
    use edgeplane_proto::agent::{self as ag, agent_client::AgentClient};
    let deadline = Instant::now() + timeout;
    for n in nodes {
        let mut i = 0usize;
        loop {
            let chans: Vec<Channel> = target.channels.values().cloned().collect();
            let mut c = AgentClient::new(chans[i % chans.len()].clone());
            i += 1;
            let r = tokio::time::timeout(
                Duration::from_secs(3),
                c.register(ag::RegisterRequest {
                    name: n.clone(),
                    join_token: target.join_token.clone(),
                    agent_addr: "127.0.0.1:9".into(),
                    accelerators: vec![ag::Accelerator {
                        id: "npu0".into(),
                        kind: "npu-ws".into(),
                        name: "Acc0_2K".into(),
                        memory_mb: 4096,
                        mig_capable: false,
                        sm_count: 0,
                        simulated: true,
                        ..Default::default()
                    }],
                    assignment_epoch: 0,
                    csr: String::new(),
                    joined_from_ip: String::new(),
                }),
            )
            .await;
            match r {
                Ok(Ok(_)) => break,
                Ok(Err(s))
                    if matches!(
                        s.code(),
                        tonic::Code::PermissionDenied | tonic::Code::Unauthenticated
                    ) =>
                {
                    return Err(Error::Cluster(format!(
                        "registering simulated node {n}: {}",
                        s.message()
                    )))
                }
                _ if Instant::now() > deadline => {
                    return Err(Error::Cluster(format!(
                        "could not register simulated node {n} within {timeout:?}"
                    )))
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
    Ok(())
}

/// Pin workload models to the simulated nodes until stopped, recording acknowledged epochs.
/// Re-registers the nodes every 2 s (as an agent whose lease lapsed would), so a node
/// record that was dropped and recreated shows up as an epoch going backwards.
#[allow(clippy::too_many_arguments)]
async fn pin_client(
    nodes: Vec<String>,
    join_token: String,
    models: Vec<String>,
    members: Members,
    clock: Clock,
    counters: Arc<Counters>,
    out: Arc<Mutex<Vec<PinAck>>>,
    seed: u64,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x91a);
    let mut client_id = rng.gen::<u64>() | 1;
    let mut seq = 0;
    let mut last_register = Instant::now();
    while !counters.stop.load(Ordering::Relaxed) {
        let view: Vec<(u64, Channel)> = members
            .read()
            .expect("members lock")
            .iter()
            .map(|(i, c)| (*i, c.clone()))
            .collect();
        if last_register.elapsed() > Duration::from_secs(2) {
            last_register = Instant::now();
            let (_, ch) = &view[rng.gen_range(0..view.len())];
            let mut c = edgeplane_proto::agent::agent_client::AgentClient::new(ch.clone());
            for n in &nodes {
                let _ = tokio::time::timeout(
                    Duration::from_secs(1),
                    c.register(edgeplane_proto::agent::RegisterRequest {
                        name: n.clone(),
                        join_token: join_token.clone(),
                        agent_addr: "127.0.0.1:9".into(),
                        accelerators: vec![edgeplane_proto::agent::Accelerator {
                            id: "npu0".into(),
                            kind: "npu-ws".into(),
                            name: "Acc0_2K".into(),
                            memory_mb: 4096,
                            mig_capable: false,
                            sm_count: 0,
                            simulated: true,
                            ..Default::default()
                        }],
                        assignment_epoch: 0,
                        csr: String::new(),
                        joined_from_ip: String::new(),
                    }),
                )
                .await;
            }
        }
        let (_, ch) = &view[rng.gen_range(0..view.len())];
        let node = nodes[rng.gen_range(0..nodes.len())].clone();
        let model = models[rng.gen_range(0..models.len())].clone();
        seq += 1;
        let mut c = AdminClient::new(ch.clone());
        let invoke = clock.now();
        let r = tokio::time::timeout(
            Duration::from_secs(1),
            c.set_placement(api::SetPlacementRequest {
                meta: Some(api::WriteMeta { client_id, seq }),
                node: node.clone(),
                model: model.clone(),
                accelerator: String::new(),
            }),
        )
        .await;
        let complete = clock.now();
        match r {
            Ok(Ok(r)) => out.lock().expect("pins lock").push(PinAck {
                node,
                model,
                invoke,
                complete,
                epoch: r.into_inner().epoch,
            }),
            Ok(Err(s)) if matches!(s.code(), tonic::Code::InvalidArgument) => {
                // Model not deployed yet, node not registered: certainly not applied.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            _ => {
                client_id = rng.gen::<u64>() | 1;
                seq = 0;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Replicas at the same applied index must hold identical state. Polls until every member
/// reports the same applied index (no writes run any more), then compares hashes.
async fn convergence(target: &Target) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = BTreeMap::new();
    loop {
        last.clear();
        for id in target.members.keys() {
            let mut c = target.client(*id);
            if let Ok(Ok(r)) = tokio::time::timeout(
                Duration::from_secs(1),
                c.state_hash(api::ReadRequest { stale: true }),
            )
            .await
            {
                let r = r.into_inner();
                last.insert(*id, (r.applied_index, r.hash));
            }
        }
        let idx: BTreeSet<u64> = last.values().map(|x| x.0).collect();
        if last.len() == target.members.len() && idx.len() == 1 {
            let hashes: BTreeSet<u64> = last.values().map(|x| x.1).collect();
            return (hashes.len() > 1).then(|| {
                format!(
                    "replicas diverged at the same applied index: (index, hash) by member {last:?}"
                )
            });
        }
        if Instant::now() > deadline {
            return Some(format!(
                "replicas did not converge to one applied index within 15 s: {last:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Inject one fault of `cfg.kind`, hold it, undo it. `at` is set to the moment the fault
/// was fully in effect (the availability gap is measured from there). Findings during the
/// round (membership changes acknowledged but not applied) go to `findings`.
#[allow(clippy::too_many_arguments)]
async fn one_round(
    target: &mut Target,
    cfg: &ScenarioConfig,
    leader: u64,
    rng: &mut ChaCha8Rng,
    counters: &Counters,
    clock: &Clock,
    at: &mut u64,
    findings: &mut Vec<String>,
) -> Result<(), Error> {
    use api::inject_fault_request::Mode;
    let ids: Vec<u64> = target.members.keys().copied().collect();
    let followers: Vec<u64> = ids.iter().copied().filter(|i| *i != leader).collect();
    if followers.is_empty() {
        return Err(Error::Cluster(format!(
            "fault {} needs at least 2 members; the cluster lists {ids:?}",
            cfg.kind.name()
        )));
    }
    let follower = followers[rng.gen_range(0..followers.len())];
    let kind = cfg.kind;
    tracing::info!(fault = kind.name(), leader, follower, "injecting fault");
    match kind {
        FaultKind::KillLeader | FaultKind::KillFollower => {
            let victim = if kind == FaultKind::KillLeader {
                leader
            } else {
                follower
            };
            target.procs(kind)?.kill(victim);
            *at = clock.now();
            tokio::time::sleep(cfg.hold).await;
            target.procs(kind)?.restart(victim)?;
        }
        FaultKind::KillMajority => {
            let p = target.procs(kind)?;
            p.kill(leader);
            p.kill(follower);
            *at = clock.now();
            tokio::time::sleep(cfg.hold).await;
            let p = target.procs(kind)?;
            p.restart(leader)?;
            p.restart(follower)?;
        }
        FaultKind::KillAll => {
            let p = target.procs(kind)?;
            for id in &ids {
                p.kill(*id);
            }
            *at = clock.now();
            tokio::time::sleep(cfg.hold / 2).await;
            let p = target.procs(kind)?;
            for id in &ids {
                p.restart(*id)?;
            }
        }
        FaultKind::PauseLeader => {
            target.procs(kind)?.pause(leader)?;
            *at = clock.now();
            tokio::time::sleep(cfg.hold.max(target.election_timeout * 3)).await;
            target.procs(kind)?.resume(leader)?;
        }
        FaultKind::SnapshotCatchUp => {
            target.procs(kind)?.kill(follower);
            *at = clock.now();
            let need = counters.acked_writes.load(Ordering::Relaxed) + cfg.snapshot_entries * 3 / 2;
            let deadline = Instant::now() + cfg.hold * 10;
            while counters.acked_writes.load(Ordering::Relaxed) < need && Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            counters.quiet.store(true, Ordering::Relaxed);
            target.procs(kind)?.restart(follower)?;
            tokio::time::sleep(cfg.hold).await;
            counters.quiet.store(false, Ordering::Relaxed);
        }
        FaultKind::PartitionLeader | FaultKind::PartitionFollower => {
            let victim = if kind == FaultKind::PartitionLeader {
                leader
            } else {
                follower
            };
            for other in ids.iter().filter(|i| **i != victim) {
                target.cut(victim, *other).await?;
            }
            *at = clock.now();
            tokio::time::sleep(cfg.hold).await;
            target.heal_all().await?;
        }
        FaultKind::OneWay => {
            for f in &followers {
                target.inject(leader, *f, Mode::DropOutbound).await?;
            }
            *at = clock.now();
            tokio::time::sleep(cfg.hold).await;
            target.heal_all().await?;
        }
        FaultKind::Flapping => {
            let end = Instant::now() + cfg.hold;
            while Instant::now() < end {
                let a = ids[rng.gen_range(0..ids.len())];
                let b = ids[rng.gen_range(0..ids.len())];
                if a != b {
                    target.cut(a, b).await?;
                }
                tokio::time::sleep(Duration::from_millis(rng.gen_range(150..400))).await;
                if rng.gen_bool(0.5) {
                    target.heal_all().await?;
                }
            }
            target.heal_all().await?;
        }
        FaultKind::MemberReplace => {
            let new_id = target.procs(kind)?.max_id() + 1;
            let peers: BTreeMap<u64, String> = ids
                .iter()
                .filter_map(|i| {
                    let p = target.procs.as_ref()?.peer_addr(*i)?;
                    Some((*i, p.to_string()))
                })
                .collect();
            let (peer, client) = target.procs(kind)?.add_replica(new_id, &peers)?;
            let add = |learner| MemberChange::Add {
                id: new_id,
                peer_addr: peer.clone(),
                client_addr: client.clone(),
                learner,
            };
            let observers: Vec<u64> = ids.clone();
            change_membership(target, &observers, add(true), findings, |s| {
                s.members
                    .iter()
                    .any(|m| m.id == new_id && m.role == "learner")
            })
            .await?;
            wait_caught_up(target, &observers, new_id, &client).await?;
            change_membership(target, &observers, add(false), findings, |s| {
                s.members
                    .iter()
                    .any(|m| m.id == new_id && m.role != "learner" && m.role != "unknown")
            })
            .await?;
            // Alternate: a follower in odd rounds, the leader in even ones.
            let victim = if counters.faults.load(Ordering::Relaxed).is_multiple_of(2) {
                leader
            } else {
                follower
            };
            let rest: Vec<u64> = ids.iter().copied().filter(|i| *i != victim).collect();
            change_membership(target, &rest, MemberChange::Remove(victim), findings, |s| {
                !s.members.iter().any(|m| m.id == victim)
            })
            .await?;
            *at = clock.now();
            // A removed leader must hand over (raft-rs 0.7 would leave it in charge).
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let mut leads = None;
                for id in &rest {
                    if let Some(s) = target.status(*id).await {
                        leads = Some(s.leader_id);
                        break;
                    }
                }
                if leads.is_some_and(|l| l != victim && l != 0) {
                    break;
                }
                if Instant::now() > deadline {
                    findings.push(format!(
                        "member {victim} was removed (acknowledged and applied) but the \
                         remaining members still name {leads:?} as leader after 5 s"
                    ));
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            target.procs(kind)?.decommission(victim);
            target.replace_member(victim, new_id, &client)?;
            tokio::time::sleep(cfg.hold).await;
        }
    }
    Ok(())
}

enum MemberChange {
    Add {
        id: u64,
        peer_addr: String,
        client_addr: String,
        learner: bool,
    },
    Remove(u64),
}

/// Propose a membership change until it is applied, as seen in `cluster status` of one of
/// `observers`. An acknowledged change that does not show within 5 s is a finding (then
/// retried under a new sequence number so the scenario can go on).
async fn change_membership(
    target: &Target,
    observers: &[u64],
    change: MemberChange,
    findings: &mut Vec<String>,
    applied: impl Fn(&api::ClusterStatusResponse) -> bool,
) -> Result<(), Error> {
    let what = match &change {
        MemberChange::Add { id, learner, .. } => {
            format!(
                "member add {id}{}",
                if *learner { " --learner" } else { "" }
            )
        }
        MemberChange::Remove(id) => format!("member remove {id}"),
    };
    let client_id = rand::random::<u64>() | 1;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seq = 0;
    loop {
        seq += 1;
        let via = observers[seq as usize % observers.len()];
        let meta = Some(api::WriteMeta { client_id, seq });
        let mut c = target.client(via);
        let r = match &change {
            MemberChange::Add {
                id,
                peer_addr,
                client_addr,
                learner,
            } => {
                tokio::time::timeout(
                    Duration::from_secs(5),
                    c.add_member(api::AddMemberRequest {
                        meta,
                        id: *id,
                        peer_addr: peer_addr.clone(),
                        client_addr: client_addr.clone(),
                        learner: *learner,
                    }),
                )
                .await
            }
            MemberChange::Remove(id) => {
                tokio::time::timeout(
                    Duration::from_secs(5),
                    c.remove_member(api::RemoveMemberRequest { meta, id: *id }),
                )
                .await
            }
        };
        if let Ok(Ok(_)) = r {
            let until = Instant::now() + Duration::from_secs(5);
            loop {
                if seen(target, observers, &applied).await {
                    return Ok(());
                }
                if Instant::now() > until {
                    findings.push(format!(
                        "{what} was acknowledged (through member {via}) but not applied within 5 s"
                    ));
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        } else if seen(target, observers, &applied).await {
            // An earlier attempt with an unknown outcome did apply.
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::Cluster(format!("{what} did not apply within 30 s")));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Whether any of `observers` shows the change `applied`.
async fn seen(
    target: &Target,
    observers: &[u64],
    applied: &impl Fn(&api::ClusterStatusResponse) -> bool,
) -> bool {
    for id in observers {
        if let Some(s) = target.status(*id).await {
            if applied(&s) {
                return true;
            }
        }
    }
    false
}

/// Wait until replica `id` applied what the cluster had committed when we started waiting.
async fn wait_caught_up(
    target: &Target,
    observers: &[u64],
    id: u64,
    client_addr: &str,
) -> Result<(), Error> {
    let mut commit = None;
    for o in observers {
        if let Some(s) = target.status(*o).await {
            commit = Some(s.commit_index);
            break;
        }
    }
    let commit = commit.ok_or_else(|| Error::Cluster("no member answers status".into()))?;
    let mut c = AdminClient::new(channel(client_addr)?);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Ok(r)) = tokio::time::timeout(
            Duration::from_millis(500),
            c.state_hash(api::ReadRequest { stale: true }),
        )
        .await
        {
            if r.into_inner().applied_index >= commit {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(Error::Cluster(format!(
                "new member {id} did not catch up to index {commit} within 20 s"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_names_round_trip_and_unknown_names_are_refused() {
        for k in FaultKind::ALL {
            assert_eq!(FaultKind::parse(k.name()).unwrap(), k);
        }
        let e = FaultKind::parse("kill-everything").unwrap_err().to_string();
        assert!(e.contains("faults") && e.contains("kill-leader"), "{e}");
        // Only the signal-based kinds need our own processes.
        let hook: Vec<_> = FaultKind::ALL
            .iter()
            .filter(|k| !k.needs_processes())
            .map(|k| k.name())
            .collect();
        assert_eq!(
            hook,
            [
                "partition-leader",
                "partition-follower",
                "one-way",
                "flapping"
            ]
        );
    }

    #[test]
    fn gap_percentiles_are_nearest_rank_from_the_histogram() {
        let r = ScenarioReport {
            gaps: [400, 100, 300, 200, 1000]
                .iter()
                .map(|ms| Duration::from_millis(*ms))
                .collect(),
            ..Default::default()
        };
        // Sorted: 100 200 300 400 1000; nearest rank: p50 -> 3rd, p99 -> 5th (within the
        // histogram's 0.1%).
        let near = |d: Option<Duration>, ms: f64| {
            let got = d.unwrap().as_secs_f64() * 1e3;
            assert!((got - ms).abs() <= ms * 0.001, "{got} vs {ms}");
        };
        near(r.gap_pct(0.5), 300.0);
        near(r.gap_pct(0.99), 1000.0);
        assert_eq!(ScenarioReport::default().gap_pct(0.5), None);
    }
}
