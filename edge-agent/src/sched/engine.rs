//! [`SchedulingCore`] over the scheduler crate's online [`Engine`]: SDRM3 and every baseline,
//! the same code the native simulator runs in virtual time.
//!
//! With SDRM3 the agent also runs the simulator's controllers on its live traffic: the SPSA
//! tuner (on unless `--no-tune`; every window, the window's arrivals are replayed through a
//! fresh engine in virtual time on a background thread, so the real-time loop never waits for
//! it; the new weights are applied at the next window boundary after the replay finished),
//! with the start-of-run profile forecast at start and at every assignment (the scenario's
//! periodic frames over the next window, replayed under each profile, inline: a few ms), and,
//! when enabled (`--supernet`), the Supernet width controller (O(models) at a window
//! boundary, inline).

use super::{Action, ControllerStatus, CoreError, Decisions, Input, JobId, SchedulingCore};
use crate::discovery::Accelerator;
use edgeplane_scheduler::engine::{Action as EAction, DropReason, Engine, EngineModel};
use edgeplane_scheduler::sim::{forecast, replay, Arrival, EngineSpec};
use edgeplane_scheduler::tuner::{Supernet, Tuner, TunerStep};
use edgeplane_scheduler::{Catalog, Weights};
use std::sync::mpsc;

/// Window of the agent's controllers: max(200 ms, 2 × longest period), as in the simulator.
fn window_ms(models: &[EngineModel]) -> f64 {
    models
        .iter()
        .map(|m| 2.0 * m.period_ms)
        .fold(200.0, f64::max)
}

/// The tuner and Supernet controller running beside the real-time loop.
struct Controllers {
    spec: EngineSpec,
    window: f64,
    next: f64,
    arrivals: Vec<Arrival>,
    /// The tuner while idle; None while a replay runs on its thread.
    tuner: Option<Tuner>,
    inflight: Option<mpsc::Receiver<(Tuner, Weights)>>,
    supernet: Option<Supernet>,
    rho: (f64, u64),
    outcomes: (u64, u64),
    /// The first models are the scenario's (its frame streams, which the forecast replays).
    scenario_models: usize,
    /// Σ Supernet accuracy and count of the completed jobs.
    accuracy: (f64, u64),
    /// The tuner's gradient steps and profile comparisons so far (kept here: the tuner
    /// itself is on the replay thread part of the time).
    steps: u64,
    choices: u64,
}

impl Controllers {
    fn count(&mut self, t: &Tuner) {
        self.steps = t.steps() as u64;
        self.choices = t.profile_choices.len() as u64;
    }
}

impl Controllers {
    /// The tuner's log so far (empty while a replay holds it).
    fn log(&self) -> &[TunerStep] {
        self.tuner.as_ref().map(|t| t.log.as_slice()).unwrap_or(&[])
    }
}

pub struct EngineCore {
    engine: Engine,
    /// Requests released so far (`Infer` calls, outside any frame stream): their frame
    /// numbers are `REQUEST_FRAMES + n`, apart from the scenario's own frame indices.
    requests: u64,
    /// Drops decided at release (cascade of a failed upstream frame), reported at next step.
    pending: Vec<Action>,
    ctl: Option<Controllers>,
    /// Node accelerator id of each engine accelerator (index = engine accelerator), so an
    /// assignment's partitions can restrict models (`Engine::set_allowed`).
    acc_ids: Vec<String>,
}

