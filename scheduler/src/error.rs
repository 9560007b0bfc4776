//! Errors of the scheduling core.

/// Everything that can go wrong in the scheduling core. Each variant names the bad input.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A name that is not in the catalogue; `valid` lists the known ones.
    #[error("unknown {what} `{name}`; valid: {valid}")]
    Unknown {
        what: &'static str,
        name: String,
        valid: String,
    },
    /// Malformed data files.
    #[error("bad data in {what}: {why}")]
    Data { what: String, why: String },
    /// An invalid argument, naming the field.
    #[error("invalid {field}: {why}")]
    Invalid { field: &'static str, why: String },
}
