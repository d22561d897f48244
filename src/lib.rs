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
//! - [`app`]: the composition root: the store, every feature built from its own config
//!   section, the stage order and the reason for each place, the admin routes.
//! - [`server`]: listeners, TLS, serving until shutdown and the drain after it.
//! - [`config`]: the TOML file and CLI overrides, validated once (each feature's section
//!   validates itself beside its struct).
//! - [`conn`], [`accept`]: one client connection under limits (HTTP/2 streams, timeouts,
//!   body rate, idle rule), accepting under a cap, the descriptor limit.
//! - [`proxy`]: the [`proxy::contract`] every stage builds on (a leaf: `Stage`, `Flow`,
//!   `RequestCtx`, `Body`, `ProxyError`, `RouteClass`), the pipeline, the upstream client.
//! - [`egress`]: the forward proxy for the instance's own outbound federation, over Tor
//!   (arti-client); destination policy; fail closed.
//! - [`privacy`]: client-IP pseudonyms, the header strip table, response hygiene, media.
//! - [`shield`]: keyed rate limits, the harassment-wave detector, the quarantine.
//! - [`expiry`]: expiring posts: policies, `expires_in`, the deletion scheduler, archive
//!   sweeps, and hiding an expired post from every answer and stream at once.
//! - [`instance`]: pavise's own requests to the instance (never through the pipeline).
//! - [`admin`]: `/healthz`, `/readyz`, `/metrics`, and each feature's `/admin/...`
//!   (features plug in through [`admin::hooks`]).
//! - [`store`]: durable state (the expiry schedule, sealed credentials) behind one trait,
//!   sealed at rest.
//! - [`cluster`]: several nodes sharing state through PostgreSQL (the store) and Redis
//!   (limits, waves, shields, the pseudonym key).
//! - [`metrics`], [`telemetry`], [`shutdown`], [`units`]: the small shared pieces.
//!
//! Dependencies point one way: `app` → `server` → `proxy` (the pipeline) → the stage
//! modules (`shield`, `privacy`, `expiry`) → the stage contract, `store`, their own
//! config sections. No stage module imports the pipeline, the upstream, the server or the
//! admin listener (the `dependency_rule` test reads `src/` and checks it).

// An application, not a library API: its docs are read with `--document-private-items`,
// so module docs may link the crate-private items they explain.
#![allow(rustdoc::private_intra_doc_links)]

pub mod accept;
pub mod admin;
pub mod app;
pub mod auth;
pub mod check;
pub mod cluster;
pub mod config;
pub mod conn;
pub mod egress;
pub mod expiry;
pub mod instance;
pub mod metrics;
pub mod privacy;
pub mod proxy;
pub mod server;
pub mod shield;
pub mod shutdown;
pub mod store;
pub mod telemetry;
pub mod units;
pub mod workers;

#[cfg(test)]
mod dependency_rule;