impl EngineCore {
    /// Models: the scenario's (with their cascades) when one runs, then every other model of
    /// the catalogue at its default period, so `Infer` can ask for any of them.
    pub fn new(
        policy: &str,
        accelerators: &[Accelerator],
        scenario: Option<&str>,
    ) -> Result<EngineCore, String> {
        let cat = Catalog::embedded();
        let accs: Vec<_> = accelerators
            .iter()
            .filter_map(|a| a.sim.as_ref())
            .enumerate()
            .map(|(i, s)| edgeplane_scheduler::AccSpec {
                id: i,
                name: s.name.clone(),
                dataflow: s.dataflow.clone(),
                pes: s.pes,
                offchip_bw: s.offchip_bw,
                cost_tag: s.cost_tag.clone(),
            })
            .collect();
        if accs.is_empty() {
            return Err("no simulated accelerator: the engine needs cost tables".into());
        }
        let mut models: Vec<EngineModel> = Vec::new();
        let mut scenario_models = 0;
        if let Some(name) = scenario {
            let sc = cat.scenario(name).map_err(|e| e.to_string())?;
            for m in &sc.models {
                models.push(EngineModel {
                    name: m.name.clone(),
                    cost_model: m.cost_model.clone(),
                    period_ms: 1000.0 / f64::from(m.fps.max(1)),
                    upstream: None,
                });
            }
            scenario_models = sc.models.len();
            for (i, m) in sc.models.iter().enumerate() {
                models[i].upstream = m
                    .depends_on
                    .first()
                    .and_then(|u| sc.models.iter().position(|x| &x.name == u));
            }
        }
        let own = crate::catalog::Catalog::get().map_err(|e| e.to_string())?;
        for name in own.model_names() {
            if models.iter().any(|m| m.name == name) {
                continue;
            }
            let cost_model = own.cost_model(name).unwrap_or(name).to_string();
            models.push(EngineModel {
                name: name.to_string(),
                cost_model,
                period_ms: own.default_deadline_ms(name).unwrap_or(33) as f64,
                upstream: None,
            });
        }
        let pol = edgeplane_scheduler::policy::by_name(policy).map_err(|e| e.to_string())?;
        let engine = Engine::new(cat, &accs, models.clone(), pol).map_err(|e| e.to_string())?;
        let n = engine.models().len();
        let ctl = (policy == "sdrm3").then(|| {
            // the scenario's models set the window when one runs (the rest of the catalogue
            // only serves `Infer` calls)
            let window = if scenario_models > 0 {
                window_ms(&models[..scenario_models])
            } else {
                window_ms(&models)
            };
            Controllers {
                spec: EngineSpec {
                    accelerators: accs.clone(),
                    probabilities: vec![1.0; n],
                    active: vec![true; n],
                    models,
                    layerwise: false,
                    min_block_ms: 0.0,
                    allowed: Vec::new(),
                },
                window,
                next: window,
                arrivals: Vec::new(),
                tuner: None,
                inflight: None,
                supernet: None,
                rho: (0.0, 0),
                outcomes: (0, 0),
                scenario_models,
                accuracy: (0.0, 0),
                steps: 0,
                choices: 0,
            }
        });
        Ok(EngineCore {
            engine,
            requests: 0,
            pending: Vec::new(),
            ctl,
            acc_ids: accelerators
                .iter()
                .filter(|a| a.sim.is_some())
                .map(|a| a.id.clone())
                .collect(),
        })
    }

    /// A core over an engine built elsewhere (worker-backed accelerators, whose cost table is
    /// the measured profile: see `worker_node::build_core`); no tuner or supernet controllers.
    pub fn from_engine(engine: Engine, acc_ids: Vec<String>) -> EngineCore {
        EngineCore {
            engine,
            requests: 0,
            pending: Vec::new(),
            ctl: None,
            acc_ids,
        }
    }

    /// Run SDRM3's online tuner (SDRM3 only), starting from the forecast's profile.
    pub fn enable_tuner(&mut self) {
        if let Some(c) = self.ctl.as_mut() {
            c.tuner = Some(Tuner::new(0));
        }
        self.forecast(0.0);
    }

