//! The stage contract: what a stage of the pipeline sees, returns and may fail with.
//!
//! A leaf: nothing here imports anything else from the crate (a test in `tests/` keeps it
//! so), the way linkerd keeps `linkerd/error` and `linkerd/stack` in crates of their own.
//! The stage modules (`shield`, `privacy`, `expiry`) build on this and never on the
//! pipeline, the upstream or the server, so the pipeline can change without them and they
//! can be tested without it.
//!
//! - [`stage`]: the [`Stage`] trait with its two phases, and [`Flow`];
//! - [`ctx`]: the [`RequestCtx`] made once per request, and the [`ClientConn`] it came on;
//! - [`body`]: the one [`Body`] type, and how to make one;
//! - [`error`]: [`ProxyError`] and its one mapping to a response; the errors a request
//!   body yields when one of its guards fires, and [`error::cause_ref`] to find them;
//! - [`route`]: the route, classified once from the canonical path ([`Route`],
//!   [`RouteClass`]);
//! - [`budget`]: what requests may hold of the relay, per connection and in total;
//! - [`hop`]: the request head as it may travel one hop: hop-by-hop headers out, and the
//!   forwarding headers written last.

pub mod body;
pub mod budget;
pub mod ctx;
pub mod error;
pub mod hop;
pub mod route;
pub mod stage;

pub use body::{Body, BoxError, Request, Response, boxed, empty, full};
pub use budget::ConnShare;
pub use ctx::{ClientConn, RequestCtx, Slot};
pub use error::ProxyError;
pub use route::{Route, RouteClass};
pub use stage::{Flow, Stage, StageFuture};
