//! Errors of the replication layer, as seen by callers of [`crate::Handle`].
//!
//! Why two kinds of failure: a client (or the fault suite's checker) must know whether a
//! failed write may still take effect. [`Error::NotApplied`] means certainly not (never
//! proposed, refused by raft, or its log slot was taken by another entry);
//! [`Error::OutcomeUnknown`] means it was handed to Raft and may still commit (leadership lost,
//! the link to the leader broke, the deadline passed). Every write carries a (client id, seq),
//! so retrying an unknown outcome under the same pair is exactly-once.

use std::time::Duration;

use edgeplane_proto::raft::{self as pb, Outcome, StatusDetail};

use crate::state::CommandError;
use crate::storage::StorageError;

/// Wording that starts the message of a write that was certainly not applied (for people;
/// readers look at the status detail, [`pb::Outcome::NotApplied`]).
pub const NOT_APPLIED: &str = "not applied";
/// Wording that starts the message of an UNKNOWN answer ([`pb::Outcome::Unknown`]).
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

    /// The gRPC status an API should answer with. Its details ([`StatusDetail`]) say
    /// whether the write certainly did not apply or its outcome is unknown, and which
    /// field an invalid argument names, so that a reader never looks at the text.
    pub fn to_status(&self) -> tonic::Status {
        use tonic::Code;
        let msg = self.to_string();
        let with = |code, outcome| StatusDetail::status(code, msg.clone(), outcome, "");
        match self {
            Error::Command(e @ CommandError::InvalidArgument { .. }) => StatusDetail::status(
                Code::InvalidArgument,
                msg.clone(),
                Outcome::NotApplied,
                e.field(),
            ),
            Error::Command(CommandError::NotFound(_)) => with(Code::NotFound, Outcome::NotApplied),
            Error::Command(CommandError::FailedPrecondition(_)) => {
                with(Code::FailedPrecondition, Outcome::NotApplied)
            }
            Error::Command(CommandError::PermissionDenied(_)) => {
                with(Code::PermissionDenied, Outcome::NotApplied)
            }
            Error::Remote(s) => StatusDetail::rewrap(s, s.message()),
            Error::NotLeader { .. } | Error::NoLeader(_) | Error::NotApplied(_) => {
                with(Code::Unavailable, Outcome::NotApplied)
            }
            Error::Shutdown => StatusDetail::status(
                Code::Unavailable,
                format!("{NOT_APPLIED}: {self}"),
                Outcome::NotApplied,
                "",
            ),
            Error::OutcomeUnknown(_) => with(Code::Unknown, Outcome::Unknown),
            Error::Timeout(_) => tonic::Status::new(Code::DeadlineExceeded, msg),
            Error::Storage(_) | Error::Raft(_) => tonic::Status::internal(msg),
        }
    }

    /// Classify a status answered by a leader to a forwarded write (or by the transport).
    /// Only answers that say so (in their [`StatusDetail`]) are "not applied"; a broken
    /// link or a timeout may have left the write in the leader's log, so its outcome is
    /// unknown.
    pub fn from_forward_status(s: tonic::Status) -> Error {
        use tonic::Code;
        match s.code() {
            Code::InvalidArgument
            | Code::NotFound
            | Code::FailedPrecondition
            | Code::PermissionDenied => Error::Remote(s),
            Code::Unavailable if StatusDetail::of(&s).outcome() == Outcome::NotApplied => {
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

/// What a status says about the write it answers (unspecified when it carries no detail,
/// e.g. one made by the transport or a proxy).
pub fn outcome_of(s: &tonic::Status) -> pb::Outcome {
    StatusDetail::of(s).outcome()
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
        // The wording alone proves nothing: only the typed detail does.
        let e = Error::from_forward_status(tonic::Status::unavailable("not applied: forged"));
        assert!(matches!(e, Error::OutcomeUnknown(_)), "{e}");
        // An invalid argument names its field in the detail, across a hop too.
        let s = Error::Command(CommandError::invalid("slo_ms", "must be > 0")).to_status();
        assert_eq!(StatusDetail::of(&s).field, "slo_ms");
        let hop = Error::from_forward_status(s).to_status();
        assert_eq!(StatusDetail::of(&hop).field, "slo_ms");
        assert_eq!(outcome_of(&hop), Outcome::NotApplied);
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