    /// The start-of-run profile forecast (DESIGN §3.5) at `now_ms`: the scenario's periodic
    /// frames over the next window, replayed under the current weights and every profile;
    /// the live weights become the best, and the tuner starts over from them. Without a
    /// scenario there is nothing periodic to forecast: the weights stay.
    fn forecast(&mut self, now_ms: f64) {
        self.settle();
        let widths: Vec<f64> = (0..self.engine.models().len())
            .map(|m| self.engine.width(m))
            .collect();
        let Some(c) = self.ctl.as_mut() else { return };
        let Some(tuner) = c.tuner.as_mut() else {
            return;
        };
        let n = c.scenario_models;
        let frames = forecast(&c.spec.models, |m| m < n, &widths, now_ms, c.window);
        if frames.is_empty() {
            return;
        }
        let Some(w) = self.engine.policy_mut().weights_mut() else {
            return;
        };
        tuner.restart(now_ms);
        let cat = Catalog::embedded();
        let spec = &c.spec;
        let mut eval = |x: Weights| replay(cat, spec, x, &frames).map(|r| r.uxcost);
        let chosen = tuner.choose_profile(w, &mut eval);
        c.steps = tuner.steps() as u64;
        c.choices = tuner.profile_choices.len() as u64;
        match chosen {
            Ok(()) => tracing::info!(
                profile = w.profile_name().unwrap_or("tuned"),
                frames = frames.len(),
                at_ms = now_ms,
                "tuner forecast: start profile chosen"
            ),
            Err(e) => tracing::warn!(error = %e, "tuner forecast failed; weights kept"),
        }
    }

    /// Also switch Supernet sub-networks with load (SDRM3 only).
    pub fn enable_supernet(&mut self) {
        if let Some(c) = self.ctl.as_mut() {
            c.supernet = Some(Supernet::default());
        }
    }

    /// SDRM3's current weights (None for other policies).
    pub fn weights(&mut self) -> Option<Weights> {
        self.engine.policy_mut().weights_mut().map(|w| *w)
    }

    /// The tuner's steps so far.
    pub fn tuner_log(&self) -> Vec<TunerStep> {
        self.ctl
            .as_ref()
            .map(|c| c.log().to_vec())
            .unwrap_or_default()
    }

    /// Wait for a replay in flight (tests and the end of a virtual-time run).
    pub fn settle(&mut self) {
        if let Some(c) = self.ctl.as_mut() {
            if let Some(rx) = c.inflight.take() {
                if let Ok((t, w)) = rx.recv() {
                    c.count(&t);
                    c.tuner = Some(t);
                    if let Some(pw) = self.engine.policy_mut().weights_mut() {
                        *pw = w;
                    }
                }
            }
        }
    }

    /// Controllers' work at a decision: collect a finished replay, and at a window boundary
    /// hand the window's arrivals to a new replay and let Supernet switch widths.
    ///
    /// The previous window's replay is collected at the next boundary, a whole window later
    /// (a replay of one window takes milliseconds, so the real-time loop does not wait in
    /// practice), which also makes the weights change at the same instants in virtual time
    /// as in wall time: virtual-time runs stay deterministic.
    fn control(&mut self, now_ms: f64) {
        let Some(c) = self.ctl.as_mut() else { return };
        c.rho.0 += self.engine.load();
        c.rho.1 += 1;
        if now_ms < c.next {
            return;
        }
        c.next = now_ms + c.window;
        self.settle();
        let Some(c) = self.ctl.as_mut() else { return };
        let arrivals = std::mem::take(&mut c.arrivals);
        if let Some(mut tuner) = c.tuner.take() {
            let w = self
                .engine
                .policy_mut()
                .weights_mut()
                .map(|w| *w)
                .unwrap_or_default();
            let spec = c.spec.clone();
            let (tx, rx) = mpsc::channel();
            c.inflight = Some(rx);
            std::thread::spawn(move || {
                let mut w2 = w;
                let cat = Catalog::embedded();
                let mut eval = |x: Weights| replay(cat, &spec, x, &arrivals).map(|r| r.uxcost);
                if let Err(e) = tuner.on_window(now_ms, &mut w2, &mut eval) {
                    tracing::warn!(error = %e, "tuner replay failed; weights kept");
                    w2 = w;
                }
                let _ = tx.send((tuner, w2));
            });
        }
        if let Some(s) = c.supernet.as_mut() {
            let rho = c.rho.0 / c.rho.1.max(1) as f64;
            let (missed, total) = c.outcomes;
            let miss = if total == 0 {
                0.0
            } else {
                missed as f64 / total as f64
            };
            s.on_window(&mut self.engine, rho, miss);
        }
        c.rho = (0.0, 0);
        c.outcomes = (0, 0);
    }

