//! Integration tests: every file here starts real processes or listeners on loopback.
//! One binary (one link), a module per feature.

// Test code may unwrap: a failing unwrap is a failing test (clippy.toml covers #[test]
// functions only, not the harness they call).
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod support;

mod expiry;
mod proxy;
mod shield;
