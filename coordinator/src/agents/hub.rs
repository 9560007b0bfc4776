//! Leader memory for agents: leases, per-node live figures and the observed rates the
//! planner plans on. Only decisions go through Raft; reports stay here.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgeplane_proto::agent as api;
use tokio::sync::watch;

use super::leases::LeaseConfig;
use crate::live::{LiveStats, ModelLiveStats, NodeLiveStats, PartitionLive};

/// Counters an agent process reports as totals since it started (or carries over).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Totals {
    met: u64,
    missed: u64,
    energy_j: f64,
}

impl Totals {
    fn plus(self, o: Totals) -> Totals {
        Totals {
            met: self.met + o.met,
            missed: self.missed + o.missed,
            energy_j: self.energy_j + o.energy_j,
        }
    }
}

/// One model on one node, from the node's last report.
#[derive(Debug, Default, Clone, PartialEq)]
struct ModelLive {
    met: u64,
    missed: u64,
    energy_j: f64,
    /// Requests/s over the rate window (arrivals plus refusals).
    rate: f64,
}

/// A (uptime, demand so far) sample of one model on one node.
#[derive(Debug, Clone, Copy, PartialEq)]
struct DemandSample {
    uptime_s: f64,
    demand: u64,
}

/// A GPU partition from the node's last report, with the utilisation derived from it.
#[derive(Debug, Clone, PartialEq)]
struct PartitionSample {
    uptime_s: f64,
    busy_s: f64,
    /// Busy share since the previous report, 0..1.
    utilisation: f64,
    report: api::AcceleratorReport,
}

#[derive(Debug, Default, Clone)]
struct NodeLive {
    /// Totals since the node joined (earlier agent processes included).
    totals: Totals,
    /// Totals of earlier agent processes (an agent's counters restart with it; `nodes list`
    /// shows totals since the node joined), and the last report's raw totals and uptime.
    base: Totals,
    raw: Totals,
    uptime_s: f64,
    models: BTreeMap<String, ModelLive>,
    /// Models whose rate is measured over a whole rate window: until then the planner must
    /// not take a partial window for a rate (a model that just started looks idle).
    rate_known: BTreeSet<String>,
    /// Samples spanning the rate window, per model.
    history: BTreeMap<String, VecDeque<DemandSample>>,
    /// GPU partitions by id.
    partitions: BTreeMap<String, PartitionSample>,
}

#[derive(Default)]
pub(super) struct Inner {
    pub(super) leases: HashMap<String, Instant>,
    live: HashMap<String, NodeLive>,
}

impl Inner {
    /// Forget everything (this member stopped leading).
    pub(super) fn clear(&mut self) {
        self.leases.clear();
        self.live.clear();
    }
}

/// Leader memory for agents. Shared by the gRPC service, the lease task, the placement
/// loop and (as [`LiveStats`]) the Admin service.
pub struct AgentHub {
    pub(super) inner: Mutex<Inner>,
    /// node → the node's assignment epoch, for the node's open sessions (see
    /// [`super::notify`]).
    pub(super) epochs: Mutex<HashMap<String, watch::Sender<u64>>>,
    pub lease: LeaseConfig,
    /// Observed rates are measured over this window.
    pub rate_window: Duration,
}

impl AgentHub {
    /// A hub with these leases, measuring rates over `rate_window`.
    pub fn new(lease: LeaseConfig, rate_window: Duration) -> Arc<Self> {
        Arc::new(AgentHub {
            inner: Mutex::new(Inner::default()),
            epochs: Mutex::new(HashMap::new()),
            lease,
            rate_window,
        })
    }

    pub(super) fn renew(&self, node: &str) {
        self.inner
            .lock()
            .expect("agent hub lock")
            .leases
            .insert(node.to_string(), Instant::now());
    }

    /// Observed request rate per model (requests/s), summed over nodes: the planner's input.
    /// Only measured rates (a model first seen in this report has none yet).
    pub fn rates(&self) -> BTreeMap<String, f64> {
        let g = self.inner.lock().expect("agent hub lock");
        let mut out = BTreeMap::new();
        let now = Instant::now();
        for (node, n) in &g.live {
            // a node not heard from for two report periods (killed, cut off) no longer
            // carries its traffic: its last rate must not add to the rate of the node that
            // took its models over
            if g.leases
                .get(node)
                .is_some_and(|t| now.duration_since(*t) > 2 * self.lease.renew)
            {
                continue;
            }
            for (m, v) in &n.models {
                if n.rate_known.contains(m) {
                    *out.entry(m.clone()).or_insert(0.0) += v.rate;
                }
            }
        }
        out
    }

