//! Scheduling policies behind one trait. A policy sees `now` and the engine's state and
//! returns decisions; it never reads a clock, so the same code runs in virtual and wall time.

mod edf;
mod fcfs;
mod herald;
mod planaria;
mod prema;
pub mod sdrm3;
mod xrbench;

use crate::engine::{DropReason, Engine, JobId};
use crate::error::Error;

pub use sdrm3::{Sdrm3, Weights};

/// Run `layers` layers of `job` on `acc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pick {
    pub job: JobId,
    pub acc: usize,
    pub layers: usize,
}

/// A scheduling policy.
pub trait Policy: Send {
    fn name(&self) -> &'static str;
    /// Proactive drops at `now` (on top of the engine's expiry rule, which every policy shares:
    /// work that is not running is dropped once its deadline has passed).
    fn drops(&mut self, _now: f64, _e: &Engine) -> Vec<(JobId, DropReason)> {
        Vec::new()
    }
    /// The next (job, accelerator, block) to run, among ready jobs and idle accelerators.
    fn pick(&mut self, now: f64, e: &Engine) -> Option<Pick>;
    /// SDRM3's tunable weights, if the policy has any.
    fn weights_mut(&mut self) -> Option<&mut Weights> {
        None
    }
    /// The current weights, if the policy has any.
    fn weights(&self) -> Option<Weights> {
        None
    }
}

/// Never picks anything (placeholder while the engine borrows the real policy).
pub(crate) struct Noop;
impl Policy for Noop {
    fn name(&self) -> &'static str {
        "noop"
    }
    fn pick(&mut self, _: f64, _: &Engine) -> Option<Pick> {
        None
    }
}

/// All policy names, SDRM3 first.
pub const POLICIES: &[&str] = &[
    "sdrm3", "xrbench", "fcfs", "edf", "prema", "herald", "planaria",
];

/// A policy by name; the error lists the valid names.
pub fn by_name(name: &str) -> Result<Box<dyn Policy>, Error> {
    Ok(match name {
        "sdrm3" => Box::new(Sdrm3::default()),
        "xrbench" => Box::new(xrbench::XrbenchGreedy::default()),
        "fcfs" => Box::new(fcfs::Fcfs),
        "edf" => Box::new(edf::Edf::default()),
        "prema" => Box::new(prema::Prema::default()),
        "herald" => Box::new(herald::Herald::default()),
        "planaria" => Box::new(planaria::Planaria::default()),
        _ => {
            return Err(Error::Unknown {
                what: "policy",
                name: name.into(),
                valid: POLICIES.join(", "),
            })
        }
    })
}

/// The idle accelerator with the lowest remaining latency for `job` (ties: lowest id).
pub(crate) fn fastest_idle(e: &Engine, job: &crate::engine::Job) -> Option<usize> {
    e.idle_accs_for(job).min_by(|&a, &b| {
        e.remaining(job, a)
            .0
            .total_cmp(&e.remaining(job, b).0)
            .then(a.cmp(&b))
    })
}