    fn convert(&self, a: EAction, out: &mut Vec<Action>) {
        match a {
            EAction::Dispatch {
                job,
                acc,
                from,
                to,
                latency_ms,
                energy_mj,
                ..
            } => {
                let last = self.engine.job(job).is_none_or(|j| to >= j.end_layer);
                out.push(Action::Dispatch {
                    job,
                    acc,
                    layers: (to - from) as u32,
                    latency_ms,
                    energy_mj,
                    last,
                });
            }
            EAction::Drop { job, reason, .. } => out.push(Action::Drop {
                job,
                reason: reason.to_string(),
            }),
            EAction::Complete { .. } => {}
        }
    }
}

/// The inputs one by one (what [`SchedulingCore::step`] dispatches to).
impl EngineCore {
    /// The assignment restricts each model it lists to the accelerators of its partitions
    /// (`Engine::set_allowed`, honoured by every policy from the next decision). A partition
    /// with an empty or unknown accelerator id means any accelerator; a model the assignment
    /// does not list keeps them all (the runtime refuses its requests before they get here).
    pub fn assign(&mut self, now_ms: f64, a: &edgeplane_proto::agent::Assignment) {
        let n_acc = self.engine.accelerators().len();
        for m in 0..self.engine.models().len() {
            let name = self.engine.models()[m].name.clone();
            let mut accs = std::collections::BTreeSet::new();
            let mut any = false;
            for p in a.partitions.iter().filter(|p| p.models.contains(&name)) {
                match self.acc_ids.iter().position(|x| *x == p.accelerator_id) {
                    Some(i) if i < n_acc => {
                        accs.insert(i);
                    }
                    _ => any = true,
                }
            }
            let list: Vec<usize> = if any || accs.is_empty() {
                (0..n_acc).collect()
            } else {
                accs.into_iter().collect()
            };
            if let Err(e) = self.engine.set_allowed(m, &list) {
                tracing::warn!(model = %name, error = %e, "assignment not applied to this model");
                continue;
            }
            if let Some(c) = self.ctl.as_mut() {
                c.spec
                    .allowed
                    .resize(self.engine.models().len(), Vec::new());
                c.spec.allowed[m] = list;
            }
        }
        // the tuner's replays now stand in for the assigned engine: start from the profile
        // that suits it, as at the start of a run
        self.forecast(now_ms);
    }

    pub fn controller_status(&self) -> Option<ControllerStatus> {
        let c = self.ctl.as_ref()?;
        let w = self.engine.policy_weights()?;
        Some(ControllerStatus {
            tuning: c.tuner.is_some() || c.inflight.is_some(),
            tuner_steps: c.steps,
            profile: w.profile_name().unwrap_or("tuned").to_string(),
            profile_choices: c.choices,
            supernet: c.supernet.is_some(),
            accuracy: if c.accuracy.1 == 0 {
                1.0
            } else {
                c.accuracy.0 / c.accuracy.1 as f64
            },
        })
    }

    /// Also for the tuner's replays, which stand in for this engine.
    pub fn set_min_block(&mut self, ms: f64) {
        self.engine.set_min_block_ms(ms);
        if let Some(c) = self.ctl.as_mut() {
            c.spec.min_block_ms = ms;
        }
    }

    /// Idle (no job queued or running): wake on events only, no idle tick. With work pending,
    /// every millisecond: the policies decide drops and dispatches by the clock.
    pub fn next_wakeup(&self, now_ms: f64) -> Option<f64> {
        (self.engine.pending() > 0).then_some(now_ms + 1.0)
    }

    pub fn release(
        &mut self,
        now_ms: f64,
        model: &str,
        deadline_ms: f64,
    ) -> Result<JobId, CoreError> {
        let frame = edgeplane_scheduler::engine::REQUEST_FRAMES + self.requests;
        let id = self.release_frame(now_ms, model, frame, deadline_ms)?;
        self.requests += 1;
        Ok(id)
    }

