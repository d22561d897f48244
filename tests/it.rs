//! Integration tests: every file here starts real processes or listeners on loopback.
//! One binary (one link), a module per feature.

// Tests may panic on purpose: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod support;

mod media;
mod proxy;
