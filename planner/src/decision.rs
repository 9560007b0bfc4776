//! What a plan says about itself: one [`Decision`] per choice, each about a [`Subject`] (the
//! plan as a whole, or one model), with the reason `placement plan --dry-run` prints.

use serde::{Serialize, Serializer};

/// What a decision is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// The plan as a whole: kept, re-planned (and why), incremental or full.
    Plan,
    /// One deployed model, by deployment name.
    Model(String),
}

impl Subject {
    /// A model's subject.
    pub fn model(name: &str) -> Self {
        Subject::Model(name.to_string())
    }
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subject::Plan => f.write_str("plan"),
            Subject::Model(m) => f.write_str(m),
        }
    }
}

/// Serialised as the text it always was (`"plan"` or the model's name): the JSON shape of
/// `placement plan --dry-run --format json` is unchanged.
impl Serialize for Subject {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One decision with its reason (what `--dry-run` prints).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    pub subject: Subject,
    pub reason: String,
}

impl Decision {
    /// A decision about the plan as a whole.
    pub fn plan(reason: String) -> Self {
        Decision {
            subject: Subject::Plan,
            reason,
        }
    }

    /// A decision about one model.
    pub fn model(name: &str, reason: String) -> Self {
        Decision {
            subject: Subject::model(name),
            reason,
        }
    }
}
