//! What the instance may learn about a member: no address, no location.
//!
//! - [`client_ip`]: the raw address ([`ClientAddr`]) and the pseudonym that replaces it;
//! - [`headers`]: the table of client-IP and geolocation headers removed from requests;
//! - [`hygiene`]: response headers that fingerprint the server;
//! - [`media`]: location and identifying metadata scrubbed out of every uploaded file.

pub mod client_ip;
pub mod headers;
pub mod hygiene;
pub mod media;

pub use client_ip::{ClientAddr, Pseudonymizer};

use crate::proxy::{Flow, ProxyError, Request, RequestCtx, Stage, StageFuture};

/// Removes every client-IP and geolocation header, then tells the instance the
/// pseudonym, scheme and host. Runs on every request, WebSocket handshakes included.
#[derive(Debug, Default)]
pub struct ClientIpStage;

impl Stage for ClientIpStage {
    fn name(&self) -> &'static str {
        "client_ip"
    }

    fn on_request<'a>(
        &'a self,
        ctx: &'a mut RequestCtx,
        mut req: Request,
    ) -> StageFuture<'a, Result<Flow, ProxyError>> {
        let headers = req.headers_mut();
        headers::strip_client_ip_and_geo(headers);
        headers::set_forwarded(headers, ctx.pseudonym, ctx.https, ctx.host.as_deref());
        Box::pin(async move { Ok(Flow::Continue(req)) })
    }
}
