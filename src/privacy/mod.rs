//! What the instance may learn about a member: no address, no location.
//!
//! - [`client_ip`]: the raw address ([`ClientAddr`]) and the pseudonym that replaces it;
//! - [`headers`]: the request headers the instance may see (an allowlist over a hard deny
//!   table of client-IP and geolocation headers);
//! - [`hygiene`]: response headers that fingerprint the server;
//! - [`media`]: location and identifying metadata scrubbed out of every uploaded file.

pub mod client_ip;
pub mod headers;
pub mod hygiene;
pub mod media;

pub use client_ip::{ClientAddr, Pseudonymizer};

use crate::proxy::contract::{Flow, ProxyError, Request, RequestCtx, Route, RouteClass, Stage, StageFuture};

/// Whether the instance verifies HTTP signatures on this route (deliveries, and the
/// ActivityPub objects and pages an authorized fetch reads), so that a signature's
/// covered headers must reach it; never the client API.
fn signatures_verified_on(route: &Route) -> bool {
    match route.class {
        RouteClass::Inbox => true,
        RouteClass::ActivityPubObject | RouteClass::StatusRead | RouteClass::Web => {
            !route.path.as_str().starts_with("/api/")
        }
        _ => false,
    }
}

/// Keeps only the request headers the instance needs (never a client-IP or geolocation
/// header), then tells the instance the pseudonym, scheme and host. Runs on every
/// request, WebSocket handshakes included.
#[derive(Debug, Default)]
pub struct ClientIpStage {
    headers: headers::RequestHeaders,
}

impl ClientIpStage {
    pub fn new(cfg: &client_ip::ClientIpConfig) -> ClientIpStage {
        ClientIpStage { headers: headers::RequestHeaders::new(&cfg.allow_headers) }
    }
}

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
        self.headers.filter(headers, signatures_verified_on(&ctx.route));
        headers::set_forwarded(headers, ctx.forwarded_for(), ctx.https, ctx.host.as_deref());
        Box::pin(async move { Ok(Flow::Continue(req)) })
    }
}
