//! What the driver, the gRPC handlers, the coordinator link and the metrics share: the node's
//! identity and accelerators, the [`Ledger`], the assignment served (a `watch` channel: the
//! link publishes, the driver receives it as an event), and the leader connected to.

use super::ledger::Ledger;
use crate::discovery::Accelerator;
use edgeplane_proto::agent::Assignment;
use std::collections::BTreeSet;
use std::sync::RwLock;
use std::time::Instant;
use tokio::sync::watch;

pub struct Shared {
    pub name: String,
    pub accelerators: Vec<Accelerator>,
    pub ledger: Ledger,
    /// The driver's clock starts here (ms since `start`).
    pub start: Instant,
    /// The assignment served now (None = never assigned: serve every catalogue model).
    assignment: watch::Sender<Option<Assignment>>,
    pub connected: RwLock<Option<String>>,
}

impl Shared {
    pub fn new(
        name: &str,
        accelerators: Vec<Accelerator>,
        ledger: Ledger,
        assignment: Option<Assignment>,
    ) -> Shared {
        Shared {
            name: name.to_string(),
            accelerators,
            ledger,
            start: Instant::now(),
            assignment: watch::Sender::new(assignment),
            connected: RwLock::new(None),
        }
    }

    /// The assignment served now.
    pub fn assignment(&self) -> Option<Assignment> {
        self.assignment.borrow().clone()
    }

    /// Serve `a` from now on (the driver hears of it at once).
    pub fn set_assignment(&self, a: Option<Assignment>) {
        self.assignment.send_replace(a);
    }

    /// Change the assignment served in place.
    pub fn modify_assignment(&self, f: impl FnOnce(&mut Option<Assignment>)) {
        self.assignment.send_modify(f);
    }

    /// A receiver of every assignment published from now on.
    pub fn assignments(&self) -> watch::Receiver<Option<Assignment>> {
        self.assignment.subscribe()
    }

    pub fn epoch(&self) -> u64 {
        self.assignment.borrow().as_ref().map_or(0, |a| a.epoch)
    }

    /// Models served now: the assignment's, or every catalogue model before any assignment.
    pub fn served_models(&self) -> Option<BTreeSet<String>> {
        self.assignment.borrow().as_ref().map(|a| {
            a.partitions
                .iter()
                .flat_map(|p| p.models.iter().cloned())
                .collect()
        })
    }

    pub fn serves(&self, model: &str) -> bool {
        self.served_models().is_none_or(|m| m.contains(model))
    }

    /// ms on the driver's clock.
    pub fn ms(&self, t: Instant) -> f64 {
        t.saturating_duration_since(self.start).as_secs_f64() * 1000.0
    }
}
