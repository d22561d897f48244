//! # Pavise
//!
//! A privacy relay in front of a fediverse instance (Mastodon first). The instance never
//! learns a member's IP address or the location inside their photos; its outbound
//! federation leaves over Tor; old posts expire by policy; harassment waves are deferred
//! without losing legitimate mail.
//!
//! ```text
//!  browsers, apps ──► public listener ──► pipeline ──► instance web (:3000)
//!  remote servers ──►  (TLS or plain)        │          instance streaming (:4000)
//!                                            ▼
//!                                     durable store
//!  instance outbound ──► egress listener (127.0.0.1:8118) ──► Tor ──► other servers
//!  admin ──► admin listener (loopback + token): health, metrics, expiry, shield
//! ```
//!
//! # Layout
//! - [`config`]: the TOML file and CLI overrides, validated once.
//! - [`server`]: listeners, TLS, graceful shutdown; wires the relay.
//! - [`conn`], [`accept`]: one client connection under limits (HTTP/2 streams, timeouts,
//!   body rate, idle rule), accepting under a cap, the descriptor limit.
//! - [`proxy`]: route classification, the [`proxy::Stage`] pipeline, the upstream client.
//! - [`egress`]: the forward proxy for the instance's own outbound federation, over Tor
//!   (arti-client); destination policy; fail closed.
//! - [`privacy`]: client-IP pseudonyms, the header strip table, response hygiene.
//! - [`shield`]: keyed rate limits, the harassment-wave detector, the quarantine.
//! - [`admin`]: `/healthz`, `/readyz`, `/metrics`, and each feature's `/admin/...`.
//! - [`expiry`]: expiring posts: policies, `expires_in`, the deletion scheduler, archive
//!   sweeps, and hiding an expired post from every answer and stream at once.
//! - [`store`]: durable state (the expiry schedule, sealed credentials) behind one trait,
//!   sealed at rest.
//! - [`cluster`]: several nodes sharing state through PostgreSQL (the store) and Redis
//!   (limits, waves, shields, the pseudonym key).
//! - [`metrics`], [`telemetry`], [`shutdown`], [`units`]: the small shared pieces.
//!
//! Dependencies point one way: `server` → `proxy` → stage modules → `store`, `config`.

pub mod accept;
pub mod admin;
pub mod auth;
pub mod check;
pub mod cluster;
pub mod config;
pub mod conn;
pub mod egress;
pub mod expiry;
pub mod metrics;
pub mod privacy;
pub mod proxy;
pub mod server;
pub mod shield;
pub mod shutdown;
pub mod store;
pub mod telemetry;
pub mod units;
