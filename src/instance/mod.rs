//! Pavise's own requests to the instance: the scheduler's deletions, archive sweeps, the
//! shield's reads and its quarantine's replays, the admin's readiness check. They go
//! straight to the instance on loopback, never through the pipeline, and each says whom
//! it is for ([`OnBehalfOf`]).

pub mod behalf;
pub mod client;

pub use self::{behalf::OnBehalfOf, client::InstanceClient};
