//! Planner properties (proptest) and decisions checked by hand.
mod props;
mod rules;
mod sim;
