//! The agent's Prometheus metrics (`--metrics-addr`), read from the shared counters at each
//! scrape through a `prometheus-client` collector, served as OpenMetrics text on
//! `GET /metrics`.
//!
//! Counters (`_total` in the exposition), labelled `model`:
//! `edgeplane_agent_arrivals`, `edgeplane_agent_completions`,
//! `edgeplane_agent_deadlines_met`, `edgeplane_agent_deadlines_missed`,
//! `edgeplane_agent_drops`, `edgeplane_agent_cancelled` (since start, not persisted),
//! `edgeplane_agent_energy_joules`; labelled `accelerator`:
//! `edgeplane_agent_accelerator_busy_seconds`, `edgeplane_agent_accelerator_energy_joules`.
//! Gauges: `edgeplane_agent_assignment_epoch`, `edgeplane_agent_connected` (1 while a
//! leader session is open), `edgeplane_agent_latency_p99_seconds{model}` (since start).
//! With SDRM3: `edgeplane_agent_sdrm3_tuner_steps` (counter), `edgeplane_agent_sdrm3_profile
//! {profile}` (1 on the weights' profile, `tuned` once moved off them) and
//! `edgeplane_agent_supernet_accuracy` (mean accuracy of completed jobs).
//! Counters continue across restarts (they are persisted in the data dir).

use crate::runtime::Shared;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::sync::Arc;

struct StatsCollector(Arc<Shared>);

impl std::fmt::Debug for StatsCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StatsCollector")
    }
}

