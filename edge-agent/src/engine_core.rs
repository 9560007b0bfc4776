//! [`SchedulingCore`] over the scheduler crate's online [`Engine`]: SDRM3 and every baseline,
//! the same code the native simulator runs in virtual time.

use crate::core::{Action, CoreError, JobId, SchedulingCore};
use crate::discovery::Accelerator;
use edgeplane_scheduler::engine::{Action as EAction, DropReason, Engine, EngineModel};
use edgeplane_scheduler::Catalog;

pub struct EngineCore {
    engine: Engine,
    /// Next frame number per model (requests without a scenario frame index).
    frames: Vec<u64>,
    /// Drops decided at release (cascade of a failed upstream frame), reported at next step.
    pending: Vec<Action>,
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
        let engine = Engine::new(cat, &accs, models, pol).map_err(|e| e.to_string())?;
        let n = engine.models().len();
        Ok(EngineCore {
            engine,
            frames: vec![0; n],
            pending: Vec::new(),
        })
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

impl SchedulingCore for EngineCore {
    fn release(&mut self, now_ms: f64, model: &str, deadline_ms: f64) -> Result<JobId, CoreError> {
        let m = self
            .engine
            .model_index(model)
            .ok_or_else(|| CoreError::UnknownModel(model.into()))?;
        let frame = self.frames[m];
        self.frames[m] += 1;
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

    fn step(&mut self, now_ms: f64) -> Vec<Action> {
        let mut out = std::mem::take(&mut self.pending);
        for a in self.engine.step(now_ms) {
            self.convert(a, &mut out);
        }
        out
    }

    fn block_done(&mut self, now_ms: f64, acc: usize) {
        let _ = self.engine.block_done(now_ms, acc);
    }
}
