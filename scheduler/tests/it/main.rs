//! Scheduler integration tests (one binary).

mod native;
mod parity;
mod policies;
