//! The pooled client to the instance: web (puma) and streaming, one pool.
//!
//! Bodies stream both ways (no buffering), `Host` is kept as the client sent it
//! (Mastodon builds URLs and verifies signatures from it), and WebSocket upgrades are
//! spliced once both sides have switched protocols.

use std::{sync::Arc, time::Instant};

use http::{HeaderValue, StatusCode, Uri, header, uri::Authority};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo, TokioTimer},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{Body, ProxyError, Request, RequestCtx, Response, RouteClass, boxed, hop};
use crate::{config::Config, metrics::Metrics};

/// The instance behind pavise.
pub struct Upstream {
    client: Client<HttpConnector, Body>,
    web: Authority,
    streaming: Authority,
    metrics: Arc<Metrics>,
    /// Spliced WebSocket connections, so shutdown can wait for (then cut) them.
    tunnels: TaskTracker,
    shutdown: CancellationToken,
}

impl Upstream {
    pub fn new(config: &Config, metrics: Arc<Metrics>, tunnels: TaskTracker, shutdown: CancellationToken) -> Upstream {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.file.upstream.connect_timeout.get()));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(config.file.upstream.pool_idle_timeout.get())
            .pool_timer(TokioTimer::new())
            .pool_max_idle_per_host(256)
            .set_host(false)
            .build(connector);
        Upstream {
            client,
            web: config.upstream.authority.clone(),
            streaming: config.streaming_upstream.authority.clone(),
            metrics,
            tunnels,
            shutdown,
        }
    }

    /// Sends the request to the instance and returns its response head with a streaming body.
    pub async fn forward(&self, ctx: &RequestCtx, mut req: Request) -> Result<Response, ProxyError> {
        let authority = if ctx.route.class == RouteClass::Streaming { &self.streaming } else { &self.web };
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        *req.uri_mut() = Uri::builder()
            .scheme("http")
            .authority(authority.clone())
            .path_and_query(path)
            .build()
            .map_err(|e| ProxyError::BadRequest(e.to_string()))?;
        *req.version_mut() = http::Version::HTTP_11;
        if !req.headers().contains_key(header::HOST)
            && let Some(host) = ctx.host.as_deref().and_then(|h| HeaderValue::from_str(h).ok())
        {
            req.headers_mut().insert(header::HOST, host);
        }

        let upgrade = hop::wants_upgrade(req.headers());
        hop::strip_hop_by_hop(req.headers_mut(), upgrade);
        // The client's `Expect: 100-continue` was answered by our own server when we began
        // reading its body; the instance gets the body at once.
        req.headers_mut().remove(header::EXPECT);
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));

        let started = Instant::now();
        let result = self.client.request(req).await;
        self.metrics.upstream_latency(started.elapsed());
        let mut resp = match result {
            Ok(resp) => resp,
            Err(e) => return Err(classify_send_error(e, &self.metrics)),
        };

        if resp.status() == StatusCode::SWITCHING_PROTOCOLS
            && let Some(client_upgrade) = client_upgrade
        {
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            let shutdown = self.shutdown.clone();
            // Expiry drops messages that carry a hidden post on their way to the client.
            let filter = crate::expiry::ws::Filter::of(ctx);
            self.tunnels.spawn(async move {
                let (Ok(client), Ok(upstream)) = (client_upgrade.await, upstream_upgrade.await) else {
                    tracing::debug!("websocket upgrade did not complete on one side");
                    return;
                };
                let (mut client, mut upstream) = (TokioIo::new(client), filter.wrap(TokioIo::new(upstream)));
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
                    // The shutdown drain decides how long tunnels may stay; cut when it says.
                    _ = shutdown.cancelled() => {}
                }
            });
            let (parts, _) = resp.into_parts();
            return Ok(Response::from_parts(parts, super::empty()));
        }

        hop::strip_hop_by_hop(resp.headers_mut(), false);
        Ok(resp.map(boxed))
    }
}

/// A send error caused by our own body cap is the client's fault (413), not the instance's.
fn classify_send_error(e: hyper_util::client::legacy::Error, metrics: &Metrics) -> ProxyError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(err) = source {
        if let Some(limit) = err.downcast_ref::<super::pipeline::BodyCapExceeded>() {
            return ProxyError::BodyTooLarge { limit: limit.0 };
        }
        source = err.source();
    }
    metrics.upstream_error();
    tracing::warn!(error = %e, "upstream request failed");
    ProxyError::UpstreamUnavailable(e)
}
