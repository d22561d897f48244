//! The inbound proxy: the stage contract, the pipeline, the upstream client.
//!
//! A request is classified once ([`contract::Route`]), given a [`contract::RequestCtx`]
//! that carries the client's pseudonym (never the raw address), and then passed through
//! the ordered [`contract::Stage`]s of the [`pipeline`]. Each stage owns one concern, as
//! pingora's phases do: the shield decides pass/defer/reject, the privacy stage strips
//! client-IP headers and scrubs media, expiry answers for expired posts and learns new
//! ones. Any stage may end the request with its own response ([`contract::Flow::Respond`])
//! or fail it with a [`contract::ProxyError`], which the pipeline answers through the one
//! mapping.
//!
//! - [`contract`]: the leaf every stage builds on (and nothing else of the proxy);
//! - [`pipeline`]: the entry phase, the stages in order, the response pass;
//! - [`method`]: the method Rails will dispatch (Rack's `_method`), read before stages run;
//! - [`upstream`]: the pooled client to the instance, under caps; WebSocket tunnels.
//!
//! What requests may hold of the relay (body bytes in memory, long-lived streams,
//! requests running at the instance) is budgeted per connection and in total
//! ([`contract::budget`]).

pub mod contract;
pub mod method;
pub mod pipeline;
pub mod upstream;
