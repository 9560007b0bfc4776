//! The Edgeplane edge agent.