    pub fn release_frame(
        &mut self,
        now_ms: f64,
        model: &str,
        frame: u64,
        deadline_ms: f64,
    ) -> Result<JobId, CoreError> {
        let m = self
            .engine
            .model_index(model)
            .ok_or_else(|| CoreError::UnknownModel(model.into()))?;
        if let Some(c) = self.ctl.as_mut() {
            c.arrivals.push(Arrival {
                time_ms: now_ms,
                model: m,
                frame,
                deadline_ms,
                end_layer: None,
                width: self.engine.width(m),
            });
        }
        let id = self.engine.release(now_ms, m, frame, deadline_ms, None);
        if let Some(u) = self.engine.models()[m].upstream {
            if self.engine.upstream_failed(u, frame) {
                let mut out = Vec::new();
                self.engine.drop_job(id, DropReason::Cascade, &mut out);
                for a in out {
                    let mut v = Vec::new();
                    self.convert(a, &mut v);
                    self.pending.extend(v);
                }
            }
        }
        Ok(id)
    }

    pub fn decide(&mut self, now_ms: f64) -> Vec<Action> {
        self.control(now_ms);
        let mut out = std::mem::take(&mut self.pending);
        for a in self.engine.step(now_ms) {
            if let (EAction::Drop { .. }, Some(c)) = (&a, self.ctl.as_mut()) {
                c.outcomes.0 += 1;
                c.outcomes.1 += 1;
            }
            self.convert(a, &mut out);
        }
        out
    }

    pub fn block_done(&mut self, now_ms: f64, acc: usize) {
        let width = self.engine.accelerators()[acc]
            .busy
            .and_then(|id| self.engine.job(id))
            .map_or(1.0, |j| j.width);
        if let Some(EAction::Complete { late, .. }) = self.engine.block_done(now_ms, acc) {
            if let Some(c) = self.ctl.as_mut() {
                c.outcomes.0 += u64::from(late);
                c.outcomes.1 += 1;
                c.accuracy.0 += Supernet::accuracy(width);
                c.accuracy.1 += 1;
            }
        }
    }
}

