//! Packing partitions onto GPUs: full partitions of each model's ideal share on its most
//! efficient kind, then one residue partition per model, joined by time sharing to another
//! residue partition where the round-robin rule holds and that saves share, else the smallest
//! share that serves it. GPUs are taken sticky first (where the model ran), then most free.

use crate::demand::Need;
use crate::menu::Menus;
use crate::shed::Shedding;
use crate::{Assigned, Decision, Inputs, Partition, Plan, PlanError};
use edgeplane_gpu::capacity::{self, Tenant as CapTenant};
use edgeplane_gpu::Load;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

/// A GPU, by node and GPU id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct GpuKey {
    pub node: String,
    pub gpu: String,
}

/// Share (%) and memory (MiB) already taken on a GPU by partitions a re-plan keeps.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Taken {
    pub pct: u32,
    pub mem: u64,
}

pub(crate) type Reserved = BTreeMap<GpuKey, Taken>;

/// One GPU's free share and memory during packing.
#[derive(Debug, Clone)]
pub(crate) struct Slot {
    pub node: String,
    pub gpu: String,
    pub kind: String,
    pub free_pct: u32,
    pub free_mem: u64,
}

/// A heap entry: a slot's free share when pushed (stale once the slot changed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Free {
    pct: u32,
    slot: Reverse<usize>,
}

/// Where a model ran in the current plan (stickiness).
#[derive(Debug, Clone)]
pub(crate) struct Where {
    pub node: String,
    pub gpu: String,
    pub share_pct: u32,
}

/// Every healthy GPU's free share, most free first.
pub(crate) struct Board {
    pub slots: Vec<Slot>,
    heap: BinaryHeap<Free>,
    index: BTreeMap<GpuKey, usize>,
}

impl Board {
    /// The healthy nodes' GPUs less what `reserved` takes.
    pub fn new(inputs: &Inputs, reserved: &Reserved) -> Self {
        let mut slots = Vec::new();
        for n in inputs.nodes.iter().filter(|n| n.healthy) {
            for g in &n.gpus {
                let key = GpuKey {
                    node: n.id.clone(),
                    gpu: g.id.clone(),
                };
                let t = reserved.get(&key).copied().unwrap_or_default();
                slots.push(Slot {
                    node: n.id.clone(),
                    gpu: g.id.clone(),
                    kind: g.kind.clone(),
                    free_pct: 100u32.saturating_sub(t.pct),
                    free_mem: g.memory_mib.saturating_sub(t.mem),
                });
            }
        }
        let index = slots
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let key = GpuKey {
                    node: s.node.clone(),
                    gpu: s.gpu.clone(),
                };
                (key, i)
            })
            .collect();
        let heap = slots
            .iter()
            .enumerate()
            .map(|(i, s)| Free {
                pct: s.free_pct,
                slot: Reverse(i),
            })
            .collect();
        Board { slots, heap, index }
    }

    pub fn total_free_pct(&self) -> u64 {
        self.slots.iter().map(|s| s.free_pct as u64).sum()
    }

    /// Give `pct`/`mem` back to a slot.
    pub fn give(&mut self, slot: usize, pct: u32, mem: u64) {
        self.slots[slot].free_pct += pct;
        self.slots[slot].free_mem += mem;
        self.touch(slot);
    }

    /// Take `pct`/`mem` more from a slot already chosen.
    pub fn grow(&mut self, slot: usize, pct: u32, mem: u64) {
        self.slots[slot].free_pct -= pct;
        self.slots[slot].free_mem -= mem;
        self.touch(slot);
    }

    fn touch(&mut self, slot: usize) {
        self.heap.push(Free {
            pct: self.slots[slot].free_pct,
            slot: Reverse(slot),
        });
    }

    /// Take a slot of `kind` with `pct`/`mem` free: the GPU that ran this exact partition, else
    /// any GPU that ran the model (fewer moves), else the most free one.
    pub fn take(&mut self, prefer: &[Where], kind: &str, pct: u32, mem: u64) -> Option<usize> {
        let chosen = self
            .sticky(prefer, kind, pct, mem, true)
            .or_else(|| self.sticky(prefer, kind, pct, mem, false))
            .or_else(|| self.most_free(kind, pct, mem))?;
        self.grow(chosen, pct, mem);
        Some(chosen)
    }

    fn fits(&self, i: usize, kind: &str, pct: u32, mem: u64) -> bool {
        let s = &self.slots[i];
        s.kind == kind && s.free_pct >= pct && s.free_mem >= mem
    }

    fn sticky(
        &self,
        prefer: &[Where],
        kind: &str,
        pct: u32,
        mem: u64,
        exact: bool,
    ) -> Option<usize> {
        prefer.iter().find_map(|w| {
            if exact && w.share_pct != pct {
                return None;
            }
            let key = GpuKey {
                node: w.node.clone(),
                gpu: w.gpu.clone(),
            };
            self.index
                .get(&key)
                .copied()
                .filter(|&i| self.fits(i, kind, pct, mem))
        })
    }

    /// Most free first: pop stale heap entries until one is current and fits.
    fn most_free(&mut self, kind: &str, pct: u32, mem: u64) -> Option<usize> {
        let mut popped = Vec::new();
        let mut found = None;
        while let Some(e) = self.heap.pop() {
            let i = e.slot.0;
            if self.slots[i].free_pct != e.pct {
                continue; // stale
            }
            popped.push(e);
            if e.pct < pct {
                break;
            }
            if self.fits(i, kind, pct, mem) {
                found = Some(i);
                break;
            }
            if popped.len() > 64 {
                // many misfits (other kinds / memory): fall back to a scan
                found = (0..self.slots.len())
                    .filter(|&j| self.fits(j, kind, pct, mem))
                    .max_by_key(|&j| (self.slots[j].free_pct, Reverse(j)));
                break;
            }
        }
        self.heap.extend(popped);
        found
    }
}

