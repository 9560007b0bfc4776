//! Placement: the planner loop. on the leader only, it turns deployed models, nodes and their GPUs, the
//! rates agents report and node health into a placement plan (the pure `edgeplane-planner`),
//! and commits the plan through Raft when it changes.
//!
//! - Inputs: the replicated state (models with SLO and requested rate, nodes with their GPUs
//!   and status, operator pins) and the leader's memory (observed rates, smoothed by the
//!   planner's rate estimator with time constant [`PlannerConfig::rate_tau`]; which
//!   partitions each agent reports ready).
//! - Hysteresis: the planner keeps the committed plan unless a rate left its confidence band, or the
//!   models or healthy nodes changed. The committed plan's reference (the rate each model was
//!   planned on, the nodes) is in the replicated state, so a new leader resumes from it: a
//!   model without a measured rate yet is taken at its committed rate, never re-planned from
//!   scratch because the new leader's memory is empty.
//! - Pins win: a pinned model is not planned, and a GPU holding a pin is not offered to the
//!   planner; the pin's partition is part of the node's assignment.
//! - Commit: one `CommitPlan` entry per round that changes anything, every changed node with a
//!   compare-and-set on its epoch (all or nothing; a refused round is planned again).
//! - Make-before-break across nodes: a model that moves keeps its old partition (in the node's
//!   effective assignment, not its target) until the new home reports it ready; the next round
//!   then retires it. A lost node keeps nothing.
//!
//! Files: [`rates`] (observed rates → estimates), [`inputs`] (state → planner inputs, the
//! committed plan), [`preview`] (one pure round: plan, targets, make-before-break through
//! [`edgeplane_planner::reconcile`], the words), [`leader`] (the leader-only loop that
//! commits rounds).

pub mod inputs;
pub mod leader;
pub mod preview;
pub mod rates;

pub use inputs::{committed_plan, inputs};
pub use leader::{run, Planner, PlannerConfig};
pub use preview::round;
pub use rates::RateTracker;

#[cfg(test)]
mod tests;