type Labels = [(&'static str, String); 1];

fn family<M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: Vec<(Labels, M)>,
    kind: prometheus_client::metrics::MetricType,
) -> Result<(), std::fmt::Error> {
    let mut fam = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, m) in rows {
        m.encode(fam.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for StatsCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.0.ledger.read(|st| encode_stats(&self.0, st, &mut enc))
    }
}

type Get = fn(&crate::stats::ModelStats) -> f64;

/// The per-model counters: name, help, value.
const PER_MODEL: [(&str, &str, Get); 7] = [
    (
        "edgeplane_agent_arrivals",
        "Frames or requests that arrived",
        |m| m.arrivals as f64,
    ),
    ("edgeplane_agent_completions", "Jobs completed", |m| {
        m.completions as f64
    }),
    (
        "edgeplane_agent_deadlines_met",
        "Jobs completed by their deadline",
        |m| m.met as f64,
    ),
    (
        "edgeplane_agent_deadlines_missed",
        "Jobs completed after their deadline",
        |m| m.missed as f64,
    ),
    (
        "edgeplane_agent_drops",
        "Jobs dropped (not servable in time, not served here)",
        |m| m.drops as f64,
    ),
    (
        "edgeplane_agent_cancelled",
        "Requests whose client went away before they were sent to a worker",
        |m| m.cancelled as f64,
    ),
    (
        "edgeplane_agent_energy_joules",
        "Modelled energy spent",
        |m| m.energy_mj / 1000.0,
    ),
];

fn encode_stats(
    sh: &Shared,
    st: &crate::stats::Stats,
    enc: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    use prometheus_client::metrics::MetricType::{Counter, Gauge};
    {
        for (name, help, get) in PER_MODEL {
            let rows = st
                .models
                .iter()
                .map(|(n, m)| ([("model", n.clone())], ConstCounter::new(get(m))))
                .collect();
            family(enc, name, help, rows, Counter)?;
        }
        let rows = st
            .models
            .iter()
            .map(|(n, m)| {
                (
                    [("model", n.clone())],
                    ConstGauge::new(m.all.quantile_ms(0.99) / 1000.0),
                )
            })
            .collect();
        family(
            enc,
            "edgeplane_agent_latency_p99_seconds",
            "99th percentile latency of completed jobs since start",
            rows,
            Gauge,
        )?;
        let busy = st
            .accelerators
            .iter()
            .map(|(id, a)| {
                (
                    [("accelerator", id.clone())],
                    ConstCounter::new(a.busy_ms / 1000.0),
                )
            })
            .collect();
        family(
            enc,
            "edgeplane_agent_accelerator_busy_seconds",
            "Time the accelerator spent executing",
            busy,
            Counter,
        )?;
        let energy = st
            .accelerators
            .iter()
            .map(|(id, a)| {
                (
                    [("accelerator", id.clone())],
                    ConstCounter::new(a.energy_mj / 1000.0),
                )
            })
            .collect();
        family(
            enc,
            "edgeplane_agent_accelerator_energy_joules",
            "Modelled energy the accelerator spent",
            energy,
            Counter,
        )?;
        let controllers = st.controllers.clone();
        if let Some(c) = controllers {
            encode_controllers(enc, &c)?;
        }
        let epoch = ConstGauge::new(sh.epoch() as i64);
        epoch.encode(enc.encode_descriptor(
            "edgeplane_agent_assignment_epoch",
            "Epoch of the assignment served",
            None,
            Gauge,
        )?)?;
        let connected = sh.connected.read().expect("connected lock").is_some();
        ConstGauge::new(i64::from(connected)).encode(enc.encode_descriptor(
            "edgeplane_agent_connected",
            "1 while a session with the coordinator leader is open",
            None,
            Gauge,
        )?)?;
        Ok(())
    }
}

/// SDRM3's controllers: tuner steps, the current weights' profile (an info-style gauge, 1 on
/// the profile in use) and the mean Supernet accuracy of completed jobs.
fn encode_controllers(
    enc: &mut DescriptorEncoder,
    c: &crate::sched::ControllerStatus,
) -> Result<(), std::fmt::Error> {
    use prometheus_client::metrics::MetricType::{Counter, Gauge};
    ConstCounter::new(c.tuner_steps).encode(enc.encode_descriptor(
        "edgeplane_agent_sdrm3_tuner_steps",
        "Gradient steps SDRM3's online tuner took",
        None,
        Counter,
    )?)?;
    family(
        enc,
        "edgeplane_agent_sdrm3_profile",
        "1 on the weight profile SDRM3 runs (tuned: moved off every profile by the tuner)",
        vec![([("profile", c.profile.clone())], ConstGauge::new(1))],
        Gauge,
    )?;
    ConstGauge::new(c.accuracy).encode(enc.encode_descriptor(
        "edgeplane_agent_supernet_accuracy",
        "Mean Supernet accuracy of completed jobs (share of the full network's)",
        None,
        Gauge,
    )?)?;
    Ok(())
}

/// The OpenMetrics text of the agent's figures now.
pub fn render(shared: &Arc<Shared>) -> String {
    let mut r = Registry::default();
    r.register_collector(Box::new(StatsCollector(shared.clone())));
    edgeplane_telemetry::metrics::register_process_and_build(&mut r, "agent");
    edgeplane_telemetry::metrics::encode(&r)
}

/// Serve [`render`] on `listener` until `shutdown` fires: `GET /metrics` (or `/`), else 404,
/// OpenMetrics or Prometheus text by the request's `Accept` header.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    shutdown: tokio::sync::broadcast::Receiver<()>,
) {
    edgeplane_telemetry::metrics::serve(listener, Arc::new(move || render(&shared)), shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_carries_model_and_accelerator_figures() {
        let mut stats = crate::stats::Stats::new(&["npu0".into()]);
        stats.model("ES_RITNet").arrivals += 3;
        stats.complete("ES_RITNet", 4.0, true, 2000.0);
        stats.accelerators[0].1.busy_ms = 1500.0;
        let sh = Arc::new(Shared::new(
            "t",
            vec![],
            crate::runtime::Ledger::new(stats),
            None,
        ));
        *sh.connected.write().unwrap() = Some("c".into());
        let t = render(&sh);
        for line in [
            "# TYPE edgeplane_agent_arrivals counter",
            "edgeplane_agent_arrivals_total{model=\"ES_RITNet\"} 3",
            "edgeplane_agent_deadlines_met_total{model=\"ES_RITNet\"} 1",
            "edgeplane_agent_energy_joules_total{model=\"ES_RITNet\"} 2",
            "edgeplane_agent_accelerator_busy_seconds_total{accelerator=\"npu0\"} 1.5",
            "edgeplane_agent_connected 1",
            "# EOF",
        ] {
            assert!(t.contains(line), "missing {line:?} in\n{t}");
        }
    }
}