/// A model's part in a draft partition.
#[derive(Debug, Clone)]
pub(crate) struct DraftTenant {
    pub model: usize,
    pub rate: f64,
    pub batch: u32,
}

/// A partition being planned.
#[derive(Debug, Clone)]
pub(crate) struct Draft {
    pub slot: usize,
    pub pct: u32,
    pub tenants: Vec<DraftTenant>,
    pub reason: String,
}

/// A model whose full partitions are placed.
#[derive(Debug, Clone)]
pub(crate) struct Placed {
    pub need: usize,
    pub kind: String,
    /// Requests/s of one full partition, and how many there are.
    pub full_rps: f64,
    pub full: usize,
    /// Its full partitions' drafts.
    pub drafts: Vec<usize>,
    pub residue: f64,
}

/// The state of one layout round.
pub(crate) struct Packing<'i, 'm> {
    pub inputs: &'i Inputs,
    pub menus: Menus<'m>,
    pub board: Board,
    pub drafts: Vec<Draft>,
    pub shed: Shedding,
    pub decisions: Vec<Decision>,
    prefer: BTreeMap<&'i str, Vec<Where>>,
}

impl<'i, 'm> Packing<'i, 'm> {
    pub fn new(
        inputs: &'i Inputs,
        menus: Menus<'m>,
        board: Board,
        shed: Shedding,
        current: Option<&'i Plan>,
    ) -> Self {
        let mut prefer: BTreeMap<&str, Vec<Where>> = BTreeMap::new();
        for p in current.iter().flat_map(|c| &c.partitions) {
            for t in &p.tenants {
                prefer.entry(t.model.as_str()).or_default().push(Where {
                    node: p.node.clone(),
                    gpu: p.gpu.clone(),
                    share_pct: p.share_pct,
                });
            }
        }
        Packing {
            inputs,
            menus,
            board,
            drafts: Vec::new(),
            shed,
            decisions: Vec::new(),
            prefer,
        }
    }

    fn prefer(&self, model: &str) -> Vec<Where> {
        self.prefer.get(model).cloned().unwrap_or_default()
    }

    /// Place `n`'s full partitions on the first kind that takes them all; sheds the model when
    /// none does. None when it was shed.
    pub fn place_full(&mut self, n: &Need) -> Result<Option<Placed>, PlanError> {
        let m = &self.inputs.models[n.idx];
        let pref = self.prefer(&m.name);
        let mut last_pct = 0;
        for kind in &n.kinds {
            let c = self.menus.expect(kind, m)?.ideal();
            last_pct = c.pct;
            let full = (n.rate / c.rps).floor() as usize;
            let Some(drafts) = self.take_full(n, &pref, kind, full)? else {
                continue; // given back: try the next kind
            };
            let residue = n.rate - full as f64 * c.rps;
            self.decisions.push(Decision::model(
                &m.name,
                format!(
                    "planned on {:.1} req/s ({} {:.1} with headroom max(x {}, + its confidence band)); ideal share {} % on {kind} (batch {}, {:.1} req/s, {:.2} req/s per %); {full} full partition(s) + residue {residue:.1} req/s",
                    n.rate,
                    if n.basis > m.requested_rps { "observed" } else { "deployed" },
                    n.basis,
                    self.menus.cfg.headroom,
                    c.pct,
                    c.batch,
                    c.rps,
                    c.rps / c.pct as f64
                ),
            ));
            return Ok(Some(Placed {
                need: n.idx,
                kind: kind.clone(),
                full_rps: c.rps,
                full,
                drafts,
                residue,
            }));
        }
        self.shed.push(
            n.idx,
            &m.name,
            format!(
                "shed: no GPU left with {last_pct} % free and {} MiB for its full partitions",
                m.mem_mib
            ),
        );
        Ok(None)
    }