impl SchedulingCore for EngineCore {
    fn step(&mut self, now_ms: f64, input: Input<'_>) -> Decisions {
        match input {
            Input::Release {
                model,
                frame: Some(f),
                deadline_ms,
            } => Decisions::released(self.release_frame(now_ms, model, f, deadline_ms)),
            Input::Release {
                model,
                frame: None,
                deadline_ms,
            } => Decisions::released(self.release(now_ms, model, deadline_ms)),
            Input::BlockDone { acc, .. } => {
                self.block_done(now_ms, acc);
                Decisions::default()
            }
            // fixed accelerators: nothing to start
            Input::SlotReady { .. } => Decisions::default(),
            Input::Assignment(a) => {
                self.assign(now_ms, a);
                Decisions::default()
            }
            Input::Tick => Decisions::actions(self.decide(now_ms)),
        }
    }
    fn set_min_block_ms(&mut self, ms: f64) {
        self.set_min_block(ms);
    }
    fn controllers(&self) -> Option<ControllerStatus> {
        self.controller_status()
    }
    fn next_wakeup_ms(&self, now_ms: f64) -> Option<f64> {
        self.next_wakeup(now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgeplane_proto::agent::{Assignment, Partition};

    fn dispatched_on(core: &mut EngineCore, model: &str, now: f64) -> Vec<usize> {
        core.release(now, model, now + 1000.0).unwrap();
        core.decide(now)
            .iter()
            .filter_map(|a| match a {
                Action::Dispatch { acc, .. } => Some(*acc),
                _ => None,
            })
            .collect()
    }

    /// The tuner's replays stand in for the live engine: they group layers as it does.
    #[test]
    fn the_minimum_block_reaches_the_tuners_replay_engine() {
        let accs = crate::discovery::discover(&crate::config::AcceleratorSpec::Sim(
            "Dual_4K_WS_OS".into(),
        ))
        .unwrap();
        let mut core = EngineCore::new("sdrm3", &accs, Some("VR_gaming")).unwrap();
        core.set_min_block_ms(2.0);
        let spec = &core.ctl.as_ref().expect("sdrm3 has controllers").spec;
        let mut replay = spec.sdrm3(Catalog::embedded(), Weights::default()).unwrap();
        let ht = replay.model_index("HT_hand_graph_cnn_half").unwrap();
        replay.release(0.0, ht, 0, 1000.0, None);
        let layers: Vec<usize> = replay
            .step(0.0)
            .iter()
            .filter_map(|a| match a {
                EAction::Dispatch { from, to, .. } => Some(to - from),
                _ => None,
            })
            .collect();
        assert_eq!(layers.len(), 1);
        assert!(layers[0] > 1, "grouped, not one layer: {layers:?}");
    }

    /// The agent's first window runs on the forecast's profile, the one the simulator's
    /// start-of-run forecast picks for the same scenario and accelerators (the peer), and
    /// every assignment forecasts again on the assigned accelerators.
    #[test]
    fn the_forecast_tunes_the_first_window_and_runs_again_at_each_assignment() {
        let accs = crate::discovery::discover(&crate::config::AcceleratorSpec::Sim(
            "Dual_4K_WS_OS".into(),
        ))
        .unwrap();
        let mut cfg = edgeplane_scheduler::SimConfig::new("VR_gaming", "Dual_4K_WS_OS", "sdrm3");
        cfg.duration_ms = 300.0;
        let sim = edgeplane_scheduler::sim::run(Catalog::embedded(), &cfg).unwrap();
        let expected = sim.profile_choices[0];
        let mut core = EngineCore::new("sdrm3", &accs, Some("VR_gaming")).unwrap();
        assert_eq!(core.weights(), Some(Weights::default()));
        core.enable_tuner();
        let st = core.controllers().expect("sdrm3 has controllers");
        assert_eq!(
            st.profile, expected,
            "the simulator's forecast chose {expected}"
        );
        assert_ne!(
            core.weights(),
            Some(Weights::default()),
            "VR_gaming on Dual_4K_WS_OS starts off the design's weights"
        );
        assert_eq!(
            (st.tuning, st.tuner_steps, st.profile_choices),
            (true, 0, 1)
        );
        // an assignment: ES and GE on the first NPU only; the replays honour it
        core.assign(
            100.0,
            &Assignment {
                epoch: 1,
                partitions: vec![Partition {
                    accelerator_id: accs[0].id.clone(),
                    share_pct: 100,
                    models: vec!["ES_RITNet".into(), "GE_FBNet_C".into()],
                }],
            },
        );
        let st = core.controllers().unwrap();
        assert_eq!(st.profile_choices, 2, "forecast again at the assignment");
        let spec = &core.ctl.as_ref().unwrap().spec;
        let es = core.engine.model_index("ES_RITNet").unwrap();
        assert_eq!(spec.allowed[es], vec![0]);
        // untuned: no forecast, the design's weights
        let mut plain = EngineCore::new("sdrm3", &accs, Some("VR_gaming")).unwrap();
        plain.assign(0.0, &Assignment::default());
        let st = plain.controllers().unwrap();
        assert_eq!((st.tuning, st.profile_choices), (false, 0));
        assert_eq!(st.profile, "design");
        assert_eq!(st.accuracy, 1.0);
    }

    #[test]
    fn an_assignment_restricts_each_model_to_its_partitions_accelerators() {
        let accs = crate::discovery::discover(&crate::config::AcceleratorSpec::Sim(
            "Dual_4K_WS_OS".into(),
        ))
        .unwrap();
        assert_eq!(accs.len(), 2);
        let assign = |acc: &str| Assignment {
            epoch: 1,
            partitions: vec![Partition {
                accelerator_id: acc.into(),
                share_pct: 100,
                models: vec!["ES_RITNet".into()],
            }],
        };
        for (i, acc) in accs.iter().enumerate() {
            let mut core = EngineCore::new("sdrm3", &accs, None).unwrap();
            core.assign(0.0, &assign(&acc.id));
            assert_eq!(
                dispatched_on(&mut core, "ES_RITNet", 0.0),
                vec![i],
                "assigned to {} only",
                acc.id
            );
        }
        // an empty accelerator id means any: both stay allowed
        let mut core = EngineCore::new("sdrm3", &accs, None).unwrap();
        core.assign(0.0, &assign(""));
        assert!(core.engine.allowed(0, 0) && core.engine.allowed(0, 1));
    }
}
