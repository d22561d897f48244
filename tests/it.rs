//! Integration tests: every file here starts real processes or listeners on loopback.
//! One binary (one link), a module per feature.

mod support;

mod proxy;
mod shield;