    /// The GPU partitions `node` reported last (empty when unknown).
    pub fn partitions(&self, node: &str) -> Vec<PartitionLive> {
        let g = self.inner.lock().expect("agent hub lock");
        g.live
            .get(node)
            .map(|n| {
                n.partitions
                    .values()
                    .map(|s| PartitionLive {
                        id: s.report.id.clone(),
                        accelerator_id: s.report.accelerator_id.clone(),
                        share_pct: s.report.share_pct,
                        models: s.report.models.clone(),
                        ready: s.report.ready,
                        utilisation: s.utilisation,
                        busy_s: s.report.busy_s,
                        energy_j: s.report.energy_j,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Models `node` serves on a ready partition, per its last report.
    pub fn ready_models(&self, node: &str) -> BTreeSet<String> {
        self.partitions(node)
            .into_iter()
            .filter(|p| p.ready)
            .flat_map(|p| p.models)
            .collect()
    }

    /// Record an accepted report.
    pub(super) fn record(&self, node: &str, r: &api::Report) {
        let mut g = self.inner.lock().expect("agent hub lock");
        g.leases.insert(node.to_string(), Instant::now());
        let live = g.live.entry(node.to_string()).or_default();
        if r.uptime_s < live.uptime_s {
            // A new agent process: the rates of the old one are not this one's traffic
            // (a restarted node must not add its pre-crash rates to the nodes that took
            // its models over).
            live.models.clear();
            live.history.clear();
            live.rate_known.clear();
        }
        let mut raw = Totals::default();
        for m in &r.models {
            raw = raw.plus(Totals {
                met: m.deadlines_met,
                missed: m.deadlines_missed,
                energy_j: m.energy_j,
            });
            let rate = live.measure_rate(r.uptime_s, m, self.rate_window.as_secs_f64());
            live.models.insert(
                m.model.clone(),
                ModelLive {
                    met: m.deadlines_met,
                    missed: m.deadlines_missed,
                    energy_j: m.energy_j,
                    rate,
                },
            );
        }
        live.record_partitions(r);
        if r.uptime_s < live.uptime_s {
            // The agent restarted: carry what its previous process had reported.
            live.base = live.base.plus(live.raw);
        }
        live.raw = raw;
        live.uptime_s = r.uptime_s;
        live.totals = live.base.plus(raw);
    }
}

impl NodeLive {
    /// The rate of `m` over the last `window` seconds of this agent process (a report
    /// window alone is too short: 10 Poisson arrivals swing by a third). Demand counts
    /// the requests refused because the model is not assigned there: a model served
    /// nowhere still has its traffic measured.
    fn measure_rate(&mut self, uptime_s: f64, m: &api::ModelReport, window: f64) -> f64 {
        let demand = m.arrivals.saturating_add(m.refused);
        let h = self.history.entry(m.model.clone()).or_default();
        if h.back()
            .is_some_and(|s| uptime_s < s.uptime_s || demand < s.demand)
        {
            h.clear(); // the agent restarted: its counters start over
        }
        h.push_back(DemandSample { uptime_s, demand });
        while h.len() > 2 && uptime_s - h[1].uptime_s >= window {
            h.pop_front();
        }
        let first = h[0];
        if uptime_s > first.uptime_s {
            if uptime_s - first.uptime_s >= 0.8 * window {
                self.rate_known.insert(m.model.clone());
            }
            (demand - first.demand) as f64 / (uptime_s - first.uptime_s)
        } else {
            self.models.get(&m.model).map_or(0.0, |v| v.rate)
        }
    }

    /// Replace the partitions with the report's, deriving each one's utilisation.
    fn record_partitions(&mut self, r: &api::Report) {
        let mut parts = BTreeMap::new();
        for a in r.accelerators.iter().filter(|a| a.partition) {
            let utilisation = match self.partitions.get(&a.id) {
                Some(p) if r.uptime_s > p.uptime_s && a.busy_s >= p.busy_s => {
                    ((a.busy_s - p.busy_s) / (r.uptime_s - p.uptime_s)).clamp(0.0, 1.0)
                }
                Some(p) => p.utilisation,
                None => 0.0,
            };
            parts.insert(
                a.id.clone(),
                PartitionSample {
                    uptime_s: r.uptime_s,
                    busy_s: a.busy_s,
                    utilisation,
                    report: a.clone(),
                },
            );
        }
        self.partitions = parts;
    }
}

impl LiveStats for AgentHub {
    fn node(&self, name: &str) -> Option<NodeLiveStats> {
        let g = self.inner.lock().expect("agent hub lock");
        g.live.get(name).map(|n| NodeLiveStats {
            deadlines_met: n.totals.met,
            deadlines_missed: n.totals.missed,
            energy_j: n.totals.energy_j,
        })
    }

    fn model(&self, name: &str) -> Option<ModelLiveStats> {
        let g = self.inner.lock().expect("agent hub lock");
        let mut found = false;
        let (mut rate, mut sum) = (0.0, Totals::default());
        for n in g.live.values() {
            if let Some(v) = n.models.get(name) {
                found = true;
                rate += v.rate;
                sum = sum.plus(Totals {
                    met: v.met,
                    missed: v.missed,
                    energy_j: v.energy_j,
                });
            }
        }
        found.then(|| ModelLiveStats {
            rate,
            deadline_met_pct: if sum.met + sum.missed == 0 {
                0.0
            } else {
                100.0 * sum.met as f64 / (sum.met + sum.missed) as f64
            },
            energy_j: sum.energy_j,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agents::checks::check_report;

    fn hub(window: Duration) -> Arc<AgentHub> {
        AgentHub::new(
            LeaseConfig {
                renew: Duration::from_secs(2),
                timeout: Duration::from_secs(10),
            },
            window,
        )
    }

    fn report(uptime: f64, arrivals: u64) -> api::Report {
        api::Report {
            seq: 1,
            assignment_epoch: 0,
            uptime_s: uptime,
            models: vec![api::ModelReport {
                model: "m".into(),
                arrivals,
                completions: arrivals,
                deadlines_met: arrivals,
                deadlines_missed: 0,
                drops: 0,
                p50_ms: 1.0,
                p99_ms: 2.0,
                energy_j: 0.5,
                refused: 0,
            }],
            accelerators: vec![],
            decision_overhead_us: 1.0,
        }
    }

    #[test]
    fn rates_from_consecutive_reports() {
        let hub = hub(Duration::from_secs(1));
        hub.record("a", &report(1.0, 10));
        hub.record("a", &report(2.0, 60));
        hub.record("b", &report(5.0, 0));
        hub.record("b", &report(7.0, 20));
        assert_eq!(hub.rates()["m"], 50.0 + 10.0);
        let m = hub.model("m").unwrap();
        assert_eq!(m.deadline_met_pct, 100.0);
        assert_eq!(hub.node("a").unwrap().deadlines_met, 60);
        // Agent "a" restarts: its counters start over, the node's totals do not.
        hub.record("a", &report(0.5, 4));
        assert_eq!(hub.node("a").unwrap().deadlines_met, 64);
        assert!(hub.model("other").is_none());
    }

    #[test]
    fn refused_requests_count_into_the_observed_rate() {
        let hub = hub(Duration::from_secs(1));
        // node "a" serves m: 10 arrivals in 1 s; node "b" does not: it refuses 30 in 1 s
        hub.record("a", &report(1.0, 0));
        hub.record("a", &report(2.0, 10));
        let mut r = report(1.0, 0);
        r.models[0].refused = 5;
        hub.record("b", &r);
        r = report(2.0, 0);
        r.models[0].refused = 35;
        hub.record("b", &r);
        assert_eq!(hub.rates()["m"], 10.0 + 30.0);
    }

    #[test]
    fn rates_are_measured_over_the_window_and_unknown_before_it_is_full() {
        let hub = hub(Duration::from_secs(5));
        // reports every 0.2 s, 50 req/s but bursty within the window (0 or 20 per report)
        let mut arrivals = 0;
        for i in 1..=15 {
            arrivals += if i % 2 == 0 { 20 } else { 0 };
            hub.record("a", &report(i as f64 * 0.2, arrivals));
        }
        assert!(hub.rates().is_empty(), "3 s seen, window 5 s: no rate yet");
        for i in 16..=40 {
            arrivals += if i % 2 == 0 { 20 } else { 0 };
            hub.record("a", &report(i as f64 * 0.2, arrivals));
        }
        let r = hub.rates()["m"];
        // 13 bursts of 20 in the last 5 s: 52 req/s (the window edge cuts a burst)
        assert!((r - 52.0).abs() < 1e-9, "{r}");
    }

    #[test]
    fn nan_in_a_report_is_refused_naming_the_field() {
        let mut r = report(1.0, 1);
        r.models[0].p99_ms = f64::NAN;
        assert!(check_report(&r).unwrap_err().contains("models.p99_ms"));
        assert!(check_report(&report(1.0, 1)).is_ok());
    }
}
