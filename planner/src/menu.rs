//! The capacity menu of one (GPU kind, profile, SLO): for every MPS cap the largest batch that
//! meets the SLO and the throughput it gives, and the ideal share (best req/s per %).

use crate::{Config, ModelDemand, PlanError};
use edgeplane_gpu::{GpuData, Load};
use std::collections::BTreeMap;
use std::rc::Rc;

/// One feasible MPS cap.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Cap {
    pub pct: u32,
    /// Largest batch whose 2 x latency x alpha x margin meets the SLO.
    pub batch: u32,
    /// Requests/s one partition of this cap serves at that batch.
    pub rps: f64,
}

/// Every feasible cap, ascending pct, and which one is ideal.
#[derive(Debug, Clone)]
pub(crate) struct Menu {
    pub caps: Vec<Cap>,
    /// Index into `caps` of the ideal share.
    ideal: usize,
}

impl Menu {
    /// The cap with the best throughput per % (the smallest such cap on a tie).
    pub fn ideal(&self) -> Cap {
        self.caps[self.ideal]
    }

    /// The smallest cap that serves `rps` by itself.
    pub fn serving(&self, rps: f64) -> Option<Cap> {
        self.caps.iter().find(|c| c.rps + 1e-9 >= rps).copied()
    }

    /// The batch of the smallest cap of at least `pct` (1 when there is none).
    pub fn batch_at(&self, pct: u32) -> u32 {
        self.caps
            .iter()
            .find(|c| c.pct >= pct)
            .map_or(1, |c| c.batch)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct MenuKey {
    kind: String,
    profile: String,
    slo_bits: u64,
}

/// Menus computed once per round and shared by every model with the same profile and SLO.
pub(crate) struct Menus<'a> {
    pub data: &'a GpuData,
    pub cfg: &'a Config,
    cache: BTreeMap<MenuKey, Option<Rc<Menu>>>,
}

impl<'a> Menus<'a> {
    pub fn new(data: &'a GpuData, cfg: &'a Config) -> Self {
        Menus {
            data,
            cfg,
            cache: BTreeMap::new(),
        }
    }

    /// The menu of `m` on `kind`; None when no cap meets its SLO there (or no profile).
    pub fn get(&mut self, kind: &str, m: &ModelDemand) -> Result<Option<Rc<Menu>>, PlanError> {
        let key = MenuKey {
            kind: kind.to_string(),
            profile: m.profile.clone(),
            slo_bits: m.slo_ms.to_bits(),
        };
        if let Some(x) = self.cache.get(&key) {
            return Ok(x.clone());
        }
        let menu = self.build(kind, m)?.map(Rc::new);
        self.cache.insert(key, menu.clone());
        Ok(menu)
    }

    /// A model's menu on `kind`, when it has one (the kinds listed by demand all do).
    pub fn expect(&mut self, kind: &str, m: &ModelDemand) -> Result<Rc<Menu>, PlanError> {
        Ok(self.get(kind, m)?.expect("kinds listed have a menu"))
    }

    fn build(&self, kind: &str, m: &ModelDemand) -> Result<Option<Menu>, PlanError> {
        if !self.data.profiles.has_curve(kind, &m.profile) {
            return Ok(None);
        }
        let mut caps = Vec::new();
        for &pct in &self.cfg.steps_pct {
            if let Some(c) = self.best_batch(kind, m, pct)? {
                caps.push(c);
            }
        }
        if caps.is_empty() {
            return Ok(None);
        }
        let ideal = (0..caps.len())
            .max_by(|&a, &b| {
                let ea = caps[a].rps / caps[a].pct as f64;
                let eb = caps[b].rps / caps[b].pct as f64;
                ea.total_cmp(&eb).then(b.cmp(&a))
            })
            .expect("non-empty");
        Ok(Some(Menu { caps, ideal }))
    }

    /// The largest batch at `pct` whose 2 x L x alpha x margin meets the SLO, alpha against the
    /// worst neighbour filling the rest of the GPU.
    fn best_batch(&self, kind: &str, m: &ModelDemand, pct: u32) -> Result<Option<Cap>, PlanError> {
        let p = &self.data.profiles;
        let s = pct as f64 / 100.0;
        let mut best = None;
        for b in 1..=p.max_batch() {
            let me = Load {
                model: &m.profile,
                batch: b as f64,
                share: s,
            };
            let alpha = self.data.interference.worst_alpha(me, 1.0 - s);
            let l = p.latency_ms(kind, &m.profile, b as f64, s)? * alpha * self.cfg.latency_margin;
            if 2.0 * l > m.slo_ms {
                break;
            }
            best = Some(Cap {
                pct,
                batch: b,
                rps: 1000.0 * b as f64 / l,
            });
        }
        Ok(best)
    }
}
