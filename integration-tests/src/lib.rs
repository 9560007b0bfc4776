//! Helpers live in tests/it/support.rs; this crate only hosts the `it` test binary.