    /// `full` partitions of the ideal share on `kind`, or None (all given back) when one misses.
    fn take_full(
        &mut self,
        n: &Need,
        pref: &[Where],
        kind: &str,
        full: usize,
    ) -> Result<Option<Vec<usize>>, PlanError> {
        let m = &self.inputs.models[n.idx];
        let c = self.menus.expect(kind, m)?.ideal();
        let mut placed = Vec::new();
        for _ in 0..full {
            let Some(s) = self.board.take(pref, kind, c.pct, m.mem_mib) else {
                for _ in placed.iter().rev() {
                    let dr = self.drafts.pop().expect("placed drafts are the last ones");
                    self.board.give(dr.slot, dr.pct, m.mem_mib);
                }
                return Ok(None);
            };
            placed.push(self.drafts.len());
            self.drafts.push(Draft {
                slot: s,
                pct: c.pct,
                tenants: vec![DraftTenant {
                    model: n.idx,
                    rate: c.rps,
                    batch: c.batch,
                }],
                reason: format!(
                    "{}: full partition at its ideal share {} % on {kind}",
                    m.name, c.pct
                ),
            });
        }
        Ok(Some(placed))
    }

    /// Place every residue, largest first: join an open residue partition by time sharing,
    /// else a new smallest partition; a model whose residue fits nowhere is served without
    /// headroom when its full partitions carry its demand, else shed whole.
    pub fn place_residues(
        &mut self,
        needs: &[Need],
        mut placed: Vec<Placed>,
    ) -> Result<(), PlanError> {
        placed.retain(|p| p.residue > 1e-9);
        placed.sort_by(|a, b| b.residue.total_cmp(&a.residue).then(a.need.cmp(&b.need)));
        let mut open: Vec<usize> = Vec::new();
        for p in &placed {
            let n = &needs[p.need];
            if self.join(p, &open)? {
                continue;
            }
            if let Some(d) = self.new_residue(n, p)? {
                open.push(d);
                continue;
            }
            self.misfit(n, p);
        }
        Ok(())
    }

    /// Join one of the last `residue_candidates` open residue partitions, growing it in 10 %
    /// steps while that still saves share against a partition of its own.
    fn join(&mut self, p: &Placed, open: &[usize]) -> Result<bool, PlanError> {
        let m = &self.inputs.models[p.need];
        let r = p.residue;
        let menu = self.menus.expect(&p.kind, m)?;
        // share a standalone residue partition would take: joining must save share
        let alone = menu.serving(r).map_or(u32::MAX, |c| c.pct);
        for &d in open.iter().rev().take(self.menus.cfg.residue_candidates) {
            let slot = &self.board.slots[self.drafts[d].slot];
            if slot.kind != p.kind || slot.free_mem < m.mem_mib {
                continue;
            }
            let Some(pct) = self.grown_share(d, p, alone)? else {
                continue;
            };
            let dr = &self.drafts[d];
            let (dslot, grow) = (dr.slot, pct - dr.pct);
            self.board.grow(dslot, grow, m.mem_mib);
            let b = menu.batch_at(pct);
            let dr = &mut self.drafts[d];
            dr.pct = pct;
            dr.tenants.push(DraftTenant {
                model: p.need,
                rate: r,
                batch: b,
            });
            dr.reason.push_str(&format!(
                "; {} joins by time sharing ({r:.1} req/s), partition at {pct} %",
                m.name
            ));
            self.decisions.push(Decision::model(
                &m.name,
                format!(
                    "residue {r:.1} req/s time-shares a {pct} % partition (round-robin cycle keeps 2 x cycle <= every SLO)"
                ),
            ));
            return Ok(true);
        }
        Ok(false)
    }

    /// The share draft `d` needs to take `p`'s residue by round-robin time sharing, if the GPU
    /// has it and it is less growth than `alone`.
    fn grown_share(&self, d: usize, p: &Placed, alone: u32) -> Result<Option<u32>, PlanError> {
        let (inputs, data) = (self.inputs, self.menus.data);
        let dr = &self.drafts[d];
        let slot = &self.board.slots[dr.slot];
        let m = &inputs.models[p.need];
        let mut pct = dr.pct;
        while pct <= 100 && pct - dr.pct < alone {
            if pct > dr.pct && slot.free_pct < pct - dr.pct {
                break;
            }
            let s = pct as f64 / 100.0;
            let mut ten: Vec<CapTenant<'_>> = dr
                .tenants
                .iter()
                .map(|t| CapTenant {
                    model: &inputs.models[t.model].profile,
                    rate_rps: t.rate,
                    slo_ms: inputs.models[t.model].slo_ms,
                })
                .collect();
            ten.push(CapTenant {
                model: &m.profile,
                rate_rps: p.residue,
                slo_ms: m.slo_ms,
            });
            let worst = ten
                .iter()
                .map(|t| {
                    let me = Load {
                        model: t.model,
                        batch: 1.0,
                        share: s,
                    };
                    data.interference.worst_alpha(me, 1.0 - s)
                })
                .fold(1.0, f64::max);
            let inflate = worst * self.menus.cfg.latency_margin;
            if capacity::time_share(&data.profiles, &p.kind, s, &ten, inflate)?.is_some() {
                return Ok(Some(pct));
            }
            pct += 10;
        }
        Ok(None)
    }

