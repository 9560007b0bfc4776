//! The Edgeplane coordinator: a Raft-replicated control plane.
#![forbid(unsafe_code)]

pub mod state;
pub mod storage;
