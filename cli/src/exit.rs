//! Exit codes of `edgeplane`, modelled on etcdctl's (0 success, 1 error, 2 bad connection,
//! 3 invalid input), extended with not found and permission denied so scripts can tell the
//! cases apart without parsing messages:
//!
//! | code | meaning |
//! |------|---------|
//! | 0 | success |
//! | 1 | any other error (an internal failure, an outcome unknown) |
//! | 2 | unavailable: no member answered in time, connection refused, no leader |
//! | 3 | invalid input: a bad flag or value (also clap's usage errors), a request the cluster refused as invalid or not possible now (gRPC INVALID_ARGUMENT, FAILED_PRECONDITION, ALREADY_EXISTS, OUT_OF_RANGE) |
//! | 4 | not found: the model, node, pin or member named does not exist (NOT_FOUND) |
//! | 5 | permission denied: bad credentials or not allowed (PERMISSION_DENIED, UNAUTHENTICATED) |
//! | 6 | local I/O: a file given on the command line cannot be read or written |
//!
//! Errors carry their kind through `anyhow` as a [`Failure`] (or a `tonic::Status`, or an
//! `std::io::Error`); [`kind_of`] finds it anywhere in the chain.

use std::process::ExitCode;
use tonic::Code;

/// What went wrong, as far as the exit code tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Error,
    Unavailable,
    InvalidInput,
    NotFound,
    PermissionDenied,
    Io,
}

impl Kind {
    pub fn code(self) -> u8 {
        match self {
            Kind::Error => 1,
            Kind::Unavailable => 2,
            Kind::InvalidInput => 3,
            Kind::NotFound => 4,
            Kind::PermissionDenied => 5,
            Kind::Io => 6,
        }
    }

    /// The kind of a gRPC status code.
    pub fn of_code(c: Code) -> Kind {
        match c {
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Aborted => {
                Kind::Unavailable
            }
            Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::AlreadyExists
            | Code::OutOfRange => Kind::InvalidInput,
            Code::NotFound => Kind::NotFound,
            Code::PermissionDenied | Code::Unauthenticated => Kind::PermissionDenied,
            _ => Kind::Error,
        }
    }

    /// Name used in JSON error output.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Error => "error",
            Kind::Unavailable => "unavailable",
            Kind::InvalidInput => "invalid_input",
            Kind::NotFound => "not_found",
            Kind::PermissionDenied => "permission_denied",
            Kind::Io => "io",
        }
    }
}

/// An error with its exit kind.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub kind: Kind,
    pub message: String,
}

/// An `anyhow` error of the given kind.
pub fn fail(kind: Kind, message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Failure {
        kind,
        message: message.into(),
    })
}

/// A gRPC error from `what`, keeping the status's kind.
pub fn status(what: &str, s: &tonic::Status) -> anyhow::Error {
    fail(
        Kind::of_code(s.code()),
        format!("{what}: {} ({:?})", s.message(), s.code()),
    )
}

/// The kind of an error: the first [`Failure`], `tonic::Status` or I/O error in its chain.
pub fn kind_of(e: &anyhow::Error) -> Kind {
    for cause in e.chain() {
        if let Some(f) = cause.downcast_ref::<Failure>() {
            return f.kind;
        }
        if let Some(s) = cause.downcast_ref::<tonic::Status>() {
            return Kind::of_code(s.code());
        }
        if cause.downcast_ref::<std::io::Error>().is_some() {
            return Kind::Io;
        }
    }
    Kind::Error
}

/// An error with its causes, `a: b: c` (tonic's transport error alone says only
/// "transport error"; its causes say "Connection refused").
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let c_s = c.to_string();
        if !s.ends_with(&c_s) {
            s.push_str(": ");
            s.push_str(&c_s);
        }
        cur = c.source();
    }
    s
}

/// Whether a connection error is a refusal (nothing listens on the port).
pub fn is_connection_refused(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        cur = c.source();
    }
    false
}

pub fn exit_code(e: &anyhow::Error) -> ExitCode {
    ExitCode::from(kind_of(e).code())
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;

    #[test]
    fn kinds_map_to_distinct_codes() {
        let all = [
            Kind::Error,
            Kind::Unavailable,
            Kind::InvalidInput,
            Kind::NotFound,
            Kind::PermissionDenied,
            Kind::Io,
        ];
        let codes: std::collections::BTreeSet<u8> = all.iter().map(|k| k.code()).collect();
        assert_eq!(codes.len(), all.len());
        assert!(!codes.contains(&0));
    }

    #[test]
    fn grpc_codes_map_to_kinds() {
        assert_eq!(Kind::of_code(Code::Unavailable), Kind::Unavailable);
        assert_eq!(Kind::of_code(Code::InvalidArgument), Kind::InvalidInput);
        assert_eq!(Kind::of_code(Code::FailedPrecondition), Kind::InvalidInput);
        assert_eq!(Kind::of_code(Code::NotFound), Kind::NotFound);
        assert_eq!(
            Kind::of_code(Code::PermissionDenied),
            Kind::PermissionDenied
        );
        assert_eq!(Kind::of_code(Code::Unauthenticated), Kind::PermissionDenied);
        assert_eq!(Kind::of_code(Code::Internal), Kind::Error);
    }

    #[test]
    fn a_refused_connection_is_named_in_the_chain() {
        #[derive(Debug, thiserror::Error)]
        #[error("transport error")]
        struct Transport(#[source] std::io::Error);
        let e = Transport(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(is_connection_refused(&e));
        let s = error_chain(&e);
        assert!(s.starts_with("transport error: "), "{s}");
        assert!(s.to_lowercase().contains("refused"), "{s}");
        let other = Transport(std::io::Error::from(std::io::ErrorKind::TimedOut));
        assert!(!is_connection_refused(&other));
    }

    #[test]
    fn the_kind_is_found_under_context() {
        let e = status("models get", &tonic::Status::not_found("no such model"))
            .context("while showing");
        assert_eq!(kind_of(&e), Kind::NotFound);
        let io: anyhow::Result<()> =
            Err(std::io::Error::other("disk")).context("writing snapshot.bin");
        assert_eq!(kind_of(&io.unwrap_err()), Kind::Io);
        assert_eq!(kind_of(&anyhow::anyhow!("plain")), Kind::Error);
    }
}
