//! Several pavise nodes in front of one instance, sharing state through the two servers
//! every Mastodon deployment already runs: PostgreSQL for what must last
//! ([`crate::store::postgres`]) and Redis for what must be shared and fast ([`redis`]).
//! No consensus of pavise's own, no new server to operate.

pub mod check;
pub mod config;
pub mod journal;
pub mod node;
pub mod redis;

pub use config::ClusterConfig;
pub use node::Node;
