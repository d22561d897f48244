//! Integration tests: every file here starts real processes or listeners on loopback.
//! One binary (one link), a module per feature.

// Tests may panic on what they did not expect; the helpers are `pub` for every module.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod support;

mod proxy;
mod shield;
