//! Typed results of applying a command: [`CommandError`] (a refusal) and the cached
//! [`StoredResult`] a retried write is answered from. The wire form is
//! [`pb::ApplyResult`]: a [`pb::ResultCode`] plus the field at fault, so a reader rebuilds
//! the error from typed fields, never from the message text.

use edgeplane_proto::raft as pb;
use serde::{Deserialize, Serialize};

/// A command refused by validation or by the current state. Deterministic: the same
/// command on the same state gives the same error on every replica.
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
pub enum CommandError {
    #[error("invalid argument `{field}`: {reason}")]
    InvalidArgument { field: String, reason: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// A join token refused (unknown, wrong secret, revoked, expired, used, other node).
    #[error("{0}")]
    PermissionDenied(String),
}

impl CommandError {
    pub(crate) fn invalid(field: &str, reason: impl Into<String>) -> Self {
        CommandError::InvalidArgument {
            field: field.to_string(),
            reason: reason.into(),
        }
    }

    /// The result code this refusal is answered with.
    pub fn code(&self) -> pb::ResultCode {
        match self {
            CommandError::InvalidArgument { .. } => pb::ResultCode::InvalidArgument,
            CommandError::NotFound(_) => pb::ResultCode::NotFound,
            CommandError::FailedPrecondition(_) => pb::ResultCode::FailedPrecondition,
            CommandError::PermissionDenied(_) => pb::ResultCode::PermissionDenied,
        }
    }

    /// The field at fault (`""` unless an invalid argument).
    pub fn field(&self) -> &str {
        match self {
            CommandError::InvalidArgument { field, .. } => field,
            _ => "",
        }
    }

    /// The refusal without the code's wording (for an invalid argument: the reason).
    pub fn detail(&self) -> &str {
        match self {
            CommandError::InvalidArgument { reason, .. } => reason,
            CommandError::NotFound(m)
            | CommandError::FailedPrecondition(m)
            | CommandError::PermissionDenied(m) => m,
        }
    }

    /// Rebuild from an [`pb::ApplyResult`] (`None` when it says OK).
    pub fn from_result(r: &pb::ApplyResult) -> Option<Self> {
        let m = r.message.clone();
        match r.code() {
            pb::ResultCode::Ok => None,
            pb::ResultCode::InvalidArgument => Some(CommandError::InvalidArgument {
                field: r.field.clone(),
                reason: m,
            }),
            pb::ResultCode::NotFound => Some(CommandError::NotFound(m)),
            pb::ResultCode::PermissionDenied => Some(CommandError::PermissionDenied(m)),
            pb::ResultCode::FailedPrecondition => Some(CommandError::FailedPrecondition(m)),
        }
    }
}

/// Serializable mirror of [`pb::ApplyResult`], kept in client sessions (and snapshots).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StoredResult {
    /// A [`pb::ResultCode`] (the gRPC code number, as snapshots have always held it).
    #[serde(with = "code_number")]
    pub code: pb::ResultCode,
    pub message: String,
    pub index: u64,
    pub epoch: u64,
    #[serde(default)]
    pub field: String,
}

impl StoredResult {
    /// The result of an entry applied at `index`: `Ok(epoch)` or the refusal.
    pub fn of(outcome: &Result<u64, CommandError>, index: u64) -> StoredResult {
        match outcome {
            Ok(epoch) => StoredResult {
                code: pb::ResultCode::Ok,
                message: String::new(),
                index,
                epoch: *epoch,
                field: String::new(),
            },
            Err(e) => StoredResult {
                code: e.code(),
                message: e.detail().to_string(),
                index,
                epoch: 0,
                field: e.field().to_string(),
            },
        }
    }
}

impl From<&StoredResult> for pb::ApplyResult {
    fn from(r: &StoredResult) -> Self {
        pb::ApplyResult {
            code: r.code as i32,
            message: r.message.clone(),
            index: r.index,
            epoch: r.epoch,
            field: r.field.clone(),
        }
    }
}

/// [`pb::ResultCode`] as its number in JSON (the form earlier snapshots hold).
mod code_number {
    use edgeplane_proto::raft::ResultCode;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(c: &ResultCode, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(*c as i32 as u32)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ResultCode, D::Error> {
        let n = u32::deserialize(d)?;
        i32::try_from(n)
            .ok()
            .and_then(|n| ResultCode::try_from(n).ok())
            .ok_or_else(|| serde::de::Error::custom(format!("unknown result code {n}")))
    }
}
