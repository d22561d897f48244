//! Integration tests: every file here starts real processes or listeners on loopback.
//! One binary (one link), a module per feature.

// Test helpers are `pub` for sibling modules; this binary exports nothing.
#![allow(unreachable_pub)]
// A failing unwrap in a test is a failing test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod attack;
mod cluster;
mod egress;
mod expiry;
mod expiry_hiding;
mod media;
mod proxy;
mod shield;
mod transport;