    /// A residue partition of its own: the smallest cap that serves it, its kind first, then
    /// the model's other kinds. Returns the new draft.
    fn new_residue(&mut self, n: &Need, p: &Placed) -> Result<Option<usize>, PlanError> {
        let m = &self.inputs.models[n.idx];
        let r = p.residue;
        let pref = self.prefer(&m.name);
        let kinds = std::iter::once(&p.kind).chain(n.kinds.iter().filter(|k| **k != p.kind));
        let mut caps = Vec::new();
        for k in kinds {
            let menu = self.menus.expect(k, m)?;
            caps.extend(menu.caps.iter().map(|c| (k.clone(), *c)));
        }
        for (k, c) in caps {
            if c.rps + 1e-9 < r {
                continue;
            }
            if let Some(s) = self.board.take(&pref, &k, c.pct, m.mem_mib) {
                self.drafts.push(Draft {
                    slot: s,
                    pct: c.pct,
                    tenants: vec![DraftTenant {
                        model: n.idx,
                        rate: r,
                        batch: c.batch,
                    }],
                    reason: format!(
                        "{}: residue {r:.1} req/s in the smallest share that serves it ({} %)",
                        m.name, c.pct
                    ),
                });
                return Ok(Some(self.drafts.len() - 1));
            }
        }
        Ok(None)
    }

    /// A residue that fits nowhere.
    fn misfit(&mut self, n: &Need, p: &Placed) {
        let m = &self.inputs.models[n.idx];
        let r = p.residue;
        let covered: f64 = std::iter::repeat_n(p.full_rps, p.full).sum();
        if covered >= n.basis {
            // the full partitions still carry the observed peak itself: keep them, without headroom
            self.decisions.push(Decision::model(
                &m.name,
                format!(
                    "residue {r:.1} req/s fits nowhere; its full partitions carry {covered:.1} req/s >= its demand {:.1}: served without headroom",
                    n.basis
                ),
            ));
            return;
        }
        // serving part of the rate would overload the full partitions (requests beyond their
        // capacity queue without bound): shed the model as a whole and free its share for the
        // residues still to place
        let mut freed = 0;
        for &d in &p.drafts {
            let dr = &mut self.drafts[d];
            let (slot, pct) = (dr.slot, dr.pct);
            dr.tenants.clear();
            dr.pct = 0;
            self.board.give(slot, pct, m.mem_mib);
            freed += pct;
        }
        self.shed.push(
            n.idx,
            &m.name,
            format!(
                "shed: its residue of {r:.1} req/s fits no free share on any GPU, and serving only part of its rate would overload its partitions ({freed} % freed)"
            ),
        );
    }

    /// The plan's partitions with stable ids (`node/gpu/share%/models#n`), sorted by id.
    pub fn partitions(&self) -> Vec<Partition> {
        let models = &self.inputs.models;
        let mut partitions = Vec::new();
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for d in self.drafts.iter().filter(|d| !d.tenants.is_empty()) {
            let slot = &self.board.slots[d.slot];
            let mut names: Vec<&str> = d
                .tenants
                .iter()
                .map(|t| models[t.model].name.as_str())
                .collect();
            names.sort();
            let base = format!("{}/{}/{}%/{}", slot.node, slot.gpu, d.pct, names.join("+"));
            let k = seen.entry(base.clone()).or_insert(0);
            *k += 1;
            partitions.push(Partition {
                id: format!("{base}#{k}"),
                node: slot.node.clone(),
                gpu: slot.gpu.clone(),
                share_pct: d.pct,
                tenants: d
                    .tenants
                    .iter()
                    .map(|t| Assigned {
                        model: models[t.model].name.clone(),
                        rate_rps: t.rate,
                        max_batch: t.batch,
                    })
                    .collect(),
                mem_mib: d.tenants.iter().map(|t| models[t.model].mem_mib).sum(),
                reason: d.reason.clone(),
            });
        }
        partitions.sort_by(|a, b| a.id.cmp(&b.id));
        partitions
    }
}
