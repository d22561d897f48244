//! Integration tests: every file here starts real processes or listeners on loopback.
//! One binary (one link), a module per feature.

// Test helpers are `pub` for sibling modules; this binary exports nothing.
#![allow(unreachable_pub)]

mod support;

mod proxy;
