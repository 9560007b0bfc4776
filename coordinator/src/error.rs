//! Errors of the replication layer, as seen by callers of [`crate::Handle`].
//!
//! Why two kinds of failure: a client (or the fault suite's checker) must know whether a
//! failed write may still take effect. [`Error::NotApplied`] means certainly not (never
//! proposed, refused by raft, or its log slot was taken by another entry);
//! [`Error::OutcomeUnknown`] means it was handed to Raft and may still commit (leadership lost,
//! the link to the leader broke, the deadline passed). Every write carries a (client id, seq),
//! so retrying an unknown outcome under the same pair is exactly-once.

use std::time::Duration;

use crate::state::CommandError;
use crate::storage::StorageError;

/// Prefix of the gRPC message of an UNAVAILABLE answer for a write that was certainly not
/// applied; forwarding followers look for it to keep the distinction across a hop.
pub const NOT_APPLIED: &str = "not applied";
/// Prefix of the gRPC message of an UNKNOWN answer.
pub const OUTCOME_UNKNOWN: &str = "outcome unknown";

/// Errors of the replication layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error("{NOT_APPLIED}: this replica is not the leader (leader: {leader_id}); retry")]
    NotLeader { leader_id: u64 },
    #[error("{NOT_APPLIED}: no leader elected within {0:?}; retry")]
    NoLeader(Duration),
    /// Certainly not applied; safe to retry.
    #[error("{NOT_APPLIED}: {0}; retry")]
    NotApplied(String),
    /// May or may not take effect later; retry under the same (client id, seq).
    #[error("{OUTCOME_UNKNOWN}: {0}; retry with the same client id and seq")]
    OutcomeUnknown(String),
    /// A read (or transfer) that did not complete in time.
    #[error("timed out after {0:?} waiting for the cluster")]
    Timeout(Duration),
    #[error("the leader answered: {0}")]
    Remote(tonic::Status),
    #[error("the replica is shutting down")]
    Shutdown,
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error("raft: {0}")]
    Raft(String),
}

impl Error {
    /// True when a write that failed with this error certainly did not take effect.
    pub fn certainly_not_applied(&self) -> bool {
        matches!(
            self,
            Error::Command(_) | Error::NotLeader { .. } | Error::NoLeader(_) | Error::NotApplied(_)
        ) || matches!(self, Error::Remote(s) if s.code() != tonic::Code::Unknown
            && s.code() != tonic::Code::DeadlineExceeded)
    }

    /// The gRPC status an API should answer with.
    pub fn to_status(&self) -> tonic::Status {
        use tonic::Code;
        match self {
            Error::Command(CommandError::InvalidArgument { .. }) => {
                tonic::Status::invalid_argument(self.to_string())
            }
            Error::Command(CommandError::NotFound(_)) => tonic::Status::not_found(self.to_string()),
            Error::Command(CommandError::FailedPrecondition(_)) => {
                tonic::Status::failed_precondition(self.to_string())
            }
            Error::Command(CommandError::PermissionDenied(_)) => {
                tonic::Status::permission_denied(self.to_string())
            }
            Error::Remote(s) => tonic::Status::new(s.code(), s.message().to_string()),
            Error::NotLeader { .. } | Error::NoLeader(_) | Error::NotApplied(_) => {
                tonic::Status::unavailable(self.to_string())
            }
            Error::Shutdown => tonic::Status::unavailable(format!("{NOT_APPLIED}: {self}")),
            Error::OutcomeUnknown(_) => tonic::Status::new(Code::Unknown, self.to_string()),
            Error::Timeout(_) => tonic::Status::new(Code::DeadlineExceeded, self.to_string()),
            Error::Storage(_) | Error::Raft(_) => tonic::Status::internal(self.to_string()),
        }
    }

    /// Classify a status answered by a leader to a forwarded write (or by the transport).
    /// Only answers that say so are "not applied"; a broken link or a timeout may have
    /// left the write in the leader's log, so its outcome is unknown.
    pub fn from_forward_status(s: tonic::Status) -> Error {
        use tonic::Code;
        match s.code() {
            Code::InvalidArgument
            | Code::NotFound
            | Code::FailedPrecondition
            | Code::PermissionDenied => Error::Remote(s),
            Code::Unavailable if s.message().starts_with(NOT_APPLIED) => {
                Error::NotApplied(format!("the leader answered: {}", s.message()))
            }
            _ => Error::OutcomeUnknown(format!(
                "forwarding to the leader failed ({:?}: {})",
                s.code(),
                s.message()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_failures_are_classified() {
        // A broken link (tonic answers UNKNOWN "transport error" or UNAVAILABLE) may have
        // delivered the write: unknown, retried under its id, never "not applied".
        let e = Error::from_forward_status(tonic::Status::unknown("transport error"));
        assert!(matches!(e, Error::OutcomeUnknown(_)), "{e}");
        let e = Error::from_forward_status(tonic::Status::unavailable("error trying to connect"));
        assert!(matches!(e, Error::OutcomeUnknown(_)), "{e}");
        let e = Error::from_forward_status(tonic::Status::cancelled("h2 reset"));
        assert!(!e.certainly_not_applied());
        // The leader itself said the write was not applied.
        let said = Error::NotLeader { leader_id: 2 }.to_status();
        let e = Error::from_forward_status(said);
        assert!(matches!(e, Error::NotApplied(_)), "{e}");
        assert!(e.certainly_not_applied());
        // Command errors pass through with their code.
        let e = Error::from_forward_status(tonic::Status::invalid_argument("bad `name`"));
        assert_eq!(e.to_status().code(), tonic::Code::InvalidArgument);
        // The two failure kinds map to distinct codes.
        assert_eq!(
            Error::OutcomeUnknown("x".into()).to_status().code(),
            tonic::Code::Unknown
        );
        assert_eq!(
            Error::NotApplied("x".into()).to_status().code(),
            tonic::Code::Unavailable
        );
    }
}
