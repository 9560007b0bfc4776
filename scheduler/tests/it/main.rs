//! Scheduler integration tests (one binary).

mod parity;
